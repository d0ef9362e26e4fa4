"""Benchmark one training step of ViT-S/16: revzoo's reversible form against timm's own model,
with and without timm's gradient checkpointing.

Usage:
    python tools/bench/bench_vit.py [--batch 32] [--img-size 224] [--rounds 5] [--model vit_small_patch16_224]
                                    [--memory-only] [--device cuda] [--precision bf16]

Configurations (same weights, same batch, forward + cross-entropy + backward):
    timm       timm's VisionTransformer, plain autograd
    timm-ckpt  timm's VisionTransformer after set_grad_checkpointing() (recomputes each block)
    rev        revzoo_vit.from_timm(..., form="reversible"), execution "invert"

Peak activation memory follows DESIGN.md "Measuring on these machines": each configuration
runs in its own process with MALLOC_MMAP_THRESHOLD_=65536; after one warm-up step the
parameter gradients exist (preallocated), VmRSS is the baseline, the peak is reset through
/proc/self/clear_refs, one step runs, and the figure is VmHWM - baseline.
Time: the three configurations alternate in one process (A B C A B C ...); the figure is the
median over rounds of each configuration's time divided by timm's in the same round.
On CUDA (`--device cuda`, bf16 autocast by default) the peak is torch.cuda.max_memory_allocated above
the memory allocated before the step, measured in one process, and each step ends with a synchronize.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import timm
import torch
from revzoo_vit import from_timm
from torch import nn

from revzoo.bench import Setting, measure_cuda_peak, measure_peak

CONFIGS = ("timm", "timm-ckpt", "rev")


def build(config: str, args: argparse.Namespace) -> nn.Module:
    """Returns the model of `config`, with weights from seed 0 (identical across configurations)."""
    torch.manual_seed(0)
    vit = timm.create_model(args.model, pretrained=False, img_size=args.img_size, num_classes=1000)
    if config == "timm-ckpt":
        vit.set_grad_checkpointing()
    model = from_timm(vit, form="reversible") if config == "rev" else vit
    return model.train().to(args.device)


def make_batch(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch, 3, args.img_size, args.img_size, generator=generator)
    labels = torch.randint(0, 1000, (args.batch,), generator=generator)
    return images.to(args.device), labels.to(args.device)


def setting_of(args: argparse.Namespace) -> Setting:
    return Setting(args.device, args.device != "cpu" if args.precision is None else args.precision == "bf16")


def step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, setting: Setting) -> None:
    with setting.autocast():
        loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    setting.synchronize()


def measure_memory(config: str, args: argparse.Namespace) -> dict:
    """Runs in a child process: returns the peak memory one training step adds, in MiB."""
    model = build(config, args)
    images, labels = make_batch(args)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    setting = setting_of(args)
    step(model, images, labels, setting)  # warm-up: lazy allocations (thread pools, kernels) are not the step's
    if args.device.startswith("cuda"):
        peak = measure_cuda_peak(lambda: step(model, images, labels, setting), args.device)
    else:
        peak = measure_peak(lambda: step(model, images, labels, setting))
    return {"config": config, "peak_step_mib": peak / 2**20}


def memory_in_subprocesses(args: argparse.Namespace) -> dict[str, dict]:
    if args.device.startswith("cuda"):  # the CUDA allocator counts live tensors exactly: no process of its own
        return {config: measure_memory(config, args) for config in CONFIGS}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    results = {}
    for config in CONFIGS:
        command = [sys.executable, __file__, "--measure-memory", config, "--batch", str(args.batch),
                   "--img-size", str(args.img_size), "--model", args.model, "--device", args.device]
        if args.precision:
            command += ["--precision", args.precision]
        output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
        results[config] = json.loads(output.strip().splitlines()[-1])
    return results


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def time_ratios(args: argparse.Namespace) -> dict[str, dict]:
    """Alternates the configurations; returns median step seconds and median per-round ratio to timm."""
    models = {config: build(config, args) for config in CONFIGS}
    images, labels = make_batch(args)
    setting = setting_of(args)
    for model in models.values():  # warm-up
        step(model, images, labels, setting)
    seconds: dict[str, list[float]] = {config: [] for config in CONFIGS}
    for _ in range(args.rounds):
        for config, model in models.items():
            model.zero_grad(set_to_none=False)
            seconds[config].append(timed(lambda m=model: step(m, images, labels, setting)))
    return {
        config: {
            "median_s": statistics.median(seconds[config]),
            "ratio_to_timm": statistics.median(t / base for t, base in zip(seconds[config], seconds["timm"])),
        }
        for config in CONFIGS
    }


def check_same_function(args: argparse.Namespace) -> float:
    """Returns max |timm - revzoo sequential| on the batch: the benchmark compares like with like."""
    vit = build("timm", args).eval()
    images, _ = make_batch(args)
    with torch.no_grad():
        expected = vit(images[:2])
        return (from_timm(copy.deepcopy(vit), form="sequential").eval()(images[:2]) - expected).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-only", action="store_true", help="skip the timing rounds")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--precision", choices=("float32", "bf16"), help="default: bf16 on cuda, float32 on cpu")
    parser.add_argument("--measure-memory", choices=CONFIGS, help=argparse.SUPPRESS)  # the child process's job
    args = parser.parse_args()
    if args.measure_memory:
        print(json.dumps(measure_memory(args.measure_memory, args)))
        return

    print(f"{args.model}, batch {args.batch}, {args.img_size}px, torch {torch.__version__}, timm {timm.__version__}, "
          f"{torch.get_num_threads()} threads, {setting_of(args).describe()}")
    print(f"sequential form vs timm, max |diff| of logits: {check_same_function(args):.2e}")
    memory = memory_in_subprocesses(args)
    times = {} if args.memory_only else time_ratios(args)
    base = memory["timm"]["peak_step_mib"]
    print(f"{'config':<10} {'step peak MiB':>14} {'vs timm':>8} {'step s (median)':>16} {'time vs timm':>13}")
    for config in CONFIGS:
        peak = memory[config]["peak_step_mib"]
        timing = times.get(config, {"median_s": float("nan"), "ratio_to_timm": float("nan")})
        print(f"{config:<10} {peak:>14.0f} {peak / base:>8.2f} {timing['median_s']:>16.2f} "
              f"{timing['ratio_to_timm']:>13.2f}")
    print(json.dumps({"args": vars(args), "memory": memory, "time": times}))


if __name__ == "__main__":
    main()
