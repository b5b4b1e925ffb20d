"""Line plots as PNG with PIL alone (no plotting library among the dependencies)."""
from __future__ import annotations

import math
from pathlib import Path

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def line_plot(series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, title: str, path,
              log_x: bool = False, y_range=(0.0, 1.0), size=(640, 420)) -> Path:
    """One line with markers per series of (x, y) points; y is drawn over y_range."""
    from PIL import Image, ImageDraw

    w, h = size
    left, right, top, bottom = 60, 170, 36, 50
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    xs = [fx(x) for pts in series.values() for x, _ in pts]
    x0, x1 = min(xs), max(xs)
    x1 = x1 if x1 > x0 else x0 + 1
    pad = 0.05 * (x1 - x0)  # keep the end markers off the frame
    x0, x1 = x0 - pad, x1 + pad
    y0, y1 = y_range

    def px(x, y):
        return (left + (fx(x) - x0) / (x1 - x0) * (w - left - right),
                h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom))

    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for i in range(6):  # horizontal grid and y ticks
        y = y0 + (y1 - y0) * i / 5
        yy = h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)
        draw.line([left, yy, w - right, yy], fill=(225, 225, 225))
        draw.text((left - 34, yy - 6), f"{y:.1f}", fill="black")
    for x in sorted({x for pts in series.values() for x, _ in pts}):  # x ticks at the data points
        xx, _ = px(x, y0)
        draw.line([xx, h - bottom, xx, h - bottom + 4], fill="black")
        draw.text((xx - 10, h - bottom + 8), f"{x:g}", fill="black")
    for k, (name, pts) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        coords = [px(x, y) for x, y in pts]
        if len(coords) > 1:
            draw.line(coords, fill=colour, width=2)
        for cx, cy in coords:
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
        draw.line([w - right + 10, top + 10 + 16 * k, w - right + 28, top + 10 + 16 * k], fill=colour, width=3)
        draw.text((w - right + 32, top + 4 + 16 * k), name, fill="black")
    draw.text((max(4, (w - 6 * len(title)) // 2), 6), title, fill="black")
    draw.text(((left + w - right) // 2 - 30, h - 22), xlabel, fill="black")
    draw.text((4, top - 14), ylabel, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path
