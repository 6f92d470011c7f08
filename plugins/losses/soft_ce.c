/*
 * soft_ce -- loss: cross-entropy against the teacher's softened
 * distribution (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a
 * Neural Network": the soft-target objective as cross-entropy).
 *
 *   p_t = softmax(z_t / T),  p_s = softmax(z_s / T)
 *   loss = f * (1/N) sum_n -sum_c p_t,nc log p_s,nc,   f = T^2 or 1
 *        = f * (1/N) sum_n (KL(p_t,n || p_s,n) + H(p_t,n))
 *
 * So soft_ce = kd + T^2 H(p_t) with the same T and t2: the same gradient
 * as kd, plus the teacher's entropy, a constant in the student.  Some
 * codebases write the soft term this way (soft-target cross-entropy); the
 * value is not 0 when the student matches the teacher.
 * Reduction: "batchmean", sum over classes, mean over the batch.
 * T^2: on by default (t2 = true, Hinton); t2 = false drops it, so a recipe
 * can reproduce either convention.
 * Teacher probabilities of exactly 0 contribute 0 (0 log 0 = 0).  A -inf
 * student logit where the teacher has mass is an infinite cross-entropy:
 * refused with RT_STATUS_ERR_NUMERIC.
 * Gradient wrt z_s: (f / (T N)) (p_s - p_t).
 *
 * Options
 *   temperature  4      T > 0
 *   t2           true   multiply the loss by T^2
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rt_plugin.h"

static const rt_api *api;

typedef struct sce {
    double T;
    int t2;
} sce;

static const rt_option options[] = {
    {"temperature", RT_OPT_NUMBER, "4", 1e-4, 1e4, NULL, "softmax temperature T"},
    {"t2", RT_OPT_BOOL, "true", 1, 0, NULL, "multiply the loss by T^2 (Hinton)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    sce *k = calloc(1, sizeof *k);
    if (!k) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    k->T = api->opt_number(o, "temperature");
    k->t2 = api->opt_bool(o, "t2");
    *self = k;
    return RT_STATUS_OK;
}

static void destroy(void *self) { free(self); }

static rt_status set(void *self, rt_ctx *ctx, const char *name, double v)
{
    sce *k = self;
    if (!strcmp(name, "temperature")) k->T = v;
    return RT_STATUS_OK;
}

/* The whole loss, and when g is non-NULL, g += scale * its gradient.  One
 * function serves forward and backward so both refuse the same inputs. */
static rt_status run(const sce *k, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    int64_t N = in->student->shape[0], C = in->student->shape[1];
    double *ls = api->scratch(ctx, sizeof(double) * (size_t)(2 * C));
    if (!ls) return RT_STATUS_ERR_NOMEM;
    double *lt = ls + C, T = k->T, f = k->t2 ? T * T : 1.0, total = 0;
    const float *zs = rt_f32(in->student), *zt = rt_f32(in->teacher->logits);
    for (int64_t n = 0; n < N; n++, zs += C, zt += C) {
        api->log_softmax_f64(zs, ls, 1, C, T);
        api->log_softmax_f64(zt, lt, 1, C, T);
        for (int64_t c = 0; c < C; c++) {
            double pt = exp(lt[c]);
            if (pt == 0) continue;
            if (ls[c] == -INFINITY)
                return api->error(ctx, RT_STATUS_ERR_NUMERIC,
                                  "cross-entropy is infinite: student probability 0 (logit -inf) where the teacher "
                                  "has %g, at row %lld class %lld",
                                  pt, (long long)n, (long long)c);
            total -= pt * ls[c];
        }
        if (!g) continue;
        double a = f * scale / (T * (double)N);
        for (int64_t c = 0; c < C; c++) g[n * C + c] += (float)(a * (exp(ls[c]) - exp(lt[c])));
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
    RT_DESC_INIT(RT_KIND_LOSS, "soft_ce", "1.0.0",
                 "soft-target cross-entropy -sum p_teacher^T log p_student^T, batch mean, T^2"),
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
