/*
 * rt_loss_kit.h -- what every loss plugin shares, so a loss file holds its
 * formula and little else.  Header-only (static inline over rt_api): a
 * plugin using it still links nothing of the host.  Include it instead of
 * rt_plugin.h; it defines the file's `api` pointer.
 *
 * A loss file then has: its state struct, its options table with a parallel
 * table saying where each option lands in the struct (RTK_F32, RTK_F64,
 * RTK_BOOL, RTK_I64, RTK_CHOICE), one `run` function that computes the value
 * and, when asked, the gradient, and one RTK_LOSS(...) line.
 *
 * Reduction (ABI 2.0, rt_plugin.h rt_loss_in): the student's output is
 * [N, ..., C]; each index of its leading dims is a position; masked
 * positions are skipped; value = (sum over real positions) / in->norm, and
 * the gradient of a position is scaled by scale / norm.  rtk_value() and
 * rtk_gscale() apply exactly that; with no mask and [N, C], norm = N and
 * the arithmetic is the ABI 1 "batchmean" to the bit.
 *
 *   typedef struct kd { float T; int t2; } kd;
 *   static const rt_option options[] = {...temperature..., ...t2..., {0}};
 *   static const rtk_field fields[] = {RTK_F32(kd, T), RTK_BOOL(kd, t2)};
 *   static rt_status run(void *self, rt_ctx *ctx, const rt_loss_in *in,
 *                        double *value, float *g, float scale) {...}
 *   RTK_LOSS(kd, "kd", "1.0.0", "Hinton KD", RT_NEEDS_TEACHER, .set = rtk_set)
 */
#ifndef RT_LOSS_KIT_H
#define RT_LOSS_KIT_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_plugin.h"

#ifndef RT_KIT_API
#define RT_KIT_API
static const rt_api *api; /* set by RT_PLUGIN_LIST's entry point */
#endif

/* --------------------------------------------------------------- options */

/* Where option k (options[k], same order) is stored in the loss's struct. */
typedef enum rtk_type { RTK_T_F32, RTK_T_F64, RTK_T_INT, RTK_T_I64, RTK_T_CHOICE, RTK_T_STR } rtk_type;
typedef struct rtk_field {
    size_t offset;
    rtk_type type;
    size_t size; /* RTK_T_STR: the char array's size */
} rtk_field;
#define RTK_F32(st, f) {offsetof(st, f), RTK_T_F32, 0}   /* number -> float   */
#define RTK_F64(st, f) {offsetof(st, f), RTK_T_F64, 0}   /* number -> double  */
#define RTK_BOOL(st, f) {offsetof(st, f), RTK_T_INT, 0}  /* bool -> int       */
#define RTK_I64(st, f) {offsetof(st, f), RTK_T_I64, 0}   /* int -> int64_t    */
#define RTK_CHOICE(st, f) {offsetof(st, f), RTK_T_CHOICE, 0} /* string -> int:
                                            its index in the option's choices */
#define RTK_STR(st, f) {offsetof(st, f), RTK_T_STR, sizeof(((st *)0)->f)} /* string
                                            -> char array (cut to fit) */

/* The index of s in "a|b|c", or 0 when absent (the host validated it). */
static inline int rtk_choice_index(const char *choices, const char *s)
{
    size_t n = strlen(s);
    for (int k = 0; choices && *choices; k++) {
        const char *bar = strchr(choices, '|');
        size_t len = bar ? (size_t)(bar - choices) : strlen(choices);
        if (len == n && !strncmp(choices, s, n)) return k;
        if (!bar) break;
        choices = bar + 1;
    }
    return 0;
}

/* Allocates the struct (zeroed) and reads every option into its field. */
static inline rt_status rtk_create(rt_ctx *ctx, const rt_opts *o, void **self, size_t size,
                                   const rt_option *options, const rtk_field *fields)
{
    /* At least 8 bytes: every field type fits, which keeps gcc's bounds
     * analysis of the switch below quiet for one-float structs. */
    char *k = calloc(1, size < 8 ? 8 : size);
    if (!k) return api->error(ctx, RT_STATUS_ERR_NOMEM, "out of memory");
    for (int i = 0; options && options[i].name; i++) {
        void *p = k + fields[i].offset;
        const char *name = options[i].name;
        switch (fields[i].type) {
        case RTK_T_F32: *(float *)p = (float)api->opt_number(o, name); break;
        case RTK_T_F64: *(double *)p = api->opt_number(o, name); break;
        case RTK_T_INT: *(int *)p = api->opt_bool(o, name); break;
        case RTK_T_I64: *(int64_t *)p = api->opt_int(o, name); break;
        case RTK_T_CHOICE: *(int *)p = rtk_choice_index(options[i].choices, api->opt_string(o, name)); break;
        case RTK_T_STR: snprintf(p, fields[i].size, "%s", api->opt_string(o, name)); break;
        }
    }
    *self = k;
    return RT_STATUS_OK;
}

static inline void rtk_destroy(void *self) { free(self); }

/* ------------------------------------------------------------ positions */

/* The student output as positions x classes. */
typedef struct rtk_shape {
    int64_t R, C;        /* positions (product of the leading dims), classes */
    const int32_t *mask; /* [R] 1 = real, or NULL */
} rtk_shape;

static inline rtk_shape rtk_shape_of(const rt_loss_in *in)
{
    const rt_tensor *s = in->student;
    rtk_shape sh = {rt_numel(s) / s->shape[s->ndim - 1], s->shape[s->ndim - 1], NULL};
    if (in->size >= offsetof(rt_loss_in, mask) + sizeof in->mask && in->mask) sh.mask = rt_i32(in->mask);
    return sh;
}

static inline int rtk_real(const rtk_shape *sh, int64_t n) { return !sh->mask || sh->mask[n]; }

/* The value from the sum over real positions: sum / norm (0 when norm 0). */
static inline double rtk_value(const rt_loss_in *in, double sum) { return in->norm ? sum / in->norm : 0; }

/* The float factor a position's gradient gets: scale / norm. */
static inline float rtk_gscale(const rt_loss_in *in, float scale)
{
    return in->norm ? scale / (float)in->norm : 0;
}

/* -------------------------------------------------------- a row iterator */

/* Walks the real positions, giving each one's student and teacher logits,
 * optionally their log-softmax at temperature T in double, and its
 * gradient row.  rtk_rows_begin takes scratch for `nwork` extra rows of C
 * doubles (it.work). */
typedef struct rtk_rows {
    rtk_shape sh;
    int64_t n;             /* the current position */
    const float *zs, *zt;  /* its logits (zt NULL without a teacher) */
    double *ls, *lt;       /* log_softmax(z / T) of each, in double */
    double *work;          /* nwork * C doubles */
    float *g;              /* its gradient row, or NULL in forward */
    int32_t y;             /* its label, or -1 without targets */
    const rt_loss_in *in;
    float *g0;
    int lsm;               /* fill ls / lt */
} rtk_rows;

static inline rt_status rtk_rows_begin(rtk_rows *it, rt_ctx *ctx, const rt_loss_in *in, float *g, int lsm,
                                       int nwork)
{
    memset(it, 0, sizeof *it);
    it->sh = rtk_shape_of(in);
    it->n = -1;
    it->in = in;
    it->g0 = g;
    it->lsm = lsm;
    int64_t C = it->sh.C, need = (lsm ? 2 : 0) + nwork;
    if (need) {
        it->ls = api->scratch(ctx, sizeof(double) * (size_t)(need * C));
        if (!it->ls) return RT_STATUS_ERR_NOMEM;
        it->lt = it->ls + (lsm ? C : 0);
        it->work = it->ls + (lsm ? 2 * C : 0);
    }
    return RT_STATUS_OK;
}

/* Moves to the next real position; 0 at the end. */
static inline int rtk_rows_next(rtk_rows *it, double T)
{
    const rt_loss_in *in = it->in;
    int64_t C = it->sh.C;
    do
        it->n++;
    while (it->n < it->sh.R && !rtk_real(&it->sh, it->n));
    if (it->n >= it->sh.R) return 0;
    it->zs = rt_f32(in->student) + it->n * C;
    it->zt = in->teacher && in->teacher->logits ? rt_f32(in->teacher->logits) + it->n * C : NULL;
    it->g = it->g0 ? it->g0 + it->n * C : NULL;
    it->y = in->target ? rt_i32(in->target)[it->n] : -1;
    if (it->lsm) {
        api->log_softmax_f64(it->zs, it->ls, 1, C, T);
        if (it->zt) api->log_softmax_f64(it->zt, it->lt, 1, C, T);
    }
    return 1;
}

/* Row log-sum-exp of z / T in double; *mx gets the row's max of z. */
static inline double rtk_lse(const float *z, int64_t C, double T, double *mx)
{
    double m = -INFINITY, s = 0;
    for (int64_t c = 0; c < C; c++) m = fmax(m, (double)z[c]);
    for (int64_t c = 0; c < C; c++) s += exp(((double)z[c] - m) / T);
    *mx = m;
    return log(s);
}

/* log(exp(a) + exp(b)) without overflow; -inf when both are. */
static inline double rtk_logaddexp(double a, double b)
{
    double m = fmax(a, b);
    return m == -INFINITY ? m : m + log(exp(a - m) + exp(b - m));
}

/* Opens the row walk `it` in a run function (ctx, in and g in scope) and
 * names the class count C; lsm and nwork as rtk_rows_begin. */
#define RTK_ROWS(it, lsm, nwork)                                                                         \
    rtk_rows it;                                                                                         \
    if (rtk_rows_begin(&it, ctx, in, g, (lsm), (nwork))) return RT_STATUS_ERR_NOMEM;                     \
    const int64_t C = it.sh.C;                                                                           \
    (void)C

/* An infinite loss (a probability 0 where the other side has mass) as an
 * error ending ", at row N class C"; ctx in scope. */
#define RTK_INFINITE(n_, c_, fmt_, ...)                                                                  \
    api->error(ctx, RT_STATUS_ERR_NUMERIC, fmt_ ", at row %lld class %lld", __VA_ARGS__, (long long)(n_),  \
               (long long)(c_))

/* State of the losses whose options are temperature and t2 alone. */
typedef struct rtk_temp {
    double T;
    int t2;
} rtk_temp;

/* The options table and fields of an rtk_temp loss: temperature (default
 * T_) and t2 (default t2_, help help_). */
#define RTK_TEMP_OPTIONS(T_, t2_, help_)                                                                 \
    static const rt_option options[] = {RTK_OPT_TEMPERATURE(T_), RTK_OPT_T2(t2_, help_), RTK_OPT_END};   \
    static const rtk_field fields[] = {RTK_F64(rtk_temp, T), RTK_BOOL(rtk_temp, t2)}

/* The start of an rtk_temp loss's run: k, the row walk with log-softmaxes
 * ls and lt at T, the factor f = rtk_t2(T, t2), and total = 0. */
#define RTK_TEMP_ROWS(it)                                                                                \
    const rtk_temp *k = self;                                                                            \
    RTK_ROWS(it, 1, 0);                                                                                  \
    double *ls = it.ls, *lt = it.lt, T = k->T, f = rtk_t2(T, k->t2), total = 0

/* The factor of losses with a `t2` option: T^2 (Hinton) or 1. */
static inline double rtk_t2(double T, int t2) { return t2 ? T * T : 1.0; }

/* The options most distillation losses share, one line each. */
#define RTK_OPT_TEMPERATURE(def_) {"temperature", RT_OPT_NUMBER, def_, 1e-4, 1e4, NULL, "softmax temperature T"}
#define RTK_OPT_T2(def_, help_) {"t2", RT_OPT_BOOL, def_, 1, 0, NULL, help_}
#define RTK_OPT_END {NULL, 0, NULL, 0, 0, NULL, NULL}

/* sum_c exp(lp[c]) (lp[c] - lq[c]) with 0 log 0 = 0: KL(p || q) of one row.
 * d[c] (if non-NULL) = lp[c] - lq[c] where p > 0, else 0.  Returns inf
 * (with *bad = the class) when q = 0 where p > 0. */
static inline double rtk_row_kl(const double *lp, const double *lq, int64_t C, double *d, int64_t *bad)
{
    double kl = 0;
    for (int64_t c = 0; c < C; c++) {
        double p = exp(lp[c]);
        if (d) d[c] = 0;
        if (p == 0) continue;
        if (lq[c] == -INFINITY) {
            *bad = c;
            return INFINITY;
        }
        kl += p * (lp[c] - lq[c]);
        if (d) d[c] = lp[c] - lq[c];
    }
    return kl;
}

/* ------------------------------------------------------------- the vtable */

/* One function computes the value (when value != NULL) and adds
 * scale * the gradient to g (when g != NULL), so forward and backward
 * refuse the same inputs. */
typedef rt_status (*rtk_run_fn)(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value, float *g, float scale);

/* A number option changed by a schedule: stored as create stored it. */
static inline rt_status rtk_set_field(void *self, const char *name, double v, const rt_option *options,
                                      const rtk_field *fields)
{
    for (int i = 0; options[i].name; i++) {
        if (strcmp(options[i].name, name)) continue;
        void *p = (char *)self + fields[i].offset;
        if (fields[i].type == RTK_T_F32) *(float *)p = (float)v;
        else if (fields[i].type == RTK_T_F64) *(double *)p = v;
        else if (fields[i].type == RTK_T_I64) *(int64_t *)p = (int64_t)v;
    }
    return RT_STATUS_OK;
}

/* The descriptor, the vtable around `run`, and the entry point.  type_ is
 * the state struct; `options` and `fields` must be defined; the variadic
 * part adds vtable members (.set = rtk_set, .features = ..., .bind = ...). */
#define RTK_LOSS(type_, name_, version_, summary_, needs_, ...)                                          \
    RTK_LOSS_DESC(type_, name_, version_, summary_, needs_, rtk_destroy, __VA_ARGS__)                    \
    RT_PLUGIN_LIST(&rtk_desc)

/* The descriptor rtk_desc and its vtable rtk_vt without the entry point,
 * with a destroy of the file's own (a loss that owns tensors releases them,
 * then frees the struct); for files that hold several plugins, which end
 * with RT_PLUGIN_LIST(&rtk_desc, ...). */
#define RTK_LOSS_DESC(type_, name_, version_, summary_, needs_, destroy_, ...)                            \
    static rt_status rtk_create_##type_(rt_ctx *ctx, const rt_opts *o, void **self)                      \
    {                                                                                                    \
        return rtk_create(ctx, o, self, sizeof(type_), options, fields);                                 \
    }                                                                                                    \
    static rt_status rtk_forward(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value)           \
    {                                                                                                    \
        return run(self, ctx, in, value, NULL, 0);                                                       \
    }                                                                                                    \
    static rt_status rtk_backward(void *self, rt_ctx *ctx, const rt_loss_in *in, float scale, rt_tensor *g) \
    {                                                                                                    \
        return run(self, ctx, in, NULL, rt_f32(g), scale);                                               \
    }                                                                                                    \
    RT_MAYBE_UNUSED static rt_status rtk_set(void *self, rt_ctx *ctx, const char *name, double v)        \
    {                                                                                                    \
        (void)ctx;                                                                                       \
        return rtk_set_field(self, name, v, options, fields);                                            \
    }                                                                                                    \
    static const rt_loss_vt rtk_vt = {.size = sizeof(rt_loss_vt), .needs = (needs_), .forward = rtk_forward, \
                                      .backward = rtk_backward, __VA_ARGS__};                            \
    static const rt_plugin_desc rtk_desc = {RT_DESC_INIT(RT_KIND_LOSS, name_, version_, summary_),        \
                                            .options = options, .create = rtk_create_##type_,            \
                                            .destroy = (destroy_), .loss = &rtk_vt};

#endif /* RT_LOSS_KIT_H */
