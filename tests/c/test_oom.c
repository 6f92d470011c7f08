/*
 * test_oom.c -- allocation failure (docs/reliability.md): fail the n-th
 * allocation, n = 1, 2, ..., over each reader, the writer, option
 * validation and a first training step.  Pass: every failure returns a
 * clean error with a message, nothing crashes, and nothing leaks (the
 * number of live blocks returns to where it was).
 *
 * The test binary defines the allocator functions itself, forwarding to
 * glibc's __libc_* functions, so libretort, cJSON, zlib and the plugins
 * all allocate through it.  Under AddressSanitizer (which owns malloc) the
 * injection is off and the test says so.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "retort.h"
#include "t.h"

#if defined(__SANITIZE_ADDRESS__)
#define INJECT 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define INJECT 0
#endif
#endif
#ifndef INJECT
#define INJECT 1
#endif

static long live;      /* blocks allocated and not freed */
static long countdown; /* > 0: the countdown-th allocation from now fails */

#if INJECT
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static int fail_now(void) { return countdown > 0 && --countdown == 0; }

void *malloc(size_t n)
{
    if (fail_now()) return NULL;
    void *p = __libc_malloc(n);
    if (p) live++;
    return p;
}
void *calloc(size_t a, size_t b)
{
    if (fail_now()) return NULL;
    void *p = __libc_calloc(a, b);
    if (p) live++;
    return p;
}
void *realloc(void *p, size_t n)
{
    if (fail_now()) return NULL;
    void *q = __libc_realloc(p, n);
    if (!p && q) live++;
    return q;
}
void *aligned_alloc(size_t al, size_t n)
{
    if (fail_now()) return NULL;
    void *p = __libc_memalign(al, n);
    if (p) live++;
    return p;
}
int posix_memalign(void **out, size_t al, size_t n)
{
    if (fail_now()) return 12;
    *out = __libc_memalign(al, n);
    if (*out) live++;
    return *out ? 0 : 12;
}
void free(void *p)
{
    if (p) live--;
    __libc_free(p);
}
#endif

static char tmpdir[256];

/* Runs scenario(ud) with the n-th allocation failing, for n = 1, 2, ...
 * until it succeeds; every failure must be a clean error without leaks.
 * Returns how many failure points were exercised. */
static int sweep(const char *what, rt_status (*scenario)(void *ud, char *msg, size_t len), void *ud)
{
    int n;
    for (n = 1; n < 5000; n++) {
        char msg[1100] = "";
        long before = live;
        countdown = n;
        rt_status st = scenario(ud, msg, sizeof msg);
        int fired = countdown == 0;
        countdown = 0;
        if (live != before) {
            fprintf(stderr, "  %s: failing allocation %d leaked %ld blocks (status %d: %s)\n", what, n, live - before,
                    st, msg);
            CHECK(live == before);
            return n;
        }
        if (!fired) {
            CHECK(st == RT_STATUS_OK); /* no allocation failed: must succeed */
            if (st) fprintf(stderr, "  %s: failed without an injected failure: %s\n", what, msg);
            return n - 1;
        }
        if (st == RT_STATUS_OK) continue; /* a failure it could absorb */
        if (!msg[0]) {
            fprintf(stderr, "  %s: failing allocation %d gave status %d without a message\n", what, n, st);
            CHECK(msg[0]);
            return n;
        }
    }
    CHECK(!"too many allocations");
    return n;
}

/* ------------------------------------------------------------ scenarios */

static rt_status read_st(void *ud, char *msg, size_t len)
{
    rt_ctx *ctx = rt_ctx_new();
    if (!ctx) return snprintf(msg, len, "no ctx"), RT_STATUS_ERR_NOMEM;
    rt_st *f = NULL;
    rt_status st = rt_st_read(ctx, ud, &f);
    if (!st && (rt_st_count(f) != 2 || !rt_st_meta_get(f, "note"))) st = RT_STATUS_ERR_FORMAT;
    snprintf(msg, len, "%s", rt_ctx_message(ctx));
    rt_st_free(f);
    rt_ctx_free(ctx);
    return st;
}

static rt_status write_st(void *ud, char *msg, size_t len)
{
    rt_ctx *ctx = rt_ctx_new();
    if (!ctx) return snprintf(msg, len, "no ctx"), RT_STATUS_ERR_NOMEM;
    int64_t s[2] = {3, 4};
    rt_tensor *a = rt_tensor_new(ctx, RT_DTYPE_F32, 2, s), *b = rt_tensor_new(ctx, RT_DTYPE_I32, 1, s);
    rt_status st = RT_STATUS_ERR_NOMEM;
    if (a && b) {
        const char *names[] = {"a", "b"}, *k[] = {"note"}, *v[] = {"hello"};
        const rt_tensor *ts[] = {a, b};
        st = rt_st_write(ctx, ud, 2, names, ts, 1, k, v);
    }
    snprintf(msg, len, "%s", rt_ctx_message(ctx));
    rt_tensor_release(a);
    rt_tensor_release(b);
    rt_ctx_free(ctx);
    return st;
}

static rt_status read_idx(void *ud, char *msg, size_t len)
{
    rt_ctx *ctx = rt_ctx_new();
    if (!ctx) return snprintf(msg, len, "no ctx"), RT_STATUS_ERR_NOMEM;
    rt_tensor *t = NULL;
    rt_status st = rt_idx_read(ctx, ud, RT_DTYPE_F32, 1.0f / 255, &t);
    if (!st && rt_numel(t) != 2 * 5 * 7) st = RT_STATUS_ERR_FORMAT;
    snprintf(msg, len, "%s", rt_ctx_message(ctx));
    rt_tensor_release(t);
    rt_ctx_free(ctx);
    return st;
}

typedef struct step_env {
    rt_registry *reg;
} step_env;

/* Creates a student and two losses, runs one training step, frees all. */
static rt_status train_step(void *ud, char *msg, size_t len)
{
    step_env *e = ud;
    rt_ctx *ctx = rt_ctx_new();
    if (!ctx) return snprintf(msg, len, "no ctx"), RT_STATUS_ERR_NOMEM;
    rt_ctx_set_registry(ctx, e->reg);
    rt_instance *s = NULL, *kd = NULL, *ce = NULL;
    rt_optim *opt = NULL;
    rt_tensor *x = NULL, *y = NULL, *t = NULL, *g = NULL;
    int64_t xs[2] = {4, 6}, ys[1] = {4}, zs[2] = {4, 3};
    rt_optim_cfg cfg = {.kind = RT_OPTIM_ADAM, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    rt_status st = RT_STATUS_OK;
    if (rt_instance_create(e->reg, ctx, RT_KIND_STUDENT, "mlp", "{\"sizes\":[6,5,3],\"dropout\":0.2}", &s) ||
        rt_instance_create(e->reg, ctx, RT_KIND_LOSS, "kd", "{\"temperature\":2}", &kd) ||
        rt_instance_create(e->reg, ctx, RT_KIND_LOSS, "ce", NULL, &ce) || !(opt = rt_optim_new(ctx, &cfg)) ||
        !(x = rt_tensor_new(ctx, RT_DTYPE_F32, 2, xs)) || !(y = rt_tensor_new(ctx, RT_DTYPE_I32, 1, ys)) ||
        !(t = rt_tensor_new(ctx, RT_DTYPE_F32, 2, zs)) || !(g = rt_tensor_new(ctx, RT_DTYPE_F32, 2, zs))) {
        st = rt_ctx_status(ctx) ? rt_ctx_status(ctx) : RT_STATUS_ERR_NOMEM;
    } else {
        rt_tensor *z = NULL;
        rt_signal sig = {.logits = t};
        double v;
        rt_param p[8];
        for (int64_t i = 0; i < rt_numel(x); i++) rt_f32(x)[i] = (float)i / 10.0f;
        if (!(st = rt_student_forward(s, ctx, x, 1, &z))) {
            rt_loss_in in = {.student = z, .teacher = &sig, .target = y};
            if (!(st = rt_loss_forward(kd, ctx, &in, &v)) && !(st = rt_loss_backward(kd, ctx, &in, 0.5f, g)) &&
                !(st = rt_loss_forward(ce, ctx, &in, &v)) && !(st = rt_loss_backward(ce, ctx, &in, 0.5f, g)) &&
                !(st = rt_student_backward(s, ctx, g, NULL, 0, NULL)))
                st = rt_optim_step(opt, ctx, p, rt_instance_params(s, p, 8), 1e-3f);
        }
    }
    if (st && !rt_ctx_message(ctx)[0]) snprintf(msg, len, "status %d without a message", st);
    else snprintf(msg, len, "%s", rt_ctx_message(ctx));
    rt_tensor_release(x);
    rt_tensor_release(y);
    rt_tensor_release(t);
    rt_tensor_release(g);
    rt_optim_free(opt);
    rt_instance_release(s);
    rt_instance_release(kd);
    rt_instance_release(ce);
    rt_ctx_free(ctx);
    return st;
}

static rt_status validate_options(void *ud, char *msg, size_t len)
{
    step_env *e = ud;
    rt_ctx *ctx = rt_ctx_new();
    if (!ctx) return snprintf(msg, len, "no ctx"), RT_STATUS_ERR_NOMEM;
    const rt_plugin_desc *d = rt_registry_find(e->reg, NULL, RT_KIND_STUDENT, "mlp");
    char *out = NULL;
    rt_status st = rt_options_validate(ctx, d, "{\"sizes\":[784,128,10],\"activation\":\"gelu\"}", &out);
    snprintf(msg, len, "%s", rt_ctx_message(ctx));
    free(out);
    rt_ctx_free(ctx);
    return st;
}

/* loss set: the options JSON follows the value; a failed set leaves the
 * JSON as it was. */
static rt_status loss_set(void *ud, char *msg, size_t len)
{
    step_env *e = ud;
    rt_ctx *ctx = rt_ctx_new();
    if (!ctx) return snprintf(msg, len, "no ctx"), RT_STATUS_ERR_NOMEM;
    rt_instance *kd = NULL;
    rt_status st = rt_instance_create(e->reg, ctx, RT_KIND_LOSS, "kd", "{\"temperature\":2}", &kd);
    snprintf(msg, len, "%s", rt_ctx_message(ctx));
    if (!st) {
        st = rt_loss_set(kd, ctx, "temperature", 3);
        snprintf(msg, len, "%s", rt_ctx_message(ctx));
        const char *want = st ? "\"temperature\":2" : "\"temperature\":3", *o = rt_instance_options(kd);
        if (!strstr(o, want)) {
            snprintf(msg, len, "options %s after set (status %d), want %s", o, st, want);
            st = RT_STATUS_ERR_STATE;
            CHECK(!"options JSON and set disagree");
        }
    }
    rt_instance_release(kd);
    rt_ctx_free(ctx);
    return st;
}

/* ---------------------------------------------------------------- tests */

static void readers_and_writer(void)
{
    char st_path[300], idx_path[300];
    snprintf(st_path, sizeof st_path, "%s/ok.safetensors", tmpdir);
    snprintf(idx_path, sizeof idx_path, "%s/ok.idx.gz", tmpdir);
    /* the files, written without injection */
    char msg[256];
    CHECK(write_st(st_path, msg, sizeof msg) == RT_STATUS_OK);
    gzFile gz = gzopen(idx_path, "wb");
    unsigned char hdr[16] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 7}, data[70];
    for (int i = 0; i < 70; i++) data[i] = (unsigned char)(i * 3);
    CHECK(gz && gzwrite(gz, hdr, 16) == 16 && gzwrite(gz, data, 70) == 70 && gzclose(gz) == Z_OK);
    if (!INJECT) {
        printf("test_oom: allocation failures are not injected under AddressSanitizer\n");
        return;
    }
    int a = sweep("safetensors read", read_st, st_path);
    int b = sweep("IDX read (gzip)", read_idx, idx_path);
    char out[300];
    snprintf(out, sizeof out, "%s/written.safetensors", tmpdir);
    int c = sweep("safetensors atomic write", write_st, out);
    printf("failure points exercised: safetensors read %d, IDX read %d, atomic write %d\n", a, b, c);
    CHECK(a > 3 && b > 3 && c > 3);
    /* a failed write left no temp file beside the target */
    char cmd[400];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q tmp", tmpdir);
    CHECK(system(cmd) != 0);
}

static void a_training_step(void)
{
    char dir[512];
    t_build_path(dir, sizeof dir, "lib/retort/plugins");
    rt_ctx *ctx = rt_ctx_new();
    step_env e = {rt_registry_new()};
    CHECK(rt_registry_load_dir(e.reg, ctx, dir, 1, NULL) == RT_STATUS_OK);
    if (INJECT) {
        int n = sweep("options", validate_options, &e);
        int m = sweep("training step", train_step, &e);
        int k = sweep("loss set", loss_set, &e);
        printf("failure points exercised: options %d, training step %d, loss set %d\n", n, m, k);
        CHECK(n > 3 && m > 10 && k > 3);
    } else {
        char msg[256];
        CHECK(train_step(&e, msg, sizeof msg) == RT_STATUS_OK);
    }
    rt_registry_free(e.reg);
    rt_ctx_free(ctx);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/rt_oom_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    RUN(readers_and_writer);
    RUN(a_training_step);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
    return t_summary("test_oom");
}
