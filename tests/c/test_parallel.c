/*
 * test_parallel.c -- the CNN step's fast paths (the convperf work):
 *   - the kernels' worker pool (core/kernels/parallel.h): every task once,
 *     on a thread below T, OpenBLAS held at one thread inside a threaded
 *     job and restored after, a job started inside a task runs on its
 *     caller;
 *   - conv2d, batch norm and pooling through the pool (grain 0, so odd and
 *     tiny shapes take the threaded path) against their _ref twins, and
 *     the same bits with 1 and 2 threads: batch 1, odd sizes, groups > 1,
 *     stride 2, dilation, pointwise, more samples than parts; the weight
 *     gradient summed in sample order, to the bit; the _set
 *     backwards (max pool, train batch norm) equal to accumulating onto
 *     zeros, whatever dx held;
 *   - rt_tensor_ensure reuses a tensor's own storage for a smaller shape
 *     (zeroed), and never one somebody else can see;
 *   - rt_fill, rt_relu_forward and rt_relu_backward (the layer kit's
 *     zeroing and relu, ABI 2.2) against their loops, and the cnn plugin's
 *     relu layer through them: max(x, 0) with NaN -> 0, and its input
 *     gradient.
 */
#include "parallel.h"
#include "retort.h"
#include "rt_conv.h"
#include "t.h"

#include <stdint.h>

static rt_ctx *ctx;
static rt_registry *reg;

static uint64_t lcg = 0x2545F4914F6CDD1DULL;
static float frand(void)
{
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(lcg >> 11) * 0x1p-53 * 2 - 1);
}

#define SENT 4242.5f
#define TAIL 8

/* n random floats in [-1, 1), then TAIL sentinels. */
static float *rnd(int64_t n)
{
    float *p = malloc(sizeof(float) * (size_t)(n + TAIL));
    for (int64_t i = 0; i < n; i++) p[i] = frand();
    for (int i = 0; i < TAIL; i++) p[n + i] = SENT;
    return p;
}
static float *dup(const float *p, int64_t n)
{
    float *q = rnd(n);
    memcpy(q, p, sizeof(float) * (size_t)n);
    return q;
}
static int tail_ok(const float *p, int64_t n)
{
    for (int i = 0; i < TAIL; i++)
        if (p[n + i] != SENT) return 0;
    return 1;
}
static double max_err(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(1.0, fabs((double)b[i]));
        if (!(d <= m)) m = d;
    }
    return m;
}
static int same(const float *a, const float *b, int64_t n) { return !memcmp(a, b, sizeof(float) * (size_t)n); }

/* ------------------------------------------------------------- the pool */

typedef struct rec {
    int hits[16], thread[16], blas[16], inner_hits, inner_threads; /* inner: a mask of threads */
} rec;

static void inner_task(void *arg, int64_t task, int thread)
{
    rec *r = arg;
    __atomic_add_fetch(&r->inner_hits, 1, __ATOMIC_RELAXED);
    __atomic_fetch_or(&r->inner_threads, 1 << thread, __ATOMIC_RELAXED);
}

static void outer_task(void *arg, int64_t task, int thread)
{
    rec *r = arg;
    r->hits[task]++;
    r->thread[task] = thread;
    r->blas[task] = rt_get_threads();
    rec *inner = r + 1 + task; /* one record per outer task: no sharing */
    rt_par_run(3, INT64_MAX, inner_task, inner);
}

static void test_pool_tasks(void)
{
    int saved = rt_get_threads();
    rt_set_threads(2);
    CHECK(rt_par_threads(7, INT64_MAX) == 2);
    CHECK(rt_par_threads(1, INT64_MAX) == 1);
    CHECK(rt_par_threads(7, RT_PAR_GRAIN - 1) == 1);
    for (int big = 0; big < 2; big++) {
        rec r[8];
        memset(r, 0, sizeof r);
        rt_par_run(7, big ? INT64_MAX : 10, outer_task, r);
        for (int t = 0; t < 7; t++) {
            CHECK(r[0].hits[t] == 1);
            CHECK(big ? r[0].thread[t] >= 0 && r[0].thread[t] < 2 : r[0].thread[t] == 0);
            /* one BLAS thread per task thread while two run; untouched on one */
            CHECK(r[0].blas[t] == (big ? 1 : 2));
            CHECK(r[1 + t].inner_hits == 3);
            /* inside a threaded job: all on the task's own thread (index 0 of
             * its job); else a job of its own, on threads 0 and 1 */
            CHECK(big ? r[1 + t].inner_threads == 1 : (r[1 + t].inner_threads & ~3) == 0);
        }
        CHECK(rt_get_threads() == 2);
    }
    rt_set_threads(1);
    CHECK(rt_par_threads(7, INT64_MAX) == 1);
    rt_set_threads(saved);
}

/* --------------------------------------------------------------- conv2d */

typedef struct conv_spec {
    int64_t N, Ci, H, W, Co, KH, KW, sh, sw, ph, pw, dh, dw, groups;
} conv_spec;

static const conv_spec conv_specs[] = {
    /* N Ci  H  W Co KH KW sh sw ph pw dh dw  g */
    {7, 6, 9, 11, 4, 3, 3, 2, 2, 1, 1, 1, 1, 2},  /* stride 2, groups 2, odd sizes */
    {1, 3, 8, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1},   /* batch 1: one part */
    {11, 4, 5, 6, 6, 1, 1, 1, 1, 0, 0, 1, 1, 2},  /* pointwise, groups 2, 11 samples in 8 parts */
    {9, 3, 10, 9, 6, 3, 3, 1, 1, 1, 1, 1, 1, 3},  /* "same" width (shift path), groups 3 */
    {5, 2, 12, 13, 3, 2, 2, 2, 2, 0, 0, 1, 1, 1}, /* kernel 2 stride 2, odd width */
    {3, 4, 7, 7, 8, 3, 3, 1, 1, 2, 2, 2, 2, 4},   /* dilation 2, groups 4 */
    {2, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* the CNN's second layer, batch 2 */
};

/* Runs the fast kernels with `threads` BLAS threads: y (with bias), then
 * the backward with every gradient from the starting values in *g0, then
 * with each alone.  out: y, dx, dw, db, dx alone, dw alone, db alone. */
typedef struct conv_out {
    float *v[7];
} conv_out;

static void conv_run(const rt_conv2d_geom *g, int threads, const float *x, const float *w, const float *b,
                     const float *dy, float *const g0[3], int64_t n[3], conv_out *o, int *ws_ok)
{
    rt_set_threads(threads);
    int64_t ny = g->N * g->C_out * g->H_out * g->W_out;
    size_t nws = rt_conv2d_workspace(g);
    float *ws = rnd((int64_t)nws);
    o->v[0] = rnd(ny);
    rt_conv2d_forward(g, x, w, b, o->v[0], ws);
    for (int k = 0; k < 3; k++) o->v[1 + k] = dup(g0[k], n[k]);
    rt_conv2d_backward(g, x, w, dy, o->v[1], o->v[2], o->v[3], ws);
    for (int k = 0; k < 3; k++) o->v[4 + k] = dup(g0[k], n[k]);
    rt_conv2d_backward(g, x, w, dy, o->v[4], NULL, NULL, ws);
    rt_conv2d_backward(g, x, NULL, dy, NULL, o->v[5], NULL, ws);
    rt_conv2d_backward(g, x, NULL, dy, NULL, NULL, o->v[6], ws);
    *ws_ok = tail_ok(ws, (int64_t)nws);
    free(ws);
}

static void test_conv_threads_vs_ref(void)
{
    int saved = rt_get_threads();
    int64_t grain = rt_par_set_grain(0);
    for (size_t s = 0; s < sizeof conv_specs / sizeof conv_specs[0]; s++) {
        const conv_spec *c = &conv_specs[s];
        rt_conv2d_geom g = {c->N, c->Ci, c->H, c->W, c->Co, c->KH, c->KW, c->sh, c->sw,
                            c->ph, c->pw, c->dh, c->dw, c->groups, 0, 0};
        CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_OK);
        CHECK(rt_conv2d_parts(&g) == (c->N < 8 ? c->N : 8));
        int64_t nx = g.N * g.C_in * g.H * g.W, nw = g.C_out * (g.C_in / g.groups) * g.KH * g.KW;
        int64_t ny = g.N * g.C_out * g.H_out * g.W_out, n[3] = {nx, nw, g.C_out};
        float *x = rnd(nx), *w = rnd(nw), *b = rnd(g.C_out), *dy = rnd(ny);
        float *g0[3] = {rnd(nx), rnd(nw), rnd(g.C_out)};
        conv_out one, two;
        int ok1, ok2;
        conv_run(&g, 1, x, w, b, dy, g0, n, &one, &ok1);
        conv_run(&g, 2, x, w, b, dy, g0, n, &two, &ok2);
        CHECK(ok1 && ok2);
        const int64_t len[7] = {ny, nx, nw, g.C_out, nx, nw, g.C_out};
        for (int k = 0; k < 7; k++) {
            if (!same(one.v[k], two.v[k], len[k])) fprintf(stderr, "  conv shape %zu output %d differs\n", s, k);
            CHECK(same(one.v[k], two.v[k], len[k])); /* the thread count changes no bit */
            CHECK(tail_ok(two.v[k], len[k]));
        }
        /* against the twin */
        float *yr = rnd(ny), *r[3];
        for (int k = 0; k < 3; k++) r[k] = dup(g0[k], n[k]);
        rt_conv2d_forward_ref(&g, x, w, b, yr);
        rt_conv2d_backward_ref(&g, x, w, dy, r[0], r[1], r[2]);
        double e[4] = {max_err(two.v[0], yr, ny), max_err(two.v[1], r[0], nx), max_err(two.v[2], r[1], nw),
                       max_err(two.v[3], r[2], g.C_out)};
        if (!(e[0] <= 1e-5 && e[1] <= 1e-5 && e[2] <= 1e-5 && e[3] <= 1e-5))
            fprintf(stderr, "  conv shape %zu: errors y %g dx %g dw %g db %g\n", s, e[0], e[1], e[2], e[3]);
        for (int k = 0; k < 4; k++) CHECK(e[k] <= 1e-5);
        /* each gradient alone equals its share of the full backward */
        CHECK(max_err(two.v[4], r[0], nx) <= 1e-5);
        CHECK(max_err(two.v[5], r[1], nw) <= 1e-5);
        CHECK(max_err(two.v[6], r[2], g.C_out) <= 1e-5);
        for (int k = 0; k < 7; k++) free(one.v[k]), free(two.v[k]);
        for (int k = 0; k < 3; k++) free(g0[k]), free(r[k]);
        free(x), free(w), free(b), free(dy), free(yr);
    }
    rt_par_set_grain(grain);
    rt_set_threads(saved);
}

/* The weight and bias gradients are the serial code's sums to the bit:
 * zeroed [C_out, K + 1], then per sample in order a beta-1 rt_gemm of dy
 * with [col; ones] (col built here from the definition), then added to
 * dweight and dbias.  Partial sums per part, added at the end, pass the
 * twin's tolerance but not this (and moved a trained network's numbers). */
static void test_conv_weight_grad_in_sample_order(void)
{
    int saved = rt_get_threads();
    int64_t grain = rt_par_set_grain(0);
    const conv_spec specs[] = {
        {16, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* the CNN's second layer */
        {9, 4, 9, 11, 6, 3, 3, 2, 2, 1, 1, 1, 1, 2},     /* stride 2, groups 2 */
    };
    for (size_t s = 0; s < sizeof specs / sizeof specs[0]; s++) {
        const conv_spec *c = &specs[s];
        rt_conv2d_geom g = {c->N, c->Ci, c->H, c->W, c->Co, c->KH, c->KW, c->sh, c->sw,
                            c->ph, c->pw, c->dh, c->dw, c->groups, 0, 0};
        CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_OK);
        const int64_t G = g.groups, Ci = g.C_in / G, Co = g.C_out / G, K = Ci * g.KH * g.KW;
        const int64_t P = g.H_out * g.W_out, nx = g.N * g.C_in * g.H * g.W, nw = g.C_out * K;
        const int64_t ny = g.N * g.C_out * P;
        float *x = rnd(nx), *w = rnd(nw), *dy = rnd(ny), *dw0 = rnd(nw), *db0 = rnd(g.C_out);
        float *acc = calloc((size_t)(g.C_out * (K + 1)), sizeof(float));
        float *col = malloc(sizeof(float) * (size_t)((K + 1) * P));
        for (int64_t n = 0; n < g.N; n++)
            for (int64_t gi = 0; gi < G; gi++) {
                for (int64_t ci = 0; ci < Ci; ci++)
                    for (int64_t kh = 0; kh < g.KH; kh++)
                        for (int64_t kw = 0; kw < g.KW; kw++)
                            for (int64_t oh = 0; oh < g.H_out; oh++)
                                for (int64_t ow = 0; ow < g.W_out; ow++) {
                                    int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dil_h;
                                    int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dil_w;
                                    int in = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
                                    col[((ci * g.KH + kh) * g.KW + kw) * P + oh * g.W_out + ow] =
                                        in ? x[((n * g.C_in + gi * Ci + ci) * g.H + ih) * g.W + iw] : 0.0f;
                                }
                for (int64_t q = 0; q < P; q++) col[K * P + q] = 1.0f;
                rt_gemm(0, 1, Co, K + 1, P, 1.0f, dy + (n * g.C_out + gi * Co) * P, P, col, P, 1.0f,
                        acc + gi * Co * (K + 1), K + 1);
            }
        float *dwr = dup(dw0, nw), *dbr = dup(db0, g.C_out);
        for (int64_t co = 0; co < g.C_out; co++) {
            for (int64_t k = 0; k < K; k++) dwr[co * K + k] += acc[co * (K + 1) + k];
            dbr[co] += acc[co * (K + 1) + K];
        }
        for (int th = 1; th <= 2; th++) {
            rt_set_threads(th);
            float *ws = rnd((int64_t)rt_conv2d_workspace(&g)), *dw = dup(dw0, nw), *db = dup(db0, g.C_out);
            rt_conv2d_backward(&g, x, w, dy, NULL, dw, db, ws);
            CHECK(same(dw, dwr, nw) && same(db, dbr, g.C_out));
            free(ws), free(dw), free(db);
        }
        free(x), free(w), free(dy), free(dw0), free(db0), free(acc), free(col), free(dwr), free(dbr);
    }
    rt_par_set_grain(grain);
    rt_set_threads(saved);
}

/* ----------------------------------------------------------- batch norm */

static const int64_t bn_shapes[][3] = {{5, 7, 9}, {3, 70, 1}, {2, 67, 3}, {1, 3, 10}, {4, 1, 5}};

/* train y, saved stats, running stats, train dx dg db, eval y, eval dx dg db */
typedef struct bn_out {
    float *v[11];
} bn_out;

static void bn_run(int threads, int64_t N, int64_t C, int64_t HW, const float *x, const float *dy,
                   const float *ga, const float *be, const float *const g0[3], bn_out *o)
{
    rt_set_threads(threads);
    int64_t n = N * C * HW;
    o->v[0] = rnd(n), o->v[1] = rnd(C), o->v[2] = rnd(C);
    o->v[3] = rnd(C), o->v[4] = rnd(C);
    for (int64_t c = 0; c < C; c++) o->v[3][c] = 0.1f * (float)c, o->v[4][c] = 1.0f + 0.01f * (float)c;
    int64_t nbt = 0;
    CHECK(rt_batchnorm_train_forward(ctx, x, N, C, HW, ga, be, 1e-5f, 0.1f, o->v[3], o->v[4], &nbt, o->v[0],
                                     o->v[1], o->v[2]) == RT_STATUS_OK);
    CHECK(nbt == 1);
    o->v[5] = dup(g0[0], n), o->v[6] = dup(g0[1], C), o->v[7] = dup(g0[2], C);
    rt_batchnorm_train_backward(x, dy, N, C, HW, ga, o->v[1], o->v[2], o->v[5], o->v[6], o->v[7]);
    o->v[8] = rnd(n);
    rt_batchnorm_eval_forward(x, N, C, HW, ga, be, 1e-5f, o->v[3], o->v[4], o->v[8]);
    o->v[9] = dup(g0[0], n), o->v[10] = dup(g0[1], C);
    float *db = dup(g0[2], C);
    rt_batchnorm_eval_backward(x, dy, N, C, HW, ga, 1e-5f, o->v[3], o->v[4], o->v[9], o->v[10], db);
    free(db);
}

static void test_bn_threads_vs_ref(void)
{
    int saved = rt_get_threads();
    int64_t grain = rt_par_set_grain(0);
    for (size_t s = 0; s < sizeof bn_shapes / sizeof bn_shapes[0]; s++) {
        int64_t N = bn_shapes[s][0], C = bn_shapes[s][1], HW = bn_shapes[s][2], n = N * C * HW;
        float *x = rnd(n), *dy = rnd(n), *ga = rnd(C), *be = rnd(C);
        const float *g0[3] = {rnd(n), rnd(C), rnd(C)};
        bn_out one, two;
        bn_run(1, N, C, HW, x, dy, ga, be, g0, &one);
        bn_run(2, N, C, HW, x, dy, ga, be, g0, &two);
        const int64_t len[11] = {n, C, C, C, C, n, C, C, n, n, C};
        for (int k = 0; k < 11; k++) CHECK(same(one.v[k], two.v[k], len[k]) && tail_ok(two.v[k], len[k]));
        /* the twin: train forward and backward */
        float *yr = rnd(n), *sm = rnd(C), *si = rnd(C), *rm = rnd(C), *rv = rnd(C);
        for (int64_t c = 0; c < C; c++) rm[c] = 0.1f * (float)c, rv[c] = 1.0f + 0.01f * (float)c;
        int64_t nbt = 0;
        rt_batchnorm_train_forward_ref(x, N, C, HW, ga, be, 1e-5f, 0.1f, rm, rv, &nbt, yr, sm, si);
        CHECK(max_err(two.v[0], yr, n) <= 1e-4);
        CHECK(max_err(two.v[3], rm, C) <= 1e-6 && max_err(two.v[4], rv, C) <= 1e-6);
        float *dx = dup(g0[0], n), *dg = dup(g0[1], C), *db = dup(g0[2], C);
        rt_batchnorm_train_backward_ref(x, dy, N, C, HW, ga, two.v[1], two.v[2], dx, dg, db);
        CHECK(max_err(two.v[5], dx, n) <= 1e-5 && max_err(two.v[6], dg, C) <= 1e-5 &&
              max_err(two.v[7], db, C) <= 1e-5);
        /* _set overwrites dx (garbage before), equal to accumulating onto zeros */
        for (int th = 1; th <= 2; th++) {
            rt_set_threads(th);
            float *zx = rnd(n), *sx = rnd(n), *g1 = dup(g0[1], C), *b1 = dup(g0[2], C);
            float *g2 = dup(g0[1], C), *b2 = dup(g0[2], C);
            memset(zx, 0, sizeof(float) * (size_t)n);
            rt_batchnorm_train_backward(x, dy, N, C, HW, ga, two.v[1], two.v[2], zx, g1, b1);
            rt_batchnorm_train_backward_set(x, dy, N, C, HW, ga, two.v[1], two.v[2], sx, g2, b2);
            int bad = 0;
            for (int64_t i = 0; i < n; i++) bad += sx[i] != zx[i];
            CHECK(bad == 0 && tail_ok(sx, n) && same(g1, g2, C) && same(b1, b2, C));
            free(zx), free(sx), free(g1), free(b1), free(g2), free(b2);
        }
        for (int k = 0; k < 11; k++) free(one.v[k]), free(two.v[k]);
        for (int k = 0; k < 3; k++) free((float *)g0[k]);
        free(x), free(dy), free(ga), free(be), free(yr), free(sm), free(si), free(rm), free(rv);
        free(dx), free(dg), free(db);
    }
    rt_par_set_grain(grain);
    rt_set_threads(saved);
}

/* -------------------------------------------------------------- pooling */

typedef struct pool_spec {
    int64_t N, C, H, W, K, S, P;
    int kind; /* 0 max, 1 avg counting padding, 2 avg not, 3 global */
} pool_spec;

static const pool_spec pool_specs[] = {
    {3, 5, 7, 9, 2, 2, 0, 0}, /* the 2x2 fast path, odd sizes (floor) */
    {2, 3, 9, 8, 3, 2, 1, 0}, /* general max, padding */
    {3, 2, 7, 6, 3, 2, 1, 1}, {3, 2, 7, 6, 3, 2, 1, 2}, /* average, both divisors */
    {5, 3, 13, 1, 0, 0, 0, 3},                         /* global average over 13 */
    {1, 1, 5, 5, 2, 2, 0, 0},                           /* one plane */
};

static void pool_run(int threads, const rt_pool2d_geom *g, int kind, const float *x, const float *dy,
                     const float *dx0, float **y, float **dx, int32_t **am)
{
    rt_set_threads(threads);
    int64_t nin = g->N * g->C * g->H * g->W, nout = g->N * g->C * g->H_out * g->W_out;
    *y = rnd(nout);
    *dx = dup(dx0, nin);
    *am = NULL;
    if (kind == 0) {
        *am = malloc(sizeof(int32_t) * (size_t)nout);
        rt_maxpool2d_forward(g, x, *y, *am);
        rt_maxpool2d_backward(g, dy, *am, *dx);
    } else if (kind < 3) {
        rt_avgpool2d_forward(g, kind == 1, x, *y);
        rt_avgpool2d_backward(g, kind == 1, dy, *dx);
    } else {
        rt_global_avgpool_forward(x, g->N, g->C, g->H * g->W, *y);
        rt_global_avgpool_backward(dy, g->N, g->C, g->H * g->W, *dx);
    }
}

static void test_pool_threads_vs_ref(void)
{
    int saved = rt_get_threads();
    int64_t grain = rt_par_set_grain(0);
    for (size_t s = 0; s < sizeof pool_specs / sizeof pool_specs[0]; s++) {
        const pool_spec *p = &pool_specs[s];
        rt_pool2d_geom g = {p->N, p->C, p->H, p->W, p->K, p->K, p->S, p->S, p->P, p->P, 1, 1};
        if (p->kind < 3) CHECK(rt_pool2d_geom_check(ctx, &g, "pool") == RT_STATUS_OK);
        int64_t nin = g.N * g.C * g.H * g.W, nout = g.N * g.C * g.H_out * g.W_out;
        float *x = rnd(nin), *dy = rnd(nout), *dx0 = rnd(nin), *y1, *y2, *dx1, *dx2;
        int32_t *a1, *a2;
        pool_run(1, &g, p->kind, x, dy, dx0, &y1, &dx1, &a1);
        pool_run(2, &g, p->kind, x, dy, dx0, &y2, &dx2, &a2);
        CHECK(same(y1, y2, nout) && same(dx1, dx2, nin) && tail_ok(y2, nout) && tail_ok(dx2, nin));
        if (a1) CHECK(!memcmp(a1, a2, sizeof(int32_t) * (size_t)nout));
        if (a1)
            for (int th = 1; th <= 2; th++) { /* _set: dx overwritten, as routing onto zeros */
                rt_set_threads(th);
                float *zx = rnd(nin), *sx = rnd(nin);
                memset(zx, 0, sizeof(float) * (size_t)nin);
                rt_maxpool2d_backward(&g, dy, a1, zx);
                rt_maxpool2d_backward_set(&g, dy, a1, sx);
                CHECK(same(zx, sx, nin) && tail_ok(sx, nin));
                free(zx), free(sx);
            }
        float *yr = rnd(nout), *dxr = dup(dx0, nin);
        if (p->kind == 0) {
            rt_maxpool2d_forward_ref(&g, x, yr, NULL);
            rt_maxpool2d_backward_ref(&g, x, dy, dxr);
        } else if (p->kind < 3) {
            rt_avgpool2d_forward_ref(&g, p->kind == 1, x, yr);
            rt_avgpool2d_backward_ref(&g, p->kind == 1, dy, dxr);
        } else {
            rt_global_avgpool_forward_ref(x, g.N, g.C, g.H * g.W, yr);
            rt_global_avgpool_backward_ref(dy, g.N, g.C, g.H * g.W, dxr);
        }
        CHECK(max_err(y2, yr, nout) <= 1e-6);
        CHECK(max_err(dx2, dxr, nin) <= 1e-6);
        free(x), free(dy), free(dx0), free(y1), free(y2), free(dx1), free(dx2), free(a1), free(a2);
        free(yr), free(dxr);
    }
    rt_par_set_grain(grain);
    rt_set_threads(saved);
}

/* ---------------------------------------------------- elementwise passes */

/* rt_fill and the relu pair against their loops, on counts around the
 * vector width and the task split, with 1 and 2 threads (grain 0). */
static void test_pointwise(void)
{
    int saved = rt_get_threads();
    int64_t grain = rt_par_set_grain(0);
    const int64_t ns[] = {1, 7, 8, 9, 31, 1000, 1001};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
        for (int th = 1; th <= 2; th++) {
            rt_set_threads(th);
            int64_t n = ns[k];
            float *x = rnd(n), *y = rnd(n), *d = rnd(n), *d0 = NULL;
            x[0] = -0.0f;
            if (n > 2) x[n / 2] = NAN, x[n - 1] = 0.0f;
            d0 = dup(d, n);
            rt_relu_forward(x, y, n);
            int bad = 0;
            for (int64_t i = 0; i < n; i++) {
                float want = x[i] > 0 ? x[i] : 0.0f;
                bad += memcmp(&y[i], &want, sizeof want) != 0;
            }
            CHECK(bad == 0 && tail_ok(y, n));
            rt_relu_backward(d, y, n);
            bad = 0;
            for (int64_t i = 0; i < n; i++) bad += d[i] != (y[i] > 0 ? d0[i] : 0.0f);
            CHECK(bad == 0 && tail_ok(d, n));
            rt_fill(d, n, 0.0f);
            rt_fill(y, n, -2.5f);
            bad = 0;
            for (int64_t i = 0; i < n; i++) bad += d[i] != 0.0f || signbit(d[i]) || y[i] != -2.5f;
            CHECK(bad == 0 && tail_ok(d, n) && tail_ok(y, n));
            free(x), free(y), free(d), free(d0);
        }
    rt_par_set_grain(grain);
    rt_set_threads(saved);
}

/* -------------------------------------------------------- tensor_ensure */

static int zeroed(const rt_tensor *t)
{
    for (int64_t i = 0; i < rt_numel(t); i++)
        if (rt_f32(t)[i] != 0.0f) return 0;
    return 1;
}

static void test_ensure_reuses_storage(void)
{
    rt_tensor *t = NULL;
    int64_t big[2] = {8, 10}, small[2] = {3, 10}, huge[2] = {8, 11}, tiny[1] = {20};
    CHECK(rt_tensor_ensure(ctx, &t, RT_DTYPE_F32, 2, big) == RT_STATUS_OK);
    rt_tensor *t0 = t;
    void *d0 = t->data;
    rt_tensor_fill(t, 5.0);
    /* same shape: kept, contents too */
    CHECK(rt_tensor_ensure(ctx, &t, RT_DTYPE_F32, 2, big) == RT_STATUS_OK);
    CHECK(t == t0 && rt_f32(t)[79] == 5.0f);
    /* smaller: the same tensor and storage, reshaped, contiguous, zeroed */
    CHECK(rt_tensor_ensure(ctx, &t, RT_DTYPE_F32, 2, small) == RT_STATUS_OK);
    CHECK(t == t0 && t->data == d0);
    CHECK(t->ndim == 2 && t->shape[0] == 3 && t->shape[1] == 10 && t->stride[0] == 10 && t->stride[1] == 1);
    CHECK(zeroed(t));
    /* back to the larger shape: still the same storage, zeroed */
    rt_tensor_fill(t, 7.0);
    CHECK(rt_tensor_ensure(ctx, &t, RT_DTYPE_F32, 2, big) == RT_STATUS_OK);
    CHECK(t == t0 && t->data == d0 && zeroed(t));
    /* another dtype of no more bytes, fewer dims */
    CHECK(rt_tensor_ensure(ctx, &t, RT_DTYPE_I32, 1, tiny) == RT_STATUS_OK);
    CHECK(t == t0 && t->dtype == RT_DTYPE_I32 && t->ndim == 1 && t->shape[0] == 20 && t->shape[1] == 0);
    /* larger than the storage: a new tensor */
    CHECK(rt_tensor_ensure(ctx, &t, RT_DTYPE_F32, 2, huge) == RT_STATUS_OK);
    CHECK(t->shape[0] == 8 && t->shape[1] == 11 && zeroed(t));
    /* somebody else holds it: never changed under them */
    rt_tensor *held = t;
    rt_tensor_retain(held);
    CHECK(rt_tensor_ensure(ctx, &t, RT_DTYPE_F32, 2, small) == RT_STATUS_OK);
    CHECK(t != held && held->shape[0] == 8 && held->shape[1] == 11);
    rt_tensor_release(held);
    /* a view shares its storage: not reused either */
    int64_t s40[1] = {40};
    rt_tensor *base = rt_tensor_new(ctx, RT_DTYPE_F32, 1, s40);
    rt_tensor *view = rt_tensor_narrow(ctx, base, 0, 0, 20);
    rt_tensor_fill(base, 3.0);
    int64_t s10[1] = {10};
    rt_tensor *v = view;
    CHECK(rt_tensor_ensure(ctx, &v, RT_DTYPE_F32, 1, s10) == RT_STATUS_OK);
    CHECK(v != view && rt_f32(base)[0] == 3.0f);
    /* more than 16 times the bytes needed: a fresh small one instead */
    int64_t s1000[1] = {1000}, s100[1] = {100};
    rt_tensor *w = rt_tensor_new(ctx, RT_DTYPE_F32, 1, s1000), *w0 = w;
    void *wd = w->data;
    CHECK(rt_tensor_ensure(ctx, &w, RT_DTYPE_F32, 1, s10) == RT_STATUS_OK);
    CHECK(w->data != wd);
    rt_tensor_release(w);
    w = rt_tensor_new(ctx, RT_DTYPE_F32, 1, s1000), w0 = w, wd = w->data;
    CHECK(rt_tensor_ensure(ctx, &w, RT_DTYPE_F32, 1, s100) == RT_STATUS_OK);
    CHECK(w == w0 && w->data == wd);
    rt_tensor_release(w);
    rt_tensor_release(v);
    rt_tensor_release(base);
    rt_tensor_release(t);
}

/* ------------------------------------------------------------ cnn relu */

static void test_cnn_relu(void)
{
    rt_instance *s = NULL;
    CHECK(rt_instance_create(reg, ctx, RT_KIND_STUDENT, "cnn",
                             "{\"input\":[1,5,7],\"layers\":\"relu,flatten,fc3\"}", &s) == RT_STATUS_OK);
    if (!s) return;
    CHECK(rt_instance_record(s, ctx, "features.0", 1) == RT_STATUS_OK);
    int64_t N = 3, D = 35, xs[4] = {N, 1, 5, 7}, gs[2] = {N, 3};
    rt_tensor *x = rt_tensor_new(ctx, RT_DTYPE_F32, 4, xs), *g = rt_tensor_new(ctx, RT_DTYPE_F32, 2, gs);
    float *xv = rt_f32(x);
    for (int64_t i = 0; i < N * D; i++) xv[i] = frand();
    xv[0] = 0.0f, xv[1] = -0.0f, xv[D + 33] = 0.0f; /* zeros: kept at 0, gradient 0 */
    xv[2 * D + 34] = NAN;                              /* NaN -> 0, in the tail after the blocks */
    for (int64_t i = 0; i < N * 3; i++) rt_f32(g)[i] = frand();
    rt_tensor *out = NULL, *gin = NULL;
    CHECK(rt_student_forward(s, ctx, x, 1, &out) == RT_STATUS_OK);
    rt_tensor *r = rt_instance_feature(s, "features.0");
    CHECK(r && rt_numel(r) == N * D);
    int bad = 0;
    for (int64_t i = 0; r && i < N * D; i++) {
        float want = xv[i] > 0 ? xv[i] : 0.0f;
        bad += memcmp(&rt_f32(r)[i], &want, sizeof want) != 0; /* +0, never -0 */
    }
    CHECK(bad == 0);
    CHECK(rt_student_backward(s, ctx, g, NULL, 0, &gin) == RT_STATUS_OK);
    int n = 0;
    rt_param *p = rt_instance_params_all(s, ctx, &n);
    const float *W = NULL;
    for (int k = 0; p && k < n; k++)
        if (!strcmp(p[k].name, "classifier.0.weight")) W = rt_f32(p[k].value);
    CHECK(W != NULL && gin != NULL);
    double worst = 0;
    for (int64_t i = 0; W && gin && i < N; i++)
        for (int64_t k = 0; k < D; k++) {
            double d = 0;
            for (int j = 0; j < 3; j++) d += (double)rt_f32(g)[i * 3 + j] * W[j * D + k];
            double want = xv[i * D + k] > 0 ? d : 0.0;
            worst = fmax(worst, fabs(rt_f32(gin)[i * D + k] - want));
            if (!(xv[i * D + k] > 0)) worst = fmax(worst, rt_f32(gin)[i * D + k] != 0.0f);
        }
    CHECK(worst <= 1e-6);
    free(p);
    rt_tensor_release(x);
    rt_tensor_release(g);
    rt_instance_release(s);
}

int main(void)
{
    ctx = rt_ctx_new();
    reg = rt_registry_new();
    char dir[600];
    if (!ctx || !reg || rt_registry_load_dir(reg, ctx, t_build_path(dir, sizeof dir, "lib/retort/plugins"), 0, NULL)) {
        fprintf(stderr, "setup: %s\n", ctx ? rt_ctx_message(ctx) : "no context");
        return 1;
    }
    RUN(test_pool_tasks);
    RUN(test_conv_threads_vs_ref);
    RUN(test_conv_weight_grad_in_sample_order);
    RUN(test_bn_threads_vs_ref);
    RUN(test_pool_threads_vs_ref);
    RUN(test_pointwise);
    RUN(test_ensure_reuses_storage);
    RUN(test_cnn_relu);
    rt_registry_free(reg);
    rt_ctx_free(ctx);
    return t_summary("test_parallel");
}
