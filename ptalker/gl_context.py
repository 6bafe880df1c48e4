"""Headless OpenGL contexts: EGL (the first EGL device, else the default display) or OSMesa, chosen
once per process by probing each in a child process (`select_backend`), then created per renderer
(`create_context`), current on the creating thread.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
from pathlib import Path

from .errors import UserError

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
_PROBE = "import sys; sys.path.insert(0, sys.argv[1]); from ptalker.gl_context import create_context; create_context()"


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
