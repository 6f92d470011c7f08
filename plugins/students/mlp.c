/*
 * mlp -- student: a multi-layer perceptron.
 *
 *   h_0 = x (flattened to [N, sizes[0]])
 *   h_l = dropout(act(h_{l-1} W_l^T + b_l))   for hidden layers
 *   logits = h_{L-1} W_L^T + b_L              (no activation, no dropout)
 *
 * Options
 *   sizes       [784, 128, 10]  layer widths, input first, classes last
 *   activation  "relu"          relu | gelu (tanh approximation) | tanh
 *   dropout     0               drop probability after each hidden layer
 *                               (inverted dropout: kept units scaled 1/(1-p))
 *   seed        1               initialisation seed
 *
 * Parameters are named and shaped as PyTorch's state_dict of
 * `layers = nn.ModuleList(nn.Linear(...))`: "layers.0.weight" [out, in],
 * "layers.0.bias" [out].  Initialisation is PyTorch's nn.Linear default:
 * weight and bias uniform in +-1/sqrt(fan_in).
 *
 * Features (for hint losses and taps): "layers.<l>" is hidden layer l's
 * output after activation and dropout; "logits" the output.
 *
 * Memory: activations are kept per layer and reused while the batch size
 * stays the same, so a training step allocates nothing after the first.
 * zero_grad is lazy: the next backward overwrites the gradients instead of
 * adding to them, which saves one pass over every gradient per step.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_plugin.h"

#define MAX_LAYERS 16

static const rt_api *api;

typedef struct layer {
    int64_t in, out;
    rt_tensor *w, *b, *gw, *gb;
    rt_tensor *act;  /* [N, out] activation output (before dropout) */
    rt_tensor *pre;  /* [N, out] pre-activation, gelu only */
    rt_tensor *mask; /* [N, out] dropout multipliers, train only */
    rt_tensor *dx;   /* [N, in] gradient wrt this layer's input */
    char wname[32], bname[32], fname[32];
} layer;

typedef struct mlp {
    int nl;
    layer l[MAX_LAYERS];
    rt_act act;
    float dropout;
    const rt_tensor *x; /* retained input of the last forward */
    int trained;        /* last forward was in train mode */
    int have_forward;
    int grads_stale;    /* lazy zero_grad pending */
    rt_tensor *dout;    /* [N, C] scratch gradient for the output layer */
} mlp;

static const rt_option options[] = {
    {"sizes", RT_OPT_INT_LIST, "[784,128,10]", 1, 1e8, NULL, "layer widths, input first, classes last"},
    {"activation", RT_OPT_STRING, "\"relu\"", 1, 0, "relu|gelu|tanh", "hidden activation"},
    {"dropout", RT_OPT_NUMBER, "0", 0, 0.95, NULL, "drop probability after each hidden layer"},
    {"seed", RT_OPT_INT, "1", 0, 9007199254740991.0, NULL, "initialisation seed"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static void destroy(void *self)
{
    mlp *m = self;
    if (!m) return;
    for (int i = 0; i < m->nl; i++) {
        layer *L = &m->l[i];
        rt_tensor *ts[] = {L->w, L->b, L->gw, L->gb, L->act, L->pre, L->mask, L->dx};
        for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) api->tensor_release(ts[k]);
    }
    api->tensor_release((rt_tensor *)m->x);
    api->tensor_release(m->dout);
    free(m);
}

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    int64_t sizes[MAX_LAYERS + 1];
    int n = api->opt_int_list(o, "sizes", sizes, MAX_LAYERS + 1);
    if (n < 2 || n > MAX_LAYERS + 1)
        return api->error(ctx, RT_STATUS_ERR_ARG, "option 'sizes' needs 2 to %d widths, got %d", MAX_LAYERS + 1, n);
    const char *an = api->opt_string(o, "activation");
    mlp *m = calloc(1, sizeof *m);
    if (!m) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    m->act = !strcmp(an, "gelu") ? RT_ACT_GELU : !strcmp(an, "tanh") ? RT_ACT_TANH : RT_ACT_RELU;
    m->dropout = (float)api->opt_number(o, "dropout");
    rt_rng rng;
    api->rng_seed(&rng, (uint64_t)api->opt_int(o, "seed"), 0);
    for (int i = 0; i < n - 1; i++) {
        layer *L = &m->l[i];
        m->nl = i + 1;
        L->in = sizes[i];
        L->out = sizes[i + 1];
        int64_t ws[2] = {L->out, L->in};
        /* Stops at the first refusal (the host's size bound or OOM), so its
         * message is the one reported and nothing more is allocated. */
        if (!(L->w = api->tensor_new(ctx, RT_DTYPE_F32, 2, ws)) ||
            !(L->gw = api->tensor_new(ctx, RT_DTYPE_F32, 2, ws)) ||
            !(L->b = api->tensor_new(ctx, RT_DTYPE_F32, 1, &L->out)) ||
            !(L->gb = api->tensor_new(ctx, RT_DTYPE_F32, 1, &L->out))) {
            destroy(m);
            return RT_STATUS_ERR_NOMEM; /* tensor_new set the message */
        }
        float bound = 1.0f / sqrtf((float)L->in);
        float *w = rt_f32(L->w), *b = rt_f32(L->b);
        for (int64_t k = 0; k < L->out * L->in; k++) w[k] = (2 * api->rng_uniform(&rng) - 1) * bound;
        for (int64_t k = 0; k < L->out; k++) b[k] = (2 * api->rng_uniform(&rng) - 1) * bound;
        snprintf(L->wname, sizeof L->wname, "layers.%d.weight", i);
        snprintf(L->bname, sizeof L->bname, "layers.%d.bias", i);
        snprintf(L->fname, sizeof L->fname, "layers.%d", i);
    }
    *self = m;
    return RT_STATUS_OK;
}

static int hidden(const mlp *m, int i) { return i < m->nl - 1; }

static rt_status forward(void *self, rt_ctx *ctx, const rt_tensor *x, int train, rt_tensor **out)
{
    mlp *m = self;
    int64_t N = x->shape[0];
    if (rt_row_size(x) != m->l[0].in) {
        char b[64];
        return api->error(ctx, RT_STATUS_ERR_SHAPE, "input %s has %lld features per sample, the first layer takes %lld",
                          api->shape_str(x, b, sizeof b), (long long)rt_row_size(x), (long long)m->l[0].in);
    }
    const float *h = rt_f32(x);
    rt_rng *rng = api->ctx_rng(ctx);
    for (int i = 0; i < m->nl; i++) {
        layer *L = &m->l[i];
        int64_t s[2] = {N, L->out};
        int use_pre = hidden(m, i) && m->act == RT_ACT_GELU;
        int use_mask = hidden(m, i) && train && m->dropout > 0;
        if (api->tensor_ensure(ctx, &L->act, RT_DTYPE_F32, 2, s) ||
            (use_pre && api->tensor_ensure(ctx, &L->pre, RT_DTYPE_F32, 2, s)) ||
            (use_mask && api->tensor_ensure(ctx, &L->mask, RT_DTYPE_F32, 2, s)))
            return RT_STATUS_ERR_NOMEM;
        float *y = rt_f32(L->act);
        /* y[N,out] = h[N,in] W[out,in]^T, then bias and activation */
        api->gemm(0, 1, N, L->out, L->in, 1.0f, h, L->in, rt_f32(L->w), L->in, 0.0f, y, L->out);
        api->bias_act(y, rt_f32(L->b), N, L->out, hidden(m, i) ? m->act : RT_ACT_NONE,
                      use_pre ? rt_f32(L->pre) : NULL);
        if (use_mask) {
            /* Inverted dropout in place; the mask keeps 0 or 1/(1-p) for
             * backward, and act then holds the dropped output. */
            float *mk = rt_f32(L->mask), keep = 1.0f - m->dropout, sc = 1.0f / keep;
            for (int64_t k = 0; k < N * L->out; k++) {
                mk[k] = api->rng_uniform(rng) < keep ? sc : 0.0f;
                y[k] *= mk[k];
            }
        }
        h = y;
    }
    if (m->x != x) {
        api->tensor_retain((rt_tensor *)x);
        api->tensor_release((rt_tensor *)m->x);
        m->x = x;
    }
    m->trained = train;
    m->have_forward = 1;
    *out = m->l[m->nl - 1].act;
    return RT_STATUS_OK;
}

static const rt_tensor *find_tap(const rt_tap *taps, int ntaps, const char *name)
{
    for (int k = 0; k < ntaps; k++)
        if (!strcmp(taps[k].name, name)) return taps[k].grad;
    return NULL;
}

static rt_status backward(void *self, rt_ctx *ctx, const rt_tensor *grad_out, const rt_tap *taps, int ntaps,
                          rt_tensor **grad_in)
{
    mlp *m = self;
    if (!m->have_forward) return api->error(ctx, RT_STATUS_ERR_STATE, "backward before forward");
    layer *last = &m->l[m->nl - 1];
    int64_t N = last->act->shape[0];
    char a[64], b[64];
    if (grad_out->ndim != 2 || grad_out->shape[0] != N || grad_out->shape[1] != last->out)
        return api->error(ctx, RT_STATUS_ERR_SHAPE, "output gradient %s vs output %s",
                          api->shape_str(grad_out, a, sizeof a), api->shape_str(last->act, b, sizeof b));
    for (int k = 0; k < ntaps; k++) {
        int found = 0;
        for (int i = 0; i < m->nl - 1; i++)
            if (!strcmp(taps[k].name, m->l[i].fname)) {
                found = 1;
                if (!rt_is_contiguous(taps[k].grad) || taps[k].grad->shape[0] != N ||
                    rt_numel(taps[k].grad) != N * m->l[i].out)
                    return api->error(ctx, RT_STATUS_ERR_SHAPE, "tap '%s' gradient %s vs feature [%lld, %lld]",
                                      taps[k].name, api->shape_str(taps[k].grad, a, sizeof a), (long long)N,
                                      (long long)m->l[i].out);
            }
        if (!found) return api->error(ctx, RT_STATUS_ERR_ARG, "no feature '%s' to tap", taps[k].name);
    }
    int64_t cs[2] = {N, last->out};
    if (api->tensor_ensure(ctx, &m->dout, RT_DTYPE_F32, 2, cs)) return RT_STATUS_ERR_NOMEM;
    memcpy(rt_f32(m->dout), rt_f32(grad_out), sizeof(float) * (size_t)(N * last->out));
    float *d = rt_f32(m->dout); /* gradient wrt the current layer's output */
    float beta = m->grads_stale ? 0.0f : 1.0f;
    for (int i = m->nl - 1; i >= 0; i--) {
        layer *L = &m->l[i];
        const float *hin = i ? rt_f32(m->l[i - 1].act) : rt_f32(m->x);
        if (hidden(m, i)) {
            const rt_tensor *tap = find_tap(taps, ntaps, L->fname);
            if (tap)
                for (int64_t k = 0; k < N * L->out; k++) d[k] += rt_f32(tap)[k];
            if (m->trained && m->dropout > 0) {
                const float *mk = rt_f32(L->mask);
                for (int64_t k = 0; k < N * L->out; k++) d[k] *= mk[k];
            }
        }
        if (beta == 0.0f) memset(rt_f32(L->gb), 0, sizeof(float) * (size_t)L->out);
        /* relu and tanh differentiate through their output, which dropout
         * scaled in place.  relu only tests its sign, unchanged where kept;
         * dropped units already have d = 0.  tanh needs the unscaled value. */
        const float *y = rt_f32(L->act);
        if (hidden(m, i) && m->trained && m->dropout > 0 && m->act == RT_ACT_TANH) {
            /* tanh' = 1 - t^2 with t = act/scale where kept; dropped units
             * have d = 0 already, so their t does not matter. */
            float *t = api->scratch(ctx, sizeof(float) * (size_t)(N * L->out));
            if (!t) return RT_STATUS_ERR_NOMEM;
            float sc = 1.0f - m->dropout;
            for (int64_t k = 0; k < N * L->out; k++) t[k] = y[k] * sc;
            y = t;
        }
        api->bias_act_backward(d, y, L->pre ? rt_f32(L->pre) : NULL, N, L->out, hidden(m, i) ? m->act : RT_ACT_NONE,
                               rt_f32(L->gb));
        /* gW[out,in] (+)= d[N,out]^T h[N,in] */
        api->gemm(1, 0, L->out, L->in, N, 1.0f, d, L->out, hin, L->in, beta, rt_f32(L->gw), L->in);
        if (i == 0 && !grad_in) break;
        /* dx[N,in] = d[N,out] W[out,in] */
        int64_t xs[2] = {N, L->in};
        if (api->tensor_ensure(ctx, &L->dx, RT_DTYPE_F32, 2, xs)) return RT_STATUS_ERR_NOMEM;
        api->gemm(0, 0, N, L->in, L->out, 1.0f, d, L->out, rt_f32(L->w), L->in, 0.0f, rt_f32(L->dx), L->in);
        d = rt_f32(L->dx);
    }
    m->grads_stale = 0;
    if (grad_in) *grad_in = m->l[0].dx;
    return RT_STATUS_OK;
}

static void zero_grad(void *self) { ((mlp *)self)->grads_stale = 1; }

static int parameters(void *self, rt_param *out, int max)
{
    mlp *m = self;
    if (m->grads_stale) {
        /* Someone looks at the gradients before a backward: make the lazy
         * zeroing real. */
        for (int i = 0; i < m->nl; i++) {
            memset(rt_f32(m->l[i].gw), 0, sizeof(float) * (size_t)rt_numel(m->l[i].gw));
            memset(rt_f32(m->l[i].gb), 0, sizeof(float) * (size_t)rt_numel(m->l[i].gb));
        }
        m->grads_stale = 0;
    }
    int n = 0;
    for (int i = 0; i < m->nl; i++) {
        if (n < max) out[n] = (rt_param){m->l[i].wname, m->l[i].w, m->l[i].gw};
        n++;
        if (n < max) out[n] = (rt_param){m->l[i].bname, m->l[i].b, m->l[i].gb};
        n++;
    }
    return n;
}

static rt_tensor *feature(void *self, const char *name)
{
    mlp *m = self;
    if (!m->have_forward) return NULL;
    if (!strcmp(name, "logits")) return m->l[m->nl - 1].act;
    for (int i = 0; i < m->nl - 1; i++)
        if (!strcmp(name, m->l[i].fname)) return m->l[i].act;
    return NULL;
}

static int64_t flops(void *self)
{
    mlp *m = self;
    int64_t f = 0;
    for (int i = 0; i < m->nl; i++) f += 2 * m->l[i].in * m->l[i].out + m->l[i].out;
    return f;
}

static const rt_student_vt vt = {
    .forward = forward,
    .backward = backward,
    .parameters = parameters,
    .zero_grad = zero_grad,
    .feature = feature,
    .flops = flops,
};

static const rt_plugin_desc desc = {
    RT_DESC_INIT(RT_KIND_STUDENT, "mlp", "1.0.0", "multi-layer perceptron (PyTorch Linear naming and init)"),
    .options = options,
    .create = create,
    .destroy = destroy,
    .student = &vt,
};

static const rt_plugin_desc *const list[] = {&desc, NULL};

RT_EXPORT const rt_plugin_desc *const *rt_plugin_init(const rt_api *host, char *err, size_t errlen)
{
    api = host;
    return list;
}
