/*
 * api.c -- the function table handed to plugins (rt_api): the host's own
 * functions where their signatures fit, thin adapters where they do not.
 * Plugins reach everything through it; the table is registered with the
 * loader when the library loads, so that plugin.c, which calls it, does not
 * depend on this file (no call cycle between the two).
 */
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include "ctx.h"
#include "options.h"
#include "plugin_host.h"
#include "rt_conv.h"
#include "rt_lm.h"

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
    /* ---- language-model kernels ---- */
    .embedding_forward = rt_embedding_forward,
    .embedding_backward = rt_embedding_backward,
    .layernorm_forward = rt_layernorm_forward,
    .layernorm_backward = rt_layernorm_backward,
    .attention_forward = rt_attention_forward,
    .attention_workspace = rt_attention_workspace,
    .attention_backward = rt_attention_backward,
    .attention_check = rt_attention_check,
    .attention_step_workspace = rt_attention_step_workspace,
    .attention_step = rt_attention_step,
    .tied_logits = rt_tied_logits,
    .tied_logits_backward = rt_tied_logits_backward,
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
    .fill = rt_fill,
    .relu_forward = rt_relu_forward,
    .relu_backward = rt_relu_backward,
    .maxpool2d_backward_set = rt_maxpool2d_backward_set,
    .batchnorm_train_backward_set = rt_batchnorm_train_backward_set,
};

const rt_api *rt_host_api(void) { return &host_api; }

/* Hands the table to the loader when the library (or a program linking
 * the core's objects) starts: see rt_registry_set_host_api. */
__attribute__((constructor)) static void register_host_api(void) { rt_registry_set_host_api(rt_host_api); }
