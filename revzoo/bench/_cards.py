"""`revzoo cards`: writes each plugin's model cards from the registry and the latest `revzoo bench` results, keeping
the hand-written prose.

A card is Hugging Face front matter (`library_name: revzoo`, the tags revzoo and reversible, and a license added
where missing; other values kept), the prose its authors wrote, and one section between GENERATED_START and
GENERATED_END that this tool rewrites on every run. The section keeps the measured figures it shows as JSON
comments, so a run without bench results (as in CI) carries them over: a card only goes stale when the registry
or newer results change it.

A card lives beside the module of the plugin that registers it (`card="model_card.md"`), so this writes into
the plugin's own folder: run it in the plugin's checkout (revzoo's own: plugins/NAME/revzoo_NAME/model_card.md).

Usage: revzoo cards [--check] [--bench bench-results/bench.json]
`--check` writes nothing and exits 1 when a card is missing or stale.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoints._write import atomic_write
from ..errors import ConfigError, RevzooError
from ..registry import ArchSpec, card_location, create, get_architecture, get_format, list_models, plugins_info
from ._bench import benchable_architectures

GENERATED_START = "<!-- revzoo:generated:start -->"
GENERATED_END = "<!-- revzoo:generated:end -->"
BENCH_COMMENT = re.compile(r"<!-- revzoo:bench (\{.*?\}) -->")
REQUIRED_TAGS = ("revzoo", "reversible")
MIB = 2**20
FORM_RULES = {
    "sequential": "`x = x + f(x)`, then `x = x + g(x)`",
    "reversible": "streams start as `(x, x)`: `y1 = x1 + f(x2)`, `y2 = x2 + g(y1)`; output `(y1 + y2) / 2`",
}
FORMS_CHANGE = (
    "All names of an architecture share the parameters and state-dict keys, but each form is a **different "
    "function** of them: `revzoo convert IN OUT --to sequential|reversible` (or `revzoo.set_form(model, form)`) "
    "switches the form without touching a tensor, and weights trained in one form need fine-tuning to do as well "
    "in the other. The reversible form trains with `execution=\"invert\"` by default: backward recomputes each "
    "block's inputs from its outputs, so block activations are not stored and activation memory does not grow "
    "with depth. `execution=\"autograd\"` is the same function, with the same gradients, through plain autograd "
    "(to compile, export or check it)."
)


@dataclass(frozen=True)
class Card:
    """One card file: the architectures it describes, its text now (None if missing) and the text it should have."""

    path: Path
    names: tuple[str, ...]
    current: str | None
    expected: str


def _json_cell(value: Any) -> str:
    return "`" + json.dumps(value).replace("|", "\\|") + "`"


def _yaml() -> Any:
    try:
        import yaml
    except ModuleNotFoundError as err:
        raise ConfigError("revzoo cards reads and writes YAML front matter: pip install pyyaml") from err
    return yaml


def _split(text: str) -> tuple[dict[str, Any], str]:
    """Returns the front matter as a dict and the rest of the card."""
    match = re.match(r"---\n(.*?\n)?---\n", text, re.S)
    if match is None:
        return {}, text
    return _yaml().safe_load(match.group(1) or "") or {}, text[match.end():]


def _front_matter(existing: dict[str, Any], license_id: str) -> str:
    """Returns the YAML block: library_name revzoo, the required tags, the distribution's licence; other values kept.

    The licence is the one of the distribution that ships the plugin, replacing whatever the
    card said; a card keeps its own only when that distribution states none.
    """
    tags = list(existing.get("tags") or [])
    tags += [tag for tag in REQUIRED_TAGS if tag not in tags]
    license_id = existing.get("license", license_id) if license_id == "unknown" else license_id
    data = {"library_name": "revzoo", "license": license_id}
    if "pipeline_tag" in existing:
        data["pipeline_tag"] = existing["pipeline_tag"]
    data["tags"] = tags
    data.update({key: value for key, value in existing.items() if key not in data})
    yaml = _yaml()

    class IndentedLists(yaml.SafeDumper):  # list items indented under their key, as the hand-written cards are
        def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
            return super().increase_indent(flow, False)

    body = yaml.dump(data, Dumper=IndentedLists, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{body}---\n"


def _license_of(plugin: str | None) -> str:
    """Returns the licence of the distribution that ships the plugin, as a Hugging Face id ("unknown" if none)."""
    for entry_point in importlib.metadata.entry_points(group="revzoo"):
        if entry_point.name == plugin and entry_point.dist is not None:
            metadata = entry_point.dist.metadata
            found = metadata.get("License-Expression") or metadata.get("License")
            if found and " " not in found.strip():
                return found.strip().lower()
    return "unknown"


def _plugins() -> dict[str, dict[str, Any]]:
    """Returns the plugin record of each architecture name, warning about plugins that failed to load."""
    owners = {}
    for record in plugins_info():
        if record["status"] != "ok":
            print(f"warning: plugin {record['name']!r} failed to load, its models get no card: {record['error']}",
                  file=sys.stderr)
        for name in record["models"]:
            owners[name] = record
    return owners


def _parameters(spec: ArchSpec) -> str:
    """Counts the default config's parameters on a meta-device build: no memory, no time."""
    try:
        with torch.device("meta"):
            model = create(spec.name)
    except (RevzooError, TypeError, ValueError) as err:
        return f"not counted: the default config does not build ({type(err).__name__}: {err})"
    parameters = list(model.parameters())
    total = sum(p.numel() for p in parameters)
    frozen = sum(p.numel() for p in parameters if not p.requires_grad)
    millions = f" ({total / 1e6:.3g}M)" if total >= 1e6 else ""
    detail = f"; {frozen:,} of them frozen" if frozen else ""
    return f"{total:,}{millions} in the default config{detail}; the same in every form"


def _names_and_forms(spec: ArchSpec) -> list[tuple[str, str]]:
    """Returns `(name, form)` as the registry names them: the bare name's form first, then `NAME-rev`."""
    base = "sequential" if "sequential" in spec.forms else spec.forms[0]
    names = [(spec.name, base)]
    if "reversible" in spec.forms and base != "reversible":
        names.append((f"{spec.name}-rev", "reversible"))
    return names


def _config(spec: ArchSpec) -> list[str]:
    lines = ["#### Default config", "", "| key | default |", "| --- | --- |"]
    lines += [f"| `{key}` | {_json_cell(value)} |" for key, value in spec.defaults.items()]
    if spec.subname_key:
        lines += ["", f"`revzoo.create(\"{spec.name}/SUB\")` sets `{spec.subname_key}` to `SUB`."]
    if spec.open_config:
        lines += ["", "Keyword arguments not listed here are passed on to the builder, which checks them."]
    return lines


def _forms(spec: ArchSpec) -> list[str]:
    lines = ["#### Forms", "", "| name | form | each block `(f, g)` computes |", "| --- | --- | --- |"]
    return lines + [f"| `{name}` | {form} | {FORM_RULES[form]} |" for name, form in _names_and_forms(spec)]


def _routes_and_layout(spec: ArchSpec) -> list[str]:
    lines = ["#### Routes and stream layout", ""]
    if spec.routes:
        lines += ["Keyword arguments of the stack reach the branches of every block as follows (any other keyword "
                  "is a `TypeError`):", "", "| keyword | reaches |", "| --- | --- |"]
        reaches = {"f": "`f`", "g": "`g`", "both": "`f` and `g`"}
        lines += [f"| `{key}` | {reaches.get(where, where)} |" for key, where in spec.routes.items()]
    else:
        lines.append("No routed keyword arguments: only the stream reaches `f` and `g`.")
    layout = spec.layout
    lines.append("")
    if layout is None:
        lines.append("Stream layout: the data is a single tensor, which is the reversible stream.")
    else:
        shape = f"a tuple `({', '.join(layout.fields)})`" if layout.fields else "a dict"
        lines.append(f"Stream layout: the data is {shape}; `{layout.stream}` is the reversible stream, every other "
                     "field is context, carried alongside unchanged and passed to `f` and `g` as a keyword (to one "
                     "branch only where a route above names it).")
    return lines


def _measured(spec: ArchSpec, entry: dict[str, Any] | None) -> list[str]:
    lines = ["#### Measured memory and speed", ""]
    if entry is None and spec.name in benchable_architectures():
        return lines + ["Not measured yet: run `revzoo bench`, then `revzoo cards`."]
    if entry is None:
        return lines + ["Not measured: `revzoo bench` measures the architectures whose spec gives `example_inputs`, "
                        "a `depth` option and both forms."]
    memory = entry["memory"]
    kinds = list(memory)
    depths = sorted({int(depth) for by_depth in memory.values() for depth in by_depth})
    lines += [
        f"<!-- revzoo:bench {json.dumps(entry, separators=(',', ':'))} -->",
        f"Measured by `{entry['command']}` on the plugin's example inputs, with the config overrides "
        f"{_json_cell(entry['small'])}: peak memory of one training step above the built model, each configuration "
        "in its own process, in MiB; step time alternating the configurations in one process, relative to the "
        "sequential form (median of rounds). `checkpoint` is the sequential form with `torch.utils.checkpoint` "
        "around each branch.",
        "",
        "| depth | " + " | ".join(kinds) + " | reversible / sequential |",
        "| ---: |" + " ---: |" * (len(kinds) + 1),
    ]
    for depth in depths:
        peaks = {kind: memory[kind].get(str(depth)) for kind in kinds}
        cells = ["-" if peak is None else f"{peak / MIB:.1f}" for peak in peaks.values()]
        reversible, sequential = peaks.get("reversible"), peaks.get("sequential")
        cells.append(f"{reversible / sequential:.2f}" if reversible and sequential else "-")
        lines.append(f"| {depth} | " + " | ".join(cells) + " |")
    times = ", ".join(f"{kind} {ratio:.2f}" for kind, ratio in entry["time"].items() if kind != "sequential")
    return lines + ["", f"Training-step time at depth {entry['time_depth']}, relative to sequential: {times}."]


def _usage(spec: ArchSpec, plugin: dict[str, Any] | None) -> list[str]:
    names = _names_and_forms(spec)
    name, form = names[-1]
    created = f"{name}/SUB" if spec.subname_key else name
    other = "sequential" if form == "reversible" else "reversible"
    lines = [
        "#### Create, convert, import",
        "",
        "```python",
        "import revzoo",
        f"model = revzoo.create(\"{created}\")  # {form} form; keyword arguments override the default config",
        f"revzoo.save(model, \"{name}.safetensors\")  # weights, architecture, form and config",
        f"model = revzoo.load(\"{name}.safetensors\")",
        "```",
        "",
        "```",
    ]
    if len(names) > 1:
        lines.append(f"revzoo convert {name}.safetensors {spec.name}.safetensors --to {other}")
    formats = [fmt for fmt in map(get_format, (plugin or {}).get("formats", []))
               if not fmt.architectures or spec.name in fmt.architectures]
    for fmt in formats:
        lines.append(f"revzoo import {fmt.name} IN {spec.name}.safetensors")
        if fmt.write is not None:
            lines.append(f"revzoo export {fmt.name} {spec.name}.safetensors OUT")
    lines.append("```")
    if not formats:
        lines += ["", "No foreign checkpoint format comes with its plugin: revzoo `.safetensors` files only."]
    return lines


def _formats(plugins: list[dict[str, Any]]) -> list[str]:
    """Returns the table of the foreign checkpoint formats the card's plugins register (none: no table)."""
    rows = [(plugin["name"], get_format(name)) for plugin in plugins for name in plugin["formats"]]
    if not rows:
        return []
    lines = ["### Checkpoint formats", "", "`revzoo import FORMAT IN OUT` reads them without pickle; `revzoo export` "
             "writes those with export support.", "", "| format | plugin | export | description |",
             "| --- | --- | --- | --- |"]
    return lines + [f"| `{fmt.name}` | `{plugin}` | {'yes' if fmt.write else 'no'} | {fmt.description} |"
                    for plugin, fmt in rows] + [""]


def _architecture(spec: ArchSpec, plugin: dict[str, Any] | None, entry: dict[str, Any] | None) -> list[str]:
    heading = " and ".join(f"`{name}`" for name, _ in _names_and_forms(spec))
    facts = [f"- Description: {spec.description}",
             f"- Plugin: `{plugin['name']}`" if plugin else "- Plugin: unknown",
             f"- Parameters: {_parameters(spec)}"]
    if spec.aliases:
        facts.append("- Aliases: " + ", ".join(f"`{alias}`" for alias in spec.aliases))
    sections = [_config(spec), _forms(spec), _routes_and_layout(spec), _measured(spec, entry), _usage(spec, plugin)]
    return [f"### {heading}", "", *facts, *(line for section in sections for line in ["", *section])]


def _generated(specs: list[ArchSpec], plugins: dict[str, dict[str, Any]],
               entries: dict[str, dict[str, Any]], prose: str) -> str:
    lines = [
        GENERATED_START,
        "## From the registry",
        "",
        "_Written by `revzoo cards` from the registry and the latest `revzoo bench` results, and "
        "rewritten on every run: edit the prose outside this section._",
    ]
    for spec in specs:
        lines += ["", *_architecture(spec, plugins.get(spec.name), entries.get(spec.name))]
    owners = list({plugins[spec.name]["name"]: plugins[spec.name] for spec in specs if spec.name in plugins}.values())
    lines += ["", *_formats(owners), "### What changes between the forms", "", FORMS_CHANGE, ""]
    if re.search(r"^## Limitations\s*$", prose, re.M):
        lines.append("Limitations: see [Limitations](#limitations).")
    else:
        lines.append("Limitations: none written yet; add a `## Limitations` section outside this generated part.")
    return "\n".join([*lines, GENERATED_END]) + "\n"


def _locate(body: str) -> tuple[str, str, str]:
    """Returns the prose before the generated section, the section, and the prose after it.

    A card without one gets it before its hand-written `## Limitations`, or at the end.
    """
    before, _, rest = body.partition(GENERATED_START)
    generated, found, after = rest.partition(GENERATED_END)
    if not found:
        match = re.search(r"^## Limitations\s*$", body, re.M)
        split = match.start() if match else len(body)
        before, generated, after = body[:split], "", body[split:]
    return before.rstrip("\n") + "\n\n", generated, after.lstrip("\n")


def _entries(old_generated: str, specs: list[ArchSpec], results: dict[str, Any] | None,
             command: str) -> dict[str, dict[str, Any]]:
    """Returns the bench figures to show per architecture: the new results, else those the card already shows."""
    entries = {data["architecture"]: data for data in map(json.loads, BENCH_COMMENT.findall(old_generated))}
    for spec in specs:
        fresh = (results or {}).get("architectures", {}).get(spec.name)
        if fresh is not None:
            entries[spec.name] = {"architecture": spec.name, "command": command, **fresh}
    return entries


def _card_text(current: str | None, specs: list[ArchSpec], plugins: dict[str, dict[str, Any]],
               results: dict[str, Any] | None, command: str) -> str:
    """Returns the card with fresh front matter and generated section, the prose untouched."""
    front, body = _split(current) if current is not None else ({}, f"\n# `{specs[0].name}`: {specs[0].description}\n")
    before, old_generated, after = _locate(body)
    entries = _entries(old_generated, specs, results, command)
    generated = _generated(specs, plugins, entries, before + after)
    license_id = _license_of(plugins.get(specs[0].name, {}).get("name"))
    return _front_matter(front, license_id) + before + generated + (after and "\n" + after)


def _read_bench(path: Path | None) -> tuple[dict[str, Any] | None, str]:
    """Returns the bench results (None without a file) and the command that wrote them, as bench.json records it."""
    if path is None or not path.is_file():
        return None, "revzoo bench"
    results = json.loads(path.read_text())
    return results, results.get("provenance", {}).get("command", "revzoo bench")


def _card_path(spec: ArchSpec, plugin: dict[str, Any] | None) -> Path | None:
    """Returns where the card goes: spec.card beside the plugin's module, else NAME.md there (None: no folder)."""
    folder = card_location(".", plugin and plugin["name"])
    if folder is None:
        print(f"warning: {spec.name}: its plugin has no folder of its own; it gets no card", file=sys.stderr)
        return None
    card = Path(spec.card) if spec.card else None
    if card is not None and card.suffix == ".md":
        return card if card.is_absolute() else folder / card
    print(f"warning: {spec.name}: spec.card is {spec.card!r}; the card is {spec.name}.md beside its plugin, "
          "the plugin should say so", file=sys.stderr)
    return folder / f"{spec.name}.md"


def plan_cards(bench: Path | None = None) -> list[Card]:
    """Returns every card the registered architectures need, with its current and expected text."""
    results, command = _read_bench(bench)
    plugins = _plugins()
    grouped: dict[Path, list[ArchSpec]] = {}
    for name in list_models(exclude="*-rev"):
        spec = get_architecture(name)
        path = _card_path(spec, plugins.get(spec.name))
        if path is not None:
            grouped.setdefault(path.resolve(), []).append(spec)
    cards = []
    for path, specs in grouped.items():
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        expected = _card_text(current, specs, plugins, results, command)
        cards.append(Card(path, tuple(spec.name for spec in specs), current, expected))
    return cards


def _shown(path: Path) -> str:
    """Returns the path relative to the working directory when it is inside it."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Writes (or with --check, checks) every card; returns the exit code."""
    parser = argparse.ArgumentParser(prog="revzoo cards", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a card is missing or stale")
    parser.add_argument("--bench", type=Path, default=Path("bench-results") / "bench.json",
                        help="results of `revzoo bench` (default: %(default)s); without them, figures are kept")
    args = parser.parse_args(argv)
    bad = 0
    for card in plan_cards(args.bench):
        where, names = _shown(card.path), ", ".join(card.names)
        if card.current == card.expected:
            print(f"up to date  {where} ({names})")
        elif args.check:
            bad += 1
            print(f"{'missing' if card.current is None else 'stale':<10}  {where} ({names})")
        else:
            card.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(card.path, lambda temporary, text=card.expected: temporary.write_text(text, encoding="utf-8"))
            print(f"{'created' if card.current is None else 'wrote':<10}  {where} ({names})")
    if bad:
        print(f"{bad} card(s) to update: run `revzoo cards`", file=sys.stderr)
    return 1 if bad else 0
