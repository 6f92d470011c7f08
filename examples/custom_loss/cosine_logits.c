/*
 * cosine_logits -- loss: cosine distance between student and teacher logits.
 * An example of a loss plugin built out of tree (see README.md).
 *
 *   na_n  = max(|z_s,n|, eps),  nb_n = max(|z_t,n|, eps)
 *   cos_n = <z_s,n, z_t,n> / (na_n nb_n)
 *   loss  = (1/N) sum_n (1 - cos_n)
 *
 * Reduction: mean over the batch, one cosine per sample (row), so the loss
 * lies in [0, 2].  It equals PyTorch's
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
#include <math.h>
#include <stdlib.h>

#include "rt_plugin.h"

static const rt_api *api;

typedef struct cosine {
    double eps;
} cosine;

static const rt_option options[] = {
    {"eps", RT_OPT_NUMBER, "1e-8", 1e-12, 1, NULL, "lower bound on the norm of each logit vector"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    cosine *c = calloc(1, sizeof *c);
    if (!c) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    c->eps = api->opt_number(o, "eps");
    *self = c;
    return RT_STATUS_OK;
}

static void destroy(void *self) { free(self); }

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

static rt_status forward(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value)
{
    const cosine *c = self;
    (void)ctx;
    /* The host has checked: student and teacher logits both [N, C] f32,
     * contiguous. */
    int64_t N = in->student->shape[0], C = in->student->shape[1];
    const float *s = rt_f32(in->student), *t = rt_f32(in->teacher->logits);
    double total = 0, na, nb, ra;
    for (int64_t n = 0; n < N; n++) total += 1.0 - row_cos(s + n * C, t + n * C, C, c->eps, &na, &nb, &ra);
    *value = N ? total / (double)N : 0;
    return RT_STATUS_OK;
}

static rt_status backward(void *self, rt_ctx *ctx, const rt_loss_in *in, float scale, rt_tensor *grad)
{
    const cosine *c = self;
    (void)ctx;
    int64_t N = in->student->shape[0], C = in->student->shape[1];
    const float *s = rt_f32(in->student), *t = rt_f32(in->teacher->logits);
    float *g = rt_f32(grad);
    double f = N ? -(double)scale / (double)N : 0; /* d loss / d cos_n, times scale */
    for (int64_t n = 0; n < N; n++) {
        const float *a = s + n * C, *b = t + n * C;
        double na, nb, ra, cs = row_cos(a, b, C, c->eps, &na, &nb, &ra);
        double u = 1.0 / (na * nb);                      /* coefficient of b */
        double v = ra > c->eps ? cs / (ra * ra) : 0.0;   /* coefficient of a */
        float *gr = g + n * C;
        for (int64_t k = 0; k < C; k++) gr[k] += (float)(f * (u * b[k] - v * a[k]));
    }
    return RT_STATUS_OK;
}

static const rt_loss_vt vt = {.needs = RT_NEEDS_TEACHER, .forward = forward, .backward = backward};

static const rt_plugin_desc desc = {
    RT_DESC_INIT(RT_KIND_LOSS, "cosine_logits", "1.0.0",
                 "1 - cos(student logits, teacher logits), batch mean (example plugin)"),
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
