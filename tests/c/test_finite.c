/*
 * test_finite.c -- NaN and inf where numbers enter the core: the finite
 * check kernel against its reference twin, tensor and checkpoint checks,
 * the optimizer's update check, IDX data and datasets.
 */
#include "retort.h"
#include "t.h"

#include <float.h>
#include <stdint.h>
#include <unistd.h>

static const float BAD[] = {NAN, INFINITY, -INFINITY};

/* Every length 0..300 (blocks, lanes and tails), a bad value at every
 * position, next to finite extremes that must not count: FLT_MAX,
 * denormals, -0. */
static void test_kernel_vs_ref(void)
{
    enum { N = 2100 };
    float *x = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) x[i] = (i % 3 == 0) ? FLT_MAX : (i % 3 == 1 ? -1e-42f : -0.0f);
    CHECK(rt_check_finite(x, N) == -1 && rt_check_finite_ref(x, N) == -1);
    CHECK(rt_check_finite(x, 0) == -1);
    int mism = 0;
    for (int n = 1; n <= 300; n++)
        for (int k = 0; k < n; k++) {
            float keep = x[k];
            x[k] = BAD[(n + k) % 3];
            mism += rt_check_finite(x, n) != k || rt_check_finite_ref(x, n) != k;
            x[k] = keep;
        }
    CHECK(mism == 0);
    /* across the 1024-element block boundary, and two bad values: the first */
    for (int k = 1000; k < N; k += 7) {
        x[k] = NAN;
        x[N - 1] = INFINITY;
        mism += rt_check_finite(x, N) != k;
        x[k] = 1;
        x[N - 1] = 1;
    }
    CHECK(mism == 0);
    free(x);
}

static rt_tensor *tensor2(rt_ctx *ctx, int64_t r, int64_t c)
{
    int64_t s[2] = {r, c};
    return rt_tensor_new(ctx, RT_DTYPE_F32, 2, s);
}

static void test_tensor_message(void)
{
    rt_ctx *ctx = rt_ctx_new();
    rt_tensor *t = tensor2(ctx, 4, 5);
    CHECK(rt_tensor_check_finite(ctx, t, "weights") == RT_STATUS_OK);
    rt_f32(t)[2 * 5 + 3] = -INFINITY;
    rt_f32(t)[3 * 5 + 1] = NAN;
    CHECK(rt_tensor_check_finite(ctx, t, "weights") == RT_STATUS_ERR_NUMERIC);
    CHECK_CONTAINS(rt_ctx_message(ctx), "weights has a non-finite value: -inf at [2, 3] (0-based, of [4, 5])");
    CHECK(!rt_tensor_all_finite(t));
    rt_tensor_release(t);
    rt_ctx_free(ctx);
}

/* Weights read from a file: the reader accepts them (a file can be
 * inspected), every loader of weights refuses them by name and index. */
static void test_checkpoint_load(void)
{
    rt_ctx *ctx = rt_ctx_new();
    char path[] = "/tmp/rt_finite_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    rt_tensor *a = tensor2(ctx, 2, 3), *b = tensor2(ctx, 3, 4);
    const char *names[2] = {"layers.0.weight", "layers.0.bias"};
    const rt_tensor *ts[2] = {a, b};
    rt_f32(b)[7] = NAN;
    /* the writer refuses, naming the tensor and the index */
    CHECK(rt_st_write(ctx, path, 2, names, ts, 0, NULL, NULL) == RT_STATUS_ERR_NUMERIC);
    CHECK_CONTAINS(rt_ctx_message(ctx), "tensor 'layers.0.bias' has a non-finite value: nan at [1, 3]");
    /* a file with a NaN, as another program would write it */
    rt_f32(b)[7] = 0.5f;
    CHECK(rt_st_write(ctx, path, 2, names, ts, 0, NULL, NULL) == RT_STATUS_OK);
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (f) {
        fseek(f, 0, SEEK_END);
        long end = ftell(f);
        float nan = NAN;
        /* b is written last: its element 7 sits 4 * (12 - 7) bytes before the end */
        fseek(f, end - 4 * (12 - 7), SEEK_SET);
        fwrite(&nan, 4, 1, f);
        fclose(f);
    }
    rt_st *st = NULL;
    CHECK(rt_st_read(ctx, path, &st) == RT_STATUS_OK);
    if (st) {
        CHECK(rt_st_check_finite(ctx, st, path) == RT_STATUS_ERR_NUMERIC);
        CHECK_CONTAINS(rt_ctx_message(ctx), "tensor 'layers.0.bias' has a non-finite value: nan at [1, 3] (0-based");
        CHECK(strncmp(rt_ctx_message(ctx), path, strlen(path)) == 0);
        rt_st_free(st);
    }
    remove(path);
    rt_tensor_release(a);
    rt_tensor_release(b);
    rt_ctx_free(ctx);
}

/* The optimizer names a parameter the update made non-finite, and why. */
static void test_optimizer_update(void)
{
    static const rt_optim_cfg cfgs[3] = {
        {.kind = RT_OPTIM_ADAM, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f},
        {.kind = RT_OPTIM_SGD, .lr = 0.1f},
        {.kind = RT_OPTIM_SGD, .lr = 0.1f, .momentum = 0.9f},
    };
    for (int c = 0; c < 3; c++) {
        rt_ctx *ctx = rt_ctx_new();
        rt_tensor *w = tensor2(ctx, 3, 70), *g = tensor2(ctx, 3, 70);
        rt_tensor *v = tensor2(ctx, 1, 2), *gv = tensor2(ctx, 1, 2);
        for (int i = 0; i < 210; i++) rt_f32(g)[i] = 0.01f * (float)(i % 7);
        rt_param p[2] = {{"v", v, gv, RT_ROLE_TRAINABLE}, {"layers.0.weight", w, g, RT_ROLE_TRAINABLE}};
        rt_optim *o = rt_optim_new(ctx, &cfgs[c]);
        CHECK(rt_optim_step(o, ctx, p, 2, cfgs[c].lr) == RT_STATUS_OK);
        /* a NaN gradient: named with its index */
        rt_f32(g)[70 + 65] = NAN;
        CHECK(rt_optim_step(o, ctx, p, 2, cfgs[c].lr) == RT_STATUS_ERR_NUMERIC);
        CHECK_CONTAINS(rt_ctx_message(ctx), "the gradient of 'layers.0.weight' has a non-finite value: nan at [1, 65]");
        rt_optim_free(o);
        /* a finite gradient the learning rate overflows */
        for (int i = 0; i < 210; i++) rt_f32(w)[i] = 1, rt_f32(g)[i] = 1e30f;
        o = rt_optim_new(ctx, &cfgs[c]);
        rt_status st = rt_optim_step(o, ctx, p, 2, 1e20f);
        CHECK(st == RT_STATUS_ERR_NUMERIC);
        CHECK_CONTAINS(rt_ctx_message(ctx), "overflowed a finite gradient (lower the learning rate");
        CHECK_CONTAINS(rt_ctx_message(ctx), "'layers.0.weight");
        rt_optim_free(o);
        rt_tensor_release(w);
        rt_tensor_release(g);
        rt_tensor_release(v);
        rt_tensor_release(gv);
        rt_ctx_free(ctx);
    }
}

/* Adam's second moment overflows (g^2 > FLT_MAX) while the parameter
 * stays finite: that would reach the checkpoint, so it is an error too. */
static void test_optimizer_state(void)
{
    rt_ctx *ctx = rt_ctx_new();
    rt_optim_cfg cfg = {.kind = RT_OPTIM_ADAM, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    rt_tensor *w = tensor2(ctx, 1, 9), *g = tensor2(ctx, 1, 9);
    rt_f32(g)[4] = 1e30f;
    rt_param p[1] = {{"w", w, g, RT_ROLE_TRAINABLE}};
    rt_optim *o = rt_optim_new(ctx, &cfg);
    CHECK(rt_optim_step(o, ctx, p, 1, cfg.lr) == RT_STATUS_ERR_NUMERIC);
    CHECK_CONTAINS(rt_ctx_message(ctx), "state 'w.exp_avg_sq' has a non-finite value: inf at [0, 4]");
    rt_optim_free(o);
    rt_tensor_release(w);
    rt_tensor_release(g);
    rt_ctx_free(ctx);
}

/* Data enters finite: a dataset names the sample; an IDX file of floats
 * names the file, the sample and the byte offset. */
static void test_data(void)
{
    rt_ctx *ctx = rt_ctx_new();
    rt_tensor *x = tensor2(ctx, 6, 4);
    rt_f32(x)[4 * 4 + 2] = INFINITY;
    CHECK(rt_dataset_new(ctx, x, NULL) == NULL);
    CHECK(rt_ctx_status(ctx) == RT_STATUS_ERR_NUMERIC);
    CHECK_CONTAINS(rt_ctx_message(ctx), "sample 4 (0-based), value 2 is inf");
    rt_tensor_release(x);

    /* IDX f32 [3, 2], big-endian; sample 2, value 1 is NaN (0x7fc00000) */
    unsigned char buf[4 + 8 + 24] = {0, 0, 0x0D, 2, 0, 0, 0, 3, 0, 0, 0, 2};
    for (int i = 0; i < 6; i++) buf[12 + 4 * i] = 0x3f, buf[13 + 4 * i] = 0x80; /* 1.0f */
    buf[12 + 4 * 5] = 0x7f, buf[13 + 4 * 5] = 0xc0;
    rt_tensor *t = NULL;
    CHECK(rt_idx_read_mem(ctx, buf, sizeof buf, "images.idx", RT_DTYPE_F32, 1.0f, &t) == RT_STATUS_ERR_NUMERIC);
    CHECK(t == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), "images.idx: data: sample 2 (0-based), value 1 at offset 32 is nan");
    buf[12 + 4 * 5] = 0x3f, buf[13 + 4 * 5] = 0x80;
    CHECK(rt_idx_read_mem(ctx, buf, sizeof buf, "images.idx", RT_DTYPE_F32, 1.0f, &t) == RT_STATUS_OK);
    rt_tensor_release(t);
    t = NULL;
    /* a scale that is not finite */
    CHECK(rt_idx_read_mem(ctx, buf, sizeof buf, "images.idx", RT_DTYPE_F32, INFINITY, &t) != RT_STATUS_OK);
    CHECK_CONTAINS(rt_ctx_message(ctx), "scale");
    rt_tensor_release(t);
    rt_ctx_free(ctx);
}

/* Agreement and KL never call a non-finite teacher a perfect match. */
static void test_metrics(void)
{
    rt_ctx *ctx = rt_ctx_new();
    rt_tensor *s = tensor2(ctx, 3, 4), *t = tensor2(ctx, 3, 4);
    for (int i = 0; i < 12; i++) rt_f32(s)[i] = rt_f32(t)[i] = (float)(i % 5);
    CHECK(rt_count_agree(ctx, s, t) == 3);
    CHECK(rt_kl_sum(ctx, t, s, 1) < 1e-12);
    for (int i = 4; i < 8; i++) rt_f32(t)[i] = NAN;
    CHECK(rt_count_agree(ctx, s, t) < 0);
    CHECK_CONTAINS(rt_ctx_message(ctx), "teacher logits has a non-finite value: nan at [1, 0]");
    CHECK(rt_kl_sum(ctx, t, s, 1) < 0);
    CHECK_CONTAINS(rt_ctx_message(ctx), "KL: teacher logits has a non-finite value");
    CHECK(rt_js_sum(ctx, t, s, 1) < 0);
    rt_tensor_release(s);
    rt_tensor_release(t);
    rt_ctx_free(ctx);
}

int main(void)
{
    RUN(test_kernel_vs_ref);
    RUN(test_tensor_message);
    RUN(test_checkpoint_load);
    RUN(test_optimizer_update);
    RUN(test_optimizer_state);
    RUN(test_data);
    RUN(test_metrics);
    return t_summary("test_finite");
}
