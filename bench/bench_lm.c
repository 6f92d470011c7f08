/*
 * bench_lm -- what the GPT kernels of rt_lm.h cost (issue 11).
 *
 *   block  median wall time of forward + backward of one pre-LN block
 *          (tests/c/lm_block.h, the composition the layer kit reproduces)
 *          at N = 32, T = 64, D = 128, H = 4, over 20 runs after 3 warm-up
 *   GEMM   median of the summed time of the rt_gemm calls that block makes
 *          (same shapes, transposes, leading dimensions and buffers: the
 *          four linear layers forward and backward, and the four per
 *          (sample, head) of attention), timed alone, alternating with the
 *          block runs
 *   ratio  block / GEMM: what the thin passes (layer norm, softmax, gelu,
 *          bias, residual copies) add
 *   gen    tokens/s of greedy generation of 64 tokens by a 3-layer stack
 *          (D 128, H 4, V 256, context 64, batch 1): with the key/value
 *          cache (one rt_attention_step per layer per token) and without
 *          (a full forward over the whole prefix per token); the two must
 *          generate the same tokens, which is reported; each the fastest
 *          of 3 runs
 *
 * One BLAS thread (the machine is shared; the ratio is what matters).  A
 * benchmark reports; it never fails on a timing.  Exit 1 is an error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "../tests/c/lm_block.h"

static uint64_t lcg = 0x2545F4914F6CDD1DULL;
static double frand(double lo, double hi)
{
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (double)(lcg >> 11) * 0x1p-53;
}

/* The rt_gemm calls of lmb_forward + lmb_backward, in their order, on the
 * same buffers (results are garbage; only the time counts). */
static void block_gemms(const float *p, float *g, int64_t N, int64_t T, int64_t D, int64_t H, lmb_acts *s,
                        const float *dy, float *y, float *work)
{
    int64_t off[P_COUNT + 1], M = N * T, F = 4 * D, hs = D / H, C3 = 3 * D;
    lmb_offsets(D, off);
    float *dx1 = work, *dh = dx1 + M * D, *du = dh + M * D, *dqkv = du + M * F, *aw = dqkv + M * 3 * D;
    float sc = 1.0f / sqrtf((float)hs);
    rt_gemm(0, 1, M, 3 * D, D, 1.0f, s->h1, D, p + off[P_WQKV], D, 0.0f, s->qkv, 3 * D);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const float *q = s->qkv + n * T * C3 + h * hs;
            float *P = s->att + (n * H + h) * T * T;
            rt_gemm(0, 1, T, T, hs, sc, q, C3, q + D, C3, 0.0f, P, T);
            rt_gemm(0, 0, T, hs, T, 1.0f, P, T, q + 2 * D, C3, 0.0f, s->a + n * T * D + h * hs, D);
        }
    rt_gemm(0, 1, M, D, D, 1.0f, s->a, D, p + off[P_WO], D, 1.0f, s->x1, D);
    rt_gemm(0, 1, M, F, D, 1.0f, s->h2, D, p + off[P_WFC], D, 0.0f, s->u, F);
    rt_gemm(0, 1, M, D, F, 1.0f, s->u, F, p + off[P_WP], F, 1.0f, y, D);
    rt_gemm(1, 0, D, F, M, 1.0f, dy, D, s->u, F, 1.0f, g + off[P_WP], F);
    rt_gemm(0, 0, M, F, D, 1.0f, dy, D, p + off[P_WP], F, 0.0f, du, F);
    rt_gemm(1, 0, F, D, M, 1.0f, du, F, s->h2, D, 1.0f, g + off[P_WFC], D);
    rt_gemm(0, 0, M, D, F, 1.0f, du, F, p + off[P_WFC], D, 0.0f, dh, D);
    rt_gemm(1, 0, D, D, M, 1.0f, dx1, D, s->a, D, 1.0f, g + off[P_WO], D);
    rt_gemm(0, 0, M, D, D, 1.0f, dx1, D, p + off[P_WO], D, 0.0f, dh, D);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const float *q = s->qkv + n * T * C3 + h * hs;
            float *dq = dqkv + n * T * C3 + h * hs;
            const float *P = s->att + (n * H + h) * T * T;
            const float *dO = dh + n * T * D + h * hs;
            rt_gemm(0, 1, T, T, hs, 1.0f, dO, D, q + 2 * D, C3, 0.0f, aw, T);
            rt_gemm(1, 0, T, hs, T, 1.0f, P, T, dO, D, 0.0f, dq + 2 * D, C3);
            rt_gemm(0, 0, T, hs, T, sc, aw, T, q + D, C3, 0.0f, dq, C3);
            rt_gemm(1, 0, T, hs, T, sc, aw, T, q, C3, 0.0f, dq + D, C3);
        }
    rt_gemm(1, 0, 3 * D, D, M, 1.0f, dqkv, 3 * D, s->h1, D, 1.0f, g + off[P_WQKV], D);
    rt_gemm(0, 0, M, D, 3 * D, 1.0f, dqkv, 3 * D, p + off[P_WQKV], D, 0.0f, dh, D);
}

static void bench_block(void)
{
    int64_t N = 32, T = 64, D = 128, H = 4, M = N * T, off[P_COUNT + 1];
    lmb_offsets(D, off);
    float *p = lmb_alloc((size_t)off[P_COUNT]), *g = lmb_alloc((size_t)off[P_COUNT]);
    float *x = lmb_alloc((size_t)(M * D)), *y = lmb_alloc((size_t)(M * D)), *dy = lmb_alloc((size_t)(M * D));
    float *dx = lmb_alloc((size_t)(M * D)), *work = lmb_alloc(lmb_backward_floats(N, T, D));
    lmb_init(p, D, 0.1, frand);
    for (int64_t i = 0; i < M * D; i++) {
        x[i] = (float)frand(-1, 1);
        dy[i] = (float)frand(-1, 1);
    }
    lmb_acts s;
    lmb_acts_new(&s, N, T, D, H);
    enum { RUNS = 20, WARM = 3 };
    double tb[RUNS], tg[RUNS];
    for (int i = 0; i < WARM + RUNS; i++) {
        double t0 = bench_now();
        lmb_forward(p, N, T, D, H, x, y, &s);
        lmb_backward(p, g, N, T, D, H, x, &s, dy, dx, work);
        double t1 = bench_now();
        /* The gemms scribble over the saved activations: run them on copies
         * the next forward rewrites anyway. */
        block_gemms(p, g, N, T, D, H, &s, dy, y, work);
        double t2 = bench_now();
        if (i >= WARM) {
            tb[i - WARM] = t1 - t0;
            tg[i - WARM] = t2 - t1;
        }
    }
    double mb = bench_median(tb, RUNS), mg = bench_median(tg, RUNS);
    double flops = 2.0 * 3 * (double)M * D * (3 * D + D + 4 * D + 4 * D) + 2.0 * 3 * N * H * T * T * (D / H) * 2;
    printf("block fwd+bwd N=%lld T=%lld D=%lld H=%lld: %.2f ms, its GEMMs %.2f ms, ratio %.2f (%.1f GFLOP/s)\n",
           (long long)N, (long long)T, (long long)D, (long long)H, 1e3 * mb, 1e3 * mg, mb / mg, flops / mb * 1e-9);
    lmb_acts_free(&s);
    free(p), free(g), free(x), free(y), free(dy), free(dx), free(work);
}

static int argmax_row(const float *v, int64_t n)
{
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return (int)b;
}

static int bench_generation(rt_ctx *ctx)
{
    int64_t V = 256, maxT = 64, D = 128, H = 4, L = 3, steps = 64;
    lm_model m;
    lm_model_new(&m, V, maxT, D, H, L, frand);
    int32_t a[64], b[64];
    float *logits = lmb_alloc((size_t)(maxT * V));
    a[0] = b[0] = 'T';
    /* Each the fastest of 3 runs (the first pays for page faults). */
    double tc = 1e30, tu = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        /* Cached: one step per token. */
        lm_cache c;
        lm_cache_new(&c, &m, 1);
        double t0 = bench_now();
        for (int64_t t = 0; t < steps; t++) {
            if (lm_step(ctx, &m, &c, a + t, t, logits)) return 1;
            if (t + 1 < steps) a[t + 1] = argmax_row(logits, V);
        }
        tc = fmin(tc, bench_now() - t0);
        lm_cache_free(&c);
        /* Uncached: the whole prefix again per token. */
        t0 = bench_now();
        for (int64_t t = 0; t < steps; t++) {
            if (lm_forward(ctx, &m, b, 1, t + 1, logits)) return 1;
            if (t + 1 < steps) b[t + 1] = argmax_row(logits + t * V, V);
        }
        tu = fmin(tu, bench_now() - t0);
    }
    int same = !memcmp(a, b, sizeof a);
    printf("generation %lld tokens, %lld layers, D=%lld, V=%lld, batch 1: cached %.0f tokens/s, "
           "uncached %.0f tokens/s (x%.1f); same tokens: %s\n",
           (long long)steps, (long long)L, (long long)D, (long long)V, steps / tc, steps / tu, tu / tc,
           same ? "yes" : "NO");
    free(logits);
    lm_model_free(&m);
    return 0;
}

int main(void)
{
    rt_set_threads(1);
    rt_ctx *ctx = rt_ctx_new();
    if (!ctx) return 1;
    printf("bench_lm (1 BLAS thread, OpenBLAS %s)\n", rt_blas_core());
    bench_block();
    int rc = bench_generation(ctx);
    if (rc) fprintf(stderr, "bench_lm: %s\n", rt_ctx_message(ctx));
    rt_ctx_free(ctx);
    return rc;
}
