"""One self-contained HTML page that plays a face animation with its speech: the glb files and the wav
are embedded (base64), the renderer is a small WebGL2 script of this package (ptalker/web/player.js),
so the page needs no network and works from file://.

    html = player_page("clip", prediction_glb, fps=30, frames=191, camera=camera_of(template),
                       audio_wav=wav_bytes, truth_glb=None)

With a ground truth, prediction and truth play side by side and the per-vertex error can be shown as
colours (the page's checkbox, or `page.html#errors`); `page.html#t=1.5` opens it at 1.5 s.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np

from .fileio import atomic_path

WEB = Path(__file__).resolve().parent / "web"
PANEL_SIZE = 480   # CSS pixels per face panel


def camera_of(vertices: np.ndarray, margin: float = 1.08) -> dict:
    """A frontal orthographic view that frames (V, 3) vertices: centre, half extent (x/y), half depth."""
    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    lo, hi = v.min(axis=0), v.max(axis=0)
    centre = (lo + hi) / 2
    half = float(max(hi[0] - lo[0], hi[1] - lo[1]) / 2 * margin)
    depth = float(max((hi[2] - lo[2]) / 2 * 1.5, 1e-9))   # keeps the whole head inside the clip volume
    return {"centre": [float(c) for c in centre], "half": max(half, 1e-9), "depth": depth}


def error_scale(prediction: np.ndarray, truth: np.ndarray) -> float:
    """The distance shown as the top error colour: the 99th percentile of the per-vertex errors of
    (T, V, 3) arrays, so a few outliers do not wash the rest out."""
    errors = np.linalg.norm(np.asarray(prediction, np.float64) - truth, axis=-1)
    return float(max(np.percentile(errors, 99), 1e-9))


def _data_uri(kind: str, data: bytes) -> str:
    return f"data:{kind};base64," + base64.b64encode(data).decode("ascii")


def player_page(title: str, prediction_glb: bytes, fps: float, frames: int, camera: dict,
                audio_wav: bytes | None = None, truth_glb: bytes | None = None, error_max: float = 1.0) -> str:
    """The page's HTML text. prediction_glb / truth_glb: .glb bytes of morph animations on the same mesh."""
    clips = [{"label": "prediction", "glb": base64.b64encode(prediction_glb).decode("ascii")}]
    if truth_glb is not None:
        clips.append({"label": "ground truth", "glb": base64.b64encode(truth_glb).decode("ascii")})
    config = {"title": title, "fps": fps, "frames": frames, "camera": camera, "size": PANEL_SIZE,
              "clips": clips, "errorMax": error_max,
              "audio": None if audio_wav is None else _data_uri("audio/wav", audio_wav)}
    # "</" inside a script element would end it early; JSON allows the escaped form
    config_text = json.dumps(config).replace("</", "<\\/")
    page = (WEB / "page.html").read_text()
    player = (WEB / "player.js").read_text()
    return page.replace("__PLAYER__", player).replace("__CONFIG__", config_text)


def write_player_page(path: str | os.PathLike, *args, **kwargs) -> None:
    """Write `player_page(*args, **kwargs)` all-or-nothing."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(player_page(*args, **kwargs), encoding="utf-8")
