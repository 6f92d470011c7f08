/*
 * test_clip.c -- rt_clip_grad_norm: the global L2 norm over the trainable
 * parameters with a gradient (frozen ones and ones without a gradient do
 * not count and are not touched), gradients scaled to the limit when
 * above it and left bit for bit when not, and bad limits refused.
 */
#include "retort.h"
#include "t.h"

#define NP 4

typedef struct fixture {
    rt_ctx *ctx;
    rt_tensor *v[NP], *g[NP];
    rt_param p[NP];
} fixture;

/* a: trainable [2, 3]; b: trainable [3]; c: frozen [2] with a gradient
 * buffer (must be ignored); d: trainable without a gradient. */
static void fixture_init(fixture *f)
{
    f->ctx = rt_ctx_new();
    int64_t s[NP][2] = {{2, 3}, {3, 0}, {2, 0}, {4, 0}};
    int nd[NP] = {2, 1, 1, 1};
    for (int i = 0; i < NP; i++) {
        f->v[i] = rt_tensor_new(f->ctx, RT_DTYPE_F32, nd[i], s[i]);
        f->g[i] = i == 3 ? NULL : rt_tensor_new(f->ctx, RT_DTYPE_F32, nd[i], s[i]);
        for (int64_t k = 0; f->g[i] && k < rt_numel(f->g[i]); k++)
            rt_f32(f->g[i])[k] = (float)(0.5 * (k + 1) * (i % 2 ? -1 : 1) + 0.25 * i);
    }
    f->p[0] = (rt_param){"a", f->v[0], f->g[0], RT_ROLE_TRAINABLE};
    f->p[1] = (rt_param){"b", f->v[1], f->g[1], RT_ROLE_TRAINABLE};
    f->p[2] = (rt_param){"c", f->v[2], f->g[2], RT_ROLE_FROZEN};
    f->p[3] = (rt_param){"d", f->v[3], NULL, RT_ROLE_TRAINABLE};
}

static void fixture_free(fixture *f)
{
    for (int i = 0; i < NP; i++) {
        rt_tensor_release(f->v[i]);
        rt_tensor_release(f->g[i]);
    }
    rt_ctx_free(f->ctx);
}

/* sqrt of the sum of squares of a and b's gradients, in double. */
static double norm_ab(fixture *f)
{
    double s = 0;
    for (int i = 0; i < 2; i++)
        for (int64_t k = 0; k < rt_numel(f->g[i]); k++) s += (double)rt_f32(f->g[i])[k] * rt_f32(f->g[i])[k];
    return sqrt(s);
}

static void test_clip_above(void)
{
    fixture f;
    fixture_init(&f);
    double want = norm_ab(&f), norm = -1;
    float a0[6], b0[3], c0[2];
    memcpy(a0, rt_f32(f.g[0]), sizeof a0);
    memcpy(b0, rt_f32(f.g[1]), sizeof b0);
    memcpy(c0, rt_f32(f.g[2]), sizeof c0);
    double limit = want / 4;
    CHECK(rt_clip_grad_norm(f.ctx, f.p, NP, limit, &norm) == RT_STATUS_OK);
    CHECK_NEAR(norm, want, 1e-12);           /* the norm before clipping */
    CHECK_NEAR(norm_ab(&f), limit, 1e-6);    /* after: the limit */
    for (int k = 0; k < 6; k++) CHECK_NEAR(rt_f32(f.g[0])[k], a0[k] * (limit / want), 1e-6);
    for (int k = 0; k < 3; k++) CHECK_NEAR(rt_f32(f.g[1])[k], b0[k] * (limit / want), 1e-6);
    CHECK(!memcmp(c0, rt_f32(f.g[2]), sizeof c0)); /* frozen: neither counted nor scaled */
    fixture_free(&f);
}

static void test_clip_below(void)
{
    fixture f;
    fixture_init(&f);
    double want = norm_ab(&f), norm = -1;
    float a0[6], b0[3];
    memcpy(a0, rt_f32(f.g[0]), sizeof a0);
    memcpy(b0, rt_f32(f.g[1]), sizeof b0);
    CHECK(rt_clip_grad_norm(f.ctx, f.p, NP, want * 1.5, &norm) == RT_STATUS_OK);
    CHECK_NEAR(norm, want, 1e-12);
    CHECK(!memcmp(a0, rt_f32(f.g[0]), sizeof a0)); /* untouched, bit for bit */
    CHECK(!memcmp(b0, rt_f32(f.g[1]), sizeof b0));
    fixture_free(&f);
}

static void test_clip_bad_limit(void)
{
    fixture f;
    fixture_init(&f);
    float a0[6];
    memcpy(a0, rt_f32(f.g[0]), sizeof a0);
    const double bad[] = {-1.0, 0.0, NAN, INFINITY};
    for (int i = 0; i < 4; i++) {
        double norm = -1;
        CHECK(rt_clip_grad_norm(f.ctx, f.p, NP, bad[i], &norm) == RT_STATUS_ERR_ARG);
        CHECK_CONTAINS(rt_ctx_message(f.ctx), "clip_grad_norm");
        CHECK(!memcmp(a0, rt_f32(f.g[0]), sizeof a0));
    }
    fixture_free(&f);
}

int main(void)
{
    RUN(test_clip_above);
    RUN(test_clip_below);
    RUN(test_clip_bad_limit);
    return t_summary("clip");
}
