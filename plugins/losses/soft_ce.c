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
#include "rt_loss_kit.h"

RTK_TEMP_OPTIONS("4", "true", "multiply the loss by T^2 (Hinton)");

static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    RTK_TEMP_ROWS(it);
    while (rtk_rows_next(&it, T)) {
        for (int64_t c = 0; c < C; c++) {
            double pt = exp(lt[c]);
            if (pt == 0) continue;
            if (ls[c] == -INFINITY)
                return RTK_INFINITE(it.n, c, "cross-entropy is infinite: student probability 0 (logit -inf) where the "
                                    "teacher has %g", pt);
            total -= pt * ls[c];
        }
        if (!g) continue;
        double a = f * scale / (T * in->norm);
        for (int64_t c = 0; c < C; c++) it.g[c] += (float)(a * (exp(ls[c]) - exp(lt[c])));
    }
    if (value) *value = rtk_value(in, f * total);
    return RT_STATUS_OK;
}

RTK_LOSS(rtk_temp, "soft_ce", "1.0.0", "soft-target cross-entropy -sum p_teacher^T log p_student^T, batch mean, T^2", RT_NEEDS_TEACHER,
         .set = rtk_set)
