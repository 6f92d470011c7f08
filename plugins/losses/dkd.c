/*
 * dkd -- loss: Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu,
 * Liang, CVPR 2022, "Decoupled Knowledge Distillation"; mdistiller's
 * distillers/DKD.py).
 *
 *   p_t = softmax(z_t / T),  p_s = softmax(z_s / T),  y = the target class
 *   TCKD = KL([p_t,y, 1 - p_t,y] || [p_s,y, 1 - p_s,y])   (binary: target
 *          vs the rest)
 *   NCKD = KL(r_t || r_s),  r = softmax over the non-target classes only,
 *          r_k = p_k / (1 - p_y), k != y
 *   loss = w(epoch) * T^2 * (1/N) sum_n (alpha TCKD_n + beta NCKD_n)
 *   w(epoch) = min((epoch + 1) / warmup, 1), or 1 when warmup = 0
 *
 * The warm-up follows mdistiller's min(epoch / WARMUP, 1), whose epochs
 * count from 1; retort's in->epoch counts from 0, hence epoch + 1: the
 * first epoch gets 1 / warmup, epoch warmup - 1 and later get 1.
 * NCKD: mdistiller subtracts 1000 from the target's z / T before the
 * softmax, an approximation of leaving the target out.  retort leaves it
 * out exactly (the paper's definition).  The two agree to float32
 * precision unless the target's z / T leads every other class by more
 * than ~980, where mdistiller's masked target takes over the "non-target"
 * distribution; retort's NCKD stays the non-target KL.
 * Both parts are computed from log-probabilities in double, so TCKD stays
 * finite where mdistiller's log(p_s,y) of a float32 softmax would be
 * log 0 (a target probability that underflows).  When the teacher puts no
 * mass at all outside the target (every non-target teacher logit -inf),
 * r_t is undefined and NCKD is 0: in KD = TCKD + (1 - p_t,y) NCKD that
 * part carries weight 0.  A -inf student logit where the teacher has mass
 * makes the loss infinite: refused with RT_STATUS_ERR_NUMERIC.
 * Reduction: sum over classes, mean over the batch (mdistiller's
 * size_average=False KL divided by the batch size).
 * T^2: always, as mdistiller (its alpha and beta are tuned with it).
 * Needs the teacher and the target labels, and at least two classes.
 * Gradient wrt z_s, with u = p_s,y - p_t,y and r_s, r_t as above:
 *   target y:      (w T / N) alpha u
 *   k != y:        (w T / N) (-alpha u r_s,k + beta (r_s,k - r_t,k))
 *
 * Options
 *   alpha        1   TCKD weight
 *   beta         8   NCKD weight (mdistiller's CIFAR-100 default)
 *   temperature  4   T > 0
 *   warmup       0   epochs of linear warm-up (mdistiller uses 20); 0 = none
 */
#include "rt_loss_kit.h"

typedef struct dkd {
    double alpha, beta, T;
    int64_t warmup;
} dkd;

static const rt_option options[] = {
    {"alpha", RT_OPT_NUMBER, "1", 0, 100, NULL, "weight of TCKD (target vs the rest)"},
    {"beta", RT_OPT_NUMBER, "8", 0, 100, NULL, "weight of NCKD (among the non-target classes)"},
    RTK_OPT_TEMPERATURE("4"),
    {"warmup", RT_OPT_INT, "0", 0, 1000000, NULL, "epochs of linear warm-up, min((epoch+1)/warmup, 1); 0 = none"},
    RTK_OPT_END,
};
static const rtk_field fields[] = {RTK_F64(dkd, alpha), RTK_F64(dkd, beta), RTK_F64(dkd, T), RTK_I64(dkd, warmup)};

/* Row log-probabilities in double: lp[C] = log softmax(z / T); *lrest =
 * log(1 - p_y) = log sum_{k != y} p_k; ln[C] = log r (the non-target
 * softmax), ln[y] = -inf.  *lrest is -inf when no mass is outside y. */
static void row_logs(const float *z, int64_t C, int64_t y, double T, double *lp, double *ln, double *lrest)
{
    double m = -INFINITY, mr = -INFINITY, s = 0, sr = 0;
    for (int64_t c = 0; c < C; c++) m = fmax(m, (double)z[c]);
    for (int64_t c = 0; c < C; c++)
        if (c != y) mr = fmax(mr, (double)z[c]);
    for (int64_t c = 0; c < C; c++) s += exp(((double)z[c] - m) / T);
    for (int64_t c = 0; c < C; c++)
        if (c != y && mr > -INFINITY) sr += exp(((double)z[c] - mr) / T);
    double l = log(s), lr = mr > -INFINITY ? log(sr) : 0;
    for (int64_t c = 0; c < C; c++) lp[c] = ((double)z[c] - m) / T - l;
    for (int64_t c = 0; c < C; c++) ln[c] = c == y || mr == -INFINITY ? -INFINITY : ((double)z[c] - mr) / T - lr;
    /* log sum_{k != y} p_k = (mr - m) / T + lr - l */
    *lrest = mr == -INFINITY ? -INFINITY : (mr - m) / T + lr - l;
}

/* p log(p / q) from logs, 0 log 0 = 0; inf when q = 0 < p. */
static double term(double lp, double lq)
{
    if (lp == -INFINITY) return 0;
    if (lq == -INFINITY) return INFINITY;
    return exp(lp) * (lp - lq);
}

static double warm(const dkd *k, int64_t epoch)
{
    if (k->warmup <= 0) return 1;
    double w = (double)(epoch + 1) / (double)k->warmup;
    return w < 1 ? (w > 0 ? w : 0) : 1;
}

static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    const dkd *k = self;
    RTK_ROWS(it, 0, 4);
    if (C < 2)
        return api->error(ctx, RT_STATUS_ERR_SHAPE,
                          "needs at least 2 classes (target vs non-target), got logits with %lld", (long long)C);
    double *ls = it.work, *lt = ls + C, *ns = lt + C, *nt = ns + C;
    double T = k->T, f = warm(k, in->epoch) * T * T, total = 0;
    while (rtk_rows_next(&it, T)) {
        double lrs, lrt; /* log of the non-target mass */
        int64_t yn = it.y;
        row_logs(it.zs, C, yn, T, ls, ns, &lrs);
        row_logs(it.zt, C, yn, T, lt, nt, &lrt);
        double tckd = term(lt[yn], ls[yn]) + term(lrt, lrs), nckd = 0;
        if (lrt > -INFINITY)
            for (int64_t c = 0; c < C; c++) nckd += c == yn ? 0 : term(nt[c], ns[c]);
        double row = k->alpha * tckd + k->beta * nckd;
        if (!isfinite(row))
            return api->error(ctx, RT_STATUS_ERR_NUMERIC,
                              "DKD is infinite at row %lld: a student probability 0 (logit -inf) where the teacher "
                              "has mass",
                              (long long)it.n);
        total += row;
        if (!g) continue;
        double a = f * scale / (T * in->norm);
        double u = exp(ls[yn]) - exp(lt[yn]);
        it.g[yn] += (float)(a * k->alpha * u);
        for (int64_t c = 0; c < C; c++) {
            if (c == yn) continue;
            double r_s = exp(ns[c]), r_t = lrt > -INFINITY ? exp(nt[c]) : 0;
            /* with no teacher mass outside y, NCKD is 0 and so is its gradient */
            double nck = lrt > -INFINITY ? k->beta * (r_s - r_t) : 0;
            it.g[c] += (float)(a * (-k->alpha * u * r_s + nck));
        }
    }
    if (value) *value = rtk_value(in, f * total);
    return RT_STATUS_OK;
}

RTK_LOSS(dkd, "dkd", "1.0.0", "decoupled KD: T^2 (alpha TCKD + beta NCKD), batch mean, warm-up (Zhao et al. 2022)", RT_NEEDS_TEACHER | RT_NEEDS_TARGET,
         .set = rtk_set)
