/*
 * test_losses_more.c -- the divergences beyond kd: reverse_kl, jsd,
 * skew_kl, tvd, dkd and soft_ce.
 *
 * Golden values are computed here independently, in double, by the
 * textbook formulas on probabilities (not log-space, not the plugins'
 * algebra), and golden gradients by central differences of those
 * references in double; both on the fixed 2x3 and 3x4 inputs.  Then the
 * identities: KL(p||p) = 0 with a zero gradient, JSD(0.5) symmetric, JSD
 * at and near its ends, skew KL at alpha = 0, DKD's decomposition by hand
 * and its warm-up, soft_ce = kd + T^2 H(p_t), the t2 factor, `set`, -inf
 * teacher logits, misuse errors, and the CLI help of each plugin.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "retort.h"
#include "t.h"

static rt_registry *reg;
static rt_ctx *ctx;
static char build[512];

/* The fixed inputs (the same as test_losses.c). */
static const float S23[6] = {1.0f, 2.0f, 0.5f, -1.0f, 0.0f, 3.0f};
static const float T23[6] = {0.5f, 2.5f, -0.5f, 0.0f, 1.0f, 2.0f};
static const int32_t Y2[2] = {1, 2};
static const float S34[12] = {0.3f, -1.2f, 2.2f, 0.0f, 1.5f, 1.5f, -0.5f, 0.7f, -2.0f, 0.1f, 0.4f, 3.3f};
static const float T34[12] = {1.0f, -0.5f, 1.8f, 0.2f, 0.0f, 2.5f, -1.0f, 0.3f, -1.5f, -0.2f, 1.1f, 2.9f};
static const int32_t Y3[3] = {2, 0, 3};

/* ------------------------------------------------- independent references */

/* What a reference computes: the loss, its T and factor, and its options. */
typedef struct ref {
    const char *loss; /* reverse_kl jsd skew_kl tvd dkd soft_ce kd */
    double T, f;      /* temperature; the factor (T^2 or 1, times DKD's warm-up) */
    double beta;      /* jsd: teacher weight; dkd: NCKD weight */
    double alpha;     /* skew_kl: skew; dkd: TCKD weight */
    int reverse;      /* skew_kl */
} ref;

/* p = softmax(z / T) of one row, straight from the definition. */
static void ref_softmax(const double *z, int C, double T, double *p)
{
    double m = -INFINITY, s = 0;
    for (int c = 0; c < C; c++) m = fmax(m, z[c]);
    for (int c = 0; c < C; c++) s += p[c] = exp((z[c] - m) / T);
    for (int c = 0; c < C; c++) p[c] /= s;
}

/* KL(p || q) = sum p log(p / q), 0 log 0 = 0. */
static double ref_kl(const double *p, const double *q, int C)
{
    double s = 0;
    for (int c = 0; c < C; c++)
        if (p[c] > 0) s += p[c] * log(p[c] / q[c]);
    return s;
}

/* One row of the loss r (before the factor). */
static double ref_row(const ref *r, const double *zs, const double *zt, int y, int C)
{
    double ps[16], pt[16], m[16];
    ref_softmax(zs, C, r->T, ps);
    ref_softmax(zt, C, r->T, pt);
    if (!strcmp(r->loss, "kd")) return ref_kl(pt, ps, C);
    if (!strcmp(r->loss, "reverse_kl")) return ref_kl(ps, pt, C);
    if (!strcmp(r->loss, "jsd")) {
        double b = r->beta;
        if (b == 0) return ref_kl(pt, ps, C);
        if (b == 1) return ref_kl(ps, pt, C);
        for (int c = 0; c < C; c++) m[c] = b * pt[c] + (1 - b) * ps[c];
        return b * ref_kl(pt, m, C) + (1 - b) * ref_kl(ps, m, C);
    }
    if (!strcmp(r->loss, "skew_kl")) {
        double a = r->alpha;
        if (!r->reverse) {
            for (int c = 0; c < C; c++) m[c] = a * pt[c] + (1 - a) * ps[c];
            return ref_kl(pt, m, C);
        }
        for (int c = 0; c < C; c++) m[c] = (1 - a) * pt[c] + a * ps[c];
        return ref_kl(ps, m, C);
    }
    if (!strcmp(r->loss, "tvd")) {
        double s = 0;
        for (int c = 0; c < C; c++) s += fabs(pt[c] - ps[c]);
        return 0.5 * s;
    }
    if (!strcmp(r->loss, "soft_ce")) {
        double s = 0;
        for (int c = 0; c < C; c++)
            if (pt[c] > 0) s -= pt[c] * log(ps[c]);
        return s;
    }
    if (!strcmp(r->loss, "dkd")) { /* as mdistiller: binary target/rest, then the rest renormalised */
        double bs[2] = {ps[y], 1 - ps[y]}, bt[2] = {pt[y], 1 - pt[y]};
        double rs[16], rt[16], ss = 0, st = 0;
        int k = 0;
        for (int c = 0; c < C; c++)
            if (c != y) ss += ps[c], st += pt[c];
        for (int c = 0; c < C; c++)
            if (c != y) rs[k] = ps[c] / ss, rt[k] = pt[c] / st, k++;
        return r->alpha * ref_kl(bt, bs, 2) + r->beta * ref_kl(rt, rs, C - 1);
    }
    return NAN;
}

/* f / N * sum over rows. */
static double ref_loss(const ref *r, const double *s, const double *t, const int32_t *y, int N, int C)
{
    double total = 0;
    for (int n = 0; n < N; n++) total += ref_row(r, s + n * C, t + n * C, y ? y[n] : 0, C);
    return r->f * total / N;
}

/* The reference value at float inputs, and grad[N*C] by central
 * differences of the reference in double (h = 1e-6: error ~1e-10). */
static double ref_eval(const ref *r, const float *s, const float *t, const int32_t *y, int N, int C, double *grad)
{
    double ds[64] = {0}, dt[64] = {0};
    for (int i = 0; i < N * C; i++) ds[i] = s[i], dt[i] = t[i];
    double v = ref_loss(r, ds, dt, y, N, C);
    for (int i = 0; grad && i < N * C; i++) {
        double x = ds[i], h = 1e-6;
        ds[i] = x + h;
        double up = ref_loss(r, ds, dt, y, N, C);
        ds[i] = x - h;
        double dn = ref_loss(r, ds, dt, y, N, C);
        ds[i] = x;
        grad[i] = (up - dn) / (2 * h);
    }
    return v;
}

/* ------------------------------------------------------------------ helpers */


static rt_instance *make(const char *name, const char *opts)
{
    rt_instance *l = NULL;
    if (rt_instance_create(reg, ctx, RT_KIND_LOSS, name, opts, &l))
        fprintf(stderr, "  create %s %s: %s\n", name, opts ? opts : "", rt_ctx_message(ctx));
    return l;
}

/* Runs forward and backward (scale 1, into zeros) of loss l at epoch;
 * *value and grad[N*C].  t or y NULL: none passed.  Returns the status of
 * the first failure (its message stays in ctx). */
static rt_status run_at(rt_instance *l, const float *s, const float *t, const int32_t *y, int N, int C, int64_t epoch,
                        double *value, float *grad)
{
    int64_t sh[2] = {N, C};
    rt_tensor *ts = rt_tensor_from(ctx, RT_DTYPE_F32, 2, sh, s);
    rt_tensor *tt = t ? rt_tensor_from(ctx, RT_DTYPE_F32, 2, sh, t) : NULL;
    rt_tensor *ty = y ? rt_tensor_from(ctx, RT_DTYPE_I32, 1, sh, y) : NULL;
    rt_tensor *g = rt_tensor_new(ctx, RT_DTYPE_F32, 2, sh);
    rt_signal sig = {.logits = tt};
    rt_loss_in in = {.student = ts, .teacher = tt ? &sig : NULL, .target = ty, .epoch = epoch};
    rt_status st = rt_loss_forward(l, ctx, &in, value);
    if (!st) st = rt_loss_backward(l, ctx, &in, 1.0f, g);
    if (!st && grad) memcpy(grad, rt_f32(g), sizeof(float) * (size_t)(N * C));
    rt_tensor_release(ts);
    rt_tensor_release(tt);
    rt_tensor_release(ty);
    rt_tensor_release(g);
    return st;
}

static rt_status run(rt_instance *l, const float *s, const float *t, const int32_t *y, int N, int C, double *value,
                     float *grad)
{
    rt_status st = run_at(l, s, t, y, N, C, 0, value, grad);
    if (st) fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
    return st;
}

/* Gradients to 1e-5 of the largest entry (entries are differences of
 * probabilities: a per-entry relative bound would measure cancellation). */
static void check_grad(const float *g, const double *want, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs(want[i]));
    for (int i = 0; i < n; i++)
        if (!(fabs(g[i] - want[i]) <= 1e-5 * m)) {
            fprintf(stderr, "  FAIL [%s]: gradient[%d] = %.10g, want %.10g (largest %.3g)\n", t_cur, i, (double)g[i],
                    want[i], m);
            t_cur_failed++;
        }
}

/* The plugin's value and gradient on both fixed inputs against r. */
static void golden(const char *opts, ref r)
{
    rt_instance *l = make(r.loss, opts);
    CHECK(l != NULL);
    if (!l) return;
    int needs_y = !strcmp(r.loss, "dkd");
    double v, want[12];
    float g[12];
    CHECK(run(l, S23, T23, needs_y ? Y2 : NULL, 2, 3, &v, g) == RT_STATUS_OK);
    CHECK_REL(v, ref_eval(&r, S23, T23, Y2, 2, 3, want));
    check_grad(g, want, 6);
    CHECK(run(l, S34, T34, needs_y ? Y3 : NULL, 3, 4, &v, g) == RT_STATUS_OK);
    CHECK_REL(v, ref_eval(&r, S34, T34, Y3, 3, 4, want));
    check_grad(g, want, 12);
    if (t_cur_failed) fprintf(stderr, "  (%s %s)\n", r.loss, opts ? opts : "defaults");
    rt_instance_release(l);
}

/* The value of one loss on (s, t, y), or NAN on failure. */
static double value_of(const char *name, const char *opts, const float *s, const float *t, const int32_t *y, int N,
                       int C, float *grad)
{
    rt_instance *l = make(name, opts);
    double v = NAN;
    if (!l || run(l, s, t, y, N, C, &v, grad)) v = NAN;
    rt_instance_release(l);
    return v;
}

/* ------------------------------------------------------------ golden values */

static void test_reverse_kl_golden(void)
{
    golden(NULL, (ref){"reverse_kl", .T = 1, .f = 1});
    golden("{\"temperature\":2.5}", (ref){"reverse_kl", .T = 2.5, .f = 1});
    golden("{\"temperature\":3,\"t2\":true}", (ref){"reverse_kl", .T = 3, .f = 9});
}

static void test_jsd_golden(void)
{
    golden(NULL, (ref){"jsd", .T = 1, .f = 1, .beta = 0.5});
    golden("{\"beta\":0.1,\"temperature\":2}", (ref){"jsd", .T = 2, .f = 1, .beta = 0.1});
    golden("{\"beta\":0.9}", (ref){"jsd", .T = 1, .f = 1, .beta = 0.9});
    golden("{\"beta\":0}", (ref){"jsd", .T = 1, .f = 1, .beta = 0});
    golden("{\"beta\":1,\"temperature\":1.5}", (ref){"jsd", .T = 1.5, .f = 1, .beta = 1});
    golden("{\"temperature\":2,\"t2\":true}", (ref){"jsd", .T = 2, .f = 4, .beta = 0.5});
}

static void test_skew_kl_golden(void)
{
    golden(NULL, (ref){"skew_kl", .T = 1, .f = 1, .alpha = 0.1});
    golden("{\"alpha\":0.3,\"temperature\":2}", (ref){"skew_kl", .T = 2, .f = 1, .alpha = 0.3});
    golden("{\"reverse\":true}", (ref){"skew_kl", .T = 1, .f = 1, .alpha = 0.1, .reverse = 1});
    golden("{\"reverse\":true,\"alpha\":0.4,\"temperature\":3}",
           (ref){"skew_kl", .T = 3, .f = 1, .alpha = 0.4, .reverse = 1});
    golden("{\"temperature\":2,\"t2\":true}", (ref){"skew_kl", .T = 2, .f = 4, .alpha = 0.1});
}

static void test_tvd_golden(void)
{
    golden(NULL, (ref){"tvd", .T = 1, .f = 1});
    golden("{\"temperature\":2}", (ref){"tvd", .T = 2, .f = 1});
    golden("{\"temperature\":3,\"t2\":true}", (ref){"tvd", .T = 3, .f = 9});
    /* By hand: p_t = (3/4, 1/4), p_s = (1/2, 1/2): 0.5 (1/4 + 1/4). */
    float s[2] = {0, 0}, t[2] = {(float)log(3.0), 0};
    CHECK_REL(value_of("tvd", NULL, s, t, NULL, 1, 2, NULL), 0.25);
}

static void test_dkd_golden(void)
{
    golden(NULL, (ref){"dkd", .T = 4, .f = 16, .alpha = 1, .beta = 8});
    golden("{\"alpha\":0.5,\"beta\":2,\"temperature\":1}", (ref){"dkd", .T = 1, .f = 1, .alpha = 0.5, .beta = 2});
    golden("{\"alpha\":0,\"beta\":1,\"temperature\":2}", (ref){"dkd", .T = 2, .f = 4, .alpha = 0, .beta = 1});
    golden("{\"alpha\":1,\"beta\":0,\"temperature\":2}", (ref){"dkd", .T = 2, .f = 4, .alpha = 1, .beta = 0});
}

static void test_soft_ce_golden(void)
{
    golden(NULL, (ref){"soft_ce", .T = 4, .f = 16});
    golden("{\"temperature\":1}", (ref){"soft_ce", .T = 1, .f = 1});
    golden("{\"temperature\":2,\"t2\":false}", (ref){"soft_ce", .T = 2, .f = 1});
    /* By hand: p_t = (3/4, 1/4), p_s = (1/2, 1/2) at T = 1: log 2. */
    float s[2] = {0, 0}, t[2] = {(float)log(3.0), 0};
    CHECK_REL(value_of("soft_ce", "{\"temperature\":1}", s, t, NULL, 1, 2, NULL), log(2.0));
}

/* ------------------------------------------------------------- identities */

/* D(p || p) = 0 with an exactly zero gradient, for every divergence (not
 * soft_ce, whose minimum is H(p_t)), at several temperatures. */
static void test_self_is_zero(void)
{
    static const struct {
        const char *name, *opts;
    } cases[] = {
        {"reverse_kl", NULL},
        {"reverse_kl", "{\"temperature\":0.01}"},
        {"reverse_kl", "{\"temperature\":100,\"t2\":true}"},
        {"jsd", NULL},
        {"jsd", "{\"beta\":0}"},
        {"jsd", "{\"beta\":1}"},
        {"jsd", "{\"beta\":0.3,\"temperature\":0.01}"},
        {"skew_kl", NULL},
        {"skew_kl", "{\"reverse\":true,\"temperature\":100}"},
        {"skew_kl", "{\"alpha\":0}"},
        {"tvd", NULL},
        {"tvd", "{\"temperature\":0.01}"},
        {"dkd", NULL},
        {"dkd", "{\"temperature\":1}"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        float g[12];
        double v = value_of(cases[k].name, cases[k].opts, S34, S34, Y3, 3, 4, g);
        if (!(fabs(v) <= 1e-12)) fprintf(stderr, "  %s %s: %g\n", cases[k].name, cases[k].opts, v);
        CHECK(fabs(v) <= 1e-12);
        for (int i = 0; i < 12; i++) CHECK(fabs(g[i]) <= 1e-7);
    }
    /* And a divergence that is not zero at a different teacher (the test
     * can fail): every one of them is positive on S34 vs T34. */
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        double v = value_of(cases[k].name, cases[k].opts, S34, T34, Y3, 3, 4, NULL);
        if (!(v > 1e-7)) fprintf(stderr, "  %s %s: %g on S34 vs T34\n", cases[k].name, cases[k].opts, v);
        CHECK(v > 1e-7); /* T = 100 without T^2 is small, but not 0 */
    }
}

/* JSD(0.5) is symmetric; JSD(0.2) and the KLs are not. */
static void test_jsd_symmetry(void)
{
    double a = value_of("jsd", NULL, S34, T34, NULL, 3, 4, NULL);
    double b = value_of("jsd", NULL, T34, S34, NULL, 3, 4, NULL);
    CHECK(fabs(a - b) <= 1e-12 * fabs(a));
    CHECK(a > 0);
    double c = value_of("jsd", "{\"beta\":0.2}", S34, T34, NULL, 3, 4, NULL);
    double d = value_of("jsd", "{\"beta\":0.2}", T34, S34, NULL, 3, 4, NULL);
    CHECK(fabs(c - d) > 1e-4 * fabs(c));
    /* swapping the roles is the same as beta -> 1 - beta */
    double e = value_of("jsd", "{\"beta\":0.8}", T34, S34, NULL, 3, 4, NULL);
    CHECK_REL(c, e);
}

/* The ends: beta = 0 and 1 are exactly the forward and reverse KLs (TRL's
 * special cases); near them the mixture formula is beta times forward KL
 * and (1 - beta) times reverse KL, to first order. */
static void test_jsd_endpoints(void)
{
    float g0[12], gk[12], g1[12], gr[12];
    double fwd = value_of("kd", "{\"temperature\":2,\"t2\":false}", S34, T34, NULL, 3, 4, gk);
    double rev = value_of("reverse_kl", "{\"temperature\":2}", S34, T34, NULL, 3, 4, gr);
    double j0 = value_of("jsd", "{\"beta\":0,\"temperature\":2}", S34, T34, NULL, 3, 4, g0);
    double j1 = value_of("jsd", "{\"beta\":1,\"temperature\":2}", S34, T34, NULL, 3, 4, g1);
    CHECK_REL(j0, fwd);
    CHECK_REL(j1, rev);
    CHECK(fabs(fwd - rev) > 1e-3 * fwd); /* the two ends differ */
    for (int i = 0; i < 12; i++) {
        CHECK(fabs(g0[i] - gk[i]) <= 1e-6);
        CHECK(fabs(g1[i] - gr[i]) <= 1e-6);
    }
    double e = 1e-6;
    char o[96];
    snprintf(o, sizeof o, "{\"beta\":%.17g,\"temperature\":2}", e);
    double jl = value_of("jsd", o, S34, T34, NULL, 3, 4, NULL);
    snprintf(o, sizeof o, "{\"beta\":%.17g,\"temperature\":2}", 1 - e);
    double jh = value_of("jsd", o, S34, T34, NULL, 3, 4, NULL);
    printf("  JSD(1e-6) / 1e-6 = %.9g vs KL(p_t || p_s) = %.9g\n", jl / e, fwd);
    printf("  JSD(1 - 1e-6) / 1e-6 = %.9g vs KL(p_s || p_t) = %.9g\n", jh / e, rev);
    CHECK(fabs(jl / e - fwd) <= 1e-4 * fwd);
    CHECK(fabs(jh / e - rev) <= 1e-4 * rev);
}

/* alpha = 0: the plain KLs; alpha = 1: zero. */
static void test_skew_kl_ends(void)
{
    float gs[12], gk[12];
    double a = value_of("skew_kl", "{\"alpha\":0,\"temperature\":2}", S34, T34, NULL, 3, 4, gs);
    double b = value_of("kd", "{\"temperature\":2,\"t2\":false}", S34, T34, NULL, 3, 4, gk);
    CHECK_REL(a, b);
    for (int i = 0; i < 12; i++) CHECK(fabs(gs[i] - gk[i]) <= 1e-6);
    a = value_of("skew_kl", "{\"alpha\":0,\"reverse\":true,\"temperature\":2}", S34, T34, NULL, 3, 4, gs);
    b = value_of("reverse_kl", "{\"temperature\":2}", S34, T34, NULL, 3, 4, gk);
    CHECK_REL(a, b);
    for (int i = 0; i < 12; i++) CHECK(fabs(gs[i] - gk[i]) <= 1e-6);
    CHECK(fabs(value_of("skew_kl", "{\"alpha\":1}", S34, T34, NULL, 3, 4, NULL)) <= 1e-12);
    CHECK(fabs(value_of("skew_kl", "{\"alpha\":1,\"reverse\":true}", S34, T34, NULL, 3, 4, NULL)) <= 1e-12);
    /* skewing shrinks the divergence */
    CHECK(value_of("skew_kl", NULL, S34, T34, NULL, 3, 4, NULL) <
          value_of("kd", "{\"temperature\":1,\"t2\":false}", S34, T34, NULL, 3, 4, NULL));
}

/* DKD by hand at T = 1, one row of three classes, target 0, student
 * uniform.  Teacher (2, 3, 1)/6: its target mass 1/3 is the student's, so
 * TCKD = 0 and NCKD = KL((3/4, 1/4) || (1/2, 1/2)).  Teacher (2, 1, 1)/4:
 * the non-target parts agree, NCKD = 0, TCKD = KL((1/2, 1/2) || (1/3, 2/3)). */
static void test_dkd_by_hand(void)
{
    float s[3] = {0, 0, 0}, t1[3] = {(float)log(2.0), (float)log(3.0), 0}, t2[3] = {(float)log(2.0), 0, 0};
    int32_t y[1] = {0};
    double nckd = 0.75 * log(1.5) + 0.25 * log(0.5), tckd = 0.5 * log(1.5) + 0.5 * log(0.75);
    const char *o11 = "{\"alpha\":1,\"beta\":1,\"temperature\":1}", *o23 = "{\"alpha\":2,\"beta\":3,\"temperature\":1}";
    CHECK_REL(value_of("dkd", o11, s, t1, y, 1, 3, NULL), nckd);
    CHECK_REL(value_of("dkd", o23, s, t1, y, 1, 3, NULL), 3 * nckd);
    CHECK_REL(value_of("dkd", o11, s, t2, y, 1, 3, NULL), tckd);
    CHECK_REL(value_of("dkd", o23, s, t2, y, 1, 3, NULL), 2 * tckd);
    /* T^2 is always applied: at T = 2 the same logits doubled give 4x. */
    float s2[3] = {0, 0, 0}, t22[3] = {(float)(2 * log(2.0)), 0, 0};
    CHECK_REL(value_of("dkd", "{\"alpha\":1,\"beta\":1,\"temperature\":2}", s2, t22, y, 1, 3, NULL), 4 * tckd);
    /* The paper's decomposition, row by row: KL(p_t || p_s) = TCKD +
     * (1 - p_t,target) NCKD, with TCKD and NCKD from the plugin alone. */
    for (int n = 0; n < 3; n++) {
        const float *sr = S34 + 4 * n, *tr = T34 + 4 * n;
        const int32_t *yr = Y3 + n;
        double tc = value_of("dkd", "{\"alpha\":1,\"beta\":0,\"temperature\":1}", sr, tr, yr, 1, 4, NULL);
        double nc = value_of("dkd", "{\"alpha\":0,\"beta\":1,\"temperature\":1}", sr, tr, yr, 1, 4, NULL);
        double kd = value_of("kd", "{\"temperature\":1}", sr, tr, NULL, 1, 4, NULL);
        double zt[4], pt[4];
        for (int c = 0; c < 4; c++) zt[c] = tr[c];
        ref_softmax(zt, 4, 1, pt);
        CHECK(tc > 0 && nc > 0);
        CHECK_REL(tc + (1 - pt[*yr]) * nc, kd);
    }
}

/* The warm-up: min((epoch + 1) / warmup, 1), epoch counted from 0
 * (mdistiller's epochs count from 1); the gradient scales with it. */
static void test_dkd_warmup(void)
{
    rt_instance *w = make("dkd", "{\"warmup\":10}"), *none = make("dkd", NULL);
    CHECK(w && none);
    if (!w || !none) goto out;
    double full, v;
    float gfull[12], g[12];
    CHECK(run_at(none, S34, T34, Y3, 3, 4, 0, &full, gfull) == RT_STATUS_OK);
    CHECK(full > 0);
    CHECK(run_at(none, S34, T34, Y3, 3, 4, 57, &v, NULL) == RT_STATUS_OK);
    CHECK_REL(v, full); /* warmup 0: always 1 */
    static const struct {
        int64_t epoch;
        double factor;
    } cases[] = {{0, 0.1}, {4, 0.5}, {5, 0.6}, {8, 0.9}, {9, 1}, {10, 1}, {100, 1}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        CHECK(run_at(w, S34, T34, Y3, 3, 4, cases[k].epoch, &v, g) == RT_STATUS_OK);
        CHECK_REL(v, cases[k].factor * full);
        for (int i = 0; i < 12; i++) CHECK(fabs(g[i] - cases[k].factor * gfull[i]) <= 1e-6);
    }
    /* and it is a schedule too: warmup can be set between steps */
    CHECK(rt_loss_set(w, ctx, "warmup", 2) == RT_STATUS_OK);
    CHECK(run_at(w, S34, T34, Y3, 3, 4, 0, &v, NULL) == RT_STATUS_OK);
    CHECK_REL(v, 0.5 * full);
out:
    rt_instance_release(w);
    rt_instance_release(none);
}

/* NCKD leaves the target out exactly, as mdistiller's -1000 mask does for
 * ordinary logits: the student's target logit moves TCKD only. */
static void test_dkd_target_out_of_nckd(void)
{
    float s[4] = {0.3f, -1.2f, 2.2f, 0.0f}, s2[4] = {0.3f, -1.2f, 9.0f, 0.0f};
    int32_t y[1] = {2};
    const char *o = "{\"alpha\":0,\"beta\":1,\"temperature\":1}";
    float g[4];
    double a = value_of("dkd", o, s, T34, y, 1, 4, g), b = value_of("dkd", o, s2, T34, y, 1, 4, NULL);
    CHECK_REL(a, b);
    CHECK(g[2] == 0);
    CHECK(a > 0);
}

/* soft_ce = T^2 (KL + H(p_t)) = kd + T^2 H(p_t), same gradient as kd; and
 * t2 = false divides by exactly T^2. */
static void test_soft_ce_vs_kd(void)
{
    float gs[12], gk[12], gf[12];
    double sce = value_of("soft_ce", "{\"temperature\":3}", S34, T34, NULL, 3, 4, gs);
    double kd = value_of("kd", "{\"temperature\":3}", S34, T34, NULL, 3, 4, gk);
    double h = 0;
    for (int n = 0; n < 3; n++) {
        double zt[4], pt[4];
        for (int c = 0; c < 4; c++) zt[c] = T34[4 * n + c];
        ref_softmax(zt, 4, 3, pt);
        for (int c = 0; c < 4; c++) h -= pt[c] * log(pt[c]);
    }
    h /= 3;
    CHECK_REL(sce - 9 * h, kd);
    for (int i = 0; i < 12; i++) CHECK(fabs(gs[i] - gk[i]) <= 1e-6);
    double nf = value_of("soft_ce", "{\"temperature\":3,\"t2\":false}", S34, T34, NULL, 3, 4, gf);
    CHECK_REL(sce, 9 * nf);
    for (int i = 0; i < 12; i++) CHECK(fabs(gs[i] - 9 * gf[i]) <= 1e-6);
}

/* t2 = true is exactly T^2 times t2 = false, value and gradient. */
static void test_t2_factor(void)
{
    const char *names[] = {"reverse_kl", "jsd", "skew_kl", "tvd"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        float ga[12], gb[12];
        double a = value_of(names[k], "{\"temperature\":2.5,\"t2\":true}", S34, T34, NULL, 3, 4, ga);
        double b = value_of(names[k], "{\"temperature\":2.5}", S34, T34, NULL, 3, 4, gb);
        CHECK_REL(a, 6.25 * b);
        for (int i = 0; i < 12; i++) CHECK(fabs(ga[i] - 6.25 * gb[i]) <= 1e-6);
    }
}

/* set: a schedule's change of temperature (and beta / alpha) gives the
 * value of an instance created with it. */
static void test_set(void)
{
    static const struct {
        const char *name, *key;
        double v;
        const char *opts;
    } cases[] = {
        {"reverse_kl", "temperature", 2, "{\"temperature\":2}"},
        {"jsd", "temperature", 3, "{\"temperature\":3}"},
        {"jsd", "beta", 0.2, "{\"beta\":0.2}"},
        {"skew_kl", "temperature", 2, "{\"temperature\":2}"},
        {"skew_kl", "alpha", 0.5, "{\"alpha\":0.5}"},
        {"tvd", "temperature", 2, "{\"temperature\":2}"},
        {"dkd", "temperature", 2, "{\"temperature\":2}"},
        {"dkd", "alpha", 3, "{\"alpha\":3}"},
        {"dkd", "beta", 1, "{\"beta\":1}"},
        {"soft_ce", "temperature", 1, "{\"temperature\":1}"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        rt_instance *l = make(cases[k].name, NULL);
        if (!l) {
            CHECK(!"create");
            continue;
        }
        double before, after;
        CHECK(run(l, S34, T34, Y3, 3, 4, &before, NULL) == RT_STATUS_OK);
        CHECK(rt_loss_set(l, ctx, cases[k].key, cases[k].v) == RT_STATUS_OK);
        CHECK(run(l, S34, T34, Y3, 3, 4, &after, NULL) == RT_STATUS_OK);
        CHECK_REL(after, value_of(cases[k].name, cases[k].opts, S34, T34, Y3, 3, 4, NULL));
        CHECK(fabs(after - before) > 1e-6 * fabs(before));
        rt_instance_release(l);
    }
    /* out of range: refused by the host against the schema */
    rt_instance *l = make("jsd", NULL);
    if (!l) return;
    CHECK(rt_loss_set(l, ctx, "beta", 1.5) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "beta");
    rt_instance_release(l);
}

/* A -inf teacher logit (probability exactly 0): finite for every loss whose
 * teacher-zero terms are 0 log 0, and equal to the reference; refused,
 * with a message, where the divergence really is infinite. */
static void test_teacher_minus_inf(void)
{
    float t[12];
    memcpy(t, T34, sizeof t);
    t[1] = t[6] = -INFINITY; /* rows 0 and 1; not a target (Y3 = 2, 0, 3) */
    static const struct {
        const char *name, *opts;
        ref r;
    } ok[] = {
        {"jsd", NULL, {"jsd", .T = 1, .f = 1, .beta = 0.5}},
        {"jsd", "{\"beta\":0}", {"jsd", .T = 1, .f = 1, .beta = 0}},
        {"skew_kl", NULL, {"skew_kl", .T = 1, .f = 1, .alpha = 0.1}},
        {"skew_kl", "{\"reverse\":true}", {"skew_kl", .T = 1, .f = 1, .alpha = 0.1, .reverse = 1}},
        {"tvd", NULL, {"tvd", .T = 1, .f = 1}},
        {"soft_ce", NULL, {"soft_ce", .T = 4, .f = 16}},
        {"dkd", NULL, {"dkd", .T = 4, .f = 16, .alpha = 1, .beta = 8}},
    };
    for (size_t k = 0; k < sizeof ok / sizeof *ok; k++) {
        double want[12];
        float g[12];
        double v = value_of(ok[k].name, ok[k].opts, S34, t, Y3, 3, 4, g);
        CHECK(isfinite(v));
        CHECK_REL(v, ref_eval(&ok[k].r, S34, t, Y3, 3, 4, want));
        check_grad(g, want, 12);
    }
    /* reverse KL: p_s log(p_s / 0) */
    const char *inf[][2] = {{"reverse_kl", NULL}, {"jsd", "{\"beta\":1}"}, {"skew_kl", "{\"alpha\":0,\"reverse\":true}"}};
    for (size_t k = 0; k < sizeof inf / sizeof *inf; k++) {
        rt_instance *l = make(inf[k][0], inf[k][1]);
        if (!l) {
            CHECK(!"create");
            continue;
        }
        double v = 0;
        CHECK(run_at(l, S34, t, NULL, 3, 4, 0, &v, NULL) == RT_STATUS_ERR_NUMERIC);
        CHECK_CONTAINS(rt_ctx_message(ctx), "infinite");
        CHECK_CONTAINS(rt_ctx_message(ctx), "row 0 class 1");
        rt_instance_release(l);
    }
}

/* Misuse: what the host and the plugins refuse, with their messages. */
static void test_misuse(void)
{
    rt_instance *l = make("dkd", NULL);
    if (l) {
        double v;
        CHECK(run_at(l, S34, T34, NULL, 3, 4, 0, &v, NULL) == RT_STATUS_ERR_ARG);
        CHECK_CONTAINS(rt_ctx_message(ctx), "loss 'dkd'");
        CHECK_CONTAINS(rt_ctx_message(ctx), "needs target labels and got none");
        CHECK(run_at(l, S34, NULL, Y3, 3, 4, 0, &v, NULL) == RT_STATUS_ERR_ARG);
        CHECK_CONTAINS(rt_ctx_message(ctx), "needs a teacher signal");
        float s1[3] = {1, 2, 3}, t1[3] = {0, 1, 0};
        int32_t y1[3] = {0, 0, 0};
        CHECK(run_at(l, s1, t1, y1, 3, 1, 0, &v, NULL) == RT_STATUS_ERR_SHAPE); /* one class */
        CHECK_CONTAINS(rt_ctx_message(ctx), "at least 2 classes");
        rt_instance_release(l);
    }
    const char *teacher_losses[] = {"reverse_kl", "jsd", "skew_kl", "tvd", "soft_ce"};
    for (size_t k = 0; k < sizeof teacher_losses / sizeof *teacher_losses; k++) {
        l = make(teacher_losses[k], NULL);
        if (!l) {
            CHECK(!"create");
            continue;
        }
        double v;
        CHECK(run_at(l, S34, NULL, NULL, 3, 4, 0, &v, NULL) == RT_STATUS_ERR_ARG);
        CHECK_CONTAINS(rt_ctx_message(ctx), "needs a teacher signal");
        rt_instance_release(l);
    }
    /* soft_ce: -inf student logit where the teacher has mass */
    float s[12];
    memcpy(s, S34, sizeof s);
    s[5] = -INFINITY;
    l = make("soft_ce", NULL);
    if (l) {
        double v;
        CHECK(run_at(l, s, T34, NULL, 3, 4, 0, &v, NULL) == RT_STATUS_ERR_NUMERIC);
        CHECK_CONTAINS(rt_ctx_message(ctx), "row 1 class 1");
        rt_instance_release(l);
    }
    /* options out of range, misspelled */
    static const char *bad[][3] = {
        {"jsd", "{\"beta\":1.5}", "beta"},
        {"skew_kl", "{\"alpha\":-0.1}", "alpha"},
        {"dkd", "{\"warmup\":-1}", "warmup"},
        {"reverse_kl", "{\"temperature\":0}", "temperature"},
        {"skew_kl", "{\"revrse\":true}", "did you mean 'reverse'"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        l = NULL;
        CHECK(rt_instance_create(reg, ctx, RT_KIND_LOSS, bad[k][0], bad[k][1], &l) == RT_STATUS_ERR_ARG);
        CHECK(l == NULL);
        CHECK_CONTAINS(rt_ctx_message(ctx), bad[k][2]);
    }
}

/* `retort plugins NAME` prints each new loss with its options. */
static void test_cli_help(void)
{
    static const char *const names[][6] = {
        {"reverse_kl", "temperature", "t2", NULL},
        {"jsd", "beta", "temperature", "t2", NULL},
        {"skew_kl", "alpha", "reverse", "temperature", "t2", NULL},
        {"tvd", "temperature", "t2", NULL},
        {"dkd", "alpha", "beta", "temperature", "warmup", NULL},
        {"soft_ce", "temperature", "t2", NULL},
    };
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        char cmd[700], out[4096];
        snprintf(cmd, sizeof cmd, "'%s/bin/retort' plugins %s 2>&1", build, names[k][0]);
        FILE *p = popen(cmd, "r");
        CHECK(p != NULL);
        if (!p) continue;
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = 0;
        CHECK(pclose(p) == 0);
        char head[64];
        snprintf(head, sizeof head, "loss %s", names[k][0]);
        CHECK_CONTAINS(out, head);
        for (int i = 1; names[k][i]; i++) CHECK_CONTAINS(out, names[k][i]);
        CHECK_CONTAINS(out, "default");
    }
}

int main(void)
{
    const char *b = getenv("RETORT_TEST_BUILD");
    snprintf(build, sizeof build, "%s", b && *b ? b : "build");
    char dir[600];
    snprintf(dir, sizeof dir, "%s/lib/retort/plugins", build);
    ctx = rt_ctx_new();
    reg = rt_registry_new();
    if (!ctx || !reg || rt_registry_load_dir(reg, ctx, dir, 0, NULL)) {
        fprintf(stderr, "cannot load %s: %s\n", dir, ctx ? rt_ctx_message(ctx) : "no context");
        printf("test_losses_more: 0 passed, 1 failed\n");
        return 1;
    }
    RUN(test_reverse_kl_golden);
    RUN(test_jsd_golden);
    RUN(test_skew_kl_golden);
    RUN(test_tvd_golden);
    RUN(test_dkd_golden);
    RUN(test_soft_ce_golden);
    RUN(test_self_is_zero);
    RUN(test_jsd_symmetry);
    RUN(test_jsd_endpoints);
    RUN(test_skew_kl_ends);
    RUN(test_dkd_by_hand);
    RUN(test_dkd_warmup);
    RUN(test_dkd_target_out_of_nckd);
    RUN(test_soft_ce_vs_kd);
    RUN(test_t2_factor);
    RUN(test_set);
    RUN(test_teacher_minus_inf);
    RUN(test_misuse);
    RUN(test_cli_help);
    rt_registry_free(reg);
    rt_ctx_free(ctx);
    return t_summary("test_losses_more");
}
