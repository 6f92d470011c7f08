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
#include "rt_loss_kit.h"

RTK_TEMP_OPTIONS("1", "false", "multiply the loss by T^2");

static double sign(double x) { return (x > 0) - (x < 0); }

static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    RTK_TEMP_ROWS(it);
    double *ps = ls, *pt = lt; /* exponentiated in place */
    while (rtk_rows_next(&it, T)) {
        for (int64_t c = 0; c < C; c++) ps[c] = exp(ps[c]), pt[c] = exp(pt[c]);
        double row = 0, mean = 0;
        for (int64_t c = 0; c < C; c++) {
            row += fabs(pt[c] - ps[c]);
            mean += ps[c] * 0.5 * sign(ps[c] - pt[c]);
        }
        total += 0.5 * row;
        if (!g) continue;
        double a = f * scale / (T * in->norm);
        for (int64_t c = 0; c < C; c++) it.g[c] += (float)(a * ps[c] * (0.5 * sign(ps[c] - pt[c]) - mean));
    }
    if (value) *value = rtk_value(in, f * total);
    return RT_STATUS_OK;
}

RTK_LOSS(rtk_temp, "tvd", "1.0.0", "total variation 0.5 sum |p_teacher^T - p_student^T|, batch mean", RT_NEEDS_TEACHER,
         .set = rtk_set)
