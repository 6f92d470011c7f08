/*
 * png_marks.c -- counts coloured pixels in rectangles of a PNG, for
 * tests/check_report.sh (Chromium's screenshot of report.html).
 *
 *   png_marks FILE.png X Y W H [X Y W H ...]
 *
 * Prints one line per rectangle: "X Y W H COUNT", COUNT being the pixels
 * whose channels differ by more than 48 (max - min of R, G, B): the report
 * draws data in saturated colours and axes, grid and text in greys, so a
 * chart with no data has COUNT 0.  Rectangles are clipped to the image.
 * Reads 8-bit RGB or RGBA, non-interlaced (what Chromium writes); anything
 * else is an error (exit 2), as is a malformed file.  Uses zlib only, so
 * the check needs no Python or ImageMagick.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define MAX_PIXELS (64u << 20)

static uint32_t be32(const unsigned char *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }

static int fail(const char *path, const char *what)
{
    fprintf(stderr, "png_marks: %s: %s\n", path, what);
    return 2;
}

static int paeth(int a, int b, int c)
{
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
}

int main(int argc, char **argv)
{
    if (argc < 2 || (argc - 2) % 4) {
        fprintf(stderr, "usage: png_marks FILE.png X Y W H [X Y W H ...]\n");
        return 2;
    }
    const char *path = argv[1];
    FILE *f = fopen(path, "rb");
    if (!f) return fail(path, "cannot open");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 8 + 25) {
        fclose(f);
        return fail(path, "too short for a PNG");
    }
    unsigned char *buf = malloc((size_t)n);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(buf);
        return fail(path, "cannot read");
    }
    fclose(f);
    if (memcmp(buf, "\x89PNG\r\n\x1a\n", 8)) {
        free(buf);
        return fail(path, "not a PNG (signature)");
    }
    uint32_t w = 0, h = 0;
    int channels = 0;
    size_t idat_len = 0;
    unsigned char *idat = malloc((size_t)n); /* IDAT data never exceeds the file */
    if (!idat) return fail(path, "out of memory");
    for (long off = 8; off + 12 <= n;) {
        uint32_t len = be32(buf + off);
        if (len > (uint32_t)(n - off - 12)) {
            free(buf), free(idat);
            return fail(path, "chunk longer than the file");
        }
        const unsigned char *type = buf + off + 4, *data = buf + off + 8;
        if (!memcmp(type, "IHDR", 4) && len >= 13) {
            w = be32(data), h = be32(data + 4);
            if (data[8] != 8 || (data[9] != 2 && data[9] != 6) || data[12] != 0) {
                free(buf), free(idat);
                return fail(path, "only 8-bit RGB/RGBA non-interlaced PNGs are read");
            }
            channels = data[9] == 6 ? 4 : 3;
        } else if (!memcmp(type, "IDAT", 4)) {
            memcpy(idat + idat_len, data, len);
            idat_len += len;
        }
        off += 12 + (long)len;
    }
    free(buf);
    if (!channels || w == 0 || h == 0 || (uint64_t)w * h > MAX_PIXELS) {
        free(idat);
        return fail(path, "no IHDR, or an image too large");
    }
    size_t stride = (size_t)w * channels, raw_len = (stride + 1) * h;
    unsigned char *raw = malloc(raw_len), *img = malloc(stride * h);
    uLongf got = raw_len;
    if (!raw || !img || uncompress(raw, &got, idat, idat_len) != Z_OK || got != raw_len) {
        free(idat), free(raw), free(img);
        return fail(path, "image data do not inflate to width x height");
    }
    free(idat);
    for (uint32_t y = 0; y < h; y++) {
        const unsigned char *src = raw + y * (stride + 1) + 1;
        unsigned char *dst = img + y * stride, *up = y ? dst - stride : NULL;
        int ft = raw[y * (stride + 1)];
        for (size_t i = 0; i < stride; i++) {
            int a = i >= (size_t)channels ? dst[i - channels] : 0, b = up ? up[i] : 0;
            int c = (up && i >= (size_t)channels) ? up[i - channels] : 0, v;
            switch (ft) {
            case 0: v = src[i]; break;
            case 1: v = src[i] + a; break;
            case 2: v = src[i] + b; break;
            case 3: v = src[i] + ((a + b) >> 1); break;
            case 4: v = src[i] + paeth(a, b, c); break;
            default: free(raw), free(img); return fail(path, "unknown row filter");
            }
            dst[i] = (unsigned char)v;
        }
    }
    free(raw);
    for (int k = 2; k < argc; k += 4) {
        long x0 = atol(argv[k]), y0 = atol(argv[k + 1]), rw = atol(argv[k + 2]), rh = atol(argv[k + 3]);
        long count = 0;
        for (long y = y0 < 0 ? 0 : y0; y < y0 + rh && y < (long)h; y++)
            for (long x = x0 < 0 ? 0 : x0; x < x0 + rw && x < (long)w; x++) {
                const unsigned char *p = img + (size_t)y * stride + (size_t)x * channels;
                int mx = p[0], mn = p[0];
                for (int c = 1; c < 3; c++) {
                    if (p[c] > mx) mx = p[c];
                    if (p[c] < mn) mn = p[c];
                }
                count += mx - mn > 48;
            }
        printf("%ld %ld %ld %ld %ld\n", x0, y0, rw, rh, count);
    }
    free(img);
    return 0;
}
