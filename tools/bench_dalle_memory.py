"""Peak training-step memory of DALL-E against depth: sequential form vs reversible form ("invert").

Each (form, depth) runs in its own process with MALLOC_MMAP_THRESHOLD_=65536 (so the
resident size tracks live memory): parameter gradients are preallocated, the resident
size is read, the peak is reset (/proc/self/clear_refs), one forward+backward step runs,
and the peak above the baseline is the step's activation memory. Linux only.

    python tools/bench_dalle_memory.py [--depths 2 4 8 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from revzoo_dalle import build_dalle

CONFIG = {
    "dim": 128, "heads": 4, "dim_head": 32, "num_text_tokens": 1000, "text_seq_len": 32,
    "attn_types": ["full", "axial_row", "axial_col", "conv_like"], "shift_tokens": True, "rotary_emb": True,
    "vae": "none", "image_size": 64, "vae_num_layers": 2, "num_image_tokens": 512,
}
BATCH = 4


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(form: str, depth: int) -> int:
    """Returns the bytes one training step adds to the resident peak, in this process."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_dalle(form=form, depth=depth, **CONFIG).train()
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.grad = torch.zeros_like(parameter)
    text = torch.randint(1, CONFIG["num_text_tokens"], (BATCH, CONFIG["text_seq_len"]))
    image = torch.randint(0, CONFIG["num_image_tokens"], (BATCH, model.image_seq_len))
    baseline = _kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    model(text, image, return_loss=True).backward()
    return (_kib("VmHWM") - baseline) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--child", nargs=2, metavar=("FORM", "DEPTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"bytes": measure(args.child[0], int(args.child[1]))}))
        return
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    print(f"dalle training step, batch {BATCH}, {CONFIG['text_seq_len']} text + "
          f"{(CONFIG['image_size'] // 4) ** 2} image tokens, dim {CONFIG['dim']}: peak MiB above the weights")
    print(f"{'depth':>5} {'sequential':>11} {'reversible':>11} {'ratio':>6}")
    for depth in args.depths:
        peaks = {}
        for form in ("sequential", "reversible"):
            result = subprocess.run([sys.executable, __file__, "--child", form, str(depth)],
                                    capture_output=True, text=True, env=env, check=True)
            peaks[form] = json.loads(result.stdout.strip().splitlines()[-1])["bytes"] / 2**20
        print(f"{depth:>5} {peaks['sequential']:>11.1f} {peaks['reversible']:>11.1f} "
              f"{peaks['reversible'] / peaks['sequential']:>6.2f}")


if __name__ == "__main__":
    main()
