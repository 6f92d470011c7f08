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
 * Reduction: mean over each position's pairs, then over the real
 * positions (the ABI's norm; N for [N, C]), so the value does not grow
 * with C.  It transfers the teacher's ranking of the
 * classes, not its probabilities: the student's logits are free in scale
 * and shift as long as the order holds by the margin.
 *
 * Gradient (subgradient 0 at the hinge's kink, where m = z_s,i - z_s,j):
 * for each pair with m - (z_s,i - z_s,j) > 0,
 *   d loss / d z_s,ni -= 1 / (N |P_n|),   d loss / d z_s,nj += 1 / (N |P_n|),
 * N being the norm.
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
#include "rt_loss_kit.h"

typedef struct margin_rank {
    double margin;
    int64_t top_k;
} margin_rank;

static const rt_option options[] = {
    {"margin", RT_OPT_NUMBER, "1", 0, 1e4, NULL, "the margin by which the student must keep each teacher order"},
    {"top_k", RT_OPT_INT, "0", 0, 1e6, NULL, "only pairs whose higher class is in the teacher's top k (0: all)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};
static const rtk_field fields[] = {RTK_F64(margin_rank, margin), RTK_I64(margin_rank, top_k)};

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

/* The host has checked: student and teacher logits [N, ..., C] f32. */
static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    const margin_rank *m = self;
    rtk_rows it;
    if (rtk_rows_begin(&it, ctx, in, g, 0, 0)) return RT_STATUS_ERR_NOMEM;
    int64_t C = it.sh.C;
    double total = 0;
    while (rtk_rows_next(&it, 1)) {
        const float *sn = it.zs, *tn = it.zt;
        double sum;
        int64_t pairs = row(m, sn, tn, C, &sum);
        if (!pairs) continue;
        total += sum / (double)pairs;
        if (!g) continue;
        double f = (double)scale / (in->norm * (double)pairs);
        for (int64_t i = 0; i < C; i++) {
            if (!in_top_k(tn, C, i, m->top_k)) continue;
            for (int64_t j = 0; j < C; j++)
                if (tn[i] > tn[j] && m->margin - ((double)sn[i] - (double)sn[j]) > 0) {
                    it.g[i] -= (float)f;
                    it.g[j] += (float)f;
                }
        }
    }
    if (value) *value = rtk_value(in, total);
    return RT_STATUS_OK;
}

RTK_LOSS(margin_rank, "margin_rank", "2.0.0",
         "pairwise hinge keeping the teacher's class order by a margin (example plugin)", RT_NEEDS_TEACHER)
