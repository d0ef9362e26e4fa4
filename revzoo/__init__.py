"""revzoo: a model zoo of reversible networks for PyTorch.

A small engine runs pairs of residual functions `(f, g)` as a reversible coupling, whose
training memory does not grow with depth, or as the plain sequential stack; architectures
come from pluggy plugins; weights live in safetensors files that convert between forms.

Public names are imported on first use (PEP 562), so `import revzoo` and `revzoo --help`
do not import torch. To add one: a line in `_EXPORTS`, an import under TYPE_CHECKING (for
type checkers and editors) and its place in `__all__`; tests/test_lazy_init.py checks all three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import attach
from ._version import __version__ as __version__

# public name -> the module (relative to revzoo) that defines it
_EXPORTS = {
    "atomic_write": ".checkpoints",
    "check_device": ".checkpoints",
    "convert": ".checkpoints",
    "create": ".checkpoints",  # the registry's create, taken once checkpoints has given it the "hf-hub:" resolver
    "export_checkpoint": ".checkpoints",
    "import_checkpoint": ".checkpoints",
    "load": ".checkpoints",
    "load_training_state": ".checkpoints",
    "read_foreign": ".checkpoints",
    "read_metadata": ".checkpoints",
    "read_training_state": ".checkpoints",
    "save": ".checkpoints",
    "save_training_state": ".checkpoints",
    "save_pretrained": ".checkpoints",
    "BlockReport": ".engine",
    "BottleneckAdapter": ".engine",
    "Coupling": ".engine",
    "ReversibilityReport": ".engine",
    "ReversibleSequence": ".engine",
    "StreamLayout": ".engine",
    "ZooModel": ".engine",
    "check_reversible": ".engine",
    "get_execution": ".engine",
    "get_form": ".engine",
    "set_execution": ".engine",
    "set_form": ".engine",
    "CheckpointError": ".errors",
    "CheckpointWarning": ".errors",
    "ConfigError": ".errors",
    "PluginError": ".errors",
    "RevzooError": ".errors",
    "UnknownAdapterError": ".errors",
    "UnknownFormatError": ".errors",
    "UnknownModelError": ".errors",
    "UnknownOptionError": ".errors",
    "Adapter": ".registry",
    "ArchSpec": ".registry",
    "CheckpointFormat": ".registry",
    "Command": ".registry",
    "ImportedCheckpoint": ".registry",
    "TrainingState": ".registry",
    "from_timm": ".registry",
    "get_adapter": ".registry",
    "get_architecture": ".registry",
    "get_format": ".registry",
    "hookimpl": ".registry",
    "list_formats": ".registry",
    "list_models": ".registry",
    "plugins_info": ".registry",
    "register_plugin": ".registry",
    "reversibilize": ".registry",
    "to_timm": ".registry",
    "unregister_plugin": ".registry",
    "unwrap": ".registry",
    "wrap": ".registry",
}

__getattr__, __dir__ = attach(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .checkpoints import atomic_write as atomic_write
    from .checkpoints import check_device as check_device
    from .checkpoints import convert as convert
    from .checkpoints import create as create
    from .checkpoints import export_checkpoint as export_checkpoint
    from .checkpoints import import_checkpoint as import_checkpoint
    from .checkpoints import load as load
    from .checkpoints import load_training_state as load_training_state
    from .checkpoints import read_foreign as read_foreign
    from .checkpoints import read_metadata as read_metadata
    from .checkpoints import read_training_state as read_training_state
    from .checkpoints import save as save
    from .checkpoints import save_pretrained as save_pretrained
    from .checkpoints import save_training_state as save_training_state
    from .engine import BlockReport as BlockReport
    from .engine import BottleneckAdapter as BottleneckAdapter
    from .engine import Coupling as Coupling
    from .engine import ReversibilityReport as ReversibilityReport
    from .engine import ReversibleSequence as ReversibleSequence
    from .engine import StreamLayout as StreamLayout
    from .engine import ZooModel as ZooModel
    from .engine import check_reversible as check_reversible
    from .engine import get_execution as get_execution
    from .engine import get_form as get_form
    from .engine import set_execution as set_execution
    from .engine import set_form as set_form
    from .errors import CheckpointError as CheckpointError
    from .errors import CheckpointWarning as CheckpointWarning
    from .errors import ConfigError as ConfigError
    from .errors import PluginError as PluginError
    from .errors import RevzooError as RevzooError
    from .errors import UnknownAdapterError as UnknownAdapterError
    from .errors import UnknownFormatError as UnknownFormatError
    from .errors import UnknownModelError as UnknownModelError
    from .errors import UnknownOptionError as UnknownOptionError
    from .registry import Adapter as Adapter
    from .registry import ArchSpec as ArchSpec
    from .registry import CheckpointFormat as CheckpointFormat
    from .registry import Command as Command
    from .registry import ImportedCheckpoint as ImportedCheckpoint
    from .registry import TrainingState as TrainingState
    from .registry import from_timm as from_timm
    from .registry import get_adapter as get_adapter
    from .registry import get_architecture as get_architecture
    from .registry import get_format as get_format
    from .registry import hookimpl as hookimpl
    from .registry import list_formats as list_formats
    from .registry import list_models as list_models
    from .registry import plugins_info as plugins_info
    from .registry import register_plugin as register_plugin
    from .registry import reversibilize as reversibilize
    from .registry import to_timm as to_timm
    from .registry import unregister_plugin as unregister_plugin
    from .registry import unwrap as unwrap
    from .registry import wrap as wrap

__all__ = [
    "Adapter",
    "ArchSpec",
    "BlockReport",
    "BottleneckAdapter",
    "CheckpointError",
    "CheckpointFormat",
    "CheckpointWarning",
    "Command",
    "ConfigError",
    "Coupling",
    "ImportedCheckpoint",
    "PluginError",
    "ReversibilityReport",
    "ReversibleSequence",
    "RevzooError",
    "StreamLayout",
    "TrainingState",
    "UnknownAdapterError",
    "UnknownFormatError",
    "UnknownModelError",
    "UnknownOptionError",
    "ZooModel",
    "__version__",
    "atomic_write",
    "check_device",
    "check_reversible",
    "convert",
    "create",
    "export_checkpoint",
    "from_timm",
    "get_adapter",
    "get_architecture",
    "get_execution",
    "get_form",
    "get_format",
    "hookimpl",
    "import_checkpoint",
    "list_formats",
    "list_models",
    "load",
    "load_training_state",
    "plugins_info",
    "read_foreign",
    "read_metadata",
    "read_training_state",
    "register_plugin",
    "reversibilize",
    "save",
    "save_pretrained",
    "save_training_state",
    "set_execution",
    "set_form",
    "to_timm",
    "unregister_plugin",
    "unwrap",
    "wrap",
]
