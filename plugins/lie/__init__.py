"""revzoo_lie: the LieTransformer for point clouds ("lie-transformer", "lie-transformer-rev") and the
importer of lie-transformer-pytorch checkpoints, registered through revzoo's plugin hooks."""

from __future__ import annotations

import revzoo

from .builder import DEFAULTS, build_lie_transformer
from .groups import SE3, SO3, T3, group_from_name
from .importer import read_lie_transformer_pytorch
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
    "group_from_name",
    "read_lie_transformer_pytorch",
    "register_architectures",
    "register_formats",
]


@revzoo.hookimpl
def register_architectures(register) -> None:
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
            card="model_cards/lie-transformer.md",
        )
    )


@revzoo.hookimpl
def register_formats(register) -> None:
    """Registers the "lie-transformer-pytorch" checkpoint format (import only)."""
    register(
        revzoo.CheckpointFormat(
            name="lie-transformer-pytorch",
            description="lie-transformer-pytorch 0.0.17 state dicts (sequential or reversible layout)",
            read=read_lie_transformer_pytorch,
        )
    )
