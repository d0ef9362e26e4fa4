"""Plugin commands: the `register_commands` hook adds `revzoo` sub-commands, and a failing one is isolated."""

from __future__ import annotations

import json
import sys
import types
from importlib import metadata

import pytest

import revzoo
from helpers import plugin_of, tiny_spec
from revzoo.cli import main


def _hello(args) -> None:
    if args.name == "nobody":
        raise revzoo.RevzooError("nobody to greet")
    print(f"hello {args.name}" + "!" * args.loud)


def _configure_hello(parser) -> None:
    parser.add_argument("name")
    parser.add_argument("--loud", type=int, default=0)


class HelloPlugin:
    """A third-party plugin with one command, as a package would ship it."""

    @revzoo.hookimpl
    def register_commands(self, register):
        register(revzoo.Command(name="hello", help="greet someone", configure=_configure_hello, run=_hello))


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def help_text(capsys, *args: str) -> tuple[str, str]:
    with pytest.raises(SystemExit) as stop:
        main([*args, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr()


def test_a_third_party_plugin_adds_a_command_that_runs(register_plugin, capsys) -> None:
    register_plugin(HelloPlugin(), name="hello-plugin")
    assert run(capsys, "hello", "zoo", "--loud", "2") == (0, "hello zoo!!\n", "")
    assert run(capsys, "hello", "nobody") == (2, "", "revzoo: error: nobody to greet\n")
    out, _ = help_text(capsys)
    assert "hello     greet someone" in out and "convert" in out
    assert "usage: revzoo hello [-h] [--loud LOUD] name" in help_text(capsys, "hello")[0]
    (record,) = [r for r in json.loads(run(capsys, "plugins")[1]) if r["name"] == "hello-plugin"]
    assert record["commands"] == ["hello"] and record["hooks"] == ["register_commands"]


def test_a_bad_argument_of_a_plugin_command_shows_its_own_usage(register_plugin, capsys) -> None:
    register_plugin(HelloPlugin(), name="hello-plugin")
    with pytest.raises(SystemExit) as stop:
        main(["hello", "zoo", "--bogus"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("usage: revzoo hello") and "unrecognized arguments: --bogus" in err


def _entry_point(monkeypatch, name: str, plugin: object) -> metadata.EntryPoint:
    """A real entry point in the `revzoo` group whose module is `plugin` (put in sys.modules for the test)."""
    module = types.ModuleType(f"fake_{name}")
    module.__dict__.update({key: getattr(plugin, key) for key in dir(plugin) if key.startswith("register_")})
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return metadata.EntryPoint(name=name, value=module.__name__, group="revzoo")


class BrokenCommands:
    @revzoo.hookimpl
    def register_architectures(self, register):
        register(tiny_spec(name="broken-net"))

    @revzoo.hookimpl
    def register_commands(self, register):
        raise RuntimeError("no commands today")


def test_a_plugin_whose_command_registration_fails_is_reported_and_left_out(monkeypatch, capsys) -> None:
    points = [_entry_point(monkeypatch, "broken", BrokenCommands()), _entry_point(monkeypatch, "hello", HelloPlugin()),
              _entry_point(monkeypatch, "good", plugin_of(tiny_spec()))]
    monkeypatch.setattr(metadata, "entry_points", lambda group: points if group == "revzoo" else [])
    monkeypatch.delenv("REVZOO_LOAD_PLUGINS")
    out, err = help_text(capsys)
    assert "hello     greet someone" in out  # the other plugins' commands are still there
    assert err == "revzoo: warning: plugin 'broken' failed to register: RuntimeError: no commands today\n"
    assert run(capsys, "hello", "you") == (0, "hello you\n", "")
    assert run(capsys, "list") == (0, "tiny\ntiny-rev\n", "")  # like any plugin failing a hook: left out whole
    (record,) = [r for r in json.loads(run(capsys, "plugins")[1]) if r["name"] == "broken"]
    assert record["status"] == "failed" and record["error"] == "RuntimeError: no commands today"


def test_a_command_whose_arguments_fail_or_whose_name_is_taken_is_left_out(register_plugin, capsys) -> None:
    def bad_configure(parser):
        parser.add_argument("--x")
        raise ValueError("cannot configure\nsecond line")

    class Clumsy:
        @revzoo.hookimpl
        def register_commands(self, register):
            register(revzoo.Command(name="clumsy", help="fails to configure", configure=bad_configure, run=print))
            register(revzoo.Command(name="list", help="shadows revzoo's own", run=print))

    register_plugin(Clumsy(), name="clumsy-plugin")
    register_plugin(HelloPlugin(), name="hello-plugin")
    out, err = help_text(capsys)
    assert "clumsy" not in out and "shadows" not in out and "hello" in out
    assert err.splitlines() == [
        "revzoo: warning: plugin 'clumsy-plugin': command 'clumsy' is left out: configuring its arguments raised "
        "ValueError: cannot configure",
        "revzoo: warning: plugin 'clumsy-plugin' registers command 'list', which is one of revzoo's own; the plugin's "
        "is left out",
    ]
    assert run(capsys, "hello", "again")[:2] == (0, "hello again\n")


def test_commands_are_validated_and_names_taken_twice_name_both_plugins(register_plugin) -> None:
    with pytest.raises(revzoo.PluginError, match="command name 'Hello World' must be lowercase words"):
        revzoo.Command(name="Hello World", help="h", run=print)
    with pytest.raises(revzoo.PluginError, match="command 'x': help must be one non-empty line"):
        revzoo.Command(name="x", help="", run=print)
    with pytest.raises(revzoo.PluginError, match="command 'x': run .* must be callable"):
        revzoo.Command(name="x", help="h", run=None)
    register_plugin(HelloPlugin(), name="hello-plugin")
    with pytest.raises(revzoo.PluginError, match="'hello' is registered by both plugin 'hello-plugin' and plugin 'again'"):
        register_plugin(HelloPlugin(), name="again")


def test_the_hook_is_documented_with_the_others() -> None:
    doc = revzoo.registry.hookspecs.register_commands.__doc__
    assert "register(revzoo.Command(" in doc and "configure(parser)" in doc and "run(args)" in doc
