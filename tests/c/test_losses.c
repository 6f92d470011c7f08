/*
 * test_losses.c -- golden values for the built-in losses (kd, ce,
 * mse_logits), computed independently here in double by the textbook
 * formulas on small fixed inputs, and the traps of docs/losses.md: KL(p||p) = 0,
 * the KL's asymmetry, batchmean (not mean), the T^2 factor's effect on the
 * gradient, shape and label errors, and a misspelled option.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "retort.h"
#include "t.h"

static rt_registry *reg;
static rt_ctx *ctx;

/* Two fixed inputs: 2x3 and 3x4 student and teacher logits and labels. */
static const float S23[6] = {1.0f, 2.0f, 0.5f, -1.0f, 0.0f, 3.0f};
static const float T23[6] = {0.5f, 2.5f, -0.5f, 0.0f, 1.0f, 2.0f};
static const int32_t Y2[2] = {1, 2};
static const float S34[12] = {0.3f, -1.2f, 2.2f, 0.0f, 1.5f, 1.5f, -0.5f, 0.7f, -2.0f, 0.1f, 0.4f, 3.3f};
static const float T34[12] = {1.0f, -0.5f, 1.8f, 0.2f, 0.0f, 2.5f, -1.0f, 0.3f, -1.5f, -0.2f, 1.1f, 2.9f};
static const int32_t Y3[3] = {2, 0, 3};

/* ------------------------------------------------- independent references */

/* log softmax(z / T) of one row, in double. */
static void ref_logsm(const float *z, int C, double T, double *out)
{
    double m = -INFINITY, s = 0;
    for (int c = 0; c < C; c++) m = fmax(m, z[c] / T);
    for (int c = 0; c < C; c++) s += exp(z[c] / T - m);
    for (int c = 0; c < C; c++) out[c] = z[c] / T - m - log(s);
}

/* T^2 (or 1) / N * sum_n KL(p_t || p_s); grad[N*C] = d/dz_s. */
static double ref_kd(const float *s, const float *t, int N, int C, double T, int t2, double *grad)
{
    double total = 0, f = t2 ? T * T : 1;
    for (int n = 0; n < N; n++) {
        double ls[16], lt[16];
        ref_logsm(s + n * C, C, T, ls);
        ref_logsm(t + n * C, C, T, lt);
        for (int c = 0; c < C; c++) {
            total += exp(lt[c]) * (lt[c] - ls[c]);
            if (grad) grad[n * C + c] = f / T / N * (exp(ls[c]) - exp(lt[c]));
        }
    }
    return f * total / N;
}

/* -(1/N) sum_n sum_c q_nc log p_nc, q = (1-eps) onehot + eps/C. */
static double ref_ce(const float *s, const int32_t *y, int N, int C, double eps, double *grad)
{
    double total = 0;
    for (int n = 0; n < N; n++) {
        double ls[16];
        ref_logsm(s + n * C, C, 1, ls);
        for (int c = 0; c < C; c++) {
            double q = (c == y[n] ? 1 - eps : 0) + eps / C;
            total -= q * ls[c];
            if (grad) grad[n * C + c] = (exp(ls[c]) - q) / N;
        }
    }
    return total / N;
}

static double ref_sq(const float *s, const float *t, int n)
{
    double total = 0;
    for (int i = 0; i < n; i++) total += ((double)s[i] - t[i]) * ((double)s[i] - t[i]);
    return total;
}

/* ------------------------------------------------------------------ helpers */


static rt_instance *make(const char *name, const char *opts)
{
    rt_instance *l = NULL;
    if (rt_instance_create(reg, ctx, RT_KIND_LOSS, name, opts, &l))
        fprintf(stderr, "  create %s %s: %s\n", name, opts ? opts : "", rt_ctx_message(ctx));
    return l;
}

/* Runs forward and backward (scale 1, into zeros) of loss l on the given
 * inputs; *value and grad[N*C].  Returns the status of the first failure. */
static rt_status run(rt_instance *l, const float *s, const float *t, const int32_t *y, int N, int C, double *value,
                     float *grad)
{
    int64_t sh[2] = {N, C};
    rt_tensor *ts = rt_tensor_from(ctx, RT_DTYPE_F32, 2, sh, s);
    rt_tensor *tt = t ? rt_tensor_from(ctx, RT_DTYPE_F32, 2, sh, t) : NULL;
    rt_tensor *ty = y ? rt_tensor_from(ctx, RT_DTYPE_I32, 1, sh, y) : NULL;
    rt_tensor *g = rt_tensor_new(ctx, RT_DTYPE_F32, 2, sh);
    rt_signal sig = {.logits = tt};
    rt_loss_in in = {.student = ts, .teacher = tt ? &sig : NULL, .target = ty};
    rt_status st = rt_loss_forward(l, ctx, &in, value);
    if (!st) st = rt_loss_backward(l, ctx, &in, 1.0f, g);
    if (!st && grad) memcpy(grad, rt_f32(g), sizeof(float) * (size_t)(N * C));
    if (st) fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
    rt_tensor_release(ts);
    rt_tensor_release(tt);
    rt_tensor_release(ty);
    rt_tensor_release(g);
    return st;
}

/* Gradients to 1e-5 of the largest entry: an entry is a difference of
 * float32 probabilities (p_s - p_t), which cancels to ~1e-7 absolute, so a
 * per-entry relative bound would measure the cancellation, not the loss. */
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

/* ------------------------------------------------------------ golden values */

static void test_kd_golden(void)
{
    static const struct {
        const char *opts;
        double T;
        int t2;
    } cases[] = {{NULL, 4, 1}, {"{\"temperature\":1}", 1, 1}, {"{\"temperature\":2.5,\"t2\":false}", 2.5, 0},
                 {"{\"temperature\":20}", 20, 1}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        rt_instance *l = make("kd", cases[k].opts);
        CHECK(l != NULL);
        if (!l) continue;
        double v, want[12];
        float g[12];
        CHECK(run(l, S23, T23, NULL, 2, 3, &v, g) == RT_STATUS_OK);
        CHECK_REL(v, ref_kd(S23, T23, 2, 3, cases[k].T, cases[k].t2, want));
        check_grad(g, want, 6);
        CHECK(run(l, S34, T34, NULL, 3, 4, &v, g) == RT_STATUS_OK);
        CHECK_REL(v, ref_kd(S34, T34, 3, 4, cases[k].T, cases[k].t2, want));
        check_grad(g, want, 12);
        rt_instance_release(l);
    }
    /* One value by hand, so the reference itself is pinned: row [0, 0]
     * vs teacher [log 3, 0] at T = 1: p_t = (3/4, 1/4), p_s = (1/2, 1/2),
     * KL = 3/4 log(3/2) + 1/4 log(1/2). */
    rt_instance *l = make("kd", "{\"temperature\":1}");
    if (!l) return;
    float s[2] = {0, 0}, t[2] = {(float)log(3.0), 0};
    double v;
    CHECK(run(l, s, t, NULL, 1, 2, &v, NULL) == RT_STATUS_OK);
    CHECK_REL(v, 0.75 * log(1.5) + 0.25 * log(0.5));
    rt_instance_release(l);
}

static void test_ce_golden(void)
{
    static const struct {
        const char *opts;
        double eps;
    } cases[] = {{NULL, 0}, {"{\"label_smoothing\":0.1}", 0.1}, {"{\"label_smoothing\":0.5}", 0.5}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        rt_instance *l = make("ce", cases[k].opts);
        CHECK(l != NULL);
        if (!l) continue;
        double v, want[12];
        float g[12];
        CHECK(run(l, S23, NULL, Y2, 2, 3, &v, g) == RT_STATUS_OK);
        CHECK_REL(v, ref_ce(S23, Y2, 2, 3, cases[k].eps, want));
        check_grad(g, want, 6);
        CHECK(run(l, S34, NULL, Y3, 3, 4, &v, g) == RT_STATUS_OK);
        CHECK_REL(v, ref_ce(S34, Y3, 3, 4, cases[k].eps, want));
        check_grad(g, want, 12);
        rt_instance_release(l);
    }
    /* By hand: logits [0, 0, 0], label 0: log 3. */
    rt_instance *l = make("ce", NULL);
    if (!l) return;
    float s[3] = {0, 0, 0};
    int32_t y[1] = {0};
    double v;
    CHECK(run(l, s, NULL, y, 1, 3, &v, NULL) == RT_STATUS_OK);
    CHECK_REL(v, log(3.0));
    rt_instance_release(l);
}

static void test_mse_golden(void)
{
    rt_instance *mean = make("mse_logits", NULL), *bm = make("mse_logits", "{\"reduction\":\"batchmean\"}");
    CHECK(mean && bm);
    if (!mean || !bm) goto out;
    double v, want[12];
    float g[12];
    CHECK(run(mean, S23, T23, NULL, 2, 3, &v, g) == RT_STATUS_OK);
    CHECK_REL(v, ref_sq(S23, T23, 6) / 6);
    for (int i = 0; i < 6; i++) want[i] = 2.0 * ((double)S23[i] - T23[i]) / 6;
    check_grad(g, want, 6);
    CHECK(run(bm, S34, T34, NULL, 3, 4, &v, g) == RT_STATUS_OK);
    CHECK_REL(v, ref_sq(S34, T34, 12) / 3);
    for (int i = 0; i < 12; i++) want[i] = 2.0 * ((double)S34[i] - T34[i]) / 3;
    check_grad(g, want, 12);
    CHECK(run(mean, S34, T34, NULL, 3, 4, &v, NULL) == RT_STATUS_OK);
    CHECK_REL(v, ref_sq(S34, T34, 12) / 12);
    /* By hand: (1 - 0)^2 + (0 - 2)^2 = 5 over one row of two. */
    float s[2] = {1, 0}, t[2] = {0, 2};
    CHECK(run(bm, s, t, NULL, 1, 2, &v, NULL) == RT_STATUS_OK);
    CHECK_REL(v, 5.0);
    CHECK(run(mean, s, t, NULL, 1, 2, &v, NULL) == RT_STATUS_OK);
    CHECK_REL(v, 2.5);
out:
    rt_instance_release(mean);
    rt_instance_release(bm);
}

/* ------------------------------------------------------------------- traps */

/* KL(p || p) = 0, with a zero gradient, at every temperature. */
static void test_kd_self_is_zero(void)
{
    const char *opts[] = {NULL, "{\"temperature\":1}", "{\"temperature\":0.01}", "{\"temperature\":100}"};
    for (size_t k = 0; k < sizeof opts / sizeof *opts; k++) {
        rt_instance *l = make("kd", opts[k]);
        if (!l) {
            CHECK(!"create");
            continue;
        }
        double v = 1;
        float g[12];
        CHECK(run(l, S34, S34, NULL, 3, 4, &v, g) == RT_STATUS_OK);
        CHECK(fabs(v) <= 1e-9);
        for (int i = 0; i < 12; i++) CHECK(fabs(g[i]) <= 1e-7);
        rt_instance_release(l);
    }
}

/* KL(p_t || p_s) != KL(p_s || p_t): swapping the arguments changes the
 * value, and each order matches its own formula (the direction is the
 * teacher first). */
static void test_kd_asymmetry(void)
{
    rt_instance *l = make("kd", "{\"temperature\":1}");
    if (!l) {
        CHECK(!"create");
        return;
    }
    double a, b;
    CHECK(run(l, S34, T34, NULL, 3, 4, &a, NULL) == RT_STATUS_OK);
    CHECK(run(l, T34, S34, NULL, 3, 4, &b, NULL) == RT_STATUS_OK);
    CHECK_REL(a, ref_kd(S34, T34, 3, 4, 1, 1, NULL));
    CHECK_REL(b, ref_kd(T34, S34, 3, 4, 1, 1, NULL));
    CHECK(fabs(a - b) > 1e-3 * fabs(a));
    /* The reverse direction KL(p_s || p_t) is what a swapped kl_div would
     * compute: it must not be what kd returns. */
    double rev = 0;
    for (int n = 0; n < 3; n++) {
        double ls[4], lt[4];
        ref_logsm(S34 + n * 4, 4, 1, ls);
        ref_logsm(T34 + n * 4, 4, 1, lt);
        for (int c = 0; c < 4; c++) rev += exp(ls[c]) * (ls[c] - lt[c]);
    }
    CHECK(fabs(a - rev / 3) > 1e-3 * fabs(a));
    rt_instance_release(l);
}

/* batchmean: sum over classes, mean over the batch, not over N * C. */
static void test_kd_batchmean(void)
{
    rt_instance *l = make("kd", "{\"temperature\":1}");
    if (!l) {
        CHECK(!"create");
        return;
    }
    double v, sum = 0;
    CHECK(run(l, S34, T34, NULL, 3, 4, &v, NULL) == RT_STATUS_OK);
    for (int n = 0; n < 3; n++) sum += ref_kd(S34 + n * 4, T34 + n * 4, 1, 4, 1, 1, NULL);
    CHECK_REL(v, sum / 3);
    CHECK(fabs(v - sum / 12) > 0.5 * fabs(v)); /* "mean" would be 4x smaller */
    rt_instance_release(l);
}

static double grad_norm(const char *opts, const float *s, const float *t, int N, int C)
{
    rt_instance *l = make("kd", opts);
    if (!l) return NAN;
    double v, n2 = 0;
    float g[64];
    if (run(l, s, t, NULL, N, C, &v, g)) n2 = NAN;
    for (int i = 0; i < N * C; i++) n2 += (double)g[i] * g[i];
    rt_instance_release(l);
    return sqrt(n2);
}

static double ref_grad_norm(const float *s, const float *t, int N, int C, double T, int t2)
{
    double g[64], n2 = 0;
    ref_kd(s, t, N, C, T, t2, g);
    for (int i = 0; i < N * C; i++) n2 += g[i] * g[i];
    return sqrt(n2);
}

/* T^2: Hinton's factor keeps the gradient's size as T grows (for T large
 * next to the logit gaps, T (p_s - p_t) -> (z_s - z_t) / C minus its
 * mean); without it the gradient shrinks as 1/T^2. */
static void test_kd_t2_gradient_scale(void)
{
    double g4 = grad_norm("{\"temperature\":4}", S34, T34, 3, 4);
    double g8 = grad_norm("{\"temperature\":8}", S34, T34, 3, 4);
    double r = g8 / g4, want = ref_grad_norm(S34, T34, 3, 4, 8, 1) / ref_grad_norm(S34, T34, 3, 4, 4, 1);
    printf("  t2=true:  |g(T=8)| / |g(T=4)| = %.6f (analytic %.6f)\n", r, want);
    CHECK_REL(r, want);
    CHECK(r > 0.9 && r < 1.1);
    double h4 = grad_norm("{\"temperature\":4,\"t2\":false}", S34, T34, 3, 4);
    double h8 = grad_norm("{\"temperature\":8,\"t2\":false}", S34, T34, 3, 4);
    double q = h8 / h4, wantq = ref_grad_norm(S34, T34, 3, 4, 8, 0) / ref_grad_norm(S34, T34, 3, 4, 4, 0);
    printf("  t2=false: |g(T=8)| / |g(T=4)| = %.6f (analytic %.6f, 1/T^2 ratio 0.25)\n", q, wantq);
    CHECK_REL(q, wantq);
    CHECK(q > 0.2 && q < 0.3);
    /* And the factor itself: t2 = true is exactly T^2 times t2 = false. */
    CHECK_REL(g4 / h4, 16.0);
}

static void test_shape_mismatch_message(void)
{
    rt_instance *l = make("kd", NULL);
    if (!l) {
        CHECK(!"create");
        return;
    }
    int64_t a[2] = {2, 3}, b[2] = {2, 4};
    rt_tensor *s = rt_tensor_new(ctx, RT_DTYPE_F32, 2, a), *t = rt_tensor_new(ctx, RT_DTYPE_F32, 2, b);
    rt_tensor *g = rt_tensor_new(ctx, RT_DTYPE_F32, 2, a);
    rt_signal sig = {.logits = t};
    rt_loss_in in = {.student = s, .teacher = &sig};
    double v;
    CHECK(rt_loss_forward(l, ctx, &in, &v) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "loss 'kd'");
    CHECK_CONTAINS(rt_ctx_message(ctx), "student logits [2, 3] vs teacher logits [2, 4]");
    CHECK(rt_loss_backward(l, ctx, &in, 1.0f, g) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "student logits [2, 3] vs teacher logits [2, 4]");
    rt_tensor_release(s);
    rt_tensor_release(t);
    rt_tensor_release(g);
    rt_instance_release(l);
}

static void test_label_out_of_range(void)
{
    rt_instance *l = make("ce", NULL);
    if (!l) {
        CHECK(!"create");
        return;
    }
    const int32_t bad[2][2] = {{1, 3}, {-1, 0}};
    for (int k = 0; k < 2; k++) {
        double v = 0;
        CHECK(run(l, S23, NULL, bad[k], 2, 3, &v, NULL) == RT_STATUS_ERR_ARG);
        CHECK_CONTAINS(rt_ctx_message(ctx), "loss 'ce'");
        CHECK_CONTAINS(rt_ctx_message(ctx), k ? "target label -1 at row 0" : "target label 3 at row 1");
    }
    rt_instance_release(l);
}

static void test_misspelled_option(void)
{
    rt_instance *l = NULL;
    CHECK(rt_instance_create(reg, ctx, RT_KIND_LOSS, "kd", "{\"temprature\":4}", &l) == RT_STATUS_ERR_ARG);
    CHECK(l == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), "loss 'kd'");
    CHECK_CONTAINS(rt_ctx_message(ctx), "unknown option 'temprature' (did you mean 'temperature'?)");
}

int main(void)
{
    char dir[600];
    t_build_path(dir, sizeof dir, "lib/retort/plugins");
    ctx = rt_ctx_new();
    reg = rt_registry_new();
    if (!ctx || !reg || rt_registry_load_dir(reg, ctx, dir, 0, NULL)) {
        fprintf(stderr, "cannot load %s: %s\n", dir, ctx ? rt_ctx_message(ctx) : "no context");
        printf("test_losses: 0 passed, 1 failed\n");
        return 1;
    }
    RUN(test_kd_golden);
    RUN(test_ce_golden);
    RUN(test_mse_golden);
    RUN(test_kd_self_is_zero);
    RUN(test_kd_asymmetry);
    RUN(test_kd_batchmean);
    RUN(test_kd_t2_gradient_scale);
    RUN(test_shape_mismatch_message);
    RUN(test_label_out_of_range);
    RUN(test_misspelled_option);
    rt_registry_free(reg);
    rt_ctx_free(ctx);
    return t_summary("test_losses");
}
