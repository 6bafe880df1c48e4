"""Offscreen rendering of meshes of one fixed topology: a frontal camera that frames the face,
three lights fixed to the camera, and `MeshRenderer`, which draws one frame (optionally several side
by side, optionally coloured per vertex) into a framebuffer and reads it back as RGB.

One OpenGL context, shader program and set of vertex buffers serve every frame: per frame only
positions, normals (and per-vertex colours) are re-uploaded. Without a GPU the rasteriser is Mesa's
llvmpipe, which spreads each frame over the cores.
"""
from __future__ import annotations

import ctypes
import math
from typing import Sequence

import numpy as np

from .errors import UserError
from .gl_context import create_context

BACKGROUND = (1.0, 1.0, 1.0)
SKIN = (0.72, 0.72, 0.72)

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
