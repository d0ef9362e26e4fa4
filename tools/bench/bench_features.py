"""What training through intermediate features keeps for backward: `forward_intermediates` of a reversible ViT.

Usage:
    python tools/bench/bench_features.py [--depths 12 48] [--batch 8] [--img-size 64] [--model vit-small-rev]

For each depth, one forward through `forward_intermediates` (three outputs: after a quarter,
half and all of the blocks), a loss on the final features and every output, and its backward,
in both executions of the same reversible model. The figure is the bytes autograd keeps
between that forward and its backward (counted by `torch.autograd.graph.saved_tensors_hooks`),
in MiB: the activation memory that grows with depth, without the allocator's noise.
"""

from __future__ import annotations

import argparse

import torch

import revzoo


def saved_mib(name: str, depth: int, execution: str, batch: int, img_size: int) -> float:
    torch.manual_seed(0)
    model = revzoo.create(name, img_size=img_size, depth=depth, num_classes=10)
    model.execution = execution
    images = torch.randn(batch, 3, img_size, img_size)
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        final, features = model.forward_intermediates(images, indices=[depth // 4 - 1, depth // 2 - 1, depth - 1])
    (final.sum() + sum(feature.sum() for feature in features)).backward()
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[12, 48])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--model", default="vit-small-rev")
    args = parser.parse_args()
    print(f"{args.model}, {args.img_size} px, batch {args.batch}: MiB kept for backward by forward_intermediates")
    print("| depth | invert | autograd |\n|---:|---:|---:|")
    for depth in args.depths:
        invert, autograd = (saved_mib(args.model, depth, execution, args.batch, args.img_size)
                            for execution in ("invert", "autograd"))
        print(f"| {depth} | {invert:.1f} | {autograd:.1f} |")


if __name__ == "__main__":
    main()
