/*
 * test_plugins.c -- the loader and the option schema, against the fixture
 * plugins in tests/fixtures (built to $RETORT_TEST_BUILD/tests/fixtures):
 * every broken file is refused with a message naming its path and the
 * stage (open, entry, init, abi, register; for abi both versions) and
 * registers nothing; a good file registers all its plugins; options are
 * validated with clear messages; a name lookup suggests a near name; an
 * instance keeps its library loaded after the registry is gone; the help
 * text lists every option.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "retort.h"
#include "t.h"

static rt_ctx *ctx;
static char build[512];

static void fixture(const char *name, char *path, size_t len)
{
    snprintf(path, len, "%s/tests/fixtures/%s.so", build, name);
}

/* A registry with the built-in plugins (so a fixture can collide with
 * 'kd').  NULL on failure. */
static rt_registry *builtin_registry(void)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/lib/retort/plugins", build);
    rt_registry *r = rt_registry_new();
    if (r && rt_registry_load_dir(r, ctx, dir, 0, NULL)) {
        fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
        rt_registry_free(r);
        return NULL;
    }
    return r;
}

/* Loads fixture `name`, expects a refusal at `stage` whose message holds
 * the path, "<stage>:" and `detail`, and no change in the registry. */
static void refused(rt_registry *r, const char *name, const char *stage, const char *detail, const char *detail2)
{
    char path[700], st[32];
    fixture(name, path, sizeof path);
    if (access(path, R_OK)) {
        fprintf(stderr, "  missing fixture %s (build it: make %s)\n", path, path);
        CHECK(!"fixture built");
        return;
    }
    int before = rt_registry_count(r);
    rt_status s = rt_registry_load(r, ctx, path);
    const char *msg = rt_ctx_message(ctx);
    printf("  %-18s %s\n", name, msg);
    CHECK(s == RT_STATUS_ERR_PLUGIN);
    CHECK_CONTAINS(msg, path);
    snprintf(st, sizeof st, "%s: ", stage);
    CHECK_CONTAINS(msg, st);
    if (detail) CHECK_CONTAINS(msg, detail);
    if (detail2) CHECK_CONTAINS(msg, detail2);
    CHECK(rt_registry_count(r) == before);
}

static void test_refusals(void)
{
    rt_registry *r = builtin_registry();
    CHECK(r != NULL);
    if (!r) return;
    char v[64], w[64], next_major[64];
    snprintf(v, sizeof v, "this host has ABI %d.%d", RT_ABI_MAJOR, RT_ABI_MINOR);
    /* A plugin built against ABI 1.1: both versions and the way out named. */
    snprintf(next_major, sizeof next_major, "'fx_abi_major' was built for ABI 1.1");
    refused(r, "fx_abi_major", "abi", next_major, v);
    refused(r, "fx_abi_major", "abi", "another major version: rebuild the plugin", NULL);
    snprintf(w, sizeof w, "built for ABI %d.%d", RT_ABI_MAJOR, RT_ABI_MINOR + 1);
    refused(r, "fx_abi_minor", "abi", w, "needs a newer retort");
    refused(r, "fx_no_entry", "entry", "rt_plugin_init", NULL);
    refused(r, "fx_init_fail", "init", "fixture refuses to start: no license file", NULL);
    refused(r, "fx_dup_same_file", "register", "duplicate loss 'fx_dupe'", NULL);
    refused(r, "fx_dup_builtin", "register", "duplicate loss 'kd'", "kd.so");
    refused(r, "fx_no_backward", "register", "loss.backward", NULL);
    refused(r, "fx_bad_kind", "register", "unknown kind 7", NULL);
    refused(r, "fx_bad_name", "register", "'Bad-Name'", NULL);
    refused(r, "fx_bad_default", "register", "temperature", "out of range");
    /* The good plugin of the file that also clashed with 'kd' was not
     * registered either. */
    CHECK(rt_registry_find(r, NULL, RT_KIND_LOSS, "fx_innocent") == NULL);
    rt_registry_free(r);
}

/* open: not a shared object at all, and a file that is not there. */
static void test_open_stage(void)
{
    rt_registry *r = rt_registry_new();
    char path[] = "/tmp/retort_test_plugins_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, "not an ELF file\n", 16) == 16);
        close(fd);
        CHECK(rt_registry_load(r, ctx, path) == RT_STATUS_ERR_PLUGIN);
        CHECK_CONTAINS(rt_ctx_message(ctx), path);
        CHECK_CONTAINS(rt_ctx_message(ctx), "open: ");
        unlink(path);
    }
    CHECK(rt_registry_load(r, ctx, "/nonexistent/retort/fx.so") == RT_STATUS_ERR_PLUGIN);
    CHECK_CONTAINS(rt_ctx_message(ctx), "plugin /nonexistent/retort/fx.so: open: ");
    CHECK(rt_registry_count(r) == 0);
    rt_registry_free(r);
}

static void test_good_file_registers_both(void)
{
    rt_registry *r = builtin_registry();
    if (!r) {
        CHECK(!"registry");
        return;
    }
    char path[700];
    fixture("fx_good_two", path, sizeof path);
    int before = rt_registry_count(r);
    rt_status s = rt_registry_load(r, ctx, path);
    if (s) fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
    CHECK(s == RT_STATUS_OK);
    CHECK(rt_registry_count(r) == before + 2);
    const rt_plugin_desc *one = rt_registry_find(r, ctx, RT_KIND_LOSS, "fx_one");
    const rt_plugin_desc *req = rt_registry_find(r, ctx, RT_KIND_LOSS, "fx_required");
    CHECK(one && req);
    CHECK(rt_registry_find(r, NULL, RT_KIND_STUDENT, "fx_one") == NULL); /* names are per kind */
    int seen = 0;
    for (int i = 0; i < rt_registry_count(r); i++)
        if (rt_registry_at(r, i) == one || rt_registry_at(r, i) == req) {
            CHECK(!strcmp(rt_registry_path_at(r, i), path));
            seen++;
        }
    CHECK(seen == 2);
    /* Loading the same file again is a duplicate, and changes nothing. */
    CHECK(rt_registry_load(r, ctx, path) == RT_STATUS_ERR_PLUGIN);
    CHECK_CONTAINS(rt_ctx_message(ctx), "duplicate loss 'fx_one'");
    CHECK(rt_registry_count(r) == before + 2);
    rt_registry_free(r);
}

/* Creates fx_one / fx_required with opts; expects a refusal whose message
 * holds each of the given parts. */
static void bad_options(rt_registry *r, const char *name, const char *opts, const char *want)
{
    rt_instance *i = NULL;
    rt_status s = rt_instance_create(r, ctx, RT_KIND_LOSS, name, opts, &i);
    printf("  %-14s %-24s -> %s\n", name, opts ? opts : "NULL", rt_ctx_message(ctx));
    CHECK(s == RT_STATUS_ERR_ARG);
    CHECK(i == NULL);
    char pre[64];
    snprintf(pre, sizeof pre, "loss '%s': ", name);
    CHECK_CONTAINS(rt_ctx_message(ctx), pre);
    CHECK_CONTAINS(rt_ctx_message(ctx), want);
    rt_instance_release(i);
}

static void test_options_validation(void)
{
    rt_registry *r = rt_registry_new();
    char path[700];
    fixture("fx_good_two", path, sizeof path);
    CHECK(rt_registry_load(r, ctx, path) == RT_STATUS_OK);
    bad_options(r, "fx_one", "{\"alpah\":0.1}", "unknown option 'alpah' (did you mean 'alpha'?)");
    bad_options(r, "fx_one", "{\"zzzzzzzz\":1}", "unknown option 'zzzzzzzz' (options: alpha, k, flag, mode, ids)");
    bad_options(r, "fx_one", "{\"alpha\":\"x\"}", "option 'alpha' must be a number, got a string");
    bad_options(r, "fx_one", "{\"flag\":1}", "option 'flag' must be a boolean, got a number");
    bad_options(r, "fx_one", "{\"k\":2.5}", "option 'k' must be an integer, got a fractional number");
    bad_options(r, "fx_one", "{\"alpha\":2}", "option 'alpha' = 2 is out of range [0, 1]");
    bad_options(r, "fx_one", "{\"k\":0}", "option 'k' = 0 is out of range [1, 10]");
    bad_options(r, "fx_one", "{\"ids\":[1,200]}", "option 'ids'[2] = 200 is out of range [0, 100]");
    bad_options(r, "fx_one", "{\"mode\":\"c\"}", "option 'mode' = \"c\" is not one of a|b");
    bad_options(r, "fx_one", "{\"alpha\":0.1,\"alpha\":0.2}", "option 'alpha' is given twice");
    bad_options(r, "fx_one", "{\"alpha\":", "not valid JSON");
    bad_options(r, "fx_one", "[1]", "options must be a table");
    bad_options(r, "fx_required", "{}", "option 'weight' is required");
    bad_options(r, "fx_required", NULL, "option 'weight' is required");
    /* Valid options: the defaults are filled in. */
    rt_instance *i = NULL;
    CHECK(rt_instance_create(r, ctx, RT_KIND_LOSS, "fx_one", "{\"mode\":\"b\",\"k\":10}", &i) == RT_STATUS_OK);
    if (i) {
        const char *o = rt_instance_options(i);
        CHECK_CONTAINS(o, "\"alpha\":0.5");
        CHECK_CONTAINS(o, "\"k\":10");
        CHECK_CONTAINS(o, "\"flag\":false");
        CHECK_CONTAINS(o, "\"mode\":\"b\"");
        CHECK_CONTAINS(o, "\"ids\":[1,2]");
        rt_instance_release(i);
    }
    i = NULL;
    CHECK(rt_instance_create(r, ctx, RT_KIND_LOSS, "fx_required", "{\"weight\":-3}", &i) == RT_STATUS_OK);
    rt_instance_release(i);
    rt_registry_free(r);
}

static void test_find_did_you_mean(void)
{
    rt_registry *r = builtin_registry();
    if (!r) {
        CHECK(!"registry");
        return;
    }
    CHECK(rt_registry_find(r, ctx, RT_KIND_LOSS, "kdd") == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), "no loss plugin 'kdd' (did you mean 'kd'?)");
    CHECK(rt_registry_find(r, ctx, RT_KIND_STUDENT, "mlpp") == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), "no student plugin 'mlpp' (did you mean 'mlp'?)");
    /* Nothing close: the message lists what there is. */
    CHECK(rt_registry_find(r, ctx, RT_KIND_LOSS, "wasserstein") == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), "no loss plugin 'wasserstein' (there are: ");
    CHECK_CONTAINS(rt_ctx_message(ctx), "kd");
    CHECK(rt_registry_find(r, ctx, RT_KIND_LOSS, "kd") != NULL);
    rt_registry_free(r);
}

/* Never dlclose under a live instance: the registry goes, the instance
 * keeps working (under ASan a closed library would crash here), and the
 * library closes with the last instance. */
static void test_instance_outlives_registry(void)
{
    rt_registry *r = rt_registry_new();
    char path[700];
    fixture("fx_good_two", path, sizeof path);
    CHECK(rt_registry_load(r, ctx, path) == RT_STATUS_OK);
    rt_instance *i = NULL, *j = NULL;
    CHECK(rt_instance_create(r, ctx, RT_KIND_LOSS, "fx_one", NULL, &i) == RT_STATUS_OK);
    CHECK(rt_instance_create(r, ctx, RT_KIND_LOSS, "fx_required", "{\"weight\":1}", &j) == RT_STATUS_OK);
    rt_registry_free(r);
    if (!i || !j) return;
    int64_t sh[2] = {2, 3};
    float v6[6] = {1, 2, 3, 4, 5, 6};
    rt_tensor *s = rt_tensor_from(ctx, RT_DTYPE_F32, 2, sh, v6), *g = rt_tensor_new(ctx, RT_DTYPE_F32, 2, sh);
    rt_loss_in in = {.student = s};
    double v = 0;
    CHECK(rt_loss_forward(i, ctx, &in, &v) == RT_STATUS_OK);
    CHECK_NEAR(v, 21.0 / 2, 1e-12);
    CHECK(rt_loss_backward(i, ctx, &in, 2.0f, g) == RT_STATUS_OK);
    CHECK_NEAR(rt_f32(g)[5], 1.0, 1e-7);
    CHECK(!strcmp(rt_instance_desc(i)->name, "fx_one")); /* the descriptor lives in the library */
    rt_instance_release(i);
    /* One instance gone, the other still holds the library. */
    CHECK(rt_loss_forward(j, ctx, &in, &v) == RT_STATUS_OK);
    CHECK_NEAR(v, 21.0 / 2, 1e-12);
    rt_instance_release(j);
    rt_tensor_release(s);
    rt_tensor_release(g);
}

static void test_help_lists_options(void)
{
    rt_registry *r = rt_registry_new();
    char path[700];
    fixture("fx_good_two", path, sizeof path);
    CHECK(rt_registry_load(r, ctx, path) == RT_STATUS_OK);
    const rt_plugin_desc *d = rt_registry_find(r, ctx, RT_KIND_LOSS, "fx_one");
    CHECK(d != NULL);
    if (d) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        rt_options_print_help(d, f);
        fclose(f);
        printf("%s", buf);
        CHECK_CONTAINS(buf, "fx_one");
        CHECK_CONTAINS(buf, "loader test fixture");
        static const char *const want[][3] = {{"alpha", "number", "0.5"},        {"k", "integer", "3"},
                                              {"flag", "boolean", "false"},      {"mode", "string", "\"a\""},
                                              {"ids", "list of integers", "[1,2]"}};
        for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
            /* name, type and default on the option's own line */
            const char *line = strstr(buf, want[k][0]);
            CHECK(line != NULL);
            if (!line) continue;
            char one[256];
            size_t n = strcspn(line, "\n");
            snprintf(one, sizeof one, "%.*s", (int)n, line);
            CHECK_CONTAINS(one, want[k][1]);
            CHECK_CONTAINS(one, want[k][2]);
        }
        CHECK_CONTAINS(buf, "in [0, 1]");
        CHECK_CONTAINS(buf, "one of a|b");
        free(buf);
    }
    d = rt_registry_find(r, ctx, RT_KIND_LOSS, "fx_required");
    if (d) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        rt_options_print_help(d, f);
        fclose(f);
        CHECK_CONTAINS(buf, "weight");
        CHECK_CONTAINS(buf, "(required)");
        free(buf);
    }
    rt_registry_free(r);
}

int main(void)
{
    const char *b = getenv("RETORT_TEST_BUILD");
    snprintf(build, sizeof build, "%s", b && *b ? b : "build");
    ctx = rt_ctx_new();
    if (!ctx) return 1;
    RUN(test_refusals);
    RUN(test_open_stage);
    RUN(test_good_file_registers_both);
    RUN(test_options_validation);
    RUN(test_find_did_you_mean);
    RUN(test_instance_outlives_registry);
    RUN(test_help_lists_options);
    rt_ctx_free(ctx);
    return t_summary("test_plugins");
}
