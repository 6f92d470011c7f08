/*
 * pool.c -- max, average and global average pooling over NCHW, and their
 * plain twins.  Window bounds, the max's tie and NaN rules and the average's
 * divisor follow PyTorch's CPU kernels (floor mode), so that checkpoints and
 * numbers carry over.
 */
#include "rt_conv.h"

#include <math.h>
#include <string.h>

#include "parallel.h"
#include "vec.h"

rt_status rt_pool2d_geom_check(rt_ctx *ctx, rt_pool2d_geom *g, const char *what)
{
    const int64_t big = INT64_C(1) << 40;
    struct {
        const char *name;
        int64_t v, min;
    } f[] = {{"batch N", g->N, 0},          {"channels", g->C, 1},
             {"height H", g->H, 1},         {"width W", g->W, 1},
             {"kernel height", g->KH, 1},   {"kernel width", g->KW, 1},
             {"stride height", g->stride_h, 1}, {"stride width", g->stride_w, 1},
             {"padding height", g->pad_h, 0},   {"padding width", g->pad_w, 0}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v < f[i].min || f[i].v > big)
            return rt_error(ctx, RT_STATUS_ERR_ARG, "%s: %s is %lld; it must be in [%lld, 2^40]",
                            what, f[i].name, (long long)f[i].v, (long long)f[i].min);
    if (g->pad_h > g->KH / 2 || g->pad_w > g->KW / 2)
        return rt_error(ctx, RT_STATUS_ERR_ARG,
                        "%s: padding %lldx%lld is more than half the kernel %lldx%lld; "
                        "a window could hold only padding (use padding <= kernel / 2)",
                        what, (long long)g->pad_h, (long long)g->pad_w, (long long)g->KH,
                        (long long)g->KW);
    int64_t nh = g->H + 2 * g->pad_h - g->KH, nw = g->W + 2 * g->pad_w - g->KW;
    if (nh < 0 || nw < 0)
        return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                        "%s: input %lldx%lld with padding %lldx%lld is smaller than the kernel "
                        "%lldx%lld, so the output would be empty (pad the input or use a "
                        "smaller kernel)",
                        what, (long long)g->H, (long long)g->W, (long long)g->pad_h,
                        (long long)g->pad_w, (long long)g->KH, (long long)g->KW);
    int64_t t;
    if (__builtin_mul_overflow(g->H, g->W, &t) || t > INT32_MAX ||
        __builtin_mul_overflow(t, g->N, &t) || __builtin_mul_overflow(t, g->C, &t) ||
        (uint64_t)t > SIZE_MAX / sizeof(float))
        return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                        "%s: input [%lld, %lld, %lld, %lld] is too large (a plane must hold "
                        "fewer than 2^31 elements)",
                        what, (long long)g->N, (long long)g->C, (long long)g->H, (long long)g->W);
    g->H_out = nh / g->stride_h + 1;
    g->W_out = nw / g->stride_w + 1;
    return RT_STATUS_OK;
}

/* ------------------------------------------------------------- max pool */

/* The common 2x2, stride 2, no padding, one output row from input rows r0
 * and r1 = r0 + W: the general loop's bookkeeping costs several times the
 * four compares.  Same order, same rules: start from the first element (a
 * -inf there stays chosen unless something is larger, as in the general
 * loop), then row-major.  Written for gcc -O2's vectoriser (blocks of VW,
 * ternaries, restrict): it takes the block loop, about 2x the scalar one. */
#define MAX2X2(o)                                                              \
    do {                                                                       \
        int64_t i_ = 2 * (o);                                                  \
        float va_ = r0[i_], vb_ = r0[i_ + 1], vc_ = r1[i_], vd_ = r1[i_ + 1];  \
        float m_ = va_;                                                        \
        int32_t b_ = 0;                                                        \
        int t_ = (vb_ > m_) | (vb_ != vb_);                                    \
        m_ = t_ ? vb_ : m_;                                                    \
        b_ = t_ ? 1 : b_;                                                      \
        t_ = (vc_ > m_) | (vc_ != vc_);                                        \
        m_ = t_ ? vc_ : m_;                                                    \
        b_ = t_ ? w32 : b_;                                                    \
        t_ = (vd_ > m_) | (vd_ != vd_);                                        \
        m_ = t_ ? vd_ : m_;                                                    \
        b_ = t_ ? w32 + 1 : b_;                                                \
        y[o] = m_;                                                             \
        a[o] = base + (int32_t)i_ + b_;                                        \
    } while (0)

static void maxpool_2x2_row(const float *restrict r0, const float *restrict r1, int32_t w32,
                            int64_t Wo, float *restrict y, int32_t *restrict a, int32_t base)
{
    int64_t ow = 0;
    for (; ow + VW <= Wo; ow += VW)
        for (int k = 0; k < VW; k++) MAX2X2(ow + k);
    for (; ow < Wo; ow++) MAX2X2(ow);
}
#undef MAX2X2

/* argmax may be NULL: the row kernel then writes indices into idle, a
 * row's worth on the stack (rows longer than that take the general loop). */
#define IDLE_MAX 1024

static int maxpool_2x2(const rt_pool2d_geom *g, const float *x, float *y, int32_t *argmax)
{
    const int64_t H = g->H, W = g->W, Ho = g->H_out, Wo = g->W_out;
    int32_t idle[IDLE_MAX];
    if (!argmax && Wo > IDLE_MAX) return 0;
    for (int64_t pl = 0; pl < g->N * g->C; pl++) {
        const float *xp = x + pl * H * W;
        for (int64_t oh = 0; oh < Ho; oh++) {
            const float *r0 = xp + 2 * oh * W;
            int64_t o = pl * Ho * Wo + oh * Wo;
            maxpool_2x2_row(r0, r0 + W, (int32_t)W, Wo, y + o, argmax ? argmax + o : idle,
                            (int32_t)(2 * oh * W));
        }
    }
    return 1;
}

static void maxpool_forward(const rt_pool2d_geom *g, const float *x, float *y, int32_t *argmax)
{
    const int64_t H = g->H, W = g->W, Ho = g->H_out, Wo = g->W_out;
    if (g->KH == 2 && g->KW == 2 && g->stride_h == 2 && g->stride_w == 2 && g->pad_h == 0 &&
        g->pad_w == 0 && maxpool_2x2(g, x, y, argmax))
        return;
    for (int64_t pl = 0; pl < g->N * g->C; pl++) {
        const float *xp = x + pl * H * W;
        float *yp = y + pl * Ho * Wo;
        int32_t *ap = argmax ? argmax + pl * Ho * Wo : NULL;
        for (int64_t oh = 0; oh < Ho; oh++) {
            int64_t h0 = oh * g->stride_h - g->pad_h, h1 = h0 + g->KH;
            if (h0 < 0) h0 = 0;
            if (h1 > H) h1 = H;
            for (int64_t ow = 0; ow < Wo; ow++) {
                int64_t w0 = ow * g->stride_w - g->pad_w, w1 = w0 + g->KW;
                if (w0 < 0) w0 = 0;
                if (w1 > W) w1 = W;
                int64_t best = h0 * W + w0;
                float m = -INFINITY;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) {
                        float v = xp[ih * W + iw];
                        if (v > m || v != v) {
                            m = v;
                            best = ih * W + iw;
                        }
                    }
                yp[oh * Wo + ow] = m;
                if (ap) ap[oh * Wo + ow] = (int32_t)best;
            }
        }
    }
}

static void maxpool_backward(const rt_pool2d_geom *g, const float *dy, const int32_t *argmax,
                             float *dx)
{
    const int64_t HW = g->H * g->W, P = g->H_out * g->W_out;
    for (int64_t pl = 0; pl < g->N * g->C; pl++) {
        const float *d = dy + pl * P;
        const int32_t *a = argmax + pl * P;
        float *o = dx + pl * HW;
        for (int64_t i = 0; i < P; i++) o[a[i]] += d[i];
    }
}

/* The twin's window: every padded position, padding read as -inf. */
static int64_t ref_argmax(const rt_pool2d_geom *g, const float *xp, int64_t oh, int64_t ow,
                          float *out)
{
    int64_t best = -1;
    float m = -INFINITY;
    for (int64_t kh = 0; kh < g->KH; kh++)
        for (int64_t kw = 0; kw < g->KW; kw++) {
            int64_t ih = oh * g->stride_h - g->pad_h + kh, iw = ow * g->stride_w - g->pad_w + kw;
            if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
            float v = xp[ih * g->W + iw];
            if (best < 0) best = ih * g->W + iw; /* the first real position */
            if (isnan(v) || v > m) {
                m = v;
                best = ih * g->W + iw;
            }
        }
    *out = m;
    return best;
}

void rt_maxpool2d_forward_ref(const rt_pool2d_geom *g, const float *x, float *y,
                              int32_t *argmax)
{
    const int64_t P = g->H_out * g->W_out;
    for (int64_t pl = 0; pl < g->N * g->C; pl++)
        for (int64_t oh = 0; oh < g->H_out; oh++)
            for (int64_t ow = 0; ow < g->W_out; ow++) {
                float m;
                int64_t b = ref_argmax(g, x + pl * g->H * g->W, oh, ow, &m);
                y[pl * P + oh * g->W_out + ow] = m;
                if (argmax) argmax[pl * P + oh * g->W_out + ow] = (int32_t)b;
            }
}

void rt_maxpool2d_backward_ref(const rt_pool2d_geom *g, const float *x, const float *dy,
                               float *dx)
{
    const int64_t P = g->H_out * g->W_out;
    for (int64_t pl = 0; pl < g->N * g->C; pl++)
        for (int64_t oh = 0; oh < g->H_out; oh++)
            for (int64_t ow = 0; ow < g->W_out; ow++) {
                float m;
                int64_t b = ref_argmax(g, x + pl * g->H * g->W, oh, ow, &m);
                dx[pl * g->H * g->W + b] += dy[pl * P + oh * g->W_out + ow];
            }
}

/* ------------------------------------------------------------ avg pool */

/* PyTorch's window: clipped to the padded input for the divisor when
 * padding counts, then to the input for the sum. */
typedef struct win {
    int64_t h0, h1, w0, w1;
    float inv; /* 1 / divisor */
} win;

static win window(const rt_pool2d_geom *g, int cip, int64_t oh, int64_t ow)
{
    win r;
    r.h0 = oh * g->stride_h - g->pad_h;
    r.w0 = ow * g->stride_w - g->pad_w;
    r.h1 = r.h0 + g->KH;
    r.w1 = r.w0 + g->KW;
    if (r.h1 > g->H + g->pad_h) r.h1 = g->H + g->pad_h;
    if (r.w1 > g->W + g->pad_w) r.w1 = g->W + g->pad_w;
    int64_t padded = (r.h1 - r.h0) * (r.w1 - r.w0);
    if (r.h0 < 0) r.h0 = 0;
    if (r.w0 < 0) r.w0 = 0;
    if (r.h1 > g->H) r.h1 = g->H;
    if (r.w1 > g->W) r.w1 = g->W;
    int64_t inside = (r.h1 - r.h0) * (r.w1 - r.w0);
    r.inv = 1.0f / (float)(cip ? padded : inside);
    return r;
}

static void avgpool_forward(const rt_pool2d_geom *g, int count_include_pad, const float *x,
                            float *y)
{
    const int64_t H = g->H, W = g->W, Ho = g->H_out, Wo = g->W_out;
    for (int64_t oh = 0; oh < Ho; oh++)
        for (int64_t ow = 0; ow < Wo; ow++) {
            win r = window(g, count_include_pad, oh, ow);
            for (int64_t pl = 0; pl < g->N * g->C; pl++) {
                const float *xp = x + pl * H * W;
                float s = 0;
                for (int64_t ih = r.h0; ih < r.h1; ih++)
                    for (int64_t iw = r.w0; iw < r.w1; iw++) s += xp[ih * W + iw];
                y[pl * Ho * Wo + oh * Wo + ow] = s * r.inv;
            }
        }
}

static void avgpool_backward(const rt_pool2d_geom *g, int count_include_pad, const float *dy,
                             float *dx)
{
    const int64_t H = g->H, W = g->W, Ho = g->H_out, Wo = g->W_out;
    for (int64_t oh = 0; oh < Ho; oh++)
        for (int64_t ow = 0; ow < Wo; ow++) {
            win r = window(g, count_include_pad, oh, ow);
            for (int64_t pl = 0; pl < g->N * g->C; pl++) {
                float *dp = dx + pl * H * W;
                float v = dy[pl * Ho * Wo + oh * Wo + ow] * r.inv;
                for (int64_t ih = r.h0; ih < r.h1; ih++)
                    for (int64_t iw = r.w0; iw < r.w1; iw++) dp[ih * W + iw] += v;
            }
        }
}

/* The twin counts the divisor position by position: a padded position
 * counts when count_include_pad, a real one always. */
static double ref_avg_divisor(const rt_pool2d_geom *g, int cip, int64_t oh, int64_t ow)
{
    int64_t cnt = 0;
    for (int64_t kh = 0; kh < g->KH; kh++)
        for (int64_t kw = 0; kw < g->KW; kw++) {
            int64_t ih = oh * g->stride_h - g->pad_h + kh, iw = ow * g->stride_w - g->pad_w + kw;
            int in_input = ih >= 0 && ih < g->H && iw >= 0 && iw < g->W;
            int in_padded = ih < g->H + g->pad_h && iw < g->W + g->pad_w;
            cnt += in_input || (cip && in_padded);
        }
    return (double)cnt;
}

void rt_avgpool2d_forward_ref(const rt_pool2d_geom *g, int count_include_pad,
                              const float *x, float *y)
{
    for (int64_t pl = 0; pl < g->N * g->C; pl++)
        for (int64_t oh = 0; oh < g->H_out; oh++)
            for (int64_t ow = 0; ow < g->W_out; ow++) {
                double s = 0;
                for (int64_t kh = 0; kh < g->KH; kh++)
                    for (int64_t kw = 0; kw < g->KW; kw++) {
                        int64_t ih = oh * g->stride_h - g->pad_h + kh;
                        int64_t iw = ow * g->stride_w - g->pad_w + kw;
                        if (ih >= 0 && ih < g->H && iw >= 0 && iw < g->W)
                            s += x[(pl * g->H + ih) * g->W + iw];
                    }
                y[(pl * g->H_out + oh) * g->W_out + ow] =
                    (float)(s / ref_avg_divisor(g, count_include_pad, oh, ow));
            }
}

void rt_avgpool2d_backward_ref(const rt_pool2d_geom *g, int count_include_pad,
                               const float *dy, float *dx)
{
    for (int64_t pl = 0; pl < g->N * g->C; pl++)
        for (int64_t oh = 0; oh < g->H_out; oh++)
            for (int64_t ow = 0; ow < g->W_out; ow++) {
                double v = dy[(pl * g->H_out + oh) * g->W_out + ow] /
                           ref_avg_divisor(g, count_include_pad, oh, ow);
                for (int64_t kh = 0; kh < g->KH; kh++)
                    for (int64_t kw = 0; kw < g->KW; kw++) {
                        int64_t ih = oh * g->stride_h - g->pad_h + kh;
                        int64_t iw = ow * g->stride_w - g->pad_w + kw;
                        if (ih >= 0 && ih < g->H && iw >= 0 && iw < g->W) {
                            float *d = dx + (pl * g->H + ih) * g->W + iw;
                            *d = (float)(*d + v);
                        }
                    }
            }
}

/* ------------------------------------------------- global average pool */

static void gap_forward(const float *x, int64_t N, int64_t C, int64_t HW, float *y)
{
    float inv = 1.0f / (float)HW;
    for (int64_t pl = 0; pl < N * C; pl++) {
        const float *restrict p = x + pl * HW;
        float acc[VW] = {0}, s = 0;
        int64_t j = 0;
        for (; j + VW <= HW; j += VW)
            for (int q = 0; q < VW; q++) acc[q] += p[j + q];
        for (; j < HW; j++) s += p[j];
        for (int q = 0; q < VW; q++) s += acc[q];
        y[pl] = s * inv;
    }
}

static void gap_backward(const float *dy, int64_t N, int64_t C, int64_t HW, float *dx)
{
    float inv = 1.0f / (float)HW;
    for (int64_t pl = 0; pl < N * C; pl++) {
        float *restrict p = dx + pl * HW;
        float v = dy[pl] * inv;
        VLOOP(j, HW, p[j] += v;);
    }
}

void rt_global_avgpool_forward_ref(const float *x, int64_t N, int64_t C, int64_t HW,
                                   float *y)
{
    for (int64_t pl = 0; pl < N * C; pl++) {
        double s = 0;
        for (int64_t j = 0; j < HW; j++) s += x[pl * HW + j];
        y[pl] = (float)(s / (double)HW);
    }
}

void rt_global_avgpool_backward_ref(const float *dy, int64_t N, int64_t C, int64_t HW,
                                    float *dx)
{
    for (int64_t pl = 0; pl < N * C; pl++)
        for (int64_t j = 0; j < HW; j++)
            dx[pl * HW + j] = (float)(dx[pl * HW + j] + (double)dy[pl] / (double)HW);
}

/* ------------------------------------------------------ the dispatch */

/* Every kernel above treats the N C planes independently, each in the
 * same order whatever the other planes do, so the planes are split into
 * ranges, one per thread (parallel.h), with the same results as one
 * thread.  A range is the kernel on a geometry of N = 1, C = its planes. */
typedef enum pool_op { MAX_FWD, MAX_BWD, MAX_BWD_SET, AVG_FWD, AVG_BWD, GAP_FWD, GAP_BWD } pool_op;

typedef struct pool_job {
    pool_op op;
    rt_pool2d_geom g; /* GAP: H = HW, W = 1, H_out = W_out = 1 */
    int cip;
    const float *x, *dy;
    float *y, *dx;
    int32_t *argmax;
    const int32_t *argmax_in;
    int64_t ntasks;
} pool_job;

static void pool_task(void *arg, int64_t task, int thread)
{
    const pool_job *j = arg;
    int64_t p0, p1;
    rt_par_range(j->g.N * j->g.C, j->ntasks, task, &p0, &p1);
    rt_pool2d_geom g = j->g;
    g.N = 1;
    g.C = p1 - p0;
    const int64_t in = p0 * g.H * g.W, out = p0 * g.H_out * g.W_out;
    switch (j->op) {
    case MAX_FWD: maxpool_forward(&g, j->x + in, j->y + out, j->argmax ? j->argmax + out : NULL); break;
    case MAX_BWD: maxpool_backward(&g, j->dy + out, j->argmax_in + out, j->dx + in); break;
    case MAX_BWD_SET:
        /* plane by plane, zeroed while it is in cache, then routed */
        for (int64_t p = 0; p < g.C; p++) {
            rt_pool2d_geom one = g;
            one.C = 1;
            memset(j->dx + in + p * g.H * g.W, 0, sizeof(float) * (size_t)(g.H * g.W));
            maxpool_backward(&one, j->dy + out + p * g.H_out * g.W_out, j->argmax_in + out + p * g.H_out * g.W_out,
                             j->dx + in + p * g.H * g.W);
        }
        break;
    case AVG_FWD: avgpool_forward(&g, j->cip, j->x + in, j->y + out); break;
    case AVG_BWD: avgpool_backward(&g, j->cip, j->dy + out, j->dx + in); break;
    case GAP_FWD: gap_forward(j->x + in, 1, g.C, g.H, j->y + out); break;
    case GAP_BWD: gap_backward(j->dy + out, 1, g.C, g.H, j->dx + in); break;
    }
}

static void pool_run(pool_job *j)
{
    int64_t planes = j->g.N * j->g.C, work = planes * j->g.H * j->g.W;
    j->ntasks = rt_par_threads(planes, work);
    rt_par_run(j->ntasks, work, pool_task, j);
}

void rt_maxpool2d_forward(const rt_pool2d_geom *g, const float *x, float *y, int32_t *argmax)
{
    pool_job j = {.op = MAX_FWD, .g = *g, .x = x, .y = y, .argmax = argmax};
    pool_run(&j);
}

void rt_maxpool2d_backward(const rt_pool2d_geom *g, const float *dy, const int32_t *argmax,
                           float *dx)
{
    pool_job j = {.op = MAX_BWD, .g = *g, .dy = dy, .argmax_in = argmax, .dx = dx};
    pool_run(&j);
}

void rt_maxpool2d_backward_set(const rt_pool2d_geom *g, const float *dy, const int32_t *argmax,
                               float *dx)
{
    pool_job j = {.op = MAX_BWD_SET, .g = *g, .dy = dy, .argmax_in = argmax, .dx = dx};
    pool_run(&j);
}

void rt_avgpool2d_forward(const rt_pool2d_geom *g, int count_include_pad, const float *x,
                          float *y)
{
    pool_job j = {.op = AVG_FWD, .g = *g, .cip = count_include_pad, .x = x, .y = y};
    pool_run(&j);
}

void rt_avgpool2d_backward(const rt_pool2d_geom *g, int count_include_pad, const float *dy,
                           float *dx)
{
    pool_job j = {.op = AVG_BWD, .g = *g, .cip = count_include_pad, .dy = dy, .dx = dx};
    pool_run(&j);
}

static rt_pool2d_geom gap_geom(int64_t N, int64_t C, int64_t HW)
{
    return (rt_pool2d_geom){.N = N, .C = C, .H = HW, .W = 1, .H_out = 1, .W_out = 1};
}

void rt_global_avgpool_forward(const float *x, int64_t N, int64_t C, int64_t HW, float *y)
{
    pool_job j = {.op = GAP_FWD, .g = gap_geom(N, C, HW), .x = x, .y = y};
    pool_run(&j);
}

void rt_global_avgpool_backward(const float *dy, int64_t N, int64_t C, int64_t HW, float *dx)
{
    pool_job j = {.op = GAP_BWD, .g = gap_geom(N, C, HW), .dy = dy, .dx = dx};
    pool_run(&j);
}
