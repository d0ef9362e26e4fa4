"""The package version and the checkpoint layout version it writes."""

__version__ = "0.1.0"
LAYOUT_VERSION = 1  # bump when revzoo's state-dict keys or metadata change incompatibly
