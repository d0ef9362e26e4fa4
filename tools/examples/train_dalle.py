"""Trains a discrete VAE, then a reversible DALL-E on its codes, from a folder of captioned images (offline).

The folder holds DALLE-pytorch's layout: each image (`x.png`, `.jpg`, ...) beside a text
file of the same stem (`x.txt`) with one caption per line (one is drawn per step). Writes
OUT/vae.safetensors, OUT/dalle.safetensors and OUT/dalle.training.safetensors (optimizer,
scheduler, epoch, to resume), then prompts with `revzoo generate`.

    python tools/examples/train_dalle.py --write-shapes shapes        # 12 captioned shapes to try it
    python tools/examples/train_dalle.py shapes run                   # about 4 minutes on 2 CPU cores
    revzoo generate run/dalle.safetensors "a red square" "a blue disc" --seed 0 --out grid.png
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch
from revzoo_dalle.demo import captioned_shapes
from torchvision import transforms

import revzoo
from revzoo.bench import Progress

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def write_shapes(folder: Path) -> None:
    from torchvision.utils import save_image

    folder.mkdir(parents=True, exist_ok=True)
    captions, images = captioned_shapes()
    for index, (caption, image) in enumerate(zip(captions, images)):
        save_image(image, folder / f"{index:02d}.png")
        (folder / f"{index:02d}.txt").write_text(f"{caption}\n{caption.removeprefix('a ')}\n")
    print(f"wrote {len(captions)} captioned images to {folder}")


def read_folder(folder: Path, image_size: int) -> tuple[list[list[str]], torch.Tensor]:
    """Returns each image's captions and the images (n, 3, size, size) in [0, 1], resized and centre-cropped."""
    from PIL import Image

    prepare = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size), transforms.ToTensor()])
    pairs = [(path, path.with_suffix(".txt")) for path in sorted(folder.iterdir())
             if path.suffix.lower() in IMAGE_SUFFIXES and path.with_suffix(".txt").is_file()]
    if not pairs:
        raise SystemExit(f"{folder}: no image with a caption file beside it (x.png and x.txt)")
    captions = [[line.strip() for line in text.read_text().splitlines() if line.strip()] for _, text in pairs]
    images = torch.stack([prepare(Image.open(image).convert("RGB")) for image, _ in pairs])
    return captions, images


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder of images with same-stem .txt captions")
    parser.add_argument("out", type=Path, nargs="?", default=Path("dalle-run"))
    parser.add_argument("--write-shapes", action="store_true", help="write 12 captioned shapes to DATA and stop")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--vae-steps", type=int, default=200)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--text-seq-len", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.write_shapes:
        return write_shapes(args.data)

    torch.manual_seed(args.seed)
    pick = random.Random(args.seed)
    captions, images = read_folder(args.data, args.image_size)
    args.out.mkdir(parents=True, exist_ok=True)

    vae = revzoo.create("discrete-vae", image_size=args.image_size, num_layers=2, num_tokens=64, codebook_dim=64,
                        hidden_dim=32)
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    with Progress("VAE", args.vae_steps, every=max(1, args.vae_steps // 10)) as progress:
        for _ in range(args.vae_steps):
            batch = images[torch.randint(0, len(images), (args.batch,))]
            loss = vae(batch, return_loss=True)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            progress.step(f"steps, loss {loss.item():.4f}")
    vae_path = revzoo.save(vae, args.out / 'vae.safetensors')
    print(f"VAE: {args.vae_steps} steps, reconstruction loss {loss.item():.4f} -> {vae_path}", flush=True)

    model = revzoo.create("dalle-rev", vae=vae, num_text_tokens=49408, text_seq_len=args.text_seq_len, dim=args.dim,
                          depth=args.depth, heads=4, dim_head=16)
    codes = model.image_tokens(images)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.999)
    with Progress("DALL-E", args.steps, every=max(1, args.steps // 10)) as progress:
        for _ in range(args.steps):
            rows = torch.randint(0, len(images), (args.batch,)).tolist()
            text = model.tokenize([pick.choice(captions[row]) for row in rows], truncate_text=True)
            loss = model(text, codes[rows], return_loss=True, null_cond_prob=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            progress.step(f"steps, loss {loss.item():.3f}")
    path = revzoo.save(model, args.out / "dalle.safetensors")
    state = revzoo.save_training_state(args.out / "dalle.training.safetensors", model, optimizer, scheduler, epoch=1)
    print(f"DALL-E: {args.steps} steps, loss {loss.item():.3f} -> {path} (training state: {state})")
    print(f'try: revzoo generate {path} "{captions[0][0]}" --seed 0 --out grid.png')


if __name__ == "__main__":
    sys.exit(main())
