/*
 * tensor_ops.c -- tensor math for Lua, enough to write a loss in Lua
 * (lua_loss.c): elementwise arithmetic with broadcasting, exp/log and
 * friends, softmax and log-softmax with a temperature, reductions along a
 * dimension, gather by label and one-hot.
 *
 * Contracts kept by every function here:
 *  - f32 only (labels for gather/one_hot are i32 class ids, 0-based data
 *    values as everywhere in retort); any strides (views) are accepted.
 *  - Results are new contiguous tensors, except the in-place variants
 *    (add_, sub_, mul_, div_, clamp_, fill is elsewhere) which write into
 *    self and return it.  Nothing here allocates on the C heap except the
 *    result, and the result's userdata exists before the tensor does
 *    (rtL_newtensor), so a Lua error never leaks.
 *  - Dimensions are 1-based in Lua; reductions take an optional dim
 *    (none = all elements, giving a number) and keepdim.
 *  - Broadcasting follows NumPy/PyTorch: shapes are aligned on the right,
 *    and a dimension of 1 (or a missing one) stretches.  So [N, C] - [N]
 *    does NOT subtract per row (it aligns [N] with C): use keepdim
 *    ([N, 1]) for per-row terms, as in PyTorch.
 * Speed is not the point (a loss is [N, C] with N ~ 128): one generic
 * strided loop serves every shape.
 */
#include <math.h>
#include <string.h>

#include "rtlua.h"

/* ------------------------------------------------------------- iteration */

/* An operand of the strided loop: base pointer and per-dimension strides
 * (elements; 0 where the operand is broadcast). */
typedef struct operand {
    float *p;
    int64_t st[RT_MAX_DIMS];
} operand;

typedef enum op { OP_ADD, OP_SUB, OP_MUL, OP_DIV } op;

static float apply(op o, float a, float b)
{
    switch (o) {
    case OP_ADD: return a + b;
    case OP_SUB: return a - b;
    case OP_MUL: return a * b;
    default: return a / b;
    }
}

/* Strides of t viewed with the broadcast shape [nd] (right-aligned). */
static void bstrides(const rt_tensor *t, int nd, const int64_t *shape, int64_t *st)
{
    for (int d = 0; d < nd; d++) {
        int td = d - (nd - t->ndim);
        st[d] = (td < 0 || (t->shape[td] == 1 && shape[d] != 1)) ? 0 : t->stride[td];
    }
}

/* out = a (op) b elementwise over shape[nd]; b NULL means the scalar bv.
 * out may alias a (in place). */
static void loop2(int nd, const int64_t *shape, operand *out, const operand *a, const operand *b, float bv, op o)
{
    int64_t n = 1, idx[RT_MAX_DIMS] = {0}, io = 0, ia = 0, ib = 0;
    for (int d = 0; d < nd; d++) n *= shape[d];
    for (int64_t k = 0; k < n; k++) {
        out->p[io] = apply(o, a->p[ia], b ? b->p[ib] : bv);
        for (int d = nd - 1; d >= 0; d--) {
            io += out->st[d], ia += a->st[d];
            if (b) ib += b->st[d];
            if (++idx[d] < shape[d]) break;
            io -= out->st[d] * shape[d], ia -= a->st[d] * shape[d];
            if (b) ib -= b->st[d] * shape[d];
            idx[d] = 0;
        }
    }
}

static rt_tensor *check_f32(lua_State *L, int i, const char *what)
{
    rt_tensor *t = rtL_checktensor(L, i);
    if (t->dtype != RT_DTYPE_F32)
        luaL_error(L, "tensor:%s needs f32 tensors, got %s", what, rt_dtype_name(t->dtype));
    return t;
}

/* Pushes a new f32 tensor of shape[nd] (zeros) and returns it. */
static rt_tensor *push_new(lua_State *L, int nd, const int64_t *shape)
{
    ltensor *u = rtL_newtensor(L);
    if (!(u->t = rt_tensor_new(rtL_S(L)->ctx, RT_DTYPE_F32, nd, shape))) rtL_fail(L);
    rtL_account(L, u->t);
    return u->t;
}

/* The broadcast shape of a and b; raises naming both shapes. */
static int broadcast_shape(lua_State *L, const rt_tensor *a, const rt_tensor *b, int64_t *shape, const char *what)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int d = 0; d < nd; d++) {
        int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
        int64_t x = da < 0 ? 1 : a->shape[da], y = db < 0 ? 1 : b->shape[db];
        if (x != y && x != 1 && y != 1) {
            char s1[64], s2[64];
            luaL_error(L, "tensor:%s: shapes %s and %s do not broadcast", what, rt_tensor_shape_str(a, s1, sizeof s1),
                       rt_tensor_shape_str(b, s2, sizeof s2));
        }
        shape[d] = x == 1 ? y : x;
    }
    return nd;
}

/* The binary operations: a (op) b where either may be a number (the
 * metamethods receive 2 * t as (2, t)).  inplace: the result goes into a,
 * whose shape must be the broadcast shape. */
static int binary(lua_State *L, op o, int inplace, const char *what)
{
    int an = lua_type(L, 1) == LUA_TNUMBER, bn = lua_type(L, 2) == LUA_TNUMBER;
    if (an && bn) luaL_error(L, "tensor:%s: needs a tensor", what);
    if (an) { /* number (op) tensor: only from the metamethods */
        rt_tensor *b = check_f32(L, 2, what);
        float av = (float)lua_tonumber(L, 1);
        rt_tensor *r = push_new(L, b->ndim, b->shape);
        operand out = {rt_f32(r), {0}}, x = {rt_f32(b), {0}};
        bstrides(r, r->ndim, r->shape, out.st);
        bstrides(b, b->ndim, b->shape, x.st);
        /* a - b = -(b - a), a / b elementwise: do them directly. */
        int64_t n = rt_numel(r), idx[RT_MAX_DIMS] = {0}, io = 0, ix = 0;
        for (int64_t k = 0; k < n; k++) {
            out.p[io] = apply(o, av, x.p[ix]);
            for (int d = r->ndim - 1; d >= 0; d--) {
                io += out.st[d], ix += x.st[d];
                if (++idx[d] < r->shape[d]) break;
                io -= out.st[d] * r->shape[d], ix -= x.st[d] * r->shape[d];
                idx[d] = 0;
            }
        }
        return 1;
    }
    rt_tensor *a = check_f32(L, 1, what);
    rt_tensor *b = bn ? NULL : check_f32(L, 2, what);
    float bv = bn ? (float)lua_tonumber(L, 2) : 0;
    int64_t shape[RT_MAX_DIMS];
    int nd = a->ndim;
    memcpy(shape, a->shape, sizeof shape);
    if (b) nd = broadcast_shape(L, a, b, shape, what);
    rt_tensor *r;
    if (inplace) {
        int same = nd == a->ndim;
        for (int d = 0; same && d < nd; d++) same = shape[d] == a->shape[d];
        if (!same) {
            char s1[64], s2[64];
            luaL_error(L, "tensor:%s: %s cannot take the broadcast of %s in place", what,
                       rt_tensor_shape_str(a, s1, sizeof s1), rt_tensor_shape_str(b, s2, sizeof s2));
        }
        r = a;
        lua_pushvalue(L, 1); /* b stays on the stack (alive) while we loop */
    } else {
        r = push_new(L, nd, shape);
    }
    operand out = {rt_f32(r), {0}}, x = {rt_f32(a), {0}}, y = {b ? rt_f32(b) : NULL, {0}};
    bstrides(r, nd, shape, out.st);
    bstrides(a, nd, shape, x.st);
    if (b) bstrides(b, nd, shape, y.st);
    loop2(nd, shape, &out, &x, b ? &y : NULL, bv, o);
    return 1;
}

static int t_add(lua_State *L) { return binary(L, OP_ADD, 0, "add"); }
static int t_sub(lua_State *L) { return binary(L, OP_SUB, 0, "sub"); }
static int t_mul(lua_State *L) { return binary(L, OP_MUL, 0, "mul"); }
static int t_div(lua_State *L) { return binary(L, OP_DIV, 0, "div"); }
static int t_add_(lua_State *L) { return binary(L, OP_ADD, 1, "add_"); }
static int t_sub_(lua_State *L) { return binary(L, OP_SUB, 1, "sub_"); }
static int t_mul_(lua_State *L) { return binary(L, OP_MUL, 1, "mul_"); }
static int t_div_(lua_State *L) { return binary(L, OP_DIV, 1, "div_"); }

/* --------------------------------------------------------------- unary */

typedef enum uop { U_EXP, U_LOG, U_NEG, U_ABS, U_SQRT, U_SQUARE, U_POW, U_CLAMP } uop;

static float unary_apply(uop o, float x, double p, double lo, double hi)
{
    switch (o) {
    case U_EXP: return expf(x);
    case U_LOG: return logf(x);
    case U_NEG: return -x;
    case U_ABS: return fabsf(x);
    case U_SQRT: return sqrtf(x);
    case U_SQUARE: return x * x;
    case U_POW: return (float)pow(x, p);
    default: return x < lo ? (float)lo : x > hi ? (float)hi : x;
    }
}

/* out = f(self) elementwise (or in place).  Arguments: pow(p),
 * clamp(min, max) with nil for an open side. */
static int unary(lua_State *L, uop o, int inplace, const char *what)
{
    rt_tensor *a = check_f32(L, 1, what);
    double p = 0, lo = -INFINITY, hi = INFINITY;
    if (o == U_POW) p = luaL_checknumber(L, 2);
    if (o == U_CLAMP) {
        lo = luaL_optnumber(L, 2, -INFINITY);
        hi = luaL_optnumber(L, 3, INFINITY);
        if (lo > hi) luaL_error(L, "tensor:%s: min %f > max %f", what, lo, hi);
    }
    rt_tensor *r = a;
    if (inplace) lua_pushvalue(L, 1);
    else r = push_new(L, a->ndim, a->shape);
    int64_t n = rt_numel(a), idx[RT_MAX_DIMS] = {0}, ia = 0, io = 0;
    float *pa = rt_f32(a), *po = rt_f32(r);
    for (int64_t k = 0; k < n; k++) {
        po[io] = unary_apply(o, pa[ia], p, lo, hi);
        for (int d = a->ndim - 1; d >= 0; d--) {
            ia += a->stride[d], io += r->stride[d];
            if (++idx[d] < a->shape[d]) break;
            ia -= a->stride[d] * a->shape[d], io -= r->stride[d] * a->shape[d];
            idx[d] = 0;
        }
    }
    return 1;
}

static int t_exp(lua_State *L) { return unary(L, U_EXP, 0, "exp"); }
static int t_log(lua_State *L) { return unary(L, U_LOG, 0, "log"); }
static int t_neg(lua_State *L) { return unary(L, U_NEG, 0, "neg"); }
static int t_abs(lua_State *L) { return unary(L, U_ABS, 0, "abs"); }
static int t_sqrt(lua_State *L) { return unary(L, U_SQRT, 0, "sqrt"); }
static int t_square(lua_State *L) { return unary(L, U_SQUARE, 0, "square"); }
static int t_pow(lua_State *L) { return unary(L, U_POW, 0, "pow"); }
static int t_clamp(lua_State *L) { return unary(L, U_CLAMP, 0, "clamp"); }
static int t_clamp_(lua_State *L) { return unary(L, U_CLAMP, 1, "clamp_"); }

/* The metamethods: a + b etc., with numbers on either side; -t. */
static int mm_unm(lua_State *L)
{
    lua_settop(L, 1); /* Lua passes the operand twice */
    return unary(L, U_NEG, 0, "neg");
}

/* ----------------------------------------------------- softmax family */

/* A contiguous version of t: t itself, or a clone pushed on the stack
 * (owned by its userdata). */
static rt_tensor *contiguous(lua_State *L, rt_tensor *t)
{
    if (rt_is_contiguous(t)) return t;
    ltensor *u = rtL_newtensor(L);
    if (!(u->t = rt_tensor_clone(rtL_S(L)->ctx, t))) rtL_fail(L);
    rtL_account(L, u->t);
    return u->t;
}

/* t:softmax([T]) / t:log_softmax([T]) along the last dimension, of
 * x / T (T > 0, default 1), through the core's kernels (stable for any
 * finite x; -inf entries give probability 0). */
static int softmax_like(lua_State *L, int logp)
{
    rt_tensor *a = check_f32(L, 1, logp ? "log_softmax" : "softmax");
    double T = luaL_optnumber(L, 2, 1.0);
    if (!(T > 0) || !isfinite(T)) luaL_argerror(L, 2, "temperature must be finite and > 0");
    if (a->ndim < 1) luaL_argerror(L, 1, "softmax needs at least one dimension");
    rt_tensor *c = contiguous(L, a);
    rt_tensor *r = push_new(L, a->ndim, a->shape);
    int64_t C = a->shape[a->ndim - 1], N = C ? rt_numel(a) / C : 0;
    if (N && C) (logp ? rt_log_softmax : rt_softmax)(rt_f32(c), rt_f32(r), N, C, (float)T);
    return 1;
}

static int t_softmax(lua_State *L) { return softmax_like(L, 0); }
static int t_log_softmax(lua_State *L) { return softmax_like(L, 1); }

/* ---------------------------------------------------------- reductions */

typedef enum rop { R_SUM, R_MEAN, R_MAX } rop;

/* t:sum([dim [, keepdim]]), t:mean(...), t:max(...).  Without dim: a
 * number over every element (in double).  With dim (1-based): a tensor
 * with that dimension removed, or kept as 1 with keepdim. */
static int reduce(lua_State *L, rop o, const char *what)
{
    rt_tensor *a = rtL_checktensor(L, 1);
    if (lua_isnoneornil(L, 2)) { /* all elements: i32 allowed (counts) */
        int64_t n = rt_numel(a);
        double s = o == R_MAX ? -INFINITY : 0;
        for (int64_t i = 0; i < n; i++) {
            double v = rt_tensor_get(a, i);
            if (o == R_MAX) s = v > s || isnan(v) ? v : s;
            else s += v;
        }
        if (o == R_MEAN) s = n ? s / (double)n : NAN;
        if (o == R_MAX && n == 0) luaL_error(L, "tensor:max of an empty tensor");
        lua_pushnumber(L, s);
        return 1;
    }
    a = check_f32(L, 1, what);
    lua_Integer dim = luaL_checkinteger(L, 2);
    int keep = lua_toboolean(L, 3);
    luaL_argcheck(L, dim >= 1 && dim <= a->ndim, 2, "dimension out of range");
    int d0 = (int)dim - 1;
    if (o == R_MAX && a->shape[d0] == 0) luaL_error(L, "tensor:max over an empty dimension");
    lua_settop(L, 1);
    rt_tensor *c = contiguous(L, a);
    int64_t shape[RT_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < a->ndim; d++)
        if (d != d0) shape[nd++] = a->shape[d];
        else if (keep) shape[nd++] = 1;
    rt_tensor *r = push_new(L, nd, shape);
    int64_t outer = 1, D = a->shape[d0], inner = 1;
    for (int d = 0; d < d0; d++) outer *= a->shape[d];
    for (int d = d0 + 1; d < a->ndim; d++) inner *= a->shape[d];
    const float *x = rt_f32(c);
    float *y = rt_f32(r);
    for (int64_t i = 0; i < outer; i++)
        for (int64_t k = 0; k < inner; k++) {
            const float *p = x + i * D * inner + k;
            double s = o == R_MAX ? p[0] : 0;
            for (int64_t j = 0; j < D; j++) {
                double v = p[j * inner];
                if (o == R_MAX) s = v > s || isnan(v) ? v : s;
                else s += v;
            }
            if (o == R_MEAN) s = D ? s / (double)D : NAN;
            y[i * inner + k] = (float)s;
        }
    return 1;
}

static int t_sum(lua_State *L) { return reduce(L, R_SUM, "sum"); }
static int t_mean(lua_State *L) { return reduce(L, R_MEAN, "mean"); }
static int t_max(lua_State *L) { return reduce(L, R_MAX, "max"); }

/* t:item() -> the number in a one-element tensor. */
static int t_item(lua_State *L)
{
    rt_tensor *a = rtL_checktensor(L, 1);
    if (rt_numel(a) != 1) {
        char s[64];
        luaL_error(L, "tensor:item needs one element, got %s", rt_tensor_shape_str(a, s, sizeof s));
    }
    lua_pushnumber(L, rt_tensor_get(a, 0));
    return 1;
}

/* ------------------------------------------------------ labels: gather */

/* The labels at i: an i32 [N] tensor of class ids in [0, C). */
static rt_tensor *check_labels(lua_State *L, int i, int64_t N, int64_t C, const char *what)
{
    rt_tensor *y = rtL_checktensor(L, i);
    char s[64];
    if (y->dtype != RT_DTYPE_I32 || y->ndim != 1 || (N >= 0 && y->shape[0] != N))
        luaL_error(L, "%s: labels must be i32 [%d], got %s %s", what, (int)(N >= 0 ? N : y->shape[0]),
                   rt_dtype_name(y->dtype), rt_tensor_shape_str(y, s, sizeof s));
    for (int64_t n = 0; n < y->shape[0]; n++) {
        double v = rt_tensor_get(y, n);
        if (v < 0 || v >= (double)C)
            luaL_error(L, "%s: label %d at row %d is outside [0, %d)", what, (int)v, (int)n + 1, (int)C);
    }
    return y;
}

/* t:gather(labels) for t [N, C] f32 -> [N]: out[n] = t[n, labels[n]]
 * (labels are 0-based class ids). */
static int t_gather(lua_State *L)
{
    rt_tensor *a = check_f32(L, 1, "gather");
    char s[64];
    if (a->ndim != 2) luaL_error(L, "tensor:gather needs [N, C], got %s", rt_tensor_shape_str(a, s, sizeof s));
    rt_tensor *y = check_labels(L, 2, a->shape[0], a->shape[1], "tensor:gather");
    rt_tensor *r = push_new(L, 1, a->shape);
    for (int64_t n = 0; n < a->shape[0]; n++) {
        int64_t c = (int64_t)rt_tensor_get(y, n);
        rt_f32(r)[n] = rt_f32(a)[n * a->stride[0] + c * a->stride[1]];
    }
    return 1;
}

/* rt.one_hot(labels, C) -> f32 [N, C] with 1 at each label. */
static int l_one_hot(lua_State *L)
{
    lua_Integer C = luaL_checkinteger(L, 2);
    luaL_argcheck(L, C >= 1, 2, "number of classes must be >= 1");
    rt_tensor *y = check_labels(L, 1, -1, C, "rt.one_hot");
    int64_t shape[2] = {y->shape[0], C};
    rt_tensor *r = push_new(L, 2, shape);
    for (int64_t n = 0; n < shape[0]; n++) rt_f32(r)[n * C + (int64_t)rt_tensor_get(y, n)] = 1;
    return 1;
}

/* rt.zeros_like(t), rt.ones_like(t), rt.full_like(t, v): f32 of t's shape. */
static int like(lua_State *L, double v)
{
    rt_tensor *a = rtL_checktensor(L, 1);
    rt_tensor *r = push_new(L, a->ndim, a->shape);
    if (v != 0) rt_tensor_fill(r, v);
    return 1;
}

static int l_zeros_like(lua_State *L) { return like(L, 0); }
static int l_ones_like(lua_State *L) { return like(L, 1); }
static int l_full_like(lua_State *L) { return like(L, luaL_checknumber(L, 2)); }

/* ---------------------------------------------------------------- open */

static const luaL_Reg methods[] = {
    {"add", t_add},       {"sub", t_sub},         {"mul", t_mul},       {"div", t_div},
    {"add_", t_add_},     {"sub_", t_sub_},       {"mul_", t_mul_},     {"div_", t_div_},
    {"exp", t_exp},       {"log", t_log},         {"neg", t_neg},       {"abs", t_abs},
    {"sqrt", t_sqrt},     {"square", t_square},   {"pow", t_pow},       {"clamp", t_clamp},
    {"clamp_", t_clamp_}, {"softmax", t_softmax}, {"log_softmax", t_log_softmax},
    {"sum", t_sum},       {"mean", t_mean},       {"max", t_max},       {"item", t_item},
    {"gather", t_gather}, {NULL, NULL}};

static const luaL_Reg metamethods[] = {
    {"__add", t_add}, {"__sub", t_sub}, {"__mul", t_mul}, {"__div", t_div}, {"__unm", mm_unm}, {NULL, NULL}};

static const luaL_Reg functions[] = {{"one_hot", l_one_hot},
                                     {"zeros_like", l_zeros_like},
                                     {"ones_like", l_ones_like},
                                     {"full_like", l_full_like},
                                     {NULL, NULL}};

void rtL_open_tensor_ops(lua_State *L)
{
    rtL_add_methods(L, MT_TENSOR, methods); /* sum replaces the all-elements one: sum() still gives a number */
    luaL_getmetatable(L, MT_TENSOR);
    rtL_setfuncs(L, metamethods);
    lua_pop(L, 1);
    rtL_setfuncs(L, functions);
}
