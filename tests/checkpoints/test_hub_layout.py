"""The Hugging Face Hub layout, offline: save_pretrained, load(DIR), create("hf-hub:...") from a pre-populated cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import revzoo
from revzoo.checkpoints import _hub

huggingface_hub = pytest.importorskip("huggingface_hub")
from huggingface_hub import constants  # noqa: E402


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the network: huggingface_hub runs offline (its constant is read at import)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def small_vit(builtin_plugins, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return revzoo.create("vit-tiny-rev", img_size=32, depth=2).eval()


def outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))


def populate_cache(cache: Path, repo_id: str, directory: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> None:
    """Lays `directory` out as huggingface_hub's cache holds a downloaded snapshot of `repo_id` at `commit`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(directory, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)


def test_save_pretrained_writes_the_hub_layout_and_load_rebuilds_it(tmp_path, builtin_plugins):
    model = small_vit(builtin_plugins)
    directory = revzoo.save_pretrained(model, tmp_path / "vit")
    assert sorted(p.name for p in directory.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((directory / "config.json").read_text())
    assert (config["library_name"], config["architecture"], config["form"]) == ("revzoo", "vit-tiny", "reversible")
    loaded = revzoo.load(directory).eval()
    torch.testing.assert_close(outputs(loaded), outputs(model), atol=0, rtol=0)
    assert revzoo.get_form(revzoo.load(directory, form="sequential")) == "sequential"
    assert revzoo.load(directory, dtype=torch.float64).pos_embed.dtype == torch.float64


def test_the_card_has_valid_hub_front_matter(tmp_path, builtin_plugins):
    directory = revzoo.save_pretrained(small_vit(builtin_plugins), tmp_path / "vit")
    card = huggingface_hub.ModelCard.load(directory / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "revzoo"
    assert data["pipeline_tag"] == "image-classification"
    assert data["license"] == "mit"
    assert {"revzoo", "reversible", "vit"} <= set(data["tags"])
    assert "# vit-tiny-rev" in card.text and "### `vit-tiny` and `vit-tiny-rev`" in card.text
    assert '"depth": 2' in card.text  # the saved model's config, not the defaults
    card.validate = None  # ModelCard.validate posts to the Hub; parsing above is the offline check


def test_large_models_are_sharded_with_an_index(tmp_path, builtin_plugins):
    model = small_vit(builtin_plugins)
    directory = revzoo.save_pretrained(model, tmp_path / "vit", max_shard_size="200KB")
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    assert len(shards) > 1
    torch.testing.assert_close(outputs(revzoo.load(directory)), outputs(model), atol=0, rtol=0)


def test_an_existing_directory_is_replaced_only_with_overwrite(tmp_path, builtin_plugins):
    model = small_vit(builtin_plugins)
    directory = revzoo.save_pretrained(model, tmp_path / "vit", max_shard_size="200KB")
    with pytest.raises(revzoo.CheckpointError, match="already exists; pass overwrite=True"):
        revzoo.save_pretrained(model, directory)
    other = small_vit(builtin_plugins, seed=7)
    revzoo.save_pretrained(other, directory, overwrite=True)
    assert sorted(p.name for p in directory.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    torch.testing.assert_close(outputs(revzoo.load(directory)), outputs(other), atol=0, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vit"]  # no temporaries left beside it


def test_a_failed_save_leaves_nothing(tmp_path, builtin_plugins, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_hub, "save", broken)
    with pytest.raises(revzoo.CheckpointError, match="cannot write it: No space left on device"):
        revzoo.save_pretrained(small_vit(builtin_plugins), tmp_path / "vit")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(revzoo.CheckpointError, match="not built by revzoo.create"):
        revzoo.save_pretrained(torch.nn.Linear(2, 2), tmp_path / "linear")
    assert list(tmp_path.iterdir()) == []


def test_create_hf_hub_reads_the_cache_offline_with_revisions(tmp_path, builtin_plugins, monkeypatch):
    first, second = small_vit(builtin_plugins), small_vit(builtin_plugins, seed=3)
    cache = tmp_path / "cache"
    populate_cache(cache, "my-org/vit", revzoo.save_pretrained(first, tmp_path / "first"), "a" * 40)
    populate_cache(cache, "my-org/vit", revzoo.save_pretrained(second, tmp_path / "second"), "b" * 40, ("v2",))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # what HF_HOME / HF_HUB_CACHE set
    torch.testing.assert_close(outputs(revzoo.create("hf-hub:my-org/vit")), outputs(first), atol=0, rtol=0)
    for pinned in ("hf-hub:my-org/vit@v2", "hf-hub:my-org/vit@" + "b" * 40):
        torch.testing.assert_close(outputs(revzoo.create(pinned)), outputs(second), atol=0, rtol=0)
    loaded = revzoo.create("hf-hub:my-org/vit", revision="v2", form="sequential", cache_dir=cache)
    assert revzoo.get_form(loaded) == "sequential"
    with pytest.raises(revzoo.CheckpointError, match="hf-hub:my-org/missing: cannot fetch it through huggingface_hub"):
        revzoo.create("hf-hub:my-org/missing")
    with pytest.raises(revzoo.CheckpointError, match="cannot fetch it"):
        revzoo.create("hf-hub:my-org/vit@v3")


@pytest.mark.parametrize(
    "name, kwargs, error, message",
    [
        ("hf-hub:my-org/vit", {"num_classes": 10}, TypeError, "rebuilt from its config.json, so num_classes"),
        ("hf-hub:vit", {}, revzoo.ConfigError, "expected hf-hub:ORG/NAME"),
        ("hf-hub:my-org/vit@v1", {"revision": "v2"}, revzoo.ConfigError, "pins revision 'v1'"),
    ],
)
def test_bad_hub_names_and_options_are_one_clear_error(name, kwargs, error, message):
    with pytest.raises(error, match=message):
        revzoo.create(name, **kwargs)


@pytest.mark.parametrize(
    "files, message",
    [
        ({}, "no config.json"),
        ({"config.json": "{"}, "not JSON"),
        ({"config.json": '{"architecture": "vit_tiny_patch16_224", "num_classes": 10}'}, "not a revzoo config"),
        ({"config.json": '{"architecture": "vit-tiny", "config": {}}'}, "no model.safetensors"),
    ],
)
def test_a_directory_that_is_not_a_revzoo_model_is_one_clear_error(tmp_path, builtin_plugins, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(revzoo.CheckpointError, match=message):
        revzoo.load(tmp_path)


def test_registry_names_still_create(builtin_plugins):
    assert revzoo.get_form(revzoo.create("vit-tiny-rev", img_size=32, depth=1)) == "reversible"


def test_weights_without_revzoo_metadata_are_rebuilt_from_config_json(tmp_path, builtin_plugins):
    from safetensors.torch import save_file

    model = small_vit(builtin_plugins)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "model.safetensors")
    config = {"architecture": "vit-tiny", "form": "reversible", "config": model.revzoo_config}
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.testing.assert_close(outputs(revzoo.load(tmp_path).eval()), outputs(model), atol=0, rtol=0)
    config["architecture"] = "dalle"
    directory = revzoo.save_pretrained(model, tmp_path / "saved")
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(revzoo.CheckpointError, match="not 'dalle'"):
        revzoo.load(directory)
