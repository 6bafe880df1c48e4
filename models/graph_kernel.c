/* The graph attention's softmax aggregation for a few frames at a time, on the CPU.

   out[n, v, h, :] = sum over the edges e into v of softmax_e(LeakyReLU(s_src[n, col[e], h] + s_dst[n, v, h]))
                     * feats[n, col[e], h (or 0 when feats has one head), :]

   The edges into v are col[rowptr[v] .. rowptr[v+1]-1] (compressed rows). A compiled one-frame step
   calls this instead of its gathers and scatters: per vertex, a few edges and a few numbers each,
   which a generic code generator turns into masked vector operations and a scalar exp per edge. */
#include <math.h>
#include <stdint.h>

#define BLOCK 64   /* vertices per block: their edge weights are exponentiated in one loop */

/* The logits of the edges into one vertex minus their maximum per head, edge-major into w (E, H). */
static inline __attribute__((always_inline)) void
vertex_logits(const float *s_src, const float *s_dst_v, const int64_t *col, int64_t begin, int64_t end,
              float *w, int64_t H, float slope)
{
    float top[16];
    for (int64_t e = begin; e < end; e++)
        for (int64_t h = 0; h < H; h++) {
            const float l = s_src[col[e] * H + h] + s_dst_v[h];
            w[e * H + h] = fmaxf(l, slope * l);   /* LeakyReLU for 0 < slope < 1, without a branch */
        }
    for (int64_t h = 0; h < H; h++)   /* every vertex has its self loop: begin < end */
        top[h] = w[begin * H + h];
    for (int64_t e = begin + 1; e < end; e++)
        for (int64_t h = 0; h < H; h++)
            top[h] = fmaxf(top[h], w[e * H + h]);
    for (int64_t e = begin; e < end; e++)
        for (int64_t h = 0; h < H; h++)
            w[e * H + h] -= top[h];
}

/* One vertex's sum of its sources' features weighted by w (already exponentiated), normalised. */
static inline __attribute__((always_inline)) void
vertex_sum(const float *feats, const int64_t *col, int64_t begin, int64_t end, const float *w, float *out_v,
           int64_t H, int64_t Hf, int64_t C)
{
    float total[16], acc[256];   /* registers once the sizes are constants */
    for (int64_t h = 0; h < H; h++)
        total[h] = 0;
    for (int64_t i = 0; i < H * C; i++)
        acc[i] = 0;
    for (int64_t e = begin; e < end; e++) {
        const float *x = feats + col[e] * Hf * C;
        for (int64_t h = 0; h < H; h++) {
            const float weight = w[e * H + h], *x_h = x + (Hf > 1 ? h * C : 0);
            total[h] += weight;
            for (int64_t c = 0; c < C; c++)
                acc[h * C + c] += weight * x_h[c];
        }
    }
    for (int64_t h = 0; h < H; h++)
        for (int64_t c = 0; c < C; c++)
            out_v[h * C + c] = acc[h * C + c] / total[h];
}

/* Vertices first..last-1: their logits, one loop of exponentials over their edges (full vectors), their sums. */
static inline __attribute__((always_inline)) void
aggregate_block(const float *s_src, const float *s_dst, const float *feats, const int64_t *rowptr,
                const int64_t *col, float *w, float *out, int64_t first, int64_t last, int64_t H, int64_t Hf,
                int64_t C, float slope)
{
    for (int64_t v = first; v < last; v++)
        vertex_logits(s_src, s_dst + v * H, col, rowptr[v], rowptr[v + 1], w, H, slope);
    for (int64_t i = rowptr[first] * H; i < rowptr[last] * H; i++)
        w[i] = expf(w[i]);
    for (int64_t v = first; v < last; v++)
        vertex_sum(feats, col, rowptr[v], rowptr[v + 1], w, out + v * H * C, H, Hf, C);
}

/* s_src, s_dst (N, V, H); feats (N, V, Hf, C) with Hf 1 or H; out (N, V, H, C); scratch: E*H floats;
   1 <= H <= 16 and H*C <= 256 (checked by the caller); `threads`: the OpenMP team's size. */
void graph_softmax_aggregate(const float *s_src, const float *s_dst, const float *feats, const int64_t *rowptr,
                             const int64_t *col, float *scratch, float *out, int64_t N, int64_t V, int64_t H,
                             int64_t Hf, int64_t C, int64_t threads, float slope)
{
    for (int64_t n = 0; n < N; n++) {
        const float *ss = s_src + n * V * H, *sd = s_dst + n * V * H, *f = feats + n * V * Hf * C;
        float *o = out + n * V * H * C;
        /* blocks write disjoint edges of the scratch and vertices of out: the threads share them */
        #pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t first = 0; first < V; first += BLOCK) {
            const int64_t last = first + BLOCK < V ? first + BLOCK : V;
            if (H == 2 && Hf == 1 && C == 3)   /* the spatial encoder's two layers, with constant sizes */
                aggregate_block(ss, sd, f, rowptr, col, scratch, o, first, last, 2, 1, 3, slope);
            else if (H == 1 && Hf == 1 && C == 3)
                aggregate_block(ss, sd, f, rowptr, col, scratch, o, first, last, 1, 1, 3, slope);
            else
                aggregate_block(ss, sd, f, rowptr, col, scratch, o, first, last, H, Hf, C, slope);
        }
    }
}
