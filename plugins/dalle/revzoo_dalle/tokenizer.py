"""Caption tokenizers of DALLE-pytorch 1.6.6: CLIP's BPE (its default), a Hugging Face `tokenizers` file, YouTokenToMe.

`tokenize(texts, context_length, truncate_text=False)` gives the LongTensor DALLE-pytorch's
tokenizer of the same kind gives: each caption's ids from the left, zeros (padding) after,
an over-long caption refused or cut. CLIP's vocabulary and its BPE merges come from
open_clip (the `revzoo[dalle]` extra); the cleaning and splitting of a caption before the
merges follow DALLE-pytorch, whose whitespace and special-token handling differ from
open_clip's. Each tokenizer has a `kind` and the sha256 of its vocabulary, which a
checkpoint records so that a model is prompted with the vocabulary it was trained on.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import importlib
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import revzoo

__all__ = [
    "CLIP_VOCAB_SHA256",
    "TOKENIZER_KINDS",
    "CaptionTokenizer",
    "ClipTokenizer",
    "HFTokenizer",
    "TokenizerError",
    "YttmTokenizer",
    "clip_tokenizer",
    "tokenizer_from_file",
]

TOKENIZER_KINDS: tuple[str, ...] = ("clip", "hf", "yttm")
# sha256 of CLIP's bpe_simple_vocab_16e6.txt (uncompressed), as DALLE-pytorch 1.6.6 and open_clip ship it.
CLIP_VOCAB_SHA256 = "67603cfda2e032ad77b5f8808af37789d590db664b26df8705d2bf8b3c553fc8"
_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_CLIP_START, _CLIP_END = 49406, 49407
_INSTALL_HINT = {
    "open_clip": "pip install 'revzoo[dalle]'",
    "ftfy": "pip install 'revzoo[dalle]'",
    "regex": "pip install 'revzoo[dalle]'",
    "tokenizers": "pip install 'revzoo[dalle]'",
    "youtokentome": "pip install youtokentome (it builds only with Cython < 3: pip install 'cython<3' first, "
                    "then pip install --no-build-isolation youtokentome)",
}


class TokenizerError(revzoo.RevzooError, ValueError):
    """A caption, vocabulary file or tokenizer package that cannot give the ids a model expects."""


def _require(module: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise TokenizerError(f"{purpose} needs the package {package!r}, which is not installed: "
                             f"{_INSTALL_HINT[package]}") from err


def file_sha256(path: str | os.PathLike) -> str:
    """Returns the sha256 of a file's bytes (the vocabulary fingerprint of `hf` and `yttm` tokenizers)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class CaptionTokenizer:
    """What every kind shares: padding to a context length and the over-long check."""

    kind: str
    sha256: str
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids: Iterable[int] | torch.Tensor, pad_tokens: Iterable[int] = ()) -> str:
        raise NotImplementedError

    def tokenize(self, texts: str | Sequence[str], context_length: int = 256, truncate_text: bool = False) -> torch.Tensor:
        """Returns ids (len(texts), context_length), zeros after each caption; raises TokenizerError if one is too long."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        bad = [text for text in texts if not isinstance(text, str)]
        if bad:
            raise TokenizerError(f"captions must be strings, got {type(bad[0]).__name__} {bad[0]!r}")
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, (text, ids) in enumerate(zip(texts, self.encode_batch(texts))):
            if len(ids) > context_length:
                if not truncate_text:
                    shown = text if len(text) <= 60 else text[:57] + "..."
                    raise TokenizerError(
                        f"caption {shown!r} is {len(ids)} tokens, longer than the model's {context_length}; "
                        "shorten it or allow truncation (truncate_text=True, --truncate)"
                    )
                ids = ids[:context_length]
            result[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return result

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, vocab_size={self.vocab_size}, sha256={self.sha256[:12]}...)"


class ClipTokenizer(CaptionTokenizer):
    """CLIP's BPE (49,408 ids), DALLE-pytorch's default `SimpleTokenizer`, on open_clip's vocabulary and merges."""

    kind = "clip"

    def __init__(self) -> None:
        purpose = "the CLIP tokenizer (DALLE-pytorch's default)"
        self._ftfy = _require("ftfy", purpose)
        self._regex = _require("regex", purpose)
        self._bpe = _require("open_clip.tokenizer", purpose).SimpleTokenizer()
        with gzip.open(_require("open_clip.tokenizer", purpose).default_bpe()) as file:
            self.sha256 = hashlib.sha256(file.read()).hexdigest()
        if self.sha256 != CLIP_VOCAB_SHA256:
            raise TokenizerError(f"open_clip's CLIP vocabulary has sha256 {self.sha256}, not DALLE-pytorch's "
                                 f"{CLIP_VOCAB_SHA256}; install an open_clip_torch that ships CLIP's original file")
        self.vocab_size = 49408
        self._split = self._regex.compile(_CLIP_SPLIT, self._regex.IGNORECASE)
        self._special = {"<|startoftext|>": _CLIP_START, "<|endoftext|>": _CLIP_END}

    def _clean(self, text: str) -> str:
        text = html.unescape(html.unescape(self._ftfy.fix_text(text))).strip()
        return self._regex.sub(r"\s+", " ", text).strip().lower()

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        bpe = self._bpe
        for piece in self._split.findall(self._clean(text)):
            if piece in self._special:
                ids.append(self._special[piece])
                continue
            word = "".join(bpe.byte_encoder[byte] for byte in piece.encode("utf-8"))
            ids.extend(bpe.encoder[part] for part in bpe.bpe(word).split(" "))
        return ids

    def decode(self, ids: Iterable[int] | torch.Tensor, pad_tokens: Iterable[int] = ()) -> str:
        """DALLE-pytorch's decode: drops 0, <|startoftext|> and id 40407 (upstream's spelling of 49407), and pad_tokens."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        dropped = {_CLIP_START, 40407, 0} | set(pad_tokens)
        names = {_CLIP_START: "<|startoftext|>", _CLIP_END: "<|endoftext|>"}  # open_clip spells them otherwise
        text = "".join(names.get(i) or self._bpe.decoder[i] for i in ids if i not in dropped)
        raw = bytearray(self._bpe.byte_decoder[char] for char in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ")


class HFTokenizer(CaptionTokenizer):
    """A Hugging Face `tokenizers` JSON file, as DALLE-pytorch's `HugTokenizer` (`--bpe_path x.json`) uses it."""

    kind = "hf"

    def __init__(self, path: str | os.PathLike) -> None:
        tokenizers = _require("tokenizers", "a Hugging Face tokenizers BPE file")
        processors = _require("tokenizers.processors", "a Hugging Face tokenizers BPE file")
        try:
            self._tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises its own Exception type for a bad file
            raise TokenizerError(f"{path}: not a Hugging Face tokenizers JSON file ({str(err).splitlines()[0]})") from err
        self._tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
        self.sha256 = file_sha256(path)
        self.vocab_size = self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text).ids

    def decode(self, ids: Iterable[int] | torch.Tensor, pad_tokens: Iterable[int] = ()) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        dropped = {0} | set(pad_tokens)
        return self._tokenizer.decode([i for i in ids if i not in dropped], skip_special_tokens=True)


class YttmTokenizer(CaptionTokenizer):
    """A YouTokenToMe BPE model, as DALLE-pytorch's `YttmTokenizer` (`--bpe_path x.model`) uses it."""

    kind = "yttm"

    def __init__(self, path: str | os.PathLike) -> None:
        self._yttm = _require("youtokentome", "a YouTokenToMe BPE model")
        try:
            self._tokenizer = self._yttm.BPE(model=str(path))
        except Exception as err:  # youtokentome raises a bare ValueError/RuntimeError from C++
            raise TokenizerError(f"{path}: not a YouTokenToMe model ({str(err).splitlines()[0]})") from err
        self.sha256 = file_sha256(path)
        self.vocab_size = self._tokenizer.vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(ids) for ids in self._tokenizer.encode(list(texts), output_type=self._yttm.OutputType.ID)]

    def decode(self, ids: Iterable[int] | torch.Tensor, pad_tokens: Iterable[int] = ()) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self._tokenizer.decode([ids], ignore_ids=list({0} | set(pad_tokens)))[0]


@lru_cache(maxsize=1)
def clip_tokenizer() -> ClipTokenizer:
    """Returns the CLIP tokenizer, built once (reading its 49,152 merges takes about a second)."""
    return ClipTokenizer()


def tokenizer_from_file(path: str | os.PathLike) -> CaptionTokenizer:
    """Returns the tokenizer of a vocabulary file as DALLE-pytorch's `--bpe_path` picks it: `.json` is hf, else yttm."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{str(path)!r} is not a file; --bpe-path takes a tokenizers .json or a YouTokenToMe .model")
    return HFTokenizer(path) if path.suffix.lower() == ".json" else YttmTokenizer(path)


def describe(kind: str, sha256: str | None) -> str:
    """Returns words for a recorded tokenizer, for messages."""
    names = {"clip": "CLIP's BPE", "hf": "a Hugging Face tokenizers file", "yttm": "a YouTokenToMe model"}
    return f"{names.get(kind, repr(kind))}{f' (sha256 {sha256[:12]}...)' if sha256 else ''}"


def check_matches(tokenizer: CaptionTokenizer, kind: str, sha256: str | None) -> None:
    """Raises TokenizerError unless `tokenizer` is the recorded kind with the recorded vocabulary."""
    if tokenizer.kind != kind or (sha256 is not None and tokenizer.sha256 != sha256):
        raise TokenizerError(
            f"this model was trained with {describe(kind, sha256)}, not {describe(tokenizer.kind, tokenizer.sha256)}; "
            "give the vocabulary file it was trained with (if the record is wrong, re-import the DALLE-pytorch "
            "checkpoint with --option bpe_path=FILE)"
        )


def recorded_tokenizer(kind: str, sha256: str | None, path: str | os.PathLike | None = None) -> CaptionTokenizer:
    """Returns the tokenizer a model records, from `path` for the kinds that need a file; checks it matches."""
    if path is None and kind != "clip":
        raise TokenizerError(f"this model was trained with {describe(kind, sha256)}: give that file "
                             "(model.use_tokenizer(PATH), or --bpe-path PATH)")
    tokenizer = clip_tokenizer() if path is None else tokenizer_from_file(path)
    check_matches(tokenizer, kind, sha256)
    return tokenizer


def tokenizer_record(tokenizer: Any) -> dict[str, Any]:
    """Returns the config entries that record a tokenizer: {"tokenizer": kind, "tokenizer_sha256": hash}."""
    return {"tokenizer": tokenizer.kind, "tokenizer_sha256": tokenizer.sha256}
