"""Makes the DALLE-pytorch reference fixtures under tests/fixtures/dalle/ (run once; the outputs are committed).

Needs the real upstream package and the versions of its helpers current at its release:
    pip install --target /tmp/dalle-ref-pkgs --no-deps dalle-pytorch==1.6.6 einops \
        rotary-embedding-torch==0.2.3 axial-positional-embedding==0.2.1
    PYTHONPATH=/tmp/dalle-ref-pkgs python tools/make_dalle_fixtures.py

Each case is a small random upstream DALLE saved as the training script saves it
(`hparams`, `vae_params`, `weights`, `vae_class_name`, `version`, optimizer state), plus
inputs, logits, loss and generated images (seeds 100 and 101, the second primed with
decoded `image`) in `reference.pt`, which also holds one upstream conv-like attention with
kernel 3 and dilation 2. The upstream package imports modules it does
not need for DALLE (pretrained-VAE loaders, pkg_resources); they are stubbed here.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "dalle"
VAE_PARAMS = {"image_size": 16, "num_layers": 2, "num_tokens": 8, "codebook_dim": 8, "hidden_dim": 4}
BASE = {"num_text_tokens": 12, "text_seq_len": 4, "dim": 16, "heads": 2, "dim_head": 8, "loss_img_weight": 7,
        "attn_dropout": 0.1, "ff_dropout": 0.1}

# name -> hparams beyond BASE, as the training script would record them
CASES: dict[str, dict[str, Any]] = {
    # an older hparams without shift_tokens/rotary_emb: the class defaults (True, True) apply
    "seq_full_defaults": {"depth": 2, "reversible": False, "attn_types": ("full",)},
    "rev_all_types": {"depth": 4, "reversible": True, "attn_types": ("full", "axial_row", "axial_col", "conv_like"),
                      "shift_tokens": True, "rotary_emb": True, "stable": False},
    "rev_shared_stable": {"depth": 3, "reversible": True, "attn_types": ("full", "full", "axial_row"),
                          "shift_tokens": False, "rotary_emb": False, "stable": True, "sandwich_norm": True,
                          "shared_attn_ids": ("a", "a", "b"), "shared_ff_ids": (0, 1, 1),
                          "share_input_output_emb": True},
    "seq_conv_shift": {"depth": 2, "reversible": False, "attn_types": ("conv_like", "axial_col"),
                       "shift_tokens": True, "rotary_emb": False, "stable": False, "share_input_output_emb": False},
}


def stub_unused_imports() -> None:
    """dalle_pytorch imports loaders for pretrained VAEs and pkg_resources at import time; DALLE uses neither."""
    for name in ("requests", "omegaconf", "taming", "taming.models", "taming.models.vqgan"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["omegaconf"].OmegaConf = object
    sys.modules["taming.models.vqgan"].VQModel = object
    sys.modules["taming.models.vqgan"].GumbelVQ = object
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        stub = types.ModuleType("pkg_resources")
        stub.get_distribution = lambda name: None
        sys.modules["pkg_resources"] = stub


def _conv_attention_reference() -> dict[str, Any]:
    """Upstream's conv-like attention with a kernel and dilation that its DALLE class cannot set."""
    from dalle_pytorch.attention import SparseConvCausalAttention

    torch.manual_seed(10)
    text_len, image_size = 5, 6
    attention = SparseConvCausalAttention(16, seq_len=text_len + image_size**2 - 1, image_size=image_size,
                                          kernel_size=3, dilation=2, heads=2, dim_head=8)
    x = torch.randn(2, text_len + image_size**2, 16)
    with torch.no_grad():
        return {"weights": attention.state_dict(), "x": x, "out": attention(x), "partial_out": attention(x[:, :20]),
                "text_len": text_len, "image_size": image_size, "kernel_size": 3, "dilation": 2}


def main() -> None:
    stub_unused_imports()
    from dalle_pytorch import DALLE, DiscreteVAE
    from dalle_pytorch.version import __version__

    OUT.mkdir(parents=True, exist_ok=True)
    reference = {}
    for seed, (name, extra) in enumerate(CASES.items()):
        torch.manual_seed(seed)
        hparams = {**BASE, **extra}
        vae = DiscreteVAE(**VAE_PARAMS)
        dalle = DALLE(vae=vae, **hparams)
        with torch.no_grad():  # move off the initial values so every parameter matters
            for parameter in dalle.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.2)
        dalle.eval()
        text = torch.randint(1, hparams["num_text_tokens"], (2, hparams["text_seq_len"]))
        text[0, -1] = 0  # padding
        image = torch.randint(0, VAE_PARAMS["num_tokens"], (2, (16 // 4) ** 2))
        with torch.no_grad():
            logits = dalle(text.clone(), image)
            loss = dalle(text.clone(), image, return_loss=True)
            partial = dalle(text.clone(), image[:, :5])
        torch.manual_seed(100)
        generated = dalle.generate_images(text.clone(), filter_thres=0.5, use_cache=True)
        torch.manual_seed(101)
        primed = dalle.generate_images(text.clone(), img=dalle.vae.decode(image), num_init_img_tokens=6, use_cache=False)
        optimizer = torch.optim.Adam(dalle.parameters(), lr=3e-4)
        torch.save({"hparams": hparams, "vae_params": VAE_PARAMS, "epoch": 0, "version": __version__,
                    "vae_class_name": "DiscreteVAE", "weights": dalle.state_dict(),
                    "opt_state": optimizer.state_dict(), "scheduler_state": None}, OUT / f"{name}.pt")
        reference[name] = {"text": text, "image": image, "logits": logits, "loss": loss, "partial_logits": partial,
                           "generated": generated, "primed": primed}
    reference["conv_attention"] = _conv_attention_reference()
    torch.save(reference, OUT / "reference.pt")
    total = sum(path.stat().st_size for path in OUT.glob("*.pt"))
    print(f"wrote {len(CASES)} cases to {OUT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
