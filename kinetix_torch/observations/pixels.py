"""Pixel observation: kinetix-env's ``ObservationType.PIXELS`` image, rendered in batch on the state's device.

:func:`render_pixels` gives upstream's observation ``image``: float32 ``(B, X, Y, 3)`` in [0, 1]
(rendered 0..255 colour / 255), where ``X = screen_dim[0] // downscale`` and axis 1 is screen
``y`` from bottom to top (so axis 0 is x, not a row). With ``pixel_format="uint8_chw"`` it gives
the same picture channels-first for CNNs, a quarter of the bytes: uint8 ``(B, 3, X, Y)`` with
``uint8[b, c, i, j] = round(255 * float[b, i, j, c])`` (``torch.round``, halves to even), so
``uint8 / 255`` is within ``1 / 510`` of the float image. Both are looked up from one colour table
(no float copy is made for uint8). :func:`render_rgb_uint8` gives the same picture the usual way up
for GIFs. (The observation's other part, ``global_info``, is ``gravity_y / 10``.)

What is drawn, in painting order (later covers earlier), with ``ppu = pixels_per_unit // downscale``
pixels per world unit and a pixel ``(i, j)`` standing for world point ``(i, j) / ppu``:

1. white background; the floor (polygon 0, unrotated) over the whole screen;
2. active polygons from slot ``num_static_fixated_polys`` on (walls and ceiling are never drawn);
3. active circles, each with a black radius line showing its rotation;
4. active joints: a dot coloured by motor binding (white for fixed joints and joints without motor);
5. active thrusters: a small nozzle-and-plume glyph, plume tinted by the thruster binding.

Shape colour: the role colour for movable shapes; for fixed shapes (``inverse_mass == 0``) dark
grey for role 0 and the role colour at half brightness otherwise. As upstream, each shape is only
evaluated in a ``max_shape_size``-wide window around its centroid (larger shapes are cut off), and
the screen is rendered with a ``max_shape_size * ppu`` margin that is cropped off at the end.

Upstream draws the thruster from a 16x16 bitmap that this project does not copy; the glyph here is
drawn from a geometric description of the same picture (see :func:`_thruster_glyph`), so pixels
under a thruster may differ from upstream's. Everything else follows upstream's arithmetic in
float32. Only ``downscale == 4`` (upstream's default, used by every Kinetix size) is supported:
other downscales draw shape outlines and bitmap joint icons.
"""

from __future__ import annotations

import math

import torch

from ..params import EnvParams, StaticEnvParams
from ..schema import validate
from . import raster

__all__ = ["render_pixels", "render_rgb_uint8", "check_pixel_format", "PIXEL_FORMATS"]

SUPPORTED_DOWNSCALE = 4
PIXEL_FORMATS = ("float_hwc", "uint8_chw")
"""``image`` layouts: upstream's float32 ``(..., X, Y, 3)`` in [0, 1], or uint8 ``(..., 3, X, Y)`` in 0..255."""

# Colour table: every fragment's colour is one of these rows (RGB, 0..255).
BACKGROUND = (255.0, 255.0, 255.0)
OUTLINE = (0.0, 0.0, 0.0)
FIXED_DEFAULT = (80.0, 80.0, 80.0)
ROLE_COLOURS = ((160.0, 160.0, 160.0), (0.0, 204.0, 0.0), (0.0, 102.0, 204.0), (255.0, 102.0, 102.0))
"""Role 0 (default), 1 (green, agent), 2 (blue, goal), 3 (red, hazard)."""
BINDING_COLOURS = ((255.0, 255.0, 255.0), (255.0, 255.0, 0.0), (255.0, 0.0, 255.0), (0.0, 255.0, 255.0), (255.0, 153.0, 51.0))
"""Row 0: no motor; row ``1 + b``: action slot ``b`` of a motor or thruster."""

NUM_ROLES = len(ROLE_COLOURS)
GLYPH = 16
"""Thruster glyph texels per side."""
THRUSTER_SIZE_PX = 16
JOINT_SIZE_PX = 6
"""Screen pixels of a thruster glyph / joint icon at 100 pixels per unit before downscaling."""
# Colour ids (rows of the table built by _colour_table).
ID_OUTLINE = 1
ID_FIXED_DEFAULT = 2
ID_ROLE = 3
ID_ROLE_HALF = ID_ROLE + NUM_ROLES
ID_BINDING = ID_ROLE_HALF + NUM_ROLES
ID_THRUSTER = ID_BINDING + len(BINDING_COLOURS)
NUM_COLOURS = ID_THRUSTER + len(BINDING_COLOURS) * GLYPH * GLYPH
COLOUR_MASK = (1 << NUM_COLOURS.bit_length()) - 1
"""Low bits of a fragment code that hold its colour id (the layer is above them)."""

CPU_CHUNK = 64
"""Environments rendered together on CPU, so that their pixel windows stay in cache (4-5x the frames/s
of one 1024-environment pass on this project's CPU); other devices render the whole batch at once."""

_STATE_KEYS = (
    "polygon.position",
    "polygon.rotation",
    "polygon.vertices",
    "polygon.inverse_mass",
    "polygon.active",
    "polygon_shape_roles",
    "circle.position",
    "circle.rotation",
    "circle.radius",
    "circle.inverse_mass",
    "circle.active",
    "circle_shape_roles",
    "joint.global_position",
    "joint.active",
    "joint.motor_on",
    "joint.is_fixed_joint",
    "motor_bindings",
    "thruster.global_position",
    "thruster.rotation",
    "thruster.object_index",
    "thruster.active",
    "thruster_bindings",
)


def render_pixels(state, static: StaticEnvParams, params: EnvParams, pixel_format: str = "float_hwc") -> torch.Tensor:
    """The pixel observation ``image`` on the state's device: upstream's float32 ``(*batch, X, Y, 3)``
    in [0, 1] (axis 0 = x, axis 1 = y upwards), or with ``pixel_format="uint8_chw"`` uint8
    ``(*batch, 3, X, Y)`` = ``round(255 * float)``, channels first."""
    check_pixel_format(pixel_format)
    colour_ids = _render_colour_ids(state, static, params)
    if pixel_format == "float_hwc":
        return _lookup(_colour_table(colour_ids.device)[1], colour_ids)
    return _lookup(_colour_table_uint8(colour_ids.device), colour_ids).movedim(-1, -3).contiguous()


def check_pixel_format(pixel_format: str) -> None:
    if pixel_format not in PIXEL_FORMATS:
        raise ValueError(f"unknown pixel_format {pixel_format!r}; expected one of {PIXEL_FORMATS}")


def render_rgb_uint8(state, static: StaticEnvParams, params: EnvParams, scale: int = 1) -> torch.Tensor:
    """The same picture as uint8 RGB ``(*batch, Y * scale, X * scale, 3)``, top row first (for GIFs),
    each pixel repeated ``scale`` times along both axes."""
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"render_rgb_uint8: scale must be a positive int, got {scale!r}")
    colour_ids = _render_colour_ids(state, static, params)
    image = _lookup(_colour_table_uint8(colour_ids.device), colour_ids)
    image = image.transpose(-3, -2).flip(-3)
    return image.repeat_interleave(scale, dim=-3).repeat_interleave(scale, dim=-2)


# ------------------------------------------------------------------------------------------------


def _render_colour_ids(state, static: StaticEnvParams, params: EnvParams) -> torch.Tensor:
    """Colour id of every screen pixel, ``(*batch, X, Y)`` int64: the top fragment's (see :mod:`.raster`)."""
    _check(state, static)
    batch_shape = tuple(state.batch_size)
    flat = state.reshape(-1) if len(batch_shape) != 1 else state
    layout = _Layout(static, params)
    device = flat.get(("polygon", "position")).device
    batch = flat.batch_size[0]
    canvas = torch.zeros(batch, *layout.screen, dtype=torch.int32, device=device)
    chunk = CPU_CHUNK if device.type == "cpu" else max(batch, 1)
    for start in range(0, batch, chunk):
        _paint_all(canvas[start : start + chunk], flat[start : start + chunk], layout)
    return (canvas & COLOUR_MASK).long().reshape(*batch_shape, *layout.screen)


def _paint_all(canvas: torch.Tensor, state, layout: _Layout) -> None:
    """Paint every drawable of ``state`` (batch ``B``) into ``canvas (B, X, Y)``, in painting order."""
    static = layout.static
    drawables = (
        (_floor, 1),
        (_polygons, static.num_polygons - static.num_static_fixated_polys),
        (_circles, static.num_circles),
        (_joints, static.num_joints),
        (_thrusters, static.num_thrusters),
    )
    layer = 1
    for fragments, count in drawables:
        if count > 0:
            xs, ys, colour_id, visible = fragments(state, layout)
            layers = (layer + torch.arange(count, device=canvas.device))[:, None, None]
            raster.paint(canvas, xs, ys, layers * (COLOUR_MASK + 1) + colour_id, visible, layout.margin)
            layer += count


class _Layout:
    """Screen geometry derived from the params (python numbers, as upstream's renderer constants)."""

    def __init__(self, static: StaticEnvParams, params: EnvParams):
        self.static = static
        self.ppu = params.pixels_per_unit // static.downscale
        self.screen = (static.screen_dim[0] // static.downscale, static.screen_dim[1] // static.downscale)
        self.margin = static.max_shape_size * self.ppu
        self.full = (self.screen[0] + 2 * self.margin, self.screen[1] + 2 * self.margin)
        self.shape_window = (self.margin, self.margin)
        self.joint_px = math.ceil((JOINT_SIZE_PX // static.downscale) * params.pixels_per_unit / 100)
        self.thruster_px = math.ceil((THRUSTER_SIZE_PX // static.downscale) * params.pixels_per_unit / 100)
        self.thruster_window = int(self.thruster_px * math.sqrt(2)) + 1

    def to_pixels(self, world: torch.Tensor) -> torch.Tensor:
        """World units -> pixel units of the margined screen (float32)."""
        return (world + self.static.max_shape_size) * self.ppu

    def shape_origin(self, centre: torch.Tensor) -> torch.Tensor:
        """Integer start of the evaluation window of shapes centred at ``centre`` (world)."""
        return self.to_pixels(centre - self.static.max_shape_size / 2.0).to(torch.int64)


def _shape_colour_id(role: torch.Tensor, inverse_mass: torch.Tensor) -> torch.Tensor:
    role = role.long().clamp(0, NUM_ROLES - 1)
    fixed = inverse_mass == 0
    fixed_colour = torch.where(role == 0, ID_FIXED_DEFAULT, ID_ROLE_HALF + role)
    return torch.where(fixed, fixed_colour, ID_ROLE + role)


# Fragments of each kind of drawable: ``(xs (B, n, w), ys (B, n, h), colour_id, visible)`` for its
# ``n`` slots, the last two broadcasting to ``(B, n, w, h)``.


def _floor(state, layout: _Layout):
    """Polygon 0, unrotated, evaluated over exactly the visible screen."""
    position = state.get(("polygon", "position"))[:, :1]
    origin = torch.full_like(position, layout.margin, dtype=torch.int64)
    xs, ys = raster.window(origin, layout.screen, layout.full)
    vertices = layout.to_pixels(position[:, :, None, :] + state.get(("polygon", "vertices"))[:, :1])
    inside = raster.inside_convex(*raster.grid(xs, ys), vertices)
    colour = _shape_colour_id(state.get("polygon_shape_roles")[:, :1], torch.zeros((), device=position.device))
    return xs, ys, colour[..., None, None], inside


def _polygons(state, layout: _Layout):
    first = layout.static.num_static_fixated_polys
    position, rotation, local, inverse_mass, active = (
        state.get(("polygon", name))[:, first:] for name in ("position", "rotation", "vertices", "inverse_mass", "active")
    )
    cos, sin = torch.cos(rotation)[..., None], torch.sin(rotation)[..., None]
    rotated = torch.stack((cos * local[..., 0] - sin * local[..., 1], sin * local[..., 0] + cos * local[..., 1]), -1)
    vertices = layout.to_pixels(position[:, :, None, :] + rotated)
    xs, ys = raster.window(layout.shape_origin(position), layout.shape_window, layout.full)
    inside = raster.inside_convex(*raster.grid(xs, ys), vertices) & active[..., None, None]
    colour = _shape_colour_id(state.get("polygon_shape_roles")[:, first:], inverse_mass)
    return xs, ys, colour[..., None, None], inside


def _circles(state, layout: _Layout):
    circle = state.get("circle")
    centre = layout.to_pixels(circle.get("position"))
    xs, ys = raster.window(layout.shape_origin(circle.get("position")), layout.shape_window, layout.full)
    px, py = raster.grid(xs, ys)
    cx, cy = centre[..., 0, None, None], centre[..., 1, None, None]
    dx, dy = px - cx, py - cy
    inside = torch.sqrt(dx * dx + dy * dy) <= (circle.get("radius") * layout.ppu)[..., None, None]
    rotation = circle.get("rotation")[..., None, None]
    nx, ny = torch.sin(rotation), -torch.cos(rotation)
    # The radius line: pixels within 1 px of the line through the centre along (nx, ny), on the far side.
    line_distance = ((cx - px) * ((cy + ny) - py) - (cy - py) * ((cx + nx) - px)).abs()
    on_line = (line_distance < 1) & (nx * dx + ny * dy <= 0)
    colour = _shape_colour_id(state.get("circle_shape_roles"), circle.get("inverse_mass"))[..., None, None]
    return xs, ys, torch.where(on_line, ID_OUTLINE, colour), inside & circle.get("active")[..., None, None]


def _joints(state, layout: _Layout):
    joint = state.get("joint")
    size = layout.joint_px
    origin = torch.round(layout.to_pixels(joint.get("global_position")) - size // 2).to(torch.int64)
    centre = origin + size // 2
    xs, ys = raster.window(origin, (size, size), layout.full)
    dx = (xs - centre[..., 0, None]).unsqueeze(-1)
    dy = (ys - centre[..., 1, None]).unsqueeze(-2)
    visible = (dx * dx + dy * dy < (size / 2) ** 2) & joint.get("active")[..., None, None]
    motorised = joint.get("motor_on") & ~joint.get("is_fixed_joint")
    colour = ID_BINDING + (state.get("motor_bindings").long() + 1).clamp(0, len(BINDING_COLOURS) - 1) * motorised
    return xs, ys, colour[..., None, None], visible


def _thrusters(state, layout: _Layout):
    thruster = state.get("thruster")
    anchor = torch.round(layout.to_pixels(thruster.get("global_position"))).to(torch.int64)
    size = layout.thruster_window
    xs, ys = raster.window(anchor - size // 2, (size, size), layout.full)
    dx, dy = raster.grid(xs - anchor[..., 0, None], ys - anchor[..., 1, None])
    # Glyph orientation: the thruster's own rotation on top of its parent shape's.
    shape_rotation = torch.cat((state.get(("polygon", "rotation")), state.get(("circle", "rotation"))), 1)
    parent = thruster.get("object_index").long().clamp(0, shape_rotation.shape[1] - 1)
    angle = -(thruster.get("rotation") + shape_rotation.gather(1, parent))[..., None, None]
    cos, sin = torch.cos(angle), torch.sin(angle)
    u = (cos * dx - sin * dy) / layout.thruster_px + 0.5
    v = (sin * dx + cos * dy) / layout.thruster_px + 0.5
    on_glyph = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    texel_u = torch.round(GLYPH * u - 0.5 + 0.001).long().clamp(0, GLYPH - 1)
    texel_v = torch.round(GLYPH * v - 0.5 + 0.001).long().clamp(0, GLYPH - 1)
    texel = texel_u * GLYPH + texel_v
    opaque = _thruster_glyph(texel.device)[0].reshape(-1)[texel]
    tint = (state.get("thruster_bindings").long() + 1).clamp(0, len(BINDING_COLOURS) - 1)
    colour = ID_THRUSTER + tint[..., None, None] * GLYPH * GLYPH + texel
    return xs, ys, colour, on_glyph & opaque & thruster.get("active")[..., None, None]


# ------------------------------------------------------------------------------------------------
# Constant tables (built once per device)

_TABLES: dict = {}


def _cached(name: str, device: torch.device, build):
    key = (name, str(device))
    if key not in _TABLES:
        _TABLES[key] = build(device)
    return _TABLES[key]


def _thruster_glyph(device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(opaque, shade, tinted)``, each ``(16, 16)`` over texels ``(u, v)``: u runs from the plume's
    tip (0) to the nozzle's mouth (15), v across. The plume (u < 9) is a flame widening towards the
    nozzle, with a bright core, lit in the binding colour; the nozzle is a grey bell with a black
    outline all round (the rim where the plume leaves it included)."""

    def build(device):
        u = torch.arange(GLYPH, dtype=torch.float32, device=device)[:, None]
        v = torch.arange(GLYPH, dtype=torch.float32, device=device)[None, :]
        across = (v - 7.5).abs()
        plume = u < 9
        plume_half_width = 1.5 + u * 0.625
        nozzle_half_width = 7.0 - (u - 9).clamp(min=0) * 0.5
        opaque = torch.where(plume, across <= plume_half_width, across <= nozzle_half_width + 0.5)
        plume_shade = torch.where(across <= plume_half_width - 2, 196.0, 132.0)
        plume_shade = torch.where((u >= 6) & (across <= 2), 255.0, plume_shade)
        nozzle_shade = torch.where((u > 9) & (u < GLYPH - 1) & (across <= nozzle_half_width - 1), 93.0, 0.0)
        shade = torch.where(plume, plume_shade, nozzle_shade)
        return opaque, shade, plume.expand(GLYPH, GLYPH)

    return _cached("glyph", device, build)


def _colour_table(device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rgb 0..255, rgb / 255)`` float32 ``(NUM_COLOURS, 3)``: the colour of each colour id."""

    def build(device):
        role = torch.tensor(ROLE_COLOURS, device=device)
        bindings = torch.tensor(BINDING_COLOURS, device=device)
        _, shade, tinted = _thruster_glyph(device)
        texels = shade.reshape(-1, 1).expand(-1, 3)
        glyphs = torch.where(tinted.reshape(1, -1, 1), texels * (bindings / 255.0)[:, None, :], texels)
        rgb = torch.cat(
            (
                torch.tensor([BACKGROUND, OUTLINE, FIXED_DEFAULT], device=device),
                role,
                role * 0.5,
                bindings,
                glyphs.reshape(-1, 3),
            )
        )
        assert rgb.shape[0] == NUM_COLOURS
        return rgb, rgb / 255.0

    return _cached("colours", device, build)


def _colour_table_uint8(device) -> torch.Tensor:
    """uint8 ``(NUM_COLOURS, 3)``: ``round(255 * (rgb / 255))`` of each colour id (equal to ``round(rgb)``)."""
    return _cached("colours_uint8", device, lambda d: (_colour_table(d)[1] * 255).round().to(torch.uint8))


def _lookup(table: torch.Tensor, colour_ids: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` for every colour id: ``colour_ids.shape + (3,)``."""
    return table.index_select(0, colour_ids.reshape(-1)).reshape(*colour_ids.shape, table.shape[1])


def _check(state, static: StaticEnvParams) -> None:
    if static.downscale != SUPPORTED_DOWNSCALE:
        raise ValueError(
            f"render_pixels: StaticEnvParams.downscale={static.downscale} is not supported "
            f"(only {SUPPORTED_DOWNSCALE}, upstream's default)"
        )
    if not hasattr(state, "batch_size") or len(state.batch_size) == 0:
        raise ValueError("render_pixels: state must be a TensorDict with at least one batch dimension")
    flat = {key: state.get(tuple(key.split(".")), None) for key in _STATE_KEYS}
    missing = [key for key, value in flat.items() if value is None]
    if missing:
        raise ValueError(f"render_pixels: state is missing field(s) {missing}")
    validate(flat, static, tuple(state.batch_size), keys=_STATE_KEYS, where="render_pixels state")
