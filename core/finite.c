/*
 * finite.c -- finding NaN and +-inf where numbers enter: data, weights
 * read from files, teacher outputs, gradients.  The policy (README, "NaN")
 * is that a non-finite number is an error where it first appears, named
 * by what holds it and where, never something averaged away later.
 *
 * rt_check_finite is one vectorised pass: a value is non-finite exactly
 * when its eight exponent bits are all set, so each lane keeps the largest
 * (bits & 0x7f800000) it has seen and a block is clean when that is below
 * 0x7f800000.  Only a block that is not clean is scanned again to find the
 * first bad index.  Integer max is exact, so the fast and the reference
 * twin agree on every input.
 */
#include "retort.h"

#include <math.h>
#include <string.h>

#include "vec.h"

#define EXP_MASK 0x7f800000u
/* Elements per block: large enough that the per-block test is noise,
 * small enough that the rescan of a bad block is cheap. */
#define BLOCK 1024

static inline uint32_t expo(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & EXP_MASK;
}

int64_t rt_check_finite_ref(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

/* The largest masked exponent over x[0..n): a clean block gives less than
 * EXP_MASK.  VW lanes, fixed-trip inner loop (see vec.h). */
static uint32_t block_max(const float *restrict x, int64_t n)
{
    uint32_t acc[VW] = {0};
    int64_t i = 0;
    for (; i + VW <= n; i += VW)
        for (int k = 0; k < VW; k++) {
            uint32_t e = expo(x[i + k]);
            acc[k] = e > acc[k] ? e : acc[k];
        }
    uint32_t m = 0;
    for (; i < n; i++) {
        uint32_t e = expo(x[i]);
        m = e > m ? e : m;
    }
    for (int k = 0; k < VW; k++) m = acc[k] > m ? acc[k] : m;
    return m;
}

int64_t rt_check_finite(const float *x, int64_t n)
{
    for (int64_t b = 0; b < n; b += BLOCK) {
        int64_t len = n - b < BLOCK ? n - b : BLOCK;
        if (block_max(x + b, len) == EXP_MASK) return b + rt_check_finite_ref(x + b, len);
    }
    return -1;
}

const char *rt_nonfinite_name(float v)
{
    if (isnan(v)) return "nan";
    return v > 0 ? "inf" : "-inf";
}

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

rt_status rt_st_check_finite(rt_ctx *ctx, const rt_st *f, const char *label)
{
    char what[320];
    for (int i = 0; i < rt_st_count(f); i++) {
        snprintf(what, sizeof what, "tensor '%s'", rt_st_name(f, i));
        if (rt_tensor_check_finite(ctx, rt_st_tensor(f, i), what)) {
            rt_error_prefix(ctx, "%s", label);
            return rt_ctx_status(ctx);
        }
    }
    return RT_STATUS_OK;
}
