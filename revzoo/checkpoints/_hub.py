"""The Hugging Face Hub layout: a model directory that revzoo writes, reads, and pulls through huggingface_hub.

A directory holds `config.json` (what rebuilds the model), `model.safetensors` (or shards and
`model.safetensors.index.json` when large) and `README.md`, the model's card with the Hub's
front matter. That is what `huggingface_hub.upload_folder` pushes and what
`revzoo.create("hf-hub:ORG/NAME")` pulls, through huggingface_hub's cache (`HF_HOME`,
`HF_HUB_OFFLINE`, revisions). huggingface_hub comes with timm; `pip install "revzoo[hub]"` names it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..engine import get_form
from ..errors import CheckpointError, ConfigError
from ..registry import card_section, create, register_resolver, resolve
from ._checkpoint import built_by_create, load, save
from ._directory import CARD_NAME, CONFIG_NAME, INDEX_NAME, WEIGHTS_NAME

__all__ = ["HUB_PREFIX", "create", "load_from_hub", "model_card", "save_pretrained"]

HUB_PREFIX = "hf-hub:"
_HUB_FILES = [CONFIG_NAME, CARD_NAME, "*.safetensors", INDEX_NAME]
_HUB_OPTIONS = ("revision", "cache_dir", "device", "dtype")


def _huggingface_hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as err:
        raise ConfigError("the Hub layout needs huggingface_hub: pip install \"revzoo[hub]\"") from err
    return huggingface_hub


def _config(model: nn.Module) -> dict[str, Any]:
    architecture, config = built_by_create(model, ", so no config.json can rebuild it")
    return {"library_name": "revzoo", "architecture": architecture, "form": get_form(model),
            "config": config, "revzoo_version": __version__}


def _name(config: dict[str, Any]) -> str:
    """Returns the registry name of the saved model: NAME, NAME-rev, or NAME/SUB for a sub-named architecture."""
    spec = resolve(config["architecture"])[0]
    base = spec.name + ("-rev" if config["form"] == "reversible" and len(spec.forms) > 1 else "")
    sub = config["config"].get(spec.subname_key) if spec.subname_key else None
    return f"{base}/{sub}" if sub else base


def model_card(config: dict[str, Any]) -> str:
    """Returns README.md for a saved model: the Hub's front matter, how to load it, its config, its card section."""
    hub = _huggingface_hub()
    name = _name(config)
    section = card_section(config["architecture"])
    front = hub.ModelCard(section.path.read_text(encoding="utf-8")).data.to_dict() if section is not None else {}
    tags = list(dict.fromkeys([*(front.get("tags") or []), "revzoo", "reversible", config["form"]]))
    data = hub.ModelCardData(library_name="revzoo", license=front.get("license"), tags=tags,
                             pipeline_tag=front.get("pipeline_tag"))
    config_json = json.dumps(config["config"], indent=2, sort_keys=True)
    body = [
        f"# {name}",
        "",
        f"A revzoo model: `{config['architecture']}` in the {config['form']} form, saved by revzoo "
        f"{config['revzoo_version']}.",
        "",
        "```python",
        "import revzoo",
        "model = revzoo.create(\"hf-hub:ORG/NAME\")   # this repository, through huggingface_hub's cache",
        "model = revzoo.load(\"path/to/this/directory\")",
        "```",
        "",
        "## Config",
        "",
        "```json",
        config_json,
        "```",
    ]
    if section is not None:
        body += ["", "## From the revzoo card", "", section.text.rstrip()]
    card = hub.ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")
    return str(card)


def save_pretrained(
    model: nn.Module,
    save_directory: str | os.PathLike,
    *,
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
) -> Path:
    """Writes `model` as a Hugging Face Hub model directory; returns the directory.

    The directory gets `config.json`, `model.safetensors` (shards plus `model.safetensors.index.json`
    beyond `max_shard_size`, as huggingface_hub splits them) and a `README.md` card with the Hub's
    front matter. Everything is written to a temporary directory beside it and renamed into place,
    so a failure leaves nothing; an existing directory is replaced only with `overwrite=True`.
    Push it with `huggingface_hub.upload_folder(repo_id=..., folder_path=directory)`.

    Example:
        >>> revzoo.save_pretrained(revzoo.create("vit-tiny-rev"), "vit-tiny-rev")
    """
    directory = Path(save_directory)
    config = _config(model)
    card = model_card(config)
    if directory.exists() and not (directory.is_dir() and not any(directory.iterdir())) and not overwrite:
        raise CheckpointError(f"{directory}: already exists; pass overwrite=True to replace it")
    if directory.parent.exists() and not directory.parent.is_dir():
        raise CheckpointError(f"{directory}: {directory.parent} is not a directory")
    directory.parent.mkdir(parents=True, exist_ok=True)  # as transformers' save_pretrained makes its folders
    staging = directory.with_name(f".{directory.name}.revzoo-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        os.mkdir(staging, 0o777)  # the mode a plain mkdir gives under the umask
        save(model, staging / WEIGHTS_NAME, max_shard_size=max_shard_size)
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (staging / CARD_NAME).write_text(card, encoding="utf-8")
        _replace_directory(staging, directory)
    except OSError as err:
        raise CheckpointError(f"{directory}: cannot write it: {err.strerror or err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _replace_directory(staging: Path, directory: Path) -> None:
    """Renames `staging` to `directory`, moving an existing `directory` aside first and deleting it after."""
    if not directory.exists():
        os.replace(staging, directory)
        return
    old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".old"))
    os.replace(directory, old / directory.name)
    try:
        os.replace(staging, directory)
    except BaseException:
        os.replace(old / directory.name, directory)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _split_repo(reference: str) -> tuple[str, str | None]:
    """Returns `(repo_id, revision)` of `ORG/NAME` or `ORG/NAME@REVISION` (timm's spelling)."""
    repo_id, _, revision = reference.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"hub model {HUB_PREFIX}{reference!r}: expected {HUB_PREFIX}ORG/NAME (or ORG/NAME@REVISION)")
    return repo_id, revision or None


def load_from_hub(
    reference: str,
    form: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = "auto",
) -> nn.Module:
    """Loads `ORG/NAME[@REVISION]` from the Hub through huggingface_hub's cache; offline with `HF_HUB_OFFLINE=1`."""
    hub = _huggingface_hub()
    repo_id, pinned = _split_repo(reference)
    if pinned and revision and pinned != revision:
        raise ConfigError(f"hub model {reference!r} pins revision {pinned!r}, but revision={revision!r} was passed")
    try:
        directory = hub.snapshot_download(repo_id, revision=pinned or revision, cache_dir=cache_dir,
                                          allow_patterns=_HUB_FILES)
    except Exception as err:  # huggingface_hub's errors: not found, offline and not cached, HTTP, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{HUB_PREFIX}{reference}: cannot fetch it through huggingface_hub ({type(err).__name__}: {reason})"
        ) from err
    return load(directory, form=form, device=device, dtype=dtype)


def _create_from_hub(reference: str, form: str | None = None, **options: Any) -> nn.Module:
    """`revzoo.create("hf-hub:ORG/NAME[@REVISION]", form=..., **options)`: `load_from_hub`, which takes no overrides."""
    unknown = sorted(set(options) - set(_HUB_OPTIONS))
    if unknown:
        raise TypeError(
            f"{HUB_PREFIX + reference!r} is rebuilt from its config.json, so {', '.join(unknown)} cannot be set here; "
            f"it takes form, {', '.join(_HUB_OPTIONS)} (change the model after loading, e.g. model.reset_classifier(10))"
        )
    return load_from_hub(reference, form=form, **options)


register_resolver(HUB_PREFIX, _create_from_hub)
# `create` is the registry's own, re-exported (revzoo.checkpoints.create): with the resolver above it takes "hf-hub:"
