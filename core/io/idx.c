/*
 * idx.c -- IDX files (LeCun's MNIST format), raw or gzip'd.
 *
 * Layout: 00 00 <type> <ndims>, then ndims big-endian u32 dims, then the
 * elements, big-endian, row-major.  Types: 08 u8, 09 i8, 0B i16, 0C i32,
 * 0D f32, 0E f64.
 *
 * Every number in the header is checked before anything is allocated:
 * ndims in 1..RT_MAX_DIMS, each dim > 0, the element count and byte sizes
 * without overflow and under IDX_MAX_BYTES.  A raw file must hold exactly
 * the declared bytes (its size is known up front).  A gzip file is
 * decompressed with inflate, not gzread: gzread passes non-gzip bytes
 * through and reports truncation only at gzclose.  Decompression stops at
 * the declared size; one more byte of output is "trailing data", so a
 * gzip bomb costs at most the declared size plus one inflate call.  When
 * the size is not known up front (gzip, pipes) the bytes are gathered in
 * a buffer that grows as they arrive, and the tensor is allocated only
 * when all of them have: a header that declares more than the stream
 * holds costs what the stream holds, not what it declares.
 */
#include "retort.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* Declared data (source bytes, and the converted tensor's bytes) above
 * this is refused: no IDX data set comes near it, and it bounds what a
 * forged header can make us allocate. */
#define IDX_MAX_BYTES ((uint64_t)4 << 30)
/* deflate cannot expand input by more than ~1032x; a gzip file declaring
 * more output than this many times its size is truncated or forged, and
 * is refused before the tensor is allocated. */
#define GZ_MAX_RATIO 1040u
#define CHUNK ((size_t)1 << 16)

typedef struct src {
    rt_ctx *ctx;
    const char *label;
    uint64_t pos; /* bytes of the (uncompressed) IDX stream consumed */
    /* memory */
    const unsigned char *mem;
    size_t mem_len;
    /* file */
    FILE *f;
    int gz;
    int zinit, zend; /* inflate initialised; at the end of a member */
    int members;     /* gzip members finished */
    z_stream zs;
    unsigned char *in; /* CHUNK bytes of compressed input */
    unsigned char pend[2]; /* raw files: the bytes read to sniff gzip */
    size_t npend;
} src;

static rt_status io_error(src *s, const char *what)
{
    return rt_error(s->ctx, RT_STATUS_ERR_IO, "%s: %s at offset %llu: %s", s->label, what,
                    (unsigned long long)s->pos, strerror(errno));
}

/* Inflates up to n bytes into dst.  *got < n only at the clean end of the
 * gzip stream (after its CRC and length were verified); a truncated or
 * corrupt stream is an error. */
static rt_status gz_read(src *s, unsigned char *dst, size_t n, size_t *got)
{
    z_stream *z = &s->zs;
    *got = 0;
    while (*got < n) {
        if (z->avail_in == 0 && s->f && !feof(s->f)) {
            z->next_in = s->in;
            z->avail_in = (uInt)fread(s->in, 1, CHUNK, s->f);
            if (ferror(s->f)) return io_error(s, "read");
        }
        if (s->zend) {
            if (z->avail_in == 0) return RT_STATUS_OK; /* clean end */
            /* More input after a member: a concatenated member (gzip
             * allows it) or garbage, which inflate refuses below. */
            if (inflateReset(z) != Z_OK) break;
            s->zend = 0;
        }
        size_t want = n - *got;
        if (want > UINT32_MAX) want = UINT32_MAX;
        z->next_out = dst + *got;
        z->avail_out = (uInt)want;
        int r = inflate(z, Z_NO_FLUSH);
        size_t made = want - z->avail_out;
        *got += made;
        s->pos += made;
        if (r == Z_STREAM_END) {
            s->zend = 1;
            s->members++;
            continue;
        }
        if (r == Z_OK) continue;
        if (r == Z_BUF_ERROR && z->avail_in == 0 && (!s->f || feof(s->f)))
            return rt_error(s->ctx, RT_STATUS_ERR_FORMAT,
                            "%s: gzip: compressed stream truncated at offset %llu (uncompressed)", s->label,
                            (unsigned long long)s->pos);
        if (r == Z_BUF_ERROR) continue; /* no progress possible yet: read more */
        if (s->members && z->total_out == 0)
            return rt_error(s->ctx, RT_STATUS_ERR_FORMAT,
                            "%s: gzip: garbage after the end of the compressed stream (at offset %llu uncompressed)",
                            s->label, (unsigned long long)s->pos);
        if (r == Z_MEM_ERROR)
            return rt_error(s->ctx, RT_STATUS_ERR_NOMEM, "%s: gzip: out of memory", s->label);
        return rt_error(s->ctx, RT_STATUS_ERR_FORMAT, "%s: gzip: corrupt stream (%s) at offset %llu (uncompressed)",
                        s->label, z->msg ? z->msg : "bad data", (unsigned long long)s->pos);
    }
    return RT_STATUS_OK;
}

/* Reads up to n bytes; *got < n means the end of the data. */
static rt_status src_read(src *s, void *dst, size_t n, size_t *got)
{
    if (s->mem) {
        size_t left = s->mem_len - (size_t)s->pos;
        *got = n < left ? n : left;
        memcpy(dst, s->mem + s->pos, *got);
        s->pos += *got;
        return RT_STATUS_OK;
    }
    if (s->gz) return gz_read(s, dst, n, got);
    size_t p = n < s->npend ? n : s->npend;
    memcpy(dst, s->pend, p);
    memmove(s->pend, s->pend + p, s->npend - p);
    s->npend -= p;
    *got = p + fread((unsigned char *)dst + p, 1, n - p, s->f);
    s->pos += *got;
    if (*got < n && ferror(s->f)) return io_error(s, "read");
    return RT_STATUS_OK;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const unsigned char *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

/* Element size of an IDX type byte; 0 if unknown. */
static unsigned type_size(unsigned t)
{
    switch (t) {
    case 0x08: case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C: case 0x0D: return 4;
    case 0x0E: return 8;
    }
    return 0;
}

static const char *type_name(unsigned t)
{
    switch (t) {
    case 0x08: return "u8";
    case 0x09: return "i8";
    case 0x0B: return "i16";
    case 0x0C: return "i32";
    case 0x0D: return "f32";
    case 0x0E: return "f64";
    }
    return "?";
}

/* Converts n big-endian elements of IDX type `type` at p into out (f32 or
 * i32 per want; f32 values are multiplied by scale). */
static void convert(unsigned type, const unsigned char *p, size_t n, rt_dtype want, float scale, void *out)
{
    float *of = out;
    int32_t *oi = out;
    int f = want == RT_DTYPE_F32;
    switch (type) {
    case 0x08:
        if (f) for (size_t i = 0; i < n; i++) of[i] = (float)p[i] * scale;
        else for (size_t i = 0; i < n; i++) oi[i] = p[i];
        break;
    case 0x09:
        if (f) for (size_t i = 0; i < n; i++) of[i] = (float)(int8_t)p[i] * scale;
        else for (size_t i = 0; i < n; i++) oi[i] = (int8_t)p[i];
        break;
    case 0x0B:
        for (size_t i = 0; i < n; i++) {
            int16_t v = (int16_t)(uint16_t)(p[2 * i] << 8 | p[2 * i + 1]);
            if (f) of[i] = (float)v * scale;
            else oi[i] = v;
        }
        break;
    case 0x0C:
        for (size_t i = 0; i < n; i++) {
            int32_t v = (int32_t)be32(p + 4 * i);
            if (f) of[i] = (float)v * scale;
            else oi[i] = v;
        }
        break;
    case 0x0D: /* want is f32: checked with the header */
        for (size_t i = 0; i < n; i++) {
            uint32_t u = be32(p + 4 * i);
            float v;
            memcpy(&v, &u, 4);
            of[i] = v * scale;
        }
        break;
    case 0x0E:
        for (size_t i = 0; i < n; i++) {
            uint64_t u = be64(p + 8 * i);
            double v;
            memcpy(&v, &u, 8);
            of[i] = (float)(v * scale);
        }
        break;
    }
}

/* Parses the header and the data from s; total is the size of the whole
 * stream when known (raw files, memory), else -1 (gzip, pipes);
 * gz_bytes is the compressed size (gzip files; 0 = unknown). */
/* Data enters finite (f32/f64 files can hold NaN and inf; f64 values
 * beyond the f32 range become inf): the first bad value is named, with its
 * sample and byte offset.  On error t is released. */
static rt_status check_finite(rt_ctx *ctx, const char *L, rt_tensor *t, uint64_t count, int64_t n, uint64_t hdr,
                              unsigned esize, unsigned type)
{
    int64_t bad = t->dtype == RT_DTYPE_F32 ? rt_check_finite(rt_f32(t), (int64_t)count) : -1;
    if (bad < 0) return RT_STATUS_OK;
    int64_t per = (int64_t)count / n;
    float v = rt_f32(t)[bad];
    rt_tensor_release(t);
    return rt_error(ctx, RT_STATUS_ERR_NUMERIC, "%s: data: sample %lld (0-based), value %lld at offset %llu is %s%s", L,
                    (long long)(bad / per), (long long)(bad % per), (unsigned long long)(hdr + (uint64_t)bad * esize),
                    rt_nonfinite_name(v), type == 0x0E && !isnan(v) ? " (an f64 beyond the f32 range)" : "");
}

static rt_status read_idx(src *s, int64_t total, uint64_t gz_bytes, rt_dtype want, float scale, rt_tensor **out)
{
    rt_ctx *ctx = s->ctx;
    const char *L = s->label;
    unsigned char h[4 + 4 * RT_MAX_DIMS];
    size_t got;
    rt_status st;

    if (want != RT_DTYPE_F32 && want != RT_DTYPE_I32)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: cannot read IDX as dtype %d", L, (int)want);
    if (want == RT_DTYPE_F32 && !isfinite(scale))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: scale %g is not finite", L, (double)scale);
    if ((st = src_read(s, h, 4, &got))) return st;
    if (got < 4)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: truncated at offset %llu (the magic needs 4 bytes)",
                        L, (unsigned long long)s->pos);
    if (h[0] != 0 || h[1] != 0)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                        "%s: magic: bytes %02x %02x at offset 0, expected 00 00 (not an IDX file)", L, h[0], h[1]);
    unsigned type = h[2], ndims = h[3], esize = type_size(type);
    if (!esize)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: type byte 0x%02x at offset 2 is not an IDX type", L,
                        type);
    if (ndims < 1 || ndims > RT_MAX_DIMS)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: ndims %u at offset 3 is not in 1..%d", L, ndims,
                        RT_MAX_DIMS);
    if (want == RT_DTYPE_I32 && (type == 0x0D || type == 0x0E))
        return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                        "%s: header: type %s (0x%02x at offset 2) cannot be read as i32 (integer types only)", L,
                        type_name(type), type);
    if ((st = src_read(s, h + 4, 4 * ndims, &got))) return st;
    if (got < 4 * ndims)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                        "%s: header: truncated at offset %llu (%u dimensions need %u bytes from offset 4)", L,
                        (unsigned long long)s->pos, ndims, 4 * ndims);
    int64_t shape[RT_MAX_DIMS];
    uint64_t count = 1;
    for (unsigned i = 0; i < ndims; i++) {
        uint32_t d = be32(h + 4 + 4 * i);
        if (d == 0)
            return rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: header: dimension %u is 0 at offset %u", L, i, 4 + 4 * i);
        if (__builtin_mul_overflow(count, (uint64_t)d, &count))
            return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                            "%s: header: dimension %u (%u at offset %u) makes the element count overflow", L, i, d,
                            4 + 4 * i);
        shape[i] = d;
    }
    uint64_t hdr = 4 + 4 * (uint64_t)ndims, bytes, obytes;
    if (__builtin_mul_overflow(count, (uint64_t)esize, &bytes) || bytes > IDX_MAX_BYTES ||
        __builtin_mul_overflow(count, (uint64_t)4, &obytes) || obytes > IDX_MAX_BYTES)
        return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                        "%s: header: %llu elements of %s (dims at offset 4) exceed the limit of %llu bytes", L,
                        (unsigned long long)count, type_name(type), (unsigned long long)IDX_MAX_BYTES);
    if (total >= 0) {
        uint64_t left = (uint64_t)total > hdr ? (uint64_t)total - hdr : 0;
        if (left < bytes)
            return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                            "%s: data: truncated: the header declares %llu bytes from offset %llu, only %llu follow",
                            L, (unsigned long long)bytes, (unsigned long long)hdr, (unsigned long long)left);
        if (left > bytes)
            return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                            "%s: data: trailing bytes (%llu) at offset %llu after the %llu declared", L,
                            (unsigned long long)(left - bytes), (unsigned long long)(hdr + bytes),
                            (unsigned long long)bytes);
    } else if (gz_bytes) {
        uint64_t most;
        if (!__builtin_mul_overflow(gz_bytes, (uint64_t)GZ_MAX_RATIO, &most) && hdr + bytes > most)
            return rt_error(ctx, RT_STATUS_ERR_FORMAT,
                            "%s: data: the header declares %llu bytes from offset %llu, more than %llu gzip'd "
                            "bytes can hold (truncated or forged)",
                            L, (unsigned long long)bytes, (unsigned long long)hdr, (unsigned long long)gz_bytes);
    }

    if (s->mem) {
        rt_tensor *t = rt_tensor_new(ctx, want, (int)ndims, shape);
        if (!t) return rt_error_prefix(ctx, "%s", L);
        convert(type, s->mem + hdr, (size_t)count, want, scale, t->data);
        s->pos += bytes;
        if (check_finite(ctx, L, t, count, shape[0], hdr, esize, type)) return rt_ctx_status(ctx);
        *out = t;
        return RT_STATUS_OK;
    }
    /* A stream whose size is not known up front (gzip, a pipe) may declare
     * far more than it holds: its bytes are gathered in a buffer that grows
     * (doubling, from 64 KiB, never past the declared size) only as they
     * arrive, and the tensor is allocated once they all have.  A forged or
     * truncated stream so stops having allocated about twice what it really
     * held.  A regular raw file was checked against its size above. */
    unsigned char *raw = NULL;
    size_t cap = 0, have = 0;
    st = RT_STATUS_OK;
    while (have < bytes) {
        if (have == cap) {
            /* a size checked against the file is allocated at once */
            size_t nc = cap ? 2 * cap : total >= 0 ? (size_t)bytes : CHUNK;
            if (nc > bytes) nc = (size_t)bytes;
            unsigned char *g = realloc(raw, nc);
            if (!g) {
                st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory at %zu of the %llu declared bytes", L, cap,
                              (unsigned long long)bytes);
                break;
            }
            raw = g;
            cap = nc;
        }
        size_t want_n = cap - have;
        if ((st = src_read(s, raw + have, want_n, &got))) break;
        have += got;
        if (got < want_n) {
            st = rt_error(ctx, RT_STATUS_ERR_FORMAT,
                          "%s: data: truncated at offset %llu: the header declares %llu bytes from offset %llu", L,
                          (unsigned long long)s->pos, (unsigned long long)bytes, (unsigned long long)hdr);
            break;
        }
    }
    if (!st) {
        /* The declared data is in; anything after it is an error.  For
         * gzip this also verifies the stream's end (CRC and length). */
        unsigned char one;
        uint64_t end = s->pos;
        st = src_read(s, &one, 1, &got);
        if (!st && got)
            st = rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: data: trailing bytes at offset %llu after the %llu declared",
                          L, (unsigned long long)end, (unsigned long long)bytes);
    }
    rt_tensor *t = NULL;
    if (!st && !(t = rt_tensor_new(ctx, want, (int)ndims, shape))) st = rt_error_prefix(ctx, "%s", L);
    if (!st) convert(type, raw, (size_t)count, want, scale, t->data);
    free(raw);
    if (st) return st;
    if (check_finite(ctx, L, t, count, shape[0], hdr, esize, type)) return rt_ctx_status(ctx);
    *out = t;
    return RT_STATUS_OK;
}

rt_status rt_idx_read_mem(rt_ctx *ctx, const void *buf, size_t len, const char *label, rt_dtype want, float scale,
                          rt_tensor **out)
{
    static const unsigned char empty[1];
    src s = {.ctx = ctx, .label = label ? label : "(memory)", .mem = buf ? buf : empty, .mem_len = buf ? len : 0};
    *out = NULL;
    if (len > INT64_MAX) return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: buffer too large", s.label);
    if (s.mem_len < 2 || s.mem[0] != 0x1f || s.mem[1] != 0x8b)
        return read_idx(&s, (int64_t)s.mem_len, 0, want, scale, out);
    /* gzip from memory: the same inflate path as a file, its whole input
     * given at once (the fuzzer reaches the gzip code through here). */
    if (len > UINT32_MAX) return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: gzip buffer too large", s.label);
    if (inflateInit2(&s.zs, 16 + MAX_WBITS) != Z_OK)
        return rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: gzip: cannot initialise inflate", s.label);
    s.gz = 1;
    s.zs.next_in = (unsigned char *)buf;
    s.zs.avail_in = (uInt)len;
    s.mem = NULL;
    s.mem_len = 0;
    rt_status st = read_idx(&s, -1, len, want, scale, out);
    inflateEnd(&s.zs);
    return st;
}

rt_status rt_idx_read(rt_ctx *ctx, const char *path, rt_dtype want, float scale, rt_tensor **out)
{
    src s = {.ctx = ctx, .label = path};
    *out = NULL;
    s.f = fopen(path, "rb");
    if (!s.f) return rt_error(ctx, RT_STATUS_ERR_IO, "%s: open: %s", path, strerror(errno));
    struct stat sb;
    int regular = fstat(fileno(s.f), &sb) == 0 && S_ISREG(sb.st_mode);
    unsigned char m[2];
    size_t nm = fread(m, 1, 2, s.f);
    rt_status st = RT_STATUS_OK;
    if (nm < 2 && ferror(s.f)) {
        st = io_error(&s, "read");
    } else if (nm == 2 && m[0] == 0x1f && m[1] == 0x8b) {
        s.gz = 1;
        s.in = malloc(CHUNK);
        if (!s.in) st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory", path);
        /* 16 + MAX_WBITS: gzip wrapper only, CRC and length checked. */
        else if (inflateInit2(&s.zs, 16 + MAX_WBITS) != Z_OK)
            st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: gzip: cannot initialise inflate", path);
        else {
            s.zinit = 1;
            memcpy(s.in, m, 2);
            s.zs.next_in = s.in;
            s.zs.avail_in = 2;
            st = read_idx(&s, -1, regular ? (uint64_t)sb.st_size : 0, want, scale, out);
        }
    } else {
        memcpy(s.pend, m, nm);
        s.npend = nm;
        st = read_idx(&s, regular ? (int64_t)sb.st_size : -1, 0, want, scale, out);
    }
    if (s.zinit) inflateEnd(&s.zs);
    free(s.in);
    fclose(s.f); /* read-only: nothing to lose at close */
    return st;
}
