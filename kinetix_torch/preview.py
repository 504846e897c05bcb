"""A quick preview renderer for GIFs and debugging: shapes drawn with Pillow, coloured by role.

This is not the pixel observation (that one reproduces upstream's renderer); it only has to make
a rollout easy to look at.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

ROLE_COLOURS = {0: (150, 150, 160), 1: (60, 190, 90), 2: (70, 120, 230), 3: (220, 70, 70)}
"""Fill colour per shape role: default, green (agent), blue (goal), red (hazard)."""
STATIC_COLOUR = (90, 90, 100)
"""Fill of immovable default-role shapes (floor, walls, fixated pieces)."""
BACKGROUND = (245, 245, 240)
THRUSTER_COLOUR = (240, 160, 30)
JOINT_COLOUR = (30, 30, 30)


def render_frame(state: dict, size: int = 250, world: float = 5.0) -> np.ndarray:
    """``(size, size, 3)`` uint8 image of one environment's flat numpy state (y up, x in [0, world])."""
    scale = size / world
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)

    def to_pixels(points):
        points = np.atleast_2d(points)
        return [(float(x * scale), float(size - y * scale)) for x, y in points]

    def colour(role, inverse_mass):
        return STATIC_COLOUR if role == 0 and inverse_mass == 0 else ROLE_COLOURS.get(int(role), ROLE_COLOURS[0])

    for i in np.flatnonzero(state["polygon.active"]):
        n = int(state["polygon.n_vertices"][i])
        c, s = np.cos(state["polygon.rotation"][i]), np.sin(state["polygon.rotation"][i])
        local = state["polygon.vertices"][i, :n]
        world_pts = local @ np.array([[c, s], [-s, c]]) + state["polygon.position"][i]
        fill = colour(state["polygon_shape_roles"][i], state["polygon.inverse_mass"][i])
        draw.polygon(to_pixels(world_pts), fill=fill, outline=(40, 40, 40))
    for i in np.flatnonzero(state["circle.active"]):
        (x, y), r = to_pixels(state["circle.position"][i])[0], state["circle.radius"][i] * scale
        fill = colour(state["circle_shape_roles"][i], state["circle.inverse_mass"][i])
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(40, 40, 40))
        angle = state["circle.rotation"][i]
        draw.line([x, y, x + r * np.cos(angle), y - r * np.sin(angle)], fill=(40, 40, 40), width=2)
    for i in np.flatnonzero(state["joint.active"]):
        (x, y) = to_pixels(state["joint.global_position"][i])[0]
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=JOINT_COLOUR)
    for i in np.flatnonzero(state["thruster.active"]):
        (x, y) = to_pixels(state["thruster.global_position"][i])[0]
        draw.rectangle([x - 3, y - 3, x + 3, y + 3], fill=THRUSTER_COLOUR)
    return np.asarray(image)
