"""A small discrete VAE: images to codebook indices and back (DALLE-pytorch's `DiscreteVAE` layout).

Strided 4x4 convolutions halve the image `num_layers` times, a 1x1 convolution gives
logits over `num_tokens` codes per cell; the decoder mirrors it from codebook vectors.
Training uses the Gumbel-softmax relaxation. Its keys match upstream's, so its weights
import unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DiscreteVAE"]


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
        temperature: float = 0.9,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.num_tokens = num_tokens
        self.num_layers = num_layers
        self.channels = channels
        self.temperature = temperature
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
        """Maps images in [0, 1] to [-1, 1], as upstream's default normalization does."""
        return (images - 0.5) / 0.5

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Returns code logits (batch, num_tokens, fmap, fmap)."""
        if images.shape[1:] != (self.channels, self.image_size, self.image_size):
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
        """Returns images (batch, channels, image_size, image_size) for code indices (batch, fmap**2)."""
        side = self.fmap_size
        embeds = self.codebook(indices).unflatten(1, (side, side)).permute(0, 3, 1, 2)
        return self.decoder(embeds)

    def forward(self, images: torch.Tensor, *, temperature: float | None = None) -> torch.Tensor:
        """Returns the reconstruction loss (mean squared error in normalized space) of a Gumbel-softmax pass."""
        logits = self.logits(images)
        soft_one_hot = F.gumbel_softmax(logits, tau=temperature or self.temperature, dim=1)
        sampled = torch.einsum("bnhw,nd->bdhw", soft_one_hot, self.codebook.weight)
        return F.mse_loss(self.decoder(sampled), self.normalize(images))
