/*
 * gpt -- student (and, through the `model` teacher, teacher): a small GPT
 * language model over token ids.
 *
 *   x_0    = drop(wte[ids] + wpe[0..T))                [N, T, D]
 *   x_l    = block_l(x_{l-1})   pre-LayerNorm:  x + drop(attn(ln_1(x))),
 *                               then x + drop(c_proj(gelu(c_fc(ln_2(x)))))
 *   logits = ln_f(x_L) wte^T                           [N, T, V]
 * Attention is causal multi-head over a fused qkv; gelu is the tanh
 * approximation (GPT-2's; PyTorch nn.GELU(approximate="tanh")); the output
 * projection is tied to the token embedding (no bias).
 *
 * Options
 *   vocab    256   vocabulary (ids in [0, vocab)); 256 = bytes
 *   context  64    longest sequence (rows of the position embedding)
 *   layers   2     blocks
 *   heads    4     attention heads (width must be a multiple)
 *   width    64    model width D (the MLP is 4D wide)
 *   dropout  0     after the embedding and on each residual branch
 *   seed     1     initialisation seed
 *
 * Parameters: the state_dict of nanoGPT's GPT (model.py, bias=True) with
 * the same config, minus the tied "lm_head.weight" (the same tensor as
 * transformer.wte.weight; load with strict=False, or copy it):
 *   transformer.wte.weight [V, D]      transformer.wpe.weight [context, D]
 *   transformer.h.<l>.ln_1.weight/bias [D]
 *   transformer.h.<l>.attn.c_attn.weight [3D, D] (q, k, v rows), .bias [3D]
 *   transformer.h.<l>.attn.c_proj.weight [D, D], .bias [D]
 *   transformer.h.<l>.ln_2.weight/bias [D]
 *   transformer.h.<l>.mlp.c_fc.weight [4D, D], .bias [4D]
 *   transformer.h.<l>.mlp.c_proj.weight [D, 4D], .bias [D]
 *   transformer.ln_f.weight/bias [D]
 * Initialisation is nanoGPT's: N(0, 0.02), residual projections
 * N(0, 0.02/sqrt(2 layers)), biases 0, layer norms 1 and 0.
 * tests/check_gpt_numpy.sh checks a checkpoint's logits against a plain
 * numpy forward written from this description.
 *
 * Input spec: i32 [N, T], 1 <= T <= context, ids in [0, vocab).  Output
 * [N, T, V]: position t's logits predict token t+1.
 *
 * Features: "transformer.h.<l>" (block l's output [N, T, D]) and "logits";
 * feature() hands out only recorded ones (the kit's rule).
 * Generation: the "rt.lm_step" extension (rt_lm_step_ext) runs one
 * position at a time over a key/value cache per block.
 */
#include <stdlib.h>

#include "rt_nn_lm.h"

#define MAX_BLOCKS 32

typedef struct gpt {
    int64_t V, maxT, D, H;
    int L;
    rtn_embedding emb;
    rtn_dropout drop;
    rtn_gpt_block blk[MAX_BLOCKS];
    rtn_layernorm ln_f;
    rtn_feature feat[MAX_BLOCKS + 1]; /* blocks, then "logits" */
    rtn_grads grads;
    rt_tensor *logits; /* [N, T, V] */
    rt_tensor *ids;    /* retained input of the last forward */
    rt_tensor *dres, *dh; /* [M, D] backward buffers */
    int have_forward;
    /* generation: caches [N, maxT, D] per block and step buffers */
    rt_tensor *kc[MAX_BLOCKS], *vc[MAX_BLOCKS];
    rt_tensor *sx, *sh, *sqkv, *sa, *su, *smean, *srstd, *swork;
    int64_t sN;
} gpt;

static const rt_option options[] = {
    {"vocab", RT_OPT_INT, "256", 2, 1 << 24, NULL, "vocabulary size (256: bytes)"},
    {"context", RT_OPT_INT, "64", 1, 1 << 16, NULL, "longest sequence (position embedding rows)"},
    {"layers", RT_OPT_INT, "2", 1, MAX_BLOCKS, NULL, "transformer blocks"},
    {"heads", RT_OPT_INT, "4", 1, 1024, NULL, "attention heads (width must be a multiple)"},
    {"width", RT_OPT_INT, "64", 1, 1 << 16, NULL, "model width D (the MLP is 4D)"},
    {"dropout", RT_OPT_NUMBER, "0", 0, 0.95, NULL, "dropout after the embedding and on residual branches"},
    {"seed", RT_OPT_INT, "1", 0, 9007199254740991.0, NULL, "initialisation seed"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static void destroy(void *self)
{
    gpt *m = self;
    if (!m) return;
    rtn_embedding_free(&m->emb);
    api->tensor_release(m->drop.mask);
    for (int l = 0; l < m->L; l++) {
        rtn_gpt_block_free(&m->blk[l]);
        api->tensor_release(m->kc[l]);
        api->tensor_release(m->vc[l]);
    }
    rtn_layernorm_free(&m->ln_f);
    rt_tensor *ts[] = {m->logits, m->ids, m->dres, m->dh, m->sx, m->sh, m->sqkv, m->sa, m->su, m->smean, m->srstd, m->swork};
    for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) api->tensor_release(ts[k]);
    free(m);
}

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    int64_t D = api->opt_int(o, "width"), H = api->opt_int(o, "heads");
    if (D % H)
        return api->error(ctx, RT_STATUS_ERR_ARG, "option 'width' (%lld) must be a multiple of 'heads' (%lld)",
                          (long long)D, (long long)H);
    gpt *m = calloc(1, sizeof *m);
    if (!m) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    m->V = api->opt_int(o, "vocab");
    m->maxT = api->opt_int(o, "context");
    m->D = D;
    m->H = H;
    int L = (int)api->opt_int(o, "layers");
    float p = (float)api->opt_number(o, "dropout");
    m->drop.p = p;
    rt_rng rng;
    api->rng_seed(&rng, (uint64_t)api->opt_int(o, "seed"), 0);
    rt_status st = rtn_embedding_init(&m->emb, ctx, "transformer", m->V, m->maxT, D, &rng);
    for (int l = 0; l < L && !st; l++) {
        char n[RTN_NAME];
        snprintf(n, sizeof n, "transformer.h.%d", l);
        m->L = l + 1;
        st = rtn_gpt_block_init(&m->blk[l], ctx, n, D, H, L, p, &rng);
        snprintf(m->feat[l].name, sizeof m->feat[l].name, "%s", n);
        m->feat[l].slot = &m->blk[l].y;
    }
    if (!st) st = rtn_layernorm_init(&m->ln_f, ctx, "transformer.ln_f", D);
    if (st) {
        destroy(m);
        return st;
    }
    snprintf(m->feat[L].name, sizeof m->feat[L].name, "logits");
    m->feat[L].slot = &m->logits;
    *self = m;
    return RT_STATUS_OK;
}

static rt_status forward(void *self, rt_ctx *ctx, const rt_tensor *x, int train, rt_tensor **out)
{
    gpt *m = self;
    int64_t N = x->shape[0], T = x->shape[1], M = N * T;
    rt_status st;
    if ((st = rtn_embedding_forward(&m->emb, ctx, rt_i32(x), N, T)) ||
        (st = rtn_dropout_forward(&m->drop, ctx, m->emb.y, train)))
        return st;
    const float *h = rt_f32(m->emb.y);
    for (int l = 0; l < m->L; l++) {
        if ((st = rtn_gpt_block_forward(&m->blk[l], ctx, h, N, T, train))) return st;
        h = rt_f32(m->blk[l].y);
    }
    int64_t ls[3] = {N, T, m->V};
    if ((st = rtn_layernorm_forward(&m->ln_f, ctx, h, M)) ||
        api->tensor_ensure(ctx, &m->logits, RT_DTYPE_F32, 3, ls))
        return st ? st : RT_STATUS_ERR_NOMEM;
    api->tied_logits(rt_f32(m->ln_f.y), rt_f32(m->emb.wte), M, m->V, m->D, rt_f32(m->logits));
    if (m->ids != x) {
        api->tensor_retain((rt_tensor *)x);
        api->tensor_release(m->ids);
        m->ids = (rt_tensor *)x;
    }
    m->have_forward = 1;
    *out = m->logits;
    return RT_STATUS_OK;
}

static void zero_all(gpt *m)
{
    rtn_embedding_zero(&m->emb);
    for (int l = 0; l < m->L; l++) rtn_gpt_block_zero(&m->blk[l]);
    rtn_layernorm_zero(&m->ln_f);
}

static rt_status backward(void *self, rt_ctx *ctx, const rt_tensor *grad_out, const rt_tap *taps, int ntaps,
                          rt_tensor **grad_in)
{
    gpt *m = self;
    if (!m->have_forward) return api->error(ctx, RT_STATUS_ERR_STATE, "backward before forward");
    char a[64], b[64];
    if (!rt_same_shape(grad_out, m->logits))
        return api->error(ctx, RT_STATUS_ERR_SHAPE, "output gradient %s vs output %s",
                          api->shape_str(grad_out, a, sizeof a), api->shape_str(m->logits, b, sizeof b));
    const float *tap[MAX_BLOCKS + 1];
    if (rtn_taps_check(m->feat, m->L + 1, taps, ntaps, ctx)) return RT_STATUS_ERR_ARG;
    for (int l = 0; l <= m->L; l++)
        if (rtn_tap_find(taps, ntaps, m->feat[l].name, *m->feat[l].slot, &tap[l], ctx)) return RT_STATUS_ERR_SHAPE;
    /* The lazy zero-grad made real here: every layer below accumulates. */
    if (m->grads.stale) zero_all(m);
    m->grads.stale = 0;
    int64_t N = m->logits->shape[0], T = m->logits->shape[1], M = N * T, s[2] = {M, m->D};
    if (api->tensor_ensure(ctx, &m->dres, RT_DTYPE_F32, 2, s) || api->tensor_ensure(ctx, &m->dh, RT_DTYPE_F32, 2, s))
        return RT_STATUS_ERR_NOMEM;
    const float *g = rt_f32(grad_out);
    if (tap[m->L]) {
        float *t = api->scratch(ctx, sizeof(float) * (size_t)rt_numel(grad_out));
        if (!t) return RT_STATUS_ERR_NOMEM;
        for (int64_t k = 0; k < rt_numel(grad_out); k++) t[k] = g[k] + tap[m->L][k];
        g = t;
    }
    float *dres = rt_f32(m->dres), *dh = rt_f32(m->dh);
    api->tied_logits_backward(g, rt_f32(m->ln_f.y), rt_f32(m->emb.wte), M, m->V, m->D, dh, rt_f32(m->emb.gwte));
    memset(dres, 0, sizeof(float) * (size_t)(M * m->D));
    const float *hL = m->L ? rt_f32(m->blk[m->L - 1].y) : rt_f32(m->emb.y);
    rtn_layernorm_backward(&m->ln_f, dh, hL, M, dres);
    const float *d = dres;
    for (int l = m->L - 1; l >= 0; l--) {
        if (tap[l]) {
            float *w = (float *)d; /* d is dres or a block's dx: ours to change */
            for (int64_t k = 0; k < M * m->D; k++) w[k] += tap[l][k];
        }
        const float *in = l ? rt_f32(m->blk[l - 1].y) : rt_f32(m->emb.y);
        rt_status st = rtn_gpt_block_backward(&m->blk[l], ctx, d, in, N, T);
        if (st) return st;
        d = rt_f32(m->blk[l].dx);
    }
    float *d0 = (float *)d;
    rtn_dropout_backward(&m->drop, d0, M * m->D);
    rt_status st = rtn_embedding_backward(&m->emb, ctx, rt_i32(m->ids), N, T, d0);
    if (grad_in) *grad_in = NULL; /* token ids have no gradient */
    return st;
}

static void zero_grad(void *self) { ((gpt *)self)->grads.stale = 1; }

static int parameters(void *self, rt_param *out, int max)
{
    gpt *m = self;
    if (m->grads.stale) {
        zero_all(m);
        m->grads.stale = 0;
    }
    rtn_params p = {out, max, 0};
    rtn_embedding_params(&m->emb, &p);
    for (int l = 0; l < m->L; l++) rtn_gpt_block_params(&m->blk[l], &p);
    rtn_layernorm_params(&m->ln_f, &p);
    return p.n;
}

static rtn_feature_table feature_table(void *self)
{
    gpt *m = self;
    return (rtn_feature_table){m->feat, m->L + 1, m->have_forward};
}
RTN_FEATURES_VT(feature_table)

/* Per token at full context. */
static int64_t flops(void *self)
{
    gpt *m = self;
    int64_t f = 2 * m->D * m->V;
    for (int l = 0; l < m->L; l++) f += rtn_gpt_block_flops(&m->blk[l], m->maxT);
    return f;
}

static void input_spec(void *self, rt_spec *out)
{
    gpt *m = self;
    *out = (rt_spec){.dtype = RT_DTYPE_I32, .ndim = 1, .shape = {0}, .vocab = m->V};
}

/* ------------------------------------------------------------- generation */

static int64_t lm_context(void *self) { return ((gpt *)self)->maxT; }
static int64_t lm_vocab(void *self) { return ((gpt *)self)->V; }

static rt_status lm_reset(void *self, rt_ctx *ctx, int64_t N)
{
    gpt *m = self;
    int64_t D = m->D, cs[3] = {N, m->maxT, D}, s1[2] = {N, D}, s3[2] = {N, 3 * D}, s4[2] = {N, 4 * D};
    int64_t w = (int64_t)api->attention_step_workspace(m->maxT);
    for (int l = 0; l < m->L; l++)
        if (api->tensor_ensure(ctx, &m->kc[l], RT_DTYPE_F32, 3, cs) ||
            api->tensor_ensure(ctx, &m->vc[l], RT_DTYPE_F32, 3, cs))
            return RT_STATUS_ERR_NOMEM;
    if (api->tensor_ensure(ctx, &m->sx, RT_DTYPE_F32, 2, s1) || api->tensor_ensure(ctx, &m->sh, RT_DTYPE_F32, 2, s1) ||
        api->tensor_ensure(ctx, &m->sa, RT_DTYPE_F32, 2, s1) || api->tensor_ensure(ctx, &m->sqkv, RT_DTYPE_F32, 2, s3) ||
        api->tensor_ensure(ctx, &m->su, RT_DTYPE_F32, 2, s4) || api->tensor_ensure(ctx, &m->smean, RT_DTYPE_F32, 1, &N) ||
        api->tensor_ensure(ctx, &m->srstd, RT_DTYPE_F32, 1, &N) || api->tensor_ensure(ctx, &m->swork, RT_DTYPE_F32, 1, &w))
        return RT_STATUS_ERR_NOMEM;
    m->sN = N;
    return RT_STATUS_OK;
}

/* y [N, out] = x W^T + b (+ act), the rows of one step. */
static void step_linear(const rtn_linear *L, const float *x, int64_t N, float *y, float beta)
{
    if (beta == 0.0f) {
        api->gemm(0, 1, N, L->out, L->in, 1.0f, x, L->in, rt_f32(L->w), L->in, 0.0f, y, L->out);
        api->bias_act(y, rt_f32(L->b), N, L->out, L->act, NULL);
    } else { /* y += x W^T + b: the residual add */
        api->gemm(0, 1, N, L->out, L->in, 1.0f, x, L->in, rt_f32(L->w), L->in, 1.0f, y, L->out);
        api->bias_act(y, rt_f32(L->b), N, L->out, RT_ACT_NONE, NULL);
    }
}

static rt_status lm_step(void *self, rt_ctx *ctx, const int32_t *ids, int64_t t, float *logits)
{
    gpt *m = self;
    int64_t N = m->sN, D = m->D;
    if (!N) return api->error(ctx, RT_STATUS_ERR_STATE, "generation step before reset");
    if (t < 0 || t >= m->maxT)
        return api->error(ctx, RT_STATUS_ERR_ARG, "position %lld is outside the context [0, %lld)", (long long)t,
                          (long long)m->maxT);
    float *x = rt_f32(m->sx), *h = rt_f32(m->sh), *qkv = rt_f32(m->sqkv), *a = rt_f32(m->sa), *u = rt_f32(m->su);
    float *mean = rt_f32(m->smean), *rstd = rt_f32(m->srstd);
    for (int64_t n = 0; n < N; n++) {
        if (ids[n] < 0 || ids[n] >= m->V)
            return api->error(ctx, RT_STATUS_ERR_ARG, "token id %d of sequence %lld is outside [0, %lld)", ids[n],
                              (long long)n, (long long)m->V);
        const float *e = rt_f32(m->emb.wte) + (int64_t)ids[n] * D, *pe = rt_f32(m->emb.wpe) + t * D;
        for (int64_t k = 0; k < D; k++) x[n * D + k] = e[k] + pe[k];
    }
    for (int l = 0; l < m->L; l++) {
        rtn_gpt_block *B = &m->blk[l];
        api->layernorm_forward(x, rt_f32(B->ln_1.w), rt_f32(B->ln_1.b), N, D, RTN_LN_EPS, h, mean, rstd);
        step_linear(&B->attn.c_attn, h, N, qkv, 0.0f);
        rt_status st = api->attention_step(ctx, qkv, N, t, m->maxT, D, m->H, rt_f32(m->kc[l]), rt_f32(m->vc[l]), a,
                                           rt_f32(m->swork));
        if (st) return st;
        step_linear(&B->attn.c_proj, a, N, x, 1.0f);
        api->layernorm_forward(x, rt_f32(B->ln_2.w), rt_f32(B->ln_2.b), N, D, RTN_LN_EPS, h, mean, rstd);
        step_linear(&B->c_fc, h, N, u, 0.0f);
        step_linear(&B->c_proj, u, N, x, 1.0f);
    }
    api->layernorm_forward(x, rt_f32(m->ln_f.w), rt_f32(m->ln_f.b), N, D, RTN_LN_EPS, h, mean, rstd);
    api->tied_logits(h, rt_f32(m->emb.wte), N, m->V, D, logits);
    return RT_STATUS_OK;
}

static const rt_lm_step_ext lm_ext = {
    .size = sizeof lm_ext,
    .context = lm_context,
    .vocab = lm_vocab,
    .reset = lm_reset,
    .step = lm_step,
};

static const void *extension(const char *name) { return !strcmp(name, RT_LM_STEP_EXT) ? &lm_ext : NULL; }

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
    RT_DESC_INIT(RT_KIND_STUDENT, "gpt", "1.0.0", "GPT language model (nanoGPT naming; tied output, pre-LayerNorm)"),
    .options = options,
    .create = create,
    .destroy = destroy,
    .student = &vt,
    .extension = extension,
};

RT_PLUGIN_LIST(&desc)
