"""What the tests share (the one place for it; no test imports another): the repository's folders, small
modules, fake plugins and entry points, and comparisons."""

from __future__ import annotations

import importlib.metadata
import weakref
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import revzoo
import revzoo.checkpoints._stream
from revzoo.cli import main

ROOT = Path(__file__).resolve().parents[1]  # the repository
FIXTURES = ROOT / "tests" / "fixtures"  # files the tests read: made by tools/fixtures/make_*.py, committed
TOOLS = ROOT / "tools"


class Branch(nn.Module):
    """A residual branch with dropout that uses every keyword it is given, so gradients reach them."""

    def __init__(self, dim: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, **context: torch.Tensor) -> torch.Tensor:
        out = torch.tanh(self.linear(x))
        for value in context.values():
            out = out * torch.sigmoid(value) if value.shape == out.shape else out + value.sum()
        return self.dropout(out)


def pairs(depth: int, dim: int, dropout: float = 0.2) -> list[tuple[nn.Module, nn.Module]]:
    return [(Branch(dim, dropout), Branch(dim, dropout)) for _ in range(depth)]


def grads_of(run, tensors: list[torch.Tensor], seed: int = 0) -> list[torch.Tensor | None]:
    """Returns d(sum of a fixed projection of run())/d tensors, under a fixed seed."""
    torch.manual_seed(seed)
    out = run()
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    return list(torch.autograd.grad((out * weight).sum(), tensors, allow_unused=True))


def saved_bytes(forward) -> int:
    """Bytes that autograd keeps alive between `forward()` and the backward of its output's sum."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    out.sum().backward()
    return total


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of CPU tensor storages alive, from their creation by an op to their release."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.tracked: set[int] = set()

    def _release(self, key: int, size: int) -> None:
        self.live -= size
        self.tracked.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu":
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.tracked:
                    self.tracked.add(key)
                    self.live += storage.nbytes()
                    weakref.finalize(storage, self._release, key, storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


def live_peak_bytes(step) -> int:
    """The most bytes of tensors made during `step()` alive at once (exact, unlike the resident size)."""
    with _LiveBytes() as counter:
        step()
    return counter.peak


def assert_same_grads(reference, candidate, names, atol: float = 1e-10) -> None:
    """Compares tensor by tensor; a gradient that is missing or all zero fails, so the test can fail."""
    assert len(reference) == len(candidate) == len(names)
    for name, want, got in zip(names, reference, candidate):
        assert want is not None and got is not None, f"{name}: no gradient"
        assert want.abs().max() > 0, f"{name}: zero reference gradient, the comparison would prove nothing"
        torch.testing.assert_close(got, want, atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


class TinyModel(revzoo.ZooModel):
    def __init__(self, dim: int, depth: int, form: str) -> None:
        super().__init__()
        self.stack = revzoo.ReversibleSequence(pairs(depth, dim), form=form)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack(x)


def build_tiny(*, form: str, dim: int, depth: int) -> TinyModel:
    return TinyModel(dim, depth, form)


def tiny_example_inputs(model: TinyModel, generator: torch.Generator) -> tuple[tuple, dict]:
    dim = model.stack.blocks[0].f.linear.in_features
    return (torch.randn(2, dim, generator=generator),), {}


def tiny_spec(name: str = "tiny", **fields) -> revzoo.ArchSpec:
    fields.setdefault("example_inputs", tiny_example_inputs)
    return revzoo.ArchSpec(
        name=name, builder=build_tiny, description="a tiny test stack", defaults={"dim": 4, "depth": 2}, **fields
    )


def plugin_of(*specs: revzoo.ArchSpec):
    class Plugin:
        @revzoo.hookimpl
        def register_architectures(self, register):
            for spec in specs:
                register(spec)

    return Plugin()




def assert_close_across_machines(got: torch.Tensor, want: torch.Tensor, ulps: int = 64, msg: str = "") -> None:
    """Compares a value computed here with one recorded on another CPU.

    Another CPU may sum in another order (AVX-512 against AVX2, FMA or not), which moves each
    output by a few rounding steps of the values it was summed from; `ulps` of the dtype's
    epsilon, scaled by the largest recorded magnitude, bounds that and nothing more. Within one
    machine compare bit for bit instead.
    """
    assert (got.dtype, got.shape) == (want.dtype, want.shape), f"{msg}{got.dtype} {got.shape} != {want.dtype} {want.shape}"
    scale = max(want.abs().max().item(), 1.0) if want.is_floating_point() and want.numel() else 1.0
    atol = ulps * torch.finfo(want.dtype).eps * scale if want.is_floating_point() else 0.0
    torch.testing.assert_close(got, want, rtol=0, atol=atol, msg=lambda m: f"{msg}{m}")


# Installed plugins, as importlib.metadata shows them.

class FakeDistribution:
    def __init__(self, name: str, version: str = "1.0") -> None:
        self.name, self.version, self.requires = name, version, None


class FakeEntryPoint:
    """What importlib.metadata yields for an entry point: a name, a value, its distribution, and load()."""

    def __init__(self, name: str, load, dist: str | None = None) -> None:
        self.name, self.value, self._load = name, f"{name}_module", load
        self.dist = FakeDistribution(dist) if dist else None

    def load(self):
        return self._load()


def install_entry_points(monkeypatch, *points: FakeEntryPoint) -> None:
    """Makes `points` the `revzoo` entry points that plugin loading sees (for this test only)."""
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: list(points) if group == "revzoo" else [])


# The checkpoint tests' model: embedding and output share one weight; a format that renames keys.

class TiedModel(revzoo.ZooModel):
    """Embedding and output projection share one weight, as DALL-E's shared embeddings do."""

    def __init__(self, *, form: str, vocab: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.stack = revzoo.ReversibleSequence(pairs(2, dim, dropout=0.0), form=form)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.embed.weight
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.stack(self.embed(tokens)))


def tied_inputs(model, generator):
    return (torch.randint(0, model.embed.num_embeddings, (2, 5), generator=generator),), {}


TIED = revzoo.ArchSpec(name="tied", builder=TiedModel, description="tied embeddings", defaults={"vocab": 11, "dim": 6},
                       example_inputs=tied_inputs)


def read_fake(obj, **options):
    tensors = {k.removeprefix("old."): v for k, v in obj.items()}
    return revzoo.ImportedCheckpoint("tied", {"vocab": 11, "dim": 6, **options}, "reversible", tensors)


FAKE = revzoo.CheckpointFormat(
    name="fake", description="prefixes keys with old.", read=read_fake,
    write=lambda model: {"old." + k: v for k, v in model.state_dict().items()},
)


class TiedPlugin:
    """Registers the tied test architecture, the tiny one and the "fake" format."""

    @revzoo.hookimpl
    def register_architectures(self, register):
        register(TIED)
        register(tiny_spec())

    @revzoo.hookimpl
    def register_formats(self, register):
        register(FAKE)


def tokens() -> torch.Tensor:
    return torch.arange(10).reshape(2, 5) % 11


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def fail_with(error: BaseException):
    """Returns a function that raises `error` whatever it is called with: a stand-in that fails as a call would."""
    def fail(*args, **kwargs):
        raise error
    return fail


def interrupt_copy(monkeypatch) -> None:
    """Makes the streamed copy write part of its data, then be interrupted."""

    def interrupted(source, target, length, buffer, advance):
        target.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(revzoo.checkpoints._stream, "_copy_range", interrupted)
