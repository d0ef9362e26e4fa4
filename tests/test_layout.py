"""The package's layers: engine < registry < checkpoints < bench/cli, imports only downward, no circles; the core
command line names no plugin."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch

import revzoo

ROOT = Path(__file__).resolve().parent.parent
# What each part of revzoo may import from revzoo, besides itself (DESIGN.md, "Layout").
ALLOWED = {
    "engine": set(),
    "registry": {"engine", "errors", "_lazy"},
    "checkpoints": {"engine", "registry", "errors", "_lazy", "_version"},
    "compat": {"engine"},
    "bench": {"engine", "registry", "checkpoints", "errors", "_lazy", "_version"},
}
PLUGINS = {path.name: str(path.relative_to(ROOT)) for path in sorted(ROOT.glob("plugins/*/revzoo_*"))}


def _module_name(path: Path, package: str, folder: Path) -> str:
    parts = [package, *path.relative_to(folder).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str, modules: frozenset[str] = frozenset()) -> set[str]:
    """Every module `path` imports, anywhere in the file (function bodies and TYPE_CHECKING blocks too).

    `from package import submodule` imports the submodule, not the package's own names: when the
    imported name is one of `modules`, the package itself is not counted.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = {f"{base}.{alias.name}" for alias in node.names}
            found |= names if names <= modules else names | {base}
    return found


def _graph(package: str, folder: Path) -> dict[str, set[str]]:
    modules = {_module_name(p, package, folder): p for p in folder.rglob("*.py")}
    known = frozenset(modules)
    return {name: {m for m in _imports(path, name, known) if m in modules and m != name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _package_graph() -> dict[str, set[str]]:
    """The revzoo graph without its top-level __init__ (which re-exports every part)."""
    graph = _graph("revzoo", ROOT / "revzoo")
    graph.pop("revzoo")
    return {name: targets - {"revzoo"} for name, targets in graph.items()}


@pytest.mark.parametrize("package, folder", [("revzoo", "revzoo"), *PLUGINS.items()])
def test_no_import_circles(package: str, folder: str) -> None:
    graph = _package_graph() if package == "revzoo" else _graph(package, ROOT / folder)
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_parts_import_downward_only(part: str) -> None:
    graph = _package_graph()
    for module, targets in graph.items():
        if not module.startswith(f"revzoo.{part}"):
            continue
        reached = {t.split(".")[1] for t in targets if t.startswith("revzoo.")} - {part}
        assert reached <= ALLOWED[part], f"{module} imports revzoo.{sorted(reached - ALLOWED[part])}"


def test_only_the_command_line_imports_the_bench() -> None:
    importers = {m for m, targets in _package_graph().items() if any(t.startswith("revzoo.bench") for t in targets)}
    assert {m for m in importers if not m.startswith("revzoo.bench")} == {"revzoo.cli"}


def test_plugins_import_only_the_public_surface() -> None:
    """revzoo's names, and revzoo.bench's measurements (a plugin's command may measure, as the dalle demo does)."""
    import revzoo.bench

    public = {f"revzoo.{name}" for name in revzoo.__all__} | {"revzoo.bench"}
    public |= {f"revzoo.bench.{name}" for name in revzoo.bench.__all__}
    for package, folder in PLUGINS.items():
        for path in (ROOT / folder).rglob("*.py"):
            private = {m for m in _imports(path, _module_name(path, package, ROOT / folder)) if m.startswith("revzoo.")}
            assert not private - public, f"{path}: {sorted(private - public)}"


# Each part imported on its own, in a fresh interpreter where `revzoo` is an empty package (its
# __init__, which re-exports everything, is not run): what else of revzoo got imported?
_ALONE = """
import importlib, sys, types
package = types.ModuleType("revzoo"); package.__path__ = [{folder!r}]; sys.modules["revzoo"] = package
importlib.import_module("revzoo.{part}")
print(" ".join(sorted({{m.split(".")[1] for m in sys.modules if m.startswith("revzoo.")}})))
"""


@pytest.mark.parametrize("part", ["engine", "registry", "checkpoints"])
def test_each_part_imports_alone(part: str) -> None:
    code = _ALONE.format(folder=str(ROOT / "revzoo"), part=part)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert set(result.stdout.split()) - {part} <= ALLOWED[part]


# Zoo models answer to form and execution.
def _check_form_property(model: revzoo.ZooModel) -> None:
    stacks = [m for m in model.modules() if isinstance(m, revzoo.ReversibleSequence)]
    assert model.form == "reversible" and model.execution == "invert"
    model.form = "sequential"
    assert {s.form for s in stacks} == {"sequential"} and model.form == "sequential"
    model.execution = "autograd"
    assert {s.execution for s in stacks} == {"autograd"}
    with pytest.raises(ValueError, match="unknown form 'reversable'"):
        model.form = "reversable"
    with pytest.raises(ValueError, match="unknown execution"):
        model.execution = "checkpoint"
    assert {s.form for s in stacks} == {"sequential"} and {s.execution for s in stacks} == {"autograd"}


@pytest.mark.parametrize(
    "name, options",
    [
        ("dalle-rev", {"depth": 2, "dim": 16, "heads": 2, "dim_head": 8, "num_text_tokens": 20, "text_seq_len": 4,
                       "image_size": 16, "num_image_tokens": 8, "vae_hidden_dim": 4, "vae_codebook_dim": 8}),
        ("lie-transformer-rev", {"depth": 2, "dim": 8, "heads": 2, "dim_head": 4, "nbhd": 4}),
        ("vit-tiny-rev", {"depth": 2, "img_size": 16, "patch_size": 8, "embed_dim": 16, "num_heads": 2}),
    ],
)
def test_zoo_models_answer_to_form_and_execution(name: str, options: dict, builtin_plugins: list[str]) -> None:
    torch.manual_seed(0)
    model = revzoo.create(name, **options).eval()
    args, kwargs = revzoo.get_architecture(name).example_inputs(model, torch.Generator().manual_seed(0))
    with torch.no_grad():
        reversible = model(*args, **kwargs)
        _check_form_property(model)
        args, kwargs = revzoo.get_architecture(name).example_inputs(model, torch.Generator().manual_seed(0))
        sequential = model(*args, **kwargs)
        model.form = "reversible"
        args, kwargs = revzoo.get_architecture(name).example_inputs(model, torch.Generator().manual_seed(0))
        again = model(*args, **kwargs)
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    assert not torch.allclose(first(reversible), first(sequential))  # the property changed the function
    torch.testing.assert_close(first(again), first(reversible), rtol=0, atol=0)


def test_from_timm_answers_to_form(builtin_plugins: list[str]) -> None:
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, depth=2)
    model = revzoo.from_timm(vit)
    _check_form_property(model)


def test_a_builder_that_returns_a_plain_module_is_refused(register_plugin) -> None:
    from helpers import plugin_of

    spec = revzoo.ArchSpec(name="plain", builder=lambda form: torch.nn.Linear(2, 2), description="d")
    register_plugin(plugin_of(spec), name="plain-plugin")
    with pytest.raises(revzoo.PluginError, match="plugin 'plain-plugin'.*not a revzoo.ZooModel"):
        revzoo.create("plain")


def test_lie_defaults_work_for_every_group(builtin_plugins: list[str]) -> None:
    for group, samples in (("SE3", 4), ("SO3", 4), ("T3", 1)):
        assert revzoo.create("lie-transformer", group=group, dim=8, heads=2, dim_head=4).liftsamples == samples
    with pytest.raises(revzoo.ConfigError, match="liftsamples must be 1"):
        revzoo.create("lie-transformer", group="T3", liftsamples=4)

# The core command line names no architecture (DESIGN.md): plugins add their commands through `register_commands`.
def _defined_names(folder: Path) -> set[str]:
    """The names of the functions and classes defined at the top of the modules under `folder`, and of their methods
    (tests left out)."""
    found = set()
    for path in folder.rglob("*.py"):
        if "tests" in path.relative_to(folder).parts:
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found.add(node.name)
            if isinstance(node, ast.ClassDef):
                found |= {item.name for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return found


def _plugin_words(registered: Iterable[str]) -> tuple[set[str], set[str]]:
    """Returns (identifiers, names): the plugins' packages and their own function, class and method names (those the
    core does not define too), and the names the plugins are known by and register (models, formats, adapters)."""
    core = _defined_names(ROOT / "revzoo")
    functions = {name for folder in [*PLUGINS.values(), "plugins/example"] for name in _defined_names(ROOT / folder)}
    identifiers = {name for name in functions - core if not name.startswith("__")} | set(PLUGINS) | {"revzoo_example"}
    names = {*registered, *(folder.rpartition("/")[2] for folder in PLUGINS.values()), "dall-e"}
    return identifiers, names


def _named_plugin_parts(source: str, identifiers: set[str], names: set[str]) -> list[str]:
    """Returns the plugin identifiers `source` uses (as names, attributes, imports or a string such as getattr's) and
    the plugin and model names it mentions anywhere (as whole words, comments and help texts included)."""
    used = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            used.add(node.id)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.alias):
            used |= set(node.name.split("."))
        elif isinstance(node, ast.ImportFrom) and node.module:
            used |= set(node.module.split("."))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            used.add(node.value)
    text = source.lower()
    mentioned = [name for name in names if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)]
    return sorted(used & identifiers) + sorted(mentioned)


def test_the_command_line_names_no_plugin(builtin_plugins: list[str]) -> None:
    registered = [*builtin_plugins, *revzoo.list_formats(), *revzoo.registry.loaded_registry().adapters]
    identifiers, names = _plugin_words(registered)
    assert {"generate_images", "use_tokenizer", "revzoo_dalle"} <= identifiers and {"dalle-rev", "timm"} <= names
    named = _named_plugin_parts((ROOT / "revzoo" / "cli.py").read_text(), identifiers, names)
    assert not named, f"revzoo/cli.py names plugin parts {named}; add the command through register_commands"
    # what the check catches: lines of the command line as it was before `generate` moved into the dalle plugin
    before = 'callable(getattr(model, "generate_images", None))\nmodel.use_tokenizer(path)\nhelp="DALL-E (e.g. timm)"'
    assert _named_plugin_parts(before, identifiers, names) == ["generate_images", "use_tokenizer", "dall-e", "timm"]
