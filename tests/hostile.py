"""Hostile checkpoint files, crafted small, and a runner that measures the peak memory of refusing each.

`python tests/hostile.py [--fuzz N] [--seed S] [--seconds T]` crafts the files in a temporary
directory, runs each command in this process through `revzoo.cli.main`, measures its peak
resident memory above the size before it (revzoo.bench._measure.measure_peak; run with
MALLOC_MMAP_THRESHOLD_=65536 so freed memory is returned), and prints one JSON line per case.
The tests import the crafting functions; tools/bench/measure_refusals.py prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import struct
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

DALLE = dict(dim=16, depth=2, heads=2, dim_head=8, num_text_tokens=10, text_seq_len=4, image_size=16,
             num_image_tokens=16, vae_num_layers=2, vae_hidden_dim=8, vae_codebook_dim=8)
LIE = dict(dim=8, depth=2, heads=2, dim_head=4, dim_out=3)


@dataclass(frozen=True)
class Case:
    label: str
    argv: list[str]


def rewrite(src: Path, dst: Path, **metadata: Any) -> Path:
    """Copies a safetensors file with some metadata replaced (values JSON-encoded unless strings; None removes)."""
    with safe_open(str(src), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        meta = dict(handle.metadata() or {})
    for key, value in metadata.items():
        key = key if key == "format" else "revzoo." + key
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value if isinstance(value, str) else json.dumps(value)
    save_file(tensors, str(dst), meta)
    return dst


def with_config(src: Path, dst: Path, **changes: Any) -> Path:
    """Copies a revzoo file with its config's keys changed."""
    with safe_open(str(src), framework="pt") as handle:
        config = json.loads(handle.metadata()["revzoo.config"])
    return rewrite(src, dst, config={**config, **changes})


def raw_header(path: Path) -> tuple[dict, bytes]:
    """Returns a safetensors file's header (as a dict) and its data bytes."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def write_raw(path: Path, header: dict, body: bytes) -> Path:
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + body)
    return path


def zip_bomb(path: Path, inflated: int) -> Path:
    """A .pt zip (torch.save's layout) whose one storage entry deflates `inflated` bytes of zeros into a few KiB."""
    torch.save({"w": torch.zeros(4)}, path)
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    storage = next(name for name in entries if name.endswith("/data/0"))
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in entries.items():
            if name != storage:
                archive.writestr(name, content)
        info = zipfile.ZipInfo(storage)
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as entry:
            chunk = bytes(1 << 20)
            for _ in range(inflated >> 20):
                entry.write(chunk)
    return path


def shared_references(depth: int = 30, width: int = 10) -> list:
    """A list of `width` references to one list of `width` references to ..., `depth` deep: a few hundred bytes
    pickled (each level stored once), width**depth items to anything that walks it ("billion laughs")."""
    laugh: list = [0] * width
    for _ in range(depth):
        laugh = [laugh] * width
    return laugh


_NESTED = "revzoo-deeply-nested"


def nested_pt(obj: Any, path: Path, depth: int) -> Path:
    """torch.save(obj, path) with the string "revzoo-deeply-nested" in it replaced by a list in a list in ...
    `depth` deep: pickle opcodes, which torch.load reads without recursion (torch.save cannot write one)."""
    torch.save(obj, path)
    with zipfile.ZipFile(path) as archive:
        entries = {entry.filename: archive.read(entry.filename) for entry in archive.infolist()}
    name = next(name for name in entries if name.endswith("data.pkl"))
    pickled = b"X" + struct.pack("<I", len(_NESTED)) + _NESTED.encode()  # BINUNICODE
    entries[name] = entries[name].replace(pickled, b"]" * depth + b"a" * (depth - 1))  # EMPTY_LIST..., APPEND...
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for entry, data in entries.items():
            archive.writestr(entry, data)
    return path


def make_sources(directory: Path) -> dict[str, Path]:
    """Writes the valid small files the hostile ones are made from: a dalle-rev revzoo file, a DALLE-pytorch
    checkpoint, a lie-transformer-pytorch state dict and a timm ViT state dict. Needs the built-in plugins."""
    import timm
    from revzoo_dalle import write_dalle_pytorch

    import revzoo

    torch.manual_seed(0)
    dalle = revzoo.create("dalle-rev", **DALLE)
    sources = {"dalle": revzoo.save(dalle, directory / "dalle.safetensors")}
    sources["dalle-pytorch"] = directory / "dalle-pytorch.pt"
    torch.save(write_dalle_pytorch(dalle), sources["dalle-pytorch"])
    sources["lie"] = Path(__file__).parent / "fixtures" / "lie" / "upstream_sequential.pt"
    sources["timm"] = directory / "timm.safetensors"
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, embed_dim=32,
                            num_heads=2, depth=1, num_classes=5)
    save_file(vit.state_dict(), str(sources["timm"]))
    return sources


def issue_cases(directory: Path, sources: dict[str, Path], bomb_bytes: int = 512 << 20) -> list[Case]:
    """The tiny files that once cost gigabytes (stride-0 and shared storages, zip bombs), each with the command
    that reads it."""
    d, out = sources["dalle"], str(directory / "out.safetensors")
    upstream = torch.load(sources["dalle-pytorch"], weights_only=True)
    deep = directory / "deep-hparams.pt"
    torch.save({**upstream, "hparams": {**upstream["hparams"], "depth": 10**9}}, deep)
    layers = directory / "vae-layers.pt"
    torch.save({**upstream, "vae_params": {**upstream["vae_params"], "num_layers": 10**12}}, layers)
    resume = torch.load(Path(__file__).parent / "fixtures" / "dalle" / "resume.pt", weights_only=True)
    groups = resume["opt_state"]["param_groups"]
    laughs = {part: directory / f"laughs-{part}.pt" for part in ("scheduler_state", "opt_state")}
    torch.save({**resume, "scheduler_state": {"laughs": shared_references()}}, laughs["scheduler_state"])
    torch.save({**resume, "opt_state": {**resume["opt_state"], "param_groups": [
        {**groups[0], "betas": shared_references()}, *groups[1:]]}}, laughs["opt_state"])
    nested = nested_pt({**resume, "scheduler_state": {"x": _NESTED}}, directory / "nested.pt", 100_000)
    lie = torch.load(sources["lie"], weights_only=True)
    laughs["lie"] = directory / "laughs-lie.pt"
    torch.save({"state_dict": lie, "hparams": {"heads": shared_references()}}, laughs["lie"])
    blocks = directory / "blocks.safetensors"
    save_file({"blocks.99999.norm1.weight": torch.ones(1)}, str(blocks))
    return [
        Case("convert --probe: metadata dim=8000",
             ["convert", str(with_config(d, directory / "wide.safetensors", dim=8000)), out, "--to", "sequential",
              "--probe"]),
        Case("export (loads): metadata dim=30000", ["export", "dalle-pytorch",
                                          str(with_config(d, directory / "wider.safetensors", dim=30000)),
                                          str(directory / "out.pt")]),
        Case("convert: metadata depth=10**9", ["convert", str(with_config(d, directory / "deep.safetensors",
                                                                          depth=10**9)), out, "--to", "sequential"]),
        Case("import timm: blocks.99999", ["import", "timm", str(blocks), out, "--model", "vit_tiny_patch16_224"]),
        Case("import dalle-pytorch: depth=10**9", ["import", "dalle-pytorch", str(deep), out]),
        Case("import dalle-pytorch: num_layers=10**12", ["import", "dalle-pytorch", str(layers), out]),
        Case("import dalle-pytorch: shared-reference scheduler_state",
             ["import", "dalle-pytorch", str(laughs["scheduler_state"]), out]),
        Case("import dalle-pytorch: shared-reference opt_state", ["import", "dalle-pytorch", str(laughs["opt_state"]), out]),
        Case("import lie-transformer-pytorch: shared-reference hparams",
             ["import", "lie-transformer-pytorch", str(laughs["lie"]), out]),
        Case("import dalle-pytorch: scheduler_state nested 100000 deep", ["import", "dalle-pytorch", str(nested), out]),
        Case(f"import: .pt zip deflating {bomb_bytes >> 20} MiB",
             ["import", "dalle-pytorch", str(zip_bomb(directory / "bomb.pt", bomb_bytes)), out]),
    ]


_ODD_VALUES = [0, -1, 10**9, 10**18, 2**70, 0.5, -2.5, "x", "", None, True, [], [1], {}, {"a": 1}, 1e308]


def _mutate_header(rng: random.Random, header: dict) -> str:
    names = sorted(key for key in header if key != "__metadata__")
    name = rng.choice(names)
    entry = header[name]
    kind = rng.choice(["shape", "dtype", "offsets", "rename", "drop", "scalar-shape"])
    if kind == "shape" and entry["shape"]:
        axis = rng.randrange(len(entry["shape"]))
        entry["shape"][axis] = rng.choice([0, entry["shape"][axis] * 1000, 2**40, -1])
    elif kind == "dtype":
        entry["dtype"] = rng.choice(["F64", "I8", "BOOL", "F16", "XX", "U64"])
    elif kind == "offsets":
        entry["data_offsets"][rng.randrange(2)] += rng.choice([1, -1, 10**12])
    elif kind == "rename":
        header[name.replace("0", "7") + rng.choice(["", ".x"])] = header.pop(name)
    elif kind == "drop":
        del header[name]
    else:
        entry["shape"] = []
    return f"header {kind} of {name}"


def _mutate_metadata(rng: random.Random, meta: dict[str, str]) -> str:
    key = rng.choice(["config", "config", "config", "architecture", "form", "aliases", "layout_version", "config-drop",
                      "config-add"])
    config = json.loads(meta["revzoo.config"])
    if key == "config":
        option = rng.choice(sorted(config))
        config[option] = rng.choice(_ODD_VALUES)
        meta["revzoo.config"] = json.dumps(config)
        return f"config {option}={config[option]!r:.40}"
    if key == "config-drop":
        config.pop(rng.choice(sorted(config)))
        meta["revzoo.config"] = json.dumps(config)
        return "config key dropped"
    if key == "config-add":
        meta["revzoo.config"] = json.dumps({**config, "nonsense": 1})
        return "config key added"
    value = rng.choice(["lie-transformer", "timm", "dalle", "vit-tiny", "nope", "5", "null", "[]", "{}", "1e9", "-1"])
    meta[f"revzoo.{key}"] = value
    return f"{key}={value}"


def fuzz_cases(directory: Path, sources: dict[str, Path], count: int, seed: int) -> list[Case]:
    """`count` mutations of valid headers and metadata (seeded), each read by convert --probe (a full load), and of a
    DALLE-pytorch .pt's hparams (odd values, shared references, deep nesting), each imported."""
    rng = random.Random(seed)
    header, body = raw_header(sources["dalle"])
    upstream = torch.load(sources["dalle-pytorch"], weights_only=True)
    cases = []
    for index in range(count):
        path = directory / f"fuzz-{index}.safetensors"
        out = str(directory / f"fuzz-{index}-out.safetensors")
        choice = rng.random()
        if choice < 0.35:
            mutated = json.loads(json.dumps(header))
            label = _mutate_header(rng, mutated)
            write_raw(path, mutated, body)
        elif choice < 0.8:
            mutated = json.loads(json.dumps(header))
            label = _mutate_metadata(rng, mutated["__metadata__"])
            write_raw(path, mutated, body)
        else:
            path = path.with_suffix(".pt")
            part = rng.choice(["hparams", "vae_params"])
            key = rng.choice(sorted(upstream[part]))
            value = rng.choice([*_ODD_VALUES, "shared references", "deeply nested"])
            if value == "deeply nested":
                nested_pt({**upstream, part: {**upstream[part], key: _NESTED}}, path, rng.choice([200, 100_000]))
                label = f"dalle-pytorch {part}.{key}=(lists nested deep)"
            else:
                shared = value == "shared references"
                value = shared_references(rng.choice([3, 30])) if shared else value  # 3: a harmless 10**3
                torch.save({**upstream, part: {**upstream[part], key: value}}, path)
                label = f"dalle-pytorch {part}.{key}=" + ("(shared references)" if shared else f"{value!r:.40}")
            cases.append(Case(f"fuzz {index}: {label}", ["import", "dalle-pytorch", str(path), out]))
            continue
        cases.append(Case(f"fuzz {index}: {label}", ["convert", str(path), out, "--to", "sequential", "--probe"]))
    return cases


def run_case(case: Case) -> dict[str, Any]:
    """Runs one command in this process; returns its exit code, stderr, peak memory above the start, and seconds."""
    from revzoo.bench._measure import measure_peak
    from revzoo.cli import main

    result: dict[str, Any] = {"label": case.label, "argv": case.argv}
    stderr, stdout = io.StringIO(), io.StringIO()

    def step() -> None:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            try:
                result["code"] = main(case.argv)
            except BaseException as err:  # a crash is a result here, reported as such
                result["code"], result["crash"] = -1, f"{type(err).__name__}: {err}"[:300]

    start = time.perf_counter()
    result["peak_bytes"] = measure_peak(step)
    result["seconds"] = round(time.perf_counter() - start, 3)
    result["stderr"] = stderr.getvalue()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=0, help="how many fuzz cases to add (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=120, help="stop starting new cases after this long")
    parser.add_argument("--bomb-mib", type=int, default=512, help="what the .pt zip bomb inflates to")
    parser.add_argument("--only-fuzz", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("REVZOO_LOAD_PLUGINS", "dalle,lie,vit")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="revzoo-hostile-") as name:
        directory = Path(name)
        sources = make_sources(directory)
        cases = [] if args.only_fuzz else issue_cases(directory, sources, args.bomb_mib << 20)
        cases += fuzz_cases(directory, sources, args.fuzz, args.seed)
        deadline = time.perf_counter() + args.seconds
        for case in cases:
            if time.perf_counter() > deadline:
                break
            result = run_case(case)
            result["file_bytes"] = max((os.path.getsize(a) for a in case.argv if os.path.isfile(a)), default=0)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
