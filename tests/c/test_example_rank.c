/*
 * test_example_rank -- the out-of-tree example margin_rank
 * (examples/custom_loss/margin_rank.c) loads through the registry and
 * computes what its header says.
 *
 * The plugin comes from $RETORT_TEST_BUILD/examples/margin_rank.so when the
 * build made one; otherwise this test compiles the source itself with
 * `cc -shared -fPIC -Icore` into a temporary folder.  Run from the
 * repository root (tests/run.sh does).
 *
 * Checks: hand-computed values (all pairs, top_k, an order already kept by
 * the margin, a row of ties); the finite-difference gradient check of
 * retort.h at random logits; accumulation with a scale.
 */
#include <stdlib.h>
#include <unistd.h>

#include "retort.h"
#include "t.h"

static rt_ctx *ctx;
static rt_registry *reg;

static int load_plugin(void)
{
    /* Built by the Makefile with the plugins' flags (make all / make check). */
    char path[512];
    t_build_path(path, sizeof path, "examples/margin_rank.so");
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "  %s not found: run make first\n", path);
        return -1;
    }
    if (rt_registry_load(reg, ctx, path)) {
        fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
        return -1;
    }
    return 0;
}

static rt_instance *make(const char *opts)
{
    rt_instance *l = NULL;
    if (rt_instance_create(reg, ctx, RT_KIND_LOSS, "margin_rank", opts, &l))
        fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
    return l;
}

/* The loss of one batch given as float arrays [N, C]. */
static double value(rt_instance *l, const float *s, const float *t, int64_t N, int64_t C)
{
    int64_t shape[2] = {N, C};
    rt_tensor *ts = rt_tensor_from(ctx, RT_DTYPE_F32, 2, shape, s), *tt = rt_tensor_from(ctx, RT_DTYPE_F32, 2, shape, t);
    rt_signal sig = {.logits = tt};
    rt_loss_in in = {.student = ts, .teacher = &sig};
    double v = NAN;
    if (rt_loss_forward(l, ctx, &in, &v)) fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
    rt_tensor_release(ts);
    rt_tensor_release(tt);
    return v;
}

/* Teacher [3, 1, 2]: pairs (0,1), (0,2), (2,1).  By hand, margin 1:
 *   s = [0, 0, 0]    hinges 1, 1, 1         -> 1
 *   s = [2, 0, 1]    hinges 0, 0, 0         -> 0 (order kept by the margin)
 *   s = [0, 1, 0.5]  hinges 2, 1.5, 1.5     -> 5/3
 *   top_k = 1: pairs (0,1), (0,2) only      -> (2 + 1.5) / 2 = 1.75
 *   margin 0.5, s = [0, 1, 0.5]: 1.5, 1, 1  -> 3.5/3 */
static void test_hand_values(void)
{
    rt_instance *l = make(NULL), *k1 = make("{\"top_k\": 1}"), *m5 = make("{\"margin\": 0.5}");
    CHECK(l && k1 && m5);
    if (!l || !k1 || !m5) return;
    const float t[3] = {3, 1, 2};
    const float s0[3] = {0, 0, 0}, s1[3] = {2, 0, 1}, s2[3] = {0, 1, 0.5f};
    CHECK_NEAR(value(l, s0, t, 1, 3), 1.0, 1e-12);
    CHECK_NEAR(value(l, s1, t, 1, 3), 0.0, 1e-12);
    CHECK_NEAR(value(l, s2, t, 1, 3), 5.0 / 3, 1e-12);
    CHECK_NEAR(value(k1, s2, t, 1, 3), 1.75, 1e-12);
    CHECK_NEAR(value(m5, s2, t, 1, 3), 3.5 / 3, 1e-12);
    /* Batch mean: the two rows above average; a row of teacher ties has no
     * pair and contributes 0 (not NaN). */
    const float s2x[6] = {0, 0, 0, 0, 1, 0.5f}, t2[6] = {3, 1, 2, 3, 1, 2};
    CHECK_NEAR(value(l, s2x, t2, 2, 3), (1.0 + 5.0 / 3) / 2, 1e-12);
    const float tie[6] = {3, 1, 2, 7, 7, 7};
    CHECK_NEAR(value(l, s2x, tie, 2, 3), 1.0 / 2, 1e-12);
    rt_instance_release(l);
    rt_instance_release(k1);
    rt_instance_release(m5);
}

/* retort.h's checker at random logits (no exact kinks there), all pairs
 * and top_k = 3, and a batch of one. */
static void test_gradcheck(void)
{
    const char *opts[] = {NULL, "{\"top_k\": 3}", "{\"margin\": 0.3}"};
    for (int k = 0; k < 3; k++) {
        rt_instance *l = make(opts[k]);
        CHECK(l != NULL);
        if (!l) continue;
        rt_gradcheck_result r;
        CHECK(rt_gradcheck_loss(l, ctx, 6, 10, 11 + (uint64_t)k, 0, &r) == RT_STATUS_OK);
        if (!(r.max_rel_err <= 1e-3)) fprintf(stderr, "  %s: %.3g at %s\n", opts[k] ? opts[k] : "{}", r.max_rel_err, r.worst);
        CHECK(r.max_rel_err <= 1e-3);
        CHECK(r.checked > 0);
        CHECK(rt_gradcheck_loss(l, ctx, 1, 5, 3, 0, &r) == RT_STATUS_OK);
        CHECK(r.max_rel_err <= 1e-3);
        rt_instance_release(l);
    }
}

/* grad += scale * g: onto ones, scale 0.5. */
static void test_accumulates(void)
{
    rt_instance *l = make(NULL);
    if (!l) {
        CHECK(l != NULL);
        return;
    }
    int64_t shape[2] = {1, 3};
    const float s[3] = {0, 1, 0.5f}, t[3] = {3, 1, 2};
    rt_tensor *ts = rt_tensor_from(ctx, RT_DTYPE_F32, 2, shape, s), *tt = rt_tensor_from(ctx, RT_DTYPE_F32, 2, shape, t);
    rt_tensor *g = rt_tensor_new(ctx, RT_DTYPE_F32, 2, shape);
    rt_tensor_fill(g, 1.0);
    rt_signal sig = {.logits = tt};
    rt_loss_in in = {.student = ts, .teacher = &sig};
    CHECK(rt_loss_backward(l, ctx, &in, 0.5f, g) == RT_STATUS_OK);
    /* All three hinges active; each pair moves 1/3: class 0 is above in two
     * pairs (-2/3), class 1 below in two (+2/3), class 2 once each (0). */
    CHECK_NEAR(rt_f32(g)[0], 1 - 0.5 * 2.0 / 3, 1e-6);
    CHECK_NEAR(rt_f32(g)[1], 1 + 0.5 * 2.0 / 3, 1e-6);
    CHECK_NEAR(rt_f32(g)[2], 1.0, 1e-6);
    rt_tensor_release(ts);
    rt_tensor_release(tt);
    rt_tensor_release(g);
    rt_instance_release(l);
}

int main(void)
{
    ctx = rt_ctx_new();
    reg = rt_registry_new();
    if (!ctx || !reg || load_plugin() != 0) {
        printf("test_example_rank: 0 passed, 1 failed\n");
        return 1;
    }
    RUN(test_hand_values);
    RUN(test_gradcheck);
    RUN(test_accumulates);
    rt_registry_free(reg);
    rt_ctx_free(ctx);
    return t_summary("test_example_rank");
}
