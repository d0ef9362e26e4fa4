"""`revzoo demo`: the whole life of a small reversible DALL-E in under two minutes on a CPU (the dalle plugin's command).

Trains a small byte-level BPE on the captions (a Hugging Face `tokenizers` file, the kind
DALLE-pytorch's `--bpe_path x.json` takes; CLIP's 49,408-token BPE would make the text
embedding and logits 50 times larger), trains a discrete VAE on synthetic captioned shapes,
creates `dalle-rev` with that VAE and tokenizer, trains it a few steps, measures one training
step's peak memory in both forms, saves, converts to the sequential form and back,
reloads, and writes a grid of images generated from the captions.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from revzoo import CheckpointError, atomic_write, convert, create, load, save
from revzoo.bench import measure_peak, peak_in_subprocess

__all__ = ["captioned_shapes", "run_demo"]

COLOURS = {"red": (1.0, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.2, 0.3, 1.0), "yellow": (1.0, 0.9, 0.1)}
SHAPES = ("square", "disc", "bar")
CONFIG = dict(dim=64, depth=4, heads=4, dim_head=16, text_seq_len=4, image_size=32,
              num_image_tokens=64, vae_num_layers=2, vae_hidden_dim=32, vae_codebook_dim=64, attn_dropout=0.1,
              ff_dropout=0.1)
# The VAE, trained first (as DALL-E's workflow does). A small pull towards the uniform prior (the KL term, summed over
# the batch's cells as upstream does) keeps some 20 of the 64 codes in use instead of 4 to 8, and the Gumbel temperature
# falls from 0.9 to 0.3 over training, so that it ends close to the hard codes (argmax) that tokenizing and generation
# use. Without them (200 steps at 0.9), 3 seeds in 8 let red and yellow share a code that decoded to orange; with
# them, no seed in 16 reconstructs a colour further than 0.09 from the true one.
VAE_CONFIG = dict(image_size=CONFIG["image_size"], num_tokens=CONFIG["num_image_tokens"],
                  num_layers=CONFIG["vae_num_layers"], hidden_dim=CONFIG["vae_hidden_dim"],
                  codebook_dim=CONFIG["vae_codebook_dim"], kl_div_loss_weight=1e-5)
VAE_TEMPERATURES = (0.9, 0.3)
VAE_STEPS, STEPS, BATCH = 400, 250, 12


def _draw(colour: str, shape: str, size: int = 32) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = (size - 1) / 2
    if shape == "square":
        inside = ((xs - centre).abs() < size / 4) & ((ys - centre).abs() < size / 4)
    elif shape == "disc":
        inside = (xs - centre) ** 2 + (ys - centre) ** 2 < (size / 3) ** 2
    else:
        inside = (ys - centre).abs() < size / 8
    image = torch.full((3, size, size), 0.05)
    return torch.where(inside, torch.tensor(COLOURS[colour])[:, None, None], image)


def captioned_shapes() -> tuple[list[str], torch.Tensor]:
    """Returns captions ("a red square", ...) and their images (n, 3, 32, 32)."""
    pairs = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    return [f"a {colour} {shape}" for colour, shape in pairs], torch.stack([_draw(*pair) for pair in pairs])


def _progress(iterable, total: int, description: str):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but a bare loop is a fine fallback
        return iterable
    return tqdm(iterable, total=total, desc=description, file=sys.stderr, disable=not sys.stderr.isatty())


def _train_step(model, text: torch.Tensor, images: torch.Tensor, optimizer=None) -> torch.Tensor:
    loss = model(text, images, return_loss=True)
    loss.backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return loss


def _train_vae(vae, images: torch.Tensor, steps: int) -> None:
    """Fits the VAE's codes to the images first, so that generated codes decode to pictures (see VAE_CONFIG)."""
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    first, last = VAE_TEMPERATURES
    for step in _progress(range(steps), steps, "training the VAE"):
        loss = vae(images, return_loss=True, temp=first * (last / first) ** (step / max(steps - 1, 1)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    vae.requires_grad_(False)
    with torch.no_grad():
        error = torch.nn.functional.mse_loss(vae.decode(vae.get_codebook_indices(images)), vae.vae.normalize(images))
    print(f"trained the discrete VAE {steps} steps: reconstruction error from its codes {error.item():.4f} "
          "(mean squared, in [-1, 1])")


def train_caption_tokenizer(captions: list[str], path: Path) -> tuple[Path, int]:
    """Writes a byte-level BPE trained on the captions (id 0: padding); returns its path and vocabulary size."""
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(captions, vocab_size=300, min_frequency=1, special_tokens=["<pad>"],
                                  show_progress=False)
    tokenizer.save(str(path))
    return path, tokenizer.get_vocab_size()


def measure_step_memory(form: str, text: torch.Tensor, num_text_tokens: int) -> int:
    """Returns one training step's peak activation bytes for the demo model in `form` (run in its own process).

    `text` holds the tokenized captions, passed in so that this process does not load the tokenizer.
    """
    torch.manual_seed(0)
    model = create("dalle", form=form, num_text_tokens=num_text_tokens, **CONFIG)
    _, images = captioned_shapes()
    text, images = text.repeat(2, 1)[:BATCH], images.repeat(2, 1, 1, 1)[:BATCH]
    tokens = model.image_tokens(images)
    for param in model.parameters():
        if param.requires_grad:
            param.grad = torch.zeros_like(param)
    _train_step(model, text, tokens)  # warm-up
    return measure_peak(lambda: _train_step(model, text, tokens))


def run_demo(out_dir: str = "revzoo-demo", steps: int = STEPS, vae_steps: int = VAE_STEPS) -> None:
    """Runs the demo, writing checkpoints and `generated.png` under `out_dir`."""
    out = _writable_directory(Path(out_dir))
    torch.manual_seed(0)
    captions, images = captioned_shapes()
    bpe_path, vocab_size = train_caption_tokenizer(captions, out / "captions-bpe.json")
    vae = create("discrete-vae", **VAE_CONFIG)
    _train_vae(vae, images, vae_steps)
    model = create("dalle-rev", num_text_tokens=vocab_size, vae=vae, **CONFIG)
    model.use_tokenizer(bpe_path, record=True)  # the checkpoint records its kind and sha256
    parameters = sum(p.numel() for p in model.parameters())
    print(f"created dalle-rev: {parameters / 1e6:.2f} M parameters, depth {CONFIG['depth']}, with that VAE")
    text = model.tokenize(captions)
    print(f"tokenized the captions with a {vocab_size}-token BPE ({bpe_path}): {captions[0]!r} -> {text[0].tolist()}")

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    tokens = model.image_tokens(images)
    generator = torch.Generator().manual_seed(0)
    for _ in _progress(range(steps), steps, "training dalle-rev"):
        pick = torch.randint(0, len(captions), (BATCH,), generator=generator)
        loss = _train_step(model, text[pick], tokens[pick], optimizer)
    print(f"trained {steps} steps on {len(captions)} captioned shapes: final loss {loss.item():.3f}")

    ids = json.dumps(text.tolist())
    peaks = {form: peak_in_subprocess("revzoo_dalle.demo", ["--measure", form, ids, str(vocab_size)])["bytes"]
             for form in ("reversible", "sequential")}
    print(f"peak memory of one training step: reversible {peaks['reversible'] / 2**20:.1f} MiB, "
          f"sequential {peaks['sequential'] / 2**20:.1f} MiB (x{peaks['reversible'] / peaks['sequential']:.2f}; "
          "the gap grows with depth)")

    saved = save(model, out / "dalle-rev.safetensors")
    sequential = convert(saved, out / "dalle-seq.safetensors", "sequential", overwrite=True)
    back = convert(sequential, out / "dalle-rev-again.safetensors", "reversible", overwrite=True)
    reloaded = load(back).eval()
    reloaded.use_tokenizer(bpe_path)  # checked against the sha256 the file records
    with torch.no_grad():
        same = torch.equal(reloaded(text, tokens).float(), model.eval()(text, tokens).float())
    print(f"saved {saved}, converted to {sequential} and back to {back}: reloaded outputs identical: {same}")

    torch.manual_seed(1)
    with torch.no_grad():
        # sampled a little cooler than the model's distribution: at temperature 1 about one image in fifty took a stray
        # code (a red square with a notch); at 0.7 none did in 8 sampling seeds
        generated = reloaded.generate_images(captions, filter_thres=0.9, temperature=0.7)
    grid = out / "generated.png"
    _save_grid(torch.cat([images, (generated * 0.5 + 0.5).clamp(0, 1)]), grid, columns=len(captions))
    print(f"wrote {grid}: top row the training images, bottom row generated from the captions:")
    print("  " + ", ".join(captions))


def _writable_directory(out: Path) -> Path:
    """Returns `out`, created if need be, or raises CheckpointError before any training if it cannot be written to."""
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: not a directory; --out names the directory the demo writes into")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as err:
        raise CheckpointError(f"{out}: the demo cannot write there: {err.strerror or err}; choose another --out") from err
    return out


def _save_grid(images: torch.Tensor, path: Path, columns: int) -> None:
    from torchvision.utils import save_image

    atomic_write(path, lambda tmp: save_image(images, tmp, format="png", nrow=columns, padding=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:
        text, vocab_size = torch.tensor(json.loads(sys.argv[3])), int(sys.argv[4])
        print(json.dumps({"bytes": measure_step_memory(sys.argv[2], text, vocab_size)}))
