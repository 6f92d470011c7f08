/*
 * tensor_math.c -- tensor arithmetic on rt_tensor: elementwise binary
 * operations with broadcasting, unary math, softmax/log-softmax with a
 * temperature along the last dimension, reductions along a dimension,
 * gather by label and one-hot.  Moved out of the Lua binding (issue 9: the
 * core does the work, the binding checks its arguments and converts); the
 * loops and the order of the arithmetic are those the binding ran, so
 * results are bit-identical.
 *
 * Contracts (declared in retort.h):
 *  - f32 only (labels are i32 class ids, 0-based data values); any strides
 *    (views) are accepted as inputs; out is preallocated by the caller
 *    with the shape the op gives (rt_broadcast_shape, rt_reduce_shape),
 *    and may alias the input of an elementwise op (in place).
 *  - Broadcasting follows NumPy/PyTorch: shapes aligned on the right, a
 *    dimension of 1 (or a missing one) stretches.
 *  - what names the operation in messages ("tensor:add"); errors go into
 *    ctx and nothing is written.
 * Speed is not the point (a loss is [N, C] with N ~ 128): one generic
 * strided loop serves every shape, and it is its own plain reference.
 */
#include "retort.h"

#include <math.h>
#include <string.h>

/* An operand of the strided loop: base pointer and per-dimension strides
 * (elements; 0 where the operand is broadcast). */
typedef struct operand {
    float *p;
    int64_t st[RT_MAX_DIMS];
} operand;

static float apply(rt_binop o, float a, float b)
{
    switch (o) {
    case RT_OP_ADD: return a + b;
    case RT_OP_SUB: return a - b;
    case RT_OP_MUL: return a * b;
    default: return a / b;
    }
}

/* Strides of t viewed with the broadcast shape [nd] (right-aligned). */
static void bstrides(const rt_tensor *t, int nd, const int64_t *shape, int64_t *st)
{
    for (int d = 0; d < nd; d++) {
        int td = d - (nd - t->ndim);
        st[d] = (td < 0 || (t->shape[td] == 1 && shape[d] != 1)) ? 0 : t->stride[td];
    }
}

/* out = a (op) b elementwise over shape[nd]; a NULL means the scalar av,
 * b NULL the scalar bv.  out may alias a (in place). */
static void loop2(int nd, const int64_t *shape, operand *out, const operand *a, float av, const operand *b, float bv,
                  rt_binop o)
{
    int64_t n = 1, idx[RT_MAX_DIMS] = {0}, io = 0, ia = 0, ib = 0;
    for (int d = 0; d < nd; d++) n *= shape[d];
    for (int64_t k = 0; k < n; k++) {
        out->p[io] = apply(o, a ? a->p[ia] : av, b ? b->p[ib] : bv);
        for (int d = nd - 1; d >= 0; d--) {
            io += out->st[d];
            if (a) ia += a->st[d];
            if (b) ib += b->st[d];
            if (++idx[d] < shape[d]) break;
            io -= out->st[d] * shape[d];
            if (a) ia -= a->st[d] * shape[d];
            if (b) ib -= b->st[d] * shape[d];
            idx[d] = 0;
        }
    }
}

static rt_status need_f32(rt_ctx *ctx, const rt_tensor *t, const char *what)
{
    if (t->dtype != RT_DTYPE_F32)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "%s needs f32 tensors, got %s", what, rt_dtype_name(t->dtype));
    return RT_STATUS_OK;
}

static int same_shape(const rt_tensor *t, int nd, const int64_t *shape)
{
    if (t->ndim != nd) return 0;
    for (int d = 0; d < nd; d++)
        if (t->shape[d] != shape[d]) return 0;
    return 1;
}

rt_status rt_broadcast_shape(rt_ctx *ctx, const rt_tensor *a, const rt_tensor *b, int64_t *shape, int *nd,
                             const char *what)
{
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int d = 0; d < n; d++) {
        int da = d - (n - a->ndim), db = d - (n - b->ndim);
        int64_t x = da < 0 ? 1 : a->shape[da], y = db < 0 ? 1 : b->shape[db];
        if (x != y && x != 1 && y != 1) {
            char s1[64], s2[64];
            return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s: shapes %s and %s do not broadcast", what,
                            rt_tensor_shape_str(a, s1, sizeof s1), rt_tensor_shape_str(b, s2, sizeof s2));
        }
        shape[d] = x == 1 ? y : x;
    }
    *nd = n;
    return RT_STATUS_OK;
}

rt_status rt_tensor_binary(rt_ctx *ctx, rt_binop o, rt_tensor *out, const rt_tensor *a, float av,
                           const rt_tensor *b, float bv, const char *what)
{
    if (!a && !b) return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: needs a tensor", what);
    if ((a && need_f32(ctx, a, what)) || (b && need_f32(ctx, b, what)) || need_f32(ctx, out, what))
        return rt_ctx_status(ctx);
    int64_t shape[RT_MAX_DIMS];
    int nd;
    const rt_tensor *one = a ? a : b;
    nd = one->ndim;
    memcpy(shape, one->shape, sizeof shape);
    if (a && b && rt_broadcast_shape(ctx, a, b, shape, &nd, what)) return rt_ctx_status(ctx);
    if (!same_shape(out, nd, shape)) {
        char s1[64], s2[64];
        if (out == a)
            return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s: %s cannot take the broadcast of %s in place", what,
                            rt_tensor_shape_str(a, s1, sizeof s1), rt_tensor_shape_str(b, s2, sizeof s2));
        return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s: the result is %s, not the broadcast shape", what,
                        rt_tensor_shape_str(out, s1, sizeof s1));
    }
    operand r = {rt_f32(out), {0}}, x = {a ? rt_f32(a) : NULL, {0}}, y = {b ? rt_f32(b) : NULL, {0}};
    bstrides(out, nd, shape, r.st);
    if (a) bstrides(a, nd, shape, x.st);
    if (b) bstrides(b, nd, shape, y.st);
    loop2(nd, shape, &r, a ? &x : NULL, av, b ? &y : NULL, bv, o);
    return RT_STATUS_OK;
}

static float unary_apply(rt_unop o, float x, double p, double lo, double hi)
{
    switch (o) {
    case RT_OP_EXP: return expf(x);
    case RT_OP_LOG: return logf(x);
    case RT_OP_NEG: return -x;
    case RT_OP_ABS: return fabsf(x);
    case RT_OP_SQRT: return sqrtf(x);
    case RT_OP_SQUARE: return x * x;
    case RT_OP_POW: return (float)pow(x, p);
    default: return x < lo ? (float)lo : x > hi ? (float)hi : x;
    }
}

rt_status rt_tensor_unary(rt_ctx *ctx, rt_unop o, rt_tensor *out, const rt_tensor *a, double p, double lo, double hi,
                          const char *what)
{
    if (need_f32(ctx, a, what) || need_f32(ctx, out, what)) return rt_ctx_status(ctx);
    if (o == RT_OP_CLAMP && lo > hi) return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: min %.14g > max %.14g", what, lo, hi);
    if (!same_shape(out, a->ndim, a->shape)) {
        char s1[64], s2[64];
        return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s: the result is %s, the input %s", what,
                        rt_tensor_shape_str(out, s1, sizeof s1), rt_tensor_shape_str(a, s2, sizeof s2));
    }
    int64_t n = rt_numel(a), idx[RT_MAX_DIMS] = {0}, ia = 0, io = 0;
    const float *pa = rt_f32(a);
    float *po = rt_f32(out);
    for (int64_t k = 0; k < n; k++) {
        po[io] = unary_apply(o, pa[ia], p, lo, hi);
        for (int d = a->ndim - 1; d >= 0; d--) {
            ia += a->stride[d], io += out->stride[d];
            if (++idx[d] < a->shape[d]) break;
            ia -= a->stride[d] * a->shape[d], io -= out->stride[d] * a->shape[d];
            idx[d] = 0;
        }
    }
    return RT_STATUS_OK;
}

rt_status rt_tensor_softmax(rt_ctx *ctx, rt_tensor *out, const rt_tensor *a, double T, int logp, const char *what)
{
    if (need_f32(ctx, a, what) || need_f32(ctx, out, what)) return rt_ctx_status(ctx);
    if (!(T > 0) || !isfinite(T))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: temperature must be finite and > 0, got %.14g", what, T);
    if (a->ndim < 1) return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s needs at least one dimension", what);
    if (!same_shape(out, a->ndim, a->shape) || !rt_is_contiguous(out))
        return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s: the result must be contiguous of the input's shape", what);
    rt_tensor *c = NULL;
    if (!rt_is_contiguous(a) && !(c = rt_tensor_clone(ctx, a))) return rt_ctx_status(ctx);
    int64_t C = a->shape[a->ndim - 1], N = C ? rt_numel(a) / C : 0;
    if (N && C) (logp ? rt_log_softmax : rt_softmax)(rt_f32(c ? c : a), rt_f32(out), N, C, (float)T);
    rt_tensor_release(c);
    return RT_STATUS_OK;
}

rt_status rt_tensor_reduce_all(rt_ctx *ctx, rt_reduce o, const rt_tensor *a, double *out, const char *what)
{
    int64_t n = rt_numel(a);
    double s = o == RT_REDUCE_MAX ? -INFINITY : 0;
    for (int64_t i = 0; i < n; i++) {
        double v = rt_tensor_get(a, i);
        if (o == RT_REDUCE_MAX) s = v > s || isnan(v) ? v : s;
        else s += v;
    }
    if (o == RT_REDUCE_MEAN) s = n ? s / (double)n : NAN;
    if (o == RT_REDUCE_MAX && n == 0) return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s of an empty tensor", what);
    *out = s;
    return RT_STATUS_OK;
}

rt_status rt_reduce_shape(rt_ctx *ctx, rt_reduce o, const rt_tensor *a, int dim, int keep, int64_t *shape, int *nd,
                          const char *what)
{
    if (dim < 0 || dim >= a->ndim)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: dimension %d out of range for %d dimensions", what, dim + 1,
                        a->ndim);
    if (o == RT_REDUCE_MAX && a->shape[dim] == 0)
        return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s over an empty dimension", what);
    int n = 0;
    for (int d = 0; d < a->ndim; d++)
        if (d != dim) shape[n++] = a->shape[d];
        else if (keep) shape[n++] = 1;
    *nd = n;
    return RT_STATUS_OK;
}

rt_status rt_tensor_reduce(rt_ctx *ctx, rt_reduce o, rt_tensor *out, const rt_tensor *a, int dim, int keep,
                           const char *what)
{
    int64_t shape[RT_MAX_DIMS];
    int nd;
    if (need_f32(ctx, a, what) || need_f32(ctx, out, what) || rt_reduce_shape(ctx, o, a, dim, keep, shape, &nd, what))
        return rt_ctx_status(ctx);
    if (!same_shape(out, nd, shape) || !rt_is_contiguous(out))
        return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s: the result must be contiguous of the reduced shape", what);
    rt_tensor *c = NULL;
    if (!rt_is_contiguous(a) && !(c = rt_tensor_clone(ctx, a))) return rt_ctx_status(ctx);
    int64_t outer = 1, D = a->shape[dim], inner = 1;
    for (int d = 0; d < dim; d++) outer *= a->shape[d];
    for (int d = dim + 1; d < a->ndim; d++) inner *= a->shape[d];
    const float *x = rt_f32(c ? c : a);
    float *y = rt_f32(out);
    for (int64_t i = 0; i < outer; i++)
        for (int64_t k = 0; k < inner; k++) {
            const float *p = x + i * D * inner + k;
            double s = o == RT_REDUCE_MAX ? p[0] : 0;
            for (int64_t j = 0; j < D; j++) {
                double v = p[j * inner];
                if (o == RT_REDUCE_MAX) s = v > s || isnan(v) ? v : s;
                else s += v;
            }
            if (o == RT_REDUCE_MEAN) s = D ? s / (double)D : NAN;
            y[i * inner + k] = (float)s;
        }
    rt_tensor_release(c);
    return RT_STATUS_OK;
}

rt_status rt_labels_check(rt_ctx *ctx, const rt_tensor *y, int64_t N, int64_t C, const char *what)
{
    char s[64];
    if (y->dtype != RT_DTYPE_I32 || y->ndim != 1 || (N >= 0 && y->shape[0] != N))
        return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s: labels must be i32 [%d], got %s %s", what,
                        (int)(N >= 0 ? N : y->shape[0]), rt_dtype_name(y->dtype), rt_tensor_shape_str(y, s, sizeof s));
    for (int64_t n = 0; n < y->shape[0]; n++) {
        double v = rt_tensor_get(y, n);
        if (v < 0 || v >= (double)C)
            return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: label %d at row %d is outside [0, %d)", what, (int)v,
                            (int)n + 1, (int)C);
    }
    return RT_STATUS_OK;
}

rt_status rt_tensor_gather_labels(rt_ctx *ctx, rt_tensor *out, const rt_tensor *a, const rt_tensor *y,
                                  const char *what)
{
    char s[64];
    if (need_f32(ctx, a, what) || need_f32(ctx, out, what)) return rt_ctx_status(ctx);
    if (a->ndim != 2) return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s needs [N, C], got %s", what,
                                      rt_tensor_shape_str(a, s, sizeof s));
    if (rt_labels_check(ctx, y, a->shape[0], a->shape[1], what)) return rt_ctx_status(ctx);
    if (out->ndim != 1 || out->shape[0] != a->shape[0] || !rt_is_contiguous(out))
        return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s: the result must be contiguous [%lld]", what,
                        (long long)a->shape[0]);
    for (int64_t n = 0; n < a->shape[0]; n++) {
        int64_t c = (int64_t)rt_tensor_get(y, n);
        rt_f32(out)[n] = rt_f32(a)[n * a->stride[0] + c * a->stride[1]];
    }
    return RT_STATUS_OK;
}

rt_status rt_tensor_one_hot(rt_ctx *ctx, rt_tensor *out, const rt_tensor *y, int64_t C, const char *what)
{
    if (C < 1) return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: number of classes must be >= 1", what);
    if (rt_labels_check(ctx, y, -1, C, what) || need_f32(ctx, out, what)) return rt_ctx_status(ctx);
    int64_t shape[2] = {y->shape[0], C};
    if (!same_shape(out, 2, shape) || !rt_is_contiguous(out))
        return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s: the result must be contiguous [%lld, %lld]", what,
                        (long long)shape[0], (long long)C);
    memset(out->data, 0, sizeof(float) * (size_t)(shape[0] * C));
    for (int64_t n = 0; n < shape[0]; n++) rt_f32(out)[n * C + (int64_t)rt_tensor_get(y, n)] = 1;
    return RT_STATUS_OK;
}
