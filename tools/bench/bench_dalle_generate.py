"""Tokens per second of DALL-E image generation with and without the key/value cache, as a ratio.

A small model generates a 16x16 grid of image tokens (256 tokens) for a batch of texts.
The two configurations alternate (cached, uncached, cached, ...) in one process and the
median of the per-round speed ratios is reported, since the machine is shared and noisy.

    python tools/bench/bench_dalle_generate.py [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from revzoo_dalle import build_dalle

CONFIG = {
    "dim": 128, "depth": 4, "heads": 4, "dim_head": 32, "num_text_tokens": 1000, "text_seq_len": 16,
    "attn_types": ["full", "axial_row", "axial_col", "conv_like"], "shift_tokens": True, "rotary_emb": True,
    "vae": "none", "image_size": 64, "vae_num_layers": 2, "num_image_tokens": 512,
}


def _tokens_per_second(model: torch.nn.Module, text: torch.Tensor, use_cache: bool) -> float:
    torch.manual_seed(0)
    start = time.perf_counter()
    tokens = model.generate_images(text, use_cache=use_cache, return_tokens=True)
    return tokens.numel() / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--form", default="reversible", choices=("reversible", "sequential"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_dalle(form=args.form, **CONFIG).eval()
    text = torch.randint(1, CONFIG["num_text_tokens"], (args.batch, CONFIG["text_seq_len"]))
    grid = CONFIG["image_size"] // 2 ** CONFIG["vae_num_layers"]
    _tokens_per_second(model, text, True)  # warm-up

    cached, uncached = [], []
    for _ in range(args.rounds):
        cached.append(_tokens_per_second(model, text, True))
        uncached.append(_tokens_per_second(model, text, False))
    ratios = [c / u for c, u in zip(cached, uncached)]
    print(f"dalle generate, {args.form} form, {grid}x{grid} image tokens, batch {args.batch}, "
          f"dim {CONFIG['dim']}, depth {CONFIG['depth']}, {args.threads} thread(s), {args.rounds} rounds")
    print(f"cached   {statistics.median(cached):8.1f} tokens/s (median)")
    print(f"uncached {statistics.median(uncached):8.1f} tokens/s (median)")
    print(f"speed-up of the cache: {statistics.median(ratios):.2f}x (median of per-round ratios "
          f"{', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
