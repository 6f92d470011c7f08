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

/* Reductions in double over float data, in 8 independent lanes so that
 * the compiler vectorises them (a single double accumulator is a chain of
 * dependent adds, and the feature losses' cost was mostly that). */
#define FK_LANES 8

/* sum of x[k] * y[k]. */
static inline double fk_dot(const float *restrict x, const float *restrict y, int64_t n)
{
    double acc[FK_LANES] = {0}, e = 0;
    int64_t k = 0;
    for (; k + FK_LANES <= n; k += FK_LANES)
        for (int j = 0; j < FK_LANES; j++) acc[j] += (double)x[k + j] * y[k + j];
    for (; k < n; k++) e += (double)x[k] * y[k];
    for (int j = 0; j < FK_LANES; j++) e += acc[j];
    return e;
}

/* sum of (x[k] - y[k])^2. */
static inline double fk_sqdist(const float *restrict x, const float *restrict y, int64_t n)
{
    double acc[FK_LANES] = {0}, e = 0;
    int64_t k = 0;
    for (; k + FK_LANES <= n; k += FK_LANES)
        for (int j = 0; j < FK_LANES; j++) {
            double d = (double)x[k + j] - y[k + j];
            acc[j] += d * d;
        }
    for (; k < n; k++) {
        double d = (double)x[k] - y[k];
        e += d * d;
    }
    for (int j = 0; j < FK_LANES; j++) e += acc[j];
    return e;
}

/* sum of x[k]. */
static inline double fk_sum(const float *restrict x, int64_t n)
{
    double acc[FK_LANES] = {0}, e = 0;
    int64_t k = 0;
    for (; k + FK_LANES <= n; k += FK_LANES)
        for (int j = 0; j < FK_LANES; j++) acc[j] += x[k + j];
    for (; k < n; k++) e += x[k];
    for (int j = 0; j < FK_LANES; j++) e += acc[j];
    return e;
}

/* Elementwise loops in the same 8-lane form: gcc -O2 vectorises a loop of
 * unknown length only when written so. */

/* d = a (x - y). */
static inline void fk_scaled_diff(float *restrict d, float a, const float *restrict x, const float *restrict y,
                                  int64_t n)
{
    int64_t k = 0;
    for (; k + FK_LANES <= n; k += FK_LANES)
        for (int j = 0; j < FK_LANES; j++) d[k + j] = a * (x[k + j] - y[k + j]);
    for (; k < n; k++) d[k] = a * (x[k] - y[k]);
}

/* d = a x + b y. */
static inline void fk_axpby(float *restrict d, float a, const float *restrict x, float b, const float *restrict y,
                            int64_t n)
{
    int64_t k = 0;
    for (; k + FK_LANES <= n; k += FK_LANES)
        for (int j = 0; j < FK_LANES; j++) d[k + j] = a * x[k + j] + b * y[k + j];
    for (; k < n; k++) d[k] = a * x[k] + b * y[k];
}

/* d += x. */
static inline void fk_add(float *restrict d, const float *restrict x, int64_t n)
{
    int64_t k = 0;
    for (; k + FK_LANES <= n; k += FK_LANES)
        for (int j = 0; j < FK_LANES; j++) d[k + j] += x[k + j];
    for (; k < n; k++) d[k] += x[k];
}

/* d += c. */
static inline void fk_add_const(float *restrict d, float c, int64_t n)
{
    int64_t k = 0;
    for (; k + FK_LANES <= n; k += FK_LANES)
        for (int j = 0; j < FK_LANES; j++) d[k + j] += c;
    for (; k < n; k++) d[k] += c;
}

/* r = W s + b for nb samples s [nb, Cs, P] into r [nb, Ct, P].  P = 1
 * ([N, D] features): one GEMM over the samples, [nb, Cs] x [Cs, Ct];
 * else one GEMM per sample, [Ct, Cs] x [Cs, P] (the 1x1 convolution on
 * NCHW; as fast per FLOP as one GEMM over N*P columns, measured). */
static inline void fk_proj_forward(const fk_proj *p, const float *s, int64_t nb, int64_t Cs, int64_t P, float *r)
{
    int64_t Ct = p->W->shape[0];
    const float *W = rt_f32(p->W), *bias = rt_f32(p->b);
    if (P == 1) {
        api->gemm(0, 1, nb, Ct, Cs, 1.0f, s, Cs, W, Cs, 0.0f, r, Ct);
        for (int64_t i = 0; i < nb; i++) fk_add(r + i * Ct, bias, Ct);
        return;
    }
    for (int64_t i = 0; i < nb; i++) {
        float *ri = r + i * Ct * P;
        api->gemm(0, 0, Ct, P, Cs, 1.0f, W, Cs, s + i * Cs * P, P, 0.0f, ri, P);
        for (int64_t c = 0; c < Ct; c++) fk_add_const(ri + c * P, bias[c], P);
    }
}

/* From dr [nb, Ct, P] (already scaled; zero for skipped samples):
 * gW += sum_i dr_i s_i^T, gb += the sums of dr over samples and positions,
 * ds [nb, Cs, P] += W^T dr_i when ds is not NULL.  P = 1: one GEMM each
 * over the samples. */
static inline void fk_proj_backward(fk_proj *p, const float *s, int64_t nb, int64_t Cs, int64_t P, const float *dr,
                                    float *ds)
{
    int64_t Ct = p->W->shape[0];
    const float *W = rt_f32(p->W);
    float *gW = rt_f32(p->gW), *gb = rt_f32(p->gb);
    if (P == 1) {
        api->gemm(1, 0, Ct, Cs, nb, 1.0f, dr, Ct, s, Cs, 1.0f, gW, Cs);
        for (int64_t c = 0; c < Ct; c++) {
            double sum = 0;
            for (int64_t i = 0; i < nb; i++) sum += dr[i * Ct + c];
            gb[c] += (float)sum;
        }
        if (ds) api->gemm(0, 0, nb, Cs, Ct, 1.0f, dr, Ct, W, Cs, 1.0f, ds, Cs);
        return;
    }
    for (int64_t i = 0; i < nb; i++) {
        const float *di = dr + i * Ct * P, *si = s + i * Cs * P;
        api->gemm(0, 1, Ct, Cs, P, 1.0f, di, P, si, P, 1.0f, gW, Cs);
        for (int64_t c = 0; c < Ct; c++) gb[c] += (float)fk_sum(di + c * P, P);
        if (ds) api->gemm(1, 0, Cs, P, Ct, 1.0f, W, Cs, di, P, 1.0f, ds + i * Cs * P, P);
    }
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
 * NULL, sets dr[k] = a * de/dr[k] (float, scaled: the gradient the run
 * passes on). */
typedef double (*fk_term_fn)(const void *self, const float *r, const float *t, int64_t n, float *dr, double a);

/* value = sum over real samples of term(proj(s_n), t_n) / norm; backward
 * adds scale/norm times its gradient into the student feature's slot and
 * the projection's gradients.  Without a projection the channel counts
 * must agree.  Samples go in blocks: the whole batch when features are
 * [N, D] (the projection is then one GEMM), one sample at a time for
 * [N, C, H, W] (r and dr of one sample stay in cache). */
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
    int64_t n = t.C * t.P, ns = s.C * s.P, blk = p->W && s.P == 1 ? s.N : 1;
    float *gs = value ? NULL : rt_f32(in->feature_grads[0]);
    /* r: the block's projections; dr: its scaled gradients */
    float *r = p->W ? api->scratch(ctx, sizeof(float) * (size_t)(blk * n)) : NULL;
    float *dr = value ? NULL : api->scratch(ctx, sizeof(float) * (size_t)(blk * n));
    if ((p->W && !r) || (!value && !dr)) return RT_STATUS_ERR_NOMEM;
    double total = 0, a = in->norm ? (double)scale / in->norm : 0;
    for (int64_t i0 = 0; i0 < s.N; i0 += blk) {
        int64_t nb = s.N - i0 < blk ? s.N - i0 : blk, real = 0;
        for (int64_t i = i0; i < i0 + nb; i++) real += !mask || mask[i];
        if (!real) continue;
        const float *sb = s.x + i0 * ns;
        if (p->W) fk_proj_forward(p, sb, nb, s.C, s.P, r);
        for (int64_t i = i0; i < i0 + nb; i++) {
            float *dri = dr ? dr + (i - i0) * n : NULL;
            if (mask && !mask[i]) {
                if (dri) memset(dri, 0, sizeof(float) * (size_t)n);
                continue;
            }
            const float *ri = p->W ? r + (i - i0) * n : s.x + i * ns;
            total += term(b, ri, t.x + i * n, n, dri, a);
            if (dri && !p->W && gs) fk_add(gs + i * n, dri, n);
        }
        if (dr && p->W) fk_proj_backward(p, sb, nb, s.C, s.P, dr, gs ? gs + i0 * ns : NULL);
    }
    if (value) *value = rtk_value(in, total);
    return RT_STATUS_OK;
}

#endif /* FEATURE_KIT_H */
