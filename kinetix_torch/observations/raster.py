"""Batched rasterisation primitives for the pixel observation (device-generic torch, no host syncs).

Drawing model: every drawable (a shape, a joint dot, a thruster glyph) is evaluated on a small
rectangular *window* of screen pixels and paints opaque fragments. A fragment is an integer *code*
``layer << colour_bits | colour_id``: layers are numbered in painting order, so keeping the largest
code per pixel (one ``scatter_reduce(amax)``) is the painter's algorithm, order-independent and
vectorised over environments and over the drawables of one layer. Code 0 is the background.

Pixel coordinates are integer screen indices (axis 0 = x, axis 1 = y up), compared with float32
positions in pixel units, as a fragment shader evaluated at pixel corners would.
"""

from __future__ import annotations

import torch


def window(origin: torch.Tensor, size: tuple[int, int], screen: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel indices ``(xs (..., size[0]), ys (..., size[1]))`` of windows starting at integer
    ``origin (..., 2)``. A window never leaves the screen: its start is clamped to
    ``[0, screen - size]`` (a window sliced out of the screen array)."""
    ranges = []
    for axis in range(2):
        start = origin[..., axis].clamp(0, screen[axis] - size[axis])
        ranges.append(start.unsqueeze(-1) + torch.arange(size[axis], device=origin.device))
    return ranges[0], ranges[1]


def grid(xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Broadcastable float32 coordinates ``(..., w, 1)`` and ``(..., 1, h)`` of a window."""
    return xs.to(torch.float32).unsqueeze(-1), ys.to(torch.float32).unsqueeze(-2)


def inside_convex(px: torch.Tensor, py: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Whether pixel ``(px, py)`` lies inside (or on) the clockwise convex polygon ``vertices (..., V, 2)``.

    Every vertex slot is an edge endpoint, and a polygon with an edge of zero length is empty (as
    upstream, whose side test divides by the edge length). The side test itself is the sign of
    ``cross(a - p, b - p)``, in upstream's float32 operation order.
    """
    inside = None
    count = vertices.shape[-2]
    for i in range(count):
        a, b = vertices[..., i, :], vertices[..., (i + 1) % count, :]
        ax, ay, bx, by = (t[..., None, None] for t in (a[..., 0], a[..., 1], b[..., 0], b[..., 1]))
        right_of_edge = (ax - px) * (by - py) - (ay - py) * (bx - px) <= 0
        inside = right_of_edge if inside is None else inside & right_of_edge
    has_area = (torch.linalg.vector_norm(vertices - vertices.roll(-1, dims=-2), dim=-1) > 0).all(-1)
    return inside & has_area[..., None, None]


def paint(
    canvas: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, codes: torch.Tensor, visible: torch.Tensor, offset: int
) -> None:
    """Paint fragments into ``canvas (B, X, Y)`` in place, keeping the largest code per pixel.

    ``xs (B, ..., w)`` / ``ys (B, ..., h)`` are screen indices of windows, ``codes`` and ``visible``
    broadcast to ``(B, ..., w, h)``. Screen index ``offset`` is canvas index 0 on both axes;
    fragments off the canvas are dropped.
    """
    batch, size_x, size_y = canvas.shape
    cx, cy = xs - offset, ys - offset
    on_x = ((cx >= 0) & (cx < size_x)).unsqueeze(-1)
    on_y = ((cy >= 0) & (cy < size_y)).unsqueeze(-2)
    index = cx.clamp(0, size_x - 1).unsqueeze(-1) * size_y + cy.clamp(0, size_y - 1).unsqueeze(-2)
    keep = torch.where(visible & on_x & on_y, codes, 0).to(canvas.dtype)
    index, keep = torch.broadcast_tensors(index, keep)
    canvas.view(batch, -1).scatter_reduce_(1, index.reshape(batch, -1), keep.reshape(batch, -1), reduce="amax")
