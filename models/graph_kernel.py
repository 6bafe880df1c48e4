"""`graph_softmax_aggregate`: graph_kernel.c as a PyTorch operator for the CPU.

A compiled one-frame step calls it as one opaque operator (torch.compile keeps custom operators as
calls). The C source is built on first use with the system's C compiler into a per-user cache
($XDG_CACHE_HOME or ~/.cache, then ptalker/kernels) keyed by the source, the flags and the CPU, and
loaded with ctypes. -ffast-math lets the compiler call glibc's vectorised expf (libmvec); the library
is linked without it, so loading it leaves the process's floating-point flags (denormals) as they
were. Where OpenMP or libmvec is missing, a build without them is tried; where no build loads,
`available()` is False and callers compute the same by other means.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from functools import cache
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("graph_kernel.c")
COMPILE_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC"]
MAX_HEADS, MAX_HEAD_VALUES = 16, 256   # the kernel's per-vertex accumulators: H and H*C


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "ptalker" / "kernels"


def _cpu_signature() -> str:
    """What -march=native depends on (x86 `flags`, Arm `Features`): one build per CPU kind."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return platform.machine() + "".join(sorted({line for line in lines if line.startswith(("flags", "Features"))}))


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.graph_softmax_aggregate.restype = None
    lib.graph_softmax_aggregate.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int64] * 6 + [ctypes.c_float]
    return lib


def _build(compiler: str, target: Path) -> None:
    """Compile, link (without -ffast-math, which would add code that flushes denormals at load) and
    load: the first variant that loads is kept. Linking a shared library leaves missing symbols for
    load time, hence the load."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        obj, errors = Path(tmp) / "kernel.o", []
        for i, (openmp, libraries) in enumerate(((["-fopenmp"], ["-lmvec", "-lm"]), (["-fopenmp"], ["-lm"]),
                                                 ([], ["-lm"]))):
            lib = Path(tmp) / f"{i}.so"
            done = subprocess.run([compiler, *COMPILE_FLAGS, *openmp, "-c", str(SOURCE), "-o", str(obj)],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                done = subprocess.run([compiler, "-shared", *openmp, str(obj), "-o", str(lib), *libraries],
                                      capture_output=True, text=True)
            try:
                if done.returncode:
                    raise OSError(done.stderr.strip())
                _load(lib)
            except OSError as error:
                errors.append(str(error))
                continue
            os.replace(lib, target)   # whole or not at all, also with several processes building at once
            return
        raise RuntimeError(errors[-1])


@cache
def _library() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc on the PATH, or CC)")
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *COMPILE_FLAGS, compiler, _cpu_signature()])
                         .encode()).hexdigest()[:20]
    target = _cache_dir() / f"graph_kernel_{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        _build(compiler, target)
    return _load(target)


_available: bool | None = None


def available() -> bool:
    """Whether the kernel builds and loads here, tried once per process. Ask before compiling: while
    torch.compile traces, an answer not known yet is False (building cannot be traced)."""
    global _available
    if _available is None:
        if torch.compiler.is_compiling():
            return False
        try:
            _library()
            _available = True
        except (OSError, RuntimeError) as error:
            warnings.warn(f"{SOURCE.name} could not be built ({str(error)[:300]}); fused CPU steps gather instead, "
                          "more slowly", RuntimeWarning, stacklevel=2)
            _available = False
    return _available


def supports(heads: int, values_per_head: int) -> bool:
    return 1 <= heads <= MAX_HEADS and heads * values_per_head <= MAX_HEAD_VALUES


@torch.library.custom_op("ptalker::graph_softmax_aggregate", mutates_args=(), device_types="cpu")
def graph_softmax_aggregate(score_src: torch.Tensor, score_dst: torch.Tensor, feats: torch.Tensor,
                            rowptr: torch.Tensor, col: torch.Tensor, slope: float) -> torch.Tensor:
    """score_src, score_dst (N, V, H), feats (N, V, 1 or H, C) float32; the edges into vertex v are
    col[rowptr[v]:rowptr[v+1]] (int64, each vertex with at least one) -> (N, V, H, C): per vertex and
    head, the softmax over its edges of LeakyReLU(score_src[source] + score_dst[v]) weighting the
    sources' features. Runs on torch's intra-op threads."""
    if {score_src.dtype, score_dst.dtype, feats.dtype} != {torch.float32} or {rowptr.dtype, col.dtype} != {torch.int64}:
        raise TypeError("graph_softmax_aggregate takes float32 scores and features and int64 indices")
    N, V, H = score_src.shape
    if (score_dst.shape != score_src.shape or feats.dim() != 4 or feats.shape[:2] != (N, V)
            or feats.shape[2] not in (1, H) or rowptr.shape != (V + 1,) or col.dim() != 1):
        raise ValueError(f"graph_softmax_aggregate: mismatched shapes {tuple(score_src.shape)}, "
                         f"{tuple(score_dst.shape)}, {tuple(feats.shape)}, rowptr {tuple(rowptr.shape)}")
    if not supports(H, feats.shape[3]):
        raise ValueError(f"graph_softmax_aggregate: unsupported sizes H={H}, feats {tuple(feats.shape)}")
    score_src, score_dst, feats = score_src.contiguous(), score_dst.contiguous(), feats.contiguous()
    rowptr, col = rowptr.contiguous(), col.contiguous()
    out = score_src.new_empty(N, V, H, feats.shape[3])
    scratch = score_src.new_empty(col.shape[0] * H)
    _library().graph_softmax_aggregate(
        score_src.data_ptr(), score_dst.data_ptr(), feats.data_ptr(), rowptr.data_ptr(), col.data_ptr(),
        scratch.data_ptr(), out.data_ptr(), N, V, H, feats.shape[2], feats.shape[3], torch.get_num_threads(), slope)
    return out


@graph_softmax_aggregate.register_fake
def _(score_src, score_dst, feats, rowptr, col, slope):
    N, V, H = score_src.shape
    return score_src.new_empty(N, V, H, feats.shape[3])
