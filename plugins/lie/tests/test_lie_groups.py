"""Group maths of the Lie-transformer plugin: rotation log/exp, lifting, pair coordinates, neighbourhoods."""

from __future__ import annotations

import math

import pytest
import torch
from revzoo_lie.groups import SE3, SO3, T3
from revzoo_lie.neighbourhood import find_neighbourhood
from revzoo_lie.rotations import hat, random_rotations, se3_translation_log, so3_exp, so3_log

DTYPE = torch.float64



def _axes(count: int) -> torch.Tensor:
    axes = torch.randn(count, 3, dtype=DTYPE)
    return axes / axes.norm(dim=-1, keepdim=True)


def test_so3_log_inverts_exp_at_all_angles_including_zero_and_half_turn():
    torch.manual_seed(0)
    angles = torch.cat(
        [
            torch.rand(200, dtype=DTYPE) * math.pi,
            torch.logspace(-9, -1, 50, dtype=DTYPE),
            math.pi - torch.logspace(-9, -1, 50, dtype=DTYPE),
            torch.zeros(1, dtype=DTYPE),
        ]
    )
    omega = _axes(len(angles)) * angles[:, None]
    rotation = so3_exp(omega)
    assert torch.allclose(rotation, torch.linalg.matrix_exp(hat(omega)), atol=1e-13)
    assert torch.allclose(so3_log(rotation), omega, atol=1e-12)


def test_so3_log_gradients_are_finite_and_correct_on_the_manifold():
    torch.manual_seed(1)
    base = torch.cat(
        [
            random_rotations((8,), dtype=DTYPE),
            so3_exp(_axes(3) * torch.tensor([0.0, 1e-6, math.pi - 1e-4], dtype=DTYPE)[:, None]),
        ]
    )
    tangent = (torch.randn(len(base), 3, dtype=DTYPE) * 1e-3).requires_grad_()
    assert torch.autograd.gradcheck(lambda w: so3_log(so3_exp(w) @ base), (tangent,))
    identity = torch.eye(3, dtype=DTYPE).expand(4, 3, 3).clone().requires_grad_()
    so3_log(identity).sum().backward()
    assert torch.isfinite(identity.grad).all()


def test_se3_translation_log_inverts_the_exponential():
    torch.manual_seed(2)
    for scale in (1.0, 1e-4, 3.0):
        omega = _axes(6) * scale
        translation = torch.randn(6, 3, dtype=DTYPE)
        algebra = torch.zeros(6, 4, 4, dtype=DTYPE)
        algebra[:, :3, :3] = hat(omega)
        algebra[:, :3, 3] = se3_translation_log(omega, translation)
        assert torch.allclose(torch.linalg.matrix_exp(algebra)[:, :3, 3], translation, atol=1e-12)


@pytest.mark.parametrize("group", [SE3(), SO3(), T3()], ids=lambda g: g.name)
def test_pair_coordinates_are_invariant_under_the_group(group):
    torch.manual_seed(3)
    coords = torch.randn(2, 5, 3, dtype=DTYPE)
    samples = 3 if group.has_stabiliser else 1
    rotations = random_rotations((2, 5, samples), dtype=DTYPE)
    rotation = random_rotations((), dtype=DTYPE) if group.name != "T3" else torch.eye(3, dtype=DTYPE)
    shift = torch.randn(3, dtype=DTYPE) if group.name != "SO3" else torch.zeros(3, dtype=DTYPE)

    def pairs(points, samples_):
        elements = group.lift(points, samples_)
        return group.pair_coordinates(elements[:, :, None], elements[:, None, :])

    before = pairs(coords, rotations)
    after = pairs(coords @ rotation.T + shift, rotation @ rotations)
    assert before.shape[-1] == group.pair_dim
    assert torch.allclose(before, after, atol=1e-12)


def test_se3_pair_coordinates_are_the_logarithm_of_the_relative_motion():
    torch.manual_seed(4)
    coords = torch.randn(1, 4, 3, dtype=DTYPE)
    rotations = random_rotations((1, 4, 1), dtype=DTYPE)
    group = SE3()
    elements = group.lift(coords, rotations)
    pairs = group.pair_coordinates(elements[:, :, None], elements[:, None, :])[0]

    def matrix(index):
        out = torch.eye(4, dtype=DTYPE)
        out[:3, :3] = rotations[0, index, 0]
        out[:3, 3] = coords[0, index]
        return out

    for query in range(4):
        for key in range(4):
            algebra = torch.zeros(4, 4, dtype=DTYPE)
            algebra[:3, :3] = hat(pairs[query, key, :3])
            algebra[:3, 3] = pairs[query, key, 3:]
            expected = torch.linalg.inv(matrix(query)) @ matrix(key)
            assert torch.allclose(torch.linalg.matrix_exp(algebra), expected, atol=1e-12)


def test_neighbourhood_is_the_nearest_valid_elements_when_the_ball_is_small():
    torch.manual_seed(5)
    group = T3()
    coords = torch.randn(1, 10, 3, dtype=DTYPE)
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[0, 7:] = False
    hood = find_neighbourhood(group, coords, mask, nbhd=4, fill=0.1, noise=torch.rand(1, 10, 10, dtype=DTYPE))
    distance = torch.cdist(coords, coords).masked_fill(~mask[:, None, :], math.inf)
    nearest = distance.topk(4, largest=False).indices
    assert torch.equal(hood.index.sort(-1).values, nearest.sort(-1).values)
    assert hood.valid.all()  # 7 valid points, 4 neighbours: all slots are real neighbours


def test_neighbourhood_mask_keeps_exactly_the_valid_neighbours():
    torch.manual_seed(6)
    group = SE3()
    coords = torch.randn(2, 6, 3, dtype=DTYPE)
    elements = group.lift(coords, random_rotations((2, 6, 2), dtype=DTYPE))
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 8:] = False
    hood = find_neighbourhood(group, elements, mask, nbhd=12, fill=1.0, noise=torch.rand(2, 12, 12, dtype=DTYPE))
    key_is_valid = mask.gather(1, hood.index.flatten(1)).view_as(hood.index)
    # lie-transformer-pytorch 0.0.17 masks the valid keys instead (every slot False).
    assert torch.equal(hood.valid, key_is_valid)
    assert hood.valid[0].all() and hood.valid[1].sum(-1).eq(8).all()


def test_neighbourhood_draws_from_the_ball_with_the_given_noise():
    torch.manual_seed(7)
    group = T3()
    coords = torch.randn(1, 12, 3, dtype=DTYPE)
    mask = torch.ones(1, 12, dtype=torch.bool)
    noise = torch.rand(1, 12, 12, dtype=DTYPE)
    first = find_neighbourhood(group, coords, mask, nbhd=3, fill=0.5, noise=noise)
    again = find_neighbourhood(group, coords, mask, nbhd=3, fill=0.5, noise=noise.clone())
    other = find_neighbourhood(group, coords, mask, nbhd=3, fill=0.5, noise=torch.rand(1, 12, 12, dtype=DTYPE))
    assert torch.equal(first.index, again.index)
    assert not torch.equal(first.index.sort(-1).values, other.index.sort(-1).values)
    ball = torch.cdist(coords, coords).argsort(-1)[..., :6]  # fill 0.5 of 12 points
    assert all(set(first.index[0, q].tolist()) <= set(ball[0, q].tolist()) for q in range(12))
