/*
 * hint -- FitNet's hint loss (Romero et al., "FitNets: Hints for Thin Deep
 * Nets", ICLR 2015): a learned regressor maps the student's guided layer
 * onto the teacher's hint layer, and the loss is half the squared distance,
 *
 *   value = sum over real samples n of  1/2 || r(s_n) - t_n ||^2  / norm,
 *   r(s)  = W s + b  per spatial position,
 *
 * s_n the student feature of sample n ([C_s, H, W], or [D_s]), t_n the
 * teacher's ([C_t, H, W] or [D_t]).  The regressor belongs to the loss: a
 * 1x1 convolution ("regressor.weight" [C_t, C_s, 1, 1], "regressor.bias"
 * [C_t]) for 4-d features, a linear layer ([D_t, D_s]) for [N, D] ones;
 * sized on the first batch (bind), drawn as PyTorch's default (uniform in
 * +-1/sqrt(C_s), seeded by `seed`), trained by the run's optimizer and
 * saved as loss.<term>.regressor.*.  Student and teacher features must have
 * the same spatial size (the paper's convolutional regressor, with its
 * kernel chosen to match sizes, is here the 1x1 case).  Gradients flow into
 * the student feature (a tap) and the regressor; none into the logits.
 *
 * Options: student, teacher (feature names; defaults fit the default cnn
 * student and teacher), seed.
 */
#include "feature_kit.h"

typedef struct hint {
    fk_base b;
    int64_t seed;
} hint;

static const rt_option options[] = {
    FK_OPT_FEATURES("\"features.6\"", "\"features.6\""),
    {"seed", RT_OPT_INT, "1", 0, 9007199254740991.0, NULL, "the regressor's initialisation seed"},
    RTK_OPT_END,
};
static const rtk_field fields[] = {FK_FIELDS(hint), RTK_I64(hint, seed)};

static double term(const void *self, const float *r, const float *t, int64_t n, float *dr, double a)
{
    (void)self;
    if (dr) fk_scaled_diff(dr, (float)a, r, t, n);
    return 0.5 * fk_sqdist(r, t, n);
}

static rt_status bind(void *self, rt_ctx *ctx, const rt_loss_in *in)
{
    hint *h = self;
    return fk_bind_projection(&h->b, ctx, in, 1, "regressor", (uint64_t)h->seed);
}

static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    (void)g;
    hint *h = self;
    if (!h->b.proj.W && bind(self, ctx, in)) return RT_STATUS_ERR_SHAPE;
    return fk_run_projected(&h->b, ctx, in, value, scale, term);
}

RTK_LOSS_DESC(hint, "hint", "1.0.0", "FitNet hint: 1/2 |r(student feature) - teacher feature|^2, learned regressor",
              0, fk_destroy, .features = fk_features, .bind = bind, .parameters = fk_params)
RT_PLUGIN_LIST(&rtk_desc)
