"""The example third-party plugin: installed as a package, discovered, created, trained, saved, removed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

EXAMPLE = ROOT / "plugins" / "example"

TRAIN_AND_SAVE = """
import sys, torch, revzoo
model = revzoo.create("conv1d-rev", depth=2)
tokens = torch.randint(0, 32, (2, 16))
loss = model(tokens, mask=torch.ones(2, 16)).logsumexp(-1).mean()
loss.backward()
torch.optim.SGD(model.parameters(), lr=0.1).step()
assert all(p.grad is not None for p in model.parameters())
assert revzoo.check_reversible(model, tokens).max_grad_diff < 1e-4
revzoo.save(model, sys.argv[1])
print(revzoo.read_metadata(sys.argv[1])["architecture"])
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example package, installed with pip into its own directory (put on PYTHONPATH to "install" it)."""
    target = tmp_path_factory.mktemp("site")
    source = shutil.copytree(EXAMPLE, tmp_path_factory.mktemp("src") / "example",
                             ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    return target


def revzoo_cli(*args: str, site: Path | None, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REVZOO_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site) if site else "", environ.get("PYTHONPATH", "")]))
    environ.update(env)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=environ, timeout=300)


def test_installed_plugin_is_discovered_trained_and_saved(installed, tmp_path) -> None:
    listed = revzoo_cli("-m", "revzoo", "list", "conv1d*", site=installed, REVZOO_LOAD_PLUGINS="example")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["conv1d", "conv1d-rev"]
    plugins = json.loads(revzoo_cli("-m", "revzoo", "plugins", site=installed, REVZOO_LOAD_PLUGINS="example").stdout)
    (record,) = [p for p in plugins if p["name"] == "example"]
    assert record["status"] == "ok" and record["version"] == "0.1.0" and record["models"] == ["conv1d"]
    trained = revzoo_cli("-c", TRAIN_AND_SAVE, str(tmp_path / "c.safetensors"), site=installed,
                         REVZOO_LOAD_PLUGINS="example")
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.strip() == "conv1d"


def test_blocked_or_uninstalled_plugin_is_gone(installed) -> None:
    blocked = revzoo_cli("-m", "revzoo", "list", "conv1d*", site=installed, REVZOO_DISABLE_PLUGINS="example")
    assert blocked.returncode == 0 and blocked.stdout.strip() == ""
    absent = revzoo_cli("-m", "revzoo", "info", "conv1d-rev", site=None, REVZOO_LOAD_PLUGINS="example")
    assert absent.returncode == 2
    warning, error = absent.stderr.splitlines()
    assert warning.startswith("revzoo: warning: REVZOO_LOAD_PLUGINS names 'example', which no installed plugin has")
    assert error == "revzoo: error: unknown model 'conv1d-rev' (see: revzoo list)"
