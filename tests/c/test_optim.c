/*
 * test_optim.c -- SGD / Adam / AdamW against double-precision references
 * written here from the torch.optim formulas, state naming, restore, the
 * tied parameter list, schedules and config checks.
 */
#include "retort.h"
#include "t.h"

#include <stdlib.h>

#define NP 3 /* w [2, 3], b [3], frozen [2] (no gradient) */
#define STEPS 3

typedef struct fixture {
    rt_ctx *ctx;
    rt_tensor *w, *b, *frozen, *gw, *gb;
    rt_param params[NP];
} fixture;

static void fixture_init(fixture *f)
{
    f->ctx = rt_ctx_new();
    int64_t sw[2] = {2, 3}, sb[1] = {3}, sf[1] = {2};
    f->w = rt_tensor_new(f->ctx, RT_DTYPE_F32, 2, sw);
    f->gw = rt_tensor_new(f->ctx, RT_DTYPE_F32, 2, sw);
    f->b = rt_tensor_new(f->ctx, RT_DTYPE_F32, 1, sb);
    f->gb = rt_tensor_new(f->ctx, RT_DTYPE_F32, 1, sb);
    f->frozen = rt_tensor_new(f->ctx, RT_DTYPE_F32, 1, sf);
    static const float w0[6] = {0.5f, -1.25f, 2.0f, 0.1f, -0.3f, 0.75f};
    static const float b0[3] = {0.2f, -0.4f, 1.5f};
    memcpy(rt_f32(f->w), w0, sizeof w0);
    memcpy(rt_f32(f->b), b0, sizeof b0);
    rt_f32(f->frozen)[0] = 3;
    rt_f32(f->frozen)[1] = -3;
    f->params[0] = (rt_param){"w", f->w, f->gw, RT_ROLE_TRAINABLE};
    f->params[1] = (rt_param){"frozen", f->frozen, NULL, RT_ROLE_FROZEN};
    f->params[2] = (rt_param){"b", f->b, f->gb, RT_ROLE_TRAINABLE};
}

static void fixture_free(fixture *f)
{
    rt_tensor_release(f->w);
    rt_tensor_release(f->b);
    rt_tensor_release(f->frozen);
    rt_tensor_release(f->gw);
    rt_tensor_release(f->gb);
    rt_ctx_free(f->ctx);
}

/* The flat view: index 0..5 is w, 6..8 is b. */
#define NV 9
static float *elem(fixture *f, int i) { return i < 6 ? &rt_f32(f->w)[i] : &rt_f32(f->b)[i - 6]; }
static float *gelem(fixture *f, int i) { return i < 6 ? &rt_f32(f->gw)[i] : &rt_f32(f->gb)[i - 6]; }

/* Gradients that change with the step and depend on the current values, as
 * in training. */
static void set_grads(fixture *f, int t)
{
    for (int i = 0; i < NV; i++) *gelem(f, i) = (float)(0.3 * cos(1.7 * i + t) + 0.2 * *elem(f, i));
}

static const float lrs[STEPS] = {0.1f, 0.05f, 0.02f};

/* Runs STEPS steps of cfg and of the reference beside it, comparing the
 * values (and the state tensors) after each step. */
static void run_against_reference(const rt_optim_cfg *cfg)
{
    fixture f;
    fixture_init(&f);
    rt_optim *o = rt_optim_new(f.ctx, cfg);
    CHECK(o != NULL);
    if (!o) {
        fixture_free(&f);
        return;
    }
    double p[NV], m[NV] = {0}, v[NV] = {0}, buf[NV] = {0};
    for (int i = 0; i < NV; i++) p[i] = *elem(&f, i);
    for (int t = 1; t <= STEPS; t++) {
        set_grads(&f, t);
        double lr = lrs[t - 1], wd = cfg->weight_decay;
        for (int i = 0; i < NV; i++) {
            double g = *gelem(&f, i);
            if (cfg->kind == RT_OPTIM_SGD) {
                double d = g + wd * p[i];
                if (cfg->momentum != 0) {
                    buf[i] = t == 1 ? d : cfg->momentum * buf[i] + (1 - (double)cfg->dampening) * d;
                    d = cfg->nesterov ? d + cfg->momentum * buf[i] : buf[i];
                }
                p[i] -= lr * d;
            } else {
                if (cfg->decoupled) p[i] *= 1 - lr * wd;
                else g += wd * p[i];
                m[i] = cfg->beta1 * m[i] + (1 - (double)cfg->beta1) * g;
                v[i] = cfg->beta2 * v[i] + (1 - (double)cfg->beta2) * g * g;
                double mhat = m[i] / (1 - pow(cfg->beta1, t)), vhat = v[i] / (1 - pow(cfg->beta2, t));
                p[i] -= lr * mhat / (sqrt(vhat) + cfg->eps);
            }
        }
        CHECK(rt_optim_step(o, f.ctx, f.params, NP, lrs[t - 1]) == RT_STATUS_OK);
        CHECK(rt_optim_steps(o) == t);
        for (int i = 0; i < NV; i++) CHECK_NEAR(*elem(&f, i), p[i], 2e-6);
        CHECK(rt_f32(f.frozen)[0] == 3 && rt_f32(f.frozen)[1] == -3);
        if (cfg->kind == RT_OPTIM_ADAM) {
            CHECK(rt_optim_state_count(o) == 4);
            for (int i = 0; i < NV; i++) {
                int s = i < 6 ? 0 : 2, k = i < 6 ? i : i - 6;
                CHECK_NEAR(rt_f32(rt_optim_state_tensor(o, s))[k], m[i], 1e-6);
                CHECK_NEAR(rt_f32(rt_optim_state_tensor(o, s + 1))[k], v[i], 1e-6);
            }
        } else if (cfg->momentum != 0) {
            CHECK(rt_optim_state_count(o) == 2);
            for (int i = 0; i < NV; i++)
                CHECK_NEAR(rt_f32(rt_optim_state_tensor(o, i < 6 ? 0 : 1))[i < 6 ? i : i - 6], buf[i], 1e-6);
        } else {
            CHECK(rt_optim_state_count(o) == 0);
        }
    }
    rt_optim_free(o);
    fixture_free(&f);
}

static rt_optim_cfg sgd(float wd, float mom, float damp, int nesterov)
{
    return (rt_optim_cfg){.kind = RT_OPTIM_SGD, .lr = 0.1f, .weight_decay = wd, .momentum = mom,
                          .dampening = damp, .nesterov = nesterov};
}

static rt_optim_cfg adam(float wd, int decoupled)
{
    return (rt_optim_cfg){.kind = RT_OPTIM_ADAM, .lr = 0.1f, .weight_decay = wd, .beta1 = 0.8f,
                          .beta2 = 0.95f, .eps = 1e-2f, .decoupled = decoupled};
}

static void test_sgd(void)
{
    rt_optim_cfg c[] = {sgd(0, 0, 0, 0), sgd(0.05f, 0, 0, 0)};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) run_against_reference(&c[i]);
}

static void test_sgd_momentum(void)
{
    rt_optim_cfg c[] = {sgd(0, 0.9f, 0, 0), sgd(0.05f, 0.9f, 0.3f, 0), sgd(0.01f, 0.5f, 1.0f, 0)};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) run_against_reference(&c[i]);
}

static void test_sgd_nesterov(void)
{
    rt_optim_cfg c[] = {sgd(0, 0.9f, 0, 1), sgd(0.05f, 0.7f, 0, 1)};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) run_against_reference(&c[i]);
}

static void test_adam(void)
{
    rt_optim_cfg c[] = {adam(0, 0), adam(0.1f, 0)};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) run_against_reference(&c[i]);
    rt_optim_cfg tiny = adam(0, 0);
    tiny.eps = 1e-8f;
    tiny.beta1 = 0.9f;
    tiny.beta2 = 0.999f;
    run_against_reference(&tiny);
}

static void test_adamw(void)
{
    rt_optim_cfg c[] = {adam(0.1f, 1), adam(0.5f, 1)};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) run_against_reference(&c[i]);
    /* AdamW with wd differs from Adam with the same wd (not the same rule). */
    float after[2];
    for (int d = 0; d < 2; d++) {
        fixture f;
        fixture_init(&f);
        rt_optim_cfg cfg = adam(0.5f, d);
        rt_optim *o = rt_optim_new(f.ctx, &cfg);
        set_grads(&f, 1);
        rt_optim_step(o, f.ctx, f.params, NP, 0.1f);
        after[d] = rt_f32(f.w)[2];
        rt_optim_free(o);
        fixture_free(&f);
    }
    CHECK(fabsf(after[0] - after[1]) > 1e-3f);
}

static void test_state_names(void)
{
    struct {
        rt_optim_cfg cfg;
        int count;
        const char *names[4];
    } cases[] = {
        {sgd(0, 0, 0, 0), 0, {NULL}},
        {sgd(0, 0.9f, 0, 0), 2, {"w.momentum_buffer", "b.momentum_buffer"}},
        {adam(0, 0), 4, {"w.exp_avg", "w.exp_avg_sq", "b.exp_avg", "b.exp_avg_sq"}},
        {adam(0.1f, 1), 4, {"w.exp_avg", "w.exp_avg_sq", "b.exp_avg", "b.exp_avg_sq"}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fixture f;
        fixture_init(&f);
        rt_optim *o = rt_optim_new(f.ctx, &cases[c].cfg);
        CHECK(rt_optim_state_count(o) == 0);
        CHECK(rt_optim_steps(o) == 0);
        CHECK(rt_optim_config(o)->kind == cases[c].cfg.kind);
        set_grads(&f, 1);
        CHECK(rt_optim_step(o, f.ctx, f.params, NP, 0.1f) == RT_STATUS_OK);
        CHECK(rt_optim_state_count(o) == cases[c].count);
        for (int i = 0; i < cases[c].count; i++) {
            const char *n = rt_optim_state_name(o, i);
            CHECK(n && !strcmp(n, cases[c].names[i]));
            rt_tensor *t = rt_optim_state_tensor(o, i);
            CHECK(t && rt_tensor_same_shape(t, i < cases[c].count / 2 ? f.w : f.b));
        }
        CHECK(rt_optim_state_name(o, -1) == NULL);
        CHECK(rt_optim_state_name(o, cases[c].count) == NULL);
        CHECK(rt_optim_state_tensor(o, cases[c].count) == NULL);
        rt_optim_free(o);
        fixture_free(&f);
    }
    rt_optim_free(NULL);
}

/* A checkpoint for restore: names and clones of an optimizer's state. */
typedef struct saved {
    int n;
    char names[8][64];
    rt_tensor *t[8];
    const char *skip;     /* lookup pretends this one is absent */
    rt_tensor *wrong;     /* returned for every name when set */
} saved;

static rt_tensor *lookup(void *ud, const char *name)
{
    saved *s = ud;
    if (s->wrong) return s->wrong;
    if (s->skip && !strcmp(name, s->skip)) return NULL;
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) return s->t[i];
    return NULL;
}

static void test_restore(void)
{
    rt_optim_cfg cfgs[] = {adam(0.1f, 0), adam(0.1f, 1), sgd(0.01f, 0.9f, 0.2f, 0), sgd(0, 0.9f, 0, 1)};
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        fixture f;
        fixture_init(&f);
        rt_optim *a = rt_optim_new(f.ctx, &cfgs[c]);
        for (int t = 1; t <= 2; t++) {
            set_grads(&f, t);
            rt_optim_step(a, f.ctx, f.params, NP, lrs[t - 1]);
        }
        saved s = {0};
        s.n = rt_optim_state_count(a);
        for (int i = 0; i < s.n; i++) {
            snprintf(s.names[i], sizeof s.names[i], "%s", rt_optim_state_name(a, i));
            s.t[i] = rt_tensor_clone(f.ctx, rt_optim_state_tensor(a, i));
        }
        float w[6], b[3];
        memcpy(w, rt_f32(f.w), sizeof w);
        memcpy(b, rt_f32(f.b), sizeof b);
        set_grads(&f, 3);
        rt_optim_step(a, f.ctx, f.params, NP, lrs[2]);
        float wa[6], ba[3];
        memcpy(wa, rt_f32(f.w), sizeof wa);
        memcpy(ba, rt_f32(f.b), sizeof ba);

        /* Back to the values after step 2; a new optimizer restored from
         * the saved state takes exactly the same third step. */
        memcpy(rt_f32(f.w), w, sizeof w);
        memcpy(rt_f32(f.b), b, sizeof b);
        rt_optim *o = rt_optim_new(f.ctx, &cfgs[c]);
        CHECK(rt_optim_restore(o, f.ctx, f.params, NP, 2, lookup, &s) == RT_STATUS_OK);
        CHECK(rt_optim_steps(o) == 2);
        CHECK(rt_optim_state_count(o) == s.n);
        set_grads(&f, 3);
        CHECK(rt_optim_step(o, f.ctx, f.params, NP, lrs[2]) == RT_STATUS_OK);
        CHECK(!memcmp(wa, rt_f32(f.w), sizeof wa));
        CHECK(!memcmp(ba, rt_f32(f.b), sizeof ba));
        CHECK(rt_optim_steps(o) == 3);

        /* Failures name the state and leave the optimizer as it was. */
        s.skip = s.names[s.n - 1];
        CHECK(rt_optim_restore(o, f.ctx, f.params, NP, 5, lookup, &s) != RT_STATUS_OK);
        CHECK_CONTAINS(rt_ctx_message(f.ctx), s.names[s.n - 1]);
        CHECK_CONTAINS(rt_ctx_message(f.ctx), "missing");
        CHECK(rt_optim_steps(o) == 3);
        CHECK(rt_optim_state_count(o) == s.n);
        s.skip = NULL;
        int64_t sh[1] = {5};
        s.wrong = rt_tensor_new(f.ctx, RT_DTYPE_F32, 1, sh);
        CHECK(rt_optim_restore(o, f.ctx, f.params, NP, 5, lookup, &s) == RT_STATUS_ERR_SHAPE);
        CHECK_CONTAINS(rt_ctx_message(f.ctx), s.names[0]);
        CHECK_CONTAINS(rt_ctx_message(f.ctx), "[5]");
        CHECK_CONTAINS(rt_ctx_message(f.ctx), "[2, 3]");
        CHECK(rt_optim_steps(o) == 3);
        CHECK(rt_optim_restore(o, f.ctx, f.params, NP, -1, lookup, &s) != RT_STATUS_OK);
        rt_tensor_release(s.wrong);
        for (int i = 0; i < s.n; i++) rt_tensor_release(s.t[i]);
        rt_optim_free(a);
        rt_optim_free(o);
        fixture_free(&f);
    }
}

static void test_mismatch(void)
{
    fixture f;
    fixture_init(&f);
    rt_optim_cfg cfg = adam(0, 0);
    rt_optim *o = rt_optim_new(f.ctx, &cfg);
    set_grads(&f, 1);
    CHECK(rt_optim_step(o, f.ctx, f.params, NP, 0.1f) == RT_STATUS_OK);
    float w[6];
    memcpy(w, rt_f32(f.w), sizeof w);

    CHECK(rt_optim_step(o, f.ctx, f.params, NP - 1, 0.1f) != RT_STATUS_OK);
    CHECK_CONTAINS(rt_ctx_message(f.ctx), "2 parameters");
    CHECK_CONTAINS(rt_ctx_message(f.ctx), "created for 3");

    int64_t s4[1] = {4};
    rt_tensor *b4 = rt_tensor_new(f.ctx, RT_DTYPE_F32, 1, s4);
    rt_tensor *g4 = rt_tensor_new(f.ctx, RT_DTYPE_F32, 1, s4);
    rt_param p[NP] = {f.params[0], f.params[1], {"b", b4, g4, RT_ROLE_TRAINABLE}};
    CHECK(rt_optim_step(o, f.ctx, p, NP, 0.1f) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(f.ctx), "'b'");
    CHECK_CONTAINS(rt_ctx_message(f.ctx), "[4]");
    CHECK_CONTAINS(rt_ctx_message(f.ctx), "[3]");

    rt_param q[NP] = {f.params[0], f.params[1], {"bias", f.b, f.gb, RT_ROLE_TRAINABLE}};
    CHECK(rt_optim_step(o, f.ctx, q, NP, 0.1f) != RT_STATUS_OK);
    CHECK_CONTAINS(rt_ctx_message(f.ctx), "'bias'");

    /* A gradient of the wrong shape, and a frozen parameter that gains a
     * gradient (it has no state). */
    rt_param r[NP] = {{"w", f.w, f.gb, RT_ROLE_TRAINABLE}, f.params[1], f.params[2]};
    CHECK(rt_optim_step(o, f.ctx, r, NP, 0.1f) == RT_STATUS_ERR_SHAPE);
    CHECK_CONTAINS(rt_ctx_message(f.ctx), "'w'");
    int64_t s2[1] = {2};
    rt_tensor *gf = rt_tensor_new(f.ctx, RT_DTYPE_F32, 1, s2);
    rt_param u[NP] = {f.params[0], {"frozen", f.frozen, gf, RT_ROLE_TRAINABLE}, f.params[2]};
    CHECK(rt_optim_step(o, f.ctx, u, NP, 0.1f) != RT_STATUS_OK);
    CHECK_CONTAINS(rt_ctx_message(f.ctx), "'frozen'");
    CHECK(rt_optim_step(o, f.ctx, f.params, NP, -0.1f) != RT_STATUS_OK);
    CHECK_CONTAINS(rt_ctx_message(f.ctx), "lr");

    /* None of the refused steps touched anything. */
    CHECK(!memcmp(w, rt_f32(f.w), sizeof w));
    CHECK(rt_optim_steps(o) == 1);
    CHECK(rt_optim_step(o, f.ctx, f.params, NP, 0.1f) == RT_STATUS_OK);
    rt_tensor_release(b4);
    rt_tensor_release(g4);
    rt_tensor_release(gf);
    rt_optim_free(o);
    fixture_free(&f);
}

static void test_schedules(void)
{
    rt_schedule c = {.kind = RT_SCHED_CONSTANT, .lr = 0.1f};
    CHECK_NEAR(rt_schedule_lr(&c, 0), 0.1, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&c, 1000000), 0.1, 1e-7);
    c.warmup = 4;
    CHECK_NEAR(rt_schedule_lr(&c, 0), 0.025, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&c, 1), 0.05, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&c, 3), 0.1, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&c, 4), 0.1, 1e-7);

    rt_schedule s = {.kind = RT_SCHED_STEP, .lr = 1.0f, .gamma = 0.5f, .step_size = 10};
    CHECK_NEAR(rt_schedule_lr(&s, 0), 1, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&s, 9), 1, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&s, 10), 0.5, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&s, 29), 0.25, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&s, 30), 0.125, 1e-7);
    s.warmup = 2;
    CHECK_NEAR(rt_schedule_lr(&s, 0), 0.5, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&s, 2), 1, 1e-7);

    rt_schedule k = {.kind = RT_SCHED_COSINE, .lr = 1.0f, .min_lr = 0.1f, .warmup = 10, .total = 110};
    CHECK_NEAR(rt_schedule_lr(&k, 0), 0.1, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&k, 4), 0.5, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&k, 9), 1.0, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&k, 10), 1.0, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&k, 60), 0.55, 1e-6);                              /* halfway */
    CHECK_NEAR(rt_schedule_lr(&k, 35), 0.1 + 0.45 * (1 + cos(3.14159265358979 / 4)), 1e-6);
    CHECK_NEAR(rt_schedule_lr(&k, 109), 0.1 + 0.45 * (1 + cos(3.14159265358979 * 99 / 100)), 1e-6);
    CHECK_NEAR(rt_schedule_lr(&k, 110), 0.1, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&k, 5000), 0.1, 1e-7);
    k.warmup = 0;
    CHECK_NEAR(rt_schedule_lr(&k, 0), 1.0, 1e-7);
    CHECK_NEAR(rt_schedule_lr(&k, 55), 0.55, 1e-6);
}

static void test_bad_configs(void)
{
    struct {
        rt_optim_cfg cfg;
        const char *field;
    } bad[] = {
        {{.kind = (rt_optim_kind)7, .lr = 0.1f}, "kind"},
        {sgd(0, 0, 0, 0), "lr"},
        {sgd(-1, 0, 0, 0), "weight_decay"},
        {sgd(NAN, 0, 0, 0), "weight_decay"},
        {sgd(0, -0.5f, 0, 0), "momentum"},
        {sgd(0, 0.9f, 1.5f, 0), "dampening"},
        {sgd(0, 0, 0, 1), "nesterov"},
        {sgd(0, 0.9f, 0.1f, 1), "nesterov"},
        {adam(0, 0), "beta1"},
        {adam(0, 0), "beta2"},
        {adam(0, 1), "eps"},
        {adam(0, 0), "lr"},
    };
    bad[1].cfg.lr = -0.1f;
    bad[8].cfg.beta1 = 1.0f;
    bad[9].cfg.beta2 = -0.1f;
    bad[10].cfg.eps = 0;
    bad[11].cfg.lr = INFINITY;
    rt_ctx *ctx = rt_ctx_new();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rt_ctx_clear(ctx);
        rt_optim *o = rt_optim_new(ctx, &bad[i].cfg);
        CHECK(o == NULL);
        rt_optim_free(o);
        CHECK(rt_ctx_status(ctx) == RT_STATUS_ERR_ARG);
        CHECK_CONTAINS(rt_ctx_message(ctx), bad[i].field);
    }
    /* The value appears in the message too. */
    rt_optim_cfg c = sgd(0, 0, 0, 0);
    c.lr = -0.25f;
    CHECK(rt_optim_new(ctx, &c) == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), "-0.25");
    rt_optim_cfg good[] = {sgd(0, 0, 0, 0), sgd(0.1f, 0.9f, 0.5f, 0), sgd(0, 0.9f, 0, 1), adam(0, 0), adam(0.01f, 1)};
    good[0].lr = 0;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        rt_optim *o = rt_optim_new(ctx, &good[i]);
        CHECK(o != NULL);
        rt_optim_free(o);
    }
    rt_ctx_free(ctx);
}

int main(void)
{
    RUN(test_sgd);
    RUN(test_sgd_momentum);
    RUN(test_sgd_nesterov);
    RUN(test_adam);
    RUN(test_adamw);
    RUN(test_state_names);
    RUN(test_restore);
    RUN(test_mismatch);
    RUN(test_schedules);
    RUN(test_bad_configs);
    return t_summary("optim");
}
