"""Builds a LieTransformer from a revzoo config, refusing bad hyperparameters with revzoo.ConfigError."""

from __future__ import annotations

from typing import Any

import revzoo

from .groups import GROUP_NAMES
from .model import LieTransformer

# Every config key the builder accepts (JSON values); lie-transformer-pytorch 0.0.17's defaults
# except dim, which it requires and revzoo sets to a small working width.
DEFAULTS: dict[str, Any] = {
    "dim": 64,
    "num_tokens": None,
    "num_edge_types": None,
    "edge_dim": None,
    "heads": 8,
    "dim_head": 64,
    "depth": 2,
    "dim_out": None,
    "nbhd": 128,
    "mean": True,
    "liftsamples": None,  # the group's: 4 (upstream's default), or 1 for T3, whose stabiliser is trivial
    "fill": 0.25,
    "group": "SE3",
    "ff_mult": 4,
}

FORMS = ("reversible", "sequential")


def _positive_int(config: dict[str, Any], name: str, *, optional: bool = False) -> None:
    value = config.get(name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise revzoo.ConfigError(f"{name} must be a positive integer{' or None' if optional else ''}, got {value!r}")


def validate_config(config: dict[str, Any]) -> None:
    """Raises revzoo.ConfigError naming the first bad hyperparameter and what would be valid."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise revzoo.ConfigError(f"unknown lie-transformer option(s) {unknown}; valid: {', '.join(DEFAULTS)}")
    for name in ("dim", "heads", "dim_head", "depth", "nbhd", "ff_mult"):
        _positive_int(config, name)
    for name in ("num_tokens", "num_edge_types", "edge_dim", "dim_out", "liftsamples"):
        _positive_int(config, name, optional=True)
    if config["num_edge_types"] is not None and config["edge_dim"] is None:
        raise revzoo.ConfigError(
            f"num_edge_types={config['num_edge_types']} needs edge_dim (the width edge types are embedded to)"
        )
    fill = config["fill"]
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not 0 < fill <= 1:
        raise revzoo.ConfigError(f"fill must be a fraction in (0, 1], got {fill!r}")
    if not isinstance(config["mean"], bool):
        raise revzoo.ConfigError(f"mean must be True (mean pooling) or False (sum pooling), got {config['mean']!r}")
    if config["group"] not in GROUP_NAMES:
        raise revzoo.ConfigError(f"unknown group {config['group']!r}; valid: {', '.join(GROUP_NAMES)}")
    if config["group"] == "T3" and config["liftsamples"] not in (None, 1):
        raise revzoo.ConfigError(
            f"group 'T3' has a trivial stabiliser, so liftsamples must be 1, got {config['liftsamples']!r}"
        )


def build_lie_transformer(*, form: str = "reversible", **config: Any) -> LieTransformer:
    """Returns a LieTransformer in ``form`` built from ``config`` (missing keys take DEFAULTS)."""
    if form not in FORMS:
        raise revzoo.ConfigError(f"unknown form {form!r}; valid: {', '.join(FORMS)}")
    config = {**DEFAULTS, **config}
    validate_config(config)
    if config["liftsamples"] is None:
        config["liftsamples"] = 1 if config["group"] == "T3" else 4
    return LieTransformer(form=form, **config)
