"""Safetensors as Hugging Face writes it: every dtype code, and shard sizes and plans as huggingface_hub makes them."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import revzoo
from helpers import plugin_of, tiny_spec
from revzoo.checkpoints._shards import _plan, parse_size
from revzoo.checkpoints._stream import safetensors_dtypes

# Every dtype code of the safetensors format (its Rust `Dtype` enum), readable by torch or not.
SAFETENSORS_CODES = ("BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
                     "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "C64", "I64", "U64")


def write_raw(path, code: str, shape: list[int], data: bytes) -> None:
    header = json.dumps({"x": {"dtype": code, "shape": shape, "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def test_table_is_what_safetensors_writes_for_each_torch_dtype() -> None:
    table = safetensors_dtypes()
    assert set(table) <= set(SAFETENSORS_CODES)
    for code, dtype in (("F8_E4M3FNUZ", "float8_e4m3fnuz"), ("F8_E5M2FNUZ", "float8_e5m2fnuz")):
        if hasattr(torch, dtype):  # the two: refused by the old hand-written table
            assert table[code] == (getattr(torch, dtype), 1)
    assert table["F32"] == (torch.float32, 1) and table["BF16"] == (torch.bfloat16, 1)


@pytest.mark.parametrize("code", SAFETENSORS_CODES)
def test_every_safetensors_dtype_reads_as_safetensors_reads_it_or_is_refused_in_one_line(tmp_path, code) -> None:
    path = tmp_path / "x.safetensors"
    table = safetensors_dtypes()
    if code in table:
        dtype, _ = table[code]
        raw = torch.arange(24, dtype=torch.uint8).reshape(3, 8)  # any bit pattern: compared as bytes
        save_file({"x": raw.view(dtype)}, path)
        expected = load_file(path)["x"]
        got = revzoo.read_foreign(path)["x"]
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert torch.equal(got.view(torch.uint8), expected.view(torch.uint8))
        return
    write_raw(path, code, [2, 4], bytes(6))  # 8 six-bit values; also what a four-bit code would need at most
    with pytest.raises(revzoo.CheckpointError) as refused:
        revzoo.read_foreign(path)
    message = str(refused.value)
    assert "\n" not in message and f"dtype {code!r}" in message and "F8_E4M3FNUZ" in message


@pytest.fixture
def hf():
    """huggingface_hub's serialisation helpers (installed with timm, the `vit` extra), the reference here."""
    return pytest.importorskip("huggingface_hub.serialization._base")  # parse_size_to_int is not re-exported


@pytest.mark.parametrize("text", ["500MB", "5GB", " 1.5gb ", "100KB", "2 TB", "0.2KB", "1_000MB", "2GiB", "10", "5 B",
                                  "MB", "", "-5MB", "0MB", "0.0001KB", "nanMB", "infGB", "5mb", "1e3KB", "KB5"])
def test_size_text_means_what_huggingface_reads(hf, text) -> None:
    try:
        theirs = hf.parse_size_to_int(text)
    except (ValueError, OverflowError):
        theirs = None
    if theirs is None or theirs < 1:  # Hugging Face refuses it, or takes it and shards every tensor alone
        with pytest.raises(revzoo.CheckpointError, match="invalid shard size"):
            parse_size(text)
    else:
        assert parse_size(text) == theirs


def huggingface_groups(state: dict[str, torch.Tensor], max_size: int | str) -> list[list[str]]:
    from huggingface_hub import split_torch_state_dict_into_shards

    split = split_torch_state_dict_into_shards(state, max_shard_size=max_size)
    return [list(names) for names in split.filename_to_tensors.values()]


@pytest.mark.parametrize("max_size", ["100KB", "1KB", 4000, 10**9])
def test_shard_plan_is_huggingfaces(hf, max_size) -> None:
    generator = torch.Generator().manual_seed(0)
    numels = torch.randint(1, 5000, (60,), generator=generator).tolist()
    numels[7] = numels[30] = 60_000  # larger than a shard: alone, without closing the shard being filled
    state = {f"t{i:02d}": torch.zeros(n) for i, n in enumerate(numels)}
    ours = _plan({name: t.numel() * t.element_size() for name, t in state.items()}, parse_size(max_size))
    assert ours == huggingface_groups(state, max_size)


def test_saved_shards_are_the_ones_huggingface_would_write(hf, tmp_path, register_plugin) -> None:
    register_plugin(plugin_of(tiny_spec()), name="tiny")
    model = revzoo.create("tiny-rev", dim=64, depth=6)
    index = revzoo.save(model, tmp_path / "m.safetensors", max_shard_size="20KB")
    weight_map = json.loads(index.read_text())["weight_map"]
    ours: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        ours.setdefault(shard, []).append(name)
    theirs = huggingface_groups(model.state_dict(), "20KB")
    assert len(theirs) > 2 and sorted(map(sorted, ours.values())) == sorted(map(sorted, theirs))
    for shard, names in ours.items():
        with safe_open(tmp_path / shard, "pt") as stored:
            assert sorted(stored.keys()) == sorted(names)
