"""One-frame-at-a-time decoding: the state a frame leaves for the next, and the step made cheap.

A frame's step is a few hundred small operations (projections of one frame, the attention over a
window of cached keys, layer norms), so eagerly its cost is dispatch, not arithmetic. Every buffer
it reads or writes is a tensor updated in place (the position `t` included) whose shape changes only
when the attention rings grow (a few doublings, or never once reserved), so the same kernels run on
the same memory frame after frame, and `fused_step` can replace the Python-level step: on CUDA by
replaying a captured CUDA graph, on the CPU by an Inductor-compiled version of it (the graph
attention by graph_kernel.c).
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

import torch

from . import graph_kernel

# raised from inside Inductor's own imports when it compiles, about nothing this project calls
warnings.filterwarnings("ignore", message="`torch.jit.script_method` is deprecated", category=DeprecationWarning)


def fused_cpu_threads() -> int:
    """Threads for a compiled CPU step. Its large parts (the V*3 x F projections, the graph kernel) gain
    from a second core, and more would split its hundreds of small kernels too. A second thread pays
    only while OpenMP lets it spin between those short parallel regions (its default); told to sleep
    at once (OMP_WAIT_POLICY=PASSIVE), it would have to be woken for each: then one thread
    (measured: benchmarks/bench_inference.py)."""
    return 1 if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" else 2


@dataclass
class DecodeState:
    """Everything one-frame decoding carries from frame to frame (B clips in a batch)."""
    t: torch.Tensor                            # () long: the frame the next step decodes
    previous: torch.Tensor                     # (B, 1, V*3) the last decoded offsets, in mesh units
    identity: torch.Tensor | None = None       # (B, F) speaker style, fixed for the sequence
    fixed_style: torch.Tensor | None = None    # (B, 1, F) style of a reference clip
    memory_kv: list = field(default_factory=list)   # per decoder layer: this frame's audio keys, values
    audio_style: torch.Tensor | None = None    # (B, 1, F) this frame's audio style
    caches: dict = field(default_factory=dict)  # the layers' own caches (filled by the first step)
    _room: float = 0                           # frames the rings hold before one must grow

    def load(self, frame: int, memory_kv: list, audio_style: torch.Tensor | None) -> None:
        """Set the next frame's index and copy what it reads of the speech into the state's buffers
        (the first time they are allocated; keys/values of an unaligned decoder, which attends the
        whole clip, are kept by reference: they are the same tensors at every frame)."""
        self.t.fill_(frame)
        if frame >= self._room:   # a ring must grow first (rare: capacities double)
            rings = self.rings()
            for ring in rings:
                ring.make_room(frame)
            self._room = _room(rings)
        if not self.memory_kv or self.memory_kv[0][0].shape != memory_kv[0][0].shape:
            # contiguous copies: the same strides whatever the clip's length (a compiled step checks them)
            self.memory_kv = [(k.clone(memory_format=torch.contiguous_format),
                               v.clone(memory_format=torch.contiguous_format)) for k, v in memory_kv]
            self.audio_style = None if audio_style is None else audio_style.clone(memory_format=torch.contiguous_format)
            return
        for (k, v), (new_k, new_v) in zip(self.memory_kv, memory_kv):
            if k.data_ptr() != new_k.data_ptr():
                k.copy_(new_k)
                v.copy_(new_v)
        if audio_style is not None:
            self.audio_style.copy_(audio_style)

    def rings(self) -> list:
        """The attention layers' key/value rings."""
        return [node for node in _leaves(self.caches) if hasattr(node, "reserve")]

    def tensors(self) -> list[torch.Tensor]:
        """Every buffer a step writes: the position is set outside, the rest changes inside."""
        found = [self.previous]
        for node in _leaves(self.caches):
            found.extend(node.tensors() if hasattr(node, "tensors") else [node])
        return found


def _room(rings: list) -> float:
    """Frames before one of the rings must grow: inf once all are at their window."""
    return min((math.inf if r.k.shape[2] >= r.window else r.k.shape[2] for r in rings), default=0)


def _leaves(node) -> list:
    """The tensors and cache objects in nested dicts and lists."""
    if isinstance(node, dict):   # the per-frame memo of shared biases is no state
        return [leaf for key, value in node.items() if key != "memo" for leaf in _leaves(value)]
    if isinstance(node, (list, tuple)):
        return [leaf for value in node for leaf in _leaves(value)]
    return [node]


def fused_step(step, state: DecodeState):
    """`step(state) -> (B, 1, V*3)` after one eager call (which allocated the caches) -> a function
    that computes the same from the same buffers with far fewer dispatches: a CUDA graph replay on
    CUDA, an Inductor-compiled step on the CPU."""
    if state.previous.is_cuda:
        return _captured(step, state)
    return _compiled(step)


def _compiled(step):
    """Compile one step with Inductor, once for every ring capacity: the rings' length is a symbolic
    size, so short sequences attend over short rings as the eager step does. The C++ wrapper calls
    the kernels without Python in between (measured faster to compile and to run here than
    max-autotune's GEMM templates). The guards the first call checks hold at every later frame,
    which reads the same buffers, until the rings grow: checking them at every frame would cost a
    tenth of a step, so only those calls do. (The stance is process-wide while a call runs: steps of
    other sequences compiled in other threads at the same moment would skip theirs too.)"""
    graph_kernel.available()   # built now: the trace only reads the answer
    compiled = torch.compile(step, dynamic=False, fullgraph=True, options={"cpp_wrapper": True})
    checked_room = None

    def run(state: DecodeState) -> torch.Tensor:
        nonlocal checked_room
        if state._room != checked_room:   # the first call, or new ring buffers
            checked_room = state._room
            for ring in state.rings():
                ring.mark_dynamic()
            return compiled(state)
        with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
            return compiled(state)

    return run


def _captured(step, state: DecodeState):
    """Capture one step as a CUDA graph. The attention rings are grown to their full window first, so
    the buffers never change again. Warm-up runs (which capture needs) advance the caches, so every
    buffer is saved before them and restored before capture; capture itself runs nothing."""
    for ring in state.rings():
        ring.reserve()
    state._room = _room(state.rings())
    buffers = state.tensors()
    saved = [b.clone() for b in buffers]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step(state)
    torch.cuda.current_stream().wait_stream(side)
    for b, s in zip(buffers, saved):
        b.copy_(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step(state)
    for b, s in zip(buffers, saved):   # capture may have touched nothing, but make the state exact
        b.copy_(s)

    def replay(_state: DecodeState) -> torch.Tensor:
        graph.replay()
        return out

    return replay
