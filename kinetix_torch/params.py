"""Static sizes and dynamic parameters of a Kinetix environment.

Names and defaults follow upstream Kinetix (``StaticEnvParams`` / ``EnvParams``), which are also the
keys of the ``static_env_params`` / ``env_params`` objects of the JSON level format.

* :class:`StaticEnvParams` changes array shapes or compiled code (a JAX static argument, Triton
  constexprs). Two equal objects hash equally, so an equal but new object never recompiles.
* :class:`EnvParams` is plain data: engines take its values as runtime scalars, so switching between
  different values never recompiles either.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, fields

__all__ = ["StaticEnvParams", "EnvParams", "ENV_SIZES", "PHYSICS_PARAM_NAMES", "static_params_for_size"]


@dataclass(frozen=True)
class StaticEnvParams:
    """Sizes and compile-time switches. Frozen: hashes and compares by value."""

    num_polygons: int = 12
    """Polygon slots, including the ``num_static_fixated_polys`` scene pieces (floor, walls, ceiling)."""
    num_circles: int = 12
    """Circle slots."""
    num_joints: int = 12
    """Joint slots (revolute or fixed)."""
    num_thrusters: int = 12
    """Thruster slots."""
    max_polygon_vertices: int = 4
    """Vertex slots per polygon (polygons have 3 or 4 live vertices)."""
    num_solver_iterations: int = 10
    """Sequential-impulse iterations per engine step."""
    solver_batch_size: int = 16
    """Contacts solved together (Jacobi) in one solver batch; batches run one after the other."""
    do_warm_starting: bool = True
    """Seed contact and joint impulses from the previous engine step."""
    num_static_fixated_polys: int = 4
    """Leading polygon slots that never collide with each other (floor, two walls, ceiling)."""
    screen_dim: tuple[int, int] = (500, 500)
    """Rendered screen size in pixels (before ``downscale``)."""
    downscale: int = 4
    """Pixel observations are ``screen_dim / downscale``."""
    frame_skip: int = 1
    """Engine steps per env step (the S/M/L presets use 2)."""
    max_shape_size: int = 2
    """Largest shape extent, in world units, that generators and editors allow."""
    num_motor_bindings: int = 4
    """Motor action slots; each joint is bound to one."""
    num_thruster_bindings: int = 2
    """Thruster action slots; each thruster is bound to one."""

    def __post_init__(self):
        object.__setattr__(self, "screen_dim", tuple(int(v) for v in self.screen_dim))
        for name in ("num_polygons", "num_circles", "num_joints", "num_thrusters"):
            if getattr(self, name) < 0:
                raise ValueError(f"StaticEnvParams.{name} must be >= 0, got {getattr(self, name)}")
        if self.num_polygons < self.num_static_fixated_polys:
            raise ValueError(
                f"StaticEnvParams.num_polygons ({self.num_polygons}) must be at least "
                f"num_static_fixated_polys ({self.num_static_fixated_polys})"
            )
        if self.solver_batch_size < 1 or self.num_solver_iterations < 0:
            raise ValueError("StaticEnvParams.solver_batch_size must be >= 1 and num_solver_iterations >= 0")
        for name in ("frame_skip", "downscale", "max_polygon_vertices"):
            if getattr(self, name) < 1:
                raise ValueError(f"StaticEnvParams.{name} must be >= 1, got {getattr(self, name)}")
        if len(self.screen_dim) != 2 or min(self.screen_dim) < 1:
            raise ValueError(f"StaticEnvParams.screen_dim must be two sizes >= 1 pixel, got {self.screen_dim}")

    # Derived counts, named as in the state schema.
    @property
    def num_shapes(self) -> int:
        """Shapes in the global index: polygons first, then circles."""
        return self.num_polygons + self.num_circles

    @property
    def num_rr_pairs(self) -> int:
        """Polygon-polygon pairs (i < j), without pairs of two static fixated polygons."""
        p, f = self.num_polygons, self.num_static_fixated_polys
        return p * (p - 1) // 2 - f * (f - 1) // 2

    @property
    def num_cr_pairs(self) -> int:
        """Circle-polygon pairs, circle-major."""
        return self.num_circles * self.num_polygons

    @property
    def num_cc_pairs(self) -> int:
        """Circle-circle pairs (i < j)."""
        return self.num_circles * (self.num_circles - 1) // 2

    @property
    def action_dim(self) -> int:
        """Length of the processed (unified) action given to the engine: joints, then thrusters."""
        return self.num_joints + self.num_thrusters

    def replace(self, **changes) -> "StaticEnvParams":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["screen_dim"] = list(self.screen_dim)
        return d

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "static_env_params") -> "StaticEnvParams":
        values = _known_fields(cls, d, where)
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    def fits_in(self, other: "StaticEnvParams") -> bool:
        """Whether a level of these sizes can be padded into ``other``."""
        return all(
            getattr(self, n) <= getattr(other, n) for n in ("num_polygons", "num_circles", "num_joints", "num_thrusters")
        )


@dataclass(frozen=True)
class EnvParams:
    """Dynamic (runtime) physics and env parameters. Frozen: hashes and compares by value."""

    dt: float = 1 / 60
    """Engine step length, seconds."""
    slop: float = 0.01
    """Penetration allowed before the contact bias pushes shapes apart, world units."""
    baumgarte_coefficient_joints_v: float = 2.0
    """Velocity bias from joint anchor drift."""
    baumgarte_coefficient_joints_p: float = 0.7
    """Share of joint anchor drift corrected directly on positions per iteration."""
    baumgarte_coefficient_fjoint_av: float = 2.0
    """Angular bias of fixed joints."""
    baumgarte_coefficient_rjoint_limit_av: float = 5.0
    """Angular bias of revolute joint limits."""
    baumgarte_coefficient_collision: float = 0.2
    """Contact penetration bias."""
    joint_stiffness: float = 0.6
    """Scale of each joint impulse."""
    clip_position: float = 15.0
    """Positions are clipped to +-this, world units."""
    clip_velocity: float = 100.0
    """Velocity components are clipped to +-this, units/s."""
    clip_angular_velocity: float = 50.0
    """Angular velocities are clipped to +-this, rad/s."""
    base_motor_speed: float = 6.0
    """Motor target speed for ``motor_speed == 1`` and action 1, rad/s."""
    base_motor_power: float = 900.0
    """Motor torque scale for ``motor_power == 1``."""
    base_thruster_power: float = 10.0
    """Thruster force for ``power == 1`` and action 1."""
    motor_decay_coefficient: float = 0.1
    """Motor torque is ``tanh(speed error * this)``."""
    motor_joint_limit: float = 0.1
    """Motor torque fades out over this many radians before a joint limit."""
    base_friction: float = 0.4
    """Per-shape friction coefficients are scaled by this."""
    max_timesteps: int = 256
    """Env steps per episode before truncation."""
    pixels_per_unit: int = 100
    """Renderer scale: screen pixels per world unit."""
    dense_reward_scale: float = 0.1
    """Scale of the dense green-blue distance shaping (0 turns it off)."""
    num_shape_roles: int = 4
    """Shape roles: 0 default, 1 green, 2 blue, 3 red."""

    def __post_init__(self):
        if isinstance(self.dt, bool) or not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"EnvParams.dt must be a finite number of seconds > 0, got {self.dt!r}")
        if isinstance(self.max_timesteps, bool) or not isinstance(self.max_timesteps, int) or self.max_timesteps < 1:
            raise ValueError(f"EnvParams.max_timesteps must be an int >= 1, got {self.max_timesteps!r}")
        if not self.pixels_per_unit > 0:
            raise ValueError(f"EnvParams.pixels_per_unit must be > 0, got {self.pixels_per_unit!r}")

    def replace(self, **changes) -> "EnvParams":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "env_params") -> "EnvParams":
        values = _known_fields(cls, d, where)
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    def physics_values(self) -> dict[str, float]:
        """The parameters the physics engine reads, as floats."""
        return {name: float(getattr(self, name)) for name in PHYSICS_PARAM_NAMES}


_ENV_PARAM_NAMES = [f.name for f in fields(EnvParams)]
PHYSICS_PARAM_NAMES = tuple(_ENV_PARAM_NAMES[: _ENV_PARAM_NAMES.index("base_friction") + 1])
"""The :class:`EnvParams` the physics engine reads: ``dt`` .. ``base_friction``."""


def _known_fields(cls, d: dict, where: str) -> dict:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object of parameters, got {type(d).__name__}")
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {unknown}; known: {sorted(names)}")
    declared = typing.get_type_hints(cls)
    out = {}
    for k, v in d.items():
        default = getattr(cls(), k)
        kind = declared[k]
        try:
            if kind is bool:
                if not isinstance(v, bool):
                    raise TypeError
                out[k] = v
            elif typing.get_origin(kind) is tuple:
                if isinstance(v, dict):  # the JSON level format writes vectors as {"0": x, "1": y}
                    v = [v[str(i)] for i in range(len(v))]
                if len(v) != len(default):
                    raise TypeError
                out[k] = tuple(_as_int(x) for x in v)
            elif kind is int:
                out[k] = _as_int(v)
            else:
                if isinstance(v, bool):
                    raise TypeError
                out[k] = float(v)
        except (TypeError, ValueError, KeyError, OverflowError):
            raise ValueError(f"{where}.{k}: expected a {getattr(kind, '__name__', kind)} like {default!r}, got {v!r}") from None
    return out


def _as_int(value) -> int:
    """An integer, also from a float with an integral value (JSON writers may add ``.0``)."""
    if isinstance(value, bool) or float(value) != int(value):
        raise TypeError
    return int(value)


_SIZE_COUNTS = {
    "s": dict(num_polygons=5, num_circles=2, num_joints=1, num_thrusters=1),
    "m": dict(num_polygons=6, num_circles=3, num_joints=2, num_thrusters=2),
    "l": dict(num_polygons=12, num_circles=4, num_joints=6, num_thrusters=2),
}

ENV_SIZES = tuple(_SIZE_COUNTS)


def static_params_for_size(size: str, **overrides) -> StaticEnvParams:
    """The S/M/L presets of upstream's ``static_env_params_from_size`` (frame skip 2)."""
    key = size.lower()
    if key not in _SIZE_COUNTS:
        raise ValueError(f"unknown env size {size!r}; expected one of {list(ENV_SIZES)}")
    return StaticEnvParams(**{**_SIZE_COUNTS[key], "frame_skip": 2, **overrides})
