"""Peak memory of saving, converting and loading a ~1 GB revzoo checkpoint, against the file's size.

Conversion streams the tensors' bytes through a small buffer, so its peak should stay
far below the file's size; loading must hold the model itself (about 1x the file) and
should need little beyond it. Each operation runs in its own process with
MALLOC_MMAP_THRESHOLD_=65536 (revzoo.bench.MMAP_ENV): the resident size is read, the peak is
reset, the operation runs, and its peak above that baseline is reported. Linux only.
The files go to a temporary directory (next to --dir) and are deleted at the end.

    python tools/bench/bench_checkpoint.py [--dim 4096] [--depth 8] [--shard 256MB] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

import revzoo
from revzoo.bench import measure_peak, peak_in_subprocess

ARCHITECTURE = "bench-wide"
MB = 10**6


class WideStack(nn.Module):
    """Pairs of large square Linear layers: a checkpoint that is nearly all big tensors, like an LLM's."""

    def __init__(self, *, form: str, dim: int, depth: int) -> None:
        super().__init__()
        pairs = [(nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)) for _ in range(depth)]
        self.stack = revzoo.ReversibleSequence(pairs, form=form)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack(x)


class Plugin:
    @revzoo.hookimpl
    def register_architectures(self, register) -> None:
        register(revzoo.ArchSpec(name=ARCHITECTURE, builder=WideStack, description="benchmark: large Linear pairs",
                                 defaults={"dim": 4096, "depth": 8}))


def _worker(operation: str, src: str, dst: str, shard: str) -> dict:
    """Runs one operation in this process and returns its peak resident memory above the baseline."""
    revzoo.register_plugin(Plugin(), name="bench-checkpoint")
    if operation == "save":
        config = json.loads(src)
        model = revzoo.create(ARCHITECTURE + "-rev", **config)
        peak = measure_peak(lambda: revzoo.save(model, dst))
    elif operation == "load":
        peak = measure_peak(lambda: revzoo.load(src))
    else:
        peak = measure_peak(lambda: revzoo.convert(src, dst, "sequential", max_shard_size=shard or None))
    return {"bytes": peak}


def _size(path: Path) -> int:
    """Returns the bytes of a file, or of an index and all its shards."""
    if not path.name.endswith(".index.json"):
        return path.stat().st_size
    stem = path.name.removesuffix(".safetensors.index.json")
    return path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(f"{stem}-*-of-*.safetensors"))


def _remove(path: Path) -> None:
    """Removes a checkpoint: a single file, or an index and its shards."""
    stem = path.name.removesuffix(".safetensors.index.json")
    for shard in path.parent.glob(f"{stem}-*-of-*.safetensors") if path.name.endswith(".index.json") else ():
        shard.unlink()
    path.unlink()


def _run(operation: str, src: Path | str, dst: Path | None = None, shard: str = "") -> int:
    return peak_in_subprocess("bench_checkpoint", ["--worker", operation, str(src), str(dst or ""), shard])["bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--shard", default="256MB", help="shard size for the sharded conversions")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the temporary checkpoints go")
    parser.add_argument("--worker", nargs=4, metavar=("OP", "SRC", "DST", "SHARD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(*args.worker)))
        return
    # the workers run as `python -m bench_checkpoint`, without autoloading the built-in plugins
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    os.environ["REVZOO_LOAD_PLUGINS"] = ""
    work = Path(tempfile.mkdtemp(prefix="bench-checkpoint-", dir=args.dir))
    try:
        single, sharded = work / "model.safetensors", work / "sharded.safetensors.index.json"
        rows = [("save (model already in memory)", _run("save", json.dumps({"dim": args.dim, "depth": args.depth}), single))]
        size = _size(single)
        rows.append((f"convert -> sharded ({args.shard} shards)", _run("convert", single, sharded, args.shard)))
        for label, operation, src, dst in [
            ("convert single file -> single file", "convert", single, work / "out.safetensors"),
            ("convert sharded -> single file", "convert", sharded, work / "out.safetensors"),
            ("load single file", "load", single, None),
            ("load sharded", "load", sharded, None),
        ]:
            rows.append((label, _run(operation, src, dst)))
            if dst is not None:
                _remove(dst)
    finally:
        shutil.rmtree(work)
    print(f"checkpoint: {size / MB:.0f} MB ({args.depth} pairs of {args.dim}x{args.dim} float32 Linear layers)")
    print(f"\n| operation | peak RSS above baseline (MB) | / file size ({size / MB:.0f} MB) |")
    print("| --- | ---: | ---: |")
    for label, peak in rows:
        print(f"| {label} | {peak / MB:.0f} | {peak / size:.3f} |")
    print(f"\ncommand: python tools/bench/bench_checkpoint.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
