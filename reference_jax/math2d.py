"""2D vector helpers shared by every stage of the reference engine (float32, single vectors)."""

import math

import jax.numpy as jnp

HALF_PI = math.pi / 2.0


def rotate(angle, v):
    """``R(angle) @ v`` with ``R = [[cos, -sin], [sin, cos]]``."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], axis=-1)


def unrotate(angle, v):
    """``R(angle).T @ v``: world direction into the frame rotated by ``angle``."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    return jnp.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1]], axis=-1)


def cross(a, b):
    """z of the 3D cross product of two 2D vectors."""
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def spin_velocity(w, r):
    """Velocity of a point at offset ``r`` on a body spinning at ``w`` rad/s: ``w x r``."""
    return jnp.stack([-w * r[..., 1], w * r[..., 0]], axis=-1)


def tangent_of(normal):
    """The contact tangent ``normal x 1``: the normal turned clockwise."""
    return jnp.stack([normal[..., 1], -normal[..., 0]], axis=-1)


def dot(a, b):
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]


def norm(v):
    return jnp.sqrt(dot(v, v))


def nonzero(x):
    """``x`` with exact zeros replaced by one: a safe divisor for masked-out (inactive) entries."""
    return jnp.where(x == 0, jnp.ones_like(x), x)
