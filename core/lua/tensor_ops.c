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
 * The work is the core's (core/kernels/tensor_math.c, declared in
 * retort.h): this file checks the Lua arguments, allocates the result's
 * userdata first (so an error never leaks) and converts 1-based dims.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rtlua.h"

/* ---------------------------------------------------------- arguments */

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

/* "tensor:WHAT", the name the core's messages give. */
#define WHAT(buf, what) (snprintf(buf, sizeof buf, "tensor:%s", what), buf)

/* The binary operations: a (op) b where either may be a number (the
 * metamethods receive 2 * t as (2, t)).  inplace: the result goes into a,
 * whose shape must be the broadcast shape. */
static int binary(lua_State *L, rt_binop o, int inplace, const char *what)
{
    char w[40];
    rt_ctx *ctx = rtL_S(L)->ctx;
    int an = lua_type(L, 1) == LUA_TNUMBER, bn = lua_type(L, 2) == LUA_TNUMBER;
    if (an && bn) luaL_error(L, "tensor:%s: needs a tensor", what);
    rt_tensor *a = an ? NULL : check_f32(L, 1, what);
    rt_tensor *b = bn ? NULL : check_f32(L, 2, what);
    float av = an ? (float)lua_tonumber(L, 1) : 0, bv = bn ? (float)lua_tonumber(L, 2) : 0;
    rt_tensor *r;
    if (inplace && a) {
        r = a;
        lua_pushvalue(L, 1); /* b stays on the stack (alive) while the core loops */
    } else { /* number (op) tensor comes only from the metamethods */
        const rt_tensor *one = a ? a : b;
        int64_t shape[RT_MAX_DIMS];
        int nd = one->ndim;
        memcpy(shape, one->shape, sizeof shape);
        if (a && b && rt_broadcast_shape(ctx, a, b, shape, &nd, WHAT(w, what))) return rtL_fail(L);
        r = push_new(L, nd, shape);
    }
    if (rt_tensor_binary(ctx, o, r, a, av, b, bv, WHAT(w, what))) return rtL_fail(L);
    return 1;
}

static int t_add(lua_State *L) { return binary(L, RT_OP_ADD, 0, "add"); }
static int t_sub(lua_State *L) { return binary(L, RT_OP_SUB, 0, "sub"); }
static int t_mul(lua_State *L) { return binary(L, RT_OP_MUL, 0, "mul"); }
static int t_div(lua_State *L) { return binary(L, RT_OP_DIV, 0, "div"); }
static int t_add_(lua_State *L) { return binary(L, RT_OP_ADD, 1, "add_"); }
static int t_sub_(lua_State *L) { return binary(L, RT_OP_SUB, 1, "sub_"); }
static int t_mul_(lua_State *L) { return binary(L, RT_OP_MUL, 1, "mul_"); }
static int t_div_(lua_State *L) { return binary(L, RT_OP_DIV, 1, "div_"); }

/* --------------------------------------------------------------- unary */

/* out = f(self) elementwise (or in place).  Arguments: pow(p),
 * clamp(min, max) with nil for an open side. */
static int unary(lua_State *L, rt_unop o, int inplace, const char *what)
{
    char w[40];
    rt_tensor *a = check_f32(L, 1, what);
    double p = 0, lo = -INFINITY, hi = INFINITY;
    if (o == RT_OP_POW) p = luaL_checknumber(L, 2);
    if (o == RT_OP_CLAMP) {
        lo = luaL_optnumber(L, 2, -INFINITY);
        hi = luaL_optnumber(L, 3, INFINITY);
        if (lo > hi) luaL_error(L, "tensor:%s: min %f > max %f", what, lo, hi);
    }
    rt_tensor *r = a;
    if (inplace) lua_pushvalue(L, 1);
    else r = push_new(L, a->ndim, a->shape);
    if (rt_tensor_unary(rtL_S(L)->ctx, o, r, a, p, lo, hi, WHAT(w, what))) return rtL_fail(L);
    return 1;
}

static int t_exp(lua_State *L) { return unary(L, RT_OP_EXP, 0, "exp"); }
static int t_log(lua_State *L) { return unary(L, RT_OP_LOG, 0, "log"); }
static int t_neg(lua_State *L) { return unary(L, RT_OP_NEG, 0, "neg"); }
static int t_abs(lua_State *L) { return unary(L, RT_OP_ABS, 0, "abs"); }
static int t_sqrt(lua_State *L) { return unary(L, RT_OP_SQRT, 0, "sqrt"); }
static int t_square(lua_State *L) { return unary(L, RT_OP_SQUARE, 0, "square"); }
static int t_pow(lua_State *L) { return unary(L, RT_OP_POW, 0, "pow"); }
static int t_clamp(lua_State *L) { return unary(L, RT_OP_CLAMP, 0, "clamp"); }
static int t_clamp_(lua_State *L) { return unary(L, RT_OP_CLAMP, 1, "clamp_"); }

/* The metamethods: a + b etc., with numbers on either side; -t. */
static int mm_unm(lua_State *L)
{
    lua_settop(L, 1); /* Lua passes the operand twice */
    return unary(L, RT_OP_NEG, 0, "neg");
}

/* ----------------------------------------------------- softmax family */

/* t:softmax([T]) / t:log_softmax([T]) along the last dimension, of
 * x / T (T > 0, default 1), through the core's kernels (stable for any
 * finite x; -inf entries give probability 0). */
static int softmax_like(lua_State *L, int logp)
{
    char w[40];
    const char *what = logp ? "log_softmax" : "softmax";
    rt_tensor *a = check_f32(L, 1, what);
    double T = luaL_optnumber(L, 2, 1.0);
    if (!(T > 0) || !isfinite(T)) luaL_argerror(L, 2, "temperature must be finite and > 0");
    if (a->ndim < 1) luaL_argerror(L, 1, "softmax needs at least one dimension");
    rt_tensor *r = push_new(L, a->ndim, a->shape);
    if (rt_tensor_softmax(rtL_S(L)->ctx, r, a, T, logp, WHAT(w, what))) return rtL_fail(L);
    return 1;
}

static int t_softmax(lua_State *L) { return softmax_like(L, 0); }
static int t_log_softmax(lua_State *L) { return softmax_like(L, 1); }

/* ---------------------------------------------------------- reductions */

/* t:sum([dim [, keepdim]]), t:mean(...), t:max(...).  Without dim: a
 * number over every element (in double).  With dim (1-based): a tensor
 * with that dimension removed, or kept as 1 with keepdim. */
static int reduce(lua_State *L, rt_reduce o, const char *what)
{
    char w[40];
    rt_ctx *ctx = rtL_S(L)->ctx;
    rt_tensor *a = rtL_checktensor(L, 1);
    if (lua_isnoneornil(L, 2)) { /* all elements: i32 allowed (counts) */
        double s;
        if (rt_tensor_reduce_all(ctx, o, a, &s, WHAT(w, what))) return rtL_fail(L);
        lua_pushnumber(L, s);
        return 1;
    }
    a = check_f32(L, 1, what);
    lua_Integer dim = luaL_checkinteger(L, 2);
    int keep = lua_toboolean(L, 3);
    luaL_argcheck(L, dim >= 1 && dim <= a->ndim, 2, "dimension out of range");
    int64_t shape[RT_MAX_DIMS];
    int nd;
    if (rt_reduce_shape(ctx, o, a, (int)dim - 1, keep, shape, &nd, WHAT(w, what))) return rtL_fail(L);
    lua_settop(L, 1);
    rt_tensor *r = push_new(L, nd, shape);
    if (rt_tensor_reduce(ctx, o, r, a, (int)dim - 1, keep, WHAT(w, what))) return rtL_fail(L);
    return 1;
}

static int t_sum(lua_State *L) { return reduce(L, RT_REDUCE_SUM, "sum"); }
static int t_mean(lua_State *L) { return reduce(L, RT_REDUCE_MEAN, "mean"); }
static int t_max(lua_State *L) { return reduce(L, RT_REDUCE_MAX, "max"); }

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

/* t:gather(labels) for t [N, C] f32 -> [N]: out[n] = t[n, labels[n]]
 * (labels are 0-based class ids). */
static int t_gather(lua_State *L)
{
    rt_tensor *a = check_f32(L, 1, "gather");
    char s[64];
    if (a->ndim != 2) luaL_error(L, "tensor:gather needs [N, C], got %s", rt_tensor_shape_str(a, s, sizeof s));
    rt_tensor *y = rtL_checktensor(L, 2);
    rt_tensor *r = push_new(L, 1, a->shape);
    if (rt_tensor_gather_labels(rtL_S(L)->ctx, r, a, y, "tensor:gather")) return rtL_fail(L);
    return 1;
}

/* rt.one_hot(labels, C) -> f32 [N, C] with 1 at each label. */
static int l_one_hot(lua_State *L)
{
    lua_Integer C = luaL_checkinteger(L, 2);
    luaL_argcheck(L, C >= 1, 2, "number of classes must be >= 1");
    rt_tensor *y = rtL_checktensor(L, 1);
    rt_ctx *ctx = rtL_S(L)->ctx;
    if (rt_labels_check(ctx, y, -1, C, "rt.one_hot")) return rtL_fail(L);
    int64_t shape[2] = {y->shape[0], C};
    rt_tensor *r = push_new(L, 2, shape);
    if (rt_tensor_one_hot(ctx, r, y, C, "rt.one_hot")) return rtL_fail(L);
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
