"""revzoo: a model zoo of reversible networks for PyTorch.

A small engine runs pairs of residual functions `(f, g)` as a reversible coupling, whose
training memory does not grow with depth, or as the plain sequential stack; architectures
come from pluggy plugins; weights live in safetensors files that convert between forms.
"""

from __future__ import annotations

from ._adapt import from_timm as from_timm
from ._adapt import get_adapter as get_adapter
from ._adapt import to_timm as to_timm
from ._adapt import unwrap as unwrap
from ._adapt import wrap as wrap
from ._check import BlockReport as BlockReport
from ._check import ReversibilityReport as ReversibilityReport
from ._check import check_reversible as check_reversible
from ._checkpoint import convert as convert
from ._checkpoint import export_checkpoint as export_checkpoint
from ._checkpoint import import_checkpoint as import_checkpoint
from ._checkpoint import load as load
from ._checkpoint import read_metadata as read_metadata
from ._checkpoint import save as save
from ._io import read_foreign as read_foreign
from ._layout import StreamLayout as StreamLayout
from ._plugins import register_plugin as register_plugin
from ._plugins import unregister_plugin as unregister_plugin
from ._registry import create as create
from ._registry import get_architecture as get_architecture
from ._registry import get_format as get_format
from ._registry import list_formats as list_formats
from ._registry import list_models as list_models
from ._registry import plugins_info as plugins_info
from ._sequence import ReversibleSequence as ReversibleSequence
from ._sequence import get_form as get_form
from ._sequence import set_execution as set_execution
from ._sequence import set_form as set_form
from ._spec import Adapter as Adapter
from ._spec import ArchSpec as ArchSpec
from ._spec import CheckpointFormat as CheckpointFormat
from ._spec import ImportedCheckpoint as ImportedCheckpoint
from ._version import __version__ as __version__
from .errors import CheckpointError as CheckpointError
from .errors import ConfigError as ConfigError
from .errors import PluginError as PluginError
from .errors import RevzooError as RevzooError
from .errors import UnknownAdapterError as UnknownAdapterError
from .errors import UnknownFormatError as UnknownFormatError
from .errors import UnknownModelError as UnknownModelError
from .hookspecs import hookimpl as hookimpl

__all__ = [
    "Adapter",
    "ArchSpec",
    "BlockReport",
    "CheckpointError",
    "CheckpointFormat",
    "ConfigError",
    "ImportedCheckpoint",
    "PluginError",
    "ReversibilityReport",
    "ReversibleSequence",
    "RevzooError",
    "StreamLayout",
    "UnknownAdapterError",
    "UnknownFormatError",
    "UnknownModelError",
    "__version__",
    "check_reversible",
    "convert",
    "create",
    "export_checkpoint",
    "from_timm",
    "get_adapter",
    "get_architecture",
    "get_form",
    "get_format",
    "hookimpl",
    "import_checkpoint",
    "list_formats",
    "list_models",
    "load",
    "plugins_info",
    "read_foreign",
    "read_metadata",
    "register_plugin",
    "save",
    "set_execution",
    "set_form",
    "to_timm",
    "unregister_plugin",
    "unwrap",
    "wrap",
]
