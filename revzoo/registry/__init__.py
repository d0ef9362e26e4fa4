"""The registry: architectures, checkpoint formats and adapters that plugins register through pluggy.

Hook specifications, the validated specs plugins register, the plugin manager that loads
entry points one by one, and `create`/`list_models` over what they registered (with the
name prefixes, such as the checkpoints' `hf-hub:`, that higher layers give `create` a
resolver for). May import the engine, never the checkpoints or the benchmark.

Names are imported on first use (PEP 562): `revzoo.hookimpl`, which plugins use at import
time, costs only pluggy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach
from .hookspecs import hookimpl as hookimpl

_EXPORTS = {
    "from_timm": "._adapt",
    "get_adapter": "._adapt",
    "to_timm": "._adapt",
    "unwrap": "._adapt",
    "wrap": "._adapt",
    "loaded_registry": "._plugins",
    "register_plugin": "._plugins",
    "CardSection": "._cards",
    "card_file": "._cards",
    "card_location": "._cards",
    "card_section": "._cards",
    "split_front_matter": "._cards",
    "unregister_plugin": "._plugins",
    "preserving_coupling": "._preserve",
    "reversibilize": "._preserve",
    "create": "._registry",
    "default_form": "._registry",
    "get_architecture": "._registry",
    "get_format": "._registry",
    "list_formats": "._registry",
    "list_models": "._registry",
    "plugins_info": "._registry",
    "provenance": "._registry",
    "register_resolver": "._registry",
    "resolve": "._registry",
    "Adapter": "._spec",
    "ArchSpec": "._spec",
    "CheckpointFormat": "._spec",
    "Command": "._spec",
    "ImportedCheckpoint": "._spec",
    "TrainingState": "._training",
}

__getattr__, __dir__ = attach(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._adapt import from_timm as from_timm
    from ._adapt import get_adapter as get_adapter
    from ._adapt import to_timm as to_timm
    from ._adapt import unwrap as unwrap
    from ._adapt import wrap as wrap
    from ._cards import CardSection as CardSection
    from ._cards import card_file as card_file
    from ._cards import card_location as card_location
    from ._cards import card_section as card_section
    from ._cards import split_front_matter as split_front_matter
    from ._plugins import loaded_registry as loaded_registry
    from ._plugins import register_plugin as register_plugin
    from ._plugins import unregister_plugin as unregister_plugin
    from ._preserve import preserving_coupling as preserving_coupling
    from ._preserve import reversibilize as reversibilize
    from ._registry import create as create
    from ._registry import default_form as default_form
    from ._registry import get_architecture as get_architecture
    from ._registry import get_format as get_format
    from ._registry import list_formats as list_formats
    from ._registry import list_models as list_models
    from ._registry import plugins_info as plugins_info
    from ._registry import provenance as provenance
    from ._registry import register_resolver as register_resolver
    from ._registry import resolve as resolve
    from ._spec import Adapter as Adapter
    from ._spec import ArchSpec as ArchSpec
    from ._spec import CheckpointFormat as CheckpointFormat
    from ._spec import Command as Command
    from ._spec import ImportedCheckpoint as ImportedCheckpoint
    from ._training import TrainingState as TrainingState

__all__ = [
    "Adapter",
    "ArchSpec",
    "CardSection",
    "CheckpointFormat",
    "Command",
    "ImportedCheckpoint",
    "TrainingState",
    "card_file",
    "card_location",
    "card_section",
    "create",
    "default_form",
    "from_timm",
    "get_adapter",
    "get_architecture",
    "get_format",
    "hookimpl",
    "list_formats",
    "list_models",
    "loaded_registry",
    "plugins_info",
    "preserving_coupling",
    "provenance",
    "register_plugin",
    "register_resolver",
    "resolve",
    "reversibilize",
    "split_front_matter",
    "to_timm",
    "unregister_plugin",
    "unwrap",
    "wrap",
]
