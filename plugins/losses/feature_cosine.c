/*
 * feature_cosine -- one minus the cosine similarity of a student and a
 * teacher feature, each sample's feature taken as one vector:
 *
 *   value = sum over real samples n of  (1 - cos(p(s_n), t_n))  / norm,
 *   cos(a, b) = a.b / (max(|a|, 1e-8) max(|b|, 1e-8))
 *
 * (PyTorch's F.cosine_similarity over the flattened feature, eps 1e-8).
 * p, `projection` and `seed` as in feature_mse: identity when the channel
 * counts agree, else a learned 1x1-conv / linear projection owned by the
 * loss ("proj.weight", "proj.bias").  Scale-free: only the direction of
 * the student's feature is pulled toward the teacher's.
 */
#include "feature_kit.h"

typedef struct fcos {
    fk_base b;
    int projection; /* 0 auto, 1 always, 2 never */
    int64_t seed;
} fcos;

static const rt_option options[] = {
    FK_OPT_FEATURES("\"features.6\"", "\"features.6\""),
    {"projection", RT_OPT_STRING, "\"auto\"", 1, 0, "auto|always|never", "learned projection: when widths differ, always, never"},
    {"seed", RT_OPT_INT, "1", 0, 9007199254740991.0, NULL, "the projection's initialisation seed"},
    RTK_OPT_END,
};
static const rtk_field fields[] = {FK_FIELDS(fcos), RTK_CHOICE(fcos, projection), RTK_I64(fcos, seed)};

#define EPS 1e-8

static double term(const void *self, const float *r, const float *t, int64_t n, float *dr, double a)
{
    (void)self;
    double rr = fk_dot(r, r, n), tt = fk_dot(t, t, n), rt = fk_dot(r, t, n);
    double nr = sqrt(rr), nt = sqrt(tt), ar = fmax(nr, EPS), at = fmax(nt, EPS), c = rt / (ar * at);
    if (dr) {
        /* d(1 - c)/dr = c r / |r|^2 - t / (|r| |t|); the clamp of |r| has
         * no gradient below EPS */
        float kr = (float)(nr > EPS ? a * c / (nr * nr) : 0), kt = (float)(a / (ar * at));
        fk_axpby(dr, kr, r, -kt, t, n);
    }
    return 1 - c;
}

static rt_status bind(void *self, rt_ctx *ctx, const rt_loss_in *in)
{
    fcos *m = self;
    if (m->projection == 2) return RT_STATUS_OK;
    return fk_bind_projection(&m->b, ctx, in, m->projection == 1, "proj", (uint64_t)m->seed);
}

static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale)
{
    (void)g;
    return fk_run_projected(&((fcos *)self)->b, ctx, in, value, scale, term);
}

RTK_LOSS_DESC(fcos, "feature_cosine", "1.0.0", "1 - cosine similarity of features (learned projection when widths differ)",
              0, fk_destroy, .features = fk_features, .bind = bind, .parameters = fk_params)
RT_PLUGIN_LIST(&rtk_desc)
