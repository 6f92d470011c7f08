/*
 * layernorm.c -- layer norm over the last dim, forward (saving mean and
 * rstd) and backward.  See rt_lm.h for the contracts.
 *
 * Backward, with xhat = (x - mean) rstd and g = dout * gamma, per row:
 *   dx = rstd (g - mean(g) - xhat mean(g xhat))
 * (llm.c's layernorm_backward; the mean and variance terms folded in).
 */
#include "rt_lm.h"

#include <math.h>

#include "vec.h"

void rt_layernorm_forward(const float *x, const float *gamma,
                          const float *beta, int64_t M, int64_t D, float eps,
                          float *out, float *mean, float *rstd)
{
    for (int64_t m = 0; m < M; m++) {
        const float *restrict xr = x + m * D;
        float *restrict o = out + m * D;
        /* Two passes (mean, then squared deviations), summed in double: no
         * cancellation for rows whose mean is large next to their spread,
         * which a residual stream can have. */
        double acc[VW] = {0}, s = 0;
        int64_t j = 0;
        for (; j + VW <= D; j += VW)
            for (int k = 0; k < VW; k++) acc[k] += xr[j + k];
        for (; j < D; j++) s += xr[j];
        for (int k = 0; k < VW; k++) s += acc[k];
        double mud = s / (double)D;
        float mu = (float)mud;
        double acc2[VW] = {0}, v = 0;
        for (j = 0; j + VW <= D; j += VW)
            for (int k = 0; k < VW; k++) {
                double d = xr[j + k] - mud;
                acc2[k] += d * d;
            }
        for (; j < D; j++) v += (xr[j] - mud) * (xr[j] - mud);
        for (int k = 0; k < VW; k++) v += acc2[k];
        float r = (float)(1.0 / sqrt(v / (double)D + eps));
        if (gamma && beta) {
            const float *restrict g = gamma, *restrict b = beta;
            VLOOP(i, D, o[i] = (xr[i] - mu) * r * g[i] + b[i];);
        } else {
            for (int64_t i = 0; i < D; i++)
                o[i] = (xr[i] - mu) * r * (gamma ? gamma[i] : 1.0f) +
                       (beta ? beta[i] : 0.0f);
        }
        if (mean) mean[m] = mu;
        if (rstd) rstd[m] = r;
    }
}

void rt_layernorm_forward_ref(const float *x, const float *gamma,
                              const float *beta, int64_t M, int64_t D,
                              float eps, float *out, float *mean, float *rstd)
{
    for (int64_t m = 0; m < M; m++) {
        double s = 0, v = 0;
        for (int64_t j = 0; j < D; j++) s += x[m * D + j];
        double mu = s / (double)D;
        for (int64_t j = 0; j < D; j++)
            v += (x[m * D + j] - mu) * (x[m * D + j] - mu);
        double r = 1.0 / sqrt(v / (double)D + eps);
        for (int64_t j = 0; j < D; j++)
            out[m * D + j] = (float)((x[m * D + j] - mu) * r *
                                         (gamma ? gamma[j] : 1.0) +
                                     (beta ? beta[j] : 0.0));
        if (mean) mean[m] = (float)mu;
        if (rstd) rstd[m] = (float)r;
    }
}

void rt_layernorm_backward(const float *dout, const float *x,
                           const float *gamma, const float *mean,
                           const float *rstd, int64_t M, int64_t D, float *dx,
                           float *dgamma, float *dbeta)
{
    for (int64_t m = 0; m < M; m++) {
        const float *restrict dy = dout + m * D, *restrict xr = x + m * D;
        float mu = mean[m], r = rstd[m];
        if (dx) {
            float a1[VW] = {0}, a2[VW] = {0}, s1 = 0, s2 = 0;
            int64_t j = 0;
            if (gamma) {
                const float *restrict ga = gamma;
                for (; j + VW <= D; j += VW)
                    for (int k = 0; k < VW; k++) {
                        float g = dy[j + k] * ga[j + k];
                        a1[k] += g;
                        a2[k] += g * (xr[j + k] - mu) * r;
                    }
            } else {
                for (; j + VW <= D; j += VW)
                    for (int k = 0; k < VW; k++) {
                        a1[k] += dy[j + k];
                        a2[k] += dy[j + k] * (xr[j + k] - mu) * r;
                    }
            }
            for (; j < D; j++) {
                float xh = (xr[j] - mu) * r;
                float g = dy[j] * (gamma ? gamma[j] : 1.0f);
                s1 += g;
                s2 += g * xh;
            }
            for (int k = 0; k < VW; k++) {
                s1 += a1[k];
                s2 += a2[k];
            }
            float gm = s1 / (float)D, gxm = s2 / (float)D;
            float *restrict o = dx + m * D;
            if (gamma) {
                const float *restrict ga = gamma;
                VLOOP(i, D, float xh = (xr[i] - mu) * r;
                      o[i] += r * (dy[i] * ga[i] - gm - xh * gxm););
            } else {
                VLOOP(i, D, float xh = (xr[i] - mu) * r;
                      o[i] += r * (dy[i] - gm - xh * gxm););
            }
        }
        if (dgamma) {
            float *restrict dg = dgamma;
            VLOOP(i, D, dg[i] += dy[i] * (xr[i] - mu) * r;);
        }
        if (dbeta) {
            float *restrict db = dbeta;
            VLOOP(i, D, db[i] += dy[i];);
        }
    }
}

void rt_layernorm_backward_ref(const float *dout, const float *x,
                               const float *gamma, const float *mean,
                               const float *rstd, int64_t M, int64_t D,
                               float *dx, float *dgamma, float *dbeta)
{
    /* Straight from the chain rule through mean and variance (not the
     * folded form above), so the two share no algebra. */
    for (int64_t m = 0; m < M; m++) {
        const float *dy = dout + m * D, *xr = x + m * D;
        double mu = mean[m], r = rstd[m];
        double dvar = 0, dmu = 0;
        for (int64_t j = 0; j < D; j++) {
            double g = dy[j] * (gamma ? gamma[j] : 1.0);
            dvar += g * (xr[j] - mu) * -0.5 * r * r * r;
            dmu += -g * r;
        }
        double sdev = 0;
        for (int64_t j = 0; j < D; j++) sdev += xr[j] - mu;
        dmu += dvar * -2.0 * sdev / (double)D;
        if (dx)
            for (int64_t j = 0; j < D; j++) {
                double g = dy[j] * (gamma ? gamma[j] : 1.0);
                dx[m * D + j] += (float)(g * r + dvar * 2.0 * (xr[j] - mu) / (double)D +
                                         dmu / (double)D);
            }
    }
    for (int64_t j = 0; j < D; j++) {
        double sg = 0, sb = 0;
        for (int64_t m = 0; m < M; m++) {
            double dyv = dout[m * D + j];
            sg += dyv * (x[m * D + j] - mean[m]) * rstd[m];
            sb += dyv;
        }
        if (dgamma) dgamma[j] += (float)sg;
        if (dbeta) dbeta[j] += (float)sb;
    }
}
