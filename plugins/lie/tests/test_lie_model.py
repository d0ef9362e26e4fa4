"""LieTransformer model: registration, equivariance in both forms, Monte Carlo equivariance,
invert-vs-autograd gradients, config validation."""

from __future__ import annotations

import pytest
import revzoo_lie
import torch
from revzoo_lie import build_lie_transformer
from revzoo_lie.rotations import random_rotations

import revzoo

DTYPE = torch.float64
FORMS = ("reversible", "sequential")
TINY = dict(dim=8, heads=2, dim_head=4, depth=2, dim_out=3, nbhd=12, fill=0.5, liftsamples=2)



def _tiny(form: str = "reversible", **overrides) -> revzoo_lie.LieTransformer:
    torch.manual_seed(0)
    return build_lie_transformer(form=form, **{**TINY, **overrides}).to(DTYPE)


def _cloud(batch: int = 2, points: int = 6, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, points, 8, generator=generator, dtype=DTYPE)
    coords = torch.randn(batch, points, 3, generator=generator, dtype=DTYPE)
    mask = torch.ones(batch, points, dtype=torch.bool)
    mask[-1, -2:] = False
    return feats, coords, mask


def _seeded(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registered_in_both_forms_and_validates_config(register_plugin):
    register_plugin(revzoo_lie, name="lie")
    assert {"lie-transformer", "lie-transformer-rev"} <= set(revzoo.list_models("lie*"))
    model = revzoo.create("lie-transformer-rev", **TINY)
    assert revzoo.get_form(model) == "reversible"
    assert revzoo.get_form(revzoo.create("lie-transformer", **TINY)) == "sequential"
    for bad in ({"group": "E8"}, {"fill": 0.0}, {"group": "T3", "liftsamples": 2}, {"heads": 0}, {"num_edge_types": 3}):
        with pytest.raises(revzoo.ConfigError):
            revzoo.create("lie-transformer", **{**TINY, **bad})


@pytest.mark.parametrize(
    "group, form, nbhd, fill",
    [
        ("SE3", "reversible", 12, 0.5),  # every element is a neighbour
        ("SE3", "sequential", 12, 0.5),
        ("SO3", "reversible", 12, 0.5),
        ("SO3", "sequential", 12, 0.5),
        ("SE3", "reversible", 4, 0.25),  # the 4 nearest
        ("SO3", "sequential", 4, 1.0),  # a random 4 of 12
    ],
)
def test_invariant_to_rigid_motion_when_the_lift_samples_move_with_the_cloud(form, group, nbhd, fill):
    model = _tiny(form, group=group, edge_dim=2, nbhd=nbhd, fill=fill)
    feats, coords, mask = _cloud()
    edges = torch.randn(2, 6, 6, 2, dtype=DTYPE)
    rotations = random_rotations((2, 6, 2), generator=_seeded(3), dtype=DTYPE)
    rotation = random_rotations((), generator=_seeded(4), dtype=DTYPE)
    shift = torch.randn(3, dtype=DTYPE) if group == "SE3" else torch.zeros(3, dtype=DTYPE)
    moved = coords @ rotation.T + shift
    for pooled in (False, True):
        before = model(feats, coords, edges, mask=mask, return_pooled=pooled, rotations=rotations, generator=_seeded())
        after = model(
            feats, moved, edges, mask=mask, return_pooled=pooled, rotations=rotation @ rotations, generator=_seeded()
        )
        assert before.shape == ((2, 3) if pooled else (2, 6, 3))
        assert before.abs().max() > 1e-3
        assert torch.allclose(before, after, atol=1e-11, rtol=0), (after - before).abs().max()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("group", ["SE3", "T3"])
def test_translation_invariance_is_exact(form, group):
    model = _tiny(form, group=group, liftsamples=2 if group == "SE3" else 1)
    feats, _, mask = _cloud()
    # dyadic coordinates and an integer shift: every difference is exact, so equality is bitwise
    coords = torch.randint(-64, 64, (2, 6, 3)).to(DTYPE) / 32
    shift = torch.tensor([3.0, -5.0, 2.0], dtype=DTYPE)
    before = model(feats, coords, mask=mask, return_pooled=True, generator=_seeded())
    after = model(feats, coords + shift, mask=mask, return_pooled=True, generator=_seeded())
    assert torch.equal(before, after)


def test_monte_carlo_equivariance_error_falls_with_liftsamples():
    feats, coords, _ = _cloud(batch=4, points=5, seed=11)
    rotation = random_rotations((4,), generator=_seeded(12), dtype=DTYPE)
    moved = coords @ rotation.transpose(-1, -2)
    errors = {}
    for samples in (1, 4, 16):
        model = _tiny(liftsamples=samples, nbhd=1000, fill=1.0)
        trials = []
        for trial in range(3):
            with torch.no_grad():
                before = model(feats, coords, return_pooled=True, generator=_seeded(100 + trial))
                after = model(feats, moved, return_pooled=True, generator=_seeded(200 + trial))
            trials.append((after - before).norm(dim=-1) / before.norm(dim=-1))
        errors[samples] = torch.cat(trials).mean().item()
    print("relative SE(3) invariance error with fresh lifts, by liftsamples:", errors)
    assert errors[16] < errors[4] < errors[1]
    assert errors[16] < 0.6 * errors[1]


def test_same_generator_seed_same_output_and_fresh_seed_differs():
    model = _tiny(nbhd=4)
    feats, coords, mask = _cloud()
    first = model(feats, coords, mask=mask, generator=_seeded(5))
    assert torch.equal(first, model(feats, coords, mask=mask, generator=_seeded(5)))
    assert not torch.allclose(first, model(feats, coords, mask=mask, generator=_seeded(6)))


def _gradients(model, execution, inputs_factory, seed=9):
    revzoo.set_execution(model, execution)
    model.zero_grad(set_to_none=True)
    inputs = inputs_factory()
    torch.manual_seed(seed)
    out = model(**inputs, generator=_seeded())
    (out * torch.linspace(-1, 1, out.numel(), dtype=DTYPE).view_as(out)).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    grads.update(
        {f"input:{k}": v.grad.clone() for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.requires_grad}
    )
    return grads


@pytest.mark.parametrize("group, depth", [("SE3", 2), ("SO3", 3)])
def test_invert_gradients_equal_autograd_with_context_requiring_grad(group, depth):
    model = _tiny(group=group, depth=depth, edge_dim=2, nbhd=5, fill=1.0)  # a random 5 of 12 neighbours
    feats, coords, mask = _cloud()
    edges = torch.randn(2, 6, 6, 2, dtype=DTYPE)
    rotations = random_rotations((2, 6, 2), generator=_seeded(3), dtype=DTYPE)

    def inputs():
        return dict(
            feats=feats.clone().requires_grad_(),
            coors=coords.clone().requires_grad_(),
            edges=edges.clone().requires_grad_(),
            mask=mask,
            rotations=rotations.clone().requires_grad_(),
        )

    reference = _gradients(model, "autograd", inputs)
    inverted = _gradients(model, "invert", inputs)
    assert reference.keys() == inverted.keys()
    assert {"input:feats", "input:coors", "input:edges", "input:rotations"} <= set(inverted)
    for name, grad in reference.items():
        assert torch.allclose(inverted[name], grad, atol=1e-10, rtol=0), name
    nonzero = [name for name, grad in inverted.items() if grad.abs().max() > 1e-8]
    # the kernel's last bias shifts every logit equally: softmax makes its gradient zero
    assert set(inverted) - set(nonzero) <= {f"stack.blocks.{i}.f.attention.location_kernel.net.2.bias" for i in range(depth)}


def test_token_ids_and_edge_type_ids():
    model = _tiny(num_tokens=5, num_edge_types=3, edge_dim=2)
    feats = torch.randint(0, 5, (2, 6))
    edges = torch.randint(0, 3, (2, 6, 6))
    out = model(feats, torch.randn(2, 6, 3, dtype=DTYPE), edges, return_pooled=True, generator=_seeded())
    assert out.shape == (2, 3)
    with pytest.raises(ValueError, match="edges"):
        model(feats, torch.randn(2, 6, 3, dtype=DTYPE), generator=_seeded())


def test_check_reversible_and_example_inputs(register_plugin):
    register_plugin(revzoo_lie, name="lie")
    model = revzoo.create("lie-transformer-rev", **TINY, edge_dim=2).to(DTYPE)
    args, kwargs = revzoo_lie.example_inputs(model, _seeded(0))
    again_args, again_kwargs = revzoo_lie.example_inputs(model, _seeded(0))
    assert torch.equal(model(*args, **kwargs), model(*again_args, **again_kwargs))
    coords = args[1].clone().requires_grad_()
    report = revzoo.check_reversible(model, args[0], coords, args[2], mask=kwargs["mask"])
    assert report.max_grad_diff < 1e-10


def test_bad_inputs_are_refused_with_a_message():
    model = _tiny()
    feats, coords, _ = _cloud()
    with pytest.raises(ValueError, match="coors must have shape"):
        model(feats, coords[..., :2])
    with pytest.raises(ValueError, match="rotations must have shape"):
        model(feats, coords, rotations=torch.eye(3, dtype=DTYPE).expand(2, 6, 3, 3, 3))
    with pytest.raises(ValueError, match="mask must have shape"):
        model(feats, coords, mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="no edge_dim"):
        model(feats, coords, torch.randn(2, 6, 6, 2, dtype=DTYPE))


def test_autocast_keeps_the_group_maths_in_float32():
    torch.manual_seed(0)
    model = build_lie_transformer(form="reversible", **TINY, edge_dim=2)
    feats, coords = torch.randn(2, 6, 8), torch.randn(2, 6, 3)
    edges = torch.randn(2, 6, 6, 2)
    reference = model(feats, coords, edges, return_pooled=True, generator=_seeded())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(feats, coords, edges, return_pooled=True, generator=_seeded())
    out.float().square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert torch.allclose(out.float(), reference, atol=0.05)
