"""Shared fixtures: no plugin autoload, and plugins registered for one test at a time."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import pytest
import torch

import revzoo
from helpers import install_entry_points
from revzoo.testing import isolated_plugins

# One thread: the suite's tensors are tiny, and CI has 2 cores shared with the subprocesses some tests start.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_plugin_autoload(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees only the plugins it registers or loads; the entry points are not loaded unless it asks.

    A test asks by setting REVZOO_LOAD_PLUGINS; what it loads or registers is removed after it.
    """
    monkeypatch.setenv("REVZOO_LOAD_PLUGINS", "")
    monkeypatch.delenv("REVZOO_DISABLE_PLUGINS", raising=False)
    with isolated_plugins(autoload=True):
        yield


@pytest.fixture
def builtin_plugins(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Loads the built-in plugins (dalle, lie, vit) from their entry points; returns every model name."""
    monkeypatch.setenv("REVZOO_LOAD_PLUGINS", "dalle,lie,vit")
    names = revzoo.list_models()
    assert {"dalle-rev", "lie-transformer-rev", "vit-small-rev", "timm"} <= set(names)
    return names


@pytest.fixture
def register_plugin() -> Callable[..., str]:
    """Returns `revzoo.register_plugin`: what a test registers goes when the test ends (see no_plugin_autoload)."""
    return revzoo.register_plugin


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Returns a function that makes its FakeEntryPoints the installed plugins, loaded as entry points are."""
    monkeypatch.delenv("REVZOO_LOAD_PLUGINS")
    return functools.partial(install_entry_points, monkeypatch)


@pytest.fixture
def dalle_plugin(register_plugin: Callable[..., str]) -> None:
    """Registers the DALL-E plugin (as "dalle-test") for one test, without the other built-ins."""
    import revzoo_dalle

    register_plugin(revzoo_dalle, name="dalle-test")
