"""Checkpoints: safetensors files with revzoo's metadata, form conversion, shards, foreign formats,
and the Hugging Face Hub layout (save_pretrained, load of a directory, create("hf-hub:...")).

Reads never unpickle code; writes are atomic. May import the registry and the engine.
"""

from __future__ import annotations

from ._checkpoint import convert as convert
from ._checkpoint import export_checkpoint as export_checkpoint
from ._checkpoint import import_checkpoint as import_checkpoint
from ._checkpoint import load as load
from ._checkpoint import read_metadata as read_metadata
from ._checkpoint import save as save
from ._device import check_device as check_device
from ._foreign import read_foreign as read_foreign
from ._hub import create as create
from ._hub import load_from_hub as load_from_hub
from ._hub import save_pretrained as save_pretrained
from ._preserve import convert_preserving as convert_preserving
from ._probe import probe_forms as probe_forms
from ._training import load_training_state as load_training_state
from ._training import read_training_state as read_training_state
from ._training import save_training_state as save_training_state
from ._training import training_state_beside as training_state_beside
from ._write import atomic_write as atomic_write

__all__ = [
    "atomic_write",
    "check_device",
    "convert",
    "convert_preserving",
    "create",
    "export_checkpoint",
    "import_checkpoint",
    "load",
    "load_from_hub",
    "load_training_state",
    "probe_forms",
    "read_foreign",
    "read_metadata",
    "read_training_state",
    "save",
    "save_pretrained",
    "save_training_state",
    "training_state_beside",
]
