/*
 * feature_mse -- mean squared error between a student and a teacher
 * feature (PyTorch's F.mse_loss per sample):
 *
 *   value = sum over real samples n of  mean_k (p(s_n)_k - t_{n,k})^2  / norm
 *
 * over the C_t x positions values of the teacher feature t_n.  p is the
 * identity when the channel counts agree and `projection` is "auto", else
 * a learned projection owned by the loss ("proj.weight" [C_t, C_s, 1, 1]
 * and "proj.bias" for 4-d features, a linear [D_t, D_s] for [N, D]),
 * sized on the first batch, PyTorch's default draw seeded by `seed`,
 * trained by the run's optimizer.  "always" projects even when widths
 * agree; "never" refuses different widths.  Spatial sizes must agree.
 * Gradients flow into the student feature and the projection.
 */
#include "feature_kit.h"

typedef struct fmse {
    fk_base b;
    int projection; /* 0 auto, 1 always, 2 never */
    int64_t seed;
} fmse;

static const rt_option options[] = {
    FK_OPT_FEATURES("\"features.6\"", "\"features.6\""),
    {"projection", RT_OPT_STRING, "\"auto\"", 1, 0, "auto|always|never", "learned projection: when widths differ, always, never"},
    {"seed", RT_OPT_INT, "1", 0, 9007199254740991.0, NULL, "the projection's initialisation seed"},
    RTK_OPT_END,
};
static const rtk_field fields[] = {FK_FIELDS(fmse), RTK_CHOICE(fmse, projection), RTK_I64(fmse, seed)};

static double term(const void *self, const float *r, const float *t, int64_t n, float *dr, double a)
{
    (void)self;
    if (dr) fk_scaled_diff(dr, (float)(2 * a / (double)n), r, t, n);
    return fk_sqdist(r, t, n) / (double)n;
}

static rt_status bind(void *self, rt_ctx *ctx, const rt_loss_in *in)
{
    fmse *m = self;
    if (m->projection == 2) return RT_STATUS_OK;
    return fk_bind_projection(&m->b, ctx, in, m->projection == 1, "proj", (uint64_t)m->seed);
}

static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    (void)g;
    return fk_run_projected(&((fmse *)self)->b, ctx, in, value, scale, term);
}

RTK_LOSS_DESC(fmse, "feature_mse", "1.0.0", "mean squared error between features (learned projection when widths differ)",
              0, fk_destroy, .features = fk_features, .bind = bind, .parameters = fk_params)
RT_PLUGIN_LIST(&rtk_desc)
