/*
 * norm.c -- batch normalisation over [N, C, HW] (BatchNorm1d and 2d) and
 * the residual add, with their plain twins.  The formulas and defaults are
 * PyTorch's (see rt_conv.h); the statistics are two-pass (mean, then the
 * squared deviations from it), summed per plane in VW float lanes and
 * across planes in double, so a channel's variance does not cancel.
 */
#include "rt_conv.h"

#include <math.h>
#include <string.h>

#include "vec.h"

/* Channels go in blocks of CB, each block's statistics in arrays on the
 * stack, and the loops run sample by sample over the block: for HW = 1
 * (BatchNorm1d on [N, C]) a block is a contiguous piece of each row, where
 * channel by channel would stride through x by C.  Every sum is taken in
 * the same order either way. */
#define CB 64
/* The plane of sample n, channel c in a [N, C, HW] tensor t. */
#define PLANE(t, n, c) ((t) + ((n) * C + (c)) * HW)

/* sum of p[0..n); then sum of (p[j] - m)^2. */
static double plane_sum(const float *restrict p, int64_t n)
{
    float acc[VW] = {0}, s = 0;
    int64_t j = 0;
    for (; j + VW <= n; j += VW)
        for (int q = 0; q < VW; q++) acc[q] += p[j + q];
    for (; j < n; j++) s += p[j];
    for (int q = 0; q < VW; q++) s += acc[q];
    return s;
}

static double plane_sqdev(const float *restrict p, int64_t n, float m)
{
    float acc[VW] = {0}, s = 0;
    int64_t j = 0;
    for (; j + VW <= n; j += VW)
        for (int q = 0; q < VW; q++) {
            float d = p[j + q] - m;
            acc[q] += d * d;
        }
    for (; j < n; j++) s += (p[j] - m) * (p[j] - m);
    for (int q = 0; q < VW; q++) s += acc[q];
    return s;
}

/* sum of dy and of dy (x - m) over one plane. */
static void plane_dot(const float *restrict dy, const float *restrict x, int64_t n, float m,
                      double *sdy, double *sdyx)
{
    float a[VW] = {0}, b[VW] = {0}, sa = 0, sb = 0;
    int64_t j = 0;
    for (; j + VW <= n; j += VW)
        for (int q = 0; q < VW; q++) {
            a[q] += dy[j + q];
            b[q] += dy[j + q] * (x[j + q] - m);
        }
    for (; j < n; j++) {
        sa += dy[j];
        sb += dy[j] * (x[j] - m);
    }
    for (int q = 0; q < VW; q++) {
        sa += a[q];
        sb += b[q];
    }
    *sdy += sa;
    *sdyx += sb;
}

/* y = x s + t over one plane (y may be x). */
static void plane_affine(const float *x, float *y, int64_t n, float s, float t)
{
    const float *restrict xs = x;
    float *restrict ys = y;
    if (x == y) {
        VLOOP(j, n, y[j] = y[j] * s + t;);
        return;
    }
    VLOOP(j, n, ys[j] = xs[j] * s + t;);
}

rt_status rt_batchnorm_train_forward(rt_ctx *ctx, const float *x, int64_t N, int64_t C,
                                     int64_t HW, const float *gamma, const float *beta,
                                     float eps, float momentum, float *running_mean,
                                     float *running_var, int64_t *num_batches_tracked,
                                     float *y, float *save_mean, float *save_invstd)
{
    int64_t cnt;
    if (N < 0 || C < 0 || HW < 0 || __builtin_mul_overflow(N, HW, &cnt))
        return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                        "batch_norm: shape [N %lld, C %lld, HW %lld] is invalid", (long long)N,
                        (long long)C, (long long)HW);
    if (cnt < 2)
        return rt_error(ctx, RT_STATUS_ERR_ARG,
                        "batch_norm: training needs more than 1 value per channel, got "
                        "N %lld x HW %lld = %lld (use a larger batch, or eval mode)",
                        (long long)N, (long long)HW, (long long)cnt);
    if (!(eps > 0.0f) || !isfinite(eps))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "batch_norm: eps is %g; it must be > 0",
                        (double)eps);
    if (!(momentum >= 0.0f && momentum <= 1.0f))
        return rt_error(ctx, RT_STATUS_ERR_ARG,
                        "batch_norm: momentum is %g; it must be in [0, 1]", (double)momentum);
    for (int64_t c0 = 0; c0 < C; c0 += CB) {
        const int64_t nb = C - c0 < CB ? C - c0 : CB;
        double sum[CB] = {0}, sq[CB] = {0};
        float mean[CB], sc[CB], sh[CB];
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < nb; j++) sum[j] += plane_sum(PLANE(x, n, c0 + j), HW);
        for (int64_t j = 0; j < nb; j++) mean[j] = (float)(sum[j] / (double)cnt);
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < nb; j++) sq[j] += plane_sqdev(PLANE(x, n, c0 + j), HW, mean[j]);
        for (int64_t j = 0; j < nb; j++) {
            int64_t c = c0 + j;
            float invstd = (float)(1.0 / sqrt(sq[j] / (double)cnt + (double)eps));
            save_mean[c] = mean[j];
            save_invstd[c] = invstd;
            if (running_mean)
                running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean[j];
            if (running_var)
                running_var[c] = (1.0f - momentum) * running_var[c] +
                                 momentum * (float)(sq[j] / (double)(cnt - 1));
            sc[j] = (gamma ? gamma[c] : 1.0f) * invstd;
            sh[j] = (beta ? beta[c] : 0.0f) - mean[j] * sc[j];
        }
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < nb; j++)
                plane_affine(PLANE(x, n, c0 + j), PLANE(y, n, c0 + j), HW, sc[j], sh[j]);
    }
    if (num_batches_tracked) ++*num_batches_tracked;
    return RT_STATUS_OK;
}

void rt_batchnorm_eval_forward(const float *x, int64_t N, int64_t C, int64_t HW,
                               const float *gamma, const float *beta, float eps,
                               const float *running_mean, const float *running_var, float *y)
{
    for (int64_t c0 = 0; c0 < C; c0 += CB) {
        const int64_t nb = C - c0 < CB ? C - c0 : CB;
        float sc[CB], sh[CB];
        for (int64_t j = 0; j < nb; j++) {
            int64_t c = c0 + j;
            float invstd = (float)(1.0 / sqrt((double)running_var[c] + (double)eps));
            sc[j] = (gamma ? gamma[c] : 1.0f) * invstd;
            sh[j] = (beta ? beta[c] : 0.0f) - running_mean[c] * sc[j];
        }
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < nb; j++)
                plane_affine(PLANE(x, n, c0 + j), PLANE(y, n, c0 + j), HW, sc[j], sh[j]);
    }
}

/* dx += a dy + b + (x - m) k over one plane. */
static void plane_bwd(float *restrict dx, const float *restrict dy, const float *restrict x,
                      int64_t n, float a, float b, float m, float k)
{
    VLOOP(j, n, dx[j] += a * dy[j] + b + (x[j] - m) * k;);
}

void rt_batchnorm_train_backward(const float *x, const float *dy, int64_t N, int64_t C,
                                 int64_t HW, const float *gamma, const float *save_mean,
                                 const float *save_invstd, float *dx, float *dgamma,
                                 float *dbeta)
{
    double cnt = (double)(N * HW);
    for (int64_t c0 = 0; c0 < C; c0 += CB) {
        const int64_t nb = C - c0 < CB ? C - c0 : CB;
        double sdy[CB] = {0}, sdyx[CB] = {0};
        float a[CB], b[CB], k[CB];
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < nb; j++)
                plane_dot(PLANE(dy, n, c0 + j), PLANE(x, n, c0 + j), HW, save_mean[c0 + j],
                          &sdy[j], &sdyx[j]);
        for (int64_t j = 0; j < nb; j++) {
            int64_t c = c0 + j;
            float is = save_invstd[c];
            double sdyxhat = sdyx[j] * is;
            if (dgamma) dgamma[c] += (float)sdyxhat;
            if (dbeta) dbeta[c] += (float)sdy[j];
            a[j] = (gamma ? gamma[c] : 1.0f) * is;
            b[j] = (float)(-(double)a[j] * sdy[j] / cnt);
            k[j] = (float)(-(double)a[j] * is * sdyxhat / cnt);
        }
        if (!dx) continue;
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < nb; j++)
                plane_bwd(PLANE(dx, n, c0 + j), PLANE(dy, n, c0 + j), PLANE(x, n, c0 + j), HW,
                          a[j], b[j], save_mean[c0 + j], k[j]);
    }
}

void rt_batchnorm_eval_backward(const float *x, const float *dy, int64_t N, int64_t C,
                                int64_t HW, const float *gamma, float eps,
                                const float *running_mean, const float *running_var,
                                float *dx, float *dgamma, float *dbeta)
{
    for (int64_t c0 = 0; c0 < C; c0 += CB) {
        const int64_t nb = C - c0 < CB ? C - c0 : CB;
        float is[CB], a[CB];
        for (int64_t j = 0; j < nb; j++) {
            is[j] = (float)(1.0 / sqrt((double)running_var[c0 + j] + (double)eps));
            a[j] = (gamma ? gamma[c0 + j] : 1.0f) * is[j];
        }
        if (dgamma || dbeta) {
            double sdy[CB] = {0}, sdyx[CB] = {0};
            for (int64_t n = 0; n < N; n++)
                for (int64_t j = 0; j < nb; j++)
                    plane_dot(PLANE(dy, n, c0 + j), PLANE(x, n, c0 + j), HW, running_mean[c0 + j],
                              &sdy[j], &sdyx[j]);
            for (int64_t j = 0; j < nb; j++) {
                if (dgamma) dgamma[c0 + j] += (float)(sdyx[j] * is[j]);
                if (dbeta) dbeta[c0 + j] += (float)sdy[j];
            }
        }
        if (!dx) continue;
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < nb; j++)
                plane_bwd(PLANE(dx, n, c0 + j), PLANE(dy, n, c0 + j), PLANE(x, n, c0 + j), HW,
                          a[j], 0.0f, running_mean[c0 + j], 0.0f);
    }
}

/* ------------------------------------------------------------ the twins */

#define AT(n, c, j) (((n) * C + (c)) * HW + (j))

static void ref_stats(const float *x, int64_t N, int64_t C, int64_t HW, int64_t c,
                      double *mean, double *sq)
{
    double s = 0, q = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < HW; j++) s += x[AT(n, c, j)];
    double m = s / (double)(N * HW);
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < HW; j++) q += (x[AT(n, c, j)] - m) * (x[AT(n, c, j)] - m);
    *mean = m;
    *sq = q;
}

void rt_batchnorm_train_forward_ref(const float *x, int64_t N, int64_t C, int64_t HW,
                                    const float *gamma, const float *beta, float eps,
                                    float momentum, float *running_mean, float *running_var,
                                    int64_t *num_batches_tracked, float *y, float *save_mean,
                                    float *save_invstd)
{
    double cnt = (double)(N * HW);
    for (int64_t c = 0; c < C; c++) {
        double m, q;
        ref_stats(x, N, C, HW, c, &m, &q);
        double is = 1.0 / sqrt(q / cnt + eps);
        double ga = gamma ? gamma[c] : 1.0, be = beta ? beta[c] : 0.0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < HW; j++)
                y[AT(n, c, j)] = (float)((x[AT(n, c, j)] - m) * is * ga + be);
        save_mean[c] = (float)m;
        save_invstd[c] = (float)is;
        if (running_mean)
            running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * m);
        if (running_var)
            running_var[c] =
                (float)((1.0 - momentum) * running_var[c] + momentum * q / (cnt - 1.0));
    }
    if (num_batches_tracked) ++*num_batches_tracked;
}

void rt_batchnorm_eval_forward_ref(const float *x, int64_t N, int64_t C, int64_t HW,
                                   const float *gamma, const float *beta, float eps,
                                   const float *running_mean, const float *running_var,
                                   float *y)
{
    for (int64_t c = 0; c < C; c++) {
        double is = 1.0 / sqrt((double)running_var[c] + eps);
        double ga = gamma ? gamma[c] : 1.0, be = beta ? beta[c] : 0.0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < HW; j++)
                y[AT(n, c, j)] = (float)((x[AT(n, c, j)] - running_mean[c]) * is * ga + be);
    }
}

/* The twins' backward works from the definition rather than the saved
 * statistics: it recomputes mean and variance from x in double. */
void rt_batchnorm_train_backward_ref(const float *x, const float *dy, int64_t N, int64_t C,
                                     int64_t HW, const float *gamma, const float *save_mean,
                                     const float *save_invstd, float *dx, float *dgamma,
                                     float *dbeta)
{
    double cnt = (double)(N * HW);
    for (int64_t c = 0; c < C; c++) {
        double m, q;
        ref_stats(x, N, C, HW, c, &m, &q);
        /* eps is not passed: it is recovered from the forward's invstd. */
        double var_eps = 1.0 / ((double)save_invstd[c] * save_invstd[c]);
        double is = 1.0 / sqrt(var_eps);
        double sdy = 0, sdyxh = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < HW; j++) {
                sdy += dy[AT(n, c, j)];
                sdyxh += dy[AT(n, c, j)] * (x[AT(n, c, j)] - m) * is;
            }
        if (dgamma) dgamma[c] = (float)(dgamma[c] + sdyxh);
        if (dbeta) dbeta[c] = (float)(dbeta[c] + sdy);
        if (!dx) continue;
        double ga = gamma ? gamma[c] : 1.0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < HW; j++) {
                double xh = (x[AT(n, c, j)] - m) * is;
                double g = ga * is * (dy[AT(n, c, j)] - sdy / cnt - xh * sdyxh / cnt);
                dx[AT(n, c, j)] = (float)(dx[AT(n, c, j)] + g);
            }
    }
    (void)save_mean;
}

void rt_batchnorm_eval_backward_ref(const float *x, const float *dy, int64_t N, int64_t C,
                                    int64_t HW, const float *gamma, float eps,
                                    const float *running_mean, const float *running_var,
                                    float *dx, float *dgamma, float *dbeta)
{
    for (int64_t c = 0; c < C; c++) {
        double is = 1.0 / sqrt((double)running_var[c] + eps);
        double ga = gamma ? gamma[c] : 1.0, sdy = 0, sdyxh = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < HW; j++) {
                double d = dy[AT(n, c, j)];
                sdy += d;
                sdyxh += d * (x[AT(n, c, j)] - running_mean[c]) * is;
                if (dx) dx[AT(n, c, j)] = (float)(dx[AT(n, c, j)] + ga * is * d);
            }
        if (dgamma) dgamma[c] = (float)(dgamma[c] + sdyxh);
        if (dbeta) dbeta[c] = (float)(dbeta[c] + sdy);
    }
}

#undef AT

/* ---------------------------------------------------------- residual add */

void rt_residual_add(const float *a, const float *b, float *y, int64_t n)
{
    /* No restrict: y may be a or b. */
    VLOOP(i, n, y[i] = a[i] + b[i];);
}

void rt_residual_add_backward(const float *dy, int64_t n, float *da, float *db)
{
    const float *restrict d = dy;
    if (da) {
        float *restrict o = da;
        VLOOP(i, n, o[i] += d[i];);
    }
    if (db) {
        float *restrict o = db;
        VLOOP(i, n, o[i] += d[i];);
    }
}
