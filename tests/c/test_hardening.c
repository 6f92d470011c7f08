/*
 * test_hardening.c -- what a red team broke (issue 8), one test per class:
 *   - a model named by a file's metadata, or by options, is bounded before
 *     anything large is allocated;
 *   - JSON escapes cJSON decodes as NUL (\uZZZZ, \u0000, broken surrogates)
 *     are refused with the offset, in safetensors headers and in options;
 *   - atomic writes do not replace a symlink, a folder, a pipe or a device;
 *   - tensor views, narrow, reshape and i32 fills at extreme values give
 *     errors or defined results, never undefined behaviour.
 */
#include "retort.h"
#include "t.h"

#include <errno.h>
#include <zlib.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static char dir[64];
static rt_ctx *ctx;
static rt_registry *reg;

static const char *path_of(const char *name)
{
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static long max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* A checkpoint with no tensors whose metadata names an mlp of `sizes`. */
static const char *metadata_only(const char *name, const char *sizes)
{
    const char *p = path_of(name);
    char opts[256];
    snprintf(opts, sizeof opts, "{\"activation\":\"relu\",\"dropout\":0,\"seed\":1,\"sizes\":%s}", sizes);
    const char *k[3] = {"retort.kind", "retort.plugin", "retort.options"};
    const char *v[3] = {"student", "mlp", opts};
    rt_ctx_clear(ctx);
    if (rt_st_write(ctx, p, 0, NULL, NULL, 3, k, v)) fprintf(stderr, "  set-up: %s\n", rt_ctx_message(ctx));
    return p;
}

static void test_model_bounded_by_checkpoint(void)
{
    /* 40 GB of weights named by a file of a few hundred bytes */
    const char *p = metadata_only("tiny.safetensors", "[100000,100000,10]");
    struct stat sb;
    CHECK(stat(p, &sb) == 0 && sb.st_size < 400);
    long rss = max_rss_kb();
    char opts[512];
    snprintf(opts, sizeof opts, "{\"checkpoint\":\"%s\"}", p);
    rt_instance *t = NULL;
    rt_ctx_clear(ctx);
    CHECK(rt_instance_create(reg, ctx, RT_KIND_TEACHER, "model", opts, &t) != RT_STATUS_OK);
    CHECK(t == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), "model size");
    CHECK_CONTAINS(rt_ctx_message(ctx), p);
    CHECK_CONTAINS(rt_ctx_message(ctx), "2 x its size + 16 MiB");
    CHECK(max_rss_kb() - rss < 64 * 1024); /* nothing large was touched */

    /* arch given by the recipe, weights from the same small file: bounded too */
    snprintf(opts, sizeof opts, "{\"checkpoint\":\"%s\",\"arch\":\"mlp\",\"options\":{\"sizes\":[50000,50000,10]}}", p);
    rt_ctx_clear(ctx);
    CHECK(rt_instance_create(reg, ctx, RT_KIND_TEACHER, "model", opts, &t) != RT_STATUS_OK);
    CHECK_CONTAINS(rt_ctx_message(ctx), "model size");

    /* a model the file's size allows, but whose tensors the file lacks */
    p = metadata_only("small.safetensors", "[8,4,3]");
    snprintf(opts, sizeof opts, "{\"checkpoint\":\"%s\"}", p);
    rt_ctx_clear(ctx);
    CHECK(rt_instance_create(reg, ctx, RT_KIND_TEACHER, "model", opts, &t) != RT_STATUS_OK);
    CHECK_CONTAINS(rt_ctx_message(ctx), p);
    CHECK_CONTAINS(rt_ctx_message(ctx), "no tensor 'layers.0.weight'");

    /* a real checkpoint still loads, and the budget is gone afterwards */
    rt_instance *s = NULL;
    CHECK(!rt_instance_create(reg, ctx, RT_KIND_STUDENT, "mlp", "{\"sizes\":[8,4,3]}", &s));
    p = path_of("real.safetensors");
    CHECK(s && !rt_instance_save(s, ctx, p, 0, NULL, NULL));
    snprintf(opts, sizeof opts, "{\"checkpoint\":\"%s\"}", p);
    rt_ctx_clear(ctx);
    CHECK(rt_instance_create(reg, ctx, RT_KIND_TEACHER, "model", opts, &t) == RT_STATUS_OK);
    if (!t) fprintf(stderr, "  %s\n", rt_ctx_message(ctx));
    int64_t big[2] = {1024, 1024 * 16}; /* 64 MiB: more than that file's budget */
    rt_tensor *x = rt_tensor_new(ctx, RT_DTYPE_F32, 2, big);
    CHECK(x != NULL);
    rt_tensor_release(x);
    rt_instance_release(t);
    rt_instance_release(s);

    /* a file that is not a checkpoint: refused before anything is built */
    p = path_of("junk.safetensors");
    FILE *f = fopen(p, "wb");
    fputs("\x10\0\0\0\0\0\0\0{\"a\":1}         ", f);
    fclose(f);
    snprintf(opts, sizeof opts, "{\"checkpoint\":\"%s\"}", p);
    rt_ctx_clear(ctx);
    CHECK(rt_instance_create(reg, ctx, RT_KIND_TEACHER, "model", opts, &t) != RT_STATUS_OK);
    CHECK_CONTAINS(rt_ctx_message(ctx), p);
}

static void test_model_bounded_by_limit(void)
{
    rt_instance *s = NULL;
    long rss = max_rss_kb();
    rt_ctx_clear(ctx);
    CHECK(rt_instance_create(reg, ctx, RT_KIND_STUDENT, "mlp", "{\"sizes\":[100000000,100000000,10]}", &s) != 0);
    CHECK_CONTAINS(rt_ctx_message(ctx), "model size");
    CHECK_CONTAINS(rt_ctx_message(ctx), "RETORT_MAX_MODEL_MB");
    CHECK_CONTAINS(rt_ctx_message(ctx), "8192 MiB");
    CHECK(max_rss_kb() - rss < 64 * 1024);
    setenv("RETORT_MAX_MODEL_MB", "1", 1);
    rt_ctx_clear(ctx);
    CHECK(rt_instance_create(reg, ctx, RT_KIND_STUDENT, "mlp", "{\"sizes\":[784,1200,10]}", &s) != 0);
    CHECK_CONTAINS(rt_ctx_message(ctx), "limit of 1 MiB (RETORT_MAX_MODEL_MB)");
    CHECK(rt_instance_create(reg, ctx, RT_KIND_STUDENT, "mlp", "{\"sizes\":[16,8,4]}", &s) == RT_STATUS_OK);
    rt_instance_release(s);
    unsetenv("RETORT_MAX_MODEL_MB");
    /* outside create there is no bound */
    int64_t big[1] = {(int64_t)3 << 20};
    rt_tensor *x = rt_tensor_new(ctx, RT_DTYPE_F32, 1, big);
    CHECK(x != NULL);
    rt_tensor_release(x);
}

/* A safetensors file with the given header text and no data. */
static size_t header_file(unsigned char *buf, const char *json)
{
    size_t n = strlen(json);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, json, n);
    return 8 + n;
}

static void test_json_escapes(void)
{
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{\"a\\uZZZZb\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", "four hex digits at offset 11"},
        {"{\"a\\u00Gb\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", "four hex digits at offset 11"},
        {"{\"a\\u0000\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", "\\u0000 escape at offset 11"},
        {"{\"a\\uD800\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", "high surrogate"},
        {"{\"a\\uDC00\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", "lone low surrogate"},
        {"{\"a\\q\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", "invalid escape at offset 11"},
        {"{\"__metadata__\":{\"k\":\"v\\uZZZZ\"}}", "four hex digits at offset 31"},
        {"{\"__metadata__\":{\"k\\uzzzz\":\"v\"}}", "four hex digits at offset 27"},
    };
    unsigned char buf[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n = header_file(buf, cases[i].json);
        rt_st *f = NULL;
        rt_ctx_clear(ctx);
        CHECK(rt_st_read_mem(ctx, buf, n, "esc", &f) == RT_STATUS_ERR_FORMAT);
        CHECK(f == NULL);
        CHECK_CONTAINS(rt_ctx_message(ctx), cases[i].want);
        rt_st_free(f);
    }
    /* a valid pair and the ordinary escapes still read */
    size_t n = header_file(buf, "{\"\\uD83D\\uDE00 \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9\":{\"dtype\":\"F32\",\"shape\":[0],"
                                "\"data_offsets\":[0,0]}}");
    rt_st *f = NULL;
    rt_ctx_clear(ctx);
    CHECK(rt_st_read_mem(ctx, buf, n, "ok", &f) == RT_STATUS_OK);
    CHECK(f && rt_st_count(f) == 1 && !strcmp(rt_st_name(f, 0), "\xF0\x9F\x98\x80 \" \\ / \b \f \n \r \t \xC3\xA9"));
    rt_st_free(f);

    /* plugin options: the same check */
    rt_instance *s = NULL;
    rt_ctx_clear(ctx);
    CHECK(rt_instance_create(reg, ctx, RT_KIND_STUDENT, "mlp", "{\"activation\":\"relu\\uZZZZx\"}", &s) != 0);
    CHECK_CONTAINS(rt_ctx_message(ctx), "options: \\u escape without four hex digits at byte 19");
    rt_ctx_clear(ctx);
    CHECK(rt_instance_create(reg, ctx, RT_KIND_STUDENT, "mlp", "{\"activation\":\"relu\\u0000\"}", &s) != 0);
    CHECK_CONTAINS(rt_ctx_message(ctx), "options: \\u0000 escape at byte 19");
    CHECK(s == NULL);
}

static void test_atomic_special_files(void)
{
    int64_t sh[1] = {2};
    const float v[2] = {1, 2};
    rt_tensor *a = rt_tensor_from(ctx, RT_DTYPE_F32, 1, sh, v);
    const char *names[1] = {"w"};
    const rt_tensor *ts[1] = {a};
    /* a symlink: neither it nor its target is replaced */
    char target[256], lnk[256];
    snprintf(target, sizeof target, "%s", path_of("target.txt"));
    snprintf(lnk, sizeof lnk, "%s", path_of("link.safetensors"));
    FILE *f = fopen(target, "w");
    fputs("precious", f);
    fclose(f);
    CHECK(symlink(target, lnk) == 0);
    rt_ctx_clear(ctx);
    CHECK(rt_st_write(ctx, lnk, 1, names, ts, 0, NULL, NULL) == RT_STATUS_ERR_IO);
    CHECK_CONTAINS(rt_ctx_message(ctx), "is a symbolic link, not a regular file");
    CHECK_CONTAINS(rt_ctx_message(ctx), lnk);
    struct stat sb;
    CHECK(lstat(lnk, &sb) == 0 && S_ISLNK(sb.st_mode));
    CHECK(stat(target, &sb) == 0 && sb.st_size == 8);
    rt_ctx_clear(ctx);
    CHECK(rt_write_atomic(ctx, lnk, "{}", 2) == RT_STATUS_ERR_IO);
    CHECK(lstat(lnk, &sb) == 0 && S_ISLNK(sb.st_mode));
    /* a pipe */
    const char *fifo = path_of("fifo");
    CHECK(mkfifo(fifo, 0644) == 0);
    rt_ctx_clear(ctx);
    CHECK(rt_write_atomic(ctx, fifo, "{}", 2) == RT_STATUS_ERR_IO);
    CHECK_CONTAINS(rt_ctx_message(ctx), "is a pipe");
    CHECK(lstat(fifo, &sb) == 0 && S_ISFIFO(sb.st_mode));
    /* a device (a null device made here, when this user may) */
    const char *dev = path_of("null_dev");
    if (mknod(dev, S_IFCHR | 0666, makedev(1, 3)) == 0) {
        rt_ctx_clear(ctx);
        CHECK(rt_st_write(ctx, dev, 1, names, ts, 0, NULL, NULL) == RT_STATUS_ERR_IO);
        CHECK_CONTAINS(rt_ctx_message(ctx), "is a device");
        CHECK(lstat(dev, &sb) == 0 && S_ISCHR(sb.st_mode));
    }
    /* a folder */
    const char *d = path_of("folder");
    CHECK(mkdir(d, 0755) == 0);
    rt_ctx_clear(ctx);
    CHECK(rt_write_atomic(ctx, d, "{}", 2) == RT_STATUS_ERR_IO);
    CHECK_CONTAINS(rt_ctx_message(ctx), "is a folder");
    /* a hard link planted where the temp file goes: the file it links to
     * is not written through */
    char victim[256], tmp[320];
    snprintf(victim, sizeof victim, "%s", path_of("victim.txt"));
    f = fopen(victim, "w");
    fputs("victim", f);
    fclose(f);
    const char *out = path_of("out.json");
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out, (long)getpid());
    CHECK(link(victim, tmp) == 0);
    CHECK(rt_write_atomic(ctx, out, "{\"a\":1}", 7) == RT_STATUS_OK);
    CHECK(stat(victim, &sb) == 0 && sb.st_size == 6 && sb.st_nlink == 1);
    CHECK(stat(out, &sb) == 0 && sb.st_size == 7);
    /* a regular file and a new name are still written */
    CHECK(rt_write_atomic(ctx, target, "{}", 2) == RT_STATUS_OK);
    CHECK(rt_write_atomic(ctx, path_of("new.json"), "{}", 2) == RT_STATUS_OK);
    rt_tensor_release(a);
}

static void test_extreme_shapes(void)
{
    int64_t s2[2] = {3, 4};
    rt_tensor *t = rt_tensor_new(ctx, RT_DTYPE_F32, 2, s2), *v;
    /* views whose offset or reach overflows int64 */
    int64_t st[2] = {INT64_MAX, 1}, sh[2] = {2, 1};
    rt_ctx_clear(ctx);
    CHECK((v = rt_tensor_view(ctx, t, 2, sh, st, 0)) == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), "outside the storage");
    int64_t st2[2] = {1, 1};
    CHECK((v = rt_tensor_view(ctx, t, 2, sh, st2, INT64_MAX)) == NULL);
    rt_tensor *n1 = rt_tensor_narrow(ctx, t, 0, 1, 2);
    CHECK(n1 != NULL);
    rt_ctx_clear(ctx);
    CHECK((v = rt_tensor_view(ctx, n1, 2, sh, st2, INT64_MAX)) == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), "overflows");
    int64_t st3[2] = {INT64_MAX / 2, INT64_MAX / 2}, sh3[2] = {2, 2};
    CHECK((v = rt_tensor_view(ctx, t, 2, sh3, st3, 0)) == NULL);
    int64_t st4[2] = {INT64_MIN / 2, INT64_MIN / 2};
    CHECK((v = rt_tensor_view(ctx, t, 2, sh3, st4, INT64_MAX)) == NULL);
    /* narrow with extreme start and length */
    rt_ctx_clear(ctx);
    CHECK(rt_tensor_narrow(ctx, t, 0, INT64_MAX, INT64_MAX) == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), "outside [3, 4]");
    CHECK(rt_tensor_narrow(ctx, t, 0, -1, 1) == NULL);
    CHECK(rt_tensor_narrow(ctx, t, 1, 1, INT64_MIN) == NULL);
    CHECK(rt_tensor_narrow(ctx, t, 7, 0, 1) == NULL);
    /* reshape and new with counts that overflow */
    int64_t r1[2] = {INT64_MAX, 2}, r2[3] = {-1, INT64_MAX, 2}, r3[2] = {-1, 0};
    CHECK(rt_tensor_reshape(ctx, t, 2, r1) == NULL);
    CHECK(rt_tensor_reshape(ctx, t, 3, r2) == NULL);
    CHECK(rt_tensor_reshape(ctx, t, 2, r3) == NULL);
    /* a zero dimension does not hide an overflow of the others (strides
     * and rt_numel multiply them) */
    int64_t huge[3] = {INT64_MAX, INT64_MAX, 0}, huge0[3] = {0, INT64_MAX, INT64_MAX}, big2[2] = {(int64_t)1 << 62, 4};
    rt_ctx_clear(ctx);
    CHECK(rt_tensor_new(ctx, RT_DTYPE_F32, 3, huge) == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), "overflows");
    CHECK(rt_tensor_new(ctx, RT_DTYPE_F32, 3, huge0) == NULL);
    int64_t e0[1] = {0};
    rt_tensor *empty = rt_tensor_new(ctx, RT_DTYPE_F32, 1, e0);
    CHECK(empty && rt_tensor_reshape(ctx, empty, 3, huge0) == NULL);
    int64_t ok0[3] = {0, 1 << 20, 1 << 20};
    v = empty ? rt_tensor_reshape(ctx, empty, 3, ok0) : NULL;
    CHECK(v != NULL && rt_numel(v) == 0);
    rt_tensor_release(v);
    rt_tensor_release(empty);
    rt_ctx_clear(ctx);
    CHECK(rt_tensor_new(ctx, RT_DTYPE_F32, 2, big2) == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), "overflows");
    /* i32 fills and sets saturate instead of an undefined cast */
    int64_t s1[1] = {3};
    rt_tensor *i = rt_tensor_new(ctx, RT_DTYPE_I32, 1, s1);
    rt_tensor_fill(i, 1e300);
    CHECK(rt_i32(i)[0] == INT32_MAX);
    rt_tensor_fill(i, -1e300);
    CHECK(rt_i32(i)[1] == INT32_MIN);
    rt_tensor_set(i, 2, NAN);
    CHECK(rt_i32(i)[2] == 0);
    rt_tensor_set(i, 2, -7.9);
    CHECK(rt_i32(i)[2] == -7);
    rt_tensor_release(i);
    rt_tensor_release(n1);
    rt_tensor_release(t);
}

/* A gzip file whose header declares 100 MB of u8 (400 MB as f32) but whose
 * stream holds 200 KB: big enough to pass the deflate ratio bound, so only
 * reading stops it; it must stop having allocated about what arrived. */
static void test_gzip_declared_too_much(void)
{
    const char *p = path_of("forged_big.gz");
    gzFile g = gzopen(p, "wb1");
    CHECK(g != NULL);
    if (!g) return;
    unsigned char hdr[8] = {0, 0, 0x08, 1, 0x05, 0xF5, 0xE1, 0x00}; /* [100000000] u8 */
    CHECK(gzwrite(g, hdr, 8) == 8);
    unsigned char *noise = malloc(200000);
    uint64_t x = 88172645463325252ull;
    for (int i = 0; noise && i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        noise[i] = (unsigned char)x;
    }
    if (noise) CHECK(gzwrite(g, noise, 200000) == 200000);
    free(noise);
    CHECK(gzclose(g) == Z_OK);
    long rss = max_rss_kb();
    rt_tensor *t = NULL;
    rt_ctx_clear(ctx);
    CHECK(rt_idx_read(ctx, p, RT_DTYPE_F32, 1.0f, &t) == RT_STATUS_ERR_FORMAT);
    CHECK(t == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), p);
    CHECK_CONTAINS(rt_ctx_message(ctx), "truncated at offset 200008");
    CHECK(max_rss_kb() - rss < 32 * 1024); /* not the 400 MB declared */

    /* from memory the same inflate path is taken (the fuzzer's way in) */
    unsigned char raw[20] = {0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4}, z[128];
    uLongf zn = sizeof z;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    CHECK(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    zs.next_in = raw, zs.avail_in = 16, zs.next_out = z, zs.avail_out = (uInt)zn;
    CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
    zn = zs.total_out;
    deflateEnd(&zs);
    rt_ctx_clear(ctx);
    CHECK(rt_idx_read_mem(ctx, z, zn, "mem.gz", RT_DTYPE_I32, 1.0f, &t) == RT_STATUS_OK);
    CHECK(t && t->ndim == 2 && rt_i32(t)[3] == 4);
    rt_tensor_release(t);
    t = NULL;
    CHECK(rt_idx_read_mem(ctx, z, zn - 3, "mem.gz", RT_DTYPE_I32, 1.0f, &t) == RT_STATUS_ERR_FORMAT);
    CHECK_CONTAINS(rt_ctx_message(ctx), "mem.gz: gzip: compressed stream truncated");
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/rt_hard_XXXXXX");
    if (!mkdtemp(dir)) return 2;
    ctx = rt_ctx_new();
    reg = rt_registry_new();
    rt_ctx_set_registry(ctx, reg);
    char pd[512];
    if (rt_registry_load_dir(reg, ctx, t_build_path(pd, sizeof pd, "lib/retort/plugins"), 1, NULL))
        fprintf(stderr, "plugins: %s\n", rt_ctx_message(ctx));
    unsetenv("RETORT_MAX_MODEL_MB");
    /* first: ru_maxrss is a high-water mark, and these two measure it */
    RUN(test_gzip_declared_too_much);
    RUN(test_model_bounded_by_checkpoint);
    RUN(test_model_bounded_by_limit);
    RUN(test_json_escapes);
    RUN(test_atomic_special_files);
    RUN(test_extreme_shapes);
    rt_registry_free(reg);
    rt_ctx_free(ctx);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return t_summary("test_hardening");
}
