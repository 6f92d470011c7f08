/*
 * kd -- loss: Hinton knowledge distillation (Hinton, Vinyals, Dean 2015,
 * "Distilling the Knowledge in a Neural Network").
 *
 *   p_t = softmax(z_t / T),  p_s = softmax(z_s / T)
 *   loss = T^2 * (1/N) sum_n KL(p_t,n || p_s,n)
 *        = T^2 * (1/N) sum_n sum_c p_t log(p_t / p_s)
 *
 * Direction: forward KL, teacher first (PyTorch's
 * kl_div(log p_s, p_t, reduction="batchmean")).  Reduction: "batchmean",
 * sum over classes, mean over the batch.  Scaled by T^2 (Hinton) so the
 * gradient keeps its size as T changes; t2 = false drops the factor (the
 * TextBrewer / TRL convention).  Teacher probabilities of exactly 0
 * contribute 0 (0 log 0 = 0).
 * Gradient wrt z_s: (T^2 / T) (1/N) (p_s - p_t) = (T/N) (p_s - p_t).
 *
 * Options
 *   temperature  4      T > 0
 *   t2           true   multiply by T^2
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rt_plugin.h"

static const rt_api *api;

typedef struct kd {
    float T;
    int t2;
} kd;

static const rt_option options[] = {
    {"temperature", RT_OPT_NUMBER, "4", 1e-4, 1e4, NULL, "softmax temperature T"},
    {"t2", RT_OPT_BOOL, "true", 1, 0, NULL, "multiply the loss by T^2 (Hinton)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    kd *k = calloc(1, sizeof *k);
    if (!k) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    k->T = (float)api->opt_number(o, "temperature");
    k->t2 = api->opt_bool(o, "t2");
    *self = k;
    return RT_STATUS_OK;
}

static void destroy(void *self) { free(self); }

static rt_status set(void *self, rt_ctx *ctx, const char *name, double v)
{
    kd *k = self;
    if (!strcmp(name, "temperature")) k->T = (float)v;
    return RT_STATUS_OK;
}

/* Row log-sum-exp of z / T, in double. */
static double row_lse(const float *z, int64_t C, double T, double *mx)
{
    double m = -INFINITY, s = 0;
    for (int64_t c = 0; c < C; c++) m = fmax(m, (double)z[c]);
    for (int64_t c = 0; c < C; c++) s += exp(((double)z[c] - m) / T);
    *mx = m;
    return log(s);
}

/* In double: with float32 log-probabilities the terms p_t (log p_t -
 * log p_s) cancel to ~1e-7 of their size, which at T = 1e3 is a few percent
 * of the KL itself. */
static rt_status forward(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value)
{
    kd *k = self;
    int64_t N = in->student->shape[0], C = in->student->shape[1];
    const float *zs = rt_f32(in->student), *zt = rt_f32(in->teacher->logits);
    double T = k->T, total = 0;
    for (int64_t n = 0; n < N; n++, zs += C, zt += C) {
        double ms, mt, ls = row_lse(zs, C, T, &ms), lt = row_lse(zt, C, T, &mt);
        for (int64_t c = 0; c < C; c++) {
            double lpt = ((double)zt[c] - mt) / T - lt;
            double pt = exp(lpt);
            if (pt > 0) total += pt * (lpt - (((double)zs[c] - ms) / T - ls));
        }
    }
    double f = k->t2 ? T * T : 1.0;
    *value = N ? f * total / (double)N : 0;
    return RT_STATUS_OK;
}

static rt_status backward(void *self, rt_ctx *ctx, const rt_loss_in *in, float scale, rt_tensor *grad)
{
    kd *k = self;
    int64_t N = in->student->shape[0], C = in->student->shape[1];
    float *ps = api->scratch(ctx, sizeof(float) * (size_t)(2 * N * C));
    if (!ps) return RT_STATUS_ERR_NOMEM;
    float *pt = ps + N * C;
    api->softmax(rt_f32(in->student), ps, N, C, k->T);
    api->softmax(rt_f32(in->teacher->logits), pt, N, C, k->T);
    /* d/dz_s [f KL] = f / T * (p_s - p_t) / N */
    float f = (k->t2 ? k->T : 1.0f / k->T) * (N ? scale / (float)N : 0);
    float *g = rt_f32(grad);
    for (int64_t i = 0; i < N * C; i++) g[i] += f * (ps[i] - pt[i]);
    return RT_STATUS_OK;
}

static const rt_loss_vt vt = {.needs = RT_NEEDS_TEACHER, .forward = forward, .backward = backward, .set = set};

static const rt_plugin_desc desc = {
    RT_DESC_INIT(RT_KIND_LOSS, "kd", "1.0.0", "Hinton KD: T^2 * KL(p_teacher^T || p_student^T), batch mean"),
    .options = options,
    .create = create,
    .destroy = destroy,
    .loss = &vt,
};

static const rt_plugin_desc *const list[] = {&desc, NULL};

RT_EXPORT const rt_plugin_desc *const *rt_plugin_init(const rt_api *host, char *err, size_t errlen)
{
    api = host;
    return list;
}
