/*
 * margin_rank -- loss: pairwise margin ranking over the teacher's order of
 * the classes.  An example of a loss plugin built out of tree that is not
 * in retort's built-in set (see README.md).
 *
 * For sample n, the pairs are P_n = {(i, j) : z_t,ni > z_t,nj, i in the
 * teacher's top k}: every class the teacher ranks above another, with i
 * restricted to the teacher's k highest classes when top_k > 0 (ties in
 * the teacher make no pair).  Each pair asks the student to keep the same
 * order with a margin m:
 *
 *   loss = (1/N) sum_n (1/|P_n|) sum_{(i,j) in P_n} max(0, m - (z_s,ni - z_s,nj))
 *
 * (a sample with no pair, all teacher logits equal, contributes 0).
 * Reduction: mean over each sample's pairs, then over the batch, so the
 * value does not grow with C.  It transfers the teacher's ranking of the
 * classes, not its probabilities: the student's logits are free in scale
 * and shift as long as the order holds by the margin.
 *
 * Gradient (subgradient 0 at the hinge's kink, where m = z_s,i - z_s,j):
 * for each pair with m - (z_s,i - z_s,j) > 0,
 *   d loss / d z_s,ni -= 1 / (N |P_n|),   d loss / d z_s,nj += 1 / (N |P_n|).
 *
 * Cost: O(N C^2) (the top-k membership test is O(C) per class).
 *
 * Options
 *   margin  1.0   the margin m, in [0, 1e4]
 *   top_k   0     only pairs whose higher class is in the teacher's top k
 *                 (0: all pairs), in [0, 1e6]
 *
 * References: the pairwise hinge of RankSVM (Herbrich, Graepel, Obermayer
 * 2000, "Large margin rank boundaries for ordinal regression") and
 * PyTorch's MarginRankingLoss; ranking distillation in Tang & Wang 2018,
 * "Ranking Distillation" (KDD).
 */
#include <math.h>
#include <stdlib.h>

#include "rt_plugin.h"

static const rt_api *api;

typedef struct margin_rank {
    double margin;
    int64_t top_k;
} margin_rank;

static const rt_option options[] = {
    {"margin", RT_OPT_NUMBER, "1", 0, 1e4, NULL, "the margin by which the student must keep each teacher order"},
    {"top_k", RT_OPT_INT, "0", 0, 1e6, NULL, "only pairs whose higher class is in the teacher's top k (0: all)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    margin_rank *m = calloc(1, sizeof *m);
    if (!m) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    m->margin = api->opt_number(o, "margin");
    m->top_k = api->opt_int(o, "top_k");
    *self = m;
    return RT_STATUS_OK;
}

static void destroy(void *self) { free(self); }

/* Is class i among the teacher's k highest of t[C]?  Ties are broken by the
 * class index, so exactly k classes are in. */
static int in_top_k(const float *t, int64_t C, int64_t i, int64_t k)
{
    if (k <= 0 || k >= C) return 1;
    int64_t above = 0;
    for (int64_t c = 0; c < C; c++) above += t[c] > t[i] || (t[c] == t[i] && c < i);
    return above < k;
}

/* One row, s[C] student and t[C] teacher: returns |P_n|, the number of
 * pairs, and puts the sum of their hinges (in double) in *sum. */
static int64_t row(const margin_rank *m, const float *s, const float *t, int64_t C, double *sum)
{
    int64_t pairs = 0;
    double total = 0;
    for (int64_t i = 0; i < C; i++) {
        if (!in_top_k(t, C, i, m->top_k)) continue;
        for (int64_t j = 0; j < C; j++)
            if (t[i] > t[j]) {
                pairs++;
                double h = m->margin - ((double)s[i] - (double)s[j]);
                if (h > 0) total += h;
            }
    }
    *sum = total;
    return pairs;
}

static rt_status forward(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value)
{
    const margin_rank *m = self;
    (void)ctx;
    /* The host has checked: student and teacher logits [N, C] f32, contiguous. */
    int64_t N = in->student->shape[0], C = in->student->shape[1];
    const float *s = rt_f32(in->student), *t = rt_f32(in->teacher->logits);
    double total = 0;
    for (int64_t n = 0; n < N; n++) {
        double sum;
        int64_t pairs = row(m, s + n * C, t + n * C, C, &sum);
        if (pairs) total += sum / (double)pairs;
    }
    *value = N ? total / (double)N : 0;
    return RT_STATUS_OK;
}

static rt_status backward(void *self, rt_ctx *ctx, const rt_loss_in *in, float scale, rt_tensor *grad)
{
    const margin_rank *m = self;
    (void)ctx;
    int64_t N = in->student->shape[0], C = in->student->shape[1];
    const float *s = rt_f32(in->student), *t = rt_f32(in->teacher->logits);
    float *g = rt_f32(grad);
    for (int64_t n = 0; n < N; n++) {
        const float *sn = s + n * C, *tn = t + n * C;
        float *gn = g + n * C;
        double sum;
        int64_t pairs = row(m, sn, tn, C, &sum);
        if (!pairs) continue;
        double f = (double)scale / ((double)N * (double)pairs);
        for (int64_t i = 0; i < C; i++) {
            if (!in_top_k(tn, C, i, m->top_k)) continue;
            for (int64_t j = 0; j < C; j++)
                if (tn[i] > tn[j] && m->margin - ((double)sn[i] - (double)sn[j]) > 0) {
                    gn[i] -= (float)f;
                    gn[j] += (float)f;
                }
        }
    }
    return RT_STATUS_OK;
}

static const rt_loss_vt vt = {.needs = RT_NEEDS_TEACHER, .forward = forward, .backward = backward};

static const rt_plugin_desc desc = {
    RT_DESC_INIT(RT_KIND_LOSS, "margin_rank", "1.0.0",
                 "pairwise hinge keeping the teacher's class order by a margin (example plugin)"),
    .options = options,
    .create = create,
    .destroy = destroy,
    .loss = &vt,
};

static const rt_plugin_desc *const list[] = {&desc, NULL};

RT_EXPORT const rt_plugin_desc *const *rt_plugin_init(const rt_api *host, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    api = host;
    return list;
}
