/*
 * attention.c -- causal multi-head self-attention over a fused qkv
 * [N, T, 3D]: full forward and backward (four rt_gemm per sample and head,
 * as llm.c's matmul formulation) and the one-position step over a
 * key/value cache for generation.  See rt_lm.h for the contracts.
 *
 * Forward per (n, h), with Q, K, V the head's [T, hs] slices (leading
 * dimension 3D, no copies) and s = 1/sqrt(hs):
 *   S = s Q K^T   (gemm, written straight into att; the masked upper
 *                  triangle is computed and then overwritten: for T up to a
 *                  few hundred a full gemm beats T row-gemvs)
 *   P = causal softmax(S) in place, upper triangle set to 0
 *   O = P V       (gemm into out's head columns, leading dimension D)
 * Backward:
 *   dP = dO V^T          (gemm into work [T, T])
 *   dV = P^T dO          (gemm)
 *   dS = P * (dP - rowsum(P * dP))   (zero above the diagonal since P is)
 *   dQ = s dS K,  dK = s dS^T Q      (gemms)
 */
#include "rt_lm.h"

#include <math.h>
#include <string.h>

#include "vec.h"

rt_status rt_attention_check(rt_ctx *ctx, int64_t N, int64_t T, int64_t D,
                             int64_t H)
{
    if (N < 1 || T < 1 || H < 1 || D < 1 || D % H)
        return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                        "attention: N %lld, T %lld, D %lld, heads %lld: need "
                        "N, T, heads >= 1 and D a positive multiple of heads",
                        (long long)N, (long long)T, (long long)D, (long long)H);
    return RT_STATUS_OK;
}

size_t rt_attention_workspace(int64_t T) { return (size_t)(T * T); }
size_t rt_attention_step_workspace(int64_t maxT) { return (size_t)maxT; }

/* p[0..n) = softmax(p[0..n)) in place; p[n..len) = 0. */
static void causal_softmax_row(float *restrict p, int64_t n, int64_t len)
{
    float m = -INFINITY;
    for (int64_t j = 0; j < n; j++) m = p[j] > m ? p[j] : m;
    float s = 0;
    for (int64_t j = 0; j < n; j++) {
        float e = expf(p[j] - m);
        p[j] = e;
        s += e;
    }
    float r = 1.0f / s;
    VLOOP(j, n, p[j] *= r;);
    if (len > n) memset(p + n, 0, (size_t)(len - n) * sizeof *p);
}

void rt_attention_forward(const float *qkv, int64_t N, int64_t T, int64_t D,
                          int64_t H, float *out, float *att)
{
    int64_t hs = D / H, C3 = 3 * D;
    float scale = 1.0f / sqrtf((float)hs);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const float *q = qkv + n * T * C3 + h * hs;
            const float *k = q + D, *v = q + 2 * D;
            float *P = att + (n * H + h) * T * T;
            rt_gemm(0, 1, T, T, hs, scale, q, C3, k, C3, 0.0f, P, T);
            for (int64_t t = 0; t < T; t++) causal_softmax_row(P + t * T, t + 1, T);
            rt_gemm(0, 0, T, hs, T, 1.0f, P, T, v, C3, 0.0f,
                    out + n * T * D + h * hs, D);
        }
}

void rt_attention_forward_ref(const float *qkv, int64_t N, int64_t T,
                              int64_t D, int64_t H, float *out, float *att)
{
    int64_t hs = D / H, C3 = 3 * D;
    double scale = 1.0 / sqrt((double)hs);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < T; t++) {
                const float *q = qkv + (n * T + t) * C3 + h * hs;
                float *P = att + ((n * H + h) * T + t) * T;
                double sc[T > 0 ? T : 1], m = -INFINITY, sum = 0;
                for (int64_t j = 0; j <= t; j++) {
                    const float *k = qkv + (n * T + j) * C3 + D + h * hs;
                    double d = 0;
                    for (int64_t i = 0; i < hs; i++) d += (double)q[i] * k[i];
                    sc[j] = d * scale;
                    m = fmax(m, sc[j]);
                }
                for (int64_t j = 0; j <= t; j++) sum += exp(sc[j] - m);
                for (int64_t j = 0; j < T; j++)
                    P[j] = j <= t ? (float)(exp(sc[j] - m) / sum) : 0.0f;
                for (int64_t i = 0; i < hs; i++) {
                    double o = 0;
                    for (int64_t j = 0; j <= t; j++)
                        o += (exp(sc[j] - m) / sum) *
                             qkv[(n * T + j) * C3 + 2 * D + h * hs + i];
                    out[(n * T + t) * D + h * hs + i] = (float)o;
                }
            }
}

void rt_attention_backward(const float *dout, const float *qkv,
                           const float *att, int64_t N, int64_t T, int64_t D,
                           int64_t H, float *dqkv, float *work)
{
    int64_t hs = D / H, C3 = 3 * D;
    float scale = 1.0f / sqrtf((float)hs);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const float *q = qkv + n * T * C3 + h * hs;
            const float *k = q + D, *v = q + 2 * D;
            float *dq = dqkv + n * T * C3 + h * hs;
            float *dk = dq + D, *dv = dq + 2 * D;
            const float *P = att + (n * H + h) * T * T;
            const float *dO = dout + n * T * D + h * hs;
            float *dP = work;
            rt_gemm(0, 1, T, T, hs, 1.0f, dO, D, v, C3, 0.0f, dP, T);
            rt_gemm(1, 0, T, hs, T, 1.0f, P, T, dO, D, 0.0f, dv, C3);
            for (int64_t t = 0; t < T; t++) {
                const float *restrict pr = P + t * T;
                float *restrict dr = dP + t * T;
                int64_t n1 = t + 1;
                float acc[VW] = {0}, s = 0;
                int64_t j = 0;
                for (; j + VW <= n1; j += VW)
                    for (int c = 0; c < VW; c++) acc[c] += pr[j + c] * dr[j + c];
                for (; j < n1; j++) s += pr[j] * dr[j];
                for (int c = 0; c < VW; c++) s += acc[c];
                VLOOP(i, n1, dr[i] = pr[i] * (dr[i] - s););
                if (T > n1) memset(dr + n1, 0, (size_t)(T - n1) * sizeof *dr);
            }
            rt_gemm(0, 0, T, hs, T, scale, dP, T, k, C3, 0.0f, dq, C3);
            rt_gemm(1, 0, T, hs, T, scale, dP, T, q, C3, 0.0f, dk, C3);
        }
}

void rt_attention_backward_ref(const float *dout, const float *qkv,
                               const float *att, int64_t N, int64_t T,
                               int64_t D, int64_t H, float *dqkv)
{
    int64_t hs = D / H, C3 = 3 * D;
    double scale = 1.0 / sqrt((double)hs);
    memset(dqkv, 0, (size_t)(N * T * C3) * sizeof *dqkv);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const float *P = att + (n * H + h) * T * T;
#define Q_(t, i) qkv[(n * T + (t)) * C3 + h * hs + (i)]
#define K_(t, i) qkv[(n * T + (t)) * C3 + D + h * hs + (i)]
#define V_(t, i) qkv[(n * T + (t)) * C3 + 2 * D + h * hs + (i)]
#define DO_(t, i) dout[(n * T + (t)) * D + h * hs + (i)]
            for (int64_t t = 0; t < T; t++) {
                double dp[T > 0 ? T : 1], dot = 0;
                for (int64_t j = 0; j <= t; j++) {
                    double d = 0;
                    for (int64_t i = 0; i < hs; i++) d += (double)DO_(t, i) * V_(j, i);
                    dp[j] = d;
                    dot += P[t * T + j] * d;
                    /* dV[j] += P[t, j] dO[t] */
                    for (int64_t i = 0; i < hs; i++)
                        dqkv[(n * T + j) * C3 + 2 * D + h * hs + i] +=
                            (float)(P[t * T + j] * DO_(t, i));
                }
                for (int64_t j = 0; j <= t; j++) {
                    double ds = P[t * T + j] * (dp[j] - dot) * scale;
                    for (int64_t i = 0; i < hs; i++) {
                        dqkv[(n * T + t) * C3 + h * hs + i] += (float)(ds * K_(j, i));
                        dqkv[(n * T + j) * C3 + D + h * hs + i] += (float)(ds * Q_(t, i));
                    }
                }
            }
#undef Q_
#undef K_
#undef V_
#undef DO_
        }
}

rt_status rt_attention_step(rt_ctx *ctx, const float *qkv, int64_t N,
                            int64_t t, int64_t maxT, int64_t D, int64_t H,
                            float *kcache, float *vcache, float *out,
                            float *work)
{
    if (t < 0 || t >= maxT)
        return rt_error(ctx, RT_STATUS_ERR_ARG,
                        "attention step: position %lld outside the cache of "
                        "%lld positions (the context length); start a new "
                        "window or slide it",
                        (long long)t, (long long)maxT);
    int64_t hs = D / H, C3 = 3 * D;
    float scale = 1.0f / sqrtf((float)hs);
    for (int64_t n = 0; n < N; n++) {
        const float *q = qkv + n * C3;
        float *kc = kcache + n * maxT * D, *vc = vcache + n * maxT * D;
        memcpy(kc + t * D, q + D, (size_t)D * sizeof *kc);
        memcpy(vc + t * D, q + 2 * D, (size_t)D * sizeof *vc);
        for (int64_t h = 0; h < H; h++) {
            /* scores [1, t+1] = s q_h K_h^T, then p V_h: the same order of
             * operations as a row of the full forward's gemms. */
            rt_gemm(0, 1, 1, t + 1, hs, scale, q + h * hs, hs, kc + h * hs, D,
                    0.0f, work, t + 1);
            causal_softmax_row(work, t + 1, t + 1);
            rt_gemm(0, 0, 1, hs, t + 1, 1.0f, work, t + 1, vc + h * hs, D,
                    0.0f, out + n * D + h * hs, D);
        }
    }
    return RT_STATUS_OK;
}
