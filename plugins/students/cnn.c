/*
 * cnn -- student: a convolutional network described by a layer string.
 *
 *   x [N, C, H, W] -> features (conv, bn, relu, pooling) -> flatten
 *     -> classifier (linear, relu, dropout, bn) -> logits [N, classes]
 *
 * Options
 *   input   [1, 28, 28]   C, H, W of one sample.  The input spec is f32
 *                         with C H W values per sample in any layout, so
 *                         Fashion-MNIST's [N, 784] and [N, 1, 28, 28] both
 *                         work; the values are read as C x H x W, row-major.
 *   layers  "conv32x3,bn,relu,maxpool2,conv64x3,bn,relu,maxpool2,flatten,
 *            fc256,relu,fc10"
 *           comma-separated, in order.  Before `flatten` (the features):
 *             conv<out>x<k>[s<stride>][p<pad>][g<groups>][n]
 *                        nn.Conv2d; padding k/2 unless given ("same" for
 *                        odd k at stride 1); n = no bias
 *             bn         nn.BatchNorm2d (eps 1e-5, momentum 0.1)
 *             relu       nn.ReLU
 *             maxpool<k>[s<stride>][p<pad>]   nn.MaxPool2d (stride k)
 *             avgpool<k>[s<stride>][p<pad>]   nn.AvgPool2d (stride k)
 *             gap        nn.AdaptiveAvgPool2d(1)
 *           after it (the classifier):
 *             fc<out>    nn.Linear;  relu;  bn (nn.BatchNorm1d);
 *             dropout<p> nn.Dropout(p), p in [0, 1) ("dropout0.5")
 *           The last layer must be an fc: its width is the class count.
 *   seed    1             initialisation seed
 *
 * The equivalent PyTorch module (its state_dict has exactly our names and
 * shapes; docs/pytorch.md shows the code):
 *   class Net(nn.Module):
 *       def __init__(self):
 *           self.features = nn.Sequential(conv, bn, relu, pool, ...)
 *           self.classifier = nn.Sequential(linear, relu, linear)
 *       def forward(self, x):
 *           x = x.view(-1, C, H, W)
 *           return self.classifier(torch.flatten(self.features(x), 1))
 * so parameters are "features.<i>.weight" / ".bias", batch norms add the
 * buffers ".running_mean", ".running_var" and ".num_batches_tracked" (i64
 * scalar), and the head is "classifier.<j>.weight" / ".bias", i and j
 * counting every layer of the string (relu and pooling included, as
 * nn.Sequential does).  Initialisation is PyTorch's default draw
 * (uniform +-1/sqrt(fan_in)), from retort's own RNG.
 *
 * Features: every layer's output is named as its module, "features.<i>" and
 * "classifier.<j>" (the last is the logits).  forward keeps every layer's
 * output for backward; feature() hands out only those recorded with
 * record(name, 1), and a tap adds its gradient to that layer's output
 * gradient as backward passes it.
 *
 * Train mode: batch norms use the batch's statistics and update their
 * running statistics; dropout drops.  Eval mode: running statistics, no
 * dropout.
 */
#include <ctype.h>
#include <stdlib.h>

#include "rt_nn_conv.h"

#define MAX_LAYERS 64
#define SPEC_LEN 512

typedef enum kind { K_CONV, K_BN, K_RELU, K_POOL, K_FC, K_DROP } kind;

typedef struct layer {
    kind k;
    int head;                   /* in the classifier (after flatten) */
    int64_t ci, hi, wi;         /* input per sample (head: ci values, hi = wi = 1) */
    int64_t co, ho, wo;         /* output per sample */
    rtn_conv2d conv;
    rtn_bn bn;
    rtn_pool2d pool;
    rtn_linear fc;
    rtn_dropout drop;
    rt_tensor *y;               /* relu and dropout: own output */
} layer;

typedef struct cnn {
    int nl;
    layer L[MAX_LAYERS];
    rtn_feature feat[MAX_LAYERS];
    int64_t C, H, W, classes;
    rtn_grads grads;
    const rt_tensor *x;
    int have_forward;
    rt_tensor *dout, *gin;
} cnn;

static const rt_option options[] = {
    {"input", RT_OPT_INT_LIST, "[1,28,28]", 1, 65536, NULL, "C, H, W of one sample"},
    {"layers", RT_OPT_STRING, "\"conv32x3,bn,relu,maxpool2,conv64x3,bn,relu,maxpool2,flatten,fc256,relu,fc10\"", 1, 0,
     NULL, "the layers, comma-separated (see the plugin's header)"},
    {"seed", RT_OPT_INT, "1", 0, 9007199254740991.0, NULL, "initialisation seed"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

/* The output tensor of layer i (its feature). */
static rt_tensor *out_of(layer *l)
{
    switch (l->k) {
    case K_CONV: return l->conv.y;
    case K_BN: return l->bn.y;
    case K_POOL: return l->pool.y;
    case K_FC: return l->fc.y;
    default: return l->y;
    }
}

static rt_tensor **slot_of(layer *l)
{
    switch (l->k) {
    case K_CONV: return &l->conv.y;
    case K_BN: return &l->bn.y;
    case K_POOL: return &l->pool.y;
    case K_FC: return &l->fc.y;
    default: return &l->y;
    }
}

static void destroy(void *self)
{
    cnn *m = self;
    if (!m) return;
    for (int i = 0; i < m->nl; i++) {
        layer *l = &m->L[i];
        rtn_conv2d_free(&l->conv);
        rtn_bn_free(&l->bn);
        rtn_pool2d_free(&l->pool);
        rtn_linear_free(&l->fc);
        api->tensor_release(l->drop.mask);
        api->tensor_release(l->y);
    }
    api->tensor_release((rt_tensor *)m->x);
    api->tensor_release(m->dout);
    api->tensor_release(m->gin);
    free(m);
}

/* Reads "<letter><int>" modifiers after a token's numbers: s, p, g (and
 * a lone n when allow_n).  Returns 0 when the rest is not of that form. */
static int modifiers(const char *p, int64_t *s, int64_t *pad, int64_t *g, int *nobias, int allow_g)
{
    while (*p) {
        char c = *p++;
        if (c == 'n' && nobias && !*p) {
            *nobias = 1;
            continue;
        }
        if (!isdigit((unsigned char)*p)) return 0;
        char *end;
        long long v = strtoll(p, &end, 10);
        p = end;
        if (c == 's') *s = v;
        else if (c == 'p') *pad = v;
        else if (c == 'g' && allow_g) *g = v;
        else return 0;
    }
    return 1;
}

/* One token of the layer string into layer i.  cur: the running C, H, W
 * (or, in the head, D in cur[0]). */
static rt_status add_layer(cnn *m, rt_ctx *ctx, const char *tok, int head, int64_t cur[3], rt_rng *rng)
{
    if (m->nl == MAX_LAYERS) return api->error(ctx, RT_STATUS_ERR_ARG, "option 'layers': more than %d layers", MAX_LAYERS);
    int i = m->nl;
    layer *l = &m->L[i];
    int idx = 0; /* index within features / classifier */
    for (int j = 0; j < i; j++) idx += m->L[j].head == head;
    char prefix[RTN_NAME];
    snprintf(prefix, sizeof prefix, "%s.%d", head ? "classifier" : "features", idx);
    l->head = head;
    l->ci = cur[0], l->hi = cur[1], l->wi = cur[2];
    rt_status st = RT_STATUS_OK;
    char *end;
    if (!strncmp(tok, "conv", 4) && !head) {
        long long co = strtoll(tok + 4, &end, 10), k = 0;
        if (co < 1 || *end != 'x' || (k = strtoll(end + 1, &end, 10)) < 1) goto bad;
        int64_t s = 1, pad = k / 2, g = 1;
        int nobias = 0;
        if (!modifiers(end, &s, &pad, &g, &nobias, 1)) goto bad;
        l->k = K_CONV;
        st = rtn_conv2d_init(&l->conv, ctx, prefix, cur[0], cur[1], cur[2], co, k, s, pad, g, !nobias, rng);
        if (!st) cur[0] = co, cur[1] = l->conv.g.H_out, cur[2] = l->conv.g.W_out;
    } else if (!strcmp(tok, "bn")) {
        l->k = K_BN;
        st = rtn_bn_init(&l->bn, ctx, prefix, cur[0], head ? 0 : cur[1], head ? 0 : cur[2]);
    } else if (!strcmp(tok, "relu")) {
        l->k = K_RELU;
    } else if ((!strncmp(tok, "maxpool", 7) || !strncmp(tok, "avgpool", 7)) && !head) {
        long long k = strtoll(tok + 7, &end, 10);
        if (k < 1) goto bad;
        int64_t s = k, pad = 0;
        if (!modifiers(end, &s, &pad, NULL, NULL, 0)) goto bad;
        l->k = K_POOL;
        st = rtn_pool2d_init(&l->pool, ctx, tok[0] == 'm' ? RTN_POOL_MAX : RTN_POOL_AVG, cur[0], cur[1], cur[2], k, s,
                             pad);
        if (!st) cur[1] = l->pool.g.H_out, cur[2] = l->pool.g.W_out;
    } else if (!strcmp(tok, "gap") && !head) {
        l->k = K_POOL;
        st = rtn_pool2d_init(&l->pool, ctx, RTN_POOL_GLOBAL, cur[0], cur[1], cur[2], 0, 1, 0);
        cur[1] = cur[2] = 1;
    } else if (!strncmp(tok, "fc", 2) && head) {
        long long co = strtoll(tok + 2, &end, 10);
        if (co < 1 || *end) goto bad;
        l->k = K_FC;
        st = rtn_linear_init(&l->fc, ctx, prefix, cur[0], co, RT_ACT_NONE, rng);
        cur[0] = co;
    } else if (!strncmp(tok, "dropout", 7) && head) {
        double p = strtod(tok + 7, &end);
        if (end == tok + 7 || *end || !(p >= 0 && p < 1)) goto bad;
        l->k = K_DROP;
        l->drop.p = (float)p;
    } else {
        goto bad;
    }
    m->nl++; /* counted before the check: destroy frees what init allocated */
    if (st) return api->error(ctx, st, "option 'layers': layer %s ('%s') does not fit its input [%lld, %lld, %lld]",
                              prefix, tok, (long long)l->ci, (long long)l->hi, (long long)l->wi);
    l->co = cur[0], l->ho = head ? 1 : cur[1], l->wo = head ? 1 : cur[2];
    snprintf(m->feat[i].name, sizeof m->feat[i].name, "%s", prefix);
    m->feat[i].slot = slot_of(l);
    return RT_STATUS_OK;
bad:
    return api->error(ctx, RT_STATUS_ERR_ARG,
                      "option 'layers': '%s' is not a %s layer (%s); see `retort plugins cnn`", tok,
                      head ? "classifier" : "feature",
                      head ? "fc<out>, relu, bn, dropout<p>" : "conv<out>x<k>[s<s>][p<p>][g<g>][n], bn, relu, "
                                                               "maxpool<k>, avgpool<k>, gap, flatten");
}

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    int64_t in[3];
    if (api->opt_int_list(o, "input", in, 3) != 3)
        return api->error(ctx, RT_STATUS_ERR_ARG, "option 'input' needs C, H, W (three numbers)");
    const char *spec = api->opt_string(o, "layers");
    if (strlen(spec) >= SPEC_LEN)
        return api->error(ctx, RT_STATUS_ERR_ARG, "option 'layers' is longer than %d characters", SPEC_LEN - 1);
    cnn *m = calloc(1, sizeof *m);
    if (!m) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    m->C = in[0], m->H = in[1], m->W = in[2];
    rt_rng rng;
    api->rng_seed(&rng, (uint64_t)api->opt_int(o, "seed"), 0);
    char buf[SPEC_LEN];
    snprintf(buf, sizeof buf, "%s", spec);
    int64_t cur[3] = {in[0], in[1], in[2]};
    int head = 0;
    rt_status st = RT_STATUS_OK;
    for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t && !st; t = strtok_r(NULL, ", ", &save)) {
        if (!strcmp(t, "flatten")) {
            if (head) st = api->error(ctx, RT_STATUS_ERR_ARG, "option 'layers': two 'flatten'");
            head = 1;
            cur[0] *= cur[1] * cur[2];
            cur[1] = cur[2] = 1;
            continue;
        }
        st = add_layer(m, ctx, t, head, cur, &rng);
    }
    if (!st && (!head || !m->nl || m->L[m->nl - 1].k != K_FC))
        st = api->error(ctx, RT_STATUS_ERR_ARG,
                        "option 'layers' must end with 'flatten', then fc layers, the last one giving the classes "
                        "(e.g. '...,flatten,fc10')");
    if (st) {
        destroy(m);
        return st;
    }
    m->classes = m->L[m->nl - 1].co;
    *self = m;
    return RT_STATUS_OK;
}

static rt_status forward(void *self, rt_ctx *ctx, const rt_tensor *x, int train, rt_tensor **out)
{
    cnn *m = self;
    int64_t N = x->shape[0];
    const float *h = rt_f32(x);
    for (int i = 0; i < m->nl; i++) {
        layer *l = &m->L[i];
        int64_t s4[4] = {N, l->co, l->ho, l->wo}, s2[2] = {N, l->co};
        int nd = l->head ? 2 : 4;
        const int64_t *sh = l->head ? s2 : s4;
        rt_status st = RT_STATUS_OK;
        switch (l->k) {
        case K_CONV: st = rtn_conv2d_forward(&l->conv, ctx, h, N); break;
        case K_BN: st = rtn_bn_forward(&l->bn, ctx, h, N, train); break;
        case K_POOL: st = rtn_pool2d_forward(&l->pool, ctx, h, N); break;
        case K_FC: st = rtn_linear_forward(&l->fc, ctx, h, N); break;
        case K_RELU: st = rtn_relu_forward(&l->y, ctx, h, nd, sh); break;
        case K_DROP:
            if (api->tensor_ensure(ctx, &l->y, RT_DTYPE_F32, 2, s2)) st = RT_STATUS_ERR_NOMEM;
            else {
                memcpy(rt_f32(l->y), h, sizeof(float) * (size_t)(N * l->co));
                st = rtn_dropout_forward(&l->drop, ctx, l->y, train);
            }
            break;
        }
        if (st) return st;
        h = rt_f32(out_of(l));
    }
    if (m->x != x) {
        api->tensor_retain((rt_tensor *)x);
        api->tensor_release((rt_tensor *)m->x);
        m->x = x;
    }
    m->have_forward = 1;
    *out = m->L[m->nl - 1].fc.y;
    return RT_STATUS_OK;
}

static rt_status backward(void *self, rt_ctx *ctx, const rt_tensor *grad_out, const rt_tap *taps, int ntaps,
                          rt_tensor **grad_in)
{
    cnn *m = self;
    if (!m->have_forward) return api->error(ctx, RT_STATUS_ERR_STATE, "backward before forward");
    rt_tensor *last = m->L[m->nl - 1].fc.y;
    int64_t N = last->shape[0];
    char a[64], b[64];
    if (grad_out->ndim != 2 || grad_out->shape[0] != N || grad_out->shape[1] != m->classes)
        return api->error(ctx, RT_STATUS_ERR_SHAPE, "output gradient %s vs output %s",
                          api->shape_str(grad_out, a, sizeof a), api->shape_str(last, b, sizeof b));
    const float *tap[MAX_LAYERS];
    if (rtn_taps_check(m->feat, m->nl, taps, ntaps, ctx)) return RT_STATUS_ERR_ARG;
    for (int i = 0; i < m->nl; i++)
        if (rtn_tap_find(taps, ntaps, m->feat[i].name, out_of(&m->L[i]), &tap[i], ctx)) return RT_STATUS_ERR_SHAPE;
    int64_t cs[2] = {N, m->classes};
    if (api->tensor_ensure(ctx, &m->dout, RT_DTYPE_F32, 2, cs)) return RT_STATUS_ERR_NOMEM;
    memcpy(rt_f32(m->dout), rt_f32(grad_out), sizeof(float) * (size_t)(N * m->classes));
    float *d = rt_f32(m->dout); /* gradient wrt layer i's output */
    float beta = rtn_beta(&m->grads);
    for (int i = m->nl - 1; i >= 0; i--) {
        layer *l = &m->L[i];
        int64_t nout = N * l->co * l->ho * l->wo;
        const float *hin = i ? rt_f32(out_of(&m->L[i - 1])) : rt_f32(m->x);
        if (tap[i])
            for (int64_t k = 0; k < nout; k++) d[k] += tap[i][k];
        int want_dx = i > 0 || grad_in;
        rt_status st = RT_STATUS_OK;
        switch (l->k) {
        case K_CONV:
            st = rtn_conv2d_backward(&l->conv, ctx, d, hin, beta, want_dx);
            if (want_dx && !st) d = rt_f32(l->conv.dx);
            break;
        case K_BN:
            st = rtn_bn_backward(&l->bn, ctx, d, hin, beta, want_dx);
            if (want_dx && !st) d = rt_f32(l->bn.dx);
            break;
        case K_POOL:
            if (want_dx) st = rtn_pool2d_backward(&l->pool, ctx, d);
            if (want_dx && !st) d = rt_f32(l->pool.dx);
            break;
        case K_FC:
            st = rtn_linear_backward(&l->fc, ctx, d, hin, N, beta, 1.0f, want_dx);
            if (want_dx && !st) d = rt_f32(l->fc.dx);
            break;
        case K_RELU: rtn_relu_backward(d, rt_f32(l->y), nout); break;
        case K_DROP: rtn_dropout_backward(&l->drop, d, nout); break;
        }
        if (st) return st;
        if (!want_dx) break;
    }
    m->grads.stale = 0;
    if (grad_in) {
        if (api->tensor_ensure(ctx, &m->gin, RT_DTYPE_F32, m->x->ndim, m->x->shape)) return RT_STATUS_ERR_NOMEM;
        memcpy(rt_f32(m->gin), d, sizeof(float) * (size_t)rt_numel(m->x));
        *grad_in = m->gin;
    }
    return RT_STATUS_OK;
}

static void zero_grad(void *self) { ((cnn *)self)->grads.stale = 1; }

static int parameters(void *self, rt_param *out, int max)
{
    cnn *m = self;
    if (m->grads.stale) {
        for (int i = 0; i < m->nl; i++) {
            rtn_conv2d_zero(&m->L[i].conv);
            rtn_bn_zero(&m->L[i].bn);
            if (m->L[i].k == K_FC) rtn_linear_zero(&m->L[i].fc);
        }
        m->grads.stale = 0;
    }
    rtn_params p = {out, max, 0};
    for (int i = 0; i < m->nl; i++) {
        layer *l = &m->L[i];
        if (l->k == K_CONV) rtn_conv2d_params(&l->conv, &p);
        else if (l->k == K_BN) rtn_bn_params(&l->bn, &p);
        else if (l->k == K_FC) rtn_linear_params(&l->fc, &p);
    }
    return p.n;
}

static rtn_feature_table feature_table(void *self)
{
    cnn *m = self;
    return (rtn_feature_table){m->feat, m->nl, m->have_forward};
}
RTN_FEATURES_VT(feature_table)

static int64_t flops(void *self)
{
    cnn *m = self;
    int64_t f = 0;
    for (int i = 0; i < m->nl; i++) {
        layer *l = &m->L[i];
        if (l->k == K_CONV) f += rtn_conv2d_flops(&l->conv);
        else if (l->k == K_FC) f += rtn_linear_flops(&l->fc);
        else f += l->ci * l->hi * l->wi; /* one operation per input value */
    }
    return f;
}

static void input_spec(void *self, rt_spec *out)
{
    cnn *m = self;
    *out = (rt_spec){.dtype = RT_DTYPE_F32, .ndim = 3, .shape = {m->C, m->H, m->W}, .flat = 1};
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

/* The gradient check's configurations (rt.gradcheck_options): every layer
 * kind, stride, padding, groups, both pools, batch norm 1d and 2d, at sizes
 * where relu and max-pool kinks are rare; the default 28x28 network has too
 * many for float32 finite differences. */
static const char *const gc_options[] = {
    "{\"input\":[2,6,6],\"layers\":\"conv3x3,bn,relu,maxpool2,conv4x3,relu,flatten,fc3\"}",
    "{\"input\":[2,5,5],\"layers\":\"conv4x3,relu,maxpool2,conv4x3g2,bn,flatten,fc3\"}",
    "{\"input\":[1,9,9],\"layers\":\"conv4x3s2p0n,bn,avgpool2,conv4x1,gap,flatten,fc5,bn,dropout0.5,fc3\"}",
    "{\"input\":[3,5,5],\"layers\":\"conv6x3g3,avgpool3s2p1,flatten,fc4,relu,fc3\"}",
};
static const rt_gradcheck_options_ext gc_ext = {sizeof gc_ext, 4, gc_options};

static const void *extension(const char *name)
{
    return !strcmp(name, RT_EXT_GRADCHECK_OPTIONS) ? &gc_ext : NULL;
}

static const rt_plugin_desc desc = {
    RT_DESC_INIT(RT_KIND_STUDENT, "cnn", "1.0.0", "convolutional network from a layer string (PyTorch naming)"),
    .options = options,
    .create = create,
    .destroy = destroy,
    .student = &vt,
    .extension = extension,
};

RT_PLUGIN_LIST(&desc)
