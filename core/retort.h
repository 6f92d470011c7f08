/*
 * retort.h -- the retort core: tensors, kernels, random numbers, optimizers,
 * datasets, checkpoints and the plugin host.  Pure C: no Lua here.
 *
 * Ownership is written beside each function:
 *   "new reference"  the caller owns it and must release/free it;
 *   "borrowed"       the callee keeps it; do not release it.
 * Fallible functions return rt_status (or NULL) and leave a message in the
 * rt_ctx they were given: the operation, the names, the shapes, and for
 * files the path and the byte offset.  Nothing here exits or aborts on
 * anything a user or a file can cause; assert() guards internal invariants
 * only.
 */
#ifndef RETORT_H
#define RETORT_H

#include <stdarg.h>
#include <stdio.h>
#include "rt_plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RT_VERSION "0.1.0"

typedef struct rt_registry rt_registry;

/* ================================================================ context */

/* A call context: the last error, a scratch arena, the training RNG, the
 * plugin registry in use.  One per thread of control.  new: NULL on OOM. */
rt_ctx *rt_ctx_new(void);
void rt_ctx_free(rt_ctx *ctx); /* NULL is a no-op */

/* Formats a message into ctx (replacing the previous one); returns code. */
rt_status rt_error(rt_ctx *ctx, rt_status code, const char *fmt, ...)
    RT_PRINTF(3, 4);
rt_status rt_verror(rt_ctx *ctx, rt_status code, const char *fmt, va_list ap);
/* Puts "prefix" + ": " in front of the current message; returns the
 * current status.  Used by callers to add context on the way up. */
rt_status rt_error_prefix(rt_ctx *ctx, const char *fmt, ...) RT_PRINTF(2, 3);
const char *rt_ctx_message(const rt_ctx *ctx); /* borrowed; "" if none */
rt_status rt_ctx_status(const rt_ctx *ctx);
void rt_ctx_clear(rt_ctx *ctx);

/* Scratch: 64-byte aligned, valid until rt_scratch_reset. NULL + error. */
void *rt_scratch(rt_ctx *ctx, size_t bytes);
void rt_scratch_reset(rt_ctx *ctx);

rt_rng *rt_ctx_rng(rt_ctx *ctx); /* borrowed, the training stream */
/* The registry plugins reach through api->instance_create (borrowed). */
void rt_ctx_set_registry(rt_ctx *ctx, rt_registry *r);
rt_registry *rt_ctx_registry(const rt_ctx *ctx);

/* Short names for messages. */
const char *rt_status_name(rt_status s);
const char *rt_kind_name(rt_kind k); /* "teacher", "loss", "student" */

/* ================================================================ tensors */

size_t rt_dtype_size(rt_dtype d);
const char *rt_dtype_name(rt_dtype d); /* "f32", "i32" */

/* New reference to a zero-filled contiguous tensor.  ndim 0..RT_MAX_DIMS,
 * every dim >= 0, element count and byte size checked for overflow.
 * NULL + error on bad shape or OOM. */
rt_tensor *rt_tensor_new(rt_ctx *ctx, rt_dtype dtype, int ndim,
                         const int64_t *shape);
/* As rt_tensor_new, and copies n elements from data (n must equal numel). */
rt_tensor *rt_tensor_from(rt_ctx *ctx, rt_dtype dtype, int ndim,
                          const int64_t *shape, const void *data);
void rt_tensor_retain(rt_tensor *t);
void rt_tensor_release(rt_tensor *t); /* NULL is a no-op */

/* Views: new references sharing t's storage.  Every element the view can
 * reach is checked to lie inside the storage.  NULL + error otherwise. */
rt_tensor *rt_tensor_view(rt_ctx *ctx, rt_tensor *t, int ndim,
                          const int64_t *shape, const int64_t *stride,
                          int64_t offset /* elements, relative to t->data */);
/* Rows [start, start+len) along dim. */
rt_tensor *rt_tensor_narrow(rt_ctx *ctx, rt_tensor *t, int dim, int64_t start,
                            int64_t len);
/* Same elements, new shape; t must be contiguous and numel must match.
 * One dim may be -1 (inferred). */
rt_tensor *rt_tensor_reshape(rt_ctx *ctx, rt_tensor *t, int ndim,
                             const int64_t *shape);
/* New reference: a contiguous copy. */
rt_tensor *rt_tensor_clone(rt_ctx *ctx, const rt_tensor *t);
/* dst <- src element by element; same dtype and shape, any strides. */
rt_status rt_tensor_copy(rt_ctx *ctx, rt_tensor *dst, const rt_tensor *src);
/* Every element <- v (converted to the dtype). */
void rt_tensor_fill(rt_tensor *t, double v);
/* See rt_api.tensor_ensure. */
rt_status rt_tensor_ensure(rt_ctx *ctx, rt_tensor **slot, rt_dtype dtype,
                           int ndim, const int64_t *shape);
int rt_tensor_same_shape(const rt_tensor *a, const rt_tensor *b);
/* "[128, 10]" into buf (truncated to len); returns buf. */
const char *rt_tensor_shape_str(const rt_tensor *t, char *buf, size_t len);
/* Element at a flat row-major index of the logical shape, as double. */
double rt_tensor_get(const rt_tensor *t, int64_t flat);
void rt_tensor_set(rt_tensor *t, int64_t flat, double v);
/* 1 if every element of an f32 tensor is finite (i32: always 1). */
int rt_tensor_all_finite(const rt_tensor *t);
/* RT_STATUS_OK when t (contiguous; i32 always passes) holds no NaN or inf;
 * else RT_STATUS_ERR_NUMERIC and "WHAT has a non-finite value: nan at
 * [i, j] (0-based, of [N, C])" in ctx, naming the first one. */
rt_status rt_tensor_check_finite(rt_ctx *ctx, const rt_tensor *t, const char *what);
/* Bytes of the storage, for size reports. */
size_t rt_tensor_nbytes(const rt_tensor *t);

/* ================================================================ kernels */
/* Row-major.  Each fast kernel has a plain reference twin (_ref) that the
 * tests compare against.  Shapes are in the comments; no kernel allocates. */

/* C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + beta * C.  op(X) = X^T if t.
 * Fast: cblas_sgemm.  M, N or K of 0 is allowed (C scaled by beta). */
void rt_gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
             const float *A, int64_t lda, const float *B, int64_t ldb,
             float beta, float *C, int64_t ldc);
void rt_gemm_ref(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb,
                 float beta, float *C, int64_t ldc);

/* y[N,D] = act(y + b[D]) in place; b may be NULL (no bias); pre, if not
 * NULL, receives the pre-activation [N,D]. */
void rt_bias_act(float *y, const float *b, int64_t N, int64_t D, rt_act act,
                 float *pre);
void rt_bias_act_ref(float *y, const float *b, int64_t N, int64_t D,
                     rt_act act, float *pre);
/* dy[N,D] in place: grad wrt output -> grad wrt pre-activation, using the
 * forward output y (relu, tanh) or pre (gelu).  db[D] += column sums of
 * the result if db is not NULL.  gelu with pre NULL sets dy to NaN (a
 * caller's bug made visible to the finiteness checks, not a crash). */
void rt_bias_act_backward(float *dy, const float *y, const float *pre,
                          int64_t N, int64_t D, rt_act act, float *db);
void rt_bias_act_backward_ref(float *dy, const float *y, const float *pre,
                              int64_t N, int64_t D, rt_act act, float *db);
rt_act rt_act_parse(const char *name); /* "relu"... ; -1 if unknown */
const char *rt_act_name(rt_act a);

/* out[N,C] = softmax(x/T) / log_softmax(x/T) per row, max-subtracted.
 * out may equal x.  T > 0.  -inf entries give probability 0. */
void rt_softmax(const float *x, float *out, int64_t N, int64_t C, float T);
void rt_log_softmax(const float *x, float *out, int64_t N, int64_t C,
                    float T);
void rt_softmax_ref(const float *x, float *out, int64_t N, int64_t C, float T);
void rt_log_softmax_ref(const float *x, float *out, int64_t N, int64_t C,
                        float T);

/* out[N,C] = log_softmax(x/T) per row in double precision, for losses whose
 * float32 terms cancel (a KL at large T).  Max-subtracted; -inf entries
 * give -inf; a row of all -inf gives NaN. */
void rt_log_softmax_f64(const float *x, double *out, int64_t N, int64_t C, double T);

/* Tensor arithmetic on rt_tensor (core/kernels/tensor_math.c): what the
 * Lua binding's tensor methods run.  f32 (labels: i32 class ids); inputs
 * may be views (any strides); out is preallocated by the caller with the
 * shape the op gives and may alias an elementwise op's input (in place).
 * what names the op in messages ("tensor:add"); on error nothing is
 * written and the message is in ctx. */
typedef enum rt_binop { RT_OP_ADD, RT_OP_SUB, RT_OP_MUL, RT_OP_DIV } rt_binop;
typedef enum rt_unop {
    RT_OP_EXP, RT_OP_LOG, RT_OP_NEG, RT_OP_ABS, RT_OP_SQRT, RT_OP_SQUARE,
    RT_OP_POW, RT_OP_CLAMP
} rt_unop;
typedef enum rt_reduce { RT_REDUCE_SUM, RT_REDUCE_MEAN, RT_REDUCE_MAX } rt_reduce;
/* The NumPy broadcast of a's and b's shapes into shape, *nd; an error
 * names both shapes. */
rt_status rt_broadcast_shape(rt_ctx *ctx, const rt_tensor *a, const rt_tensor *b,
                             int64_t *shape, int *nd, const char *what);
/* out = a (op) b, broadcasting; a NULL stands for the number av, b NULL
 * for bv (one of them a tensor).  out: the broadcast shape. */
rt_status rt_tensor_binary(rt_ctx *ctx, rt_binop o, rt_tensor *out,
                           const rt_tensor *a, float av, const rt_tensor *b,
                           float bv, const char *what);
/* out = f(a) elementwise, out of a's shape: pow uses p; clamp to
 * [lo, hi] (+-INFINITY: an open side; lo > hi is an error). */
rt_status rt_tensor_unary(rt_ctx *ctx, rt_unop o, rt_tensor *out,
                          const rt_tensor *a, double p, double lo, double hi,
                          const char *what);
/* out (contiguous, a's shape) = softmax(a / T) or, with logp,
 * log_softmax(a / T) along the last dimension; T finite and > 0. */
rt_status rt_tensor_softmax(rt_ctx *ctx, rt_tensor *out, const rt_tensor *a,
                            double T, int logp, const char *what);
/* *out = the sum, mean or max of every element of a (any dtype), in
 * double; the max of no element is an error, NaN wins the max. */
rt_status rt_tensor_reduce_all(rt_ctx *ctx, rt_reduce o, const rt_tensor *a,
                               double *out, const char *what);
/* The shape of a reduced along dim (0-based): removed, or 1 with keep. */
rt_status rt_reduce_shape(rt_ctx *ctx, rt_reduce o, const rt_tensor *a, int dim,
                          int keep, int64_t *shape, int *nd, const char *what);
/* out (contiguous, rt_reduce_shape) = a reduced along dim, in double. */
rt_status rt_tensor_reduce(rt_ctx *ctx, rt_reduce o, rt_tensor *out,
                           const rt_tensor *a, int dim, int keep,
                           const char *what);
/* y is i32 [N] (N < 0: any) with every label in [0, C); the message
 * counts rows from 1, as the Lua caller sees them. */
rt_status rt_labels_check(rt_ctx *ctx, const rt_tensor *y, int64_t N, int64_t C,
                          const char *what);
/* out[n] = a[n, y[n]] for a [N, C]; out contiguous [N]. */
rt_status rt_tensor_gather_labels(rt_ctx *ctx, rt_tensor *out, const rt_tensor *a,
                                  const rt_tensor *y, const char *what);
/* out (contiguous [N, C]) = one-hot rows of the labels y [N]. */
rt_status rt_tensor_one_hot(rt_ctx *ctx, rt_tensor *out, const rt_tensor *y,
                            int64_t C, const char *what);

/* Mean over the batch of cross-entropy(softmax(logits[N,C]), y[N]) with
 * label smoothing eps (target = (1-eps) one-hot + eps/C).  If grad is not
 * NULL: grad[N,C] += scale * d(mean CE)/d(logits).  Labels must be in
 * [0, C): checked by the caller.  Returns the loss (double). */
double rt_cross_entropy(const float *logits, const int32_t *y, int64_t N,
                        int64_t C, float eps, float *grad, float scale);

/* out[i] = index of the largest x[i, :] (first one on ties). */
void rt_argmax(const float *x, int64_t N, int64_t C, int32_t *out);
/* out[C] (+)= column sums of x[N,C]; accumulate: 0 overwrite, 1 add. */
void rt_sum_cols(const float *x, int64_t N, int64_t C, float *out,
                 int accumulate);
/* sum of x[n] in double. */
double rt_sum(const float *x, int64_t n);
/* y[n] += a * x[n] */
void rt_axpy(int64_t n, float a, const float *x, float *y);
/* Index of the first NaN or +-inf in x[0..n), or -1 when all are finite.
 * Fast: one vectorised pass over the exponent bits (finite.c). */
int64_t rt_check_finite(const float *x, int64_t n);
int64_t rt_check_finite_ref(const float *x, int64_t n);
/* "nan", "inf" or "-inf" for a non-finite v, for messages. */
const char *rt_nonfinite_name(float v);

/* BLAS threads and the OpenBLAS core name (for manifests). */
void rt_set_threads(int n);
int rt_get_threads(void);
const char *rt_blas_core(void);

/* ================================================================= random */

void rt_rng_seed(rt_rng *r, uint64_t seed, uint64_t stream);
uint64_t rt_rng_u64(rt_rng *r);
float rt_rng_uniform(rt_rng *r);           /* [0, 1), 24 random bits */
float rt_rng_normal(rt_rng *r);            /* N(0,1), Box-Muller */
uint64_t rt_rng_below(rt_rng *r, uint64_t n); /* uniform in [0, n), n > 0, unbiased */
/* perm[0..n) = a uniformly random permutation of 0..n-1 (Fisher-Yates). */
void rt_rng_permutation(rt_rng *r, int64_t *perm, int64_t n);
/* State as 64 hex chars and back (checkpoints).  parse: 0 ok, -1 bad. */
void rt_rng_to_hex(const rt_rng *r, char out[65]);
int rt_rng_from_hex(rt_rng *r, const char *hex);

/* ============================================================= optimizers */

typedef enum rt_optim_kind { RT_OPTIM_SGD = 1, RT_OPTIM_ADAM = 2 } rt_optim_kind;

typedef struct rt_optim_cfg {
    rt_optim_kind kind;
    float lr;
    float weight_decay; /* SGD: L2 added to the gradient (PyTorch SGD).
                           Adam: L2 added to the gradient (PyTorch Adam);
                           AdamW (decoupled=1): p -= lr*wd*p.            */
    float momentum;     /* SGD */
    float dampening;    /* SGD, PyTorch semantics */
    int nesterov;       /* SGD */
    float beta1, beta2, eps; /* Adam */
    int decoupled;      /* Adam: 1 = AdamW */
} rt_optim_cfg;

typedef struct rt_optim rt_optim;

/* New optimizer; cfg is copied.  Values are checked (lr >= 0, betas in
 * [0,1), eps > 0, nesterov needs momentum > 0 and dampening 0).
 * NULL + error. */
rt_optim *rt_optim_new(rt_ctx *ctx, const rt_optim_cfg *cfg);
void rt_optim_free(rt_optim *o);
/* One update of every parameter with a gradient, in one fused pass each,
 * at learning rate lr (the schedule's value for this step).  State
 * (moments) is created at the first step and tied to the parameter order
 * and shapes: a different list afterwards is an error.  Does NOT zero the
 * gradients (the caller does, through the student's zero_grad).
 * A parameter or state value made NaN or +-inf by the update is an error
 * (RT_STATUS_ERR_NUMERIC) naming it, its first bad index and the cause (a
 * non-finite gradient, or lr overflowing a finite one); the update is
 * already applied up to that parameter, so the run must stop there. */
rt_status rt_optim_step(rt_optim *o, rt_ctx *ctx, const rt_param *params,
                        int n, float lr);
/* Checkpointing: the state tensors with names ("<param>.exp_avg",
 * "<param>.exp_avg_sq", "<param>.momentum_buffer") and the step count.
 * state_count is 0 before the first step.  Tensors are borrowed. */
int rt_optim_state_count(const rt_optim *o);
const char *rt_optim_state_name(const rt_optim *o, int i);
rt_tensor *rt_optim_state_tensor(const rt_optim *o, int i);
int64_t rt_optim_steps(const rt_optim *o);
/* Restores state from named tensors (as written above) for this params
 * list: creates the state, copies each tensor (shapes must match, every
 * name must be present), sets the step count. */
rt_status rt_optim_restore(rt_optim *o, rt_ctx *ctx, const rt_param *params,
                           int n, int64_t steps,
                           rt_tensor *(*lookup)(void *ud, const char *name),
                           void *ud);
const rt_optim_cfg *rt_optim_config(const rt_optim *o);

/* Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_ with
 * norm_type 2): norm = sqrt(sum over every TRAINABLE parameter with a
 * gradient of sum g^2), accumulated in double.  When max_norm > 0 and
 * norm > max_norm, every such gradient is multiplied by max_norm / norm,
 * so the clipped global norm is max_norm (PyTorch divides by norm + 1e-6;
 * here exactly); otherwise nothing is written.  *norm (may be NULL) gets
 * the norm before clipping.  A non-finite norm leaves the gradients as
 * they are (the optimizer's step then names the bad parameter).
 * max_norm NaN, +-inf or <= 0 is RT_STATUS_ERR_ARG. */
rt_status rt_clip_grad_norm(rt_ctx *ctx, const rt_param *params, int n,
                            double max_norm, double *norm);

typedef enum rt_sched_kind {
    RT_SCHED_CONSTANT = 1,
    RT_SCHED_STEP = 2,   /* lr * gamma^floor(step / step_size) */
    RT_SCHED_COSINE = 3  /* linear warm-up, then cosine from lr to min_lr
                            over total - warmup steps */
} rt_sched_kind;

typedef struct rt_schedule {
    rt_sched_kind kind;
    float lr, min_lr, gamma;
    int64_t step_size, warmup, total;
} rt_schedule;

/* Learning rate at step (0-based).  Constant and step also honour warmup
 * (linear from lr/warmup... to lr over `warmup` steps). */
float rt_schedule_lr(const rt_schedule *s, int64_t step);

/* ================================================================== files */

/* Reads an IDX file (optionally gzip'd: detected by magic 1f 8b) into a new
 * tensor: dims from the header (big-endian), element type converted to
 * `want` (f32 values are multiplied by `scale`; i32 takes integer types
 * only).  Every size is checked: dims product overflow, declared size vs
 * bytes present (exact match required: trailing bytes are an error),
 * decompression bounded by the declared size.  Errors name the path, the
 * field and the byte offset.  f32 results must be finite (a NaN or inf is
 * RT_STATUS_ERR_NUMERIC naming the sample and the offset). */
rt_status rt_idx_read(rt_ctx *ctx, const char *path, rt_dtype want,
                      float scale, rt_tensor **out);
/* The same from memory (raw or gzip, detected as above), for fuzzing and
 * tests; label names it in errors. */
rt_status rt_idx_read_mem(rt_ctx *ctx, const void *buf, size_t len,
                          const char *label, rt_dtype want, float scale,
                          rt_tensor **out);

/* safetensors.  A parsed file: tensors (F32 and I32; other dtypes are
 * refused with the name and the dtype) and the flat string metadata. */
typedef struct rt_st rt_st;

rt_status rt_st_read(rt_ctx *ctx, const char *path, rt_st **out);
rt_status rt_st_read_mem(rt_ctx *ctx, const void *buf, size_t len,
                         const char *label, rt_st **out);
/* Reads only the header's __metadata__ (cheap for large files). */
rt_status rt_st_read_meta(rt_ctx *ctx, const char *path, rt_st **out);
void rt_st_free(rt_st *f);
int rt_st_count(const rt_st *f);
const char *rt_st_name(const rt_st *f, int i);    /* borrowed */
rt_tensor *rt_st_tensor(const rt_st *f, int i);   /* borrowed */
rt_tensor *rt_st_find(const rt_st *f, const char *name); /* borrowed/NULL */
int rt_st_meta_count(const rt_st *f);
const char *rt_st_meta_key(const rt_st *f, int i);
const char *rt_st_meta_value(const rt_st *f, int i);
const char *rt_st_meta_get(const rt_st *f, const char *key); /* or NULL */
/* Every f32 tensor of f finite, else RT_STATUS_ERR_NUMERIC and "LABEL:
 * tensor 'name' has a non-finite value: nan at [i, j] ...".  The readers
 * accept any value (a file can be inspected); loaders of weights call this. */
rt_status rt_st_check_finite(rt_ctx *ctx, const rt_st *f, const char *label);

/* Writes tensors (any strides; written contiguous, in the given order) and
 * metadata (nmeta key/value pairs) to path atomically: a temp file in the
 * same folder, fsync, rename over path, fsync the folder.  On any failure
 * the temp file is removed and an existing file at path is untouched.
 * Non-finite f32 values are refused (RT_STATUS_ERR_NUMERIC, naming the
 * tensor).  Names must be unique and non-empty. */
rt_status rt_st_write(rt_ctx *ctx, const char *path, int n,
                      const char *const *names, const rt_tensor *const *tensors,
                      int nmeta, const char *const *keys,
                      const char *const *values);

/* Writes data to path atomically (as above): for JSON files. */
rt_status rt_write_atomic(rt_ctx *ctx, const char *path, const void *data,
                          size_t len);
/* SHA-256 of a file as 64 hex chars.  Regular files only: a FIFO, a
 * device or a socket is refused without being read (or blocking in open). */
rt_status rt_sha256_file(rt_ctx *ctx, const char *path, char out[65]);
/* The same with bounds, for paths taken from files (provenance chains):
 * max_bytes > 0 refuses a file larger than that (by its size and by the
 * bytes actually read); max_seconds > 0 stops a read that takes longer.
 * Either is an error naming the path and the bound. */
rt_status rt_sha256_file_bounded(rt_ctx *ctx, const char *path,
                                 uint64_t max_bytes, double max_seconds,
                                 char out[65]);
void rt_sha256_hex(const void *data, size_t len, char out[65]);
/* The weights' SHA-256, independent of any file layout: over the tensors
 * sorted by name (byte order), each as its name, NUL, its dtype name
 * ("f32"), NUL, its shape as decimal numbers joined by ",", NUL, then its
 * elements row-major in host (little-endian) byte order.  In NumPy:
 *   for k in sorted(sd): h.update(f"{k}\0f32\0{','.join(map(str, sd[k].shape))}\0".encode()
 *                                 + sd[k].astype("<f4").tobytes())
 * Tensors must be contiguous and names unique (errors name the tensor). */
rt_status rt_params_sha256(rt_ctx *ctx, int n, const char *const *names,
                           const rt_tensor *const *ts, char out[65]);

/* ============================================================= run folders */

/* One writer per run folder: an exclusive flock on DIR/.lock, which then
 * holds the writer's pid.  Fails at once (no waiting) when another process
 * holds it, with a message naming DIR and the holder's pid.  The lock goes
 * with the process: release, exit and kill -9 all free it.  *out: new,
 * release with rt_runlock_release (NULL is a no-op). */
typedef struct rt_runlock rt_runlock;
rt_status rt_runlock_acquire(rt_ctx *ctx, const char *dir, rt_runlock **out);
void rt_runlock_release(rt_runlock *lock);

/* Removes the temp files "<name>.tmp.<pid>" of atomic writes in dir whose
 * pid is not a live process (a writer killed mid-write); call it holding
 * the folder's lock.  *removed: how many went. */
rt_status rt_run_clean_temps(rt_ctx *ctx, const char *dir, int *removed);

/* Appends data (one or more whole lines) to path, creating it.  On a
 * failed or short write the file is cut back to its old length, so it
 * never ends in a torn line; the error names the path, the offset and the
 * cause (ENOSPC: "No space left on device"). */
rt_status rt_append_file(rt_ctx *ctx, const char *path, const void *data,
                         size_t len);

/* =============================================================== datasets */

/* A dataset: x [N, ...] f32 and y [N] i32, both retained. */
typedef struct rt_dataset rt_dataset;

/* New dataset over x and y (retained); N must agree; y may be NULL; x
 * must be finite (RT_STATUS_ERR_NUMERIC names the first bad sample).
 * NULL + error. */
rt_dataset *rt_dataset_new(rt_ctx *ctx, rt_tensor *x, rt_tensor *y);
void rt_dataset_free(rt_dataset *d);
int64_t rt_dataset_size(const rt_dataset *d);
rt_tensor *rt_dataset_x(const rt_dataset *d); /* borrowed */
rt_tensor *rt_dataset_y(const rt_dataset *d); /* borrowed, may be NULL */
/* Copies rows idx[0..n) into xb [>=n, ...] and yb [>=n] (preallocated,
 * contiguous; yb may be NULL).  Indices are checked. */
rt_status rt_dataset_gather(const rt_dataset *d, rt_ctx *ctx,
                            const int64_t *idx, int64_t n, rt_tensor *xb,
                            rt_tensor *yb);

/* The batches of one epoch (core/data/batcher.c).  Order: 0..N-1, or with
 * shuffle a permutation drawn from the stream (seed, epoch): the same
 * order for epoch e in every run and after a resume.  A batch size over N
 * is N.  d is borrowed and must outlive the batcher.  Error in ctx. */
typedef struct rt_batcher rt_batcher;
rt_status rt_batcher_new(rt_ctx *ctx, const rt_dataset *d, int64_t bs,
                         int shuffle, uint64_t seed, uint64_t epoch,
                         int drop_last, rt_batcher **out);
/* The next batch: B rows gathered into the first B rows of *x, *y (NULL
 * without labels) and *ids (i32 sample ids), tensors of batch-size rows
 * owned by b and reused by the next call.  Returns B; 0 at the end (a
 * short last batch is skipped with drop_last); -1 with an error in ctx. */
int64_t rt_batcher_next(rt_batcher *b, rt_ctx *ctx, rt_tensor **x,
                        rt_tensor **y, rt_tensor **ids);
/* Augments every batch's images after the gather (rt_augment_crop_flip):
 * samples are f32 images [C, H, W], pad in [0, min(H, W)]; the draws
 * come from their own stream (seed, epoch) of rt_batcher_new, so they are
 * reproducible and the shuffle's draws are unchanged.  Call before the
 * first rt_batcher_next.  RT_STATUS_ERR_ARG naming the mismatch. */
rt_status rt_batcher_augment(rt_batcher *b, rt_ctx *ctx, int64_t C, int64_t H,
                             int64_t W, int64_t pad, int flip);
int64_t rt_batcher_batch_size(const rt_batcher *b);
/* The epoch's order of sample ids (borrowed, *n of them). */
const int64_t *rt_batcher_order(const rt_batcher *b, int64_t *n);
void rt_batcher_free(rt_batcher *b);

/* ================================================================ metrics */
/* Evaluation sums over a batch; callers divide by the sample count.  Shapes
 * are checked, and logits must be finite (errors in ctx, result -1). */

/* Rows of logits [N, C] whose argmax equals y [N] (i32). */
int64_t rt_count_correct(rt_ctx *ctx, const rt_tensor *logits, const rt_tensor *y);
/* Rows of a [N, C] and b [N, C] with the same argmax; messages call a
 * "logits" and b "teacher logits". */
int64_t rt_count_agree(rt_ctx *ctx, const rt_tensor *a, const rt_tensor *b);
/* Sum over rows of KL(softmax(t/T) || softmax(s/T)), t and s [N, C];
 * teacher probabilities of 0 contribute 0.  Uses ctx scratch. */
double rt_kl_sum(rt_ctx *ctx, const rt_tensor *t, const rt_tensor *s, float T);
/* Rows of logits [N, C] whose label y [N] (i32, each in [0, C)) is among
 * the k largest logits; ties rank the lower class first, as argmax does, so
 * k = 1 equals rt_count_correct.  -1 + error on shapes, labels or k < 1. */
int64_t rt_count_topk(rt_ctx *ctx, const rt_tensor *logits, const rt_tensor *y, int k);
/* Adds each row of logits [N, C] to cm [C * C] (borrowed, row-major: row =
 * label, column = argmax).  Labels out of [0, C) are an error (cm is
 * untouched). */
rt_status rt_confusion_add(rt_ctx *ctx, const rt_tensor *logits, const rt_tensor *y, int64_t *cm);
/* Calibration: adds each row's confidence (its max softmax probability p,
 * T = 1) to bin b of nbins equal bins (b/M, (b+1)/M]: conf[b] += p, hits[b]
 * += (argmax == label), count[b] += 1.  The arrays are the caller's
 * [nbins].  Expected calibration error = sum_b |hits - conf|_b / N. */
rt_status rt_calibration_add(rt_ctx *ctx, const rt_tensor *logits, const rt_tensor *y, int nbins, double *conf,
                             double *hits, int64_t *count);
/* Sum over rows of the Jensen-Shannon divergence (natural log, in [0, ln 2])
 * between softmax(t/T) and softmax(s/T), t and s [N, C].  Uses ctx scratch;
 * -1 + error on shapes. */
double rt_js_sum(rt_ctx *ctx, const rt_tensor *t, const rt_tensor *s, float T);

/* ============================================================ plugin host */

/* New empty registry.  NULL on OOM. */
rt_registry *rt_registry_new(void);
/* Frees the registry.  Libraries with live instances stay loaded until the
 * last instance is released. */
void rt_registry_free(rt_registry *r);
/* Loads one plugin file.  Stages: permissions -> open -> entry -> init ->
 * abi -> register.  A failure names the path, the stage and, for abi, both
 * versions; a failed file registers nothing and is closed.  permissions
 * refuses a file writable by group or others or owned by a user other than
 * the caller and root, and one in a folder so writable (unless sticky) or
 * so owned. */
rt_status rt_registry_load(rt_registry *r, rt_ctx *ctx, const char *path);
/* Loads every *.so in dir (sorted by name).  Stops at the first failure
 * unless keep_going; then *nfailed counts failures (message: the last).
 * A dir writable by group or others, or owned by another user than the
 * caller and root, is refused whole (stage permissions). */
rt_status rt_registry_load_dir(rt_registry *r, rt_ctx *ctx, const char *dir,
                               int keep_going, int *nfailed);
/* The built-in folder (beside libretort: <libdir>/retort/plugins), then
 * every folder in RETORT_PLUGIN_PATH (':'-separated; an entry that is not
 * an absolute path is refused and reported). */
rt_status rt_registry_load_default(rt_registry *r, rt_ctx *ctx);
const char *rt_builtin_plugin_dir(void); /* borrowed, static */
int rt_registry_count(const rt_registry *r);
const rt_plugin_desc *rt_registry_at(const rt_registry *r, int i);
const char *rt_registry_path_at(const rt_registry *r, int i); /* the .so */
/* NULL if absent; the error (if ctx) lists what there is and a
 * did-you-mean. */
const rt_plugin_desc *rt_registry_find(const rt_registry *r, rt_ctx *ctx,
                                       rt_kind kind, const char *name);

/* The host function table handed to plugins. */
const rt_api *rt_host_api(void);

/* Instances: a plugin object plus its validated options.  Holds the
 * library open.  create: options as JSON text (NULL or "" = {}), validated
 * against the schema (unknown key with a did-you-mean, wrong type, out of
 * range, bad choice) before the plugin's create. *out new reference. */
rt_status rt_instance_create(rt_registry *r, rt_ctx *ctx, rt_kind kind,
                             const char *name, const char *opts_json,
                             rt_instance **out);
/* As rt_instance_create for a descriptor that is not in a registry (no
 * library behind it: losses written in Lua, test doubles).  desc must
 * outlive the instance; its schema is checked as at registration. */
rt_status rt_instance_from_desc(rt_ctx *ctx, const rt_plugin_desc *desc, const char *opts_json, rt_instance **out);
void rt_instance_retain(rt_instance *i);
void rt_instance_release(rt_instance *i); /* NULL is a no-op */
const rt_plugin_desc *rt_instance_desc(const rt_instance *i);
void *rt_instance_self(const rt_instance *i);
/* The validated options with defaults, as compact JSON (borrowed). */
const char *rt_instance_options(const rt_instance *i);

/* Checked calls through the vtables: arguments and shapes are checked,
 * the message is prefixed with "<kind> '<name>': ", scratch is reset.
 * Borrowed outputs as in rt_plugin.h. */
rt_status rt_student_forward(rt_instance *s, rt_ctx *ctx, const rt_tensor *x,
                             int train, rt_tensor **out);
rt_status rt_student_backward(rt_instance *s, rt_ctx *ctx,
                              const rt_tensor *grad_out, const rt_tap *taps,
                              int ntaps, rt_tensor **grad_in);
void rt_student_zero_grad(rt_instance *s);
rt_status rt_teacher_forward(rt_instance *t, rt_ctx *ctx, const rt_tensor *x,
                             rt_signal *out);
/* As rt_teacher_forward with the batch's sample ids (i64 [N] or NULL). */
rt_status rt_teacher_forward_ids(rt_instance *t, rt_ctx *ctx, const rt_tensor *x, const rt_tensor *ids,
                                 rt_signal *out);
/* Zeroes a loss's own parameter gradients (no-op without parameters). */
void rt_loss_zero_grad(rt_instance *l);
/* The features a loss reads (up to max into out; the total returned). */
int rt_loss_features(rt_instance *l, rt_feature_req *out, int max);
/* Whether the loss's bind has run (it runs on the first checked call). */
int rt_loss_bound(const rt_instance *l);
/* A student's input spec (0 and zeroed for other kinds). */
int rt_instance_input_spec(rt_instance *i, rt_spec *out);
/* Feature names a student or teacher can record (total returned). */
int rt_instance_features(rt_instance *i, const char **out, int max);
/* An optional capability of the instance's plugin by name (desc.extension),
 * or NULL when it has none. */
const void *rt_instance_extension(rt_instance *i, const char *name);
/* Turns recording of a feature on or off; an error names the known ones. */
rt_status rt_instance_record(rt_instance *i, rt_ctx *ctx, const char *name, int on);
rt_status rt_loss_forward(rt_instance *l, rt_ctx *ctx, const rt_loss_in *in,
                          double *value);
rt_status rt_loss_backward(rt_instance *l, rt_ctx *ctx, const rt_loss_in *in,
                           float scale, rt_tensor *grad);
rt_status rt_loss_set(rt_instance *l, rt_ctx *ctx, const char *name,
                      double value);
/* Records `name` = value_json (a JSON value, e.g. "true" or "\"x\"") in the
 * instance's options JSON without calling the plugin: for options the
 * caller changed itself (a Lua loss's boolean and string options), so that
 * rt_instance_options() reports the value in force.  On error (value not
 * JSON, out of memory) the recorded options are unchanged. */
rt_status rt_instance_record_option(rt_instance *i, rt_ctx *ctx, const char *name, const char *value_json);
/* Parameters of a student, teacher or loss (may be 0).  Borrowed. */
int rt_instance_params(rt_instance *i, rt_param *out, int max);
/* How many parameters rt_instance_params would list. */
int rt_instance_param_count(rt_instance *i);
/* All the parameters in a malloc'd array the caller frees; *n gets the
 * count.  NULL (and an error) on OOM or if the plugin's count changes
 * between two calls. */
rt_param *rt_instance_params_all(rt_instance *i, rt_ctx *ctx, int *n);
int64_t rt_instance_flops(rt_instance *i); /* -1 if not reported */
rt_tensor *rt_instance_feature(rt_instance *i, const char *name);

/* Saves the instance's parameters (values only) to a safetensors file with
 * metadata: "retort.kind", "retort.plugin", "retort.options" (JSON),
 * "retort.version", plus the nmeta pairs given.  Atomic. */
rt_status rt_instance_save(rt_instance *i, rt_ctx *ctx, const char *path,
                           int nmeta, const char *const *keys,
                           const char *const *values);
/* Loads parameter values from a safetensors file: every parameter present
 * with its exact shape and finite (the first NaN or inf is named); extra
 * tensors are ignored unless strict.  A failed load changes nothing. */
rt_status rt_instance_load(rt_instance *i, rt_ctx *ctx, const char *path);
rt_status rt_instance_load_st(rt_instance *i, rt_ctx *ctx, const rt_st *f,
                              const char *label);
/* A new instance (*out) with its parameters from the safetensors file at
 * path; name/opts_json NULL or "": from the file's metadata.  The header is
 * validated against the file's size first, and create may allocate at
 * most 2 x the file's size + 16 MiB of tensors (rt_api 1.2). */
rt_status rt_instance_from_checkpoint(rt_registry *r, rt_ctx *ctx, rt_kind kind, const char *name,
                                      const char *opts_json, const char *path, rt_instance **out);

/* Option schema helpers (core/options.c). */
/* Validates JSON text against desc's schema; on success *out is a new
 * malloc'd compact JSON text with defaults filled in. */
rt_status rt_options_validate(rt_ctx *ctx, const rt_plugin_desc *desc,
                              const char *json, char **out);
/* Writes the plugin's help (summary and each option's type, default,
 * range and help) to f. */
void rt_options_print_help(const rt_plugin_desc *desc, FILE *f);
/* Edit distance counting a swap of neighbours as one edit, for
 * did-you-mean. */
int rt_edit_distance(const char *a, const char *b);
/* The name in names[0..n) closest to name if close enough, else NULL;
 * ties go to the longer common prefix.  Borrowed from names. */
const char *rt_closest_name(const char *name, const char *const *names, int n);

/* ========================================================== gradient check */
/* Finite-difference checks of a plugin's backward against its forward
 * (Torch7's nn.Jacobian), for the tests and for plugin authors.
 *
 * Numerical derivative: fourth-order five-point stencils in double over the
 * double the forward returns, central
 *   (f(x-2h) - 8 f(x-h) + 8 f(x+h) - f(x+2h)) / 12h
 * and, next to a kink, one-sided.  h is eps rounded down to a power of two
 * (at least a few ulps of x) so that x + k h is exact in float32; where it
 * cannot be (huge x), a two-point difference over the offsets actually
 * stored is used.  Steps from 16 eps down to eps/256 are tried until one
 * matches to 1e-4: large steps beat float32 rounding noise, small ones
 * step past kinks (relu) and functions that vary faster than eps (a
 * softmax at T = 1e-3).  The best match counts: a correct backward matches
 * at some step; a wrong one is wrong at every step.  A stencil whose
 * slopes jump (it straddles a kink) is not used; an entry where every
 * stencil does, or whose value is not finite, is skipped and counted.
 *
 * Error measure, per entry, analytic a and numerical n:
 *   |a - n| / max(|a| + |n|, floor),  floor = 0.1 * max |a| over the
 *   tensor (and at least 1e-6),
 * so entries that are ~0 next to large ones compare on the tensor's scale
 * (an error below ~1e-4 of its largest entry is float32 noise), not on
 * their own.  Identical values give 0.  max_rel_err is the worst over
 * every entry checked, including the accumulation checks below; float32
 * plugins should reach <= 1e-3.
 */
#define RT_GRADCHECK_INPUTS 32

typedef struct rt_gradcheck_result {
    double max_rel_err; /* worst error (measure above) */
    char worst[128];    /* where it was: "student logits[1, 3]",
                           "layers.0.weight[17]", "accumulate: ..." */
    int64_t checked;    /* entries compared with finite differences */
    int64_t skipped;    /* entries skipped at kinks or non-finite inputs */
    /* The worst error per input, in the order first seen: "student
     * logits" for a loss; each parameter and "input" for a student; the
     * accumulation checks as "accumulate".  At most RT_GRADCHECK_INPUTS
     * (later ones fold into the last entry). */
    int ninputs;
    struct {
        char name[64];
        double max_rel_err;
        int64_t checked;
    } inputs[RT_GRADCHECK_INPUTS];
} rt_gradcheck_result;

/* Checks a loss at random inputs: student logits [N, C] ~ 2 N(0,1), teacher
 * logits [N, C] ~ 2 N(0,1) when the loss needs a teacher, labels uniform in
 * [0, C) when it needs targets, all from (seed, stream 0..2).  Compares
 * backward (scale 1 into a zero gradient) with finite differences of
 * forward for every student logit, and checks that backward accumulates:
 * twice at scale 0.5 onto the same buffer equals once at scale 1.
 * eps: the step (1e-2 suits logits of size ~1; 0 = 1e-2).  A failing call
 * into the loss returns its status with the message in ctx; a non-finite
 * value or gradient is RT_STATUS_ERR_NUMERIC naming where. */
rt_status rt_gradcheck_loss(rt_instance *loss, rt_ctx *ctx, int64_t N,
                            int64_t C, uint64_t seed, double eps,
                            rt_gradcheck_result *res);
/* The same at given inputs (borrowed; in->student is copied, not
 * changed).  Non-finite student logits are skipped (counted in skipped). */
rt_status rt_gradcheck_loss_at(rt_instance *loss, rt_ctx *ctx,
                               const rt_loss_in *in, double eps,
                               rt_gradcheck_result *res);

/* Checks a student: random input x [N, ...] ~ N(0,1), the scalar
 * f = sum(w * forward(x, train = 0)) with w ~ N(0,1) of the output's shape;
 * backward(w) gives df/dparams and df/dx, compared with finite differences
 * at up to 20 entries per parameter and 20 of x, chosen by (seed, stream 3).
 * Also checks that parameter gradients accumulate over two backwards
 * (2 g), that zero_grad resets them, and that the input gradient does not
 * accumulate.
 * in_shape: the input's shape without N (in_ndim entries); NULL = inferred
 * from the options: "input_shape" (a list) if present, else "sizes"[0],
 * else the second dimension of the first 2-D parameter.
 * eps as above.  Errors as above. */
rt_status rt_gradcheck_student(rt_instance *student, rt_ctx *ctx, int64_t N,
                               const int64_t *in_shape, int in_ndim,
                               uint64_t seed, double eps,
                               rt_gradcheck_result *res);

/* ---- augmentation (core/data/augment.c) ---- */
/* x: N images [C, H, W] (f32, contiguous), in place: each shifted by a
 * random crop of the image zero-padded by pad on every side (offsets
 * uniform in [-pad, pad], as torchvision's RandomCrop(H, padding = pad)),
 * then mirrored left-right with probability 1/2 when flip.  Draws two
 * (three with flip) numbers per image from rng, in image order.
 * RT_STATUS_ERR_ARG for sizes < 1, pad outside [0, min(H, W)], W > 4096. */
rt_status rt_augment_crop_flip(rt_ctx *ctx, float *x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t pad,
                               int flip, rt_rng *rng);

#ifdef __cplusplus
}
#endif
#endif /* RETORT_H */
