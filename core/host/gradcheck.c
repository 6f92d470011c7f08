/*
 * gradcheck.c -- finite-difference gradient checks of loss and student
 * plugins (Torch7's nn.Jacobian, llm.c's check against a reference).
 *
 * Everything goes through the checked calls (rt_loss_forward/backward,
 * rt_student_forward/backward, rt_student_zero_grad), so a plugin is
 * checked exactly as training would call it.  The measure, the stencil and
 * the kink rule are stated in retort.h; the reasons are here.
 *
 * Why five points: the forward runs in float32, so the rounding noise of
 * a difference quotient is ~1e-7 |f| / h.  A fourth-order stencil lets h be
 * ~1e-2 (noise ~1e-5 |f|) with a truncation error of ~h^4 f^(5), far below
 * the 1e-3 the tests ask for; the plain central difference would need a
 * smaller h and meet the noise.
 *
 * Why several steps and sides: relu, max and friends are not
 * differentiable everywhere; when a kink sits inside the stencil no
 * difference quotient matches the backward.  Kinks are found from the
 * forward alone (see is_kink) and a one-sided stencil or a smaller step
 * avoids them, so the search can never make a wrong backward look right:
 * it only has to find one honest quotient.  Skips are counted.
 */
#include <cJSON.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "retort.h"

#define MAX_SAMPLES 20  /* entries checked per parameter and of the input */

/* ------------------------------------------------------------ the measure */

/* Relative error of analytic a vs numerical n on a tensor whose largest
 * analytic entry is scale (see retort.h). */
static double rel_err(double a, double n, double scale)
{
    double floor = fmax(0.1 * scale, 1e-6);
    double d = fabs(a - n);
    if (d == 0) return 0;
    return d / fmax(fabs(a) + fabs(n), floor);
}

static void note(rt_gradcheck_result *res, const char *input, double err, const char *fmt, ...) RT_PRINTF(4, 5);

/* Records one comparison of `input`: its own worst, and the overall worst
 * with its place name. */
static void note(rt_gradcheck_result *res, const char *input, double err, const char *fmt, ...)
{
    int k = 0;
    while (k < res->ninputs && strcmp(res->inputs[k].name, input)) k++;
    if (k == res->ninputs) {
        if (k == RT_GRADCHECK_INPUTS) k--; /* full: fold into the last */
        else {
            res->ninputs++;
            snprintf(res->inputs[k].name, sizeof res->inputs[k].name, "%s", input);
            res->inputs[k].max_rel_err = 0;
            res->inputs[k].checked = 0;
        }
    }
    res->inputs[k].checked++;
    if (!(err <= res->inputs[k].max_rel_err)) res->inputs[k].max_rel_err = isnan(err) ? INFINITY : err;
    if (!(err <= res->max_rel_err)) { /* NaN counts as worse than anything */
        res->max_rel_err = isnan(err) ? INFINITY : err;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(res->worst, sizeof res->worst, fmt, ap);
        va_end(ap);
    }
}

static double max_abs(const float *g, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)g[i]));
    return m;
}

/* ----------------------------------------------------- the difference rule */

/* The function being differentiated: sets *v to f with the current
 * perturbation in place.  Errors are in ctx. */
typedef rt_status (*eval_fn)(void *ud, rt_ctx *ctx, double *v);

/* h for a float entry x: eps rounded down to a power of two, and at least
 * min_ulps ulps of x so that the offsets are not all rounding. */
static double step_for(double x, double eps, int min_ulps)
{
    int e;
    frexp(eps, &e);
    double h = ldexp(1.0, e - 1); /* the power of two <= eps */
    if (x != 0 && isfinite(x)) {
        frexp(x, &e);
        h = fmax(h, min_ulps * ldexp(1.0, e - 24)); /* float32: 24-bit significand */
    }
    return h;
}

/* True when the slopes over the five points jump: for a smooth f the four
 * one-sided slopes s1..s4 lie on a near-straight line (their second
 * differences are ~h^2 f'''' plus rounding noise); a kink puts a step into
 * one of them.  Deliberately loose (a step of a quarter of the slopes'
 * size): a small kink that slips through is handled by the retry at a
 * smaller step. */
static int is_kink(const double f[5], double h)
{
    double s[4];
    for (int i = 0; i < 4; i++) s[i] = (f[i + 1] - f[i]) / h;
    double d1 = s[1] - s[0], d2 = s[2] - s[1], d3 = s[3] - s[2];
    double size = fabs(s[0]) + fabs(s[1]) + fabs(s[2]) + fabs(s[3]);
    double noise = 64 * FLT_EPSILON * (fabs(f[0]) + fabs(f[2]) + fabs(f[4])) / h;
    double bend = fmax(fabs(d2 - d1), fabs(d3 - d2));
    return bend > 0.25 * size + noise;
}

/* The stencils: offsets (in steps) and weights (over 12h), all of fourth
 * order.  The one-sided ones reach a derivative next to a kink from its
 * smooth side at a step the central one could not use. */
static const struct {
    int off[5];
    double w[5];
} stencils[3] = {
    {{-2, -1, 0, 1, 2}, {1, -8, 0, 8, -1}},      /* central */
    {{0, 1, 2, 3, 4}, {-25, 48, -36, 16, -3}},   /* forward */
    {{0, -1, -2, -3, -4}, {25, -48, 36, -16, 3}} /* backward */
};

/* One difference quotient of eval wrt *x with stencil s at step eps (see
 * retort.h); *x is restored.  *kink is set when the stencil straddles a
 * kink. */
static rt_status quotient(eval_fn eval, void *ud, rt_ctx *ctx, float *x, double eps, int min_ulps, int s,
                          double *d, int *kink)
{
    float x0 = *x;
    double h = step_for(x0, eps, min_ulps);
    float pts[5];
    int exact = 1;
    for (int k = 0; k < 5; k++) {
        pts[k] = (float)((double)x0 + stencils[s].off[k] * h);
        if ((double)pts[k] - (double)x0 != stencils[s].off[k] * h) exact = 0;
    }
    double f[5];
    for (int k = 0; k < 5; k++) {
        *x = pts[k];
        rt_status st = eval(ud, ctx, &f[k]);
        if (st) {
            *x = x0;
            return st;
        }
    }
    *x = x0;
    *kink = 0;
    if (!exact) { /* a two-point difference over the offsets really used */
        if (pts[4] == pts[0]) return *kink = 1, RT_STATUS_OK; /* no step at all: cannot tell */
        *d = (f[4] - f[0]) / ((double)pts[4] - (double)pts[0]);
        return RT_STATUS_OK;
    }
    *kink = is_kink(f, h);
    double q = 0;
    for (int k = 0; k < 5; k++) q += stencils[s].w[k] * f[k];
    *d = q / (12 * h);
    return RT_STATUS_OK;
}

/* The steps tried, as multiples of eps, and the least ulps of x each may
 * be.  Larger steps shrink the rounding noise (~ulp(f) / h) where the
 * analytic gradient is tiny next to the function's internals (f = T^2 KL
 * at T = 1e3); smaller ones step past kinks and functions that vary on a
 * scale below eps (a softmax at T = 1e-3). */
static const struct {
    double mult;
    int min_ulps;
} steps[] = {{1, 16}, {4, 16}, {16, 16}, {0.25, 4}, {1.0 / 16, 2}, {1.0 / 64, 2}, {1.0 / 256, 2}};

/* Compares analytic a with the numerical derivative of eval wrt *x.  Tries
 * each step, each with the central then the two one-sided stencils; the
 * first stencil that does not straddle a kink and matches to 1e-4 ends the
 * search, otherwise the best match counts.  A correct backward matches at
 * some step from some side; a wrong one, by more than the tolerance, is
 * wrong at all of them.  *skip when x is not finite or every stencil
 * straddles a kink.  *err and *d: the best match's error (the measure in
 * retort.h) and numerical value. */
static rt_status numeric(eval_fn eval, void *ud, rt_ctx *ctx, float *x, double eps, double a, double scale,
                         double *d, double *err, int *skip)
{
    *skip = 1;
    *err = INFINITY;
    *d = 0;
    if (!isfinite(*x)) return RT_STATUS_OK;
    for (size_t k = 0; k < sizeof steps / sizeof *steps; k++)
        for (int s = 0; s < 3; s++) {
            double q;
            int kink;
            rt_status st = quotient(eval, ud, ctx, x, eps * steps[k].mult, steps[k].min_ulps, s, &q, &kink);
            if (st) return st;
            if (kink) continue;
            double e = rel_err(a, q, scale);
            if (*skip || e < *err) *err = e, *d = q;
            *skip = 0;
            if (e <= 1e-4) return RT_STATUS_OK;
        }
    return RT_STATUS_OK;
}

/* ------------------------------------------------------------------ losses */

typedef struct loss_ud {
    rt_instance *loss;
    const rt_loss_in *in;
} loss_ud;

static rt_status loss_eval(void *ud, rt_ctx *ctx, double *v)
{
    loss_ud *u = ud;
    rt_status st = rt_loss_forward(u->loss, ctx, u->in, v);
    if (!st && !isfinite(*v))
        st = rt_error(ctx, RT_STATUS_ERR_NUMERIC, "loss '%s': forward gave %g near the check point",
                      rt_instance_desc(u->loss)->name, *v);
    return st;
}

/* "[i, j]" of a flat index into an [N, C] tensor. */
static void rc(int64_t flat, int64_t C, char *buf, size_t len)
{
    snprintf(buf, len, "[%lld, %lld]", (long long)(flat / C), (long long)(flat % C));
}

static void reset_result(rt_gradcheck_result *res)
{
    memset(res, 0, sizeof *res);
    snprintf(res->worst, sizeof res->worst, "(nothing)");
}

static int sample(rt_rng *r, int64_t n, int64_t *idx);

/* Checks the gradient of one tensor the loss reads (a feature or one of
 * the loss's own parameters), at up to MAX_SAMPLES entries. */
static rt_status check_other(loss_ud *ud, rt_ctx *ctx, const char *what, rt_tensor *val, const rt_tensor *grad,
                             double eps, rt_rng *r, rt_gradcheck_result *res)
{
    int64_t idx[MAX_SAMPLES];
    double sc = max_abs(rt_f32(grad), rt_numel(grad));
    int m = sample(r, rt_numel(val), idx);
    rt_status st = RT_STATUS_OK;
    for (int j = 0; j < m && !st; j++) {
        double d, e, a = rt_f32(grad)[idx[j]];
        int skip;
        st = numeric(loss_eval, ud, ctx, &rt_f32(val)[idx[j]], eps, a, sc, &d, &e, &skip);
        if (st || skip) {
            res->skipped += !st;
            continue;
        }
        res->checked++;
        note(res, what, e, "%s[%lld]: backward %.6g, numerical %.6g", what, (long long)idx[j], a, d);
    }
    return st;
}

rt_status rt_gradcheck_loss_at(rt_instance *loss, rt_ctx *ctx, const rt_loss_in *in0, double eps,
                               rt_gradcheck_result *res)
{
    reset_result(res);
    if (eps <= 0) eps = 1e-2;
    const char *name = rt_instance_desc(loss)->name;
    if (!in0->student || in0->student->ndim < 2 || in0->student->dtype != RT_DTYPE_F32)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "gradcheck of loss '%s': student logits must be [N, ..., C] f32", name);
    int nf = in0->nfeatures > 0 && in0->features ? in0->nfeatures : 0;
    rt_feature_req req[RT_GRADCHECK_INPUTS];
    if (nf > RT_GRADCHECK_INPUTS || rt_loss_features(loss, req, RT_GRADCHECK_INPUTS) != nf)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "gradcheck of loss '%s': %d features given, the loss declares %d",
                        name, nf, rt_loss_features(loss, NULL, 0));
    rt_tensor *s = rt_tensor_clone(ctx, in0->student);
    rt_tensor *g = s ? rt_tensor_new(ctx, RT_DTYPE_F32, s->ndim, s->shape) : NULL;
    rt_tensor *g2 = g ? rt_tensor_new(ctx, RT_DTYPE_F32, s->ndim, s->shape) : NULL;
    /* student features: copies to perturb, and their gradient slots */
    rt_tensor *fv[RT_GRADCHECK_INPUTS] = {0}, *fg[RT_GRADCHECK_INPUTS] = {0};
    rt_status st = g2 ? RT_STATUS_OK : rt_ctx_status(ctx);
    for (int k = 0; k < nf && !st; k++) {
        if (req[k].from != RT_FROM_STUDENT) continue;
        if (!(fv[k] = rt_tensor_clone(ctx, in0->features[k])) ||
            !(fg[k] = rt_tensor_new(ctx, RT_DTYPE_F32, fv[k]->ndim, fv[k]->shape)))
            st = rt_ctx_status(ctx);
    }
    rt_loss_in in = *in0;
    const rt_tensor *feats[RT_GRADCHECK_INPUTS];
    for (int k = 0; k < nf; k++) feats[k] = fv[k] ? fv[k] : in0->features[k];
    in.student = s;
    in.features = nf ? feats : NULL;
    in.nfeatures = nf;
    in.feature_grads = nf ? fg : NULL;
    int64_t n = s ? rt_numel(s) : 0, C = s ? s->shape[s->ndim - 1] : 1;
    float *gs = g ? rt_f32(g) : NULL, *g2s = g2 ? rt_f32(g2) : NULL, *xs = s ? rt_f32(s) : NULL;
    char where[48];
    double v;
    if (!st) st = rt_loss_forward(loss, ctx, &in, &v); /* binds the loss: its parameters exist after */
    if (!st && !isfinite(v)) st = rt_error(ctx, RT_STATUS_ERR_NUMERIC, "loss '%s': forward gave %g", name, v);
    int np = 0;
    rt_param *p = st ? NULL : rt_instance_params_all(loss, ctx, &np);
    if (!st && !p) st = rt_ctx_status(ctx);
    rt_loss_zero_grad(loss);
    if (!st) st = rt_loss_backward(loss, ctx, &in, 1.0f, g);
    rt_tensor **pg = calloc((size_t)np + 1, sizeof *pg); /* the parameter gradients of that backward */
    if (!st && !pg) st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "gradcheck: out of memory");
    if (!st) np = rt_instance_params(loss, p, np);
    for (int k = 0; k < np && !st; k++)
        if (p[k].grad && p[k].role == RT_ROLE_TRAINABLE && !(pg[k] = rt_tensor_clone(ctx, p[k].grad)))
            st = rt_ctx_status(ctx);
    for (int64_t i = 0; i < n && !st; i++)
        if (!isfinite(gs[i])) {
            rc(i, C, where, sizeof where);
            st = rt_error(ctx, RT_STATUS_ERR_NUMERIC, "loss '%s': backward gave %g at student logits%s", name,
                          (double)gs[i], where);
        }
    /* Accumulation: two half steps onto the same buffer (the feature
     * slots take the second backward's share too: not compared). */
    if (!st) st = rt_loss_backward(loss, ctx, &in, 0.5f, g2);
    if (!st) st = rt_loss_backward(loss, ctx, &in, 0.5f, g2);
    double scale = gs ? max_abs(gs, n) : 0;
    for (int64_t i = 0; i < n && !st; i++) {
        rc(i, C, where, sizeof where);
        note(res, "accumulate", rel_err(gs[i], g2s[i], scale), "accumulate: 2 x 0.5 vs 1 at student logits%s", where);
    }
    /* The feature gradients of the first backward: the slots now hold
     * 1 + 0.5 + 0.5 of it. */
    for (int k = 0; k < nf && !st; k++)
        for (int64_t i = 0; fg[k] && i < rt_numel(fg[k]); i++) rt_f32(fg[k])[i] *= 0.5f;
    loss_ud ud = {loss, &in};
    for (int64_t i = 0; i < n && !st; i++) {
        double d, e;
        int skip;
        st = numeric(loss_eval, &ud, ctx, &xs[i], eps, gs[i], scale, &d, &e, &skip);
        if (st || skip) {
            res->skipped += !st;
            continue;
        }
        res->checked++;
        rc(i, C, where, sizeof where);
        note(res, "student logits", e, "student logits%s: backward %.6g, numerical %.6g", where, (double)gs[i], d);
    }
    rt_rng r;
    rt_rng_seed(&r, 0x9e37, 5);
    for (int k = 0; k < nf && !st; k++) {
        char what[64];
        snprintf(what, sizeof what, "feature %.50s", req[k].name ? req[k].name : "?");
        if (fg[k]) st = check_other(&ud, ctx, what, fv[k], fg[k], eps, &r, res);
    }
    for (int k = 0; k < np && !st; k++)
        if (pg[k]) st = check_other(&ud, ctx, p[k].name, p[k].value, pg[k], eps, &r, res);
    for (int k = 0; k < np && pg; k++) rt_tensor_release(pg[k]);
    free(pg);
    free(p);
    for (int k = 0; k < nf; k++) {
        rt_tensor_release(fv[k]);
        rt_tensor_release(fg[k]);
    }
    rt_tensor_release(s);
    rt_tensor_release(g);
    rt_tensor_release(g2);
    return st;
}

rt_status rt_gradcheck_loss(rt_instance *loss, rt_ctx *ctx, int64_t N, int64_t C, uint64_t seed, double eps,
                            rt_gradcheck_result *res)
{
    reset_result(res);
    if (N < 1 || C < 1)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "gradcheck: N = %lld and C = %lld must be >= 1", (long long)N,
                        (long long)C);
    unsigned needs = rt_instance_desc(loss)->loss ? rt_instance_desc(loss)->loss->needs : 0;
    int64_t shape[2] = {N, C};
    rt_tensor *s = rt_tensor_new(ctx, RT_DTYPE_F32, 2, shape);
    rt_tensor *t = s && (needs & RT_NEEDS_TEACHER) ? rt_tensor_new(ctx, RT_DTYPE_F32, 2, shape) : NULL;
    rt_tensor *y = s && (needs & RT_NEEDS_TARGET) ? rt_tensor_new(ctx, RT_DTYPE_I32, 1, shape) : NULL;
    /* declared features: [N, C] f32 ~ N(0,1) from stream 4 (their shape is
     * the loss's business; a bind sizes its parameters from them) */
    int nf = rt_loss_features(loss, NULL, 0);
    rt_tensor *f[RT_GRADCHECK_INPUTS] = {0};
    rt_status st = RT_STATUS_OK;
    if (nf > RT_GRADCHECK_INPUTS) st = rt_error(ctx, RT_STATUS_ERR_ARG, "gradcheck: %d features is too many", nf);
    if (!st && (!s || ((needs & RT_NEEDS_TEACHER) && !t) || ((needs & RT_NEEDS_TARGET) && !y))) st = rt_ctx_status(ctx);
    for (int k = 0; k < nf && !st; k++)
        if (!(f[k] = rt_tensor_new(ctx, RT_DTYPE_F32, 2, shape))) st = rt_ctx_status(ctx);
    if (!st) {
        rt_rng r;
        rt_rng_seed(&r, seed, 0);
        for (int64_t i = 0; i < N * C; i++) rt_f32(s)[i] = 2 * rt_rng_normal(&r);
        rt_rng_seed(&r, seed, 1);
        for (int64_t i = 0; t && i < N * C; i++) rt_f32(t)[i] = 2 * rt_rng_normal(&r);
        rt_rng_seed(&r, seed, 2);
        for (int64_t i = 0; y && i < N; i++) rt_i32(y)[i] = (int32_t)rt_rng_below(&r, (uint64_t)C);
        rt_rng_seed(&r, seed, 4);
        for (int k = 0; k < nf; k++)
            for (int64_t i = 0; i < N * C; i++) rt_f32(f[k])[i] = rt_rng_normal(&r);
        rt_signal sig = {.logits = t};
        rt_loss_in in = {.student = s, .teacher = t ? &sig : NULL, .target = y,
                         .features = nf ? (const rt_tensor *const *)f : NULL, .nfeatures = nf};
        st = rt_gradcheck_loss_at(loss, ctx, &in, eps, res);
    }
    for (int k = 0; k < nf; k++) rt_tensor_release(f[k]);
    rt_tensor_release(s);
    rt_tensor_release(t);
    rt_tensor_release(y);
    return st;
}

/* ---------------------------------------------------------------- students */

typedef struct student_ud {
    rt_instance *net;
    rt_tensor *x;
    const float *w; /* [numel of the output] */
    int64_t nout;
} student_ud;

/* f = sum(w * forward(x)), in double. */
static rt_status student_eval(void *ud, rt_ctx *ctx, double *v)
{
    student_ud *u = ud;
    rt_tensor *out = NULL;
    rt_status st = rt_student_forward(u->net, ctx, u->x, 0, &out);
    if (st) return st;
    const rt_plugin_desc *d = rt_instance_desc(u->net);
    if (rt_numel(out) != u->nout)
        return rt_error(ctx, RT_STATUS_ERR_STATE, "student '%s': output size changed from %lld to %lld", d->name,
                        (long long)u->nout, (long long)rt_numel(out));
    double f = 0;
    for (int64_t i = 0; i < u->nout; i++) f += (double)u->w[i] * rt_tensor_get(out, i);
    if (!isfinite(f)) return rt_error(ctx, RT_STATUS_ERR_NUMERIC, "student '%s': forward gave non-finite outputs", d->name);
    *v = f;
    return RT_STATUS_OK;
}

/* The input shape without N, from the student's input spec (ABI 2.0):
 * "any length" dimensions get 4.  0 if the spec gives no shape (ndim < 0:
 * the caller must name one). */
static int spec_input_shape(rt_instance *net, int64_t *shape, rt_spec *sp)
{
    rt_instance_input_spec(net, sp);
    if (sp->ndim < 1) return 0;
    for (int k = 0; k < sp->ndim; k++) shape[k] = sp->shape[k] ? sp->shape[k] : 4;
    return sp->ndim;
}

/* Up to MAX_SAMPLES distinct flat indices below n; all of them when n is
 * that small.  Returns the count. */
static int sample(rt_rng *r, int64_t n, int64_t *idx)
{
    int m = 0;
    if (n <= MAX_SAMPLES) {
        for (int64_t i = 0; i < n; i++) idx[m++] = i;
        return m;
    }
    while (m < MAX_SAMPLES) {
        int64_t c = (int64_t)rt_rng_below(r, (uint64_t)n), dup = 0;
        for (int k = 0; k < m; k++) dup |= idx[k] == c;
        if (!dup) idx[m++] = c;
    }
    return m;
}

/* forward(x, train = 0) then backward(w) through the checked calls. */
static rt_status fwd_bwd(student_ud *u, rt_ctx *ctx, rt_tensor *wt, rt_tensor **gin)
{
    rt_tensor *out = NULL;
    rt_status st = rt_student_forward(u->net, ctx, u->x, 0, &out);
    if (st) return st;
    return rt_student_backward(u->net, ctx, wt, NULL, 0, gin);
}

rt_status rt_gradcheck_student(rt_instance *net, rt_ctx *ctx, int64_t N, const int64_t *in_shape, int in_ndim,
                               uint64_t seed, double eps, rt_gradcheck_result *res)
{
    reset_result(res);
    if (eps <= 0) eps = 1e-2;
    const char *name = rt_instance_desc(net)->name;
    int64_t xs[RT_MAX_DIMS];
    int nd;
    rt_spec sp;
    int spec_nd = spec_input_shape(net, xs + 1, &sp);
    if (in_shape) {
        if (in_ndim < 1 || in_ndim >= RT_MAX_DIMS)
            return rt_error(ctx, RT_STATUS_ERR_ARG, "gradcheck of student '%s': input shape needs 1 to %d dims",
                            name, RT_MAX_DIMS - 1);
        memcpy(xs + 1, in_shape, sizeof *in_shape * (size_t)in_ndim);
        nd = in_ndim + 1;
    } else {
        nd = spec_nd + 1;
        if (nd == 1)
            return rt_error(ctx, RT_STATUS_ERR_ARG,
                            "gradcheck of student '%s': its input spec names no shape (give one explicitly)", name);
    }
    xs[0] = N;
    int np = 0;
    rt_param *p = rt_instance_params_all(net, ctx, &np);
    if (!p) return rt_error_prefix(ctx, "gradcheck");

    rt_status st = RT_STATUS_OK;
    /* i32 inputs are token ids: drawn in [0, vocab) (vocab 0: [0, 2)), and
     * have no gradient to check. */
    int ids = sp.dtype == RT_DTYPE_I32;
    rt_tensor *x = rt_tensor_new(ctx, ids ? RT_DTYPE_I32 : RT_DTYPE_F32, nd, xs), *wt = NULL, *gin1 = NULL, *out = NULL;
    rt_tensor **g1 = calloc((size_t)np + 1, sizeof *g1);
    if (!g1) st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "gradcheck: out of memory");
    if (!x) st = rt_ctx_status(ctx);
    rt_rng r;
    rt_rng_seed(&r, seed, 0);
    for (int64_t i = 0; !st && i < rt_numel(x); i++)
        if (ids) rt_i32(x)[i] = (int32_t)rt_rng_below(&r, (uint64_t)(sp.vocab > 0 ? sp.vocab : 2));
        else rt_f32(x)[i] = rt_rng_normal(&r);
    if (!st) st = rt_student_forward(net, ctx, x, 0, &out);
    if (!st && !(wt = rt_tensor_new(ctx, RT_DTYPE_F32, out->ndim, out->shape))) st = rt_ctx_status(ctx);
    rt_rng_seed(&r, seed, 1);
    for (int64_t i = 0; !st && i < rt_numel(wt); i++) rt_f32(wt)[i] = rt_rng_normal(&r);
    student_ud ud = {net, x, wt ? rt_f32(wt) : NULL, wt ? rt_numel(wt) : 0};

    /* The reference gradients g1 (after zero_grad) and df/dx. */
    rt_tensor *gin = NULL;
    rt_student_zero_grad(net);
    if (!st) st = fwd_bwd(&ud, ctx, wt, ids ? NULL : &gin);
    if (!st && !ids && (!gin || rt_numel(gin) != rt_numel(x)))
        st = rt_error(ctx, RT_STATUS_ERR_PLUGIN, "student '%s': backward gave no input gradient of x's size", name);
    if (!st && !ids && !(gin1 = rt_tensor_clone(ctx, gin))) st = rt_ctx_status(ctx);
    if (!st) np = rt_instance_params(net, p, np); /* after backward: lazy zeroing is done */
    for (int k = 0; k < np && !st; k++) {
        if (!p[k].grad || p[k].role != RT_ROLE_TRAINABLE) continue; /* frozen, buffers */
        if (!(g1[k] = rt_tensor_clone(ctx, p[k].grad))) st = rt_ctx_status(ctx);
        for (int64_t i = 0; !st && i < rt_numel(g1[k]); i++)
            if (!isfinite(rt_f32(g1[k])[i]))
                st = rt_error(ctx, RT_STATUS_ERR_NUMERIC, "student '%s': gradient of %s[%lld] is %g", name, p[k].name,
                              (long long)i, (double)rt_f32(g1[k])[i]);
    }

    /* Accumulation: a second backward adds g1 again, and the input
     * gradient is a fresh value each time, not a sum. */
    if (!st) st = fwd_bwd(&ud, ctx, wt, ids ? NULL : &gin);
    if (!st) np = rt_instance_params(net, p, np);
    for (int k = 0; k < np && !st; k++) {
        if (!g1[k]) continue;
        const float *a = rt_f32(g1[k]), *b = rt_f32(p[k].grad);
        double sc = max_abs(a, rt_numel(g1[k]));
        for (int64_t i = 0; i < rt_numel(g1[k]); i++)
            note(res, "accumulate", rel_err(2.0 * a[i], b[i], 2 * sc), "accumulate: %s[%lld] after two backwards", p[k].name,
                 (long long)i);
    }
    if (!st && gin1) {
        double sc = max_abs(rt_f32(gin1), rt_numel(gin1));
        for (int64_t i = 0; i < rt_numel(gin1); i++)
            note(res, "accumulate", rel_err(rt_f32(gin1)[i], rt_f32(gin)[i], sc), "input gradient[%lld] changed on a second backward",
                 (long long)i);
    }
    /* zero_grad really resets: one more backward gives g1 again. */
    if (!st) {
        rt_student_zero_grad(net);
        st = fwd_bwd(&ud, ctx, wt, ids ? NULL : &gin);
    }
    if (!st) np = rt_instance_params(net, p, np);
    for (int k = 0; k < np && !st; k++) {
        if (!g1[k]) continue;
        const float *a = rt_f32(g1[k]), *b = rt_f32(p[k].grad);
        double sc = max_abs(a, rt_numel(g1[k]));
        for (int64_t i = 0; i < rt_numel(g1[k]); i++)
            note(res, "accumulate", rel_err(a[i], b[i], sc), "zero_grad: %s[%lld] after zero_grad and one backward", p[k].name,
                 (long long)i);
    }

    /* Finite differences: parameters, then the input. */
    rt_rng_seed(&r, seed, 3);
    int64_t idx[MAX_SAMPLES];
    for (int k = 0; k <= np && !st; k++) {
        rt_tensor *val = k < np ? p[k].value : x, *ref = k < np ? g1[k] : gin1;
        const char *what = k < np ? p[k].name : "input";
        if (!ref) continue;
        double sc = max_abs(rt_f32(ref), rt_numel(ref));
        int m = sample(&r, rt_numel(val), idx);
        for (int j = 0; j < m && !st; j++) {
            double d, e, a = rt_f32(ref)[idx[j]];
            int skip;
            st = numeric(student_eval, &ud, ctx, &rt_f32(val)[idx[j]], eps, a, sc, &d, &e, &skip);
            if (st || skip) {
                res->skipped += !st;
                continue;
            }
            res->checked++;
            note(res, what, e, "%s[%lld]: backward %.6g, numerical %.6g", what, (long long)idx[j], a, d);
        }
    }
    for (int k = 0; k < np && g1; k++) rt_tensor_release(g1[k]);
    free(g1);
    free(p);
    rt_tensor_release(x);
    rt_tensor_release(wt);
    rt_tensor_release(gin1);
    return st;
}
