"""A small discrete VAE: images to codebook indices and back, with DALLE-pytorch 1.6.6's `DiscreteVAE` semantics.

Strided 4x4 convolutions halve the image `num_layers` times, a 1x1 convolution gives
logits over `num_tokens` codes per cell; the decoder mirrors it from codebook vectors.
Training uses the Gumbel-softmax relaxation (optionally straight-through, with ReinMax),
a mean-squared or smooth-L1 reconstruction loss in normalized space, and an optional KL
term towards the uniform prior. Keys and calls match upstream's, so `train_vae.py` weights
load unchanged and give the same reconstructions and codebook indices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEFAULT_NORMALIZATION", "DiscreteVAE"]

DEFAULT_NORMALIZATION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # (means, stds): images in [0, 1] to [-1, 1]


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class DiscreteVAE(nn.Module):
    """Discrete VAE with `num_tokens` codes on an (image_size / 2**num_layers)**2 grid."""

    def __init__(
        self,
        *,
        image_size: int = 256,
        num_tokens: int = 512,
        codebook_dim: int = 512,
        num_layers: int = 3,
        num_resnet_blocks: int = 0,
        hidden_dim: int = 64,
        channels: int = 3,
        smooth_l1_loss: bool = False,
        temperature: float = 0.9,
        straight_through: bool = False,
        reinmax: bool = False,
        kl_div_loss_weight: float = 0.0,
        normalization: Sequence[Sequence[float]] | None = DEFAULT_NORMALIZATION,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.num_tokens = num_tokens
        self.num_layers = num_layers
        self.num_resnet_blocks = num_resnet_blocks
        self.hidden_dim = hidden_dim
        self.channels = channels
        self.temperature = temperature
        self.straight_through = straight_through
        self.reinmax = reinmax
        self.smooth_l1_loss = smooth_l1_loss
        self.kl_div_loss_weight = kl_div_loss_weight
        self.normalization = None if normalization is None else tuple(tuple(t)[:channels] for t in normalization)
        self.codebook = nn.Embedding(num_tokens, codebook_dim)

        encoder: list[nn.Module] = []
        decoder: list[nn.Module] = []
        encoder_in, decoder_in = channels, codebook_dim if num_resnet_blocks == 0 else hidden_dim
        for _ in range(num_layers):
            encoder.append(nn.Sequential(nn.Conv2d(encoder_in, hidden_dim, 4, stride=2, padding=1), nn.ReLU()))
            decoder.append(nn.Sequential(nn.ConvTranspose2d(decoder_in, hidden_dim, 4, stride=2, padding=1), nn.ReLU()))
            encoder_in = decoder_in = hidden_dim
        encoder += [_ResBlock(hidden_dim) for _ in range(num_resnet_blocks)]
        decoder[:0] = [_ResBlock(hidden_dim) for _ in range(num_resnet_blocks)]
        if num_resnet_blocks > 0:
            decoder.insert(0, nn.Conv2d(codebook_dim, hidden_dim, 1))
        encoder.append(nn.Conv2d(hidden_dim, num_tokens, 1))
        decoder.append(nn.Conv2d(hidden_dim, channels, 1))
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)

    @property
    def fmap_size(self) -> int:
        return self.image_size // 2**self.num_layers

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Maps images to the space the VAE reconstructs in: (images - mean) / std per channel."""
        if self.normalization is None:
            return images
        means, stds = (torch.as_tensor(t).to(images)[None, :, None, None] for t in self.normalization)
        return (images - means) / stds

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Returns code logits (batch, num_tokens, fmap, fmap)."""
        if images.dim() != 4 or images.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise ValueError(
                f"images must have shape (batch, {self.channels}, {self.image_size}, {self.image_size}), "
                f"got {tuple(images.shape)}"
            )
        return self.encoder(self.normalize(images.to(self.codebook.weight.dtype)))

    @torch.no_grad()
    def get_codebook_indices(self, images: torch.Tensor) -> torch.Tensor:
        """Returns the most likely code per cell, flattened row by row: (batch, fmap**2)."""
        return self.logits(images).argmax(dim=1).flatten(1)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Returns images (batch, channels, image_size, image_size), in normalized space, for codes (batch, fmap**2)."""
        side = self.fmap_size
        embeds = self.codebook(indices).unflatten(1, (side, side)).permute(0, 3, 1, 2)
        return self.decoder(embeds)

    def _relaxed_one_hot(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        one_hot = F.gumbel_softmax(logits, tau=temperature, dim=1, hard=self.straight_through)
        if not (self.straight_through and self.reinmax):
            return one_hot
        # ReinMax (arXiv:2304.08612, algorithm 2): a second-order straight-through gradient
        one_hot = one_hot.detach()
        pi0 = logits.softmax(dim=1)
        pi1 = (one_hot + (logits / temperature).softmax(dim=1)) / 2
        pi1 = ((pi1.clamp(min=1e-20).log() - logits).detach() + logits).softmax(dim=1)
        pi2 = 2 * pi1 - 0.5 * pi0
        return pi2 - pi2.detach() + one_hot

    def forward(
        self,
        images: torch.Tensor,
        return_loss: bool = False,
        return_recons: bool = False,
        return_logits: bool = False,
        temp: float | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Returns the reconstruction of a Gumbel-softmax pass, as upstream's `DiscreteVAE` does.

        `return_logits`: the code logits instead. `return_loss`: the loss (reconstruction error
        in normalized space plus `kl_div_loss_weight` times the KL divergence from the uniform
        prior), and with `return_recons` the pair (loss, reconstruction). `temp` overrides the
        Gumbel temperature.
        """
        logits = self.logits(images)
        if return_logits:
            return logits
        temperature = self.temperature if temp is None else temp
        sampled = torch.einsum("bnhw,nd->bdhw", self._relaxed_one_hot(logits, temperature), self.codebook.weight)
        out = self.decoder(sampled)
        if not return_loss:
            return out
        target = self.normalize(images.to(out.dtype))
        loss = (F.smooth_l1_loss if self.smooth_l1_loss else F.mse_loss)(target, out)
        if self.kl_div_loss_weight:
            log_qy = logits.flatten(2).transpose(1, 2).log_softmax(dim=-1)
            log_uniform = -torch.log(torch.tensor(float(self.num_tokens), device=out.device, dtype=out.dtype))
            loss = loss + self.kl_div_loss_weight * (log_qy.exp() * (log_qy - log_uniform)).sum()  # upstream's sum
        return (loss, out) if return_recons else loss
