"""Lazy public names: `import revzoo`, `revzoo --version` and a core command's --help leave torch out; `list`/`info`
leave timm and dynamo out."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import revzoo
import revzoo.registry

ROOT = Path(__file__).resolve().parent.parent

# Runs the command line in this interpreter, then prints which heavy modules it imported.
_RUN = """
import sys
import revzoo
revzoo.hookimpl
from revzoo.cli import main
try:
    code = main({argv!r})
except SystemExit as stop:
    code = stop.code
print("IMPORTED", " ".join(m for m in ("torch", "timm", "torch._dynamo") if m in sys.modules), "EXIT", code)
"""


def _imported_by(argv: list[str]) -> set[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("REVZOO_")}
    env["REVZOO_LOAD_PLUGINS"] = "dalle,lie,vit"
    result = subprocess.run([sys.executable, "-c", _RUN.format(argv=argv)], capture_output=True, text=True,
                            timeout=300, env=env, check=True)
    words = result.stdout.split("IMPORTED", 1)[1].split()
    assert words[-2:] == ["EXIT", "0"], result.stdout + result.stderr
    return set(words[:-2])


def test_import_version_and_core_commands_help_leave_torch_out() -> None:
    # `revzoo --help` loads the plugins, to list their commands (the dalle plugin's generate), as llm's does; the
    # built-in plugins import torch when they load, so only --version and a core command's --help stay without it
    for argv in (["--version"], ["list", "--help"], ["convert", "--help"]):
        assert _imported_by(argv) == set(), argv


@pytest.mark.parametrize("argv", [["list"], ["info", "vit-small-rev"], ["info", "timm/vit_tiny_patch16_224"]])
def test_list_and_info_leave_timm_and_dynamo_out(argv: list[str]) -> None:
    assert _imported_by(argv) == {"torch"}  # torch._dynamo alone costs about a second


def _type_checking_imports(path: Path) -> dict[str, str]:
    """Returns name -> relative module of the `from .X import name as name` lines under `if TYPE_CHECKING:`."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.level == 1, ast.unparse(statement)
                for alias in statement.names:
                    assert alias.asname == alias.name, f"write `import {alias.name} as {alias.name}` (a re-export)"
                    found[alias.name] = f".{statement.module}"
    return found


@pytest.mark.parametrize("package, path", [(revzoo, "revzoo/__init__.py"),
                                           (revzoo.registry, "revzoo/registry/__init__.py")])
def test_exports_table_type_checking_imports_and_all_agree(package, path: str) -> None:
    exports = package._EXPORTS
    eager = set(package.__all__) - set(exports)
    assert package.__all__ == sorted(package.__all__), "keep __all__ sorted"
    assert eager <= {"__version__", "hookimpl"}, f"names in __all__ but not in _EXPORTS: {sorted(eager)}"
    assert _type_checking_imports(ROOT / path) == dict(exports), "the TYPE_CHECKING imports must match _EXPORTS"
    for name in package.__all__:
        assert getattr(package, name) is not None
        assert name in dir(package)


def test_every_public_name_is_the_defining_modules_object() -> None:
    assert revzoo.ReversibleSequence is revzoo.engine.ReversibleSequence
    assert revzoo.create is revzoo.checkpoints.create is revzoo.registry.create  # one create; checkpoints add "hf-hub:"
    assert revzoo.hookimpl is revzoo.registry.hookspecs.hookimpl
    from revzoo import load

    assert load is revzoo.checkpoints.load


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'revzoo' has no attribute 'craete'"):
        revzoo.craete  # noqa: B018
    assert not hasattr(revzoo.registry, "nothing_here")
