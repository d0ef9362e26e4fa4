"""Image generation for `Dalle`: top-k filtering, Gumbel sampling, classifier-free guidance, a key/value cache.

Bound as `Dalle.generate_images`; takes the model as a plain module so that model.py alone imports this file.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import revzoo

__all__ = ["MAX_COND_SCALE", "check_sampling", "generate_images", "generate_texts", "gumbel_sample", "top_k_filter"]

# Guidance multiplies the difference of two logits; past this, float16 logits (max 65504) overflow to inf and the
# sample is an argmax over NaN. Classifier-free guidance uses 1 to 10.
MAX_COND_SCALE = 100.0


def check_sampling(filter_thres: float, temperature: float, cond_scale: float = 1.0, *, cli: bool = False) -> None:
    """Raises revzoo.ConfigError (naming the --option when `cli`) unless the sampling options can sample.

    `filter_thres` from 0 to 1 (below 0 asks topk for more logits than there are; NaN too), `temperature`
    positive and finite (0, a negative or an infinite one divides the logits into inf or NaN), `cond_scale`
    from -MAX_COND_SCALE to MAX_COND_SCALE. NaN is refused everywhere.
    """
    def named(name: str) -> str:
        return "--" + name.replace("_", "-") if cli else name

    if not 0 <= filter_thres <= 1:
        raise revzoo.ConfigError(f"{named('filter_thres')} must be from 0 to 1 (the fraction of the logits dropped "
                                 f"before sampling), got {filter_thres}")
    if not 0 < temperature < math.inf:
        raise revzoo.ConfigError(f"{named('temperature')} must be a positive finite number, got {temperature}")
    if not abs(cond_scale) <= MAX_COND_SCALE:
        raise revzoo.ConfigError(f"{named('cond_scale')} must be from {-MAX_COND_SCALE:g} to {MAX_COND_SCALE:g} "
                                 f"(1: no guidance; larger ones overflow the logits), got {cond_scale}")


def top_k_filter(logits: torch.Tensor, thres: float = 0.5) -> torch.Tensor:
    """Keeps the largest `max(int((1 - thres) * vocabulary), 1)` logits per row, sets the rest to -inf."""
    k = max(int((1 - thres) * logits.shape[-1]), 1)
    values, indices = logits.topk(k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, indices, values)


def gumbel_sample(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Samples one index per row from softmax(logits / temperature) by the Gumbel-max trick (global RNG)."""
    noise = torch.zeros_like(logits).uniform_(0, 1)
    gumbel = -torch.log((-torch.log(noise.clamp(min=1e-20))).clamp(min=1e-20))
    return ((logits / temperature) + gumbel).argmax(dim=-1)


def _guided_logits(model: nn.Module, text: torch.Tensor, image: torch.Tensor, cond_scale: float, cache: Any) -> torch.Tensor:
    """Logits of the last position; with cond_scale != 1, conditional and text-dropped rows run as one batch."""
    if cond_scale == 1:
        return model(text, image, cache=cache)[:, -1]
    batch = text.shape[0]
    null_cond = torch.arange(2 * batch, device=text.device) >= batch
    logits = model(text.repeat(2, 1), image.repeat(2, 1), null_cond=null_cond, cache=cache)[:, -1]
    conditional, unconditional = logits[:batch], logits[batch:]
    return unconditional + (conditional - unconditional) * cond_scale


@torch.no_grad()
def generate_images(
    model: nn.Module,
    text: torch.Tensor | str | Sequence[str],
    *,
    filter_thres: float = 0.5,
    temperature: float = 1.0,
    cond_scale: float = 1.0,
    img: torch.Tensor | None = None,
    num_init_img_tokens: int | None = None,
    use_cache: bool = True,
    clip: Any = None,
    return_tokens: bool = False,
    truncate_text: bool = False,
    progress: bool = False,
) -> torch.Tensor:
    """Samples the image tokens for `text`; returns decoded images, or the ids.

    `text` is ids (batch, text_seq_len) or captions (a string or a list), which the model's
    tokenizer turns into ids (`truncate_text` cuts an over-long caption instead of refusing it).

    `img` (images for the VAE, or token ids) primes the first `num_init_img_tokens` image
    tokens (default: 7/16 of the grid, as OpenAI primed 14 of 32 rows). With the same seed,
    `use_cache` changes the speed only, not the tokens. `progress` shows a bar on stderr.
    `clip`: a module called as DALLE-pytorch calls its CLIP, `clip(text, images, return_loss=False)`;
    then `(images, scores)` is returned, to rank the images. Sampling options that cannot
    sample (see `check_sampling`) are a revzoo.ConfigError before any work.
    """
    check_sampling(filter_thres, temperature, cond_scale)
    if isinstance(text, str) or (isinstance(text, Sequence) and not isinstance(text, torch.Tensor)):
        text = model.tokenize(text, truncate_text=truncate_text)
    was_training = model.training
    model.eval()
    try:
        text = text[:, : model.text_seq_len]
        image = text.new_zeros((text.shape[0], 0))
        if img is not None:
            primed = model.image_tokens(img)
            count = int(0.4375 * model.image_seq_len) if num_init_img_tokens is None else num_init_img_tokens
            if not 0 <= count < model.image_seq_len:
                raise ValueError(f"num_init_img_tokens must be in [0, {model.image_seq_len}), got {count}")
            image = primed[:, :count]
        cache: dict[str, Any] | None = {} if use_cache else None
        with tqdm(total=model.image_seq_len - image.shape[1], desc="generating", unit="token", disable=not progress,
                  file=sys.stderr, leave=False) as bar:
            while image.shape[1] < model.image_seq_len:
                logits = _guided_logits(model, text, image, cond_scale, cache)
                sample = gumbel_sample(top_k_filter(logits, filter_thres), temperature)
                image = torch.cat((image, (sample - model.num_text_tokens)[:, None]), dim=1)
                bar.update()
    finally:
        model.train(was_training)
    if clip is not None:
        if model.vae is None:
            raise ValueError("clip= re-ranks decoded images; this model has no VAE decoder to make them")
        images = model.vae.decode(image)
        return images, clip(text, images, return_loss=False)
    if return_tokens or model.vae is None:
        return image
    return model.vae.decode(image)


@torch.no_grad()
def generate_texts(
    model: nn.Module,
    tokenizer: Any = None,
    text: str | None = None,
    *,
    filter_thres: float = 0.5,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, list[str]]:
    """Samples captions (DALLE-pytorch's `generate_texts`); returns the ids and their decoded texts.

    Starts from `<bos>` (no `text`), or from the ids of `text`, which upstream does not
    precede by `<bos>`; the same is done here so that the same seed gives the same text.
    `tokenizer` defaults to the model's; upstream's tokenizer module (with `.tokenizer`) works too.
    """
    check_sampling(filter_thres, temperature)
    tokenizer = model.tokenizer if tokenizer is None else getattr(tokenizer, "tokenizer", tokenizer)
    device = model.logits_mask.device
    ids = [0] if not text else list(tokenizer.encode(text))
    tokens = torch.tensor([ids], device=device)
    was_training = model.training
    model.eval()
    try:
        while tokens.shape[1] < model.text_seq_len:
            embedded = model.embed_text(tokens)
            if not model.rotary_emb:
                embedded = embedded + model.text_pos_emb(torch.arange(tokens.shape[1], device=device))
            out = model.transformer(embedded)
            if model.stable:
                out = out / out.amax(dim=-1, keepdim=True).detach()
            logits = model.to_logits(model.final_norm(out))[:, -1]
            logits = logits.masked_fill(model.logits_mask[tokens.shape[1] - 1], -torch.finfo(logits.dtype).max)
            sample = gumbel_sample(top_k_filter(logits, filter_thres), temperature)
            tokens = torch.cat((tokens, sample[:, None]), dim=1)
    finally:
        model.train(was_training)
    padding = set(range(model.num_text_tokens - model.text_seq_len, model.num_text_tokens))
    return tokens, [tokenizer.decode(row, pad_tokens=padding) for row in tokens]
