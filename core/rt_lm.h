/*
 * rt_lm.h -- the kernels of a small GPT (issue 11): token + position
 * embedding, layer norm, causal multi-head self-attention (full and one
 * position at a time with a key/value cache) and the output projection tied
 * to the embedding.  Pure core C, in the style of retort.h's kernels:
 *
 *   - row-major float32 through raw pointers and dims; the caller owns every
 *     buffer; no kernel allocates; where a kernel needs scratch, the caller
 *     passes `work` of the size the matching *_workspace() function gives
 *     (in floats);
 *   - backward passes ACCUMULATE (+=) into parameter gradients (zero_grad is
 *     the caller's); what each does with its input gradient is written at
 *     the function (layer norm accumulates it, so that a residual stream's
 *     gradient adds for free; attention overwrites its dqkv);
 *   - each kernel has a plain twin (_ref: naive loops accumulating in
 *     double) that tests/c/test_lm_kernels.c compares against;
 *   - the calls that can see user data (token ids, positions) return
 *     rt_status with a message in ctx naming the index and the value; the
 *     others trust their dims (the layer kit checks shapes once).
 *
 * A pre-LayerNorm GPT block over x [N, T, D] (the reference composition is
 * tests/c/lm_block.h; linear layers are rt_gemm with W [out, in] as y =
 * x W^T, then rt_bias_act):
 *
 *   h    = ln1(x)                          rt_layernorm_forward
 *   qkv  = h Wqkv^T + bqkv   [N, T, 3D]    rt_gemm + rt_bias_act(NONE)
 *   a    = attention(qkv)    [N, T, D]     rt_attention_forward
 *   x1   = x + a Wo^T + bo                 rt_gemm + rt_bias_act + rt_axpy
 *   u    = gelu(ln2(x1) Wfc^T + bfc)       [N, T, 4D] rt_bias_act(GELU)
 *   y    = x1 + u Wp^T + bp
 *
 * and the model: rt_embedding_forward, the blocks, a final layer norm, then
 * rt_tied_logits (logits = h wte^T, no bias).  Its backward adds into the
 * same dwte that rt_embedding_backward adds into: the tie is nothing more
 * than both passes accumulating into one gradient buffer.
 */
#ifndef RT_LM_H
#define RT_LM_H

#include "retort.h"

#ifdef __cplusplus
extern "C" {
#endif

/* PyTorch's nn.LayerNorm default, and GPT-2's. */
#define RT_LN_EPS 1e-5f

/* ============================================================= embedding */

/* out[N, T, D] = wte[ids[n, t], :] + wpe[t, :].
 * ids [N, T] i32, each in [0, V); wte [V, D]; wpe [maxT, D] with T <= maxT.
 * An id out of range is RT_STATUS_ERR_ARG naming [n, t], the id and V
 * (out is then partly written); T > maxT is RT_STATUS_ERR_SHAPE. */
rt_status rt_embedding_forward(rt_ctx *ctx, const int32_t *ids, int64_t N,
                               int64_t T, const float *wte, int64_t V,
                               const float *wpe, int64_t maxT, int64_t D,
                               float *out);
rt_status rt_embedding_forward_ref(rt_ctx *ctx, const int32_t *ids, int64_t N,
                                   int64_t T, const float *wte, int64_t V,
                                   const float *wpe, int64_t maxT, int64_t D,
                                   float *out);
/* Scatter-add: dwte[ids[n, t], :] += dout[n, t, :]; dwpe[t, :] += the same
 * (summed over n).  Either gradient may be NULL (frozen).  ids are checked
 * again (a scatter out of range would write outside dwte): nothing is
 * written when one is bad. */
rt_status rt_embedding_backward(rt_ctx *ctx, const int32_t *ids, int64_t N,
                                int64_t T, const float *dout, int64_t V,
                                int64_t maxT, int64_t D, float *dwte,
                                float *dwpe);
rt_status rt_embedding_backward_ref(rt_ctx *ctx, const int32_t *ids,
                                    int64_t N, int64_t T, const float *dout,
                                    int64_t V, int64_t maxT, int64_t D,
                                    float *dwte, float *dwpe);

/* ============================================================ layer norm */

/* Over the last dim of x [M, D] (M = N * T rows):
 *   out = (x - mean) * rstd * gamma + beta,  rstd = 1 / sqrt(var + eps),
 * var the biased variance (as PyTorch).  Saves mean [M] and rstd [M] for
 * the backward.  gamma/beta may be NULL (1 and 0).  out may not alias x. */
void rt_layernorm_forward(const float *x, const float *gamma,
                          const float *beta, int64_t M, int64_t D, float eps,
                          float *out, float *mean, float *rstd);
void rt_layernorm_forward_ref(const float *x, const float *gamma,
                              const float *beta, int64_t M, int64_t D,
                              float eps, float *out, float *mean, float *rstd);
/* dx [M, D] += d out/d x^T dout; dgamma [D] += sum_m dout * xhat;
 * dbeta [D] += sum_m dout.  dx, dgamma, dbeta may each be NULL.  dx
 * accumulates (the pre-LN block's residual adds its own gradient to it). */
void rt_layernorm_backward(const float *dout, const float *x,
                           const float *gamma, const float *mean,
                           const float *rstd, int64_t M, int64_t D, float *dx,
                           float *dgamma, float *dbeta);
void rt_layernorm_backward_ref(const float *dout, const float *x,
                               const float *gamma, const float *mean,
                               const float *rstd, int64_t M, int64_t D,
                               float *dx, float *dgamma, float *dbeta);

/* ============================================================= attention */
/* qkv [N, T, 3D]: per position the query, key and value projections side by
 * side (one fused linear, as llm.c and nanoGPT); head h of q is columns
 * [h*hs, (h+1)*hs) of the first D, hs = D / H, likewise for k and v.
 * Scores q.k / sqrt(hs), causal (position t sees 0..t), softmax. */

/* out [N, T, D] (heads side by side, ready for the output projection);
 * att [N, H, T, T] the probabilities, saved for the backward; entries
 * above the diagonal are written as 0.  D must be a multiple of H (the
 * caller checks, rt_attention_check does).  No workspace. */
void rt_attention_forward(const float *qkv, int64_t N, int64_t T, int64_t D,
                          int64_t H, float *out, float *att);
void rt_attention_forward_ref(const float *qkv, int64_t N, int64_t T,
                              int64_t D, int64_t H, float *out, float *att);
/* Floats of `work` rt_attention_backward needs: T * T. */
size_t rt_attention_workspace(int64_t T);
/* From dout [N, T, D], the forward's qkv and att: dqkv [N, T, 3D] is
 * OVERWRITTEN (it feeds the QKV linear's backward, nothing else adds to
 * it).  work: rt_attention_workspace(T) floats.  dqkv may not alias qkv. */
void rt_attention_backward(const float *dout, const float *qkv,
                           const float *att, int64_t N, int64_t T, int64_t D,
                           int64_t H, float *dqkv, float *work);
void rt_attention_backward_ref(const float *dout, const float *qkv,
                               const float *att, int64_t N, int64_t T,
                               int64_t D, int64_t H, float *dqkv);
/* RT_STATUS_ERR_SHAPE unless N, T >= 1, H >= 1 and D a positive multiple
 * of H; the message names the dims.  For the layer kit's create/forward. */
rt_status rt_attention_check(rt_ctx *ctx, int64_t N, int64_t T, int64_t D,
                             int64_t H);

/* One position at a time, for generation.  qkv [N, 3D] is position t of
 * each of N sequences; kcache and vcache [N, maxT, D] hold the keys and
 * values of positions 0..t-1 (written by earlier calls).  The step appends
 * k and v at row t and attends over 0..t: out [N, D] equals row t of
 * rt_attention_forward on the whole prefix (to float rounding).  A
 * generated token costs O(t D) here, not the O(t^2 D) of a new full
 * forward.  work: rt_attention_step_workspace(maxT) floats.  t < 0 or
 * t >= maxT is RT_STATUS_ERR_ARG (the cache is full: the model's context
 * length is maxT). */
size_t rt_attention_step_workspace(int64_t maxT);
rt_status rt_attention_step(rt_ctx *ctx, const float *qkv, int64_t N,
                            int64_t t, int64_t maxT, int64_t D, int64_t H,
                            float *kcache, float *vcache, float *out,
                            float *work);

/* ============================================ output tied to the embedding */

/* logits [M, V] = h [M, D] wte [V, D]^T: one rt_gemm, no bias. */
void rt_tied_logits(const float *h, const float *wte, int64_t M, int64_t V,
                    int64_t D, float *logits);
/* dwte [V, D] += dlogits^T h (the same buffer rt_embedding_backward adds
 * into); dh [M, D] = dlogits wte (overwritten; NULL to skip).  dwte may be
 * NULL (a frozen embedding). */
void rt_tied_logits_backward(const float *dlogits, const float *h,
                             const float *wte, int64_t M, int64_t V,
                             int64_t D, float *dh, float *dwte);

/* ============================================================ generation */

/* The next token from logits [V] of one position: softmax(logits /
 * temperature) over the top_k largest logits (top_k <= 0 or >= V: all of
 * them; entries tied with the k-th largest are all kept), drawn with one
 * rt_rng_uniform(r) by walking the ids in order.  temperature <= 0 is
 * greedy: the first largest logit, and r is not used (may be NULL).
 * work: V floats.  Deterministic for a given rng state.  Logits that are
 * NaN are never drawn; if no logit is finite the result is the argmax
 * (id 0 when all are NaN). */
int32_t rt_lm_sample(const float *logits, int64_t V, float temperature,
                     int64_t top_k, rt_rng *r, float *work);

#ifdef __cplusplus
}
#endif
#endif /* RT_LM_H */
