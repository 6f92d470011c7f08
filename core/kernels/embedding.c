/*
 * embedding.c -- token + learned position embedding (forward, scatter-add
 * backward), the output projection tied to the token table, and drawing
 * the next token from logits.  See rt_lm.h for the contracts.
 */
#include "rt_lm.h"

#include <math.h>
#include <string.h>

#include "vec.h"

/* The first id of ids [N, T] outside [0, V), as an error naming it. */
static rt_status check_ids(rt_ctx *ctx, const char *what, const int32_t *ids,
                           int64_t N, int64_t T, int64_t V, int64_t maxT)
{
    if (N < 0 || T < 0 || V < 1)
        return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                        "%s: bad dims N %lld, T %lld, vocabulary %lld", what,
                        (long long)N, (long long)T, (long long)V);
    if (T > maxT)
        return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                        "%s: sequence length T = %lld exceeds the %lld "
                        "learned positions (the model's context length); "
                        "feed shorter windows",
                        what, (long long)T, (long long)maxT);
    for (int64_t i = 0; i < N * T; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return rt_error(ctx, RT_STATUS_ERR_ARG,
                            "%s: token id %d at [%lld, %lld] is outside the "
                            "vocabulary [0, %lld); the data and the model "
                            "must use the same tokenizer",
                            what, (int)ids[i], (long long)(i / T),
                            (long long)(i % T), (long long)V);
    return RT_STATUS_OK;
}

rt_status rt_embedding_forward(rt_ctx *ctx, const int32_t *ids, int64_t N,
                               int64_t T, const float *wte, int64_t V,
                               const float *wpe, int64_t maxT, int64_t D,
                               float *out)
{
    rt_status st = check_ids(ctx, "embedding forward", ids, N, T, V, maxT);
    if (st) return st;
    for (int64_t n = 0; n < N; n++)
        for (int64_t t = 0; t < T; t++) {
            float *restrict o = out + (n * T + t) * D;
            const float *restrict e = wte + (int64_t)ids[n * T + t] * D;
            const float *restrict p = wpe + t * D;
            VLOOP(j, D, o[j] = e[j] + p[j];);
        }
    return RT_STATUS_OK;
}

rt_status rt_embedding_forward_ref(rt_ctx *ctx, const int32_t *ids, int64_t N,
                                   int64_t T, const float *wte, int64_t V,
                                   const float *wpe, int64_t maxT, int64_t D,
                                   float *out)
{
    rt_status st = check_ids(ctx, "embedding forward", ids, N, T, V, maxT);
    if (st) return st;
    for (int64_t n = 0; n < N; n++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t j = 0; j < D; j++)
                out[(n * T + t) * D + j] =
                    wte[ids[n * T + t] * D + j] + wpe[t * D + j];
    return RT_STATUS_OK;
}

/* Rows are added one sample at a time, in order: the result depends only
 * on the data, not on threads (there are none). */
rt_status rt_embedding_backward(rt_ctx *ctx, const int32_t *ids, int64_t N,
                                int64_t T, const float *dout, int64_t V,
                                int64_t maxT, int64_t D, float *dwte,
                                float *dwpe)
{
    rt_status st = check_ids(ctx, "embedding backward", ids, N, T, V, maxT);
    if (st) return st;
    for (int64_t n = 0; n < N; n++)
        for (int64_t t = 0; t < T; t++) {
            const float *restrict g = dout + (n * T + t) * D;
            if (dwte) {
                float *restrict e = dwte + (int64_t)ids[n * T + t] * D;
                VLOOP(j, D, e[j] += g[j];);
            }
            if (dwpe) {
                float *restrict p = dwpe + t * D;
                VLOOP(j, D, p[j] += g[j];);
            }
        }
    return RT_STATUS_OK;
}

rt_status rt_embedding_backward_ref(rt_ctx *ctx, const int32_t *ids,
                                    int64_t N, int64_t T, const float *dout,
                                    int64_t V, int64_t maxT, int64_t D,
                                    float *dwte, float *dwpe)
{
    rt_status st = check_ids(ctx, "embedding backward", ids, N, T, V, maxT);
    if (st) return st;
    /* Per table row, the sum over every position that used it, in double. */
    if (dwte)
        for (int64_t v = 0; v < V; v++)
            for (int64_t j = 0; j < D; j++) {
                double s = 0;
                for (int64_t i = 0; i < N * T; i++)
                    if (ids[i] == v) s += dout[i * D + j];
                dwte[v * D + j] += (float)s;
            }
    if (dwpe)
        for (int64_t t = 0; t < T; t++)
            for (int64_t j = 0; j < D; j++) {
                double s = 0;
                for (int64_t n = 0; n < N; n++) s += dout[(n * T + t) * D + j];
                dwpe[t * D + j] += (float)s;
            }
    return RT_STATUS_OK;
}

/* ============================================================ tied output */

void rt_tied_logits(const float *h, const float *wte, int64_t M, int64_t V,
                    int64_t D, float *logits)
{
    rt_gemm(0, 1, M, V, D, 1.0f, h, D, wte, D, 0.0f, logits, V);
}

void rt_tied_logits_backward(const float *dlogits, const float *h,
                             const float *wte, int64_t M, int64_t V,
                             int64_t D, float *dh, float *dwte)
{
    if (dwte) rt_gemm(1, 0, V, D, M, 1.0f, dlogits, V, h, D, 1.0f, dwte, D);
    if (dh) rt_gemm(0, 0, M, D, V, 1.0f, dlogits, V, wte, D, 0.0f, dh, D);
}

/* ============================================================= sampling */

static int32_t first_max(const float *x, int64_t V)
{
    int64_t b = 0;
    for (int64_t i = 1; i < V; i++)
        if (x[i] > x[b] || (x[b] != x[b] && x[i] == x[i])) b = i;
    return (int32_t)b;
}

/* The k-th largest of w[0..n) (k in 1..n), reordering w: Hoare's
 * quickselect with the middle element as pivot. */
static float kth_largest(float *w, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float pv = w[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (w[i] > pv) i++;
            while (w[j] < pv) j--;
            if (i <= j) {
                float t = w[i];
                w[i] = w[j];
                w[j] = t;
                i++;
                j--;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return w[want];
    }
    return w[want];
}

int32_t rt_lm_sample(const float *logits, int64_t V, float temperature,
                     int64_t top_k, rt_rng *r, float *work)
{
    int32_t best = first_max(logits, V);
    float m = logits[best];
    if (temperature <= 0.0f || !r || !(m > -INFINITY && m < INFINITY)) return best;
    /* NaN never passes the threshold; -inf gets probability 0. */
    float thr = -INFINITY;
    if (top_k > 0 && top_k < V) {
        int64_t n = 0;
        for (int64_t i = 0; i < V; i++)
            if (logits[i] == logits[i]) work[n++] = logits[i];
        if (top_k < n) thr = kth_largest(work, n, top_k);
    }
    double inv = 1.0 / temperature, s = 0;
    for (int64_t i = 0; i < V; i++)
        if (logits[i] >= thr) s += exp(((double)logits[i] - m) * inv);
    double u = (double)rt_rng_uniform(r) * s, c = 0;
    int32_t last = best;
    for (int64_t i = 0; i < V; i++) {
        if (!(logits[i] >= thr)) continue;
        double e = exp(((double)logits[i] - m) * inv);
        if (e <= 0) continue;
        c += e;
        last = (int32_t)i;
        if (u < c) return (int32_t)i;
    }
    return last; /* u within rounding of s */
}
