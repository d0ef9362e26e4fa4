"""Memory a training step of a transformers model adds per layer: reversible (revzoo) vs HF checkpointing vs autograd.

    python tools/bench/bench_transformers_memory.py [--families llama gpt2 ...] [--width 256] [--tokens 256]

For each family, a model of width `--width` (4 heads, MLP 4x) at depth 2 and 8, batch 2 x
`--tokens` tokens, float32, one step (forward, loss, backward) with gradients preallocated, each
configuration in its own process (MALLOC_MMAP_THRESHOLD_ set; the resident peak above the
resident size before the step, as `revzoo bench` measures):

- autograd: the model as transformers builds it;
- checkpointing: transformers' `gradient_checkpointing_enable()` (keeps each layer's input);
- reversible: `revzoo.reversibilize(model, scale=--scale)`, exact, execution "invert" (keeps the
  side bits exact inversion needs: 2s bits per element per layer at λ = β = 2**-s). The default,
  1/32, is what scale=None chooses for the pretrained SmolLM2-135M (tools/bench/smollm2_reversible.py);
  these models are random, so their own choice would say nothing.

The figure is the growth per layer, (peak at depth 8 - peak at depth 2) / 6, in MiB, and as a
ratio to one layer input (batch x tokens x width x 4 bytes), which is what checkpointing keeps.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "transformers" / "tests"))

CONFIGS = ("autograd", "checkpointing", "reversible")


def build(family: str, depth: int, width: int, config: str, scale: float):
    from tiny import FAMILIES, tiny

    import revzoo

    if family == "gpt2":
        sizes = {"n_embd": width, "n_layer": depth, "n_head": 4, "n_positions": 1024}
    else:
        sizes = {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": depth,
                 "max_position_embeddings": 1024}
        if "head_dim" in FAMILIES[family][2]:
            sizes["head_dim"] = width // 4
        if family == "opt":
            sizes.update(ffn_dim=4 * width, word_embed_proj_dim=width)
    model = tiny(family, dtype=torch.float32, **sizes).train()
    if config == "checkpointing":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif config == "reversible":
        revzoo.reversibilize(model, scale=scale)
    return model


def child(family: str, depth: int, width: int, tokens: int, config: str, scale: float) -> None:
    from tiny import tokens as make_tokens

    from revzoo.bench import measure_peak

    torch.set_num_threads(1)
    model = build(family, depth, width, config, scale)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    ids = make_tokens(batch=2, length=tokens)

    def step() -> None:
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()

    step()
    print(json.dumps({"bytes": measure_peak(step)}))


def main() -> None:
    from tiny import FAMILIES

    from revzoo.bench import peak_in_subprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--scale", type=float, default=1 / 32, help="λ = β of the reversible models (default 1/32)")
    parser.add_argument("--child", nargs=3, metavar=("FAMILY", "DEPTH", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        family, depth, config = args.child
        child(family, int(depth), args.width, args.tokens, config, args.scale)
        return
    layer_input = 2 * args.tokens * args.width * 4
    bits = 2 * round(-math.log2(args.scale))
    print(f"width {args.width}, 2 x {args.tokens} tokens, float32, reversible at scale {args.scale:g} ({bits} side bits "
          f"per element per layer): MiB a training step adds per layer (one layer input: {layer_input / 2**20:.2f} MiB)")
    print("| family | autograd | checkpointing | reversible | reversible / checkpointing |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for family in args.families:
        per_layer = {}
        for config in CONFIGS:
            options = ["--width", str(args.width), "--tokens", str(args.tokens), "--scale", str(args.scale)]
            peaks = [peak_in_subprocess("tools.bench_transformers_memory", [*options, "--child", family, str(depth), config])
                     ["bytes"] for depth in (2, 8)]
            per_layer[config] = (peaks[1] - peaks[0]) / 6
        row = " | ".join(f"{per_layer[c] / 2**20:.2f}" for c in CONFIGS)
        ratio = per_layer["reversible"] / per_layer["checkpointing"] if per_layer["checkpointing"] > 0 else float("nan")
        print(f"| {family} | {row} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
