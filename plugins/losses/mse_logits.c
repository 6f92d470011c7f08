/*
 * mse_logits -- loss: mean squared error between student and teacher
 * logits (Ba & Caruana 2014, "Do Deep Nets Really Need to be Deep?").
 *
 *   reduction "mean":      loss = 1/(N C) sum_n sum_c (z_s - z_t)^2
 *                          (PyTorch MSELoss default, as KD_Lib)
 *   reduction "batchmean": loss = 1/N     sum_n sum_c (z_s - z_t)^2
 * N is the ABI's norm (real positions); masked positions are skipped.
 *
 * No temperature, no T^2.  Gradient: 2 (z_s - z_t) / (N C) or / N.
 *
 * Options
 *   reduction  "mean"   mean | batchmean
 */
#include "rt_loss_kit.h"

typedef struct mse {
    int batchmean;
} mse;

static const rt_option options[] = {
    {"reduction", RT_OPT_STRING, "\"mean\"", 1, 0, "mean|batchmean",
     "mean: over all N*C elements; batchmean: sum over classes, mean over batch"},
    RTK_OPT_END,
};
static const rtk_field fields[] = {RTK_CHOICE(mse, batchmean)};

/* A masked -inf logit (or a NaN) makes the squared error infinite: refuse
 * it rather than hand training an infinite loss or gradient. */
static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    mse *m = self;
    RTK_ROWS(it, 0, 0);
    double div = m->batchmean ? in->norm : in->norm * (double)C, total = 0;
    float f = div ? (float)(2.0 * scale / div) : 0;
    while (rtk_rows_next(&it, 1))
        for (int64_t c = 0; c < C; c++) {
            float s = it.zs[c], t = it.zt[c];
            if (!isfinite(s) || !isfinite(t))
                return api->error(ctx, RT_STATUS_ERR_NUMERIC,
                                  "%s logits[%lld, %lld] is %g: the squared error needs finite logits (a masked -inf?)",
                                  isfinite(s) ? "teacher" : "student", (long long)it.n, (long long)c,
                                  (double)(isfinite(s) ? t : s));
            double d = (double)s - (double)t;
            total += d * d;
            if (g) it.g[c] += f * (s - t);
        }
    if (value) *value = div ? total / div : 0;
    return RT_STATUS_OK;
}

RTK_LOSS(mse, "mse_logits", "1.0.0", "mean squared error between student and teacher logits", RT_NEEDS_TEACHER)
