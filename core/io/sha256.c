/*
 * sha256.c -- SHA-256 (FIPS 180-4), streaming, for manifests: checkpoint
 * and data set digests.  Plain and portable; speed is not a concern next
 * to the disk.
 */
#include "retort.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct sha256 {
    uint32_t h[8];
    uint64_t len; /* bytes hashed so far */
    unsigned char buf[64];
    size_t nbuf;
} sha256;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void block(sha256 *s, const unsigned char *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
    s->h[5] += f;
    s->h[6] += g;
    s->h[7] += h;
}

static void sha_init(sha256 *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->len = 0;
    s->nbuf = 0;
}

static void sha_update(sha256 *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    s->len += len;
    if (s->nbuf) {
        size_t take = 64 - s->nbuf < len ? 64 - s->nbuf : len;
        memcpy(s->buf + s->nbuf, p, take);
        s->nbuf += take;
        p += take;
        len -= take;
        if (s->nbuf < 64) return;
        block(s, s->buf);
        s->nbuf = 0;
    }
    for (; len >= 64; p += 64, len -= 64) block(s, p);
    memcpy(s->buf, p, len);
    s->nbuf = len;
}

static void sha_hex(sha256 *s, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t bits = s->len * 8;
    unsigned char pad[72] = {0x80};
    /* 0x80, zeros to 56 mod 64, then the bit length big-endian. */
    size_t npad = (s->nbuf < 56 ? 56 : 120) - s->nbuf;
    for (int i = 0; i < 8; i++) pad[npad + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha_update(s, pad, npad + 8);
    for (int i = 0; i < 32; i++) {
        unsigned v = (s->h[i / 4] >> (24 - 8 * (i % 4))) & 0xff;
        out[2 * i] = hex[v >> 4];
        out[2 * i + 1] = hex[v & 15];
    }
    out[64] = 0;
}

void rt_sha256_hex(const void *data, size_t len, char out[65])
{
    sha256 s;
    sha_init(&s);
    sha_update(&s, data, len);
    sha_hex(&s, out);
}

rt_status rt_sha256_file_bounded(rt_ctx *ctx, const char *path, uint64_t max_bytes, double max_seconds,
                                 char out[65])
{
    out[0] = 0;
    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return rt_error(ctx, RT_STATUS_ERR_IO, "%s: open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return rt_error(ctx, RT_STATUS_ERR_IO, "%s: stat: %s", path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return rt_error(ctx, RT_STATUS_ERR_IO, "%s: not a regular file (%s): not hashed", path,
                        S_ISFIFO(sb.st_mode)  ? "a FIFO"
                        : S_ISCHR(sb.st_mode) ? "a character device"
                        : S_ISBLK(sb.st_mode) ? "a block device"
                        : S_ISDIR(sb.st_mode) ? "a folder"
                        : S_ISSOCK(sb.st_mode) ? "a socket"
                                               : "not a file");
    }
    if (max_bytes && (uint64_t)sb.st_size > max_bytes) {
        close(fd);
        return rt_error(ctx, RT_STATUS_ERR_IO, "%s: %llu bytes, more than the hashing limit of %llu: not hashed",
                        path, (unsigned long long)sb.st_size, (unsigned long long)max_bytes);
    }
    unsigned char *buf = malloc(1 << 16);
    if (!buf) {
        close(fd);
        return rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory", path);
    }
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sha256 s;
    sha_init(&s);
    rt_status st = RT_STATUS_OK;
    for (;;) {
        ssize_t n = read(fd, buf, 1 << 16);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: read at offset %llu: %s", path, (unsigned long long)s.len,
                          strerror(errno));
            break;
        }
        if (n == 0) break;
        sha_update(&s, buf, (size_t)n);
        /* Files in /proc and /sys claim a size of 0 and grow as read. */
        if (max_bytes && s.len > max_bytes) {
            st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: more than the hashing limit of %llu bytes: not hashed", path,
                          (unsigned long long)max_bytes);
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        double dt = (double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec);
        if (max_seconds > 0 && dt > max_seconds) {
            st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: hashing stopped at offset %llu after %.3g s (the limit): not hashed",
                          path, (unsigned long long)s.len, max_seconds);
            break;
        }
    }
    free(buf);
    close(fd);
    if (!st) sha_hex(&s, out);
    return st;
}

rt_status rt_sha256_file(rt_ctx *ctx, const char *path, char out[65])
{
    return rt_sha256_file_bounded(ctx, path, 0, 0, out);
}

/* Sorts indices by name (insertion sort: a model has few parameters). */
static void sort_by_name(int *idx, int n, const char *const *names)
{
    for (int i = 1; i < n; i++) {
        int v = idx[i], j = i;
        for (; j > 0 && strcmp(names[idx[j - 1]], names[v]) > 0; j--) idx[j] = idx[j - 1];
        idx[j] = v;
    }
}

rt_status rt_params_sha256(rt_ctx *ctx, int n, const char *const *names, const rt_tensor *const *ts, char out[65])
{
    out[0] = 0;
    int *idx = malloc(sizeof *idx * (size_t)(n > 0 ? n : 1));
    if (!idx) return rt_error(ctx, RT_STATUS_ERR_NOMEM, "weights sha256: out of memory");
    for (int i = 0; i < n; i++) idx[i] = i;
    sort_by_name(idx, n, names);
    for (int i = 0; i < n; i++) {
        char b[64];
        if (!rt_is_contiguous(ts[idx[i]])) {
            rt_status st = rt_error(ctx, RT_STATUS_ERR_SHAPE, "weights sha256: tensor '%s' %s is not contiguous",
                                    names[idx[i]], rt_tensor_shape_str(ts[idx[i]], b, sizeof b));
            free(idx);
            return st;
        }
        if (i > 0 && !strcmp(names[idx[i - 1]], names[idx[i]])) {
            rt_status st = rt_error(ctx, RT_STATUS_ERR_ARG, "weights sha256: the name '%s' appears twice", names[idx[i]]);
            free(idx);
            return st;
        }
    }
    sha256 s;
    sha_init(&s);
    for (int i = 0; i < n; i++) {
        const rt_tensor *t = ts[idx[i]];
        char head[64];
        sha_update(&s, names[idx[i]], strlen(names[idx[i]]) + 1);
        sha_update(&s, rt_dtype_name(t->dtype), strlen(rt_dtype_name(t->dtype)) + 1);
        for (int d = 0; d < t->ndim; d++) {
            int len = snprintf(head, sizeof head, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            sha_update(&s, head, (size_t)len);
        }
        sha_update(&s, "", 1);
        sha_update(&s, t->data, (size_t)rt_numel(t) * rt_dtype_size(t->dtype));
    }
    free(idx);
    sha_hex(&s, out);
    return RT_STATUS_OK;
}
