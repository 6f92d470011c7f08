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

#include "parallel.h"
#include "vec.h"

/* Channels go in blocks of CB, each block's statistics in arrays on the
 * stack, and the loops run sample by sample over the block: for HW = 1
 * (BatchNorm1d on [N, C]) a block is a contiguous piece of each row, where
 * channel by channel would stride through x by C.  Every sum is taken in
 * the same order either way. */
#define CB 64
/* ... and at most as many channels as keep a block's values (N HW each)
 * within BLOCK_FLOATS, so that the passes after the first over a block
 * (the squared deviations and y; in the backward dx) read it from the
 * core's cache instead of memory: the 28x28 CNN's first batch norm has
 * 400 KB per channel at batch 128, 13 MB for 32 channels. */
#define BLOCK_FLOATS 65536

static int64_t block_of(int64_t N, int64_t HW)
{
    int64_t per = N * HW;
    if (per < 1) return CB;
    int64_t b = BLOCK_FLOATS / per;
    return b < 1 ? 1 : b > CB ? CB : b;
}
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

/* y = x s + t, x and y distinct.  Restrict parameters, not locals: gcc
 * ignores restrict on locals, and the loop over them stayed scalar. */
static void affine_into(float *restrict y, const float *restrict x, int64_t n, float s, float t)
{
    VLOOP(j, n, y[j] = x[j] * s + t;);
}

/* y = x s + t over one plane (y may be x). */
static void plane_affine(const float *x, float *y, int64_t n, float s, float t)
{
    if (x == y) {
        VLOOP(j, n, y[j] = y[j] * s + t;);
        return;
    }
    affine_into(y, x, n, s, t);
}

/* dx = a dy + b + (x - m) k over one plane: the _set backward's. */
static void plane_bwd_set(float *restrict dx, const float *restrict dy, const float *restrict x,
                          int64_t n, float a, float b, float m, float k)
{
    VLOOP(j, n, dx[j] = a * dy[j] + b + (x[j] - m) * k;);
}

/* dx += a dy + b + (x - m) k over one plane. */
static void plane_bwd(float *restrict dx, const float *restrict dy, const float *restrict x,
                      int64_t n, float a, float b, float m, float k)
{
    VLOOP(j, n, dx[j] += a * dy[j] + b + (x[j] - m) * k;);
}

/* The four kernels split the channels into ranges, one per thread: a
 * channel's sums are taken by one thread in the serial order, so the
 * results are the same with any thread count. */
typedef struct bn_job {
    const float *x, *dy;
    float *y, *dx;
    int64_t N, C, HW;
    const float *gamma, *beta;
    float eps, momentum;
    float *running_mean, *running_var, *save_mean, *save_invstd, *dgamma, *dbeta;
    int64_t ntasks;
    int set; /* train backward: dx overwritten, not accumulated */
} bn_job;

static void bn_run(bn_job *j, rt_par_fn fn)
{
    int64_t work = j->N * j->C * j->HW;
    j->ntasks = rt_par_threads(j->C, work);
    rt_par_run(j->ntasks, work, fn, j);
}

static void train_forward_task(void *arg, int64_t task, int thread)
{
    const bn_job *J = arg;
    const int64_t N = J->N, C = J->C, HW = J->HW;
    int64_t ca, cb;
    rt_par_range(C, J->ntasks, task, &ca, &cb);
    const int64_t cnt = N * HW;
    const float *x = J->x, *gamma = J->gamma, *beta = J->beta;
    float *y = J->y, *save_mean = J->save_mean, *save_invstd = J->save_invstd;
    float *running_mean = J->running_mean, *running_var = J->running_var;
    const float eps = J->eps, momentum = J->momentum;
    const int64_t bk = block_of(N, HW);
    for (int64_t c0 = ca; c0 < cb; c0 += bk) {
        const int64_t nb = cb - c0 < bk ? cb - c0 : bk;
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
}

static void eval_forward_task(void *arg, int64_t task, int thread)
{
    const bn_job *J = arg;
    const int64_t N = J->N, C = J->C, HW = J->HW;
    int64_t ca, cb;
    rt_par_range(C, J->ntasks, task, &ca, &cb);
    const float *x = J->x, *gamma = J->gamma, *beta = J->beta;
    const float *running_mean = J->running_mean, *running_var = J->running_var;
    const float eps = J->eps;
    float *y = J->y;
    const int64_t bk = block_of(N, HW);
    for (int64_t c0 = ca; c0 < cb; c0 += bk) {
        const int64_t nb = cb - c0 < bk ? cb - c0 : bk;
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

static void train_backward_task(void *arg, int64_t task, int thread)
{
    const bn_job *J = arg;
    const int64_t N = J->N, C = J->C, HW = J->HW;
    int64_t ca, cb;
    rt_par_range(C, J->ntasks, task, &ca, &cb);
    const double cnt = (double)(N * HW);
    const float *x = J->x, *dy = J->dy, *gamma = J->gamma;
    const float *save_mean = J->save_mean, *save_invstd = J->save_invstd;
    float *dx = J->dx, *dgamma = J->dgamma, *dbeta = J->dbeta;
    const int64_t bk = block_of(N, HW);
    for (int64_t c0 = ca; c0 < cb; c0 += bk) {
        const int64_t nb = cb - c0 < bk ? cb - c0 : bk;
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
                (J->set ? plane_bwd_set : plane_bwd)(PLANE(dx, n, c0 + j), PLANE(dy, n, c0 + j),
                                                     PLANE(x, n, c0 + j), HW, a[j], b[j],
                                                     save_mean[c0 + j], k[j]);
    }
}

static void eval_backward_task(void *arg, int64_t task, int thread)
{
    const bn_job *J = arg;
    const int64_t N = J->N, C = J->C, HW = J->HW;
    int64_t ca, cb;
    rt_par_range(C, J->ntasks, task, &ca, &cb);
    const float *x = J->x, *dy = J->dy, *gamma = J->gamma;
    const float *running_mean = J->running_mean, *running_var = J->running_var;
    const float eps = J->eps;
    float *dx = J->dx, *dgamma = J->dgamma, *dbeta = J->dbeta;
    const int64_t bk = block_of(N, HW);
    for (int64_t c0 = ca; c0 < cb; c0 += bk) {
        const int64_t nb = cb - c0 < bk ? cb - c0 : bk;
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
    bn_job j = {.x = x, .y = y, .N = N, .C = C, .HW = HW, .gamma = gamma, .beta = beta, .eps = eps,
                .momentum = momentum, .running_mean = running_mean, .running_var = running_var,
                .save_mean = save_mean, .save_invstd = save_invstd};
    bn_run(&j, train_forward_task);
    if (num_batches_tracked) ++*num_batches_tracked;
    return RT_STATUS_OK;
}

void rt_batchnorm_eval_forward(const float *x, int64_t N, int64_t C, int64_t HW,
                               const float *gamma, const float *beta, float eps,
                               const float *running_mean, const float *running_var, float *y)
{
    bn_job j = {.x = x, .y = y, .N = N, .C = C, .HW = HW, .gamma = gamma, .beta = beta, .eps = eps,
                .running_mean = (float *)running_mean, .running_var = (float *)running_var};
    bn_run(&j, eval_forward_task);
}


void rt_batchnorm_train_backward(const float *x, const float *dy, int64_t N, int64_t C,
                                 int64_t HW, const float *gamma, const float *save_mean,
                                 const float *save_invstd, float *dx, float *dgamma,
                                 float *dbeta)
{
    bn_job j = {.x = x, .dy = dy, .dx = dx, .N = N, .C = C, .HW = HW, .gamma = gamma,
                .save_mean = (float *)save_mean, .save_invstd = (float *)save_invstd,
                .dgamma = dgamma, .dbeta = dbeta};
    bn_run(&j, train_backward_task);
}

void rt_batchnorm_train_backward_set(const float *x, const float *dy, int64_t N, int64_t C,
                                     int64_t HW, const float *gamma, const float *save_mean,
                                     const float *save_invstd, float *dx, float *dgamma,
                                     float *dbeta)
{
    bn_job j = {.x = x, .dy = dy, .dx = dx, .N = N, .C = C, .HW = HW, .gamma = gamma,
                .save_mean = (float *)save_mean, .save_invstd = (float *)save_invstd,
                .dgamma = dgamma, .dbeta = dbeta, .set = 1};
    bn_run(&j, train_backward_task);
}

void rt_batchnorm_eval_backward(const float *x, const float *dy, int64_t N, int64_t C,
                                int64_t HW, const float *gamma, float eps,
                                const float *running_mean, const float *running_var,
                                float *dx, float *dgamma, float *dbeta)
{
    bn_job j = {.x = x, .dy = dy, .dx = dx, .N = N, .C = C, .HW = HW, .gamma = gamma, .eps = eps,
                .running_mean = (float *)running_mean, .running_var = (float *)running_var,
                .dgamma = dgamma, .dbeta = dbeta};
    bn_run(&j, eval_backward_task);
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

/* Restrict parameters, as affine_into. */
static void add_into(float *restrict d, const float *restrict s, int64_t n)
{
    VLOOP(i, n, d[i] += s[i];);
}

static void sum_into(float *restrict y, const float *restrict a, const float *restrict b, int64_t n)
{
    VLOOP(i, n, y[i] = a[i] + b[i];);
}

void rt_residual_add(const float *a, const float *b, float *y, int64_t n)
{
    /* y may be a or b (the same sums, a + b = b + a exactly). */
    if (y == a) add_into(y, b, n);
    else if (y == b) add_into(y, a, n);
    else sum_into(y, a, b, n);
}

void rt_residual_add_backward(const float *dy, int64_t n, float *da, float *db)
{
    if (da) add_into(da, dy, n);
    if (db) add_into(db, dy, n);
}
