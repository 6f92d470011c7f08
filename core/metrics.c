/*
 * metrics.c -- evaluation sums: accuracy, top-1 agreement, KL to the
 * teacher.  Callers add them up over batches and divide once.
 */
#include <math.h>

#include "retort.h"

static int check2(rt_ctx *ctx, const char *what, const rt_tensor *a, const rt_tensor *b)
{
    char x[64], y[64];
    if (a->dtype != RT_DTYPE_F32 || a->ndim != 2 || !rt_is_contiguous(a) || b->dtype != RT_DTYPE_F32 ||
        !rt_tensor_same_shape(a, b) || !rt_is_contiguous(b)) {
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s: %s %s vs %s %s (want two contiguous f32 [N, C])", what,
                 rt_dtype_name(a->dtype), rt_tensor_shape_str(a, x, sizeof x), rt_dtype_name(b->dtype),
                 rt_tensor_shape_str(b, y, sizeof y));
        return -1;
    }
    return 0;
}

static int64_t row_argmax(const float *r, int64_t C)
{
    int64_t best = 0;
    for (int64_t k = 1; k < C; k++)
        if (r[k] > r[best]) best = k;
    return best;
}

int64_t rt_count_correct(rt_ctx *ctx, const rt_tensor *logits, const rt_tensor *y)
{
    char a[64], b[64];
    if (logits->dtype != RT_DTYPE_F32 || logits->ndim != 2 || !rt_is_contiguous(logits) || y->dtype != RT_DTYPE_I32 ||
        y->ndim != 1 || y->shape[0] != logits->shape[0] || !rt_is_contiguous(y)) {
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "accuracy: logits %s %s vs labels %s %s", rt_dtype_name(logits->dtype),
                 rt_tensor_shape_str(logits, a, sizeof a), rt_dtype_name(y->dtype), rt_tensor_shape_str(y, b, sizeof b));
        return -1;
    }
    int64_t N = logits->shape[0], C = logits->shape[1], n = 0;
    const float *z = rt_f32(logits);
    const int32_t *l = rt_i32(y);
    for (int64_t i = 0; i < N; i++) n += row_argmax(z + i * C, C) == l[i];
    return n;
}

int64_t rt_count_agree(rt_ctx *ctx, const rt_tensor *a, const rt_tensor *b)
{
    if (check2(ctx, "agreement", a, b)) return -1;
    int64_t N = a->shape[0], C = a->shape[1], n = 0;
    for (int64_t i = 0; i < N; i++) n += row_argmax(rt_f32(a) + i * C, C) == row_argmax(rt_f32(b) + i * C, C);
    return n;
}

double rt_kl_sum(rt_ctx *ctx, const rt_tensor *t, const rt_tensor *s, float T)
{
    if (check2(ctx, "KL", t, s)) return -1;
    int64_t N = t->shape[0], C = t->shape[1];
    float *lt = rt_scratch(ctx, sizeof(float) * (size_t)(2 * N * C));
    if (!lt) return -1;
    float *ls = lt + N * C;
    rt_log_softmax(rt_f32(t), lt, N, C, T);
    rt_log_softmax(rt_f32(s), ls, N, C, T);
    double total = 0;
    for (int64_t i = 0; i < N * C; i++) {
        double p = exp((double)lt[i]);
        if (p > 0) total += p * ((double)lt[i] - (double)ls[i]);
    }
    rt_scratch_reset(ctx);
    return total;
}
