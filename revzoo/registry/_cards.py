"""Model cards: where a registered name's card is (installed or in the checkout) and its own section in it.

A card is a file beside the module of the plugin that registers it (`card="model_card.md"`), so a
wheel ships it with the plugin and a third-party plugin's card is its own. One card file may
describe several architectures (the vit plugin's: vit-tiny, vit-small, vit-base, timm); each
architecture has its own section there, written by `revzoo cards`, with its config, forms and
measured figures, and every name of the architecture (NAME, NAME-rev) resolves to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ._plugins import loaded_registry, plugin_manager
from ._registry import resolve

__all__ = ["CardSection", "card_file", "card_section", "split_front_matter"]

_FRONT_MATTER = re.compile(r"---\n(.*?\n)?---\n", re.S)


def card_location(card: str, plugin: str | None) -> Path | None:
    """Returns where the card `card` of `plugin` is or belongs: as given when absolute, else beside the plugin's
    own module (its package's folder); None when it is relative and the plugin has no file."""
    path = Path(card)
    if path.is_absolute():
        return path
    module = plugin_manager.get_plugin(plugin) if plugin is not None else None
    return Path(module.__file__).resolve().parent / path if getattr(module, "__file__", None) else None


def card_file(card: str | None, plugin: str | None = None) -> Path | None:
    """Returns the card registered as `card` (a path such as "model_card.md") by `plugin`, or None if it is nowhere."""
    path = card_location(card, plugin) if card else None
    return path if path is not None and path.is_file() else None


def split_front_matter(text: str) -> tuple[str, str]:
    """Returns a card's YAML front matter (without the `---` lines; "" if none) and the rest of it."""
    match = _FRONT_MATTER.match(text)
    return ("", text) if match is None else (match.group(1) or "", text[match.end():])


def _anchor(heading: str) -> str:
    """Returns the link anchor GitHub and the Hub give a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@dataclass(frozen=True)
class CardSection:
    """An architecture's own part of its card: the file, the heading's anchor, the section's Markdown."""

    path: Path
    anchor: str | None
    text: str

    @property
    def location(self) -> str:
        """Returns `path#anchor`, what `revzoo info` shows."""
        return f"{self.path}#{self.anchor}" if self.anchor else str(self.path)


def card_section(name: str) -> CardSection | None:
    """Returns the card section of a registered model name (NAME and NAME-rev share it), or None without a card.

    The section is the one whose `###` heading names the architecture first (as `revzoo cards`
    writes them); a card without one is returned whole, with no anchor.
    """
    spec = resolve(name)[0]
    path = card_file(spec.card, loaded_registry().owners.get(("arch", spec.name)))
    if path is None:
        return None
    body = split_front_matter(path.read_text(encoding="utf-8"))[1]
    start = re.search(rf"^### `{re.escape(spec.name)}`.*$", body, re.M)
    if start is None:
        return CardSection(path, None, body)
    end = re.compile(r"^(#{1,3} |<!-- revzoo:generated:end)", re.M).search(body, start.end())
    text = body[start.start(): end.start() if end else len(body)].rstrip() + "\n"
    return CardSection(path, _anchor(start.group(0).lstrip("#")), text)
