/*
 * lm_block.h -- a GPT built from the core kernels of rt_lm.h, for the tests
 * (tests/c/test_lm_kernels.c) and the benchmark (bench/bench_lm.c): the
 * reference composition the layer kit reproduces with its layers.
 *
 * One pre-LayerNorm block over x [M = N*T, D], linear layers as y = x W^T
 * + b with W [out, in] (PyTorch's layout), F = 4D:
 *   h1 = ln1(x); qkv = h1 Wqkv^T + bqkv; a = attention(qkv)
 *   x1 = x + a Wo^T + bo
 *   h2 = ln2(x1); u = gelu(h2 Wfc^T + bfc); y = x1 + u Wp^T + bp
 * The model: x = wte[ids] + wpe[t]; L blocks; hf = lnf(x); logits = hf wte^T.
 *
 * Parameters live in one flat float array (and gradients in a parallel
 * one) at the offsets below, so a test can perturb any of them by index.
 * Helpers allocate (malloc) and abort on OOM: test code, not core.
 */
#ifndef LM_BLOCK_H
#define LM_BLOCK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_lm.h"

enum { P_LN1G, P_LN1B, P_WQKV, P_BQKV, P_WO, P_BO, P_LN2G, P_LN2B, P_WFC, P_BFC, P_WP, P_BP, P_COUNT };
static const char *const lmb_param_names[P_COUNT] = {"ln1.g", "ln1.b", "qkv.W", "qkv.b", "proj.W", "proj.b",
                                                     "ln2.g", "ln2.b", "fc.W",  "fc.b",  "fcproj.W", "fcproj.b"};

static void *lmb_alloc(size_t floats)
{
    void *p = calloc(floats ? floats : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "lm_block: out of memory\n");
        exit(2);
    }
    return p;
}

/* Offsets [P_COUNT + 1] of each parameter of a block of width D. */
static void lmb_offsets(int64_t D, int64_t off[P_COUNT + 1])
{
    int64_t F = 4 * D;
    int64_t sz[P_COUNT] = {D, D, 3 * D * D, 3 * D, D * D, D, D, D, F * D, F, D * F, D};
    off[0] = 0;
    for (int i = 0; i < P_COUNT; i++) off[i + 1] = off[i] + sz[i];
}

/* Saved activations of one block for rows M = N*T. */
typedef struct lmb_acts {
    float *h1, *m1, *r1, *qkv, *att, *a, *x1, *h2, *m2, *r2, *u, *upre;
} lmb_acts;

static void lmb_acts_new(lmb_acts *s, int64_t N, int64_t T, int64_t D, int64_t H)
{
    int64_t M = N * T;
    s->h1 = lmb_alloc((size_t)(M * D));
    s->m1 = lmb_alloc((size_t)M);
    s->r1 = lmb_alloc((size_t)M);
    s->qkv = lmb_alloc((size_t)(M * 3 * D));
    s->att = lmb_alloc((size_t)(N * H * T * T));
    s->a = lmb_alloc((size_t)(M * D));
    s->x1 = lmb_alloc((size_t)(M * D));
    s->h2 = lmb_alloc((size_t)(M * D));
    s->m2 = lmb_alloc((size_t)M);
    s->r2 = lmb_alloc((size_t)M);
    s->u = lmb_alloc((size_t)(M * 4 * D));
    s->upre = lmb_alloc((size_t)(M * 4 * D));
}

static void lmb_acts_free(lmb_acts *s)
{
    float **f[] = {&s->h1, &s->m1, &s->r1, &s->qkv, &s->att, &s->a, &s->x1, &s->h2, &s->m2, &s->r2, &s->u, &s->upre};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        free(*f[i]);
        *f[i] = NULL;
    }
}

/* y [N*T, D] = block(x); may not alias x.  Saves what backward needs. */
static void lmb_forward(const float *p, int64_t N, int64_t T, int64_t D, int64_t H, const float *x, float *y,
                        lmb_acts *s)
{
    int64_t off[P_COUNT + 1], M = N * T, F = 4 * D;
    lmb_offsets(D, off);
    rt_layernorm_forward(x, p + off[P_LN1G], p + off[P_LN1B], M, D, RT_LN_EPS, s->h1, s->m1, s->r1);
    rt_gemm(0, 1, M, 3 * D, D, 1.0f, s->h1, D, p + off[P_WQKV], D, 0.0f, s->qkv, 3 * D);
    rt_bias_act(s->qkv, p + off[P_BQKV], M, 3 * D, RT_ACT_NONE, NULL);
    rt_attention_forward(s->qkv, N, T, D, H, s->a, s->att);
    memcpy(s->x1, x, (size_t)(M * D) * sizeof(float));
    rt_gemm(0, 1, M, D, D, 1.0f, s->a, D, p + off[P_WO], D, 1.0f, s->x1, D);
    rt_bias_act(s->x1, p + off[P_BO], M, D, RT_ACT_NONE, NULL);
    rt_layernorm_forward(s->x1, p + off[P_LN2G], p + off[P_LN2B], M, D, RT_LN_EPS, s->h2, s->m2, s->r2);
    rt_gemm(0, 1, M, F, D, 1.0f, s->h2, D, p + off[P_WFC], D, 0.0f, s->u, F);
    rt_bias_act(s->u, p + off[P_BFC], M, F, RT_ACT_GELU, s->upre);
    memcpy(y, s->x1, (size_t)(M * D) * sizeof(float));
    rt_gemm(0, 1, M, D, F, 1.0f, s->u, F, p + off[P_WP], F, 1.0f, y, D);
    rt_bias_act(y, p + off[P_BP], M, D, RT_ACT_NONE, NULL);
}

/* Scratch of the backward: floats for rows M = N*T. */
static size_t lmb_backward_floats(int64_t N, int64_t T, int64_t D)
{
    int64_t M = N * T;
    return (size_t)(M * D * 2 + M * 4 * D + M * 3 * D) + rt_attention_workspace(T);
}

/* From dy [M, D] (not changed): g (parameter gradients, flat as p) +=,
 * dx [M, D] +=.  work: lmb_backward_floats floats. */
static void lmb_backward(const float *p, float *g, int64_t N, int64_t T, int64_t D, int64_t H, const float *x,
                         const lmb_acts *s, const float *dy, float *dx, float *work)
{
    int64_t off[P_COUNT + 1], M = N * T, F = 4 * D;
    lmb_offsets(D, off);
    float *dx1 = work, *dh = dx1 + M * D, *du = dh + M * D, *dqkv = du + M * F, *aw = dqkv + M * 3 * D;
    memcpy(dx1, dy, (size_t)(M * D) * sizeof(float));
    /* y = x1 + u Wp^T + bp */
    rt_sum_cols(dy, M, D, g + off[P_BP], 1);
    rt_gemm(1, 0, D, F, M, 1.0f, dy, D, s->u, F, 1.0f, g + off[P_WP], F);
    rt_gemm(0, 0, M, F, D, 1.0f, dy, D, p + off[P_WP], F, 0.0f, du, F);
    /* u = gelu(h2 Wfc^T + bfc) */
    rt_bias_act_backward(du, s->u, s->upre, M, F, RT_ACT_GELU, g + off[P_BFC]);
    rt_gemm(1, 0, F, D, M, 1.0f, du, F, s->h2, D, 1.0f, g + off[P_WFC], D);
    rt_gemm(0, 0, M, D, F, 1.0f, du, F, p + off[P_WFC], D, 0.0f, dh, D);
    rt_layernorm_backward(dh, s->x1, p + off[P_LN2G], s->m2, s->r2, M, D, dx1, g + off[P_LN2G], g + off[P_LN2B]);
    /* x1 = x + a Wo^T + bo */
    rt_sum_cols(dx1, M, D, g + off[P_BO], 1);
    rt_gemm(1, 0, D, D, M, 1.0f, dx1, D, s->a, D, 1.0f, g + off[P_WO], D);
    rt_gemm(0, 0, M, D, D, 1.0f, dx1, D, p + off[P_WO], D, 0.0f, dh, D);
    rt_attention_backward(dh, s->qkv, s->att, N, T, D, H, dqkv, aw);
    rt_sum_cols(dqkv, M, 3 * D, g + off[P_BQKV], 1);
    rt_gemm(1, 0, 3 * D, D, M, 1.0f, dqkv, 3 * D, s->h1, D, 1.0f, g + off[P_WQKV], D);
    rt_gemm(0, 0, M, D, 3 * D, 1.0f, dqkv, 3 * D, p + off[P_WQKV], D, 0.0f, dh, D);
    for (int64_t i = 0; i < M * D; i++) dx[i] += dx1[i];
    rt_layernorm_backward(dh, x, p + off[P_LN1G], s->m1, s->r1, M, D, dx, g + off[P_LN1G], g + off[P_LN1B]);
}

/* Scratch of one generation step of a block over N sequences. */
static size_t lmb_step_floats(int64_t N, int64_t D, int64_t maxT)
{
    return (size_t)(N * (3 * D + 5 * D + 4 * D)) + rt_attention_step_workspace(maxT);
}

/* y [N, D] = block(x [N, D]) at position t, keys and values of 0..t-1 in
 * kc, vc [N, maxT, D] (row t is written).  y may not alias x. */
static rt_status lmb_step(rt_ctx *ctx, const float *p, int64_t N, int64_t t, int64_t maxT, int64_t D, int64_t H,
                          const float *x, float *y, float *kc, float *vc, float *work)
{
    int64_t off[P_COUNT + 1], F = 4 * D;
    lmb_offsets(D, off);
    float *qkv = work, *h = qkv + N * 3 * D, *a = h + N * D, *x1 = a + N * D, *mr = x1 + N * D, *u = mr + 2 * N * D,
          *aw = u + N * F;
    rt_layernorm_forward(x, p + off[P_LN1G], p + off[P_LN1B], N, D, RT_LN_EPS, h, mr, mr + N);
    rt_gemm(0, 1, N, 3 * D, D, 1.0f, h, D, p + off[P_WQKV], D, 0.0f, qkv, 3 * D);
    rt_bias_act(qkv, p + off[P_BQKV], N, 3 * D, RT_ACT_NONE, NULL);
    rt_status st = rt_attention_step(ctx, qkv, N, t, maxT, D, H, kc, vc, a, aw);
    if (st) return st;
    memcpy(x1, x, (size_t)(N * D) * sizeof(float));
    rt_gemm(0, 1, N, D, D, 1.0f, a, D, p + off[P_WO], D, 1.0f, x1, D);
    rt_bias_act(x1, p + off[P_BO], N, D, RT_ACT_NONE, NULL);
    rt_layernorm_forward(x1, p + off[P_LN2G], p + off[P_LN2B], N, D, RT_LN_EPS, h, mr, mr + N);
    rt_gemm(0, 1, N, F, D, 1.0f, h, D, p + off[P_WFC], D, 0.0f, u, F);
    rt_bias_act(u, p + off[P_BFC], N, F, RT_ACT_GELU, NULL);
    memcpy(y, x1, (size_t)(N * D) * sizeof(float));
    rt_gemm(0, 1, N, D, F, 1.0f, u, F, p + off[P_WP], F, 1.0f, y, D);
    rt_bias_act(y, p + off[P_BP], N, D, RT_ACT_NONE, NULL);
    return RT_STATUS_OK;
}

/* Random parameters of a block: weights ~ U(-w, w), biases ~ U(-0.1, 0.1),
 * gains ~ 1 + U(-0.1, 0.1), from frand. */
static void lmb_init(float *p, int64_t D, double w, double (*frand)(double, double))
{
    int64_t off[P_COUNT + 1];
    lmb_offsets(D, off);
    for (int i = 0; i < P_COUNT; i++)
        for (int64_t j = off[i]; j < off[i + 1]; j++) {
            int gain = i == P_LN1G || i == P_LN2G, weight = i == P_WQKV || i == P_WO || i == P_WFC || i == P_WP;
            p[j] = (float)(gain ? 1 + frand(-0.1, 0.1) : weight ? frand(-w, w) : frand(-0.1, 0.1));
        }
}

/* ================================================================ a model */

typedef struct lm_model {
    int64_t V, maxT, D, H, L;
    float *wte, *wpe, *lnfg, *lnfb;
    float *blocks; /* L blocks of lmb_offsets(D)[P_COUNT] floats */
    int64_t block_size;
} lm_model;

static void lm_model_new(lm_model *m, int64_t V, int64_t maxT, int64_t D, int64_t H, int64_t L,
                         double (*frand)(double, double))
{
    int64_t off[P_COUNT + 1];
    lmb_offsets(D, off);
    *m = (lm_model){V, maxT, D, H, L, NULL, NULL, NULL, NULL, NULL, off[P_COUNT]};
    m->wte = lmb_alloc((size_t)(V * D));
    m->wpe = lmb_alloc((size_t)(maxT * D));
    m->lnfg = lmb_alloc((size_t)D);
    m->lnfb = lmb_alloc((size_t)D);
    m->blocks = lmb_alloc((size_t)(L * m->block_size));
    for (int64_t i = 0; i < V * D; i++) m->wte[i] = (float)frand(-0.5, 0.5);
    for (int64_t i = 0; i < maxT * D; i++) m->wpe[i] = (float)frand(-0.2, 0.2);
    for (int64_t i = 0; i < D; i++) {
        m->lnfg[i] = (float)(1 + frand(-0.1, 0.1));
        m->lnfb[i] = (float)frand(-0.1, 0.1);
    }
    for (int64_t l = 0; l < L; l++) lmb_init(m->blocks + l * m->block_size, D, 0.5 / sqrt((double)D), frand);
}

static void lm_model_free(lm_model *m)
{
    free(m->wte);
    free(m->wpe);
    free(m->lnfg);
    free(m->lnfb);
    free(m->blocks);
}

/* logits [N, T, V] of ids [N, T] (the uncached forward, no saved state
 * kept). */
static rt_status lm_forward(rt_ctx *ctx, const lm_model *m, const int32_t *ids, int64_t N, int64_t T, float *logits)
{
    int64_t M = N * T, D = m->D;
    float *x = lmb_alloc((size_t)(M * D)), *y = lmb_alloc((size_t)(M * D)), *mr = lmb_alloc((size_t)(2 * M));
    rt_status st = rt_embedding_forward(ctx, ids, N, T, m->wte, m->V, m->wpe, m->maxT, D, x);
    lmb_acts s;
    lmb_acts_new(&s, N, T, D, m->H);
    for (int64_t l = 0; !st && l < m->L; l++) {
        lmb_forward(m->blocks + l * m->block_size, N, T, D, m->H, x, y, &s);
        float *t = x;
        x = y;
        y = t;
    }
    if (!st) {
        rt_layernorm_forward(x, m->lnfg, m->lnfb, M, D, RT_LN_EPS, y, mr, mr + M);
        rt_tied_logits(y, m->wte, M, m->V, D, logits);
    }
    lmb_acts_free(&s);
    free(x);
    free(y);
    free(mr);
    return st;
}

/* A key/value cache and scratch for cached generation over N sequences. */
typedef struct lm_cache {
    float *k, *v; /* [L, N, maxT, D] each */
    float *x, *y, *h, *mr, *work;
    int64_t N;
} lm_cache;

static void lm_cache_new(lm_cache *c, const lm_model *m, int64_t N)
{
    c->N = N;
    c->k = lmb_alloc((size_t)(m->L * N * m->maxT * m->D));
    c->v = lmb_alloc((size_t)(m->L * N * m->maxT * m->D));
    c->x = lmb_alloc((size_t)(N * m->D));
    c->y = lmb_alloc((size_t)(N * m->D));
    c->h = lmb_alloc((size_t)(N * m->D));
    c->mr = lmb_alloc((size_t)(2 * N));
    c->work = lmb_alloc(lmb_step_floats(N, m->D, m->maxT));
}

static void lm_cache_free(lm_cache *c)
{
    free(c->k);
    free(c->v);
    free(c->x);
    free(c->y);
    free(c->h);
    free(c->mr);
    free(c->work);
}

/* logits [N, V] of position t given ids [N] at t (positions 0..t-1 fed
 * before, in order). */
static rt_status lm_step(rt_ctx *ctx, const lm_model *m, lm_cache *c, const int32_t *ids, int64_t t, float *logits)
{
    int64_t N = c->N, D = m->D;
    if (t >= m->maxT)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "lm_step: position %lld past the context %lld", (long long)t,
                        (long long)m->maxT);
    /* Position t's embedding: one row of [1, 1] per sequence. */
    for (int64_t n = 0; n < N; n++) {
        rt_status st = rt_embedding_forward(ctx, ids + n, 1, 1, m->wte, m->V, m->wpe + t * D, m->maxT - t, D,
                                            c->x + n * D);
        if (st) return st;
    }
    for (int64_t l = 0; l < m->L; l++) {
        size_t co = (size_t)(l * N * m->maxT * D);
        rt_status st = lmb_step(ctx, m->blocks + l * m->block_size, N, t, m->maxT, D, m->H, c->x, c->y, c->k + co,
                                c->v + co, c->work);
        if (st) return st;
        float *tmp = c->x;
        c->x = c->y;
        c->y = tmp;
    }
    rt_layernorm_forward(c->x, m->lnfg, m->lnfb, N, D, RT_LN_EPS, c->h, c->mr, c->mr + N);
    rt_tied_logits(c->h, m->wte, N, m->V, D, logits);
    return RT_STATUS_OK;
}

#endif /* LM_BLOCK_H */
