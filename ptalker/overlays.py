"""What is painted over or into rendered frames besides the skin: heat-map colours of per-vertex
errors, panel titles and the heat map's colour bar."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .renderer import BACKGROUND


@lru_cache(maxsize=1)
def _colormap_lut() -> np.ndarray:
    """256 x RGB float32 of the perceptually ordered 'turbo' map (blue = small, red = large)."""
    import cv2

    ramp = np.arange(256, dtype=np.uint8)[:, None]
    return cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO)[:, 0, ::-1].astype(np.float32) / 255


def error_colors(errors: np.ndarray, vmax: float) -> np.ndarray:
    """Per-vertex distances (..., V) -> (..., V, 3) RGB in [0, 1], saturating at vmax."""
    index = np.clip(np.asarray(errors) / vmax * 255, 0, 255).astype(np.uint8)
    return _colormap_lut()[index]


def _text_patch(text: str, scale: float) -> np.ndarray:
    import cv2

    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    patch = np.full((h + base + 4, w + 4, 3), [round(255 * c) for c in BACKGROUND], np.uint8)
    cv2.putText(patch, text, (2, h + 2), font, scale, (40, 40, 40), thickness, cv2.LINE_AA)
    return patch


def frame_overlays(width: int, height: int, panels: int, heatmap_max: float | None) -> list[tuple[int, int, np.ndarray]]:
    """Static (x, y, RGB patch) decorations pasted onto every frame: panel titles and a colour bar."""
    scale = 0.6 * min(width, height) / 800
    pad = max(2, round(0.02 * height))
    out = []
    if panels == 2:
        for panel, title in enumerate(("ground truth", "prediction")):
            patch = _text_patch(title, scale)
            out.append((panel * width + (width - patch.shape[1]) // 2, pad, patch))
    if heatmap_max is not None:
        bar_h, bar_w = max(4, round(0.4 * height)), max(2, round(0.025 * width))
        bar = error_colors(np.linspace(heatmap_max, 0, bar_h)[:, None].repeat(bar_w, 1), heatmap_max)
        x = panels * width - bar_w - 3 * pad
        top = _text_patch(f"{heatmap_max:.3g}", scale * 0.8)
        bottom = _text_patch("0", scale * 0.8)
        y = (height - bar_h) // 2
        out.append((x, y, (bar * 255).round().astype(np.uint8)))
        out.append((min(x, panels * width - top.shape[1]), y - top.shape[0] - 2, top))
        out.append((x, y + bar_h + 2, bottom))
    return [(x, y, p[: height - y, : panels * width - x]) for x, y, p in out if 0 <= x and 0 <= y < height]
