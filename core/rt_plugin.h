/*
 * rt_plugin.h -- the retort plugin ABI.  The one header a plugin includes.
 *
 * A plugin is a shared object exporting one symbol, rt_plugin_init (see
 * RT_PLUGIN_ENTRY below).  The host calls it once with its function table
 * (rt_api) and gets back a NULL-terminated list of descriptors: one file may
 * hold several plugins.  Plugins never link the retort core, Lua or BLAS:
 * everything they need arrives through rt_api (SQLite's extension pattern),
 * and `make check-plugins` enforces that with nm.
 *
 * Versioning: RT_ABI_MAJOR changes when anything here changes incompatibly;
 * the host refuses a plugin built against another major, naming both.
 * RT_ABI_MINOR grows when functions are appended to rt_api or fields to the
 * end of a struct; a plugin built against a newer minor than the host's is
 * refused too (it may call what the host lacks).  Every vtable, the
 * descriptor, rt_api, rt_batch and rt_loss_in carry their writer's `size`,
 * so a reader knows which members the writer had: members past `size` read
 * as absent (NULL / 0).
 * Optional capabilities that do not deserve a vtable slot are reached by
 * name through rt_plugin_desc.extension (LV2's extension_data), so adding
 * one needs no new major.
 *
 * ABI 2.0 (docs/abi.md is the guided tour, this header the specification):
 *  - students declare their input (rt_spec: dtype f32 or i32, per-sample
 *    shape) and the host checks every input against it;
 *  - outputs are [N, ..., C]; losses get a mask and a host-computed `norm`
 *    (count of real positions over the whole global batch), and every loss
 *    reduces as   value = sum over real positions / norm;
 *  - named features: students and teachers list theirs, losses declare the
 *    ones they read, and may send gradients into student features (taps);
 *  - losses may own parameters (bind gives them the shapes first);
 *  - parameters have roles: trainable, buffer (saved, not trained), frozen;
 *  - teachers receive sample ids (rt_batch) for caches and remote lookups;
 *  - rt_api offers checked calls into other instances, tensor views, i64.
 *
 * Conventions
 *  - Shapes are batch-first: every tensor a plugin receives is [N, ...].
 *  - Argument order is (self, ctx, inputs..., outputs...).
 *  - Fallible calls return rt_status; on failure they have put a message in
 *    ctx through api->error().  The host prefixes it with the plugin's kind
 *    and name, so a plugin writes "student logits [128, 10] vs teacher logits
 *    [128, 100]", not "loss 'kd': ...".
 *  - Plugins never exit, abort or longjmp on anything an input can cause.
 *  - Backward passes ACCUMULATE (+=) into gradient buffers, scaled where a
 *    scale is given, as Torch7's nn and llm.c do.
 *  - "borrowed" means the callee keeps ownership: do not release it.
 *    "new reference" means the caller must release it.
 */
#ifndef RT_PLUGIN_H
#define RT_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RT_ABI_MAJOR 2
#define RT_ABI_MINOR 2 /* 2.1: the language-model and conv kernels blocks at the end of rt_api; 2.2: fill, relu, overwriting backwards */
#define RT_MAX_DIMS 6

#if defined(__GNUC__)
#define RT_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define RT_EXPORT __attribute__((visibility("default")))
#define RT_MAYBE_UNUSED __attribute__((unused))
#else
#define RT_PRINTF(f, a)
#define RT_EXPORT
#define RT_MAYBE_UNUSED
#endif

typedef enum rt_status {
    RT_STATUS_OK = 0,
    RT_STATUS_ERR_ARG,     /* bad argument or option value            */
    RT_STATUS_ERR_SHAPE,   /* shapes or dtypes that do not fit        */
    RT_STATUS_ERR_NOMEM,   /* allocation failed                       */
    RT_STATUS_ERR_IO,      /* open/read/write/fsync/rename failed     */
    RT_STATUS_ERR_FORMAT,  /* malformed file contents                 */
    RT_STATUS_ERR_PLUGIN,  /* plugin load/ABI/registration problem    */
    RT_STATUS_ERR_NUMERIC, /* NaN or Inf where finite numbers belong  */
    RT_STATUS_ERR_STATE    /* call out of order (backward before forward) */
} rt_status;

/* Element types.  BF16 and F16 are reserved: no host call creates them yet,
 * and the host refuses them as inputs, but their numbers will not change. */
typedef enum rt_dtype {
    RT_DTYPE_F32 = 0,
    RT_DTYPE_I32 = 1,
    RT_DTYPE_I64 = 2,
    RT_DTYPE_BF16 = 3, /* reserved */
    RT_DTYPE_F16 = 4   /* reserved */
} rt_dtype;

typedef enum rt_kind {
    RT_KIND_TEACHER = 1,
    RT_KIND_LOSS = 2,
    RT_KIND_STUDENT = 3
} rt_kind;

typedef enum rt_act {
    RT_ACT_NONE = 0,
    RT_ACT_RELU = 1,
    RT_ACT_GELU = 2, /* tanh approximation, as PyTorch's approximate="tanh" */
    RT_ACT_TANH = 3
} rt_act;

/* ---------------------------------------------------------------- tensors */

typedef struct rt_storage rt_storage; /* opaque, refcounted, 64-byte aligned */

/* A tensor header.  Fixed size (ggml): shapes never allocate.  Plugins may
 * read every field; they create, retain and release tensors only through
 * rt_api.  `data` points at element [0,...,0] (storage base + offset).
 * Strides are in elements.  Views share storage. */
typedef struct rt_tensor {
    rt_dtype dtype;
    int ndim;
    int64_t shape[RT_MAX_DIMS];
    int64_t stride[RT_MAX_DIMS];
    int64_t offset; /* elements from the storage base to data */
    void *data;
    rt_storage *storage;
    int refcount; /* of this header; storage has its own */
} rt_tensor;

static inline int64_t rt_numel(const rt_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static inline float *rt_f32(const rt_tensor *t) { return (float *)t->data; }
static inline int32_t *rt_i32(const rt_tensor *t) { return (int32_t *)t->data; }
static inline int64_t *rt_i64(const rt_tensor *t) { return (int64_t *)t->data; }

/* Elements per row when the tensor is viewed as [shape[0], rest]. */
static inline int64_t rt_row_size(const rt_tensor *t)
{
    int64_t n = 1;
    for (int i = 1; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static inline int rt_same_shape(const rt_tensor *a, const rt_tensor *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

static inline int rt_is_contiguous(const rt_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return 0;
        s *= t->shape[i];
    }
    return 1;
}

/* ----------------------------------------------------------------- random */

/* xoshiro256** state.  Seeded through api->rng_seed (splitmix64 of seed and
 * stream), so (seed, stream) pairs give independent reproducible streams. */
typedef struct rt_rng {
    uint64_t s[4];
} rt_rng;

/* ------------------------------------------------------------ the context */

typedef struct rt_ctx rt_ctx;   /* opaque: error message, scratch, rng   */
typedef struct rt_opts rt_opts; /* opaque: validated options, defaults in */
typedef struct rt_instance rt_instance; /* opaque: a live plugin object   */

/* ------------------------------------------------------------ plugin kinds */

/* What the run does with a parameter.
 *   TRAINABLE  the optimizer updates it from grad; checkpoints save it.
 *   BUFFER     state the plugin updates itself (batch-norm running mean,
 *              num_batches_tracked as i64): saved and loaded, never given to
 *              the optimizer; grad is NULL.
 *   FROZEN     loaded, not trained (a teacher's weights, a fixed embedding);
 *              grad may be NULL. */
typedef enum rt_role {
    RT_ROLE_TRAINABLE = 0,
    RT_ROLE_BUFFER = 1,
    RT_ROLE_FROZEN = 2
} rt_role;

/* A named parameter of a student, teacher or loss.  Names follow PyTorch
 * state_dict naming ("layers.0.weight").  name, value and grad are borrowed
 * from the plugin and stay valid until it is destroyed.  grad is NULL for
 * buffers and frozen parameters.  A zero role is TRAINABLE, so designated
 * initialisers may leave it out. */
typedef struct rt_param {
    const char *name;
    rt_tensor *value;
    rt_tensor *grad;
    rt_role role;
} rt_param;

/* An extra gradient flowing into a named feature of a student (hint losses):
 * backward adds `grad` to the gradient of feature `name` as it passes it. */
typedef struct rt_tap {
    const char *name;
    const rt_tensor *grad; /* same shape as the feature */
} rt_tap;

/* What a student takes, per sample: x is [N, shape[0], ..., shape[ndim-1]]
 * of dtype.  A 0 in shape is "any length" (a sequence dimension).  flat != 0
 * accepts any per-sample shape with the same element count (an mlp that
 * takes [N, 784] or [N, 28, 28]).  ndim < 0: any per-sample shape, only
 * the dtype is checked.  The host checks every input against it
 * and the gradient checker builds its inputs from it (i32 inputs as token
 * ids in [0, vocab) when vocab > 0). */
typedef struct rt_spec {
    rt_dtype dtype;
    int ndim;
    int64_t shape[RT_MAX_DIMS - 1];
    int flat;
    int64_t vocab; /* i32 inputs: ids must lie in [0, vocab); 0 = unchecked */
} rt_spec;

typedef struct rt_student_vt {
    uint32_t size; /* sizeof(rt_student_vt) */
    /* x [N, ...] (as the spec says) -> *out [N, ..., C] f32.  *out is
     * borrowed and valid until the next forward.  train != 0 enables
     * dropout and records what backward needs. */
    rt_status (*forward)(void *self, rt_ctx *ctx, const rt_tensor *x,
                         int train, rt_tensor **out);
    /* grad_out [N, ..., C] (the gradient of the loss wrt the last forward's
     * out).  ACCUMULATES parameter gradients.  taps may be NULL (ntaps 0):
     * each adds a gradient to a named feature as backward passes it.
     * grad_in: if non-NULL, receives a borrowed [N, ...] gradient wrt x. */
    rt_status (*backward)(void *self, rt_ctx *ctx, const rt_tensor *grad_out,
                          const rt_tap *taps, int ntaps, rt_tensor **grad_in);
    /* Fills up to max entries of out; returns the total count. */
    int (*parameters)(void *self, rt_param *out, int max);
    /* Optional (may be NULL).  Sets every parameter gradient to zero; may do
     * it lazily (the next backward overwrites instead of accumulating). The
     * host memsets the grads when it is NULL. */
    void (*zero_grad)(void *self);
    /* Optional.  A feature recorded by the last forward, borrowed, or NULL:
     * NULL for an unknown name and for a name not recorded (record(name,
     * 1)), so a caller reads only what it asked for (docs/abi.md). */
    rt_tensor *(*feature)(void *self, const char *name);
    /* Optional.  Floating-point operations of one forward, per sample. */
    int64_t (*flops)(void *self);
    /* ---- ABI 2.0 ---- */
    /* Required.  The input this instance takes (options decide it). */
    void (*input_spec)(void *self, rt_spec *out);
    /* Optional.  The names of the features this instance can record
     * (up to max into out, the total returned), e.g. "layers.0".  A
     * feature is recorded by a forward only after record(name, 1): the
     * run asks for the ones its losses need, nothing else is kept. */
    int (*features)(void *self, const char **out, int max);
    /* Optional (with features).  Turns recording of one feature on or off;
     * an unknown name is an error.  Tapping a feature needs it recorded. */
    rt_status (*record)(void *self, rt_ctx *ctx, const char *name, int on);
} rt_student_vt;

/* What a teacher hands to the losses.  Dense logits, or a sparse top-k
 * (ids, log-probabilities and the log of the tail mass).  All borrowed from
 * the teacher, valid until its next forward.  Unused members are NULL. */
typedef struct rt_signal {
    rt_tensor *logits;    /* [N, ..., C] f32, the student's output shape */
    rt_tensor *topk_ids;  /* [N, ..., K] i32 */
    rt_tensor *topk_logp; /* [N, ..., K] f32 */
    rt_tensor *tail_logp; /* [N, ...]    f32 */
} rt_signal;

/* One batch as a teacher sees it.  ids are the dataset's row numbers of the
 * N samples (i64 [N], 0-based), or NULL when the rows have none (a tensor
 * given by hand): a cache or a remote teacher looks rows up by them. */
typedef struct rt_batch {
    uint32_t size; /* sizeof(rt_batch) of the host */
    const rt_tensor *x;   /* [N, ...] */
    const rt_tensor *ids; /* [N] i64 or NULL */
} rt_batch;

typedef struct rt_teacher_vt {
    uint32_t size; /* sizeof(rt_teacher_vt) */
    /* batch -> *out.  Teachers are frozen: no backward. */
    rt_status (*forward)(void *self, rt_ctx *ctx, const rt_batch *batch,
                         rt_signal *out);
    /* Optional: as rt_student_vt.parameters, roles FROZEN or BUFFER. */
    int (*parameters)(void *self, rt_param *out, int max);
    /* Optional: as rt_student_vt.feature / flops / features / record. */
    rt_tensor *(*feature)(void *self, const char *name);
    int64_t (*flops)(void *self);
    int (*features)(void *self, const char **out, int max);
    rt_status (*record)(void *self, rt_ctx *ctx, const char *name, int on);
} rt_teacher_vt;

/* Where a declared feature comes from. */
#define RT_FROM_STUDENT 0
#define RT_FROM_TEACHER 1

/* One feature a loss reads: the k-th entry of its features() list is
 * in->features[k], and for student features in->feature_grads[k]. */
typedef struct rt_feature_req {
    const char *name; /* borrowed from the loss, valid while it lives */
    int from;         /* RT_FROM_STUDENT or RT_FROM_TEACHER */
} rt_feature_req;

/* What a loss sees.  Positions: the student's output is [N, ..., C]; a
 * position is one index of its leading dims [N, ...] (a sample for [N, C],
 * a token for [N, T, C]).
 *   student   [N, ..., C] f32 output
 *   teacher   the teacher's signal (logits of the student's shape), or NULL
 *             unless the loss needs it
 *   target    [N, ...] i32 labels in [0, C), or NULL unless needed
 *   mask      [N, ...] i32, 1 = real position, 0 = padding; NULL = all real.
 *             Losses skip masked positions in value and gradient.
 *   norm      the count of real positions over the whole global batch
 *             (all processes of a sharded step), computed by the host.  A
 *             loss's value is (sum over its real positions) / norm, so the
 *             shards of a batch sum to the single-process value.  With no
 *             mask and one process: N for [N, C], N*T for [N, T, C].
 *             Callers may leave it 0: the checked call fills it in.
 *   features  the features the loss declared, in declared order (borrowed,
 *             [N, ...] f32), NULL when the loss declared none
 *   feature_grads  backward only: per declared feature, a zeroed-or-
 *             accumulating gradient of that student feature's shape that the
 *             loss adds scale * d(loss)/d(feature) to (the run routes it into
 *             the student's backward as a tap); NULL for teacher features and
 *             in forward.
 * epoch and step count from 0. */
typedef struct rt_loss_in {
    const rt_tensor *student;
    const rt_signal *teacher;
    const rt_tensor *target;
    int64_t epoch;
    int64_t step;
    /* ---- ABI 2.0 ---- */
    uint32_t size; /* sizeof(rt_loss_in) of the host; 0 from old callers */
    const rt_tensor *mask;
    double norm;
    const rt_tensor *const *features;
    rt_tensor *const *feature_grads;
    int nfeatures;
} rt_loss_in;

#define RT_NEEDS_TEACHER 1u
#define RT_NEEDS_TARGET 2u

typedef struct rt_loss_vt {
    uint32_t size;  /* sizeof(rt_loss_vt) */
    unsigned needs; /* RT_NEEDS_* bits: the host checks before calling */
    /* *value = (sum over real positions) / in->norm (see rt_loss_in). */
    rt_status (*forward)(void *self, rt_ctx *ctx, const rt_loss_in *in,
                         double *value);
    /* grad [N, ..., C] += scale * d(loss)/d(student output); for declared
     * student features, in->feature_grads[k] += scale * d(loss)/d(feature).
     * Masked positions get nothing. */
    rt_status (*backward)(void *self, rt_ctx *ctx, const rt_loss_in *in,
                          float scale, rt_tensor *grad);
    /* Optional.  Changes a number option between steps (schedules):
     * the host has checked name, type and range against the schema. */
    rt_status (*set)(void *self, rt_ctx *ctx, const char *name, double value);
    /* ---- ABI 2.0 ---- */
    /* Optional.  The features this instance reads (up to max into out, the
     * total returned); the host checks that they exist before binding. */
    int (*features)(void *self, rt_feature_req *out, int max);
    /* Optional.  Called once before the first forward with the first
     * batch's inputs (shapes of the output and of every declared feature):
     * a loss that owns parameters sizes and initialises them here. */
    rt_status (*bind)(void *self, rt_ctx *ctx, const rt_loss_in *in);
    /* Optional.  The loss's own parameters (a FitNet regressor), as
     * rt_student_vt.parameters: trained by the run's optimizer and saved in
     * checkpoints under "loss.<term>.".  Valid after bind. */
    int (*parameters)(void *self, rt_param *out, int max);
    /* Optional.  As rt_student_vt.zero_grad; the host memsets when NULL. */
    void (*zero_grad)(void *self);
} rt_loss_vt;

/* ---------------------------------------------------------------- options */

typedef enum rt_opt_type {
    RT_OPT_NUMBER = 1, /* double                          */
    RT_OPT_INT,        /* int64                           */
    RT_OPT_BOOL,
    RT_OPT_STRING,     /* `choices` may restrict it        */
    RT_OPT_INT_LIST,   /* array of int64, min/max per item */
    RT_OPT_OBJECT      /* any JSON object, passed through   */
} rt_opt_type;

/* One option of a plugin.  A table of these, ended by an entry whose name is
 * NULL, is the plugin's schema: the host validates a recipe's options
 * against it before create, fills in defaults, and prints it as help. */
typedef struct rt_option {
    const char *name;    /* [a-z0-9_]+ */
    rt_opt_type type;
    const char *def;     /* default as JSON text ("4", "true", "\"relu\"",
                            "[784,128,10]"); NULL = required */
    double min, max;     /* inclusive range for numbers, ints, list items;
                            min > max (e.g. 1, 0) means unbounded */
    const char *choices; /* strings: "relu|gelu|tanh", or NULL = any */
    const char *help;    /* one line */
} rt_option;

/* ------------------------------------------------------------ descriptors */

typedef struct rt_plugin_desc {
    uint32_t abi_major, abi_minor; /* RT_ABI_MAJOR, RT_ABI_MINOR */
    uint32_t size;                 /* sizeof(rt_plugin_desc) */
    rt_kind kind;
    const char *name;    /* [a-z0-9_]+, unique per kind */
    const char *version; /* the plugin's own, e.g. "1.0.0" */
    const char *summary; /* one line */
    const rt_option *options;
    /* *self = a new object.  opts is valid only during the call. */
    rt_status (*create)(rt_ctx *ctx, const rt_opts *opts, void **self);
    void (*destroy)(void *self);
    /* exactly the one matching `kind` is non-NULL */
    const rt_student_vt *student;
    const rt_teacher_vt *teacher;
    const rt_loss_vt *loss;
    /* ---- ABI 2.0 ---- */
    /* Optional.  An optional capability by name ("rt.state_hooks", ...), a
     * struct the capability's documentation defines and that starts with its
     * own uint32_t size, or NULL when the plugin lacks it. */
    const void *(*extension)(const char *name);
} rt_plugin_desc;

#define RT_DESC_INIT(kind_, name_, version_, summary_)                        \
    .abi_major = RT_ABI_MAJOR, .abi_minor = RT_ABI_MINOR,                     \
    .size = sizeof(rt_plugin_desc), .kind = (kind_), .name = (name_),          \
    .version = (version_), .summary = (summary_)

/* ------------------------------------------------- conv kernel geometry */

/* The geometry of the convolution kernels in rt_api's conv block (the core
 * declares the same kernels in rt_conv.h).  NCHW, batch first, contiguous.
 * Output sizes follow PyTorch (floor mode):
 *   out = floor((in + 2 pad - dilation (k - 1) - 1) / stride) + 1 */
/* x [N, C_in, H, W], weight [C_out, C_in / groups, KH, KW] (PyTorch's
 * layout), bias [C_out], y [N, C_out, H_out, W_out].  Filled in by the
 * caller except H_out and W_out, which rt_conv2d_geom_check sets. */
typedef struct rt_conv2d_geom {
    int64_t N, C_in, H, W;
    int64_t C_out, KH, KW;
    int64_t stride_h, stride_w; /* >= 1 */
    int64_t pad_h, pad_w;       /* >= 0, zeros */
    int64_t dil_h, dil_w;       /* >= 1 */
    int64_t groups;             /* >= 1, divides C_in and C_out; C_in for depthwise */
    int64_t H_out, W_out;       /* out */
} rt_conv2d_geom;

/* x [N, C, H, W] -> y [N, C, H_out, W_out], windows KH x KW.  PyTorch's
 * floor mode; no ceil_mode, dilation or divisor_override. */
typedef struct rt_pool2d_geom {
    int64_t N, C, H, W;
    int64_t KH, KW;
    int64_t stride_h, stride_w; /* >= 1 (PyTorch's default is the kernel) */
    int64_t pad_h, pad_w;       /* 0 <= pad <= kernel / 2, as PyTorch asks */
    int64_t H_out, W_out;       /* out */
} rt_pool2d_geom;

/* The optional capability "rt.gradcheck_options" (desc.extension): option
 * sets, each a JSON object's text, at which the suite's gradient check
 * (tests/c/test_gradcheck.c) checks the plugin instead of its defaults.
 * For students whose default size puts so many relu and max-pool kinks
 * near any point that float32 finite differences cannot resolve it (a
 * 28x28 CNN), so the same layers are checked at a small size. */
#define RT_EXT_GRADCHECK_OPTIONS "rt.gradcheck_options"
typedef struct rt_gradcheck_options_ext {
    uint32_t size; /* sizeof(rt_gradcheck_options_ext) */
    int n;
    const char *const *options;
} rt_gradcheck_options_ext;

/* ------------------------------------------------------- the host's table */

typedef struct rt_api {
    uint32_t abi_major, abi_minor, size; /* size = sizeof(rt_api) of host */

    /* Errors.  Formats a message into ctx; returns `code`. */
    rt_status (*error)(rt_ctx *ctx, rt_status code, const char *fmt, ...)
        RT_PRINTF(3, 4);

    /* Tensors.  tensor_new returns a new reference to a zero-filled
     * contiguous tensor, or NULL with an error in ctx. */
    rt_tensor *(*tensor_new)(rt_ctx *ctx, rt_dtype dtype, int ndim,
                             const int64_t *shape);
    void (*tensor_retain)(rt_tensor *t);
    void (*tensor_release)(rt_tensor *t); /* NULL is a no-op */
    /* Makes *slot a contiguous tensor of exactly this dtype and shape,
     * reusing it when it already is one (contents then kept), else a
     * zeroed one: *slot itself reshaped in its own storage when nothing
     * else references it or its storage and the storage holds the bytes
     * (up to 16 times them), else a new one (the old released).  The way
     * plugins keep a step allocation-free, also when the batch size
     * alternates (training, the last batch, evaluation). */
    rt_status (*tensor_ensure)(rt_ctx *ctx, rt_tensor **slot, rt_dtype dtype,
                               int ndim, const int64_t *shape);
    /* "[128, 10]" into buf; returns buf. */
    const char *(*shape_str)(const rt_tensor *t, char *buf, size_t len);

    /* Scratch memory, 64-byte aligned, freed by the host when the current
     * plugin call returns.  NULL with an error in ctx on failure. */
    void *(*scratch)(rt_ctx *ctx, size_t bytes);

    /* Random numbers. ctx_rng is the run's training stream (dropout...),
     * saved in checkpoints; plugins seed their own for initialisation. */
    rt_rng *(*ctx_rng)(rt_ctx *ctx);
    void (*rng_seed)(rt_rng *r, uint64_t seed, uint64_t stream);
    uint64_t (*rng_u64)(rt_rng *r);
    float (*rng_uniform)(rt_rng *r); /* [0, 1) */
    float (*rng_normal)(rt_rng *r);  /* N(0, 1) */

    /* Options (validated, defaults filled).  Getters for a name that is not
     * in the schema, or of another type, are programming errors: they
     * return 0 / NULL.  Strings are borrowed, valid during create only. */
    double (*opt_number)(const rt_opts *o, const char *name);
    int64_t (*opt_int)(const rt_opts *o, const char *name);
    int (*opt_bool)(const rt_opts *o, const char *name);
    const char *(*opt_string)(const rt_opts *o, const char *name);
    /* Copies up to max items; returns the list's length. */
    int (*opt_int_list)(const rt_opts *o, const char *name, int64_t *out,
                        int max);
    /* An RT_OPT_OBJECT option as JSON text, borrowed, valid during create. */
    const char *(*opt_json)(const rt_opts *o, const char *name);

    /* Kernels.  Row-major throughout.
     * gemm: C[M,N] = alpha * op(A) op(B) + beta * C, op = transpose if t*. */
    void (*gemm)(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb,
                 float beta, float *C, int64_t ldc);
    /* y[N,D] = act(y + b[D]) in place.  pre: if non-NULL, receives y + b
     * (needed by gelu's backward). */
    void (*bias_act)(float *y, const float *b, int64_t N, int64_t D,
                     rt_act act, float *pre);
    /* dy[N,D]: in, gradient wrt the activation's output; out, gradient wrt
     * its input (in place).  y is the forward output, pre the saved
     * pre-activation (gelu only).  db[D] += column sums of the result,
     * if db is non-NULL. */
    void (*bias_act_backward)(float *dy, const float *y, const float *pre,
                              int64_t N, int64_t D, rt_act act, float *db);
    /* out[N,C] = softmax(x / T) or log_softmax(x / T) per row; stable for
     * any finite x and -inf entries (a row of all -inf gives NaN). */
    void (*softmax)(const float *x, float *out, int64_t N, int64_t C, float T);
    void (*log_softmax)(const float *x, float *out, int64_t N, int64_t C,
                        float T);

    /* Instances of other plugins (a teacher wrapping a student model).
     * instance_create: options as JSON text (NULL = defaults); *out is a new
     * reference. */
    rt_status (*instance_create)(rt_ctx *ctx, rt_kind kind, const char *name,
                                 const char *opts_json, rt_instance **out);
    void (*instance_release)(rt_instance *inst);
    const rt_plugin_desc *(*instance_desc)(const rt_instance *inst);
    void *(*instance_self)(const rt_instance *inst);
    /* Loads a safetensors file into the instance's parameters: every
     * parameter must be present with its exact shape. */
    rt_status (*params_load)(rt_ctx *ctx, rt_instance *inst, const char *path);
    /* A checkpoint's __metadata__ value for key, copied into buf.  A missing
     * key is an error. */
    rt_status (*checkpoint_meta)(rt_ctx *ctx, const char *path,
                                 const char *key, char *buf, size_t len);

    /* out[N,C] = log_softmax(x / T) per row in double precision, for
     * losses whose float32 terms cancel (a KL at large T).  -inf entries
     * give -inf. */
    void (*log_softmax_f64)(const float *x, double *out, int64_t N,
                            int64_t C, double T);

    /* ---- ABI 2.0 ---- */
    /* Views: new references to headers that share t's storage (writes go
     * through), NULL with an error in ctx when the request leaves t.
     * view: any shape and strides (elements) from t's data + offset.
     * narrow: `len` indices of dimension dim from `start`.
     * reshape: a contiguous t under a shape of the same element count. */
    rt_tensor *(*tensor_view)(rt_ctx *ctx, rt_tensor *t, int ndim,
                              const int64_t *shape, const int64_t *stride,
                              int64_t offset);
    rt_tensor *(*tensor_narrow)(rt_ctx *ctx, rt_tensor *t, int dim,
                                int64_t start, int64_t len);
    rt_tensor *(*tensor_reshape)(rt_ctx *ctx, rt_tensor *t, int ndim,
                                 const int64_t *shape);
    /* Checked calls into another instance (an ensemble or a model teacher):
     * the same checks, error prefixes and scratch rules as the host's own
     * calls.  Errors are prefixed with the inner instance's kind and name. */
    rt_status (*student_forward)(rt_instance *s, rt_ctx *ctx,
                                 const rt_tensor *x, int train,
                                 rt_tensor **out);
    rt_status (*student_backward)(rt_instance *s, rt_ctx *ctx,
                                  const rt_tensor *grad_out,
                                  const rt_tap *taps, int ntaps,
                                  rt_tensor **grad_in);
    rt_status (*teacher_forward)(rt_instance *t, rt_ctx *ctx,
                                 const rt_batch *batch, rt_signal *out);
    /* The instance's parameters, as its vtable's parameters(). */
    int (*instance_params)(rt_instance *inst, rt_param *out, int max);
    rt_tensor *(*instance_feature)(rt_instance *inst, const char *name);
    int64_t (*instance_flops)(rt_instance *inst);
    /* A student's input spec; 0 and *out zeroed for other kinds. */
    int (*instance_input_spec)(rt_instance *inst, rt_spec *out);
    /* Feature recording of another instance (see rt_student_vt.record). */
    rt_status (*instance_record)(rt_instance *inst, rt_ctx *ctx,
                                 const char *name, int on);
    int (*instance_features)(rt_instance *inst, const char **out, int max);
    /* Another instance's optional capability by name (its descriptor's
     * extension), or NULL. */
    const void *(*instance_extension)(rt_instance *inst, const char *name);
    /* A new instance with its parameters from the safetensors file at path
     * (*out: new reference, for instance_release).  name and opts_json
     * NULL or "": the file's metadata ("retort.plugin", "retort.options").
     * The file's header is validated against its size before anything is
     * created, and what the instance may allocate while it is created is
     * bounded by the file's size (a 300-byte file cannot name a model of
     * gigabytes); every parameter must be in the file with its shape. */
    rt_status (*instance_from_checkpoint)(rt_ctx *ctx, rt_kind kind,
                                          const char *name,
                                          const char *opts_json,
                                          const char *path,
                                          rt_instance **out);

    /* ---- language-model kernels (ABI 2.1) ---- */
    /* core/rt_lm.h specifies each (shapes, what accumulates, errors);
     * core/rt_nn_lm.h builds the layers of a GPT on them. */
    rt_status (*embedding_forward)(rt_ctx *ctx, const int32_t *ids, int64_t N,
                                   int64_t T, const float *wte, int64_t V,
                                   const float *wpe, int64_t maxT, int64_t D,
                                   float *out);
    rt_status (*embedding_backward)(rt_ctx *ctx, const int32_t *ids,
                                    int64_t N, int64_t T, const float *dout,
                                    int64_t V, int64_t maxT, int64_t D,
                                    float *dwte, float *dwpe);
    void (*layernorm_forward)(const float *x, const float *gamma,
                              const float *beta, int64_t M, int64_t D,
                              float eps, float *out, float *mean, float *rstd);
    void (*layernorm_backward)(const float *dout, const float *x,
                               const float *gamma, const float *mean,
                               const float *rstd, int64_t M, int64_t D,
                               float *dx, float *dgamma, float *dbeta);
    void (*attention_forward)(const float *qkv, int64_t N, int64_t T,
                              int64_t D, int64_t H, float *out, float *att);
    size_t (*attention_workspace)(int64_t T);
    void (*attention_backward)(const float *dout, const float *qkv,
                               const float *att, int64_t N, int64_t T,
                               int64_t D, int64_t H, float *dqkv, float *work);
    rt_status (*attention_check)(rt_ctx *ctx, int64_t N, int64_t T, int64_t D,
                                 int64_t H);
    size_t (*attention_step_workspace)(int64_t maxT);
    rt_status (*attention_step)(rt_ctx *ctx, const float *qkv, int64_t N,
                                int64_t t, int64_t maxT, int64_t D, int64_t H,
                                float *kcache, float *vcache, float *out,
                                float *work);
    void (*tied_logits)(const float *h, const float *wte, int64_t M,
                        int64_t V, int64_t D, float *logits);
    void (*tied_logits_backward)(const float *dlogits, const float *h,
                                 const float *wte, int64_t M, int64_t V,
                                 int64_t D, float *dh, float *dwte);

    /* ---- conv kernels ---- (ABI 2.1; core/rt_conv.h states every
     * contract: no kernel allocates, forwards overwrite, backwards
     * ACCUMULATE, optional gradient pointers may be NULL) */
    rt_status (*conv2d_geom_check)(rt_ctx *ctx, rt_conv2d_geom *g);
    size_t (*conv2d_workspace)(const rt_conv2d_geom *g); /* floats */
    void (*conv2d_forward)(const rt_conv2d_geom *g, const float *x, const float *weight, const float *bias,
                           float *y, float *ws);
    void (*conv2d_backward)(const rt_conv2d_geom *g, const float *x, const float *weight, const float *dy,
                            float *dx, float *dweight, float *dbias, float *ws);
    rt_status (*pool2d_geom_check)(rt_ctx *ctx, rt_pool2d_geom *g, const char *what);
    void (*maxpool2d_forward)(const rt_pool2d_geom *g, const float *x, float *y, int32_t *argmax);
    void (*maxpool2d_backward)(const rt_pool2d_geom *g, const float *dy, const int32_t *argmax, float *dx);
    void (*avgpool2d_forward)(const rt_pool2d_geom *g, int count_include_pad, const float *x, float *y);
    void (*avgpool2d_backward)(const rt_pool2d_geom *g, int count_include_pad, const float *dy, float *dx);
    void (*global_avgpool_forward)(const float *x, int64_t N, int64_t C, int64_t HW, float *y);
    void (*global_avgpool_backward)(const float *dy, int64_t N, int64_t C, int64_t HW, float *dx);
    rt_status (*batchnorm_train_forward)(rt_ctx *ctx, const float *x, int64_t N, int64_t C, int64_t HW,
                                         const float *gamma, const float *beta, float eps, float momentum,
                                         float *running_mean, float *running_var,
                                         int64_t *num_batches_tracked, float *y, float *save_mean,
                                         float *save_invstd);
    void (*batchnorm_eval_forward)(const float *x, int64_t N, int64_t C, int64_t HW, const float *gamma,
                                   const float *beta, float eps, const float *running_mean,
                                   const float *running_var, float *y);
    void (*batchnorm_train_backward)(const float *x, const float *dy, int64_t N, int64_t C, int64_t HW,
                                     const float *gamma, const float *save_mean, const float *save_invstd,
                                     float *dx, float *dgamma, float *dbeta);
    void (*batchnorm_eval_backward)(const float *x, const float *dy, int64_t N, int64_t C, int64_t HW,
                                    const float *gamma, float eps, const float *running_mean,
                                    const float *running_var, float *dx, float *dgamma, float *dbeta);
    void (*residual_add)(const float *a, const float *b, float *y, int64_t n);
    void (*residual_add_backward)(const float *dy, int64_t n, float *da, float *db);

    /* ---- elementwise passes ---- (ABI 2.2; core/rt_conv.h: on the conv
     * kernels' threads, the layer kit's zeroing of input gradients and its
     * relu, which ran on one thread of two) */
    void (*fill)(float *x, int64_t n, float v);
    void (*relu_forward)(const float *x, float *y, int64_t n);
    void (*relu_backward)(float *d, const float *y, int64_t n);
    /* as maxpool2d_backward / batchnorm_train_backward, dx overwritten */
    void (*maxpool2d_backward_set)(const rt_pool2d_geom *g, const float *dy, const int32_t *argmax, float *dx);
    void (*batchnorm_train_backward_set)(const float *x, const float *dy, int64_t N, int64_t C, int64_t HW,
                                         const float *gamma, const float *save_mean, const float *save_invstd,
                                         float *dx, float *dgamma, float *dbeta);
} rt_api;

/* ---- language-model kernels: the generation capability ---- */
/* A student that can run one position at a time with a key/value cache
 * returns this from its descriptor's extension(RT_LM_STEP_EXT); the host's
 * generator (rt_generate) uses it, and falls back to full forwards over
 * the window without it.  self is the instance's (api->instance_self). */
#define RT_LM_STEP_EXT "rt.lm_step"
typedef struct rt_lm_step_ext {
    uint32_t size; /* sizeof(rt_lm_step_ext) */
    /* The longest sequence (positions 0..context-1) and the vocabulary. */
    int64_t (*context)(void *self);
    int64_t (*vocab)(void *self);
    /* Forgets the cache and sizes it for N sequences. */
    rt_status (*reset)(void *self, rt_ctx *ctx, int64_t N);
    /* ids [N]: the tokens at position t of each sequence (0 <= t <
     * context, positions 0..t-1 given by earlier steps since reset) ->
     * logits [N, V] (the caller's buffer) of the next token, equal to
     * position t of a full forward over 0..t (to float rounding). */
    rt_status (*step)(void *self, rt_ctx *ctx, const int32_t *ids, int64_t t,
                      float *logits);
} rt_lm_step_ext;

/* ------------------------------------------------------------- the entry */

/* The single exported symbol.  Returns a NULL-terminated array of
 * descriptors (static storage in the plugin), or NULL after writing a reason
 * into err.  The plugin keeps `api`: it stays valid while the plugin is
 * loaded. */
/* The entry point of a file whose descriptors are the arguments: stores
 * the host's table in the file's `static const rt_api *api` (which the
 * file, or a kit header it includes, defines) and returns the list. */
#define RT_PLUGIN_LIST(...)                                                  \
    static const rt_plugin_desc *const rt_plugin_list_[] = {__VA_ARGS__,   \
                                                           NULL};          \
    RT_EXPORT const rt_plugin_desc *const *rt_plugin_init(                  \
        const rt_api *host, char *err, size_t errlen)                       \
    {                                                                       \
        (void)err;                                                          \
        (void)errlen;                                                       \
        api = host;                                                         \
        return rt_plugin_list_;                                             \
    }

#define RT_PLUGIN_ENTRY rt_plugin_init
#define RT_PLUGIN_ENTRY_NAME "rt_plugin_init"
typedef const rt_plugin_desc *const *(*rt_plugin_init_fn)(const rt_api *api,
                                                          char *err,
                                                          size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* RT_PLUGIN_H */
