/*
 * jsd -- loss: generalized Jensen-Shannon divergence JSD(beta) (Agarwal et
 * al. 2024, "On-Policy Distillation of Language Models: Learning from
 * Self-Generated Mistakes", Eq. 1; TRL's GKDTrainer.generalized_jsd_loss).
 *
 *   p_t = softmax(z_t / T),  p_s = softmax(z_s / T)
 *   m   = beta p_t + (1 - beta) p_s
 *   JSD(beta) = beta KL(p_t || m) + (1 - beta) KL(p_s || m)   0 < beta < 1
 *             = KL(p_t || p_s)      (forward, as kd)          beta = 0
 *             = KL(p_s || p_t)      (reverse, as reverse_kl)  beta = 1
 *   loss = f * (1/N) sum_n JSD(beta)_n,   f = T^2 or 1
 *
 * The endpoints follow TRL, which special-cases beta == 0 and beta == 1.
 * The mixture formula itself tends to 0 at both ends: JSD(beta) ~
 * beta KL(p_t || p_s) as beta -> 0 and ~ (1 - beta) KL(p_s || p_t) as
 * beta -> 1, so the KLs are the limits of JSD(beta) / beta and
 * JSD(beta) / (1 - beta), and the loss jumps at exactly 0 and 1.
 * beta = 0.5 is the symmetric JSD (swapping student and teacher gives the
 * same value).
 * Reduction: "batchmean", sum over classes, mean over the batch (TRL's
 * batchmean over [B, L, V] divides by B L, the same per-position mean).
 * T^2: off by default (t2 = false), as TRL: Hinton's factor belongs to
 * forward KD; t2 = true multiplies by T^2.
 * Finite for every 0 < beta < 1 (m >= beta p_t and >= (1-beta) p_s bound
 * both log ratios); at beta = 1 a -inf teacher logit where the student has
 * mass is an infinite KL and is refused with RT_STATUS_ERR_NUMERIC.
 * Gradient wrt z_s (0 < beta < 1): d JSD / d p_s = (1 - beta)(log p_s -
 * log m) (the other terms cancel), through the softmax Jacobian:
 *   (f / (T N)) p_s (d - sum_c p_s d),  d = (1 - beta)(log p_s - log m).
 *
 * Options
 *   beta         0.5    in [0, 1]: the teacher's weight in the mixture
 *   temperature  1      T > 0
 *   t2           false  multiply the loss by T^2
 */
#include "rt_loss_kit.h"

typedef struct jsd {
    double beta, T;
    int t2;
} jsd;

static const rt_option options[] = {
    {"beta", RT_OPT_NUMBER, "0.5", 0, 1, NULL, "teacher weight in the mixture: 0 = forward KL, 1 = reverse KL"},
    RTK_OPT_TEMPERATURE("1"),
    RTK_OPT_T2("false", "multiply the loss by T^2 (off: as TRL)"),
    RTK_OPT_END,
};
static const rtk_field fields[] = {RTK_F64(jsd, beta), RTK_F64(jsd, T), RTK_BOOL(jsd, t2)};

static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    const jsd *k = self;
    RTK_ROWS(it, 1, 2);
    double *ls = it.ls, *lt = it.lt, *lm = it.work, *d = lm + C;
    double T = k->T, b = k->beta, f = rtk_t2(T, k->t2), total = 0;
    double lb = log(b), l1b = log1p(-b);
    while (rtk_rows_next(&it, T)) {
        /* row: the JSD of this row; d[c]: p_s,c d JSD / d p_s,c. */
        double row;
        int64_t bad = -1;
        if (b == 0) { /* forward KL: p_s d KL / d p_s = -p_t */
            row = rtk_row_kl(lt, ls, C, NULL, &bad);
            for (int64_t c = 0; c < C; c++) d[c] = -exp(lt[c]);
        } else if (b == 1) { /* reverse KL: p_s (log p_s - log p_t) (+ p_s, dropped below) */
            row = rtk_row_kl(ls, lt, C, d, &bad);
            for (int64_t c = 0; c < C; c++) d[c] *= exp(ls[c]);
        } else {
            for (int64_t c = 0; c < C; c++) lm[c] = rtk_logaddexp(lt[c] + lb, ls[c] + l1b);
            row = b * rtk_row_kl(lt, lm, C, NULL, &bad) + (1 - b) * rtk_row_kl(ls, lm, C, d, &bad);
            for (int64_t c = 0; c < C; c++) d[c] *= (1 - b) * exp(ls[c]);
        }
        if (bad >= 0)
            return RTK_INFINITE(it.n, bad, "JSD(beta = %g) is infinite: a probability 0 (logit -inf) where the other side "
                                "has mass", b);
        total += row;
        if (!g) continue;
        /* d/dz_c = (1/T) (d_c - p_s,c sum_k d_k): the softmax Jacobian. */
        double a = f * scale / (T * in->norm), sum = 0;
        for (int64_t c = 0; c < C; c++) sum += d[c];
        for (int64_t c = 0; c < C; c++) it.g[c] += (float)(a * (d[c] - exp(ls[c]) * sum));
    }
    if (value) *value = rtk_value(in, f * total);
    return RT_STATUS_OK;
}

RTK_LOSS(jsd, "jsd", "1.0.0", "generalized JSD(beta) between teacher and student (GKD, TRL), batch mean", RT_NEEDS_TEACHER,
         .set = rtk_set)
