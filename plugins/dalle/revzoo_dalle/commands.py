"""`revzoo generate FILE CAPTION...` and `revzoo demo`: the dalle plugin's commands, added through revzoo's
`register_commands` hook.

`generate` writes a grid of images from captions, one row per caption, repeatable by seed. Every
option is checked before the checkpoint is read; bad input is one line from the command line (exit 2).
`demo` runs revzoo_dalle.demo: a small reversible DALL-E trained, measured, converted and sampled.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import revzoo

__all__ = ["IMAGE_FORMATS", "MAX_IMAGES", "configure_demo", "configure_generate", "register_commands", "run_demo",
           "run_generate"]

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
# Images in one grid. Sampling holds every image's key/value cache and its logits at once (about 28 MiB per image
# for dalle-rev's defaults on the CPU, measured), so 100000 asked for a 177 GB allocation; more: another --seed.
MAX_IMAGES = 256


def configure_generate(parser: argparse.ArgumentParser) -> None:
    """Adds `revzoo generate`'s arguments to `parser`."""
    parser.add_argument("file", help="a revzoo checkpoint of a model that generates images (e.g. dalle-rev)")
    parser.add_argument("captions", nargs="+", metavar="CAPTION")
    parser.add_argument("--num", type=int, default=4, help=f"images per caption (default 4; at most {MAX_IMAGES} in all)")
    parser.add_argument("--seed", type=int, help="seed of the sampling, for repeatable images (0 to 2**64 - 1)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature, > 0 (default 1)")
    parser.add_argument("--filter-thres", type=float, default=0.9,
                        help="top-k filter: keep the top (1 - F) of the logits, F from 0 to 1 (default 0.9)")
    parser.add_argument("--cond-scale", type=float, default=1.0,
                        help="classifier-free guidance scale, -100 to 100 (default 1: none)")
    parser.add_argument("--bpe-path", help="the vocabulary file the model was trained with (tokenizers .json, yttm .model)")
    parser.add_argument("--truncate", action="store_true", help="cut captions longer than the model's text length")
    parser.add_argument("--device", default="cpu", help="e.g. cuda or cuda:1 (default: cpu)")
    parser.add_argument("--out", default="generated.png",
                        help=f"the image grid to write, {', '.join(IMAGE_FORMATS)} (default generated.png)")
    parser.add_argument("--overwrite", action="store_true")


def _check_options(args: argparse.Namespace) -> None:
    """Refuses every option that cannot work, before any file is read (ConfigError, one line)."""
    from .generate import check_sampling

    total = args.num * len(args.captions)
    if args.num < 1:
        raise revzoo.ConfigError(f"--num must be at least 1, got {args.num}")
    if total > MAX_IMAGES:
        raise revzoo.ConfigError(
            f"--num {args.num} with {len(args.captions)} caption(s) asks for {total} images in one grid; at most "
            f"{MAX_IMAGES} (sampling holds them all at once): use a smaller --num, and another --seed for more")
    if args.seed is not None and not 0 <= args.seed < 2**64:
        raise revzoo.ConfigError(f"--seed must be an integer from 0 to 2**64 - 1, got {args.seed}")
    check_sampling(args.filter_thres, args.temperature, args.cond_scale, cli=True)
    revzoo.check_device(args.device, option="--device")
    out = Path(args.out)
    if out.suffix.lower() not in IMAGE_FORMATS:
        raise revzoo.ConfigError(f"{args.out!r}: unknown image type; use one of {', '.join(IMAGE_FORMATS)}")
    if out.is_dir():
        raise revzoo.ConfigError(f"{out}: is a directory; name a file to write")
    if out.exists() and not args.overwrite:
        raise revzoo.ConfigError(f"{out}: already exists; pass --overwrite to replace it")


def run_generate(args: argparse.Namespace) -> None:
    """Runs `revzoo generate`: loads the checkpoint, samples `--num` images per caption, writes them as one grid."""
    _check_options(args)
    import torch
    from torchvision.utils import save_image

    from .model import Dalle

    model = revzoo.load(args.file, device=args.device)
    if not isinstance(model, Dalle):
        raise revzoo.ConfigError(f"{args.file} holds a {model.revzoo_architecture!r} model, which does not generate "
                                 "images")
    if args.bpe_path:
        model.use_tokenizer(args.bpe_path)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    captions = [caption for caption in args.captions for _ in range(args.num)]
    try:
        images = model.generate_images(captions, filter_thres=args.filter_thres, temperature=args.temperature,
                                       cond_scale=args.cond_scale, truncate_text=args.truncate,
                                       progress=sys.stderr.isatty())
    except (torch.cuda.OutOfMemoryError, MemoryError) as err:
        raise revzoo.ConfigError(f"out of memory sampling {len(captions)} images on {args.device}; use a smaller "
                                 "--num or fewer captions") from err
    if images.dim() != 4:
        raise revzoo.ConfigError(f"{args.file} has no VAE to decode its image tokens; give it one (see README, "
                                 "DALL-E's VAE)")
    # each image scaled by its own minimum and maximum, as DALLE-pytorch's generate.py saves them, so that decoders
    # of any output range give visible pictures
    grid = images.detach().float().cpu()
    image_format = IMAGE_FORMATS[Path(args.out).suffix.lower()]
    path = revzoo.atomic_write(args.out, lambda tmp: save_image(grid, tmp, nrow=args.num, padding=2, normalize=True,
                                                                scale_each=True, format=image_format),
                               overwrite=args.overwrite)
    print(f"wrote {path}: {args.num} image(s) per caption, one row per caption")


def configure_demo(parser: argparse.ArgumentParser) -> None:
    """Adds `revzoo demo`'s arguments to `parser`."""
    parser.add_argument("--out", default="revzoo-demo", help="directory for what the demo writes")


def run_demo(args: argparse.Namespace) -> None:
    """Runs `revzoo demo` (revzoo_dalle.demo.run_demo) into `--out`."""
    from . import demo

    demo.run_demo(out_dir=args.out)


@revzoo.hookimpl
def register_commands(register: Callable[[revzoo.Command], None]) -> None:
    register(revzoo.Command(name="generate", help="generate images from captions with a DALL-E checkpoint",
                            configure=configure_generate, run=run_generate))
    register(revzoo.Command(name="demo", help="train, save, convert, reload and sample a small reversible DALL-E",
                            configure=configure_demo, run=run_demo))
