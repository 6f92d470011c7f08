/*
 * test_conv.c -- the convolutional kernels of core/rt_conv.h: each fast
 * kernel against its _ref twin on many shapes, every backward against
 * finite differences of its forward, batch norm against values worked out
 * by hand with PyTorch's formulas, and the geometry checks' errors.
 *
 * Finite differences: L = sum r . y for a fixed random r, so dL/dy = r is
 * what the backward is given; a fourth-order central stencil in the
 * float32 forward (rounding noise ~1e-7 |L| / h, truncation ~h^4), with
 * the error measured as in core/host/gradcheck.c: |a - n| / max(|a| + |n|,
 * 0.1 max|a|, 1e-2).  Sampled entries, always the first and the last.
 * It is longer than 800 lines because the kernels share its helpers.
 */
#include "rt_conv.h"
#include "t.h"

#include <stdint.h>
#include <stdlib.h>

/* A local generator, so the data does not depend on the code under test. */
static uint64_t lcg = 0x9E3779B97F4A7C15ULL;
static double frand(double lo, double hi)
{
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (double)(lcg >> 11) * 0x1p-53;
}
static int64_t irand(int64_t n) { return (int64_t)frand(0, (double)n) % n; }
static void fill(float *x, int64_t n, double lo, double hi)
{
    for (int64_t i = 0; i < n; i++) x[i] = (float)frand(lo, hi);
}

#define SENT 4242.5f
#define TAIL 8

/* n floats plus TAIL sentinels after them. */
static float *falloc(int64_t n)
{
    float *p = malloc(sizeof(float) * (size_t)(n + TAIL));
    for (int64_t i = 0; i < n + TAIL; i++) p[i] = SENT;
    return p;
}
static int tail_ok(const float *p, int64_t n)
{
    for (int i = 0; i < TAIL; i++)
        if (p[n + i] != SENT) return 0;
    return 1;
}
static float *fdup(const float *p, int64_t n)
{
    float *q = falloc(n);
    memcpy(q, p, sizeof(float) * (size_t)n);
    return q;
}

/* Largest |a - b| / max(1, |b|) over n entries. */
static double max_err(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(1.0, fabs((double)b[i]));
        if (!(d <= m)) m = d; /* NaN sticks */
    }
    return m;
}

static double dot(const float *r, const float *y, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)r[i] * y[i];
    return s;
}

/* ----------------------------------------------------- finite differences */

typedef double (*loss_fn)(void *u);

/* Worst error of grad[0..n) against the difference quotient of f in p. */
static double fd_check(loss_fn f, void *u, float *p, int64_t n, const float *grad, float h,
                       const char *what)
{
    double scale = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)grad[i]));
    int samples = n < 24 ? (int)n : 24;
    for (int s = 0; s < samples; s++) {
        int64_t i = s == 0 ? 0 : s == 1 ? n - 1 : (n < 24 ? s : irand(n));
        float keep = p[i];
        double v[4];
        const float off[4] = {-2, -1, 1, 2};
        for (int k = 0; k < 4; k++) {
            p[i] = keep + off[k] * h;
            v[k] = f(u);
        }
        p[i] = keep;
        double num = (v[0] - 8 * v[1] + 8 * v[2] - v[3]) / (12.0 * h);
        double a = grad[i];
        /* The floor 1e-2: a quotient's rounding noise is ~1e-7 |L| / h ~ 1e-5
         * here, as large as a gradient whose terms cancel by chance (a
         * batch norm's only dgamma of 1e-4); the gradients under test are
         * O(0.1..10), and a wrong one is off by its own size. */
        double err = fabs(a - num) / fmax(fabs(a) + fabs(num), fmax(0.1 * scale, 1e-2));
        if (fabs(a - num) == 0) err = 0;
        if (err > worst) {
            worst = err;
            if (err > 1e-3)
                fprintf(stderr, "  %s[%lld]: backward %.7g, differences %.7g\n", what,
                        (long long)i, a, num);
        }
    }
    f(u); /* leave the forward's outputs as they were */
    return worst;
}

/* ================================================================ conv2d */

typedef struct conv_spec {
    int64_t N, Ci, H, W, Co, KH, KW, sh, sw, ph, pw, dh, dw, groups;
} conv_spec;

static const conv_spec conv_specs[] = {
    /* N Ci  H  W Co KH KW sh sw ph pw dh dw  g */
    {2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1},  /* same padding */
    {1, 1, 5, 5, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1},  /* batch 1, 1x1, pointwise path */
    {3, 4, 6, 5, 6, 1, 1, 1, 1, 0, 0, 1, 1, 2},  /* pointwise, groups 2 */
    {2, 4, 9, 8, 6, 3, 2, 2, 3, 1, 0, 1, 1, 2},  /* groups 2, strides 2x3 */
    {2, 5, 8, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1, 5},  /* depthwise */
    {1, 6, 11, 10, 12, 3, 3, 2, 2, 1, 1, 1, 1, 6}, /* depthwise x2 multiplier, stride 2 */
    {2, 2, 9, 11, 3, 3, 3, 1, 2, 2, 1, 2, 2, 1}, /* dilation 2 */
    {1, 3, 5, 5, 2, 5, 5, 1, 1, 0, 0, 1, 1, 1},  /* kernel = input: 1x1 output */
    {2, 2, 4, 6, 3, 2, 4, 3, 1, 2, 3, 1, 1, 1},  /* padding larger than needed */
    {1, 2, 13, 3, 2, 4, 1, 3, 1, 0, 0, 3, 1, 2}, /* tall, odd stride and dilation */
    {3, 1, 28, 28, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* the CNN's first layer, small */
    /* "same" width at stride 1: im2col/col2im's shifted-plane path */
    {2, 3, 8, 7, 4, 3, 3, 1, 1, 2, 2, 2, 2, 1},  /* dilation 2, pad 2 */
    {1, 2, 6, 5, 3, 2, 3, 1, 1, 0, 1, 1, 1, 1},  /* height shrinks, width kept */
    {1, 1, 3, 2, 2, 5, 5, 1, 1, 2, 2, 1, 1, 1},  /* taps entirely off the input */
    {2, 4, 5, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1, 2},  /* groups 2 */
    {2, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* the CNN's second layer, batch 2 */
};
#define NCONV (sizeof conv_specs / sizeof conv_specs[0])

static rt_conv2d_geom geom_of(const conv_spec *s)
{
    rt_conv2d_geom g = {s->N, s->Ci, s->H, s->W, s->Co, s->KH, s->KW, s->sh, s->sw,
                        s->ph, s->pw, s->dh, s->dw, s->groups, 0, 0};
    return g;
}

typedef struct conv_bufs {
    rt_conv2d_geom g;
    int64_t nx, nw, ny;
    float *x, *w, *b, *y, *r, *ws;
} conv_bufs;

static void conv_alloc(conv_bufs *c, const rt_conv2d_geom *g)
{
    c->g = *g;
    c->nx = g->N * g->C_in * g->H * g->W;
    c->nw = g->C_out * (g->C_in / g->groups) * g->KH * g->KW;
    c->ny = g->N * g->C_out * g->H_out * g->W_out;
    c->x = falloc(c->nx);
    c->w = falloc(c->nw);
    c->b = falloc(g->C_out);
    c->y = falloc(c->ny);
    c->r = falloc(c->ny);
    c->ws = falloc((int64_t)rt_conv2d_workspace(g));
    fill(c->x, c->nx, -1, 1);
    fill(c->w, c->nw, -1, 1);
    fill(c->b, g->C_out, -1, 1);
    fill(c->r, c->ny, -1, 1);
}

static void conv_free(conv_bufs *c)
{
    free(c->x);
    free(c->w);
    free(c->b);
    free(c->y);
    free(c->r);
    free(c->ws);
}

/* PyTorch's output size, written with floor() here. */
static int64_t torch_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d)
{
    return (int64_t)floor((double)(in + 2 * p - d * (k - 1) - 1) / (double)s) + 1;
}

static void test_conv_output_size(void)
{
    rt_ctx *ctx = rt_ctx_new();
    for (size_t i = 0; i < NCONV; i++) {
        const conv_spec *s = &conv_specs[i];
        rt_conv2d_geom g = geom_of(s);
        CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_OK);
        CHECK(g.H_out == torch_out(s->H, s->KH, s->sh, s->ph, s->dh));
        CHECK(g.W_out == torch_out(s->W, s->KW, s->sw, s->pw, s->dw));
    }
    /* Worked by hand: 28x28, 3x3, pad 1 -> 28; stride 2 -> 14; 5x5 -> 24. */
    rt_conv2d_geom g = {1, 1, 28, 28, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0, 0};
    CHECK(rt_conv2d_geom_check(ctx, &g) == 0 && g.H_out == 28 && g.W_out == 28);
    g.stride_h = g.stride_w = 2;
    CHECK(rt_conv2d_geom_check(ctx, &g) == 0 && g.H_out == 14 && g.W_out == 14);
    rt_conv2d_geom g5 = {1, 1, 28, 28, 1, 5, 5, 1, 1, 0, 0, 1, 1, 1, 0, 0};
    CHECK(rt_conv2d_geom_check(ctx, &g5) == 0 && g5.H_out == 24);
    g5.dil_h = 2; /* effective kernel 9: 28 - 9 + 1 = 20 */
    CHECK(rt_conv2d_geom_check(ctx, &g5) == 0 && g5.H_out == 20 && g5.W_out == 24);
    rt_ctx_free(ctx);
}

/* Fast vs twin, forward and backward, on every shape; with and without
 * bias; gradients accumulate onto nonzero starting values; NULL gradients
 * are skipped; nothing past an output or the workspace is written. */
static void test_conv_vs_ref(void)
{
    rt_ctx *ctx = rt_ctx_new();
    for (size_t i = 0; i < NCONV; i++) {
        rt_conv2d_geom g = geom_of(&conv_specs[i]);
        CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_OK);
        conv_bufs c;
        conv_alloc(&c, &g);
        int64_t K = g.C_in / g.groups * g.KH * g.KW;
        /* a col block per part and an accumulator; nothing when pointwise */
        int64_t parts = g.N < 8 ? g.N : 8;
        CHECK(rt_conv2d_parts(&g) == parts);
        CHECK(rt_conv2d_workspace(&g) ==
              ((g.KH == 1 && g.KW == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 &&
                g.pad_w == 0)
                   ? 0
                   : (size_t)(parts * (K + 1) * g.H_out * g.W_out + g.C_out * (K + 1))));
        float *yr = falloc(c.ny);
        for (int wb = 0; wb < 2; wb++) {
            rt_conv2d_forward(&g, c.x, c.w, wb ? c.b : NULL, c.y, c.ws);
            rt_conv2d_forward_ref(&g, c.x, c.w, wb ? c.b : NULL, yr);
            double e = max_err(c.y, yr, c.ny);
            if (!(e <= 1e-5))
                fprintf(stderr, "  conv shape %zu bias %d: forward error %g\n", i, wb, e);
            CHECK(e <= 1e-5);
            CHECK(tail_ok(c.y, c.ny));
            CHECK(tail_ok(c.ws, (int64_t)rt_conv2d_workspace(&g)));
        }
        float *dx = falloc(c.nx), *dw = falloc(c.nw), *db = falloc(g.C_out);
        fill(dx, c.nx, -1, 1);
        fill(dw, c.nw, -1, 1);
        fill(db, g.C_out, -1, 1);
        float *dxr = fdup(dx, c.nx), *dwr = fdup(dw, c.nw), *dbr = fdup(db, g.C_out);
        float *dx0 = fdup(dx, c.nx), *dw0 = fdup(dw, c.nw);
        rt_conv2d_backward(&g, c.x, c.w, c.r, dx, dw, db, c.ws);
        rt_conv2d_backward_ref(&g, c.x, c.w, c.r, dxr, dwr, dbr);
        double ex = max_err(dx, dxr, c.nx), ew = max_err(dw, dwr, c.nw),
               eb = max_err(db, dbr, g.C_out);
        if (!(ex <= 1e-5 && ew <= 1e-5 && eb <= 1e-5))
            fprintf(stderr, "  conv shape %zu: backward errors dx %g dw %g db %g\n", i, ex, ew,
                    eb);
        CHECK(ex <= 1e-5);
        CHECK(ew <= 1e-5);
        CHECK(eb <= 1e-5);
        CHECK(tail_ok(dx, c.nx) && tail_ok(dw, c.nw) && tail_ok(db, g.C_out));
        CHECK(tail_ok(c.ws, (int64_t)rt_conv2d_workspace(&g)));
        /* Only dx asked: dw untouched; only dw: dx untouched. */
        memcpy(dx, dx0, sizeof(float) * (size_t)c.nx);
        memcpy(dw, dw0, sizeof(float) * (size_t)c.nw);
        rt_conv2d_backward(&g, c.x, c.w, c.r, dx, NULL, NULL, c.ws);
        CHECK(!memcmp(dw, dw0, sizeof(float) * (size_t)c.nw));
        CHECK(max_err(dx, dxr, c.nx) <= 1e-5);
        memcpy(dx, dx0, sizeof(float) * (size_t)c.nx);
        rt_conv2d_backward(&g, c.x, c.w, c.r, NULL, dw, NULL, c.ws);
        CHECK(!memcmp(dx, dx0, sizeof(float) * (size_t)c.nx));
        CHECK(max_err(dw, dwr, c.nw) <= 1e-5);
        /* Only dbias: summed, not folded into the dweight GEMM. */
        float *db2 = falloc(g.C_out), *db2r = falloc(g.C_out);
        memset(db2, 0, sizeof(float) * (size_t)g.C_out);
        memset(db2r, 0, sizeof(float) * (size_t)g.C_out);
        memcpy(dx, dx0, sizeof(float) * (size_t)c.nx);
        rt_conv2d_backward(&g, c.x, c.w, c.r, NULL, NULL, db2, c.ws);
        rt_conv2d_backward_ref(&g, c.x, c.w, c.r, NULL, NULL, db2r);
        CHECK(max_err(db2, db2r, g.C_out) <= 1e-5);
        CHECK(!memcmp(dx, dx0, sizeof(float) * (size_t)c.nx));
        free(db2), free(db2r);
        free(dx), free(dw), free(db), free(dxr), free(dwr), free(dbr), free(dx0), free(dw0);
        free(yr);
        conv_free(&c);
    }
    rt_ctx_free(ctx);
}

/* A hand-worked case: 1 channel 3x3 input 1..9, 2x2 kernel of ones, pad 1,
 * stride 2 -> 2x2 output of corner sums: [1, 2+3, 4+7, 5+6+8+9]. */
static void test_conv_hand(void)
{
    rt_ctx *ctx = rt_ctx_new();
    rt_conv2d_geom g = {1, 1, 3, 3, 1, 2, 2, 2, 2, 1, 1, 1, 1, 1, 0, 0};
    CHECK(rt_conv2d_geom_check(ctx, &g) == 0 && g.H_out == 2 && g.W_out == 2);
    float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w[4] = {1, 1, 1, 1}, b = 0.5f, y[4], ws[32];
    CHECK(rt_conv2d_workspace(&g) == 25); /* (4 + 1) 4 + 1 (4 + 1) */
    rt_conv2d_forward(&g, x, w, &b, y, ws);
    CHECK(y[0] == 1.5f && y[1] == 5.5f && y[2] == 11.5f && y[3] == 28.5f);
    /* dy = 1: each input counted by the windows that cover it (all once
     * here, the windows tile the padded 4x4); dw = the sum of what each
     * tap sees: tap (0,0) sees 5 (only window 3 covers a real pixel there)... */
    float dy[4] = {1, 1, 1, 1}, dx[9] = {0}, dw[4] = {0}, db = 0;
    rt_conv2d_backward(&g, x, w, dy, dx, dw, &db, ws);
    for (int i = 0; i < 9; i++) CHECK(dx[i] == 1.0f);
    /* taps: (0,0) sees x at (2i-1, 2j-1): only (1,1)=5; (0,1): (1,0)=4, (1,2)=6;
     * (1,0): (0,1)=2, (2,1)=8; (1,1): (0,0)+(0,2)+(2,0)+(2,2) = 1+3+7+9. */
    CHECK(dw[0] == 5 && dw[1] == 10 && dw[2] == 10 && dw[3] == 20);
    CHECK(db == 4);
    rt_ctx_free(ctx);
}

static double conv_loss(void *u)
{
    conv_bufs *c = u;
    rt_conv2d_forward(&c->g, c->x, c->w, c->b, c->y, c->ws);
    return dot(c->r, c->y, c->ny);
}

static void test_conv_gradcheck(void)
{
    rt_ctx *ctx = rt_ctx_new();
    const size_t pick[] = {0, 2, 3, 4, 5, 6, 9, 11, 12, 13, 14};
    for (size_t k = 0; k < sizeof pick / sizeof pick[0]; k++) {
        rt_conv2d_geom g = geom_of(&conv_specs[pick[k]]);
        CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_OK);
        conv_bufs c;
        conv_alloc(&c, &g);
        float *dx = falloc(c.nx), *dw = falloc(c.nw), *db = falloc(g.C_out);
        memset(dx, 0, sizeof(float) * (size_t)c.nx);
        memset(dw, 0, sizeof(float) * (size_t)c.nw);
        memset(db, 0, sizeof(float) * (size_t)g.C_out);
        conv_loss(&c);
        rt_conv2d_backward(&g, c.x, c.w, c.r, dx, dw, db, c.ws);
        CHECK(fd_check(conv_loss, &c, c.x, c.nx, dx, 1e-2f, "conv dx") <= 1e-3);
        CHECK(fd_check(conv_loss, &c, c.w, c.nw, dw, 1e-2f, "conv dw") <= 1e-3);
        CHECK(fd_check(conv_loss, &c, c.b, g.C_out, db, 1e-2f, "conv db") <= 1e-3);
        free(dx), free(dw), free(db);
        conv_free(&c);
    }
    rt_ctx_free(ctx);
}

static void test_conv_geom_errors(void)
{
    rt_ctx *ctx = rt_ctx_new();
    rt_conv2d_geom g = {2, 3, 4, 4, 4, 5, 5, 1, 1, 0, 0, 1, 1, 1, 0, 0};
    CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "conv2d: input 4x4 with kernel 5x5");
    CHECK_CONTAINS(rt_ctx_message(ctx), "gives output 0x0");
    g.pad_h = g.pad_w = 1; /* 4 + 2 - 5 + 1 = 2: fine now */
    CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_OK && g.H_out == 2);
    g.dil_h = 2; /* effective 9 > 6 */
    CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "dilation 2x1");
    g.dil_h = 1;
    g.groups = 2; /* 3 in-channels */
    CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "in_channels 3 is not divisible by groups 2");
    g.C_in = 4;
    g.C_out = 3;
    CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "out_channels 3 is not divisible by groups 2");
    g.C_out = 4;
    CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_OK);
    g.stride_w = 0;
    CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "stride width is 0");
    g.stride_w = 1;
    g.pad_h = -1;
    CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "padding height is -1");
    g.pad_h = 1;
    g.groups = 0;
    CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "groups is 0");
    g.groups = 1;
    g.N = INT64_C(1) << 39;
    g.C_in = g.C_out = INT64_C(1) << 30;
    CHECK(rt_conv2d_geom_check(ctx, &g) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "overflow");
    /* N = 0 is an empty batch, not an error; the kernels do nothing. */
    rt_conv2d_geom e = {0, 1, 3, 3, 1, 3, 3, 1, 1, 0, 0, 1, 1, 1, 0, 0};
    CHECK(rt_conv2d_geom_check(ctx, &e) == RT_STATUS_OK && e.H_out == 1);
    rt_ctx_free(ctx);
}

/* =============================================================== pooling */

typedef struct pool_spec {
    int64_t N, C, H, W, KH, KW, sh, sw, ph, pw;
} pool_spec;

static const pool_spec pool_specs[] = {
    {2, 3, 8, 8, 2, 2, 2, 2, 0, 0},   /* the CNN's pool */
    {1, 1, 7, 7, 2, 2, 2, 2, 0, 0},   /* odd size: last row/column dropped */
    {2, 2, 7, 9, 3, 3, 2, 2, 1, 1},   /* padded, overlapping */
    {1, 2, 5, 6, 3, 2, 1, 1, 1, 1},   /* stride 1, asymmetric kernel */
    {3, 1, 9, 4, 4, 2, 3, 1, 2, 0},   /* pad = kernel / 2 */
    {1, 1, 3, 3, 3, 3, 3, 3, 0, 0},   /* one window */
    {2, 3, 6, 35, 2, 2, 2, 2, 0, 0},  /* 2x2 rows of 17: vector blocks and a tail */
};
#define NPOOL (sizeof pool_specs / sizeof pool_specs[0])

static rt_pool2d_geom pgeom_of(const pool_spec *s)
{
    rt_pool2d_geom g = {s->N, s->C, s->H, s->W, s->KH, s->KW, s->sh, s->sw, s->ph, s->pw, 0, 0};
    return g;
}

/* x: distinct values (a shuffled grid of 0.01 steps), so the max of a
 * window moves only for perturbations larger than 0.005. */
static void fill_distinct(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = (float)(0.01 * (double)(i - n / 2));
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = irand(i + 1);
        float t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}

static void test_pool_output_size(void)
{
    rt_ctx *ctx = rt_ctx_new();
    for (size_t i = 0; i < NPOOL; i++) {
        const pool_spec *s = &pool_specs[i];
        rt_pool2d_geom g = pgeom_of(s);
        CHECK(rt_pool2d_geom_check(ctx, &g, "max_pool2d") == RT_STATUS_OK);
        CHECK(g.H_out == torch_out(s->H, s->KH, s->sh, s->ph, 1));
        CHECK(g.W_out == torch_out(s->W, s->KW, s->sw, s->pw, 1));
    }
    rt_pool2d_geom g = {1, 1, 28, 28, 2, 2, 2, 2, 0, 0, 0, 0};
    CHECK(rt_pool2d_geom_check(ctx, &g, "max_pool2d") == 0 && g.H_out == 14);
    g.H = 7;
    CHECK(rt_pool2d_geom_check(ctx, &g, "max_pool2d") == 0 && g.H_out == 3 && g.W_out == 14);
    rt_ctx_free(ctx);
}

static void test_maxpool_vs_ref(void)
{
    rt_ctx *ctx = rt_ctx_new();
    for (size_t i = 0; i < NPOOL; i++) {
        rt_pool2d_geom g = pgeom_of(&pool_specs[i]);
        CHECK(rt_pool2d_geom_check(ctx, &g, "max_pool2d") == RT_STATUS_OK);
        int64_t nx = g.N * g.C * g.H * g.W, ny = g.N * g.C * g.H_out * g.W_out;
        float *x = falloc(nx), *y = falloc(ny), *yr = falloc(ny), *dy = falloc(ny);
        int32_t *a = malloc(sizeof(int32_t) * (size_t)ny), *ar = malloc(sizeof(int32_t) * (size_t)ny);
        /* a coarse grid: many ties, which must go to the first maximum */
        for (int64_t k = 0; k < nx; k++) x[k] = (float)irand(4);
        /* and some NaN, which win (the last one in a window) */
        for (int64_t k = 5; k < nx; k += 23) x[k] = NAN;
        if (nx > 40) x[nx - 1] = -INFINITY, x[1] = -INFINITY;
        fill(dy, ny, -1, 1);
        rt_maxpool2d_forward(&g, x, y, a);
        rt_maxpool2d_forward_ref(&g, x, yr, ar);
        CHECK(!memcmp(y, yr, sizeof(float) * (size_t)ny));
        CHECK(!memcmp(a, ar, sizeof(int32_t) * (size_t)ny));
        CHECK(tail_ok(y, ny));
        float *dx = falloc(nx), *dxr;
        fill(dx, nx, -1, 1);
        dxr = fdup(dx, nx);
        rt_maxpool2d_backward(&g, dy, a, dx);
        rt_maxpool2d_backward_ref(&g, x, dy, dxr);
        CHECK(max_err(dx, dxr, nx) <= 1e-6);
        CHECK(tail_ok(dx, nx));
        /* y without indices is the same y */
        rt_maxpool2d_forward(&g, x, yr, NULL);
        CHECK(!memcmp(y, yr, sizeof(float) * (size_t)ny));
        free(x), free(y), free(yr), free(dy), free(a), free(ar), free(dx), free(dxr);
    }
    rt_ctx_free(ctx);
}

/* Ties go to the first maximum (row-major within the window); padding is
 * never chosen even when every real value is negative; NaN wins. */
static void test_maxpool_hand(void)
{
    rt_ctx *ctx = rt_ctx_new();
    rt_pool2d_geom g = {1, 1, 2, 4, 2, 2, 2, 2, 0, 0, 0, 0};
    CHECK(rt_pool2d_geom_check(ctx, &g, "max_pool2d") == 0 && g.H_out == 1 && g.W_out == 2);
    float x[8] = {3, 1, 0, 7, 3, 3, 7, 2}, y[2], dx[8] = {0}, dy[2] = {10, 20};
    int32_t a[2];
    rt_maxpool2d_forward(&g, x, y, a);
    CHECK(y[0] == 3 && a[0] == 0); /* 3 at 0, 4, 5: the first */
    CHECK(y[1] == 7 && a[1] == 3); /* 7 at 3 and 6 */
    rt_maxpool2d_backward(&g, dy, a, dx);
    CHECK(dx[0] == 10 && dx[3] == 20 && dx[4] == 0 && dx[6] == 0);
    rt_pool2d_geom p = {1, 1, 2, 2, 3, 3, 1, 1, 1, 1, 0, 0};
    CHECK(rt_pool2d_geom_check(ctx, &p, "max_pool2d") == 0 && p.H_out == 2);
    float xn[4] = {-5, -3, -4, -6}, yn[4];
    int32_t an[4];
    rt_maxpool2d_forward(&p, xn, yn, an);
    for (int i = 0; i < 4; i++) CHECK(yn[i] == -3 && an[i] == 1);
    float xq[8] = {1, NAN, 0, 7, 3, 3, 7, 2};
    rt_maxpool2d_forward(&g, xq, y, a);
    CHECK(isnan(y[0]) && a[0] == 1);
    CHECK(y[1] == 7);
    rt_ctx_free(ctx);
}

typedef struct pool_bufs {
    rt_pool2d_geom g;
    int cip, avg;
    int64_t nx, ny;
    float *x, *y, *r;
    int32_t *a;
} pool_bufs;

static double pool_loss(void *u)
{
    pool_bufs *p = u;
    if (p->avg) rt_avgpool2d_forward(&p->g, p->cip, p->x, p->y);
    else rt_maxpool2d_forward(&p->g, p->x, p->y, p->a);
    return dot(p->r, p->y, p->ny);
}

static void test_pool_gradcheck(void)
{
    rt_ctx *ctx = rt_ctx_new();
    for (size_t i = 0; i < NPOOL; i++)
        for (int mode = 0; mode < 3; mode++) { /* max, avg cip 1, avg cip 0 */
            pool_bufs p = {pgeom_of(&pool_specs[i]), mode == 1, mode > 0, 0, 0, 0, 0, 0, 0};
            CHECK(rt_pool2d_geom_check(ctx, &p.g, "pool") == RT_STATUS_OK);
            p.nx = p.g.N * p.g.C * p.g.H * p.g.W;
            p.ny = p.g.N * p.g.C * p.g.H_out * p.g.W_out;
            p.x = falloc(p.nx), p.y = falloc(p.ny), p.r = falloc(p.ny);
            p.a = malloc(sizeof(int32_t) * (size_t)p.ny);
            fill_distinct(p.x, p.nx);
            fill(p.r, p.ny, -1, 1);
            float *dx = falloc(p.nx);
            memset(dx, 0, sizeof(float) * (size_t)p.nx);
            pool_loss(&p);
            if (p.avg) rt_avgpool2d_backward(&p.g, p.cip, p.r, dx);
            else rt_maxpool2d_backward(&p.g, p.r, p.a, dx);
            /* h 1e-3: the stencil's reach 2e-3 stays inside the 1e-2 gaps */
            CHECK(fd_check(pool_loss, &p, p.x, p.nx, dx, 1e-3f,
                           mode == 0 ? "maxpool dx" : "avgpool dx") <= 1e-3);
            free(p.x), free(p.y), free(p.r), free(p.a), free(dx);
        }
    rt_ctx_free(ctx);
}

static void test_avgpool_vs_ref(void)
{
    rt_ctx *ctx = rt_ctx_new();
    for (size_t i = 0; i < NPOOL; i++)
        for (int cip = 0; cip < 2; cip++) {
            rt_pool2d_geom g = pgeom_of(&pool_specs[i]);
            CHECK(rt_pool2d_geom_check(ctx, &g, "avg_pool2d") == RT_STATUS_OK);
            int64_t nx = g.N * g.C * g.H * g.W, ny = g.N * g.C * g.H_out * g.W_out;
            float *x = falloc(nx), *y = falloc(ny), *yr = falloc(ny), *dy = falloc(ny);
            fill(x, nx, -2, 2);
            fill(dy, ny, -1, 1);
            rt_avgpool2d_forward(&g, cip, x, y);
            rt_avgpool2d_forward_ref(&g, cip, x, yr);
            CHECK(max_err(y, yr, ny) <= 1e-6);
            CHECK(tail_ok(y, ny));
            float *dx = falloc(nx), *dxr;
            fill(dx, nx, -1, 1);
            dxr = fdup(dx, nx);
            rt_avgpool2d_backward(&g, cip, dy, dx);
            rt_avgpool2d_backward_ref(&g, cip, dy, dxr);
            CHECK(max_err(dx, dxr, nx) <= 1e-6);
            CHECK(tail_ok(dx, nx));
            free(x), free(y), free(yr), free(dy), free(dx), free(dxr);
        }
    rt_ctx_free(ctx);
}

/* 3x3 input 1..9, kernel 2, stride 1, pad 1 -> 4x4.  Corner window holds
 * only x[0] = 1: count_include_pad divides by 4 (0.25), else by 1.  The
 * middle window (1,1) holds 1, 2, 4, 5 -> 3 either way.  Edge (0,1): 1, 2
 * -> 0.75 or 1.5. */
static void test_avgpool_hand(void)
{
    rt_ctx *ctx = rt_ctx_new();
    rt_pool2d_geom g = {1, 1, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0};
    CHECK(rt_pool2d_geom_check(ctx, &g, "avg_pool2d") == 0 && g.H_out == 4 && g.W_out == 4);
    float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, y[16];
    rt_avgpool2d_forward(&g, 1, x, y);
    CHECK_NEAR(y[0], 0.25, 1e-7);
    CHECK_NEAR(y[5], 3.0, 1e-7);
    CHECK_NEAR(y[1], 0.75, 1e-7);
    CHECK_NEAR(y[15], 9 / 4.0, 1e-7);
    rt_avgpool2d_forward(&g, 0, x, y);
    CHECK_NEAR(y[0], 1.0, 1e-7);
    CHECK_NEAR(y[5], 3.0, 1e-7);
    CHECK_NEAR(y[1], 1.5, 1e-7);
    CHECK_NEAR(y[15], 9.0, 1e-7);
    rt_ctx_free(ctx);
}

static void test_pool_geom_errors(void)
{
    rt_ctx *ctx = rt_ctx_new();
    rt_pool2d_geom g = {1, 1, 4, 4, 2, 2, 2, 2, 2, 0, 0, 0};
    CHECK(rt_pool2d_geom_check(ctx, &g, "max_pool2d") == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "max_pool2d: padding 2x0 is more than half the kernel 2x2");
    rt_pool2d_geom s = {1, 1, 3, 3, 5, 5, 1, 1, 0, 0, 0, 0};
    CHECK(rt_pool2d_geom_check(ctx, &s, "avg_pool2d") == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "avg_pool2d: input 3x3 with padding 0x0 is smaller");
    s.KH = s.KW = 3;
    s.stride_h = 0;
    CHECK(rt_pool2d_geom_check(ctx, &s, "avg_pool2d") == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "stride height is 0");
    s.stride_h = 1;
    s.H = s.W = 50000; /* a plane of 2.5e9 > 2^31: the int32 argmax */
    CHECK(rt_pool2d_geom_check(ctx, &s, "max_pool2d") == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "too large");
    rt_ctx_free(ctx);
}

/* ------------------------------------------------------ global avg pool */

typedef struct gap_bufs {
    int64_t N, C, HW;
    float *x, *y, *r;
} gap_bufs;

static double gap_loss(void *u)
{
    gap_bufs *p = u;
    rt_global_avgpool_forward(p->x, p->N, p->C, p->HW, p->y);
    return dot(p->r, p->y, p->N * p->C);
}

static void test_global_avgpool(void)
{
    const int64_t shapes[][3] = {{2, 3, 49}, {1, 1, 1}, {3, 5, 17}, {2, 4, 8}};
    for (size_t s = 0; s < 4; s++) {
        gap_bufs p = {shapes[s][0], shapes[s][1], shapes[s][2], 0, 0, 0};
        int64_t nx = p.N * p.C * p.HW, ny = p.N * p.C;
        p.x = falloc(nx), p.y = falloc(ny), p.r = falloc(ny);
        float *yr = falloc(ny), *dx = falloc(nx), *dxr;
        fill(p.x, nx, -2, 2);
        fill(p.r, ny, -1, 1);
        fill(dx, nx, -1, 1);
        dxr = fdup(dx, nx);
        rt_global_avgpool_forward(p.x, p.N, p.C, p.HW, p.y);
        rt_global_avgpool_forward_ref(p.x, p.N, p.C, p.HW, yr);
        CHECK(max_err(p.y, yr, ny) <= 1e-6);
        CHECK(tail_ok(p.y, ny));
        rt_global_avgpool_backward(p.r, p.N, p.C, p.HW, dx);
        rt_global_avgpool_backward_ref(p.r, p.N, p.C, p.HW, dxr);
        CHECK(max_err(dx, dxr, nx) <= 1e-6);
        memset(dx, 0, sizeof(float) * (size_t)nx);
        rt_global_avgpool_backward(p.r, p.N, p.C, p.HW, dx);
        CHECK(fd_check(gap_loss, &p, p.x, nx, dx, 1e-2f, "gap dx") <= 1e-3);
        free(p.x), free(p.y), free(p.r), free(yr), free(dx), free(dxr);
    }
    /* hand: plane {1, 2, 3, 6} -> 3 */
    float x[4] = {1, 2, 3, 6}, y;
    rt_global_avgpool_forward(x, 1, 1, 4, &y);
    CHECK(y == 3.0f);
}

/* ============================================================ batch norm */

typedef struct bn_bufs {
    int64_t N, C, HW;
    int train, affine;
    float eps;
    float *x, *y, *r, *gamma, *beta, *rm, *rv, *sm, *si;
} bn_bufs;

static void bn_alloc(bn_bufs *b, int64_t N, int64_t C, int64_t HW)
{
    b->N = N, b->C = C, b->HW = HW, b->eps = 1e-5f;
    int64_t n = N * C * HW;
    b->x = falloc(n), b->y = falloc(n), b->r = falloc(n);
    b->gamma = falloc(C), b->beta = falloc(C), b->rm = falloc(C), b->rv = falloc(C);
    b->sm = falloc(C), b->si = falloc(C);
    fill(b->x, n, -2, 3);
    fill(b->r, n, -1, 1);
    fill(b->gamma, C, 0.5, 1.5);
    fill(b->beta, C, -1, 1);
    fill(b->rm, C, -0.5, 0.5);
    fill(b->rv, C, 0.5, 2);
}

static void bn_free(bn_bufs *b)
{
    free(b->x), free(b->y), free(b->r), free(b->gamma), free(b->beta), free(b->rm);
    free(b->rv), free(b->sm), free(b->si);
}

static double bn_loss(void *u)
{
    bn_bufs *b = u;
    const float *ga = b->affine ? b->gamma : NULL, *be = b->affine ? b->beta : NULL;
    if (b->train) {
        rt_status st = rt_batchnorm_train_forward(NULL, b->x, b->N, b->C, b->HW, ga, be, b->eps,
                                                  0.1f, NULL, NULL, NULL, b->y, b->sm, b->si);
        if (st) return NAN;
    } else
        rt_batchnorm_eval_forward(b->x, b->N, b->C, b->HW, ga, be, b->eps, b->rm, b->rv, b->y);
    return dot(b->r, b->y, b->N * b->C * b->HW);
}

static const int64_t bn_shapes[][3] = {
    {4, 3, 25}, /* 2d */
    {1, 2, 9},  /* batch 1, 2d: still 9 values per channel */
    {6, 5, 1},  /* 1d [N, C] */
    {2, 3, 7},  /* 1d [N, C, L] */
    {2, 1, 1},  /* the least a train step takes: 2 values */
    {3, 70, 1}, /* 1d, more channels than one block of 64 */
    {2, 67, 3}, /* the same with planes */
};
#define NBN (sizeof bn_shapes / sizeof bn_shapes[0])

static void test_bn_vs_ref(void)
{
    rt_ctx *ctx = rt_ctx_new();
    for (size_t s = 0; s < NBN; s++)
        for (int affine = 0; affine < 2; affine++) {
            bn_bufs b;
            bn_alloc(&b, bn_shapes[s][0], bn_shapes[s][1], bn_shapes[s][2]);
            int64_t n = b.N * b.C * b.HW, C = b.C;
            const float *ga = affine ? b.gamma : NULL, *be = affine ? b.beta : NULL;
            float *rm2 = fdup(b.rm, C), *rv2 = fdup(b.rv, C), *yr = falloc(n);
            float *sm2 = falloc(C), *si2 = falloc(C);
            int64_t nbt = 7, nbt2 = 7;
            CHECK(rt_batchnorm_train_forward(ctx, b.x, b.N, C, b.HW, ga, be, b.eps, 0.1f, b.rm,
                                             b.rv, &nbt, b.y, b.sm, b.si) == RT_STATUS_OK);
            rt_batchnorm_train_forward_ref(b.x, b.N, C, b.HW, ga, be, b.eps, 0.1f, rm2, rv2,
                                           &nbt2, yr, sm2, si2);
            /* y = x (gamma invstd) + (beta - mean gamma invstd), PyTorch's
             * fused form: its rounding is relative to |x gamma invstd|,
             * which a channel of nearly equal values makes large. */
            double big = 1;
            for (int64_t c = 0; c < C; c++)
                big = fmax(big, 3.0 * b.si[c] * (affine ? fabs(b.gamma[c]) : 1.0));
            double ey = max_err(b.y, yr, n);
            if (!(ey <= 1e-6 * big))
                fprintf(stderr, "  bn shape %zu: y error %g, scale %g\n", s, ey, big);
            CHECK(ey <= 1e-6 * big);
            CHECK(max_err(b.rm, rm2, C) <= 1e-6);
            CHECK(max_err(b.rv, rv2, C) <= 1e-6);
            CHECK(max_err(b.sm, sm2, C) <= 1e-6);
            CHECK(max_err(b.si, si2, C) <= 1e-6);
            CHECK(nbt == 8 && nbt2 == 8);
            CHECK(tail_ok(b.y, n) && tail_ok(b.rm, C) && tail_ok(b.rv, C));
            /* in place */
            float *xi = fdup(b.x, n);
            CHECK(rt_batchnorm_train_forward(ctx, xi, b.N, C, b.HW, ga, be, b.eps, 0.1f, NULL,
                                             NULL, NULL, xi, sm2, si2) == RT_STATUS_OK);
            CHECK(max_err(xi, b.y, n) <= 1e-6);
            /* backward, train */
            float *dx = falloc(n), *dg = falloc(C), *db = falloc(C);
            fill(dx, n, -1, 1), fill(dg, C, -1, 1), fill(db, C, -1, 1);
            float *dxr = fdup(dx, n), *dgr = fdup(dg, C), *dbr = fdup(db, C);
            rt_batchnorm_train_backward(b.x, b.r, b.N, C, b.HW, ga, b.sm, b.si, dx, dg, db);
            rt_batchnorm_train_backward_ref(b.x, b.r, b.N, C, b.HW, ga, b.sm, b.si, dxr, dgr,
                                            dbr);
            CHECK(max_err(dx, dxr, n) <= 1e-5);
            CHECK(max_err(dg, dgr, C) <= 1e-5);
            CHECK(max_err(db, dbr, C) <= 1e-5);
            /* eval */
            rt_batchnorm_eval_forward(b.x, b.N, C, b.HW, ga, be, b.eps, b.rm, b.rv, b.y);
            rt_batchnorm_eval_forward_ref(b.x, b.N, C, b.HW, ga, be, b.eps, b.rm, b.rv, yr);
            CHECK(max_err(b.y, yr, n) <= 2e-6);
            rt_batchnorm_eval_backward(b.x, b.r, b.N, C, b.HW, ga, b.eps, b.rm, b.rv, dx, dg, db);
            rt_batchnorm_eval_backward_ref(b.x, b.r, b.N, C, b.HW, ga, b.eps, b.rm, b.rv, dxr, dgr,
                                           dbr);
            CHECK(max_err(dx, dxr, n) <= 1e-5);
            CHECK(max_err(dg, dgr, C) <= 1e-5);
            CHECK(max_err(db, dbr, C) <= 1e-5);
            CHECK(tail_ok(dx, n) && tail_ok(dg, C) && tail_ok(db, C));
            free(rm2), free(rv2), free(yr), free(sm2), free(si2), free(xi);
            free(dx), free(dg), free(db), free(dxr), free(dgr), free(dbr);
            bn_free(&b);
        }
    rt_ctx_free(ctx);
}

static void test_bn_gradcheck(void)
{
    for (size_t s = 0; s < NBN; s++)
        for (int train = 0; train < 2; train++)
            for (int affine = 0; affine < 2; affine++) {
                bn_bufs b;
                bn_alloc(&b, bn_shapes[s][0], bn_shapes[s][1], bn_shapes[s][2]);
                b.train = train, b.affine = affine;
                int64_t n = b.N * b.C * b.HW, C = b.C;
                float *dx = falloc(n), *dg = falloc(C), *db = falloc(C);
                memset(dx, 0, sizeof(float) * (size_t)n);
                memset(dg, 0, sizeof(float) * (size_t)C);
                memset(db, 0, sizeof(float) * (size_t)C);
                bn_loss(&b);
                const float *ga = affine ? b.gamma : NULL;
                if (train)
                    rt_batchnorm_train_backward(b.x, b.r, b.N, C, b.HW, ga, b.sm, b.si, dx, dg, db);
                else
                    rt_batchnorm_eval_backward(b.x, b.r, b.N, C, b.HW, ga, b.eps, b.rm, b.rv, dx,
                                               dg, db);
                /* With 2 values per channel the train output is +-1 whatever
                 * x is: dx is ~eps-small and drowns in rounding noise. */
                if (!train || b.N * b.HW > 2)
                    CHECK(fd_check(bn_loss, &b, b.x, n, dx, 1e-2f,
                                   train ? "bn train dx" : "bn eval dx") <= 2e-3);
                if (affine) {
                    CHECK(fd_check(bn_loss, &b, b.gamma, C, dg, 1e-2f, "bn dgamma") <= 1e-3);
                    CHECK(fd_check(bn_loss, &b, b.beta, C, db, 1e-2f, "bn dbeta") <= 1e-3);
                }
                free(dx), free(dg), free(db);
                bn_free(&b);
            }
}

/* Running statistics by hand, PyTorch's formulas: channel 0 holds 1, 2
 * (sample 0) and 3, 4 (sample 1): mean 2.5, biased variance 1.25,
 * unbiased 5/3.  Channel 1 holds 0, 0, 2, 2: mean 1, variance 1, unbiased
 * 4/3.  From running (0, 1) with momentum 0.1: mean 0.25, var 0.9 + 1/6;
 * a second identical step: mean 0.475, var 0.9 (0.9 + 1/6) + 1/6. */
static void test_bn_running_hand(void)
{
    rt_ctx *ctx = rt_ctx_new();
    float x[8] = {1, 2, 0, 0, 3, 4, 2, 2}; /* [N 2, C 2, HW 2] */
    float rm[2] = {0, 0}, rv[2] = {1, 1}, y[8], sm[2], si[2];
    int64_t nbt = 0;
    CHECK(rt_batchnorm_train_forward(ctx, x, 2, 2, 2, NULL, NULL, 1e-5f, 0.1f, rm, rv, &nbt, y,
                                     sm, si) == RT_STATUS_OK);
    CHECK(nbt == 1);
    CHECK_NEAR(rm[0], 0.25, 1e-7);
    CHECK_NEAR(rv[0], 0.9 + 0.1 * 5.0 / 3.0, 1e-7);
    CHECK_NEAR(rm[1], 0.1, 1e-7);
    CHECK_NEAR(rv[1], 0.9 + 0.1 * 4.0 / 3.0, 1e-7);
    CHECK_NEAR(sm[0], 2.5, 1e-7);
    CHECK_NEAR(si[0], 1 / sqrt(1.25 + 1e-5), 1e-6);
    /* y normalised with the biased variance: (1 - 2.5) / sqrt(1.25 + eps) */
    CHECK_NEAR(y[0], -1.5 / sqrt(1.25 + 1e-5), 1e-6);
    CHECK_NEAR(y[5], 1.5 / sqrt(1.25 + 1e-5), 1e-6);
    CHECK_NEAR(y[2], -1 / sqrt(1 + 1e-5), 1e-6);
    CHECK_NEAR(y[6], 1 / sqrt(1 + 1e-5), 1e-6);
    CHECK(rt_batchnorm_train_forward(ctx, x, 2, 2, 2, NULL, NULL, 1e-5f, 0.1f, rm, rv, &nbt, y,
                                     sm, si) == RT_STATUS_OK);
    CHECK(nbt == 2);
    CHECK_NEAR(rm[0], 0.475, 1e-7);
    CHECK_NEAR(rv[0], 0.9 * (0.9 + 1.0 / 6.0) + 1.0 / 6.0, 1e-6);
    /* momentum 1: the running values are the last batch's */
    CHECK(rt_batchnorm_train_forward(ctx, x, 2, 2, 2, NULL, NULL, 1e-5f, 1.0f, rm, rv, &nbt, y,
                                     sm, si) == RT_STATUS_OK);
    CHECK_NEAR(rm[0], 2.5, 1e-7);
    CHECK_NEAR(rv[0], 5.0 / 3.0, 1e-6);
    /* BatchNorm1d [N 4, C 1]: 1, 2, 3, 6: mean 3, var 3.5, unbiased 14/3 */
    float x1[4] = {1, 2, 3, 6}, m1 = 0, v1 = 1, y1[4], s1, i1;
    CHECK(rt_batchnorm_train_forward(ctx, x1, 4, 1, 1, NULL, NULL, 1e-5f, 0.1f, &m1, &v1, NULL,
                                     y1, &s1, &i1) == RT_STATUS_OK);
    CHECK_NEAR(m1, 0.3, 1e-7);
    CHECK_NEAR(v1, 0.9 + 0.1 * 14.0 / 3.0, 1e-6);
    CHECK_NEAR(y1[3], 3 / sqrt(3.5 + 1e-5), 1e-6);
    rt_ctx_free(ctx);
}

/* Eval mode uses the running statistics, not the batch's.  Channel 0:
 * running mean 1, var 4, gamma 2, beta 0.5: x = 3 -> (3 - 1) / sqrt(4 +
 * 1e-5) 2 + 0.5 = 2.4999975...; x = 1 -> 0.5.  Channel 1: mean -2, var
 * 0.25, gamma 1, beta 0: x = -1.5 -> 0.5 / sqrt(0.25001) = 0.99998. */
static void test_bn_eval_hand(void)
{
    float x[4] = {3, 1, -1.5f, -2}; /* [N 1, C 2, HW 2] */
    float rm[2] = {1, -2}, rv[2] = {4, 0.25f}, g[2] = {2, 1}, b[2] = {0.5f, 0}, y[4];
    rt_batchnorm_eval_forward(x, 1, 2, 2, g, b, 1e-5f, rm, rv, y);
    CHECK_NEAR(y[0], 2.4999975, 1e-6);
    CHECK_NEAR(y[1], 0.5, 1e-7);
    CHECK_NEAR(y[2], 0.99998, 1e-6);
    CHECK_NEAR(y[3], 0.0, 1e-7);
    /* the batch's own statistics would give something else entirely */
    float sm[2], si[2], yt[4];
    CHECK(rt_batchnorm_train_forward(NULL, x, 1, 2, 2, g, b, 1e-5f, 0.1f, NULL, NULL, NULL, yt,
                                     sm, si) == RT_STATUS_OK);
    CHECK(fabsf(yt[1] - y[1]) > 1.0f); /* batch: (1 - 2) / 1 * 2 + 0.5 = -1.5 */
    /* eval backward: dx = gamma / sqrt(var + eps) dy; dgamma = sum dy xhat */
    float dy[4] = {1, 1, 1, 1}, dx[4] = {0}, dg[2] = {0}, db[2] = {0};
    rt_batchnorm_eval_backward(x, dy, 1, 2, 2, g, 1e-5f, rm, rv, dx, dg, db);
    CHECK_NEAR(dx[0], 2 / sqrt(4 + 1e-5), 1e-6);
    CHECK_NEAR(dx[2], 1 / sqrt(0.25 + 1e-5), 1e-6);
    CHECK_NEAR(dg[0], 2 / sqrt(4 + 1e-5), 1e-6); /* xhat 1 and 0 */
    CHECK_NEAR(db[1], 2, 1e-7);
}

static void test_bn_errors(void)
{
    rt_ctx *ctx = rt_ctx_new();
    float x[3] = {1, 2, 3}, y[3] = {9, 9, 9}, rm = 0.5f, rv = 2, sm = 7, si = 7;
    int64_t nbt = 3;
    CHECK(rt_batchnorm_train_forward(ctx, x, 1, 3, 1, NULL, NULL, 1e-5f, 0.1f, &rm, &rv, &nbt, y,
                                     &sm, &si) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "more than 1 value per channel");
    CHECK(rm == 0.5f && rv == 2 && nbt == 3 && y[0] == 9 && sm == 7);
    CHECK(rt_batchnorm_train_forward(ctx, x, 3, 1, 1, NULL, NULL, 0.0f, 0.1f, &rm, &rv, &nbt, y,
                                     &sm, &si) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "eps is 0");
    CHECK(rt_batchnorm_train_forward(ctx, x, 3, 1, 1, NULL, NULL, 1e-5f, 1.5f, &rm, &rv, &nbt, y,
                                     &sm, &si) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "momentum is 1.5");
    CHECK(rt_batchnorm_train_forward(ctx, x, 3, 1, 1, NULL, NULL, 1e-5f, NAN, &rm, &rv, &nbt, y,
                                     &sm, &si) == RT_STATUS_ERR_ARG);
    CHECK(rm == 0.5f && rv == 2 && nbt == 3 && y[0] == 9);
    rt_ctx_free(ctx);
}

/* ========================================================== residual add */

typedef struct res_bufs {
    int64_t n;
    float *a, *b, *y, *r;
} res_bufs;

static double res_loss(void *u)
{
    res_bufs *p = u;
    rt_residual_add(p->a, p->b, p->y, p->n);
    return dot(p->r, p->y, p->n);
}

static void test_residual(void)
{
    res_bufs p = {37, falloc(37), falloc(37), falloc(37), falloc(37)};
    fill(p.a, 37, -1, 1), fill(p.b, 37, -1, 1), fill(p.r, 37, -1, 1);
    rt_residual_add(p.a, p.b, p.y, 37);
    for (int i = 0; i < 37; i++) CHECK(p.y[i] == p.a[i] + p.b[i]);
    CHECK(tail_ok(p.y, 37));
    float *da = falloc(37), *db = falloc(37);
    memset(da, 0, sizeof(float) * 37);
    fill(db, 37, -1, 1);
    float *db0 = fdup(db, 37);
    rt_residual_add_backward(p.r, 37, da, db);
    for (int i = 0; i < 37; i++) CHECK(da[i] == p.r[i] && db[i] == db0[i] + p.r[i]);
    rt_residual_add_backward(p.r, 37, NULL, NULL); /* nothing to do */
    memset(da, 0, sizeof(float) * 37);
    rt_residual_add_backward(p.r, 37, da, NULL);
    CHECK(fd_check(res_loss, &p, p.a, 37, da, 1e-2f, "residual da") <= 1e-3);
    CHECK(fd_check(res_loss, &p, p.b, 37, da, 1e-2f, "residual db") <= 1e-3);
    /* in place: y = a */
    float *a2 = fdup(p.a, 37);
    rt_residual_add(a2, p.b, a2, 37);
    CHECK(!memcmp(a2, p.y, sizeof(float) * 37));
    free(p.a), free(p.b), free(p.y), free(p.r), free(da), free(db), free(db0), free(a2);
}

int main(void)
{
    RUN(test_conv_output_size);
    RUN(test_conv_vs_ref);
    RUN(test_conv_hand);
    RUN(test_conv_gradcheck);
    RUN(test_conv_geom_errors);
    RUN(test_pool_output_size);
    RUN(test_maxpool_vs_ref);
    RUN(test_maxpool_hand);
    RUN(test_pool_gradcheck);
    RUN(test_avgpool_vs_ref);
    RUN(test_avgpool_hand);
    RUN(test_pool_geom_errors);
    RUN(test_global_avgpool);
    RUN(test_bn_vs_ref);
    RUN(test_bn_gradcheck);
    RUN(test_bn_running_hand);
    RUN(test_bn_eval_hand);
    RUN(test_bn_errors);
    RUN(test_residual);
    return t_summary("test_conv");
}
