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
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rt_plugin.h"

static const rt_api *api;

typedef struct skew {
    double alpha, T;
    int reverse, t2;
} skew;

static const rt_option options[] = {
    {"alpha", RT_OPT_NUMBER, "0.1", 0, 1, NULL, "skew: the mixture's share of the distribution on the left"},
    {"reverse", RT_OPT_BOOL, "false", 1, 0, NULL, "skew reverse KL(p_s || (1-a) p_t + a p_s)"},
    {"temperature", RT_OPT_NUMBER, "1", 1e-4, 1e4, NULL, "softmax temperature T"},
    {"t2", RT_OPT_BOOL, "false", 1, 0, NULL, "multiply the loss by T^2 (off: as DistiLLM)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    skew *k = calloc(1, sizeof *k);
    if (!k) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    k->alpha = api->opt_number(o, "alpha");
    k->reverse = api->opt_bool(o, "reverse");
    k->T = api->opt_number(o, "temperature");
    k->t2 = api->opt_bool(o, "t2");
    *self = k;
    return RT_STATUS_OK;
}

static void destroy(void *self) { free(self); }

static rt_status set(void *self, rt_ctx *ctx, const char *name, double v)
{
    skew *k = self;
    if (!strcmp(name, "temperature")) k->T = v;
    if (!strcmp(name, "alpha")) k->alpha = v;
    return RT_STATUS_OK;
}

/* log(exp(a) + exp(b)) without overflow; -inf when both are. */
static double logaddexp(double a, double b)
{
    double m = fmax(a, b);
    return m == -INFINITY ? m : m + log(exp(a - m) + exp(b - m));
}

/* The whole loss, and when g is non-NULL, g += scale * its gradient.  One
 * function serves forward and backward so both refuse the same inputs. */
static rt_status run(const skew *k, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    int64_t N = in->student->shape[0], C = in->student->shape[1];
    double *ls = api->scratch(ctx, sizeof(double) * (size_t)(4 * C));
    if (!ls) return RT_STATUS_ERR_NOMEM;
    double *lt = ls + C, *lm = lt + C, *d = lm + C;
    double T = k->T, a = k->alpha, f = k->t2 ? T * T : 1.0, total = 0;
    /* m = wl p_left + wr p_right, left = the KL's first argument */
    double lwl = log(a), lwr = log1p(-a);
    const float *zs = rt_f32(in->student), *zt = rt_f32(in->teacher->logits);
    for (int64_t n = 0; n < N; n++, zs += C, zt += C) {
        api->log_softmax_f64(zs, ls, 1, C, T);
        api->log_softmax_f64(zt, lt, 1, C, T);
        const double *lp = k->reverse ? ls : lt, *lo = k->reverse ? lt : ls; /* left, other */
        double row = 0;
        for (int64_t c = 0; c < C; c++) {
            lm[c] = logaddexp(lp[c] + lwl, lo[c] + lwr);
            double p = exp(lp[c]);
            if (p == 0) continue;
            if (lm[c] == -INFINITY)
                return api->error(ctx, RT_STATUS_ERR_NUMERIC,
                                  "skew KL (alpha = %g) is infinite: %s probability 0 (logit -inf) where the %s has "
                                  "mass, at row %lld class %lld",
                                  a, k->reverse ? "teacher" : "student", k->reverse ? "student" : "teacher",
                                  (long long)n, (long long)c);
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
        double s = f * scale / (T * (double)N);
        for (int64_t c = 0; c < C; c++) g[n * C + c] += (float)(s * (d[c] - exp(ls[c]) * sum));
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
    RT_DESC_INIT(RT_KIND_LOSS, "skew_kl", "1.0.0",
                 "skew KL(p_t || a p_t + (1-a) p_s) or skew reverse KL, batch mean (DistiLLM)"),
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
