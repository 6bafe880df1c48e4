"""`graph_softmax_aggregate`: graph_kernel.c as a PyTorch operator for the CPU.

A compiled one-frame step calls it as one opaque operator (torch.compile keeps custom operators as
calls). The C source is built on first use with the system's C compiler, the same one torch.compile
needs on the CPU, into a per-user cache keyed by the source, the flags and the CPU, and loaded with
ctypes. -ffast-math lets the compiler call the vectorised expf; the library is linked without it, so
loading it leaves the process's floating-point flags (denormals) as they were.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("graph_kernel.c")
COMPILE_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC"]


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "ptalker" / "kernels"


def _cpu_signature() -> str:
    """What -march=native depends on: a cache shared between machines keeps one build per CPU kind."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    return platform.machine() + flags


def _build(compiler: str, target: Path) -> None:
    """Compile, then link without -ffast-math (which would link code that flushes denormals at load).
    Without OpenMP (or glibc's libmvec, home of the vectorised expf) the kernel is built without it."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        obj, lib = Path(tmp) / "kernel.o", Path(tmp) / target.name
        for openmp, libraries in ((["-fopenmp"], ["-lmvec", "-lm"]), (["-fopenmp"], ["-lm"]), ([], ["-lm"])):
            done = subprocess.run([compiler, *COMPILE_FLAGS, *openmp, "-c", str(SOURCE), "-o", str(obj)],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                done = subprocess.run([compiler, "-shared", *openmp, str(obj), "-o", str(lib), *libraries],
                                      capture_output=True, text=True)
            if done.returncode == 0:
                break
        else:
            raise RuntimeError(done.stderr.strip())
        os.replace(lib, target)   # whole or not at all, also with several processes building at once


@cache
def _library() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("the fused CPU step needs a C compiler (cc or gcc on the PATH, or CC)")
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *COMPILE_FLAGS, compiler, _cpu_signature()])
                         .encode()).hexdigest()[:20]
    target = _cache_dir() / f"graph_kernel_{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            _build(compiler, target)
        except RuntimeError as error:
            raise RuntimeError(f"building {SOURCE.name} failed: {error}") from None
    lib = ctypes.CDLL(str(target))
    lib.graph_softmax_aggregate.restype = ctypes.c_int
    lib.graph_softmax_aggregate.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int64] * 5 + [ctypes.c_float]
    return lib


@torch.library.custom_op("ptalker::graph_softmax_aggregate", mutates_args=(), device_types="cpu")
def graph_softmax_aggregate(score_src: torch.Tensor, score_dst: torch.Tensor, feats: torch.Tensor,
                            rowptr: torch.Tensor, col: torch.Tensor, slope: float) -> torch.Tensor:
    """score_src, score_dst (N, V, H), feats (N, V, 1 or H, C) float32; the edges into vertex v are
    col[rowptr[v]:rowptr[v+1]] (int64) -> (N, V, H, C): per vertex and head, the softmax over its
    edges of LeakyReLU(score_src[source] + score_dst[v]) weighting the sources' features."""
    if {score_src.dtype, score_dst.dtype, feats.dtype} != {torch.float32} or {rowptr.dtype, col.dtype} != {torch.int64}:
        raise TypeError("graph_softmax_aggregate takes float32 scores and features and int64 indices")
    N, V, H = score_src.shape
    score_src, score_dst, feats = score_src.contiguous(), score_dst.contiguous(), feats.contiguous()
    out = score_src.new_empty(N, V, H, feats.shape[3])
    scratch = score_src.new_empty(col.shape[0] * H)
    status = _library().graph_softmax_aggregate(
        score_src.data_ptr(), score_dst.data_ptr(), feats.data_ptr(), rowptr.data_ptr(), col.data_ptr(),
        scratch.data_ptr(), out.data_ptr(), N, V, H, feats.shape[2], feats.shape[3], slope)
    if status:
        raise ValueError(f"graph_softmax_aggregate: unsupported sizes H={H}, feats {tuple(feats.shape)}")
    return out


@graph_softmax_aggregate.register_fake
def _(score_src, score_dst, feats, rowptr, col, slope):
    N, V, H = score_src.shape
    return score_src.new_empty(N, V, H, feats.shape[3])
