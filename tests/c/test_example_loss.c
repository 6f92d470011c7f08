/*
 * test_example_loss -- the out-of-tree example plugin
 * (examples/custom_loss/cosine_logits.c) loads through the registry and
 * computes what its header says.
 *
 * The plugin comes from $RETORT_TEST_BUILD/examples/cosine_logits.so when
 * the build made one; otherwise this test compiles the source itself with
 * `cc -shared -fPIC -Icore` into a temporary folder.  Either way it runs
 * from the repository root (tests/run.sh does).
 *
 * Checks: forward against an independent double-precision computation;
 * backward against central finite differences of the plugin's own forward
 * (relative error <= 1e-3); accumulation with a scale; the eps clamp on a
 * zero row; scale invariance; the host's shape check.
 */
#include <stdlib.h>
#include <unistd.h>

#include "retort.h"
#include "t.h"

static rt_ctx *ctx;
static rt_registry *reg;
static rt_instance *loss;

/* Loads the built plugin.  0 on success. */
static int load_plugin(void)
{
    /* Built by the Makefile with the plugins' flags (make all / make check). */
    char path[512];
    t_build_path(path, sizeof path, "examples/cosine_logits.so");
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "  %s not found: run make first\n", path);
        return -1;
    }
    if (rt_registry_load(reg, ctx, path) ||
        rt_instance_create(reg, ctx, RT_KIND_LOSS, "cosine_logits", NULL, &loss)) {
        fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
        return -1;
    }
    return 0;
}

/* The loss of the plugin's header, independently, in double. */
static double ref_loss(const float *s, const float *t, int64_t N, int64_t C, double eps)
{
    double total = 0;
    for (int64_t n = 0; n < N; n++) {
        double ab = 0, aa = 0, bb = 0;
        for (int64_t k = 0; k < C; k++) {
            double a = s[n * C + k], b = t[n * C + k];
            ab += a * b, aa += a * a, bb += b * b;
        }
        double na = sqrt(aa) > eps ? sqrt(aa) : eps, nb = sqrt(bb) > eps ? sqrt(bb) : eps;
        total += 1 - ab / (na * nb);
    }
    return total / (double)N;
}

typedef struct pair {
    rt_tensor *s, *t;
    rt_signal sig;
    rt_loss_in in;
} pair;

/* *p = random student and teacher logits [N, C], uniform in (-scale,
 * scale), wired into p->in (which points into *p: do not copy a pair). */
static void make_pair(pair *pp, int64_t N, int64_t C, float scale, uint64_t seed)
{
    pair p;
    memset(&p, 0, sizeof p);
    int64_t shape[2] = {N, C};
    p.s = rt_tensor_new(ctx, RT_DTYPE_F32, 2, shape);
    p.t = rt_tensor_new(ctx, RT_DTYPE_F32, 2, shape);
    rt_rng r;
    rt_rng_seed(&r, seed, 0);
    for (int64_t i = 0; i < N * C; i++) {
        rt_f32(p.s)[i] = scale * (2 * rt_rng_uniform(&r) - 1);
        rt_f32(p.t)[i] = scale * (2 * rt_rng_uniform(&r) - 1);
    }
    *pp = p;
    pp->sig.logits = pp->t;
    pp->in.student = pp->s;
    pp->in.teacher = &pp->sig;
}

static void free_pair(pair *p)
{
    rt_tensor_release(p->s);
    rt_tensor_release(p->t);
}

static double fwd(pair *p)
{
    double v = NAN;
    if (rt_loss_forward(loss, ctx, &p->in, &v)) fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
    return v;
}

static void test_forward_matches_reference(void)
{
    pair p;
    make_pair(&p, 6, 10, 3.0f, 1);
    float *s = rt_f32(p.s), *t = rt_f32(p.t);
    for (int k = 0; k < 10; k++) {
        t[k] = 2.5f * s[k];        /* row 0: parallel, cos = 1 */
        t[10 + k] = -0.5f * s[10 + k]; /* row 1: opposite, cos = -1 */
    }
    CHECK_NEAR(fwd(&p), ref_loss(s, t, 6, 10, 1e-8), 1e-9);
    /* Rows 0 and 1 alone: (0 + 2) / 2. */
    rt_tensor *s2 = rt_tensor_narrow(ctx, p.s, 0, 0, 2), *t2 = rt_tensor_narrow(ctx, p.t, 0, 0, 2);
    pair q = {.s = s2, .t = t2, .sig = {.logits = t2}};
    q.in.student = s2;
    q.in.teacher = &q.sig;
    CHECK_NEAR(fwd(&q), 1.0, 1e-6);
    rt_tensor_release(s2);
    rt_tensor_release(t2);
    free_pair(&p);
}

/* Backward (scale 1, into zeros) vs central differences of forward; the
 * step is the float actually represented, so the quotient is exact up to
 * the truncation error.  Relative error in the max norm. */
static void gradcheck(pair *p, const char *what)
{
    int64_t N = p->s->shape[0], C = p->s->shape[1];
    int64_t shape[2] = {N, C};
    rt_tensor *g = rt_tensor_new(ctx, RT_DTYPE_F32, 2, shape);
    CHECK(rt_loss_backward(loss, ctx, &p->in, 1.0f, g) == RT_STATUS_OK);
    float *s = rt_f32(p->s);
    double maxfd = 0, maxerr = 0;
    for (int64_t i = 0; i < N * C; i++) {
        float x = s[i], h = 1e-3f * (fabsf(x) > 1 ? fabsf(x) : 1);
        float xp = x + h, xm = x - h;
        s[i] = xp;
        double lp = fwd(p);
        s[i] = xm;
        double lm = fwd(p);
        s[i] = x;
        double fd = (lp - lm) / ((double)xp - (double)xm);
        double e = fabs(fd - rt_f32(g)[i]);
        if (fabs(fd) > maxfd) maxfd = fabs(fd);
        if (e > maxerr) maxerr = e;
    }
    double rel = maxerr / (maxfd > 0 ? maxfd : 1);
    if (!(rel <= 1e-3)) fprintf(stderr, "  %s: relative gradient error %.3g\n", what, rel);
    CHECK(rel <= 1e-3);
    CHECK(maxfd > 0);
    rt_tensor_release(g);
}

static void test_backward_finite_differences(void)
{
    pair p;
    make_pair(&p, 4, 10, 2.0f, 2);
    gradcheck(&p, "uniform logits");
    free_pair(&p);
    /* Batch of one, large logits. */
    make_pair(&p, 1, 10, 1e4f, 3);
    gradcheck(&p, "logits of 1e4");
    free_pair(&p);
    /* Nearly parallel rows: cos close to 1, small gradients. */
    make_pair(&p, 3, 7, 1.0f, 4);
    for (int i = 0; i < 21; i++) rt_f32(p.t)[i] = 3 * rt_f32(p.s)[i] + 0.01f * (float)(i % 5);
    gradcheck(&p, "nearly parallel");
    free_pair(&p);
}

static void test_backward_accumulates_with_scale(void)
{
    pair p;
    make_pair(&p, 3, 5, 1.0f, 5);
    int64_t shape[2] = {3, 5};
    rt_tensor *g1 = rt_tensor_new(ctx, RT_DTYPE_F32, 2, shape), *g2 = rt_tensor_new(ctx, RT_DTYPE_F32, 2, shape);
    rt_tensor_fill(g2, 1.0);
    CHECK(rt_loss_backward(loss, ctx, &p.in, 1.0f, g1) == RT_STATUS_OK);
    CHECK(rt_loss_backward(loss, ctx, &p.in, 0.5f, g2) == RT_STATUS_OK);
    for (int i = 0; i < 15; i++) CHECK_NEAR(rt_f32(g2)[i], 1.0 + 0.5 * rt_f32(g1)[i], 1e-6);
    rt_tensor_release(g1);
    rt_tensor_release(g2);
    free_pair(&p);
}

static void test_zero_row_and_scale_invariance(void)
{
    pair p;
    make_pair(&p, 2, 6, 1.0f, 6);
    double before = fwd(&p);
    for (int i = 0; i < 12; i++) rt_f32(p.s)[i] *= 7.0f;
    CHECK_NEAR(fwd(&p), before, 1e-6);
    /* A zero student row: cos = 0 there, finite gradient. */
    for (int k = 0; k < 6; k++) rt_f32(p.s)[k] = 0;
    double v = fwd(&p);
    CHECK(isfinite(v));
    CHECK_NEAR(v, ref_loss(rt_f32(p.s), rt_f32(p.t), 2, 6, 1e-8), 1e-9);
    int64_t shape[2] = {2, 6};
    rt_tensor *g = rt_tensor_new(ctx, RT_DTYPE_F32, 2, shape);
    CHECK(rt_loss_backward(loss, ctx, &p.in, 1.0f, g) == RT_STATUS_OK);
    CHECK(rt_tensor_all_finite(g));
    rt_tensor_release(g);
    free_pair(&p);
}

static void test_shape_mismatch_is_an_error(void)
{
    pair p;
    make_pair(&p, 2, 6, 1.0f, 7);
    int64_t shape[2] = {2, 7};
    rt_tensor *t = rt_tensor_new(ctx, RT_DTYPE_F32, 2, shape);
    p.sig.logits = t;
    double v;
    CHECK(rt_loss_forward(loss, ctx, &p.in, &v) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "loss 'cosine_logits'");
    CHECK_CONTAINS(rt_ctx_message(ctx), "[2, 7]");
    rt_tensor_release(t);
    free_pair(&p);
}

int main(void)
{
    ctx = rt_ctx_new();
    reg = rt_registry_new();
    if (!ctx || !reg || load_plugin() != 0) {
        printf("test_example_loss: 0 passed, 1 failed\n");
        return 1;
    }
    RUN(test_forward_matches_reference);
    RUN(test_backward_finite_differences);
    RUN(test_backward_accumulates_with_scale);
    RUN(test_zero_row_and_scale_invariance);
    RUN(test_shape_mismatch_is_an_error);
    rt_instance_release(loss);
    rt_registry_free(reg);
    rt_ctx_free(ctx);
    return t_summary("test_example_loss");
}
