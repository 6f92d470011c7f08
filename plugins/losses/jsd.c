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
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rt_plugin.h"

static const rt_api *api;

typedef struct jsd {
    double beta, T;
    int t2;
} jsd;

static const rt_option options[] = {
    {"beta", RT_OPT_NUMBER, "0.5", 0, 1, NULL, "teacher weight in the mixture: 0 = forward KL, 1 = reverse KL"},
    {"temperature", RT_OPT_NUMBER, "1", 1e-4, 1e4, NULL, "softmax temperature T"},
    {"t2", RT_OPT_BOOL, "false", 1, 0, NULL, "multiply the loss by T^2 (off: as TRL)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    jsd *k = calloc(1, sizeof *k);
    if (!k) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    k->beta = api->opt_number(o, "beta");
    k->T = api->opt_number(o, "temperature");
    k->t2 = api->opt_bool(o, "t2");
    *self = k;
    return RT_STATUS_OK;
}

static void destroy(void *self) { free(self); }

static rt_status set(void *self, rt_ctx *ctx, const char *name, double v)
{
    jsd *k = self;
    if (!strcmp(name, "temperature")) k->T = v;
    if (!strcmp(name, "beta")) k->beta = v;
    return RT_STATUS_OK;
}

/* log(exp(a) + exp(b)) without overflow; -inf when both are. */
static double logaddexp(double a, double b)
{
    double m = fmax(a, b);
    return m == -INFINITY ? m : m + log(exp(a - m) + exp(b - m));
}

/* sum_c exp(lp[c]) (lp[c] - lq[c]) with 0 log 0 = 0: KL(p || q) of one row.
 * d[c] (if non-NULL) = lp[c] - lq[c] where p > 0, else 0.  Returns inf
 * (with *bad = the class) when q = 0 where p > 0. */
static double row_kl(const double *lp, const double *lq, int64_t C, double *d, int64_t *bad)
{
    double kl = 0;
    for (int64_t c = 0; c < C; c++) {
        double p = exp(lp[c]);
        if (d) d[c] = 0;
        if (p == 0) continue;
        if (lq[c] == -INFINITY) {
            *bad = c;
            return INFINITY;
        }
        kl += p * (lp[c] - lq[c]);
        if (d) d[c] = lp[c] - lq[c];
    }
    return kl;
}

/* The whole loss, and when g is non-NULL, g += scale * its gradient.  One
 * function serves forward and backward so both refuse the same inputs. */
static rt_status run(const jsd *k, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    int64_t N = in->student->shape[0], C = in->student->shape[1];
    double *ls = api->scratch(ctx, sizeof(double) * (size_t)(4 * C));
    if (!ls) return RT_STATUS_ERR_NOMEM;
    double *lt = ls + C, *lm = lt + C, *d = lm + C;
    double T = k->T, b = k->beta, f = k->t2 ? T * T : 1.0, total = 0;
    double lb = log(b), l1b = log1p(-b);
    const float *zs = rt_f32(in->student), *zt = rt_f32(in->teacher->logits);
    for (int64_t n = 0; n < N; n++, zs += C, zt += C) {
        api->log_softmax_f64(zs, ls, 1, C, T);
        api->log_softmax_f64(zt, lt, 1, C, T);
        /* row: the JSD of this row; d[c]: p_s,c d JSD / d p_s,c. */
        double row;
        int64_t bad = -1;
        if (b == 0) { /* forward KL: p_s d KL / d p_s = -p_t */
            row = row_kl(lt, ls, C, NULL, &bad);
            for (int64_t c = 0; c < C; c++) d[c] = -exp(lt[c]);
        } else if (b == 1) { /* reverse KL: p_s (log p_s - log p_t) (+ p_s, dropped below) */
            row = row_kl(ls, lt, C, d, &bad);
            for (int64_t c = 0; c < C; c++) d[c] *= exp(ls[c]);
        } else {
            for (int64_t c = 0; c < C; c++) lm[c] = logaddexp(lt[c] + lb, ls[c] + l1b);
            row = b * row_kl(lt, lm, C, NULL, &bad) + (1 - b) * row_kl(ls, lm, C, d, &bad);
            for (int64_t c = 0; c < C; c++) d[c] *= (1 - b) * exp(ls[c]);
        }
        if (bad >= 0)
            return api->error(ctx, RT_STATUS_ERR_NUMERIC,
                              "JSD(beta = %g) is infinite: a probability 0 (logit -inf) where the other side has "
                              "mass, at row %lld class %lld",
                              b, (long long)n, (long long)bad);
        total += row;
        if (!g) continue;
        /* d/dz_c = (1/T) (d_c - p_s,c sum_k d_k): the softmax Jacobian. */
        double a = f * scale / (T * (double)N), sum = 0;
        for (int64_t c = 0; c < C; c++) sum += d[c];
        for (int64_t c = 0; c < C; c++) g[n * C + c] += (float)(a * (d[c] - exp(ls[c]) * sum));
    }
    if (value) *value = N ? f * total / (double)N : 0;
    return RT_STATUS_OK;
}

static rt_status forward(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value)
{
    return run(self, ctx, in, value, NULL, 0);
}

static rt_status backward(void *self, rt_ctx *ctx, const rt_loss_in *in, float scale, rt_tensor *grad)
{
    return run(self, ctx, in, NULL, rt_f32(grad), scale);
}

static const rt_loss_vt vt = {.needs = RT_NEEDS_TEACHER, .forward = forward, .backward = backward, .set = set};

static const rt_plugin_desc desc = {
    RT_DESC_INIT(RT_KIND_LOSS, "jsd", "1.0.0",
                 "generalized JSD(beta) between teacher and student (GKD, TRL), batch mean"),
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
