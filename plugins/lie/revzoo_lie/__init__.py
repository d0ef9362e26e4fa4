"""revzoo_lie: the LieTransformer for point clouds ("lie-transformer", "lie-transformer-rev") and the
importer of lie-transformer-pytorch checkpoints, registered through revzoo's plugin hooks."""

from __future__ import annotations

from collections.abc import Callable

import torch

import revzoo

from .checkpoint import read_lie_transformer_pytorch
from .config import DEFAULTS, build_lie_transformer
from .groups import SE3, SO3, T3, group_from_name
from .model import ROUTES, STREAM_LAYOUT, LieTransformer

__all__ = [
    "DEFAULTS",
    "ROUTES",
    "SE3",
    "SO3",
    "STREAM_LAYOUT",
    "T3",
    "LieTransformer",
    "build_lie_transformer",
    "example_inputs",
    "group_from_name",
    "read_lie_transformer_pytorch",
    "register_architectures",
    "register_formats",
]


def example_inputs(model: LieTransformer, generator: torch.Generator) -> tuple[tuple, dict]:
    """Returns ``((feats, coords, edges), {"mask", "generator"})`` for two seeded clouds of 6 points, one padded.

    The call's own generator is seeded from ``generator``, so the lift and the neighbourhood are reproducible too.
    """
    parameter = next(model.parameters())
    batch, points = 2, 6
    options = dict(generator=generator, dtype=parameter.dtype)
    if model.token_emb is not None:
        feats = torch.randint(0, model.token_emb.num_embeddings, (batch, points), generator=generator)
    else:
        feats = torch.randn(batch, points, model.dim, **options)
    coords = torch.randn(batch, points, 3, **options)
    edges = None
    if model.edge_emb is not None:
        edges = torch.randint(0, model.edge_emb.num_embeddings, (batch, points, points), generator=generator)
    elif model.edge_dim:
        edges = torch.randn(batch, points, points, model.edge_dim, **options)
    mask = torch.ones(batch, points, dtype=torch.bool)
    mask[1, -1] = False
    call_seed = int(torch.randint(0, 2**62, (), generator=generator))
    device = parameter.device
    inputs = tuple(t.to(device) if t is not None else None for t in (feats, coords, edges))
    return inputs, {"mask": mask.to(device), "generator": torch.Generator(device).manual_seed(call_seed)}


@revzoo.hookimpl
def register_architectures(register: Callable[[revzoo.ArchSpec], None]) -> None:
    """Registers "lie-transformer" (and, derived by revzoo, "lie-transformer-rev")."""
    register(
        revzoo.ArchSpec(
            name="lie-transformer",
            builder=build_lie_transformer,
            description="LieTransformer: SE(3)/SO(3)/T(3)-equivariant local self-attention over lifted point clouds",
            defaults=DEFAULTS,
            forms=("sequential", "reversible"),
            routes=ROUTES,
            layout=STREAM_LAYOUT,
            card="model_card.md",
            example_inputs=example_inputs,
            small={"dim": 32, "heads": 4, "dim_head": 16, "nbhd": 16},
        )
    )


@revzoo.hookimpl
def register_formats(register: Callable[[revzoo.CheckpointFormat], None]) -> None:
    """Registers the "lie-transformer-pytorch" checkpoint format (import only)."""
    register(
        revzoo.CheckpointFormat(
            name="lie-transformer-pytorch",
            description="lie-transformer-pytorch 0.0.17 state dicts (sequential or reversible layout)",
            read=read_lie_transformer_pytorch,
        )
    )
