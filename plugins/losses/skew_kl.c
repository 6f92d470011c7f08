/*
 * skew_kl -- loss: skew KL and skew reverse KL (Ko et al. 2024, "DistiLLM:
 * Towards Streamlined Distillation for Large Language Models").
 *
 *   p_t = softmax(z_t / T),  p_s = softmax(z_s / T)
 *   reverse = false:  KL(p_t || a p_t + (1 - a) p_s)     (skew forward KL)
 *   reverse = true:   KL(p_s || (1 - a) p_t + a p_s)     (skew reverse KL)
 *   loss = f * (1/N) sum_n (the row's skew KL),   f = T^2 or 1
 *
 * a = alpha = 0 gives the plain KLs: forward KL(p_t || p_s) (kd without
 * T^2) and reverse KL(p_s || p_t) (reverse_kl).  a = 1 gives 0.  The
 * mixture keeps the skew forward KL finite whenever a > 0 even where the
 * student has no mass (log(p_t / m) <= log(1 / a)), which is DistiLLM's
 * point; the gradient flows through the student's share of the mixture,
 * as in DistiLLM's code (no detach).
 * DistiLLM's skewed_forward_kl returns the cross-entropy -sum p_t log m,
 * which differs from this KL by the teacher's entropy: a constant in the
 * student, so the gradients agree; retort reports the KL so that the loss
 * is 0 when student and teacher agree.
 * Reduction: "batchmean", sum over classes, mean over the batch (DistiLLM
 * averages over the real tokens, the same per-position mean).
 * T^2: off by default (t2 = false), as DistiLLM: Hinton's factor belongs
 * to forward KD; t2 = true multiplies by T^2.
 * Infinite only at a = 0: a teacher probability 0 (logit -inf) where the
 * student has mass (reverse), or the reverse case for the student; refused
 * with RT_STATUS_ERR_NUMERIC.
 * Gradient wrt z_s, through the softmax Jacobian (1/T)(diag p_s - p_s p_s^T)
 * applied to d = d loss / d p_s, with r = p_s / m:
 *   forward:  p_s d = -(1 - a) p_t r
 *   reverse:  p_s d = p_s (log p_s - log m - a r)   (+ p_s, which drops out)
 *
 * Options
 *   alpha        0.1    skew a in [0, 1] (DistiLLM's lambda)
 *   reverse      false  skew reverse KL instead of skew forward KL
 *   temperature  1      T > 0
 *   t2           false  multiply the loss by T^2
 */
#include "rt_loss_kit.h"

typedef struct skew {
    double alpha, T;
    int reverse, t2;
} skew;

static const rt_option options[] = {
    {"alpha", RT_OPT_NUMBER, "0.1", 0, 1, NULL, "skew: the mixture's share of the distribution on the left"},
    {"reverse", RT_OPT_BOOL, "false", 1, 0, NULL, "skew reverse KL(p_s || (1-a) p_t + a p_s)"},
    RTK_OPT_TEMPERATURE("1"),
    RTK_OPT_T2("false", "multiply the loss by T^2 (off: as DistiLLM)"),
    RTK_OPT_END,
};
static const rtk_field fields[] = {RTK_F64(skew, alpha), RTK_BOOL(skew, reverse), RTK_F64(skew, T), RTK_BOOL(skew, t2)};

static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    const skew *k = self;
    RTK_ROWS(it, 1, 2);
    double *ls = it.ls, *lt = it.lt, *lm = it.work, *d = lm + C;
    /* m = wl p_left + wr p_right, left = the KL's first argument */
    double T = k->T, a = k->alpha, f = rtk_t2(T, k->t2), total = 0, lwl = log(a), lwr = log1p(-a);
    while (rtk_rows_next(&it, T)) {
        const double *lp = k->reverse ? ls : lt, *lo = k->reverse ? lt : ls; /* left, other */
        double row = 0;
        for (int64_t c = 0; c < C; c++) {
            lm[c] = rtk_logaddexp(lp[c] + lwl, lo[c] + lwr);
            double p = exp(lp[c]);
            if (p == 0) continue;
            if (lm[c] == -INFINITY)
                return RTK_INFINITE(it.n, c, "skew KL (alpha = %g) is infinite: %s probability 0 (logit -inf) where the %s "
                                    "has mass", a, k->reverse ? "teacher" : "student", k->reverse ? "student" : "teacher");
            row += p * (lp[c] - lm[c]);
        }
        total += row;
        if (!g) continue;
        /* d[c] = p_s,c d loss / d p_s,c (see the header); r = p_s / m. */
        double sum = 0;
        for (int64_t c = 0; c < C; c++) {
            double ps = exp(ls[c]);
            if (ps == 0 && !(k->reverse == 0 && a == 0)) {
                d[c] = 0;
            } else if (!k->reverse) { /* -(1-a) p_t p_s / m; at a = 0, m = p_s: -p_t */
                d[c] = lt[c] == -INFINITY ? 0 : -(1 - a) * exp(lt[c] + ls[c] - lm[c]);
            } else {
                d[c] = ps * (ls[c] - lm[c] - a * exp(ls[c] - lm[c]));
            }
            sum += d[c];
        }
        double s = f * scale / (T * in->norm);
        for (int64_t c = 0; c < C; c++) it.g[c] += (float)(s * (d[c] - exp(ls[c]) * sum));
    }
    if (value) *value = rtk_value(in, f * total);
    return RT_STATUS_OK;
}

RTK_LOSS(skew, "skew_kl", "1.0.0", "skew KL(p_t || a p_t + (1-a) p_s) or skew reverse KL, batch mean (DistiLLM)", RT_NEEDS_TEACHER,
         .set = rtk_set)
