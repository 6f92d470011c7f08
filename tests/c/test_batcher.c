/*
 * test_batcher.c -- the batches of an epoch (core/data/batcher.c): the
 * order is that of the stream (seed, epoch) and the same on every call,
 * every sample comes exactly once, each batch holds the rows of its ids,
 * the short last batch and drop_last, and the errors; per-position labels
 * and augmentation.
 */
#include "retort.h"
#include "t.h"

#include <stdlib.h>

static rt_ctx *ctx;

/* x [n, 3] with x[i][k] = 10 i + k; y[i] = i % 7 */
static rt_dataset *make(int64_t n)
{
    int64_t sx[2] = {n, 3}, sy[1] = {n};
    rt_tensor *x = rt_tensor_new(ctx, RT_DTYPE_F32, 2, sx);
    rt_tensor *y = rt_tensor_new(ctx, RT_DTYPE_I32, 1, sy);
    for (int64_t i = 0; i < n; i++) {
        for (int k = 0; k < 3; k++) rt_f32(x)[i * 3 + k] = (float)(10 * i + k);
        rt_i32(y)[i] = (int32_t)(i % 7);
    }
    rt_dataset *d = rt_dataset_new(ctx, x, y);
    rt_tensor_release(x);
    rt_tensor_release(y);
    return d;
}

/* Runs one epoch; ids[] gets the sample ids in order; returns the count,
 * or -1 when a batch's rows are not those of its ids. */
static int64_t epoch_ids(rt_dataset *d, int64_t bs, int shuffle, uint64_t seed, uint64_t epoch, int drop_last,
                         int64_t *ids, int64_t *nbatches)
{
    rt_batcher *b = NULL;
    if (rt_batcher_new(ctx, d, bs, shuffle, seed, epoch, drop_last, &b)) return -1;
    int64_t got = 0, B;
    rt_tensor *x, *y, *ib;
    *nbatches = 0;
    while ((B = rt_batcher_next(b, ctx, &x, &y, &ib)) > 0) {
        for (int64_t k = 0; k < B; k++) {
            int32_t id = rt_i32(ib)[k];
            if (rt_f32(x)[k * 3 + 1] != (float)(10 * id + 1) || rt_i32(y)[k] != id % 7) {
                rt_batcher_free(b);
                return -1;
            }
            ids[got++] = id;
        }
        (*nbatches)++;
    }
    rt_batcher_free(b);
    return B < 0 ? -1 : got;
}

static void test_order_plain(void)
{
    rt_dataset *d = make(10);
    int64_t ids[10], nb;
    CHECK(epoch_ids(d, 4, 0, 1, 0, 0, ids, &nb) == 10);
    CHECK(nb == 3); /* 4 + 4 + 2 */
    for (int64_t i = 0; i < 10; i++) CHECK(ids[i] == i);
    CHECK(epoch_ids(d, 4, 0, 1, 0, 1, ids, &nb) == 8); /* drop_last */
    CHECK(nb == 2);
    CHECK(epoch_ids(d, 100, 0, 1, 0, 0, ids, &nb) == 10); /* batch over N is N */
    CHECK(nb == 1);
    rt_dataset_free(d);
}

/* The shuffled order is rt_rng_permutation of the stream (seed, epoch):
 * the order the binding drew before the batcher moved into the core. */
static void test_order_shuffled(void)
{
    enum { N = 37 };
    rt_dataset *d = make(N);
    int64_t ids[N], again[N], other[N], want[N], nb;
    CHECK(epoch_ids(d, 5, 1, 42, 3, 0, ids, &nb) == N);
    CHECK(nb == 8);
    rt_rng r;
    rt_rng_seed(&r, 42, 0x6261746368ull + 3);
    rt_rng_permutation(&r, want, N);
    int same = 1;
    for (int i = 0; i < N; i++) same &= ids[i] == want[i];
    CHECK(same);
    /* coverage: every sample once */
    int seen[N] = {0};
    for (int i = 0; i < N; i++) seen[ids[i]]++;
    for (int i = 0; i < N; i++) CHECK(seen[i] == 1);
    /* deterministic per (seed, epoch); another epoch gives another order */
    CHECK(epoch_ids(d, 5, 1, 42, 3, 0, again, &nb) == N);
    CHECK(memcmp(ids, again, sizeof ids) == 0);
    CHECK(epoch_ids(d, 5, 1, 42, 4, 0, other, &nb) == N);
    CHECK(memcmp(ids, other, sizeof ids) != 0);
    rt_batcher *b = NULL;
    CHECK(rt_batcher_new(ctx, d, 5, 1, 42, 3, 0, &b) == RT_STATUS_OK);
    int64_t n;
    const int64_t *ord = rt_batcher_order(b, &n);
    CHECK(n == N && memcmp(ord, want, sizeof want) == 0);
    CHECK(rt_batcher_batch_size(b) == 5);
    rt_batcher_free(b);
    rt_dataset_free(d);
}

/* The batch tensors are reused: the next call writes the same ones. */
static void test_reuse(void)
{
    rt_dataset *d = make(6);
    rt_batcher *b = NULL;
    CHECK(rt_batcher_new(ctx, d, 3, 0, 0, 0, 0, &b) == RT_STATUS_OK);
    rt_tensor *x1, *y1, *i1, *x2, *y2, *i2;
    CHECK(rt_batcher_next(b, ctx, &x1, &y1, &i1) == 3);
    CHECK(rt_batcher_next(b, ctx, &x2, &y2, &i2) == 3);
    CHECK(x1 == x2 && y1 == y2 && i1 == i2);
    CHECK(rt_i32(i2)[0] == 3);
    CHECK(rt_batcher_next(b, ctx, &x2, &y2, &i2) == 0);
    rt_batcher_free(b);
    rt_dataset_free(d);
}

static void test_errors(void)
{
    rt_dataset *d = make(4);
    rt_batcher *b = (rt_batcher *)1;
    CHECK(rt_batcher_new(ctx, d, 0, 0, 0, 0, 0, &b) == RT_STATUS_ERR_ARG);
    CHECK(b == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), "batch size 0 must be >= 1");
    rt_ctx_clear(ctx);
    CHECK(rt_batcher_new(ctx, NULL, 2, 0, 0, 0, 0, &b) == RT_STATUS_ERR_ARG);
    rt_ctx_clear(ctx);
    rt_batcher_free(NULL); /* a no-op */
    rt_dataset_free(d);
}

/* Per-position labels: y [n, 2] rows travel with their samples. */
static void test_row_labels(void)
{
    int64_t n = 5, sx[2] = {n, 3}, sy[2] = {n, 2};
    rt_tensor *x = rt_tensor_new(ctx, RT_DTYPE_F32, 2, sx);
    rt_tensor *y = rt_tensor_new(ctx, RT_DTYPE_I32, 2, sy);
    for (int64_t i = 0; i < n; i++) {
        for (int k = 0; k < 3; k++) rt_f32(x)[i * 3 + k] = (float)(10 * i + k);
        for (int k = 0; k < 2; k++) rt_i32(y)[i * 2 + k] = (int32_t)(100 * i + k);
    }
    rt_dataset *d = rt_dataset_new(ctx, x, y);
    rt_tensor_release(x);
    rt_tensor_release(y);
    CHECK(d != NULL);
    rt_batcher *b = NULL;
    CHECK(rt_batcher_new(ctx, d, 2, 1, 3, 0, 0, &b) == RT_STATUS_OK);
    rt_tensor *xb, *yb, *ib;
    int64_t B, seen = 0;
    while ((B = rt_batcher_next(b, ctx, &xb, &yb, &ib)) > 0) {
        CHECK(yb->ndim == 2 && yb->shape[1] == 2);
        for (int64_t k = 0; k < B; k++) {
            int32_t id = rt_i32(ib)[k];
            CHECK(rt_i32(yb)[k * 2] == 100 * id && rt_i32(yb)[k * 2 + 1] == 100 * id + 1);
            seen++;
        }
    }
    CHECK(B == 0 && seen == n);
    rt_batcher_free(b);
    rt_dataset_free(d);
}

/* rt_batcher_augment: samples of 3 values as images [1, 1, 3]; with pad 0
 * and flip, each row is its source or its mirror, both occur, the order is
 * the one without augment; a shape that does not match is refused. */
static void test_augment(void)
{
    rt_dataset *d = make(40);
    int64_t plain[40], nb;
    CHECK(epoch_ids(d, 8, 1, 5, 2, 0, plain, &nb) == 40);
    rt_batcher *b = NULL;
    CHECK(rt_batcher_new(ctx, d, 8, 1, 5, 2, 0, &b) == RT_STATUS_OK);
    CHECK(rt_batcher_augment(b, ctx, 1, 1, 3, 0, 1) == RT_STATUS_OK);
    rt_tensor *x, *y, *ib;
    int64_t B, got = 0, mirrored = 0, bad = 0;
    while ((B = rt_batcher_next(b, ctx, &x, &y, &ib)) > 0) {
        for (int64_t k = 0; k < B; k++) {
            int32_t id = rt_i32(ib)[k];
            const float *r = rt_f32(x) + k * 3;
            float a = (float)(10 * id);
            if (id != plain[got]) bad++;
            if (r[0] == a + 2 && r[1] == a + 1 && r[2] == a) mirrored++;
            else if (!(r[0] == a && r[1] == a + 1 && r[2] == a + 2)) bad++;
            got++;
        }
    }
    CHECK(B == 0 && got == 40 && bad == 0);
    CHECK(mirrored > 0 && mirrored < 40);
    rt_batcher_free(b);
    CHECK(rt_batcher_new(ctx, d, 8, 0, 0, 0, 0, &b) == RT_STATUS_OK);
    CHECK(rt_batcher_augment(b, ctx, 1, 2, 2, 0, 1) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "needs f32 samples of 4 values, the data has f32 samples of 3");
    rt_ctx_clear(ctx);
    CHECK(rt_batcher_augment(b, ctx, 1, 1, 3, 2, 0) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "augment.pad = 2 must lie in [0, 1]");
    rt_ctx_clear(ctx);
    rt_batcher_free(b);
    rt_dataset_free(d);
}

int main(void)
{
    ctx = rt_ctx_new();
    RUN(test_order_plain);
    RUN(test_order_shuffled);
    RUN(test_reuse);
    RUN(test_errors);
    RUN(test_row_labels);
    RUN(test_augment);
    rt_ctx_free(ctx);
    return t_summary("test_batcher");
}
