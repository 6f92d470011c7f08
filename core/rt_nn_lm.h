/*
 * rt_nn_lm.h -- the layer kit's transformer layers (issue 11), on the
 * language-model kernels of rt_api (specified in core/rt_lm.h).  Header-
 * only like rt_nn.h, whose conventions it follows: a layer is a struct the
 * student embeds; init takes the state_dict prefix; forward keeps what
 * backward needs in the layer's tensors (tensor_ensure: no allocation per
 * step after the first); backward ACCUMULATES parameter gradients (a
 * student with a lazy zero-grad zeroes them first: rtn_lm_zero_*), and
 * says at each function what it does with the input gradient.
 *
 *   rtn_layernorm   nn.LayerNorm(D): "<p>.weight" = 1, "<p>.bias" = 0, eps 1e-5
 *   rtn_embedding   token + learned position embedding: "<p>.wte.weight"
 *                   [V, D], "<p>.wpe.weight" [maxT, D], N(0, 0.02)
 *   rtn_attention   causal multi-head self-attention over a fused qkv
 *                   ("<p>.c_attn" [3D, D], "<p>.c_proj" [D, D])
 *   rtn_gpt_block   pre-LayerNorm block: x + attn(ln_1(x)), then
 *                   + mlp(ln_2(.)) with mlp = c_proj(gelu(c_fc(.))), 4D wide
 *
 * Shapes: activations are [M, D] with M = N * T rows, row n*T + t.
 * Names are nanoGPT's (model.py, bias=True), so a state_dict of its GPT
 * loads them; plugins/students/gpt.c documents the whole model.
 */
#ifndef RT_NN_LM_H
#define RT_NN_LM_H

#include "rt_nn.h"

#define RTN_LN_EPS 1e-5f /* nn.LayerNorm's default */

/* Re-draws a linear layer as GPT-2 / nanoGPT do: weight N(0, std), bias 0. */
static inline void rtn_linear_init_normal(rtn_linear *L, rt_rng *rng, float std)
{
    float *w = rt_f32(L->w);
    for (int64_t k = 0; k < L->out * L->in; k++) w[k] = std * api->rng_normal(rng);
    rtn_zero(L->b);
}

/* ------------------------------------------------------------ layer norm */

typedef struct rtn_layernorm {
    int64_t D;
    rt_tensor *w, *b, *gw, *gb; /* [D] */
    rt_tensor *y, *mean, *rstd; /* [M, D], [M], [M] */
    char wname[RTN_NAME], bname[RTN_NAME];
} rtn_layernorm;

static inline rt_status rtn_layernorm_init(rtn_layernorm *L, rt_ctx *ctx, const char *prefix, int64_t D)
{
    L->D = D;
    if (!(L->w = api->tensor_new(ctx, RT_DTYPE_F32, 1, &D)) || !(L->b = api->tensor_new(ctx, RT_DTYPE_F32, 1, &D)) ||
        !(L->gw = api->tensor_new(ctx, RT_DTYPE_F32, 1, &D)) || !(L->gb = api->tensor_new(ctx, RT_DTYPE_F32, 1, &D)))
        return RT_STATUS_ERR_NOMEM;
    for (int64_t k = 0; k < D; k++) rt_f32(L->w)[k] = 1.0f;
    snprintf(L->wname, sizeof L->wname, "%.40s.weight", prefix);
    snprintf(L->bname, sizeof L->bname, "%.40s.bias", prefix);
    return RT_STATUS_OK;
}

static inline void rtn_layernorm_free(rtn_layernorm *L)
{
    rt_tensor *ts[] = {L->w, L->b, L->gw, L->gb, L->y, L->mean, L->rstd};
    for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) api->tensor_release(ts[k]);
}

/* L->y [M, D] = layernorm(x [M, D]). */
static inline rt_status rtn_layernorm_forward(rtn_layernorm *L, rt_ctx *ctx, const float *x, int64_t M)
{
    int64_t s[2] = {M, L->D};
    if (api->tensor_ensure(ctx, &L->y, RT_DTYPE_F32, 2, s) || api->tensor_ensure(ctx, &L->mean, RT_DTYPE_F32, 1, s) ||
        api->tensor_ensure(ctx, &L->rstd, RT_DTYPE_F32, 1, s))
        return RT_STATUS_ERR_NOMEM;
    api->layernorm_forward(x, rt_f32(L->w), rt_f32(L->b), M, L->D, RTN_LN_EPS, rt_f32(L->y), rt_f32(L->mean),
                           rt_f32(L->rstd));
    return RT_STATUS_OK;
}

/* dy [M, D] the gradient wrt L->y; x the forward's input.  dx [M, D]
 * ACCUMULATES (a residual stream's gradient is already in it); may be
 * NULL.  gw, gb accumulate. */
static inline void rtn_layernorm_backward(rtn_layernorm *L, const float *dy, const float *x, int64_t M, float *dx)
{
    api->layernorm_backward(dy, x, rt_f32(L->w), rt_f32(L->mean), rt_f32(L->rstd), M, L->D, dx, rt_f32(L->gw),
                            rt_f32(L->gb));
}

static inline void rtn_layernorm_params(rtn_layernorm *L, rtn_params *p)
{
    rtn_param(p, L->wname, L->w, L->gw, RT_ROLE_TRAINABLE);
    rtn_param(p, L->bname, L->b, L->gb, RT_ROLE_TRAINABLE);
}

static inline void rtn_layernorm_zero(rtn_layernorm *L)
{
    rtn_zero(L->gw);
    rtn_zero(L->gb);
}

/* ------------------------------------------------------------- embedding */

typedef struct rtn_embedding {
    int64_t V, maxT, D;
    rt_tensor *wte, *wpe, *gwte, *gwpe; /* [V, D], [maxT, D] */
    rt_tensor *y;                       /* [N, T, D] */
    char tname[RTN_NAME], pname[RTN_NAME];
} rtn_embedding;

static inline rt_status rtn_embedding_init(rtn_embedding *E, rt_ctx *ctx, const char *prefix, int64_t V,
                                           int64_t maxT, int64_t D, rt_rng *rng)
{
    E->V = V;
    E->maxT = maxT;
    E->D = D;
    int64_t ts[2] = {V, D}, ps[2] = {maxT, D};
    if (!(E->wte = api->tensor_new(ctx, RT_DTYPE_F32, 2, ts)) || !(E->gwte = api->tensor_new(ctx, RT_DTYPE_F32, 2, ts)) ||
        !(E->wpe = api->tensor_new(ctx, RT_DTYPE_F32, 2, ps)) || !(E->gwpe = api->tensor_new(ctx, RT_DTYPE_F32, 2, ps)))
        return RT_STATUS_ERR_NOMEM;
    for (int64_t k = 0; k < V * D; k++) rt_f32(E->wte)[k] = 0.02f * api->rng_normal(rng);
    for (int64_t k = 0; k < maxT * D; k++) rt_f32(E->wpe)[k] = 0.02f * api->rng_normal(rng);
    snprintf(E->tname, sizeof E->tname, "%.34s.wte.weight", prefix);
    snprintf(E->pname, sizeof E->pname, "%.34s.wpe.weight", prefix);
    return RT_STATUS_OK;
}

static inline void rtn_embedding_free(rtn_embedding *E)
{
    rt_tensor *ts[] = {E->wte, E->wpe, E->gwte, E->gwpe, E->y};
    for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) api->tensor_release(ts[k]);
}

/* E->y [N, T, D] = wte[ids] + wpe[0..T).  Errors: an id outside [0, V)
 * (naming [n, t]), T beyond maxT. */
static inline rt_status rtn_embedding_forward(rtn_embedding *E, rt_ctx *ctx, const int32_t *ids, int64_t N, int64_t T)
{
    int64_t s[3] = {N, T, E->D};
    if (api->tensor_ensure(ctx, &E->y, RT_DTYPE_F32, 3, s)) return RT_STATUS_ERR_NOMEM;
    return api->embedding_forward(ctx, ids, N, T, rt_f32(E->wte), E->V, rt_f32(E->wpe), E->maxT, E->D, rt_f32(E->y));
}

/* gwte, gwpe += the scatter of dy [N, T, D]. */
static inline rt_status rtn_embedding_backward(rtn_embedding *E, rt_ctx *ctx, const int32_t *ids, int64_t N,
                                               int64_t T, const float *dy)
{
    return api->embedding_backward(ctx, ids, N, T, dy, E->V, E->maxT, E->D, rt_f32(E->gwte), rt_f32(E->gwpe));
}

static inline void rtn_embedding_params(rtn_embedding *E, rtn_params *p)
{
    rtn_param(p, E->tname, E->wte, E->gwte, RT_ROLE_TRAINABLE);
    rtn_param(p, E->pname, E->wpe, E->gwpe, RT_ROLE_TRAINABLE);
}

static inline void rtn_embedding_zero(rtn_embedding *E)
{
    rtn_zero(E->gwte);
    rtn_zero(E->gwpe);
}

/* ------------------------------------------------------------- attention */

typedef struct rtn_attention {
    int64_t D, H;
    rtn_linear c_attn, c_proj; /* [3D, D], [D, D] */
    rt_tensor *att, *a;        /* [N, H, T, T] probabilities, [M, D] heads side by side */
    rt_tensor *da, *dqkv;      /* backward buffers: [M, D], [M, 3D] */
} rtn_attention;

/* "<prefix>.c_attn", "<prefix>.c_proj"; weights N(0, 0.02), c_proj's
 * N(0, proj_std) (nanoGPT: 0.02 / sqrt(2 layers)), biases 0. */
static inline rt_status rtn_attention_init(rtn_attention *A, rt_ctx *ctx, const char *prefix, int64_t D, int64_t H,
                                           float proj_std, rt_rng *rng)
{
    A->D = D;
    A->H = H;
    if (api->attention_check(ctx, 1, 1, D, H)) return RT_STATUS_ERR_SHAPE;
    char n[RTN_NAME];
    snprintf(n, sizeof n, "%.32s.c_attn", prefix);
    if (rtn_linear_init(&A->c_attn, ctx, n, D, 3 * D, RT_ACT_NONE, rng)) return RT_STATUS_ERR_NOMEM;
    snprintf(n, sizeof n, "%.32s.c_proj", prefix);
    if (rtn_linear_init(&A->c_proj, ctx, n, D, D, RT_ACT_NONE, rng)) return RT_STATUS_ERR_NOMEM;
    rtn_linear_init_normal(&A->c_attn, rng, 0.02f);
    rtn_linear_init_normal(&A->c_proj, rng, proj_std);
    return RT_STATUS_OK;
}

static inline void rtn_attention_free(rtn_attention *A)
{
    rtn_linear_free(&A->c_attn);
    rtn_linear_free(&A->c_proj);
    rt_tensor *ts[] = {A->att, A->a, A->da, A->dqkv};
    for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) api->tensor_release(ts[k]);
}

/* A->c_proj.y [M, D] = c_proj(attention(c_attn(x))) over x [N, T, D]. */
static inline rt_status rtn_attention_forward(rtn_attention *A, rt_ctx *ctx, const float *x, int64_t N, int64_t T)
{
    int64_t M = N * T, as[4] = {N, A->H, T, T}, ys[2] = {M, A->D};
    if (api->attention_check(ctx, N, T, A->D, A->H)) return RT_STATUS_ERR_SHAPE;
    if (rtn_linear_forward(&A->c_attn, ctx, x, M) || api->tensor_ensure(ctx, &A->att, RT_DTYPE_F32, 4, as) ||
        api->tensor_ensure(ctx, &A->a, RT_DTYPE_F32, 2, ys))
        return RT_STATUS_ERR_NOMEM;
    api->attention_forward(rt_f32(A->c_attn.y), N, T, A->D, A->H, rt_f32(A->a), rt_f32(A->att));
    return rtn_linear_forward(&A->c_proj, ctx, rt_f32(A->a), M);
}

/* d [M, D] the gradient wrt c_proj.y (changed in place); x the forward's
 * input.  Parameter gradients accumulate; with want_dx, A->c_attn.dx
 * [M, D] is OVERWRITTEN with the input gradient. */
static inline rt_status rtn_attention_backward(rtn_attention *A, rt_ctx *ctx, float *d, const float *x, int64_t N,
                                               int64_t T, int want_dx)
{
    int64_t M = N * T, qs[2] = {M, 3 * A->D};
    if (rtn_linear_backward(&A->c_proj, ctx, d, rt_f32(A->a), M, 1.0f, 1.0f, 1) ||
        api->tensor_ensure(ctx, &A->dqkv, RT_DTYPE_F32, 2, qs))
        return RT_STATUS_ERR_NOMEM;
    float *work = api->scratch(ctx, sizeof(float) * api->attention_workspace(T));
    if (!work) return RT_STATUS_ERR_NOMEM;
    api->attention_backward(rt_f32(A->c_proj.dx), rt_f32(A->c_attn.y), rt_f32(A->att), N, T, A->D, A->H,
                            rt_f32(A->dqkv), work);
    return rtn_linear_backward(&A->c_attn, ctx, rt_f32(A->dqkv), x, M, 1.0f, 1.0f, want_dx);
}

static inline void rtn_attention_params(rtn_attention *A, rtn_params *p)
{
    rtn_linear_params(&A->c_attn, p);
    rtn_linear_params(&A->c_proj, p);
}

static inline void rtn_attention_zero(rtn_attention *A)
{
    rtn_linear_zero(&A->c_attn);
    rtn_linear_zero(&A->c_proj);
}

/* ------------------------------------------------------------- GPT block */

/* Dropout (p) on each residual branch after its projection, as nanoGPT's
 * resid_dropout; attention probabilities are not dropped. */
typedef struct rtn_gpt_block {
    int64_t D;
    rtn_layernorm ln_1, ln_2;
    rtn_attention attn;
    rtn_linear c_fc, c_proj; /* mlp: [4D, D] gelu, [D, 4D] */
    rtn_dropout drop_attn, drop_mlp;
    rt_tensor *x1, *y; /* [M, D]: after the attention residual, the output */
    rt_tensor *dx, *d1, *d2; /* [M, D]: input gradient; two work buffers */
} rtn_gpt_block;

/* "<prefix>.ln_1", ".attn.c_attn", ".attn.c_proj", ".ln_2", ".mlp.c_fc",
 * ".mlp.c_proj".  layers: the model's depth, for the residual projections'
 * N(0, 0.02 / sqrt(2 layers)). */
static inline rt_status rtn_gpt_block_init(rtn_gpt_block *B, rt_ctx *ctx, const char *prefix, int64_t D, int64_t H,
                                           int layers, float dropout, rt_rng *rng)
{
    char n[RTN_NAME];
    float pstd = 0.02f / sqrtf(2.0f * (float)layers);
    B->D = D;
    B->drop_attn.p = B->drop_mlp.p = dropout;
    snprintf(n, sizeof n, "%.30s.ln_1", prefix);
    if (rtn_layernorm_init(&B->ln_1, ctx, n, D)) return RT_STATUS_ERR_NOMEM;
    snprintf(n, sizeof n, "%.30s.attn", prefix);
    if (rtn_attention_init(&B->attn, ctx, n, D, H, pstd, rng)) return RT_STATUS_ERR_NOMEM;
    snprintf(n, sizeof n, "%.30s.ln_2", prefix);
    if (rtn_layernorm_init(&B->ln_2, ctx, n, D)) return RT_STATUS_ERR_NOMEM;
    snprintf(n, sizeof n, "%.30s.mlp.c_fc", prefix);
    if (rtn_linear_init(&B->c_fc, ctx, n, D, 4 * D, RT_ACT_GELU, rng)) return RT_STATUS_ERR_NOMEM;
    snprintf(n, sizeof n, "%.30s.mlp.c_proj", prefix);
    if (rtn_linear_init(&B->c_proj, ctx, n, 4 * D, D, RT_ACT_NONE, rng)) return RT_STATUS_ERR_NOMEM;
    rtn_linear_init_normal(&B->c_fc, rng, 0.02f);
    rtn_linear_init_normal(&B->c_proj, rng, pstd);
    return RT_STATUS_OK;
}

static inline void rtn_gpt_block_free(rtn_gpt_block *B)
{
    rtn_layernorm_free(&B->ln_1);
    rtn_layernorm_free(&B->ln_2);
    rtn_attention_free(&B->attn);
    rtn_linear_free(&B->c_fc);
    rtn_linear_free(&B->c_proj);
    rt_tensor *ts[] = {B->drop_attn.mask, B->drop_mlp.mask, B->x1, B->y, B->dx, B->d1, B->d2};
    for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) api->tensor_release(ts[k]);
}

/* B->y [N, T, D] = block(x [N, T, D]); per sample, as a feature is. */
static inline rt_status rtn_gpt_block_forward(rtn_gpt_block *B, rt_ctx *ctx, const float *x, int64_t N, int64_t T,
                                              int train)
{
    int64_t M = N * T, s[2] = {M, B->D}, ys[3] = {N, T, B->D};
    if (api->tensor_ensure(ctx, &B->x1, RT_DTYPE_F32, 2, s) || api->tensor_ensure(ctx, &B->y, RT_DTYPE_F32, 3, ys))
        return RT_STATUS_ERR_NOMEM;
    rt_status st;
    if ((st = rtn_layernorm_forward(&B->ln_1, ctx, x, M)) ||
        (st = rtn_attention_forward(&B->attn, ctx, rt_f32(B->ln_1.y), N, T)) ||
        (st = rtn_dropout_forward(&B->drop_attn, ctx, B->attn.c_proj.y, train)))
        return st;
    float *x1 = rt_f32(B->x1), *y = rt_f32(B->y);
    const float *a = rt_f32(B->attn.c_proj.y);
    for (int64_t k = 0; k < M * B->D; k++) x1[k] = x[k] + a[k];
    if ((st = rtn_layernorm_forward(&B->ln_2, ctx, x1, M)) ||
        (st = rtn_linear_forward(&B->c_fc, ctx, rt_f32(B->ln_2.y), M)) ||
        (st = rtn_linear_forward(&B->c_proj, ctx, rt_f32(B->c_fc.y), M)) ||
        (st = rtn_dropout_forward(&B->drop_mlp, ctx, B->c_proj.y, train)))
        return st;
    const float *m = rt_f32(B->c_proj.y);
    for (int64_t k = 0; k < M * B->D; k++) y[k] = x1[k] + m[k];
    return RT_STATUS_OK;
}

/* dy [M, D] the gradient wrt B->y (not changed); x the forward's input.
 * Parameter gradients accumulate; B->dx [M, D] is OVERWRITTEN with the
 * input gradient. */
static inline rt_status rtn_gpt_block_backward(rtn_gpt_block *B, rt_ctx *ctx, const float *dy, const float *x,
                                               int64_t N, int64_t T)
{
    int64_t M = N * T, s[2] = {M, B->D};
    size_t bytes = sizeof(float) * (size_t)(M * B->D);
    if (api->tensor_ensure(ctx, &B->dx, RT_DTYPE_F32, 2, s) || api->tensor_ensure(ctx, &B->d1, RT_DTYPE_F32, 2, s) ||
        api->tensor_ensure(ctx, &B->d2, RT_DTYPE_F32, 2, s))
        return RT_STATUS_ERR_NOMEM;
    float *dx1 = rt_f32(B->d1), *d = rt_f32(B->d2), *dx = rt_f32(B->dx);
    /* y = x1 + drop(c_proj(gelu(c_fc(ln_2(x1))))) */
    memcpy(dx1, dy, bytes);
    memcpy(d, dy, bytes);
    rtn_dropout_backward(&B->drop_mlp, d, M * B->D);
    if (rtn_linear_backward(&B->c_proj, ctx, d, rt_f32(B->c_fc.y), M, 1.0f, 1.0f, 1) ||
        rtn_linear_backward(&B->c_fc, ctx, rt_f32(B->c_proj.dx), rt_f32(B->ln_2.y), M, 1.0f, 1.0f, 1))
        return RT_STATUS_ERR_NOMEM;
    rtn_layernorm_backward(&B->ln_2, rt_f32(B->c_fc.dx), rt_f32(B->x1), M, dx1);
    /* x1 = x + drop(attn(ln_1(x))) */
    memcpy(d, dx1, bytes);
    rtn_dropout_backward(&B->drop_attn, d, M * B->D);
    rt_status st = rtn_attention_backward(&B->attn, ctx, d, rt_f32(B->ln_1.y), N, T, 1);
    if (st) return st;
    memcpy(dx, dx1, bytes);
    rtn_layernorm_backward(&B->ln_1, rt_f32(B->attn.c_attn.dx), x, M, dx);
    return RT_STATUS_OK;
}

static inline void rtn_gpt_block_params(rtn_gpt_block *B, rtn_params *p)
{
    rtn_layernorm_params(&B->ln_1, p);
    rtn_attention_params(&B->attn, p);
    rtn_layernorm_params(&B->ln_2, p);
    rtn_linear_params(&B->c_fc, p);
    rtn_linear_params(&B->c_proj, p);
}

static inline void rtn_gpt_block_zero(rtn_gpt_block *B)
{
    rtn_layernorm_zero(&B->ln_1);
    rtn_attention_zero(&B->attn);
    rtn_layernorm_zero(&B->ln_2);
    rtn_linear_zero(&B->c_fc);
    rtn_linear_zero(&B->c_proj);
}

/* Multiply-adds of one position through the block, times 2 (the
 * attention's score and weighting terms at a mean length T/2). */
static inline int64_t rtn_gpt_block_flops(const rtn_gpt_block *B, int64_t T)
{
    int64_t D = B->D;
    return 2 * (3 * D * D + D * D + 8 * D * D) + 2 * T * D;
}

#endif /* RT_NN_LM_H */
