/*
 * tvd -- loss: total variation distance between the softened teacher and
 * student distributions (DistillKit's total-variation loss).
 *
 *   p_t = softmax(z_t / T),  p_s = softmax(z_s / T)
 *   loss = f * (1/N) sum_n 0.5 sum_c |p_t,nc - p_s,nc|,   f = T^2 or 1
 *
 * Symmetric and bounded: 0 <= TVD <= 1 per row, finite for any logits,
 * -inf entries included.
 * Reduction: "batchmean", sum over classes, mean over the batch.
 * T^2: off by default (t2 = false): Hinton's factor belongs to forward KD;
 * t2 = true multiplies by T^2.
 * Gradient wrt z_s, through the softmax Jacobian:
 *   (f / (T N)) p_s (d - sum_c p_s d),  d = 0.5 sign(p_s - p_t).
 * |x| has no derivative at 0: where p_s,c = p_t,c exactly, sign(0) = 0
 * (the middle of the subdifferential [-0.5, 0.5]).  At p_s = p_t, the
 * minimum, this gives the zero gradient; near a tie, finite differences
 * see a kink, and a one-sided difference disagrees with this subgradient.
 * Exact ties do not happen at generic logits, only where both
 * distributions are equal (both uniform, say) or both underflow to 0.
 * p_s and p_t are computed in double so that ties and near-ties are
 * decided by the distributions, not by float32 rounding.
 *
 * Options
 *   temperature  1      T > 0
 *   t2           false  multiply the loss by T^2
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rt_plugin.h"

static const rt_api *api;

typedef struct tvd {
    double T;
    int t2;
} tvd;

static const rt_option options[] = {
    {"temperature", RT_OPT_NUMBER, "1", 1e-4, 1e4, NULL, "softmax temperature T"},
    {"t2", RT_OPT_BOOL, "false", 1, 0, NULL, "multiply the loss by T^2"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    tvd *k = calloc(1, sizeof *k);
    if (!k) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    k->T = api->opt_number(o, "temperature");
    k->t2 = api->opt_bool(o, "t2");
    *self = k;
    return RT_STATUS_OK;
}

static void destroy(void *self) { free(self); }

static rt_status set(void *self, rt_ctx *ctx, const char *name, double v)
{
    tvd *k = self;
    if (!strcmp(name, "temperature")) k->T = v;
    return RT_STATUS_OK;
}

static double sign(double x) { return (x > 0) - (x < 0); }

/* The whole loss, and when g is non-NULL, g += scale * its gradient. */
static rt_status run(const tvd *k, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    int64_t N = in->student->shape[0], C = in->student->shape[1];
    double *ps = api->scratch(ctx, sizeof(double) * (size_t)(2 * C));
    if (!ps) return RT_STATUS_ERR_NOMEM;
    double *pt = ps + C, T = k->T, f = k->t2 ? T * T : 1.0, total = 0;
    const float *zs = rt_f32(in->student), *zt = rt_f32(in->teacher->logits);
    for (int64_t n = 0; n < N; n++, zs += C, zt += C) {
        api->log_softmax_f64(zs, ps, 1, C, T);
        api->log_softmax_f64(zt, pt, 1, C, T);
        for (int64_t c = 0; c < C; c++) ps[c] = exp(ps[c]), pt[c] = exp(pt[c]);
        double row = 0, mean = 0;
        for (int64_t c = 0; c < C; c++) {
            row += fabs(pt[c] - ps[c]);
            mean += ps[c] * 0.5 * sign(ps[c] - pt[c]);
        }
        total += 0.5 * row;
        if (!g) continue;
        double a = f * scale / (T * (double)N);
        for (int64_t c = 0; c < C; c++) g[n * C + c] += (float)(a * ps[c] * (0.5 * sign(ps[c] - pt[c]) - mean));
    }
    if (value) *value = N ? f * total / (double)N : 0;
    return RT_STATUS_OK;
}

static rt_status forward(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value)
{
    return run(self, ctx, in, value, NULL, 0);
}

static rt_status backward(void *self, rt_ctx *ctx, const rt_loss_in *in, float scale, rt_tensor *grad)
{
    return run(self, ctx, in, NULL, rt_f32(grad), scale);
}

static const rt_loss_vt vt = {.needs = RT_NEEDS_TEACHER, .forward = forward, .backward = backward, .set = set};

static const rt_plugin_desc desc = {
    RT_DESC_INIT(RT_KIND_LOSS, "tvd", "1.0.0", "total variation 0.5 sum |p_teacher^T - p_student^T|, batch mean"),
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
