"""revzoo's exceptions: each is a RevzooError and the builtin a caller would expect."""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "ConfigError",
    "PluginError",
    "PluginWarning",
    "RevzooError",
    "UnknownAdapterError",
    "UnknownFormatError",
    "UnknownModelError",
    "UnknownOptionError",
]


class RevzooError(Exception):
    """Base class of every error revzoo raises on bad input; the CLI prints these as one line."""


class UnknownModelError(RevzooError, KeyError):
    """A model name that no plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class UnknownFormatError(RevzooError, KeyError):
    """A foreign checkpoint format that no plugin registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownAdapterError(RevzooError, KeyError):
    """A model adapter (e.g. "timm") that no plugin registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(RevzooError, ValueError):
    """Hyperparameters that do not describe a valid model."""


class UnknownOptionError(ConfigError, TypeError):
    """An option the architecture does not take: a TypeError, as for a function called with an unknown keyword."""


class PluginError(RevzooError, ValueError):
    """A plugin registered something invalid or conflicting."""


class PluginWarning(UserWarning):
    """A plugin that failed to load or register, or a name it registers that another plugin provides.

    The command line prints these as one `revzoo: warning:` line; filter them with
    `warnings.filterwarnings("ignore", category=revzoo.errors.PluginWarning)`.
    """


class CheckpointError(RevzooError, ValueError):
    """A checkpoint that is missing, corrupt, unsafe, or does not fit the model."""


class CheckpointWarning(UserWarning):
    """Something a checkpoint operation left out on purpose (a training state a format has no place for).

    The command line prints these as one `revzoo: warning:` line.
    """
