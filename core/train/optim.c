/*
 * optim.c -- SGD, Adam and AdamW with torch.optim semantics, and the
 * learning-rate schedules.
 *
 *   SGD:   d = g + wd p;  b = d at the first step, else mu b + (1 - damp) d;
 *          d = nesterov ? d + mu b : b (when mu > 0);  p -= lr d
 *   Adam:  g += wd p (Adam) or p *= 1 - lr wd (AdamW);
 *          m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *          p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *
 * Each parameter is updated in one pass that reads p, g and the moments
 * once.  The state is tied at the first step to the parameter list (names,
 * shapes, which ones have gradients), so the moments of one parameter can
 * never be applied to another.
 */
#include "retort.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vec.h"

/* One parameter of the list the state is tied to. */
typedef struct tied {
    char *name;
    int ndim;
    int64_t shape[RT_MAX_DIMS];
    int first_state; /* index into state[], or -1 (no gradient at tie time) */
} tied;

/* The tied list and its state tensors, built whole before it replaces the
 * optimizer's, so a failure leaves the old one intact. */
typedef struct tie {
    int nparams;
    tied *params;
    int nstate;
    char **names;
    rt_tensor **state;
} tie;

struct rt_optim {
    rt_optim_cfg cfg;
    int64_t steps;
    int tied; /* 0 before the first step or restore */
    tie t;
    /* SGD: the momentum buffers were just created and hold nothing yet, so
     * the next step sets b = d (PyTorch's "buffer is None"). */
    int fresh;
};

static const char *kind_name(const rt_optim_cfg *c)
{
    if (c->kind == RT_OPTIM_SGD) return "sgd";
    return c->decoupled ? "adamw" : "adam";
}

static int per_param(const rt_optim_cfg *c)
{
    if (c->kind == RT_OPTIM_ADAM) return 2;
    return c->momentum != 0.0f ? 1 : 0;
}

static void tie_free(tie *t)
{
    for (int i = 0; i < t->nparams; i++) free(t->params[i].name);
    for (int i = 0; i < t->nstate; i++) {
        free(t->names[i]);
        rt_tensor_release(t->state[i]);
    }
    free(t->params);
    free(t->names);
    free(t->state);
    memset(t, 0, sizeof *t);
}

static int finite_at_least(float v, float lo) { return isfinite(v) && v >= lo; }

rt_optim *rt_optim_new(rt_ctx *ctx, const rt_optim_cfg *cfg)
{
    if (!cfg) {
        rt_error(ctx, RT_STATUS_ERR_ARG, "optimizer: no configuration");
        return NULL;
    }
    const rt_optim_cfg *c = cfg;
    if (c->kind != RT_OPTIM_SGD && c->kind != RT_OPTIM_ADAM) {
        rt_error(ctx, RT_STATUS_ERR_ARG, "optimizer: unknown kind %d (sgd = %d, adam = %d)",
                 (int)c->kind, RT_OPTIM_SGD, RT_OPTIM_ADAM);
        return NULL;
    }
    const char *k = kind_name(c);
#define BAD(...) do { rt_error(ctx, RT_STATUS_ERR_ARG, __VA_ARGS__); return NULL; } while (0)
    if (!finite_at_least(c->lr, 0)) BAD("optimizer %s: lr must be >= 0 (got %g)", k, c->lr);
    if (!finite_at_least(c->weight_decay, 0))
        BAD("optimizer %s: weight_decay must be >= 0 (got %g)", k, c->weight_decay);
    if (c->kind == RT_OPTIM_SGD) {
        if (!finite_at_least(c->momentum, 0))
            BAD("optimizer sgd: momentum must be >= 0 (got %g)", c->momentum);
        if (!finite_at_least(c->dampening, 0) || c->dampening > 1)
            BAD("optimizer sgd: dampening must be in [0, 1] (got %g)", c->dampening);
        if (c->nesterov && !(c->momentum > 0))
            BAD("optimizer sgd: nesterov needs momentum > 0 (got momentum %g)", c->momentum);
        if (c->nesterov && c->dampening != 0)
            BAD("optimizer sgd: nesterov needs dampening 0 (got dampening %g)", c->dampening);
    } else {
        if (!(c->beta1 >= 0 && c->beta1 < 1))
            BAD("optimizer %s: beta1 must be in [0, 1) (got %g)", k, c->beta1);
        if (!(c->beta2 >= 0 && c->beta2 < 1))
            BAD("optimizer %s: beta2 must be in [0, 1) (got %g)", k, c->beta2);
        if (!(isfinite(c->eps) && c->eps > 0))
            BAD("optimizer %s: eps must be > 0 (got %g)", k, c->eps);
    }
#undef BAD
    rt_optim *o = calloc(1, sizeof *o);
    if (!o) {
        rt_error(ctx, RT_STATUS_ERR_NOMEM, "optimizer: out of memory");
        return NULL;
    }
    o->cfg = *c;
    return o;
}

void rt_optim_free(rt_optim *o)
{
    if (!o) return;
    tie_free(&o->t);
    free(o);
}

const rt_optim_cfg *rt_optim_config(const rt_optim *o) { return &o->cfg; }
int rt_optim_state_count(const rt_optim *o) { return o->tied ? o->t.nstate : 0; }
int64_t rt_optim_steps(const rt_optim *o) { return o->steps; }

const char *rt_optim_state_name(const rt_optim *o, int i)
{
    return i >= 0 && i < rt_optim_state_count(o) ? o->t.names[i] : NULL;
}

rt_tensor *rt_optim_state_tensor(const rt_optim *o, int i)
{
    return i >= 0 && i < rt_optim_state_count(o) ? o->t.state[i] : NULL;
}

static char *cat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

/* Every parameter: a named contiguous f32 value; its gradient, if any, a
 * contiguous f32 tensor of the same shape. */
static rt_status check_params(rt_ctx *ctx, const rt_param *params, int n)
{
    char a[64], b[64];
    if (n < 0 || (n > 0 && !params))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "optimizer: bad parameter list (%d entries)", n);
    for (int i = 0; i < n; i++) {
        const rt_param *p = &params[i];
        const char *name = p->name ? p->name : "?";
        if (!p->name || !p->value)
            return rt_error(ctx, RT_STATUS_ERR_ARG, "optimizer: parameter %d ('%s') has no %s", i, name,
                            p->name ? "value" : "name");
        if (p->role != RT_ROLE_TRAINABLE) continue; /* buffers and frozen: never optimized */
        if (p->value->dtype != RT_DTYPE_F32 || !rt_is_contiguous(p->value))
            return rt_error(ctx, RT_STATUS_ERR_ARG, "optimizer: parameter '%s' %s must be contiguous f32",
                            name, rt_tensor_shape_str(p->value, a, sizeof a));
        if (!p->grad) continue;
        if (p->grad->dtype != RT_DTYPE_F32 || !rt_is_contiguous(p->grad) ||
            !rt_tensor_same_shape(p->value, p->grad))
            return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                            "optimizer: parameter '%s' is %s but its gradient is %s %s%s", name,
                            rt_tensor_shape_str(p->value, a, sizeof a), rt_dtype_name(p->grad->dtype),
                            rt_tensor_shape_str(p->grad, b, sizeof b),
                            rt_is_contiguous(p->grad) ? "" : " (not contiguous)");
    }
    return RT_STATUS_OK;
}

/* Builds a tie for params: zeroed state for each parameter with a gradient
 * (frozen parameters get none, at the first step and at restore alike). */
static rt_status tie_build(const rt_optim *o, rt_ctx *ctx, const rt_param *params, int n, tie *t)
{
    static const char *const adam_suffix[] = {".exp_avg", ".exp_avg_sq"};
    static const char *const sgd_suffix[] = {".momentum_buffer"};
    const char *const *suffix = o->cfg.kind == RT_OPTIM_ADAM ? adam_suffix : sgd_suffix;
    int per = per_param(&o->cfg);
    memset(t, 0, sizeof *t);
    t->params = calloc((size_t)(n > 0 ? n : 1), sizeof *t->params);
    t->names = calloc((size_t)(n > 0 ? n : 1) * (size_t)(per ? per : 1), sizeof *t->names);
    t->state = calloc((size_t)(n > 0 ? n : 1) * (size_t)(per ? per : 1), sizeof *t->state);
    if (!t->params || !t->names || !t->state) goto nomem;
    for (int i = 0; i < n; i++) {
        const rt_param *p = &params[i];
        tied *d = &t->params[i];
        if (!(d->name = cat(p->name, ""))) goto nomem;
        t->nparams = i + 1;
        d->ndim = p->value->ndim;
        memcpy(d->shape, p->value->shape, sizeof d->shape);
        d->first_state = -1;
        if (!per || !p->grad || p->role != RT_ROLE_TRAINABLE) continue;
        d->first_state = t->nstate;
        for (int s = 0; s < per; s++) {
            if (!(t->names[t->nstate] = cat(p->name, suffix[s]))) goto nomem;
            t->state[t->nstate] = rt_tensor_new(ctx, RT_DTYPE_F32, d->ndim, d->shape);
            if (!t->state[t->nstate]) {
                free(t->names[t->nstate]);
                tie_free(t);
                return rt_error_prefix(ctx, "optimizer state '%s%s'", p->name, suffix[s]);
            }
            t->nstate++;
        }
    }
    return RT_STATUS_OK;
nomem:
    tie_free(t);
    return rt_error(ctx, RT_STATUS_ERR_NOMEM, "optimizer: out of memory for the state of %d parameters", n);
}

/* params against the tied list: same count, names, shapes, and a gradient
 * only where state exists. */
static rt_status check_tied(const rt_optim *o, rt_ctx *ctx, const rt_param *params, int n)
{
    char a[64], b[64];
    const tie *t = &o->t;
    if (n != t->nparams)
        return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                        "optimizer: %d parameters given, but the state was created for %d", n, t->nparams);
    for (int i = 0; i < n; i++) {
        const tied *d = &t->params[i];
        const rt_tensor *v = params[i].value;
        rt_tensor want = {.ndim = d->ndim};
        memcpy(want.shape, d->shape, sizeof want.shape);
        if (strcmp(params[i].name, d->name))
            return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                            "optimizer: parameter %d is '%s', but the state was created for '%s'", i,
                            params[i].name, d->name);
        if (!rt_tensor_same_shape(v, &want))
            return rt_error(ctx, RT_STATUS_ERR_SHAPE,
                            "optimizer: parameter '%s' is %s, but its state was created for %s", d->name,
                            rt_tensor_shape_str(v, a, sizeof a), rt_tensor_shape_str(&want, b, sizeof b));
        if (params[i].grad && d->first_state < 0 && per_param(&o->cfg))
            return rt_error(ctx, RT_STATUS_ERR_STATE,
                            "optimizer: parameter '%s' has a gradient, but had none when the state was created",
                            d->name);
    }
    return RT_STATUS_OK;
}

/* The passes return the largest (bits & 0x7f800000) of the values they
 * wrote, per lane then combined: 0x7f800000 means one of them is NaN or
 * +-inf (all exponent bits set).  An integer max in the same pass costs
 * next to nothing in a loop bound by memory, and leaves the arithmetic,
 * hence every trained number, exactly as it was. */
#define EXP_MASK 0x7f800000u
static inline uint32_t expo(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & EXP_MASK;
}
#define UMAX(a, b) ((a) > (b) ? (a) : (b))
/* for i in [0, n): body, with lanes acc[k] (k = i mod VW in the blocks). */
#define VLOOP_ACC(acc, i, n, body)                                             \
    do {                                                                       \
        int64_t i##_b = 0, i##_n = (n);                                        \
        for (; i##_b + VW <= i##_n; i##_b += VW)                               \
            for (int k_ = 0; k_ < VW; k_++) {                                  \
                int64_t i = i##_b + k_;                                        \
                uint32_t *lane = &acc[k_];                                     \
                body                                                           \
            }                                                                  \
        for (int64_t i = i##_b; i < i##_n; i++) {                              \
            uint32_t *lane = &acc[0];                                          \
            body                                                               \
        }                                                                      \
    } while (0)

static uint32_t lanes_max(const uint32_t *acc)
{
    uint32_t m = 0;
    for (int k = 0; k < VW; k++) m = UMAX(m, acc[k]);
    return m;
}

static uint32_t sgd_pass(float *restrict p, const float *restrict g, int64_t n, float lr, float wd)
{
    uint32_t acc[VW] = {0};
    VLOOP_ACC(acc, i, n, float pn = p[i] - lr * (g[i] + wd * p[i]); p[i] = pn;
              *lane = UMAX(*lane, expo(pn)););
    return lanes_max(acc);
}

/* b = cb b + cd d;  p -= lr (nd d + nb b).  The coefficients encode the
 * first step (cb 0, cd 1) and nesterov (nd 1, nb mu) or not (nd 0, nb 1):
 * multiplying by 0 or 1 is exact, and the loop has no branch. */
static uint32_t sgd_momentum_pass(float *restrict p, const float *restrict g, float *restrict b,
                                  int64_t n, float lr, float wd, float cb, float cd, float nd,
                                  float nb)
{
    uint32_t acc[VW] = {0};
    VLOOP_ACC(acc, i, n, float d = g[i] + wd * p[i]; float bi = cb * b[i] + cd * d; b[i] = bi;
              float pn = p[i] - lr * (nd * d + nb * bi); p[i] = pn;
              *lane = UMAX(*lane, UMAX(expo(pn), expo(bi))););
    return lanes_max(acc);
}

static uint32_t adam_pass(float *restrict p, const float *restrict g, float *restrict m,
                          float *restrict v, int64_t n, float l2, float decay, float b1, float b2,
                          float step_size, float inv_bc2_sqrt, float eps)
{
    float c1 = 1.0f - b1, c2 = 1.0f - b2;
    uint32_t acc[VW] = {0};
    VLOOP_ACC(acc, i, n, float pi = p[i]; float gi = g[i] + l2 * pi; float mi = b1 * m[i] + c1 * gi;
              float vi = b2 * v[i] + c2 * gi * gi; m[i] = mi; v[i] = vi;
              float pn = pi * decay - step_size * mi / (sqrtf(vi) * inv_bc2_sqrt + eps); p[i] = pn;
              *lane = UMAX(*lane, UMAX(expo(pn), expo(vi))););
    return lanes_max(acc);
}

/* After a pass wrote a non-finite value into parameter pr (or its state,
 * from s): the error, naming the first bad value and the cause, a
 * non-finite gradient or a finite one the update overflowed.  The values
 * are already written: the caller's run cannot go on from here. */
static rt_status nonfinite_update(const rt_optim *o, rt_ctx *ctx, const rt_param *pr, int s, float lr)
{
    char what[320];
    const char *k = kind_name(&o->cfg);
    snprintf(what, sizeof what, "the gradient of '%s'", pr->name);
    if (rt_tensor_check_finite(ctx, pr->grad, what)) return rt_error_prefix(ctx, "optimizer %s", k);
    snprintf(what, sizeof what, "parameter '%s'", pr->name);
    rt_status st = rt_tensor_check_finite(ctx, pr->value, what);
    for (int j = 0; !st && s >= 0 && j < per_param(&o->cfg); j++) {
        snprintf(what, sizeof what, "state '%s'", o->t.names[s + j]);
        st = rt_tensor_check_finite(ctx, o->t.state[s + j], what);
    }
    if (!st) rt_error(ctx, RT_STATUS_ERR_NUMERIC, "parameter '%s' became non-finite", pr->name);
    return rt_error_prefix(ctx, "optimizer %s: the update with lr %g overflowed a finite gradient (lower the learning "
                           "rate, or scale the loss down)", k, lr);
}

rt_status rt_optim_step(rt_optim *o, rt_ctx *ctx, const rt_param *params, int n, float lr)
{
    const rt_optim_cfg *c = &o->cfg;
    if (!finite_at_least(lr, 0))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "optimizer %s: step lr must be >= 0 (got %g)",
                        kind_name(c), lr);
    rt_status st = check_params(ctx, params, n);
    if (st) return st;
    if (!o->tied) {
        tie t;
        if ((st = tie_build(o, ctx, params, n, &t))) return st;
        o->t = t;
        o->tied = 1;
        o->fresh = 1;
    } else if ((st = check_tied(o, ctx, params, n))) {
        return st;
    }
    int64_t t = o->steps + 1;
    float wd = c->weight_decay;
    for (int i = 0; i < n; i++) {
        const rt_param *pr = &params[i];
        if (!pr->grad || pr->role != RT_ROLE_TRAINABLE) continue;
        float *p = rt_f32(pr->value);
        const float *g = rt_f32(pr->grad);
        int64_t len = rt_numel(pr->value);
        int s = o->t.params[i].first_state;
        uint32_t top;
        if (c->kind == RT_OPTIM_SGD) {
            if (s < 0) {
                top = sgd_pass(p, g, len, lr, wd);
            } else {
                float mu = c->momentum;
                float cb = o->fresh ? 0.0f : mu, cd = o->fresh ? 1.0f : 1.0f - c->dampening;
                float nd = c->nesterov ? 1.0f : 0.0f, nb = c->nesterov ? mu : 1.0f;
                top = sgd_momentum_pass(p, g, rt_f32(o->t.state[s]), len, lr, wd, cb, cd, nd, nb);
            }
        } else {
            double bc1 = 1.0 - pow(c->beta1, (double)t), bc2 = 1.0 - pow(c->beta2, (double)t);
            float l2 = c->decoupled ? 0.0f : wd;
            float decay = c->decoupled ? 1.0f - lr * wd : 1.0f;
            top = adam_pass(p, g, rt_f32(o->t.state[s]), rt_f32(o->t.state[s + 1]), len, l2, decay,
                            c->beta1, c->beta2, (float)(lr / bc1), (float)(1.0 / sqrt(bc2)), c->eps);
        }
        if (top == EXP_MASK) {
            o->fresh = 0;
            o->steps = t;
            return nonfinite_update(o, ctx, pr, s, lr);
        }
    }
    o->fresh = 0;
    o->steps = t;
    return RT_STATUS_OK;
}

rt_status rt_optim_restore(rt_optim *o, rt_ctx *ctx, const rt_param *params, int n, int64_t steps,
                           rt_tensor *(*lookup)(void *ud, const char *name), void *ud)
{
    char a[64], b[64];
    if (steps < 0)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "optimizer restore: negative step count %lld",
                        (long long)steps);
    if (!lookup) return rt_error(ctx, RT_STATUS_ERR_ARG, "optimizer restore: no lookup function");
    rt_status st = check_params(ctx, params, n);
    if (st) return st;
    tie t;
    if ((st = tie_build(o, ctx, params, n, &t))) return st;
    for (int i = 0; i < t.nstate; i++) {
        rt_tensor *src = lookup(ud, t.names[i]);
        if (!src) {
            st = rt_error(ctx, RT_STATUS_ERR_FORMAT, "optimizer restore: state '%s' is missing", t.names[i]);
            break;
        }
        if (src->dtype != RT_DTYPE_F32 || !rt_tensor_same_shape(src, t.state[i])) {
            st = rt_error(ctx, RT_STATUS_ERR_SHAPE, "optimizer restore: state '%s' is %s %s, the parameter %s",
                          t.names[i], rt_dtype_name(src->dtype), rt_tensor_shape_str(src, a, sizeof a),
                          rt_tensor_shape_str(t.state[i], b, sizeof b));
            break;
        }
        if ((st = rt_tensor_copy(ctx, t.state[i], src))) break;
    }
    if (st) {
        tie_free(&t);
        return st;
    }
    tie_free(&o->t);
    o->t = t;
    o->tied = 1;
    o->fresh = 0;
    o->steps = steps;
    return RT_STATUS_OK;
}

/* ============================================================= schedules */

float rt_schedule_lr(const rt_schedule *s, int64_t step)
{
    if (step < 0) step = 0;
    if (s->warmup > 0 && step < s->warmup)
        return (float)((double)s->lr * (double)(step + 1) / (double)s->warmup);
    switch (s->kind) {
    case RT_SCHED_STEP:
        if (s->step_size <= 0) return s->lr;
        return (float)((double)s->lr * pow(s->gamma, (double)(step / s->step_size)));
    case RT_SCHED_COSINE: {
        int64_t w = s->warmup > 0 ? s->warmup : 0, span = s->total - w, t = step - w;
        if (span <= 0 || t >= span) return s->min_lr;
        double pi = 3.14159265358979323846;
        return (float)(s->min_lr + 0.5 * ((double)s->lr - s->min_lr) * (1.0 + cos(pi * (double)t / (double)span)));
    }
    default: return s->lr;
    }
}
