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
 * (the 28x28 CNN's second layer: 64 x 196 x 288).  Threads split the batch
 * instead for y and dx, and the output channels for dweight ("fast",
 * below): each runs im2col, its GEMMs and col2im on one core, so the
 * passes between the GEMMs use every core too.  Two threads of one-thread
 * GEMMs also beat OpenBLAS's two threads on every GEMM at these sizes.
 */
#include "rt_conv.h"

#include <string.h>

#include "parallel.h"
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

/* A tap's span, the same for every channel: computed once per call (the
 * divisions in col_range cost more than a short row).  empty: no output
 * sees the input through the tap. */
typedef struct tap_span {
    int64_t r0, r1, lo, hi, first, last, delta;
    int empty;
} tap_span;
#define MAX_TAPS 49 /* 7x7; larger kernels compute spans row by row */

static tap_span tap_of(const rt_conv2d_geom *g, int64_t kh, int64_t kw)
{
    tap_span t;
    shift_span(g, kh, kw, &t.r0, &t.r1, &t.lo, &t.hi, &t.delta);
    t.empty = t.r0 >= t.r1 || t.lo >= t.hi;
    t.first = t.r0 * g->W_out + t.lo;
    t.last = (t.r1 - 1) * g->W_out + t.hi;
    return t;
}

/* taps[KH KW] for a kernel of at most MAX_TAPS taps; 0 otherwise. */
static int taps_of(const rt_conv2d_geom *g, tap_span *taps)
{
    if (g->KH * g->KW > MAX_TAPS) return 0;
    for (int64_t kh = 0; kh < g->KH; kh++)
        for (int64_t kw = 0; kw < g->KW; kw++) taps[kh * g->KW + kw] = tap_of(g, kh, kw);
    return 1;
}

/* p[0..n) = 0 for the few entries before and after a span, in the
 * wrapped columns and around a short row: a store loop, not a memset call
 * (the calls, two or three per row of col, cost as much as the rows'
 * copies: im2col took 1.3x less time without them).  The zero is read
 * from a volatile so that gcc cannot turn the loop back into memset. */
static const volatile float zero_v = 0.0f;
static inline void zero_few(float *p, int64_t n)
{
    const float z = zero_v;
    for (int64_t i = 0; i < n; i++) p[i] = z;
}

/* The wrapped columns inside a span [first, last) of a row of col. */
static inline void zero_wrapped(float *row, const tap_span *t, int64_t Wo)
{
    if (t->lo == 0 && t->hi == Wo) return;
    for (int64_t oh = t->r0; oh < t->r1; oh++) {
        float *r = row + oh * Wo;
        if (oh > t->r0) zero_few(r, t->lo);
        if (oh < t->r1 - 1) zero_few(r + t->hi, Wo - t->hi);
    }
}

/* Rows [r0, r1) of col (row (c KH + kh) KW + kw), written from col's
 * first row; the whole col is [0, C KH KW). */
static void im2col_shift(const rt_conv2d_geom *g, const float *x, int64_t r0, int64_t r1, float *col)
{
    const int64_t H = g->H, W = g->W, Ho = g->H_out, Wo = g->W_out, P = Ho * Wo, T = g->KH * g->KW;
    tap_span taps[MAX_TAPS];
    const int have = taps_of(g, taps);
    for (int64_t rw = r0; rw < r1; rw++) {
        const int64_t c = rw / T, k = rw % T;
        float *row = col + (rw - r0) * P;
        const tap_span t = have ? taps[k] : tap_of(g, k / g->KW, k % g->KW);
        if (t.empty) {
            memset(row, 0, (size_t)P * sizeof *row);
            continue;
        }
        zero_few(row, t.first);
        memcpy(row + t.first, x + c * H * W + t.first + t.delta, (size_t)(t.last - t.first) * sizeof *row);
        zero_few(row + t.last, P - t.last);
        zero_wrapped(row, &t, Wo);
    }
}

static void im2col_rows(const rt_conv2d_geom *g, const float *x, int64_t r0, int64_t r1, float *col)
{
    const int64_t H = g->H, W = g->W, Ho = g->H_out, Wo = g->W_out, P = Ho * Wo;
    const int64_t sh = g->stride_h, sw = g->stride_w;
    if (is_shift(g)) {
        im2col_shift(g, x, r0, r1, col);
        return;
    }
    for (int64_t rw = r0; rw < r1; rw++) {
        const int64_t c = rw / (g->KH * g->KW), kh = rw / g->KW % g->KH, kw = rw % g->KW;
        const float *xc = x + c * H * W;
        float *row = col + (rw - r0) * P;
        int64_t off = kw * g->dil_w - g->pad_w, lo, hi;
        col_range(off, sw, W, Wo, &lo, &hi);
        for (int64_t oh = 0; oh < Ho; oh++) {
            float *restrict r = row + oh * Wo;
            int64_t ih = oh * sh - g->pad_h + kh * g->dil_h;
            if (ih < 0 || ih >= H) {
                zero_few(r, Wo);
                continue;
            }
            const float *restrict xr = xc + ih * W + off;
            zero_few(r, lo);
            if (sw == 1) memcpy(r + lo, xr + lo, (size_t)(hi - lo) * sizeof *r);
            else
                for (int64_t ow = lo; ow < hi; ow++) r[ow] = xr[ow * sw];
            zero_few(r + hi, Wo - hi);
        }
    }
}

/* col [C KH KW, Ho Wo] from x [C, H, W] (one sample, one group's channels). */
static void im2col(const rt_conv2d_geom *g, const float *x, int64_t C, float *col)
{
    im2col_rows(g, x, 0, C * g->KH * g->KW, col);
}

/* d += s.  The pointers are restrict parameters because gcc -O2 vectorises
 * only what cannot alias, and ignores restrict on local variables: the
 * same VLOOP over restrict locals stayed scalar (a third of col2im's time). */
static void add_into(float *restrict d, const float *restrict s, int64_t n)
{
    VLOOP(j, n, d[j] += s[j];);
}

/* col2im for a shift geometry: the wrapped entries of col are zeroed (col
 * is the caller's scratch), then each tap is one long add. */
static void col2im_shift(const rt_conv2d_geom *g, float *col, int64_t C, float *dx)
{
    const int64_t H = g->H, W = g->W, Ho = g->H_out, Wo = g->W_out, P = Ho * Wo, T = g->KH * g->KW;
    tap_span taps[MAX_TAPS];
    const int have = taps_of(g, taps);
    for (int64_t c = 0; c < C; c++)
        for (int64_t k = 0; k < T; k++) {
            float *row = col + (c * T + k) * P;
            const tap_span t = have ? taps[k] : tap_of(g, k / g->KW, k % g->KW);
            if (t.empty) continue;
            zero_wrapped(row, &t, Wo);
            add_into(dx + c * H * W + t.first + t.delta, row + t.first, t.last - t.first);
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
                    const float *r = row + oh * Wo;
                    float *d = dc + ih * W + off;
                    if (sw == 1) add_into(d + lo, r + lo, hi - lo);
                    else
                        for (int64_t ow = lo; ow < hi; ow++) d[ow * sw] += r[ow];
                }
            }
    }
}

/* --------------------------------------------------------------- fast */

/* Threads (rt_par_run, parallel.h) split the work two ways, each GEMM on
 * one core, and give the same bits as one thread and as the serial code
 * before them:
 *   - y and dx are per sample: the batch is cut into parts of consecutive
 *     samples (rt_par_range), one task each; a task uses the col block of
 *     the thread running it.
 *   - dweight and dbias are sums over the samples, taken in sample order
 *     into one accumulator (zeroed, then a beta-1 GEMM per sample), so
 *     threads split the accumulator's rows (output channels) instead: each
 *     task runs every sample's im2col (its thread's own: the im2col is
 *     repeated per thread) and the GEMM of its rows.  Summing per part and
 *     adding the parts would change the last bits, and with them a trained
 *     network's numbers; splitting the columns (each task building only
 *     its rows of col) changed them too, for tiny GEMMs (OpenBLAS's small
 *     kernels), while the rows kept every bit in the tests.
 * Part count, from the shapes only: min(N, CONV_PARTS), fewer when the
 * workspace would pass CONV_WS_CAP floats.  Workspace: one col block per
 * part ([K + 1, P]: col and a row of ones; none for a pointwise kernel),
 * then the accumulator [C_out, K + 1] (the forward's [weight | bias]). */
#define CONV_PARTS 8
#define CONV_WS_CAP (INT64_C(1) << 23)

static int64_t col_floats(const rt_conv2d_geom *g, int64_t K)
{
    return is_pointwise(g) ? 0 : (K + 1) * g->H_out * g->W_out;
}

static int64_t acc_floats(const rt_conv2d_geom *g, int64_t K)
{
    return is_pointwise(g) ? 0 : g->C_out * (K + 1);
}

static int64_t k_of(const rt_conv2d_geom *g) { return g->C_in / g->groups * g->KH * g->KW; }

int64_t rt_conv2d_parts(const rt_conv2d_geom *g)
{
    int64_t p = g->N < CONV_PARTS ? g->N : CONV_PARTS, col = col_floats(g, k_of(g));
    while (p > 1 && col > CONV_WS_CAP / p) p--;
    return p < 1 ? 1 : p;
}

size_t rt_conv2d_workspace(const rt_conv2d_geom *g)
{
    int64_t K = k_of(g);
    return (size_t)rt_conv2d_parts(g) * (size_t)col_floats(g, K) + (size_t)acc_floats(g, K);
}

/* What a task needs: the call's arguments and the derived sizes. */
typedef struct conv_job {
    const rt_conv2d_geom *g;
    const float *x, *weight, *bias, *dy;
    float *y, *dx, *dweight, *dbias, *ws;
    const float *wk; /* forward: the weights the GEMM reads ([weight | bias] when folded) */
    float *acc;      /* [C_out, K + 1] after the col blocks */
    int64_t G, Ci, Co, K, Kb, P, HW, parts, colsz, ntasks;
    int pw, fold;
} conv_job;

static conv_job job_of(const rt_conv2d_geom *g, float *ws)
{
    conv_job j = {.g = g, .ws = ws};
    j.G = g->groups, j.Ci = g->C_in / j.G, j.Co = g->C_out / j.G;
    j.K = k_of(g), j.P = g->H_out * g->W_out, j.HW = g->H * g->W;
    j.pw = is_pointwise(g);
    j.parts = rt_conv2d_parts(g);
    j.colsz = col_floats(g, j.K);
    j.acc = j.pw ? NULL : ws + j.parts * j.colsz;
    return j;
}

/* A thread's col block. */
static float *col_of(const conv_job *j, int thread) { return j->ws + thread * j->colsz; }

/* Floats a job touches, for rt_par_run's threshold. */
static int64_t job_work(const conv_job *j)
{
    int64_t per = j->colsz + j->g->C_out * j->P, w;
    return __builtin_mul_overflow(j->g->N, per, &w) ? INT64_MAX : w;
}

static void ones_row(const conv_job *j, float *cb)
{
    float *ones = cb + j->K * j->P;
    VLOOP(q, j->P, ones[q] = 1.0f;);
}

static void forward_task(void *arg, int64_t part, int thread)
{
    const conv_job *j = arg;
    const rt_conv2d_geom *g = j->g;
    const int64_t Co = j->Co, Ci = j->Ci, K = j->K, P = j->P;
    float *cb = j->pw ? NULL : col_of(j, thread); /* pointwise: x is its own col */
    if (j->fold) ones_row(j, cb);
    int64_t n0, n1;
    rt_par_range(g->N, j->parts, part, &n0, &n1);
    for (int64_t n = n0; n < n1; n++)
        for (int64_t gi = 0; gi < j->G; gi++) {
            const float *xg = j->x + (n * g->C_in + gi * Ci) * j->HW;
            float *yg = j->y + (n * g->C_out + gi * Co) * P;
            const float *col = xg;
            if (!j->pw) {
                im2col(g, xg, Ci, cb);
                col = cb;
            }
            if (j->fold) {
                rt_gemm(0, 0, Co, P, j->Kb, 1.0f, j->wk + gi * Co * j->Kb, j->Kb, col, P, 0.0f, yg, P);
                continue;
            }
            float beta = 0.0f;
            if (j->bias) {
                for (int64_t c = 0; c < Co; c++) {
                    float *restrict yc = yg + c * P;
                    float b = j->bias[gi * Co + c];
                    VLOOP(q, P, yc[q] = b;);
                }
                beta = 1.0f;
            }
            rt_gemm(0, 0, Co, P, K, 1.0f, j->weight + gi * Co * K, K, col, P, beta, yg, P);
        }
}

void rt_conv2d_forward(const rt_conv2d_geom *g, const float *x, const float *weight,
                       const float *bias, float *y, float *ws)
{
    if (g->N < 1) return;
    conv_job j = job_of(g, ws);
    j.x = x, j.weight = weight, j.bias = bias, j.y = y;
    /* The bias rides in the GEMM: col gets a row of ones (row K, which
     * im2col never writes) and the weights a bias column, copied once per
     * call into the accumulator's place.  A separate fill of y would cost
     * a write and a read of the whole output, as much as the GEMM itself
     * when K is small (a first layer's K is 9). */
    j.fold = bias && !j.pw;
    j.wk = weight;
    j.Kb = j.K;
    if (j.fold) {
        const int64_t K = j.K;
        float *wb = j.acc;
        for (int64_t co = 0; co < g->C_out; co++) {
            memcpy(wb + co * (K + 1), weight + co * K, (size_t)K * sizeof *wb);
            wb[co * (K + 1) + K] = bias[co];
        }
        j.wk = wb;
        j.Kb = K + 1;
    }
    rt_par_run(j.parts, job_work(&j), forward_task, &j);
}

/* dx of a part's samples: dcol = W^T dy into the thread's col block, then
 * col2im (pointwise: straight into dx, beta 1). */
static void dx_task(void *arg, int64_t part, int thread)
{
    const conv_job *j = arg;
    const rt_conv2d_geom *g = j->g;
    const int64_t Co = j->Co, Ci = j->Ci, K = j->K, P = j->P;
    float *cb = j->pw ? NULL : col_of(j, thread);
    int64_t n0, n1;
    rt_par_range(g->N, j->parts, part, &n0, &n1);
    for (int64_t n = n0; n < n1; n++)
        for (int64_t gi = 0; gi < j->G; gi++) {
            const float *dyg = j->dy + (n * g->C_out + gi * Co) * P;
            const float *wg = j->weight + gi * Co * K;
            float *dxg = j->dx + (n * g->C_in + gi * Ci) * j->HW;
            if (j->pw) {
                rt_gemm(1, 0, K, P, Co, 1.0f, wg, K, dyg, P, 1.0f, dxg, P);
            } else {
                rt_gemm(1, 0, K, P, Co, 1.0f, wg, K, dyg, P, 0.0f, cb, P);
                col2im_add(g, cb, Ci, dxg); /* rows < K: the ones survive */
            }
        }
}

/* dweight (and dbias) for output channels [c0, c1) of every group, every
 * sample in order.  Folded (dweight and dbias, and a col): into the
 * accumulator [C_out, K + 1], dy [rows, P] . [col; ones]^T [P, K + 1];
 * otherwise dweight [C_out, K] directly. */
static void dw_task(void *arg, int64_t task, int thread)
{
    const conv_job *j = arg;
    const rt_conv2d_geom *g = j->g;
    const int64_t Co = j->Co, Ci = j->Ci, K = j->K, P = j->P;
    int64_t c0, c1;
    rt_par_range(Co, j->ntasks, task, &c0, &c1);
    if (c0 >= c1) return;
    float *cb = j->pw ? NULL : col_of(j, thread);
    if (j->fold) ones_row(j, cb);
    const int64_t Kb = j->fold ? K + 1 : K;
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t gi = 0; gi < j->G; gi++) {
            const float *xg = j->x + (n * g->C_in + gi * Ci) * j->HW, *col = xg;
            if (!j->pw) {
                im2col(g, xg, Ci, cb);
                col = cb;
            }
            const int64_t r = gi * Co + c0;
            float *out = j->fold ? j->acc + r * Kb : j->dweight + r * K;
            rt_gemm(0, 1, c1 - c0, Kb, P, 1.0f, j->dy + (n * g->C_out + r) * P, P, col, P, 1.0f, out, Kb);
        }
}

/* dbias alone (not folded): each channel summed sample by sample. */
static void db_task(void *arg, int64_t task, int thread)
{
    const conv_job *j = arg;
    const rt_conv2d_geom *g = j->g;
    const int64_t P = j->P;
    int64_t c0, c1;
    rt_par_range(g->C_out, j->ntasks, task, &c0, &c1);
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t c = c0; c < c1; c++) {
            const float *restrict d = j->dy + (n * g->C_out + c) * P;
            float a[VW] = {0}, s = 0;
            int64_t q = 0;
            for (; q + VW <= P; q += VW)
                for (int v = 0; v < VW; v++) a[v] += d[q + v];
            for (; q < P; q++) s += d[q];
            for (int v = 0; v < VW; v++) s += a[v];
            j->dbias[c] += s;
        }
}

void rt_conv2d_backward(const rt_conv2d_geom *g, const float *x, const float *weight,
                        const float *dy, float *dx, float *dweight, float *dbias, float *ws)
{
    if (g->N < 1) return;
    conv_job j = job_of(g, ws);
    j.x = x, j.weight = weight, j.dy = dy, j.dx = dx, j.dweight = dweight, j.dbias = dbias;
    j.fold = dbias && dweight && !j.pw;
    const int64_t work = job_work(&j);
    if (dx) rt_par_run(j.parts, work, dx_task, &j);
    if (dbias && !j.fold) {
        j.ntasks = rt_par_threads(g->C_out, g->N * g->C_out * j.P);
        rt_par_run(j.ntasks, g->N * g->C_out * j.P, db_task, &j);
    }
    if (!dweight) return;
    if (j.fold) memset(j.acc, 0, sizeof(float) * (size_t)(g->C_out * (j.K + 1)));
    /* as many tasks as threads (each repeats the im2col), at most one per
     * col block */
    j.ntasks = rt_par_threads(j.Co, work);
    if (j.ntasks > j.parts) j.ntasks = j.parts;
    rt_par_run(j.ntasks, work, dw_task, &j);
    if (j.fold)
        for (int64_t co = 0; co < g->C_out; co++) {
            add_into(dweight + co * j.K, j.acc + co * (j.K + 1), j.K);
            dbias[co] += j.acc[co * (j.K + 1) + j.K];
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
