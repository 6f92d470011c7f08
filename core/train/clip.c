/*
 * clip.c -- gradient clipping by global norm (retort.h: rt_clip_grad_norm).
 * The norm runs over the same parameters the optimizer updates (trainable,
 * with a gradient), so a loss's own parameters, when the caller lists them
 * with the student's, count too.
 */
#include "retort.h"

#include <math.h>

rt_status rt_clip_grad_norm(rt_ctx *ctx, const rt_param *params, int n, double max_norm, double *norm)
{
    if (norm) *norm = 0;
    if (!(isfinite(max_norm) && max_norm > 0))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "clip_grad_norm: the limit must be a finite number > 0 (got %g)",
                        max_norm);
    if (n < 0 || (n > 0 && !params))
        return rt_error(ctx, RT_STATUS_ERR_ARG, "clip_grad_norm: bad parameter list (%d entries)", n);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        const rt_param *p = &params[i];
        if (!p->grad || p->role != RT_ROLE_TRAINABLE) continue;
        if (p->grad->dtype != RT_DTYPE_F32 || !rt_is_contiguous(p->grad))
            return rt_error(ctx, RT_STATUS_ERR_ARG, "clip_grad_norm: the gradient of '%s' must be contiguous f32",
                            p->name ? p->name : "?");
        const float *g = rt_f32(p->grad);
        int64_t len = rt_numel(p->grad);
        double s = 0;
        for (int64_t k = 0; k < len; k++) s += (double)g[k] * (double)g[k];
        sum += s;
    }
    double total = sqrt(sum);
    if (norm) *norm = total;
    if (!isfinite(total) || total <= max_norm) return RT_STATUS_OK;
    float scale = (float)(max_norm / total);
    for (int i = 0; i < n; i++) {
        const rt_param *p = &params[i];
        if (!p->grad || p->role != RT_ROLE_TRAINABLE) continue;
        float *g = rt_f32(p->grad);
        int64_t len = rt_numel(p->grad);
        for (int64_t k = 0; k < len; k++) g[k] *= scale;
    }
    return RT_STATUS_OK;
}
