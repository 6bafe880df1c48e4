"""Headless rendering of vertex sequences (one fixed topology) to H.264 + AAC mp4.

One OpenGL context, shader program and set of vertex buffers serve every frame of a video: per
frame only positions, normals (and heat-map colours) are re-uploaded, drawn into an offscreen
framebuffer and read back as RGB. Without a GPU the rasteriser is Mesa's llvmpipe, which spreads
each frame over the cores; meanwhile the ffmpeg process encodes the previous frames.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import math
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import UserError
from .video import open_video

BACKGROUND = (1.0, 1.0, 1.0)
SKIN = (0.72, 0.72, 0.72)
INSTALL_HINT = ("no headless OpenGL found: install Mesa's EGL (Debian: libegl1 libegl-mesa0 "
                "libgl1-mesa-dri libopengl0) or OSMesa (Debian: libosmesa6), or set PYOPENGL_PLATFORM")

_EGL_PLATFORM_DEVICE_EXT = 0x313F


def _egl_display():
    """The EGL display of the first EGL device when the driver can enumerate them (headless GPUs,
    Mesa's software device), else the default display; (re)initialised on every call, since
    another library in the process may have terminated it (eglInitialize is idempotent)."""
    global _EGL_DISPLAY
    from OpenGL import EGL

    with _EGL_LOCK:
        if _EGL_DISPLAY is None:
            _EGL_DISPLAY = _find_egl_display()
        major, minor = EGL.EGLint(), EGL.EGLint()
        if not EGL.eglInitialize(_EGL_DISPLAY, ctypes.pointer(major), ctypes.pointer(minor)):
            raise RuntimeError("eglInitialize failed")
    return _EGL_DISPLAY


def _find_egl_display():
    from OpenGL import EGL

    display = None
    query_address = EGL.eglGetProcAddress(b"eglQueryDevicesEXT")
    get_address = EGL.eglGetProcAddress(b"eglGetPlatformDisplayEXT")
    if query_address and get_address:
        query = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                                 ctypes.POINTER(ctypes.c_int))(query_address)
        get_display = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p,
                                       ctypes.c_void_p)(get_address)
        devices, count = (ctypes.c_void_p * 4)(), ctypes.c_int()
        if query(4, devices, ctypes.byref(count)) and count.value > 0:
            address = get_display(_EGL_PLATFORM_DEVICE_EXT, devices[0], None)
            display = ctypes.cast(address, EGL.EGLDisplay) if address else None
    return display or EGL.eglGetDisplay(EGL.EGL_DEFAULT_DISPLAY)


_EGL_DISPLAY = None
_EGL_LOCK = threading.Lock()


class _GLContext:
    """An OpenGL 3.3 core context without a window (EGL or OSMesa), current on the creating thread."""

    def __init__(self, backend: str):
        self.backend = backend
        if backend == "egl":
            from OpenGL import EGL

            self._display = _egl_display()
            attributes = (EGL.EGLint * 7)(EGL.EGL_SURFACE_TYPE, EGL.EGL_PBUFFER_BIT,
                                          EGL.EGL_RENDERABLE_TYPE, EGL.EGL_OPENGL_BIT,
                                          EGL.EGL_DEPTH_SIZE, 24, EGL.EGL_NONE)
            config, count = EGL.EGLConfig(), EGL.EGLint()
            if not EGL.eglChooseConfig(self._display, attributes, ctypes.pointer(config), 1,
                                       ctypes.pointer(count)) or count.value < 1:
                raise RuntimeError("no EGL config with desktop OpenGL")
            EGL.eglBindAPI(EGL.EGL_OPENGL_API)
            version = (EGL.EGLint * 7)(EGL.EGL_CONTEXT_MAJOR_VERSION, 3, EGL.EGL_CONTEXT_MINOR_VERSION, 3,
                                       EGL.EGL_CONTEXT_OPENGL_PROFILE_MASK,
                                       EGL.EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT, EGL.EGL_NONE)
            self._context = EGL.eglCreateContext(self._display, config, EGL.EGL_NO_CONTEXT, version)
            if not self._context:
                raise RuntimeError("eglCreateContext failed")
        elif backend == "osmesa":
            from OpenGL import GL, arrays, osmesa

            attributes = arrays.GLintArray.asArray([
                osmesa.OSMESA_FORMAT, osmesa.OSMESA_RGBA, osmesa.OSMESA_DEPTH_BITS, 24,
                osmesa.OSMESA_PROFILE, osmesa.OSMESA_CORE_PROFILE,
                osmesa.OSMESA_CONTEXT_MAJOR_VERSION, 3, osmesa.OSMESA_CONTEXT_MINOR_VERSION, 3, 0])
            self._context = osmesa.OSMesaCreateContextAttribs(attributes, None)
            if not self._context:
                raise RuntimeError("OSMesaCreateContextAttribs failed")
            # OSMesa needs a colour buffer to bind; drawing goes to framebuffer objects instead
            self._buffer = arrays.GLubyteArray.zeros((1, 1, 4))
            self._buffer_type = GL.GL_UNSIGNED_BYTE
        else:
            raise UserError(f"PYOPENGL_PLATFORM={backend} cannot render offscreen: use egl or osmesa")
        self.make_current()

    def make_current(self) -> None:
        if self.backend == "egl":
            from OpenGL import EGL

            if not EGL.eglMakeCurrent(self._display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, self._context):
                raise RuntimeError("eglMakeCurrent failed")
        else:
            from OpenGL import osmesa

            if not osmesa.OSMesaMakeCurrent(self._context, self._buffer, self._buffer_type, 1, 1):
                raise RuntimeError("OSMesaMakeCurrent failed")

    def destroy(self) -> None:
        if self.backend == "egl":
            from OpenGL import EGL

            EGL.eglMakeCurrent(self._display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)
            EGL.eglDestroyContext(self._display, self._context)
        else:
            from OpenGL import osmesa

            osmesa.OSMesaDestroyContext(self._context)


def create_context() -> _GLContext:
    """A headless GL context on the selected backend; UserError naming what to install if none."""
    backend = select_backend()
    try:
        context = _GLContext(backend)
        from OpenGL import GL

        version = GL.glGetString(GL.GL_VERSION).decode()
    except UserError:
        raise
    except Exception as exc:  # missing libraries surface as ImportError, AttributeError, EGLError...
        raise UserError(f"{INSTALL_HINT} ({backend}: {exc.__class__.__name__}: {exc})") from exc
    major, minor = (int(x) for x in version.split()[0].split(".")[:2])
    if (major, minor) < (3, 3):
        context.destroy()
        raise UserError(f"OpenGL {version} via {backend} is older than 3.3: update Mesa")
    return context


# Runs in a child: a failed EGL/OSMesa load leaves PyOpenGL unusable in that process.
_PROBE = "import sys; sys.path.insert(0, sys.argv[1]); from ptalker.render import create_context; create_context()"


def select_backend() -> str:
    """The PyOpenGL platform to render with: PYOPENGL_PLATFORM if set, else the first of EGL and
    OSMesa that creates a GL >= 3.3 context. The choice is stored in PYOPENGL_PLATFORM."""
    chosen = os.environ.get("PYOPENGL_PLATFORM")
    if chosen:
        return chosen
    package_parent = str(Path(__file__).resolve().parent.parent)
    for name in ("egl", "osmesa"):
        env = {**os.environ, "PYOPENGL_PLATFORM": name}
        try:
            probe = subprocess.run([sys.executable, "-c", _PROBE, package_parent], env=env, timeout=120,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            continue
        if probe.returncode == 0:
            os.environ["PYOPENGL_PLATFORM"] = name
            return name
    raise UserError(INSTALL_HINT)


# Lighting is evaluated per vertex (Gouraud): on these dense face meshes it looks the same as per
# pixel and halves the software rasteriser's work. Key, fill and rim lights are fixed to the camera,
# plus ambient, with a faint Blinn-Phong highlight. Both sides are lit and the fragment picks the
# side it shows; inner sides (seen through the mouth or eye holes) are darkened like a cavity.
_VERTEX_SHADER = """
#version 330 core
layout(location = 0) in vec3 position;
layout(location = 1) in vec3 normal;
layout(location = 2) in vec3 color;
uniform mat4 view_projection;
uniform vec3 eye;
uniform vec3 light_directions[3];
uniform vec3 light_colors[3];
uniform vec3 ambient;
out vec3 front_color;
out vec3 back_color;
vec3 shade(vec3 n, vec3 view) {
    vec3 rgb = ambient * color;
    for (int i = 0; i < 3; ++i) {
        float diffuse = max(dot(n, light_directions[i]), 0.0);
        vec3 halfway = normalize(light_directions[i] + view);
        float specular = diffuse > 0.0 ? 0.12 * pow(max(dot(n, halfway), 0.0), 24.0) : 0.0;
        rgb += light_colors[i] * (color * diffuse + specular);
    }
    return clamp(rgb, 0.0, 1.0);
}
void main() {
    vec3 n = normalize(normal);
    vec3 view = normalize(eye - position);
    front_color = shade(n, view);
    back_color = 0.45 * shade(-n, view);
    gl_Position = view_projection * vec4(position, 1.0);
}
"""

_FRAGMENT_SHADER = """
#version 330 core
in vec3 front_color;
in vec3 back_color;
out vec4 frag_color;
void main() {
    frag_color = vec4(gl_FrontFacing ? front_color : back_color, 1.0);
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


def _faces_point_inward(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Whether the winding makes normals point into the mesh on the whole (closed heads and open
    face masks alike bulge away from their centroid)."""
    corners = vertices[faces].astype(np.float64)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    outward = corners.mean(axis=1) - vertices.mean(axis=0)
    return float(np.einsum("ij,ij->", normals, outward)) < 0


class MeshRenderer:
    """Renders frames of one topology, side by side in `panels` viewports, offscreen.

    Create once per video (or per batch of videos) and call `render` per frame.
    """

    def __init__(self, faces: np.ndarray, framing_vertices: np.ndarray,
                 resolution: tuple[int, int] = (800, 800), panels: int = 1, antialias: bool = False):
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
        if _faces_point_inward(framing_vertices, self.faces):
            self.faces = np.ascontiguousarray(self.faces[:, ::-1])  # so front faces are the outside
        self._corners = self.faces.reshape(-1)
        self._context = create_context()
        self._objects: list = []
        try:
            self._setup(framing_vertices, antialias)
        except Exception:
            self.close()
            raise

    def _setup(self, framing_vertices: np.ndarray, antialias: bool) -> None:
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

        # draw target; with antialiasing it is multisampled and resolved into a plain one to read
        samples = 4 if antialias else 0
        self._draw_fbo = self._framebuffer(width, height, samples, with_depth=True)
        self._read_fbo = self._framebuffer(width, height, 0, with_depth=False) if samples else self._draw_fbo

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
        # the flipped projection mirrors screen-space winding; keep gl_FrontFacing meaning outward
        GL.glFrontFace(GL.GL_CW)
        GL.glClearColor(*BACKGROUND, 1.0)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        self._skin_uploaded = [False] * self.panels

    def _framebuffer(self, width: int, height: int, samples: int, with_depth: bool) -> int:
        from OpenGL import GL

        fbo = GL.glGenFramebuffers(1)
        self._objects.append(("fb", fbo))
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, fbo)
        attachments = [(GL.GL_COLOR_ATTACHMENT0, GL.GL_RGBA8)]
        if with_depth:
            attachments.append((GL.GL_DEPTH_ATTACHMENT, GL.GL_DEPTH_COMPONENT24))
        for attachment, storage in attachments:
            renderbuffer = GL.glGenRenderbuffers(1)
            self._objects.append(("rb", renderbuffer))
            GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, renderbuffer)
            GL.glRenderbufferStorageMultisample(GL.GL_RENDERBUFFER, samples, storage, width, height)
            GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, attachment, GL.GL_RENDERBUFFER, renderbuffer)
        status = GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)
        if status != GL.GL_FRAMEBUFFER_COMPLETE:
            raise RuntimeError(f"offscreen framebuffer incomplete (status {status:#x})")
        return fbo

    def vertex_normals(self, vertices: np.ndarray) -> np.ndarray:
        """Area-weighted vertex normals (unnormalised: the shader normalises)."""
        corners = vertices[self.faces]
        face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        per_corner = np.repeat(face_normals, 3, axis=0)
        normals = np.empty((self.num_vertices, 3), np.float32)
        for axis in range(3):
            normals[:, axis] = np.bincount(self._corners, per_corner[:, axis], self.num_vertices)
        return normals

    def render(self, meshes: Sequence[np.ndarray], colors: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
        """Draw `meshes[i]` ((V, 3) positions) into panel i, left to right -> (H, W * panels, 3) uint8.

        colors[i]: (V, 3) float RGB in [0, 1] per vertex, or None for the neutral skin colour.
        """
        from OpenGL import GL
        from OpenGL.raw.GL.VERSION.GL_1_0 import glReadPixels

        if len(meshes) != self.panels:
            raise ValueError(f"expected {self.panels} meshes, got {len(meshes)}")
        colors = list(colors) if colors is not None else [None] * self.panels
        self._context.make_current()
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self._draw_fbo)
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
        if self._read_fbo != self._draw_fbo:
            GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._draw_fbo)
            GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, self._read_fbo)
            GL.glBlitFramebuffer(0, 0, width, self.height, 0, 0, width, self.height,
                                 GL.GL_COLOR_BUFFER_BIT, GL.GL_NEAREST)
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._read_fbo)
        image = np.empty((self.height, width, 3), np.uint8)
        glReadPixels(0, 0, width, self.height, GL.GL_RGB, GL.GL_UNSIGNED_BYTE,
                     image.ctypes.data_as(ctypes.c_void_p))
        return image

    def close(self) -> None:
        if self._context is None:
            return
        from OpenGL import GL

        self._context.make_current()
        deleters = {"fb": GL.glDeleteFramebuffers, "rb": GL.glDeleteRenderbuffers,
                    "va": GL.glDeleteVertexArrays, "buf": GL.glDeleteBuffers}
        for kind, handle in self._objects:
            deleters[kind](1, [handle])
        if getattr(self, "_program", None):
            GL.glDeleteProgram(self._program)
        self._context.destroy()
        self._context = None

    def __enter__(self) -> "MeshRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


def _overlays(width: int, height: int, panels: int, heatmap_max: float | None) -> list[tuple[int, int, np.ndarray]]:
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


@dataclass
class _Job:
    """What every frame of a video needs besides its index."""
    faces: np.ndarray
    framing: np.ndarray
    resolution: tuple[int, int]
    frames: np.ndarray
    truth: np.ndarray | None          # drawn in a left panel when not None
    errors: np.ndarray | None         # per-vertex distances colouring the prediction
    heatmap_max: float
    overlays: list
    antialias: bool


def _render_frames(job: _Job, indices: range) -> Iterator[np.ndarray]:
    """Frames `indices` of the job from one renderer (its GL context lives on the calling thread)."""
    panels = 1 if job.truth is None else 2
    with MeshRenderer(job.faces, job.framing, job.resolution, panels, job.antialias) as renderer:
        for t in indices:
            color = None if job.errors is None else error_colors(job.errors[t], job.heatmap_max)
            if job.truth is None:
                image = renderer.render([job.frames[t]], [color])
            else:
                image = renderer.render([job.truth[t], job.frames[t]], [None, color])
            for x, y, patch in job.overlays:
                image[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
            yield image


def default_workers() -> int:
    """Two render threads where two cores are usable: Mesa's software rasteriser does vertex
    processing and triangle setup on the drawing thread, so a second context overlaps that work
    (on a busy 2-core machine: median +25% frames/s for FLAME, +8% for BIWI, ~7% more CPU)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(2, cores)


def _stream(job: _Job, workers: int) -> Iterator[np.ndarray]:
    """The frames of `job` in order; with several workers, thread k renders frames k, k + workers, ...
    on its own context (GL calls release the GIL) and the caller collects them round-robin."""
    if workers <= 1:
        yield from _render_frames(job, range(len(job.frames)))
        return
    stop = threading.Event()
    outboxes = [queue.Queue(maxsize=4) for _ in range(workers)]

    def offer(outbox: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                outbox.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work(worker: int) -> None:
        frames = _render_frames(job, range(worker, len(job.frames), workers))
        try:
            with contextlib.closing(frames):
                for image in frames:
                    if not offer(outboxes[worker], image):
                        return
        except BaseException as exc:  # handed to the caller, which re-raises it
            offer(outboxes[worker], exc)

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(workers)]
    for thread in threads:
        thread.start()
    try:
        for t in range(len(job.frames)):
            item = outboxes[t % workers].get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def render_sequence(vertices: np.ndarray, faces: np.ndarray, out_path: str | os.PathLike, fps: float,
                    audio_path: str | os.PathLike | None = None, gt: np.ndarray | None = None,
                    heatmap: bool = False, heatmap_max: float | None = None, side_by_side: bool = True,
                    resolution: tuple[int, int] = (800, 800), template: np.ndarray | None = None,
                    antialias: bool = False, workers: int | None = None, progress: bool = True) -> Path:
    """Render a vertex sequence to an H.264 mp4 (with the audio track as AAC when given).

    vertices / gt: (T, V*3) or (T, V, 3) of the same length T. With gt, the video shows ground
    truth | prediction side by side (unless side_by_side=False); heatmap=True colours the prediction
    by per-vertex distance to gt, up to heatmap_max (default: 99th percentile of the distances).
    The camera frames `template` ((V, 3), default the first frame) from the front (+z).
    resolution: (width, height) of one panel, rounded up to even. antialias: 4x multisampling
    (about twice the CPU time in software). workers: render threads, each with its own GL context
    (default: default_workers()). The mp4 is written atomically; returns its path.
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
               overlays=_overlays(width, height, panels, heatmap_max if heatmap else None),
               antialias=antialias)
    workers = max(1, min(default_workers() if workers is None else workers, len(frames)))
    select_backend()  # before the worker threads, which would otherwise each probe

    from tqdm import tqdm

    with open_video(out_path, width * panels, height, fps, audio_path, len(frames)) as write, \
            contextlib.closing(_stream(job, workers)) as images:
        for image in tqdm(images, total=len(frames), desc=Path(out_path).name, unit="frame",
                          disable=not progress, leave=False):
            write(image)
    return Path(out_path)


def parse_resolution(text: str) -> tuple[int, int]:
    """`800` or `1024x768` -> (width, height)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 16:
        raise argparse.ArgumentTypeError(f"expected N or WxH (at least 16), got {text!r}")
    return parts[0], parts[1]
