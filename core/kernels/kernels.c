/*
 * kernels.c -- dense kernels: GEMM through OpenBLAS, and the thin fused
 * passes around it (bias + activation, softmax, cross-entropy, reductions).
 *
 * Every fast kernel has a plain twin (_ref) written for obviousness and
 * accumulating in double; the tests compare the two.  No kernel allocates.
 *
 * Vectorisation: the build uses -O2, where gcc's "very cheap" vectoriser
 * takes a loop only when its trip count is a known multiple of the vector
 * width and no alias check is needed.  So the fast loops run in blocks of
 * VW with a fixed-trip inner loop (VLOOP), take restrict pointers, and keep
 * reductions in VW separate accumulators.  libm's expf and tanhf stay
 * scalar calls without -ffast-math, so the loops that need exp use vexpf,
 * an inline Cephes-style expf (about 1 ulp) that vectorises; gelu is
 * written through it (see gelu_fwd).
 */
#include "retort.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "vec.h"

/* exp(x) for float x: 2^n * p(r), n = round(x / ln 2), r = x - n ln 2 (in
 * two parts, Cody-Waite), p the Cephes expf polynomial; about 1 ulp.
 * exp(-inf) = 0 (softmax's masked entries), below -88 it flushes to 0,
 * above 88 it is inf, NaN stays NaN.  Written for gcc -O2's vectoriser:
 * ternaries, not fminf/fmaxf; rounding by adding 1.5 * 2^23, not floorf;
 * a union, not memcpy, for the bits. */
static inline float vexpf(float x)
{
    float c = x > -88.0f ? x : -88.0f; /* NaN -> -88: the int cast below is defined */
    c = c < 88.0f ? c : 88.0f;
    float n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = c - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale;
    scale.i = ((int32_t)n + 127) * (1 << 23); /* n in [-127, 127] */
    float y = p * scale.f;
    y = x < -88.0f ? 0.0f : y;
    y = x > 88.0f ? INFINITY : y;
    return x != x ? x : y;
}

/* sqrt(2/pi) and the cubic coefficient of PyTorch's gelu(approximate="tanh"). */
#define GELU_K 0.7978845608028654
#define GELU_C 0.044715

/* ================================================================== GEMM */

static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++) {
        float *c = C + i * ldc;
        /* beta == 0 overwrites, as BLAS does: NaN in C must not survive. */
        if (beta == 0.0f) memset(c, 0, (size_t)N * sizeof *c);
        else if (beta != 1.0f)
            for (int64_t j = 0; j < N; j++) c[j] *= beta;
    }
}

void rt_gemm_ref(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb,
                 float beta, float *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++) {
                double a = ta ? A[k * lda + i] : A[i * lda + k];
                double b = tb ? B[j * ldb + k] : B[k * ldb + j];
                acc += a * b;
            }
            double c = beta == 0.0f ? 0.0 : (double)beta * C[i * ldc + j];
            C[i * ldc + j] = (float)(alpha * acc + c);
        }
}

void rt_gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
             const float *A, int64_t lda, const float *B, int64_t ldb,
             float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    /* BLAS rejects lda < 1, which an empty K legitimately gives. */
    if (K <= 0) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX || lda > INT_MAX ||
        ldb > INT_MAX || ldc > INT_MAX) {
        rt_gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K, alpha,
                A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

/* ========================================================== activations */

rt_act rt_act_parse(const char *name)
{
    if (!name) return (rt_act)-1;
    if (!strcmp(name, "none")) return RT_ACT_NONE;
    if (!strcmp(name, "relu")) return RT_ACT_RELU;
    if (!strcmp(name, "gelu")) return RT_ACT_GELU;
    if (!strcmp(name, "tanh")) return RT_ACT_TANH;
    return (rt_act)-1;
}

const char *rt_act_name(rt_act a)
{
    switch (a) {
    case RT_ACT_NONE: return "none";
    case RT_ACT_RELU: return "relu";
    case RT_ACT_GELU: return "gelu";
    case RT_ACT_TANH: return "tanh";
    }
    return "unknown";
}

/* 0.5 x (1 + tanh(u)) = x * sigmoid(2u): the same function, one expf instead
 * of a tanhf, and no cancellation for large negative x.  expf overflowing
 * to inf gives x / inf = 0, the right limit. */
static inline float gelu_fwd(float x)
{
    float u = (float)GELU_K * (x + (float)GELU_C * x * x * x);
    return x / (1.0f + vexpf(-2.0f * u));
}

/* d gelu / dx with s = sigmoid(2u): 1 + tanh = 2s, 1 - tanh^2 = 4s(1-s). */
static inline float gelu_grad(float x)
{
    float x2 = x * x;
    float u = (float)GELU_K * (x + (float)GELU_C * x2 * x);
    float s = 1.0f / (1.0f + vexpf(-2.0f * u));
    return s + 2.0f * x * s * (1.0f - s) * (float)GELU_K *
                   (1.0f + 3.0f * (float)GELU_C * x2);
}

/* One row: y = act(y + b), pre = y + b. */
static void bias_act_row(float *restrict y, const float *restrict b, int64_t D,
                         rt_act act, float *restrict pre)
{
    if (b) VLOOP(j, D, y[j] += b[j];);
    if (pre) memcpy(pre, y, (size_t)D * sizeof *y);
    switch (act) {
    case RT_ACT_RELU: VLOOP(j, D, y[j] = y[j] > 0.0f ? y[j] : 0.0f;); break;
    case RT_ACT_GELU: VLOOP(j, D, y[j] = gelu_fwd(y[j]);); break;
    case RT_ACT_TANH:
        for (int64_t j = 0; j < D; j++) y[j] = tanhf(y[j]);
        break;
    default: break;
    }
}

void rt_bias_act(float *y, const float *b, int64_t N, int64_t D, rt_act act,
                 float *pre)
{
    for (int64_t i = 0; i < N; i++)
        bias_act_row(y + i * D, b, D, act, pre ? pre + i * D : NULL);
}

static double act_ref(double x, rt_act act)
{
    switch (act) {
    case RT_ACT_RELU: return x > 0 ? x : 0;
    case RT_ACT_GELU:
        return 0.5 * x * (1 + tanh(GELU_K * (x + GELU_C * x * x * x)));
    case RT_ACT_TANH: return tanh(x);
    default: return x;
    }
}

void rt_bias_act_ref(float *y, const float *b, int64_t N, int64_t D,
                     rt_act act, float *pre)
{
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < D; j++) {
            float v = y[i * D + j] + (b ? b[j] : 0.0f);
            if (pre) pre[i * D + j] = v;
            y[i * D + j] = (float)act_ref(v, act);
        }
}

/* Without pre, gelu's gradient cannot be formed: dy becomes NaN so that the
 * caller's finiteness check reports it instead of training on garbage. */
static void backward_row(float *restrict dy, const float *restrict y,
                         const float *restrict pre, int64_t D, rt_act act,
                         float *restrict db)
{
    switch (act) {
    case RT_ACT_RELU:
        if (db) VLOOP(j, D, float g = y[j] > 0.0f ? dy[j] : 0.0f; dy[j] = g; db[j] += g;);
        else VLOOP(j, D, dy[j] = y[j] > 0.0f ? dy[j] : 0.0f;);
        return;
    case RT_ACT_TANH:
        VLOOP(j, D, dy[j] *= 1.0f - y[j] * y[j];);
        break;
    case RT_ACT_GELU:
        if (!pre) {
            VLOOP(j, D, dy[j] = NAN;);
            break;
        }
        VLOOP(j, D, dy[j] *= gelu_grad(pre[j]););
        break;
    default: break;
    }
    if (db) VLOOP(j, D, db[j] += dy[j];);
}

void rt_bias_act_backward(float *dy, const float *y, const float *pre,
                          int64_t N, int64_t D, rt_act act, float *db)
{
    for (int64_t i = 0; i < N; i++)
        backward_row(dy + i * D, y ? y + i * D : NULL, pre ? pre + i * D : NULL,
                     D, act, db);
}

static double act_grad_ref(double y, double pre, rt_act act)
{
    switch (act) {
    case RT_ACT_RELU: return y > 0 ? 1 : 0;
    case RT_ACT_TANH: return 1 - y * y;
    case RT_ACT_GELU: {
        double x = pre, inner = GELU_K * (x + GELU_C * x * x * x);
        double t = tanh(inner);
        return 0.5 * (1 + t) +
               0.5 * x * (1 - t * t) * GELU_K * (1 + 3 * GELU_C * x * x);
    }
    default: return 1;
    }
}

void rt_bias_act_backward_ref(float *dy, const float *y, const float *pre,
                              int64_t N, int64_t D, rt_act act, float *db)
{
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < D; j++) {
            int64_t k = i * D + j;
            double g;
            if (act == RT_ACT_GELU && !pre) g = NAN;
            else g = dy[k] * act_grad_ref(y ? y[k] : 0, pre ? pre[k] : 0, act);
            dy[k] = (float)g;
        }
    if (db)
        for (int64_t j = 0; j < D; j++) {
            double s = 0;
            for (int64_t i = 0; i < N; i++) s += dy[i * D + j];
            db[j] += (float)s;
        }
}

/* =============================================================== softmax */

/* noinline: inlined into some callers, gcc no longer vectorises it. */
__attribute__((noinline)) static float row_max(const float *restrict x, int64_t n)
{
    float m[VW];
    for (int k = 0; k < VW; k++) m[k] = -INFINITY;
    int64_t i = 0;
    for (; i + VW <= n; i += VW)
        for (int k = 0; k < VW; k++) {
            float v = x[i + k], c = m[k]; /* this form if-converts */
            m[k] = v > c ? v : c;
        }
    float r = -INFINITY;
    for (int k = 0; k < VW; k++) r = m[k] > r ? m[k] : r;
    for (; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}

/* out[j] = expr, an expression of v = x[j].  out may equal x: then the
 * in-place loop runs on one pointer, so the restrict loop never sees
 * aliased pointers. */
#define MAP_ROW(x, out, n, expr)                                               \
    do {                                                                       \
        if ((const float *)(x) == (out)) {                                     \
            float *o_ = (out);                                                 \
            VLOOP(j_, n, float v = o_[j_]; o_[j_] = (expr););                  \
        } else {                                                               \
            const float *restrict x_ = (x);                                    \
            float *restrict o_ = (out);                                        \
            VLOOP(j_, n, float v = x_[j_]; o_[j_] = (expr););                  \
        }                                                                      \
    } while (0)

/* sum_j exp((x[j] - m) a) */
static float exp_sum(const float *restrict x, int64_t n, float m, float a)
{
    float acc[VW] = {0}, s = 0;
    int64_t j = 0;
    for (; j + VW <= n; j += VW)
        for (int k = 0; k < VW; k++) acc[k] += vexpf((x[j + k] - m) * a);
    for (; j < n; j++) s += vexpf((x[j] - m) * a);
    for (int k = 0; k < VW; k++) s += acc[k];
    return s;
}

/* Rows of softmax(x / T).  The max of x / T is max(x) / T for T > 0, so the
 * shift happens before the division.  exp is formed twice (sum, then
 * output) rather than stored, which keeps out == x safe and costs little
 * with vexpf.  An all -inf row gives -inf - -inf = NaN, as documented. */
void rt_softmax(const float *x, float *out, int64_t N, int64_t C, float T)
{
    float inv = 1.0f / T;
    for (int64_t i = 0; i < N; i++) {
        const float *xr = x + i * C;
        float m = row_max(xr, C);
        float r = 1.0f / exp_sum(xr, C, m, inv);
        MAP_ROW(xr, out + i * C, C, vexpf((v - m) * inv) * r);
    }
}

void rt_log_softmax(const float *x, float *out, int64_t N, int64_t C, float T)
{
    float inv = 1.0f / T;
    for (int64_t i = 0; i < N; i++) {
        const float *xr = x + i * C;
        float m = row_max(xr, C);
        float ls = logf(exp_sum(xr, C, m, inv));
        MAP_ROW(xr, out + i * C, C, (v - m) * inv - ls);
    }
}

/* Row i of x / T into z (double), its max and log-sum-exp. */
static double ref_row_lse(const float *x, int64_t C, float T, double *mx)
{
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < C; j++) m = fmax(m, (double)x[j] / T);
    for (int64_t j = 0; j < C; j++) s += exp((double)x[j] / T - m);
    *mx = m;
    return m + log(s);
}

void rt_softmax_ref(const float *x, float *out, int64_t N, int64_t C, float T)
{
    for (int64_t i = 0; i < N; i++) {
        double m, lse = ref_row_lse(x + i * C, C, T, &m);
        for (int64_t j = 0; j < C; j++)
            out[i * C + j] = (float)exp((double)x[i * C + j] / T - lse);
    }
}

void rt_log_softmax_ref(const float *x, float *out, int64_t N, int64_t C,
                        float T)
{
    for (int64_t i = 0; i < N; i++) {
        double m, lse = ref_row_lse(x + i * C, C, T, &m);
        for (int64_t j = 0; j < C; j++)
            out[i * C + j] = (float)((double)x[i * C + j] / T - lse);
    }
}

/* ========================================================= cross-entropy */

/* Per row, with lse = log sum exp(z) and target t = (1-eps) onehot + eps/C:
 *   loss = -sum_j t_j (z_j - lse) = lse - (1-eps) z_y - (eps/C) sum_j z_j
 *   d loss / d z_j = softmax(z)_j - t_j
 * Passes over the row: max; sum of exp (and of z when smoothing); gradient.
 * The log-softmax is formed once and never stored. */
double rt_cross_entropy(const float *logits, const int32_t *y, int64_t N,
                        int64_t C, float eps, float *grad, float scale)
{
    if (N <= 0 || C <= 0) return 0.0;
    double total = 0;
    float k = scale / (float)N, share = eps / (float)C;
    for (int64_t i = 0; i < N; i++) {
        const float *restrict z = logits + i * C;
        float m = row_max(z, C), s = exp_sum(z, C, m, 1.0f);
        float zs[VW] = {0};
        if (eps != 0.0f) {
            int64_t j = 0;
            for (; j + VW <= C; j += VW)
                for (int q = 0; q < VW; q++) zs[q] += z[j + q];
            for (; j < C; j++) zs[0] += z[j];
        }
        double lse = (double)m + log((double)s), zsum = 0;
        for (int q = 0; q < VW; q++) zsum += zs[q];
        int32_t yi = y[i];
        total += lse - (1.0 - eps) * z[yi];
        if (eps != 0.0f) total -= (double)share * zsum;
        if (grad) {
            float *restrict g = grad + i * C;
            float l = (float)lse;
            VLOOP(j, C, g[j] += k * (vexpf(z[j] - l) - share););
            g[yi] -= k * (1.0f - eps);
        }
    }
    return total / (double)N;
}

/* ============================================================ reductions */

void rt_argmax(const float *x, int64_t N, int64_t C, int32_t *out)
{
    for (int64_t i = 0; i < N; i++) {
        const float *r = x + i * C;
        int64_t best = 0;
        for (int64_t j = 1; j < C; j++)
            if (r[j] > r[best]) best = j;
        out[i] = (int32_t)best;
    }
}

void rt_sum_cols(const float *x, int64_t N, int64_t C, float *out,
                 int accumulate)
{
    float *restrict o = out;
    if (!accumulate) memset(o, 0, (size_t)(C > 0 ? C : 0) * sizeof *o);
    for (int64_t i = 0; i < N; i++) {
        const float *restrict r = x + i * C;
        VLOOP(j, C, o[j] += r[j];);
    }
}

double rt_sum(const float *x, int64_t n)
{
    double a[VW] = {0};
    int64_t i = 0;
    for (; i + VW <= n; i += VW)
        for (int k = 0; k < VW; k++) a[k] += (double)x[i + k];
    for (; i < n; i++) a[0] += (double)x[i];
    double s = 0;
    for (int k = 0; k < VW; k++) s += a[k];
    return s;
}

void rt_axpy(int64_t n, float a, const float *x, float *y)
{
    const float *restrict xs = x;
    float *restrict ys = y;
    VLOOP(i, n, ys[i] += a * xs[i];);
}

/* ================================================================== BLAS */

void rt_set_threads(int n) { openblas_set_num_threads(n < 1 ? 1 : n); }
int rt_get_threads(void) { return openblas_get_num_threads(); }

const char *rt_blas_core(void)
{
    const char *c = openblas_get_corename();
    return c ? c : "unknown";
}

void rt_log_softmax_f64(const float *x, double *out, int64_t N, int64_t C, double T)
{
    for (int64_t n = 0; n < N; n++, x += C, out += C) {
        double m = -INFINITY, s = 0;
        for (int64_t c = 0; c < C; c++) m = fmax(m, (double)x[c]);
        for (int64_t c = 0; c < C; c++) s += exp(((double)x[c] - m) / T);
        double l = log(s);
        for (int64_t c = 0; c < C; c++) out[c] = ((double)x[c] - m) / T - l;
    }
}
