/*
 * test_params.c -- no fixed cap on parameters per model: zero_grad, save
 * and load handle every parameter of a student with 1500 of them (the
 * fixture tests/fixtures/fx_many_params.c, which has no zero_grad of its
 * own, so the host's fallback runs).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "retort.h"
#include "t.h"

#define COUNT 1500

static rt_ctx *ctx;
static rt_registry *reg;

static rt_instance *many(void)
{
    rt_instance *s = NULL;
    if (rt_instance_create(reg, ctx, RT_KIND_STUDENT, "fx_many_params", "{\"count\": 1500}", &s))
        fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
    return s;
}

static void test_count_and_list(void)
{
    rt_instance *s = many();
    CHECK(s != NULL);
    if (!s) return;
    CHECK(rt_instance_param_count(s) == COUNT);
    int n = 0;
    rt_param *p = rt_instance_params_all(s, ctx, &n);
    CHECK(p != NULL && n == COUNT);
    if (p) CHECK(!strcmp(p[COUNT - 1].name, "p.1499"));
    free(p);
    rt_instance_release(s);
}

/* The host's zero_grad (the plugin has none) resets all 1500 gradients,
 * not the first 256. */
static void test_zero_grad_all(void)
{
    rt_instance *s = many();
    CHECK(s != NULL);
    if (!s) return;
    int n = 0;
    rt_param *p = rt_instance_params_all(s, ctx, &n);
    CHECK(p != NULL);
    if (!p) {
        rt_instance_release(s);
        return;
    }
    for (int k = 0; k < n; k++) rt_f32(p[k].grad)[0] = 1;
    rt_student_zero_grad(s);
    int nonzero = 0;
    for (int k = 0; k < n; k++) nonzero += rt_f32(p[k].grad)[0] != 0;
    CHECK(nonzero == 0);
    if (nonzero) fprintf(stderr, "  %d of %d gradients not reset\n", nonzero, n);
    /* and a backward after it accumulates from zero */
    int64_t xs[2] = {2, 1}, os[2] = {2, 2};
    rt_tensor *x = rt_tensor_new(ctx, RT_DTYPE_F32, 2, xs), *g = rt_tensor_new(ctx, RT_DTYPE_F32, 2, os), *out = NULL;
    CHECK(x && g);
    if (x && g) {
        rt_f32(x)[0] = 1, rt_f32(x)[1] = 2;
        rt_f32(g)[0] = 1, rt_f32(g)[2] = 1;
        CHECK(rt_student_forward(s, ctx, x, 1, &out) == RT_STATUS_OK);
        CHECK(rt_student_backward(s, ctx, g, NULL, 0, NULL) == RT_STATUS_OK);
        CHECK(rt_f32(p[0].grad)[0] == 3 && rt_f32(p[n - 1].grad)[0] == 3);
    }
    rt_tensor_release(x);
    rt_tensor_release(g);
    free(p);
    rt_instance_release(s);
}

/* Save and load carry every parameter, the last one included. */
static void test_save_load_all(void)
{
    char path[] = "/tmp/retort_test_params_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    rt_instance *a = many(), *b = many();
    CHECK(a && b);
    int n = 0;
    rt_param *p = a ? rt_instance_params_all(a, ctx, &n) : NULL;
    for (int k = 0; p && k < n; k++) rt_f32(p[k].value)[0] = (float)k;
    free(p);
    if (a && b) {
        rt_status st = rt_instance_save(a, ctx, path, 0, NULL, NULL);
        CHECK(st == RT_STATUS_OK);
        if (st) fprintf(stderr, "  save: %s\n", rt_ctx_message(ctx));
        st = rt_instance_load(b, ctx, path);
        CHECK(st == RT_STATUS_OK);
        if (st) fprintf(stderr, "  load: %s\n", rt_ctx_message(ctx));
        p = rt_instance_params_all(b, ctx, &n);
        int wrong = 0;
        for (int k = 0; p && k < n; k++) wrong += rt_f32(p[k].value)[0] != (float)k;
        CHECK(p && n == COUNT && wrong == 0);
        if (wrong) fprintf(stderr, "  %d of %d parameters not loaded\n", wrong, n);
        free(p);
    }
    rt_instance_release(a);
    rt_instance_release(b);
    unlink(path);
}

int main(void)
{
    char so[512];
    ctx = rt_ctx_new();
    reg = rt_registry_new();
    if (!ctx || !reg) return 1;
    if (rt_registry_load(reg, ctx, t_build_path(so, sizeof so, "tests/fixtures/fx_many_params.so"))) {
        fprintf(stderr, "%s (make check builds it)\n", rt_ctx_message(ctx));
        printf("test_params: 0 passed, 1 failed\n");
        return 1;
    }
    RUN(test_count_and_list);
    RUN(test_zero_grad_all);
    RUN(test_save_load_all);
    rt_registry_free(reg);
    rt_ctx_free(ctx);
    return t_summary("test_params");
}
