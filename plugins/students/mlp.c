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
 * Input spec: f32, sizes[0] values per sample in any layout ([N, 784] or
 * [N, 28, 28]).
 *
 * Features (for hint losses and taps): "layers.<l>" is hidden layer l's
 * output after activation and dropout; "logits" the output.  They are kept
 * for backward anyway, so recording costs nothing; feature() hands out only
 * recorded ones (the kit's rule); a tap on "logits" adds to the output
 * gradient.
 *
 * Built on the layer kit (rt_nn.h): this file is the composition.
 *
 * Memory: activations are kept per layer and reused while the batch size
 * stays the same, so a training step allocates nothing after the first.
 * zero_grad is lazy: the next backward overwrites the gradients instead of
 * adding to them, which saves one pass over every gradient per step.
 */
#include <stdlib.h>

#include "rt_nn.h"

#define MAX_LAYERS 16

typedef struct mlp {
    int nl;
    rtn_linear l[MAX_LAYERS];
    rtn_dropout drop[MAX_LAYERS]; /* after each hidden layer */
    rtn_feature feat[MAX_LAYERS]; /* "layers.<l>" for hidden l, then "logits" */
    rtn_grads grads;
    const rt_tensor *x; /* retained input of the last forward */
    int have_forward;
    rt_tensor *dout; /* [N, C] scratch gradient for the output layer */
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
        rtn_linear_free(&m->l[i]);
        api->tensor_release(m->drop[i].mask);
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
    rt_act act = !strcmp(an, "gelu") ? RT_ACT_GELU : !strcmp(an, "tanh") ? RT_ACT_TANH : RT_ACT_RELU;
    float p = (float)api->opt_number(o, "dropout");
    rt_rng rng;
    api->rng_seed(&rng, (uint64_t)api->opt_int(o, "seed"), 0);
    for (int i = 0; i < n - 1; i++) {
        int hidden = i < n - 2;
        char prefix[RTN_NAME];
        snprintf(prefix, sizeof prefix, "layers.%d", i);
        m->nl = i + 1;
        if (rtn_linear_init(&m->l[i], ctx, prefix, sizes[i], sizes[i + 1], hidden ? act : RT_ACT_NONE, &rng)) {
            destroy(m);
            return RT_STATUS_ERR_NOMEM;
        }
        m->drop[i].p = hidden ? p : 0;
        snprintf(m->feat[i].name, sizeof m->feat[i].name, "%s", hidden ? prefix : "logits");
        m->feat[i].slot = &m->l[i].y;
    }
    *self = m;
    return RT_STATUS_OK;
}

static rt_status forward(void *self, rt_ctx *ctx, const rt_tensor *x, int train, rt_tensor **out)
{
    mlp *m = self;
    int64_t N = x->shape[0];
    const float *h = rt_f32(x);
    for (int i = 0; i < m->nl; i++) {
        if (rtn_linear_forward(&m->l[i], ctx, h, N) || rtn_dropout_forward(&m->drop[i], ctx, m->l[i].y, train))
            return RT_STATUS_ERR_NOMEM;
        h = rt_f32(m->l[i].y);
    }
    if (m->x != x) {
        api->tensor_retain((rt_tensor *)x);
        api->tensor_release((rt_tensor *)m->x);
        m->x = x;
    }
    m->have_forward = 1;
    *out = m->l[m->nl - 1].y;
    return RT_STATUS_OK;
}

static rt_status backward(void *self, rt_ctx *ctx, const rt_tensor *grad_out, const rt_tap *taps, int ntaps,
                          rt_tensor **grad_in)
{
    mlp *m = self;
    if (!m->have_forward) return api->error(ctx, RT_STATUS_ERR_STATE, "backward before forward");
    rtn_linear *last = &m->l[m->nl - 1];
    int64_t N = last->y->shape[0];
    char a[64], b[64];
    if (grad_out->ndim != 2 || grad_out->shape[0] != N || grad_out->shape[1] != last->out)
        return api->error(ctx, RT_STATUS_ERR_SHAPE, "output gradient %s vs output %s",
                          api->shape_str(grad_out, a, sizeof a), api->shape_str(last->y, b, sizeof b));
    const float *tap[MAX_LAYERS];
    if (rtn_taps_check(m->feat, m->nl, taps, ntaps, ctx)) return RT_STATUS_ERR_ARG;
    for (int i = 0; i < m->nl; i++)
        if (rtn_tap_find(taps, ntaps, m->feat[i].name, m->l[i].y, &tap[i], ctx)) return RT_STATUS_ERR_SHAPE;
    int64_t cs[2] = {N, last->out};
    if (api->tensor_ensure(ctx, &m->dout, RT_DTYPE_F32, 2, cs)) return RT_STATUS_ERR_NOMEM;
    memcpy(rt_f32(m->dout), rt_f32(grad_out), sizeof(float) * (size_t)(N * last->out));
    float *d = rt_f32(m->dout); /* gradient wrt the current layer's output */
    float beta = rtn_beta(&m->grads);
    for (int i = m->nl - 1; i >= 0; i--) {
        rtn_linear *L = &m->l[i];
        const float *hin = i ? rt_f32(m->l[i - 1].y) : rt_f32(m->x);
        if (tap[i])
            for (int64_t k = 0; k < N * L->out; k++) d[k] += tap[i][k];
        float keep = rtn_dropout_backward(&m->drop[i], d, N * L->out);
        int want_dx = i > 0 || grad_in;
        if (rtn_linear_backward(L, ctx, d, hin, N, beta, keep, want_dx)) return RT_STATUS_ERR_NOMEM;
        if (!want_dx) break;
        d = rt_f32(L->dx);
    }
    m->grads.stale = 0;
    if (grad_in) *grad_in = m->l[0].dx;
    return RT_STATUS_OK;
}

static void zero_grad(void *self) { ((mlp *)self)->grads.stale = 1; }

static int parameters(void *self, rt_param *out, int max)
{
    mlp *m = self;
    if (m->grads.stale) {
        /* Someone looks at the gradients before a backward: make the lazy
         * zeroing real. */
        for (int i = 0; i < m->nl; i++) rtn_linear_zero(&m->l[i]);
        m->grads.stale = 0;
    }
    rtn_params p = {out, max, 0};
    for (int i = 0; i < m->nl; i++) rtn_linear_params(&m->l[i], &p);
    return p.n;
}

static rtn_feature_table feature_table(void *self)
{
    mlp *m = self;
    return (rtn_feature_table){m->feat, m->nl, m->have_forward};
}
RTN_FEATURES_VT(feature_table)

static int64_t flops(void *self)
{
    mlp *m = self;
    int64_t f = 0;
    for (int i = 0; i < m->nl; i++) f += rtn_linear_flops(&m->l[i]);
    return f;
}

static void input_spec(void *self, rt_spec *out)
{
    mlp *m = self;
    *out = (rt_spec){.dtype = RT_DTYPE_F32, .ndim = 1, .shape = {m->l[0].in}, .flat = 1};
}

static const rt_student_vt vt = {
    .size = sizeof vt,
    .forward = forward,
    .backward = backward,
    .parameters = parameters,
    .zero_grad = zero_grad,
    .feature = rtn_vt_feature,
    .flops = flops,
    .input_spec = input_spec,
    .features = rtn_vt_features,
    .record = rtn_vt_record,
};

static const rt_plugin_desc desc = {
    RT_DESC_INIT(RT_KIND_STUDENT, "mlp", "1.0.0", "multi-layer perceptron (PyTorch Linear naming and init)"),
    .options = options,
    .create = create,
    .destroy = destroy,
    .student = &vt,
};

RT_PLUGIN_LIST(&desc)
