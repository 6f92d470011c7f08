/*
 * feature_kit.h -- what the feature losses (hint, attention, rkd,
 * feature_mse, feature_cosine) share: the two feature options, their
 * declaration, views of a feature as [N, C, P], the per-sample mask, and a
 * learned projection applied per spatial position (a 1x1 convolution on
 * [N, C, H, W] features, a linear layer on [N, D] ones).
 *
 * Features are per sample: a loss reads the student feature [N, ...] and
 * the teacher feature [N, ...] of the same batch.  A sample is a position
 * of the student's output [N, C]; a mask, when given, skips samples
 * (outputs [N, T, C] are refused: these losses compare whole samples).
 * Reduction as every loss: value = (sum over real samples) / norm.
 */
#ifndef FEATURE_KIT_H
#define FEATURE_KIT_H

#include "rt_loss_kit.h"

#define FK_NAME 48

typedef struct fk_proj {
    rt_tensor *W, *b, *gW, *gb; /* [Ct, Cs] (or [Ct, Cs, 1, 1]), [Ct]; NULL when unused */
    char wname[FK_NAME], bname[FK_NAME];
} fk_proj;

/* The head of every feature loss's struct (the rtk fields point into it). */
typedef struct fk_base {
    char student[FK_NAME], teacher[FK_NAME];
    fk_proj proj;
} fk_base;

#define FK_OPT_FEATURES(sdef_, tdef_)                                                                     \
    {"student", RT_OPT_STRING, sdef_, 1, 0, NULL, "the student feature (see `retort plugins <student>`)"}, \
    {"teacher", RT_OPT_STRING, tdef_, 1, 0, NULL, "the teacher feature"}
#define FK_FIELDS(type_) RTK_STR(type_, b.student), RTK_STR(type_, b.teacher)

static inline int fk_features(void *self, rt_feature_req *out, int max)
{
    fk_base *b = self;
    if (max > 0) out[0] = (rt_feature_req){b->student, RT_FROM_STUDENT};
    if (max > 1) out[1] = (rt_feature_req){b->teacher, RT_FROM_TEACHER};
    return 2;
}

static inline void fk_destroy(void *self)
{
    fk_base *b = self;
    if (!b) return;
    api->tensor_release(b->proj.W);
    api->tensor_release(b->proj.b);
    api->tensor_release(b->proj.gW);
    api->tensor_release(b->proj.gb);
    free(b);
}

/* A feature as [N, C, P]: channels and spatial positions.  [N, D] is
 * C = D, P = 1 when flat_is_channels, else C = 1, P = D. */
typedef struct fk_view {
    int64_t N, C, P;
    const float *x;
} fk_view;

static inline fk_view fk_view_of(const rt_tensor *f, int flat_is_channels)
{
    fk_view v = {f->shape[0], 1, 1, rt_f32(f)};
    int64_t rest = rt_row_size(f);
    if (f->ndim == 2) {
        if (flat_is_channels) v.C = rest;
        else v.P = rest;
    } else {
        v.C = f->shape[1];
        v.P = rest / (v.C ? v.C : 1);
    }
    return v;
}

/* Checks the inputs every feature loss needs: two features of N samples,
 * output [N, C], mask per sample.  *mask: the mask or NULL. */
static inline rt_status fk_check(const fk_base *b, rt_ctx *ctx, const rt_loss_in *in, const int32_t **mask)
{
    char x[64], y[64];
    if (in->nfeatures != 2 || !in->features || !in->features[0] || !in->features[1])
        return api->error(ctx, RT_STATUS_ERR_ARG, "needs the student feature '%s' and the teacher feature '%s'",
                          b->student, b->teacher);
    const rt_tensor *s = in->features[0], *t = in->features[1];
    int64_t N = in->student->shape[0];
    if (in->student->ndim != 2)
        return api->error(ctx, RT_STATUS_ERR_SHAPE, "student output %s: feature losses compare whole samples, "
                          "they take outputs [N, C]", api->shape_str(in->student, x, sizeof x));
    if (s->ndim < 2 || t->ndim < 2 || s->shape[0] != N || t->shape[0] != N)
        return api->error(ctx, RT_STATUS_ERR_SHAPE, "student feature '%s' %s and teacher feature '%s' %s must both "
                          "be [N, ...] with N = %lld", b->student, api->shape_str(s, x, sizeof x), b->teacher,
                          api->shape_str(t, y, sizeof y), (long long)N);
    *mask = in->size >= offsetof(rt_loss_in, mask) + sizeof in->mask && in->mask ? rt_i32(in->mask) : NULL;
    return RT_STATUS_OK;
}

/* Student and teacher as [N, Cs, P] and [N, Ct, P]: the same P or an error
 * naming both shapes. */
static inline rt_status fk_same_positions(const fk_base *b, rt_ctx *ctx, const rt_loss_in *in, fk_view *s, fk_view *t,
                                          int flat_is_channels)
{
    char x[64], y[64];
    *s = fk_view_of(in->features[0], flat_is_channels);
    *t = fk_view_of(in->features[1], flat_is_channels);
    if (s->P != t->P)
        return api->error(ctx, RT_STATUS_ERR_SHAPE, "student feature '%s' %s and teacher feature '%s' %s have "
                          "different spatial sizes (%lld vs %lld positions): pick features of the same resolution",
                          b->student, api->shape_str(in->features[0], x, sizeof x), b->teacher,
                          api->shape_str(in->features[1], y, sizeof y), (long long)s->P, (long long)t->P);
    return RT_STATUS_OK;
}

/* Allocates the projection Ct x Cs (+ bias) as PyTorch's default draw for
 * nn.Linear / nn.Conv2d(k = 1): uniform in +-1/sqrt(Cs), weight first.
 * conv: the weight is [Ct, Cs, 1, 1] (a 1x1 conv's state_dict shape). */
static inline rt_status fk_proj_bind(fk_proj *p, rt_ctx *ctx, const char *prefix, int64_t Cs, int64_t Ct, int conv,
                                     uint64_t seed)
{
    if (p->W) return RT_STATUS_OK; /* bound before (a resumed run) */
    int64_t ws[4] = {Ct, Cs, 1, 1};
    if (!(p->W = api->tensor_new(ctx, RT_DTYPE_F32, conv ? 4 : 2, ws)) ||
        !(p->gW = api->tensor_new(ctx, RT_DTYPE_F32, conv ? 4 : 2, ws)) ||
        !(p->b = api->tensor_new(ctx, RT_DTYPE_F32, 1, &Ct)) || !(p->gb = api->tensor_new(ctx, RT_DTYPE_F32, 1, &Ct)))
        return RT_STATUS_ERR_NOMEM;
    rt_rng r;
    api->rng_seed(&r, seed, 0);
    float bound = 1.0f / sqrtf((float)Cs);
    for (int64_t k = 0; k < Ct * Cs; k++) rt_f32(p->W)[k] = (2 * api->rng_uniform(&r) - 1) * bound;
    for (int64_t k = 0; k < Ct; k++) rt_f32(p->b)[k] = (2 * api->rng_uniform(&r) - 1) * bound;
    snprintf(p->wname, sizeof p->wname, "%.30s.weight", prefix);
    snprintf(p->bname, sizeof p->bname, "%.30s.bias", prefix);
    return RT_STATUS_OK;
}

static inline int fk_proj_params(fk_proj *p, rt_param *out, int max)
{
    if (!p->W) return 0;
    if (max > 0) out[0] = (rt_param){p->wname, p->W, p->gW, RT_ROLE_TRAINABLE};
    if (max > 1) out[1] = (rt_param){p->bname, p->b, p->gb, RT_ROLE_TRAINABLE};
    return 2;
}

/* r [Ct, P] = W s [Cs, P] + b, one sample. */
static inline void fk_proj_forward(const fk_proj *p, const float *s, int64_t Cs, int64_t P, float *r)
{
    int64_t Ct = p->W->shape[0];
    api->gemm(0, 0, Ct, P, Cs, 1.0f, rt_f32(p->W), Cs, s, P, 0.0f, r, P);
    for (int64_t c = 0; c < Ct; c++)
        for (int64_t q = 0; q < P; q++) r[c * P + q] += rt_f32(p->b)[c];
}

/* From dr [Ct, P] (already scaled): gW += dr s^T, gb += row sums of dr,
 * ds [Cs, P] += W^T dr when ds is not NULL. */
static inline void fk_proj_backward(fk_proj *p, const float *s, int64_t Cs, int64_t P, const float *dr, float *ds)
{
    int64_t Ct = p->W->shape[0];
    api->gemm(0, 1, Ct, Cs, P, 1.0f, dr, P, s, P, 1.0f, rt_f32(p->gW), Cs);
    for (int64_t c = 0; c < Ct; c++) {
        double sum = 0;
        for (int64_t q = 0; q < P; q++) sum += dr[c * P + q];
        rt_f32(p->gb)[c] += (float)sum;
    }
    if (ds) api->gemm(1, 0, Cs, P, Ct, 1.0f, rt_f32(p->W), Cs, dr, P, 1.0f, ds, P);
}

/* The bind of a loss with a projection from the student's channels to the
 * teacher's: when `always`, or when the channel counts differ. */
static inline rt_status fk_bind_projection(fk_base *b, rt_ctx *ctx, const rt_loss_in *in, int always,
                                           const char *prefix, uint64_t seed)
{
    const int32_t *mask = NULL;
    fk_view s, t;
    if (fk_check(b, ctx, in, &mask) || fk_same_positions(b, ctx, in, &s, &t, 1)) return RT_STATUS_ERR_SHAPE;
    if (!always && s.C == t.C) return RT_STATUS_OK;
    return fk_proj_bind(&b->proj, ctx, prefix, s.C, t.C, in->features[0]->ndim == 4, seed);
}

static inline int fk_params(void *self, rt_param *out, int max) { return fk_proj_params(&((fk_base *)self)->proj, out, max); }

/* One sample's term of a loss comparing the projected student feature r
 * with the teacher's t, n values each: returns e(r, t) and, when dr is not
 * NULL, fills dr[k] = de/dr[k]. */
typedef double (*fk_term_fn)(const void *self, const float *r, const float *t, int64_t n, double *dr);

/* value = sum over real samples of term(proj(s_n), t_n) / norm; backward
 * adds scale/norm times its gradient into the student feature's slot and
 * the projection's gradients.  Without a projection the channel counts
 * must agree. */
static inline rt_status fk_run_projected(fk_base *b, rt_ctx *ctx, const rt_loss_in *in, double *value, float scale,
                                         fk_term_fn term)
{
    const int32_t *mask = NULL;
    fk_view s, t;
    char x[64], y[64];
    if (fk_check(b, ctx, in, &mask) || fk_same_positions(b, ctx, in, &s, &t, 1)) return RT_STATUS_ERR_SHAPE;
    fk_proj *p = &b->proj;
    if (p->W ? (p->W->shape[0] != t.C || p->W->shape[1] != s.C) : s.C != t.C)
        return api->error(ctx, RT_STATUS_ERR_SHAPE,
                          p->W ? "student feature '%s' %s and teacher feature '%s' %s do not fit the projection bound "
                                 "on the first batch"
                               : "student feature '%s' %s and teacher feature '%s' %s have different channel counts "
                                 "(use projection \"auto\" or \"always\")",
                          b->student, api->shape_str(in->features[0], x, sizeof x), b->teacher,
                          api->shape_str(in->features[1], y, sizeof y));
    int64_t n = t.C * t.P;
    float *r = p->W ? api->scratch(ctx, sizeof(float) * (size_t)n * 2) : NULL;
    double *dr = value ? NULL : api->scratch(ctx, sizeof(double) * (size_t)n);
    if ((p->W && !r) || (!value && !dr)) return RT_STATUS_ERR_NOMEM;
    float *drf = r ? r + n : NULL;
    float *gs = value ? NULL : rt_f32(in->feature_grads[0]);
    double total = 0, a = in->norm ? (double)scale / in->norm : 0;
    for (int64_t i = 0; i < s.N; i++) {
        if (mask && !mask[i]) continue;
        const float *si = s.x + i * s.C * s.P, *ti = t.x + i * n, *ri = si;
        if (p->W) {
            fk_proj_forward(p, si, s.C, s.P, r);
            ri = r;
        }
        total += term(b, ri, ti, n, dr);
        if (value) continue;
        if (p->W) {
            for (int64_t k = 0; k < n; k++) drf[k] = (float)(a * dr[k]);
            fk_proj_backward(p, si, s.C, s.P, drf, gs ? gs + i * s.C * s.P : NULL);
        } else if (gs) {
            for (int64_t k = 0; k < n; k++) gs[i * n + k] += (float)(a * dr[k]);
        }
    }
    if (value) *value = rtk_value(in, total);
    return RT_STATUS_OK;
}

#endif /* FEATURE_KIT_H */
