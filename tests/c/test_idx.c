/*
 * test_idx.c -- IDX reading: every element type, raw and gzip'd, and a
 * malformed corpus built here, each case with the error it must give.
 */
#include "retort.h"
#include "t.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

static char dir[64];
static rt_ctx *ctx;

static const char *path_of(const char *name)
{
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static void write_raw(const char *name, const void *p, size_t n)
{
    FILE *f = fopen(path_of(name), "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        perror(name);
        exit(2);
    }
    fclose(f);
}

static void write_gz(const char *name, const char *mode, const void *p, size_t n)
{
    gzFile g = gzopen(path_of(name), mode);
    if (!g || (n && gzwrite(g, p, (unsigned)n) != (int)n) || gzclose(g) != Z_OK) {
        fprintf(stderr, "gzip %s failed\n", name);
        exit(2);
    }
}

static size_t read_all(const char *name, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path_of(name), "rb");
    size_t n = f ? fread(buf, 1, cap, f) : 0;
    if (f) fclose(f);
    return n;
}

/* An IDX image: magic, dims (big-endian), then data as given. */
static size_t make_idx(unsigned char *out, unsigned type, int ndims, const uint32_t *dims, const void *data,
                       size_t nbytes)
{
    size_t o = 0;
    out[o++] = 0;
    out[o++] = 0;
    out[o++] = (unsigned char)type;
    out[o++] = (unsigned char)ndims;
    for (int i = 0; i < ndims; i++) {
        out[o++] = (unsigned char)(dims[i] >> 24);
        out[o++] = (unsigned char)(dims[i] >> 16);
        out[o++] = (unsigned char)(dims[i] >> 8);
        out[o++] = (unsigned char)dims[i];
    }
    if (nbytes) memcpy(out + o, data, nbytes);
    return o + nbytes;
}

/* Reads path and expects failure with status and a message holding both
 * substrings (the second may be NULL). */
static void expect_error(const char *name, rt_dtype want, rt_status status, const char *sub1, const char *sub2)
{
    rt_tensor *t = (rt_tensor *)1;
    rt_ctx_clear(ctx);
    rt_status st = rt_idx_read(ctx, path_of(name), want, 1.0f, &t);
    if (getenv("T_VERBOSE")) printf("  %s -> %s\n", name, rt_ctx_message(ctx));
    CHECK(st == status);
    CHECK(t == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), sub1);
    if (sub2) CHECK_CONTAINS(rt_ctx_message(ctx), sub2);
    CHECK_CONTAINS(rt_ctx_message(ctx), name); /* the path is named */
    if (st == RT_STATUS_OK) rt_tensor_release(t);
}

static unsigned char u8data[24];

static void check_u8_tensor(rt_tensor *t, float scale)
{
    CHECK(t && t->dtype == RT_DTYPE_F32 && t->ndim == 3);
    if (!t) return;
    CHECK(t->shape[0] == 2 && t->shape[1] == 3 && t->shape[2] == 4);
    int bad = 0;
    for (int i = 0; i < 24; i++) bad += rt_f32(t)[i] != (float)u8data[i] * scale;
    CHECK(bad == 0);
}

static void test_u8_raw_gzip_mem(void)
{
    unsigned char buf[256];
    uint32_t dims[3] = {2, 3, 4};
    for (int i = 0; i < 24; i++) u8data[i] = (unsigned char)(i * 37 + 200);
    size_t n = make_idx(buf, 0x08, 3, dims, u8data, 24);
    CHECK(n == 16 + 24);
    write_raw("u8.idx", buf, n);
    write_gz("u8.idx.gz", "wb9", buf, n);
    float scale = 1.0f / 255.0f;
    rt_tensor *t = NULL;
    CHECK(rt_idx_read(ctx, path_of("u8.idx"), RT_DTYPE_F32, scale, &t) == RT_STATUS_OK);
    check_u8_tensor(t, scale);
    CHECK(t && rt_f32(t)[1] == (float)(unsigned char)237 * scale); /* 37 + 200 */
    rt_tensor_release(t);
    t = NULL;
    CHECK(rt_idx_read(ctx, path_of("u8.idx.gz"), RT_DTYPE_F32, scale, &t) == RT_STATUS_OK);
    check_u8_tensor(t, scale);
    rt_tensor_release(t);
    t = NULL;
    CHECK(rt_idx_read_mem(ctx, buf, n, "mem", RT_DTYPE_F32, 2.0f, &t) == RT_STATUS_OK);
    check_u8_tensor(t, 2.0f);
    rt_tensor_release(t);

    /* Two concatenated gzip members (gzip allows it): the same tensor. */
    write_gz("two.gz", "wb", buf, 20);
    write_gz("two.gz", "ab", buf + 20, n - 20);
    t = NULL;
    CHECK(rt_idx_read(ctx, path_of("two.gz"), RT_DTYPE_F32, scale, &t) == RT_STATUS_OK);
    check_u8_tensor(t, scale);
    rt_tensor_release(t);
}

static void test_labels_i32(void)
{
    unsigned char buf[64], lab[10] = {9, 0, 3, 7, 1, 2, 255, 4, 5, 6};
    uint32_t dims[1] = {10};
    size_t n = make_idx(buf, 0x08, 1, dims, lab, 10);
    write_gz("labels.gz", "wb", buf, n);
    rt_tensor *t = NULL;
    CHECK(rt_idx_read(ctx, path_of("labels.gz"), RT_DTYPE_I32, 123.0f, &t) == RT_STATUS_OK);
    CHECK(t && t->dtype == RT_DTYPE_I32 && t->ndim == 1 && t->shape[0] == 10);
    if (t) {
        CHECK(rt_i32(t)[0] == 9 && rt_i32(t)[3] == 7 && rt_i32(t)[9] == 6);
        CHECK(rt_i32(t)[6] == 255); /* u8: unsigned, scale ignored for i32 */
    }
    rt_tensor_release(t);
}

static void test_other_types(void)
{
    unsigned char buf[128];
    uint32_t d3[1] = {3};
    rt_tensor *t = NULL;
    /* i8: 0xFF = -1, 0x80 = -128, 0x05 = 5 */
    const unsigned char i8[3] = {0xFF, 0x80, 0x05};
    size_t n = make_idx(buf, 0x09, 1, d3, i8, 3);
    CHECK(rt_idx_read_mem(ctx, buf, n, "i8", RT_DTYPE_I32, 1, &t) == RT_STATUS_OK);
    CHECK(t && rt_i32(t)[0] == -1 && rt_i32(t)[1] == -128 && rt_i32(t)[2] == 5);
    rt_tensor_release(t);
    /* i16 big-endian: FFFE = -2, 012C = 300, 8000 = -32768 */
    const unsigned char i16[6] = {0xFF, 0xFE, 0x01, 0x2C, 0x80, 0x00};
    n = make_idx(buf, 0x0B, 1, d3, i16, 6);
    t = NULL;
    CHECK(rt_idx_read_mem(ctx, buf, n, "i16", RT_DTYPE_F32, 0.5f, &t) == RT_STATUS_OK);
    CHECK(t && rt_f32(t)[0] == -1.0f && rt_f32(t)[1] == 150.0f && rt_f32(t)[2] == -16384.0f);
    rt_tensor_release(t);
    /* i32: 00 01 00 00 = 65536, FF FF FF FF = -1, 7F FF FF FF */
    const unsigned char i32[12] = {0, 1, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF};
    n = make_idx(buf, 0x0C, 1, d3, i32, 12);
    t = NULL;
    CHECK(rt_idx_read_mem(ctx, buf, n, "i32", RT_DTYPE_I32, 1, &t) == RT_STATUS_OK);
    CHECK(t && rt_i32(t)[0] == 65536 && rt_i32(t)[1] == -1 && rt_i32(t)[2] == INT32_MAX);
    rt_tensor_release(t);
    /* f32: 3FC00000 = 1.5, C0200000 = -2.5, 00000000 = 0 */
    const unsigned char f32[12] = {0x3F, 0xC0, 0, 0, 0xC0, 0x20, 0, 0, 0, 0, 0, 0};
    n = make_idx(buf, 0x0D, 1, d3, f32, 12);
    t = NULL;
    CHECK(rt_idx_read_mem(ctx, buf, n, "f32", RT_DTYPE_F32, 2.0f, &t) == RT_STATUS_OK);
    CHECK(t && rt_f32(t)[0] == 3.0f && rt_f32(t)[1] == -5.0f && rt_f32(t)[2] == 0.0f);
    rt_tensor_release(t);
    /* f64: C002000000000000 = -2.25, 3FF0000000000000 = 1, 4059000000000000 = 100 */
    const unsigned char f64[24] = {0xC0, 0x02, 0, 0, 0, 0, 0, 0, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0,
                                   0x40, 0x59, 0, 0, 0, 0, 0, 0};
    n = make_idx(buf, 0x0E, 1, d3, f64, 24);
    t = NULL;
    CHECK(rt_idx_read_mem(ctx, buf, n, "f64", RT_DTYPE_F32, 1.0f, &t) == RT_STATUS_OK);
    CHECK(t && rt_f32(t)[0] == -2.25f && rt_f32(t)[1] == 1.0f && rt_f32(t)[2] == 100.0f);
    rt_tensor_release(t);
    /* float data cannot become labels */
    t = NULL;
    rt_ctx_clear(ctx);
    CHECK(rt_idx_read_mem(ctx, buf, n, "f64", RT_DTYPE_I32, 1.0f, &t) == RT_STATUS_ERR_FORMAT);
    CHECK(t == NULL);
    CHECK_CONTAINS(rt_ctx_message(ctx), "f64: header: type f64");
    CHECK_CONTAINS(rt_ctx_message(ctx), "offset 2");
}

static void test_malformed_header(void)
{
    unsigned char buf[256];
    uint32_t dims[7] = {5, 3, 0, 1, 1, 1, 1};
    write_raw("empty", buf, 0);
    expect_error("empty", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "header: truncated at offset 0", NULL);
    /* header cut inside the dims */
    uint32_t d2[2] = {4, 4};
    size_t n = make_idx(buf, 0x08, 2, d2, NULL, 0);
    write_raw("short_header", buf, n - 2);
    expect_error("short_header", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "header: truncated at offset 10", NULL);
    n = make_idx(buf, 0x08, 2, d2, NULL, 0);
    buf[0] = 0x01;
    buf[1] = 0x02;
    write_raw("bad_magic", buf, n);
    expect_error("bad_magic", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "magic", "offset 0");
    n = make_idx(buf, 0x0A, 2, d2, NULL, 0);
    write_raw("bad_type", buf, n);
    expect_error("bad_type", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "type byte 0x0a", "offset 2");
    n = make_idx(buf, 0x08, 0, d2, NULL, 0);
    write_raw("ndims0", buf, n);
    expect_error("ndims0", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "header: ndims 0", "offset 3");
    n = make_idx(buf, 0x08, 7, dims, NULL, 0);
    write_raw("ndims7", buf, n);
    expect_error("ndims7", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "header: ndims 7", "offset 3");
    n = make_idx(buf, 0x08, 3, dims, NULL, 0);
    write_raw("zero_dim", buf, n);
    expect_error("zero_dim", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "zero_dim: header: dimension 2 is 0 at offset 12",
                 NULL);
    uint32_t huge[6] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 2, 2, 2};
    n = make_idx(buf, 0x0E, 6, huge, NULL, 0);
    write_raw("overflow", buf, n);
    expect_error("overflow", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "dimension 2", "overflow");
    /* 8 GiB of u8 declared: over the limit, refused before allocating */
    uint32_t big[2] = {65536, 131072};
    n = make_idx(buf, 0x08, 2, big, NULL, 0);
    write_raw("too_big", buf, n);
    expect_error("too_big", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "header:", "exceed the limit");
}

static void test_malformed_data(void)
{
    unsigned char buf[256], data[100] = {0};
    uint32_t d[2] = {10, 10};
    size_t n = make_idx(buf, 0x08, 2, d, data, 100);
    write_raw("short_data", buf, n - 1);
    expect_error("short_data", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "data: truncated", "offset 12");
    buf[n] = 7;
    write_raw("trailing", buf, n + 1);
    expect_error("trailing", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "data: trailing bytes (1) at offset 112", NULL);
    /* declares a million elements, holds 100 bytes */
    uint32_t d1[1] = {1000000};
    n = make_idx(buf, 0x08, 1, d1, data, 100);
    write_raw("declared_big", buf, n);
    expect_error("declared_big", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "declares 1000000 bytes from offset 8", NULL);
    /* the same through memory */
    rt_tensor *t = NULL;
    rt_ctx_clear(ctx);
    CHECK(rt_idx_read_mem(ctx, buf, n, "memlabel", RT_DTYPE_F32, 1, &t) == RT_STATUS_ERR_FORMAT && !t);
    CHECK_CONTAINS(rt_ctx_message(ctx), "memlabel: data: truncated");
    rt_ctx_clear(ctx);
    CHECK(rt_idx_read_mem(ctx, NULL, 0, NULL, RT_DTYPE_F32, 1, &t) == RT_STATUS_ERR_FORMAT && !t);
    CHECK_CONTAINS(rt_ctx_message(ctx), "header: truncated at offset 0");
    /* random bytes, not gzip, not IDX */
    unsigned char rnd[4096];
    uint32_t s = 12345;
    for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (unsigned char)((s = s * 1103515245u + 12345u) >> 24);
    rnd[0] = 0x5a;
    write_raw("random", rnd, sizeof rnd);
    expect_error("random", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "magic", "offset 0");
    /* missing file */
    expect_error("no_such_file", RT_DTYPE_F32, RT_STATUS_ERR_IO, "open", "No such file");
}

static void test_malformed_gzip(void)
{
    unsigned char buf[512], data[200];
    for (int i = 0; i < 200; i++) data[i] = (unsigned char)(i * 7);
    uint32_t d[2] = {10, 20};
    size_t n = make_idx(buf, 0x08, 2, d, data, 200);
    /* a gzip'd text, not IDX */
    const char *text = "hello, this is not an IDX file at all\n";
    write_gz("text.gz", "wb", text, strlen(text));
    expect_error("text.gz", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "magic", "offset 0");
    /* a valid one, then every truncation of it */
    write_gz("full.gz", "wb", buf, n);
    rt_tensor *t = NULL;
    CHECK(rt_idx_read(ctx, path_of("full.gz"), RT_DTYPE_F32, 1, &t) == RT_STATUS_OK && t && t->shape[1] == 20);
    rt_tensor_release(t);
    unsigned char gz[1024];
    size_t gn = read_all("full.gz", gz, sizeof gz);
    CHECK(gn > 20 && gn < sizeof gz);
    int ok_cuts = 0, trunc_msgs = 0;
    for (size_t cut = 0; cut < gn; cut++) {
        write_raw("cut.gz", gz, cut);
        t = NULL;
        rt_ctx_clear(ctx);
        rt_status st = rt_idx_read(ctx, path_of("cut.gz"), RT_DTYPE_F32, 1, &t);
        ok_cuts += st == RT_STATUS_OK;
        trunc_msgs += strstr(rt_ctx_message(ctx), "truncated") != NULL;
        rt_tensor_release(t);
    }
    CHECK(ok_cuts == 0);
    CHECK(trunc_msgs > (int)gn / 2);
    /* cut in the middle: named as a truncated stream */
    write_raw("half.gz", gz, gn / 2 + 5);
    expect_error("half.gz", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "truncated", "offset");
    /* only the 8-byte trailer (CRC, length) missing */
    write_raw("notrailer.gz", gz, gn - 8);
    expect_error("notrailer.gz", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "gzip: compressed stream truncated", NULL);
    /* garbage after the gzip stream */
    memcpy(gz + gn, "JUNKJUNK", 8);
    write_raw("junk_after.gz", gz, gn + 8);
    expect_error("junk_after.gz", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "gzip: garbage after the end", NULL);
    /* a corrupt byte inside the deflate data: CRC or deflate error */
    memcpy(gz + gn, "", 0);
    gz[gn / 2] ^= 0x55;
    write_raw("flipped.gz", gz, gn);
    t = NULL;
    rt_ctx_clear(ctx);
    CHECK(rt_idx_read(ctx, path_of("flipped.gz"), RT_DTYPE_F32, 1, &t) != RT_STATUS_OK && !t);
    CHECK_CONTAINS(rt_ctx_message(ctx), "flipped.gz");
    /* gzip magic, then nonsense */
    const unsigned char fake[16] = {0x1f, 0x8b, 0x08, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    write_raw("fake.gz", fake, sizeof fake);
    expect_error("fake.gz", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "gzip", NULL);
    /* declares 1e9 bytes in a tiny gzip file: refused before allocating */
    uint32_t d1[1] = {1000000000};
    n = make_idx(buf, 0x08, 1, d1, data, 10);
    write_gz("forged.gz", "wb", buf, n);
    expect_error("forged.gz", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "gzip'd bytes can hold", "offset 8");
}

/* 100 MB of zeros behind a header that declares 10 bytes: reading stops
 * one byte after the declared size. */
static void test_gzip_bomb(void)
{
    unsigned char buf[64];
    uint32_t d[1] = {10};
    size_t n = make_idx(buf, 0x08, 1, d, NULL, 0);
    gzFile g = gzopen(path_of("bomb.gz"), "wb9");
    CHECK(g != NULL);
    if (!g) return;
    CHECK(gzwrite(g, buf, (unsigned)n) == (int)n);
    unsigned char *zeros = calloc(1, 1 << 20);
    for (int i = 0; i < 100 && zeros; i++) gzwrite(g, zeros, 1 << 20);
    free(zeros);
    CHECK(gzclose(g) == Z_OK);
    expect_error("bomb.gz", RT_DTYPE_F32, RT_STATUS_ERR_FORMAT, "data: trailing bytes at offset 18", NULL);
}

/* A larger read: 1000 x 784 u8 through gzip, chunked conversion. */
static void test_large(void)
{
    size_t count = 1000 * 784;
    unsigned char *buf = malloc(count + 16);
    uint32_t d[3] = {1000, 28, 28};
    unsigned char *data = malloc(count);
    if (!buf || !data) {
        CHECK(0);
        free(buf);
        free(data);
        return;
    }
    for (size_t i = 0; i < count; i++) data[i] = (unsigned char)(i % 251);
    size_t n = make_idx(buf, 0x08, 3, d, data, count);
    write_gz("large.gz", "wb6", buf, n);
    rt_tensor *t = NULL;
    CHECK(rt_idx_read(ctx, path_of("large.gz"), RT_DTYPE_F32, 1.0f / 255, &t) == RT_STATUS_OK);
    if (t) {
        size_t bad = 0;
        for (size_t i = 0; i < count; i++) bad += rt_f32(t)[i] != (float)(i % 251) * (1.0f / 255);
        CHECK(bad == 0);
        CHECK(t->shape[0] == 1000 && t->shape[1] == 28 && t->shape[2] == 28);
    }
    rt_tensor_release(t);
    free(buf);
    free(data);
}

static void test_fashion_mnist_labels(void)
{
    const char *p = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";
    if (access(p, R_OK) != 0) {
        printf("note: %s absent; check skipped\n", p);
        return;
    }
    rt_tensor *t = NULL;
    CHECK(rt_idx_read(ctx, p, RT_DTYPE_I32, 1, &t) == RT_STATUS_OK);
    CHECK(t && t->ndim == 1 && t->shape[0] == 10000);
    if (t) {
        int bad = 0, count[10] = {0};
        for (int i = 0; i < 10000; i++) {
            int v = rt_i32(t)[i];
            if (v < 0 || v > 9) bad++;
            else count[v]++;
        }
        CHECK(bad == 0);
        CHECK(count[0] == 1000 && count[9] == 1000); /* the test set is balanced */
    }
    rt_tensor_release(t);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/rt_idx_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    ctx = rt_ctx_new();
    RUN(test_u8_raw_gzip_mem);
    RUN(test_labels_i32);
    RUN(test_other_types);
    RUN(test_malformed_header);
    RUN(test_malformed_data);
    RUN(test_malformed_gzip);
    RUN(test_gzip_bomb);
    RUN(test_large);
    RUN(test_fashion_mnist_labels);
    rt_ctx_free(ctx);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return t_summary("test_idx");
}
