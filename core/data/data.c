/*
 * data.c -- in-memory datasets: x [N, ...] f32 and optional labels y [N]
 * i32, and the batch gather on the training hot path.
 */
#include "retort.h"

#include <stdlib.h>
#include <string.h>

struct rt_dataset {
    rt_tensor *x; /* contiguous, [N, ...] f32; a reference we hold */
    rt_tensor *y; /* contiguous, [N] i32, or NULL */
    int64_t n;
};

/* A contiguous tensor with t's contents: t itself retained, or a clone
 * (so gather can copy each row with one memcpy). */
static rt_tensor *contiguous_ref(rt_ctx *ctx, rt_tensor *t)
{
    if (rt_is_contiguous(t)) {
        rt_tensor_retain(t);
        return t;
    }
    return rt_tensor_clone(ctx, t);
}

rt_dataset *rt_dataset_new(rt_ctx *ctx, rt_tensor *x, rt_tensor *y)
{
    char a[64], b[64];
    if (!x) {
        rt_error(ctx, RT_STATUS_ERR_ARG, "dataset: x is missing");
        return NULL;
    }
    if ((x->dtype != RT_DTYPE_F32 && x->dtype != RT_DTYPE_I32) || x->ndim < 1) {
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "dataset: x must be f32 or i32 (token ids) [N, ...], got %s %s",
                 rt_dtype_name(x->dtype),
                 rt_tensor_shape_str(x, a, sizeof a));
        return NULL;
    }
    /* y [N] class ids, or [N, ...] per-position labels (next tokens). */
    if (y && (y->dtype != RT_DTYPE_I32 || y->ndim < 1 || y->shape[0] != x->shape[0])) {
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "dataset: x %s needs y i32 [%lld] (or [%lld, ...] per position), got %s %s",
                 rt_tensor_shape_str(x, a, sizeof a), (long long)x->shape[0], (long long)x->shape[0],
                 rt_dtype_name(y->dtype),
                 rt_tensor_shape_str(y, b, sizeof b));
        return NULL;
    }
    rt_dataset *d = calloc(1, sizeof *d);
    if (!d) {
        rt_error(ctx, RT_STATUS_ERR_NOMEM, "dataset: out of memory");
        return NULL;
    }
    d->n = x->shape[0];
    d->x = contiguous_ref(ctx, x);
    d->y = y ? contiguous_ref(ctx, y) : NULL;
    if (!d->x || (y && !d->y)) {
        rt_dataset_free(d);
        return NULL;
    }
    /* Data enters finite: a NaN or inf sample is named here, not found as
     * a NaN loss some steps later.  One vectorised pass. */
    int64_t bad = rt_check_finite(rt_f32(d->x), rt_numel(d->x)), per = rt_row_size(d->x);
    if (bad >= 0) {
        rt_error(ctx, RT_STATUS_ERR_NUMERIC, "dataset: x %s: sample %lld (0-based), value %lld is %s",
                 rt_tensor_shape_str(x, a, sizeof a), (long long)(bad / per), (long long)(bad % per),
                 rt_nonfinite_name(rt_f32(d->x)[bad]));
        rt_dataset_free(d);
        return NULL;
    }
    return d;
}

void rt_dataset_free(rt_dataset *d)
{
    if (!d) return;
    rt_tensor_release(d->x);
    rt_tensor_release(d->y);
    free(d);
}

int64_t rt_dataset_size(const rt_dataset *d) { return d->n; }
rt_tensor *rt_dataset_x(const rt_dataset *d) { return d->x; }
rt_tensor *rt_dataset_y(const rt_dataset *d) { return d->y; }

rt_status rt_dataset_gather(const rt_dataset *d, rt_ctx *ctx, const int64_t *idx, int64_t n, rt_tensor *xb,
                            rt_tensor *yb)
{
    char a[64], b[64];
    int64_t row = rt_row_size(d->x);
    if (n < 0 || (n > 0 && !idx) || !xb)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "dataset gather: %lld rows, idx %s, xb %s", (long long)n,
                        idx ? "given" : "NULL", xb ? "given" : "NULL");
    if (xb->dtype != d->x->dtype || xb->ndim < 1 || !rt_is_contiguous(xb) || xb->shape[0] < n ||
        rt_row_size(xb) != row)
        return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                        "dataset gather: %lld rows of x %s need a contiguous %s batch of at least %lld rows of "
                        "%lld, got %s %s",
                        (long long)n, rt_tensor_shape_str(d->x, a, sizeof a), rt_dtype_name(d->x->dtype),
                        (long long)n, (long long)row,
                        rt_dtype_name(xb->dtype), rt_tensor_shape_str(xb, b, sizeof b));
    if (yb) {
        if (!d->y) return rt_error(ctx, RT_STATUS_ERR_ARG, "dataset gather: labels asked of a dataset without y");
        if (yb->dtype != RT_DTYPE_I32 || yb->ndim != d->y->ndim || !rt_is_contiguous(yb) || yb->shape[0] < n ||
            rt_row_size(yb) != rt_row_size(d->y))
            return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                            "dataset gather: %lld labels need a contiguous i32 batch [>= %lld] of rows of %lld, got %s %s",
                            (long long)n, (long long)n, (long long)rt_row_size(d->y), rt_dtype_name(yb->dtype),
                            rt_tensor_shape_str(yb, b, sizeof b));
    }
    /* Every index is checked before any row is written. */
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= d->n)
            return rt_error(ctx, RT_STATUS_ERR_ARG, "dataset gather: index %lld (position %lld) is outside [0, %lld)",
                            (long long)idx[i], (long long)i, (long long)d->n);
    /* f32 or i32: rows of 4-byte elements either way */
    const char *xs = d->x->data;
    char *xd = xb->data;
    size_t rb = (size_t)row * rt_dtype_size(d->x->dtype);
    for (int64_t i = 0; i < n; i++) memcpy(xd + (size_t)i * rb, xs + (size_t)idx[i] * rb, rb);
    if (yb) {
        const int32_t *ys = rt_i32(d->y);
        int32_t *yd = rt_i32(yb);
        int64_t yr = rt_row_size(d->y);
        for (int64_t i = 0; i < n; i++) memcpy(yd + i * yr, ys + idx[i] * yr, sizeof *yd * (size_t)yr);
    }
    return RT_STATUS_OK;
}
