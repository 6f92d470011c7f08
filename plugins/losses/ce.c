/*
 * ce -- loss: cross-entropy with the hard labels.
 *
 *   loss = -(1/N) sum_n sum_c q_nc log softmax(z_n)_c,
 *   q_n = (1 - eps) onehot(y_n) + eps / C          (label smoothing)
 *
 * Reduction: mean over the batch (as PyTorch CrossEntropyLoss with
 * label_smoothing = eps).  No temperature, no T^2.
 * Gradient: (1/N) (softmax(z_n) - q_n).
 *
 * Options
 *   label_smoothing  0   eps in [0, 1)
 */
#include <math.h>
#include <stdlib.h>

#include "rt_plugin.h"

static const rt_api *api;

typedef struct ce {
    float eps;
} ce;

static const rt_option options[] = {
    {"label_smoothing", RT_OPT_NUMBER, "0", 0, 0.999, NULL, "label smoothing eps: target (1-eps) one-hot + eps/C"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    ce *c = calloc(1, sizeof *c);
    if (!c) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    c->eps = (float)api->opt_number(o, "label_smoothing");
    *self = c;
    return RT_STATUS_OK;
}

static void destroy(void *self) { free(self); }

/* logp[N,C] = log_softmax(z) in scratch; NULL on OOM. */
static float *log_probs(rt_ctx *ctx, const rt_tensor *z)
{
    int64_t N = z->shape[0], C = z->shape[1];
    float *lp = api->scratch(ctx, sizeof(float) * (size_t)(N * C));
    if (lp) api->log_softmax(rt_f32(z), lp, N, C, 1.0f);
    return lp;
}

static rt_status forward(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value)
{
    ce *c = self;
    int64_t N = in->student->shape[0], C = in->student->shape[1];
    float *lp = log_probs(ctx, in->student);
    if (!lp) return RT_STATUS_ERR_NOMEM;
    const int32_t *y = rt_i32(in->target);
    double total = 0;
    for (int64_t n = 0; n < N; n++) {
        const float *r = lp + n * C;
        double row = (1.0 - c->eps) * -r[y[n]];
        if (c->eps > 0) {
            double s = 0;
            for (int64_t k = 0; k < C; k++) s += r[k];
            row += c->eps / (double)C * -s;
        }
        total += row;
    }
    *value = N ? total / (double)N : 0;
    return RT_STATUS_OK;
}

static rt_status backward(void *self, rt_ctx *ctx, const rt_loss_in *in, float scale, rt_tensor *grad)
{
    ce *c = self;
    int64_t N = in->student->shape[0], C = in->student->shape[1];
    float *p = api->scratch(ctx, sizeof(float) * (size_t)(N * C));
    if (!p) return RT_STATUS_ERR_NOMEM;
    api->softmax(rt_f32(in->student), p, N, C, 1.0f);
    const int32_t *y = rt_i32(in->target);
    float *g = rt_f32(grad), s = N ? scale / (float)N : 0, u = c->eps / (float)C;
    for (int64_t n = 0; n < N; n++) {
        float *gr = g + n * C;
        const float *pr = p + n * C;
        for (int64_t k = 0; k < C; k++) gr[k] += s * (pr[k] - u);
        gr[y[n]] -= s * (1.0f - c->eps);
    }
    return RT_STATUS_OK;
}

static const rt_loss_vt vt = {.needs = RT_NEEDS_TARGET, .forward = forward, .backward = backward};

static const rt_plugin_desc desc = {
    RT_DESC_INIT(RT_KIND_LOSS, "ce", "1.0.0", "cross-entropy with hard labels, batch mean, optional label smoothing"),
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
