"""Makes tests/fixtures/dalle/vae_*.pt and vae_reference.pt: DALLE-pytorch 1.6.6's DiscreteVAE on small weights.

Run once (the outputs are committed), as tools/make_dalle_fixtures.py says:
    PYTHONPATH=/tmp/dalle-ref-pkgs python tools/make_dalle_vae_fixtures.py

Each case is saved as upstream's train_vae.py saves a VAE (`{"hparams", "weights"}`), plus,
in vae_reference.pt, images and what upstream returns for them: logits, codebook indices,
the decoding of those indices, and `return_loss`/`return_recons` passes under fixed seeds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_dalle_fixtures import OUT, stub_unused_imports  # noqa: E402

# name -> (hparams as train_vae.py saves them, options train_vae.py passes beside them)
CASES = {
    "vae_plain": ({"image_size": 16, "num_layers": 2, "num_tokens": 8, "codebook_dim": 8, "hidden_dim": 4,
                   "num_resnet_blocks": 0}, {}),
    "vae_resnet_kl": ({"image_size": 16, "num_layers": 1, "num_tokens": 16, "codebook_dim": 6, "hidden_dim": 5,
                       "num_resnet_blocks": 2}, {"kl_div_loss_weight": 0.3, "smooth_l1_loss": True}),
    "vae_straight_through": ({"image_size": 8, "num_layers": 2, "num_tokens": 8, "codebook_dim": 4, "hidden_dim": 4,
                              "num_resnet_blocks": 1}, {"straight_through": True, "reinmax": True, "temperature": 0.7}),
}


def main() -> None:
    stub_unused_imports()
    from dalle_pytorch import DiscreteVAE

    reference = {}
    for seed, (name, (hparams, options)) in enumerate(CASES.items()):
        torch.manual_seed(seed)
        vae = DiscreteVAE(**hparams, **options)
        with torch.no_grad():
            for parameter in vae.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.1)
        images = torch.rand(2, 3, hparams["image_size"], hparams["image_size"])
        with torch.no_grad():
            indices = vae.get_codebook_indices(images)
            case = {"options": options, "images": images, "logits": vae(images, return_logits=True),
                    "indices": indices, "decoded": vae.decode(indices)}
            torch.manual_seed(50)
            case["out"] = vae(images)
            torch.manual_seed(51)
            case["loss"], case["recons"] = vae(images, return_loss=True, return_recons=True, temp=0.8)
        torch.manual_seed(52)
        loss = vae(images, return_loss=True)
        loss.backward()
        case["grads"] = {key: parameter.grad for key, parameter in vae.named_parameters()}
        torch.save({"hparams": hparams, "weights": vae.state_dict()}, OUT / f"{name}.pt")
        reference[name] = case
    torch.save(reference, OUT / "vae_reference.pt")
    print(f"wrote {len(CASES)} VAE cases and vae_reference.pt to {OUT}")


if __name__ == "__main__":
    main()
