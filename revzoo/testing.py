"""Helpers for testing revzoo plugins: register a plugin in isolation, get the registry back as it was.

A plugin's own tests use it as a pytest fixture::

    import pytest
    import revzoo.testing
    import my_plugin

    @pytest.fixture
    def zoo():
        with revzoo.testing.isolated_plugins(my_plugin) as names:
            yield names

    def test_builds(zoo):
        revzoo.check_reversible(revzoo.create("my-model-rev"), example)
"""

from __future__ import annotations

from .registry._testing import isolated_plugins as isolated_plugins

__all__ = ["isolated_plugins"]
