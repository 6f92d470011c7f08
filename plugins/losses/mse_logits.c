/*
 * mse_logits -- loss: mean squared error between student and teacher
 * logits (Ba & Caruana 2014, "Do Deep Nets Really Need to be Deep?").
 *
 *   reduction "mean":      loss = 1/(N C) sum_n sum_c (z_s - z_t)^2
 *                          (PyTorch MSELoss default, as KD_Lib)
 *   reduction "batchmean": loss = 1/N     sum_n sum_c (z_s - z_t)^2
 *
 * No temperature, no T^2.  Gradient: 2 (z_s - z_t) / (N C) or / N.
 *
 * Options
 *   reduction  "mean"   mean | batchmean
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rt_plugin.h"

static const rt_api *api;

typedef struct mse {
    int batchmean;
} mse;

static const rt_option options[] = {
    {"reduction", RT_OPT_STRING, "\"mean\"", 1, 0, "mean|batchmean",
     "mean: over all N*C elements; batchmean: sum over classes, mean over batch"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    mse *m = calloc(1, sizeof *m);
    if (!m) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    m->batchmean = !strcmp(api->opt_string(o, "reduction"), "batchmean");
    *self = m;
    return RT_STATUS_OK;
}

static void destroy(void *self) { free(self); }

static double divisor(const mse *m, const rt_tensor *z)
{
    return m->batchmean ? (double)z->shape[0] : (double)z->shape[0] * (double)z->shape[1];
}

/* A masked -inf logit (or a NaN) makes the squared error infinite: refuse
 * it rather than hand training an infinite loss or gradient. */
static rt_status check_finite(rt_ctx *ctx, const rt_loss_in *in)
{
    const float *s = rt_f32(in->student), *t = rt_f32(in->teacher->logits);
    int64_t n = rt_numel(in->student), C = in->student->shape[1];
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(s[i]) || !isfinite(t[i]))
            return api->error(ctx, RT_STATUS_ERR_NUMERIC,
                              "%s logits[%lld, %lld] is %g: the squared error needs finite logits (a masked -inf?)",
                              isfinite(s[i]) ? "teacher" : "student", (long long)(i / C), (long long)(i % C),
                              (double)(isfinite(s[i]) ? t[i] : s[i]));
    return RT_STATUS_OK;
}

static rt_status forward(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value)
{
    if (check_finite(ctx, in)) return RT_STATUS_ERR_NUMERIC;
    const float *s = rt_f32(in->student), *t = rt_f32(in->teacher->logits);
    int64_t n = rt_numel(in->student);
    double total = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)s[i] - (double)t[i];
        total += d * d;
    }
    *value = n ? total / divisor(self, in->student) : 0;
    return RT_STATUS_OK;
}

static rt_status backward(void *self, rt_ctx *ctx, const rt_loss_in *in, float scale, rt_tensor *grad)
{
    const float *s = rt_f32(in->student), *t = rt_f32(in->teacher->logits);
    int64_t n = rt_numel(in->student);
    if (!n) return RT_STATUS_OK;
    if (check_finite(ctx, in)) return RT_STATUS_ERR_NUMERIC;
    float f = (float)(2.0 * scale / divisor(self, in->student));
    float *g = rt_f32(grad);
    for (int64_t i = 0; i < n; i++) g[i] += f * (s[i] - t[i]);
    return RT_STATUS_OK;
}

static const rt_loss_vt vt = {.needs = RT_NEEDS_TEACHER, .forward = forward, .backward = backward};

static const rt_plugin_desc desc = {
    RT_DESC_INIT(RT_KIND_LOSS, "mse_logits", "1.0.0", "mean squared error between student and teacher logits"),
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
