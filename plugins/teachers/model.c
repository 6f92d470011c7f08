/*
 * model -- teacher: a trained model of any student architecture, frozen.
 *
 * Wraps an instance of a student plugin (arch, with its options) and runs
 * its forward in evaluation mode; the signal is its dense logits.
 *
 * Options
 *   checkpoint   ""     safetensors file with the parameters; when arch is
 *                       empty, arch and its options are read from the
 *                       file's metadata ("retort.plugin", "retort.options")
 *   arch         ""     student plugin name (e.g. "mlp")
 *   options      {}     that plugin's options
 *   random_init  false  allow no checkpoint: the architecture's own
 *                       initialisation (tests)
 *   student      ""     a live student's weights, copied in by the host
 *                       right after create: in Lua, rt.teacher(net) or
 *                       rt.teacher("model", {student = net}) sets arch,
 *                       options and this option, the sha256 of those
 *                       weights (rt_params_sha256), which the manifest
 *                       records.  Needs arch; excludes checkpoint and
 *                       random_init.
 *
 * Every call into the wrapped student goes through the host's checked
 * calls (api->student_forward ...), so the student's input spec and output
 * checks hold here as for a student the host runs itself.  Sample ids are
 * not needed: the model computes from x.  Features: the student's.
 */
#include <stdlib.h>
#include <string.h>

#include "rt_plugin.h"

static const rt_api *api;

typedef struct model {
    rt_instance *net;
} model;

static const rt_option options[] = {
    {"checkpoint", RT_OPT_STRING, "\"\"", 1, 0, NULL, "safetensors checkpoint with the parameters"},
    {"arch", RT_OPT_STRING, "\"\"", 1, 0, NULL, "student plugin name; empty: from the checkpoint's metadata"},
    {"options", RT_OPT_OBJECT, "{}", 1, 0, NULL, "the architecture's options"},
    {"random_init", RT_OPT_BOOL, "false", 1, 0, NULL, "allow no checkpoint (untrained weights)"},
    {"student", RT_OPT_STRING, "\"\"", 1, 0, NULL,
     "a live student (Lua: rt.teacher(net) or {student = net}): its architecture and a copy of its weights; "
     "recorded as the sha256 of those weights"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static void destroy(void *self)
{
    model *m = self;
    if (!m) return;
    api->instance_release(m->net);
    free(m);
}

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    const char *ck = api->opt_string(o, "checkpoint");
    const char *arch = api->opt_string(o, "arch");
    const char *aopts = api->opt_json(o, "options");
    const char *student = api->opt_string(o, "student");
    if (*student) {
        size_t n = strspn(student, "0123456789abcdef");
        if (n != 64 || student[n])
            return api->error(ctx, RT_STATUS_ERR_ARG,
                              "option 'student' is the sha256 of the weights (64 lower-case hex digits) the host "
                              "copies in; from Lua, pass the student itself: rt.teacher(net)");
        if (*ck || api->opt_bool(o, "random_init"))
            return api->error(ctx, RT_STATUS_ERR_ARG, "'student' excludes 'checkpoint' and 'random_init'");
        if (!*arch) return api->error(ctx, RT_STATUS_ERR_ARG, "'student' needs the student's arch");
    } else if (!*ck && !api->opt_bool(o, "random_init")) {
        return api->error(ctx, RT_STATUS_ERR_ARG, "needs a checkpoint (or random_init = true)");
    }
    if (!*arch && !*ck) return api->error(ctx, RT_STATUS_ERR_ARG, "needs an arch when there is no checkpoint");
    model *m = calloc(1, sizeof *m);
    if (!m) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    /* From a checkpoint the host validates the file before it builds the
     * architecture (named by arch, or by the file's metadata), and bounds
     * what the architecture may allocate by the file's size. */
    rt_status st = *ck ? api->instance_from_checkpoint(ctx, RT_KIND_STUDENT, *arch ? arch : NULL, *arch ? aopts : NULL,
                                                       ck, &m->net)
                       : api->instance_create(ctx, RT_KIND_STUDENT, arch, aopts, &m->net);
    if (st) {
        destroy(m);
        return st;
    }
    *self = m;
    return RT_STATUS_OK;
}

static rt_status forward(void *self, rt_ctx *ctx, const rt_batch *b, rt_signal *out)
{
    model *m = self;
    rt_tensor *logits = NULL;
    rt_status st = api->student_forward(m->net, ctx, b->x, 0, &logits);
    if (st) return st;
    if (logits->ndim < 2) return api->error(ctx, RT_STATUS_ERR_SHAPE, "the architecture's output is not [N, ..., C]");
    out->logits = logits;
    return RT_STATUS_OK;
}

/* The wrapped parameters, frozen: grad NULL. */
static int parameters(void *self, rt_param *out, int max)
{
    model *m = self;
    int n = api->instance_params(m->net, out, max);
    for (int i = 0; i < n && i < max; i++) {
        out[i].grad = NULL;
        if (out[i].role == RT_ROLE_TRAINABLE) out[i].role = RT_ROLE_FROZEN;
    }
    return n;
}

static rt_tensor *feature(void *self, const char *name) { return api->instance_feature(((model *)self)->net, name); }

static int64_t flops(void *self) { return api->instance_flops(((model *)self)->net); }

static int features(void *self, const char **out, int max)
{
    return api->instance_features(((model *)self)->net, out, max);
}

static rt_status record(void *self, rt_ctx *ctx, const char *name, int on)
{
    return api->instance_record(((model *)self)->net, ctx, name, on);
}

static const rt_teacher_vt vt = {.size = sizeof vt, .forward = forward, .parameters = parameters, .feature = feature,
                                 .flops = flops, .features = features, .record = record};
static const rt_plugin_desc desc = {
    RT_DESC_INIT(RT_KIND_TEACHER, "model", "1.0.0", "a trained model of any student architecture, frozen"),
    .options = options, .create = create, .destroy = destroy, .teacher = &vt};

RT_PLUGIN_LIST(&desc)
