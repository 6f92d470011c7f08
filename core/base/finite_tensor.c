/*
 * finite_tensor.c -- rt_tensor_check_finite: finite.c's scan over a
 * tensor, with the message naming the first bad element by its index.
 * Apart from finite.c so that finite.c uses nothing of tensor.c, which
 * uses its scan (rt_tensor_all_finite): no call cycle between the two.
 */
#include "retort.h"

#include <stdio.h>

/* "[i, j, k]" of flat index k in a contiguous tensor of t's shape. */
static void index_str(const rt_tensor *t, int64_t flat, char *buf, size_t len)
{
    int64_t idx[RT_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t s = t->shape[d] > 0 ? t->shape[d] : 1;
        idx[d] = flat % s;
        flat /= s;
    }
    size_t used = 0;
    buf[0] = 0;
    for (int d = 0; d < t->ndim && used < len; d++) {
        int w = snprintf(buf + used, len - used, "%s%lld", d ? ", " : "[", (long long)idx[d]);
        if (w < 0) break;
        used += (size_t)w;
    }
    if (used < len) snprintf(buf + used, len - used, "]");
}

rt_status rt_tensor_check_finite(rt_ctx *ctx, const rt_tensor *t, const char *what)
{
    char shape[64], at[96];
    if (!t || t->dtype != RT_DTYPE_F32) return RT_STATUS_OK; /* only f32 holds non-finite values */
    if (!rt_is_contiguous(t))
        return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s %s must be contiguous to be checked", what,
                        rt_tensor_shape_str(t, shape, sizeof shape));
    const float *x = rt_f32(t);
    int64_t k = rt_check_finite(x, rt_numel(t));
    if (k < 0) return RT_STATUS_OK;
    index_str(t, k, at, sizeof at);
    return rt_error(ctx, RT_STATUS_ERR_NUMERIC, "%s has a non-finite value: %s at %s (0-based, of %s)", what,
                    rt_nonfinite_name(x[k]), at,
                    rt_tensor_shape_str(t, shape, sizeof shape));
}
