/*
 * rt_nn_conv.h -- convolutional layers for the layer kit (rt_nn.h):
 * conv2d, batch norm (train and eval, running statistics as buffers),
 * max / average / global-average pooling, relu, residual add.
 * Header-only over rt_api's conv kernels block (ABI 2.1): a student using it
 * still links nothing of the host.  Include it instead of rt_nn.h.
 *
 * The conventions are rt_nn.h's: a layer is a struct the student embeds;
 * init takes the state_dict prefix (PyTorch naming: "<prefix>.weight",
 * "<prefix>.running_mean", "<prefix>.num_batches_tracked"); forward takes
 * the input pointer and N, and keeps its output in the layer's `y`, grown
 * with tensor_ensure (a step allocates nothing after the first; the im2col
 * workspace is api->scratch, freed when the call returns); backward takes
 * the output gradient, writes parameter gradients with `beta` (0: the lazy
 * zero-grad is pending, overwrite; 1: add) and the input gradient into the
 * layer's `dx` only when asked (overwritten, not accumulated).
 * Layouts: NCHW, batch first, contiguous.  Shapes per sample are fixed at
 * init (C, H, W of the input); N may change between calls.
 */
#ifndef RT_NN_CONV_H
#define RT_NN_CONV_H

#include "rt_nn.h"

/* Zeroes an input gradient before a kernel accumulates into it: an
 * activation's size, on the kernels' threads (rt_api.fill, ABI 2.2). */
static inline void rtn_zero_dx(rt_tensor *t) { api->fill(rt_f32(t), rt_numel(t), 0.0f); }

/* ---------------------------------------------------------------- conv2d */

typedef struct rtn_conv2d {
    rt_conv2d_geom g;           /* N is set by each forward */
    rt_tensor *w, *b, *gw, *gb; /* [C_out, C_in / groups, KH, KW], [C_out] or NULL without bias */
    rt_tensor *y;               /* [N, C_out, H_out, W_out] */
    rt_tensor *dx;              /* [N, C_in, H, W] */
    char wname[RTN_NAME], bname[RTN_NAME];
} rtn_conv2d;

/* Square kernel k, stride, zero padding, groups, on inputs [N, cin, H, W].
 * Weight and bias drawn as PyTorch's nn.Conv2d default (kaiming_uniform
 * with a = sqrt(5)): uniform in +-1/sqrt(fan_in), fan_in = cin/groups k k,
 * weight first.  The geometry is checked here (the message names it). */
static inline rt_status rtn_conv2d_init(rtn_conv2d *L, rt_ctx *ctx, const char *prefix, int64_t cin, int64_t H,
                                        int64_t W, int64_t cout, int64_t k, int64_t stride, int64_t pad,
                                        int64_t groups, int bias, rt_rng *rng)
{
    L->g = (rt_conv2d_geom){.N = 1, .C_in = cin, .H = H, .W = W, .C_out = cout, .KH = k, .KW = k,
                            .stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad, .dil_h = 1,
                            .dil_w = 1, .groups = groups};
    if (api->conv2d_geom_check(ctx, &L->g)) return RT_STATUS_ERR_ARG;
    int64_t ws[4] = {cout, cin / groups, k, k};
    if (!(L->w = api->tensor_new(ctx, RT_DTYPE_F32, 4, ws)) || !(L->gw = api->tensor_new(ctx, RT_DTYPE_F32, 4, ws)))
        return RT_STATUS_ERR_NOMEM;
    if (bias && (!(L->b = api->tensor_new(ctx, RT_DTYPE_F32, 1, &cout)) ||
                 !(L->gb = api->tensor_new(ctx, RT_DTYPE_F32, 1, &cout))))
        return RT_STATUS_ERR_NOMEM;
    float bound = 1.0f / sqrtf((float)(cin / groups * k * k));
    for (int64_t i = 0; i < rt_numel(L->w); i++) rt_f32(L->w)[i] = (2 * api->rng_uniform(rng) - 1) * bound;
    for (int64_t i = 0; L->b && i < cout; i++) rt_f32(L->b)[i] = (2 * api->rng_uniform(rng) - 1) * bound;
    snprintf(L->wname, sizeof L->wname, "%.40s.weight", prefix);
    snprintf(L->bname, sizeof L->bname, "%.40s.bias", prefix);
    return RT_STATUS_OK;
}

static inline void rtn_conv2d_free(rtn_conv2d *L)
{
    rt_tensor *ts[] = {L->w, L->b, L->gw, L->gb, L->y, L->dx};
    for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) api->tensor_release(ts[k]);
}

static inline float *rtn_conv2d_ws(rtn_conv2d *L, rt_ctx *ctx)
{
    size_t n = api->conv2d_workspace(&L->g);
    return api->scratch(ctx, sizeof(float) * (n ? n : 1));
}

/* L->y = conv(x) + b, x [N, C_in, H, W]. */
static inline rt_status rtn_conv2d_forward(rtn_conv2d *L, rt_ctx *ctx, const float *x, int64_t N)
{
    L->g.N = N;
    int64_t s[4] = {N, L->g.C_out, L->g.H_out, L->g.W_out};
    if (api->tensor_ensure(ctx, &L->y, RT_DTYPE_F32, 4, s)) return RT_STATUS_ERR_NOMEM;
    float *ws = rtn_conv2d_ws(L, ctx);
    if (!ws) return RT_STATUS_ERR_NOMEM;
    api->conv2d_forward(&L->g, x, rt_f32(L->w), L->b ? rt_f32(L->b) : NULL, rt_f32(L->y), ws);
    return RT_STATUS_OK;
}

/* dy [N, C_out, H_out, W_out]; x the forward's input. */
static inline rt_status rtn_conv2d_backward(rtn_conv2d *L, rt_ctx *ctx, const float *dy, const float *x, float beta,
                                            int want_dx)
{
    if (beta == 0.0f) {
        rtn_zero(L->gw);
        rtn_zero(L->gb);
    }
    float *dx = NULL;
    if (want_dx) {
        int64_t s[4] = {L->g.N, L->g.C_in, L->g.H, L->g.W};
        if (api->tensor_ensure(ctx, &L->dx, RT_DTYPE_F32, 4, s)) return RT_STATUS_ERR_NOMEM;
        rtn_zero_dx(L->dx); /* the kernel accumulates */
        dx = rt_f32(L->dx);
    }
    float *ws = rtn_conv2d_ws(L, ctx);
    if (!ws) return RT_STATUS_ERR_NOMEM;
    api->conv2d_backward(&L->g, x, rt_f32(L->w), dy, dx, rt_f32(L->gw), L->gb ? rt_f32(L->gb) : NULL, ws);
    return RT_STATUS_OK;
}

static inline void rtn_conv2d_params(rtn_conv2d *L, rtn_params *p)
{
    rtn_param(p, L->wname, L->w, L->gw, RT_ROLE_TRAINABLE);
    if (L->b) rtn_param(p, L->bname, L->b, L->gb, RT_ROLE_TRAINABLE);
}

static inline void rtn_conv2d_zero(rtn_conv2d *L)
{
    rtn_zero(L->gw);
    rtn_zero(L->gb);
}

static inline int64_t rtn_conv2d_flops(const rtn_conv2d *L)
{
    const rt_conv2d_geom *g = &L->g;
    return 2 * g->C_out * g->H_out * g->W_out * (g->C_in / g->groups) * g->KH * g->KW;
}

/* ------------------------------------------------------------ batch norm */

/* BatchNorm2d over [N, C, H, W] or, with H = W = 0, BatchNorm1d over
 * [N, C]; y has the input's shape.  Affine, tracking running statistics: PyTorch's defaults
 * (eps 1e-5, momentum 0.1; weight 1, bias 0, running_mean 0, running_var
 * 1, num_batches_tracked 0 as an i64 scalar).  Train mode normalises with
 * the batch's statistics and updates the running ones; eval mode uses the
 * running ones (rt_conv.h states the formulas). */
typedef struct rtn_bn {
    int64_t C, H, W, HW, N; /* H = W = 0: BatchNorm1d, HW = 1 */
    float eps, momentum;
    rt_tensor *w, *b, *gw, *gb;   /* [C] */
    rt_tensor *rm, *rv, *nbt;     /* buffers: [C], [C], i64 [] */
    rt_tensor *y, *dx;            /* [N, C, HW] */
    rt_tensor *smean, *sinv;      /* [C] the last train forward's batch statistics */
    int train;                    /* the last forward's mode */
    char names[5][RTN_NAME];
} rtn_bn;

static inline rt_status rtn_bn_init(rtn_bn *B, rt_ctx *ctx, const char *prefix, int64_t C, int64_t H, int64_t W)
{
    B->C = C;
    B->H = H;
    B->W = W;
    B->HW = H ? H * W : 1;
    B->eps = 1e-5f;
    B->momentum = 0.1f;
    rt_tensor **ts[] = {&B->w, &B->b, &B->gw, &B->gb, &B->rm, &B->rv, &B->smean, &B->sinv};
    for (size_t k = 0; k < sizeof ts / sizeof *ts; k++)
        if (!(*ts[k] = api->tensor_new(ctx, RT_DTYPE_F32, 1, &C))) return RT_STATUS_ERR_NOMEM;
    if (!(B->nbt = api->tensor_new(ctx, RT_DTYPE_I64, 0, NULL))) return RT_STATUS_ERR_NOMEM;
    for (int64_t c = 0; c < C; c++) rt_f32(B->w)[c] = rt_f32(B->rv)[c] = 1.0f;
    const char *suffix[5] = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"};
    for (int k = 0; k < 5; k++) snprintf(B->names[k], sizeof B->names[k], "%.26s.%s", prefix, suffix[k]);
    return RT_STATUS_OK;
}

static inline void rtn_bn_free(rtn_bn *B)
{
    rt_tensor *ts[] = {B->w, B->b, B->gw, B->gb, B->rm, B->rv, B->nbt, B->y, B->dx, B->smean, B->sinv};
    for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) api->tensor_release(ts[k]);
}

/* B->y = bn(x), x [N, C, H, W] or [N, C].  train: batch statistics,
 * running ones updated (an error when N HW < 2, as PyTorch). */
static inline rt_status rtn_bn_forward(rtn_bn *B, rt_ctx *ctx, const float *x, int64_t N, int train)
{
    int64_t s[4] = {N, B->C, B->H, B->W};
    if (api->tensor_ensure(ctx, &B->y, RT_DTYPE_F32, B->H ? 4 : 2, s)) return RT_STATUS_ERR_NOMEM;
    B->N = N;
    B->train = train;
    if (!train) {
        api->batchnorm_eval_forward(x, N, B->C, B->HW, rt_f32(B->w), rt_f32(B->b), B->eps, rt_f32(B->rm),
                                    rt_f32(B->rv), rt_f32(B->y));
        return RT_STATUS_OK;
    }
    return api->batchnorm_train_forward(ctx, x, N, B->C, B->HW, rt_f32(B->w), rt_f32(B->b), B->eps, B->momentum,
                                        rt_f32(B->rm), rt_f32(B->rv), rt_i64(B->nbt), rt_f32(B->y),
                                        rt_f32(B->smean), rt_f32(B->sinv));
}

static inline rt_status rtn_bn_backward(rtn_bn *B, rt_ctx *ctx, const float *dy, const float *x, float beta,
                                        int want_dx)
{
    if (beta == 0.0f) {
        rtn_zero(B->gw);
        rtn_zero(B->gb);
    }
    float *dx = NULL;
    if (want_dx) {
        int64_t s[4] = {B->N, B->C, B->H, B->W};
        if (api->tensor_ensure(ctx, &B->dx, RT_DTYPE_F32, B->H ? 4 : 2, s)) return RT_STATUS_ERR_NOMEM;
        if (!B->train) rtn_zero_dx(B->dx); /* train: the _set kernel overwrites */
        dx = rt_f32(B->dx);
    }
    if (B->train)
        api->batchnorm_train_backward_set(x, dy, B->N, B->C, B->HW, rt_f32(B->w), rt_f32(B->smean),
                                          rt_f32(B->sinv), dx, rt_f32(B->gw), rt_f32(B->gb));
    else
        api->batchnorm_eval_backward(x, dy, B->N, B->C, B->HW, rt_f32(B->w), B->eps, rt_f32(B->rm),
                                     rt_f32(B->rv), dx, rt_f32(B->gw), rt_f32(B->gb));
    return RT_STATUS_OK;
}

static inline void rtn_bn_params(rtn_bn *B, rtn_params *p)
{
    rtn_param(p, B->names[0], B->w, B->gw, RT_ROLE_TRAINABLE);
    rtn_param(p, B->names[1], B->b, B->gb, RT_ROLE_TRAINABLE);
    rtn_param(p, B->names[2], B->rm, NULL, RT_ROLE_BUFFER);
    rtn_param(p, B->names[3], B->rv, NULL, RT_ROLE_BUFFER);
    rtn_param(p, B->names[4], B->nbt, NULL, RT_ROLE_BUFFER);
}

static inline void rtn_bn_zero(rtn_bn *B)
{
    rtn_zero(B->gw);
    rtn_zero(B->gb);
}

/* --------------------------------------------------------------- pooling */

/* Max or average pooling (count_include_pad, PyTorch's default), or
 * global average pooling (AdaptiveAvgPool2d(1): y [N, C, 1, 1]). */
typedef enum rtn_pool_kind { RTN_POOL_MAX, RTN_POOL_AVG, RTN_POOL_GLOBAL } rtn_pool_kind;

typedef struct rtn_pool2d {
    rtn_pool_kind kind;
    rt_pool2d_geom g; /* N set by each forward; global: KH = H, KW = W */
    rt_tensor *y, *dx, *argmax;
} rtn_pool2d;

static inline rt_status rtn_pool2d_init(rtn_pool2d *P, rt_ctx *ctx, rtn_pool_kind kind, int64_t C, int64_t H,
                                        int64_t W, int64_t k, int64_t stride, int64_t pad)
{
    P->kind = kind;
    if (kind == RTN_POOL_GLOBAL) {
        P->g = (rt_pool2d_geom){.N = 1, .C = C, .H = H, .W = W, .KH = H, .KW = W, .stride_h = 1, .stride_w = 1,
                                .H_out = 1, .W_out = 1};
        return RT_STATUS_OK;
    }
    P->g = (rt_pool2d_geom){.N = 1, .C = C, .H = H, .W = W, .KH = k, .KW = k, .stride_h = stride,
                            .stride_w = stride, .pad_h = pad, .pad_w = pad};
    return api->pool2d_geom_check(ctx, &P->g, kind == RTN_POOL_MAX ? "max_pool2d" : "avg_pool2d");
}

static inline void rtn_pool2d_free(rtn_pool2d *P)
{
    api->tensor_release(P->y);
    api->tensor_release(P->dx);
    api->tensor_release(P->argmax);
}

static inline rt_status rtn_pool2d_forward(rtn_pool2d *P, rt_ctx *ctx, const float *x, int64_t N)
{
    P->g.N = N;
    int64_t s[4] = {N, P->g.C, P->g.H_out, P->g.W_out};
    if (api->tensor_ensure(ctx, &P->y, RT_DTYPE_F32, 4, s)) return RT_STATUS_ERR_NOMEM;
    if (P->kind == RTN_POOL_MAX) {
        if (api->tensor_ensure(ctx, &P->argmax, RT_DTYPE_I32, 4, s)) return RT_STATUS_ERR_NOMEM;
        api->maxpool2d_forward(&P->g, x, rt_f32(P->y), rt_i32(P->argmax));
    } else if (P->kind == RTN_POOL_AVG) {
        api->avgpool2d_forward(&P->g, 1, x, rt_f32(P->y));
    } else {
        api->global_avgpool_forward(x, N, P->g.C, P->g.H * P->g.W, rt_f32(P->y));
    }
    return RT_STATUS_OK;
}

/* P->dx = the input gradient from dy. */
static inline rt_status rtn_pool2d_backward(rtn_pool2d *P, rt_ctx *ctx, const float *dy)
{
    int64_t s[4] = {P->g.N, P->g.C, P->g.H, P->g.W};
    if (api->tensor_ensure(ctx, &P->dx, RT_DTYPE_F32, 4, s)) return RT_STATUS_ERR_NOMEM;
    if (P->kind == RTN_POOL_MAX) {
        api->maxpool2d_backward_set(&P->g, dy, rt_i32(P->argmax), rt_f32(P->dx)); /* overwrites */
        return RT_STATUS_OK;
    }
    rtn_zero_dx(P->dx);
    if (P->kind == RTN_POOL_AVG) api->avgpool2d_backward(&P->g, 1, dy, rt_f32(P->dx));
    else api->global_avgpool_backward(dy, P->g.N, P->g.C, P->g.H * P->g.W, rt_f32(P->dx));
    return RT_STATUS_OK;
}

/* ------------------------------------------------------------------ relu */

/* *y = max(x, 0) (a tensor of x's shape, [N, ...]); y may not alias x.
 * On the kernels' threads (rt_api.relu_forward, ABI 2.2). */
static inline rt_status rtn_relu_forward(rt_tensor **y, rt_ctx *ctx, const float *x, int ndim, const int64_t *shape)
{
    if (api->tensor_ensure(ctx, y, RT_DTYPE_F32, ndim, shape)) return RT_STATUS_ERR_NOMEM;
    api->relu_forward(x, rt_f32(*y), rt_numel(*y));
    return RT_STATUS_OK;
}

/* d *= (y > 0), in place: the input gradient of a relu with output y. */
static inline void rtn_relu_backward(float *d, const float *y, int64_t n) { api->relu_backward(d, y, n); }

#endif /* RT_NN_CONV_H */
