/*
 * safetensors.c -- checkpoints: the safetensors format, read and written,
 * and atomic file replacement.
 *
 * Format: an 8-byte little-endian header length H, H bytes of UTF-8 JSON
 * (an object: tensor name -> {"dtype", "shape", "data_offsets": [begin,
 * end]}, plus an optional "__metadata__" string->string map), then the
 * data: each tensor's bytes, little-endian, row-major, at data_offsets
 * relative to byte 8 + H.
 *
 * The reader follows the reference implementation's rules (docs/
 * reliability.md, "safetensors, strictly") and validates the whole header against the file
 * size before it allocates a tensor.  cJSON is lenient where the format is
 * not (duplicate keys, trailing garbage, and escapes it decodes as NUL:
 * \u0000, \uZZZZ; see json_check.c), so those are checked here.
 * Tensor bytes are copied as they are: this file assumes a little-endian
 * host (checked below at compile time).
 *
 * This file is longer than 800 lines because the reader's checks and the
 * writer share the format's rules, and splitting them would put the two
 * sides of one format in different files.
 */
#include "json_check.h"
#include "retort.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c copies tensor bytes as they are: little-endian hosts only"
#endif

#define ST_MAX_HEADER 100000000ull

struct rt_st {
    int n;
    char **names;
    rt_tensor **tensors;
    int nmeta;
    char **keys, **values;
};

void rt_st_free(rt_st *f)
{
    if (!f) return;
    for (int i = 0; i < f->n; i++) {
        free(f->names[i]);
        rt_tensor_release(f->tensors[i]);
    }
    for (int i = 0; i < f->nmeta; i++) {
        free(f->keys[i]);
        free(f->values[i]);
    }
    free(f->names);
    free(f->tensors);
    free(f->keys);
    free(f->values);
    free(f);
}

int rt_st_count(const rt_st *f) { return f->n; }
const char *rt_st_name(const rt_st *f, int i) { return i >= 0 && i < f->n ? f->names[i] : NULL; }
rt_tensor *rt_st_tensor(const rt_st *f, int i) { return i >= 0 && i < f->n ? f->tensors[i] : NULL; }
int rt_st_meta_count(const rt_st *f) { return f->nmeta; }
const char *rt_st_meta_key(const rt_st *f, int i) { return i >= 0 && i < f->nmeta ? f->keys[i] : NULL; }
const char *rt_st_meta_value(const rt_st *f, int i) { return i >= 0 && i < f->nmeta ? f->values[i] : NULL; }

rt_tensor *rt_st_find(const rt_st *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->names[i], name) == 0) return f->tensors[i];
    return NULL;
}

const char *rt_st_meta_get(const rt_st *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->keys[i], key) == 0) return f->values[i];
    return NULL;
}

/* ================================================================ reading */

/* One tensor entry of a validated header. */
typedef struct entry {
    const char *name; /* borrowed from the cJSON tree */
    rt_dtype dtype;
    int ndim;
    int64_t shape[RT_MAX_DIMS];
    uint64_t begin, end; /* relative to the data start */
} entry;

/* A validated header: entries in header order, the metadata object. */
typedef struct header {
    cJSON *root;
    entry *e;
    int n;
    const cJSON *meta; /* NULL if absent */
    int nmeta;
    uint64_t data_start; /* 8 + H */
} header;

static void header_free(header *h)
{
    cJSON_Delete(h->root);
    free(h->e);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first name that occurs twice in names[0..n) (sorts names), or NULL. */
static const char *find_duplicate(const char **names, int n)
{
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

static int cmp_offsets(const void *a, const void *b)
{
    const entry *x = *(const entry *const *)a, *y = *(const entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* A JSON number that is a non-negative integer below 2^53 (exact in the
 * double cJSON keeps). */
static int get_uint(const cJSON *j, uint64_t *v)
{
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d)) return 0;
    *v = (uint64_t)d;
    return 1;
}

/* dtypes of the format that retort does not read (refused by name). */
static int known_other_dtype(const char *s)
{
    static const char *const other[] = {"BOOL", "U8", "I8", "U16", "I16", "F16", "BF16", "U32", "F64", "U64",
                                        "I64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2",
                                        "C64", NULL};
    for (int i = 0; other[i]; i++)
        if (strcmp(s, other[i]) == 0) return 1;
    return 0;
}

/* Checks a UTF-8 byte string: no NUL, no malformed or overlong sequence,
 * no surrogate; *bad = offset of the first bad byte. */
static int utf8_ok(const unsigned char *p, size_t n, size_t *bad)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t len;
        uint32_t cp, min;
        if (c == 0) break;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
        else break;
        if (len > n - i) break;
        size_t k;
        for (k = 1; k < len && (p[i + k] & 0xC0) == 0x80; k++) cp = cp << 6 | (p[i + k] & 0x3F);
        if (k < len || cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) break;
        i += len;
    }
    *bad = i;
    return i == n;
}

static rt_status parse_meta(rt_ctx *ctx, const char *L, header *h, const cJSON *m)
{
    if (!cJSON_IsObject(m))
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: __metadata__ is not an object (header at offset 8)",
                        L);
    int n = 0;
    for (const cJSON *c = m->child; c; c = c->next) {
        if (!cJSON_IsString(c) || !c->valuestring)
            return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                            "%s: header: __metadata__ '%s' is not a string (a flat string map is required; header "
                            "at offset 8)",
                            L, c->string);
        n++; /* a 1e8-byte header holds far fewer than INT_MAX entries */
    }
    const char **keys = malloc(((size_t)n + 1) * sizeof *keys);
    if (!keys) return rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory", L);
    n = 0;
    for (const cJSON *c = m->child; c; c = c->next) keys[n++] = c->string;
    const char *dup = find_duplicate(keys, n);
    rt_status st = RT_STATUS_OK;
    if (dup)
        st = rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: __metadata__ key '%s' appears twice (header at offset 8)",
                      L, dup);
    free(keys);
    h->meta = m;
    h->nmeta = n;
    return st;
}

static rt_status parse_entry(rt_ctx *ctx, const char *L, const cJSON *j, entry *e)
{
    const char *N = j->string;
    if (!cJSON_IsObject(j))
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: tensor '%s' is not an object (header at offset 8)", L,
                        N);
    const cJSON *dt = NULL, *sh = NULL, *off = NULL;
    for (const cJSON *c = j->child; c; c = c->next) {
        const cJSON **slot = strcmp(c->string, "dtype") == 0          ? &dt
                             : strcmp(c->string, "shape") == 0        ? &sh
                             : strcmp(c->string, "data_offsets") == 0 ? &off
                                                                      : NULL;
        if (!slot) continue; /* unknown fields are ignored, as the reference does */
        if (*slot)
            return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: tensor '%s': field %s appears twice", L, N,
                            c->string);
        *slot = c;
    }
    if (!cJSON_IsString(dt) || !dt->valuestring)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: tensor '%s': dtype is missing or not a string", L, N);
    if (strcmp(dt->valuestring, "F32") == 0) e->dtype = RT_DTYPE_F32;
    else if (strcmp(dt->valuestring, "I32") == 0) e->dtype = RT_DTYPE_I32;
    else if (strcmp(dt->valuestring, "I64") == 0) e->dtype = RT_DTYPE_I64;
    else if (known_other_dtype(dt->valuestring))
        return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                        "%s: header: tensor '%s': dtype %s is not supported (retort reads F32, I32 and I64)", L, N,
                        dt->valuestring);
    else
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: tensor '%s': unknown dtype '%.40s'", L, N,
                        dt->valuestring);
    if (!cJSON_IsArray(sh))
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: tensor '%s': shape is missing or not an array", L, N);
    int nd = cJSON_GetArraySize(sh);
    if (nd > RT_MAX_DIMS)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: tensor '%s': shape has %d dimensions (at most %d)", L,
                        N, nd, RT_MAX_DIMS);
    uint64_t numel = 1, bytes;
    int k = 0;
    for (const cJSON *c = sh->child; c; c = c->next, k++) {
        uint64_t v;
        if (!get_uint(c, &v))
            return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                            "%s: header: tensor '%s': shape entry %d is not a non-negative integer", L, N, k);
        if (__builtin_mul_overflow(numel, v, &numel))
            return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: tensor '%s': shape element count overflows", L, N);
        e->shape[k] = (int64_t)v;
    }
    e->ndim = nd;
    if (__builtin_mul_overflow(numel, (uint64_t)rt_dtype_size(e->dtype), &bytes) || bytes > INT64_MAX)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: tensor '%s': shape x dtype size overflows", L, N);
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !get_uint(off->child, &e->begin) ||
        !get_uint(off->child->next, &e->end))
        return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                        "%s: header: tensor '%s': data_offsets is not [begin, end] of non-negative integers", L, N);
    if (e->end < e->begin)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: tensor '%s': data_offsets [%llu, %llu] end before begin",
                        L, N, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end - e->begin != bytes) {
        char s[160];
        size_t o = 0;
        s[0] = 0;
        for (int i = 0; i < nd && o < sizeof s; i++)
            o += (size_t)snprintf(s + o, sizeof s - o, i ? ", %lld" : "%lld", (long long)e->shape[i]);
        return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                        "%s: header: tensor '%s': shape [%s] x %s is %llu bytes but data_offsets [%llu, %llu] span "
                        "%llu",
                        L, N, s, dt->valuestring, (unsigned long long)bytes, (unsigned long long)e->begin,
                        (unsigned long long)e->end, (unsigned long long)(e->end - e->begin));
    }
    e->name = N;
    return RT_STATUS_OK;
}

/* Validates the header text (len bytes at hdr, file offset 8) of a file of
 * file_size bytes.  On success h holds the tree and the entries. */
static rt_status parse_header(rt_ctx *ctx, const char *L, const char *hdr, uint64_t len, uint64_t file_size,
                              header *h)
{
    memset(h, 0, sizeof *h);
    h->data_start = 8 + len;
    if (len == 0 || hdr[0] != '{')
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: does not start with '{' at offset 8", L);
    size_t bad;
    if (!utf8_ok((const unsigned char *)hdr, (size_t)len, &bad))
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: %s at offset %llu", L,
                        hdr[bad] ? "invalid UTF-8" : "NUL byte", (unsigned long long)(8 + bad));
    const char *why;
    size_t z = rt_json_check(hdr, (size_t)len, &why);
    if (z < len)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: %s at offset %llu", L, why,
                        (unsigned long long)(8 + z));
    char *copy = malloc((size_t)len + 1);
    if (!copy) return rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory for a %llu-byte header", L,
                               (unsigned long long)len);
    memcpy(copy, hdr, (size_t)len);
    copy[len] = 0;
    const char *end = NULL;
    h->root = cJSON_ParseWithOpts(copy, &end, 1);
    size_t at = end ? (size_t)(end - copy) : 0;
    free(copy);
    if (!h->root)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: invalid JSON at offset %llu", L,
                        (unsigned long long)(8 + at));
    if (!cJSON_IsObject(h->root)) {
        header_free(h);
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: not a JSON object at offset 8", L);
    }

    rt_status st = RT_STATUS_OK;
    int n = 0; /* a 1e8-byte header holds far fewer than INT_MAX entries */
    const cJSON *meta = NULL;
    for (const cJSON *c = h->root->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            if (meta) {
                header_free(h);
                return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: __metadata__ appears twice", L);
            }
            meta = c;
        } else {
            n++;
        }
    }
    if (meta && (st = parse_meta(ctx, L, h, meta))) {
        header_free(h);
        return st;
    }
    h->e = malloc(((size_t)n + 1) * sizeof *h->e);
    entry **by_off = malloc(((size_t)n + 1) * sizeof *by_off);
    const char **names = malloc(((size_t)n + 1) * sizeof *names);
    if (!h->e || !by_off || !names) {
        st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory for %d header entries", L, n);
        goto done;
    }
    for (const cJSON *c = h->root->child; c; c = c->next) {
        if (c == meta) continue;
        entry *e = &h->e[h->n];
        if ((st = parse_entry(ctx, L, c, e))) goto done;
        names[h->n] = e->name;
        by_off[h->n] = e;
        h->n++;
    }
    const char *dup = find_duplicate(names, n);
    if (dup) {
        st = rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: tensor name '%s' appears twice", L, dup);
        goto done;
    }
    /* The data region: tensors in offset order must tile [0, end) exactly. */
    qsort(by_off, (size_t)n, sizeof *by_off, cmp_offsets);
    uint64_t pos = 0;
    for (int i = 0; i < n; i++) {
        entry *e = by_off[i];
        if (e->begin != pos) {
            const char *what = e->begin > pos ? "a gap" : "an overlap";
            if (i == 0) what = "data not starting at 0";
            st = rt_error(ctx, RT_STATUS_ERR_FORMAT,
                          "%s: header: tensor '%s': data_offsets [%llu, %llu] leave %s (expected begin %llu; data "
                          "at file offset %llu)",
                          L, e->name, (unsigned long long)e->begin, (unsigned long long)e->end, what,
                          (unsigned long long)pos, (unsigned long long)h->data_start);
            goto done;
        }
        pos = e->end;
    }
    uint64_t want;
    if (__builtin_add_overflow(h->data_start, pos, &want) || want != file_size) {
        st = rt_error(ctx, RT_STATUS_ERR_FORMAT,
                      "%s: data: the header describes %llu bytes of data from offset %llu, the file holds %llu%s", L,
                      (unsigned long long)pos, (unsigned long long)h->data_start,
                      (unsigned long long)(file_size - h->data_start),
                      want < file_size ? " (trailing bytes)" : " (truncated)");
        goto done;
    }
done:
    free(by_off);
    free(names);
    if (st) header_free(h);
    return st;
}

/* Checks the 8-byte prefix of a file of `size` bytes; *hlen = H. */
static rt_status check_prefix(rt_ctx *ctx, const char *L, const unsigned char *p, uint64_t size, uint64_t *hlen)
{
    if (size < 8)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                        "%s: header length: file is %llu bytes, shorter than the 8-byte header length at offset 0", L,
                        (unsigned long long)size);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | p[i];
    if (h > ST_MAX_HEADER)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header length %llu at offset 0 exceeds the limit of %llu", L,
                        (unsigned long long)h, ST_MAX_HEADER);
    if (h > size - 8)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                        "%s: header length %llu at offset 0 is longer than the %llu bytes that follow", L,
                        (unsigned long long)h, (unsigned long long)(size - 8));
    *hlen = h;
    return RT_STATUS_OK;
}

/* Allocates the result for a validated header; tensors (zero-filled) only
 * if with_tensors.  Names and metadata are copied. */
static rt_status build(rt_ctx *ctx, const char *L, const header *h, int with_tensors, rt_st **out)
{
    rt_st *f = calloc(1, sizeof *f);
    int n = with_tensors ? h->n : 0;
    if (!f) return rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory", L);
    f->names = calloc((size_t)n + 1, sizeof *f->names);
    f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
    f->keys = calloc((size_t)h->nmeta + 1, sizeof *f->keys);
    f->values = calloc((size_t)h->nmeta + 1, sizeof *f->values);
    if (!f->names || !f->tensors || !f->keys || !f->values) goto oom;
    for (; f->n < n; f->n++) {
        const entry *e = &h->e[f->n];
        f->names[f->n] = strdup(e->name);
        f->tensors[f->n] = rt_tensor_new(ctx, e->dtype, e->ndim, e->shape);
        if (!f->names[f->n] || !f->tensors[f->n]) {
            f->n++;
            goto oom;
        }
    }
    if (h->meta) {
        for (const cJSON *c = h->meta->child; c; c = c->next) {
            f->keys[f->nmeta] = strdup(c->string);
            f->values[f->nmeta] = strdup(c->valuestring);
            f->nmeta++;
            if (!f->keys[f->nmeta - 1] || !f->values[f->nmeta - 1]) goto oom;
        }
    }
    *out = f;
    return RT_STATUS_OK;
oom:
    rt_st_free(f);
    return rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory", L);
}

rt_status rt_st_read_mem(rt_ctx *ctx, const void *buf, size_t len, const char *label, rt_st **out)
{
    const char *L = label ? label : "(memory)";
    const unsigned char *p = buf;
    uint64_t hlen;
    header h;
    rt_status st;
    *out = NULL;
    if (!buf) len = 0;
    if ((st = check_prefix(ctx, L, p, len, &hlen))) return st;
    if ((st = parse_header(ctx, L, (const char *)p + 8, hlen, len, &h))) return st;
    rt_st *f = NULL;
    if (!(st = build(ctx, L, &h, 1, &f))) {
        for (int i = 0; i < f->n; i++)
            memcpy(f->tensors[i]->data, p + h.data_start + h.e[i].begin, (size_t)(h.e[i].end - h.e[i].begin));
        *out = f;
    }
    header_free(&h);
    return st;
}

/* Opens path and reads and validates the prefix and the header. */
static rt_status read_file_header(rt_ctx *ctx, const char *path, FILE **fp, header *h)
{
    /* O_NONBLOCK: opening a FIFO would wait for a writer; it is refused
     * below as not a regular file.  Reads of a regular file never block. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "rb");
    if (!f) {
        rt_status e = rt_error(ctx, RT_STATUS_ERR_IO, "%s: open: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return e;
    }
    struct stat sb;
    unsigned char pre[8];
    uint64_t hlen;
    rt_status st;
    if (fstat(fileno(f), &sb) != 0) {
        st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: not a regular file", path);
        goto fail;
    }
    uint64_t size = (uint64_t)sb.st_size;
    size_t got = fread(pre, 1, size < 8 ? (size_t)size : 8, f);
    if (got < (size < 8 ? size : 8)) {
        st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: read at offset 0: %s", path,
                      ferror(f) ? strerror(errno) : "file shrank while reading");
        goto fail;
    }
    if ((st = check_prefix(ctx, path, pre, size, &hlen))) goto fail;
    char *text = malloc((size_t)hlen + 1);
    if (!text) {
        st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory for a %llu-byte header", path,
                      (unsigned long long)hlen);
        goto fail;
    }
    if (fread(text, 1, (size_t)hlen, f) != hlen) {
        st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: read of the header at offset 8: %s", path,
                      ferror(f) ? strerror(errno) : "file shrank while reading");
        free(text);
        goto fail;
    }
    st = parse_header(ctx, path, text, hlen, size, h);
    free(text);
    if (st) goto fail;
    *fp = f;
    return RT_STATUS_OK;
fail:
    fclose(f);
    return st;
}

rt_status rt_st_read(rt_ctx *ctx, const char *path, rt_st **out)
{
    FILE *fp;
    header h;
    rt_st *f = NULL;
    *out = NULL;
    rt_status st = read_file_header(ctx, path, &fp, &h);
    if (st) return st;
    if ((st = build(ctx, path, &h, 1, &f))) goto done;
    /* The data follows the header directly (checked: offsets tile it), so
     * each tensor is read in header order by seeking to its offset. */
    for (int i = 0; i < f->n; i++) {
        const entry *e = &h.e[i];
        size_t nb = (size_t)(e->end - e->begin);
        if (!nb) continue;
        const char *why = NULL;
        if (fseeko(fp, (off_t)(h.data_start + e->begin), SEEK_SET) != 0) why = strerror(errno);
        else if (fread(f->tensors[i]->data, 1, nb, fp) != nb)
            why = ferror(fp) ? strerror(errno) : "the file shrank while being read";
        if (why) {
            st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: data: read of tensor '%s' at offset %llu: %s", path, e->name,
                          (unsigned long long)(h.data_start + e->begin), why);
            goto done;
        }
    }
    *out = f;
    f = NULL;
done:
    rt_st_free(f);
    header_free(&h);
    fclose(fp);
    return st;
}

/* The header is validated in full (against the file size) but no tensor
 * is read: the result has rt_st_count() == 0 and the metadata. */
rt_status rt_st_read_meta(rt_ctx *ctx, const char *path, rt_st **out)
{
    FILE *fp;
    header h;
    *out = NULL;
    rt_status st = read_file_header(ctx, path, &fp, &h);
    if (st) return st;
    st = build(ctx, path, &h, 0, out);
    header_free(&h);
    fclose(fp);
    return st;
}

/* ================================================================ writing */

typedef rt_status (*write_fn)(rt_ctx *ctx, FILE *f, const char *path, void *ud);

/* Writes through fn into "<path>.tmp.<pid>", then fflush, fsync, close,
 * rename over path, fsync the folder.  On failure before the rename the
 * temp file is removed and path is untouched.  A path that exists and is
 * not a regular file (symlink, device, folder, pipe) is refused.  A kill -9
 * can still leave the temp file: rt_run_clean_temps (runfolder.c) knows
 * this name. */
static rt_status write_atomic(rt_ctx *ctx, const char *path, write_fn fn, void *ud)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32), *dir = malloc(plen + 2);
    if (!tmp || !dir) {
        free(tmp);
        free(dir);
        return rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    const char *slash = strrchr(path, '/');
    if (!slash) strcpy(dir, ".");
    else if (slash == path) strcpy(dir, "/");
    else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = 0;
    }

    rt_status st = RT_STATUS_OK;
    /* rename() would replace a symlink (not its target), a device node or
     * an empty folder as readily as a file: only a regular file, or
     * nothing, may be replaced. */
    struct stat sb;
    if (lstat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: exists and is %s, not a regular file: refusing to replace it", path,
                      S_ISLNK(sb.st_mode)   ? "a symbolic link"
                      : S_ISDIR(sb.st_mode) ? "a folder"
                      : S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode) ? "a device"
                      : S_ISFIFO(sb.st_mode) ? "a pipe"
                                             : "a special file");
        goto out;
    }
    /* O_EXCL: never write through a name that was there before (a hard
     * link to another file would be truncated); what is there (a temp file
     * left by an earlier crash under the same pid, or a planted link) is
     * unlinked, which leaves any file it links to alone, and the create is
     * tried once more. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0 && errno == EEXIST && unlink(tmp) == 0)
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: create %s: %s", path, tmp, strerror(errno));
        goto out;
    }
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: fdopen: %s", path, strerror(errno));
        close(fd);
        goto fail;
    }
    st = fn(ctx, f, path, ud);
    if (!st && fflush(f) != 0) st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: write: %s", path, strerror(errno));
    if (!st && fsync(fileno(f)) != 0) st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: fsync: %s", path, strerror(errno));
    if (fclose(f) != 0 && !st) st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: close: %s", path, strerror(errno));
    if (st) goto fail;
    if (rename(tmp, path) != 0) {
        st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: rename from %s: %s", path, tmp, strerror(errno));
        goto fail;
    }
    /* The rename is durable only once the folder is synced.  Filesystems
     * that cannot sync a folder say EINVAL: nothing more can be done. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || (fsync(dfd) != 0 && errno != EINVAL))
        st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: fsync of folder %s: %s", path, dir, strerror(errno));
    if (dfd >= 0) close(dfd);
    goto out;
fail:
    unlink(tmp);
out:
    free(tmp);
    free(dir);
    return st;
}

static rt_status put(rt_ctx *ctx, FILE *f, const char *path, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, f) != n) return rt_error(ctx, RT_STATUS_ERR_IO, "%s: write: %s", path, strerror(errno));
    return RT_STATUS_OK;
}

typedef struct buf_job {
    const void *data;
    size_t len;
} buf_job;

static rt_status write_buf(rt_ctx *ctx, FILE *f, const char *path, void *ud)
{
    const buf_job *j = ud;
    return put(ctx, f, path, j->data, j->len);
}

rt_status rt_write_atomic(rt_ctx *ctx, const char *path, const void *data, size_t len)
{
    buf_job j = {data, len};
    return write_atomic(ctx, path, write_buf, &j);
}

typedef struct st_job {
    const char *header; /* JSON, padded */
    size_t hlen;
    int n;
    const rt_tensor *const *tensors;
} st_job;

static rt_status write_st(rt_ctx *ctx, FILE *f, const char *path, void *ud)
{
    const st_job *j = ud;
    unsigned char pre[8];
    for (int i = 0; i < 8; i++) pre[i] = (unsigned char)((uint64_t)j->hlen >> (8 * i));
    rt_status st = put(ctx, f, path, pre, 8);
    if (!st) st = put(ctx, f, path, j->header, j->hlen);
    for (int i = 0; i < j->n && !st; i++) {
        const rt_tensor *t = j->tensors[i];
        if (rt_is_contiguous(t)) {
            st = put(ctx, f, path, t->data, rt_tensor_nbytes(t));
            continue;
        }
        rt_tensor *c = rt_tensor_clone(ctx, t);
        if (!c) return rt_error_prefix(ctx, "%s", path);
        st = put(ctx, f, path, c->data, rt_tensor_nbytes(c));
        rt_tensor_release(c);
    }
    return st;
}

static cJSON *json_uint(uint64_t v)
{
    char s[24];
    snprintf(s, sizeof s, "%llu", (unsigned long long)v);
    return cJSON_CreateRaw(s);
}

/* The header JSON for the tensors and metadata, padded with spaces so the
 * data starts 8-byte aligned (as the reference writer does).  NULL +
 * error. */
/* cJSON's add functions copy the key and, when that allocation fails,
 * return false without taking the item: these take it or delete it, so a
 * failure neither leaks nor leaves a header with a field missing. */
static cJSON *attach(cJSON *obj, const char *key, cJSON *item)
{
    if (item && cJSON_AddItemToObject(obj, key, item)) return item;
    cJSON_Delete(item);
    return NULL;
}

static int append(cJSON *arr, cJSON *item)
{
    if (item && cJSON_AddItemToArray(arr, item)) return 1;
    cJSON_Delete(item);
    return 0;
}

static char *make_header(rt_ctx *ctx, const char *path, int n, const char *const *names,
                         const rt_tensor *const *tensors, int nmeta, const char *const *keys,
                         const char *const *values, size_t *hlen)
{
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    if (ok && nmeta > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        ok = m != NULL;
        for (int i = 0; ok && i < nmeta; i++) ok = cJSON_AddStringToObject(m, keys[i], values[i]) != NULL;
    }
    uint64_t pos = 0;
    for (int i = 0; ok && i < n; i++) {
        const rt_tensor *t = tensors[i];
        cJSON *e = cJSON_AddObjectToObject(root, names[i]);
        ok = e && cJSON_AddStringToObject(e, "dtype", t->dtype == RT_DTYPE_F32   ? "F32"
                                                            : t->dtype == RT_DTYPE_I32 ? "I32"
                                                                                       : "I64");
        cJSON *shape = ok ? attach(e, "shape", cJSON_CreateArray()) : NULL;
        cJSON *off = shape ? attach(e, "data_offsets", cJSON_CreateArray()) : NULL;
        ok = off != NULL;
        for (int d = 0; ok && d < t->ndim; d++) ok = append(shape, json_uint((uint64_t)t->shape[d]));
        uint64_t end = pos + rt_tensor_nbytes(t);
        ok = ok && append(off, json_uint(pos)) && append(off, json_uint(end));
        pos = end;
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) {
        rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory building the header", path);
        return NULL;
    }
    size_t len = strlen(text), padded = (len + 7) & ~(size_t)7;
    char *out = malloc(padded + 1);
    if (!out) {
        cJSON_free(text);
        rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory building the header", path);
        return NULL;
    }
    memcpy(out, text, len);
    memset(out + len, ' ', padded - len);
    out[padded] = 0;
    cJSON_free(text);
    *hlen = padded;
    return out;
}

rt_status rt_st_write(rt_ctx *ctx, const char *path, int n, const char *const *names,
                      const rt_tensor *const *tensors, int nmeta, const char *const *keys, const char *const *values)
{
    if (n < 0 || nmeta < 0 || (n && (!names || !tensors)) || (nmeta && (!keys || !values)))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: bad arguments (%d tensors, %d metadata pairs)", path, n, nmeta);
    for (int i = 0; i < n; i++) {
        const char *nm = names[i];
        const rt_tensor *t = tensors[i];
        if (!nm || !nm[0] || strcmp(nm, "__metadata__") == 0)
            return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: tensor %d has %s name", path, i,
                            !nm || !nm[0] ? "an empty" : "the reserved");
        if (!t) return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: tensor '%s' is NULL", path, nm);
        if (t->dtype != RT_DTYPE_F32 && t->dtype != RT_DTYPE_I32 && t->dtype != RT_DTYPE_I64)
            return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: tensor '%s' has unknown dtype %d", path, nm, (int)t->dtype);
        if (!rt_tensor_all_finite(t)) {
            char what[320];
            snprintf(what, sizeof what, "tensor '%s'", nm);
            if (!rt_is_contiguous(t) || !rt_tensor_check_finite(ctx, t, what))
                rt_error(ctx, RT_STATUS_ERR_NUMERIC, "%s has non-finite values (NaN or Inf)", what);
            return rt_error_prefix(ctx, "%s: not written", path);
        }
    }
    size_t bad;
    for (int i = 0; i < n; i++)
        if (!utf8_ok((const unsigned char *)names[i], strlen(names[i]), &bad))
            return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: tensor name %d is not valid UTF-8 (byte %zu)", path, i, bad);
    for (int i = 0; i < nmeta; i++) {
        if (!keys[i] || !values[i])
            return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: metadata pair %d has a NULL %s", path, i,
                            keys[i] ? "value" : "key");
        if (!utf8_ok((const unsigned char *)keys[i], strlen(keys[i]), &bad) ||
            !utf8_ok((const unsigned char *)values[i], strlen(values[i]), &bad))
            return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: metadata '%s' is not valid UTF-8", path, keys[i]);
    }
    /* Unique names and keys (sorted copies). */
    int most = n > nmeta ? n : nmeta;
    const char **sorted = malloc(((size_t)most + 1) * sizeof *sorted);
    if (!sorted) return rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory", path);
    if (n) memcpy(sorted, names, (size_t)n * sizeof *sorted);
    const char *dup = find_duplicate(sorted, n);
    if (dup) {
        rt_error(ctx, RT_STATUS_ERR_ARG, "%s: tensor name '%s' appears twice", path, dup);
        free(sorted);
        return RT_STATUS_ERR_ARG;
    }
    if (nmeta) memcpy(sorted, keys, (size_t)nmeta * sizeof *sorted);
    dup = find_duplicate(sorted, nmeta);
    if (dup) {
        rt_error(ctx, RT_STATUS_ERR_ARG, "%s: metadata key '%s' appears twice", path, dup);
        free(sorted);
        return RT_STATUS_ERR_ARG;
    }
    free(sorted);

    st_job j = {.n = n, .tensors = tensors};
    char *hdr = make_header(ctx, path, n, names, tensors, nmeta, keys, values, &j.hlen);
    if (!hdr) return rt_ctx_status(ctx);
    j.header = hdr;
    rt_status st = write_atomic(ctx, path, write_st, &j);
    free(hdr);
    return st;
}

/* Here, not in base/finite.c: base may not use the file formats. */
rt_status rt_st_check_finite(rt_ctx *ctx, const rt_st *f, const char *label)
{
    char what[320];
    for (int i = 0; i < rt_st_count(f); i++) {
        snprintf(what, sizeof what, "tensor '%s'", rt_st_name(f, i));
        if (rt_tensor_check_finite(ctx, rt_st_tensor(f, i), what)) {
            rt_error_prefix(ctx, "%s", label);
            return rt_ctx_status(ctx);
        }
    }
    return RT_STATUS_OK;
}
