/*
 * ce -- loss: cross-entropy with the hard labels.
 *
 *   loss = -(1/N) sum_n sum_c q_nc log softmax(z_n)_c,
 *   q_n = (1 - eps) onehot(y_n) + eps / C          (label smoothing)
 *
 * Reduction: mean over the real positions, the ABI's norm (as PyTorch
 * CrossEntropyLoss with label_smoothing = eps; for [N, T, C] with a mask,
 * as its ignore_index).  No temperature, no T^2.
 * Gradient: (1/N) (softmax(z_n) - q_n).
 *
 * Options
 *   label_smoothing  0   eps in [0, 1)
 */
#include "rt_loss_kit.h"

typedef struct ce {
    float eps;
} ce;

static const rt_option options[] = {
    {"label_smoothing", RT_OPT_NUMBER, "0", 0, 0.999, NULL, "label smoothing eps: target (1-eps) one-hot + eps/C"},
    RTK_OPT_END,
};
static const rtk_field fields[] = {RTK_F32(ce, eps)};

static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    ce *c = self;
    rtk_rows it;
    int64_t C = rtk_shape_of(in).C;
    float *p = api->scratch(ctx, sizeof(float) * (size_t)C);
    if (!p || rtk_rows_begin(&it, ctx, in, g, 0, 0)) return RT_STATUS_ERR_NOMEM;
    double total = 0;
    float s = rtk_gscale(in, scale), u = c->eps / (float)C;
    while (rtk_rows_next(&it, 1)) {
        if (g) {
            api->softmax(it.zs, p, 1, C, 1.0f);
            for (int64_t k = 0; k < C; k++) it.g[k] += s * (p[k] - u);
            it.g[it.y] -= s * (1.0f - c->eps);
            continue;
        }
        api->log_softmax(it.zs, p, 1, C, 1.0f);
        double row = (1.0 - c->eps) * -p[it.y];
        if (c->eps > 0) {
            double sum = 0;
            for (int64_t k = 0; k < C; k++) sum += p[k];
            row += c->eps / (double)C * -sum;
        }
        total += row;
    }
    if (value) *value = rtk_value(in, total);
    return RT_STATUS_OK;
}

RTK_LOSS(ce, "ce", "1.0.0", "cross-entropy with hard labels, batch mean, optional label smoothing", RT_NEEDS_TARGET)
