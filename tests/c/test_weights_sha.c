/*
 * test_weights_sha.c -- rt_params_sha256, the weights' hash the manifests
 * record: the byte stream of retort.h rebuilt here and hashed with
 * rt_sha256_hex; independent of the order the tensors come in; any changed
 * value, shape or name changes it; strided views and repeated names are
 * errors that name the tensor.
 */
#include "retort.h"
#include "t.h"

static rt_ctx *ctx;

static void matches_the_documented_stream(void)
{
    float a[6] = {1, -2, 3.5f, 0, 1e-3f, 7}, b[2] = {0.25f, -0.5f};
    int64_t sa[2] = {2, 3}, sb[1] = {2};
    rt_tensor *ta = rt_tensor_from(ctx, RT_DTYPE_F32, 2, sa, a), *tb = rt_tensor_from(ctx, RT_DTYPE_F32, 1, sb, b);
    /* sorted: "layers.0.bias" < "layers.0.weight" */
    unsigned char stream[256];
    size_t n = 0;
#define PUT(lit) memcpy(stream + n, lit, sizeof lit - 1), n += sizeof lit - 1
    PUT("layers.0.bias\0f32\0" "2\0");
    memcpy(stream + n, b, sizeof b), n += sizeof b;
    PUT("layers.0.weight\0f32\0" "2,3\0");
    memcpy(stream + n, a, sizeof a), n += sizeof a;
    char want[65], got[65], swapped[65];
    rt_sha256_hex(stream, n, want);
    const char *names[] = {"layers.0.weight", "layers.0.bias"}, *rev[] = {"layers.0.bias", "layers.0.weight"};
    const rt_tensor *ts[] = {ta, tb}, *trev[] = {tb, ta};
    CHECK(rt_params_sha256(ctx, 2, names, ts, got) == RT_STATUS_OK);
    CHECK(!strcmp(got, want));
    CHECK(rt_params_sha256(ctx, 2, rev, trev, swapped) == RT_STATUS_OK);
    CHECK(!strcmp(swapped, want)); /* the order given does not matter */
    rt_f32(ta)[5] = 7.0001f;
    CHECK(rt_params_sha256(ctx, 2, names, ts, got) == RT_STATUS_OK && strcmp(got, want));
    rt_f32(ta)[5] = 7;
    int64_t s32[2] = {3, 2}; /* same bytes, another shape */
    rt_tensor *tr = rt_tensor_reshape(ctx, ta, 2, s32);
    const rt_tensor *tsr[] = {tr, tb};
    CHECK(tr && rt_params_sha256(ctx, 2, names, tsr, got) == RT_STATUS_OK && strcmp(got, want));
    const char *other[] = {"layers.1.weight", "layers.0.bias"};
    CHECK(rt_params_sha256(ctx, 2, other, ts, got) == RT_STATUS_OK && strcmp(got, want));
    rt_tensor_release(tr);
    rt_tensor_release(ta);
    rt_tensor_release(tb);
}

static void refuses_views_and_repeated_names(void)
{
    int64_t s[2] = {3, 4}, vs[2] = {3, 2}, st[2] = {4, 1};
    rt_tensor *t = rt_tensor_new(ctx, RT_DTYPE_F32, 2, s);
    rt_tensor *v = rt_tensor_view(ctx, t, 2, vs, st, 0); /* columns 0-1: strided */
    const char *names[] = {"w"}, *twice[] = {"w", "w"};
    const rt_tensor *tv[] = {v}, *tt[] = {t, t};
    char out[65];
    CHECK(v && rt_params_sha256(ctx, 1, names, tv, out) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(ctx), "tensor 'w' [3, 2] is not contiguous");
    CHECK(rt_params_sha256(ctx, 2, twice, tt, out) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "the name 'w' appears twice");
    CHECK(rt_params_sha256(ctx, 0, NULL, NULL, out) == RT_STATUS_OK && strlen(out) == 64);
    rt_tensor_release(v);
    rt_tensor_release(t);
}

int main(void)
{
    ctx = rt_ctx_new();
    RUN(matches_the_documented_stream);
    RUN(refuses_views_and_repeated_names);
    rt_ctx_free(ctx);
    return t_summary("test_weights_sha");
}
