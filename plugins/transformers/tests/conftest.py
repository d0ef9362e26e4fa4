"""The transformers plugin's tests see it as an installed user does: loaded from its entry point (and only it)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def transformers_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVZOO_LOAD_PLUGINS", "transformers")
