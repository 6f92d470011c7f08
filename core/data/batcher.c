/*
 * batcher.c -- the batches of one epoch over a dataset: the order (the
 * identity, or a permutation drawn from the stream (seed, epoch), so epoch
 * e has the same order in every run and after a resume) and the gather of
 * each batch into tensors reused from one batch to the next.  Moved out of
 * the Lua binding (issue 9: the core does the work, the binding converts);
 * the draws and the copies are those the binding made.
 */
#include "retort.h"

#include <stdlib.h>
#include <string.h>

struct rt_batcher {
    const rt_dataset *d; /* borrowed: the caller keeps it alive */
    int64_t n, bs, pos;
    int drop_last;
    uint64_t seed, epoch;
    int aug, aflip;          /* rt_batcher_augment: crop with padding apad, flip */
    int64_t aC, aH, aW, apad;
    rt_rng arng;             /* augmentation stream (seed, epoch) */
    rt_tensor *xb, *yb, *ib; /* [bs, ...], [bs, ...] (NULL without labels), [bs] i32 sample ids */
    int64_t *perm;           /* [n] sample ids in batch order */
};

rt_status rt_batcher_new(rt_ctx *ctx, const rt_dataset *d, int64_t bs, int shuffle, uint64_t seed, uint64_t epoch,
                         int drop_last, rt_batcher **out)
{
    *out = NULL;
    if (!d) return rt_error(ctx, RT_STATUS_ERR_ARG, "batcher: the dataset is missing");
    if (bs < 1) return rt_error(ctx, RT_STATUS_ERR_ARG, "batcher: batch size %lld must be >= 1", (long long)bs);
    int64_t n = rt_dataset_size(d);
    if (bs > n && n > 0) bs = n;
    rt_batcher *b = calloc(1, sizeof *b);
    if (b) b->perm = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (!b || !b->perm) {
        free(b);
        return rt_error(ctx, RT_STATUS_ERR_NOMEM, "batcher: out of memory for the order of %lld samples", (long long)n);
    }
    b->d = d;
    b->n = n;
    b->bs = bs;
    b->drop_last = drop_last;
    b->seed = seed;
    b->epoch = epoch;
    if (shuffle) {
        rt_rng r;
        rt_rng_seed(&r, seed, 0x6261746368ull + epoch);
        rt_rng_permutation(&r, b->perm, n);
    } else {
        for (int64_t k = 0; k < n; k++) b->perm[k] = k;
    }
    rt_tensor *x = rt_dataset_x(d), *y = rt_dataset_y(d);
    int64_t shape[RT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = bs;
    int64_t yshape[RT_MAX_DIMS];
    if (y) { /* [bs] class ids, or [bs, ...] per-position labels */
        memcpy(yshape, y->shape, sizeof yshape);
        yshape[0] = bs;
    }
    if (!(b->xb = rt_tensor_new(ctx, x->dtype, x->ndim, shape)) ||
        (y && !(b->yb = rt_tensor_new(ctx, RT_DTYPE_I32, y->ndim, yshape))) ||
        !(b->ib = rt_tensor_new(ctx, RT_DTYPE_I32, 1, &bs))) {
        rt_batcher_free(b);
        return rt_ctx_status(ctx);
    }
    *out = b;
    return RT_STATUS_OK;
}

int64_t rt_batcher_next(rt_batcher *b, rt_ctx *ctx, rt_tensor **x, rt_tensor **y, rt_tensor **ids)
{
    int64_t left = b->n - b->pos;
    if (left <= 0 || (b->drop_last && left < b->bs)) return 0;
    int64_t B = left < b->bs ? left : b->bs;
    if (rt_dataset_gather(b->d, ctx, b->perm + b->pos, B, b->xb, b->yb)) return -1;
    if (b->aug && rt_augment_crop_flip(ctx, rt_f32(b->xb), B, b->aC, b->aH, b->aW, b->apad, b->aflip, &b->arng))
        return -1;
    int32_t *p = rt_i32(b->ib);
    for (int64_t k = 0; k < B; k++) p[k] = (int32_t)b->perm[b->pos + k];
    b->pos += B;
    *x = b->xb;
    *y = b->yb;
    *ids = b->ib;
    return B;
}

rt_status rt_batcher_augment(rt_batcher *b, rt_ctx *ctx, int64_t C, int64_t H, int64_t W, int64_t pad, int flip)
{
    rt_tensor *x = rt_dataset_x(b->d);
    if (C < 1 || H < 1 || W < 1)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "batches: augment.shape must be {C, H, W}, three integers >= 1");
    if (x->dtype != RT_DTYPE_F32 || rt_row_size(x) != C * H * W)
        return rt_error(ctx, RT_STATUS_ERR_ARG,
                        "batches: augment.shape {%d, %d, %d} needs f32 samples of %d values, the data has %s "
                        "samples of %d",
                        (int)C, (int)H, (int)W, (int)(C * H * W), x->dtype == RT_DTYPE_F32 ? "f32" : "non-f32",
                        (int)rt_row_size(x));
    if (pad < 0 || pad > H || pad > W)
        return rt_error(ctx, RT_STATUS_ERR_ARG,
                        "batches: augment.pad = %d must lie in [0, %d] (the image's height and width)", (int)pad,
                        (int)(H < W ? H : W));
    b->aug = 1;
    b->aC = C, b->aH = H, b->aW = W, b->apad = pad, b->aflip = flip != 0;
    rt_rng_seed(&b->arng, b->seed, 0x6175676dull + b->epoch); /* "augm" + epoch */
    return RT_STATUS_OK;
}

int64_t rt_batcher_batch_size(const rt_batcher *b) { return b->bs; }

const int64_t *rt_batcher_order(const rt_batcher *b, int64_t *n)
{
    *n = b->n;
    return b->perm;
}

void rt_batcher_free(rt_batcher *b)
{
    if (!b) return;
    rt_tensor_release(b->xb);
    rt_tensor_release(b->yb);
    rt_tensor_release(b->ib);
    free(b->perm);
    free(b);
}
