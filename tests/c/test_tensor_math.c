/*
 * test_tensor_math.c -- the core's tensor arithmetic (core/kernels/
 * tensor_math.c), each op against a plain loop written here: broadcasting
 * (right-aligned, 1 stretches, scalars on either side, views), in place,
 * unary math, softmax with a temperature, reductions along a dimension,
 * gather by label, one-hot, and the errors naming what went wrong.
 */
#include "retort.h"
#include "t.h"

#include <math.h>

static rt_ctx *ctx;

static rt_tensor *mk(int nd, const int64_t *shape, float base)
{
    rt_tensor *t = rt_tensor_new(ctx, RT_DTYPE_F32, nd, shape);
    for (int64_t i = 0; i < rt_numel(t); i++) rt_f32(t)[i] = base + (float)i * 0.5f - 1.0f;
    return t;
}

static void test_binary_broadcast(void)
{
    int64_t sa[2] = {3, 4}, sb[1] = {4}, sc[2] = {3, 1};
    rt_tensor *a = mk(2, sa, 1), *b = mk(1, sb, 2), *c = mk(2, sc, 3), *r = mk(2, sa, 0);
    int64_t shape[RT_MAX_DIMS];
    int nd;
    CHECK(rt_broadcast_shape(ctx, a, b, shape, &nd, "t") == RT_STATUS_OK && nd == 2 && shape[0] == 3 && shape[1] == 4);
    const rt_binop ops[4] = {RT_OP_ADD, RT_OP_SUB, RT_OP_MUL, RT_OP_DIV};
    for (int k = 0; k < 4; k++) {
        CHECK(rt_tensor_binary(ctx, ops[k], r, a, 0, b, 0, "t") == RT_STATUS_OK);
        int ok = 1;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++) {
                float x = rt_f32(a)[i * 4 + j], y = rt_f32(b)[j];
                float want = k == 0 ? x + y : k == 1 ? x - y : k == 2 ? x * y : x / y;
                ok &= rt_f32(r)[i * 4 + j] == want;
            }
        CHECK(ok);
    }
    /* [3, 1] with [4] -> [3, 4]; number on the left */
    CHECK(rt_tensor_binary(ctx, RT_OP_SUB, r, c, 0, b, 0, "t") == RT_STATUS_OK);
    int ok = 1;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) ok &= rt_f32(r)[i * 4 + j] == rt_f32(c)[i] - rt_f32(b)[j];
    CHECK(ok);
    CHECK(rt_tensor_binary(ctx, RT_OP_DIV, r, NULL, 2.0f, a, 0, "t") == RT_STATUS_OK);
    ok = 1;
    for (int i = 0; i < 12; i++) ok &= rt_f32(r)[i] == 2.0f / rt_f32(a)[i];
    CHECK(ok);
    /* in place, through a view (a column of a) */
    rt_tensor *v = rt_tensor_narrow(ctx, a, 1, 1, 1); /* [3, 1] */
    float before[3] = {rt_f32(a)[1], rt_f32(a)[5], rt_f32(a)[9]};
    CHECK(rt_tensor_binary(ctx, RT_OP_MUL, v, v, 0, NULL, 3.0f, "t") == RT_STATUS_OK);
    CHECK(rt_f32(a)[1] == before[0] * 3 && rt_f32(a)[5] == before[1] * 3 && rt_f32(a)[9] == before[2] * 3);
    /* errors */
    int64_t s3[1] = {3};
    rt_tensor *bad = mk(1, s3, 0);
    CHECK(rt_tensor_binary(ctx, RT_OP_ADD, r, a, 0, bad, 0, "tensor:add") == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "tensor:add: shapes [3, 4] and [3] do not broadcast");
    rt_ctx_clear(ctx);
    CHECK(rt_tensor_binary(ctx, RT_OP_ADD, b, b, 0, a, 0, "tensor:add_") == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "cannot take the broadcast of [3, 4] in place");
    rt_ctx_clear(ctx);
    rt_tensor *i32 = rt_tensor_new(ctx, RT_DTYPE_I32, 1, s3);
    CHECK(rt_tensor_binary(ctx, RT_OP_ADD, bad, i32, 0, NULL, 1, "tensor:add") == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "needs f32 tensors, got i32");
    rt_ctx_clear(ctx);
    rt_tensor_release(i32);
    rt_tensor_release(bad);
    rt_tensor_release(v);
    rt_tensor_release(a);
    rt_tensor_release(b);
    rt_tensor_release(c);
    rt_tensor_release(r);
}

static void test_unary(void)
{
    int64_t s[2] = {2, 3};
    rt_tensor *a = mk(2, s, 2), *r = mk(2, s, 0);
    const rt_unop ops[8] = {RT_OP_EXP, RT_OP_LOG, RT_OP_NEG, RT_OP_ABS, RT_OP_SQRT, RT_OP_SQUARE, RT_OP_POW, RT_OP_CLAMP};
    for (int k = 0; k < 8; k++) {
        CHECK(rt_tensor_unary(ctx, ops[k], r, a, 1.5, 0.0, 1.5, "t") == RT_STATUS_OK);
        int ok = 1;
        for (int i = 0; i < 6; i++) {
            float x = rt_f32(a)[i], want;
            switch (k) {
            case 0: want = expf(x); break;
            case 1: want = logf(x); break;
            case 2: want = -x; break;
            case 3: want = fabsf(x); break;
            case 4: want = sqrtf(x); break;
            case 5: want = x * x; break;
            case 6: want = (float)pow(x, 1.5); break;
            default: want = x < 0 ? 0 : x > 1.5f ? 1.5f : x;
            }
            ok &= rt_f32(r)[i] == want || (isnan(want) && isnan(rt_f32(r)[i]));
        }
        CHECK(ok);
    }
    CHECK(rt_tensor_unary(ctx, RT_OP_CLAMP, r, a, 0, 2, 1, "tensor:clamp") == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "tensor:clamp: min 2 > max 1");
    rt_ctx_clear(ctx);
    rt_tensor_release(a);
    rt_tensor_release(r);
}

static void test_softmax(void)
{
    int64_t s[2] = {2, 5};
    rt_tensor *a = mk(2, s, 0), *r = mk(2, s, 0), *want = mk(2, s, 0);
    CHECK(rt_tensor_softmax(ctx, r, a, 2.0, 0, "t") == RT_STATUS_OK);
    rt_softmax_ref(rt_f32(a), rt_f32(want), 2, 5, 2.0f);
    for (int i = 0; i < 10; i++) CHECK_NEAR(rt_f32(r)[i], rt_f32(want)[i], 1e-6);
    CHECK(rt_tensor_softmax(ctx, r, a, 2.0, 1, "t") == RT_STATUS_OK);
    rt_log_softmax_ref(rt_f32(a), rt_f32(want), 2, 5, 2.0f);
    for (int i = 0; i < 10; i++) CHECK_NEAR(rt_f32(r)[i], rt_f32(want)[i], 1e-6);
    CHECK(rt_tensor_softmax(ctx, r, a, 0.0, 0, "tensor:softmax") == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "temperature must be finite and > 0");
    rt_ctx_clear(ctx);
    rt_tensor_release(a);
    rt_tensor_release(r);
    rt_tensor_release(want);
}

static void test_reduce(void)
{
    int64_t s[3] = {2, 3, 4};
    rt_tensor *a = mk(3, s, 0);
    double all;
    CHECK(rt_tensor_reduce_all(ctx, RT_REDUCE_SUM, a, &all, "t") == RT_STATUS_OK);
    double want = 0;
    for (int i = 0; i < 24; i++) want += rt_f32(a)[i];
    CHECK(all == want);
    int64_t shape[RT_MAX_DIMS];
    int nd;
    for (int o = 0; o < 3; o++)
        for (int keep = 0; keep < 2; keep++) {
            CHECK(rt_reduce_shape(ctx, (rt_reduce)o, a, 1, keep, shape, &nd, "t") == RT_STATUS_OK);
            CHECK(nd == 2 + keep && shape[0] == 2 && shape[nd - 1] == 4 && (!keep || shape[1] == 1));
            rt_tensor *r = rt_tensor_new(ctx, RT_DTYPE_F32, nd, shape);
            CHECK(rt_tensor_reduce(ctx, (rt_reduce)o, r, a, 1, keep, "t") == RT_STATUS_OK);
            int ok = 1;
            for (int i = 0; i < 2; i++)
                for (int k = 0; k < 4; k++) {
                    double acc = o == 2 ? -INFINITY : 0;
                    for (int j = 0; j < 3; j++) {
                        double v = rt_f32(a)[i * 12 + j * 4 + k];
                        acc = o == 2 ? (v > acc ? v : acc) : acc + v;
                    }
                    if (o == 1) acc /= 3;
                    ok &= rt_f32(r)[i * 4 + k] == (float)acc;
                }
            CHECK(ok);
            rt_tensor_release(r);
        }
    CHECK(rt_reduce_shape(ctx, RT_REDUCE_SUM, a, 3, 0, shape, &nd, "tensor:sum") == RT_STATUS_ERR_ARG);
    rt_ctx_clear(ctx);
    int64_t s0[1] = {0};
    rt_tensor *e = rt_tensor_new(ctx, RT_DTYPE_F32, 1, s0);
    CHECK(rt_tensor_reduce_all(ctx, RT_REDUCE_MAX, e, &all, "tensor:max") == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "tensor:max of an empty tensor");
    rt_ctx_clear(ctx);
    rt_tensor_release(e);
    rt_tensor_release(a);
}

static void test_labels(void)
{
    int64_t s[2] = {3, 4}, sy[1] = {3}, so[2] = {3, 4};
    rt_tensor *a = mk(2, s, 0), *y = rt_tensor_new(ctx, RT_DTYPE_I32, 1, sy), *r = mk(1, sy, 0);
    rt_i32(y)[0] = 2, rt_i32(y)[1] = 0, rt_i32(y)[2] = 3;
    CHECK(rt_tensor_gather_labels(ctx, r, a, y, "t") == RT_STATUS_OK);
    for (int n = 0; n < 3; n++) CHECK(rt_f32(r)[n] == rt_f32(a)[n * 4 + rt_i32(y)[n]]);
    rt_tensor *oh = rt_tensor_new(ctx, RT_DTYPE_F32, 2, so);
    CHECK(rt_tensor_one_hot(ctx, oh, y, 4, "t") == RT_STATUS_OK);
    int ok = 1;
    for (int n = 0; n < 3; n++)
        for (int c = 0; c < 4; c++) ok &= rt_f32(oh)[n * 4 + c] == (c == rt_i32(y)[n] ? 1.0f : 0.0f);
    CHECK(ok);
    rt_i32(y)[1] = 4;
    CHECK(rt_tensor_gather_labels(ctx, r, a, y, "tensor:gather") == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "tensor:gather: label 4 at row 2 is outside [0, 4)");
    rt_ctx_clear(ctx);
    rt_tensor_release(oh);
    rt_tensor_release(a);
    rt_tensor_release(y);
    rt_tensor_release(r);
}

/* fill: contiguous tensors of each dtype in one pass (+0, -0 and other
 * values), a strided view only where it looks. */
static void test_fill(void)
{
    int64_t s2[2] = {3, 4}, n = 12;
    rt_tensor *a = mk(2, s2, 5.0f);
    rt_tensor_fill(a, -0.0);
    int neg = 1;
    for (int64_t k = 0; k < n; k++) neg &= rt_f32(a)[k] == 0.0f && signbit(rt_f32(a)[k]);
    CHECK(neg);
    rt_tensor_fill(a, 2.5);
    int all = 1;
    for (int64_t k = 0; k < n; k++) all &= rt_f32(a)[k] == 2.5f;
    CHECK(all);
    rt_tensor *v = rt_tensor_narrow(ctx, a, 1, 1, 2); /* [3, 2]: columns 1 and 2 */
    CHECK(v != NULL);
    if (v) rt_tensor_fill(v, 0.0);
    for (int64_t k = 0; k < n; k++) {
        int in = k % 4 == 1 || k % 4 == 2;
        CHECK(rt_f32(a)[k] == (in ? 0.0f : 2.5f) && !signbit(rt_f32(a)[k]));
    }
    rt_tensor *i = rt_tensor_new(ctx, RT_DTYPE_I32, 2, s2), *l = rt_tensor_new(ctx, RT_DTYPE_I64, 2, s2);
    rt_tensor_fill(i, 7);
    rt_tensor_fill(l, -3);
    all = 1;
    for (int64_t k = 0; k < n; k++) all &= rt_i32(i)[k] == 7 && rt_i64(l)[k] == -3;
    CHECK(all);
    rt_tensor_fill(l, 0);
    all = 1;
    for (int64_t k = 0; k < n; k++) all &= rt_i64(l)[k] == 0;
    CHECK(all);
    rt_tensor_release(v);
    rt_tensor_release(a);
    rt_tensor_release(i);
    rt_tensor_release(l);
}

int main(void)
{
    ctx = rt_ctx_new();
    RUN(test_binary_broadcast);
    RUN(test_unary);
    RUN(test_softmax);
    RUN(test_reduce);
    RUN(test_labels);
    RUN(test_fill);
    rt_ctx_free(ctx);
    return t_summary("test_tensor_math");
}
