/*
 * cosine_logits -- loss: cosine distance between student and teacher logits.
 * An example of a loss plugin built out of tree (see README.md), on the
 * loss kit (rt_loss_kit.h): options land in the struct through `fields`,
 * one `run` computes value and gradient, RTK_LOSS writes the rest.
 *
 *   na_n  = max(|z_s,n|, eps),  nb_n = max(|z_t,n|, eps)
 *   cos_n = <z_s,n, z_t,n> / (na_n nb_n)
 *   loss  = (1/N) sum_n (1 - cos_n)
 *
 * Reduction: mean over the real positions (the ABI's norm: N for [N, C]),
 * one cosine per position (row), so the loss lies in [0, 2].  With
 * [N, T, C] logits and a mask, one cosine per real token.  It equals PyTorch's
 *   (1 - F.cosine_similarity(z_s, z_t, dim=1, eps=eps)).mean()
 * It ignores the scale of each logit vector (not a shift: softmax does the
 * opposite), so it transfers the direction of the teacher's logits and
 * leaves their magnitude, i.e. the confidence, to the student.
 *
 * Gradient wrt the student logits a = z_s,n (b = z_t,n, cos = cos_n):
 *   d cos / d a = b / (na nb) - [|a| > eps] cos a / |a|^2
 *   d loss / d a = -(1/N) d cos / d a
 * (the second term comes from na = |a|; below eps na is the constant eps).
 * A zero student or teacher row gives cos = 0: a finite loss of 1 for that
 * row and a finite gradient.
 *
 * Options
 *   eps  1e-8   lower bound on each vector's norm, in [1e-12, 1]
 *
 * Reference: the cosine loss of DistilBERT (Sanh et al. 2019,
 * arXiv:1910.01108), which aligns hidden states; here on logits.
 */
#include "rt_loss_kit.h"

typedef struct cosine {
    double eps;
} cosine;

static const rt_option options[] = {
    {"eps", RT_OPT_NUMBER, "1e-8", 1e-12, 1, NULL, "lower bound on the norm of each logit vector"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};
static const rtk_field fields[] = {RTK_F64(cosine, eps)};

/* One row's cosine, in double.  a[C] student, b[C] teacher.  *na, *nb: the
 * clamped norms; *ra: |a| before clamping (backward needs both). */
static double row_cos(const float *a, const float *b, int64_t C, double eps, double *na, double *nb, double *ra)
{
    double ab = 0, aa = 0, bb = 0;
    for (int64_t k = 0; k < C; k++) {
        ab += (double)a[k] * b[k];
        aa += (double)a[k] * a[k];
        bb += (double)b[k] * b[k];
    }
    *ra = sqrt(aa);
    *na = fmax(*ra, eps);
    *nb = fmax(sqrt(bb), eps);
    return ab / (*na * *nb);
}

/* The host has checked: student and teacher logits of one shape
 * [N, ..., C] f32, contiguous; the mask, if any, [N, ...]. */
static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    const cosine *c = self;
    rtk_rows it;
    if (rtk_rows_begin(&it, ctx, in, g, 0, 0)) return RT_STATUS_ERR_NOMEM;
    int64_t C = it.sh.C;
    double total = 0, f = in->norm ? -(double)scale / in->norm : 0; /* d loss / d cos_n, times scale */
    while (rtk_rows_next(&it, 1)) {
        const float *a = it.zs, *b = it.zt;
        double na, nb, ra, cs = row_cos(a, b, C, c->eps, &na, &nb, &ra);
        total += 1.0 - cs;
        if (!g) continue;
        double u = 1.0 / (na * nb);                    /* coefficient of b */
        double v = ra > c->eps ? cs / (ra * ra) : 0.0; /* coefficient of a */
        for (int64_t k = 0; k < C; k++) it.g[k] += (float)(f * (u * b[k] - v * a[k]));
    }
    if (value) *value = rtk_value(in, total);
    return RT_STATUS_OK;
}

RTK_LOSS(cosine, "cosine_logits", "2.0.0", "1 - cos(student logits, teacher logits), batch mean (example plugin)",
         RT_NEEDS_TEACHER)
