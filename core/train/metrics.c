/*
 * metrics.c -- evaluation sums: accuracy (top-1, top-k), top-1 agreement,
 * KL and JS to the teacher, the confusion matrix and calibration bins.
 * Callers add them up over batches and divide once.  Each is one pass over
 * the logits: next to a forward pass they cost little.
 */
#include <math.h>

#include "retort.h"

/* Logits must be finite: a NaN row has no argmax and no distribution, and
 * would otherwise count as agreeing (argmax 0 on both sides) or add 0 to a
 * KL, a perfect score for a broken model. */
static int check_finite(rt_ctx *ctx, const char *what, const rt_tensor *t, const char *name)
{
    if (!rt_tensor_check_finite(ctx, t, name)) return 0;
    rt_error_prefix(ctx, "%s", what);
    return -1;
}

/* a and b: contiguous f32 [N, C] of one shape, finite; an and bn name them. */
static int check2(rt_ctx *ctx, const char *what, const rt_tensor *a, const rt_tensor *b, const char *an,
                  const char *bn)
{
    char x[64], y[64];
    if (a->dtype != RT_DTYPE_F32 || a->ndim != 2 || !rt_is_contiguous(a) || b->dtype != RT_DTYPE_F32 ||
        !rt_tensor_same_shape(a, b) || !rt_is_contiguous(b)) {
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s: %s %s vs %s %s (want two contiguous f32 [N, C])", what,
                 rt_dtype_name(a->dtype), rt_tensor_shape_str(a, x, sizeof x), rt_dtype_name(b->dtype),
                 rt_tensor_shape_str(b, y, sizeof y));
        return -1;
    }
    return check_finite(ctx, what, a, an) || check_finite(ctx, what, b, bn) ? -1 : 0;
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
    if (check_finite(ctx, "accuracy", logits, "logits")) return -1;
    int64_t N = logits->shape[0], C = logits->shape[1], n = 0;
    const float *z = rt_f32(logits);
    const int32_t *l = rt_i32(y);
    for (int64_t i = 0; i < N; i++) n += row_argmax(z + i * C, C) == l[i];
    return n;
}

int64_t rt_count_agree(rt_ctx *ctx, const rt_tensor *a, const rt_tensor *b)
{
    if (check2(ctx, "agreement", a, b, "logits", "teacher logits")) return -1;
    int64_t N = a->shape[0], C = a->shape[1], n = 0;
    for (int64_t i = 0; i < N; i++) n += row_argmax(rt_f32(a) + i * C, C) == row_argmax(rt_f32(b) + i * C, C);
    return n;
}

/* lt, ls = log softmax(t/T), log softmax(s/T) in double, from ctx scratch
 * (valid until the caller resets it); -1 with an error in ctx. */
static int log_probs_pair(rt_ctx *ctx, const char *what, const rt_tensor *t, const rt_tensor *s, float T, double **lt,
                          double **ls)
{
    if (check2(ctx, what, t, s, "teacher logits", "logits")) return -1;
    int64_t N = t->shape[0], C = t->shape[1];
    *lt = rt_scratch(ctx, sizeof(double) * (size_t)(2 * N * C));
    if (!*lt) return -1;
    *ls = *lt + N * C;
    rt_log_softmax_f64(rt_f32(t), *lt, N, C, T);
    rt_log_softmax_f64(rt_f32(s), *ls, N, C, T);
    return 0;
}

double rt_kl_sum(rt_ctx *ctx, const rt_tensor *t, const rt_tensor *s, float T)
{
    double *lt, *ls, total = 0;
    if (log_probs_pair(ctx, "KL", t, s, T, &lt, &ls)) return -1;
    for (int64_t i = 0; i < rt_numel(t); i++) {
        double p = exp(lt[i]);
        if (p > 0) total += p * (lt[i] - ls[i]);
    }
    rt_scratch_reset(ctx);
    return total;
}

/* Labels must be class ids of the logits: confusion and top-k index by
 * them, so a stray label is an error rather than an out-of-bounds write. */
static int check_labels(rt_ctx *ctx, const char *what, const rt_tensor *logits, const rt_tensor *y)
{
    char a[64], b[64];
    if (logits->dtype != RT_DTYPE_F32 || logits->ndim != 2 || !rt_is_contiguous(logits) || y->dtype != RT_DTYPE_I32 ||
        y->ndim != 1 || y->shape[0] != logits->shape[0] || !rt_is_contiguous(y)) {
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s: logits %s %s vs labels %s %s", what, rt_dtype_name(logits->dtype),
                 rt_tensor_shape_str(logits, a, sizeof a), rt_dtype_name(y->dtype), rt_tensor_shape_str(y, b, sizeof b));
        return -1;
    }
    int64_t N = logits->shape[0], C = logits->shape[1];
    const int32_t *l = rt_i32(y);
    for (int64_t i = 0; i < N; i++)
        if (l[i] < 0 || l[i] >= C) {
            rt_error(ctx, RT_STATUS_ERR_ARG, "%s: label %d of row %lld is not a class of [%lld] logits", what, (int)l[i],
                     (long long)i, (long long)C);
            return -1;
        }
    return check_finite(ctx, what, logits, "logits");
}

int64_t rt_count_topk(rt_ctx *ctx, const rt_tensor *logits, const rt_tensor *y, int k)
{
    if (check_labels(ctx, "top-k accuracy", logits, y)) return -1;
    if (k < 1) {
        rt_error(ctx, RT_STATUS_ERR_ARG, "top-k accuracy: k must be >= 1, got %d", k);
        return -1;
    }
    int64_t N = logits->shape[0], C = logits->shape[1], n = 0;
    const int32_t *l = rt_i32(y);
    for (int64_t i = 0; i < N; i++) {
        const float *r = rt_f32(logits) + i * C;
        float v = r[l[i]];
        /* The label's rank: classes ahead of it.  A tie goes to the lower
         * index, as row_argmax does, so top-1 equals rt_count_correct. */
        int64_t ahead = 0;
        for (int64_t j = 0; j < C && ahead < k; j++) ahead += r[j] > v || (r[j] == v && j < l[i]);
        n += ahead < k;
    }
    return n;
}

rt_status rt_confusion_add(rt_ctx *ctx, const rt_tensor *logits, const rt_tensor *y, int64_t *cm)
{
    if (check_labels(ctx, "confusion", logits, y)) return rt_ctx_status(ctx);
    int64_t N = logits->shape[0], C = logits->shape[1];
    const int32_t *l = rt_i32(y);
    for (int64_t i = 0; i < N; i++) cm[l[i] * C + row_argmax(rt_f32(logits) + i * C, C)]++;
    return RT_STATUS_OK;
}

rt_status rt_calibration_add(rt_ctx *ctx, const rt_tensor *logits, const rt_tensor *y, int nbins, double *conf,
                             double *hits, int64_t *count)
{
    if (check_labels(ctx, "calibration", logits, y)) return rt_ctx_status(ctx);
    if (nbins < 1) return rt_error(ctx, RT_STATUS_ERR_ARG, "calibration: needs at least 1 bin, got %d", nbins);
    int64_t N = logits->shape[0], C = logits->shape[1];
    const int32_t *l = rt_i32(y);
    for (int64_t i = 0; i < N; i++) {
        const float *r = rt_f32(logits) + i * C;
        int64_t a = row_argmax(r, C);
        /* max softmax = 1 / sum exp(z - max), in double: no C-sized buffer */
        double s = 0;
        for (int64_t j = 0; j < C; j++) s += exp((double)r[j] - (double)r[a]);
        double p = 1.0 / s;
        /* bins (b/M, (b+1)/M], as Guo et al. 2017 */
        int b = (int)ceil(p * nbins) - 1;
        if (b < 0) b = 0;
        if (b >= nbins) b = nbins - 1;
        conf[b] += p;
        hits[b] += a == l[i];
        count[b]++;
    }
    return RT_STATUS_OK;
}

double rt_js_sum(rt_ctx *ctx, const rt_tensor *t, const rt_tensor *s, float T)
{
    double *lt, *ls, total = 0;
    if (log_probs_pair(ctx, "JS", t, s, T, &lt, &ls)) return -1;
    for (int64_t i = 0; i < rt_numel(t); i++) {
        double p = exp(lt[i]), q = exp(ls[i]), m = 0.5 * (p + q);
        if (m <= 0) continue;
        double lm = log(m);
        if (p > 0) total += 0.5 * p * (lt[i] - lm);
        if (q > 0) total += 0.5 * q * (ls[i] - lm);
    }
    rt_scratch_reset(ctx);
    /* rounding can make a sum of tiny terms a hair negative; JS >= 0 */
    return total < 0 ? 0 : total;
}
