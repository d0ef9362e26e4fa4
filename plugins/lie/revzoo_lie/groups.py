"""The groups a point cloud is lifted to: SE(3), SO(3) and T(3).

An element is stored as a flat feature vector (``element_size`` numbers) so that gathering
neighbours is the same indexing for every group:

- SE(3): rotation (9, row-major) and translation (3): the point with a sampled rotation.
- SO(3): a rotation mapping e_z to the point's direction (9) and the point's radius (1): SO(3)
  acts on R^3 with orbits the spheres, so the radius is the orbit label LieConv calls ``q``.
- T(3): the point itself (the stabiliser is trivial, one element per point).

``pair_coordinates(u, v)`` returns ``log(u^-1 v)`` in Lie-algebra coordinates (rotation first,
then translation), plus the orbit labels for SO(3); it is invariant when u and v are moved by the
same group element, which is what makes attention over it equivariant.
"""

from __future__ import annotations

import torch

from .rotations import se3_translation_log, so3_log

GROUP_NAMES = ("SE3", "SO3", "T3")

# Weight of the rotation part in the group distance (lie-transformer-pytorch's alpha).
ROTATION_DISTANCE_WEIGHT = 0.2


class LieGroup:
    """Base of the three groups; subclasses fill in the per-group maths."""

    name: str
    element_size: int
    pair_dim: int
    has_stabiliser: bool = True

    def lift(self, coords: torch.Tensor, rotations: torch.Tensor | None) -> torch.Tensor:
        """Returns the elements ``(batch, points * samples, element_size)``; the samples of one point are adjacent.

        Args:
            coords: points ``(batch, points, 3)``.
            rotations: stabiliser samples ``(batch, points, samples, 3, 3)``; None for T(3).
        """
        raise NotImplementedError

    def pair_coordinates(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """Returns ``log(query^-1 key)`` ``(..., pair_dim)`` for broadcastable element tensors."""
        raise NotImplementedError

    def distance(self, pairs: torch.Tensor) -> torch.Tensor:
        """Returns the group distance ``(...)`` of pair coordinates ``(..., pair_dim)``."""
        raise NotImplementedError


def _relative_rotation(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    query_rotation = query[..., :9].unflatten(-1, (3, 3))
    key_rotation = key[..., :9].unflatten(-1, (3, 3))
    return query_rotation.transpose(-1, -2) @ key_rotation


class SE3(LieGroup):
    """Rigid motions: an element is (sampled rotation, point)."""

    name = "SE3"
    element_size = 12
    pair_dim = 6

    def lift(self, coords: torch.Tensor, rotations: torch.Tensor | None) -> torch.Tensor:
        batch, points, samples = rotations.shape[:3]
        translation = coords[:, :, None, :].expand(batch, points, samples, 3)
        elements = torch.cat((rotations.flatten(-2), translation), dim=-1)
        return elements.reshape(batch, points * samples, self.element_size)

    def pair_coordinates(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        relative = _relative_rotation(query, key)
        query_rotation = query[..., :9].unflatten(-1, (3, 3))
        offset = query_rotation.transpose(-1, -2) @ (key[..., 9:] - query[..., 9:])[..., None]
        omega = so3_log(relative)
        return torch.cat((omega, se3_translation_log(omega, offset.squeeze(-1))), dim=-1)

    def distance(self, pairs: torch.Tensor) -> torch.Tensor:
        rotation = pairs[..., :3].norm(dim=-1)
        translation = pairs[..., 3:].norm(dim=-1)
        return ROTATION_DISTANCE_WEIGHT * rotation + (1 - ROTATION_DISTANCE_WEIGHT) * translation


class SO3(LieGroup):
    """Rotations about the origin: an element is a rotation taking e_z to the point's direction.

    The sample r fixes the rest of the frame (its first column, projected orthogonally to the
    direction), so rotating the cloud and the samples together rotates the elements: the lift
    is equivariant and the samples cover the stabiliser (rotations about the direction).
    """

    name = "SO3"
    element_size = 10
    pair_dim = 5

    def lift(self, coords: torch.Tensor, rotations: torch.Tensor | None) -> torch.Tensor:
        batch, points, samples = rotations.shape[:3]
        radius = coords.norm(dim=-1, keepdim=True)
        # A point at the origin has no direction: use the sample's own e_z (still equivariant).
        safe_radius = torch.where(radius > 1e-12, radius, torch.ones_like(radius))
        direction = torch.where(radius > 1e-12, coords / safe_radius, torch.zeros_like(coords))
        direction = direction[:, :, None, :].expand(batch, points, samples, 3)
        direction = torch.where(radius[:, :, None] > 1e-12, direction, rotations[..., :, 2])
        # Second frame axis from whichever sample column is further from the direction.
        first, second = rotations[..., :, 0], rotations[..., :, 1]
        use_first = (first * direction).sum(-1, keepdim=True).abs() <= (second * direction).sum(-1, keepdim=True).abs()
        seed = torch.where(use_first, first, second)
        x_axis = seed - (seed * direction).sum(-1, keepdim=True) * direction
        x_axis = x_axis / x_axis.norm(dim=-1, keepdim=True)
        y_axis = torch.linalg.cross(direction, x_axis, dim=-1)
        frame = torch.stack((x_axis, y_axis, direction), dim=-1)
        orbit = radius[:, :, None, :].expand(batch, points, samples, 1)
        elements = torch.cat((frame.flatten(-2), orbit), dim=-1)
        return elements.reshape(batch, points * samples, self.element_size)

    def pair_coordinates(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        omega = so3_log(_relative_rotation(query, key))
        query_orbit, key_orbit = torch.broadcast_tensors(query[..., 9:], key[..., 9:])
        return torch.cat((omega, query_orbit, key_orbit), dim=-1)

    def distance(self, pairs: torch.Tensor) -> torch.Tensor:
        rotation = pairs[..., :3].norm(dim=-1)
        radial = (pairs[..., 4] - pairs[..., 3]).abs()
        return ROTATION_DISTANCE_WEIGHT * rotation + (1 - ROTATION_DISTANCE_WEIGHT) * radial


class T3(LieGroup):
    """Translations: an element is the point; its stabiliser is trivial, so one sample per point."""

    name = "T3"
    element_size = 3
    pair_dim = 3
    has_stabiliser = False

    def lift(self, coords: torch.Tensor, rotations: torch.Tensor | None) -> torch.Tensor:
        return coords

    def pair_coordinates(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return key - query

    def distance(self, pairs: torch.Tensor) -> torch.Tensor:
        return pairs.norm(dim=-1)


def group_from_name(name: str) -> LieGroup:
    """Returns the group called ``name`` (one of GROUP_NAMES)."""
    groups = {"SE3": SE3, "SO3": SO3, "T3": T3}
    if name not in groups:
        raise ValueError(f"unknown group {name!r}; valid: {', '.join(GROUP_NAMES)}")
    return groups[name]()
