"""Headless rendering of vertex sequences (one fixed topology) to H.264 + AAC mp4.

One OpenGL context, shader and set of vertex buffers serve every frame of a video: per frame only
the positions (and normals, colours) are re-uploaded, drawn into an offscreen multisampled
framebuffer and read back as RGB. The rasteriser on a GPU-less machine is Mesa's llvmpipe, which
already spreads a frame over all cores; encoding runs in the ffmpeg process in parallel.
"""
from __future__ import annotations

import ctypes
import math
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import UserError
from .video import open_video

BACKGROUND = (1.0, 1.0, 1.0)
SKIN = (0.72, 0.72, 0.72)
INSTALL_HINT = ("no headless OpenGL found: install Mesa's EGL (Debian: libegl1 libegl-mesa0 "
                "libgl1-mesa-dri) or OSMesa (Debian: libosmesa6), or set PYOPENGL_PLATFORM")

# The probe runs in a child: a failed EGL/OSMesa load leaves PyOpenGL unusable in that process.
_PROBE = """
import sys
name = sys.argv[1]
if name == "egl":
    from pyrender.platforms.egl import EGLPlatform as Platform
else:
    from pyrender.platforms.osmesa import OSMesaPlatform as Platform
platform = Platform(8, 8)
platform.init_context()
platform.make_current()
from OpenGL import GL
version = GL.glGetString(GL.GL_VERSION).decode()
major, minor = (int(x) for x in version.split()[0].split(".")[:2])
sys.exit(0 if (major, minor) >= (3, 3) else 1)
"""


def select_backend() -> str:
    """The PyOpenGL platform to render with: PYOPENGL_PLATFORM if set, else the first of EGL and
    OSMesa that creates a GL >= 3.3 context. The choice is stored in PYOPENGL_PLATFORM."""
    chosen = os.environ.get("PYOPENGL_PLATFORM")
    if chosen:
        return chosen
    for name in ("egl", "osmesa"):
        env = {**os.environ, "PYOPENGL_PLATFORM": name}
        try:
            probe = subprocess.run([sys.executable, "-c", _PROBE, name], env=env, timeout=120,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            continue
        if probe.returncode == 0:
            os.environ["PYOPENGL_PLATFORM"] = name
            return name
    raise UserError(INSTALL_HINT)


def _create_context(width: int, height: int):
    backend = select_backend()
    try:
        if backend == "egl":
            from pyrender.platforms.egl import EGLPlatform as Platform
        elif backend == "osmesa":
            from pyrender.platforms.osmesa import OSMesaPlatform as Platform
        else:
            raise UserError(f"PYOPENGL_PLATFORM={backend} cannot render offscreen: use egl or osmesa")
        platform = Platform(width, height)
        platform.init_context()
        platform.make_current()
    except UserError:
        raise
    except Exception as exc:  # missing libraries surface as ImportError, AssertionError, GLError...
        raise UserError(f"{INSTALL_HINT} ({backend}: {exc.__class__.__name__}: {exc})") from exc
    return platform


_VERTEX_SHADER = """
#version 330 core
layout(location = 0) in vec3 position;
layout(location = 1) in vec3 normal;
layout(location = 2) in vec3 color;
uniform mat4 view_projection;
out vec3 v_position;
out vec3 v_normal;
out vec3 v_color;
void main() {
    v_position = position;
    v_normal = normal;
    v_color = color;
    gl_Position = view_projection * vec4(position, 1.0);
}
"""

# Key, fill and rim lights fixed to the camera, plus ambient; Blinn-Phong with a faint highlight.
# Normals are flipped towards the viewer, so inner surfaces (mouth) and either winding shade alike.
_FRAGMENT_SHADER = """
#version 330 core
in vec3 v_position;
in vec3 v_normal;
in vec3 v_color;
uniform vec3 eye;
uniform vec3 light_directions[3];
uniform vec3 light_colors[3];
uniform vec3 ambient;
out vec4 frag_color;
void main() {
    vec3 n = normalize(v_normal);
    if (!gl_FrontFacing) n = -n;
    vec3 view = normalize(eye - v_position);
    vec3 rgb = ambient * v_color;
    for (int i = 0; i < 3; ++i) {
        float diffuse = max(dot(n, light_directions[i]), 0.0);
        vec3 halfway = normalize(light_directions[i] + view);
        float specular = diffuse > 0.0 ? 0.12 * pow(max(dot(n, halfway), 0.0), 24.0) : 0.0;
        rgb += light_colors[i] * (v_color * diffuse + specular);
    }
    frag_color = vec4(clamp(rgb, 0.0, 1.0), 1.0);
}
"""

_LIGHTS = {  # direction towards the light (camera frame: x right, y up, z to the viewer), colour
    "key": ((-0.45, 0.5, 1.0), (0.62, 0.62, 0.62)),
    "fill": ((0.6, 0.1, 0.8), (0.30, 0.30, 0.30)),
    "rim": ((0.0, 0.8, -0.6), (0.18, 0.18, 0.18)),
}
_AMBIENT = (0.22, 0.22, 0.22)


def as_frames(vertices: np.ndarray, num_vertices: int | None = None, what: str = "vertices") -> np.ndarray:
    """(T, V*3) or (T, V, 3) -> (T, V, 3) float32; checks V when `num_vertices` is given."""
    array = np.asarray(vertices, dtype=np.float32)
    if array.ndim == 2 and array.shape[1] % 3 == 0:
        array = array.reshape(array.shape[0], -1, 3)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0:
        raise UserError(f"{what} must be (T, V*3) or (T, V, 3) with T > 0, got shape {np.shape(vertices)}")
    if num_vertices is not None and array.shape[1] != num_vertices:
        raise UserError(f"{what} have {array.shape[1]} vertices ({array.shape[1] * 3} values per frame), "
                        f"the mesh has {num_vertices} ({num_vertices * 3})")
    if not np.isfinite(array).all():
        raise UserError(f"{what} hold non-finite values")
    return array


def _incidence(faces: np.ndarray, num_vertices: int):
    """Sparse (V, F) vertex-face incidence: vertex normals = incidence @ face normals."""
    from scipy.sparse import csr_matrix

    rows = faces.reshape(-1)
    cols = np.repeat(np.arange(len(faces)), 3)
    return csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(num_vertices, len(faces)))


def look_at_projection(bounds_min: np.ndarray, bounds_max: np.ndarray, aspect: float,
                       fov_y_deg: float = 20.0, margin: float = 1.12) -> tuple[np.ndarray, np.ndarray]:
    """A frontal perspective camera (looking down -z) that frames a bounding box.

    Returns (view_projection (4, 4) float32 with y flipped so that rows read back top-first, eye (3,)).
    """
    lo = np.asarray(bounds_min, np.float64)
    hi = np.asarray(bounds_max, np.float64)
    center = (lo + hi) / 2
    half = np.maximum((hi - lo) / 2, 1e-9)
    tan_y = math.tan(math.radians(fov_y_deg) / 2)
    tan_x = tan_y * aspect
    # the box's front face is closest to the camera, so it sets the distance
    distance = half[2] + margin * max(half[0] / tan_x, half[1] / tan_y)
    eye = center + np.array([0.0, 0.0, distance])
    near = max(distance - half[2] * 1.5, distance * 0.05)
    far = distance + half[2] * 1.5 + distance * 0.05
    view = np.eye(4)
    view[:3, 3] = -eye
    projection = np.zeros((4, 4))
    projection[0, 0] = 1 / tan_x
    projection[1, 1] = -1 / tan_y  # flipped: glReadPixels returns the bottom row first
    projection[2, 2] = -(far + near) / (far - near)
    projection[2, 3] = -2 * far * near / (far - near)
    projection[3, 2] = -1
    return (projection @ view).astype(np.float32), eye.astype(np.float32)


class MeshRenderer:
    """Renders frames of one topology, side by side in `panels` viewports, offscreen.

    Create once per video (or per batch of videos) and call `render` per frame.
    """

    def __init__(self, faces: np.ndarray, framing_vertices: np.ndarray,
                 resolution: tuple[int, int] = (800, 800), panels: int = 1, samples: int = 4):
        faces = np.asarray(faces)
        framing_vertices = np.asarray(framing_vertices, dtype=np.float32).reshape(-1, 3)
        width, height = (int(x) for x in resolution)
        if width < 2 or height < 2:
            raise UserError(f"resolution must be at least 2x2, got {width}x{height}")
        if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
            raise UserError(f"faces must be a non-empty (F, 3) array, got shape {faces.shape}")
        self.num_vertices = len(framing_vertices)
        if faces.min() < 0 or faces.max() >= self.num_vertices:
            raise UserError(f"faces index vertices outside 0..{self.num_vertices - 1}")
        self.width, self.height, self.panels = width, height, panels
        self.faces = faces.astype(np.uint32)
        self._incidence = _incidence(self.faces, self.num_vertices)
        self._platform = _create_context(width * panels, height)
        self._objects: list = []
        try:
            self._setup(framing_vertices, samples)
        except Exception:
            self.close()
            raise

    def _setup(self, framing_vertices: np.ndarray, samples: int) -> None:
        from OpenGL import GL
        from OpenGL.GL import shaders

        width, height = self.width * self.panels, self.height
        self._program = shaders.compileProgram(
            shaders.compileShader(_VERTEX_SHADER, GL.GL_VERTEX_SHADER),
            shaders.compileShader(_FRAGMENT_SHADER, GL.GL_FRAGMENT_SHADER))
        GL.glUseProgram(self._program)
        view_projection, eye = look_at_projection(framing_vertices.min(0), framing_vertices.max(0),
                                                  self.width / self.height)
        GL.glUniformMatrix4fv(GL.glGetUniformLocation(self._program, "view_projection"), 1, GL.GL_TRUE,
                              view_projection)
        GL.glUniform3fv(GL.glGetUniformLocation(self._program, "eye"), 1, eye)
        directions = np.array([d for d, _ in _LIGHTS.values()], np.float32)
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        colors = np.array([c for _, c in _LIGHTS.values()], np.float32)
        GL.glUniform3fv(GL.glGetUniformLocation(self._program, "light_directions"), 3, directions)
        GL.glUniform3fv(GL.glGetUniformLocation(self._program, "light_colors"), 3, colors)
        GL.glUniform3fv(GL.glGetUniformLocation(self._program, "ambient"), 1, np.array(_AMBIENT, np.float32))

        # multisampled target for smooth edges, resolved into a plain one for reading back
        self._fbo_ms, self._fbo = GL.glGenFramebuffers(2)
        color_ms, depth_ms, color = GL.glGenRenderbuffers(3)
        self._objects += [("fb", self._fbo_ms), ("fb", self._fbo), ("rb", color_ms), ("rb", depth_ms),
                          ("rb", color)]
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, color_ms)
        GL.glRenderbufferStorageMultisample(GL.GL_RENDERBUFFER, samples, GL.GL_RGBA8, width, height)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, depth_ms)
        GL.glRenderbufferStorageMultisample(GL.GL_RENDERBUFFER, samples, GL.GL_DEPTH_COMPONENT24, width, height)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._fbo_ms)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, color_ms)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, GL.GL_RENDERBUFFER, depth_ms)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, color)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_RGBA8, width, height)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._fbo)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, color)
        for fbo in (self._fbo_ms, self._fbo):
            GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, fbo)
            status = GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)
            if status != GL.GL_FRAMEBUFFER_COMPLETE:
                raise RuntimeError(f"offscreen framebuffer incomplete (status {status:#x})")

        # one vertex array per panel: positions, normals and colours are rewritten every frame
        self._arrays = []
        for _ in range(self.panels):
            vao = GL.glGenVertexArrays(1)
            buffers = GL.glGenBuffers(4)
            self._objects += [("va", vao)] + [("buf", b) for b in buffers]
            GL.glBindVertexArray(vao)
            for location, buffer in enumerate(buffers[:3]):
                GL.glBindBuffer(GL.GL_ARRAY_BUFFER, buffer)
                GL.glBufferData(GL.GL_ARRAY_BUFFER, self.num_vertices * 12, None, GL.GL_STREAM_DRAW)
                GL.glEnableVertexAttribArray(location)
                GL.glVertexAttribPointer(location, 3, GL.GL_FLOAT, GL.GL_FALSE, 0, None)
            GL.glBindBuffer(GL.GL_ELEMENT_ARRAY_BUFFER, buffers[3])
            GL.glBufferData(GL.GL_ELEMENT_ARRAY_BUFFER, self.faces.nbytes, self.faces, GL.GL_STATIC_DRAW)
            self._arrays.append((vao, buffers[:3]))

        GL.glEnable(GL.GL_DEPTH_TEST)
        GL.glEnable(GL.GL_MULTISAMPLE)
        # the flipped projection mirrors screen-space winding; keep gl_FrontFacing meaning outward
        GL.glFrontFace(GL.GL_CW)
        GL.glClearColor(*BACKGROUND, 1.0)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        self._skin_uploaded = [False] * self.panels

    def vertex_normals(self, vertices: np.ndarray) -> np.ndarray:
        """Area-weighted vertex normals (unnormalised: the shader normalises)."""
        tri = vertices[self.faces]
        face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        return np.ascontiguousarray(self._incidence @ face_normals, dtype=np.float32)

    def render(self, meshes: Sequence[np.ndarray], colors: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
        """Draw `meshes[i]` ((V, 3) positions) into panel i, left to right -> (H, W * panels, 3) uint8.

        colors[i]: (V, 3) float RGB in [0, 1] per vertex, or None for the neutral skin colour.
        """
        from OpenGL import GL
        from OpenGL.raw.GL.VERSION.GL_1_0 import glReadPixels

        if len(meshes) != self.panels:
            raise ValueError(f"expected {self.panels} meshes, got {len(meshes)}")
        colors = list(colors) if colors is not None else [None] * self.panels
        self._platform.make_current()
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._fbo_ms)
        GL.glViewport(0, 0, self.width * self.panels, self.height)
        GL.glClear(GL.GL_COLOR_BUFFER_BIT | GL.GL_DEPTH_BUFFER_BIT)
        for panel, (vertices, color) in enumerate(zip(meshes, colors)):
            vertices = np.ascontiguousarray(vertices, dtype=np.float32)
            vao, (positions, normals, color_buffer) = self._arrays[panel]
            GL.glBindBuffer(GL.GL_ARRAY_BUFFER, positions)
            GL.glBufferSubData(GL.GL_ARRAY_BUFFER, 0, vertices.nbytes, vertices)
            GL.glBindBuffer(GL.GL_ARRAY_BUFFER, normals)
            GL.glBufferSubData(GL.GL_ARRAY_BUFFER, 0, vertices.nbytes, self.vertex_normals(vertices))
            if color is not None or not self._skin_uploaded[panel]:
                rgb = np.broadcast_to(np.asarray(SKIN if color is None else color, np.float32),
                                      vertices.shape)
                GL.glBindBuffer(GL.GL_ARRAY_BUFFER, color_buffer)
                GL.glBufferSubData(GL.GL_ARRAY_BUFFER, 0, vertices.nbytes, np.ascontiguousarray(rgb))
                self._skin_uploaded[panel] = color is None  # the constant skin colour is uploaded once
            GL.glViewport(panel * self.width, 0, self.width, self.height)
            GL.glBindVertexArray(vao)
            GL.glDrawElements(GL.GL_TRIANGLES, self.faces.size, GL.GL_UNSIGNED_INT, None)
        width = self.width * self.panels
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._fbo_ms)
        GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, self._fbo)
        GL.glBlitFramebuffer(0, 0, width, self.height, 0, 0, width, self.height,
                             GL.GL_COLOR_BUFFER_BIT, GL.GL_NEAREST)
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._fbo)
        image = np.empty((self.height, width, 3), np.uint8)
        glReadPixels(0, 0, width, self.height, GL.GL_RGB, GL.GL_UNSIGNED_BYTE,
                     image.ctypes.data_as(ctypes.c_void_p))
        return image

    def close(self) -> None:
        if self._platform is None:
            return
        from OpenGL import GL

        self._platform.make_current()
        deleters = {"fb": GL.glDeleteFramebuffers, "rb": GL.glDeleteRenderbuffers,
                    "va": GL.glDeleteVertexArrays, "buf": GL.glDeleteBuffers}
        for kind, handle in self._objects:
            deleters[kind](1, [handle])
        if getattr(self, "_program", None):
            GL.glDeleteProgram(self._program)
        self._platform.delete_context()
        self._platform = None

    def __enter__(self) -> "MeshRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _colormap_lut() -> np.ndarray:
    """256 x RGB float32 of the perceptually ordered 'turbo' map (blue = small, red = large)."""
    import cv2

    ramp = np.arange(256, dtype=np.uint8)[:, None]
    return cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO)[:, 0, ::-1].astype(np.float32) / 255


def error_colors(errors: np.ndarray, vmax: float) -> np.ndarray:
    """Per-vertex distances (..., V) -> (..., V, 3) RGB in [0, 1], saturating at vmax."""
    index = np.clip(np.asarray(errors) / vmax * 255, 0, 255).astype(np.uint8)
    return _colormap_lut()[index]


def _text_patch(text: str, height: int, scale: float) -> np.ndarray:
    import cv2

    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    patch = np.full((max(height, h + base + 4), w + 4, 3), [round(255 * c) for c in BACKGROUND], np.uint8)
    cv2.putText(patch, text, (2, h + 2), font, scale, (40, 40, 40), thickness, cv2.LINE_AA)
    return patch


def _overlays(width: int, height: int, panels: int, heatmap_max: float | None) -> list[tuple[int, int, np.ndarray]]:
    """Static (x, y, RGB patch) decorations pasted onto every frame: panel titles and a colour bar."""
    scale = 0.6 * min(width, height) / 800
    pad = max(2, round(0.02 * height))
    out = []
    if panels == 2:
        for panel, title in enumerate(("ground truth", "prediction")):
            patch = _text_patch(title, 0, scale)
            out.append((panel * width + (width - patch.shape[1]) // 2, pad, patch))
    if heatmap_max is not None:
        bar_h, bar_w = max(4, round(0.4 * height)), max(2, round(0.025 * width))
        bar = error_colors(np.linspace(heatmap_max, 0, bar_h)[:, None].repeat(bar_w, 1), heatmap_max)
        x = panels * width - bar_w - 3 * pad
        top = _text_patch(f"{heatmap_max:.3g}", 0, scale * 0.8)
        bottom = _text_patch("0", 0, scale * 0.8)
        y = (height - bar_h) // 2
        out.append((x, y, (bar * 255).round().astype(np.uint8)))
        out.append((min(x, panels * width - top.shape[1]), y - top.shape[0] - 2, top))
        out.append((x, y + bar_h + 2, bottom))
    return [(x, y, p[: height - y, : panels * width - x]) for x, y, p in out if 0 <= x and 0 <= y < height]


@dataclass
class _Job:
    """Everything needed to render a run of frames; picklable, so workers can take a share."""
    faces: np.ndarray
    framing: np.ndarray
    resolution: tuple[int, int]
    frames: np.ndarray
    truth: np.ndarray | None          # drawn in a left panel when not None
    errors: np.ndarray | None         # per-vertex distances colouring the prediction
    heatmap_max: float
    overlays: list

    def share(self, worker: int, workers: int) -> "_Job":
        def pick(a):
            return None if a is None else a[worker::workers]
        return replace(self, frames=pick(self.frames), truth=pick(self.truth), errors=pick(self.errors))


def _render_job(job: _Job) -> Iterator[np.ndarray]:
    panels = 1 if job.truth is None else 2
    with MeshRenderer(job.faces, job.framing, job.resolution, panels) as renderer:
        for t in range(len(job.frames)):
            color = None if job.errors is None else error_colors(job.errors[t], job.heatmap_max)
            if job.truth is None:
                image = renderer.render([job.frames[t]], [color])
            else:
                image = renderer.render([job.truth[t], job.frames[t]], [None, color])
            for x, y, patch in job.overlays:
                image[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
            yield image


def _render_worker(conn, job: _Job) -> None:
    """Worker process: renders its share and sends raw frames; any other payload is an error."""
    try:
        for image in _render_job(job):
            conn.send_bytes(image.reshape(-1))  # 1-D: send_bytes sizes a buffer by len()
    except BaseException as exc:
        kind = b"U" if isinstance(exc, UserError) else b"E"
        conn.send_bytes(kind + f"{exc.__class__.__name__}: {exc}".encode())
    finally:
        conn.close()


def default_workers(num_frames: int) -> int:
    """Render processes for a video. Mesa's software rasteriser runs the geometry stage on one
    thread per context, so two contexts on two cores nearly double throughput; starting a worker
    costs about a second, which short clips do not repay."""
    if num_frames < 60:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), 4, num_frames))


def _stream(job: _Job, workers: int) -> Iterator[np.ndarray]:
    """The frames of `job` in order, rendered in this process or by `workers` processes that take
    every workers-th frame each (interleaved, so the encoder streams while they render)."""
    if workers <= 1:
        yield from _render_job(job)
        return
    import multiprocessing

    # spawn: a forked child would inherit the parent's threads and possibly a GL context
    context = multiprocessing.get_context("spawn")
    connections, processes = [], []
    try:
        for worker in range(workers):
            receive, send = context.Pipe(duplex=False)
            process = context.Process(target=_render_worker, args=(send, job.share(worker, workers)),
                                      daemon=True)
            process.start()
            send.close()
            connections.append(receive)
            processes.append(process)
        panels = 1 if job.truth is None else 2
        shape = (job.resolution[1], job.resolution[0] * panels, 3)
        size = int(np.prod(shape))
        for t in range(len(job.frames)):
            try:
                payload = connections[t % workers].recv_bytes()
            except EOFError:
                raise RuntimeError(f"render worker {t % workers} exited unexpectedly") from None
            if len(payload) != size:
                message = payload[1:].decode(errors="replace")
                raise (UserError if payload[:1] == b"U" else RuntimeError)(message)
            yield np.frombuffer(payload, np.uint8).reshape(shape)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
        for connection in connections:
            connection.close()


def render_sequence(vertices: np.ndarray, faces: np.ndarray, out_path: str | os.PathLike, fps: float,
                    audio_path: str | os.PathLike | None = None, gt: np.ndarray | None = None,
                    heatmap: bool = False, heatmap_max: float | None = None, side_by_side: bool = True,
                    resolution: tuple[int, int] = (800, 800), template: np.ndarray | None = None,
                    workers: int | None = None, progress: bool = True) -> Path:
    """Render a vertex sequence to an H.264 mp4 (with the audio track as AAC when given).

    vertices / gt: (T, V*3) or (T, V, 3) of the same length T. With gt, the video shows ground
    truth | prediction side by side (unless side_by_side=False); heatmap=True colours the prediction
    by per-vertex distance to gt, up to heatmap_max (default: 99th percentile of the distances).
    The camera frames `template` ((V, 3), default the first frame) from the front (+z).
    resolution: (width, height) of one panel, rounded up to even. workers: render processes
    (default: default_workers(T)). The mp4 is written atomically; returns its path.
    """
    faces = np.asarray(faces)
    frames = as_frames(vertices)
    num_vertices = frames.shape[1]
    truth = None if gt is None else as_frames(gt, num_vertices, "ground-truth vertices")
    if truth is not None and len(truth) != len(frames):
        raise UserError(f"ground truth has {len(truth)} frames, the prediction {len(frames)}")
    if heatmap and truth is None:
        raise UserError("the error heat-map needs ground-truth vertices")
    if template is None:
        framing = (truth if truth is not None else frames)[0]
    else:
        framing = as_frames(np.asarray(template)[None], num_vertices, "template vertices")[0]
    errors = None
    if heatmap:
        errors = np.linalg.norm(frames - truth, axis=2)
        if heatmap_max is None:
            heatmap_max = float(np.percentile(errors, 99)) or 1.0
        if heatmap_max <= 0:
            raise UserError(f"heat-map maximum must be positive, got {heatmap_max}")
    panels = 2 if truth is not None and side_by_side else 1
    width, height = (int(x) + int(x) % 2 for x in resolution)
    job = _Job(faces=faces, framing=framing, resolution=(width, height), frames=frames,
               truth=truth if panels == 2 else None, errors=errors, heatmap_max=heatmap_max or 0.0,
               overlays=_overlays(width, height, panels, heatmap_max if heatmap else None))
    workers = default_workers(len(frames)) if workers is None else max(1, min(workers, len(frames)))
    select_backend()  # probe once here, so workers inherit PYOPENGL_PLATFORM

    from tqdm import tqdm

    with open_video(out_path, width * panels, height, fps, audio_path, len(frames)) as write:
        for image in tqdm(_stream(job, workers), total=len(frames), desc=Path(out_path).name,
                          unit="frame", disable=not progress, leave=False):
            write(image)
    return Path(out_path)
