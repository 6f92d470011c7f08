/*
 * test_corpus.c -- the malformed corpus: bad safetensors checkpoints, bad
 * IDX files (raw and gzip'd) and checkpoints that name bad models, each
 * written here to a file with the words its error must contain.  Every
 * file is loaded the way retort loads it; a case passes when the load
 * fails cleanly, the message names the file, and it has the expected
 * words.  Run under ASan + UBSan (make test SAN=1) and valgrind (make
 * check-valgrind) this is also the "0 crashes, 0 leaks" check.
 *
 *   test_corpus [DIR]   writes the corpus into DIR (kept) instead of a
 *                       temporary folder (removed)
 *
 * Prints one line per failing case and "test_corpus: N passed, N failed"
 * (one count per file).
 */
#include "retort.h"
#include "t.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

typedef enum { K_ST, K_IDX_F32, K_IDX_I32, K_MODEL } kind;

static char dir[512];
static rt_ctx *ctx;
static rt_registry *reg;
static int ncases, nfailed;

/* Loads path as k; 0 when the load failed with a message naming the file
 * and containing want. */
static int check(const char *name, const char *path, kind k, const char *want)
{
    rt_ctx_clear(ctx);
    rt_status st = RT_STATUS_OK;
    const char *how = "";
    switch (k) {
    case K_ST: {
        rt_st *f = NULL;
        st = rt_st_read(ctx, path, &f);
        rt_st_free(f);
        how = "rt_st_read";
        if (st == RT_STATUS_OK || f) break;
        /* the header-only reader must refuse it too, as clearly */
        char first[1024];
        snprintf(first, sizeof first, "%s", rt_ctx_message(ctx));
        rt_st *m = NULL;
        rt_ctx_clear(ctx);
        rt_status sm = rt_st_read_meta(ctx, path, &m);
        rt_st_free(m);
        if (sm == RT_STATUS_OK && !strstr(want, "data:") && !strstr(want, "truncated") &&
            !strstr(want, "trailing")) {
            fprintf(stderr, "  FAIL %s: rt_st_read_meta accepted it\n", name);
            return 1;
        }
        rt_error(ctx, st, "%s", first);
        break;
    }
    case K_IDX_F32:
    case K_IDX_I32: {
        rt_tensor *t = NULL;
        st = rt_idx_read(ctx, path, k == K_IDX_F32 ? RT_DTYPE_F32 : RT_DTYPE_I32, 1.0f / 255, &t);
        rt_tensor_release(t);
        how = "rt_idx_read";
        break;
    }
    case K_MODEL: {
        char opts[1024];
        snprintf(opts, sizeof opts, "{\"checkpoint\":\"%s\"}", path);
        rt_instance *in = NULL;
        st = rt_instance_create(reg, ctx, RT_KIND_TEACHER, "model", opts, &in);
        rt_instance_release(in);
        how = "teacher 'model'";
        break;
    }
    }
    const char *msg = rt_ctx_message(ctx);
    if (st == RT_STATUS_OK) {
        fprintf(stderr, "  FAIL %s: %s accepted it\n", name, how);
        return 1;
    }
    if (!strstr(msg, path)) {
        fprintf(stderr, "  FAIL %s: the message does not name the file: %s\n", name, msg);
        return 1;
    }
    if (!strstr(msg, want)) {
        fprintf(stderr, "  FAIL %s: \"%s\" lacks \"%s\"\n", name, msg, want);
        return 1;
    }
    return 0;
}

static void add(const char *name, const void *p, size_t n, kind k, const char *want)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "  FAIL %s: cannot write %s\n", name, path);
        ncases++, nfailed++;
        return;
    }
    ncases++;
    nfailed += check(name, path, k, want);
}

/* ------------------------------------------------------------ safetensors */

/* 8-byte little-endian length, the header text (hlen bytes, strlen if
 * (size_t)-1), then ndata bytes of 0x11. */
static void add_st_n(const char *name, const char *hdr, size_t hlen, size_t ndata, kind k, const char *want)
{
    if (hlen == (size_t)-1) hlen = strlen(hdr);
    unsigned char *b = malloc(8 + hlen + ndata);
    if (!b) exit(2);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(b + 8, hdr, hlen);
    memset(b + 8 + hlen, 0x11, ndata);
    add(name, b, 8 + hlen + ndata, k, want);
    free(b);
}

static void add_st(const char *name, const char *hdr, size_t ndata, const char *want)
{
    add_st_n(name, hdr, (size_t)-1, ndata, K_ST, want);
}

/* One F32 tensor "t" of shape [2] at [0, 8] with `extra` spliced into its
 * entry, e.g. ",\"dtype\":\"F32\"". */
#define T2(extra) "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]" extra "}}"

static void safetensors_corpus(void)
{
    static const unsigned char seven[7] = {1, 0, 0, 0, 0, 0, 0};
    add("st_empty.safetensors", "", 0, K_ST, "file is 0 bytes, shorter than the 8-byte header length");
    add("st_seven_bytes.safetensors", seven, 7, K_ST, "file is 7 bytes");
    unsigned char big[16] = {0, 0xca, 0x9a, 0x3b, 0, 0, 0, 0, '{', '}'};
    add("st_header_1e9.safetensors", big, 10, K_ST, "exceeds the limit of 100000000");
    unsigned char huge[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    add("st_header_2e64.safetensors", huge, 8, K_ST, "exceeds the limit");
    unsigned char longer[10] = {40, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    add("st_header_longer.safetensors", longer, 10, K_ST, "header length 40 at offset 0 is longer than the 2 bytes");
    add_st("st_header_zero.safetensors", "", 0, "does not start with '{'");
    add_st("st_header_array.safetensors", "[]", 0, "does not start with '{'");
    add_st("st_header_space.safetensors", " {}", 0, "does not start with '{'");
    add_st("st_json_open.safetensors", "{", 0, "invalid JSON at offset");
    add_st("st_json_garbage.safetensors", "{} x", 0, "invalid JSON at offset 11");
    add_st("st_json_two.safetensors", "{}{}", 0, "invalid JSON");
    add_st("st_json_comma.safetensors", "{\"a\":1,}", 0, "invalid JSON");
    add_st("st_json_nan.safetensors", T2(",\"x\":NaN"), 8, "invalid JSON");
    add_st("st_json_single_quote.safetensors", "{'t':1}", 0, "invalid JSON");
    add_st_n("st_nul_byte.safetensors", "{\"a\0\":1}", 8, 0, K_ST, "NUL byte at offset 11");
    add_st_n("st_nul_padding.safetensors", "{}\0\0\0\0\0\0", 8, 0, K_ST, "NUL byte at offset 10");
    add_st("st_utf8_ff.safetensors", "{\"\xff\":1}", 0, "invalid UTF-8 at offset 10");
    add_st("st_utf8_overlong.safetensors", "{\"\xc0\x80\":1}", 0, "invalid UTF-8 at offset 10");
    add_st("st_utf8_surrogate.safetensors", "{\"\xed\xa0\x80\":1}", 0, "invalid UTF-8");
    add_st("st_utf8_cut.safetensors", "{\"\xe2\x82\":1}", 0, "invalid UTF-8");
    add_st("st_utf8_above_10ffff.safetensors", "{\"\xf4\x90\x80\x80\":1}", 0, "invalid UTF-8");
    add_st("st_esc_u0000_name.safetensors", "{\"a\\u0000b\":1}", 0, "\\u0000 escape at offset 11");
    add_st("st_esc_uZZZZ_name.safetensors", "{\"a\\uZZZZ\":1}", 0, "four hex digits at offset 11");
    add_st("st_esc_u12_cut.safetensors", "{\"a\\u12\":1}", 0, "four hex digits");
    add_st("st_esc_u_end.safetensors", "{\"a\\u", 0, "four hex digits");
    add_st("st_esc_lone_high.safetensors", "{\"a\\uD800\":1}", 0, "high surrogate escape without its low half");
    add_st("st_esc_high_high.safetensors", "{\"a\\uD800\\uD800\":1}", 0, "high surrogate");
    add_st("st_esc_lone_low.safetensors", "{\"a\\uDC00\":1}", 0, "lone low surrogate");
    add_st("st_esc_x.safetensors", "{\"a\\x41\":1}", 0, "invalid escape at offset 11");
    add_st("st_esc_meta_value.safetensors", "{\"__metadata__\":{\"k\":\"v\\uZZZZ\"}}", 0, "four hex digits at offset 31");
    add_st("st_esc_meta_key_nul.safetensors", "{\"__metadata__\":{\"k\\u0000\":\"v\"}}", 0, "\\u0000 escape");
    add_st("st_esc_dtype.safetensors", T2(",\"q\":\"\\uZZZZ\""), 8, "four hex digits");
    add_st("st_meta_array.safetensors", "{\"__metadata__\":[]}", 0, "__metadata__ is not an object");
    add_st("st_meta_number.safetensors", "{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ 'k' is not a string");
    add_st("st_meta_nested.safetensors", "{\"__metadata__\":{\"k\":{}}}", 0, "flat string map");
    add_st("st_meta_null.safetensors", "{\"__metadata__\":{\"k\":null}}", 0, "is not a string");
    add_st("st_meta_twice.safetensors", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ appears twice");
    add_st("st_meta_dup_key.safetensors", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "key 'k' appears twice");
    add_st("st_tensor_number.safetensors", "{\"t\":1}", 0, "tensor 't' is not an object");
    add_st("st_tensor_array.safetensors", "{\"t\":[]}", 0, "tensor 't' is not an object");
    add_st("st_dtype_missing.safetensors", "{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
           "dtype is missing or not a string");
    add_st("st_dtype_number.safetensors", "{\"t\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
           "dtype is missing");
    static const char *const other[] = {"F16", "BF16", "F64", "U8", "I8", "BOOL", "U16", "F8_E4M3", "C64"};
    for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
        char name[64], hdr[160], want[64];
        snprintf(name, sizeof name, "st_dtype_%s.safetensors", other[i]);
        snprintf(hdr, sizeof hdr, "{\"t\":{\"dtype\":\"%s\",\"shape\":[2],\"data_offsets\":[0,8]}}", other[i]);
        snprintf(want, sizeof want, "dtype %s is not supported", other[i]);
        add_st(name, hdr, 8, want);
    }
    add_st("st_dtype_lower.safetensors", "{\"t\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
           "unknown dtype 'f32'");
    add_st("st_dtype_junk.safetensors", "{\"t\":{\"dtype\":\"XYZ\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
           "unknown dtype 'XYZ'");
    add_st("st_shape_missing.safetensors", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8,
           "shape is missing or not an array");
    add_st("st_shape_string.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8,
           "shape is missing or not an array");
    add_st("st_shape_7d.safetensors",
           "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
           "shape has 7 dimensions (at most 6)");
    add_st("st_shape_negative.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
           "shape entry 0 is not a non-negative integer");
    add_st("st_shape_fraction.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", 8,
           "shape entry 0 is not");
    add_st("st_shape_1e300.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,1e300],\"data_offsets\":[0,8]}}",
           8, "shape entry 1 is not");
    add_st("st_shape_2p53.safetensors",
           "{\"t\":{\"dtype\":\"F32\",\"shape\":[9007199254740993],\"data_offsets\":[0,8]}}", 8,
           "shape [9007199254740992] x F32 is 36028797018963968 bytes but data_offsets [0, 8] span 8");
    add_st("st_shape_string_entry.safetensors",
           "{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, "shape entry 0 is not");
    add_st("st_shape_null_entry.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,8]}}",
           8, "shape entry 0 is not");
    add_st("st_shape_count_overflow.safetensors",
           "{\"t\":{\"dtype\":\"F32\",\"shape\":[4503599627370496,4503599627370496],\"data_offsets\":[0,8]}}", 8,
           "shape element count overflows");
    add_st("st_shape_bytes_overflow.safetensors",
           "{\"t\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,8]}}", 8,
           "shape x dtype size overflows");
    add_st("st_shape_huge_fits.safetensors",
           "{\"t\":{\"dtype\":\"F32\",\"shape\":[1000000,1000000],\"data_offsets\":[0,8]}}", 8,
           "is 4000000000000 bytes but data_offsets [0, 8] span 8");
    add_st("st_offsets_missing.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8,
           "data_offsets is not [begin, end]");
    add_st("st_offsets_three.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}", 8,
           "data_offsets is not [begin, end]");
    add_st("st_offsets_one.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8,
           "data_offsets is not [begin, end]");
    add_st("st_offsets_negative.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}",
           8, "data_offsets is not [begin, end] of non-negative integers");
    add_st("st_offsets_strings.safetensors",
           "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",\"8\"]}}", 8, "data_offsets is not");
    add_st("st_offsets_object.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{}}}", 8,
           "data_offsets is not");
    add_st("st_offsets_reversed.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}",
           8, "data_offsets [8, 0] end before begin");
    add_st("st_offsets_span.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
           "shape [2] x F32 is 8 bytes but data_offsets [0, 4] span 4");
    add_st("st_offsets_2p60.safetensors",
           "{\"t\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[1152921504606846976,1152921504606846976]}}", 0,
           "data_offsets is not [begin, end] of non-negative integers");
    add_st("st_offsets_start.safetensors", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
           "data not starting at 0");
    add_st("st_offsets_gap.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
           12, "leave a gap (expected begin 4");
    add_st("st_offsets_overlap.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
           8, "an overlap");
    add_st("st_offsets_same.safetensors",
           "{\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]},"
           "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
           4, "an overlap");
    add_st("st_data_truncated.safetensors", T2(""), 4, "data: the header describes 8 bytes of data from offset");
    add_st("st_data_missing.safetensors", T2(""), 0, "(truncated)");
    add_st("st_data_trailing.safetensors", T2(""), 9, "(trailing bytes)");
    add_st("st_empty_header_trailing.safetensors", "{}", 3, "(trailing bytes)");
    add_st("st_dup_name.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
           "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
           8, "tensor name 'a' appears twice");
    add_st("st_field_dtype_twice.safetensors", T2(",\"dtype\":\"F32\""), 8, "field dtype appears twice");
    add_st("st_field_shape_twice.safetensors", T2(",\"shape\":[2]"), 8, "field shape appears twice");
    add_st("st_field_offsets_twice.safetensors", T2(",\"data_offsets\":[0,8]"), 8, "field data_offsets appears twice");
    char deep[2100];
    size_t o = 0;
    o += (size_t)snprintf(deep, sizeof deep, "{\"t\":");
    for (int i = 0; i < 1001; i++) deep[o++] = '[';
    for (int i = 0; i < 1001; i++) deep[o++] = ']';
    deep[o++] = '}';
    deep[o] = 0;
    add_st("st_json_deep.safetensors", deep, 0, "invalid JSON");

    /* every cut of a valid two-tensor file: the prefix, the header, the data */
    static const char good[] = "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
                               "\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
    size_t hl = strlen(good), total = 8 + hl + 12;
    unsigned char *whole = malloc(total);
    if (!whole) exit(2);
    for (int i = 0; i < 8; i++) whole[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(whole + 8, good, hl);
    memset(whole + 8 + hl, 0, 12);
    static const size_t cuts[] = {1, 4, 8, 9, 20, 60, 100, 8 + 136, 8 + 137, 8 + 138, 8 + 139, 8 + 142, 8 + 147};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        size_t n = cuts[i] < total ? cuts[i] : total - 1;
        char name[64];
        snprintf(name, sizeof name, "st_cut_%zu.safetensors", n);
        const char *want = n < 8 ? "shorter than the 8-byte header length" : n < 8 + hl ? "is longer than the" : "(truncated)";
        add(name, whole, n, K_ST, want);
    }
    free(whole);

    /* a folder and a missing file */
    char path[700];
    snprintf(path, sizeof path, "%s/st_folder.safetensors", dir);
    mkdir(path, 0755);
    ncases++;
    nfailed += check("st_folder.safetensors", path, K_ST, "not a regular file");
    snprintf(path, sizeof path, "%s/st_missing.safetensors", dir);
    ncases++;
    nfailed += check("st_missing.safetensors", path, K_ST, "open: No such file or directory");
}

/* ----------------------------------------------------- checkpoints of models */

/* A checkpoint with the given metadata (key/value pairs, NULL-ended) and
 * one F32 tensor "layers.0.weight" of shape wshape (NULL: none). */
static void add_model(const char *name, const char *const *kv, const char *tensors, size_t ndata, const char *want)
{
    char hdr[2048];
    size_t o = (size_t)snprintf(hdr, sizeof hdr, "{\"__metadata__\":{");
    for (int i = 0; kv[i]; i += 2)
        o += (size_t)snprintf(hdr + o, sizeof hdr - o, "%s\"%s\":\"%s\"", i ? "," : "", kv[i], kv[i + 1]);
    snprintf(hdr + o, sizeof hdr - o, "}%s%s}", tensors ? "," : "", tensors ? tensors : "");
    add_st_n(name, hdr, (size_t)-1, ndata, K_MODEL, want);
}

#define MLP(sizes) "{\\\"activation\\\":\\\"relu\\\",\\\"dropout\\\":0,\\\"seed\\\":1,\\\"sizes\\\":" sizes "}"

static void model_corpus(void)
{
    const char *huge[] = {"retort.plugin", "mlp", "retort.options", MLP("[100000,100000,10]"), NULL};
    add_model("model_huge_from_metadata.safetensors", huge, NULL, 0, "model size");
    const char *huge2[] = {"retort.plugin", "mlp", "retort.options", MLP("[100000000,100000000,10]"), NULL};
    add_model("model_1e16_from_metadata.safetensors", huge2, NULL, 0, "2 x its size + 16 MiB");
    const char *deep[] = {"retort.plugin", "mlp", "retort.options",
                          MLP("[4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,4096,10]"),
                          NULL};
    add_model("model_many_layers.safetensors", deep, NULL, 0, "model size");
    const char *noplug[] = {"retort.options", MLP("[4,3]"), NULL};
    add_model("model_no_plugin.safetensors", noplug, NULL, 0, "no metadata 'retort.plugin'");
    const char *noopt[] = {"retort.plugin", "mlp", NULL};
    add_model("model_no_options.safetensors", noopt, NULL, 0, "no metadata 'retort.options'");
    const char *unknown[] = {"retort.plugin", "nosuch", "retort.options", "{}", NULL};
    add_model("model_unknown_plugin.safetensors", unknown, NULL, 0, "no student plugin 'nosuch'");
    const char *loss[] = {"retort.plugin", "kd", "retort.options", "{}", NULL};
    add_model("model_loss_as_student.safetensors", loss, NULL, 0, "no student plugin 'kd'");
    const char *badjson[] = {"retort.plugin", "mlp", "retort.options", "{sizes", NULL};
    add_model("model_options_not_json.safetensors", badjson, NULL, 0, "options are not valid JSON");
    const char *esc[] = {"retort.plugin", "mlp", "retort.options", "{\\\"activation\\\":\\\"relu\\\\uZZZZ\\\"}", NULL};
    add_model("model_options_bad_escape.safetensors", esc, NULL, 0, "four hex digits");
    const char *unk[] = {"retort.plugin", "mlp", "retort.options", "{\\\"sizez\\\":[4,3]}", NULL};
    add_model("model_options_unknown_key.safetensors", unk, NULL, 0, "unknown option 'sizez' (did you mean 'sizes'?)");
    const char *type[] = {"retort.plugin", "mlp", "retort.options", "{\\\"sizes\\\":\\\"4,3\\\"}", NULL};
    add_model("model_options_wrong_type.safetensors", type, NULL, 0, "option 'sizes' must be a list of integers");
    const char *range[] = {"retort.plugin", "mlp", "retort.options", "{\\\"sizes\\\":[0,3]}", NULL};
    add_model("model_options_out_of_range.safetensors", range, NULL, 0, "out of range");
    const char *one[] = {"retort.plugin", "mlp", "retort.options", "{\\\"sizes\\\":[4]}", NULL};
    add_model("model_options_one_width.safetensors", one, NULL, 0, "needs 2 to 17 widths");
    const char *ok[] = {"retort.plugin", "mlp", "retort.options", MLP("[4,3]"), NULL};
    add_model("model_no_tensors.safetensors", ok, NULL, 0, "no tensor 'layers.0.weight'");
    add_model("model_wrong_shape.safetensors", ok,
              "\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[4,3],\"data_offsets\":[0,48]},"
              "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[48,60]}",
              60, "tensor 'layers.0.weight' is f32 [4, 3], student 'mlp' wants f32 [3, 4]");
    add_model("model_wrong_dtype.safetensors", ok,
              "\"layers.0.weight\":{\"dtype\":\"I32\",\"shape\":[3,4],\"data_offsets\":[0,48]},"
              "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[48,60]}",
              60, "is i32 [3, 4], student 'mlp' wants f32 [3, 4]");
    add_model("model_missing_bias.safetensors", ok,
              "\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,48]}", 48,
              "no tensor 'layers.0.bias'");
    add_model("model_truncated_data.safetensors", ok,
              "\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,48]}", 20, "(truncated)");
    add_st_n("model_not_safetensors.safetensors", "PK\3\4", 4, 0, K_MODEL, "header: does not start with '{'");
    add("model_zip.safetensors", "PK\3\4\x14\0\0\0\x08\0", 10, K_MODEL, "header length 85966670672 at offset 0 exceeds the limit");
}

/* -------------------------------------------------------------------- IDX */

static size_t idx(unsigned char *b, unsigned type, unsigned nd, const uint32_t *dims, size_t ndata)
{
    b[0] = 0, b[1] = 0, b[2] = (unsigned char)type, b[3] = (unsigned char)nd;
    for (unsigned i = 0; i < nd; i++)
        for (int k = 0; k < 4; k++) b[4 + 4 * i + k] = (unsigned char)(dims[i] >> (24 - 8 * k));
    for (size_t i = 0; i < ndata; i++) b[4 + 4 * nd + i] = (unsigned char)(i * 7 + 1);
    return 4 + 4 * nd + ndata;
}

/* gzip of p[0..n) into out (cap bytes); returns its size. */
static size_t gz(const void *p, size_t n, unsigned char *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) exit(2);
    z.next_in = (unsigned char *)p;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) exit(2);
    size_t m = z.total_out;
    deflateEnd(&z);
    return m;
}

static void idx_corpus(void)
{
    unsigned char b[4096], g[8192];
    uint32_t d1[1] = {6}, d3[3] = {2, 3, 2};
    size_t n;
    add("idx_empty.idx", "", 0, K_IDX_F32, "header: truncated at offset 0 (the magic needs 4 bytes)");
    add("idx_three_bytes.idx", "\0\0\x08", 3, K_IDX_F32, "the magic needs 4 bytes");
    add("idx_magic_text.idx", "hello world\n", 12, K_IDX_F32, "magic: bytes 68 65 at offset 0");
    add("idx_magic_01.idx", "\x01\0\x08\x01\0\0\0\x01\x05", 9, K_IDX_F32, "not an IDX file");
    add("idx_magic_png.idx", "\x89PNG\r\n\x1a\n", 8, K_IDX_F32, "not an IDX file");
    static const unsigned bad_types[] = {0x00, 0x07, 0x0A, 0x0F, 0xFF};
    for (size_t i = 0; i < sizeof bad_types / sizeof *bad_types; i++) {
        char name[64], want[64];
        n = idx(b, bad_types[i], 1, d1, 6);
        snprintf(name, sizeof name, "idx_type_%02x.idx", bad_types[i]);
        snprintf(want, sizeof want, "type byte 0x%02x at offset 2 is not an IDX type", bad_types[i]);
        add(name, b, n, K_IDX_F32, want);
    }
    n = idx(b, 0x08, 0, d1, 0);
    add("idx_ndims_0.idx", b, n, K_IDX_F32, "ndims 0 at offset 3 is not in 1..6");
    b[3] = 7;
    add("idx_ndims_7.idx", b, 4, K_IDX_F32, "ndims 7 at offset 3");
    b[3] = 255;
    add("idx_ndims_255.idx", b, 4, K_IDX_F32, "ndims 255");
    n = idx(b, 0x0D, 1, d1, 24);
    add("idx_f32_as_i32.idx", b, n, K_IDX_I32, "type f32 (0x0d at offset 2) cannot be read as i32");
    n = idx(b, 0x0E, 1, d1, 48);
    add("idx_f64_as_i32.idx", b, n, K_IDX_I32, "type f64 (0x0e at offset 2) cannot be read as i32");
    n = idx(b, 0x08, 3, d3, 0);
    add("idx_dims_cut.idx", b, 9, K_IDX_F32, "3 dimensions need 12 bytes from offset 4");
    uint32_t z3[3] = {2, 0, 2};
    n = idx(b, 0x08, 3, z3, 0);
    add("idx_dim_zero.idx", b, n, K_IDX_F32, "dimension 1 is 0 at offset 8");
    uint32_t o3[3] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
    n = idx(b, 0x08, 3, o3, 0);
    add("idx_count_overflow.idx", b, n, K_IDX_F32, "makes the element count overflow");
    uint32_t l2[2] = {65536, 65536};
    n = idx(b, 0x08, 2, l2, 16);
    add("idx_over_limit.idx", b, n, K_IDX_F32, "exceed the limit of 4294967296 bytes");
    uint32_t l6[6] = {0xFFFFFFFFu, 2, 1, 1, 1, 1};
    n = idx(b, 0x0E, 6, l6, 0);
    add("idx_f64_over_limit.idx", b, n, K_IDX_F32, "exceed the limit");
    n = idx(b, 0x08, 3, d3, 11);
    add("idx_data_short.idx", b, n, K_IDX_F32, "data: truncated: the header declares 12 bytes from offset 16, only 11");
    n = idx(b, 0x08, 3, d3, 0);
    add("idx_data_none.idx", b, n, K_IDX_F32, "only 0 follow");
    n = idx(b, 0x08, 3, d3, 13);
    add("idx_data_trailing.idx", b, n, K_IDX_F32, "data: trailing bytes (1) at offset 28");
    n = idx(b, 0x0B, 1, d1, 11);
    add("idx_i16_short.idx", b, n, K_IDX_I32, "declares 12 bytes");
    n = idx(b, 0x0C, 1, d1, 23);
    add("idx_i32_short.idx", b, n, K_IDX_I32, "declares 24 bytes");
    n = idx(b, 0x0D, 1, d1, 25);
    add("idx_f32_trailing.idx", b, n, K_IDX_F32, "trailing bytes (1)");
    n = idx(b, 0x0E, 1, d1, 47);
    add("idx_f64_short.idx", b, n, K_IDX_F32, "declares 48 bytes");
    /* every cut of a valid raw file */
    n = idx(b, 0x08, 3, d3, 12);
    for (size_t cut = 0; cut < n; cut += 2) {
        char name[64];
        snprintf(name, sizeof name, "idx_cut_%zu.idx", cut);
        add(name, b, cut, cut < 16 ? K_IDX_F32 : K_IDX_I32, cut < 4 ? "the magic needs 4 bytes" : cut < 16 ? "need 12 bytes" : "data: truncated");
    }

    /* gzip'd */
    n = idx(b, 0x08, 3, d3, 12);
    size_t m = gz(b, n, g, sizeof g);
    add("gz_cut_header.idx.gz", g, 5, K_IDX_F32, "gzip: compressed stream truncated");
    add("gz_cut_middle.idx.gz", g, m / 2, K_IDX_F32, "truncated");
    add("gz_cut_trailer.idx.gz", g, m - 4, K_IDX_F32, "gzip: compressed stream truncated");
    add("gz_magic_only.idx.gz", "\x1f\x8b", 2, K_IDX_F32, "gzip: compressed stream truncated");
    add("gz_bad_method.idx.gz", "\x1f\x8b\x07\0\0\0\0\0\0\x03", 10, K_IDX_F32, "gzip: corrupt stream (unknown compression method)");
    memcpy(b + 1024, g, m);
    b[1024 + m - 8] ^= 0xFF; /* CRC */
    add("gz_bad_crc.idx.gz", b + 1024, m, K_IDX_F32, "incorrect data check");
    memcpy(b + 1024, g, m);
    b[1024 + m - 1] ^= 0x01; /* ISIZE */
    add("gz_bad_length.idx.gz", b + 1024, m, K_IDX_F32, "incorrect length check");
    memcpy(b + 1024, g, m);
    b[1024 + 12] ^= 0xFF; /* inside the deflate data */
    add("gz_flipped_data.idx.gz", b + 1024, m, K_IDX_F32, "gzip");
    memcpy(b + 1024, g, m);
    memcpy(b + 1024 + m, "garbage!", 8);
    add("gz_garbage_after.idx.gz", b + 1024, m + 8, K_IDX_F32, "gzip: garbage after the end of the compressed stream");
    n = idx(b, 0x08, 3, d3, 13);
    m = gz(b, n, g, sizeof g);
    add("gz_trailing_idx.idx.gz", g, m, K_IDX_F32, "data: trailing bytes at offset 28");
    n = idx(b, 0x08, 3, d3, 5);
    m = gz(b, n, g, sizeof g);
    add("gz_idx_short.idx.gz", g, m, K_IDX_F32, "data: truncated at offset 21");
    m = gz("not an idx file at all", 22, g, sizeof g);
    add("gz_text.idx.gz", g, m, K_IDX_F32, "not an IDX file");
    m = gz("", 0, g, sizeof g);
    add("gz_empty_member.idx.gz", g, m, K_IDX_F32, "the magic needs 4 bytes");
    uint32_t big1[1] = {1000000000};
    n = idx(b, 0x08, 1, big1, 4);
    m = gz(b, n, g, sizeof g);
    add("gz_forged_size.idx.gz", g, m, K_IDX_F32, "more than");
    n = idx(b, 0x0D, 1, d1, 24);
    m = gz(b, n, g, sizeof g);
    add("gz_f32_as_i32.idx.gz", g, m, K_IDX_I32, "cannot be read as i32");
    n = idx(b, 0x08, 1, d1, 0);
    b[2] = 0x42;
    m = gz(b, n, g, sizeof g);
    add("gz_bad_type.idx.gz", g, m, K_IDX_F32, "type byte 0x42");
    /* a bomb: 10 bytes declared, 16 MB of zeros after them */
    uint32_t ten[1] = {10};
    n = idx(b, 0x08, 1, ten, 10);
    unsigned char *zeros = calloc(1, (16u << 20) + 64);
    unsigned char *bomb = malloc(1 << 20);
    if (!zeros || !bomb) exit(2);
    memcpy(zeros, b, n);
    m = gz(zeros, (16u << 20) + n, bomb, 1 << 20);
    add("gz_bomb.idx.gz", bomb, m, K_IDX_F32, "data: trailing bytes at offset 18");
    free(zeros);
    free(bomb);
    /* a second member that is not gzip */
    n = idx(b, 0x08, 3, d3, 12);
    m = gz(b, n, g, sizeof g);
    memcpy(g + m, "\x1f\x8b\x08\0\0\0\0\0\0\x03\xff\xff", 12);
    add("gz_second_member_bad.idx.gz", g, m + 12, K_IDX_F32, "gzip");

    char path[700];
    snprintf(path, sizeof path, "%s/idx_folder.idx", dir);
    mkdir(path, 0755);
    ncases++;
    nfailed += check("idx_folder.idx", path, K_IDX_F32, "Is a directory");
    snprintf(path, sizeof path, "%s/idx_missing.idx", dir);
    ncases++;
    nfailed += check("idx_missing.idx", path, K_IDX_F32, "open: No such file or directory");
}

int main(int argc, char **argv)
{
    (void)t_cur, (void)t_cur_failed; /* t.h: only t_build_path is used */
    int keep = argc > 1;
    if (keep) {
        snprintf(dir, sizeof dir, "%s", argv[1]);
        mkdir(dir, 0755);
    } else {
        snprintf(dir, sizeof dir, "/tmp/rt_corpus_XXXXXX");
        if (!mkdtemp(dir)) return 2;
    }
    unsetenv("RETORT_MAX_MODEL_MB");
    ctx = rt_ctx_new();
    reg = rt_registry_new();
    rt_ctx_set_registry(ctx, reg);
    char pd[512];
    if (rt_registry_load_dir(reg, ctx, t_build_path(pd, sizeof pd, "lib/retort/plugins"), 1, NULL))
        fprintf(stderr, "plugins: %s\n", rt_ctx_message(ctx));
    safetensors_corpus();
    model_corpus();
    idx_corpus();
    rt_registry_free(reg);
    rt_ctx_free(ctx);
    if (!keep) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    }
    printf("test_corpus: %d passed, %d failed\n", ncases - nfailed, nfailed);
    return nfailed ? 1 : 0;
}
