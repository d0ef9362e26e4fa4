"""The command line for scripts: --version, list --json, info --json, and names that cannot be created alone."""

from __future__ import annotations

import json

import pytest

import revzoo
from revzoo.cli import main


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"revzoo {revzoo.__version__}\n"


def test_list_json_has_one_record_per_name(builtin_plugins, capsys) -> None:
    code, out = run(capsys, "list", "vit-tiny*", "--json")
    assert code == 0
    assert json.loads(out) == [
        {"name": "vit-tiny", "architecture": "vit-tiny", "form": "sequential",
         "description": revzoo.get_architecture("vit-tiny").description},
        {"name": "vit-tiny-rev", "architecture": "vit-tiny", "form": "reversible",
         "description": revzoo.get_architecture("vit-tiny").description},
    ]


def test_list_shows_a_name_that_needs_a_sub_name_with_it(builtin_plugins, capsys) -> None:
    with pytest.raises(revzoo.ConfigError):
        revzoo.create("timm")  # what the list must not offer as a name
    _, out = run(capsys, "list")
    names = [line.split()[0] for line in out.splitlines()]
    assert "timm" not in names and "timm-rev" not in names
    assert "timm/<model_name>" in names and "timm-rev/<model_name>" in names
    assert "alone cannot be created; it needs a model_name" in out
    records = {record["name"]: record for record in json.loads(run(capsys, "list", "timm*", "--json")[1])}
    assert records["timm-rev/<model_name>"]["form"] == "reversible" and "hint" in records["timm/<model_name>"]


def test_info_json(builtin_plugins, capsys) -> None:
    code, out = run(capsys, "info", "timm-rev/vit_base_patch16_224", "--json")
    info = json.loads(out)
    assert code == 0
    assert (info["name"], info["form of this name"], info["subname"]) == (
        "timm", "reversible", {"model_name": "vit_base_patch16_224"})
    assert info["card"].endswith("revzoo_vit/model_card.md#timm-and-timm-rev")
