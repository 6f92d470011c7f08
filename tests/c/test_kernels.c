/*
 * test_kernels.c -- the fast kernels against their _ref twins and against
 * double-precision formulas written here, independently of core/kernels/kernels.c.
 */
#include "retort.h"
#include "t.h"

#include <stdint.h>
#include <stdlib.h>

/* A local generator, so the data does not depend on the code under test. */
static uint64_t lcg = 88172645463325252ULL;
static double frand(double lo, double hi)
{
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (double)(lcg >> 11) * 0x1p-53;
}
static void fill(float *x, int64_t n, double lo, double hi)
{
    for (int64_t i = 0; i < n; i++) x[i] = (float)frand(lo, hi);
}

/* ------------------------------------------------------------------ gemm */

#define SENTINEL 12345.0f

/* op(A)[M,K] op(B)[K,N] with padded leading dimensions, against a double
 * triple loop here and against rt_gemm_ref. */
static void gemm_case(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, float beta,
                      int pad)
{
    int64_t arows = ta ? K : M, acols = ta ? M : K;
    int64_t brows = tb ? N : K, bcols = tb ? K : N;
    int64_t lda = acols + pad, ldb = bcols + pad, ldc = N + pad;
    float *A = malloc(sizeof(float) * (size_t)(arows * lda + 1));
    float *B = malloc(sizeof(float) * (size_t)(brows * ldb + 1));
    float *C = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    float *R = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    fill(A, arows * lda, -1, 1);
    fill(B, brows * ldb, -1, 1);
    for (int64_t i = 0; i < M * ldc; i++) C[i] = (i % ldc) < N ? (float)frand(-1, 1) : SENTINEL;
    memcpy(R, C, sizeof(float) * (size_t)(M * ldc));
    double *want = malloc(sizeof(double) * (size_t)(M * N + 1));
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) {
                double a = ta ? A[k * lda + i] : A[i * lda + k];
                double b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b;
            }
            want[i * N + j] = alpha * s + (beta == 0 ? 0 : beta * (double)C[i * ldc + j]);
        }
    rt_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    rt_gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
    int bad = 0, pad_bad = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < ldc; j++) {
            float c = C[i * ldc + j], r = R[i * ldc + j];
            if (j >= N) {
                pad_bad += c != SENTINEL || r != SENTINEL;
                continue;
            }
            double w = want[i * N + j], tol = 1e-5 * (double)(K + 1) * (fabs(w) > 1 ? fabs(w) : 1);
            bad += !(fabs(c - w) <= tol) || !(fabs(r - w) <= tol);
        }
    if (bad || pad_bad)
        fprintf(stderr, "  gemm ta=%d tb=%d %lldx%lldx%lld pad %d: %d wrong, %d padding touched\n", ta,
                tb, (long long)M, (long long)N, (long long)K, pad, bad, pad_bad);
    CHECK(bad == 0);
    CHECK(pad_bad == 0);
    free(A);
    free(B);
    free(C);
    free(R);
    free(want);
}

static void test_gemm_shapes(void)
{
    static const int64_t shapes[][3] = {{1, 1, 1}, {7, 13, 17}, {127, 129, 31}, {129, 127, 130},
                                        {1, 64, 9}, {33, 1, 5}, {16, 16, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                gemm_case(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f, 0.0f, 0);
                gemm_case(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], 1.5f, 0.5f, 3);
                gemm_case(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], -0.25f, 1.0f, 1);
            }
}

static void test_gemm_empty(void)
{
    float A[4] = {1, 2, 3, 4}, B[4] = {5, 6, 7, 8};
    float C[6] = {1, 2, 3, 4, 5, 6}, R[6];
    /* M or N of 0: nothing is touched. */
    rt_gemm(0, 0, 0, 3, 2, 1, A, 2, B, 3, 0, C, 3);
    rt_gemm(0, 0, 2, 0, 2, 1, A, 2, B, 1, 0, C, 1);
    rt_gemm_ref(0, 0, 0, 3, 2, 1, A, 2, B, 3, 0, C, 3);
    for (int i = 0; i < 6; i++) CHECK(C[i] == (float)(i + 1));
    /* K of 0: C = beta C, with leading dimensions BLAS would refuse. */
    memcpy(R, C, sizeof R);
    rt_gemm(0, 0, 2, 3, 0, 1, A, 0, B, 3, 0.5f, C, 3);
    rt_gemm_ref(0, 0, 2, 3, 0, 1, A, 0, B, 3, 0.5f, R, 3);
    for (int i = 0; i < 6; i++) {
        CHECK(C[i] == 0.5f * (float)(i + 1));
        CHECK(R[i] == C[i]);
    }
    /* beta 0 overwrites, even NaN. */
    C[0] = NAN;
    R[0] = NAN;
    rt_gemm(0, 1, 2, 3, 0, 1, A, 0, B, 0, 0.0f, C, 3);
    rt_gemm_ref(0, 1, 2, 3, 0, 1, A, 0, B, 0, 0.0f, R, 3);
    for (int i = 0; i < 6; i++) CHECK(C[i] == 0 && R[i] == 0);
    C[4] = NAN;
    rt_gemm(0, 0, 2, 2, 2, 1, A, 2, B, 2, 0.0f, C, 3); /* [[19,22],[43,50]] */
    CHECK(C[0] == 19 && C[1] == 22 && C[3] == 43 && C[4] == 50);
}

/* ----------------------------------------------------------- activations */

static double act_d(double x, rt_act a)
{
    switch (a) {
    case RT_ACT_RELU: return x > 0 ? x : 0;
    case RT_ACT_TANH: return tanh(x);
    case RT_ACT_GELU: {
        double k = sqrt(2.0 / 3.14159265358979323846);
        return 0.5 * x * (1 + tanh(k * (x + 0.044715 * x * x * x)));
    }
    default: return x;
    }
}

static const rt_act acts[] = {RT_ACT_NONE, RT_ACT_RELU, RT_ACT_GELU, RT_ACT_TANH};

static void test_act_names(void)
{
    for (int i = 0; i < 4; i++) CHECK(rt_act_parse(rt_act_name(acts[i])) == acts[i]);
    CHECK(rt_act_parse("gelu") == RT_ACT_GELU);
    CHECK((int)rt_act_parse("sigmoid") == -1);
    CHECK((int)rt_act_parse("") == -1);
    CHECK((int)rt_act_parse(NULL) == -1);
    CHECK(!strcmp(rt_act_name((rt_act)42), "unknown"));
}

static void test_bias_act_forward(void)
{
    enum { N = 7, D = 13 };
    for (int a = 0; a < 4; a++)
        for (int with_b = 0; with_b < 2; with_b++) {
            float x[N * D], b[D], y[N * D], r[N * D], pre[N * D], rpre[N * D];
            fill(x, N * D, -4, 4);
            fill(b, D, -1, 1);
            memcpy(y, x, sizeof x);
            memcpy(r, x, sizeof x);
            rt_bias_act(y, with_b ? b : NULL, N, D, acts[a], pre);
            rt_bias_act_ref(r, with_b ? b : NULL, N, D, acts[a], rpre);
            for (int i = 0; i < N * D; i++) {
                double p = (double)x[i] + (with_b ? b[i % D] : 0);
                CHECK_NEAR(pre[i], p, 1e-6);
                CHECK(rpre[i] == pre[i]);
                CHECK_NEAR(y[i], act_d(pre[i], acts[a]), 2e-6);
                CHECK_NEAR(r[i], act_d(pre[i], acts[a]), 1e-6);
            }
        }
    /* Extremes stay finite; gelu(-large) = 0, gelu(large) = x. */
    float e[6] = {-1e4f, -100, -10, 10, 100, 1e4f};
    float pre[6];
    rt_bias_act(e, NULL, 1, 6, RT_ACT_GELU, pre);
    for (int i = 0; i < 6; i++) {
        CHECK(isfinite(e[i]));
        CHECK_NEAR(e[i], pre[i] > 0 ? pre[i] : 0, 1e-6);
    }
}

/* grad of L = sum w . act(x) by central differences of act_d, against the
 * kernels' backward, for each activation.  Points avoid relu's kink. */
static void test_bias_act_backward(void)
{
    enum { N = 5, D = 11 };
    for (int a = 0; a < 4; a++) {
        float pre[N * D], y[N * D], w[N * D], dy[N * D], dr[N * D], db[D], dbr[D];
        fill(pre, N * D, -3, 3);
        for (int i = 0; i < N * D; i++)
            if (fabsf(pre[i]) < 0.05f) pre[i] = 0.3f;
        memcpy(y, pre, sizeof y);
        float dummy[N * D];
        rt_bias_act(y, NULL, N, D, acts[a], dummy);
        fill(w, N * D, -1, 1);
        memcpy(dy, w, sizeof dy);
        memcpy(dr, w, sizeof dr);
        for (int j = 0; j < D; j++) db[j] = dbr[j] = 0.25f;
        rt_bias_act_backward(dy, y, pre, N, D, acts[a], db);
        rt_bias_act_backward_ref(dr, y, pre, N, D, acts[a], dbr);
        double h = 1e-5;
        for (int i = 0; i < N * D; i++) {
            double fd = w[i] * (act_d(pre[i] + h, acts[a]) - act_d(pre[i] - h, acts[a])) / (2 * h);
            CHECK_NEAR(dy[i], fd, 2e-5);
            CHECK_NEAR(dr[i], fd, 2e-5);
        }
        for (int j = 0; j < D; j++) {
            double s = 0.25;
            for (int i = 0; i < N; i++) s += dy[i * D + j];
            CHECK_NEAR(db[j], s, 1e-5);
            CHECK_NEAR(dbr[j], s, 1e-5);
        }
    }
    /* db may be NULL; gelu without pre reports itself as NaN. */
    float dy[3] = {1, 1, 1}, y[3] = {1, -1, 0};
    rt_bias_act_backward(dy, y, NULL, 1, 3, RT_ACT_RELU, NULL);
    CHECK(dy[0] == 1 && dy[1] == 0 && dy[2] == 0);
    rt_bias_act_backward(dy, y, NULL, 1, 3, RT_ACT_GELU, NULL);
    CHECK(isnan(dy[0]));
}

/* --------------------------------------------------------------- softmax */

/* Double-precision softmax / log-softmax of x / T, written independently. */
static void softmax_d(const float *x, int64_t C, double T, double *p, double *lp)
{
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < C; j++)
        if (x[j] / T > m) m = x[j] / T;
    for (int64_t j = 0; j < C; j++) s += exp(x[j] / T - m);
    for (int64_t j = 0; j < C; j++) {
        lp[j] = x[j] / T - m - log(s);
        p[j] = exp(lp[j]);
    }
}

/* Checks both kernels (and both twins, and in-place use) on rows of x. */
static void softmax_case(const float *x, int64_t N, int64_t C, float T)
{
    size_t bytes = sizeof(float) * (size_t)(N * C);
    float *p = malloc(bytes), *lp = malloc(bytes), *pr = malloc(bytes), *lpr = malloc(bytes);
    float *inplace = malloc(bytes), *linplace = malloc(bytes);
    double *dp = malloc(sizeof(double) * (size_t)C), *dlp = malloc(sizeof(double) * (size_t)C);
    rt_softmax(x, p, N, C, T);
    rt_log_softmax(x, lp, N, C, T);
    rt_softmax_ref(x, pr, N, C, T);
    rt_log_softmax_ref(x, lpr, N, C, T);
    memcpy(inplace, x, bytes);
    memcpy(linplace, x, bytes);
    rt_softmax(inplace, inplace, N, C, T);
    rt_log_softmax(linplace, linplace, N, C, T);
    int bad = 0;
    for (int64_t i = 0; i < N; i++) {
        softmax_d(x + i * C, C, T, dp, dlp);
        double sum = 0;
        for (int64_t j = 0; j < C; j++) {
            int64_t k = i * C + j;
            sum += p[k];
            bad += !(fabs(p[k] - dp[j]) <= 1e-6) || !(fabs(pr[k] - dp[j]) <= 1e-6);
            bad += inplace[k] != p[k] || !isfinite(p[k]);
            if (isinf(dlp[j])) {
                bad += !(lp[k] == -INFINITY && lpr[k] == -INFINITY && p[k] == 0);
            } else {
                double tol = 1e-5 * (fabs(dlp[j]) > 1 ? fabs(dlp[j]) : 1);
                bad += !(fabs(lp[k] - dlp[j]) <= tol) || !(fabs(lpr[k] - dlp[j]) <= tol);
            }
            bad += linplace[k] != lp[k];
        }
        bad += !(fabs(sum - 1) <= 1e-5);
    }
    if (bad) fprintf(stderr, "  softmax %lldx%lld T=%g: %d wrong\n", (long long)N, (long long)C, T, bad);
    CHECK(bad == 0);
    free(p);
    free(lp);
    free(pr);
    free(lpr);
    free(inplace);
    free(linplace);
    free(dp);
    free(dlp);
}

static void test_softmax_random(void)
{
    static const int64_t shapes[][2] = {{1, 1}, {3, 7}, {5, 1000}, {4, 17}};
    static const float temps[] = {1.0f, 4.0f, 0.5f};
    for (size_t s = 0; s < 4; s++)
        for (size_t t = 0; t < 3; t++) {
            int64_t N = shapes[s][0], C = shapes[s][1];
            float *x = malloc(sizeof(float) * (size_t)(N * C));
            fill(x, N * C, -8, 8);
            softmax_case(x, N, C, temps[t]);
            free(x);
        }
}

static void test_softmax_extremes(void)
{
    float big[3 * 4] = {1e4f, -1e4f, 0, 1e4f,       /* two maxima far above the rest */
                        -1e4f, -1e4f, -1e4f, -1e4f, /* all equal, very negative */
                        5, 5, 5, 5};                /* all equal */
    softmax_case(big, 3, 4, 1.0f);
    softmax_case(big, 3, 4, 1e-3f);
    softmax_case(big, 3, 4, 1e3f);
    float p[12];
    rt_softmax(big, p, 3, 4, 1.0f);
    CHECK_NEAR(p[0], 0.5, 1e-7);
    CHECK(p[1] == 0);
    for (int j = 4; j < 12; j++) CHECK_NEAR(p[j], 0.25, 1e-7);
    /* -inf entries: probability 0, log-probability -inf, the rest normal. */
    float x[2 * 3] = {-INFINITY, 1, 2, 0, -INFINITY, -INFINITY};
    softmax_case(x, 2, 3, 1.0f);
    softmax_case(x, 2, 3, 1e-3f);
    float lp[6];
    rt_softmax(x, p, 2, 3, 1.0f);
    rt_log_softmax(x, lp, 2, 3, 1.0f);
    CHECK(p[0] == 0 && lp[0] == -INFINITY);
    CHECK_NEAR(p[2], 1 / (1 + exp(-1.0)), 1e-7);
    CHECK(p[3] == 1 && lp[3] == 0 && p[4] == 0 && lp[5] == -INFINITY);
    /* Temperature: T = 1e3 flattens, T = 1e-3 sharpens to one-hot. */
    float t[3] = {1, 2, 3};
    rt_softmax(t, p, 1, 3, 1e3f);
    for (int j = 0; j < 3; j++) CHECK_NEAR(p[j], 1.0 / 3, 1e-3);
    rt_softmax(t, p, 1, 3, 1e-3f);
    CHECK(p[0] == 0 && p[1] == 0 && p[2] == 1);
    rt_log_softmax(t, lp, 1, 3, 1e-3f);
    CHECK_NEAR(lp[1], -1000, 1e-6);
    CHECK(isfinite(lp[0]));
}

/* Relative accuracy across the whole exponent range the kernels reach:
 * softmax([0, -d]) = [1, e^-d] / (1 + e^-d) for d in [0, 87], and gelu
 * over [-10, 10] (its tail is e^-x-sized). */
static void test_exp_range(void)
{
    int bad = 0;
    for (double d = 0; d <= 87; d += 0.0371) {
        float x[2] = {0, (float)-d}, p[2], lp[2];
        rt_softmax(x, p, 1, 2, 1.0f);
        rt_log_softmax(x, lp, 1, 2, 1.0f);
        double e = exp(-(double)(float)d), p1 = e / (1 + e), lp1 = -(double)(float)d - log1p(e);
        bad += !(fabs(p[1] - p1) <= 1e-6 * p1) || !(fabs(p[0] - 1 / (1 + e)) <= 1e-6);
        bad += !(fabs(lp[1] - lp1) <= 1e-6 * fabs(lp1) + 1e-7);
    }
    for (double v = -10; v <= 10; v += 0.0173) {
        float y = (float)v, pre;
        rt_bias_act(&y, NULL, 1, 1, RT_ACT_GELU, &pre);
        /* 0.5 x (1 + tanh u) = x / (1 + e^-2u): the tanh form cancels in
         * double too once x < -6.  Rounding u in float alone costs a
         * relative |2u| ulps in e^-2u: the tolerance scales with it. */
        double u = sqrt(2 / 3.14159265358979323846) * (pre + 0.044715 * pre * pre * pre);
        double want = pre / (1 + exp(-2 * u));
        bad += !(fabs(y - want) <= 2e-7 * (1 + fabs(2 * u)) * fabs(want) + 1e-37);
    }
    if (bad) fprintf(stderr, "  %d inaccurate values\n", bad);
    CHECK(bad == 0);
}

/* --------------------------------------------------------- cross-entropy */

/* Mean over rows of -sum_j t_j log softmax(z)_j, in double, from the
 * definition. */
static double ce_d(const double *z, const int32_t *y, int N, int C, double eps)
{
    double total = 0;
    for (int i = 0; i < N; i++) {
        double m = -INFINITY, s = 0;
        for (int j = 0; j < C; j++) m = fmax(m, z[i * C + j]);
        for (int j = 0; j < C; j++) s += exp(z[i * C + j] - m);
        for (int j = 0; j < C; j++) {
            double t = (1 - eps) * (j == y[i]) + eps / C;
            total -= t * (z[i * C + j] - m - log(s));
        }
    }
    return total / N;
}

static void test_ce_golden(void)
{
    float z1[3] = {1, 2, 3};
    int32_t y1[1] = {2};
    /* log(e + e^2 + e^3) - 3, and with eps 0.1: minus 0.9*3 + 0.1/3*6. */
    CHECK_NEAR(rt_cross_entropy(z1, y1, 1, 3, 0.0f, NULL, 1), 0.40760596444438, 1e-6);
    CHECK_NEAR(rt_cross_entropy(z1, y1, 1, 3, 0.1f, NULL, 1), 0.50760596444438, 1e-6);
    float z2[4] = {0, 0, 5, 5};
    int32_t y2[2] = {0, 1};
    CHECK_NEAR(rt_cross_entropy(z2, y2, 2, 2, 0.0f, NULL, 1), log(2.0), 1e-6);
    /* Extreme logits stay finite. */
    float z3[3] = {1e4f, -1e4f, 0};
    int32_t y3[1] = {1};
    CHECK_NEAR(rt_cross_entropy(z3, y3, 1, 3, 0.0f, NULL, 1), 2e4, 1e-6);
    y3[0] = 0;
    CHECK_NEAR(rt_cross_entropy(z3, y3, 1, 3, 0.0f, NULL, 1), 0, 1e-6);
    /* A -inf logit off the target costs nothing without smoothing. */
    float z4[3] = {-INFINITY, 0, 0};
    int32_t y4[1] = {1};
    CHECK_NEAR(rt_cross_entropy(z4, y4, 1, 3, 0.0f, NULL, 1), log(2.0), 1e-6);
}

static void test_ce_random_and_grad(void)
{
    enum { N = 6, C = 11 };
    static const float epss[] = {0.0f, 0.1f, 0.3f};
    for (int e = 0; e < 3; e++) {
        float z[N * C], g[N * C];
        int32_t y[N];
        double zd[N * C];
        fill(z, N * C, -5, 5);
        for (int i = 0; i < N; i++) y[i] = (int32_t)((i * 7 + 3) % C);
        for (int i = 0; i < N * C; i++) {
            zd[i] = z[i];
            g[i] = 0.5f;
        }
        float scale = 2.0f;
        double loss = rt_cross_entropy(z, y, N, C, epss[e], g, scale);
        CHECK_NEAR(loss, ce_d(zd, y, N, C, epss[e]), 1e-6);
        CHECK_NEAR(rt_cross_entropy(z, y, N, C, epss[e], NULL, 1), loss, 1e-12);
        double h = 1e-6;
        for (int i = 0; i < N * C; i++) {
            double keep = zd[i];
            zd[i] = keep + h;
            double up = ce_d(zd, y, N, C, epss[e]);
            zd[i] = keep - h;
            double dn = ce_d(zd, y, N, C, epss[e]);
            zd[i] = keep;
            CHECK_NEAR(g[i], 0.5 + scale * (up - dn) / (2 * h), 1e-5);
        }
    }
}

/* ------------------------------------------------------------ reductions */

static void test_argmax(void)
{
    float x[4 * 4] = {1, 3, 3, 2,                     /* tie: the first */
                      -INFINITY, -INFINITY, -INFINITY, -INFINITY,
                      -5, -4, -4.5f, -6,
                      0, 0, 0, 7};
    int32_t out[4] = {-1, -1, -1, -1};
    rt_argmax(x, 4, 4, out);
    CHECK(out[0] == 1);
    CHECK(out[1] == 0);
    CHECK(out[2] == 1);
    CHECK(out[3] == 3);
    float one[1] = {-2};
    rt_argmax(one, 1, 1, out);
    CHECK(out[0] == 0);
}

static void test_sums(void)
{
    enum { N = 9, C = 19, L = 1001 };
    float x[N * C], out[C];
    fill(x, N * C, -2, 2);
    for (int j = 0; j < C; j++) out[j] = 100;
    rt_sum_cols(x, N, C, out, 0);
    for (int j = 0; j < C; j++) {
        double s = 0;
        for (int i = 0; i < N; i++) s += x[i * C + j];
        CHECK_NEAR(out[j], s, 1e-5);
    }
    rt_sum_cols(x, N, C, out, 1);
    for (int j = 0; j < C; j++) {
        double s = 0;
        for (int i = 0; i < N; i++) s += x[i * C + j];
        CHECK_NEAR(out[j], 2 * s, 1e-5);
    }
    float v[L], w[L], w0[L];
    fill(v, L, -1, 1);
    fill(w, L, -1, 1);
    memcpy(w0, w, sizeof w);
    double s = 0;
    for (int i = 0; i < L; i++) s += v[i];
    CHECK_NEAR(rt_sum(v, L), s, 1e-12);
    CHECK(rt_sum(v, 0) == 0);
    rt_axpy(L, -0.5f, v, w);
    for (int i = 0; i < L; i++) CHECK_NEAR(w[i], w0[i] - 0.5 * v[i], 1e-6);
    rt_axpy(0, 2, v, w); /* nothing */
}

static void test_threads(void)
{
    rt_set_threads(1);
    CHECK(rt_get_threads() == 1);
    rt_set_threads(0); /* clamped, not an error */
    CHECK(rt_get_threads() >= 1);
    CHECK(rt_blas_core() && rt_blas_core()[0]);
}

int main(void)
{
    RUN(test_gemm_shapes);
    RUN(test_gemm_empty);
    RUN(test_act_names);
    RUN(test_bias_act_forward);
    RUN(test_bias_act_backward);
    RUN(test_softmax_random);
    RUN(test_softmax_extremes);
    RUN(test_exp_range);
    RUN(test_ce_golden);
    RUN(test_ce_random_and_grad);
    RUN(test_argmax);
    RUN(test_sums);
    RUN(test_threads);
    return t_summary("kernels");
}
