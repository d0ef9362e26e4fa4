"""Checkpoints: safetensors files with revzoo's metadata, form conversion, shards, and foreign formats.

Reads never unpickle code; writes are atomic. May import the registry and the engine.
"""

from __future__ import annotations

from ._checkpoint import convert as convert
from ._checkpoint import export_checkpoint as export_checkpoint
from ._checkpoint import import_checkpoint as import_checkpoint
from ._checkpoint import load as load
from ._checkpoint import probe_forms as probe_forms
from ._checkpoint import read_metadata as read_metadata
from ._checkpoint import save as save
from ._foreign import read_foreign as read_foreign
from ._preserve import convert_preserving as convert_preserving

__all__ = [
    "convert",
    "convert_preserving",
    "export_checkpoint",
    "import_checkpoint",
    "load",
    "probe_forms",
    "read_foreign",
    "read_metadata",
    "save",
]
