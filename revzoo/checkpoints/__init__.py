"""Checkpoints: safetensors files with revzoo's metadata, form conversion, shards, foreign formats,
and the Hugging Face Hub layout (save_pretrained, load of a directory, create("hf-hub:...")).

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
from ._hub import create as create
from ._hub import load_from_hub as load_from_hub
from ._hub import save_pretrained as save_pretrained
from ._preserve import convert_preserving as convert_preserving

__all__ = [
    "convert",
    "convert_preserving",
    "create",
    "export_checkpoint",
    "import_checkpoint",
    "load",
    "load_from_hub",
    "probe_forms",
    "read_foreign",
    "read_metadata",
    "save",
    "save_pretrained",
]
