/*
 * rt_nn.h -- the layer kit for student plugins.  Header-only (static inline
 * over rt_api): a student using it still links nothing of the host.
 * Include it instead of rt_plugin.h; it defines the file's `api` pointer.
 *
 * What every student would otherwise write again:
 *   rtn_params    a parameter list in PyTorch state_dict naming
 *                 ("layers.0.weight"), with roles, and the lazy zero-grad
 *                 that makes the next backward overwrite instead of add
 *   rtn_linear    y = act(x W^T + b), PyTorch nn.Linear layout and default
 *                 initialisation, activation fused (relu, gelu, tanh)
 *   rtn_dropout   inverted dropout on the run's RNG stream
 *   rtn_features  the names a student can record, which are on, lookup;
 *                 RTN_FEATURES_VT, its feature / features / record
 *
 * Conventions (the ones later layers -- conv, norm, pooling, embedding,
 * attention -- follow too): a layer is a struct the student embeds; init
 * takes the state_dict prefix and allocates the parameters; forward takes
 * N and input/output pointers and keeps what backward needs in the layer's
 * own tensors, grown with tensor_ensure so a step allocates nothing after
 * the first; backward takes the output gradient (modified in place), adds
 * parameter gradients (or overwrites them when the lazy zero-grad is
 * pending: `beta` 0) and writes the input gradient only when asked; params
 * appends to an rtn_params.  Buffers (running statistics) are listed with
 * RT_ROLE_BUFFER and grad NULL.
 */
#ifndef RT_NN_H
#define RT_NN_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rt_plugin.h"

#ifndef RT_KIT_API
#define RT_KIT_API
static const rt_api *api; /* set by RT_PLUGIN_LIST's entry point */
#endif

#define RTN_NAME 48 /* longest state_dict / feature name, with the NUL */

/* -------------------------------------------------------- parameter lists */

/* Fills a parameters() out array the ABI's way: at most max entries
 * written, every one counted. */
typedef struct rtn_params {
    rt_param *out;
    int max, n;
} rtn_params;

static inline void rtn_param(rtn_params *p, const char *name, rt_tensor *value, rt_tensor *grad, rt_role role)
{
    if (p->n < p->max) p->out[p->n] = (rt_param){name, value, grad, role};
    p->n++;
}

/* Lazy zero-grad: zero_grad() sets stale; the next backward passes beta 0
 * to its gradient writes.  Anyone looking at the gradients before that
 * (parameters()) gets them really zeroed by rtn_grads_materialize. */
typedef struct rtn_grads {
    int stale;
} rtn_grads;

static inline float rtn_beta(const rtn_grads *g) { return g->stale ? 0.0f : 1.0f; }

static inline void rtn_zero(rt_tensor *t)
{
    if (t) memset(t->data, 0, (size_t)rt_numel(t) * sizeof(float));
}

/* --------------------------------------------------------------- linear */

typedef struct rtn_linear {
    int64_t in, out;
    rt_act act;
    rt_tensor *w, *b, *gw, *gb; /* [out, in], [out] */
    rt_tensor *y;               /* [N, out] output (after act, dropout in place) */
    rt_tensor *pre;             /* [N, out] pre-activation, gelu only */
    rt_tensor *dx;              /* [N, in] input gradient */
    char wname[RTN_NAME], bname[RTN_NAME];
} rtn_linear;

/* Allocates "<prefix>.weight" [out, in] and "<prefix>.bias" [out], drawn as
 * PyTorch's nn.Linear default: uniform in +-1/sqrt(in), weight first. */
static inline rt_status rtn_linear_init(rtn_linear *L, rt_ctx *ctx, const char *prefix, int64_t in, int64_t out,
                                        rt_act act, rt_rng *rng)
{
    L->in = in;
    L->out = out;
    L->act = act;
    int64_t ws[2] = {out, in};
    /* Stops at the first refusal (the host's size bound or OOM), so its
     * message is the one reported and nothing more is allocated. */
    if (!(L->w = api->tensor_new(ctx, RT_DTYPE_F32, 2, ws)) || !(L->gw = api->tensor_new(ctx, RT_DTYPE_F32, 2, ws)) ||
        !(L->b = api->tensor_new(ctx, RT_DTYPE_F32, 1, &L->out)) ||
        !(L->gb = api->tensor_new(ctx, RT_DTYPE_F32, 1, &L->out)))
        return RT_STATUS_ERR_NOMEM; /* tensor_new set the message */
    float bound = 1.0f / sqrtf((float)in);
    float *w = rt_f32(L->w), *b = rt_f32(L->b);
    for (int64_t k = 0; k < out * in; k++) w[k] = (2 * api->rng_uniform(rng) - 1) * bound;
    for (int64_t k = 0; k < out; k++) b[k] = (2 * api->rng_uniform(rng) - 1) * bound;
    snprintf(L->wname, sizeof L->wname, "%.40s.weight", prefix);
    snprintf(L->bname, sizeof L->bname, "%.40s.bias", prefix);
    return RT_STATUS_OK;
}

static inline void rtn_linear_free(rtn_linear *L)
{
    rt_tensor *ts[] = {L->w, L->b, L->gw, L->gb, L->y, L->pre, L->dx};
    for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) api->tensor_release(ts[k]);
}

/* L->y [N, out] = act(x[N, in] W^T + b). */
static inline rt_status rtn_linear_forward(rtn_linear *L, rt_ctx *ctx, const float *x, int64_t N)
{
    int64_t s[2] = {N, L->out};
    int use_pre = L->act == RT_ACT_GELU;
    if (api->tensor_ensure(ctx, &L->y, RT_DTYPE_F32, 2, s) ||
        (use_pre && api->tensor_ensure(ctx, &L->pre, RT_DTYPE_F32, 2, s)))
        return RT_STATUS_ERR_NOMEM;
    float *y = rt_f32(L->y);
    api->gemm(0, 1, N, L->out, L->in, 1.0f, x, L->in, rt_f32(L->w), L->in, 0.0f, y, L->out);
    api->bias_act(y, rt_f32(L->b), N, L->out, L->act, use_pre ? rt_f32(L->pre) : NULL);
    return RT_STATUS_OK;
}

/* d [N, out]: in, the gradient wrt L->y; out, wrt the pre-activation.
 * x: the forward's input.  gW, gb += (beta 1) or = (beta 0).  keep: when a
 * dropout scaled y in place, the fraction it kept (1 - p), else 1: tanh
 * differentiates through its unscaled output.  With want_dx, L->dx [N, in]
 * receives the input gradient. */
static inline rt_status rtn_linear_backward(rtn_linear *L, rt_ctx *ctx, float *d, const float *x, int64_t N,
                                            float beta, float keep, int want_dx)
{
    if (beta == 0.0f) memset(rt_f32(L->gb), 0, sizeof(float) * (size_t)L->out);
    /* relu differentiates through its output's sign, unchanged by dropout
     * where kept; dropped units already have d = 0. */
    const float *y = rt_f32(L->y);
    if (L->act == RT_ACT_TANH && keep != 1.0f) {
        float *t = api->scratch(ctx, sizeof(float) * (size_t)(N * L->out));
        if (!t) return RT_STATUS_ERR_NOMEM;
        for (int64_t k = 0; k < N * L->out; k++) t[k] = y[k] * keep;
        y = t;
    }
    api->bias_act_backward(d, y, L->pre ? rt_f32(L->pre) : NULL, N, L->out, L->act, rt_f32(L->gb));
    /* gW[out,in] (+)= d[N,out]^T x[N,in] */
    api->gemm(1, 0, L->out, L->in, N, 1.0f, d, L->out, x, L->in, beta, rt_f32(L->gw), L->in);
    if (!want_dx) return RT_STATUS_OK;
    /* dx[N,in] = d[N,out] W[out,in] */
    int64_t xs[2] = {N, L->in};
    if (api->tensor_ensure(ctx, &L->dx, RT_DTYPE_F32, 2, xs)) return RT_STATUS_ERR_NOMEM;
    api->gemm(0, 0, N, L->in, L->out, 1.0f, d, L->out, rt_f32(L->w), L->in, 0.0f, rt_f32(L->dx), L->in);
    return RT_STATUS_OK;
}

static inline void rtn_linear_params(rtn_linear *L, rtn_params *p)
{
    rtn_param(p, L->wname, L->w, L->gw, RT_ROLE_TRAINABLE);
    rtn_param(p, L->bname, L->b, L->gb, RT_ROLE_TRAINABLE);
}

static inline void rtn_linear_zero(rtn_linear *L)
{
    rtn_zero(L->gw);
    rtn_zero(L->gb);
}

static inline int64_t rtn_linear_flops(const rtn_linear *L) { return 2 * L->in * L->out + L->out; }

/* --------------------------------------------------------------- dropout */

/* Inverted dropout: kept units scaled 1/(1-p); the mask keeps 0 or
 * 1/(1-p) for backward.  Draws one uniform per unit from the run's RNG
 * stream (ctx_rng), so runs reproduce from the seed. */
typedef struct rtn_dropout {
    float p;
    rt_tensor *mask;
    int applied; /* the last forward dropped (train and p > 0) */
} rtn_dropout;

static inline rt_status rtn_dropout_forward(rtn_dropout *D, rt_ctx *ctx, rt_tensor *y, int train)
{
    D->applied = train && D->p > 0;
    if (!D->applied) return RT_STATUS_OK;
    if (api->tensor_ensure(ctx, &D->mask, RT_DTYPE_F32, y->ndim, y->shape)) return RT_STATUS_ERR_NOMEM;
    rt_rng *rng = api->ctx_rng(ctx);
    float *mk = rt_f32(D->mask), *v = rt_f32(y), keep = 1.0f - D->p, sc = 1.0f / keep;
    const int64_t n = rt_numel(y); /* once: the stores below may alias y's shape as far as gcc knows */
    for (int64_t k = 0; k < n; k++) {
        mk[k] = api->rng_uniform(rng) < keep ? sc : 0.0f;
        v[k] *= mk[k];
    }
    return RT_STATUS_OK;
}

/* d *= mask; returns the fraction kept for rtn_linear_backward's keep. */
static inline float rtn_dropout_backward(const rtn_dropout *D, float *d, int64_t n)
{
    if (!D->applied) return 1.0f;
    const float *mk = rt_f32(D->mask);
    for (int64_t k = 0; k < n; k++) d[k] *= mk[k];
    return 1.0f - D->p;
}

/* -------------------------------------------------------------- features */

/* A student's named features: each a name and where the last forward left
 * it.  RTN_FEATURES_VT below gives a student its rt_student_vt.feature /
 * features / record from its table; rtn_feature_get is the one rule. */
typedef struct rtn_feature {
    char name[RTN_NAME];
    rt_tensor **slot; /* the tensor the layer keeps (e.g. &layer.y) */
    int on;           /* recording asked for */
} rtn_feature;

static inline int rtn_features_list(const rtn_feature *f, int n, const char **out, int max)
{
    for (int k = 0; k < n && k < max; k++) out[k] = f[k].name;
    return n;
}

static inline rtn_feature *rtn_feature_find(rtn_feature *f, int n, const char *name)
{
    for (int k = 0; k < n; k++)
        if (!strcmp(f[k].name, name)) return &f[k];
    return NULL;
}

static inline rt_status rtn_features_record(rtn_feature *f, int n, rt_ctx *ctx, const char *name, int on)
{
    rtn_feature *x = rtn_feature_find(f, n, name);
    if (!x) return api->error(ctx, RT_STATUS_ERR_ARG, "no feature '%s'", name);
    x->on = on;
    return RT_STATUS_OK;
}

/* The rule of every kit student's feature() (docs/abi.md, "Features"): the
 * tensor the last forward left for `name` (borrowed) when `name` is
 * recorded (record(name, 1)) and a forward has run (have_forward); NULL for
 * an unknown name, a name not recorded, or before the first forward.  A
 * layer may keep its output for backward either way; recording is what
 * hands it out, so a caller that reads a feature has asked for it. */
static inline rt_tensor *rtn_feature_get(rtn_feature *f, int n, int have_forward, const char *name)
{
    rtn_feature *x = have_forward && name ? rtn_feature_find(f, n, name) : NULL;
    return x && x->on ? *x->slot : NULL;
}

/* A student's feature table as the vt functions see it: the entries, their
 * count, and whether a forward has run. */
typedef struct rtn_feature_table {
    rtn_feature *f;
    int n;
    int have_forward;
} rtn_feature_table;

/* Defines the three vt functions rtn_vt_feature, rtn_vt_features and
 * rtn_vt_record from table_of, the student's
 *   static rtn_feature_table table_of(void *self);
 * so that every student lists all its names (features), turns one on or
 * off (record; an unknown name is an error) and hands out only recorded
 * ones (feature, rtn_feature_get).  In the vt:
 *   .feature = rtn_vt_feature, .features = rtn_vt_features, .record = rtn_vt_record */
#define RTN_FEATURES_VT(table_of)                                                                   \
    static rt_tensor *rtn_vt_feature(void *self, const char *name)                                  \
    {                                                                                               \
        rtn_feature_table t_ = table_of(self);                                                      \
        return rtn_feature_get(t_.f, t_.n, t_.have_forward, name);                                  \
    }                                                                                               \
    static int rtn_vt_features(void *self, const char **out, int max)                               \
    {                                                                                               \
        rtn_feature_table t_ = table_of(self);                                                      \
        return rtn_features_list(t_.f, t_.n, out, max);                                             \
    }                                                                                               \
    static rt_status rtn_vt_record(void *self, rt_ctx *ctx, const char *name, int on)              \
    {                                                                                               \
        rtn_feature_table t_ = table_of(self);                                                      \
        return rtn_features_record(t_.f, t_.n, ctx, name, on);                                      \
    }

/* The tap gradient for feature `name`, checked against the feature's
 * shape; *grad NULL when there is none.  An unknown tap is an error. */
static inline rt_status rtn_tap_find(const rt_tap *taps, int ntaps, const char *name, const rt_tensor *feature,
                                     const float **grad, rt_ctx *ctx)
{
    char a[64], b[64];
    *grad = NULL;
    for (int k = 0; k < ntaps; k++) {
        if (strcmp(taps[k].name, name)) continue;
        if (!rt_is_contiguous(taps[k].grad) || rt_numel(taps[k].grad) != rt_numel(feature) ||
            taps[k].grad->shape[0] != feature->shape[0])
            return api->error(ctx, RT_STATUS_ERR_SHAPE, "tap '%s' gradient %s vs feature %s", name,
                              api->shape_str(taps[k].grad, a, sizeof a), api->shape_str(feature, b, sizeof b));
        *grad = rt_f32(taps[k].grad);
    }
    return RT_STATUS_OK;
}

/* Every tap names a feature of f that is recorded (else the error names
 * it): a tap is the gradient of a feature someone read, and only recorded
 * features are handed out. */
static inline rt_status rtn_taps_check(const rtn_feature *f, int n, const rt_tap *taps, int ntaps, rt_ctx *ctx)
{
    for (int k = 0; k < ntaps; k++) {
        int j = 0;
        while (j < n && strcmp(taps[k].name, f[j].name)) j++;
        if (j == n) return api->error(ctx, RT_STATUS_ERR_ARG, "no feature '%s' to tap", taps[k].name);
        if (!f[j].on)
            return api->error(ctx, RT_STATUS_ERR_ARG, "feature '%s' is tapped but not recorded: record('%s') "
                              "before the forward", taps[k].name, taps[k].name);
    }
    return RT_STATUS_OK;
}

#endif /* RT_NN_H */
