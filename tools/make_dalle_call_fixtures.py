"""Makes tests/fixtures/dalle/calls_reference.pt: DALLE-pytorch 1.6.6's calls beyond logits, on a fixture model.

Run once (the outputs are committed), as tools/make_dalle_fixtures.py says:
    PYTHONPATH=/tmp/dalle-ref-pkgs python tools/make_dalle_call_fixtures.py

On the weights of two fixture checkpoints, in eval mode, under fixed seeds: the loss with
`null_cond_prob`, CLIP re-ranking with a stand-in CLIP, and `generate_texts` with a
stand-in tokenizer (upstream moves its prompt to CUDA; `.cuda()` is made a no-op here).
Guided generation (`cond_scale`) is not compared: upstream's null pass multiplies a view
of its running sequence in place, so from the second token on it samples without the caption.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_dalle_fixtures import OUT, VAE_PARAMS, stub_unused_imports  # noqa: E402

CASES = ("seq_full_defaults", "rev_shared_stable")


class StandInClip(torch.nn.Module):
    """Scores each image by its mean brightness times its caption's first id: called as DALLE-pytorch calls CLIP."""

    def forward(self, text: torch.Tensor, images: torch.Tensor, return_loss: bool = False) -> torch.Tensor:
        assert return_loss is False
        return images.mean(dim=(1, 2, 3)) * text[:, 0].float()


class StandInTokenizer:
    """Ids 1..11 as letters, for a model with 12 text tokens; upstream reads `.tokenizer.encode/decode`."""

    def encode(self, text: str) -> list[int]:
        return [ord(char) - ord("a") + 1 for char in text]

    def decode(self, ids, pad_tokens=frozenset()) -> str:
        ids = ids.tolist() if torch.is_tensor(ids) else ids
        return "".join("_" if i == 0 else chr(ord("a") + i - 1) if i < 12 else "#" for i in ids if i not in pad_tokens)


def _resume_case(DALLE, DiscreteVAE) -> dict:
    """Two Adam steps as train_dalle.py takes them, the checkpoint it would save (resume.pt), then the third step."""
    from make_dalle_fixtures import BASE

    torch.manual_seed(7)
    hparams = {**BASE, "depth": 2, "attn_dropout": 0.0, "ff_dropout": 0.0, "reversible": True,
               "attn_types": ("full",), "shift_tokens": True, "rotary_emb": True}
    dalle = DALLE(vae=DiscreteVAE(**VAE_PARAMS), **hparams)
    optimizer = torch.optim.Adam([p for p in dalle.parameters() if p.requires_grad], lr=1e-2)  # get_trainable_params
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0, cooldown=0, min_lr=1e-6)
    text = torch.tensor([[3, 5, 0, 0], [7, 1, 2, 9]])
    image = torch.randint(0, VAE_PARAMS["num_tokens"], (2, 16), generator=torch.Generator().manual_seed(3))

    def step() -> None:
        loss = dalle(text.clone(), image, return_loss=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step(loss.item())

    step()
    step()
    torch.save({"hparams": hparams, "vae_params": VAE_PARAMS, "epoch": 3, "version": "1.6.6",
                "vae_class_name": "DiscreteVAE", "weights": dalle.state_dict(), "opt_state": optimizer.state_dict(),
                "scheduler_state": scheduler.state_dict()}, OUT / "resume.pt")
    step()
    return {"text": text, "image": image, "after": {k: v.clone() for k, v in dalle.state_dict().items()},
            "lr_after": optimizer.param_groups[0]["lr"]}


def main() -> None:
    stub_unused_imports()
    from dalle_pytorch import DALLE, DiscreteVAE

    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # upstream's generate_texts calls .cuda() on its prompt
    holder = type("TokenizerModule", (), {"tokenizer": StandInTokenizer()})()
    reference = {}
    for name in CASES:
        saved = torch.load(OUT / f"{name}.pt", weights_only=True)
        dalle = DALLE(vae=DiscreteVAE(**VAE_PARAMS), **saved["hparams"])
        dalle.load_state_dict(saved["weights"])
        dalle.eval()
        text = torch.tensor([[3, 5, 0, 0], [7, 1, 2, 9]])
        image = torch.randint(0, VAE_PARAMS["num_tokens"], (2, 16), generator=torch.Generator().manual_seed(1))
        case = {"text": text, "image": image}
        with torch.no_grad():
            torch.manual_seed(200)
            case["null_cond_loss"] = dalle(text.clone(), image, return_loss=True, null_cond_prob=0.7)
        torch.manual_seed(202)
        case["clip_images"], case["clip_scores"] = dalle.generate_images(text.clone(), clip=StandInClip())
        torch.manual_seed(203)
        case["texts_from_nothing"] = dalle.generate_texts(holder, filter_thres=0.5)
        torch.manual_seed(204)
        case["texts_from_prompt"] = dalle.generate_texts(holder, "ca", temperature=0.8)
        reference[name] = case
    reference["resume"] = _resume_case(DALLE, DiscreteVAE)
    torch.save(reference, OUT / "calls_reference.pt")
    print(f"wrote {OUT / 'calls_reference.pt'}")


if __name__ == "__main__":
    main()
