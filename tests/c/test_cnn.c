/*
 * test_cnn.c -- the cnn student and the feature losses (issue 10):
 *   - the cnn's parameter names, shapes and roles are PyTorch's state_dict
 *     of the equivalent nn.Sequential model; every layer is a feature;
 *   - batch norm's eval mode uses the running statistics (hand-computed
 *     values); train mode updates them as PyTorch (momentum 0.1, unbiased
 *     variance, num_batches_tracked), and eval afterwards uses the new ones;
 *   - a tap's gradient reaches the input as finite differences say;
 *   - golden values of hint, attention, rkd, feature_mse and
 *     feature_cosine against double-precision references written here from
 *     the papers' formulas, and their feature gradients against finite
 *     differences of those references; masks and refusals.
 * The gradient checks of every layer and loss are in test_gradcheck.c.
 */
#include "retort.h"
#include "t.h"

static rt_ctx *ctx;
static rt_registry *reg;

static rt_instance *make(rt_kind kind, const char *name, const char *opts)
{
    rt_instance *i = NULL;
    if (rt_instance_create(reg, ctx, kind, name, opts, &i)) fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
    return i;
}

static rt_param *find(rt_param *p, int n, const char *name)
{
    for (int k = 0; k < n; k++)
        if (!strcmp(p[k].name, name)) return &p[k];
    return NULL;
}

static int shape_is(const rt_tensor *t, int nd, int64_t a, int64_t b, int64_t c, int64_t d)
{
    int64_t s[4] = {a, b, c, d};
    if (t->ndim != nd) return 0;
    for (int k = 0; k < nd; k++)
        if (t->shape[k] != s[k]) return 0;
    return 1;
}

/* ------------------------------------------------------------- the cnn */

static void test_cnn_state_dict_names(void)
{
    rt_instance *s = make(RT_KIND_STUDENT, "cnn", NULL);
    CHECK(s != NULL);
    if (!s) return;
    int n = 0;
    rt_param *p = rt_instance_params_all(s, ctx, &n);
    CHECK(p && n == 18); /* conv w b, bn w b rm rv nbt, twice; two linears */
    if (!p) return;
    static const char *const want[18] = {
        "features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias", "features.1.running_mean",
        "features.1.running_var", "features.1.num_batches_tracked", "features.4.weight", "features.4.bias",
        "features.5.weight", "features.5.bias", "features.5.running_mean", "features.5.running_var",
        "features.5.num_batches_tracked", "classifier.0.weight", "classifier.0.bias", "classifier.2.weight",
        "classifier.2.bias"};
    for (int k = 0; k < n && k < 18; k++) CHECK_CONTAINS(p[k].name, want[k]);
    rt_param *q;
    CHECK((q = find(p, n, "features.0.weight")) && shape_is(q->value, 4, 32, 1, 3, 3));
    CHECK((q = find(p, n, "features.4.weight")) && shape_is(q->value, 4, 64, 32, 3, 3));
    CHECK((q = find(p, n, "classifier.0.weight")) && shape_is(q->value, 2, 256, 64 * 7 * 7, 0, 0));
    CHECK((q = find(p, n, "classifier.2.weight")) && shape_is(q->value, 2, 10, 256, 0, 0));
    CHECK((q = find(p, n, "features.1.running_var")) && q->role == RT_ROLE_BUFFER && !q->grad &&
          rt_f32(q->value)[0] == 1.0f);
    CHECK((q = find(p, n, "features.1.num_batches_tracked")) && q->role == RT_ROLE_BUFFER &&
          q->value->dtype == RT_DTYPE_I64 && q->value->ndim == 0 && rt_i64(q->value)[0] == 0);
    CHECK((q = find(p, n, "features.1.weight")) && q->role == RT_ROLE_TRAINABLE && q->grad);
    free(p);
    /* every layer is a feature, named as its module */
    const char *names[16];
    CHECK(rt_instance_features(s, names, 16) == 11);
    CHECK(!strcmp(names[0], "features.0") && !strcmp(names[7], "features.7") && !strcmp(names[8], "classifier.0") &&
          !strcmp(names[10], "classifier.2"));
    /* [N, 784] (Fashion-MNIST) and [N, 1, 28, 28] are the same input */
    int64_t s2[2] = {2, 784}, s4[4] = {2, 1, 28, 28};
    rt_tensor *x2 = rt_tensor_new(ctx, RT_DTYPE_F32, 2, s2), *x4 = rt_tensor_new(ctx, RT_DTYPE_F32, 4, s4), *out = NULL;
    for (int k = 0; k < 2 * 784; k++) rt_f32(x2)[k] = rt_f32(x4)[k] = (float)sin(k * 0.37);
    CHECK(rt_instance_record(s, ctx, "features.3", 1) == RT_STATUS_OK);
    CHECK(rt_student_forward(s, ctx, x2, 0, &out) == RT_STATUS_OK);
    float o2[20];
    memcpy(o2, rt_f32(out), sizeof o2);
    rt_tensor *f3 = rt_instance_feature(s, "features.3");
    CHECK(f3 && shape_is(f3, 4, 2, 32, 14, 14));
    CHECK(rt_instance_feature(s, "features.2") == NULL); /* not recorded: not handed out */
    CHECK(rt_student_forward(s, ctx, x4, 0, &out) == RT_STATUS_OK);
    CHECK(!memcmp(o2, rt_f32(out), sizeof o2));
    /* refusals name the fix */
    CHECK(rt_instance_record(s, ctx, "features.99", 1) == RT_STATUS_ERR_ARG);
    rt_instance *bad = NULL;
    CHECK(rt_instance_create(reg, ctx, RT_KIND_STUDENT, "cnn", "{\"layers\":\"conv8x3,relu,fc10\"}", &bad) ==
          RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "'fc10' is not a feature layer");
    CHECK(rt_instance_create(reg, ctx, RT_KIND_STUDENT, "cnn", "{\"layers\":\"conv8x3,flatten,fc10,relu\"}", &bad) ==
          RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "must end with 'flatten', then fc layers");
    CHECK(rt_instance_create(reg, ctx, RT_KIND_STUDENT, "cnn", "{\"input\":[1,4,4],\"layers\":\"conv8x7p0,flatten,fc2\"}",
                             &bad) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "layer features.0 ('conv8x7p0') does not fit its input [1, 4, 4]");
    rt_tensor_release(x2);
    rt_tensor_release(x4);
    rt_instance_release(s);
}

/* Batch norm, eval mode, against numbers worked by hand:
 *   x = [1, 3 | -2, 4] (N 1, C 2, H 1, W 2), running_mean [1, -1],
 *   running_var [4, 0.25], weight [2, 0.5], bias [0.5, -1], eps 1e-5:
 *   (1 - 1) / sqrt(4.00001) 2 + 0.5           = 0.5
 *   (3 - 1) / sqrt(4.00001) 2 + 0.5           = 2.49999750...
 *   (-2 + 1) / sqrt(0.25001) 0.5 - 1          = -1.99998000...
 *   (4 + 1) / sqrt(0.25001) 0.5 - 1           = 3.99990000...
 * (sqrt(4.00001) = 2.0000025, sqrt(0.25001) = 0.50001 to 1e-10.) */
static void test_batchnorm_eval_and_train(void)
{
    rt_instance *s = make(RT_KIND_STUDENT, "cnn", "{\"input\":[2,1,2],\"layers\":\"bn,flatten,fc1\"}");
    CHECK(s != NULL);
    if (!s) return;
    int n = 0;
    rt_param *p = rt_instance_params_all(s, ctx, &n);
    rt_param *w = find(p, n, "features.0.weight"), *b = find(p, n, "features.0.bias");
    rt_param *rm = find(p, n, "features.0.running_mean"), *rv = find(p, n, "features.0.running_var");
    rt_param *nbt = find(p, n, "features.0.num_batches_tracked");
    CHECK(w && b && rm && rv && nbt);
    if (!(w && b && rm && rv && nbt)) return;
    float W[2] = {2, 0.5f}, B[2] = {0.5f, -1}, RM[2] = {1, -1}, RV[2] = {4, 0.25f};
    memcpy(rt_f32(w->value), W, sizeof W);
    memcpy(rt_f32(b->value), B, sizeof B);
    memcpy(rt_f32(rm->value), RM, sizeof RM);
    memcpy(rt_f32(rv->value), RV, sizeof RV);
    CHECK(rt_instance_record(s, ctx, "features.0", 1) == RT_STATUS_OK);
    int64_t xs[4] = {1, 2, 1, 2};
    float xv[4] = {1, 3, -2, 4};
    rt_tensor *x = rt_tensor_from(ctx, RT_DTYPE_F32, 4, xs, xv), *out = NULL;
    CHECK(rt_student_forward(s, ctx, x, 0, &out) == RT_STATUS_OK);
    rt_tensor *y = rt_instance_feature(s, "features.0");
    CHECK(y && rt_numel(y) == 4);
    if (y) {
        CHECK_NEAR(rt_f32(y)[0], 0.5, 1e-6);
        CHECK_NEAR(rt_f32(y)[1], 2.4999975, 1e-6);
        CHECK_NEAR(rt_f32(y)[2], -1.99998, 1e-6);
        CHECK_NEAR(rt_f32(y)[3], 3.9999, 1e-6);
    }
    CHECK(rt_i64(nbt->value)[0] == 0); /* eval leaves the buffers alone */
    CHECK(rt_f32(rm->value)[0] == 1.0f);
    /* train on a batch of 2: x = [[1, 3], [-2, 4]] / [[5, 7], [0, 0]] per
     * channel (N 2, C 2, H 1, W 2).  Channel 0 values 1 3 5 7: mean 4,
     * biased var 5, unbiased 20/3; channel 1 values -2 4 0 0: mean 0.5,
     * biased var 4.75, unbiased 19/3. */
    int64_t x2s[4] = {2, 2, 1, 2};
    float x2v[8] = {1, 3, -2, 4, 5, 7, 0, 0};
    rt_tensor *x2 = rt_tensor_from(ctx, RT_DTYPE_F32, 4, x2s, x2v);
    CHECK(rt_student_forward(s, ctx, x2, 1, &out) == RT_STATUS_OK);
    y = rt_instance_feature(s, "features.0");
    CHECK_NEAR(rt_f32(y)[0], (1 - 4) / sqrt(5 + 1e-5) * 2 + 0.5, 1e-5); /* batch statistics */
    CHECK_NEAR(rt_f32(rm->value)[0], 0.9 * 1 + 0.1 * 4, 1e-6);
    CHECK_NEAR(rt_f32(rm->value)[1], 0.9 * -1 + 0.1 * 0.5, 1e-6);
    CHECK_NEAR(rt_f32(rv->value)[0], 0.9 * 4 + 0.1 * 20.0 / 3, 1e-6);
    CHECK_NEAR(rt_f32(rv->value)[1], 0.9 * 0.25 + 0.1 * 19.0 / 3, 1e-6);
    CHECK(rt_i64(nbt->value)[0] == 1);
    /* eval now uses the updated running statistics */
    CHECK(rt_student_forward(s, ctx, x, 0, &out) == RT_STATUS_OK);
    y = rt_instance_feature(s, "features.0");
    CHECK_NEAR(rt_f32(y)[1], (3 - 1.3) / sqrt(0.9 * 4 + 0.1 * 20.0 / 3 + 1e-5) * 2 + 0.5, 1e-5);
    free(p);
    rt_tensor_release(x);
    rt_tensor_release(x2);
    rt_instance_release(s);
}

/* f(x) = sum(wf * feature(x)): backward with a zero output gradient and a
 * tap wf on the feature gives df/dx, checked by central differences (the
 * layers up to the feature are linear in eval mode: conv, bn, avgpool). */
static void test_tap_reaches_input(void)
{
    rt_instance *s = make(RT_KIND_STUDENT, "cnn", "{\"input\":[2,6,6],\"layers\":\"conv3x3,bn,avgpool2,relu,flatten,fc4\"}");
    CHECK(s != NULL);
    if (!s) return;
    CHECK(rt_instance_record(s, ctx, "features.2", 1) == RT_STATUS_OK);
    int64_t xs[4] = {2, 2, 6, 6};
    rt_tensor *x = rt_tensor_new(ctx, RT_DTYPE_F32, 4, xs), *out = NULL, *gin = NULL;
    for (int64_t k = 0; k < rt_numel(x); k++) rt_f32(x)[k] = (float)cos(0.7 * k);
    CHECK(rt_student_forward(s, ctx, x, 0, &out) == RT_STATUS_OK);
    rt_tensor *f = rt_instance_feature(s, "features.2");
    CHECK(f && f->ndim == 4 && f->shape[1] == 3 && f->shape[2] == 3);
    if (!f) return;
    rt_tensor *wf = rt_tensor_new(ctx, RT_DTYPE_F32, f->ndim, f->shape);
    rt_tensor *go = rt_tensor_new(ctx, RT_DTYPE_F32, out->ndim, out->shape); /* zeros */
    for (int64_t k = 0; k < rt_numel(wf); k++) rt_f32(wf)[k] = (float)sin(1.3 * k + 0.2);
    rt_tap tap = {"features.2", wf};
    rt_student_zero_grad(s);
    CHECK(rt_student_backward(s, ctx, go, &tap, 1, &gin) == RT_STATUS_OK);
    CHECK(gin && rt_numel(gin) == rt_numel(x));
    if (!gin) return;
    float *g = malloc(sizeof(float) * (size_t)rt_numel(gin));
    memcpy(g, rt_f32(gin), sizeof(float) * (size_t)rt_numel(gin));
    double worst = 0, gmax = 0;
    for (int64_t k = 0; k < rt_numel(x); k += 7) {
        double v[2];
        float x0 = rt_f32(x)[k];
        for (int side = 0; side < 2; side++) {
            rt_f32(x)[k] = x0 + (side ? 0.01f : -0.01f);
            CHECK(rt_student_forward(s, ctx, x, 0, &out) == RT_STATUS_OK);
            f = rt_instance_feature(s, "features.2");
            v[side] = 0;
            for (int64_t j = 0; j < rt_numel(f); j++) v[side] += (double)rt_f32(wf)[j] * rt_f32(f)[j];
        }
        rt_f32(x)[k] = x0;
        double num = (v[1] - v[0]) / ((double)(x0 + 0.01f) - (double)(x0 - 0.01f));
        worst = fmax(worst, fabs(num - g[k]));
        gmax = fmax(gmax, fabs(g[k]));
    }
    CHECK(gmax > 0);
    CHECK(worst <= 1e-3 * gmax + 1e-5);
    /* an unknown tap is refused */
    rt_tap bad = {"features.9", wf};
    CHECK(rt_student_backward(s, ctx, go, &bad, 1, NULL) == RT_STATUS_ERR_ARG);
    free(g);
    rt_tensor_release(wf);
    rt_tensor_release(go);
    rt_tensor_release(x);
    rt_instance_release(s);
}

/* The resnet's gradients, checked where float32 finite differences can
 * resolve them: every relu here is piecewise linear with kinks everywhere
 * near a random point of a deep net, and the first layers' gradients are
 * ~1e-4 of the output at random initialisation.  So every batch norm's
 * bias is +8 on even channels and -8 on odd ones: even channels stay
 * alive and odd ones dead throughout (no kink within reach of the
 * stencil), both sides of every relu mask are exercised, and the
 * gradients are of the output's size.  (A copy with every relu replaced
 * by the identity passes the suite's 1e-3 at random points; the suite's
 * own check, test_gradcheck.c, runs the configuration the plugin names.)  Both
 * shortcut kinds (identity in
 * layer1, downsample in layer2 and layer3), taps aside. */
static void test_resnet_gradients(void)
{
    rt_instance *s = make(RT_KIND_STUDENT, "resnet", "{\"input\":[2,6,6],\"depth\":8,\"width\":3,\"classes\":4}");
    CHECK(s != NULL);
    if (!s) return;
    int n = 0, nds = 0;
    rt_param *p = rt_instance_params_all(s, ctx, &n);
    for (int k = 0; p && k < n; k++) {
        size_t L = strlen(p[k].name);
        if (L > 5 && !strcmp(p[k].name + L - 5, ".bias") && strstr(p[k].name, "bn") + 0 != NULL)
            for (int64_t i = 0; i < rt_numel(p[k].value); i++) rt_f32(p[k].value)[i] = i % 2 ? -8.0f : 8.0f;
        if (L > 5 && !strcmp(p[k].name + L - 5, ".bias") && strstr(p[k].name, "downsample.1"))
            for (int64_t i = 0; i < rt_numel(p[k].value); i++) rt_f32(p[k].value)[i] = i % 2 ? -8.0f : 8.0f;
        nds += strstr(p[k].name, "downsample.0.weight") != NULL;
    }
    CHECK(nds == 2);
    CHECK(find(p, n, "layer1.0.conv1.weight") && find(p, n, "layer3.0.bn2.num_batches_tracked") && find(p, n, "fc.bias"));
    rt_gradcheck_result res;
    rt_status st = rt_gradcheck_student(s, ctx, 3, NULL, 0, 21, 0.1, &res);
    if (st) fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
    printf("  resnet: worst %.2e (%s), %lld checked, %lld skipped\n", res.max_rel_err, res.worst,
           (long long)res.checked, (long long)res.skipped);
    /* Tolerance 2e-2: the activations here are ~8-16, so the float32
     * rounding of the output is a few 1e-3 of the smaller gradients
     * (2e-3 with gcc, 4e-3 with clang, measured); a wrong backward (the
     * identity shortcut's gradient dropped, the inner relu's mask
     * skipped) gives errors near 1. */
    CHECK(st == RT_STATUS_OK && res.max_rel_err <= 2e-2 && res.checked >= 200);
    const char *names[128];
    int nf = rt_instance_features(s, names, 128);
    CHECK(nf == 3 + 3 * 6 + 3 + 2 && !strcmp(names[3], "layer1.0.conv1") && !strcmp(names[8], "layer1.0"));
    free(p);
    rt_instance_release(s);
}

/* ----------------------------------------------- feature loss references */

/* Double-precision references written from the papers' formulas, one
 * sample or one batch at a time, over the flattened features. */
typedef double (*ref_fn)(const double *s, const double *t, const double *W, const double *b, const int64_t *dims);

/* dims: N, Cs, Ct, P (positions).  Projection r = W s + b per position, or
 * s itself when W is NULL. */
static void project(const double *s, const double *W, const double *b, const int64_t *d, int64_t n, double *r)
{
    int64_t Cs = d[1], Ct = d[2], P = d[3];
    for (int64_t c = 0; c < Ct; c++)
        for (int64_t q = 0; q < P; q++) {
            double v = W ? b[c] : s[n * Cs * P + c * P + q];
            for (int64_t k = 0; W && k < Cs; k++) v += W[c * Cs + k] * s[n * Cs * P + k * P + q];
            r[c * P + q] = v;
        }
}

static double ref_hint(const double *s, const double *t, const double *W, const double *b, const int64_t *d)
{
    double r[64], v = 0;
    for (int64_t n = 0; n < d[0]; n++) {
        project(s, W, b, d, n, r);
        for (int64_t k = 0; k < d[2] * d[3]; k++) v += 0.5 * pow(r[k] - t[n * d[2] * d[3] + k], 2);
    }
    return v / (double)d[0];
}

static double ref_mse(const double *s, const double *t, const double *W, const double *b, const int64_t *d)
{
    double r[64], v = 0, m = (double)(d[2] * d[3]);
    for (int64_t n = 0; n < d[0]; n++) {
        project(s, W, b, d, n, r);
        for (int64_t k = 0; k < d[2] * d[3]; k++) v += pow(r[k] - t[n * d[2] * d[3] + k], 2) / m;
    }
    return v / (double)d[0];
}

static double ref_cosine(const double *s, const double *t, const double *W, const double *b, const int64_t *d)
{
    double r[64], v = 0;
    for (int64_t n = 0; n < d[0]; n++) {
        project(s, W, b, d, n, r);
        double rr = 0, tt = 0, rt = 0;
        for (int64_t k = 0; k < d[2] * d[3]; k++) {
            double tk = t[n * d[2] * d[3] + k];
            rr += r[k] * r[k], tt += tk * tk, rt += r[k] * tk;
        }
        v += 1 - rt / (fmax(sqrt(rr), 1e-8) * fmax(sqrt(tt), 1e-8));
    }
    return v / (double)d[0];
}

/* AT: Q_j = mean_c f_cj^2, q = Q / |Q|, mean_j (q_s - q_t)^2 per sample. */
static double ref_attention(const double *s, const double *t, const double *W, const double *b, const int64_t *d)
{
    (void)W, (void)b;
    int64_t N = d[0], Cs = d[1], Ct = d[2], P = d[3];
    double v = 0;
    for (int64_t n = 0; n < N; n++) {
        double qs[16], qt[16], ns = 0, nt = 0;
        for (int64_t j = 0; j < P; j++) {
            qs[j] = qt[j] = 0;
            for (int64_t c = 0; c < Cs; c++) qs[j] += pow(s[(n * Cs + c) * P + j], 2) / (double)Cs;
            for (int64_t c = 0; c < Ct; c++) qt[j] += pow(t[(n * Ct + c) * P + j], 2) / (double)Ct;
            ns += qs[j] * qs[j], nt += qt[j] * qt[j];
        }
        for (int64_t j = 0; j < P; j++) v += pow(qs[j] / sqrt(ns) - qt[j] / sqrt(nt), 2) / (double)P;
    }
    return v / (double)N;
}

static double huber(double x) { return fabs(x) < 1 ? 0.5 * x * x : fabs(x) - 0.5; }

/* RKD with weights 25 and 50 over x [N, D] rows. */
static double ref_rkd(const double *s, const double *t, const double *W, const double *b, const int64_t *d)
{
    (void)W, (void)b;
    int64_t N = d[0], Ds = d[1], Dt = d[2];
    double dS[8][8], dT[8][8], ms = 0, mt = 0;
    int cs = 0, ct = 0;
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++) {
            double a = 0, c = 0;
            for (int64_t k = 0; k < Ds; k++) a += pow(s[i * Ds + k] - s[j * Ds + k], 2);
            for (int64_t k = 0; k < Dt; k++) c += pow(t[i * Dt + k] - t[j * Dt + k], 2);
            dS[i][j] = sqrt(a), dT[i][j] = sqrt(c);
            if (dS[i][j] > 0) ms += dS[i][j], cs++;
            if (dT[i][j] > 0) mt += dT[i][j], ct++;
        }
    ms /= cs, mt /= ct;
    double LD = 0, LA = 0;
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++) LD += huber(dS[i][j] / ms - dT[i][j] / mt) / (double)(N * N);
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++)
            for (int64_t k = 0; k < N; k++) {
                double as = 0, at = 0;
                if (j != i && k != i) {
                    for (int64_t q = 0; q < Ds; q++) as += (s[j * Ds + q] - s[i * Ds + q]) * (s[k * Ds + q] - s[i * Ds + q]);
                    for (int64_t q = 0; q < Dt; q++) at += (t[j * Dt + q] - t[i * Dt + q]) * (t[k * Dt + q] - t[i * Dt + q]);
                    as /= dS[i][j] * dS[i][k];
                    at /= dT[i][j] * dT[i][k];
                }
                LA += huber(as - at) / (double)(N * N * N);
            }
    return 25 * LD + 50 * LA;
}

/* Runs loss `name` on student feature shape ss and teacher shape ts (4-d
 * or 2-d), compares its value with ref and its feature gradient with
 * central differences of ref (h 1e-5 in double). */
static void golden(const char *name, const char *opts, int nds, const int64_t *ss, int ndt, const int64_t *ts,
                   const int64_t *dims, ref_fn ref, int has_proj)
{
    rt_instance *l = make(RT_KIND_LOSS, name, opts);
    CHECK(l != NULL);
    if (!l) return;
    int64_t N = ss[0], os[2] = {N, 3};
    rt_tensor *sf = rt_tensor_new(ctx, RT_DTYPE_F32, nds, ss), *tf = rt_tensor_new(ctx, RT_DTYPE_F32, ndt, ts);
    rt_tensor *logits = rt_tensor_new(ctx, RT_DTYPE_F32, 2, os), *g = rt_tensor_new(ctx, RT_DTYPE_F32, 2, os);
    rt_tensor *fg = rt_tensor_new(ctx, RT_DTYPE_F32, nds, ss);
    int64_t ns = rt_numel(sf), nt = rt_numel(tf);
    double S[64], T[64], Wd[64], Bd[16];
    for (int64_t k = 0; k < ns; k++) S[k] = rt_f32(sf)[k] = (float)(sin(0.9 * k + 0.3) * (1 + 0.1 * k));
    for (int64_t k = 0; k < nt; k++) T[k] = rt_f32(tf)[k] = (float)cos(0.45 * k - 0.2);
    const rt_tensor *feats[2] = {sf, tf};
    rt_tensor *fgs[2] = {fg, NULL};
    rt_loss_in in = {.student = logits, .features = feats, .nfeatures = 2, .feature_grads = fgs};
    double v = 0;
    CHECK(rt_loss_forward(l, ctx, &in, &v) == RT_STATUS_OK);
    const double *W = NULL, *B = NULL;
    if (has_proj) {
        int n = 0;
        rt_param *p = rt_instance_params_all(l, ctx, &n);
        CHECK(p && n == 2);
        if (!p || n != 2) return;
        for (int64_t k = 0; k < rt_numel(p[0].value); k++) Wd[k] = rt_f32(p[0].value)[k];
        for (int64_t k = 0; k < rt_numel(p[1].value); k++) Bd[k] = rt_f32(p[1].value)[k];
        W = Wd, B = Bd;
        free(p);
    } else {
        CHECK(rt_instance_param_count(l) == 0);
    }
    double want = ref(S, T, W, B, dims);
    printf("  %-15s value %.10g, reference %.10g\n", name, v, want);
    CHECK_REL(v, want);
    CHECK(rt_loss_backward(l, ctx, &in, 1.0f, g) == RT_STATUS_OK);
    for (int k = 0; k < 2 * 3; k++) CHECK(rt_f32(g)[k] == 0); /* nothing into the logits */
    double worst = 0, gmax = 0;
    for (int64_t k = 0; k < ns; k++) {
        double s0 = S[k];
        S[k] = s0 + 1e-5;
        double up = ref(S, T, W, B, dims);
        S[k] = s0 - 1e-5;
        double dn = ref(S, T, W, B, dims);
        S[k] = s0;
        double num = (up - dn) / 2e-5;
        worst = fmax(worst, fabs(num - rt_f32(fg)[k]));
        gmax = fmax(gmax, fabs(num));
    }
    CHECK(gmax > 0);
    CHECK(worst <= 1e-4 * gmax + 1e-7);
    if (worst > 1e-4 * gmax + 1e-7) fprintf(stderr, "  %s: feature gradient off by %g (largest %g)\n", name, worst, gmax);
    rt_tensor *ts_[] = {sf, tf, logits, g, fg};
    for (size_t k = 0; k < 5; k++) rt_tensor_release(ts_[k]);
    rt_instance_release(l);
}

static void test_feature_loss_golden_values(void)
{
    int64_t s4[4] = {2, 2, 1, 3}, t4[4] = {2, 4, 1, 3}, t4same[4] = {2, 2, 1, 3};
    int64_t d_proj[4] = {2, 2, 4, 3}, d_same[4] = {2, 2, 2, 3};
    /* hint: a 1x1-conv regressor [4, 2, 1, 1] */
    golden("hint", NULL, 4, s4, 4, t4, d_proj, ref_hint, 1);
    golden("feature_mse", NULL, 4, s4, 4, t4, d_proj, ref_mse, 1);      /* widths differ: projection */
    golden("feature_mse", NULL, 4, s4, 4, t4same, d_same, ref_mse, 0); /* same widths: none */
    golden("feature_cosine", NULL, 4, s4, 4, t4, d_proj, ref_cosine, 1);
    golden("feature_cosine", NULL, 4, s4, 4, t4same, d_same, ref_cosine, 0);
    golden("attention", NULL, 4, s4, 4, t4, d_proj, ref_attention, 0);
    /* rkd: 5 samples, widths 3 and 2 */
    int64_t rs[2] = {5, 3}, rt[2] = {5, 2}, d_rkd[4] = {5, 3, 2, 1};
    golden("rkd", NULL, 2, rs, 2, rt, d_rkd, ref_rkd, 0);
    /* a linear hint on [N, D] features: regressor [Dt, Ds] */
    int64_t ls[2] = {3, 4}, lt[2] = {3, 2}, d_lin[4] = {3, 4, 2, 1};
    golden("hint", NULL, 2, ls, 2, lt, d_lin, ref_hint, 1);
}

/* Masks skip samples; shapes that cannot be compared are refused with
 * both shapes named. */
static void test_feature_loss_refusals(void)
{
    int64_t s4[4] = {2, 2, 2, 2}, t4[4] = {2, 2, 1, 2}, os[2] = {2, 3}, ms = 2;
    rt_tensor *sf = rt_tensor_new(ctx, RT_DTYPE_F32, 4, s4), *tf = rt_tensor_new(ctx, RT_DTYPE_F32, 4, t4);
    rt_tensor *tf2 = rt_tensor_new(ctx, RT_DTYPE_F32, 4, s4);
    rt_tensor *logits = rt_tensor_new(ctx, RT_DTYPE_F32, 2, os), *m = rt_tensor_new(ctx, RT_DTYPE_I32, 1, &ms);
    for (int k = 0; k < 16; k++) rt_f32(sf)[k] = (float)(k % 5), rt_f32(tf2)[k] = (float)(k % 3);
    const rt_tensor *feats[2] = {sf, tf};
    rt_loss_in in = {.student = logits, .features = feats, .nfeatures = 2};
    double v;
    rt_instance *a = make(RT_KIND_LOSS, "attention", NULL);
    CHECK(a && rt_loss_forward(a, ctx, &in, &v) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "different spatial sizes (4 vs 2 positions)");
    /* mask: sample 1 only; value = its term / norm (norm 1) */
    feats[1] = tf2;
    rt_i32(m)[0] = 0, rt_i32(m)[1] = 1;
    in.mask = m;
    double vm = 0, v1 = 0;
    CHECK(rt_loss_forward(a, ctx, &in, &vm) == RT_STATUS_OK);
    rt_i32(m)[0] = 1;
    in.norm = 2;
    CHECK(rt_loss_forward(a, ctx, &in, &v1) == RT_STATUS_OK);
    printf("  attention: sample 1 alone %.9g, both over norm 2 %.9g\n", vm, v1);
    CHECK(vm > 0 && v1 > 0 && fabs(vm - v1) > 1e-6); /* sample 0's term counted only when real */
    double v0 = 0; /* sample 0 alone: the two halves make the whole */
    rt_i32(m)[1] = 0;
    in.norm = 0;
    CHECK(rt_loss_forward(a, ctx, &in, &v0) == RT_STATUS_OK);
    CHECK_REL((v0 + vm) / 2, v1);
    rt_i32(m)[1] = 1;
    rt_instance *r = make(RT_KIND_LOSS, "rkd", NULL);
    rt_i32(m)[0] = 0;
    in.norm = 0;
    CHECK(r && rt_loss_forward(r, ctx, &in, &v) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "a relation loss needs every sample");
    rt_instance *f = make(RT_KIND_LOSS, "feature_mse", "{\"projection\":\"never\"}");
    int64_t t5[4] = {2, 3, 2, 2};
    rt_tensor *tf3 = rt_tensor_new(ctx, RT_DTYPE_F32, 4, t5);
    feats[1] = tf3;
    in.mask = NULL;
    CHECK(f && rt_loss_forward(f, ctx, &in, &v) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "have different channel counts");
    rt_tensor *ts[] = {sf, tf, tf2, tf3, logits, m};
    for (size_t k = 0; k < 6; k++) rt_tensor_release(ts[k]);
    rt_instance_release(a);
    rt_instance_release(r);
    rt_instance_release(f);
}

/* A masked sample counts for nothing: the value, the feature gradient of
 * the real samples and the projection's gradients equal those of the
 * batch without it, and its own feature gradient is zero.  Over [N, D]
 * features (the projection is one GEMM over the batch) and [N, C, H, W]
 * ones (one per sample). */
static void test_feature_loss_mask_matches_subset(void)
{
    static const struct {
        const char *name, *opts;
        int nd;
    } cases[] = {{"hint", NULL, 2},
                 {"hint", NULL, 4},
                 {"feature_mse", NULL, 2},
                 {"feature_cosine", "{\"projection\":\"always\"}", 2},
                 {"feature_cosine", "{\"projection\":\"always\"}", 4}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int nd = cases[c].nd;
        int64_t ss[2][4] = {{3, 4, 2, 1}, {2, 4, 2, 1}}, ts[2][4] = {{3, 5, 2, 1}, {2, 5, 2, 1}};
        if (nd == 2) ss[0][1] = ss[1][1] = 8, ts[0][1] = ts[1][1] = 10;
        int64_t os[2][2] = {{3, 3}, {2, 3}}, ms = 3;
        double v[2] = {0, 0};
        rt_instance *l[2] = {NULL, NULL};
        rt_tensor *fg[2] = {NULL, NULL}, *m = rt_tensor_new(ctx, RT_DTYPE_I32, 1, &ms);
        rt_i32(m)[0] = 1, rt_i32(m)[1] = 0, rt_i32(m)[2] = 1;
        int64_t row_s = 8, row_t = 10; /* values per sample */
        for (int b = 0; b < 2; b++) { /* b 0: 3 samples, the middle masked; b 1: samples 0 and 2 */
            l[b] = make(RT_KIND_LOSS, cases[c].name, cases[c].opts);
            rt_tensor *sf = rt_tensor_new(ctx, RT_DTYPE_F32, nd, ss[b]), *tf = rt_tensor_new(ctx, RT_DTYPE_F32, nd, ts[b]);
            rt_tensor *lg = rt_tensor_new(ctx, RT_DTYPE_F32, 2, os[b]), *g = rt_tensor_new(ctx, RT_DTYPE_F32, 2, os[b]);
            fg[b] = rt_tensor_new(ctx, RT_DTYPE_F32, nd, ss[b]);
            for (int64_t i = 0, j = 0; i < 3; i++) {
                if (b && i == 1) continue;
                for (int64_t k = 0; k < row_s; k++) rt_f32(sf)[j * row_s + k] = (float)sin(1.3 * (i * row_s + k) + 0.2);
                for (int64_t k = 0; k < row_t; k++) rt_f32(tf)[j * row_t + k] = (float)cos(0.7 * (i * row_t + k));
                j++;
            }
            const rt_tensor *feats[2] = {sf, tf};
            rt_tensor *fgs[2] = {fg[b], NULL};
            rt_loss_in in = {.student = lg, .features = feats, .nfeatures = 2, .feature_grads = fgs};
            if (!b) { /* an unmasked run first leaves gradients of every sample in the host's scratch */
                rt_instance *w = make(RT_KIND_LOSS, cases[c].name, cases[c].opts);
                CHECK(w && rt_loss_forward(w, ctx, &in, &v[b]) == RT_STATUS_OK);
                CHECK(w && rt_loss_backward(w, ctx, &in, 0.5f, g) == RT_STATUS_OK);
                rt_instance_release(w);
                memset(rt_f32(fg[b]), 0, sizeof(float) * (size_t)rt_numel(fg[b]));
                in.mask = m;
            }
            CHECK(l[b] && rt_loss_forward(l[b], ctx, &in, &v[b]) == RT_STATUS_OK);
            CHECK(l[b] && rt_loss_backward(l[b], ctx, &in, 0.5f, g) == RT_STATUS_OK);
            rt_tensor *ts_[] = {sf, tf, lg, g};
            for (size_t k = 0; k < 4; k++) rt_tensor_release(ts_[k]);
        }
        printf("  %s %dd: masked %.9g, subset %.9g\n", cases[c].name, nd, v[0], v[1]);
        CHECK(v[1] > 0);
        CHECK_REL(v[0], v[1]);
        double worst = 0;
        for (int64_t k = 0; k < row_s; k++) {
            worst = fmax(worst, fabs(rt_f32(fg[0])[k] - rt_f32(fg[1])[k]));
            worst = fmax(worst, fabs(rt_f32(fg[0])[2 * row_s + k] - rt_f32(fg[1])[row_s + k]));
            CHECK(rt_f32(fg[0])[row_s + k] == 0.0f); /* the masked sample */
        }
        int n0 = 0, n1 = 0;
        rt_param *p0 = l[0] ? rt_instance_params_all(l[0], ctx, &n0) : NULL;
        rt_param *p1 = l[1] ? rt_instance_params_all(l[1], ctx, &n1) : NULL;
        CHECK(p0 && p1 && n0 == 2 && n1 == 2);
        for (int k = 0; p0 && p1 && k < n0 && k < n1; k++)
            for (int64_t j = 0; j < rt_numel(p0[k].grad); j++)
                worst = fmax(worst, fabs(rt_f32(p0[k].grad)[j] - rt_f32(p1[k].grad)[j]));
        CHECK(worst <= 1e-6);
        if (worst > 1e-6) fprintf(stderr, "  %s %dd: gradients differ by %g\n", cases[c].name, nd, worst);
        free(p0);
        free(p1);
        for (int b = 0; b < 2; b++) {
            rt_tensor_release(fg[b]);
            rt_instance_release(l[b]);
        }
        rt_tensor_release(m);
    }
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
    RUN(test_cnn_state_dict_names);
    RUN(test_batchnorm_eval_and_train);
    RUN(test_tap_reaches_input);
    RUN(test_resnet_gradients);
    RUN(test_feature_loss_golden_values);
    RUN(test_feature_loss_refusals);
    RUN(test_feature_loss_mask_matches_subset);
    rt_registry_free(reg);
    rt_ctx_free(ctx);
    return t_summary("test_cnn");
}
