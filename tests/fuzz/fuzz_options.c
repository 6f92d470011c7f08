/*
 * fuzz_options.c -- libFuzzer target for plugin options: the input is the
 * JSON text a recipe's table (or a checkpoint's "retort.options") becomes,
 * validated against a schema with every option type, then handed to a
 * create that reads every option through the getters plugins use.  Built
 * and run by `make fuzz`.
 * Any input must give OK or an error status with a message; accepted
 * options must print as JSON that validates again to the same text.
 */
#include "options.h"
#include "retort.h"

#include <stdlib.h>
#include <string.h>

static const rt_option opts[] = {
    {"temperature", RT_OPT_NUMBER, "4", 1e-4, 1e4, NULL, "a bounded number"},
    {"any", RT_OPT_NUMBER, "0", 1, 0, NULL, "an unbounded number"},
    {"seed", RT_OPT_INT, "1", 0, 9007199254740991.0, NULL, "an integer"},
    {"flag", RT_OPT_BOOL, "false", 1, 0, NULL, "a boolean"},
    {"activation", RT_OPT_STRING, "\"relu\"", 1, 0, "relu|gelu|tanh", "a choice"},
    {"path", RT_OPT_STRING, "\"\"", 1, 0, NULL, "any string"},
    {"sizes", RT_OPT_INT_LIST, "[784,128,10]", 1, 1e8, NULL, "a list of integers"},
    {"options", RT_OPT_OBJECT, "{}", 1, 0, NULL, "an object"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    int64_t sizes[32];
    double acc = rt_opts_number(o, "temperature") + rt_opts_number(o, "any") + (double)rt_opts_int(o, "seed") +
                 rt_opts_bool(o, "flag");
    const char *a = rt_opts_string(o, "activation"), *p = rt_opts_string(o, "path"), *j = rt_opts_json(o, "options");
    int n = rt_opts_int_list(o, "sizes", sizes, 32);
    if (!a || !p || !j || n < 0 || acc != acc) abort(); /* validated: all present, finite */
    *self = malloc(1);
    return *self ? RT_STATUS_OK : rt_error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
}

static void destroy(void *self) { free(self); }
static rt_status fwd(void *self, rt_ctx *ctx, const rt_loss_in *in, double *v) { return RT_STATUS_OK; }
static rt_status bwd(void *self, rt_ctx *ctx, const rt_loss_in *in, float s, rt_tensor *g) { return RT_STATUS_OK; }
static const rt_loss_vt vt = {.forward = fwd, .backward = bwd};
static const rt_plugin_desc desc = {
    RT_DESC_INIT(RT_KIND_LOSS, "fuzz_opts", "1.0.0", "fuzz target"),
    .options = opts,
    .create = create,
    .destroy = destroy,
    .loss = &vt,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rt_ctx *ctx = rt_ctx_new();
    char *text = malloc(size + 1);
    if (!ctx || !text) goto out;
    memcpy(text, data, size);
    text[size] = 0;
    rt_instance *in = NULL;
    rt_status st = rt_instance_from_desc(ctx, &desc, text, &in);
    if (st == RT_STATUS_OK) {
        const char *v = in ? rt_instance_options(in) : NULL;
        char *again = NULL;
        if (!v || rt_options_validate(ctx, &desc, v, &again) || strcmp(again, v) != 0) abort();
        free(again);
        rt_instance_release(in);
    } else if (in || rt_ctx_message(ctx)[0] == 0) {
        abort();
    }
out:
    free(text);
    rt_ctx_free(ctx);
    return 0;
}
