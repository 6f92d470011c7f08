/*
 * resnet -- student: a small ResNet for 28x28 and 32x32 images (He, Zhang,
 * Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
 * section 4.2: the CIFAR networks of depth 6n + 2).
 *
 *   conv1 3x3 (width) - bn1 - relu
 *   layer1: n BasicBlocks, width channels
 *   layer2: n BasicBlocks, 2 width channels, the first with stride 2
 *   layer3: n BasicBlocks, 4 width channels, the first with stride 2
 *   avgpool (global) - fc -> logits [N, classes]
 * BasicBlock: out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)),
 * 3x3 convolutions without bias; the shortcut is x, or a 1x1 convolution
 * with the block's stride and a batch norm when the shape changes
 * (torchvision's `downsample`, the paper's option B).
 *
 * Options
 *   input    [1, 28, 28]  C, H, W of one sample (f32, any layout with C H W
 *                         values: Fashion-MNIST's [N, 784] works)
 *   depth    20           6 n + 2: 8, 14, 20, 32, 44, 56, 110
 *   width    16           channels of layer1 (layer2 2x, layer3 4x)
 *   classes  10
 *   seed     1            initialisation seed (PyTorch's default draws:
 *                         uniform +-1/sqrt(fan_in); batch norms 1 and 0)
 *
 * Parameter names are torchvision's ResNet state_dict (with three stages):
 * conv1.weight, bn1.{weight,bias,running_mean,running_var,
 * num_batches_tracked}, layer<s>.<b>.conv1.weight, layer<s>.<b>.bn1.*,
 * layer<s>.<b>.conv2.weight, layer<s>.<b>.bn2.*, layer<s>.<b>.downsample.0
 * .weight, layer<s>.<b>.downsample.1.*, fc.weight, fc.bias.
 *
 * Features (every module output, by its state_dict prefix): conv1, bn1,
 * relu, and per block layer<s>.<b>.conv1, .bn1, .relu, .conv2, .bn2, the
 * block's output layer<s>.<b>; layer<s> (the stage's output, its last
 * block's), avgpool ([N, C, 1, 1]), fc (the logits).  feature() hands out
 * only recorded ones; taps add their gradient there.
 */
#include <stdlib.h>

#include "rt_nn_conv.h"

#define MAX_BLOCKS 60
#define MAX_FEATS (8 + 7 * MAX_BLOCKS)

typedef struct block {
    rtn_conv2d c1, c2, cd;
    rtn_bn b1, b2, bd;
    int ds;        /* downsample shortcut */
    rt_tensor *r;  /* relu(bn1) */
    rt_tensor *y;  /* block output */
    rt_tensor *d;  /* gradient wrt bn2's output and the shortcut (the sum's) */
    rt_tensor *dx; /* gradient wrt the block's input */
    int64_t cin, h, w;
} block;

typedef struct resnet {
    int64_t C, H, W, classes;
    rtn_conv2d c0;
    rtn_bn b0;
    rt_tensor *r0;
    int nb;
    block B[MAX_BLOCKS];
    rtn_pool2d gap;
    rtn_linear fc;
    int nf;
    rtn_feature feat[MAX_FEATS];
    rtn_grads grads;
    const rt_tensor *x;
    int have_forward;
    rt_tensor *dout, *gin;
} resnet;

static const rt_option options[] = {
    {"input", RT_OPT_INT_LIST, "[1,28,28]", 1, 65536, NULL, "C, H, W of one sample"},
    {"depth", RT_OPT_INT, "20", 8, 6 * (MAX_BLOCKS / 3) + 2, NULL, "6 n + 2 layers (8, 14, 20, 32, ...)"},
    {"width", RT_OPT_INT, "16", 1, 4096, NULL, "channels of the first stage (then 2x, 4x)"},
    {"classes", RT_OPT_INT, "10", 1, 1e6, NULL, "output classes"},
    {"seed", RT_OPT_INT, "1", 0, 9007199254740991.0, NULL, "initialisation seed"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static void destroy(void *self)
{
    resnet *m = self;
    if (!m) return;
    rtn_conv2d_free(&m->c0);
    rtn_bn_free(&m->b0);
    api->tensor_release(m->r0);
    for (int i = 0; i < m->nb; i++) {
        block *b = &m->B[i];
        rtn_conv2d_free(&b->c1);
        rtn_conv2d_free(&b->c2);
        rtn_conv2d_free(&b->cd);
        rtn_bn_free(&b->b1);
        rtn_bn_free(&b->b2);
        rtn_bn_free(&b->bd);
        rt_tensor *ts[] = {b->r, b->y, b->d, b->dx};
        for (int k = 0; k < 4; k++) api->tensor_release(ts[k]);
    }
    rtn_pool2d_free(&m->gap);
    rtn_linear_free(&m->fc);
    api->tensor_release((rt_tensor *)m->x);
    api->tensor_release(m->dout);
    api->tensor_release(m->gin);
    free(m);
}

static void feat(resnet *m, const char *name, rt_tensor **slot)
{
    rtn_feature *f = &m->feat[m->nf++];
    snprintf(f->name, sizeof f->name, "%.47s", name);
    f->slot = slot;
}

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    int64_t in[3];
    if (api->opt_int_list(o, "input", in, 3) != 3)
        return api->error(ctx, RT_STATUS_ERR_ARG, "option 'input' needs C, H, W (three numbers)");
    int64_t depth = api->opt_int(o, "depth"), width = api->opt_int(o, "width");
    if ((depth - 2) % 6)
        return api->error(ctx, RT_STATUS_ERR_ARG, "option 'depth' = %lld is not 6 n + 2 (8, 14, 20, 32, 44, 56, 110)",
                          (long long)depth);
    resnet *m = calloc(1, sizeof *m);
    if (!m) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    m->C = in[0], m->H = in[1], m->W = in[2];
    m->classes = api->opt_int(o, "classes");
    rt_rng rng;
    api->rng_seed(&rng, (uint64_t)api->opt_int(o, "seed"), 0);
    rt_status st = rtn_conv2d_init(&m->c0, ctx, "conv1", in[0], in[1], in[2], width, 3, 1, 1, 1, 0, &rng);
    if (!st) st = rtn_bn_init(&m->b0, ctx, "bn1", width, in[1], in[2]);
    feat(m, "conv1", &m->c0.y);
    feat(m, "bn1", &m->b0.y);
    feat(m, "relu", &m->r0);
    int64_t n = (depth - 2) / 6, c = width, h = in[1], w = in[2];
    for (int s = 0; s < 3 && !st; s++) {
        int64_t co = width << s;
        for (int64_t j = 0; j < n && !st; j++) {
            block *b = &m->B[m->nb++];
            int64_t stride = s > 0 && j == 0 ? 2 : 1;
            char p[RTN_NAME], q[RTN_NAME + 16];
            snprintf(p, sizeof p, "layer%d.%lld", s + 1, (long long)j);
            b->cin = c, b->h = h, b->w = w;
            b->ds = stride != 1 || c != co;
#define NAME(suffix) (snprintf(q, sizeof q, "%s.%s", p, suffix), q)
            st = rtn_conv2d_init(&b->c1, ctx, NAME("conv1"), c, h, w, co, 3, stride, 1, 1, 0, &rng);
            if (st) break;
            int64_t ho = b->c1.g.H_out, wo = b->c1.g.W_out;
            if (!st) st = rtn_bn_init(&b->b1, ctx, NAME("bn1"), co, ho, wo);
            if (!st) st = rtn_conv2d_init(&b->c2, ctx, NAME("conv2"), co, ho, wo, co, 3, 1, 1, 1, 0, &rng);
            if (!st) st = rtn_bn_init(&b->b2, ctx, NAME("bn2"), co, ho, wo);
            if (!st && b->ds) st = rtn_conv2d_init(&b->cd, ctx, NAME("downsample.0"), c, h, w, co, 1, stride, 0, 1, 0, &rng);
            if (!st && b->ds) st = rtn_bn_init(&b->bd, ctx, NAME("downsample.1"), co, ho, wo);
            feat(m, NAME("conv1"), &b->c1.y);
            feat(m, NAME("bn1"), &b->b1.y);
            feat(m, NAME("relu"), &b->r);
            feat(m, NAME("conv2"), &b->c2.y);
            feat(m, NAME("bn2"), &b->b2.y);
            feat(m, p, &b->y);
#undef NAME
            c = co, h = ho, w = wo;
        }
        if (!st) {
            char p[16];
            snprintf(p, sizeof p, "layer%d", s + 1);
            feat(m, p, &m->B[m->nb - 1].y);
        }
    }
    if (!st) st = rtn_pool2d_init(&m->gap, ctx, RTN_POOL_GLOBAL, c, h, w, 0, 1, 0);
    if (!st) st = rtn_linear_init(&m->fc, ctx, "fc", c, m->classes, RT_ACT_NONE, &rng);
    feat(m, "avgpool", &m->gap.y);
    feat(m, "fc", &m->fc.y);
    if (st) {
        destroy(m);
        return api->error(ctx, st, "resnet: input [%lld, %lld, %lld] with depth %lld, width %lld: %s", (long long)in[0],
                          (long long)in[1], (long long)in[2], (long long)depth, (long long)width,
                          "the layers do not fit (the image must be at least 4x4)");
    }
    *self = m;
    return RT_STATUS_OK;
}

static rt_status relu_into(rt_tensor **out, rt_ctx *ctx, const rt_tensor *like, const float *x)
{
    return rtn_relu_forward(out, ctx, x, like->ndim, like->shape);
}

static rt_status forward(void *self, rt_ctx *ctx, const rt_tensor *x, int train, rt_tensor **out)
{
    resnet *m = self;
    int64_t N = x->shape[0];
    if (rtn_conv2d_forward(&m->c0, ctx, rt_f32(x), N) || rtn_bn_forward(&m->b0, ctx, rt_f32(m->c0.y), N, train) ||
        relu_into(&m->r0, ctx, m->b0.y, rt_f32(m->b0.y)))
        return RT_STATUS_ERR_NOMEM;
    const float *h = rt_f32(m->r0);
    for (int i = 0; i < m->nb; i++) {
        block *b = &m->B[i];
        if (rtn_conv2d_forward(&b->c1, ctx, h, N) || rtn_bn_forward(&b->b1, ctx, rt_f32(b->c1.y), N, train) ||
            relu_into(&b->r, ctx, b->b1.y, rt_f32(b->b1.y)) || rtn_conv2d_forward(&b->c2, ctx, rt_f32(b->r), N) ||
            rtn_bn_forward(&b->b2, ctx, rt_f32(b->c2.y), N, train))
            return RT_STATUS_ERR_NOMEM;
        const float *sc = h;
        if (b->ds) {
            if (rtn_conv2d_forward(&b->cd, ctx, h, N) || rtn_bn_forward(&b->bd, ctx, rt_f32(b->cd.y), N, train))
                return RT_STATUS_ERR_NOMEM;
            sc = rt_f32(b->bd.y);
        }
        if (api->tensor_ensure(ctx, &b->y, RT_DTYPE_F32, 4, b->b2.y->shape)) return RT_STATUS_ERR_NOMEM;
        int64_t n = rt_numel(b->y);
        api->residual_add(rt_f32(b->b2.y), sc, rt_f32(b->y), n);
        float *y = rt_f32(b->y);
        for (int64_t k = 0; k < n; k++) y[k] = y[k] > 0 ? y[k] : 0.0f;
        h = rt_f32(b->y);
    }
    if (rtn_pool2d_forward(&m->gap, ctx, h, N) || rtn_linear_forward(&m->fc, ctx, rt_f32(m->gap.y), N))
        return RT_STATUS_ERR_NOMEM;
    if (m->x != x) {
        api->tensor_retain((rt_tensor *)x);
        api->tensor_release((rt_tensor *)m->x);
        m->x = x;
    }
    m->have_forward = 1;
    *out = m->fc.y;
    return RT_STATUS_OK;
}

/* Adds every tap on a feature kept in *slot to d. */
static rt_status taps_at(resnet *m, rt_tensor **slot, float *d, const rt_tap *taps, int ntaps, rt_ctx *ctx)
{
    for (int k = 0; k < m->nf; k++) {
        if (m->feat[k].slot != slot) continue;
        const float *g;
        if (rtn_tap_find(taps, ntaps, m->feat[k].name, *slot, &g, ctx)) return RT_STATUS_ERR_SHAPE;
        if (g)
            for (int64_t i = 0; i < rt_numel(*slot); i++) d[i] += g[i];
    }
    return RT_STATUS_OK;
}

static rt_status backward(void *self, rt_ctx *ctx, const rt_tensor *grad_out, const rt_tap *taps, int ntaps,
                          rt_tensor **grad_in)
{
    resnet *m = self;
    if (!m->have_forward) return api->error(ctx, RT_STATUS_ERR_STATE, "backward before forward");
    int64_t N = m->fc.y->shape[0];
    char a[64], bb[64];
    if (!rt_same_shape(grad_out, m->fc.y))
        return api->error(ctx, RT_STATUS_ERR_SHAPE, "output gradient %s vs output %s",
                          api->shape_str(grad_out, a, sizeof a), api->shape_str(m->fc.y, bb, sizeof bb));
    if (rtn_taps_check(m->feat, m->nf, taps, ntaps, ctx)) return RT_STATUS_ERR_ARG;
    if (api->tensor_ensure(ctx, &m->dout, RT_DTYPE_F32, 2, m->fc.y->shape)) return RT_STATUS_ERR_NOMEM;
    memcpy(rt_f32(m->dout), rt_f32(grad_out), sizeof(float) * (size_t)(N * m->classes));
    float beta = rtn_beta(&m->grads), *d = rt_f32(m->dout);
#define TAP(slot, dd) \
    if (taps_at(m, (slot), (dd), taps, ntaps, ctx)) return RT_STATUS_ERR_SHAPE
#define TRY(call) \
    if (call) return RT_STATUS_ERR_NOMEM
    TAP(&m->fc.y, d);
    const float *hin = m->nb ? rt_f32(m->B[m->nb - 1].y) : rt_f32(m->r0);
    TRY(rtn_linear_backward(&m->fc, ctx, d, rt_f32(m->gap.y), N, beta, 1.0f, 1));
    d = rt_f32(m->fc.dx);
    TAP(&m->gap.y, d);
    TRY(rtn_pool2d_backward(&m->gap, ctx, d));
    d = rt_f32(m->gap.dx);
    for (int i = m->nb - 1; i >= 0; i--) {
        block *b = &m->B[i];
        hin = i ? rt_f32(m->B[i - 1].y) : rt_f32(m->r0);
        TAP(&b->y, d);
        int64_t n = rt_numel(b->y);
        if (api->tensor_ensure(ctx, &b->d, RT_DTYPE_F32, 4, b->y->shape)) return RT_STATUS_ERR_NOMEM;
        float *ds = rt_f32(b->d);
        const float *y = rt_f32(b->y);
        for (int64_t k = 0; k < n; k++) ds[k] = y[k] > 0 ? d[k] : 0.0f;
        /* main branch: a tap on bn2's output is its own, not the
         * shortcut's, so it goes into a copy of the sum's gradient */
        float *d2 = api->scratch(ctx, sizeof(float) * (size_t)n);
        if (!d2) return RT_STATUS_ERR_NOMEM;
        memcpy(d2, ds, sizeof(float) * (size_t)n);
        TAP(&b->b2.y, d2);
        TRY(rtn_bn_backward(&b->b2, ctx, d2, rt_f32(b->c2.y), beta, 1));
        TAP(&b->c2.y, rt_f32(b->b2.dx));
        TRY(rtn_conv2d_backward(&b->c2, ctx, rt_f32(b->b2.dx), rt_f32(b->r), beta, 1));
        float *dr = rt_f32(b->c2.dx);
        TAP(&b->r, dr);
        rtn_relu_backward(dr, rt_f32(b->r), rt_numel(b->r));
        TAP(&b->b1.y, dr);
        TRY(rtn_bn_backward(&b->b1, ctx, dr, rt_f32(b->c1.y), beta, 1));
        TAP(&b->c1.y, rt_f32(b->b1.dx));
        TRY(rtn_conv2d_backward(&b->c1, ctx, rt_f32(b->b1.dx), hin, beta, 1));
        int64_t s4[4] = {N, b->cin, b->h, b->w}, nin = N * b->cin * b->h * b->w;
        if (api->tensor_ensure(ctx, &b->dx, RT_DTYPE_F32, 4, s4)) return RT_STATUS_ERR_NOMEM;
        float *dx = rt_f32(b->dx);
        memcpy(dx, rt_f32(b->c1.dx), sizeof(float) * (size_t)nin);
        if (b->ds) {
            /* the shortcut's gradient is the sum's (ds) */
            TRY(rtn_bn_backward(&b->bd, ctx, ds, rt_f32(b->cd.y), beta, 1));
            TRY(rtn_conv2d_backward(&b->cd, ctx, rt_f32(b->bd.dx), hin, beta, 1));
            api->residual_add(dx, rt_f32(b->cd.dx), dx, nin);
        } else {
            api->residual_add(dx, ds, dx, nin);
        }
        d = dx;
    }
    TAP(&m->r0, d);
    rtn_relu_backward(d, rt_f32(m->r0), rt_numel(m->r0));
    TAP(&m->b0.y, d);
    TRY(rtn_bn_backward(&m->b0, ctx, d, rt_f32(m->c0.y), beta, 1));
    TAP(&m->c0.y, rt_f32(m->b0.dx));
    TRY(rtn_conv2d_backward(&m->c0, ctx, rt_f32(m->b0.dx), rt_f32(m->x), beta, grad_in != NULL));
#undef TAP
#undef TRY
    m->grads.stale = 0;
    if (grad_in) {
        if (api->tensor_ensure(ctx, &m->gin, RT_DTYPE_F32, m->x->ndim, m->x->shape)) return RT_STATUS_ERR_NOMEM;
        memcpy(rt_f32(m->gin), rt_f32(m->c0.dx), sizeof(float) * (size_t)rt_numel(m->x));
        *grad_in = m->gin;
    }
    return RT_STATUS_OK;
}

static void zero_grad(void *self) { ((resnet *)self)->grads.stale = 1; }

static int parameters(void *self, rt_param *out, int max)
{
    resnet *m = self;
    if (m->grads.stale) {
        rtn_conv2d_zero(&m->c0);
        rtn_bn_zero(&m->b0);
        for (int i = 0; i < m->nb; i++) {
            block *b = &m->B[i];
            rtn_conv2d_zero(&b->c1), rtn_conv2d_zero(&b->c2), rtn_bn_zero(&b->b1), rtn_bn_zero(&b->b2);
            if (b->ds) rtn_conv2d_zero(&b->cd), rtn_bn_zero(&b->bd);
        }
        rtn_linear_zero(&m->fc);
        m->grads.stale = 0;
    }
    rtn_params p = {out, max, 0};
    rtn_conv2d_params(&m->c0, &p);
    rtn_bn_params(&m->b0, &p);
    for (int i = 0; i < m->nb; i++) {
        block *b = &m->B[i];
        rtn_conv2d_params(&b->c1, &p);
        rtn_bn_params(&b->b1, &p);
        rtn_conv2d_params(&b->c2, &p);
        rtn_bn_params(&b->b2, &p);
        if (b->ds) {
            rtn_conv2d_params(&b->cd, &p);
            rtn_bn_params(&b->bd, &p);
        }
    }
    rtn_linear_params(&m->fc, &p);
    return p.n;
}

static rtn_feature_table feature_table(void *self)
{
    resnet *m = self;
    return (rtn_feature_table){m->feat, m->nf, m->have_forward};
}
RTN_FEATURES_VT(feature_table)

static int64_t flops(void *self)
{
    resnet *m = self;
    int64_t f = rtn_conv2d_flops(&m->c0) + rtn_linear_flops(&m->fc);
    for (int i = 0; i < m->nb; i++) {
        block *b = &m->B[i];
        f += rtn_conv2d_flops(&b->c1) + rtn_conv2d_flops(&b->c2) + (b->ds ? rtn_conv2d_flops(&b->cd) : 0);
    }
    return f;
}

static void input_spec(void *self, rt_spec *out)
{
    resnet *m = self;
    *out = (rt_spec){.dtype = RT_DTYPE_F32, .ndim = 3, .shape = {m->C, m->H, m->W}, .flat = 1};
}

/* The gradient check's configurations: a depth-8 net (one block per stage,
 * both shortcut kinds) at 6x6, where relu kinks are rare. */
static const char *const gc_options[] = {
    "{\"input\":[1,4,4],\"depth\":8,\"width\":2,\"classes\":3}",
};
static const rt_gradcheck_options_ext gc_ext = {sizeof gc_ext, 1, gc_options};

static const void *extension(const char *name)
{
    return !strcmp(name, RT_EXT_GRADCHECK_OPTIONS) ? &gc_ext : NULL;
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
    RT_DESC_INIT(RT_KIND_STUDENT, "resnet", "1.0.0", "small ResNet (depth 6n+2) for 28x28 / 32x32 images, torchvision naming"),
    .options = options,
    .create = create,
    .destroy = destroy,
    .student = &vt,
    .extension = extension,
};

RT_PLUGIN_LIST(&desc)
