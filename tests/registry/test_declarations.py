"""An ArchSpec's routes and stream layout are the truth: create refuses a model whose stacks differ."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import revzoo
from helpers import pairs, plugin_of

LAYOUT = revzoo.StreamLayout(stream="values", fields=("coords", "values"))


class Scaled(revzoo.ZooModel):
    """Routes `scale` as the builder is told to, whatever the spec declares."""

    def __init__(self, *, form: str, scale_route: str, layout: bool, depth: int = 2) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.stack = revzoo.ReversibleSequence(pairs(depth, 4), routes={"scale": scale_route},
                                               layout=LAYOUT if layout else None, form=form)


def _spec(routes, layout=None, **defaults) -> revzoo.ArchSpec:
    return revzoo.ArchSpec(name="scaled", builder=Scaled, description="routes scale",
                           defaults={"scale_route": "f", "layout": False, **defaults}, routes=routes, layout=layout)


def test_declared_routes_and_layout_that_match_build(register_plugin) -> None:
    register_plugin(plugin_of(_spec({"scale": "f"})), name="honest")
    assert isinstance(revzoo.create("scaled"), Scaled)
    register_plugin(plugin_of(revzoo.ArchSpec(
        name="laid-out", builder=Scaled, description="a layout", defaults={"scale_route": "both", "layout": True},
        routes={"scale": (True, True)}, layout=LAYOUT)), name="laid")
    revzoo.create("laid-out")


def test_a_route_the_builder_does_not_use_is_refused(register_plugin) -> None:
    register_plugin(plugin_of(_spec({"scale": "both"})), name="drifted")
    with pytest.raises(revzoo.PluginError, match=(
        r"plugin 'drifted': model 'scaled', stack 'stack', block 0 routes 'scale' to 'f' "
        r"but the ArchSpec declares 'both'")):
        revzoo.create("scaled")


def test_an_undeclared_route_and_a_missing_one_are_refused(register_plugin) -> None:
    register_plugin(plugin_of(_spec({"mask": "f", "scale": "f"})), name="extra")
    with pytest.raises(revzoo.PluginError, match=r"stack 'stack', block 0 routes 'mask' to nowhere but the ArchSpec "
                                                 r"declares 'f'"):
        revzoo.create("scaled")


def test_a_layout_the_builder_does_not_use_is_refused(register_plugin) -> None:
    register_plugin(plugin_of(_spec({"scale": "f"}, layout=LAYOUT)), name="flat")
    with pytest.raises(revzoo.PluginError, match=r"plugin 'flat': model 'scaled', stack 'stack' has stream layout None "
                                                 r"but the ArchSpec declares StreamLayout\(stream='values'"):
        revzoo.create("scaled")


@pytest.mark.parametrize("name", ["dalle-rev", "lie-transformer-rev", "vit-tiny-rev"])
def test_builtin_plugins_declare_what_they_build(builtin_plugins, name: str) -> None:
    spec = revzoo.get_architecture(name)
    with torch.device("meta"):
        model = revzoo.create(name, **spec.small)
    stacks = [m for m in model.modules() if isinstance(m, revzoo.ReversibleSequence)]
    assert stacks and all(stack.layout == spec.layout for stack in stacks)
