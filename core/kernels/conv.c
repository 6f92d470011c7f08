/*
 * conv.c -- conv2d (NCHW) as im2col + rt_gemm, and its plain twin.
 *
 * Per sample n and group g, with K = (C_in/groups) KH KW, P = H_out W_out
 * and Co = C_out/groups:
 *   forward   y[n,g] [Co, P]  = W[g] [Co, K] . col [K, P]   (+ bias first)
 *   dweight   dW[g]  [Co, K] += dy[n,g] [Co, P] . col^T [P, K]
 *   dx        dcol   [K, P]   = W[g]^T [K, Co] . dy[n,g] [Co, P]; col2im
 * The output block of one sample and group is contiguous in NCHW, so the
 * GEMM writes y and reads dy in place: no transposes, and the only extra
 * traffic is the col block (written by im2col, read by the GEMM; in the
 * backward written by the GEMM and added back by col2im).  One workspace
 * block serves both halves of the backward: dweight is formed from col
 * before the dx GEMM overwrites it with dcol.  A 1x1 kernel of stride 1
 * without padding needs no col at all: x is its own col, and the dx GEMM
 * accumulates straight into dx (beta 1).
 *
 * Why per sample and not several samples per GEMM: with several, y would
 * come out as [Co, n P] and need a transpose pass back to NCHW, which costs
 * what it saves; per-sample GEMMs are already large enough for OpenBLAS
 * (the 28x28 CNN's second layer: 64 x 196 x 288).
 */
#include "rt_conv.h"

#include <string.h>

#include "vec.h"

/* ------------------------------------------------------------- geometry */

/* a * b into *out; 0 on overflow or a negative operand. */
static int mul_ok(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0) return 0;
    return !__builtin_mul_overflow(a, b, out);
}

static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d)
{
    /* floor division of a possibly negative numerator, as PyTorch's. */
    int64_t num = in + 2 * p - d * (k - 1) - 1;
    int64_t q = num / s;
    if (num < 0 && q * s != num) q--;
    return q + 1;
}

rt_status rt_conv2d_geom_check(rt_ctx *ctx, rt_conv2d_geom *g)
{
    const int64_t big = INT64_C(1) << 40; /* sizes beyond this are nonsense */
    struct {
        const char *name;
        int64_t v, min;
    } f[] = {{"batch N", g->N, 0},          {"in_channels", g->C_in, 1},
             {"height H", g->H, 1},         {"width W", g->W, 1},
             {"out_channels", g->C_out, 1}, {"kernel height", g->KH, 1},
             {"kernel width", g->KW, 1},    {"stride height", g->stride_h, 1},
             {"stride width", g->stride_w, 1}, {"padding height", g->pad_h, 0},
             {"padding width", g->pad_w, 0},   {"dilation height", g->dil_h, 1},
             {"dilation width", g->dil_w, 1},  {"groups", g->groups, 1}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v < f[i].min || f[i].v > big)
            return rt_error(ctx, RT_STATUS_ERR_ARG,
                            "conv2d: %s is %lld; it must be in [%lld, 2^40]", f[i].name,
                            (long long)f[i].v, (long long)f[i].min);
    if (g->C_in % g->groups)
        return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                        "conv2d: in_channels %lld is not divisible by groups %lld "
                        "(groups must divide both channel counts)",
                        (long long)g->C_in, (long long)g->groups);
    if (g->C_out % g->groups)
        return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                        "conv2d: out_channels %lld is not divisible by groups %lld "
                        "(groups must divide both channel counts)",
                        (long long)g->C_out, (long long)g->groups);
    int64_t ho = out_size(g->H, g->KH, g->stride_h, g->pad_h, g->dil_h);
    int64_t wo = out_size(g->W, g->KW, g->stride_w, g->pad_w, g->dil_w);
    if (ho < 1 || wo < 1)
        return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                        "conv2d: input %lldx%lld with kernel %lldx%lld, padding %lldx%lld, "
                        "dilation %lldx%lld, stride %lldx%lld gives output %lldx%lld; it must "
                        "be at least 1x1 (pad the input, or use a smaller kernel or dilation)",
                        (long long)g->H, (long long)g->W, (long long)g->KH, (long long)g->KW,
                        (long long)g->pad_h, (long long)g->pad_w, (long long)g->dil_h,
                        (long long)g->dil_w, (long long)g->stride_h, (long long)g->stride_w,
                        (long long)ho, (long long)wo);
    int64_t t, k, p, ws1, ws2;
    /* every tensor's element count, and the workspace's (K + 1) P + C_out (K + 1) */
    if (!mul_ok(g->N, g->C_in, &t) || !mul_ok(t, g->H, &t) || !mul_ok(t, g->W, &t) ||
        !mul_ok(g->N, g->C_out, &t) || !mul_ok(t, ho, &t) || !mul_ok(t, wo, &t) ||
        !mul_ok(g->C_in / g->groups, g->KH, &k) || !mul_ok(k, g->KW, &k) ||
        !mul_ok(g->C_out, k + 1, &ws2) || !mul_ok(ho, wo, &p) || !mul_ok(k + 1, p, &ws1) ||
        __builtin_add_overflow(ws1, ws2, &t) || (uint64_t)t > SIZE_MAX / sizeof(float))
        return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                        "conv2d: element counts overflow (N %lld, channels %lld -> %lld, "
                        "input %lldx%lld, output %lldx%lld)",
                        (long long)g->N, (long long)g->C_in, (long long)g->C_out,
                        (long long)g->H, (long long)g->W, (long long)ho, (long long)wo);
    g->H_out = ho;
    g->W_out = wo;
    return RT_STATUS_OK;
}

static int is_pointwise(const rt_conv2d_geom *g)
{
    return g->KH == 1 && g->KW == 1 && g->stride_h == 1 && g->stride_w == 1 &&
           g->pad_h == 0 && g->pad_w == 0;
}

size_t rt_conv2d_workspace(const rt_conv2d_geom *g)
{
    if (is_pointwise(g)) return 0;
    size_t K = (size_t)(g->C_in / g->groups * g->KH * g->KW);
    /* col with its row of ones [K + 1, P], then [weight | bias] [C_out, K + 1] */
    return (K + 1) * (size_t)(g->H_out * g->W_out) + (size_t)g->C_out * (K + 1);
}

/* ------------------------------------------------------- im2col, col2im */

/* For kernel column kw: the output columns [lo, hi) whose input column
 * iw = ow sw + off (off = kw dw - pw) lies in [0, W). */
static void col_range(int64_t off, int64_t sw, int64_t W, int64_t Wo, int64_t *lo,
                      int64_t *hi)
{
    int64_t l = off >= 0 ? 0 : (-off + sw - 1) / sw;
    int64_t h = W - off <= 0 ? 0 : (W - off + sw - 1) / sw;
    if (l > Wo) l = Wo;
    if (h > Wo) h = Wo;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

/* Stride 1 and W_out = W ("same" width, the common 3x3 pad 1 case): then
 * col row (c, kh, kw) is the plane x[c] shifted by one constant offset,
 * except at the columns whose input falls off the left or right edge (they
 * wrap to the neighbouring input row) and the rows off the top or bottom.
 * So a tap is one long copy (or add) plus a few fix-ups per row, instead
 * of Ho short ones: the short copies cost more than the GEMM's reading of
 * col at 14x14.  The copied span [first, last) maps to input indices
 * inside the plane (first: the top valid row at column lo; last: the
 * bottom valid row at column hi), so nothing outside x is read. */
static int is_shift(const rt_conv2d_geom *g)
{
    return g->stride_h == 1 && g->stride_w == 1 && g->W_out == g->W;
}

/* For tap (kh, kw) of a shift geometry: output rows [r0, r1) with input
 * rows inside, output columns [lo, hi) likewise, and the offset from an
 * output index to its input index. */
static void shift_span(const rt_conv2d_geom *g, int64_t kh, int64_t kw, int64_t *r0,
                       int64_t *r1, int64_t *lo, int64_t *hi, int64_t *delta)
{
    int64_t offh = kh * g->dil_h - g->pad_h, offw = kw * g->dil_w - g->pad_w;
    col_range(offh, 1, g->H, g->H_out, r0, r1);
    col_range(offw, 1, g->W, g->W_out, lo, hi);
    *delta = offh * g->W + offw;
}

static void im2col_shift(const rt_conv2d_geom *g, const float *x, int64_t C, float *col)
{
    const int64_t H = g->H, W = g->W, Ho = g->H_out, Wo = g->W_out, P = Ho * Wo;
    for (int64_t c = 0; c < C; c++)
        for (int64_t kh = 0; kh < g->KH; kh++)
            for (int64_t kw = 0; kw < g->KW; kw++) {
                float *row = col + ((c * g->KH + kh) * g->KW + kw) * P;
                int64_t r0, r1, lo, hi, delta;
                shift_span(g, kh, kw, &r0, &r1, &lo, &hi, &delta);
                if (r0 >= r1 || lo >= hi) {
                    memset(row, 0, (size_t)P * sizeof *row);
                    continue;
                }
                int64_t first = r0 * Wo + lo, last = (r1 - 1) * Wo + hi;
                memset(row, 0, (size_t)first * sizeof *row);
                memcpy(row + first, x + c * H * W + first + delta,
                       (size_t)(last - first) * sizeof *row);
                memset(row + last, 0, (size_t)(P - last) * sizeof *row);
                /* the wrapped columns inside the span */
                if (lo > 0 || hi < Wo)
                    for (int64_t oh = r0; oh < r1; oh++) {
                        float *r = row + oh * Wo;
                        if (oh > r0)
                            for (int64_t ow = 0; ow < lo; ow++) r[ow] = 0;
                        if (oh < r1 - 1)
                            for (int64_t ow = hi; ow < Wo; ow++) r[ow] = 0;
                    }
            }
}

/* col [C KH KW, Ho Wo] from x [C, H, W] (one sample, one group's channels). */
static void im2col(const rt_conv2d_geom *g, const float *x, int64_t C, float *col)
{
    const int64_t H = g->H, W = g->W, Ho = g->H_out, Wo = g->W_out, P = Ho * Wo;
    const int64_t sh = g->stride_h, sw = g->stride_w;
    if (is_shift(g)) {
        im2col_shift(g, x, C, col);
        return;
    }
    for (int64_t c = 0; c < C; c++) {
        const float *xc = x + c * H * W;
        for (int64_t kh = 0; kh < g->KH; kh++)
            for (int64_t kw = 0; kw < g->KW; kw++) {
                float *row = col + ((c * g->KH + kh) * g->KW + kw) * P;
                int64_t off = kw * g->dil_w - g->pad_w, lo, hi;
                col_range(off, sw, W, Wo, &lo, &hi);
                for (int64_t oh = 0; oh < Ho; oh++) {
                    float *restrict r = row + oh * Wo;
                    int64_t ih = oh * sh - g->pad_h + kh * g->dil_h;
                    if (ih < 0 || ih >= H) {
                        memset(r, 0, (size_t)Wo * sizeof *r);
                        continue;
                    }
                    const float *restrict xr = xc + ih * W + off;
                    for (int64_t ow = 0; ow < lo; ow++) r[ow] = 0;
                    if (sw == 1) memcpy(r + lo, xr + lo, (size_t)(hi - lo) * sizeof *r);
                    else
                        for (int64_t ow = lo; ow < hi; ow++) r[ow] = xr[ow * sw];
                    for (int64_t ow = hi; ow < Wo; ow++) r[ow] = 0;
                }
            }
    }
}

/* col2im for a shift geometry: the wrapped entries of col are zeroed (col
 * is the caller's scratch), then each tap is one long add. */
static void col2im_shift(const rt_conv2d_geom *g, float *col, int64_t C, float *dx)
{
    const int64_t H = g->H, W = g->W, Ho = g->H_out, Wo = g->W_out, P = Ho * Wo;
    for (int64_t c = 0; c < C; c++)
        for (int64_t kh = 0; kh < g->KH; kh++)
            for (int64_t kw = 0; kw < g->KW; kw++) {
                float *row = col + ((c * g->KH + kh) * g->KW + kw) * P;
                int64_t r0, r1, lo, hi, delta;
                shift_span(g, kh, kw, &r0, &r1, &lo, &hi, &delta);
                if (r0 >= r1 || lo >= hi) continue;
                int64_t first = r0 * Wo + lo, last = (r1 - 1) * Wo + hi;
                if (lo > 0 || hi < Wo)
                    for (int64_t oh = r0; oh < r1; oh++) {
                        float *r = row + oh * Wo;
                        if (oh > r0)
                            for (int64_t ow = 0; ow < lo; ow++) r[ow] = 0;
                        if (oh < r1 - 1)
                            for (int64_t ow = hi; ow < Wo; ow++) r[ow] = 0;
                    }
                const float *restrict src = row + first;
                float *restrict dst = dx + c * H * W + first + delta;
                VLOOP(j, last - first, dst[j] += src[j];);
            }
}

/* dx [C, H, W] += the col entries back at their input positions (col is
 * scratch: the shift path zeroes entries of it). */
static void col2im_add(const rt_conv2d_geom *g, float *col, int64_t C, float *dx)
{
    const int64_t H = g->H, W = g->W, Ho = g->H_out, Wo = g->W_out, P = Ho * Wo;
    const int64_t sh = g->stride_h, sw = g->stride_w;
    if (is_shift(g)) {
        col2im_shift(g, col, C, dx);
        return;
    }
    for (int64_t c = 0; c < C; c++) {
        float *dc = dx + c * H * W;
        for (int64_t kh = 0; kh < g->KH; kh++)
            for (int64_t kw = 0; kw < g->KW; kw++) {
                const float *row = col + ((c * g->KH + kh) * g->KW + kw) * P;
                int64_t off = kw * g->dil_w - g->pad_w, lo, hi;
                col_range(off, sw, W, Wo, &lo, &hi);
                for (int64_t oh = 0; oh < Ho; oh++) {
                    int64_t ih = oh * sh - g->pad_h + kh * g->dil_h;
                    if (ih < 0 || ih >= H) continue;
                    const float *restrict r = row + oh * Wo;
                    float *restrict d = dc + ih * W + off;
                    if (sw == 1) {
                        const float *restrict rr = r + lo;
                        float *restrict dd = d + lo;
                        VLOOP(j, hi - lo, dd[j] += rr[j];);
                    } else
                        for (int64_t ow = lo; ow < hi; ow++) d[ow * sw] += r[ow];
                }
            }
    }
}

/* --------------------------------------------------------------- fast */

void rt_conv2d_forward(const rt_conv2d_geom *g, const float *x, const float *weight,
                       const float *bias, float *y, float *ws)
{
    const int64_t G = g->groups, Ci = g->C_in / G, Co = g->C_out / G;
    const int64_t K = Ci * g->KH * g->KW, P = g->H_out * g->W_out, HW = g->H * g->W;
    const int pw = is_pointwise(g);
    /* The bias rides in the GEMM: col gets a row of ones (row K, which
     * im2col never writes) and the weights a bias column, copied once per
     * call into ws after col.  A separate fill of y would cost a write and
     * a read of the whole output, as much as the GEMM itself when K is
     * small (a first layer's K is 9). */
    const int fold = bias && !pw;
    const float *wk = weight;
    int64_t Kb = K;
    if (fold) {
        float *ones = ws + K * P, *wb = ws + (K + 1) * P;
        VLOOP(j, P, ones[j] = 1.0f;);
        for (int64_t co = 0; co < g->C_out; co++) {
            memcpy(wb + co * (K + 1), weight + co * K, (size_t)K * sizeof *wb);
            wb[co * (K + 1) + K] = bias[co];
        }
        wk = wb;
        Kb = K + 1;
    }
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t gi = 0; gi < G; gi++) {
            const float *xg = x + (n * g->C_in + gi * Ci) * HW;
            float *yg = y + (n * g->C_out + gi * Co) * P;
            const float *col = xg;
            if (!pw) {
                im2col(g, xg, Ci, ws);
                col = ws;
            }
            if (fold) {
                rt_gemm(0, 0, Co, P, Kb, 1.0f, wk + gi * Co * Kb, Kb, col, P, 0.0f, yg, P);
                continue;
            }
            float beta = 0.0f;
            if (bias) {
                for (int64_t c = 0; c < Co; c++) {
                    float *restrict yc = yg + c * P;
                    float b = bias[gi * Co + c];
                    VLOOP(j, P, yc[j] = b;);
                }
                beta = 1.0f;
            }
            rt_gemm(0, 0, Co, P, K, 1.0f, weight + gi * Co * K, K, col, P, beta, yg, P);
        }
}

void rt_conv2d_backward(const rt_conv2d_geom *g, const float *x, const float *weight,
                        const float *dy, float *dx, float *dweight, float *dbias, float *ws)
{
    const int64_t G = g->groups, Ci = g->C_in / G, Co = g->C_out / G;
    const int64_t K = Ci * g->KH * g->KW, P = g->H_out * g->W_out, HW = g->H * g->W;
    const int pw = is_pointwise(g);
    /* With both dweight and dbias (and a col), dbias rides in the dweight
     * GEMM as in the forward: dy [Co, P] . [col; ones]^T [P, K + 1] into
     * an accumulator [C_out, K + 1] in ws (after col), added to dweight
     * and dbias at the end.  Otherwise dbias is summed sample by sample,
     * while dy[n] is in cache for the GEMMs. */
    const int fold = dbias && dweight && !pw;
    float *acc = ws + (K + 1) * P;
    if (fold) {
        float *ones = ws + K * P;
        VLOOP(j, P, ones[j] = 1.0f;);
        memset(acc, 0, (size_t)(g->C_out * (K + 1)) * sizeof *acc);
    }
    for (int64_t n = 0; n < g->N; n++) {
        if (dbias && !fold)
            for (int64_t c = 0; c < g->C_out; c++) {
                const float *restrict d = dy + (n * g->C_out + c) * P;
                float acc[VW] = {0}, s = 0;
                int64_t j = 0;
                for (; j + VW <= P; j += VW)
                    for (int q = 0; q < VW; q++) acc[q] += d[j + q];
                for (; j < P; j++) s += d[j];
                for (int q = 0; q < VW; q++) s += acc[q];
                dbias[c] += s;
            }
        if (!dx && !dweight) continue;
        for (int64_t gi = 0; gi < G; gi++) {
            const float *dyg = dy + (n * g->C_out + gi * Co) * P;
            const float *wg = weight + gi * Co * K;
            size_t xoff = (size_t)((n * g->C_in + gi * Ci) * HW);
            if (dweight) {
                const float *col = x + xoff;
                if (!pw) {
                    im2col(g, x + xoff, Ci, ws);
                    col = ws;
                }
                if (fold)
                    rt_gemm(0, 1, Co, K + 1, P, 1.0f, dyg, P, col, P, 1.0f, acc + gi * Co * (K + 1),
                            K + 1);
                else
                    rt_gemm(0, 1, Co, K, P, 1.0f, dyg, P, col, P, 1.0f, dweight + gi * Co * K, K);
            }
            if (dx) {
                if (pw) {
                    rt_gemm(1, 0, K, P, Co, 1.0f, wg, K, dyg, P, 1.0f, dx + xoff, P);
                } else {
                    rt_gemm(1, 0, K, P, Co, 1.0f, wg, K, dyg, P, 0.0f, ws, P);
                    col2im_add(g, ws, Ci, dx + xoff); /* rows < K: the ones survive */
                }
            }
        }
    }
    if (fold)
        for (int64_t co = 0; co < g->C_out; co++) {
            const float *restrict a = acc + co * (K + 1);
            float *restrict d = dweight + co * K;
            VLOOP(k, K, d[k] += a[k];);
            dbias[co] += a[K];
        }
}

/* ---------------------------------------------------------- reference */

/* The input row (column) that output oh (ow) sees through kernel tap kh:
 * written out directly from the definition, independent of col_range. */
#define IN_H(oh, kh) ((oh) * g->stride_h - g->pad_h + (kh) * g->dil_h)
#define IN_W(ow, kw) ((ow) * g->stride_w - g->pad_w + (kw) * g->dil_w)

void rt_conv2d_forward_ref(const rt_conv2d_geom *g, const float *x, const float *weight,
                           const float *bias, float *y)
{
    const int64_t Ci = g->C_in / g->groups, Co = g->C_out / g->groups;
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t co = 0; co < g->C_out; co++) {
            int64_t gi = co / Co;
            for (int64_t oh = 0; oh < g->H_out; oh++)
                for (int64_t ow = 0; ow < g->W_out; ow++) {
                    double s = bias ? bias[co] : 0.0;
                    for (int64_t ci = 0; ci < Ci; ci++)
                        for (int64_t kh = 0; kh < g->KH; kh++)
                            for (int64_t kw = 0; kw < g->KW; kw++) {
                                int64_t ih = IN_H(oh, kh), iw = IN_W(ow, kw);
                                if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
                                double xv = x[((n * g->C_in + gi * Ci + ci) * g->H + ih) * g->W + iw];
                                double wv = weight[((co * Ci + ci) * g->KH + kh) * g->KW + kw];
                                s += xv * wv;
                            }
                    y[((n * g->C_out + co) * g->H_out + oh) * g->W_out + ow] = (float)s;
                }
        }
}

void rt_conv2d_backward_ref(const rt_conv2d_geom *g, const float *x, const float *weight,
                            const float *dy, float *dx, float *dweight, float *dbias)
{
    const int64_t Ci = g->C_in / g->groups, Co = g->C_out / g->groups;
    const int64_t Ho = g->H_out, Wo = g->W_out;
#define DY(n, co, oh, ow) dy[(((n) * g->C_out + (co)) * Ho + (oh)) * Wo + (ow)]
    if (dbias)
        for (int64_t co = 0; co < g->C_out; co++) {
            double s = 0;
            for (int64_t n = 0; n < g->N; n++)
                for (int64_t o = 0; o < Ho * Wo; o++) s += DY(n, co, 0, o);
            dbias[co] = (float)(dbias[co] + s);
        }
    if (dweight)
        for (int64_t co = 0; co < g->C_out; co++) {
            int64_t gi = co / Co;
            for (int64_t ci = 0; ci < Ci; ci++)
                for (int64_t kh = 0; kh < g->KH; kh++)
                    for (int64_t kw = 0; kw < g->KW; kw++) {
                        double s = 0;
                        for (int64_t n = 0; n < g->N; n++)
                            for (int64_t oh = 0; oh < Ho; oh++)
                                for (int64_t ow = 0; ow < Wo; ow++) {
                                    int64_t ih = IN_H(oh, kh), iw = IN_W(ow, kw);
                                    if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
                                    s += (double)DY(n, co, oh, ow) *
                                         x[((n * g->C_in + gi * Ci + ci) * g->H + ih) * g->W + iw];
                                }
                        float *d = dweight + ((co * Ci + ci) * g->KH + kh) * g->KW + kw;
                        *d = (float)(*d + s);
                    }
        }
    if (dx)
        /* Gather: input (ih, iw) of channel c receives from every output
         * (oh, ow) and tap (kh, kw) with IN_H(oh, kh) = ih, IN_W(ow, kw) = iw. */
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t c = 0; c < g->C_in; c++) {
                int64_t gi = c / Ci, ci = c % Ci;
                for (int64_t ih = 0; ih < g->H; ih++)
                    for (int64_t iw = 0; iw < g->W; iw++) {
                        double s = 0;
                        for (int64_t co = gi * Co; co < (gi + 1) * Co; co++)
                            for (int64_t kh = 0; kh < g->KH; kh++)
                                for (int64_t kw = 0; kw < g->KW; kw++) {
                                    int64_t th = ih + g->pad_h - kh * g->dil_h;
                                    int64_t tw = iw + g->pad_w - kw * g->dil_w;
                                    if (th < 0 || tw < 0 || th % g->stride_h || tw % g->stride_w)
                                        continue;
                                    int64_t oh = th / g->stride_h, ow = tw / g->stride_w;
                                    if (oh >= Ho || ow >= Wo) continue;
                                    s += (double)DY(n, co, oh, ow) *
                                         weight[((co * Ci + ci) * g->KH + kh) * g->KW + kw];
                                }
                        float *d = dx + ((n * g->C_in + c) * g->H + ih) * g->W + iw;
                        *d = (float)(*d + s);
                    }
            }
#undef DY
}
