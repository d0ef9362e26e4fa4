"""Rotation-group maths on batched 3x3 matrices: sampling, hat/vee, and a logarithm that stays
finite (values and gradients) at the identity and near a half turn.

The lifting draws random stabiliser elements and the pair coordinates need ``log`` of relative
rotations, including the identity (every element paired with itself), so the usual
``theta / sin(theta)`` formula is split in three regimes, each evaluated on safe inputs so that
``torch.where`` never routes a NaN gradient.
"""

from __future__ import annotations

import torch

# Below this squared sine, theta / sin(theta) uses its series (error O(s^6) < 1e-18).
_SMALL_SIN_SQUARED = 1e-6
# Below this cosine (theta > 2 pi / 3) the axis is read from the symmetric part instead.
_NEAR_HALF_TURN_COS = -0.5


def random_rotations(
    shape: tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Returns Haar-uniform rotation matrices of shape ``(*shape, 3, 3)`` (normalised Gaussian quaternions)."""
    quaternion = torch.randn((*shape, 4), generator=generator, dtype=dtype, device=device)
    quaternion = quaternion / quaternion.norm(dim=-1, keepdim=True)
    return quaternion_to_matrix(quaternion)


def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """Returns the rotation matrices ``(..., 3, 3)`` of unit quaternions ``(..., 4)`` given as (w, x, y, z)."""
    w, x, y, z = quaternion.unbind(-1)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def hat(vector: torch.Tensor) -> torch.Tensor:
    """Returns the skew matrices ``(..., 3, 3)`` with ``hat(a) @ b == cross(a, b)``."""
    x, y, z = vector.unbind(-1)
    zero = torch.zeros_like(x)
    rows = ((zero, -z, y), (z, zero, -x), (-y, x, zero))
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def vee_of_antisymmetric_part(matrix: torch.Tensor) -> torch.Tensor:
    """Returns ``vee((M - M^T) / 2)``, i.e. ``sin(theta) * axis`` for a rotation ``M``."""
    return 0.5 * torch.stack(
        (
            matrix[..., 2, 1] - matrix[..., 1, 2],
            matrix[..., 0, 2] - matrix[..., 2, 0],
            matrix[..., 1, 0] - matrix[..., 0, 1],
        ),
        dim=-1,
    )


def so3_log(rotation: torch.Tensor) -> torch.Tensor:
    """Returns the rotation vectors ``theta * axis`` ``(..., 3)`` of rotation matrices ``(..., 3, 3)``."""
    sine_axis = vee_of_antisymmetric_part(rotation)
    trace = rotation[..., 0, 0] + rotation[..., 1, 1] + rotation[..., 2, 2]
    cosine = ((trace - 1) / 2).clamp(-1.0, 1.0)
    sine_squared = (sine_axis * sine_axis).sum(-1)

    small = (sine_squared < _SMALL_SIN_SQUARED) & (cosine > 0)
    half_turn = cosine < _NEAR_HALF_TURN_COS
    sine = torch.sqrt(torch.where(small, torch.ones_like(sine_squared), sine_squared))
    theta = torch.atan2(sine, cosine)

    # Regimes 1 and 2: omega = (theta / sin theta) * sin(theta) axis; series of arcsin(s)/s near 0.
    series = 1 + sine_squared / 6 + 3 * sine_squared * sine_squared / 40
    generic_sine = torch.where(half_turn, torch.ones_like(sine), sine)
    ratio = torch.where(small, series, theta / generic_sine)
    omega_generic = ratio[..., None] * sine_axis

    # Regime 3: (R + R^T)/2 - cos I = (1 - cos) a a^T; read the axis from its largest diagonal entry.
    one_minus_cos = torch.where(half_turn, 1 - cosine, torch.ones_like(cosine))
    eye = torch.eye(3, dtype=rotation.dtype, device=rotation.device)
    outer = (0.5 * (rotation + rotation.transpose(-1, -2)) - cosine[..., None, None] * eye) / one_minus_cos[..., None, None]
    diagonal = torch.diagonal(outer, dim1=-2, dim2=-1)
    pivot = diagonal.argmax(-1, keepdim=True)
    pivot_value = diagonal.gather(-1, pivot).squeeze(-1)
    pivot_value = torch.where(half_turn, pivot_value, torch.ones_like(pivot_value)).clamp_min(1e-12)
    column = outer.gather(-1, pivot[..., None, :].expand(*outer.shape[:-1], 1)).squeeze(-1)
    axis = column / torch.sqrt(pivot_value)[..., None]
    sign = torch.where((axis * sine_axis).sum(-1) < 0, -1.0, 1.0).to(axis.dtype)
    omega_half_turn = (sign * theta)[..., None] * axis

    return torch.where(half_turn[..., None], omega_half_turn, omega_generic)


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Returns ``exp(hat(omega))`` ``(..., 3, 3)`` by Rodrigues' formula (series near zero)."""
    theta_squared = (omega * omega).sum(-1)
    small = theta_squared < _SMALL_SIN_SQUARED
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_squared), theta_squared))
    sinc = torch.where(small, 1 - theta_squared / 6 + theta_squared**2 / 120, torch.sin(theta) / theta)
    cosc = torch.where(small, 0.5 - theta_squared / 24 + theta_squared**2 / 720, 2 * torch.sin(theta / 2) ** 2 / theta**2)
    skew = hat(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + sinc[..., None, None] * skew + cosc[..., None, None] * (skew @ skew)


def se3_translation_log(omega: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Returns ``V(omega)^-1 @ translation``, the translation part of the SE(3) logarithm."""
    theta_squared = (omega * omega).sum(-1)
    small = theta_squared < 1e-4
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_squared), theta_squared))
    half = theta / 2
    full = (1 - half * torch.cos(half) / torch.sin(half)) / theta**2  # half angles avoid 1 - cos cancellation
    series = 1 / 12 + theta_squared / 720 + theta_squared**2 / 30240
    coefficient = torch.where(small, series, full)
    skew = hat(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    inverse_v = eye - 0.5 * skew + coefficient[..., None, None] * (skew @ skew)
    return (inverse_v @ translation[..., None]).squeeze(-1)
