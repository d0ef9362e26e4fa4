"""Shared fixtures: no plugin autoload, and plugins registered for one test at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import revzoo
from revzoo.registry import _plugins

# One thread: the suite's tensors are tiny, and CI has 2 cores shared with the subprocesses some tests start.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_plugin_autoload(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees only the plugins it registers or loads; the entry points are not loaded unless it asks.

    Entry points a test loads (by setting REVZOO_LOAD_PLUGINS) are unloaded after it.
    """
    monkeypatch.setenv("REVZOO_LOAD_PLUGINS", "")
    monkeypatch.delenv("REVZOO_DISABLE_PLUGINS", raising=False)
    state = _plugins._state
    attempted, failures = set(state.attempted), dict(state.import_failures)
    state.registry = None
    yield
    for name in state.attempted - attempted:
        if _plugins.plugin_manager.has_plugin(name):
            _plugins.plugin_manager.unregister(name=name)
    state.attempted.intersection_update(attempted)
    state.import_failures.clear()
    state.import_failures.update(failures)
    state.registry = None


@pytest.fixture
def builtin_plugins(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Loads the built-in plugins (dalle, lie, vit) from their entry points; returns every model name."""
    monkeypatch.setenv("REVZOO_LOAD_PLUGINS", "dalle,lie,vit")
    names = revzoo.list_models()
    assert {"dalle-rev", "lie-transformer-rev", "vit-small-rev", "timm"} <= set(names)
    return names


@pytest.fixture
def register_plugin() -> Iterator[Callable[..., str]]:
    """Returns `register(obj, name)`; everything it registered is unregistered after the test."""
    names: list[str] = []

    def register(plugin: Any, name: str | None = None) -> str:
        registered = revzoo.register_plugin(plugin, name=name)
        names.append(registered)
        return registered

    try:
        yield register
    finally:
        for name in reversed(names):
            if _plugins.plugin_manager.has_plugin(name):
                revzoo.unregister_plugin(name)
