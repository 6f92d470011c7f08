/*
 * test_safetensors.c -- safetensors round trips, the exact byte layout,
 * atomic writes, and a malformed corpus built here as bytes, each case
 * with the error it must give (from memory and from a file).
 */
#include "retort.h"
#include "t.h"

#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];
static rt_ctx *ctx;

static const char *path_of(const char *name)
{
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n)) {
        perror(path);
        exit(2);
    }
    fclose(f);
}

/* The whole file at path into a malloc'd buffer (*n bytes). */
static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (!f) return NULL;
    unsigned char *b = malloc(1 << 20);
    if (b) *n = fread(b, 1, 1 << 20, f);
    fclose(f);
    return b;
}

/* Files in dir whose name contains ".tmp." */
static int count_temp_files(const char *d)
{
    DIR *dp = opendir(d);
    int n = 0;
    struct dirent *e;
    while (dp && (e = readdir(dp)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (dp) closedir(dp);
    return n;
}

/* 8-byte little-endian length + header + data, into out. */
static size_t build(unsigned char *out, uint64_t hlen, const char *header, const void *data, size_t nd)
{
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)(hlen >> (8 * i));
    size_t hl = strlen(header);
    memcpy(out + 8, header, hl);
    if (nd) memcpy(out + 8 + hl, data, nd);
    return 8 + hl + nd;
}

/* ------------------------------------------------------------ round trip */

static void test_round_trip(void)
{
    int64_t s23[2] = {2, 3}, s4[1] = {4}, s05[2] = {0, 5}, s6[6] = {1, 2, 1, 1, 2, 1};
    rt_tensor *a = rt_tensor_new(ctx, RT_DTYPE_F32, 2, s23);
    rt_tensor *b = rt_tensor_new(ctx, RT_DTYPE_I32, 1, s4);
    rt_tensor *c = rt_tensor_new(ctx, RT_DTYPE_F32, 0, NULL); /* a 0-d scalar */
    rt_tensor *e = rt_tensor_new(ctx, RT_DTYPE_F32, 2, s05);  /* empty */
    rt_tensor *g = rt_tensor_new(ctx, RT_DTYPE_F32, 6, s6);
    if (!a || !b || !c || !e || !g) {
        CHECK(0);
        return;
    }
    for (int i = 0; i < 6; i++) rt_f32(a)[i] = (float)i * 0.25f - 1.0f;
    const int32_t bv[4] = {-7, 0, 2147483647, -2147483647 - 1};
    memcpy(rt_i32(b), bv, sizeof bv);
    rt_f32(c)[0] = 3.5e-20f;
    for (int i = 0; i < 4; i++) rt_f32(g)[i] = (float)(i + 1) * 1e10f;
    const char *names[5] = {"layers.0.weight", "labels", "scalar", "empty", "six.dims"};
    const rt_tensor *ts[5] = {a, b, c, e, g};
    const char *keys[3] = {"retort.kind", "note", "unicode"};
    const char *vals[3] = {"student", "quotes \" and \\ and\nnewline", "\xce\xbb=0.5 \xe2\x9c\x93"};
    const char *p = path_of("rt.safetensors");
    CHECK(rt_st_write(ctx, p, 5, names, ts, 3, keys, vals) == RT_STATUS_OK);
    CHECK(count_temp_files(dir) == 0);

    rt_st *f = NULL;
    CHECK(rt_st_read(ctx, p, &f) == RT_STATUS_OK);
    if (!f) return;
    CHECK(rt_st_count(f) == 5);
    for (int i = 0; i < rt_st_count(f) && i < 5; i++) {
        CHECK(strcmp(rt_st_name(f, i), names[i]) == 0); /* header order kept */
        rt_tensor *t = rt_st_tensor(f, i);
        CHECK(t->dtype == ts[i]->dtype && rt_tensor_same_shape(t, ts[i]));
        CHECK(memcmp(t->data, ts[i]->data, rt_tensor_nbytes(t)) == 0);
    }
    CHECK(rt_st_find(f, "labels") == rt_st_tensor(f, 1));
    CHECK(rt_st_find(f, "Labels") == NULL);
    CHECK(rt_st_tensor(f, 2)->ndim == 0 && rt_f32(rt_st_tensor(f, 2))[0] == 3.5e-20f);
    CHECK(rt_numel(rt_st_tensor(f, 3)) == 0 && rt_st_tensor(f, 3)->shape[1] == 5);
    CHECK(rt_i32(rt_st_tensor(f, 1))[3] == INT32_MIN);
    CHECK(rt_st_meta_count(f) == 3);
    for (int i = 0; i < 3; i++) {
        CHECK(strcmp(rt_st_meta_key(f, i), keys[i]) == 0);
        CHECK(strcmp(rt_st_meta_value(f, i), vals[i]) == 0);
    }
    CHECK(rt_st_meta_get(f, "note") && strcmp(rt_st_meta_get(f, "note"), vals[1]) == 0);
    CHECK(rt_st_meta_get(f, "absent") == NULL);
    rt_st_free(f);

    /* Layout: 8 + H is a multiple of 8, "__metadata__" comes first, the
     * data size is the sum of the tensors' bytes. */
    size_t n;
    unsigned char *bytes = slurp(p, &n);
    CHECK(bytes != NULL);
    if (bytes) {
        uint64_t h = 0;
        for (int i = 7; i >= 0; i--) h = h << 8 | bytes[i];
        CHECK((8 + h) % 8 == 0);
        CHECK(n == 8 + h + 24 + 16 + 4 + 0 + 16);
        CHECK(memcmp(bytes + 8, "{\"__metadata__\":{", 17) == 0);
        /* the same bytes through the memory reader */
        f = NULL;
        CHECK(rt_st_read_mem(ctx, bytes, n, "mem", &f) == RT_STATUS_OK);
        CHECK(f && rt_st_count(f) == 5 && rt_st_meta_count(f) == 3);
        rt_st_free(f);
        free(bytes);
    }

    /* Metadata only. */
    f = NULL;
    CHECK(rt_st_read_meta(ctx, p, &f) == RT_STATUS_OK);
    CHECK(f && rt_st_count(f) == 0 && rt_st_meta_count(f) == 3);
    if (f) CHECK(strcmp(rt_st_meta_get(f, "retort.kind"), "student") == 0);
    rt_st_free(f);

    rt_tensor_release(a);
    rt_tensor_release(b);
    rt_tensor_release(c);
    rt_tensor_release(e);
    rt_tensor_release(g);
}

/* The exact bytes the reference writer produces for one F32 tensor and no
 * metadata: JSON padded with spaces to a multiple of 8, then the data. */
static void test_exact_bytes(void)
{
    const char *json = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    size_t jl = strlen(json), pad = (8 - jl % 8) % 8;
    unsigned char want[128];
    const float v[2] = {1.0f, -2.0f};
    for (int i = 0; i < 8; i++) want[i] = (unsigned char)((jl + pad) >> (8 * i));
    memcpy(want + 8, json, jl);
    memset(want + 8 + jl, ' ', pad);
    memcpy(want + 8 + jl + pad, v, 8);
    size_t wn = 8 + jl + pad + 8;

    int64_t s[1] = {2};
    rt_tensor *t = rt_tensor_from(ctx, RT_DTYPE_F32, 1, s, v);
    const char *names[1] = {"w"};
    const rt_tensor *ts[1] = {t};
    const char *p = path_of("exact.safetensors");
    CHECK(rt_st_write(ctx, p, 1, names, ts, 0, NULL, NULL) == RT_STATUS_OK);
    size_t n;
    unsigned char *got = slurp(p, &n);
    CHECK(got && n == wn && memcmp(got, want, wn) == 0);
    free(got);
    /* and the hand-made bytes read back */
    rt_st *f = NULL;
    CHECK(rt_st_read_mem(ctx, want, wn, "want", &f) == RT_STATUS_OK);
    CHECK(f && rt_st_count(f) == 1 && rt_f32(rt_st_tensor(f, 0))[1] == -2.0f && rt_st_meta_count(f) == 0);
    rt_st_free(f);
    rt_tensor_release(t);
}

static void test_noncontiguous(void)
{
    int64_t s34[2] = {3, 4};
    rt_tensor *base = rt_tensor_new(ctx, RT_DTYPE_F32, 2, s34);
    if (!base) {
        CHECK(0);
        return;
    }
    for (int i = 0; i < 12; i++) rt_f32(base)[i] = (float)i;
    /* transpose: [4, 3] with strides [1, 4] */
    int64_t s43[2] = {4, 3}, st[2] = {1, 4};
    rt_tensor *tr = rt_tensor_view(ctx, base, 2, s43, st, 0);
    /* columns 1..2 of every row: [3, 2], strides [4, 1], offset 1 */
    rt_tensor *cols = rt_tensor_narrow(ctx, base, 1, 1, 2);
    CHECK(tr && cols && !rt_is_contiguous(tr) && !rt_is_contiguous(cols));
    if (!tr || !cols) return;
    const char *names[2] = {"t", "cols"};
    const rt_tensor *ts[2] = {tr, cols};
    const char *p = path_of("nc.safetensors");
    CHECK(rt_st_write(ctx, p, 2, names, ts, 0, NULL, NULL) == RT_STATUS_OK);
    rt_st *f = NULL;
    CHECK(rt_st_read(ctx, p, &f) == RT_STATUS_OK);
    if (f) {
        rt_tensor *a = rt_st_find(f, "t"), *b = rt_st_find(f, "cols");
        CHECK(a && b && a->shape[0] == 4 && a->shape[1] == 3 && b->shape[0] == 3 && b->shape[1] == 2);
        /* independent expectations: t[i][j] = base[j][i] = 4j + i;
         * cols[i][j] = base[i][j + 1] = 4i + j + 1 */
        int bad = 0;
        for (int i = 0; a && i < 4; i++)
            for (int j = 0; j < 3; j++) bad += rt_f32(a)[i * 3 + j] != (float)(4 * j + i);
        for (int i = 0; b && i < 3; i++)
            for (int j = 0; j < 2; j++) bad += rt_f32(b)[i * 2 + j] != (float)(4 * i + j + 1);
        CHECK(bad == 0);
    }
    rt_st_free(f);
    rt_tensor_release(tr);
    rt_tensor_release(cols);
    rt_tensor_release(base);
}

/* ------------------------------------------------------------ atomicity */

static void test_atomic(void)
{
    int64_t s[1] = {3};
    const float av[3] = {1, 2, 3};
    rt_tensor *a = rt_tensor_from(ctx, RT_DTYPE_F32, 1, s, av);
    const char *names[1] = {"w"};
    const rt_tensor *ts[1] = {a};
    const char *p = path_of("atomic.safetensors");
    CHECK(rt_st_write(ctx, p, 1, names, ts, 0, NULL, NULL) == RT_STATUS_OK);
    char before[65], after[65];
    CHECK(rt_sha256_file(ctx, p, before) == RT_STATUS_OK);

    /* a NaN: refused before anything is written */
    rt_tensor *bad = rt_tensor_from(ctx, RT_DTYPE_F32, 1, s, av);
    rt_f32(bad)[1] = NAN;
    const char *bn[2] = {"ok", "bad.weight"};
    const rt_tensor *bt[2] = {a, bad};
    rt_ctx_clear(ctx);
    CHECK(rt_st_write(ctx, p, 2, bn, bt, 0, NULL, NULL) == RT_STATUS_ERR_NUMERIC);
    CHECK_CONTAINS(rt_ctx_message(ctx), "bad.weight");
    CHECK_CONTAINS(rt_ctx_message(ctx), "non-finite");
    rt_f32(bad)[1] = -INFINITY;
    CHECK(rt_st_write(ctx, p, 2, bn, bt, 0, NULL, NULL) == RT_STATUS_ERR_NUMERIC);
    CHECK(rt_sha256_file(ctx, p, after) == RT_STATUS_OK && strcmp(before, after) == 0);
    CHECK(count_temp_files(dir) == 0);

    /* bad names: duplicate, empty, reserved */
    const char *dn[2] = {"w", "w"};
    const rt_tensor *dt[2] = {a, a};
    rt_ctx_clear(ctx);
    CHECK(rt_st_write(ctx, p, 2, dn, dt, 0, NULL, NULL) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "'w' appears twice");
    const char *en[1] = {""};
    CHECK(rt_st_write(ctx, p, 1, en, ts, 0, NULL, NULL) == RT_STATUS_ERR_ARG);
    const char *mn[1] = {"__metadata__"};
    CHECK(rt_st_write(ctx, p, 1, mn, ts, 0, NULL, NULL) == RT_STATUS_ERR_ARG);
    const char *k2[2] = {"k", "k"}, *v2[2] = {"1", "2"};
    rt_ctx_clear(ctx);
    CHECK(rt_st_write(ctx, p, 1, names, ts, 2, k2, v2) == RT_STATUS_ERR_ARG);
    CHECK_CONTAINS(rt_ctx_message(ctx), "key 'k' appears twice");

    /* the target is a folder: refused before anything is written (an
     * empty folder would otherwise be replaced by the rename) */
    const char *d = path_of("a_folder");
    CHECK(mkdir(d, 0755) == 0);
    rt_ctx_clear(ctx);
    CHECK(rt_st_write(ctx, d, 1, names, ts, 0, NULL, NULL) == RT_STATUS_ERR_IO);
    CHECK_CONTAINS(rt_ctx_message(ctx), "is a folder, not a regular file");
    CHECK_CONTAINS(rt_ctx_message(ctx), "a_folder");
    struct stat sb;
    CHECK(stat(d, &sb) == 0 && S_ISDIR(sb.st_mode));
    CHECK(count_temp_files(dir) == 0);

    /* a folder that does not exist */
    const char *nf = path_of("no/such/folder/x.safetensors");
    rt_ctx_clear(ctx);
    CHECK(rt_st_write(ctx, nf, 1, names, ts, 0, NULL, NULL) == RT_STATUS_ERR_IO);
    CHECK_CONTAINS(rt_ctx_message(ctx), "x.safetensors");
    CHECK_CONTAINS(rt_ctx_message(ctx), "No such file or directory");

    /* a read-only folder (meaningless as root, who may write anyway) */
    if (geteuid() != 0) {
        const char *ro = path_of("ro");
        CHECK(mkdir(ro, 0755) == 0);
        char rp[300];
        snprintf(rp, sizeof rp, "%s/ck.safetensors", ro);
        CHECK(rt_st_write(ctx, rp, 1, names, ts, 0, NULL, NULL) == RT_STATUS_OK);
        CHECK(rt_sha256_file(ctx, rp, before) == RT_STATUS_OK);
        chmod(ro, 0555);
        rt_ctx_clear(ctx);
        CHECK(rt_st_write(ctx, rp, 1, names, ts, 1, k2, v2) == RT_STATUS_ERR_IO);
        CHECK_CONTAINS(rt_ctx_message(ctx), "Permission denied");
        CHECK(rt_sha256_file(ctx, rp, after) == RT_STATUS_OK && strcmp(before, after) == 0);
        CHECK(count_temp_files(ro) == 0);
        chmod(ro, 0755);
    }

    /* A survives all of it */
    rt_st *f = NULL;
    CHECK(rt_st_read(ctx, p, &f) == RT_STATUS_OK);
    CHECK(f && rt_st_count(f) == 1 && rt_f32(rt_st_tensor(f, 0))[2] == 3.0f);
    rt_st_free(f);

    /* rt_write_atomic replaces a file whole */
    const char *jp = path_of("m.json");
    CHECK(rt_write_atomic(ctx, jp, "{\"a\": 1}\n", 9) == RT_STATUS_OK);
    CHECK(rt_write_atomic(ctx, jp, "{}\n", 3) == RT_STATUS_OK);
    size_t n;
    unsigned char *b = slurp(jp, &n);
    CHECK(b && n == 3 && memcmp(b, "{}\n", 3) == 0);
    free(b);
    CHECK(count_temp_files(dir) == 0);

    rt_tensor_release(a);
    rt_tensor_release(bad);
}

/* ------------------------------------------------------ malformed corpus */

typedef struct bad_case {
    const char *name;
    const char *header; /* JSON text */
    int64_t hlen;       /* -1: strlen(header) */
    size_t data;        /* bytes of data after the header */
    const char *sub1, *sub2;
} bad_case;

#define F32_8 "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\""
static const bad_case corpus[] = {
    {"hdr_too_long", "{}", 200000000, 0, "header length 200000000 at offset 0 exceeds", NULL},
    {"hdr_past_end", "{}", 100, 0, "header length 100 at offset 0 is longer than the 2 bytes", NULL},
    {"not_json", "{abc", -1, 0, "header: invalid JSON at offset", NULL},
    {"array", "[1,2]", -1, 0, "does not start with '{' at offset 8", NULL},
    {"leading_space", " {}", -1, 0, "does not start with '{'", NULL},
    {"empty_header", "", -1, 0, "does not start with '{'", NULL},
    {"trailing_garbage", "{} x", -1, 0, "invalid JSON at offset 11", NULL},
    {"two_objects", "{}{}", -1, 0, "invalid JSON at offset 10", NULL},
    {"unknown_dtype", "{\"a\":{\"dtype\":\"Q8\",\"shape\":[2],\"data_offsets\":[0,2]}}", -1, 2,
     "tensor 'a': unknown dtype 'Q8'", NULL},
    {"f16", "{\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", -1, 4,
     "tensor 'h': dtype F16 is not supported", NULL},
    {"bf16", "{\"h\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", -1, 4, "dtype BF16 is not supported",
     NULL},
    {"dtype_lower", "{\"h\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 8, "unknown dtype 'f32'",
     NULL},
    {"dtype_number", "{\"h\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 8, "dtype is missing", NULL},
    {"negative_shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", -1, 0,
     "shape entry 0 is not a non-negative integer", NULL},
    {"fraction_shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", -1, 4,
     "shape entry 0 is not", NULL},
    {"seven_dims", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", -1, 4,
     "7 dimensions", NULL},
    {"shape_overflow",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", -1, 4,
     "overflows", NULL},
    {"span_mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", -1, 20,
     "shape [2, 3] x F32 is 24 bytes but data_offsets [0, 20] span 20", NULL},
    {"overlap", "{\"a\":{" F32_8 ":[0,8]},\"b\":{" F32_8 ":[4,12]}}", -1, 12, "tensor 'b'", "an overlap"},
    {"gap", "{\"a\":{" F32_8 ":[0,8]},\"b\":{" F32_8 ":[12,20]}}", -1, 20, "tensor 'b'", "a gap"},
    {"not_from_0", "{\"a\":{" F32_8 ":[4,12]}}", -1, 12, "not starting at 0", NULL},
    {"end_before_begin", "{\"a\":{" F32_8 ":[8,0]}}", -1, 8, "end before begin", NULL},
    {"offsets_short", "{\"a\":{" F32_8 ":[0]}}", -1, 8, "data_offsets is not [begin, end]", NULL},
    {"offsets_huge", "{\"a\":{" F32_8 ":[1e300,1e300]}}", -1, 8, "data_offsets is not", NULL},
    {"file_longer", "{\"a\":{" F32_8 ":[0,8]}}", -1, 9, "trailing bytes", "offset"},
    {"file_shorter", "{\"a\":{" F32_8 ":[0,8]}}", -1, 7, "truncated", "offset"},
    {"dup_name", "{\"a\":{" F32_8 ":[0,8]},\"a\":{" F32_8 ":[8,16]}}", -1, 16, "tensor name 'a' appears twice", NULL},
    {"dup_field", "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 8,
     "field dtype appears twice", NULL},
    {"meta_number", "{\"__metadata__\":{\"k\":1}}", -1, 0, "__metadata__ 'k' is not a string", NULL},
    {"meta_nested", "{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", -1, 0, "__metadata__ 'k' is not a string", NULL},
    {"meta_array", "{\"__metadata__\":[\"x\"]}", -1, 0, "__metadata__ is not an object", NULL},
    {"meta_dup_key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", -1, 0, "__metadata__ key 'k' appears twice",
     NULL},
    {"meta_twice", "{\"__metadata__\":{},\"__metadata__\":{}}", -1, 0, "__metadata__ appears twice", NULL},
    {"nan_in_json", "{\"a\":{\"dtype\":\"F32\",\"shape\":[NaN],\"data_offsets\":[0,8]}}", -1, 8, "invalid JSON",
     "offset"},
    {"nan_meta", "{\"__metadata__\":{\"k\":NaN}}", -1, 0, "invalid JSON", NULL},
    {"entry_number", "{\"a\":5}", -1, 0, "tensor 'a' is not an object", NULL},
    {"nul_escape", "{\"a\\u0000b\":{" F32_8 ":[0,8]}}", -1, 8, "\\u0000 escape at offset 11", NULL},
    {"nul_byte", "{\"a\":{" F32_8 ":[0,8]}}", 60, 0, NULL, NULL}, /* filled in below */
    {"bad_utf8", "{\"\xff\":{" F32_8 ":[0,8]}}", -1, 8, "invalid UTF-8 at offset 10", NULL},
    {"overlong_utf8", "{\"\xc0\xaf\":{" F32_8 ":[0,8]}}", -1, 8, "invalid UTF-8", NULL},
    {"deep_nesting", NULL, -1, 0, "invalid JSON", NULL}, /* filled in below */
};

/* Runs one case through the memory and the file readers. */
static void check_bad(const char *name, const unsigned char *bytes, size_t n, const char *sub1, const char *sub2)
{
    rt_st *f = (rt_st *)1;
    rt_ctx_clear(ctx);
    rt_status st = rt_st_read_mem(ctx, bytes, n, name, &f);
    if (getenv("T_VERBOSE")) printf("  %s -> %s\n", name, rt_ctx_message(ctx));
    CHECK(st == RT_STATUS_ERR_FORMAT);
    CHECK(f == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), name);
    if (sub1) CHECK_CONTAINS(rt_ctx_message(ctx), sub1);
    if (sub2) CHECK_CONTAINS(rt_ctx_message(ctx), sub2);
    if (st == RT_STATUS_OK) rt_st_free(f);

    const char *p = path_of(name);
    write_file(p, bytes, n);
    f = (rt_st *)1;
    rt_ctx_clear(ctx);
    st = rt_st_read(ctx, p, &f);
    CHECK(st == RT_STATUS_ERR_FORMAT);
    CHECK(f == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), p);
    if (sub1) CHECK_CONTAINS(rt_ctx_message(ctx), sub1);
    if (sub2) CHECK_CONTAINS(rt_ctx_message(ctx), sub2);
    if (st == RT_STATUS_OK) rt_st_free(f);
}

static void test_malformed(void)
{
    static unsigned char buf[1 << 16];
    unsigned char zeros[64] = {0};
    /* shorter than 8 bytes: 0..7 */
    for (size_t n = 0; n < 8; n++) check_bad("tiny", zeros, n, "shorter than the 8-byte header length", "offset 0");
    for (size_t i = 0; i < sizeof corpus / sizeof *corpus; i++) {
        const bad_case *c = &corpus[i];
        size_t n;
        if (strcmp(c->name, "nul_byte") == 0) {
            const char *h = c->header;
            n = build(buf, strlen(h) + 8, h, zeros, 0);
            memset(buf + n, 0, 16); /* header continues with NUL bytes */
            n += 16;
            check_bad(c->name, buf, n, "NUL byte at offset", NULL);
            continue;
        }
        if (strcmp(c->name, "deep_nesting") == 0) {
            /* {"a":[[[[...]]]]} 5000 deep: cJSON's nesting limit refuses it */
            char *h = malloc(12000);
            size_t o = (size_t)sprintf(h, "{\"a\":");
            for (int k = 0; k < 5000; k++) h[o++] = '[';
            for (int k = 0; k < 5000; k++) h[o++] = ']';
            h[o++] = '}';
            h[o] = 0;
            n = build(buf, o, h, NULL, 0);
            free(h);
            check_bad(c->name, buf, n, c->sub1, c->sub2);
            continue;
        }
        uint64_t hl = c->hlen >= 0 ? (uint64_t)c->hlen : strlen(c->header);
        n = build(buf, hl, c->header, zeros, c->data);
        check_bad(c->name, buf, n, c->sub1, c->sub2);
    }
}

/* A valid file, then every truncation and every single-byte corruption of
 * it: no crash, and a truncation never reads as valid. */
static void test_mutations(void)
{
    int64_t s[2] = {2, 2};
    const float v[4] = {1, 2, 3, 4};
    rt_tensor *t = rt_tensor_from(ctx, RT_DTYPE_F32, 2, s, v);
    const char *names[1] = {"w"};
    const rt_tensor *ts[1] = {t};
    const char *k[1] = {"a"}, *vv[1] = {"b"};
    const char *p = path_of("mut.safetensors");
    CHECK(rt_st_write(ctx, p, 1, names, ts, 1, k, vv) == RT_STATUS_OK);
    size_t n;
    unsigned char *b = slurp(p, &n);
    if (!b) {
        CHECK(0);
        return;
    }
    int ok = 0;
    for (size_t cut = 0; cut < n; cut++) {
        rt_st *f = NULL;
        ok += rt_st_read_mem(ctx, b, cut, "cut", &f) == RT_STATUS_OK;
        rt_st_free(f);
    }
    CHECK(ok == 0);
    for (size_t i = 0; i < n; i++) {
        unsigned char keep = b[i];
        for (int x = 1; x < 256; x <<= 1) {
            b[i] = keep ^ (unsigned char)x;
            rt_st *f = NULL;
            if (rt_st_read_mem(ctx, b, n, "flip", &f) == RT_STATUS_OK) {
                CHECK(rt_st_count(f) <= 1);
                rt_st_free(f);
            }
        }
        b[i] = keep;
    }
    free(b);
    rt_tensor_release(t);
}

static void test_sha256_file(void)
{
    const char *p = path_of("abc.txt");
    write_file(p, "abc", 3);
    char h[65];
    CHECK(rt_sha256_file(ctx, p, h) == RT_STATUS_OK);
    CHECK(strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    rt_ctx_clear(ctx);
    CHECK(rt_sha256_file(ctx, path_of("absent"), h) == RT_STATUS_ERR_IO);
    CHECK_CONTAINS(rt_ctx_message(ctx), "absent: open");
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/rt_st_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    ctx = rt_ctx_new();
    RUN(test_round_trip);
    RUN(test_exact_bytes);
    RUN(test_noncontiguous);
    RUN(test_atomic);
    RUN(test_malformed);
    RUN(test_mutations);
    RUN(test_sha256_file);
    rt_ctx_free(ctx);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return t_summary("test_safetensors");
}
