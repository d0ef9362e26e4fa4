"""DALL-E (arXiv:2102.12092) as in DALLE-pytorch 1.6.6: one causal transformer over text then image tokens."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import revzoo

from .generate import generate_images, generate_texts
from .tokenizer import (
    CaptionTokenizer,
    TokenizerError,
    check_matches,
    recorded_tokenizer,
    tokenizer_from_file,
    tokenizer_record,
)
from .transformer import DalleTransformer
from .vae import DiscreteVAE
from .vae_source import resolve_vae

__all__ = ["AxialPositionalEmbedding", "Dalle"]


class AxialPositionalEmbedding(nn.Module):
    """Learned image positions: a row vector plus a column vector per grid cell."""

    def __init__(self, dim: int, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.row = nn.Parameter(torch.randn(image_size, dim))
        self.col = nn.Parameter(torch.randn(image_size, dim))

    def forward(self, length: int) -> torch.Tensor:
        """Returns the embeddings (length, dim) of the first `length` cells, row by row."""
        grid = self.row[:, None, :] + self.col[None, :, :]
        return grid.flatten(0, 1)[:length]


def _check_ids(ids: torch.Tensor, limit: int, message: str) -> None:
    """Refuses ids an embedding would reject with a bare IndexError (or, on CUDA, a device-side assert)."""
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"token ids must be an integer tensor, got {ids.dtype}")
    if ids.numel() and not torch.compiler.is_compiling():
        low, high = ids.min().item(), ids.max().item()
        if low < 0 or high >= limit:
            raise ValueError(f"{message}; got ids from {low} to {high}")


class Dalle(revzoo.ZooModel):
    """Text-to-image transformer: `<bos>`, text tokens, then image tokens, with one shared logit space.

    Text ids 0 are padding: each text position gets its own padding id after the
    vocabulary, so `num_text_tokens + text_seq_len` text ids exist. Image ids come after
    all text ids in the logits; a mask stops text positions predicting image ids and
    image positions predicting text ids. The optional discrete VAE turns images into ids.
    Learned positions are used when the injected transformer has no rotary table.
    """

    def __init__(
        self,
        *,
        transformer: DalleTransformer,
        dim: int,
        num_text_tokens: int,
        text_seq_len: int,
        num_image_tokens: int,
        vae: DiscreteVAE | None = None,
        loss_img_weight: float = 7.0,
        stable: bool = False,
        share_input_output_emb: bool = False,
        tokenizer: str = "clip",
        tokenizer_sha256: str | None = None,
    ) -> None:
        super().__init__()
        image_fmap_size = transformer.image_size
        rotary_emb = transformer.rotary_pos_emb is not None
        self.text_seq_len = text_seq_len
        self.image_seq_len = image_fmap_size**2
        self.num_text_tokens = num_text_tokens + text_seq_len  # with one padding id per position
        self.num_image_tokens = num_image_tokens
        self.total_tokens = self.num_text_tokens + num_image_tokens
        self.total_seq_len = text_seq_len + self.image_seq_len
        self.loss_img_weight = loss_img_weight
        self.stable = stable
        self.share_input_output_emb = share_input_output_emb
        self.tokenizer_kind = tokenizer
        self.tokenizer_sha256 = tokenizer_sha256
        self._tokenizer: CaptionTokenizer | None = None

        self.vae = vae
        if vae is not None:
            vae.requires_grad_(False)
        self.vae_record: dict[str, Any] = {}  # config entries implied by a VAE given as a module or file
        if not share_input_output_emb:
            self.text_emb = nn.Embedding(self.num_text_tokens, dim)
            self.image_emb = nn.Embedding(num_image_tokens, dim)
        if not rotary_emb:
            self.text_pos_emb = nn.Embedding(text_seq_len + 1, dim)
            self.image_pos_emb = AxialPositionalEmbedding(dim, image_fmap_size)
        self.rotary_emb = rotary_emb
        self.transformer = transformer
        self.final_norm = nn.LayerNorm(dim)
        self.to_logits = nn.Linear(dim, self.total_tokens)

        position = torch.arange(self.total_seq_len)[:, None]
        token = torch.arange(self.total_tokens)[None, :]
        is_text_position, is_text_token = position < text_seq_len, token < self.num_text_tokens
        self.register_buffer("logits_mask", is_text_position != is_text_token, persistent=False)

    generate_images = generate_images
    generate_texts = generate_texts

    @property
    def revzoo_config(self) -> dict[str, Any]:
        """The config revzoo.save records; a VAE given as a module or file is recorded by its sizes."""
        return self._revzoo_config

    @revzoo_config.setter
    def revzoo_config(self, config: dict[str, Any]) -> None:
        self._revzoo_config = {**config, **self.vae_record}

    def attach_decoder(self, decoder: Any) -> None:
        """Attaches a VAE decoder that revzoo does not own (OpenAI's, VQGAN's, ...) to a model without one.

        The decoder follows the protocol in vae_source.py; its codebook and grid must be the
        model's. Its weights are not saved with the model.
        """
        if self.vae is not None and not getattr(self, "_decoder_attached", False):
            raise revzoo.ConfigError("this model has its own discrete VAE; attach_decoder is for models with vae='none'")
        _, record = resolve_vae(decoder)
        grid = record["image_size"] // 2 ** record["vae_num_layers"]
        if record["num_image_tokens"] != self.num_image_tokens or grid**2 != self.image_seq_len:
            raise revzoo.ConfigError(
                f"the decoder has {record['num_image_tokens']} codes on a {grid}x{grid} grid; this model needs "
                f"{self.num_image_tokens} codes on a {math.isqrt(self.image_seq_len)}x{math.isqrt(self.image_seq_len)} grid"
            )
        object.__setattr__(self, "vae", decoder)  # not a submodule: its weights stay out of the state dict
        self._decoder_attached = True

    @property
    def tokenizer(self) -> CaptionTokenizer:
        """The caption tokenizer the model records; CLIP's is built on first use, file kinds need `use_tokenizer`."""
        if self._tokenizer is None:
            self._tokenizer = recorded_tokenizer(self.tokenizer_kind, self.tokenizer_sha256)
        return self._tokenizer

    def use_tokenizer(self, tokenizer: CaptionTokenizer | str | os.PathLike, *, record: bool = False) -> None:
        """Attaches a tokenizer (or a vocabulary file's: `.json` for `tokenizers`, else YouTokenToMe).

        It must be the one the model records, unless `record` makes it that one (saved with the model).
        """
        if not isinstance(tokenizer, CaptionTokenizer):
            tokenizer = tokenizer_from_file(tokenizer)
        if record:
            self.tokenizer_kind, self.tokenizer_sha256 = tokenizer.kind, tokenizer.sha256
            if getattr(self, "revzoo_config", None) is not None:
                self.revzoo_config = {**self.revzoo_config, **tokenizer_record(tokenizer)}
        else:
            check_matches(tokenizer, self.tokenizer_kind, self.tokenizer_sha256)
        self._tokenizer = tokenizer

    def tokenize(self, texts: str | Sequence[str], *, truncate_text: bool = False) -> torch.Tensor:
        """Returns the caption ids (batch, text_seq_len) the model takes, on its device."""
        tokenizer = self.tokenizer
        vocabulary = self.num_text_tokens - self.text_seq_len
        if tokenizer.vocab_size > vocabulary:
            fix = (f"build it with num_text_tokens={tokenizer.vocab_size}" if tokenizer.kind != "clip" else
                   "attach the vocabulary file it was trained with (model.use_tokenizer(PATH); revzoo generate "
                   f"--bpe-path PATH; revzoo import ... --option bpe_path=PATH), or build it with "
                   f"num_text_tokens={tokenizer.vocab_size}")
            raise TokenizerError(f"the {tokenizer.kind} tokenizer has {tokenizer.vocab_size} ids but this model only "
                                 f"num_text_tokens={vocabulary}; {fix}")
        return tokenizer.tokenize(texts, self.text_seq_len, truncate_text).to(self.logits_mask.device)

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        if self.share_input_output_emb:
            return F.embedding(text, self.to_logits.weight[: self.num_text_tokens])
        return self.text_emb(text)

    def embed_image(self, image: torch.Tensor) -> torch.Tensor:
        if self.share_input_output_emb:
            return F.embedding(image, self.to_logits.weight[self.num_text_tokens :])
        return self.image_emb(image)

    def image_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """Returns image token ids: `image` itself when it holds ids (batch, n), else the VAE's codes."""
        if image.dim() == 2:
            _check_ids(image, self.num_image_tokens, f"image ids must be in [0, {self.num_image_tokens}) "
                       f"(num_image_tokens={self.num_image_tokens}, the VAE's codebook size)")
            return image
        if self.vae is None or not hasattr(self.vae, "get_codebook_indices"):
            raise ValueError(f"this model has no VAE encoder: pass image token ids (batch, n), not a {image.dim()}-d image")
        return self.vae.get_codebook_indices(image)

    def _text_with_bos(self, text: torch.Tensor, null_cond: torch.Tensor | None) -> torch.Tensor:
        if text.dim() != 2 or text.shape[-1] != self.text_seq_len:
            raise ValueError(f"text must have shape (batch, {self.text_seq_len}), got {tuple(text.shape)}")
        vocabulary = self.num_text_tokens - self.text_seq_len
        _check_ids(text, vocabulary, f"text ids must be in [0, {vocabulary}) (num_text_tokens={vocabulary}): "
                   "tokenize captions with model.tokenize, or build the model with num_text_tokens >= the "
                   "tokenizer's vocab_size")
        if null_cond is not None:
            text = text.masked_fill(null_cond[:, None], 0)
        padding_ids = torch.arange(self.text_seq_len, device=text.device) + (self.num_text_tokens - self.text_seq_len)
        text = torch.where(text == 0, padding_ids, text)
        return F.pad(text, (1, 0), value=0)

    def forward(
        self,
        text: torch.Tensor,
        image: torch.Tensor | None = None,
        *,
        return_loss: bool = False,
        null_cond: torch.Tensor | None = None,
        null_cond_prob: float = 0.0,
        cache: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Returns logits (batch, n, total_tokens) for `<bos>`, text and the given image tokens, or the loss.

        Args:
            text: token ids (batch, text_seq_len); 0 is padding.
            image: image token ids (batch, n) or images (batch, channels, size, size) for the VAE.
            return_loss: return `(CE_text + loss_img_weight * CE_img) / (loss_img_weight + 1)` instead.
            null_cond: (batch,) bool, rows whose text is dropped (classifier-free guidance).
            null_cond_prob: drop each row's text with this probability as well (DALLE-pytorch's training
                call; it draws from the global RNG as upstream does).
            cache: a dict filled during generation (inference only); only positions from cache["offset"] on
                are computed.
        """
        if null_cond_prob:
            if not 0 <= null_cond_prob <= 1:
                raise ValueError(f"null_cond_prob must be in [0, 1], got {null_cond_prob!r}")
            drawn = torch.zeros(text.shape[0], device=text.device).uniform_(0, 1) < null_cond_prob
            null_cond = drawn if null_cond is None else null_cond.bool() | drawn
        text = self._text_with_bos(text, null_cond)
        tokens = self.embed_text(text)
        if not self.rotary_emb:
            tokens = tokens + self.text_pos_emb(torch.arange(text.shape[1], device=text.device))
        if image is not None and image.numel() > 0:
            image = self.image_tokens(image)
            if image.shape[0] != text.shape[0]:
                raise ValueError(f"text and image batches differ: {text.shape[0]} captions, {image.shape[0]} images")
            if image.shape[1] > self.image_seq_len:
                raise ValueError(f"at most {self.image_seq_len} image tokens fit, got {image.shape[1]}")
            image_emb = self.embed_image(image)
            if not self.rotary_emb:
                image_emb = image_emb + self.image_pos_emb(image.shape[1])
            tokens = torch.cat((tokens, image_emb), dim=1)
        if tokens.shape[1] > self.total_seq_len:  # the last image token predicts nothing
            tokens = tokens[:, :-1]
        length = tokens.shape[1]
        if self.stable:
            tokens = tokens * 0.1 + tokens.detach() * 0.9

        offset = 0 if cache is None else cache.get("offset", 0)
        out = self.transformer(tokens[:, offset:], cache=cache)
        if self.stable:
            out = out / out.amax(dim=-1, keepdim=True).detach()
        logits = self.to_logits(self.final_norm(out))
        logits = logits.masked_fill(self.logits_mask[offset:length], -torch.finfo(logits.dtype).max)
        if cache is not None:
            cache["offset"] = length

        if not return_loss:
            return logits
        if image is None or image.shape[1] != self.image_seq_len:
            raise ValueError(f"return_loss=True needs all {self.image_seq_len} image tokens (or the images)")
        labels = torch.cat((text[:, 1:], image + self.num_text_tokens), dim=1)
        logits = logits.transpose(1, 2)
        text_loss = F.cross_entropy(logits[:, :, : self.text_seq_len], labels[:, : self.text_seq_len])
        image_loss = F.cross_entropy(logits[:, :, self.text_seq_len :], labels[:, self.text_seq_len :])
        return (text_loss + self.loss_img_weight * image_loss) / (self.loss_img_weight + 1)
