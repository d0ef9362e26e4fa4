"""Train lie-transformer-rev to classify random rigid shapes seen in arbitrary poses, then measure the
peak memory of one training step per form.

The classes are point-cloud templates (drawn once from a fixed seed) plus the mirror image of the
first one: mirror images have identical pairwise distances, so telling them apart needs the
orientation information that SE(3) (proper rotations only) keeps. Like atoms of a molecule, the
points carry types (the same multiset in every class, so types alone tell nothing; with identical
features attention would average identical values and see no geometry). Every example is its
template with jitter, a uniformly random rotation, a random translation and a random point order.

Usage:
    python tools/examples/train_lie_shapes.py [--steps 800] [--seed 0]

Peak memory follows DESIGN.md: each configuration runs in its own process with
MALLOC_MMAP_THRESHOLD_=65536; gradients are preallocated, VmRSS is the baseline, the peak is reset
through /proc/self/clear_refs and VmHWM is read after one step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from revzoo_lie import build_lie_transformer
from revzoo_lie.rotations import random_rotations

import revzoo
from revzoo.bench import measure_peak

POINTS = 8
TEMPLATES = 4
TYPES = 4
MODEL = dict(dim=32, heads=4, dim_head=8, depth=4, dim_out=TEMPLATES + 1, nbhd=16, liftsamples=2, fill=1.0, num_tokens=TYPES)
MEMORY_MODEL = {**MODEL, "depth": 16, "nbhd": 32, "liftsamples": 4}
MEMORY_POINTS, MEMORY_BATCH = 24, 16


def make_templates(seed: int) -> torch.Tensor:
    """Returns ``(TEMPLATES + 1, POINTS, 3)`` centred templates; the last one mirrors the first."""
    generator = torch.Generator().manual_seed(seed)
    templates = torch.randn(TEMPLATES, POINTS, 3, generator=generator)
    templates = templates - templates.mean(dim=1, keepdim=True)
    mirror = templates[:1] * torch.tensor([-1.0, 1.0, 1.0])
    return torch.cat((templates, mirror))


def sample_batch(
    templates: torch.Tensor, batch: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns point types ``(batch, points)``, posed, jittered, shuffled clouds ``(batch, points, 3)`` and labels."""
    points = templates.shape[1]
    labels = torch.randint(0, len(templates), (batch,), generator=generator)
    clouds = templates[labels] + 0.05 * torch.randn(batch, points, 3, generator=generator)
    rotations = random_rotations((batch,), generator=generator)
    shifts = 3 * torch.randn(batch, 1, 3, generator=generator)
    clouds = clouds @ rotations.transpose(-1, -2) + shifts
    order = torch.rand(batch, points, generator=generator).argsort(dim=1)
    types = (torch.arange(points) % TYPES).expand(batch, points).gather(1, order)
    return types, clouds.gather(1, order[..., None].expand(-1, -1, 3)), labels


def accuracy(model, templates, generator, batches: int = 8, batch: int = 64) -> dict[str, float]:
    """Returns test accuracy overall, on the shapes without a mirror twin, and within the mirror pair."""
    predictions, targets = [], []
    with torch.no_grad():
        for _ in range(batches):
            tokens, clouds, labels = sample_batch(templates, batch, generator)
            predictions.append(model(tokens, clouds, return_pooled=True, generator=generator).argmax(-1))
            targets.append(labels)
    predicted, target = torch.cat(predictions), torch.cat(targets)
    correct = predicted == target
    mirror_pair = (target == 0) | (target == TEMPLATES)
    return {
        "all": correct.float().mean().item(),
        "distinct": correct[~mirror_pair].float().mean().item(),
        "mirror_pair": correct[mirror_pair].float().mean().item(),
    }


def train(steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    templates = make_templates(seed)
    model = build_lie_transformer(form="reversible", **MODEL)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed + 1)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        tokens, clouds, labels = sample_batch(templates, 32, generator)
        logits = model(tokens, clouds, return_pooled=True, generator=generator)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == steps:
            print(f"step {step:4d}  loss {loss.item():.3f}  ({time.perf_counter() - start:.0f} s)", flush=True)
    test_accuracy = accuracy(model, templates, torch.Generator().manual_seed(seed + 2))
    return {"steps": steps, "test_accuracy": test_accuracy, "train_seconds": round(time.perf_counter() - start, 1)}


def measure_step(form: str, execution: str) -> dict:
    """Returns the peak resident memory above baseline (MiB) of one training step; run in a fresh process."""
    torch.manual_seed(0)
    model = build_lie_transformer(form=form, **MEMORY_MODEL)
    revzoo.set_execution(model, execution)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    templates = make_templates(0).repeat(1, 3, 1)[:, :MEMORY_POINTS]
    tokens, clouds, labels = sample_batch(templates, MEMORY_BATCH, torch.Generator().manual_seed(0))

    def training_step() -> None:
        logits = model(tokens, clouds, return_pooled=True, generator=torch.Generator().manual_seed(1))
        torch.nn.functional.cross_entropy(logits, labels % logits.shape[-1]).backward()

    peak = measure_peak(training_step)
    return {"form": form, "execution": execution, "peak_mib": round(peak / 2**20, 1)}


def measure_all() -> list[dict]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    results = []
    for form, execution in (("reversible", "invert"), ("reversible", "autograd"), ("sequential", "invert")):
        command = [sys.executable, __file__, "--measure", form, execution]
        output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure", nargs=2, metavar=("FORM", "EXECUTION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the machine is shared: more threads than free cores slows every step down
    if args.measure:
        print(json.dumps(measure_step(*args.measure)))
        return
    print(
        f"lie-transformer-rev {json.dumps(MODEL)}; "
        f"{TEMPLATES + 1} classes (class {TEMPLATES} mirrors class 0), {POINTS} typed points"
    )
    result = train(args.steps, args.seed)
    scores = result["test_accuracy"]
    print(
        f"test accuracy {scores['all']:.3f} on fresh random poses ({result['train_seconds']} s training): "
        f"{scores['distinct']:.3f} on classes 1-{TEMPLATES - 1}, "
        f"{scores['mirror_pair']:.3f} within the mirror pair 0/{TEMPLATES}"
    )
    print(
        f"peak memory of one training step (depth {MEMORY_MODEL['depth']}, {MEMORY_BATCH} clouds of {MEMORY_POINTS} points, "
        f"liftsamples {MEMORY_MODEL['liftsamples']}, nbhd {MEMORY_MODEL['nbhd']}), above the model's baseline:"
    )
    for row in measure_all():
        execution = row["execution"] if row["form"] == "reversible" else "-"
        print(f"  {row['form']:<10} {execution:<8} {row['peak_mib']:8.1f} MiB")


if __name__ == "__main__":
    main()
