"""Preserving conversion: a trained sequential model becomes a reversible one of nearly the same function."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import revzoo
from helpers import build_tiny, plugin_of, tiny_spec
from revzoo.cli import main

SMALL = {
    "vit-tiny": {"depth": 3, "img_size": 16, "patch_size": 8, "embed_dim": 16, "num_heads": 2, "num_classes": 3},
    "dalle": {"depth": 2, "dim": 16, "heads": 2, "dim_head": 8, "num_text_tokens": 20, "text_seq_len": 4,
              "image_size": 16, "num_image_tokens": 8, "vae_hidden_dim": 4, "vae_codebook_dim": 8},
    "lie-transformer": {"depth": 2, "dim": 8, "heads": 2, "dim_head": 4, "nbhd": 4, "liftsamples": 2},
}


def _output(model: torch.nn.Module, name: str) -> torch.Tensor:
    args, kwargs = revzoo.get_architecture(name).example_inputs(model, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(*args, **kwargs)
    return (out[0] if isinstance(out, tuple) else out).double()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_family_keeps_its_function_closer_as_the_scale_shrinks(name: str, builtin_plugins) -> None:
    changes = []
    for scale in (0.5, 2.0**-3, 2.0**-6):
        torch.manual_seed(0)
        model = revzoo.create(name, **SMALL[name]).eval()
        before = _output(model, name)
        revzoo.reversibilize(model, scale=scale, adapter_dim=4)
        assert model.form == "reversible" and model.exact
        changes.append((_output(model, name) - before).abs().max().item() / before.abs().max().item())
    assert changes[2] < changes[1] < changes[0] and changes[2] < 1e-3, changes


@pytest.mark.parametrize("name", sorted(SMALL))
def test_preserved_models_invert_bitwise(name: str, builtin_plugins) -> None:
    torch.manual_seed(1)
    model = revzoo.reversibilize(revzoo.create(name, **SMALL[name]), scale=2.0**-4, adapter_dim=4)
    for block in (b for m in model.modules() if isinstance(m, revzoo.ReversibleSequence) for b in m.blocks):
        torch.nn.init.normal_(block.adapter.up.weight, std=0.1)  # a fine-tuned adapter, not zero
    args, kwargs = revzoo.get_architecture(name).example_inputs(model, torch.Generator().manual_seed(0))
    kwargs.pop("generator", None)  # the lie example's own generator would advance between check_reversible's two runs
    report = revzoo.check_reversible(model, *args, **kwargs)
    assert report.bitwise and report.max_grad_diff == 0, str(report)


def test_preserved_float64_gradients_equal_autograd(builtin_plugins) -> None:
    torch.manual_seed(2)
    model = revzoo.create("vit-tiny", **SMALL["vit-tiny"]).double()
    revzoo.reversibilize(model, scale=0.1, adapter_dim=4, exact=False)
    for block in model.blocks.blocks:
        torch.nn.init.normal_(block.adapter.up.weight, std=0.1)
    images = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    report = revzoo.check_reversible(model, images)
    assert report.max_grad_diff < 1e-10, str(report)


def test_save_load_and_convert_round_trip(builtin_plugins, tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = revzoo.create("vit-tiny", **SMALL["vit-tiny"]).eval()
    original = _output(model, "vit-tiny")
    revzoo.reversibilize(model, scale=0.25, adapter_dim=4)
    torch.nn.init.normal_(model.blocks.blocks[0].adapter.up.weight)  # trained adapters must survive
    preserved = _output(model, "vit-tiny")
    revzoo.save(model, tmp_path / "p.safetensors")
    assert revzoo.read_metadata(tmp_path / "p.safetensors")["coupling"]["blocks"]["adapter"] == {"width": 16, "dim": 4}
    loaded = revzoo.load(tmp_path / "p.safetensors")
    assert loaded.exact and loaded.blocks.coupling == model.blocks.coupling
    assert torch.equal(_output(loaded.eval(), "vit-tiny"), preserved)

    revzoo.convert(tmp_path / "p.safetensors", tmp_path / "s.safetensors", "sequential")
    sequential = revzoo.load(tmp_path / "s.safetensors").eval()
    assert torch.equal(_output(sequential, "vit-tiny"), original)  # the adapters are unused there
    revzoo.convert(tmp_path / "s.safetensors", tmp_path / "r.safetensors", "reversible")
    assert torch.equal(_output(revzoo.load(tmp_path / "r.safetensors").eval(), "vit-tiny"), preserved)


def test_cli_preserve(builtin_plugins, tmp_path: Path, capsys) -> None:
    torch.manual_seed(4)
    revzoo.save(revzoo.create("vit-tiny", **SMALL["vit-tiny"]), tmp_path / "seq.safetensors")
    main(["convert", str(tmp_path / "seq.safetensors"), str(tmp_path / "p.safetensors"), "--to", "reversible",
          "--preserve", "--scale", "0.0625", "--adapter-dim", "8"])
    out = capsys.readouterr().out
    assert "λ = β = 0.0625" in out and "max |output change|" in out
    assert revzoo.load(tmp_path / "p.safetensors").blocks.blocks[0].adapter.dim == 8
    main(["convert", str(tmp_path / "seq.safetensors"), str(tmp_path / "auto.safetensors"), "--to", "reversible",
          "--preserve"])
    out = capsys.readouterr().out
    scale = revzoo.load(tmp_path / "auto.safetensors").blocks.coupling.scales[0]
    assert f"λ = β = {scale:g} (chosen for this model)" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--to", "reversible", "--preserve", "--scale", "0"], "cannot be inverted"),
        (["--to", "reversible", "--preserve", "--scale", "0.1"], "nearest: 0.125"),
        (["--to", "reversible", "--preserve", "--adapter-dim", "0"], "adapter_dim must be a positive integer"),
        (["--to", "sequential", "--preserve"], "use --to reversible"),
        (["--to", "reversible", "--scale", "0.5"], "only apply with --preserve"),
    ],
)
def test_cli_preserve_errors_are_one_line(extra, message, builtin_plugins, tmp_path: Path, capsys) -> None:
    revzoo.save(revzoo.create("vit-tiny", **SMALL["vit-tiny"]), tmp_path / "seq.safetensors")
    code = main(["convert", str(tmp_path / "seq.safetensors"), str(tmp_path / "out.safetensors"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.safetensors").exists()


def test_a_family_can_say_it_cannot_preserve(register_plugin, tmp_path: Path, capsys) -> None:
    spec = tiny_spec("frozen", not_preservable="its blocks are not residual in the sequential form")
    register_plugin(plugin_of(spec), name="frozen-plugin")
    with pytest.raises(revzoo.ConfigError, match="'frozen' cannot be converted preserving its function: its blocks"):
        revzoo.reversibilize(revzoo.create("frozen"))
    revzoo.save(revzoo.create("frozen"), tmp_path / "f.safetensors")
    code = main(["convert", str(tmp_path / "f.safetensors"), str(tmp_path / "o.safetensors"), "--to", "reversible",
                 "--preserve"])
    assert code == 2
    assert "cannot be converted preserving" in capsys.readouterr().err


def test_models_outside_the_registry_need_an_example_call() -> None:
    model = build_tiny(form="sequential", dim=4, depth=2)
    with pytest.raises(revzoo.ConfigError, match="pass example_inputs"):
        revzoo.reversibilize(model)
    revzoo.reversibilize(model, example_inputs=((torch.randn(2, 4),), {}))
    assert model.stack.has_adapters and model.stack.blocks[0].adapter.width == 4
    with pytest.raises(revzoo.ConfigError, match="already has adapters"):
        revzoo.reversibilize(model, example_inputs=((torch.randn(2, 4),), {}))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_exact_reversible_form_of_every_family_inverts_bitwise(name: str, builtin_plugins) -> None:
    torch.manual_seed(5)
    options = {**SMALL[name], **({"attn_dropout": 0.1, "ff_dropout": 0.1} if name == "dalle" else {})}
    model = revzoo.create(name, form="reversible", **options)
    model.exact = True
    args, kwargs = revzoo.get_architecture(name).example_inputs(model, torch.Generator().manual_seed(0))
    kwargs.pop("generator", None)
    report = revzoo.check_reversible(model, *args, **kwargs)
    assert report.bitwise and report.max_grad_diff == 0, str(report)


def test_preserving_a_file_already_reversible_is_refused(builtin_plugins, tmp_path: Path, capsys) -> None:
    revzoo.save(revzoo.create("vit-tiny-rev", **SMALL["vit-tiny"]), tmp_path / "rev.safetensors")
    code = main(["convert", str(tmp_path / "rev.safetensors"), str(tmp_path / "out.safetensors"), "--to", "reversible",
                 "--preserve"])  # before: silently kept the sequential function of weights trained reversibly
    err = capsys.readouterr().err
    assert code == 2 and "is recorded in the reversible form" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.skipif(not Path("/proc/meminfo").is_file(), reason="the check reads /proc/meminfo; without it, it allocates")
def test_an_adapter_dim_beyond_the_available_memory_is_one_config_error_and_changes_nothing(builtin_plugins) -> None:
    model = revzoo.create("vit-tiny", **SMALL["vit-tiny"])
    with pytest.raises(revzoo.ConfigError, match="adapter_dim 100000000 needs .* GiB this machine has available"):
        revzoo.reversibilize(model, adapter_dim=100_000_000)
    assert not model.blocks.has_adapters and revzoo.get_form(model) == "sequential"
    revzoo.reversibilize(model, adapter_dim=4)  # and the model converts afterwards
