/*
 * tensor.c -- tensors: a fixed-size header (rt_plugin.h) over refcounted,
 * 64-byte aligned storage shared by views.
 */
#include "ctx.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct rt_storage {
    int refcount;
    size_t nbytes;
    void *data; /* aligned_alloc(64, ...) */
};

size_t rt_dtype_size(rt_dtype d)
{
    switch (d) {
    case RT_DTYPE_F32: return 4;
    case RT_DTYPE_I32: return 4;
    case RT_DTYPE_I64: return 8;
    default: return 0; /* bf16, f16: reserved, not created */
    }
}

const char *rt_dtype_name(rt_dtype d)
{
    switch (d) {
    case RT_DTYPE_F32: return "f32";
    case RT_DTYPE_I32: return "i32";
    case RT_DTYPE_I64: return "i64";
    case RT_DTYPE_BF16: return "bf16";
    case RT_DTYPE_F16: return "f16";
    }
    return "?";
}

static rt_storage *storage_new(rt_ctx *ctx, size_t nbytes)
{
    rt_storage *s = malloc(sizeof *s);
    /* aligned_alloc wants a multiple of the alignment; never 0 bytes. */
    size_t rounded = (nbytes + 63) & ~(size_t)63;
    if (rounded < nbytes) rounded = 0; /* overflow: caught below */
    void *d = (s && rounded) ? aligned_alloc(64, rounded) : (s ? aligned_alloc(64, 64) : NULL);
    if (!s || !d || (nbytes && !rounded)) {
        free(s);
        free(d);
        rt_error(ctx, RT_STATUS_ERR_NOMEM, "out of memory allocating a tensor of %zu bytes", nbytes);
        return NULL;
    }
    memset(d, 0, rounded ? rounded : 64);
    s->refcount = 1;
    s->nbytes = nbytes;
    s->data = d;
    return s;
}

static void storage_release(rt_storage *s)
{
    if (s && --s->refcount == 0) {
        free(s->data);
        free(s);
    }
}

static int dtype_ok(rt_dtype d) { return d == RT_DTYPE_F32 || d == RT_DTYPE_I32 || d == RT_DTYPE_I64; }

/* Checks ndim and dims; *numel = product.  Error message in ctx. */
static rt_status check_shape(rt_ctx *ctx, int ndim, const int64_t *shape, int64_t *numel)
{
    if (ndim < 0 || ndim > RT_MAX_DIMS)
        return rt_error(ctx, RT_STATUS_ERR_SHAPE, "tensor: %d dimensions (at most %d)", ndim, RT_MAX_DIMS);
    /* The product of the non-zero dims must fit: strides are products of
     * trailing dims, and a zero dim must not hide an overflow among them. */
    int64_t n = 1;
    int zero = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return rt_error(ctx, RT_STATUS_ERR_SHAPE, "tensor: dimension %d is negative (%lld)", i,
                            (long long)shape[i]);
        if (shape[i] == 0) zero = 1;
        else if (__builtin_mul_overflow(n, shape[i], &n))
            return rt_error(ctx, RT_STATUS_ERR_SHAPE, "tensor: element count overflows");
    }
    *numel = zero ? 0 : n;
    return RT_STATUS_OK;
}

rt_tensor *rt_tensor_new(rt_ctx *ctx, rt_dtype dtype, int ndim, const int64_t *shape)
{
    int64_t n;
    if (!dtype_ok(dtype)) {
        rt_error(ctx, RT_STATUS_ERR_ARG, "tensor: unknown dtype %d", (int)dtype);
        return NULL;
    }
    if (check_shape(ctx, ndim, shape, &n)) return NULL;
    size_t bytes;
    if (__builtin_mul_overflow((size_t)n, rt_dtype_size(dtype), &bytes)) {
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "tensor: byte size overflows");
        return NULL;
    }
    if (ctx && ctx->budget >= 0) {
        /* Refused before any allocation: a model's size comes from options
         * or a file's metadata, and must not reach malloc unchecked. */
        if (bytes > (uint64_t)ctx->budget) {
            char b[128] = "[";
            for (int i = 0; i < ndim; i++)
                snprintf(b + strlen(b), sizeof b - strlen(b), i ? ", %lld" : "%lld", (long long)shape[i]);
            snprintf(b + strlen(b), sizeof b - strlen(b), "]");
            rt_error(ctx, RT_STATUS_ERR_ARG,
                     "model size: tensor %s %s of %zu bytes is more than the %lld bytes left under %s", b,
                     rt_dtype_name(dtype), bytes, (long long)ctx->budget, ctx->budget_why);
            return NULL;
        }
        ctx->budget -= (int64_t)bytes;
    }
    rt_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        rt_error(ctx, RT_STATUS_ERR_NOMEM, "out of memory allocating a tensor header");
        return NULL;
    }
    t->storage = storage_new(ctx, bytes);
    if (!t->storage) {
        free(t);
        return NULL;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        t->stride[i] = s;
        s *= shape[i];
    }
    t->data = t->storage->data;
    t->refcount = 1;
    return t;
}

rt_tensor *rt_tensor_from(rt_ctx *ctx, rt_dtype dtype, int ndim, const int64_t *shape, const void *data)
{
    rt_tensor *t = rt_tensor_new(ctx, dtype, ndim, shape);
    if (t && data) memcpy(t->data, data, t->storage->nbytes);
    return t;
}

void rt_tensor_retain(rt_tensor *t)
{
    if (t) t->refcount++;
}

void rt_tensor_release(rt_tensor *t)
{
    if (!t) return;
    assert(t->refcount > 0);
    if (--t->refcount == 0) {
        storage_release(t->storage);
        free(t);
    }
}

/* Lowest and highest element offset (from storage base) a layout reaches. */
static int layout_in_bounds(const rt_storage *s, rt_dtype dtype, int ndim, const int64_t *shape,
                            const int64_t *stride, int64_t offset)
{
    int64_t lo = offset, hi = offset;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == 0) return offset >= 0; /* empty: reaches nothing */
        int64_t span;
        if (__builtin_mul_overflow(shape[i] - 1, stride[i], &span)) return 0;
        if (span < 0 ? __builtin_add_overflow(lo, span, &lo) : __builtin_add_overflow(hi, span, &hi)) return 0;
    }
    int64_t cap = (int64_t)(s->nbytes / rt_dtype_size(dtype));
    return lo >= 0 && hi < cap;
}

rt_tensor *rt_tensor_view(rt_ctx *ctx, rt_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                          int64_t offset)
{
    int64_t n;
    if (check_shape(ctx, ndim, shape, &n)) return NULL;
    int64_t off;
    if (__builtin_add_overflow(t->offset, offset, &off)) {
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "tensor view: offset %lld overflows", (long long)offset);
        return NULL;
    }
    int64_t total = 1;
    for (int i = 0; i < ndim; i++) total *= shape[i];
    if (total > 0 && !layout_in_bounds(t->storage, t->dtype, ndim, shape, stride, off)) {
        char b[64];
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "tensor view: layout reaches outside the storage of a %s tensor",
                 rt_tensor_shape_str(t, b, sizeof b));
        return NULL;
    }
    rt_tensor *v = calloc(1, sizeof *v);
    if (!v) {
        rt_error(ctx, RT_STATUS_ERR_NOMEM, "out of memory allocating a tensor view");
        return NULL;
    }
    v->dtype = t->dtype;
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        v->shape[i] = shape[i];
        v->stride[i] = stride[i];
    }
    v->offset = off;
    v->storage = t->storage;
    t->storage->refcount++;
    v->data = (char *)t->storage->data + off * (int64_t)rt_dtype_size(t->dtype);
    v->refcount = 1;
    return v;
}

rt_tensor *rt_tensor_narrow(rt_ctx *ctx, rt_tensor *t, int dim, int64_t start, int64_t len)
{
    if (dim < 0 || dim >= t->ndim || start < 0 || len < 0 || start > t->shape[dim] ||
        len > t->shape[dim] - start) {
        char b[64];
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "tensor narrow: %lld elements from %lld of dimension %d are outside %s",
                 (long long)len, (long long)start, dim, rt_tensor_shape_str(t, b, sizeof b));
        return NULL;
    }
    int64_t shape[RT_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[dim] = len;
    return rt_tensor_view(ctx, t, t->ndim, shape, t->stride, start * t->stride[dim]);
}

rt_tensor *rt_tensor_reshape(rt_ctx *ctx, rt_tensor *t, int ndim, const int64_t *shape)
{
    char b[64];
    if (!rt_is_contiguous(t)) {
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "tensor reshape: %s is not contiguous", rt_tensor_shape_str(t, b, sizeof b));
        return NULL;
    }
    if (ndim < 0 || ndim > RT_MAX_DIMS) {
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "tensor reshape: %d dimensions (at most %d)", ndim, RT_MAX_DIMS);
        return NULL;
    }
    int64_t s[RT_MAX_DIMS], known = 1, total = rt_numel(t);
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1 && infer < 0) infer = i;
        else if (s[i] < 0) {
            rt_error(ctx, RT_STATUS_ERR_SHAPE, "tensor reshape: bad dimension %lld", (long long)s[i]);
            return NULL;
        } else if (__builtin_mul_overflow(known, s[i], &known)) {
            rt_error(ctx, RT_STATUS_ERR_SHAPE, "tensor reshape: element count overflows");
            return NULL;
        }
    }
    if (infer >= 0) {
        if (known == 0 || total % known) {
            rt_error(ctx, RT_STATUS_ERR_SHAPE, "tensor reshape: cannot infer a dimension of %s", rt_tensor_shape_str(t, b, sizeof b));
            return NULL;
        }
        s[infer] = total / known;
        known = total;
    }
    if (known != total) {
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "tensor reshape: %s has %lld elements, the new shape %lld",
                 rt_tensor_shape_str(t, b, sizeof b), (long long)total, (long long)known);
        return NULL;
    }
    int64_t n;
    if (check_shape(ctx, ndim, s, &n)) return NULL; /* bounds the strides below */
    int64_t st[RT_MAX_DIMS], acc = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        st[i] = acc;
        acc *= s[i];
    }
    return rt_tensor_view(ctx, t, ndim, s, st, 0);
}

/* Calls fn(dst_offset, src_offset) for every element in row-major order of
 * the logical shape; offsets in elements from each tensor's data. */
#define FOR_EACH_INDEX(t, body)                                                \
    do {                                                                       \
        int64_t idx_[RT_MAX_DIMS] = {0};                                       \
        int64_t n_ = rt_numel(t);                                              \
        for (int64_t k_ = 0; k_ < n_; k_++) {                                  \
            body;                                                              \
            for (int d_ = (t)->ndim - 1; d_ >= 0; d_--) {                      \
                if (++idx_[d_] < (t)->shape[d_]) break;                        \
                idx_[d_] = 0;                                                  \
            }                                                                  \
        }                                                                      \
    } while (0)

static int64_t offset_of(const rt_tensor *t, const int64_t *idx)
{
    int64_t o = 0;
    for (int d = 0; d < t->ndim; d++) o += idx[d] * t->stride[d];
    return o;
}

rt_status rt_tensor_copy(rt_ctx *ctx, rt_tensor *dst, const rt_tensor *src)
{
    if (dst->dtype != src->dtype || !rt_tensor_same_shape(dst, src)) {
        char a[64], b[64];
        return rt_error(ctx, RT_STATUS_ERR_SHAPE, "tensor copy: %s %s into %s %s", rt_dtype_name(src->dtype),
                        rt_tensor_shape_str(src, a, sizeof a), rt_dtype_name(dst->dtype),
                        rt_tensor_shape_str(dst, b, sizeof b));
    }
    if (rt_is_contiguous(dst) && rt_is_contiguous(src)) {
        memmove(dst->data, src->data, (size_t)rt_numel(src) * rt_dtype_size(src->dtype));
        return RT_STATUS_OK;
    }
    uint32_t *d = dst->data;
    const uint32_t *s = src->data; /* both dtypes are 4 bytes */
    FOR_EACH_INDEX(src, d[offset_of(dst, idx_)] = s[offset_of(src, idx_)]);
    return RT_STATUS_OK;
}

rt_tensor *rt_tensor_clone(rt_ctx *ctx, const rt_tensor *t)
{
    rt_tensor *c = rt_tensor_new(ctx, t->dtype, t->ndim, t->shape);
    if (c && rt_tensor_copy(ctx, c, t)) {
        rt_tensor_release(c);
        return NULL;
    }
    return c;
}

/* double -> int32 without undefined behaviour: truncated toward zero,
 * saturated at the type's range, NaN -> 0.  (A plain cast of a value out
 * of range is undefined.)  Callers that take user values refuse
 * non-integers before this; it only keeps the core itself defined. */
static int32_t to_i32(double v)
{
    if (!(v == v)) return 0;
    if (v >= 2147483647.0) return INT32_MAX;
    if (v <= -2147483648.0) return INT32_MIN;
    return (int32_t)v;
}

/* The same for int64 (2^63 is exactly representable as a double). */
static int64_t to_i64(double v)
{
    if (!(v == v)) return 0;
    if (v >= 9223372036854775807.0) return INT64_MAX;
    if (v <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)v;
}

void rt_tensor_fill(rt_tensor *t, double v)
{
    /* Contiguous: one pass over the storage (the per-index walk below cost
     * 2 ms per step zeroing a [128, 32, 14, 14] tap buffer). */
    if (rt_is_contiguous(t)) {
        int64_t n = rt_numel(t);
        if (v == 0 && !signbit(v)) { /* +0 is all zero bits in every dtype */
            memset(t->data, 0, (size_t)n * rt_dtype_size(t->dtype));
        } else if (t->dtype == RT_DTYPE_F32) {
            float *d = t->data, f = (float)v;
            for (int64_t k = 0; k < n; k++) d[k] = f;
        } else if (t->dtype == RT_DTYPE_I64) {
            int64_t *d = t->data, x = to_i64(v);
            for (int64_t k = 0; k < n; k++) d[k] = x;
        } else {
            int32_t *d = t->data, x = to_i32(v);
            for (int64_t k = 0; k < n; k++) d[k] = x;
        }
        return;
    }
    if (t->dtype == RT_DTYPE_F32) {
        float *d = t->data, f = (float)v;
        FOR_EACH_INDEX(t, d[offset_of(t, idx_)] = f);
    } else if (t->dtype == RT_DTYPE_I64) {
        int64_t *d = t->data, x = to_i64(v);
        FOR_EACH_INDEX(t, d[offset_of(t, idx_)] = x);
    } else {
        int32_t *d = t->data, x = to_i32(v);
        FOR_EACH_INDEX(t, d[offset_of(t, idx_)] = x);
    }
}

int rt_tensor_same_shape(const rt_tensor *a, const rt_tensor *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

/* rt_tensor_ensure's reuse: t becomes a zeroed contiguous tensor of this
 * dtype and shape in its own storage, when nobody else can see the change
 * (one reference to t, one to its storage, no offset) and the storage
 * holds the bytes, but not more than 16 times them (memory a much smaller
 * shape would keep for nothing).  A layer's output that alternates between
 * the training batch, the last smaller batch and the evaluation batch then
 * keeps its largest storage, instead of freeing and faulting in a fresh
 * one at every switch (13% of a CNN run's time was clear_page under
 * rt_tensor_ensure).  Returns 1 when done, 0 to allocate instead. */
static int reshape_in_place(rt_tensor *t, rt_dtype dtype, int ndim, const int64_t *shape)
{
    int64_t n;
    size_t bytes;
    if (!t || t->refcount != 1 || !t->storage || t->storage->refcount != 1 || t->offset != 0 ||
        t->data != t->storage->data || !dtype_ok(dtype) || check_shape(NULL, ndim, shape, &n) ||
        __builtin_mul_overflow((size_t)n, rt_dtype_size(dtype), &bytes) || bytes > t->storage->nbytes ||
        t->storage->nbytes / 16 > bytes)
        return 0;
    t->dtype = dtype;
    t->ndim = ndim;
    int64_t st = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        t->stride[i] = st;
        st *= shape[i];
    }
    for (int i = ndim; i < RT_MAX_DIMS; i++) t->shape[i] = t->stride[i] = 0;
    memset(t->data, 0, bytes);
    return 1;
}

rt_status rt_tensor_ensure(rt_ctx *ctx, rt_tensor **slot, rt_dtype dtype, int ndim, const int64_t *shape)
{
    rt_tensor *t = *slot;
    if (t && t->dtype == dtype && t->ndim == ndim && rt_is_contiguous(t)) {
        int same = 1;
        for (int i = 0; i < ndim; i++) same &= t->shape[i] == shape[i];
        if (same) return RT_STATUS_OK;
    }
    if (reshape_in_place(t, dtype, ndim, shape)) return RT_STATUS_OK;
    rt_tensor *n = rt_tensor_new(ctx, dtype, ndim, shape);
    if (!n) return rt_ctx_status(ctx);
    rt_tensor_release(t);
    *slot = n;
    return RT_STATUS_OK;
}

const char *rt_tensor_shape_str(const rt_tensor *t, char *buf, size_t len)
{
    size_t o = 0;
    if (!len) return buf;
    buf[0] = 0;
    o += (size_t)snprintf(buf + o, len - o, "[");
    for (int i = 0; i < t->ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
    return buf;
}

static int64_t flat_offset(const rt_tensor *t, int64_t flat)
{
    int64_t o = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t n = t->shape[d];
        o += (flat % n) * t->stride[d];
        flat /= n;
    }
    return o;
}

double rt_tensor_get(const rt_tensor *t, int64_t flat)
{
    int64_t o = flat_offset(t, flat);
    if (t->dtype == RT_DTYPE_I64) return (double)((int64_t *)t->data)[o];
    return t->dtype == RT_DTYPE_F32 ? (double)((float *)t->data)[o] : (double)((int32_t *)t->data)[o];
}

void rt_tensor_set(rt_tensor *t, int64_t flat, double v)
{
    int64_t o = flat_offset(t, flat);
    if (t->dtype == RT_DTYPE_F32) ((float *)t->data)[o] = (float)v;
    else if (t->dtype == RT_DTYPE_I64) ((int64_t *)t->data)[o] = to_i64(v);
    else ((int32_t *)t->data)[o] = to_i32(v);
}

int rt_tensor_all_finite(const rt_tensor *t)
{
    if (t->dtype != RT_DTYPE_F32) return 1;
    const float *d = t->data;
    if (rt_is_contiguous(t)) return rt_check_finite(d, rt_numel(t)) < 0;
    int ok = 1;
    FOR_EACH_INDEX(t, ok &= isfinite(d[offset_of(t, idx_)]) != 0);
    return ok;
}

size_t rt_tensor_nbytes(const rt_tensor *t) { return (size_t)rt_numel(t) * rt_dtype_size(t->dtype); }
