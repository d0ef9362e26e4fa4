"""Plugin loading: entry points, precedence, isolation of any failure, hooks through pluggy, environment, extras."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import warnings

import pytest

import revzoo
import revzoo.testing
from helpers import FakeEntryPoint, plugin_of, tiny_spec
from revzoo.cli import main
from revzoo.errors import PluginWarning
from revzoo.registry import _entry_points, _plugins


def format_plugin(*names: str):
    class Formats:
        @revzoo.hookimpl
        def register_formats(self, register):
            for name in names:
                register(revzoo.CheckpointFormat(name=name, description="d", read=lambda obj: obj))

    return Formats()


def both(arch_plugin, format_plugin_):
    """One plugin object with the architecture hook of the first and the format hook of the second."""

    class Both:
        register_architectures = arch_plugin.register_architectures
        register_formats = format_plugin_.register_formats

    return Both()


def records() -> dict[str, dict]:
    return {record["name"]: record for record in revzoo.plugins_info()}


# --- precedence ---------------------------------------------------------------------------------


def builtin_dalle() -> FakeEntryPoint:
    return FakeEntryPoint("dalle", lambda: both(plugin_of(tiny_spec("dalle")), format_plugin("dalle-pytorch")),
                          dist="revzoo")


@pytest.mark.parametrize("reverse", [False, True])
def test_an_entry_point_with_a_builtins_name_is_refused_whatever_the_path_order(installed, reverse) -> None:
    impostor = FakeEntryPoint("dalle", lambda: plugin_of(tiny_spec("dalle", card="impostor.md")), dist="evil")
    points = [builtin_dalle(), impostor]
    installed(*(reversed(points) if reverse else points))
    with pytest.warns(PluginWarning, match=r"plugin 'dalle' of distribution evil 1.0 is not loaded: the built-in "
                                           r"plugin 'dalle' of distribution revzoo 1.0 has that name"):
        assert revzoo.get_architecture("dalle").card is None
    assert revzoo.list_formats() == ["dalle-pytorch"]
    assert records()["dalle"]["builtin"] is True and records()["dalle"]["version"] == "1.0"


@pytest.mark.parametrize("reverse", [False, True])
def test_a_claimed_name_stays_with_the_builtin_and_nothing_else_is_lost(installed, reverse) -> None:
    claimer = FakeEntryPoint("aaa", lambda: plugin_of(tiny_spec("dalle"), tiny_spec("other")), dist="third")
    points = [builtin_dalle(), claimer]
    installed(*(reversed(points) if reverse else points))
    with pytest.warns(PluginWarning, match="plugin 'aaa' registers model 'dalle', which plugin 'dalle' already provides"):
        revzoo.list_models()
    assert revzoo.list_formats() == ["dalle-pytorch"]  # the built-in keeps its format
    assert "other" in revzoo.list_models()  # the claimer keeps its other names
    info = records()
    assert info["dalle"]["models"] == ["dalle"] and info["aaa"]["models"] == ["other"]
    assert info["aaa"]["shadowed"] == ["dalle"] and info["aaa"]["status"] == "ok"


def test_third_party_entry_points_take_precedence_by_name(installed) -> None:
    installed(FakeEntryPoint("zed", lambda: plugin_of(tiny_spec("shared", card="zed.md"))),
              FakeEntryPoint("abc", lambda: plugin_of(tiny_spec("shared", card="abc.md"))))
    with pytest.warns(PluginWarning, match="plugin 'zed' registers model 'shared', which plugin 'abc' already provides"):
        assert revzoo.get_architecture("shared").card == "abc.md"


# --- isolation ----------------------------------------------------------------------------------


class Boom(BaseException):
    """Neither an Exception nor SystemExit/KeyboardInterrupt: still a plugin's failure, not the command's end."""


def raise_(err: BaseException):
    raise err


def test_any_base_exception_at_import_or_in_a_hook_is_isolated_and_reported_once(installed) -> None:
    class RaisesInHook:
        @revzoo.hookimpl
        def register_architectures(self, register):
            raise Boom("from a hook")

    class RaisesOnRegister:
        @revzoo.hookimpl
        def register_architectures(self, register):
            raise ValueError("bad config table")

    installed(FakeEntryPoint("exits", lambda: raise_(SystemExit(3))), FakeEntryPoint("boom", lambda: raise_(Boom("x"))),
              FakeEntryPoint("broken", lambda: raise_(ImportError("No module named 'missing_dependency'"))),
              FakeEntryPoint("hook", RaisesInHook), FakeEntryPoint("raiser", RaisesOnRegister),
              FakeEntryPoint("good", lambda: plugin_of(tiny_spec())))
    with pytest.warns(PluginWarning) as warned:
        assert revzoo.list_models() == ["tiny", "tiny-rev"]
    messages = [str(w.message) for w in warned]
    assert len(messages) == 5  # reported once each
    assert any("'broken' failed to load: ImportError" in m for m in messages)
    assert any("'raiser' failed to register: ValueError: bad config table" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        revzoo.list_models()  # no second warning: the registry is cached
    info = records()
    assert info["exits"]["error"] == "SystemExit: 3" and info["boom"]["error"] == "Boom: x"
    assert info["hook"]["error"] == "Boom: from a hook" and info["good"]["status"] == "ok"
    assert info["good"]["models"] == ["tiny"]
    assert info["broken"]["status"] == "failed" and "missing_dependency" in info["broken"]["error"]
    assert info["raiser"]["status"] == "failed"


def test_ctrl_c_while_importing_names_the_way_out(installed, capsys) -> None:
    installed(FakeEntryPoint("stuck", lambda: raise_(KeyboardInterrupt())))
    with pytest.raises(KeyboardInterrupt):
        revzoo.list_models()
    assert "interrupted while importing plugin 'stuck'; run with REVZOO_DISABLE_PLUGINS=stuck" in capsys.readouterr().err


def test_a_slow_import_is_named_with_the_way_to_skip_it(installed, monkeypatch, capsys) -> None:
    monkeypatch.setattr(_entry_points, "SLOW_IMPORT_SECONDS", 0.05)
    installed(FakeEntryPoint("slow", lambda: time.sleep(0.5) or plugin_of(tiny_spec())))
    assert revzoo.list_models() == ["tiny", "tiny-rev"]
    err = capsys.readouterr().err
    assert "plugin 'slow' is still importing after 0.05 s; if it hangs, press Ctrl-C and run with " \
           "REVZOO_DISABLE_PLUGINS=slow" in err


# --- hooks through pluggy -----------------------------------------------------------------------


def test_hooks_run_through_pluggy_with_wrappers_order_and_monitoring(register_plugin) -> None:
    calls: list[str] = []

    class Plain:
        @revzoo.hookimpl
        def register_architectures(self, register):
            calls.append("plain")
            register(tiny_spec("plain"))

    class First:
        @revzoo.hookimpl(tryfirst=True)
        def register_architectures(self, register):
            calls.append("first")
            register(tiny_spec("first"))

    class Wrapper:
        @revzoo.hookimpl(wrapper=True)
        def register_architectures(self, register):
            calls.append("wrap-in")
            result = yield
            calls.append("wrap-out")
            return result

    monitored: list[str] = []
    undo = _plugins.plugin_manager.add_hookcall_monitoring(
        lambda hook_name, impls, kwargs: monitored.append(f"{hook_name}:{[i.plugin_name for i in impls]}"),
        lambda outcome, hook_name, impls, kwargs: None,
    )
    try:
        register_plugin(First(), name="first")
        register_plugin(Plain(), name="plain")
        calls.clear()
        monitored.clear()
        register_plugin(Wrapper(), name="wrapper")
    finally:
        undo()
    assert calls == ["wrap-in", "first", "plain", "wrap-out"]  # one call of the hook: tryfirst first, wrapped
    assert [call for call in monitored if call.startswith("register_architectures:")] == [
        "register_architectures:['plain', 'first', 'wrapper']"]  # monitoring sees that call, with every implementation
    assert revzoo.list_models(exclude="*-rev") == ["first", "plain"]


def test_a_failing_wrapper_is_blamed_and_the_plugins_it_wraps_still_register(installed) -> None:
    class BadWrapper:
        @revzoo.hookimpl(wrapper=True)
        def register_architectures(self, register):
            raise RuntimeError("wrapper broke")
            yield

    installed(FakeEntryPoint("good", lambda: plugin_of(tiny_spec())), FakeEntryPoint("wrapper", BadWrapper))
    with pytest.warns(PluginWarning, match="plugin 'wrapper' failed to register: RuntimeError: wrapper broke"):
        assert revzoo.list_models() == ["tiny", "tiny-rev"]
    assert records()["good"]["status"] == "ok" and records()["wrapper"]["status"] == "failed"


def test_a_wrapper_failing_after_its_yield_or_an_old_style_one_is_blamed_alone(installed) -> None:
    seen = []

    class FailsAfter:
        @revzoo.hookimpl(wrapper=True)
        def register_architectures(self, register):
            register(tiny_spec("after"))
            yield
            raise RuntimeError("teardown broke")

        @revzoo.hookimpl
        def register_formats(self, register):
            seen.append("never: its plugin failed in an earlier hook")

    class OldStyle:
        @revzoo.hookimpl(hookwrapper=True)
        def register_architectures(self, register):
            outcome = yield
            seen.append(outcome.get_result())

    installed(FakeEntryPoint("good", lambda: plugin_of(tiny_spec())), FakeEntryPoint("after", FailsAfter),
              FakeEntryPoint("old", OldStyle))
    with pytest.warns(PluginWarning, match="plugin 'after' failed to register: RuntimeError: teardown broke"):
        assert revzoo.list_models() == ["tiny", "tiny-rev"]  # what the failed plugin registered is dropped
    assert seen == [[]]  # the old-style wrapper saw the call's result; the failed plugin's other hooks did not run
    assert [records()[name]["status"] for name in ("good", "after", "old")] == ["ok", "failed", "ok"]


def test_a_plugin_failing_in_a_later_hook_loses_what_it_registered_in_an_earlier_one(installed) -> None:
    class Formats:
        @revzoo.hookimpl
        def register_architectures(self, register):
            register(tiny_spec("early"))

        @revzoo.hookimpl
        def register_formats(self, register):
            register("not a format")

    installed(FakeEntryPoint("late", Formats), FakeEntryPoint("good", lambda: plugin_of(tiny_spec())))
    with pytest.warns(PluginWarning, match=r"plugin 'late' failed to register: PluginError: register_formats takes "
                                           r"revzoo.CheckpointFormat, got str"):
        assert revzoo.list_models() == ["tiny", "tiny-rev"]


class Misspelt:
    @revzoo.hookimpl
    def register_architecture(self, register):
        register(tiny_spec())


def test_a_misspelt_hook_is_named(installed) -> None:
    installed(FakeEntryPoint("typo", Misspelt))
    with pytest.warns(PluginWarning, match="'typo' failed to load: PluginError: unknown hook 'register_architecture'"):
        revzoo.list_models()
    assert records()["typo"]["status"] == "failed"
    with pytest.raises(revzoo.PluginError, match=r"unknown hook 'register_architecture' \(did you mean "
                                                 r"'register_architectures'\?\); revzoo's hooks are register_adapters"):
        revzoo.register_plugin(Misspelt(), name="typo-again")
    assert "typo-again" not in records()


# --- environment --------------------------------------------------------------------------------


def test_import_revzoo_loads_no_plugin() -> None:
    code = "import sys, revzoo; print(any(m.startswith('revzoo_') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.fixture
def three(installed):
    installed(*(FakeEntryPoint(name, lambda name=name: plugin_of(tiny_spec(name))) for name in ("one", "two", "six")))


def loaded() -> set[str]:
    return {name for name, _ in _plugins.plugin_manager.list_name_plugin()}


@pytest.mark.parametrize(
    "variable,value,expected,warning",
    [
        ("REVZOO_LOAD_PLUGINS", "", set(), None),
        ("REVZOO_LOAD_PLUGINS", ",", set(), None),
        ("REVZOO_LOAD_PLUGINS", "one", {"one"}, None),
        ("REVZOO_LOAD_PLUGINS", " one , two ", {"one", "two"}, None),
        ("REVZOO_LOAD_PLUGINS", "one;two", set(), r"REVZOO_LOAD_PLUGINS names 'one;two', which no installed plugin has"),
        ("REVZOO_LOAD_PLUGINS", "one,tow", {"one"}, r"names 'tow', which no installed plugin has; did you mean 'two'\?"),
        ("REVZOO_DISABLE_PLUGINS", "", {"one", "two", "six"}, None),
        ("REVZOO_DISABLE_PLUGINS", ",", {"one", "two", "six"}, None),
        ("REVZOO_DISABLE_PLUGINS", "six", {"one", "two"}, None),
        ("REVZOO_DISABLE_PLUGINS", "two,six", {"one"}, None),
        ("REVZOO_DISABLE_PLUGINS", "six;two", {"one", "two", "six"}, r"REVZOO_DISABLE_PLUGINS names 'six;two', which no "
                                                                    r"installed plugin has.*separate names with commas"),
    ],
)
def test_both_variables_read_alike_and_unknown_names_warn(three, monkeypatch, variable, value, expected, warning) -> None:
    monkeypatch.setenv(variable, value)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        revzoo.list_models()
    assert loaded() == expected
    messages = [str(w.message) for w in warned if issubclass(w.category, PluginWarning)]
    if warning is None:
        assert messages == []
    else:
        assert len(messages) == 1 and re.search(warning, messages[0]), messages


# --- optional dependencies ----------------------------------------------------------------------


class DistWithExtra:
    name, version, requires = "revzoo", "1.0", ['timm>=1.0; extra == "vit"', "torch>=2.3"]


def test_a_plugin_missing_its_extra_is_unavailable_not_failed(installed) -> None:
    def needs_timm():
        raise ModuleNotFoundError("No module named 'timm'", name="timm")

    vit = FakeEntryPoint("vit", needs_timm)
    vit.dist = DistWithExtra()
    installed(vit, FakeEntryPoint("good", lambda: plugin_of(tiny_spec())))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)  # not a failure to warn about on every command
        assert revzoo.list_models() == ["tiny", "tiny-rev"]
    assert records()["vit"]["status"] == "unavailable"
    with pytest.raises(revzoo.UnknownModelError, match=r"unknown model 'vit-small' \(see: revzoo list\); plugin 'vit' is "
                                                       r"not loaded: it needs timm: pip install 'revzoo\[vit\]'"):
        revzoo.create("vit-small")


# --- the testing helper -------------------------------------------------------------------------


def test_isolated_plugins_hides_and_restores_the_registry(register_plugin) -> None:
    register_plugin(plugin_of(tiny_spec("outer")), name="outer")
    inner = plugin_of(tiny_spec("inner"))
    with pytest.raises(RuntimeError, match="test failed"):
        with revzoo.testing.isolated_plugins(inner) as names:
            assert names and revzoo.list_models(exclude="*-rev") == ["inner"]
            revzoo.register_plugin(plugin_of(tiny_spec("more")), name="more")
            raise RuntimeError("test failed")
    assert revzoo.list_models(exclude="*-rev") == ["outer"]
    assert "more" not in records() and revzoo.create("outer").revzoo_architecture == "outer"


def test_what_a_plugin_prints_while_loading_goes_to_stderr_not_into_the_json(installed, capsys) -> None:
    def chatty():
        print("chatty plugin says hello")  # at import
        return plugin_of(tiny_spec("chatty"))

    installed(FakeEntryPoint("chatty", chatty))
    assert main(["plugins"]) == 0
    out, err = capsys.readouterr()
    assert "chatty" in [record["name"] for record in json.loads(out)] and "says hello" in err


def test_an_unknown_name_says_which_plugins_the_environment_left_out(installed, monkeypatch) -> None:
    installed(FakeEntryPoint("vitish", lambda: plugin_of(tiny_spec("vitish-tiny"))))
    monkeypatch.setenv("REVZOO_DISABLE_PLUGINS", "vitish")
    with pytest.raises(revzoo.UnknownModelError,
                       match="plugin 'vitish' is not loaded: REVZOO_DISABLE_PLUGINS leaves it out"):
        revzoo.create("vitish-tiny")
