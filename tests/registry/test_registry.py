"""The registry: create/list, name resolvers, specs, and plugins registered at run time (loading entry points: see
test_plugin_loading.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types

import pytest

import revzoo
from helpers import build_tiny, plugin_of, tiny_spec
from revzoo.registry import _plugins


def test_register_create_and_list(register_plugin) -> None:
    register_plugin(plugin_of(tiny_spec(), tiny_spec("tiny-wide", aliases=("wide",))), name="tiny")
    assert revzoo.list_models("tiny*") == ["tiny", "tiny-rev", "tiny-wide", "tiny-wide-rev"]
    assert revzoo.list_models("tiny*", exclude="*-rev") == ["tiny", "tiny-wide"]
    model = revzoo.create("tiny-rev", depth=3)
    assert revzoo.get_form(model) == "reversible" and len(model.stack.blocks) == 3
    assert model.revzoo_architecture == "tiny" and model.revzoo_config == {"dim": 4, "depth": 3}
    assert revzoo.get_form(revzoo.create("tiny")) == "sequential"
    assert revzoo.get_form(revzoo.create("tiny", form="reversible")) == "reversible"
    assert revzoo.get_architecture("wide").name == "tiny-wide"
    assert revzoo.create("tiny", depth=None).revzoo_config["depth"] == 2  # None never overrides a default


def test_create_errors(register_plugin) -> None:
    register_plugin(plugin_of(tiny_spec(), tiny_spec("seqonly", forms=("sequential",))), name="tiny")
    with pytest.raises(revzoo.UnknownModelError, match=r"unknown model 'tinny'; did you mean 'tiny'") as info:
        revzoo.create("tinny")
    assert isinstance(info.value, KeyError)
    with pytest.raises(TypeError, match=r"unknown option\(s\) width; valid: depth, dim"):
        revzoo.create("tiny", width=3)
    with pytest.raises(revzoo.ConfigError, match="has no 'reversible' form"):
        revzoo.create("seqonly", form="reversible")
    with pytest.raises(revzoo.ConfigError, match="cannot be created with form='sequential'"):
        revzoo.create("tiny-rev", form="sequential")
    assert "seqonly-rev" not in revzoo.list_models()


def test_defaults_that_do_not_fill_the_builder_are_the_plugins_error(register_plugin) -> None:
    def builder(*, form: str, dim: int, depth: int, classes: int) -> revzoo.ZooModel:
        raise AssertionError("never called")

    register_plugin(plugin_of(revzoo.ArchSpec(name="short", builder=builder, description="three defaults short",
                                              defaults={"dim": 4, "depth": 2})),
                    name="short-plugin")
    with pytest.raises(revzoo.PluginError, match=r"plugin 'short-plugin': the builder of 'short' cannot be called "
                       r"with its defaults .*missing a required argument: 'classes'"):  # was a bare TypeError
        revzoo.create("short")


def test_subname_and_open_config(register_plugin) -> None:
    seen = {}

    def build(*, form, family, **kwargs):
        seen.update(family=family, **kwargs)
        return build_tiny(form=form, dim=4, depth=1)

    spec = revzoo.ArchSpec(name="fam", builder=build, description="d", defaults={"family": None},
                           subname_key="family", open_config=True)
    register_plugin(plugin_of(spec), name="fam")
    revzoo.create("fam/small-one", width=7)
    assert seen == {"family": "small-one", "width": 7}
    with pytest.raises(revzoo.UnknownModelError):
        revzoo.create("tiny/x")


def test_a_prefixed_name_goes_to_its_resolver(register_plugin, monkeypatch) -> None:
    from revzoo.registry import _registry

    monkeypatch.setattr(_registry, "_RESOLVERS", dict(_registry._RESOLVERS))  # this test's resolver goes with it
    register_plugin(plugin_of(tiny_spec()), name="tiny")
    seen = []

    def resolver(rest, form=None, **options):
        seen.append((rest, form, options))
        return revzoo.create("tiny", form=form)

    revzoo.registry.register_resolver("fake:", resolver)
    model = revzoo.create("fake:org/name@v1", form="reversible", revision=None)
    assert seen == [("org/name@v1", "reversible", {"revision": None})]  # options as given, None included
    assert revzoo.get_form(model) == "reversible"
    with pytest.raises(revzoo.UnknownModelError, match="unknown model 'other:x'"):
        revzoo.create("other:x")
    with pytest.raises(TypeError, match="a prefix ending in ':'"):
        revzoo.registry.register_resolver("fake", resolver)


def test_hf_hub_names_resolve_with_no_plugin_loaded() -> None:
    code = ("import revzoo\ntry:\n    revzoo.create('hf-hub:not-a-repo')\nexcept revzoo.ConfigError as err:\n"
            "    print('ConfigError', err)")
    env = {key: value for key, value in os.environ.items() if not key.startswith("REVZOO_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**env, "REVZOO_LOAD_PLUGINS": ""})
    # the checkpoints' resolver, registered when revzoo.create is first taken: not an unknown model
    assert result.stdout.startswith("ConfigError") and re.search(r"hf-hub:ORG/NAME|huggingface_hub", result.stdout)


def test_duplicate_names_name_both_plugins(register_plugin) -> None:
    register_plugin(plugin_of(tiny_spec()), name="first")
    with pytest.raises(revzoo.PluginError, match="'tiny' is registered by both plugin 'first' and plugin 'second'"):
        register_plugin(plugin_of(tiny_spec()), name="second")
    assert not _plugins.plugin_manager.has_plugin("second")  # nothing left behind
    assert revzoo.list_models("tiny") == ["tiny"]


def test_hookimpl_with_unknown_argument_is_rejected() -> None:
    class Bad:
        @revzoo.hookimpl
        def register_architectures(self, register, extra):
            pass

    with pytest.raises(revzoo.PluginError, match="cannot register plugin"):
        revzoo.register_plugin(Bad(), name="bad")
    assert not _plugins.plugin_manager.has_plugin("bad")


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: tiny_spec(aliases="xyz"), r"architecture 'tiny': aliases must be a tuple of names, not the string 'xyz'"),
        (lambda: tiny_spec(aliases=("ok", 5)), r"architecture 'tiny': alias name 5 must be lowercase"),
        (lambda: tiny_spec(card=5), r"architecture 'tiny': card must be a path such as 'model_card.md' or None, got 5"),
        (lambda: tiny_spec(example_inputs=42),
         r"architecture 'tiny': example_inputs must be a function \(model, generator\) -> \(args, kwargs\) or None"),
        (lambda: tiny_spec(routes={"mask": "banana"}), r"architecture 'tiny': route 'mask' is 'banana'; expected 'f', 'g'"),
        (lambda: tiny_spec(routes=["mask"]), r"architecture 'tiny': routes must map keyword names to 'f', 'g' or 'both'"),
        (lambda: tiny_spec(subname_key=3), r"architecture 'tiny': subname_key must be a config key or None"),
        (lambda: revzoo.ArchSpec(name="keys", builder=lambda **config: None, description="d", defaults={1: 2}),
         r"defaults must map config keys \(strings\)"),  # in create, a TypeError
        (lambda: tiny_spec(hub_config="config.json"), "hub_config must be a function"),
        (lambda: tiny_spec("Tiny_Model"), "must be lowercase"),
        (lambda: tiny_spec("tiny-rev"), "not end in '-rev'"),
        (lambda: revzoo.ArchSpec(name="x", builder=build_tiny, description="d", defaults={"dim": object()}),
         "JSON-serialisable"),
        (lambda: tiny_spec(forms=("reversable",)), "forms"),
    ],
)
def test_specs_are_validated_with_the_plugin_named(make, message) -> None:
    with pytest.raises(revzoo.PluginError, match=message) as refused:
        make()

    class Bad:
        @revzoo.hookimpl
        def register_architectures(self, register):
            register(make())

    first_line = re.escape(str(refused.value).splitlines()[0])
    with pytest.raises(revzoo.PluginError, match=rf"plugin 'bad' failed to register: PluginError: {first_line}"):
        revzoo.register_plugin(Bad(), name="bad")


def test_plugin_raising_while_registering_is_isolated(register_plugin) -> None:
    class Raises:
        @revzoo.hookimpl
        def register_architectures(self, register):
            register(tiny_spec("half"))
            raise RuntimeError("boom")

    with pytest.raises(revzoo.PluginError, match="failed to register: RuntimeError: boom"):
        revzoo.register_plugin(Raises(), name="raises")
    register_plugin(plugin_of(tiny_spec()), name="good")
    assert revzoo.list_models() == ["tiny", "tiny-rev"]  # the half registration did not leak


def test_unregister_unknown_plugin() -> None:
    with pytest.raises(KeyError, match="no plugin named 'nope'"):
        revzoo.unregister_plugin("nope")


def test_module_plugin(register_plugin) -> None:
    module = types.ModuleType("tiny_module_plugin")
    module.register_architectures = revzoo.hookimpl(lambda register: register(tiny_spec("modular")))
    register_plugin(module)
    assert "modular" in revzoo.list_models()


def test_a_hook_returning_its_specs_instead_of_registering_them_is_a_plugin_error(register_plugin) -> None:
    class Returns:
        @revzoo.hookimpl
        def register_architectures(self, register):
            return [tiny_spec("returned")]  # as if the hook were a getter: registered nothing, silently

    with pytest.raises(revzoo.PluginError, match=r"returned list instead of None; call register\(revzoo.ArchSpec"):
        revzoo.register_plugin(Returns(), name="returns")
    assert "returned" not in revzoo.list_models()
