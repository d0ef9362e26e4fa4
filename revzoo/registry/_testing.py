"""A registry of only the plugins a test names, and the previous one back afterwards."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import _plugins

__all__ = ["isolated_plugins"]


@contextmanager
def isolated_plugins(*plugins: Any, autoload: bool = False) -> Iterator[list[str]]:
    """Runs the block with only `plugins` registered; yields their names; restores every plugin afterwards.

    Entry points stay unloaded unless `autoload` is set (then REVZOO_LOAD_PLUGINS and
    REVZOO_DISABLE_PLUGINS choose, as for a user). Whatever the block registers, with
    `revzoo.register_plugin` or by loading entry points, is removed on leaving it, and the
    plugins registered before come back in their order: one test cannot leak into the next.

    Example:
        >>> with revzoo.testing.isolated_plugins(my_plugin) as names:
        ...     model = revzoo.create("my-model-rev")
    """
    manager, state = _plugins.plugin_manager, _plugins._state
    saved_plugins = [(name, plugin) for name, plugin in manager.list_name_plugin() if plugin is not None]
    saved_state = {key: copy.copy(value) for key, value in vars(state).items()}
    for name, _ in saved_plugins:
        manager.unregister(name=name)
    vars(state).update(vars(_plugins._LoadState(autoload=autoload)))
    try:
        yield [_plugins.register_plugin(plugin) for plugin in plugins]
    finally:
        for name, plugin in manager.list_name_plugin():
            if plugin is not None:
                manager.unregister(name=name)
        for name, plugin in saved_plugins:
            manager.register(plugin, name=name)
        vars(state).update(saved_state)
