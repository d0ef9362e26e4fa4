"""DALL-E captions: the same ids as DALLE-pytorch 1.6.6's tokenizers (fixtures from
tools/fixtures/make_dalle_tokenizer_fixtures.py).

CLIP's BPE needs open_clip (the `dalle` extra, in the test extra); the Hugging Face and
YouTokenToMe kinds need their packages and are skipped without them.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from revzoo_dalle.tokenizer import (
    CLIP_VOCAB_SHA256,
    TokenizerError,
    clip_tokenizer,
    file_sha256,
    tokenizer_from_file,
)

import revzoo
from helpers import FIXTURES as SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES / "dalle"
EXPECTED = json.loads((FIXTURES / "tokenizers.json").read_text())
CAPTIONS = EXPECTED["captions"]
CONTEXT = EXPECTED["context_length"]


def _tokenizer(kind: str):
    if kind == "clip":
        pytest.importorskip("open_clip")
        return clip_tokenizer()
    pytest.importorskip({"hf": "tokenizers", "yttm": "youtokentome"}[kind])
    return tokenizer_from_file(FIXTURES / EXPECTED[kind]["file"])


def _padded(rows: list[list[int]], length: int) -> torch.Tensor:
    return torch.tensor([row + [0] * (length - len(row)) for row in rows])


@pytest.mark.parametrize("kind", ["clip", "hf", "yttm"])
def test_ids_match_dalle_pytorch(kind: str) -> None:
    tokenizer, expected = _tokenizer(kind), EXPECTED[kind]
    assert tokenizer.vocab_size == expected["vocab_size"]
    assert torch.equal(tokenizer.tokenize(CAPTIONS, CONTEXT, truncate_text=True), torch.tensor(expected["truncated"]))
    assert torch.equal(tokenizer.tokenize(CAPTIONS, 256), _padded(expected["full"], 256))
    for caption, refused in zip(CAPTIONS, expected["refused"]):
        if refused:
            with pytest.raises(TokenizerError, match="longer than the model's 12; shorten it or allow truncation"):
                tokenizer.tokenize(caption, CONTEXT)
        else:
            assert tokenizer.tokenize(caption, CONTEXT).dtype == torch.long


@pytest.mark.parametrize("kind", ["clip", "hf", "yttm"])
def test_decode_matches_dalle_pytorch(kind: str) -> None:
    tokenizer, expected = _tokenizer(kind), EXPECTED[kind]
    rows = torch.tensor(expected["truncated"])
    assert [tokenizer.decode(row) for row in rows] == expected["decoded"]
    assert tokenizer.decode(torch.cat((rows[0], torch.tensor([5]))), pad_tokens={5}) == expected["padding_decoded"]


def test_clip_vocabulary_is_dalle_pytorchs() -> None:
    tokenizer = _tokenizer("clip")
    assert tokenizer.sha256 == CLIP_VOCAB_SHA256 and tokenizer.kind == "clip"
    assert clip_tokenizer() is tokenizer  # built once


def test_file_kinds_record_the_file_hash() -> None:
    tokenizer = _tokenizer("hf")
    assert tokenizer.kind == "hf" and tokenizer.sha256 == file_sha256(FIXTURES / "tokenizer_hf.json")


def test_yttm_stand_in_is_called_as_dalle_pytorch_calls_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs where youtokentome is not installed too (it builds only with Cython < 3)."""
    calls = []

    class BPE:
        def __init__(self, model: str) -> None:
            calls.append(("init", model))

        def vocab_size(self) -> int:
            return 7

        def encode(self, texts, output_type):
            calls.append(("encode", texts, output_type))
            return [[len(text) % 7, 3] for text in texts]

    stand_in = types.SimpleNamespace(BPE=BPE, OutputType=types.SimpleNamespace(ID="id"))
    monkeypatch.setitem(sys.modules, "youtokentome", stand_in)
    path = tmp_path / "bpe.model"
    path.write_bytes(b"stand-in")
    tokenizer = tokenizer_from_file(path)
    assert tokenizer.kind == "yttm" and tokenizer.vocab_size == 7
    assert tokenizer.tokenize(["ab", "abc"], 3).tolist() == [[2, 3, 0], [3, 3, 0]]
    assert calls[-1] == ("encode", ["ab", "abc"], "id")


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import fails as if not installed
    path = tmp_path / "bpe.json"
    path.write_text("{}")
    with pytest.raises(TokenizerError, match=r"needs the package 'tokenizers'.*pip install 'revzoo\[dalle\]'"):
        tokenizer_from_file(path)
    assert issubclass(TokenizerError, revzoo.RevzooError)


def test_bad_files_and_captions_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="is not a file"):
        tokenizer_from_file(tmp_path / "missing.json")
    pytest.importorskip("tokenizers")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(TokenizerError, match="not a Hugging Face tokenizers JSON file"):
        tokenizer_from_file(broken)
    with pytest.raises(TokenizerError, match="captions must be strings, got int 3"):
        _tokenizer("hf").tokenize(["fine", 3], 8)


SMALL = dict(dim=16, depth=1, heads=2, dim_head=8, text_seq_len=6, image_size=8, vae_num_layers=1,
             num_image_tokens=8, vae_hidden_dim=4, vae_codebook_dim=4)


def test_model_tokenizes_captions_and_generates_from_them(dalle_plugin) -> None:
    pytest.importorskip("open_clip")
    model = revzoo.create("dalle-rev", num_text_tokens=49408, **SMALL)
    ids = model.tokenize(["a red square", "a blue disc"])
    assert torch.equal(ids, clip_tokenizer().tokenize(["a red square", "a blue disc"], 6))
    torch.manual_seed(3)
    from_ids = model.generate_images(ids, return_tokens=True)
    torch.manual_seed(3)
    from_captions = model.generate_images(["a red square", "a blue disc"], return_tokens=True)
    assert torch.equal(from_ids, from_captions)
    with pytest.raises(TokenizerError, match="longer than the model's 6"):
        model.generate_images("one two three four five six seven")
    cut = model.generate_images("one two three four five six seven", truncate_text=True, return_tokens=True)
    assert cut.shape == (1, 16)


def test_a_vocabulary_larger_than_the_model_is_refused(dalle_plugin) -> None:
    pytest.importorskip("open_clip")
    model = revzoo.create("dalle-rev", num_text_tokens=1000, **SMALL)
    with pytest.raises(TokenizerError, match="49408 ids but this model only num_text_tokens=1000; attach the vocabulary "
                       "file it was trained with .*--bpe-path PATH.*--option bpe_path=PATH"):
        model.tokenize("a red square")


def test_the_defaults_prompt_and_train_from_any_caption(dalle_plugin) -> None:
    pytest.importorskip("open_clip")
    torch.manual_seed(0)
    model = revzoo.create("dalle-rev")
    text = model.tokenize(["a xylophone on a zeppelin"])
    assert text.max() > 10000  # an id past the old default vocabulary, which made this call an IndexError
    model(text, torch.rand(1, 3, 128, 128), return_loss=True).backward()
    assert model.generate_images("a red square").shape == (1, 3, 128, 128)


def test_out_of_range_ids_and_mismatched_batches_are_clear_errors(dalle_plugin) -> None:
    model = revzoo.create("dalle-rev", num_text_tokens=20, **SMALL)
    image = torch.zeros(1, 16, dtype=torch.long)
    with pytest.raises(ValueError, match=r"text ids must be in \[0, 20\) .*model.tokenize.*got ids from 0 to 25"):
        model(torch.tensor([[25, 0, 0, 0, 0, 0]]), image)
    with pytest.raises(ValueError, match=r"image ids must be in \[0, 8\)"):
        model(torch.ones(1, 6, dtype=torch.long), image + 8)
    with pytest.raises(ValueError, match="text and image batches differ: 2 captions, 1 images"):
        model(torch.ones(2, 6, dtype=torch.long), image)


def test_the_recorded_tokenizer_is_saved_and_checked(dalle_plugin, tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    hf_file = FIXTURES / EXPECTED["hf"]["file"]
    model = revzoo.create("dalle-rev", num_text_tokens=400, **SMALL)
    model.use_tokenizer(hf_file, record=True)
    loaded = revzoo.load(revzoo.save(model, tmp_path / "m.safetensors"))
    assert (loaded.tokenizer_kind, loaded.tokenizer_sha256) == ("hf", file_sha256(hf_file))
    with pytest.raises(TokenizerError, match="trained with a Hugging Face tokenizers file .* give that file"):
        loaded.tokenizer  # noqa: B018
    other = tmp_path / "other.json"
    other.write_bytes(hf_file.read_bytes() + b" ")  # the same tokenizer, another file
    with pytest.raises(TokenizerError, match="trained with a Hugging Face tokenizers file"):
        loaded.use_tokenizer(other)
    loaded.use_tokenizer(hf_file)
    assert torch.equal(loaded.tokenize(CAPTIONS[:2], truncate_text=True), torch.tensor(EXPECTED["hf"]["truncated"])[:2, :6])


def test_dalle_pytorch_import_records_clip_or_the_given_bpe_file(dalle_plugin, tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    source = FIXTURES / "seq_full_defaults.pt"
    default = revzoo.read_metadata(revzoo.import_checkpoint("dalle-pytorch", source, tmp_path / "clip.safetensors"))
    assert (default["config"]["tokenizer"], default["config"]["tokenizer_sha256"]) == ("clip", CLIP_VOCAB_SHA256)
    hf_file = FIXTURES / EXPECTED["hf"]["file"]
    chosen = revzoo.import_checkpoint("dalle-pytorch", source, tmp_path / "hf.safetensors", bpe_path=str(hf_file))
    assert revzoo.read_metadata(chosen)["config"]["tokenizer_sha256"] == file_sha256(hf_file)
