/*
 * reverse_kl -- loss: reverse (mode-seeking) KL divergence, student first
 * (Gu et al. 2024, "MiniLLM: Knowledge Distillation of Large Language
 * Models"; TRL's generalized_jsd_loss at beta = 1).
 *
 *   p_t = softmax(z_t / T),  p_s = softmax(z_s / T)
 *   loss = f * (1/N) sum_n KL(p_s,n || p_t,n)
 *        = f * (1/N) sum_n sum_c p_s log(p_s / p_t),   f = T^2 or 1
 *
 * Direction: student first (PyTorch's kl_div(log p_t, log p_s,
 * log_target=True, reduction="batchmean")); `kd` is the other direction.
 * Reduction: "batchmean", sum over classes, mean over the batch.
 * T^2: off by default (t2 = false).  Hinton's T^2 belongs to forward KD
 * with a softened teacher; TRL, MiniLLM and DistiLLM do not scale their
 * divergences, so a recipe ported from them reproduces their numbers
 * unchanged.  t2 = true multiplies by T^2 as kd does.
 * Student probabilities of exactly 0 contribute 0 (0 log 0 = 0).  A
 * teacher probability of exactly 0 (a -inf teacher logit) where the
 * student has mass makes the KL infinite: forward and backward refuse it
 * with RT_STATUS_ERR_NUMERIC naming the row and class rather than return
 * inf.  (Teacher probabilities that merely underflow, logits of +-1e4,
 * stay finite: the loss is computed from log-probabilities.)
 * Gradient wrt z_s: (f / (T N)) p_s (d - sum_c p_s d),  d = log p_s - log p_t.
 *
 * Options
 *   temperature  1      T > 0
 *   t2           false  multiply the loss by T^2
 */
#include "rt_loss_kit.h"

RTK_TEMP_OPTIONS("1", "false", "multiply the loss by T^2 (off: as TRL and MiniLLM)");

static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    RTK_TEMP_ROWS(it);
    while (rtk_rows_next(&it, T)) {
        int64_t bad = -1;
        double row = rtk_row_kl(ls, lt, C, NULL, &bad);
        if (bad >= 0)
            return RTK_INFINITE(it.n, bad, "KL(p_s || p_t) is infinite: teacher probability 0 (logit -inf) where "
                                "the student has %g", exp(ls[bad]));
        total += row;
        if (!g) continue;
        /* d/dz_c = (1/T) p_c (d_c - sum_k p_k d_k): the softmax Jacobian
         * applied to d KL / d p_s = d + 1 (the 1 drops out). */
        double a = f * scale / (T * in->norm);
        for (int64_t c = 0; c < C; c++) {
            double ps = exp(ls[c]);
            if (ps > 0) it.g[c] += (float)(a * ps * ((ls[c] - lt[c]) - row));
        }
    }
    if (value) *value = rtk_value(in, f * total);
    return RT_STATUS_OK;
}

RTK_LOSS(rtk_temp, "reverse_kl", "1.0.0", "reverse KL(p_student^T || p_teacher^T), batch mean (MiniLLM)", RT_NEEDS_TEACHER,
         .set = rtk_set)
