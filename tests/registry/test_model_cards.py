"""Model cards: every registered model has one, with the required front matter and generated fields,
and `revzoo cards` keeps hand-written prose, carries measured figures over and detects stale cards."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType

import pytest
import yaml

import revzoo
from helpers import tiny_spec
from revzoo.bench import _cards as make_cards
from revzoo.cli import main

ARCHITECTURE_FIELDS = ("- Description:", "- Plugin:", "- Parameters:", "#### Default config", "#### Forms",
                       "#### Routes and stream layout", "Stream layout:", "#### Measured memory and speed",
                       "#### Create, convert, import")
CARD_FIELDS = ("### What changes between the forms", "Limitations:")


def parts(text: str) -> tuple[dict, str]:
    """Returns the card's front matter and its generated section."""
    match = re.match(r"---\n(.*?)---\n", text, re.S)
    assert match, "no front matter"
    start, end = text.index(make_cards.GENERATED_START), text.index(make_cards.GENERATED_END)
    return yaml.safe_load(match.group(1)), text[start:end]


def architecture_section(generated: str, name: str) -> str:
    """Returns the generated subsection of one architecture (up to the next ### heading)."""
    match = re.search(rf"^### `{re.escape(name)}`.*?(?=^### |\Z)", generated, re.S | re.M)
    assert match, f"no generated section for {name!r}"
    return match.group(0)


def test_every_registered_model_has_a_card_with_the_fields(builtin_plugins: list[str]) -> None:
    for name in builtin_plugins:
        spec = revzoo.get_architecture(name)
        assert spec.card, f"{name}: the spec names no card"
        front, generated = parts(revzoo.registry.card_section(name).path.read_text())
        assert front["library_name"] == "revzoo" and front["license"], name
        assert {"revzoo", "reversible"} <= set(front["tags"]), name
        section = architecture_section(generated, spec.name)
        for field in ARCHITECTURE_FIELDS:
            assert field in section, f"{spec.card}: {spec.name}: no {field!r}"
        assert f"`{name}`" in section
        for field in CARD_FIELDS:
            assert field in generated, f"{spec.card}: no {field!r}"


def test_a_section_lists_only_the_formats_that_hold_its_architecture(builtin_plugins: list[str]) -> None:
    section = architecture_section(parts(revzoo.registry.card_section("revvit-small").path.read_text())[1],
                                   "revvit-small")
    assert "revzoo import slowfast-revvit IN revvit-small.safetensors" in section
    assert "revzoo import timm" not in section  # timm's ViT state dicts are not RevViT's
    section = architecture_section(parts(revzoo.registry.card_section("vit-small").path.read_text())[1], "vit-small")
    assert "revzoo import timm IN vit-small.safetensors" in section and "revvit" not in section
    with pytest.raises(revzoo.PluginError, match="architectures must be a tuple"):
        revzoo.CheckpointFormat(name="odd", description="", read=lambda obj: None, architectures="vit-small")


def test_info_shows_the_card_section_of_each_name(builtin_plugins: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    for name in builtin_plugins:
        assert main(["info", name]) == 0
        spec = revzoo.get_architecture(name)
        card = revzoo.registry.card_section(name).path  # beside the plugin's module: absolute
        match = re.search(rf"^card\s+{re.escape(str(card))}#(\S+)$", capsys.readouterr().out, re.M)
        assert match, name
        heading = re.search(rf"^### (`{re.escape(spec.name)}`.*)$", card.read_text(), re.M).group(1)
        assert match.group(1) == re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"), name
        section = revzoo.registry.card_section(name)
        assert f"`{name}`" in section.text and "#### Default config" in section.text, name
        assert section.text.count("### `") == 1, f"{name}: the section runs into another architecture's"


PROSE = """---
license: mit
tags:
  - tiny
---

# A tiny stack

Hand-written introduction.

## Limitations

- Only for tests.
"""


def bench_results(path: Path) -> Path:
    """Writes bench.json as `revzoo bench` does, with figures for "tiny" and the command that produced them."""
    memory = {kind: {"2": mib * 2**20, "4": 2 * mib * 2**20} for kind, mib in (("sequential", 3), ("reversible", 1))}
    results = {"stack": {}, "architectures": {"tiny": {"memory": memory, "time": {"sequential": 1.0, "reversible": 1.5},
                                                       "time_depth": 4, "small": {"dim": 8}}},
               "provenance": {"command": "revzoo bench --quick"}}
    path.mkdir()
    (path / "bench.json").write_text(json.dumps(results))
    return path / "bench.json"


def _module_plugin(folder: Path, card: str, *others: revzoo.ArchSpec) -> ModuleType:
    """A third-party plugin module living in `folder`, registering "tiny" with `card` (and `others`)."""
    module = ModuleType("thirdparty_cards")
    module.__file__ = str(folder / "thirdparty_cards.py")

    @revzoo.hookimpl
    def register_architectures(register):
        for spec in (tiny_spec(card=card), *others):
            register(spec)

    module.register_architectures = register_architectures
    return module


def test_make_cards_merges_prose_and_checks(tmp_path: Path, register_plugin) -> None:
    register_plugin(_module_plugin(tmp_path, "model_cards/tiny.md", tiny_spec("other")), name="tiny-plugin")
    card = tmp_path / "model_cards" / "tiny.md"
    card.parent.mkdir()
    card.write_text(PROSE)

    def plan(bench: Path | None = None) -> dict[str, str]:
        planned = make_cards.plan_cards(bench)
        for each in planned:
            each.path.write_text(each.expected)
        return {each.path.name: each.expected for each in planned}

    written = plan(bench_results(tmp_path / "bench-results"))
    assert set(written) == {"tiny.md", "other.md"}  # "other" names no card: it gets other.md beside its plugin
    text = written["tiny.md"]
    front, generated = parts(text)
    assert front == {"library_name": "revzoo", "license": "mit", "tags": ["tiny", "revzoo", "reversible"]}
    assert "Hand-written introduction." in text and text.endswith("## Limitations\n\n- Only for tests.\n")
    assert text.index(make_cards.GENERATED_END) < text.index("## Limitations")
    assert "Measured by `revzoo bench --quick`" in generated and "| 4 | 6.0 | 2.0 | 0.33 |" in generated
    assert "reversible 1.50" in generated and "- Parameters: 80 in the default config" in generated
    assert "Limitations: see [Limitations](#limitations)." in generated
    assert "Limitations: none written yet" in written["other.md"]

    assert plan() == written  # without bench results, the figures are kept: nothing changes
    assert all(each.current == each.expected for each in make_cards.plan_cards(None))
    card.write_text(text.replace("| `dim` | `4` |", "| `dim` | `5` |").replace("- Only", "- Still only"))
    (stale,) = [each for each in make_cards.plan_cards(None) if each.current != each.expected]
    assert stale.path == card and "- Still only for tests." in stale.expected and "| `dim` | `4` |" in stale.expected


def test_check_fails_on_a_missing_card_until_written(tmp_path: Path, register_plugin, monkeypatch, capsys) -> None:
    register_plugin(_module_plugin(tmp_path, "model_cards/tiny.md"), name="tiny-plugin")
    monkeypatch.chdir(tmp_path)
    assert main(["cards", "--check"]) == 1 and not (tmp_path / "model_cards" / "tiny.md").exists()
    assert "missing     model_cards/tiny.md (tiny)" in capsys.readouterr().out
    assert main(["cards"]) == 0 and "created     model_cards/tiny.md (tiny)" in capsys.readouterr().out
    assert main(["cards", "--check"]) == 0 and "up to date  model_cards/tiny.md" in capsys.readouterr().out


def test_a_third_party_cards_relative_path_is_its_own_never_revzoos(tmp_path: Path, register_plugin) -> None:
    register_plugin(_module_plugin(tmp_path, "model_card.md"), name="thirdparty-cards")  # the built-ins have one
    assert revzoo.registry.card_section("tiny") is None  # it once pointed into one of revzoo's own cards
    revzoo.unregister_plugin("thirdparty-cards")
    (tmp_path / "model_card.md").write_text("# Its own card\n")
    register_plugin(_module_plugin(tmp_path, "model_card.md"), name="thirdparty-cards")
    section = revzoo.registry.card_section("tiny")
    assert section is not None and section.path == tmp_path / "model_card.md"
