"""Building blocks: periodic positional encoding, the biased causal and alignment masks, attention
with a key/value cache, causal convolutions, the graph attention layer and gradient reversal.

Every sequence layer takes `t0`, the absolute index of its first input frame, and an optional
`cache` (a dict it owns), so the same code runs a whole sequence at once or one frame at a time.
One frame at a time, `t0` is a 0-dim long tensor and every cache is a tensor updated in place: a
step is then the same kernels on the same buffers frame after frame (until an attention ring grows),
which a CUDA graph can capture and a compiler can fuse.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from . import graph_kernel

# The graph attention's sparse matmuls use stable kernels; only the CSR layout's Python API is beta.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

# --------------------------------------------------------------------------- positions and masks

def periodic_encoding(dim: int, period: int) -> torch.Tensor:
    """Sinusoids over one period -> (period, dim); frame t uses row t mod period."""
    position = torch.arange(period, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(period, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return table


class PeriodicPositionalEncoding(nn.Module):
    """Adds the periodic sinusoid table along time; no length limit."""

    def __init__(self, dim: int, period: int, dropout: float):
        super().__init__()
        self.period = period
        self.register_buffer("table", periodic_encoding(dim, period), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, t0: int | torch.Tensor = 0) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D), frame i at absolute position t0 + i."""
        if torch.is_tensor(t0) and x.shape[1] == 1:   # one frame: no index range to build
            index = (t0 % self.period).view(1)
        else:
            index = (torch.arange(x.shape[1], device=x.device) + t0) % self.period
        return self.dropout(x + self.table.index_select(0, index))


def alibi_slopes(heads: int) -> torch.Tensor:
    """Geometric head slopes 2^(-8h/n), h = 1..n (4 heads: 1/4, 1/16, 1/64, 1/256)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])


def periodic_causal_bias(slopes: torch.Tensor, queries: int, keys: int, period: int,
                         t0: int = 0, window: int | None = None) -> torch.Tensor:
    """Biased causal mask -> (H, queries, keys): -m_h * floor((i - j) / p) for key j <= query i,
    -inf for future keys and for keys `window` or more frames back. Queries sit at absolute
    positions t0 .. t0+queries-1, keys at 0 .. keys-1."""
    i = torch.arange(t0, t0 + queries, device=slopes.device).unsqueeze(1)
    j = torch.arange(keys, device=slopes.device).unsqueeze(0)
    return distance_bias(slopes, i - j, period, window)


def distance_bias(slopes: torch.Tensor, distance: torch.Tensor, period: int, window: int | None) -> torch.Tensor:
    """Query-key distances (..., keys) in frames -> the periodic ALiBi bias (H, ..., keys), -inf
    where the key is in the future (distance < 0) or out of the window (distance >= window)."""
    bias = -slopes.view(-1, *[1] * distance.dim()) * torch.div(distance, period, rounding_mode="floor").to(slopes.dtype)
    hidden = distance < 0 if window is None else (distance < 0) | (distance >= window)
    return bias.masked_fill(hidden.unsqueeze(0), float("-inf"))


def alignment_mask(frames: int, audio_frames: int, ratio: int) -> torch.Tensor:
    """Boolean (frames, audio_frames), True where allowed: frame t sees audio ratio*t .. ratio*t+ratio-1
    (VOCASET: t -> t; BIWI: t -> 2t, 2t+1)."""
    t = torch.arange(frames).unsqueeze(1)
    s = torch.arange(audio_frames).unsqueeze(0)
    return (s >= ratio * t) & (s < ratio * (t + 1))


def causal_mean(x: torch.Tensor, running: dict | None = None) -> torch.Tensor:
    """Mean over time up to and including each frame: x (B, T, D) -> (B, T, D).

    With `running` (a dict holding 'sum' (B, 1, D) and 'count' (1, 1, 1)), continues the mean of
    earlier calls and updates them in place."""
    total = x.cumsum(dim=1)
    count = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype).view(1, -1, 1)
    if running is not None:
        if "sum" not in running:
            running["sum"], running["count"] = x.new_zeros(x.shape[0], 1, x.shape[2]), x.new_zeros(1, 1, 1)
        total = total + running["sum"]
        count = count + running["count"]
        running["sum"].copy_(total[:, -1:])
        running["count"].copy_(count[:, -1:])
    return total / count


# --------------------------------------------------------------------------- attention

class RingCache:
    """Keys and values of the last `window` frames in buffers (B, H, capacity, d): frame t goes to
    slot t mod capacity, and `frame` records each slot's absolute frame (-1 while empty). The
    capacity doubles from 64 up to the window as frames come (`make_room`), so short sequences attend
    over few empty slots; at the window it stops: memory is the window's at any length, and from then
    on (or after `reserve`) every step touches the same buffers."""

    def __init__(self, like: torch.Tensor, window: int):
        self.window = window
        self.k = self.v = self.frame = None
        self._allocate(like, min(window, 64))

    def _allocate(self, like: torch.Tensor, capacity: int) -> None:
        B, H, _, d = like.shape
        k, v = like.new_zeros(B, H, capacity, d), like.new_zeros(B, H, capacity, d)
        frame = torch.full((capacity,), -1, dtype=torch.long, device=like.device)
        if self.k is not None:   # below the window nothing wrapped yet: slot i holds frame i
            n = self.k.shape[2]
            k[:, :, :n], v[:, :, :n], frame[:n] = self.k, self.v, self.frame
        self.k, self.v, self.frame = k, v, frame

    def make_room(self, frame: int) -> None:
        """Grow (doubling, up to the window) so that `frame` gets a slot of its own."""
        capacity = self.k.shape[2]
        if frame >= capacity and capacity < self.window:
            self._allocate(self.k, min(self.window, max(2 * capacity, frame + 1)))

    def reserve(self) -> None:
        """Grow to the full window now: the buffers then never change again."""
        self.make_room(self.window - 1)

    def write(self, t: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Frame t's (0-dim long tensor) keys and values (B, H, 1, d) -> its slot."""
        slot = (t % self.frame.shape[0]).view(1)
        self.k.index_copy_(2, slot, k)
        self.v.index_copy_(2, slot, v)
        self.frame.index_copy_(0, slot, t.view(1))

    def tensors(self) -> list[torch.Tensor]:
        return [self.k, self.v, self.frame]

    def mark_dynamic(self) -> None:
        """Tell torch.compile the capacity varies: one compiled step serves every capacity."""
        for tensor, dim in ((self.k, 2), (self.v, 2), (self.frame, 0)):
            torch._dynamo.mark_dynamic(tensor, dim)


class BiasedSelfAttention(nn.Module):
    """Multi-head causal self-attention with the periodic ALiBi bias over the last `window` frames
    (the query's own included); caches keys and values one frame at a time."""

    def __init__(self, dim: int, heads: int, period: int, dropout: float, window: int):
        super().__init__()
        self.heads, self.period, self.dropout, self.window = heads, period, dropout, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)

    def forward(self, x: torch.Tensor, t0: int | torch.Tensor = 0, cache: dict | None = None) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D). With `cache`, x is the one frame t0 (a 0-dim long tensor)."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if cache is None:
            bias = periodic_causal_bias(self.slopes, T, T, self.period, window=self.window)
        else:
            ring = cache.get("ring") or cache.setdefault("ring", RingCache(k, self.window))
            ring.write(t0, k, v)
            memo = cache.get("memo")
            if memo is None:
                memo = {}
            # the same for all layers alike (their rings grow together, so their capacities are equal)
            key = ("bias", self.heads, self.period, self.window)
            if key not in memo:
                # empty slots hold frame -1: a distance past the window, so they are masked too
                distance = torch.where(ring.frame < 0, self.window, t0 - ring.frame)
                memo[key] = distance_bias(self.slopes, distance.view(1, -1), self.period, self.window)
            bias = memo[key]
            k, v = ring.k, ring.v
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class AlignedCrossAttention(nn.Module):
    """Attention from motion frames to audio frames (the temporal alignment).

    Aligned: frame t attends only its `ratio` audio frames, computed by gathering those keys, so the
    cost is linear in length and equal to full attention under `alignment_mask`. Unaligned (an
    ablation): every frame attends every audio frame."""

    def __init__(self, dim: int, heads: int, ratio: int, aligned: bool, dropout: float):
        super().__init__()
        self.heads, self.ratio, self.aligned, self.dropout = heads, ratio, aligned, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory (B, S, D) -> keys, values (B, H, S, D/H); computed once per sequence."""
        B, S, D = memory.shape
        k, v = self.kv(memory).view(B, S, 2, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x (B, T, D), memory keys/values (B, H, S, D/H) -> (B, T, D). Aligned, the memory is the
        queries' own audio frames (S = ratio * T); unaligned, all of the clip's."""
        B, T, D = x.shape
        q = self.q(x).view(B, T, self.heads, D // self.heads).transpose(1, 2)   # (B, H, T, d)
        k, v = memory_kv
        if self.aligned:
            k = k.reshape(B, self.heads, T, self.ratio, -1)
            v = v.reshape(B, self.heads, T, self.ratio, -1)
            scores = torch.einsum("bhtd,bhtrd->bhtr", q, k) / math.sqrt(q.shape[-1])
            weights = F.dropout(scores.softmax(-1), self.dropout, self.training)
            y = torch.einsum("bhtr,bhtrd->bhtd", weights, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class TransformerBlock(nn.Module):
    """Post-norm transformer layer (as torch.nn.Transformer*Layer): biased causal self-attention,
    optional aligned cross-attention to audio, feed-forward."""

    def __init__(self, dim: int, heads: int, ff: int, period: int, dropout: float, window: int,
                 cross_ratio: int | None = None, aligned: bool = True):
        super().__init__()
        self.self_attn = BiasedSelfAttention(dim, heads, period, dropout, window)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = None
        if cross_ratio is not None:
            self.cross_attn = AlignedCrossAttention(dim, heads, cross_ratio, aligned, dropout)
            self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff, dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, t0: int | torch.Tensor = 0, cache: dict | None = None,
                memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D)."""
        x = self.norm1(x + self.drop(self.self_attn(x, t0, cache)))
        if self.cross_attn is not None:
            x = self.norm2(x + self.drop(self.cross_attn(x, memory_kv)))
        return self.norm3(x + self.drop(self.ff(x)))


# --------------------------------------------------------------------------- convolution

class CausalConvBlock(nn.Module):
    """Conv1d(k=3, no bias) over past frames only -> per-frame LayerNorm -> ReLU.

    The public code normalises with InstanceNorm over time, which lets later frames change earlier
    ones; a per-frame LayerNorm keeps the encoder causal (non-affine for content, affine for style)."""

    def __init__(self, dim: int, affine: bool, kernel: int = 3):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(dim, dim, kernel, bias=False)
        self.norm = nn.LayerNorm(dim, elementwise_affine=affine)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D); `cache['past']` holds the last kernel-1 inputs."""
        x = x.transpose(1, 2)
        past = x.new_zeros(x.shape[0], x.shape[1], self.kernel - 1) if cache is None \
            else cache.setdefault("past", x.new_zeros(x.shape[0], x.shape[1], self.kernel - 1))
        x = torch.cat([past, x], dim=2)
        if cache is not None:
            past.copy_(x[:, :, -(self.kernel - 1):])
        return F.relu(self.norm(self.conv(x).transpose(1, 2)))


# --------------------------------------------------------------------------- graph attention

class MeshGraph(nn.Module):
    """A symmetric graph (a mesh's edges in both directions plus self loops) in compressed rows.

    edges (2, E) are sorted by (destination, source); `reverse[e]` is the position of edge e's
    reverse. A (V, V) matrix with a value per edge, rows indexed by destination, then has its
    transpose on the same compressed rows with the values permuted by `reverse`."""

    def __init__(self, edges: torch.Tensor, num_vertices: int):
        super().__init__()
        loops = torch.arange(num_vertices).repeat(2, 1)
        edges = torch.cat([edges.long(), loops], dim=1).unique(dim=1)
        src, dst = edges[0], edges[1]
        order = torch.argsort(dst * num_vertices + src)
        src, dst = src[order], dst[order]
        keys = dst * num_vertices + src
        reverse = torch.searchsorted(keys, src * num_vertices + dst)
        if not torch.equal(keys[reverse.clamp(max=len(keys) - 1)], src * num_vertices + dst):
            raise ValueError("the graph must contain every edge in both directions")
        self.num_vertices = num_vertices
        # derived from the mesh faces, which the checkpoint stores: not part of the state dict
        self.register_buffer("src", src, persistent=False)
        self.register_buffer("dst", dst, persistent=False)
        self.register_buffer("reverse", reverse, persistent=False)
        self.register_buffer("in_degree", torch.bincount(dst, minlength=num_vertices), persistent=False)
        # the edges into vertex v are src[rowptr[v]:rowptr[v+1]]
        self.register_buffer("rowptr", torch.cat([self.in_degree.new_zeros(1), self.in_degree.cumsum(0)]),
                             persistent=False)
        self._blocks: dict = {}
        self._incidence: dict = {}

    def block_diagonal(self, values: torch.Tensor) -> torch.Tensor:
        """values (M, E) -> sparse CSR (M*V, M*V) holding M copies of the graph's matrix, copy m
        with values[m]: one sparse matmul then aggregates M feature sets at once."""
        M, V = values.shape[0], self.num_vertices
        key = (M, values.device)
        if key not in self._blocks:   # the index arrays depend only on M (a chunk and a remainder, say)
            if len(self._blocks) >= 4:
                self._blocks.clear()
            rows = torch.cat([self.in_degree.new_zeros(1), self.in_degree.repeat(M).cumsum(0)])
            cols = (self.src + V * torch.arange(M, device=self.src.device).unsqueeze(1)).reshape(-1)
            self._blocks[key] = (rows.to(values.device), cols.to(values.device))
        rows, cols = self._blocks[key]
        return torch.sparse_csr_tensor(rows, cols, values.reshape(-1), (M * V, M * V), check_invariants=False)

    def segment_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Per-edge x (E, ...) -> per-destination sums (V, ...), as one sparse product with the
        (V, E) incidence matrix (several times faster on CPU than segment_reduce)."""
        key = (x.dtype, x.device)
        if key not in self._incidence:
            E, device = len(self.dst), self.dst.device   # all three index/value arrays on one device
            self._incidence[key] = torch.sparse_csr_tensor(self.rowptr, torch.arange(E, device=device),
                                                           torch.ones(E, dtype=x.dtype, device=device),
                                                           (self.num_vertices, E), check_invariants=False)
        return (self._incidence[key] @ x.reshape(x.shape[0], -1)).view(self.num_vertices, *x.shape[1:])

    def segment_max(self, x: torch.Tensor) -> torch.Tensor:
        """Per-edge x (E, ...) -> per-destination maxima (V, ...); every vertex has its self loop."""
        flat = x.reshape(x.shape[0], -1)
        index = self.dst.unsqueeze(1).expand_as(flat)
        out = flat.new_full((self.num_vertices, flat.shape[1]), float("-inf"))
        return out.scatter_reduce_(0, index, flat, "amax").view(self.num_vertices, *x.shape[1:])


class _GraphSoftmaxAggregate(torch.autograd.Function):
    """out[v] = sum over edges e into v of softmax_e(LeakyReLU(s_src[src_e] + s_dst[v])) h[src_e].

    The aggregation is one block-diagonal sparse matmul, so the per-edge messages (E, N, H, D)
    are never materialised, forward or backward; only the attention weights (E, N, H) are kept."""

    @staticmethod
    def forward(ctx, score_src, score_dst, h, graph, slope):
        """score_src, score_dst (V, N, H), h (N, H, V, D) -> (N, H, V, D)."""
        N, H, V, D = h.shape
        src, dst = graph.src, graph.dst
        logits = F.leaky_relu(score_src.index_select(0, src) + score_dst.index_select(0, dst), slope)
        shift = graph.segment_max(logits)                                       # softmax-invariant
        weights = (logits - shift.index_select(0, dst)).exp()                            # (E, N, H)
        alpha = (weights / graph.segment_sum(weights).index_select(0, dst)).permute(1, 2, 0).contiguous()
        out = graph.block_diagonal(alpha.view(N * H, -1)) @ h.reshape(N * H * V, D)
        ctx.save_for_backward(score_src, score_dst, h, alpha)
        ctx.graph, ctx.slope = graph, slope
        return out.view(N, H, V, D)

    @staticmethod
    def backward(ctx, grad_out):
        score_src, score_dst, h, alpha = ctx.saved_tensors
        graph = ctx.graph
        N, H, V, D = h.shape
        grad_out = grad_out.reshape(N * H * V, D)
        grad_h = graph.block_diagonal(alpha.view(N * H, -1)[:, graph.reverse]) @ grad_out
        # d out[v] / d alpha_e = h[src_e]: the (dst_e, src_e) entries of grad_out @ h^T
        pattern = graph.block_diagonal(alpha.view(N * H, -1))   # only its sparsity counts (beta=0)
        grad_alpha = torch.sparse.sampled_addmm(pattern, grad_out, h.reshape(N * H * V, D).t(), beta=0.0)
        grad_alpha = grad_alpha.values().view(N, H, -1).permute(2, 0, 1)               # (E, N, H)
        alpha = alpha.permute(2, 0, 1)
        expected = graph.segment_sum(alpha * grad_alpha)
        grad_logits = alpha * (grad_alpha - expected.index_select(0, graph.dst))         # softmax backward
        positive = (score_src.index_select(0, graph.src) + score_dst.index_select(0, graph.dst)) > 0
        grad_logits = grad_logits * (positive * (1 - ctx.slope) + ctx.slope)     # LeakyReLU backward
        grad_src = torch.zeros_like(score_src).index_add_(0, graph.src, grad_logits)
        return grad_src, graph.segment_sum(grad_logits), grad_h.view(N, H, V, D), None, None


FUSED_FRAMES = 8   # up to this many frames, a fused step aggregates by its own kernels instead of sparse products


def _softmax_aggregate_gathered(score_src: torch.Tensor, score_dst: torch.Tensor, h: torch.Tensor,
                                graph: MeshGraph, slope: float) -> torch.Tensor:
    """_GraphSoftmaxAggregate's forward by gathers and index_add, materialising the per-edge
    messages (E, N, H, D): score_src, score_dst (V, N, H), h (N, H, V, D) -> (N, H, V, D).

    The softmax shift is LeakyReLU(max score_src + score_dst[v]), which bounds every logit into v
    (LeakyReLU is increasing), so no per-vertex maximum is needed; it would underflow only if the
    source scores spread over more than ~80, far from what the layer computes."""
    N, H, V, D = h.shape
    src, dst = graph.src, graph.dst
    logits = F.leaky_relu(score_src.index_select(0, src) + score_dst.index_select(0, dst), slope)  # (E, N, H)
    bound = F.leaky_relu(score_src.amax(dim=0, keepdim=True) + score_dst, slope)                 # (V, N, H)
    weights = (logits - bound.index_select(0, dst)).exp()
    total = torch.zeros_like(score_dst).index_add_(0, dst, weights)
    messages = h.permute(2, 0, 1, 3).index_select(0, src) * weights.unsqueeze(-1)            # (E, N, H, D)
    out = messages.new_zeros(V, N, H, D).index_add_(0, dst, messages) / total.unsqueeze(-1)
    return out.permute(1, 2, 0, 3)


class GraphAttention(nn.Module):
    """One multi-head graph attention layer (GAT) over a fixed MeshGraph: each vertex attends over
    its incoming edges with softmax(LeakyReLU(a_src . W h_src + a_dst . W h_dst))."""

    def __init__(self, in_dim: int, out_dim: int, heads: int, concat: bool = True):
        super().__init__()
        self.heads, self.out_dim, self.concat = heads, out_dim, concat
        self.lin = nn.Linear(in_dim, heads * out_dim, bias=False)
        self.att_src = nn.Parameter(torch.empty(heads, out_dim))
        self.att_dst = nn.Parameter(torch.empty(heads, out_dim))
        self.bias = nn.Parameter(torch.zeros(heads * out_dim if concat else out_dim))
        nn.init.xavier_uniform_(self.att_src)
        nn.init.xavier_uniform_(self.att_dst)

    def forward(self, x: torch.Tensor, graph: MeshGraph) -> torch.Tensor:
        """x (N, V, in) -> (N, V, H*out) when concatenating heads, else (N, V, out)."""
        N, V, _ = x.shape
        H, D = self.heads, self.out_dim
        # a fused generation step aggregates a few frames by its own kernels: graph_kernel.c compiled on
        # the CPU, gathers captured as a CUDA graph (or compiled where that kernel cannot serve); otherwise
        # (training, eager steps) the sparse products are fastest
        few = N <= FUSED_FRAMES and not torch.is_grad_enabled()
        compiling = few and torch.compiler.is_compiling()
        if compiling and x.device.type == "cpu" and self._kernel_serves():
            return self._forward_by_kernel(x, graph)
        h = self.lin(x).view(N, V, H, D)
        scores = (x @ self._score_weight().t()).transpose(0, 1).contiguous()        # (V, N, 2H) for edge gathers
        score_src, score_dst = scores.split(H, dim=-1)
        dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        with torch.autocast(x.device.type, enabled=False):   # sparse kernels want full precision
            inputs = (score_src.to(dtype).contiguous(), score_dst.to(dtype).contiguous(),
                      h.to(dtype).transpose(1, 2).contiguous(), graph, 0.2)
            gathered = compiling or (few and x.is_cuda and torch.cuda.is_current_stream_capturing())
            out = _softmax_aggregate_gathered(*inputs) if gathered else _GraphSoftmaxAggregate.apply(*inputs)
        out = out.transpose(1, 2).to(x.dtype)                                       # (N, V, H, D)
        out = out.reshape(N, V, H * D) if self.concat else out.mean(dim=2)
        return out + self.bias

    def _score_weight(self) -> torch.Tensor:
        """a . (W x) = (a W) x: the source and destination scores straight from the inputs -> (2H, in)."""
        w = self.lin.weight.view(self.heads, self.out_dim, -1)
        return torch.cat([torch.einsum("hd,hdi->hi", self.att_src, w), torch.einsum("hd,hdi->hi", self.att_dst, w)])

    def _kernel_serves(self) -> bool:
        """Whether graph_kernel.c computes this layer here (it builds, and the sizes fit)."""
        values = min(self.lin.in_features, self.out_dim)   # what _forward_by_kernel aggregates per head
        return graph_kernel.supports(self.heads, values) and graph_kernel.available()

    def _forward_by_kernel(self, x: torch.Tensor, graph: MeshGraph) -> torch.Tensor:
        """forward for a compiled step on the CPU, through graph_kernel.c, in float32."""
        N, V, I = x.shape
        H, D = self.heads, self.out_dim
        dtype, x, weight = x.dtype, x.float(), self.lin.weight.float()
        with torch.autocast(x.device.type, enabled=False):
            scores = x @ self._score_weight().float().t()                            # (N, V, 2H)
            # with fewer inputs than outputs per head, aggregate the inputs and project after:
            # sum_e a_e (W_h x_e) = W_h (sum_e a_e x_e), fewer numbers per edge
            narrow = I < D
            feats = x.unsqueeze(2) if narrow else F.linear(x, weight).view(N, V, H, D)
            out = graph_kernel.graph_softmax_aggregate(scores[..., :H], scores[..., H:], feats, graph.rowptr,
                                                       graph.src, 0.2)
            if narrow:   # every head's projection at once, as one block-diagonal (H*in, H*out) product
                out = out.reshape(N, V, H * I) @ torch.block_diag(*weight.view(H, D, I).transpose(1, 2).unbind(0))
        out = out.reshape(N, V, H, D)
        out = out.reshape(N, V, H * D) if self.concat else out.mean(dim=2)
        return out.to(dtype) + self.bias


# --------------------------------------------------------------------------- adversarial

class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.alpha * grad, None


def reverse_gradient(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by -alpha backward (domain-adversarial training)."""
    return _ReverseGradient.apply(x, alpha)
