"""Line plots as PNG with Pillow (no plotting library needed): one or more panels sharing the x
axis, each with one or more labelled series. The demo's learning curve and ``kinetix-torch
curves`` (solve rate against frames of several runs) draw through :func:`draw_panels`."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .atomic import atomic_write

Colour = tuple[int, int, int]

PALETTE: tuple[Colour, ...] = ((30, 150, 60), (40, 90, 200), (200, 60, 40), (150, 80, 170), (230, 140, 20),
                               (20, 150, 160))
"""Series colours, in order (green, blue, red, purple, orange, teal)."""


@dataclass
class Series:
    """One line: ``points`` are (x, y); non-finite y values are left out."""

    label: str
    points: list[tuple[float, float]]
    colour: Colour = PALETTE[0]


@dataclass
class Panel:
    """One plot area. ``y_range`` None: fitted to the data; ``guide``: a dotted line at this y."""

    title: str
    series: list[Series] = field(default_factory=list)
    y_range: tuple[float, float] | None = None
    guide: float | None = None


@functools.cache
def default_font(size: int):
    """Pillow's default font at ``size`` pixels (its fixed-size bitmap font where Pillow lacks FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def finite(value) -> bool:
    """A real number that is neither NaN nor infinite (None and strings are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def draw_panels(panels: list[Panel], png_path: Path, x_label: str = "frames", note: str = "", width: int = 640,
                panel_height: int = 200) -> None:
    """Draw ``panels`` top to bottom over a shared x axis from 0 to the largest x, a legend per panel
    with more than one series (bottom right), and ``note`` under the plots; written atomically."""
    image = Image.new("RGB", (width, panel_height * len(panels) + 24), "white")
    draw = ImageDraw.Draw(image)
    font = default_font(12)
    max_x = max([x for panel in panels for s in panel.series for x, _ in s.points] + [1])
    left, right, top_pad, bottom_pad = 64, 16, 22, 24
    for index, panel in enumerate(panels):
        top = index * panel_height + top_pad
        bottom = (index + 1) * panel_height - bottom_pad
        values = [y for s in panel.series for _, y in s.points if finite(y)] or [0.0]
        low, high = panel.y_range or (min(values), max(values))
        if high - low < 1e-6:
            low, high = low - 0.5, high + 0.5

        def xy(x, y, top=top, bottom=bottom, low=low, high=high):
            return left + (width - left - right) * x / max_x, bottom - (bottom - top) * (y - low) / (high - low)

        draw.rectangle([left, top, width - right, bottom], outline=(120, 120, 120))
        draw.text((left, top - 4), panel.title, fill="black", font=font, anchor="ld")
        for value in (low, high):
            draw.text((left - 6, xy(0, value)[1]), f"{value:.2f}", fill="black", font=font, anchor="rm")
        if panel.guide is not None:
            y = xy(0, panel.guide)[1]
            for x in range(left, width - right, 6):
                draw.line([(x, y), (x + 2, y)], fill=(150, 150, 150))
            draw.text((width - right - 4, y - 2), f"{panel.guide:g}", fill=(120, 120, 120), font=font, anchor="rb")
        for rank, series in enumerate(panel.series):
            points = [xy(x, y) for x, y in series.points if finite(y)]
            if len(points) > 1:
                draw.line(points, fill=series.colour, width=2)
            elif points:
                x, y = points[0]
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=series.colour)
            if len(panel.series) > 1:
                legend_y = bottom - 6 - 14 * (len(panel.series) - 1 - rank)  # bottom right: curves rise away from it
                draw.text((width - right - 8, legend_y), series.label, fill=series.colour, font=font, anchor="rb")
        draw.text((left, bottom + 4), "0", fill="black", font=font)
        draw.text((width - right, bottom + 4), f"{max_x:,.0f} {x_label}", fill="black", font=font, anchor="ra")
    draw.text((left, image.height - 6), note, fill="black", font=font, anchor="ld")
    atomic_write(png_path, lambda tmp: image.save(tmp, format="PNG"))
