/*
 * test_lm_kernels.c -- the GPT kernels of rt_lm.h: each fast kernel against
 * its _ref twin, each backward against finite differences of its forward
 * (attention, layer norm, embedding, the tied output, a whole block), the
 * accumulation contract, the errors, and cached generation against the
 * full forward (one attention and a whole model).
 */
#include "rt_lm.h"
#include "t.h"
#include "lm_block.h"

#include <stdint.h>
#include <stdlib.h>

/* A local generator, so the data does not depend on the code under test. */
static uint64_t lcg = 0x9e3779b97f4a7c15ULL;
static double frand(double lo, double hi)
{
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (double)(lcg >> 11) * 0x1p-53;
}
static void fill(float *x, int64_t n, double lo, double hi)
{
    for (int64_t i = 0; i < n; i++) x[i] = (float)frand(lo, hi);
}
static float *falloc(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }

/* max |a - b| / max(1, |b|) */
static double max_diff(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double s = fabs(b[i]) > 1 ? fabs(b[i]) : 1, d = fabs((double)a[i] - b[i]) / s;
        if (!(d <= m)) m = d; /* NaN wins */
    }
    return m;
}

/* ------------------------------------------------- finite differences */

/* The loss, in double, at the current values of the floats under test. */
typedef double (*loss_fn)(void *ud);

/* Compares analytic gradients g[i] of x[i] (i in idx[0..n) or all of
 * 0..len when idx is NULL) with the five-point stencil of f, step h.
 * Error per entry: |a - n| / max(|a| + |n|, 0.1 max|a| over the group,
 * 1e-6) (the measure of core/host/gradcheck.c).  Returns the worst. */
static double fd_check(const char *name, float *x, const float *g, int64_t len, const int64_t *idx, int64_t n,
                       double h, loss_fn f, void *ud)
{
    int64_t count = idx ? n : len;
    double amax = 0, worst = 0;
    for (int64_t c = 0; c < count; c++) amax = fmax(amax, fabs(g[idx ? idx[c] : c]));
    double floor_ = fmax(0.1 * amax, 1e-6);
    int64_t worst_i = -1;
    double worst_a = 0, worst_n = 0;
    for (int64_t c = 0; c < count; c++) {
        int64_t i = idx ? idx[c] : c;
        float x0 = x[i];
        double fv[4], off[4] = {-2, -1, 1, 2};
        for (int k = 0; k < 4; k++) {
            x[i] = (float)(x0 + off[k] * h);
            fv[k] = f(ud);
        }
        x[i] = x0;
        double num = (fv[0] - 8 * fv[1] + 8 * fv[2] - fv[3]) / (12 * h);
        double a = g[i], e = fabs(a - num) / fmax(fabs(a) + fabs(num), floor_);
        if (!(e <= worst)) {
            worst = e;
            worst_i = i;
            worst_a = a;
            worst_n = num;
        }
    }
    if (worst > 1e-3)
        fprintf(stderr, "  %s: worst error %.3g at [%lld]: analytic %.7g, numerical %.7g\n", name, worst,
                (long long)worst_i, worst_a, worst_n);
    return worst;
}

/* n indices spread over [0, len) (all of them when len <= n). */
static int64_t pick(int64_t len, int64_t n, int64_t *idx)
{
    if (len <= n) {
        for (int64_t i = 0; i < len; i++) idx[i] = i;
        return len;
    }
    for (int64_t i = 0; i < n; i++) idx[i] = (int64_t)(frand(0, 1) * (double)len) % len;
    return n;
}

static double dot_w(const float *y, const float *w, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)w[i] * y[i];
    return s;
}

/* ============================================================ embedding */

static void test_embedding_vs_ref(void)
{
    int64_t N = 3, T = 7, V = 11, maxT = 9, D = 13;
    int32_t ids[21];
    for (int i = 0; i < N * T; i++) ids[i] = (int32_t)(frand(0, 1) * V) % (int32_t)V;
    ids[4] = ids[5] = ids[17] = 3; /* repeats: the scatter must add them */
    float *wte = falloc(V * D), *wpe = falloc(maxT * D), *o1 = falloc(N * T * D), *o2 = falloc(N * T * D);
    fill(wte, V * D, -1, 1);
    fill(wpe, maxT * D, -1, 1);
    rt_ctx *ctx = rt_ctx_new();
    CHECK(rt_embedding_forward(ctx, ids, N, T, wte, V, wpe, maxT, D, o1) == RT_STATUS_OK);
    CHECK(rt_embedding_forward_ref(ctx, ids, N, T, wte, V, wpe, maxT, D, o2) == RT_STATUS_OK);
    CHECK(max_diff(o1, o2, N * T * D) == 0);
    CHECK_NEAR(o1[(2 * T + 5) * D + 4], wte[ids[2 * T + 5] * D + 4] + wpe[5 * D + 4], 1e-7);
    float *dout = falloc(N * T * D), *g1 = falloc(V * D), *g2 = falloc(V * D), *p1 = falloc(maxT * D),
          *p2 = falloc(maxT * D);
    fill(dout, N * T * D, -1, 1);
    fill(g1, V * D, -1, 1); /* accumulates onto what is there */
    memcpy(g2, g1, sizeof(float) * (size_t)(V * D));
    CHECK(rt_embedding_backward(ctx, ids, N, T, dout, V, maxT, D, g1, p1) == RT_STATUS_OK);
    CHECK(rt_embedding_backward_ref(ctx, ids, N, T, dout, V, maxT, D, g2, p2) == RT_STATUS_OK);
    CHECK(max_diff(g1, g2, V * D) < 1e-6);
    CHECK(max_diff(p1, p2, maxT * D) < 1e-6);
    /* Rows T..maxT-1 of the position table were not used. */
    double unused = 0;
    for (int64_t i = T * D; i < maxT * D; i++) unused += fabs(p1[i]);
    CHECK(unused == 0);
    /* Frozen tables: NULL gradients are skipped. */
    CHECK(rt_embedding_backward(ctx, ids, N, T, dout, V, maxT, D, NULL, NULL) == RT_STATUS_OK);
    rt_ctx_free(ctx);
    free(wte), free(wpe), free(o1), free(o2), free(dout), free(g1), free(g2), free(p1), free(p2);
}

static void test_embedding_errors(void)
{
    int64_t N = 2, T = 3, V = 5, maxT = 4, D = 2;
    int32_t ids[6] = {0, 1, 2, 3, 4, 0};
    float wte[10] = {0}, wpe[8] = {0}, out[12], g[10] = {0};
    rt_ctx *ctx = rt_ctx_new();
    ids[4] = 5; /* [1, 1] = V */
    CHECK(rt_embedding_forward(ctx, ids, N, T, wte, V, wpe, maxT, D, out) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "token id 5 at [1, 1]");
    CHECK_CONTAINS(rt_ctx_message(ctx), "[0, 5)");
    ids[4] = -1;
    CHECK(rt_embedding_forward_ref(ctx, ids, N, T, wte, V, wpe, maxT, D, out) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "token id -1 at [1, 1]");
    /* The scatter writes nothing when an id is bad. */
    float dout[12];
    for (int i = 0; i < 12; i++) dout[i] = 1;
    CHECK(rt_embedding_backward(ctx, ids, N, T, dout, V, maxT, D, g, NULL) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "embedding backward");
    double s = 0;
    for (int i = 0; i < 10; i++) s += fabs(g[i]);
    CHECK(s == 0);
    ids[4] = 4;
    CHECK(rt_embedding_forward(ctx, ids, N, 5, wte, V, wpe, maxT, D, out) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "T = 5 exceeds the 4 learned positions");
    rt_ctx_free(ctx);
}

/* =========================================================== layer norm */

static void layernorm_case(int64_t M, int64_t D, double shift, int affine)
{
    float *x = falloc(M * D), *g = falloc(D), *b = falloc(D), *o1 = falloc(M * D), *o2 = falloc(M * D);
    float *m1 = falloc(M), *r1 = falloc(M), *m2 = falloc(M), *r2 = falloc(M);
    fill(x, M * D, shift - 2, shift + 2);
    fill(g, D, 0.5, 1.5);
    fill(b, D, -0.5, 0.5);
    const float *G = affine ? g : NULL, *B = affine ? b : NULL;
    rt_layernorm_forward(x, G, B, M, D, RT_LN_EPS, o1, m1, r1);
    rt_layernorm_forward_ref(x, G, B, M, D, RT_LN_EPS, o2, m2, r2);
    /* x itself is float: at a mean of 1000 its ulp is 6e-5, and the saved
     * float mean carries half of that into x - mean. */
    double tol = 2e-5 + 2 * (fabs(shift) + 2) * 0x1p-24;
    if (max_diff(o1, o2, M * D) >= tol) fprintf(stderr, "  M %lld D %lld shift %g: %g\n", (long long)M, (long long)D, shift, max_diff(o1, o2, M * D));
    CHECK(max_diff(o1, o2, M * D) < tol);
    CHECK(max_diff(m1, m2, M) < 1e-6);
    CHECK(max_diff(r1, r2, M) < 1e-5);
    float *dy = falloc(M * D), *dx1 = falloc(M * D), *dx2 = falloc(M * D);
    float *dg1 = falloc(D), *dg2 = falloc(D), *db1 = falloc(D), *db2 = falloc(D);
    fill(dy, M * D, -1, 1);
    fill(dx1, M * D, -1, 1); /* dx accumulates */
    memcpy(dx2, dx1, sizeof(float) * (size_t)(M * D));
    fill(dg1, D, -1, 1);
    memcpy(dg2, dg1, sizeof(float) * (size_t)D);
    rt_layernorm_backward(dy, x, G, m1, r1, M, D, dx1, dg1, db1);
    rt_layernorm_backward_ref(dy, x, G, m1, r1, M, D, dx2, dg2, db2);
    CHECK(max_diff(dx1, dx2, M * D) < 1e-4);
    CHECK(max_diff(dg1, dg2, D) < 1e-4);
    CHECK(max_diff(db1, db2, D) < 1e-4);
    free(x), free(g), free(b), free(o1), free(o2), free(m1), free(r1), free(m2), free(r2);
    free(dy), free(dx1), free(dx2), free(dg1), free(dg2), free(db1), free(db2);
}

static void test_layernorm_vs_ref(void)
{
    layernorm_case(5, 13, 0, 1);
    layernorm_case(7, 64, 0, 1);
    layernorm_case(3, 64, 1000, 1); /* a large mean: the two-pass variance */
    layernorm_case(4, 9, 0, 0);     /* no gamma/beta */
    layernorm_case(1, 1, 0, 1);     /* one feature: xhat = 0 */
}

/* Forward of x [M, D] -> out; the loss sum(w * out). */
typedef struct ln_ud {
    float *x, *g, *b, *w, *out, *m, *r;
    int64_t M, D;
} ln_ud;

static double ln_loss(void *p)
{
    ln_ud *u = p;
    rt_layernorm_forward(u->x, u->g, u->b, u->M, u->D, RT_LN_EPS, u->out, u->m, u->r);
    return dot_w(u->out, u->w, u->M * u->D);
}

static void test_layernorm_gradcheck(void)
{
    int64_t M = 4, D = 10;
    ln_ud u = {falloc(M * D), falloc(D), falloc(D), falloc(M * D), falloc(M * D), falloc(M), falloc(M), M, D};
    fill(u.x, M * D, -2, 2);
    fill(u.g, D, 0.5, 1.5);
    fill(u.b, D, -0.5, 0.5);
    fill(u.w, M * D, -1, 1);
    float *dx = falloc(M * D), *dg = falloc(D), *db = falloc(D);
    ln_loss(&u);
    rt_layernorm_backward(u.w, u.x, u.g, u.m, u.r, M, D, dx, dg, db);
    CHECK(fd_check("ln dx", u.x, dx, M * D, NULL, 0, 1.0 / 256, ln_loss, &u) < 1e-3);
    CHECK(fd_check("ln dgamma", u.g, dg, D, NULL, 0, 1.0 / 256, ln_loss, &u) < 1e-3);
    CHECK(fd_check("ln dbeta", u.b, db, D, NULL, 0, 1.0 / 256, ln_loss, &u) < 1e-3);
    free(u.x), free(u.g), free(u.b), free(u.w), free(u.out), free(u.m), free(u.r), free(dx), free(dg), free(db);
}

/* ============================================================ attention */

static void attention_case(int64_t N, int64_t T, int64_t D, int64_t H)
{
    int64_t C = N * T * 3 * D;
    float *qkv = falloc(C), *o1 = falloc(N * T * D), *o2 = falloc(N * T * D);
    float *a1 = falloc(N * H * T * T), *a2 = falloc(N * H * T * T);
    fill(qkv, C, -2, 2);
    fill(a1, N * H * T * T, 5, 6); /* stale values must be overwritten */
    rt_attention_forward(qkv, N, T, D, H, o1, a1);
    rt_attention_forward_ref(qkv, N, T, D, H, o2, a2);
    CHECK(max_diff(o1, o2, N * T * D) < 1e-5);
    CHECK(max_diff(a1, a2, N * H * T * T) < 1e-5);
    int causal_bad = 0, sum_bad = 0;
    for (int64_t r = 0; r < N * H * T; r++) {
        int64_t t = r % T;
        double s = 0;
        for (int64_t j = 0; j < T; j++) {
            s += a1[r * T + j];
            if (j > t && a1[r * T + j] != 0) causal_bad++;
        }
        if (fabs(s - 1) > 1e-5) sum_bad++;
    }
    CHECK(causal_bad == 0);
    CHECK(sum_bad == 0);
    float *dout = falloc(N * T * D), *d1 = falloc(C), *d2 = falloc(C), *work = falloc((int64_t)rt_attention_workspace(T));
    fill(dout, N * T * D, -1, 1);
    fill(d1, C, 7, 8); /* dqkv is overwritten, not accumulated */
    rt_attention_backward(dout, qkv, a1, N, T, D, H, d1, work);
    rt_attention_backward_ref(dout, qkv, a1, N, T, D, H, d2);
    CHECK(max_diff(d1, d2, C) < 1e-5);
    free(qkv), free(o1), free(o2), free(a1), free(a2), free(dout), free(d1), free(d2), free(work);
}

static void test_attention_vs_ref(void)
{
    attention_case(2, 5, 12, 3);
    attention_case(1, 1, 4, 1);  /* one position: out = v */
    attention_case(3, 9, 16, 4);
    attention_case(2, 17, 8, 1); /* one head, T not a multiple of 8 */
}

typedef struct att_ud {
    float *qkv, *w, *out, *att;
    int64_t N, T, D, H;
} att_ud;

static double att_loss(void *p)
{
    att_ud *u = p;
    rt_attention_forward(u->qkv, u->N, u->T, u->D, u->H, u->out, u->att);
    return dot_w(u->out, u->w, u->N * u->T * u->D);
}

static void test_attention_gradcheck(void)
{
    int64_t N = 2, T = 6, D = 8, H = 2, C = N * T * 3 * D;
    att_ud u = {falloc(C), falloc(N * T * D), falloc(N * T * D), falloc(N * H * T * T), N, T, D, H};
    fill(u.qkv, C, -1.5, 1.5);
    fill(u.w, N * T * D, -1, 1);
    float *d = falloc(C), *work = falloc((int64_t)rt_attention_workspace(T));
    att_loss(&u);
    rt_attention_backward(u.w, u.qkv, u.att, N, T, D, H, d, work);
    CHECK(fd_check("attention dqkv", u.qkv, d, C, NULL, 0, 1.0 / 128, att_loss, &u) < 1e-3);
    /* The scale 1/sqrt(hs) is there: at q = k the logits of a 2-position
     * row are |q|^2 / sqrt(hs), checked against a formula here. */
    float q2[2 * 3 * 4] = {0};
    for (int i = 0; i < 4; i++) q2[i] = q2[4 + i] = q2[12 + i] = q2[16 + i] = 0.5f; /* q0=k0=q1=k1 */
    q2[16] = 1.0f; /* k1 = (1, .5, .5, .5): q1.k1 = 1.25 */
    float o[8], a[4];
    rt_attention_forward(q2, 1, 2, 4, 1, o, a);
    double s0 = 1.0 / 2, s1 = 1.25 / 2; /* q1.k0 = 1, q1.k1 = 1.25, over sqrt(4) */
    CHECK_NEAR(a[3], exp(s1) / (exp(s0) + exp(s1)), 1e-6);
    free(u.qkv), free(u.w), free(u.out), free(u.att), free(d), free(work);
}

/* The cached step, position by position, equals the full forward's rows;
 * the cache holds exactly the keys and values. */
static void test_attention_step_matches_forward(void)
{
    int64_t N = 3, T = 11, D = 12, H = 3, maxT = 16;
    float *qkv = falloc(N * T * 3 * D), *out = falloc(N * T * D), *att = falloc(N * H * T * T);
    fill(qkv, N * T * 3 * D, -2, 2);
    rt_attention_forward(qkv, N, T, D, H, out, att);
    float *kc = falloc(N * maxT * D), *vc = falloc(N * maxT * D), *step = falloc(N * 3 * D), *o = falloc(N * D);
    float *work = falloc((int64_t)rt_attention_step_workspace(maxT));
    rt_ctx *ctx = rt_ctx_new();
    double worst = 0;
    for (int64_t t = 0; t < T; t++) {
        for (int64_t n = 0; n < N; n++)
            memcpy(step + n * 3 * D, qkv + (n * T + t) * 3 * D, sizeof(float) * (size_t)(3 * D));
        CHECK(rt_attention_step(ctx, step, N, t, maxT, D, H, kc, vc, o, work) == RT_STATUS_OK);
        for (int64_t n = 0; n < N; n++) worst = fmax(worst, max_diff(o + n * D, out + (n * T + t) * D, D));
    }
    CHECK(worst < 1e-5);
    CHECK(memcmp(kc + (2 * maxT + 7) * D, qkv + (2 * T + 7) * 3 * D + D, sizeof(float) * (size_t)D) == 0);
    CHECK(memcmp(vc + (1 * maxT + 10) * D, qkv + (1 * T + 10) * 3 * D + 2 * D, sizeof(float) * (size_t)D) == 0);
    /* A full cache is an error, not a write past it. */
    CHECK(rt_attention_step(ctx, step, N, maxT, maxT, D, H, kc, vc, o, work) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "position 16 outside the cache of 16");
    CHECK(rt_attention_check(ctx, 1, 4, 10, 3) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "D 10, heads 3");
    CHECK(rt_attention_check(ctx, 1, 4, 12, 3) == RT_STATUS_OK);
    rt_ctx_free(ctx);
    free(qkv), free(out), free(att), free(kc), free(vc), free(step), free(o), free(work);
}

/* ======================================== tied output: a small composition */

/* ids -> embedding -> layer norm -> logits = h wte^T -> cross-entropy on
 * targets.  wte gets gradient from both ends. */
typedef struct tie_ud {
    const int32_t *ids, *tgt;
    float *wte, *wpe, *g, *b, *x, *h, *m, *r, *logits;
    int64_t N, T, V, D;
} tie_ud;

static double tie_loss(void *p)
{
    tie_ud *u = p;
    int64_t M = u->N * u->T;
    rt_embedding_forward(NULL, u->ids, u->N, u->T, u->wte, u->V, u->wpe, u->T, u->D, u->x);
    rt_layernorm_forward(u->x, u->g, u->b, M, u->D, RT_LN_EPS, u->h, u->m, u->r);
    rt_tied_logits(u->h, u->wte, M, u->V, u->D, u->logits);
    return rt_cross_entropy(u->logits, u->tgt, M, u->V, 0, NULL, 1);
}

static void test_tied_output_gradcheck(void)
{
    int64_t N = 2, T = 4, V = 7, D = 6, M = N * T;
    int32_t ids[8] = {1, 3, 3, 6, 0, 2, 5, 1}, tgt[8] = {3, 3, 6, 0, 2, 5, 1, 4};
    tie_ud u = {ids, tgt, falloc(V * D), falloc(T * D), falloc(D), falloc(D), falloc(M * D), falloc(M * D),
                falloc(M), falloc(M), falloc(M * V), N, T, V, D};
    fill(u.wte, V * D, -1, 1);
    fill(u.wpe, T * D, -0.5, 0.5);
    fill(u.g, D, 0.5, 1.5);
    fill(u.b, D, -0.2, 0.2);
    tie_loss(&u);
    float *dl = falloc(M * V), *dh = falloc(M * D), *dx = falloc(M * D), *dwte = falloc(V * D), *dwpe = falloc(T * D),
          *dg = falloc(D), *db = falloc(D);
    rt_cross_entropy(u.logits, tgt, M, V, 0, dl, 1);
    rt_tied_logits_backward(dl, u.h, u.wte, M, V, D, dh, dwte);
    rt_layernorm_backward(dh, u.x, u.g, u.m, u.r, M, D, dx, dg, db);
    CHECK(rt_embedding_backward(NULL, ids, N, T, dx, V, T, D, dwte, dwpe) == RT_STATUS_OK);
    CHECK(fd_check("tied dwte", u.wte, dwte, V * D, NULL, 0, 1.0 / 256, tie_loss, &u) < 1e-3);
    CHECK(fd_check("tied dwpe", u.wpe, dwpe, T * D, NULL, 0, 1.0 / 256, tie_loss, &u) < 1e-3);
    CHECK(fd_check("tied dgamma", u.g, dg, D, NULL, 0, 1.0 / 256, tie_loss, &u) < 1e-3);
    /* The output end alone is not the whole gradient (the tie matters). */
    float *only_out = falloc(V * D);
    rt_tied_logits_backward(dl, u.h, u.wte, M, V, D, NULL, only_out);
    CHECK(max_diff(only_out, dwte, V * D) > 1e-3);
    free(u.wte), free(u.wpe), free(u.g), free(u.b), free(u.x), free(u.h), free(u.m), free(u.r), free(u.logits);
    free(dl), free(dh), free(dx), free(dwte), free(dwpe), free(dg), free(db), free(only_out);
}

/* ========================================================= a whole block */

typedef struct blk_ud {
    float *p, *x, *y, *w;
    lmb_acts s;
    int64_t N, T, D, H;
} blk_ud;

static double blk_loss(void *q)
{
    blk_ud *u = q;
    lmb_forward(u->p, u->N, u->T, u->D, u->H, u->x, u->y, &u->s);
    return dot_w(u->y, u->w, u->N * u->T * u->D);
}

static void test_block_gradcheck(void)
{
    int64_t N = 2, T = 5, D = 8, H = 2, M = N * T, off[P_COUNT + 1];
    lmb_offsets(D, off);
    blk_ud u = {falloc(off[P_COUNT]), falloc(M * D), falloc(M * D), falloc(M * D), {0}, N, T, D, H};
    lmb_acts_new(&u.s, N, T, D, H);
    lmb_init(u.p, D, 0.6, frand);
    fill(u.x, M * D, -1, 1);
    fill(u.w, M * D, -1, 1);
    float *g = falloc(off[P_COUNT]), *dx = falloc(M * D), *work = falloc((int64_t)lmb_backward_floats(N, T, D));
    blk_loss(&u);
    lmb_backward(u.p, g, N, T, D, H, u.x, &u.s, u.w, dx, work);
    int64_t idx[40];
    for (int i = 0; i < P_COUNT; i++) {
        int64_t n = pick(off[i + 1] - off[i], 40, idx);
        CHECK(fd_check(lmb_param_names[i], u.p + off[i], g + off[i], off[i + 1] - off[i], idx, n, 1.0 / 128,
                       blk_loss, &u) < 2e-3);
    }
    CHECK(fd_check("block dx", u.x, dx, M * D, NULL, 0, 1.0 / 128, blk_loss, &u) < 2e-3);
    /* Parameter gradients accumulate: a second backward doubles them; dx
     * accumulates too (zeroed here first). */
    float *g2 = malloc(sizeof(float) * (size_t)off[P_COUNT]);
    memcpy(g2, g, sizeof(float) * (size_t)off[P_COUNT]);
    blk_loss(&u);
    memset(dx, 0, sizeof(float) * (size_t)(M * D));
    lmb_backward(u.p, g2, N, T, D, H, u.x, &u.s, u.w, dx, work);
    int acc_bad = 0;
    for (int64_t i = 0; i < off[P_COUNT]; i++)
        if (fabs(g2[i] - 2 * g[i]) > 1e-5 * (1 + fabs(g[i]))) acc_bad++;
    CHECK(acc_bad == 0);
    lmb_acts_free(&u.s);
    free(u.p), free(u.x), free(u.y), free(u.w), free(g), free(g2), free(dx), free(work);
}

/* ===================================== cached generation = full forward */

static void test_model_cached_equals_uncached(void)
{
    int64_t V = 19, maxT = 12, D = 16, H = 4, L = 3, N = 2, T = 10;
    lm_model m;
    lm_model_new(&m, V, maxT, D, H, L, frand);
    int32_t ids[20];
    for (int i = 0; i < N * T; i++) ids[i] = (int32_t)(frand(0, 1) * V) % (int32_t)V;
    float *full = falloc(N * T * V), *step = falloc(N * V);
    rt_ctx *ctx = rt_ctx_new();
    CHECK(lm_forward(ctx, &m, ids, N, T, full) == RT_STATUS_OK);
    lm_cache c;
    lm_cache_new(&c, &m, N);
    double worst = 0;
    int32_t col[2];
    for (int64_t t = 0; t < T; t++) {
        for (int64_t n = 0; n < N; n++) col[n] = ids[n * T + t];
        CHECK(lm_step(ctx, &m, &c, col, t, step) == RT_STATUS_OK);
        for (int64_t n = 0; n < N; n++) worst = fmax(worst, max_diff(step + n * V, full + (n * T + t) * V, V));
    }
    if (worst >= 1e-4) fprintf(stderr, "  cached vs full: worst %.3g\n", worst);
    CHECK(worst < 1e-4);
    /* Also a prefix: the full forward over 0..t gives the same last row. */
    float *pre = falloc(N * 4 * V);
    int32_t ids4[8];
    for (int64_t n = 0; n < N; n++) memcpy(ids4 + n * 4, ids + n * T, 4 * sizeof(int32_t));
    CHECK(lm_forward(ctx, &m, ids4, N, 4, pre) == RT_STATUS_OK);
    CHECK(max_diff(pre + 3 * V, full + 3 * V, V) < 1e-5);
    lm_cache_free(&c);
    lm_model_free(&m);
    rt_ctx_free(ctx);
    free(full), free(step), free(pre);
}

/* ============================================================= sampling */

static void test_sample(void)
{
    float lg[5] = {0.0f, logf(2), logf(3), -INFINITY, logf(4)}, work[5];
    CHECK(rt_lm_sample(lg, 5, 0, 0, NULL, work) == 4); /* greedy */
    rt_rng r, r2;
    rt_rng_seed(&r, 11, 0);
    CHECK(rt_lm_sample(lg, 5, 1, 1, &r, work) == 4); /* top-1 = greedy */
    /* T = 1: p = (1, 2, 3, 0, 4) / 10. */
    int cnt[5] = {0}, n = 40000;
    for (int i = 0; i < n; i++) cnt[rt_lm_sample(lg, 5, 1, 0, &r, work)]++;
    CHECK(cnt[3] == 0);
    CHECK_NEAR(cnt[0] / (double)n, 0.1, 0.01);
    CHECK_NEAR(cnt[2] / (double)n, 0.3, 0.01);
    CHECK_NEAR(cnt[4] / (double)n, 0.4, 0.01);
    /* top_k 2: only ids 2 and 4, as 3 : 4. */
    memset(cnt, 0, sizeof cnt);
    for (int i = 0; i < n; i++) cnt[rt_lm_sample(lg, 5, 1, 2, &r, work)]++;
    CHECK(cnt[0] == 0 && cnt[1] == 0 && cnt[3] == 0);
    CHECK_NEAR(cnt[2] / (double)n, 3.0 / 7, 0.01);
    /* T = 0.5 squares the odds: p = (1, 4, 9, 0, 16) / 30. */
    memset(cnt, 0, sizeof cnt);
    for (int i = 0; i < n; i++) cnt[rt_lm_sample(lg, 5, 0.5f, 0, &r, work)]++;
    CHECK_NEAR(cnt[4] / (double)n, 16.0 / 30, 0.01);
    /* Reproducible from the rng state; ties at the k-th value are kept. */
    rt_rng_seed(&r, 5, 1);
    rt_rng_seed(&r2, 5, 1);
    int same = 1;
    for (int i = 0; i < 100; i++) same &= rt_lm_sample(lg, 5, 1, 0, &r, work) == rt_lm_sample(lg, 5, 1, 0, &r2, work);
    CHECK(same);
    float tie[4] = {1, 2, 2, 0};
    memset(cnt, 0, sizeof cnt);
    for (int i = 0; i < 1000; i++) cnt[rt_lm_sample(tie, 4, 1, 1, &r, work)]++;
    CHECK(cnt[1] > 0 && cnt[2] > 0 && cnt[0] == 0 && cnt[3] == 0);
    /* A large vocabulary through quickselect: top_k 3 of 1000 draws only
     * the three largest. */
    float *big = falloc(1000), *bw = falloc(1000);
    fill(big, 1000, -1, 1);
    big[17] = 5, big[500] = 6, big[999] = 5.5f;
    int other = 0;
    for (int i = 0; i < 300; i++) {
        int32_t k = rt_lm_sample(big, 1000, 2, 3, &r, bw);
        other += k != 17 && k != 500 && k != 999;
    }
    CHECK(other == 0);
    /* NaN is never drawn. */
    float nanl[3] = {NAN, 0, 0};
    int nan_drawn = 0;
    for (int i = 0; i < 200; i++) nan_drawn += rt_lm_sample(nanl, 3, 1, 0, &r, work) == 0;
    CHECK(nan_drawn == 0);
    CHECK(rt_lm_sample(nanl, 3, 0, 0, NULL, work) == 1);
    free(big), free(bw);
}

int main(void)
{
    RUN(test_embedding_vs_ref);
    RUN(test_embedding_errors);
    RUN(test_layernorm_vs_ref);
    RUN(test_layernorm_gradcheck);
    RUN(test_attention_vs_ref);
    RUN(test_attention_gradcheck);
    RUN(test_attention_step_matches_forward);
    RUN(test_tied_output_gradcheck);
    RUN(test_block_gradcheck);
    RUN(test_model_cached_equals_uncached);
    RUN(test_sample);
    return t_summary("test_lm_kernels");
}
