"""Preserving conversion on real data: scikit-learn's 8x8 digits (shipped inside the package, no download).

    pip install -e ".[examples]"            # scikit-learn
    python tools/examples/preserve_digits.py         # about five minutes on 2 idle cores

a. "Pretrain" a small sequential ViT (vit-tiny at 8x8 pixels, patch 2, width 64, depth 6).
b. Test accuracy and logit change right after naive conversion (the plain reversible form of the same
   weights) and after preserving conversion (revzoo.reversibilize) at several λ = β.
c. Fine-tune on a shifted task (the digits rotated by 90 degrees) for the same number of steps:
   reversible from preserving conversion (exact, and float inversion), reversible from naive conversion,
   sequential full fine-tuning, sequential with torch.utils.checkpoint per sub-layer. Accuracy, the loss
   curves of invert against autograd, peak activation memory per step at depth 6 and 24 (one process
   per cell, as `revzoo bench` measures), and step time relative to sequential.
d. Reconstruction error of float32 inversion at depths 12, 24, 48 for λ = 0.1 and 0.01, and of exact
   inversion at the nearest exact scales (1/8 and 1/128).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import revzoo
from revzoo.bench import alternate_times, measure_peak, peak_in_subprocess

CONFIG = {"img_size": 8, "patch_size": 2, "in_chans": 1, "num_classes": 10, "embed_dim": 64, "num_heads": 4, "depth": 6}
PRETRAIN_STEPS, FINETUNE_STEPS, BATCH = 1000, 300, 64


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns train images, train labels, test images, test labels (a fixed 2:1 split)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    labels = torch.tensor(data.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    cut = 2 * len(labels) // 3
    return images[order[:cut]], labels[order[:cut]], images[order[cut:]], labels[order[cut:]]


def build(depth: int = CONFIG["depth"], form: str = "sequential") -> nn.Module:
    torch.manual_seed(0)
    return revzoo.create("vit-tiny", form=form, **{**CONFIG, "depth": depth})


class Checkpointed(nn.Module):
    """A branch whose activations are recomputed in backward (torch.utils.checkpoint), for the sequential peer."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.branch, x, use_reentrant=False)


def with_checkpoints(model: nn.Module) -> nn.Module:
    for block in model.blocks.blocks:
        block.f, block.g = Checkpointed(block.f), Checkpointed(block.g)
    return model


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int) -> list[float]:
    """Adam at 1e-3 on seeded minibatches; returns the loss every 25 steps."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    curve = []
    for step in range(steps):
        batch = torch.randint(0, len(labels), (BATCH,), generator=generator)
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 25 == 0 or step == steps - 1:
            curve.append(loss.item())
    return curve


def logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(images)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits(model, images).argmax(-1) == labels).float().mean().item() * 100


def preserved(state: dict, scale: float, exact: bool, depth: int = CONFIG["depth"]) -> nn.Module:
    model = build(depth)
    model.load_state_dict(state)
    return revzoo.reversibilize(model, scale=scale, adapter_dim=16, exact=exact)


def finetune_kinds(state: dict) -> dict[str, Callable[[], nn.Module]]:
    def naive() -> nn.Module:
        model = build()
        model.load_state_dict(state)
        model.form = "reversible"
        return model

    def sequential() -> nn.Module:
        model = build()
        model.load_state_dict(state)
        return model

    def autograd(model: nn.Module) -> nn.Module:
        model.execution = "autograd"
        return model

    return {
        "preserved exact 1/8, invert": lambda: preserved(state, 0.125, True),
        "preserved exact 1/8, autograd": lambda: autograd(preserved(state, 0.125, True)),
        "preserved float 1/8, invert": lambda: preserved(state, 0.125, False),
        "preserved float 1/8, autograd": lambda: autograd(preserved(state, 0.125, False)),
        "naive reversible, invert": naive,
        "sequential": sequential,
        "sequential + checkpoint": lambda: with_checkpoints(sequential()),
    }


MEMORY_KINDS = ("sequential", "sequential + checkpoint", "preserved exact 1/8, invert", "preserved float 1/8, invert")


def measure_child(kind: str, depth: int) -> None:
    """One training step's peak activation memory (run in its own process)."""
    torch.set_num_threads(1)
    model = build(depth)
    if kind.startswith("preserved"):
        revzoo.reversibilize(model, scale=0.125, exact="exact" in kind)
    elif kind == "sequential + checkpoint":
        with_checkpoints(model)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    images = torch.randn(BATCH, 1, 8, 8)
    labels = torch.randint(0, 10, (BATCH,))

    def step() -> None:
        F.cross_entropy(model(images), labels).backward()

    step()
    print(json.dumps({"bytes": measure_peak(step)}))


def reconstruction(depth: int, scale: float, exact: bool) -> float:
    model = preserved(build(depth).state_dict(), scale, exact, depth)
    for block in model.blocks.blocks:  # trained adapters, not zero ones
        nn.init.normal_(block.adapter.up.weight, std=0.02)
    images = torch.randn(BATCH, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with model.blocks.recording_inversions() as traces:
        F.cross_entropy(model(images), torch.zeros(BATCH, dtype=torch.long)).backward()
    original, rebuilt = traces[0].inputs[0][1], traces[0].reconstructed[0][1]
    return ((original - rebuilt).abs().max() / original.abs().max()).item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "DEPTH"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.measure:
        measure_child(args.measure[0], int(args.measure[1]))
        return
    torch.set_num_threads(1)
    train_x, train_y, test_x, test_y = digits()
    rotated_train, rotated_test = train_x.rot90(1, (2, 3)), test_x.rot90(1, (2, 3))

    print("a. pretraining a sequential ViT (8x8 digits, patch 2, width 64, depth 6)")
    model = build()
    train(model, train_x, train_y, PRETRAIN_STEPS, seed=1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    reference = logits(model, test_x)
    print(f"   test accuracy {accuracy(model, test_x, test_y):.1f}%  ({PRETRAIN_STEPS} steps)\n")

    print("b. right after conversion (no training): test accuracy and |logit change| against the pretrained model")
    print(f"   {'conversion':<32} {'accuracy':>9} {'max |Δ|':>9} {'mean |Δ|':>9}")
    naive = build()
    naive.load_state_dict(state)
    naive.form = "reversible"
    candidates = {"naive (plain reversible form)": naive}
    for scale, exact in ((0.5, True), (0.1, False), (0.125, True), (0.01, False), (2.0**-7, True)):
        candidates[f"preserving λ=β={scale:g} {'exact' if exact else 'float'}"] = preserved(state, scale, exact)
    for name, candidate in candidates.items():
        change = (logits(candidate, test_x) - reference).abs()
        print(f"   {name:<32} {accuracy(candidate, test_x, test_y):>8.1f}% {change.max():>9.2e} {change.mean():>9.2e}")

    print(f"\nc. fine-tuning on the digits rotated by 90 degrees, {FINETUNE_STEPS} steps each, all parameters")
    kinds = finetune_kinds(state)
    curves = {}
    for name, make in kinds.items():
        tuned = make()
        before = accuracy(tuned, rotated_test, test_y)
        curves[name] = train(tuned, rotated_train, train_y, FINETUNE_STEPS, seed=2)
        print(f"   {name:<32} rotated test accuracy {before:5.1f}% -> {accuracy(tuned, rotated_test, test_y):5.1f}%")
    print("\n   loss every 25 steps:")
    for name, curve in curves.items():
        print(f"   {name:<32} " + " ".join(f"{loss:6.3f}" for loss in curve))

    print("\n   peak activation memory of one step (MiB; one process per cell) and step time vs sequential")
    print(f"   {'':<32} {'depth 6':>9} {'depth 24':>9}")
    for kind in MEMORY_KINDS:
        peaks = [peak_in_subprocess("tools.preserve_digits", ["--measure", kind, str(d)])["bytes"] / 2**20 for d in (6, 24)]
        print(f"   {kind:<32} {peaks[0]:>9.2f} {peaks[1]:>9.2f}")
    images, labels = rotated_train[:BATCH], train_y[:BATCH]
    runs = {}
    for kind in ("sequential", "sequential + checkpoint", "preserved exact 1/8, invert", "preserved float 1/8, invert"):
        timed = kinds[kind]().train()
        runs[kind] = lambda timed=timed: F.cross_entropy(timed(images), labels).backward()
    ratios = alternate_times(runs, "sequential", args.rounds)
    print("   step time vs sequential: " + ", ".join(f"{kind} {ratio:.2f}" for kind, ratio in ratios.items()))

    print("\nd. relative reconstruction error of the first block's input, float32 (adapters trained: std 0.02)")
    print(f"   {'depth':>5} {'float 0.1':>10} {'float 0.01':>11} {'exact 1/8':>10} {'exact 1/128':>12}")
    for depth in (12, 24, 48):
        row = [reconstruction(depth, 0.1, False), reconstruction(depth, 0.01, False),
               reconstruction(depth, 0.125, True), reconstruction(depth, 2.0**-7, True)]
        print(f"   {depth:>5} {row[0]:>10.2e} {row[1]:>11.2e} {row[2]:>10.2e} {row[3]:>12.2e}")


if __name__ == "__main__":
    sys.exit(main())
