"""`revzoo generate FILE CAPTION...`: a grid of images from captions, repeatable by seed, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import revzoo
from revzoo.cli import main

SMALL = dict(dim=16, depth=1, heads=2, dim_head=8, num_text_tokens=49408, text_seq_len=4, image_size=8,
             vae_num_layers=1, num_image_tokens=8, vae_hidden_dim=4, vae_codebook_dim=4)


@pytest.fixture
def checkpoint(register_plugin, tmp_path: Path) -> Path:
    import revzoo_dalle

    pytest.importorskip("open_clip")
    register_plugin(revzoo_dalle, name="dalle-test")
    torch.manual_seed(0)
    return revzoo.save(revzoo.create("dalle-rev", **SMALL), tmp_path / "m.safetensors")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_writes_a_grid_that_the_seed_repeats(checkpoint: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    first, second = tmp_path / "a.png", tmp_path / "b.png"
    for out in (first, second):
        code, printed, err = run(capsys, "generate", checkpoint, "a red square", "a blue disc", "--num", 3,
                                 "--seed", 7, "--out", out)
        assert (code, err) == (0, "")
        assert f"wrote {out}: 3 image(s) per caption, one row per caption" in printed
    assert first.read_bytes() == second.read_bytes()
    assert Image.open(first).size == (3 * 8 + 4 * 2, 2 * 8 + 3 * 2)  # 3 columns, 2 rows, padding 2


def test_generate_samples_what_generate_images_samples(checkpoint: Path, tmp_path: Path, capsys) -> None:
    model = revzoo.load(checkpoint)
    torch.manual_seed(5)
    tokens = model.generate_images(["a red square"], filter_thres=0.5, temperature=0.7, return_tokens=True)
    code, _, _ = run(capsys, "generate", checkpoint, "a red square", "--num", 1, "--seed", 5, "--filter-thres", 0.5,
                     "--temperature", 0.7, "--out", tmp_path / "one.png")
    assert code == 0
    torch.manual_seed(5)
    assert torch.equal(model.generate_images("a red square", filter_thres=0.5, temperature=0.7, return_tokens=True),
                       tokens)


def test_generate_errors_are_one_line(checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "g.png"
    code, _, err = run(capsys, "generate", checkpoint, "one two three four five six", "--out", out)
    assert code == 2 and err.count("\n") == 1 and "longer than the model's 4" in err and "--truncate" in err
    assert not out.exists()
    assert run(capsys, "generate", checkpoint, "one two three four five six", "--truncate", "--num", 1,
               "--out", out)[0] == 0
    code, _, err = run(capsys, "generate", checkpoint, "a cat", "--out", out)
    assert code == 2 and "already exists; pass --overwrite" in err
    code, _, err = run(capsys, "generate", checkpoint, "a cat", "--num", 0, "--out", tmp_path / "n.png")
    assert code == 2 and "--num must be at least 1" in err
    code, _, err = run(capsys, "generate", checkpoint, "a cat", "--out", tmp_path / "g.gif")
    assert code == 2 and "unknown image type" in err
    code, _, err = run(capsys, "generate", checkpoint, "a cat", "--bpe-path", tmp_path / "none.json", "--out",
                       tmp_path / "x.png")
    assert code == 2 and "is not a file" in err
    no_vae = revzoo.save(revzoo.create("dalle-rev", **{**SMALL, "vae": "none"}), tmp_path / "no-vae.safetensors")
    code, _, err = run(capsys, "generate", no_vae, "a cat", "--out", tmp_path / "y.png")
    assert code == 2 and "no VAE to decode its image tokens" in err


def test_the_dalle_plugin_adds_generate_and_demo_to_the_command_line(register_plugin, capsys) -> None:
    import revzoo_dalle

    register_plugin(revzoo_dalle, name="dalle-test")
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    assert "generate  generate images from captions with a DALL-E checkpoint" in shown
    assert "demo      train, save, convert, reload and sample a small reversible" in shown
    (record,) = [r for r in revzoo.plugins_info() if r["name"] == "dalle-test"]
    assert record["commands"] == ["demo", "generate"]


@pytest.mark.parametrize("options, message", [
    (["--device", "cpux"], "--device 'cpux' is not a device; use cpu, cuda[:N]"),
    (["--device", "meta"], "--device 'meta': the meta device holds no data"),
    (["--device", "cuda:7"], "--device 'cuda:7': "),  # no CUDA here, or fewer than 8 devices
    (["--seed", str(2**64)], "--seed must be an integer from 0 to 2**64 - 1, got 18446744073709551616"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 2**64 - 1, got -1"),
    (["--temperature", "nan"], "--temperature must be a positive finite number, got nan"),
    (["--temperature", "-1"], "--temperature must be a positive finite number, got -1.0"),
    (["--temperature", "0"], "--temperature must be a positive finite number, got 0.0"),
    (["--cond-scale", "nan"], "--cond-scale must be from -100 to 100 (1: no guidance; larger ones overflow"),
    (["--cond-scale", "1e308"], "--cond-scale must be from -100 to 100"),
    (["--filter-thres", "-5"], "--filter-thres must be from 0 to 1 (the fraction of the logits dropped"),
    (["--filter-thres", "nan"], "--filter-thres must be from 0 to 1"),
    (["--num", "100000"], "--num 100000 with 1 caption(s) asks for 100000 images in one grid; at most 256"),
    (["--num", "0"], "--num must be at least 1, got 0"),
    (["--out", "grid.gif"], "'grid.gif': unknown image type"),
])
def test_generate_refuses_bad_options_before_reading_the_file(register_plugin, tmp_path: Path, capsys, options,
                                                              message) -> None:
    import revzoo_dalle

    register_plugin(revzoo_dalle, name="dalle-test")
    missing = tmp_path / "not-read.safetensors"  # an option checked after loading would say this file is missing
    code, out, err = run(capsys, "generate", missing, "a cat", "--out", tmp_path / "g.png", *options)
    assert (code, out) == (2, "") and err.startswith(f"revzoo: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "g.png").exists()


def test_generate_on_cuda_without_a_gpu_is_one_line(register_plugin, tmp_path: Path, capsys, monkeypatch) -> None:
    import revzoo_dalle

    register_plugin(revzoo_dalle, name="dalle-test")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run(capsys, "generate", tmp_path / "m.safetensors", "a cat", "--device", "cuda")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("revzoo: error: --device 'cuda': CUDA is not available on this machine") and \
        "use --device cpu" in err


def test_generate_images_refuses_what_cannot_sample(checkpoint: Path) -> None:
    model = revzoo.load(checkpoint)
    for options in ({"temperature": 0.0}, {"filter_thres": 1.5}, {"cond_scale": float("inf")}):
        with pytest.raises(revzoo.ConfigError, match=f"^{next(iter(options))} must be"):
            model.generate_images("a cat", **options)
