"""torch.compile and the invert execution: step time of the transformer stack, as ratios in one process.

Configurations (the `revzoo bench` transformer stack, same weights, forward + backward):
    sequential          the sequential form, eager (the reference, 1.00)
    invert              the reversible form, execution "invert", eager
    invert+compiled     "invert" with each branch compiled (`module.compile()` on every f and g): the engine
                        stays eager, so memory stays flat in depth, and the branches run as compiled kernels
    autograd+compiled   the reversible form, execution "autograd", the whole stack compiled
    invert,model compiled  `torch.compile` of the whole "invert" stack: revzoo runs the stack eagerly (a graph
                        break, so forward and recompute draw the same dropout masks); what compiling a model gives
    checkpoint          the sequential form with torch.utils.checkpoint around each sub-layer, eager
Before timing, each compiled configuration's gradients are compared with eager plain autograd of the same function.

Usage: python tools/bench/bench_compile.py [--device cuda] [--precision bf16] [--depth 16] [--rounds 10]
                                     [--dim 1024 --heads 16 --seq 1024 --batch 8]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from revzoo.bench import Checkpointed, Setting, StackConfig, alternate_times, build_stack, training_step


def _configurations(config: StackConfig, depth: int, setting: Setting) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    reversible = build_stack(config, depth, "reversible")[0].to(setting.device)
    compiled_branches = copy.deepcopy(reversible)
    for block in compiled_branches.blocks:
        block.f.compile()
        block.g.compile()
    whole = copy.deepcopy(reversible)
    whole.execution = "autograd"
    whole.compile()
    model_compiled = torch.compile(copy.deepcopy(reversible))
    checkpointed = copy.deepcopy(reversible)
    checkpointed.form = "sequential"
    for block in checkpointed.blocks:
        block.f, block.g = Checkpointed(block.f), Checkpointed(block.g)
    sequential = copy.deepcopy(reversible)
    sequential.form = "sequential"
    return {"sequential": sequential, "invert": reversible, "invert+compiled": compiled_branches,
            "autograd+compiled": whole, "invert,model compiled": model_compiled, "checkpoint": checkpointed}


def _gradients(model: torch.nn.Module, x: torch.Tensor, setting: Setting) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with setting.autocast():
        loss = model(x).float().square().mean()
    loss.backward()
    return [p.grad.float() for p in model.parameters()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("float32", "bf16"), help="default: bf16 on cuda, float32 on cpu")
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10)
    for field, default in vars(StackConfig()).items():
        parser.add_argument(f"--{field}", type=int, default=default)
    args = parser.parse_args()
    bf16 = args.device != "cpu" if args.precision is None else args.precision == "bf16"
    setting = Setting(args.device, bf16)
    config = StackConfig(args.dim, args.heads, args.seq, args.batch)
    models = _configurations(config, args.depth, setting)
    x = torch.randn(config.batch, config.seq, config.dim, generator=torch.Generator().manual_seed(0)).to(args.device)

    start = time.perf_counter()
    reference = _gradients(copy.deepcopy(models["invert"]).requires_grad_(), x, setting)
    for name in ("invert+compiled", "autograd+compiled", "invert,model compiled"):
        got = _gradients(models[name], x, setting)  # also compiles: the first call is not timed
        worst = max(((g - r).norm() / r.norm().clamp_min(1e-30)).item() for g, r in zip(got, reference))
        print(f"{name}: gradients vs eager invert, worst relative norm {worst:.1e}")
    print(f"compiling took {time.perf_counter() - start:.1f} s")

    steps = {name: training_step(model, (x,), {}, setting) for name, model in models.items()}
    times = alternate_times(steps, "sequential", args.rounds)
    print(f"step time, {setting.describe()}, {config}, depth {args.depth}, median of {args.rounds} rounds, "
          f"relative to sequential eager:")
    for name, ratio in times.items():
        print(f"  {name:<21} {ratio:.3f}")
    print(f"invert+compiled / invert: {times['invert+compiled'] / times['invert']:.3f}; "
          f"invert+compiled / autograd+compiled: {times['invert+compiled'] / times['autograd+compiled']:.3f}")
    print(f"invert,model compiled / invert: {times['invert,model compiled'] / times['invert']:.3f}; "
          f"invert,model compiled / autograd+compiled: "
          f"{times['invert,model compiled'] / times['autograd+compiled']:.3f}")


if __name__ == "__main__":
    main()
