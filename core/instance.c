/*
 * instance.c -- live plugin objects, the checked calls into their vtables,
 * parameter save/load, and the function table handed to plugins.
 *
 * Every call into a plugin goes through a wrapper here that checks what the
 * ABI promises the plugin (dtypes, shapes, contiguity, labels in range),
 * prefixes any error with "<kind> '<name>': " and resets the scratch arena
 * afterwards.  Plugins may therefore trust their inputs.
 */
#include <cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctx.h"
#include "options.h"
#include "plugin_host.h"
#include "rt_conv.h"

/* The bound on what a student or teacher may allocate in tensors while it
 * is created (parameters, gradients, buffers), from RETORT_MAX_MODEL_MB;
 * 8192 MiB when unset or not a positive integer. */
#define MODEL_MB_DEFAULT 8192
static int64_t model_limit(char *why, size_t len)
{
    const char *e = getenv("RETORT_MAX_MODEL_MB");
    char *end = NULL;
    long long mb = e && *e ? strtoll(e, &end, 10) : 0;
    if (!e || !*e || *end || mb <= 0 || mb > ((int64_t)1 << 40)) {
        snprintf(why, len, "the model size limit of %d MiB (set RETORT_MAX_MODEL_MB to change it)", MODEL_MB_DEFAULT);
        return (int64_t)MODEL_MB_DEFAULT << 20;
    }
    snprintf(why, len, "the model size limit of %lld MiB (RETORT_MAX_MODEL_MB)", mb);
    return (int64_t)mb << 20;
}

/* Narrows ctx's tensor budget to limit bytes (why explains it) unless it
 * is already tighter; *saved keeps the old one for budget_end. */
typedef struct budget_save {
    int64_t budget, start;
    char why[sizeof ((rt_ctx *)0)->budget_why];
} budget_save;

static void budget_begin(rt_ctx *ctx, budget_save *sv, int64_t limit, const char *why)
{
    sv->budget = ctx->budget;
    memcpy(sv->why, ctx->budget_why, sizeof sv->why);
    if (ctx->budget < 0 || ctx->budget > limit) {
        ctx->budget = limit;
        snprintf(ctx->budget_why, sizeof ctx->budget_why, "%s", why);
    }
    sv->start = ctx->budget;
}

/* Restores the outer budget less what was spent inside. */
static void budget_end(rt_ctx *ctx, const budget_save *sv)
{
    int64_t spent = sv->start - ctx->budget;
    ctx->budget = sv->budget < 0 ? -1 : sv->budget - spent;
    memcpy(ctx->budget_why, sv->why, sizeof sv->why);
}

/* Validates options, runs create, wraps the object.  lib may be NULL.
 * Students and teachers are created under the model size budget. */
static rt_status instantiate(rt_registry *r, rt_ctx *ctx, const rt_plugin_desc *d, rt_lib *lib,
                             const char *opts_json, rt_instance **out)
{
    const char *kind = rt_kind_name(d->kind), *name = d->name;
    char *validated = NULL;
    if (rt_options_validate(ctx, d, opts_json, &validated)) return rt_error_prefix(ctx, "%s '%s'", kind, name);
    rt_opts *opts = rt_opts_parse(validated);
    rt_instance *in = calloc(1, sizeof *in);
    if (!opts || !in) {
        rt_opts_free(opts);
        free(in);
        free(validated);
        return rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s '%s': out of memory", kind, name);
    }
    /* A plugin that creates other instances (a teacher wrapping a student)
     * reaches the registry through ctx during create. */
    rt_registry *saved = ctx->registry;
    if (r) ctx->registry = r;
    void *self = NULL;
    budget_save bs;
    int bounded = d->kind == RT_KIND_STUDENT || d->kind == RT_KIND_TEACHER;
    if (bounded) {
        char why[sizeof ctx->budget_why];
        int64_t lim = model_limit(why, sizeof why);
        budget_begin(ctx, &bs, lim, why);
    }
    rt_status st = d->create(ctx, opts, &self);
    if (bounded) budget_end(ctx, &bs);
    ctx->registry = saved;
    rt_opts_free(opts);
    rt_scratch_reset(ctx);
    if (st || !self) {
        if (!st) st = rt_error(ctx, RT_STATUS_ERR_PLUGIN, "create returned no object");
        free(in);
        free(validated);
        return rt_error_prefix(ctx, "%s '%s'", kind, name);
    }
    in->refcount = 1;
    in->desc = d;
    in->lib = lib;
    if (lib) rt_lib_retain(lib);
    in->self = self;
    in->options = validated;
    *out = in;
    return RT_STATUS_OK;
}

rt_status rt_instance_create(rt_registry *r, rt_ctx *ctx, rt_kind kind, const char *name, const char *opts_json,
                             rt_instance **out)
{
    *out = NULL;
    const rt_plugin_desc *d = rt_registry_find(r, ctx, kind, name);
    if (!d) return rt_ctx_status(ctx);
    return instantiate(r, ctx, d, rt_registry_lib(r, d), opts_json, out);
}

rt_status rt_instance_from_desc(rt_ctx *ctx, const rt_plugin_desc *desc, const char *opts_json, rt_instance **out)
{
    *out = NULL;
    if (rt_check_desc(ctx, desc)) return rt_ctx_status(ctx);
    return instantiate(NULL, ctx, desc, NULL, opts_json, out);
}

void rt_instance_retain(rt_instance *i)
{
    if (i) i->refcount++;
}

void rt_instance_release(rt_instance *i)
{
    if (!i || --i->refcount) return;
    i->desc->destroy(i->self);
    rt_lib *lib = i->lib;
    free(i->options);
    free(i->zg);
    free(i);
    rt_lib_release(lib); /* last: the code of destroy lives in it */
}

const rt_plugin_desc *rt_instance_desc(const rt_instance *i) { return i->desc; }
void *rt_instance_self(const rt_instance *i) { return i->self; }
const char *rt_instance_options(const rt_instance *i) { return i->options; }

/* ----------------------------------------------------------- checked calls */

static rt_status fail(rt_instance *i, rt_ctx *ctx)
{
    rt_scratch_reset(ctx);
    return rt_error_prefix(ctx, "%s '%s'", rt_kind_name(i->desc->kind), i->desc->name);
}

static rt_status done(rt_instance *i, rt_ctx *ctx, rt_status st)
{
    if (st) return fail(i, ctx);
    rt_scratch_reset(ctx);
    return RT_STATUS_OK;
}

/* Checks a tensor argument: dtype, contiguity, at least min_dims dims. */
static rt_status check_arg(rt_ctx *ctx, const char *what, const rt_tensor *t, rt_dtype dtype, int min_dims)
{
    char b[64];
    if (!t) return rt_error(ctx, RT_STATUS_ERR_ARG, "%s is missing", what);
    if (t->dtype != dtype)
        return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s must be %s, got %s %s", what, rt_dtype_name(dtype),
                        rt_dtype_name(t->dtype), rt_tensor_shape_str(t, b, sizeof b));
    if (t->ndim < min_dims)
        return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s must have at least %d dimension%s, got %s", what, min_dims,
                        min_dims > 1 ? "s" : "", rt_tensor_shape_str(t, b, sizeof b));
    if (!rt_is_contiguous(t))
        return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s %s must be contiguous", what, rt_tensor_shape_str(t, b, sizeof b));
    return RT_STATUS_OK;
}

static rt_status check_kind(rt_instance *i, rt_ctx *ctx, rt_kind k)
{
    if (i->desc->kind != k)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "%s '%s' used as a %s", rt_kind_name(i->desc->kind), i->desc->name,
                        rt_kind_name(k));
    return RT_STATUS_OK;
}

int rt_instance_input_spec(rt_instance *i, rt_spec *out)
{
    memset(out, 0, sizeof *out);
    if (i->desc->kind != RT_KIND_STUDENT) return 0;
    i->desc->student->input_spec(i->self, out);
    if (out->ndim > RT_MAX_DIMS - 1) out->ndim = RT_MAX_DIMS - 1;
    return 1;
}

/* x against the student's spec: dtype, per-sample shape (0 = any length;
 * flat: any shape of the same element count), ids below vocab. */
static rt_status check_input(rt_instance *s, rt_ctx *ctx, const rt_tensor *x)
{
    rt_spec sp;
    rt_instance_input_spec(s, &sp);
    if (check_arg(ctx, "input", x, sp.dtype, 1)) return RT_STATUS_ERR_SHAPE;
    if (sp.ndim < 0) return RT_STATUS_OK;
    char a[64], want[96];
    int64_t per = 1;
    int n = snprintf(want, sizeof want, "[N");
    for (int k = 0; k < sp.ndim; k++) {
        per *= sp.shape[k];
        n += snprintf(want + n, sizeof want - (size_t)n, sp.shape[k] ? ", %lld" : ", any", (long long)sp.shape[k]);
        if (n >= (int)sizeof want - 24) break;
    }
    snprintf(want + n, sizeof want - (size_t)n, "]");
    if (sp.flat) {
        if (rt_row_size(x) != per)
            return rt_error(ctx, RT_STATUS_ERR_SHAPE, "input %s has %lld values per sample, the student takes %lld (%s)",
                            rt_tensor_shape_str(x, a, sizeof a), (long long)rt_row_size(x), (long long)per, want);
    } else {
        int ok = x->ndim == sp.ndim + 1;
        for (int k = 0; ok && k < sp.ndim; k++) ok = !sp.shape[k] || sp.shape[k] == x->shape[k + 1];
        if (!ok)
            return rt_error(ctx, RT_STATUS_ERR_SHAPE, "input %s %s does not fit the student's %s %s",
                            rt_dtype_name(x->dtype), rt_tensor_shape_str(x, a, sizeof a), rt_dtype_name(sp.dtype), want);
    }
    if (x->dtype == RT_DTYPE_I32 && sp.vocab > 0) {
        const int32_t *v = rt_i32(x);
        for (int64_t k = 0; k < rt_numel(x); k++)
            if (v[k] < 0 || v[k] >= sp.vocab)
                return rt_error(ctx, RT_STATUS_ERR_ARG, "input id %d at flat index %lld is outside [0, %lld)", v[k],
                                (long long)k, (long long)sp.vocab);
    }
    return RT_STATUS_OK;
}

rt_status rt_student_forward(rt_instance *s, rt_ctx *ctx, const rt_tensor *x, int train, rt_tensor **out)
{
    *out = NULL;
    if (check_kind(s, ctx, RT_KIND_STUDENT)) return rt_ctx_status(ctx);
    if (check_input(s, ctx, x)) return fail(s, ctx);
    rt_status st = s->desc->student->forward(s->self, ctx, x, train, out);
    if (!st && (!*out || (*out)->ndim < 1 || (*out)->shape[0] != x->shape[0]))
        st = rt_error(ctx, RT_STATUS_ERR_PLUGIN, "forward returned no [N, ...] output for N = %lld",
                      (long long)x->shape[0]);
    return done(s, ctx, st);
}

rt_status rt_student_backward(rt_instance *s, rt_ctx *ctx, const rt_tensor *grad_out, const rt_tap *taps,
                              int ntaps, rt_tensor **grad_in)
{
    if (grad_in) *grad_in = NULL;
    if (check_kind(s, ctx, RT_KIND_STUDENT)) return rt_ctx_status(ctx);
    if (check_arg(ctx, "output gradient", grad_out, RT_DTYPE_F32, 1)) return fail(s, ctx);
    if (s->zg_failed) {
        rt_error(ctx, RT_STATUS_ERR_NOMEM, "zero_grad could not list the %d parameters (out of memory), so the "
                 "gradients were not reset: call zero_grad again", rt_instance_param_count(s));
        return fail(s, ctx);
    }
    for (int k = 0; k < ntaps; k++)
        if (!taps[k].name || check_arg(ctx, "tap gradient", taps[k].grad, RT_DTYPE_F32, 1)) {
            if (!taps[k].name) rt_error(ctx, RT_STATUS_ERR_ARG, "tap %d has no name", k);
            return fail(s, ctx);
        }
    return done(s, ctx, s->desc->student->backward(s->self, ctx, grad_out, taps, ntaps, grad_in));
}

static void zero_grads(rt_instance *s, void (*zg)(void *))
{
    if (zg) {
        zg(s->self);
        return;
    }
    /* No ctx to report to: if the list cannot grow, the next backward
     * fails instead of accumulating onto gradients that were not reset. */
    int n = rt_instance_param_count(s);
    if (n > s->zg_cap) {
        rt_param *g = realloc(s->zg, sizeof *g * (size_t)n);
        if (!g) {
            s->zg_failed = 1;
            return;
        }
        s->zg = g;
        s->zg_cap = n;
    }
    n = rt_instance_params(s, s->zg, s->zg_cap);
    for (int k = 0; k < n && k < s->zg_cap; k++)
        if (s->zg[k].grad) memset(s->zg[k].grad->data, 0, rt_tensor_nbytes(s->zg[k].grad));
    s->zg_failed = n > s->zg_cap; /* the count grew between two calls */
}

void rt_student_zero_grad(rt_instance *s)
{
    if (s->desc->kind == RT_KIND_STUDENT) zero_grads(s, s->desc->student->zero_grad);
}

void rt_loss_zero_grad(rt_instance *l)
{
    if (l->desc->kind == RT_KIND_LOSS && l->desc->loss->parameters) zero_grads(l, l->desc->loss->zero_grad);
}

rt_status rt_teacher_forward_ids(rt_instance *t, rt_ctx *ctx, const rt_tensor *x, const rt_tensor *ids, rt_signal *out)
{
    char a[64], b[64];
    memset(out, 0, sizeof *out);
    if (check_kind(t, ctx, RT_KIND_TEACHER)) return rt_ctx_status(ctx);
    if (!x) {
        rt_error(ctx, RT_STATUS_ERR_ARG, "input is missing");
        return fail(t, ctx);
    }
    if ((x->dtype != RT_DTYPE_F32 && x->dtype != RT_DTYPE_I32) || x->ndim < 1 || !rt_is_contiguous(x)) {
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "input must be contiguous f32 or i32 [N, ...], got %s %s",
                 rt_dtype_name(x->dtype), rt_tensor_shape_str(x, a, sizeof a));
        return fail(t, ctx);
    }
    if (ids && (check_arg(ctx, "sample ids", ids, RT_DTYPE_I64, 1) || ids->ndim != 1 || ids->shape[0] != x->shape[0])) {
        if (ids->dtype == RT_DTYPE_I64)
            rt_error(ctx, RT_STATUS_ERR_SHAPE, "sample ids %s vs input %s", rt_tensor_shape_str(ids, a, sizeof a),
                     rt_tensor_shape_str(x, b, sizeof b));
        return fail(t, ctx);
    }
    rt_batch batch = {.size = sizeof batch, .x = x, .ids = ids};
    rt_status st = t->desc->teacher->forward(t->self, ctx, &batch, out);
    if (!st && !out->logits && !out->topk_ids)
        st = rt_error(ctx, RT_STATUS_ERR_PLUGIN, "forward returned neither logits nor top-k");
    if (!st && out->logits && (out->logits->ndim < 2 || out->logits->shape[0] != x->shape[0]))
        st = rt_error(ctx, RT_STATUS_ERR_PLUGIN, "forward returned logits that are not [N, ..., C] for N = %lld",
                      (long long)x->shape[0]);
    return done(t, ctx, st);
}

rt_status rt_teacher_forward(rt_instance *t, rt_ctx *ctx, const rt_tensor *x, rt_signal *out)
{
    return rt_teacher_forward_ids(t, ctx, x, NULL, out);
}

int rt_loss_features(rt_instance *l, rt_feature_req *out, int max)
{
    if (l->desc->kind != RT_KIND_LOSS || !l->desc->loss->features) return 0;
    return l->desc->loss->features(l->self, out, max);
}

int rt_loss_bound(const rt_instance *l) { return l->bound; }

/* What every loss may rely on: [N, ..., C] f32 student output; teacher
 * logits of the same shape when it needs a teacher; [N, ...] i32 labels in
 * [0, C) when it needs targets; a [N, ...] i32 0/1 mask or none; the
 * features it declared, [N, ...] f32; norm > 0 (filled in here when the
 * caller left it 0: the count of real positions).  *in is the caller's
 * copy, completed here. */
static rt_status check_loss_in(rt_instance *l, rt_ctx *ctx, rt_loss_in *in, int backward)
{
    char a[64], b[64];
    const rt_tensor *s = in->student;
    if (check_arg(ctx, "student logits", s, RT_DTYPE_F32, 2)) return RT_STATUS_ERR_SHAPE;
    int64_t C = s->shape[s->ndim - 1], npos = 1; /* positions: the product of the leading dims */
    for (int k = 0; k < s->ndim - 1; k++) npos *= s->shape[k];
    unsigned needs = l->desc->loss->needs;
    if (needs & RT_NEEDS_TEACHER) {
        if (!in->teacher) return rt_error(ctx, RT_STATUS_ERR_ARG, "needs a teacher signal and got none");
        const rt_tensor *t = in->teacher->logits;
        if (!t) return rt_error(ctx, RT_STATUS_ERR_ARG, "needs dense teacher logits (got a top-k signal)");
        if (check_arg(ctx, "teacher logits", t, RT_DTYPE_F32, 2)) return RT_STATUS_ERR_SHAPE;
        if (!rt_tensor_same_shape(s, t))
            return rt_error(ctx, RT_STATUS_ERR_SHAPE, "student logits %s vs teacher logits %s",
                            rt_tensor_shape_str(s, a, sizeof a), rt_tensor_shape_str(t, b, sizeof b));
    }
    /* target and mask: [N, ...], the student's shape without C */
    const rt_tensor *pos[2] = {needs & RT_NEEDS_TARGET ? in->target : NULL, in->mask};
    const char *pname[2] = {"target labels", "mask"};
    if ((needs & RT_NEEDS_TARGET) && !in->target) return rt_error(ctx, RT_STATUS_ERR_ARG, "needs target labels and got none");
    for (int k = 0; k < 2; k++) {
        const rt_tensor *y = pos[k];
        if (!y) continue;
        if (check_arg(ctx, pname[k], y, RT_DTYPE_I32, 1)) return RT_STATUS_ERR_SHAPE;
        int same = y->ndim == s->ndim - 1;
        for (int d = 0; same && d < y->ndim; d++) same = y->shape[d] == s->shape[d];
        if (!same)
            return rt_error(ctx, RT_STATUS_ERR_SHAPE, "student logits %s vs %s %s (want the logits' shape without C)",
                            rt_tensor_shape_str(s, a, sizeof a), pname[k], rt_tensor_shape_str(y, b, sizeof b));
        const int32_t *yy = rt_i32(y);
        for (int64_t i = 0; i < npos; i++) {
            if (k == 0 && (yy[i] < 0 || yy[i] >= C) && !(in->mask && !rt_i32(in->mask)[i]))
                return rt_error(ctx, RT_STATUS_ERR_ARG, "target label %d at %s %lld is outside [0, %lld)", yy[i],
                                s->ndim == 2 ? "row" : "position", (long long)i, (long long)C);
            if (k == 1 && yy[i] != 0 && yy[i] != 1)
                return rt_error(ctx, RT_STATUS_ERR_ARG, "mask value %d at position %lld is not 0 or 1", yy[i],
                                (long long)i);
        }
    }
    int64_t real = npos; /* this batch's real positions */
    if (in->mask) {
        real = 0;
        for (int64_t i = 0; i < npos; i++) real += rt_i32(in->mask)[i];
    }
    if (in->norm == 0) in->norm = (double)real;
    if (!(in->norm >= 0) || in->norm > 1e15)
        return rt_error(ctx, RT_STATUS_ERR_ARG, "norm %g must be a count of positions >= 0", in->norm);
    if (in->norm < (double)real)
        return rt_error(ctx, RT_STATUS_ERR_ARG,
                        "norm %g is less than the %lld real positions of this batch (it counts the whole global "
                        "batch)", in->norm, (long long)real);
    int nf = rt_loss_features(l, NULL, 0);
    if (nf != in->nfeatures || (nf && !in->features))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "declares %d feature%s and was given %d", nf, nf == 1 ? "" : "s",
                        in->features ? in->nfeatures : 0);
    for (int k = 0; k < nf; k++) {
        char what[48];
        snprintf(what, sizeof what, "feature %d", k);
        if (check_arg(ctx, what, in->features[k], RT_DTYPE_F32, 1)) return RT_STATUS_ERR_SHAPE;
        if (in->features[k]->shape[0] != s->shape[0])
            return rt_error(ctx, RT_STATUS_ERR_SHAPE, "student logits %s vs %s %s", rt_tensor_shape_str(s, a, sizeof a),
                            what, rt_tensor_shape_str(in->features[k], b, sizeof b));
        rt_tensor *g = backward && in->feature_grads ? in->feature_grads[k] : NULL;
        if (g && (check_arg(ctx, "feature gradient", g, RT_DTYPE_F32, 1) || !rt_tensor_same_shape(g, in->features[k])))
            return rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s %s vs its gradient %s", what,
                            rt_tensor_shape_str(in->features[k], a, sizeof a), rt_tensor_shape_str(g, b, sizeof b));
    }
    if (!backward) in->feature_grads = NULL;
    in->size = sizeof *in;
    return RT_STATUS_OK;
}

/* bind runs once, before the first forward or backward reaches the plugin. */
static rt_status bind_once(rt_instance *l, rt_ctx *ctx, const rt_loss_in *in)
{
    if (l->bound || !l->desc->loss->bind) return RT_STATUS_OK;
    rt_status st = l->desc->loss->bind(l->self, ctx, in);
    if (!st) l->bound = 1;
    return st;
}

rt_status rt_loss_forward(rt_instance *l, rt_ctx *ctx, const rt_loss_in *in0, double *value)
{
    *value = 0;
    if (check_kind(l, ctx, RT_KIND_LOSS)) return rt_ctx_status(ctx);
    rt_loss_in in = *in0;
    if (check_loss_in(l, ctx, &in, 0) || bind_once(l, ctx, &in)) return fail(l, ctx);
    return done(l, ctx, l->desc->loss->forward(l->self, ctx, &in, value));
}

rt_status rt_loss_backward(rt_instance *l, rt_ctx *ctx, const rt_loss_in *in0, float scale, rt_tensor *grad)
{
    char a[64], b[64];
    if (check_kind(l, ctx, RT_KIND_LOSS)) return rt_ctx_status(ctx);
    rt_loss_in in = *in0;
    if (check_loss_in(l, ctx, &in, 1) || check_arg(ctx, "gradient", grad, RT_DTYPE_F32, 2)) return fail(l, ctx);
    if (!rt_tensor_same_shape(grad, in.student)) {
        rt_error(ctx, RT_STATUS_ERR_SHAPE, "gradient %s vs student logits %s", rt_tensor_shape_str(grad, a, sizeof a),
                 rt_tensor_shape_str(in.student, b, sizeof b));
        return fail(l, ctx);
    }
    if (bind_once(l, ctx, &in)) return fail(l, ctx);
    return done(l, ctx, l->desc->loss->backward(l->self, ctx, &in, scale, grad));
}

/* The options JSON with one number option replaced: a new string (free
 * it), or NULL when out of memory. */
/* A copy of the options JSON with `name` set to `value` (taken over: freed
 * on failure).  NULL when out of memory or the JSON does not parse. */
static char *options_with_item(const char *json, const char *name, cJSON *value)
{
    cJSON *root = value ? cJSON_Parse(json) : NULL;
    if (!root) {
        cJSON_Delete(value);
        return NULL;
    }
    char *out = NULL;
    cJSON *old = cJSON_GetObjectItemCaseSensitive(root, name);
    if (old) {
        /* The old item's name moves to the new one: cJSON's replace-by-name
         * copies the name and, out of memory, leaves an item named NULL. */
        value->string = old->string;
        old->string = NULL;
        cJSON_ReplaceItemViaPointer(root, old, value); /* cannot fail: all non-NULL */
        out = cJSON_PrintUnformatted(root);
    } else if (cJSON_AddItemToObject(root, name, value)) {
        out = cJSON_PrintUnformatted(root);
    } else {
        cJSON_Delete(value);
    }
    cJSON_Delete(root);
    return out;
}

static char *options_with(const char *json, const char *name, double value)
{
    return options_with_item(json, name, cJSON_CreateNumber(value));
}

rt_status rt_instance_record_option(rt_instance *i, rt_ctx *ctx, const char *name, const char *value_json)
{
    cJSON *v = cJSON_ParseWithOpts(value_json, NULL, 1);
    if (!v && value_json) return rt_error(ctx, RT_STATUS_ERR_ARG, "option '%s': value is not JSON", name);
    char *json = options_with_item(i->options, name, v);
    if (!json) return rt_error(ctx, RT_STATUS_ERR_NOMEM, "option '%s': out of memory", name);
    free(i->options);
    i->options = json;
    return RT_STATUS_OK;
}

/* The instance's options JSON follows set(), so that what a manifest
 * records is the value in force.  The new text is made before the plugin
 * is called: out of memory leaves both unchanged.  It allocates: a schedule
 * that changes an option every step pays a parse and a print per step. */
rt_status rt_loss_set(rt_instance *l, rt_ctx *ctx, const char *name, double value)
{
    if (check_kind(l, ctx, RT_KIND_LOSS)) return rt_ctx_status(ctx);
    if (!l->desc->loss->set) {
        rt_error(ctx, RT_STATUS_ERR_ARG, "options cannot change after creation (the plugin has no set)");
        return fail(l, ctx);
    }
    if (rt_option_check_number(ctx, l->desc, name, value)) return fail(l, ctx);
    char *json = options_with(l->options, name, value);
    if (!json) {
        rt_error(ctx, RT_STATUS_ERR_NOMEM, "set '%s': out of memory", name);
        return fail(l, ctx);
    }
    rt_status st = l->desc->loss->set(l->self, ctx, name, value);
    if (st) {
        free(json);
        return fail(l, ctx);
    }
    free(l->options);
    l->options = json;
    return done(l, ctx, RT_STATUS_OK);
}

int rt_instance_params(rt_instance *i, rt_param *out, int max)
{
    switch (i->desc->kind) {
    case RT_KIND_STUDENT: return i->desc->student->parameters(i->self, out, max);
    case RT_KIND_TEACHER:
        return i->desc->teacher->parameters ? i->desc->teacher->parameters(i->self, out, max) : 0;
    case RT_KIND_LOSS: return i->desc->loss->parameters ? i->desc->loss->parameters(i->self, out, max) : 0;
    default: return 0;
    }
}

int rt_instance_param_count(rt_instance *i)
{
    rt_param none; /* max 0: the plugin writes nothing */
    return rt_instance_params(i, &none, 0);
}

rt_param *rt_instance_params_all(rt_instance *i, rt_ctx *ctx, int *n)
{
    *n = rt_instance_param_count(i);
    rt_param *p = malloc(sizeof *p * (size_t)(*n > 0 ? *n : 1));
    if (!p) {
        rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s '%s': out of memory listing %d parameters", rt_kind_name(i->desc->kind),
                 i->desc->name, *n);
        return NULL;
    }
    int again = rt_instance_params(i, p, *n);
    if (again != *n) {
        rt_error(ctx, RT_STATUS_ERR_PLUGIN, "%s '%s': reported %d parameters, then %d", rt_kind_name(i->desc->kind),
                 i->desc->name, *n, again);
        free(p);
        return NULL;
    }
    return p;
}

int64_t rt_instance_flops(rt_instance *i)
{
    int64_t (*f)(void *) = i->desc->kind == RT_KIND_STUDENT   ? i->desc->student->flops
                           : i->desc->kind == RT_KIND_TEACHER ? i->desc->teacher->flops
                                                              : NULL;
    return f ? f(i->self) : -1;
}

rt_tensor *rt_instance_feature(rt_instance *i, const char *name)
{
    rt_tensor *(*f)(void *, const char *) = i->desc->kind == RT_KIND_STUDENT   ? i->desc->student->feature
                                            : i->desc->kind == RT_KIND_TEACHER ? i->desc->teacher->feature
                                                                               : NULL;
    return f ? f(i->self, name) : NULL;
}

const void *rt_instance_extension(rt_instance *i, const char *name)
{
    return name && i->desc->extension ? i->desc->extension(name) : NULL;
}

int rt_instance_features(rt_instance *i, const char **out, int max)
{
    int (*f)(void *, const char **, int) = i->desc->kind == RT_KIND_STUDENT   ? i->desc->student->features
                                           : i->desc->kind == RT_KIND_TEACHER ? i->desc->teacher->features
                                                                              : NULL;
    return f ? f(i->self, out, max) : 0;
}

rt_status rt_instance_record(rt_instance *i, rt_ctx *ctx, const char *name, int on)
{
    rt_status (*f)(void *, rt_ctx *, const char *, int) = i->desc->kind == RT_KIND_STUDENT ? i->desc->student->record
                                                          : i->desc->kind == RT_KIND_TEACHER
                                                              ? i->desc->teacher->record
                                                              : NULL;
    if (!f) {
        rt_error(ctx, RT_STATUS_ERR_ARG, "records no features (asked for '%s')", name ? name : "?");
        return fail(i, ctx);
    }
    if (!name) {
        rt_error(ctx, RT_STATUS_ERR_ARG, "feature name is missing");
        return fail(i, ctx);
    }
    rt_status st = f(i->self, ctx, name, on);
    if (st) {
        const char *names[16];
        int n = f ? rt_instance_features(i, names, 16) : 0;
        char list[256] = "";
        size_t len = 0;
        for (int k = 0; k < n && k < 16 && len < sizeof list - 70; k++)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%.60s", k ? ", " : "", names[k]);
        rt_error_prefix(ctx, "feature '%s' (it has: %s%s)", name, n ? list : "none", n > 16 ? ", ..." : "");
    }
    return done(i, ctx, st);
}

/* ---------------------------------------------------------- save and load */

rt_status rt_instance_save(rt_instance *i, rt_ctx *ctx, const char *path, int nmeta, const char *const *keys,
                           const char *const *values)
{
    int n = 0;
    rt_param *p = rt_instance_params_all(i, ctx, &n);
    if (!p) return rt_error_prefix(ctx, "save %s", path);
    const char **names = malloc(sizeof *names * (size_t)(n + 1));
    const rt_tensor **ts = malloc(sizeof *ts * (size_t)(n + 1));
    const char **k = malloc(sizeof *k * (size_t)(nmeta + 4));
    const char **v = malloc(sizeof *v * (size_t)(nmeta + 4));
    rt_status st = RT_STATUS_OK;
    if (!names || !ts || !k || !v) st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "save %s: out of memory", path);
    if (!st) {
        for (int j = 0; j < n; j++) {
            names[j] = p[j].name;
            ts[j] = p[j].value;
        }
        int m = 0;
        k[m] = "retort.kind", v[m++] = rt_kind_name(i->desc->kind);
        k[m] = "retort.plugin", v[m++] = i->desc->name;
        k[m] = "retort.options", v[m++] = i->options;
        k[m] = "retort.version", v[m++] = RT_VERSION;
        for (int j = 0; j < nmeta; j++) k[m] = keys[j], v[m++] = values[j];
        st = rt_st_write(ctx, path, n, names, (const rt_tensor *const *)ts, m, k, v);
        if (st) rt_error_prefix(ctx, "%s '%s'", rt_kind_name(i->desc->kind), i->desc->name);
    }
    free(p);
    free(names);
    free(ts);
    free(k);
    free(v);
    return st;
}

rt_status rt_instance_load_st(rt_instance *i, rt_ctx *ctx, const rt_st *f, const char *label)
{
    int n = 0;
    rt_param *p = rt_instance_params_all(i, ctx, &n);
    if (!p) return rt_error_prefix(ctx, "%s", label);
    rt_status st = RT_STATUS_OK;
    /* Check everything before copying anything: a failed load leaves the
     * parameters as they were. */
    for (int j = 0; j < n && !st; j++) {
        rt_tensor *t = rt_st_find(f, p[j].name);
        char a[64], b[64];
        if (!t)
            st = rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: no tensor '%s' for %s '%s' (the file has %d tensors)", label,
                          p[j].name, rt_kind_name(i->desc->kind), i->desc->name, rt_st_count(f));
        else if (t->dtype != p[j].value->dtype || !rt_tensor_same_shape(t, p[j].value))
            st = rt_error(ctx, RT_STATUS_ERR_SHAPE, "%s: tensor '%s' is %s %s, %s '%s' wants %s %s", label, p[j].name,
                          rt_dtype_name(t->dtype), rt_tensor_shape_str(t, a, sizeof a), rt_kind_name(i->desc->kind),
                          i->desc->name, rt_dtype_name(p[j].value->dtype),
                          rt_tensor_shape_str(p[j].value, b, sizeof b));
        else {
            /* Weights enter finite: the first NaN or inf is named here. */
            char what[320];
            snprintf(what, sizeof what, "tensor '%s'", p[j].name);
            if (rt_tensor_check_finite(ctx, t, what))
                st = rt_error_prefix(ctx, "%s: %s '%s' cannot use its weights", label, rt_kind_name(i->desc->kind),
                                     i->desc->name);
        }
    }
    for (int j = 0; j < n && !st; j++)
        st = rt_tensor_copy(ctx, p[j].value, rt_st_find(f, p[j].name));
    free(p);
    return st;
}

rt_status rt_instance_load(rt_instance *i, rt_ctx *ctx, const char *path)
{
    rt_st *f = NULL;
    if (rt_st_read(ctx, path, &f)) return rt_ctx_status(ctx);
    rt_status st = rt_instance_load_st(i, ctx, f, path);
    rt_st_free(f);
    return st;
}

/* --------------------------------------------------------- the host table */

static rt_status api_error(rt_ctx *ctx, rt_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rt_verror(ctx, code, fmt, ap);
    va_end(ap);
    return code;
}

static rt_status api_instance_create(rt_ctx *ctx, rt_kind kind, const char *name, const char *opts_json,
                                     rt_instance **out)
{
    if (!ctx->registry) {
        *out = NULL;
        return rt_error(ctx, RT_STATUS_ERR_STATE, "no plugin registry in this context");
    }
    return rt_instance_create(ctx->registry, ctx, kind, name, opts_json, out);
}

static rt_status api_checkpoint_meta(rt_ctx *ctx, const char *path, const char *key, char *buf, size_t len)
{
    rt_st *f = NULL;
    if (rt_st_read_meta(ctx, path, &f)) return rt_ctx_status(ctx);
    const char *v = rt_st_meta_get(f, key);
    rt_status st = RT_STATUS_OK;
    if (!v) st = rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: no metadata '%s'", path, key);
    else if (strlen(v) >= len) st = rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: metadata '%s' is too long", path, key);
    else memcpy(buf, v, strlen(v) + 1);
    rt_st_free(f);
    return st;
}

/* Slack over twice the file's size for what an architecture allocates
 * beyond its parameters and their gradients. */
#define CKPT_SLACK ((int64_t)16 << 20)

rt_status rt_instance_from_checkpoint(rt_registry *r, rt_ctx *ctx, rt_kind kind, const char *name,
                                      const char *opts_json, const char *path, rt_instance **out)
{
    *out = NULL;
    rt_st *meta = NULL;
    /* The header is validated against the file's size (every tensor's
     * bytes present) before anything is built from it. */
    if (rt_st_read_meta(ctx, path, &meta)) return rt_ctx_status(ctx);
    rt_status st = RT_STATUS_OK;
    char *nm = NULL, *op = NULL;
    if (!name || !*name) {
        const char *v = rt_st_meta_get(meta, "retort.plugin");
        if (!v)
            st = rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: no metadata 'retort.plugin' (which model the file holds)",
                          path);
        else if (!(nm = strdup(v))) st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory", path);
        if (!st) {
            v = rt_st_meta_get(meta, "retort.options");
            if (!v)
                st = rt_error(ctx, RT_STATUS_ERR_FORMAT, "%s: no metadata 'retort.options' (the model's options)",
                              path);
            else if (!(op = strdup(v))) st = rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: out of memory", path);
        }
        name = nm;
        opts_json = op;
    }
    rt_st_free(meta);
    struct stat sb;
    if (!st && stat(path, &sb) != 0) st = rt_error(ctx, RT_STATUS_ERR_IO, "%s: stat: %s", path, strerror(errno));
    if (!st) {
        int64_t size = (int64_t)sb.st_size;
        int64_t limit = size > (INT64_MAX - CKPT_SLACK) / 2 ? INT64_MAX : 2 * size + CKPT_SLACK;
        char why[sizeof ctx->budget_why];
        snprintf(why, sizeof why, "what the checkpoint %.160s (%lld bytes) can hold: 2 x its size + 16 MiB", path,
                 (long long)size);
        budget_save bs;
        budget_begin(ctx, &bs, limit, why);
        st = rt_instance_create(r, ctx, kind, name, opts_json, out);
        budget_end(ctx, &bs);
        if (st) rt_error_prefix(ctx, "%s", path);
    }
    if (!st && (st = rt_instance_load(*out, ctx, path))) {
        rt_instance_release(*out);
        *out = NULL;
    }
    free(nm);
    free(op);
    return st;
}

static rt_status api_instance_from_checkpoint(rt_ctx *ctx, rt_kind kind, const char *name, const char *opts_json,
                                              const char *path, rt_instance **out)
{
    if (!ctx->registry) {
        *out = NULL;
        return rt_error(ctx, RT_STATUS_ERR_STATE, "no plugin registry in this context");
    }
    return rt_instance_from_checkpoint(ctx->registry, ctx, kind, name, opts_json, path, out);
}

static rt_status api_params_load(rt_ctx *ctx, rt_instance *inst, const char *path)
{
    return rt_instance_load(inst, ctx, path);
}

static rt_status api_teacher_forward(rt_instance *t, rt_ctx *ctx, const rt_batch *b, rt_signal *out)
{
    if (!b) {
        memset(out, 0, sizeof *out);
        return rt_error(ctx, RT_STATUS_ERR_ARG, "teacher_forward: no batch");
    }
    return rt_teacher_forward_ids(t, ctx, b->x, b->size >= offsetof(rt_batch, ids) + sizeof b->ids ? b->ids : NULL,
                                  out);
}

static const rt_api host_api = {
    .abi_major = RT_ABI_MAJOR,
    .abi_minor = RT_ABI_MINOR,
    .size = sizeof(rt_api),
    .error = api_error,
    .tensor_new = rt_tensor_new,
    .tensor_retain = rt_tensor_retain,
    .tensor_release = rt_tensor_release,
    .tensor_ensure = rt_tensor_ensure,
    .shape_str = rt_tensor_shape_str,
    .scratch = rt_scratch,
    .ctx_rng = rt_ctx_rng,
    .rng_seed = rt_rng_seed,
    .rng_u64 = rt_rng_u64,
    .rng_uniform = rt_rng_uniform,
    .rng_normal = rt_rng_normal,
    .opt_number = rt_opts_number,
    .opt_int = rt_opts_int,
    .opt_bool = rt_opts_bool,
    .opt_string = rt_opts_string,
    .opt_int_list = rt_opts_int_list,
    .opt_json = rt_opts_json,
    .gemm = rt_gemm,
    .bias_act = rt_bias_act,
    .bias_act_backward = rt_bias_act_backward,
    .softmax = rt_softmax,
    .log_softmax = rt_log_softmax,
    .instance_create = api_instance_create,
    .instance_release = rt_instance_release,
    .instance_desc = rt_instance_desc,
    .instance_self = rt_instance_self,
    .params_load = api_params_load,
    .checkpoint_meta = api_checkpoint_meta,
    .log_softmax_f64 = rt_log_softmax_f64,
    .instance_from_checkpoint = api_instance_from_checkpoint,
    .tensor_view = rt_tensor_view,
    .tensor_narrow = rt_tensor_narrow,
    .tensor_reshape = rt_tensor_reshape,
    .student_forward = rt_student_forward,
    .student_backward = rt_student_backward,
    .teacher_forward = api_teacher_forward,
    .instance_params = rt_instance_params,
    .instance_feature = rt_instance_feature,
    .instance_flops = rt_instance_flops,
    .instance_input_spec = rt_instance_input_spec,
    .instance_record = rt_instance_record,
    .instance_features = rt_instance_features,
    .instance_extension = rt_instance_extension,
    /* ---- conv kernels ---- */
    .conv2d_geom_check = rt_conv2d_geom_check,
    .conv2d_workspace = rt_conv2d_workspace,
    .conv2d_forward = rt_conv2d_forward,
    .conv2d_backward = rt_conv2d_backward,
    .pool2d_geom_check = rt_pool2d_geom_check,
    .maxpool2d_forward = rt_maxpool2d_forward,
    .maxpool2d_backward = rt_maxpool2d_backward,
    .avgpool2d_forward = rt_avgpool2d_forward,
    .avgpool2d_backward = rt_avgpool2d_backward,
    .global_avgpool_forward = rt_global_avgpool_forward,
    .global_avgpool_backward = rt_global_avgpool_backward,
    .batchnorm_train_forward = rt_batchnorm_train_forward,
    .batchnorm_eval_forward = rt_batchnorm_eval_forward,
    .batchnorm_train_backward = rt_batchnorm_train_backward,
    .batchnorm_eval_backward = rt_batchnorm_eval_backward,
    .residual_add = rt_residual_add,
    .residual_add_backward = rt_residual_add_backward,
};

const rt_api *rt_host_api(void) { return &host_api; }
