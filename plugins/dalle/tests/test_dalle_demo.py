"""`revzoo demo`, the dalle plugin's command, end to end: it needs the plugin through its entry point."""

from __future__ import annotations

import errno
import io

import pytest
import torch
from PIL import Image
from revzoo_dalle import demo
from revzoo_dalle.demo import COLOURS, SHAPES, captioned_shapes, run_demo
from torchvision.transforms.functional import pil_to_tensor

import revzoo
from helpers import fail_with
from revzoo.cli import main

# The training colours are at least 0.8 apart (red and yellow differ in green only); a colour within 0.15 of its own
# is nearer to it than to any other by a wide margin.
COLOUR_TOLERANCE = 0.15


@pytest.fixture
def dalle_entry_point(monkeypatch):
    monkeypatch.setenv("REVZOO_LOAD_PLUGINS", "dalle")


def test_demo_writes_what_it_says(dalle_entry_point, tmp_path, capsys) -> None:
    run_demo(str(tmp_path), steps=2, vae_steps=2)
    out = capsys.readouterr().out
    assert "peak memory of one training step: reversible" in out
    assert "reloaded outputs identical: True" in out
    for name in ("dalle-rev.safetensors", "dalle-seq.safetensors", "dalle-rev-again.safetensors", "generated.png"):
        assert (tmp_path / name).stat().st_size > 0
        assert str(tmp_path / name) in out


@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_demo_out_that_cannot_be_written_fails_before_training(dalle_entry_point, tmp_path, capsys, monkeypatch,
                                                               kind) -> None:
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("not a directory")
    else:
        monkeypatch.setattr(demo.tempfile, "TemporaryFile", fail_with(OSError(errno.EROFS, "Read-only file system")))
    monkeypatch.setattr(demo, "create", fail_with(AssertionError("trained before checking --out")))
    code = main(["demo", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert ("not a directory" if kind == "file" else "cannot write there: Read-only file system") in err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_demo_draws_progress_bars_only_on_a_terminal(monkeypatch) -> None:
    assert demo._progress(range(3), 3, "x").disable  # lines instead
    monkeypatch.setattr("sys.stderr", Terminal())
    assert not demo._progress(range(3), 3, "x").disable


def test_without_the_dalle_plugin_there_is_no_demo_command(capsys) -> None:
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main(["demo", "--help"])
    assert "invalid choice: 'demo'" in capsys.readouterr().err


def _shape_masks(images: torch.Tensor) -> torch.Tensor:
    """Returns each image's shape as a boolean mask (n, size, size): the pixels that differ from the background."""
    return (images - images[:, :, :1, :1]).abs().amax(dim=1) > 1e-3


def _region_colours(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Returns each image's mean colour inside its mask (n, 3)."""
    return (images * masks[:, None]).sum(dim=(2, 3)) / masks.sum(dim=(1, 2))[:, None]


def _bottom_row(grid_png, count: int, size: int, padding: int = 2) -> torch.Tensor:
    """Returns the images of the second row of a torchvision grid (count, 3, size, size), in [0, 1]."""
    grid = pil_to_tensor(Image.open(grid_png).convert("RGB")).float() / 255
    top = padding + (size + padding)
    return torch.stack([grid[:, top:top + size, padding + i * (size + padding):][:, :, :size] for i in range(count)])


def _by_caption(captions: list[str], values: torch.Tensor) -> str:
    return ", ".join(f"{caption}: {value:.3f}" for caption, value in zip(captions, values.tolist()))


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a & b).sum(dim=(-2, -1)) / (a | b).sum(dim=(-2, -1))


@pytest.mark.slow  # the whole demo at its default length: about a minute on 2 cores
def test_demo_images_match_their_captions(dalle_entry_point, tmp_path) -> None:
    run_demo(str(tmp_path))
    captions, images = captioned_shapes()
    masks = _shape_masks(images)
    truth = _region_colours(images, masks)
    palette = torch.tensor(list(COLOURS.values()))
    colour_ids = torch.tensor([list(COLOURS).index(caption.split()[1]) for caption in captions])
    shape_ids = torch.tensor([SHAPES.index(caption.split()[2]) for caption in captions])

    # the VAE's reconstruction from its codes (what generated codes decode through) keeps every colour
    vae = revzoo.load(tmp_path / "dalle-rev.safetensors").vae
    with torch.no_grad():
        recons = (vae.decode(vae.get_codebook_indices(images)) * 0.5 + 0.5).clamp(0, 1)
    error = (_region_colours(recons, masks) - truth).norm(dim=1)
    assert error.max() <= COLOUR_TOLERANCE, _by_caption(captions, error)

    # the generated row: each shape's region holds its caption's colour, and what stands out from the background
    # has its caption's shape (the largest overlap with it among the three shapes)
    generated = _bottom_row(tmp_path / "generated.png", len(captions), images.shape[-1])
    colours = _region_colours(generated, masks)
    error = (colours - truth).norm(dim=1)
    assert error.max() <= COLOUR_TOLERANCE, _by_caption(captions, error)
    assert torch.equal(torch.cdist(colours, palette).argmin(dim=1), colour_ids)
    foreground = (generated - images[:, :, :1, :1]).norm(dim=1) > 0.3
    shape_masks = _shape_masks(images[: len(SHAPES)])  # the red square, disc and bar
    overlaps = _iou(foreground[:, None], shape_masks[None])
    assert torch.equal(overlaps.argmax(dim=1), shape_ids), overlaps
    assert overlaps[torch.arange(len(captions)), shape_ids].min() >= 0.85, overlaps  # the shapes overlap by 0.71 at most
