"""DALLE-pytorch 1.6.6's and lie-transformer-pytorch 0.0.17's transformers, patched to revzoo.compat.lucidrains.

Needs the upstream packages (skipped without them), installed without their heavy extras:
    pip install --target DIR --no-deps dalle-pytorch==1.6.6 lie-transformer-pytorch==0.0.17 einops \
        rotary-embedding-torch==0.2.3 axial-positional-embedding==0.2.1
    PYTHONPATH=DIR pytest tests/compat/test_compat_lucidrains_upstream.py
The patched model loads the upstream model's state dict as it is, computes the same outputs, and its
gradients equal plain autograd's, also where upstream's own reversible.py gets them wrong.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest
import torch

from revzoo.compat import lucidrains

DTYPE = torch.float64


def _import_without_package_init(package: str, module: str) -> types.ModuleType:
    """Imports `package.module` without running `package/__init__.py` (DALLE-pytorch's imports VAEs, CLIP, ...)."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} is not installed")
    if package not in sys.modules:
        stub = types.ModuleType(package)
        stub.__path__ = list(spec.submodule_search_locations)
        sys.modules[package] = stub
    try:
        return importlib.import_module(f"{package}.{module}")
    except ImportError as err:
        pytest.skip(f"{package}.{module} needs {err.name}")


def _build(module: types.ModuleType, cls: str, patched: bool, monkeypatch: pytest.MonkeyPatch, **options):
    with monkeypatch.context() as patch:
        if patched:
            patch.setattr(module, "ReversibleSequence", lucidrains.ReversibleSequence)
            patch.setattr(module, "SequentialSequence", lucidrains.SequentialSequence)
        torch.manual_seed(0)
        return getattr(module, cls)(**options).to(DTYPE)


def _output_and_grads(model: torch.nn.Module, call) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Returns the output and the parameters' gradients, in parameter order (the same in both models)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    out = call()
    (out * torch.linspace(-1, 1, out.numel(), dtype=DTYPE).view_as(out)).sum().backward()
    return out.detach(), [p.grad for p in model.parameters()]


def _assert_grads_equal(got: list, want: list, atol: float = 1e-10) -> None:
    assert len(got) == len(want)
    for index, (one, other) in enumerate(zip(got, want)):
        assert (one is None) == (other is None), index
        if other is not None:
            assert torch.allclose(one, other, atol=atol, rtol=0), index


@pytest.fixture(scope="module")
def dalle_transformer() -> types.ModuleType:
    return _import_without_package_init("dalle_pytorch", "transformer")


@pytest.mark.parametrize("reversible", [True, False])
def test_dalle_transformer_patched_matches_upstream(dalle_transformer, monkeypatch, reversible: bool) -> None:
    options = dict(dim=16, depth=3, seq_len=4 + 16, heads=2, dim_head=8, attn_dropout=0.1, ff_dropout=0.1,
                   image_fmap_size=4, attn_types=("full", "full", "axial_row"), shift_tokens=True, rotary_emb=True,
                   shared_attn_ids=(0, 0, 1), reversible=reversible)
    upstream = _build(dalle_transformer, "Transformer", False, monkeypatch, **options)
    patched = _build(dalle_transformer, "Transformer", True, monkeypatch, **options)
    assert isinstance(patched.layers, lucidrains.ReversibleSequence if reversible else lucidrains.SequentialSequence)
    for tensor in patched.parameters():
        torch.nn.init.zeros_(tensor)
    patched.load_state_dict(upstream.state_dict())  # upstream's keys, strictly
    x = torch.randn(2, 20, 16, dtype=DTYPE, requires_grad=True)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 2:4] = False

    def run(model):
        return lambda: model(x, mask=mask)

    upstream_out, upstream_grads = _output_and_grads(upstream, run(upstream))
    out, grads = _output_and_grads(patched, run(patched))
    assert torch.allclose(out, upstream_out, atol=1e-12, rtol=0)  # same function, same dropout draws
    patched.layers.execution = "autograd"
    _, autograd_grads = _output_and_grads(patched, run(patched))
    _assert_grads_equal(grads, autograd_grads)
    _assert_grads_equal(upstream_grads, autograd_grads, atol=1e-8)  # upstream is right here


@pytest.fixture(scope="module")
def lie_transformer() -> types.ModuleType:
    return _import_without_package_init("lie_transformer_pytorch", "lie_transformer_pytorch")


@pytest.mark.parametrize("reversible", [True, False])
def test_lie_transformer_patched_matches_upstream(lie_transformer, monkeypatch, reversible: bool) -> None:
    options = dict(dim=8, depth=2, heads=2, dim_head=4, nbhd=6, liftsamples=2, fill=0.5, reversible=reversible)
    upstream = _build(lie_transformer, "LieTransformer", False, monkeypatch, **options)
    patched = _build(lie_transformer, "LieTransformer", True, monkeypatch, **options)
    patched.load_state_dict(upstream.state_dict())
    feats = torch.randn(2, 6, 8, dtype=DTYPE)  # features that do not require grad, as data usually is
    coords = torch.randn(2, 6, 3, dtype=DTYPE)
    mask = torch.ones(2, 6, dtype=torch.bool)

    def run(model):
        return lambda: model(feats, coords, mask=mask)

    upstream_out, upstream_grads = _output_and_grads(upstream, run(upstream))
    out, grads = _output_and_grads(patched, run(patched))
    assert torch.allclose(out, upstream_out, atol=1e-12, rtol=0)
    patched.net.execution = "autograd"
    _, autograd_grads = _output_and_grads(patched, run(patched))
    _assert_grads_equal(grads, autograd_grads)
    in_blocks = [name.startswith("net.") for name, _ in upstream.named_parameters()]
    assert all(grad is not None for grad, inside in zip(autograd_grads, in_blocks) if inside)
    if reversible:  # upstream's reversible.py: no input requires grad, so no block weight gets a gradient
        assert all(grad is None for grad, inside in zip(upstream_grads, in_blocks) if inside)
    else:
        _assert_grads_equal(upstream_grads, autograd_grads)
