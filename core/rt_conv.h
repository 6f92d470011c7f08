/*
 * rt_conv.h -- convolutional kernels: conv2d, max/average/global-average
 * pooling, batch normalisation, residual add.  Pure C, float32, NCHW,
 * batch first, row-major and contiguous.
 *
 * Contracts shared by every kernel here:
 *   - Each fast kernel has a plain reference twin (_ref), nested loops
 *     accumulating in double, that the tests compare against.
 *   - No kernel allocates.  Where scratch is needed the caller passes a
 *     workspace of the size the matching *_workspace function returns.
 *   - Forward outputs are overwritten.  Backward gradients ACCUMULATE
 *     (+=): grad input, grad weight, grad bias alike, so the caller zeroes
 *     them once per step and several consumers of one tensor (a residual
 *     branch) simply add.  The _set variants (max pool and train-mode
 *     batch norm) overwrite the input gradient instead.  Any gradient pointer documented as optional may
 *     be NULL, and then it is neither computed nor touched.
 *   - Geometry is validated once by a *_geom_check function (rt_status and a
 *     message in ctx naming the layer's numbers and the fix); the kernels
 *     then trust it (a geometry that was not checked is the caller's bug).
 *   - The fast conv, pooling and batch-norm kernels spread their work over
 *     the kernels' worker pool (core/kernels/parallel.h), on as many
 *     threads as rt_set_threads gave the BLAS; each GEMM inside then runs
 *     on one.  Their results are the same bits with any thread count.
 *   - Output sizes follow PyTorch (floor mode):
 *       out = floor((in + 2 pad - dilation (k - 1) - 1) / stride) + 1
 * Nothing here includes the plugin ABI beyond retort.h's types.
 */
#ifndef RT_CONV_H
#define RT_CONV_H

#include <stddef.h>
#include <stdint.h>

#include "retort.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ================================================================ conv2d */

/* rt_conv2d_geom (x, weight, bias and output sizes) is defined in
 * rt_plugin.h: plugins reach these kernels through rt_api. */

/* Checks g (every size >= 1 except N >= 0 and pads >= 0, groups dividing
 * both channel counts, output >= 1x1, element counts without int64
 * overflow) and sets H_out, W_out.  RT_STATUS_ERR_ARG / ERR_SHAPE + a
 * message starting "conv2d: ". */
rt_status rt_conv2d_geom_check(rt_ctx *ctx, rt_conv2d_geom *g);

/* Floats of workspace the fast forward and backward need (the same for
 * both, for this N): with K = (C_in/groups) KH KW and P = H_out W_out,
 * rt_conv2d_parts(g) col blocks of (K + 1) P (one sample's im2col and a
 * row of ones) and an accumulator C_out (K + 1); 0 for a 1x1 kernel of
 * stride 1 without padding (the input is its own col).  About 2 MB a col
 * block for 3x3, 64 channels, 56x56; the blocks stay within 2^23 floats
 * unless one is larger. */
size_t rt_conv2d_workspace(const rt_conv2d_geom *g);

/* The parts the batch is cut into for y and dx: min(N, 8), fewer when the
 * col blocks would pass 2^23 floats; 1 for N <= 1.  Each part is a task
 * of the kernels' worker pool (core/kernels/parallel.h: up to
 * rt_get_threads() threads, each task's GEMMs on one), using the col block
 * of its thread.  dweight and dbias are summed in sample order into the
 * accumulator, the threads splitting its output channels (and the threads
 * at most the parts), so every result has the serial code's bits. */
int64_t rt_conv2d_parts(const rt_conv2d_geom *g);

/* y = conv(x, weight) + bias.  bias may be NULL.  im2col + rt_gemm, one
 * GEMM per sample and group.  ws: rt_conv2d_workspace(g) floats. */
void rt_conv2d_forward(const rt_conv2d_geom *g, const float *x, const float *weight,
                       const float *bias, float *y, float *ws);
/* From dy [N, C_out, H_out, W_out]: dx += dL/dx [N, C_in, H, W],
 * dweight += dL/dweight, dbias += dL/dbias; each may be NULL.  x is read
 * only for dweight, weight only for dx.  ws as for the forward. */
void rt_conv2d_backward(const rt_conv2d_geom *g, const float *x, const float *weight,
                        const float *dy, float *dx, float *dweight, float *dbias,
                        float *ws);
void rt_conv2d_forward_ref(const rt_conv2d_geom *g, const float *x, const float *weight,
                           const float *bias, float *y);
void rt_conv2d_backward_ref(const rt_conv2d_geom *g, const float *x, const float *weight,
                            const float *dy, float *dx, float *dweight, float *dbias);

/* =============================================================== pooling */

/* rt_pool2d_geom is defined in rt_plugin.h. */

/* Checks g as rt_conv2d_geom_check does (and H W < 2^31, for the int32
 * argmax) and sets H_out, W_out.  what ("max_pool2d", "avg_pool2d")
 * starts the message. */
rt_status rt_pool2d_geom_check(rt_ctx *ctx, rt_pool2d_geom *g, const char *what);

/* Max pooling; padding counts as -inf (never chosen).  argmax, if not
 * NULL, receives [N, C, H_out, W_out] indices into the input plane
 * (ih W + iw, PyTorch's return_indices), the first maximum on ties; a NaN
 * in a window wins (the last NaN, and it propagates, as in PyTorch). */
void rt_maxpool2d_forward(const rt_pool2d_geom *g, const float *x, float *y, int32_t *argmax);
/* dx += dy routed to the argmax of each window. */
void rt_maxpool2d_backward(const rt_pool2d_geom *g, const float *dy, const int32_t *argmax,
                           float *dx);
/* The same with dx overwritten: zero where no window routes (the one
 * exception to "backwards accumulate": a layer's own input gradient needs
 * no zeroing pass over memory before it, each plane is zeroed in cache). */
void rt_maxpool2d_backward_set(const rt_pool2d_geom *g, const float *dy, const int32_t *argmax,
                               float *dx);
void rt_maxpool2d_forward_ref(const rt_pool2d_geom *g, const float *x, float *y,
                              int32_t *argmax);
/* The twin finds the argmax again from x (not from the forward's). */
void rt_maxpool2d_backward_ref(const rt_pool2d_geom *g, const float *x, const float *dy,
                               float *dx);

/* Average pooling.  count_include_pad 1 (PyTorch's default) divides by
 * the window clipped to the padded input, 0 by its part inside the input. */
void rt_avgpool2d_forward(const rt_pool2d_geom *g, int count_include_pad, const float *x,
                          float *y);
void rt_avgpool2d_backward(const rt_pool2d_geom *g, int count_include_pad, const float *dy,
                           float *dx); /* dx += */
void rt_avgpool2d_forward_ref(const rt_pool2d_geom *g, int count_include_pad,
                              const float *x, float *y);
void rt_avgpool2d_backward_ref(const rt_pool2d_geom *g, int count_include_pad,
                               const float *dy, float *dx);

/* Global average pooling: x [N, C, HW] -> y [N, C] (HW = H W >= 1). */
void rt_global_avgpool_forward(const float *x, int64_t N, int64_t C, int64_t HW, float *y);
void rt_global_avgpool_backward(const float *dy, int64_t N, int64_t C, int64_t HW,
                                float *dx); /* dx += */
void rt_global_avgpool_forward_ref(const float *x, int64_t N, int64_t C, int64_t HW,
                                   float *y);
void rt_global_avgpool_backward_ref(const float *dy, int64_t N, int64_t C, int64_t HW,
                                    float *dx);

/* ========================================================= batch norm */

/*
 * Batch normalisation over x [N, C, HW]: HW = H W for BatchNorm2d, 1 for
 * BatchNorm1d on [N, C] (L for [N, C, L]).  Statistics per channel over
 * the N HW values.  gamma, beta [C] may be NULL (affine = False: 1 and 0).
 * y may equal x in the forwards.  PyTorch's semantics (defaults eps 1e-5,
 * momentum 0.1):
 *   train:  mean, var = batch mean, biased variance (1/n); y = (x - mean)
 *           / sqrt(var + eps) gamma + beta;
 *           running_mean = (1 - momentum) running_mean + momentum mean,
 *           running_var  = (1 - momentum) running_var
 *                          + momentum var n / (n - 1)   (unbiased),
 *           num_batches_tracked += 1
 *   eval:   the same normalisation with running_mean and running_var.
 * The running buffers and the int64 counter are state to save in
 * checkpoints; initial values 0, 1 and 0.
 */

/* Train-mode forward.  running_mean, running_var, num_batches_tracked may
 * be NULL (track_running_stats = False: none is updated).  save_mean and
 * save_invstd [C] (required) receive the batch mean and 1/sqrt(var + eps)
 * for the backward.  RT_STATUS_ERR_ARG when N HW < 2 (as PyTorch: "expected
 * more than 1 value per channel"), eps <= 0 or momentum outside [0, 1];
 * then nothing is written. */
rt_status rt_batchnorm_train_forward(rt_ctx *ctx, const float *x, int64_t N, int64_t C,
                                     int64_t HW, const float *gamma, const float *beta,
                                     float eps, float momentum, float *running_mean,
                                     float *running_var, int64_t *num_batches_tracked,
                                     float *y, float *save_mean, float *save_invstd);
/* Eval-mode forward with the running statistics. */
void rt_batchnorm_eval_forward(const float *x, int64_t N, int64_t C, int64_t HW,
                               const float *gamma, const float *beta, float eps,
                               const float *running_mean, const float *running_var, float *y);
/* Train-mode backward (the batch statistics depend on x):
 *   dx += gamma invstd (dy - mean(dy) - xhat mean(dy xhat)),
 *   dgamma += sum(dy xhat), dbeta += sum(dy),  xhat = (x - mean) invstd,
 * with the forward's save_mean, save_invstd.  dx, dgamma, dbeta may be NULL. */
void rt_batchnorm_train_backward(const float *x, const float *dy, int64_t N, int64_t C,
                                 int64_t HW, const float *gamma, const float *save_mean,
                                 const float *save_invstd, float *dx, float *dgamma,
                                 float *dbeta);
/* The same with dx overwritten (dx =, not +=; dgamma and dbeta still
 * accumulate): no zeroing pass before, no read of dx. */
void rt_batchnorm_train_backward_set(const float *x, const float *dy, int64_t N, int64_t C,
                                     int64_t HW, const float *gamma, const float *save_mean,
                                     const float *save_invstd, float *dx, float *dgamma,
                                     float *dbeta);
/* Eval-mode backward (statistics are constants): dx += gamma invstd dy. */
void rt_batchnorm_eval_backward(const float *x, const float *dy, int64_t N, int64_t C,
                                int64_t HW, const float *gamma, float eps,
                                const float *running_mean, const float *running_var,
                                float *dx, float *dgamma, float *dbeta);

/* Twins (the train twin checks nothing and returns nothing: the caller has
 * run the fast one's checks). */
void rt_batchnorm_train_forward_ref(const float *x, int64_t N, int64_t C, int64_t HW,
                                    const float *gamma, const float *beta, float eps,
                                    float momentum, float *running_mean, float *running_var,
                                    int64_t *num_batches_tracked, float *y, float *save_mean,
                                    float *save_invstd);
void rt_batchnorm_eval_forward_ref(const float *x, int64_t N, int64_t C, int64_t HW,
                                   const float *gamma, const float *beta, float eps,
                                   const float *running_mean, const float *running_var,
                                   float *y);
void rt_batchnorm_train_backward_ref(const float *x, const float *dy, int64_t N, int64_t C,
                                     int64_t HW, const float *gamma, const float *save_mean,
                                     const float *save_invstd, float *dx, float *dgamma,
                                     float *dbeta);
void rt_batchnorm_eval_backward_ref(const float *x, const float *dy, int64_t N, int64_t C,
                                    int64_t HW, const float *gamma, float eps,
                                    const float *running_mean, const float *running_var,
                                    float *dx, float *dgamma, float *dbeta);

/* ========================================================= residual add */

/* y[n] = a[n] + b[n]; y may equal a or b. */
void rt_residual_add(const float *a, const float *b, float *y, int64_t n);
/* da += dy, db += dy; either may be NULL. */
void rt_residual_add_backward(const float *dy, int64_t n, float *da, float *db);

/* ==================================================== elementwise passes */

/* The layer kit's passes between the kernels above, on the same threads
 * (core/kernels/pointwise.c).  Each is one obvious loop, which the tests
 * write out as the reference. */

/* x[0..n) = v. */
void rt_fill(float *x, int64_t n, float v);
/* y = x > 0 ? x : 0 (NaN -> 0, -0 -> +0); y may not overlap x. */
void rt_relu_forward(const float *x, float *y, int64_t n);
/* d = y > 0 ? d : 0, in place: the input gradient of a relu with output y
 * (or input: the same sign); d may not overlap y. */
void rt_relu_backward(float *d, const float *y, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
