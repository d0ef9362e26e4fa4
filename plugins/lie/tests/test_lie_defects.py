"""One test per lie-transformer-pytorch 0.0.17 defect that revzoo's LieTransformer fixes."""

from __future__ import annotations

import pytest
import torch
from revzoo_lie import build_lie_transformer
from revzoo_lie.model import STREAM_LAYOUT

import revzoo

DTYPE = torch.float64
TINY = dict(dim=8, heads=2, dim_head=4, depth=2, dim_out=3, nbhd=6, fill=0.5, liftsamples=2)



def _tiny(form: str = "reversible", **overrides):
    torch.manual_seed(0)
    return build_lie_transformer(form=form, **{**TINY, **overrides}).to(DTYPE)


def _seeded(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cloud(batch: int = 2, points: int = 6):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, points, 8, generator=generator, dtype=DTYPE), torch.randn(
        batch, points, 3, generator=generator, dtype=DTYPE
    )


def test_mask_none_works_and_means_every_point_is_valid():
    model = _tiny()
    feats, coords = _cloud()
    without = model(feats, coords, generator=_seeded())
    with_all = model(feats, coords, mask=torch.ones(2, 6, dtype=torch.bool), generator=_seeded())
    assert torch.equal(without, with_all)


@pytest.mark.parametrize("mean", [True, False])
def test_return_pooled_works_and_pools_the_valid_points(mean):
    model = _tiny(mean=mean)
    feats, coords = _cloud()
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    per_point = model(feats, coords, mask=mask, generator=_seeded())
    pooled = model(feats, coords, mask=mask, return_pooled=True, generator=_seeded())
    assert pooled.shape == (2, 3)
    assert per_point[1, 4:].abs().max() == 0
    expected = per_point.sum(1) / (mask.sum(1, keepdim=True) if mean else 1)
    assert torch.allclose(pooled, expected, atol=1e-14)


def test_sequential_form_adds_each_residual_once():
    model = _tiny("sequential", depth=1)
    block = model.stack.blocks[0]
    values = torch.randn(1, 4, 8, dtype=DTYPE)
    coords = torch.randn(1, 4, 3, 6, dtype=DTYPE)
    mask = torch.ones(1, 4, dtype=torch.bool)
    index = torch.tensor([[[0, 1, 2], [1, 2, 3], [2, 3, 0], [3, 0, 1]]])
    valid = torch.ones(1, 4, 3, dtype=torch.bool)
    context = dict(coords=coords, mask=mask, edges=None, neighbour_index=index, neighbour_mask=valid)
    _, out, _, _ = model.stack((coords, values, mask, None), neighbour_index=index, neighbour_mask=valid)
    after_f = values + block.f(values, **context)
    assert torch.allclose(out, after_f + block.g(after_f), atol=1e-14)
    # lie-transformer-pytorch's branches return x + branch(x) and its stack adds x again: 2x + branch(x)
    assert not torch.allclose(out, 2 * after_f + block.g(after_f), atol=1e-3)


@pytest.mark.parametrize("execution", ["invert", "autograd"])
@pytest.mark.parametrize("tokens", [False, True])
def test_weights_get_gradients_when_no_input_requires_grad(execution, tokens):
    model = _tiny(num_tokens=5 if tokens else None)
    revzoo.set_execution(model, execution)
    feats, coords = _cloud()
    if tokens:
        feats = torch.randint(0, 5, (2, 6))
    assert not feats.requires_grad and not coords.requires_grad
    model(feats, coords, return_pooled=True, generator=_seeded()).pow(2).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    # only the kernel's output bias, which shifts every logit alike (softmax-invariant), has zero gradient
    assert all(name.endswith("location_kernel.net.2.bias") for name in missing), missing


def test_no_buffer_or_attribute_changes_in_forward_or_recompute():
    model = _tiny()
    model.train()
    assert list(model.buffers()) == []  # no radius buffer to drift
    before = {name: t.clone() for name, t in model.state_dict().items()}
    attributes = {key: value for key, value in vars(model).items() if not key.startswith("_")}
    feats, coords = _cloud()
    for _ in range(2):
        model(feats.requires_grad_(), coords, return_pooled=True, generator=_seeded()).sum().backward()
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert attributes == {key: value for key, value in vars(model).items() if not key.startswith("_")}


def test_padded_points_do_not_reach_valid_outputs():
    model = _tiny(nbhd=100, fill=1.0)
    feats, coords = _cloud()
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    out = model(feats, coords, mask=mask, generator=_seeded())
    feats2, coords2 = feats.clone(), coords.clone()
    feats2[1, 4:] = 100.0
    coords2[1, 4:] = -50.0
    out2 = model(feats2, coords2, mask=mask, generator=_seeded())
    assert torch.allclose(out, out2, atol=1e-13)


def test_attention_uses_the_neighbourhood():
    """lie-transformer-pytorch 0.0.17 masks every valid neighbour, so attention is uniform whatever
    the location kernel says; here the kernel's output changes the result."""
    model = _tiny(depth=1)
    feats, coords = _cloud()
    out = model(feats, coords, generator=_seeded())
    with torch.no_grad():
        model.stack.blocks[0].f.attention.location_kernel.net[2].weight.mul_(5.0)
    assert not torch.allclose(out, model(feats, coords, generator=_seeded()), atol=1e-6)


def test_stream_layout_is_declared():
    assert STREAM_LAYOUT.stream == "values"
    assert STREAM_LAYOUT.fields == ("coords", "values", "mask", "edges")
