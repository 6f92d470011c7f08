/*
 * test_gradcheck.c -- finite-difference gradient checks of EVERY loss and
 * student plugin in the built-in folder ($RETORT_TEST_BUILD/lib/retort/
 * plugins), so a new plugin is covered without new test code.
 *
 * Each plugin runs with its defaults and with variants its schema allows:
 * every choice of a string option, the other value of a boolean, T = 1 and
 * 4 for a 'temperature', a mid-range value for other bounded numbers, and
 * for students with a 'sizes' list a small three-layer net too, and for
 * students with 'vocab', 'width' and 'heads' (language models) a small one.  Pass:
 * max relative error (measure in retort.h) <= 1e-3.
 *
 * Then the numerics of docs/losses.md for every loss: logits of +-1e4,
 * all-equal logits, a -inf teacher logit (exact zero teacher
 * probabilities), T = 1e-3 and 1e3 where a temperature exists, batch of 1:
 * a finite value and a finite gradient that matches finite differences.
 *
 * And the checker itself: fixture plugins with wrong backwards
 * (tests/fixtures/gc_mutants.c) must be caught.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "retort.h"
#include "t.h"

#define TOL 1e-3

static rt_registry *reg;
static rt_ctx *ctx;
static char build[512];

/* RUN with an argument: one plugin variant is one test. */
static char cur_name[512];
static const rt_plugin_desc *cur_desc;
static const char *cur_opts;

static void run_named(void (*fn)(void))
{
    t_cur = cur_name;
    t_cur_failed = 0;
    fn();
    if (t_cur_failed) {
        t_failed++;
        fprintf(stderr, "FAIL %s\n", cur_name);
    } else {
        t_passed++;
    }
}

/* ---------------------------------------------------------- option variants */

#define MAX_VARIANTS 32
typedef struct variants {
    int n;
    char v[MAX_VARIANTS][256];
} variants;

static void add(variants *vs, const char *base, const char *fmt, ...) RT_PRINTF(3, 4);

/* Adds base (a JSON object's inner text, maybe "") joined with one more
 * "key": value pair given by fmt. */
static void add(variants *vs, const char *base, const char *fmt, ...)
{
    if (vs->n == MAX_VARIANTS) return;
    char extra[200] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(extra, sizeof extra, fmt, ap);
    va_end(ap);
    snprintf(vs->v[vs->n++], sizeof vs->v[0], "{%s%s%s}", base, *base && *extra ? "," : "", extra);
}

static const rt_option *opt(const rt_plugin_desc *d, const char *name)
{
    for (const rt_option *o = d->options; o && o->name; o++)
        if (!strcmp(o->name, name)) return o;
    return NULL;
}

/* Single-option changes on top of base. */
static void option_variants(const rt_plugin_desc *d, const char *base, variants *vs)
{
    add(vs, base, "%s", "");
    for (const rt_option *o = d->options; o && o->name; o++) {
        if (strstr(base, o->name)) continue;
        if (o->type == RT_OPT_STRING && o->choices) {
            char c[128];
            snprintf(c, sizeof c, "%s", o->choices);
            for (char *save = NULL, *p = strtok_r(c, "|", &save); p; p = strtok_r(NULL, "|", &save)) {
                char quoted[140];
                snprintf(quoted, sizeof quoted, "\"%s\"", p);
                if (!o->def || strcmp(o->def, quoted)) add(vs, base, "\"%s\":\"%s\"", o->name, p);
            }
        } else if (o->type == RT_OPT_BOOL) {
            add(vs, base, "\"%s\":%s", o->name, o->def && !strcmp(o->def, "true") ? "false" : "true");
        } else if (o->type == RT_OPT_NUMBER && !strcmp(o->name, "temperature")) {
            add(vs, base, "\"temperature\":1");
            add(vs, base, "\"temperature\":4");
        } else if (o->type == RT_OPT_NUMBER && o->min < o->max && o->max - o->min < 1e6) {
            add(vs, base, "\"%s\":%.17g", o->name, o->min + (o->max - o->min) / 4);
        }
    }
}

/* ------------------------------------------------------------------ losses */

static void loss_variant(void)
{
    /* Two shapes: a batch of several rows, and one row of many classes.
     * A fresh instance for each: a loss with parameters (a FitNet
     * regressor) is bound to its first batch's shapes. */
    int64_t shapes[2][2] = {{4, 5}, {1, 9}};
    for (int k = 0; k < 2; k++) {
        rt_instance *l = NULL;
        if (rt_instance_create(reg, ctx, RT_KIND_LOSS, cur_desc->name, cur_opts, &l)) {
            fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
            CHECK(!"instance_create");
            return;
        }
        rt_gradcheck_result res;
        rt_status st = rt_gradcheck_loss(l, ctx, shapes[k][0], shapes[k][1], 11 + (uint64_t)k, 1e-2, &res);
        if (st) fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
        CHECK(st == RT_STATUS_OK);
        CHECK(res.max_rel_err <= TOL);
        CHECK(res.checked >= shapes[k][0] * shapes[k][1] - 2); /* few kinks in a smooth loss */
        printf("  loss %-12s %-34s [%lld, %lld]: worst %.2e (%s), %lld checked, %lld skipped\n", cur_desc->name,
               cur_opts, (long long)shapes[k][0], (long long)shapes[k][1], res.max_rel_err, res.worst,
               (long long)res.checked, (long long)res.skipped);
        rt_instance_release(l);
    }
}

/* One numerics case: a finite value and a finite gradient, and where the
 * checker can resolve the function in float32, agreement with finite
 * differences.  refusable: a masked -inf logit may instead be refused with
 * a message (a squared error of -inf has no finite value), but never
 * answered with a silent inf or NaN. */
typedef struct ncase {
    const char *what;
    int64_t N, C;
    float s[64], t[64];
    int32_t y[8];
    int refusable;
    int no_fd; /* finite value and gradient only (see loss_numerics) */
} ncase;

static void numerics_case(rt_instance *l, const ncase *c)
{
    int64_t shape[2] = {c->N, c->C};
    rt_tensor *s = rt_tensor_from(ctx, RT_DTYPE_F32, 2, shape, c->s);
    rt_tensor *t = rt_tensor_from(ctx, RT_DTYPE_F32, 2, shape, c->t);
    rt_tensor *y = rt_tensor_from(ctx, RT_DTYPE_I32, 1, shape, c->y);
    rt_tensor *g = rt_tensor_new(ctx, RT_DTYPE_F32, 2, shape);
    rt_signal sig = {.logits = t};
    rt_loss_in in = {.student = s, .teacher = &sig, .target = y};
    double v = NAN;
    rt_status st = rt_loss_forward(l, ctx, &in, &v);
    if (st && c->refusable) {
        printf("    %-40s refused: %s\n", c->what, rt_ctx_message(ctx));
        CHECK(st == RT_STATUS_ERR_NUMERIC || st == RT_STATUS_ERR_ARG);
        CHECK(rt_loss_backward(l, ctx, &in, 1.0f, g) != RT_STATUS_OK); /* consistent */
        goto out;
    }
    if (st) fprintf(stderr, "  %s: %s\n", c->what, rt_ctx_message(ctx));
    CHECK(st == RT_STATUS_OK);
    CHECK(isfinite(v));
    st = rt_loss_backward(l, ctx, &in, 1.0f, g);
    CHECK(st == RT_STATUS_OK);
    CHECK(rt_tensor_all_finite(g));
    if (c->no_fd) {
        printf("    %-40s value %-12.6g finite (no finite differences)\n", c->what, v);
        goto out;
    }
    rt_gradcheck_result res;
    st = rt_gradcheck_loss_at(l, ctx, &in, 1e-2, &res);
    if (st) fprintf(stderr, "  %s: %s\n", c->what, rt_ctx_message(ctx));
    CHECK(st == RT_STATUS_OK);
    if (!(res.max_rel_err <= TOL))
        fprintf(stderr, "  %s: worst %.3g at %s\n", c->what, res.max_rel_err, res.worst);
    CHECK(res.max_rel_err <= TOL);
    printf("    %-40s value %-12.6g worst %.2e, %lld checked, %lld skipped\n", c->what, v, res.max_rel_err,
           (long long)res.checked, (long long)res.skipped);
out:
    rt_tensor_release(s);
    rt_tensor_release(t);
    rt_tensor_release(y);
    rt_tensor_release(g);
}

static void loss_numerics(void)
{
    rt_instance *l = NULL;
    if (rt_instance_create(reg, ctx, RT_KIND_LOSS, cur_desc->name, cur_opts, &l)) {
        fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
        CHECK(!"instance_create");
        return;
    }
    printf("  loss %s %s\n", cur_desc->name, cur_opts);
    const char *tp = strstr(cur_opts, "\"temperature\":");
    double T = tp ? atof(tp + 14) : 1;
    unsigned needs = cur_desc->loss->needs;
    rt_rng r;
    rt_rng_seed(&r, 5, 0);
    for (int N = 1; N <= 3; N += 2) {
        const int C = 5;
        ncase c = {.N = N, .C = C};
        char what[64];
        c.what = what;
        for (int i = 0; i < N; i++) c.y[i] = (int32_t)((i * 2 + 1) % C);
        /* +-1e4 student logits against a moderate teacher, and both
         * huge (teacher probabilities underflow to exact zeros).  The
         * float32 spacing at 1e4 is ~1e-3: with T < 1 the softmax changes
         * within one spacing, so no difference quotient can resolve it and
         * only finiteness is checked there. */
        c.no_fd = T < 1;
        for (int i = 0; i < N * C; i++) {
            c.s[i] = (rt_rng_u64(&r) & 1) ? 1e4f : -1e4f;
            c.t[i] = 2 * rt_rng_normal(&r);
        }
        snprintf(what, sizeof what, "N=%d student +-1e4", N);
        numerics_case(l, &c);
        for (int i = 0; i < N * C; i++) c.t[i] = (rt_rng_u64(&r) & 1) ? 1e4f : -1e4f;
        snprintf(what, sizeof what, "N=%d student and teacher +-1e4", N);
        numerics_case(l, &c);
        /* All-equal logits: a uniform softmax, a zero-size max gap. */
        for (int i = 0; i < N * C; i++) c.s[i] = 3.0f, c.t[i] = 2 * rt_rng_normal(&r);
        c.no_fd = 0;
        snprintf(what, sizeof what, "N=%d all-equal student logits", N);
        numerics_case(l, &c);
        for (int i = 0; i < N * C; i++) c.s[i] = 2 * rt_rng_normal(&r), c.t[i] = -2.0f;
        snprintf(what, sizeof what, "N=%d all-equal teacher logits", N);
        numerics_case(l, &c);
        /* Both all-equal, so both uniform and equal: a minimum (a kink for
         * tvd) where the exact gradient is 0 and finite differences cannot
         * resolve it; the value and gradient must still be finite (the
         * exact zero is checked in test_losses_more). */
        for (int i = 0; i < N * C; i++) c.s[i] = 3.0f, c.t[i] = -2.0f;
        c.no_fd = 1;
        snprintf(what, sizeof what, "N=%d all-equal student and teacher", N);
        numerics_case(l, &c);
        c.no_fd = 0;
        /* Moderate random logits (the batch-of-1 case when N = 1). */
        for (int i = 0; i < N * C; i++) c.s[i] = 2 * rt_rng_normal(&r), c.t[i] = 2 * rt_rng_normal(&r);
        snprintf(what, sizeof what, "N=%d random logits", N);
        numerics_case(l, &c);
        /* A masked -inf logit.  In the teacher: its probability is exactly
         * zero, which a KL must treat as 0 log 0 = 0.  A -inf student logit
         * where the teacher has mass is legitimately an infinite KL, so the
         * student's -inf is tried only for losses without a teacher, away
         * from the label. */
        if (needs & RT_NEEDS_TEACHER) {
            for (int i = 0; i < N; i++) c.t[i * C + (i + 2) % C] = -INFINITY;
            snprintf(what, sizeof what, "N=%d -inf teacher logit", N);
        } else {
            for (int i = 0; i < N; i++) c.s[i * C + (c.y[i] + 1) % C] = -INFINITY;
            snprintf(what, sizeof what, "N=%d -inf student logit", N);
        }
        c.refusable = 1;
        numerics_case(l, &c);
    }
    rt_instance_release(l);
}

static void test_every_loss(void)
{
    for (int i = 0; i < rt_registry_count(reg); i++) {
        const rt_plugin_desc *d = rt_registry_at(reg, i);
        if (d->kind != RT_KIND_LOSS) continue;
        variants vs = {0};
        option_variants(d, "", &vs);
        cur_desc = d;
        for (int k = 0; k < vs.n; k++) {
            cur_opts = vs.v[k];
            snprintf(cur_name, sizeof cur_name, "gradcheck loss %s %s", d->name, cur_opts);
            run_named(loss_variant);
        }
        /* Numerics with the defaults, and at the temperature extremes
         * (clamped to the option's range). */
        variants nv = {0};
        add(&nv, "", "%s", "");
        const rt_option *T = opt(d, "temperature");
        if (T && T->type == RT_OPT_NUMBER) {
            double lo = 1e-3, hi = 1e3;
            if (T->min <= T->max) lo = fmax(lo, T->min), hi = fmin(hi, T->max);
            add(&nv, "", "\"temperature\":%g", lo);
            add(&nv, "", "\"temperature\":%g", hi);
        }
        /* Losses that read features (hint, attention, rkd, ...) do not
         * read the logits these cases are about; their feature numerics
         * are in tests/c/test_feature_losses.c. */
        if (d->loss->features) nv.n = 0;
        for (int k = 0; k < nv.n; k++) {
            cur_opts = nv.v[k];
            snprintf(cur_name, sizeof cur_name, "numerics loss %s %s", d->name, cur_opts);
            run_named(loss_numerics);
        }
    }
}

/* ---------------------------------------------------------------- students */

static void student_variant(void)
{
    rt_instance *s = NULL;
    if (rt_instance_create(reg, ctx, RT_KIND_STUDENT, cur_desc->name, cur_opts, &s)) {
        fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
        CHECK(!"instance_create");
        return;
    }
    rt_gradcheck_result res;
    rt_status st = rt_gradcheck_student(s, ctx, 3, NULL, 0, 21, 1e-2, &res);
    if (st) fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
    CHECK(st == RT_STATUS_OK);
    CHECK(res.max_rel_err <= TOL);
    CHECK(res.checked >= 20);
    CHECK(res.skipped <= res.checked / 4); /* kinks are rare at random points */
    printf("  student %-8s %-48s worst %.2e (%s), %lld checked, %lld skipped\n", cur_desc->name, cur_opts,
           res.max_rel_err, res.worst, (long long)res.checked, (long long)res.skipped);
    rt_instance_release(s);
}

static void test_every_student(void)
{
    for (int i = 0; i < rt_registry_count(reg); i++) {
        const rt_plugin_desc *d = rt_registry_at(reg, i);
        if (d->kind != RT_KIND_STUDENT) continue;
        variants vs = {0};
        const rt_gradcheck_options_ext *gx =
            d->extension ? (const rt_gradcheck_options_ext *)d->extension(RT_EXT_GRADCHECK_OPTIONS) : NULL;
        if (gx) { /* the plugin's own small configurations instead of its defaults */
            for (int k = 0; k < gx->n && vs.n < MAX_VARIANTS; k++)
                snprintf(vs.v[vs.n++], sizeof vs.v[0], "%s", gx->options[k]);
        } else {
            option_variants(d, "", &vs);
        }
        const rt_option *sz = opt(d, "sizes");
        if (sz && sz->type == RT_OPT_INT_LIST) option_variants(d, "\"sizes\":[6,5,4,3]", &vs);
        /* Language models: a small one too (two blocks, two heads, 11 tokens). */
        const rt_option *vo = opt(d, "vocab"), *wo = opt(d, "width"), *ho = opt(d, "heads");
        if (vo && wo && ho) option_variants(d, "\"vocab\":11,\"width\":8,\"heads\":2,\"context\":6", &vs);
        cur_desc = d;
        for (int k = 0; k < vs.n; k++) {
            cur_opts = vs.v[k];
            snprintf(cur_name, sizeof cur_name, "gradcheck student %s %s", d->name, cur_opts);
            run_named(student_variant);
        }
    }
}

/* -------------------------------------------------- the checker is checked */

static rt_registry *mutants;

static double mutant_loss(const char *bug)
{
    char o[64];
    snprintf(o, sizeof o, "{\"bug\":\"%s\"}", bug);
    rt_instance *l = NULL;
    rt_gradcheck_result res = {.max_rel_err = -1};
    if (rt_instance_create(mutants, ctx, RT_KIND_LOSS, "gc_half_mse", o, &l)) return -1;
    if (rt_gradcheck_loss(l, ctx, 3, 4, 1, 1e-2, &res)) res.max_rel_err = -1;
    printf("  mutant loss bug=%-10s worst %.2e (%s)\n", bug, res.max_rel_err, res.worst);
    rt_instance_release(l);
    return res.max_rel_err;
}

static double mutant_student(const char *bug, int explicit_shape)
{
    char o[64];
    snprintf(o, sizeof o, "{\"bug\":\"%s\"}", bug);
    rt_instance *s = NULL;
    rt_gradcheck_result res = {.max_rel_err = -1};
    int64_t in[1] = {3};
    if (rt_instance_create(mutants, ctx, RT_KIND_STUDENT, "gc_linear", o, &s)) return -1;
    if (rt_gradcheck_student(s, ctx, 2, explicit_shape ? in : NULL, 1, 3, 1e-2, &res)) res.max_rel_err = -1;
    printf("  mutant student bug=%-10s worst %.2e (%s)\n", bug, res.max_rel_err, res.worst);
    rt_instance_release(s);
    return res.max_rel_err;
}

static void test_checker_catches_mutants(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/tests/fixtures/gc_mutants.so", build);
    mutants = rt_registry_new();
    rt_status st = rt_registry_load(mutants, ctx, path);
    if (st) fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
    CHECK(st == RT_STATUS_OK);
    if (st) {
        rt_registry_free(mutants);
        return;
    }
    double e;
    e = mutant_loss("none");
    CHECK(e >= 0 && e <= TOL); /* the control passes */
    e = mutant_loss("scale");
    CHECK(e > 2e-3); /* 1% off: |1.01a - a| / 2.01a ~ 5e-3 */
    e = mutant_loss("overwrite");
    CHECK(e > 0.1);
    e = mutant_loss("sign");
    CHECK(e > 0.5);
    e = mutant_student("none", 0); /* input width from "input_shape" */
    CHECK(e >= 0 && e <= TOL);
    e = mutant_student("none", 1);
    CHECK(e >= 0 && e <= TOL);
    e = mutant_student("overwrite", 0);
    CHECK(e > 0.1);
    e = mutant_student("transpose", 0);
    CHECK(e > 0.1);
    rt_registry_free(mutants);
}

/* The checker refuses what it cannot check, with a message. */
static void test_checker_errors(void)
{
    rt_instance *l = NULL;
    CHECK(rt_instance_create(reg, ctx, RT_KIND_LOSS, "kd", NULL, &l) == RT_STATUS_OK);
    if (!l) return;
    rt_gradcheck_result res;
    CHECK(rt_gradcheck_loss(l, ctx, 0, 3, 1, 1e-2, &res) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "N = 0");
    /* A -inf student logit where the teacher has mass: KL is infinite,
     * and the checker says so instead of comparing infinities. */
    int64_t sh[2] = {1, 3};
    float sv[3] = {0, -INFINITY, 1}, tv[3] = {0, 1, 2};
    rt_tensor *s = rt_tensor_from(ctx, RT_DTYPE_F32, 2, sh, sv), *t = rt_tensor_from(ctx, RT_DTYPE_F32, 2, sh, tv);
    rt_signal sig = {.logits = t};
    rt_loss_in in = {.student = s, .teacher = &sig};
    CHECK(rt_gradcheck_loss_at(l, ctx, &in, 1e-2, &res) == RT_STATUS_ERR_NUMERIC);
    CHECK_CONTAINS(rt_ctx_message(ctx), "loss 'kd'");
    rt_tensor_release(s);
    rt_tensor_release(t);
    rt_instance_release(l);
}

int main(void)
{
    const char *b = getenv("RETORT_TEST_BUILD");
    snprintf(build, sizeof build, "%s", b && *b ? b : "build");
    char dir[600];
    snprintf(dir, sizeof dir, "%s/lib/retort/plugins", build);
    ctx = rt_ctx_new();
    reg = rt_registry_new();
    if (!ctx || !reg || rt_registry_load_dir(reg, ctx, dir, 0, NULL)) {
        fprintf(stderr, "cannot load %s: %s\n", dir, ctx ? rt_ctx_message(ctx) : "no context");
        printf("test_gradcheck: 0 passed, 1 failed\n");
        return 1;
    }
    rt_ctx_set_registry(ctx, reg);
    test_every_loss();
    test_every_student();
    RUN(test_checker_catches_mutants);
    RUN(test_checker_errors);
    rt_registry_free(reg);
    rt_ctx_free(ctx);
    return t_summary("test_gradcheck");
}
