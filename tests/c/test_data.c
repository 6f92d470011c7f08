/*
 * test_data.c -- datasets and batch gather; SHA-256 test vectors.
 */
#include "retort.h"
#include "t.h"

#include <stdlib.h>

static rt_ctx *ctx;

/* x [5, 2, 3] with x[i][j][k] = 100 i + 10 j + k; y[i] = 7 - i */
static rt_dataset *make(rt_tensor **xo, rt_tensor **yo)
{
    int64_t sx[3] = {5, 2, 3}, sy[1] = {5};
    rt_tensor *x = rt_tensor_new(ctx, RT_DTYPE_F32, 3, sx);
    rt_tensor *y = rt_tensor_new(ctx, RT_DTYPE_I32, 1, sy);
    for (int i = 0; i < 5; i++) {
        for (int j = 0; j < 6; j++) rt_f32(x)[i * 6 + j] = (float)(100 * i + 10 * (j / 3) + j % 3);
        rt_i32(y)[i] = 7 - i;
    }
    rt_dataset *d = rt_dataset_new(ctx, x, y);
    *xo = x;
    *yo = y;
    return d;
}

static void test_new(void)
{
    rt_tensor *x, *y;
    rt_dataset *d = make(&x, &y);
    CHECK(d != NULL);
    if (!d) return;
    CHECK(rt_dataset_size(d) == 5);
    CHECK(rt_dataset_x(d) == x && rt_dataset_y(d) == y);
    CHECK(x->refcount == 2 && y->refcount == 2); /* retained */
    rt_dataset_free(d);
    CHECK(x->refcount == 1 && y->refcount == 1);

    /* mismatched N */
    int64_t s4[1] = {4};
    rt_tensor *y4 = rt_tensor_new(ctx, RT_DTYPE_I32, 1, s4);
    rt_ctx_clear(ctx);
    CHECK(rt_dataset_new(ctx, x, y4) == NULL);
    CHECK(rt_ctx_status(ctx) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "[5, 2, 3]"); /* both shapes are named */
    CHECK_CONTAINS(rt_ctx_message(ctx), "[4]");
    CHECK(y4->refcount == 1 && x->refcount == 1);
    /* labels of the wrong dtype, x of the wrong dtype */
    int64_t s5[1] = {5};
    rt_tensor *yf = rt_tensor_new(ctx, RT_DTYPE_F32, 1, s5);
    CHECK(rt_dataset_new(ctx, x, yf) == NULL);
    int64_t s64[1] = {5};
    rt_tensor *x64 = rt_tensor_new(ctx, RT_DTYPE_I64, 1, s64);
    CHECK(rt_dataset_new(ctx, x64, NULL) == NULL); /* f32 or i32 (token ids) only */
    CHECK_CONTAINS(rt_ctx_message(ctx), "x must be f32 or i32 (token ids) [N, ...], got i64 [5]");
    rt_tensor_release(x64);
    rt_dataset *dt = rt_dataset_new(ctx, y, NULL); /* i32 x: token ids (ABI 2.0) */
    CHECK(dt && rt_dataset_x(dt)->dtype == RT_DTYPE_I32);
    rt_dataset_free(dt);
    CHECK(rt_dataset_new(ctx, NULL, y) == NULL);
    /* no labels is fine */
    d = rt_dataset_new(ctx, x, NULL);
    CHECK(d && rt_dataset_y(d) == NULL && rt_dataset_size(d) == 5);
    rt_dataset_free(d);
    rt_tensor_release(y4);
    rt_tensor_release(yf);
    rt_tensor_release(x);
    rt_tensor_release(y);
}

static void test_gather(void)
{
    rt_tensor *x, *y;
    rt_dataset *d = make(&x, &y);
    int64_t sb[2] = {4, 6}, sy[1] = {4};
    rt_tensor *xb = rt_tensor_new(ctx, RT_DTYPE_F32, 2, sb); /* flattened rows */
    rt_tensor *yb = rt_tensor_new(ctx, RT_DTYPE_I32, 1, sy);
    const int64_t idx[3] = {4, 0, 4};
    CHECK(rt_dataset_gather(d, ctx, idx, 3, xb, yb) == RT_STATUS_OK);
    int bad = 0;
    for (int r = 0; r < 3; r++)
        for (int j = 0; j < 6; j++)
            bad += rt_f32(xb)[r * 6 + j] != (float)(100 * idx[r] + 10 * (j / 3) + j % 3);
    CHECK(bad == 0);
    CHECK(rt_i32(yb)[0] == 3 && rt_i32(yb)[1] == 7 && rt_i32(yb)[2] == 3);
    CHECK(rt_i32(yb)[3] == 0 && rt_f32(xb)[3 * 6] == 0); /* the row past n untouched */

    /* x only */
    const int64_t one[1] = {2};
    CHECK(rt_dataset_gather(d, ctx, one, 1, xb, NULL) == RT_STATUS_OK);
    CHECK(rt_f32(xb)[5] == 212.0f);

    /* bad indices: nothing written */
    rt_tensor_fill(xb, -1);
    const int64_t badidx[3] = {1, 5, 0}, negidx[1] = {-1};
    rt_ctx_clear(ctx);
    CHECK(rt_dataset_gather(d, ctx, badidx, 3, xb, yb) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "index 5 (position 1) is outside [0, 5)");
    CHECK(rt_f32(xb)[0] == -1.0f);
    CHECK(rt_dataset_gather(d, ctx, negidx, 1, xb, yb) == RT_STATUS_ERR_ARG);
    /* batch too small */
    const int64_t five[5] = {0, 1, 2, 3, 4};
    rt_ctx_clear(ctx);
    CHECK(rt_dataset_gather(d, ctx, five, 5, xb, yb) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "[4, 6]");
    /* wrong row size */
    int64_t sw[2] = {8, 5};
    rt_tensor *xw = rt_tensor_new(ctx, RT_DTYPE_F32, 2, sw);
    CHECK(rt_dataset_gather(d, ctx, five, 2, xw, NULL) == RT_STATUS_ERR_SHAPE);
    /* labels batch too small */
    int64_t s2[1] = {2};
    rt_tensor *y2 = rt_tensor_new(ctx, RT_DTYPE_I32, 1, s2);
    CHECK(rt_dataset_gather(d, ctx, five, 3, xb, y2) == RT_STATUS_ERR_SHAPE);
    /* n = 0 is a no-op */
    CHECK(rt_dataset_gather(d, ctx, NULL, 0, xb, yb) == RT_STATUS_OK);
    rt_tensor_release(xw);
    rt_tensor_release(y2);
    rt_tensor_release(xb);
    rt_tensor_release(yb);
    rt_dataset_free(d);
    rt_tensor_release(x);
    rt_tensor_release(y);
}

/* A non-contiguous x is copied once at creation; gather sees its values. */
static void test_noncontiguous_x(void)
{
    int64_t s[2] = {3, 4};
    rt_tensor *base = rt_tensor_new(ctx, RT_DTYPE_F32, 2, s);
    for (int i = 0; i < 12; i++) rt_f32(base)[i] = (float)i;
    rt_tensor *cols = rt_tensor_narrow(ctx, base, 1, 2, 2); /* [3, 2] */
    rt_dataset *d = rt_dataset_new(ctx, cols, NULL);
    CHECK(d != NULL);
    if (d) {
        int64_t sb[2] = {1, 2};
        rt_tensor *xb = rt_tensor_new(ctx, RT_DTYPE_F32, 2, sb);
        const int64_t idx[1] = {2};
        CHECK(rt_dataset_gather(d, ctx, idx, 1, xb, NULL) == RT_STATUS_OK);
        CHECK(rt_f32(xb)[0] == 10.0f && rt_f32(xb)[1] == 11.0f);
        rt_tensor_release(xb);
    }
    rt_dataset_free(d);
    rt_tensor_release(cols);
    rt_tensor_release(base);
}

static void test_sha256_vectors(void)
{
    char h[65];
    rt_sha256_hex("", 0, h);
    CHECK(strcmp(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    rt_sha256_hex("abc", 3, h);
    CHECK(strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    rt_sha256_hex(m448, strlen(m448), h);
    CHECK(strcmp(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0);
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                       "mnopqrstnopqrstu";
    rt_sha256_hex(m896, strlen(m896), h);
    CHECK(strcmp(h, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1") == 0);
    char *a = malloc(1000000);
    if (a) {
        memset(a, 'a', 1000000);
        rt_sha256_hex(a, 1000000, h);
        CHECK(strcmp(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
        free(a);
    }
    /* lengths around the padding boundary (55, 56, 63, 64 bytes) */
    rt_sha256_hex("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 55, h);
    CHECK(strcmp(h, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318") == 0);
    rt_sha256_hex("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 56, h);
    CHECK(strcmp(h, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a") == 0);
}

int main(void)
{
    ctx = rt_ctx_new();
    RUN(test_new);
    RUN(test_gather);
    RUN(test_noncontiguous_x);
    RUN(test_sha256_vectors);
    rt_ctx_free(ctx);
    return t_summary("test_data");
}
