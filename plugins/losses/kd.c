/*
 * kd -- loss: Hinton knowledge distillation (Hinton, Vinyals, Dean 2015,
 * "Distilling the Knowledge in a Neural Network").
 *
 *   p_t = softmax(z_t / T),  p_s = softmax(z_s / T)
 *   loss = T^2 * (1/N) sum_n KL(p_t,n || p_s,n)
 *        = T^2 * (1/N) sum_n sum_c p_t log(p_t / p_s)
 *
 * Direction: forward KL, teacher first (PyTorch's
 * kl_div(log p_s, p_t, reduction="batchmean")).  Reduction: sum over
 * classes, mean over the real positions (the ABI's norm: "batchmean" for
 * [N, C]).  Scaled by T^2 (Hinton) so the
 * gradient keeps its size as T changes; t2 = false drops the factor (the
 * TextBrewer / TRL convention).  Teacher probabilities of exactly 0
 * contribute 0 (0 log 0 = 0).
 * Gradient wrt z_s: (T^2 / T) (1/N) (p_s - p_t) = (T/N) (p_s - p_t), N = norm.
 *
 * Options
 *   temperature  4      T > 0
 *   t2           true   multiply by T^2
 */
#include "rt_loss_kit.h"

typedef struct kd {
    float T;
    int t2;
} kd;

static const rt_option options[] = {RTK_OPT_TEMPERATURE("4"), RTK_OPT_T2("true", "multiply the loss by T^2 (Hinton)"),
                                    RTK_OPT_END};
static const rtk_field fields[] = {RTK_F32(kd, T), RTK_BOOL(kd, t2)};

/* The value in double: with float32 log-probabilities the terms p_t (log p_t
 * - log p_s) cancel to ~1e-7 of their size, which at T = 1e3 is a few
 * percent of the KL itself.  The gradient from float softmaxes. */
static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    kd *k = self;
    rtk_rows it;
    float *ps = g ? api->scratch(ctx, sizeof(float) * (size_t)(2 * rtk_shape_of(in).C)) : NULL;
    if ((g && !ps) || rtk_rows_begin(&it, ctx, in, g, 0, 0)) return RT_STATUS_ERR_NOMEM;
    int64_t C = it.sh.C;
    double T = k->T, total = 0;
    /* d/dz_s [f KL] = f / T * (p_s - p_t) / N */
    float f = (k->t2 ? k->T : 1.0f / k->T) * rtk_gscale(in, scale), *pt = ps + C;
    while (rtk_rows_next(&it, T)) {
        if (g) {
            api->softmax(it.zs, ps, 1, C, k->T);
            api->softmax(it.zt, pt, 1, C, k->T);
            for (int64_t c = 0; c < C; c++) it.g[c] += f * (ps[c] - pt[c]);
            continue;
        }
        double ms, mt, ls = rtk_lse(it.zs, C, T, &ms), lt = rtk_lse(it.zt, C, T, &mt);
        for (int64_t c = 0; c < C; c++) {
            double lpt = ((double)it.zt[c] - mt) / T - lt;
            double pt_ = exp(lpt);
            if (pt_ > 0) total += pt_ * (lpt - (((double)it.zs[c] - ms) / T - ls));
        }
    }
    if (value) *value = rtk_value(in, (k->t2 ? T * T : 1.0) * total);
    return RT_STATUS_OK;
}

RTK_LOSS(kd, "kd", "1.0.0", "Hinton KD: T^2 * KL(p_teacher^T || p_student^T), batch mean", RT_NEEDS_TEACHER,
         .set = rtk_set)
