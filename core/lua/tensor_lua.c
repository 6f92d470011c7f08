/*
 * tensor_lua.c -- the Tensor userdata: rt.tensor/zeros/full, the accessors
 * (shape, size, get, set, totable), views (narrow, reshape), copies, __gc,
 * __tostring and __len.  Tensor arithmetic is in tensor_ops.c.
 * Moved whole out of retort_lua.c (issue 9: the binding split by
 * userdata class, as Lua splits its libraries); the rules at the top of
 * retort_lua.c hold here.  It uses rtlua.c only; retort_lua.c calls
 * its open function.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "retort.h"
#include "rtlua.h"

static rtL_state *S(lua_State *L) { return rtL_S(L); }

/* Infers the shape of a nested table of numbers. */
static int nested_shape(lua_State *L, int i, int64_t *shape, int depth)
{
    if (depth >= RT_MAX_DIMS) luaL_error(L, "tensor: nested deeper than %d", RT_MAX_DIMS);
    shape[depth] = (int64_t)lua_rawlen(L, i);
    if (shape[depth] == 0) return depth + 1;
    lua_rawgeti(L, i, 1);
    int nd = lua_istable(L, -1) ? nested_shape(L, lua_gettop(L), shape, depth + 1) : depth + 1;
    lua_pop(L, 1);
    return nd;
}

static void nested_fill(lua_State *L, int i, rt_tensor *t, int depth, int64_t *flat)
{
    int64_t n = (int64_t)lua_rawlen(L, i);
    if (n != t->shape[depth]) luaL_error(L, "tensor: ragged nested table at depth %d", depth + 1);
    for (int64_t k = 1; k <= n; k++) {
        lua_rawgeti(L, i, k);
        if (depth + 1 < t->ndim) {
            if (!lua_istable(L, -1)) luaL_error(L, "tensor: ragged nested table at depth %d", depth + 2);
            nested_fill(L, lua_gettop(L), t, depth + 1, flat);
        } else {
            int ok;
            lua_tonumberx(L, -1, &ok);
            if (!ok) luaL_error(L, "tensor: element %d at depth %d is not a number", (int)k, depth + 1);
            rt_tensor_set(t, (*flat)++, rtL_checkelem(L, lua_gettop(L), t->dtype));
        }
        lua_pop(L, 1);
    }
}

/* rt.tensor(nested_table [, dtype]) -> Tensor */
static int l_tensor(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    rt_dtype dt = rtL_checkdtype(L, 2, "f32");
    int64_t shape[RT_MAX_DIMS];
    int nd = nested_shape(L, 1, shape, 0);
    ltensor *u = rtL_newtensor(L);
    if (!(u->t = rt_tensor_new(S(L)->ctx, dt, nd, shape))) return rtL_fail(L);
    rtL_account(L, u->t);
    int64_t flat = 0;
    nested_fill(L, 1, u->t, 0, &flat);
    return 1;
}

/* rt.zeros(shape [, dtype]) / rt.full(shape, value [, dtype]) */
static int l_zeros(lua_State *L)
{
    int64_t shape[RT_MAX_DIMS];
    int nd = rtL_checkshape(L, 1, shape);
    rt_dtype dt = rtL_checkdtype(L, 2, "f32");
    ltensor *u = rtL_newtensor(L);
    if (!(u->t = rt_tensor_new(S(L)->ctx, dt, nd, shape))) return rtL_fail(L);
    rtL_account(L, u->t);
    return 1;
}

static int l_full(lua_State *L)
{
    int64_t shape[RT_MAX_DIMS];
    int nd = rtL_checkshape(L, 1, shape);
    rt_dtype dt = rtL_checkdtype(L, 3, "f32");
    lua_Number v = rtL_checkelem(L, 2, dt);
    ltensor *u = rtL_newtensor(L);
    if (!(u->t = rt_tensor_new(S(L)->ctx, dt, nd, shape))) return rtL_fail(L);
    rtL_account(L, u->t);
    rt_tensor_fill(u->t, v);
    return 1;
}

static int t_gc(lua_State *L)
{
    ltensor *u = luaL_checkudata(L, 1, MT_TENSOR);
    rt_tensor_release(u->t);
    u->t = NULL;
    return 0;
}

static int t_shape(lua_State *L)
{
    rt_tensor *t = rtL_checktensor(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int t_size(lua_State *L)
{
    rt_tensor *t = rtL_checktensor(L, 1);
    lua_Integer d = luaL_checkinteger(L, 2);
    luaL_argcheck(L, d >= 1 && d <= t->ndim, 2, "dimension out of range");
    lua_pushinteger(L, t->shape[d - 1]);
    return 1;
}

static int t_dim(lua_State *L)
{
    lua_pushinteger(L, rtL_checktensor(L, 1)->ndim);
    return 1;
}

static int t_numel(lua_State *L)
{
    lua_pushinteger(L, rt_numel(rtL_checktensor(L, 1)));
    return 1;
}

static int t_nbytes(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)rt_tensor_nbytes(rtL_checktensor(L, 1)));
    return 1;
}

static int t_dtype(lua_State *L)
{
    lua_pushstring(L, rt_dtype_name(rtL_checktensor(L, 1)->dtype));
    return 1;
}

/* Flat row-major index of 1-based indices at stack 2..; checked. */
static int64_t flat_index(lua_State *L, rt_tensor *t, int first, int count)
{
    if (count != t->ndim)
        luaL_error(L, "tensor: %d indices for a %d-dimensional tensor", count, t->ndim);
    int64_t flat = 0;
    for (int d = 0; d < t->ndim; d++) {
        lua_Integer i = luaL_checkinteger(L, first + d);
        if (i < 1 || i > t->shape[d])
            luaL_error(L, "tensor: index %d of dimension %d is outside 1..%d", (int)i, d + 1, (int)t->shape[d]);
        flat = flat * t->shape[d] + (i - 1);
    }
    return flat;
}

static void push_elem(lua_State *L, const rt_tensor *t, int64_t flat)
{
    if (t->dtype != RT_DTYPE_F32) lua_pushinteger(L, (lua_Integer)rt_tensor_get(t, flat));
    else lua_pushnumber(L, rt_tensor_get(t, flat));
}

/* t:get(i, j, ...) (1-based) */
static int t_get(lua_State *L)
{
    rt_tensor *t = rtL_checktensor(L, 1);
    push_elem(L, t, flat_index(L, t, 2, lua_gettop(L) - 1));
    return 1;
}

/* t:set(i, j, ..., value) */
static int t_set(lua_State *L)
{
    rt_tensor *t = rtL_checktensor(L, 1);
    int top = lua_gettop(L);
    lua_Number v = rtL_checkelem(L, top, t->dtype);
    rt_tensor_set(t, flat_index(L, t, 2, top - 2), v);
    lua_settop(L, 1);
    return 1;
}

static void totable(lua_State *L, const rt_tensor *t, int d, int64_t *flat)
{
    if (t->ndim == 0) {
        push_elem(L, t, 0);
        return;
    }
    lua_createtable(L, (int)t->shape[d], 0);
    for (int64_t i = 0; i < t->shape[d]; i++) {
        if (d + 1 < t->ndim) totable(L, t, d + 1, flat);
        else push_elem(L, t, (*flat)++);
        lua_rawseti(L, -2, i + 1);
    }
}

static int t_totable(lua_State *L)
{
    rt_tensor *t = rtL_checktensor(L, 1);
    int64_t flat = 0;
    totable(L, t, 0, &flat);
    return 1;
}

static int t_fill(lua_State *L)
{
    rt_tensor *t = rtL_checktensor(L, 1);
    rt_tensor_fill(t, rtL_checkelem(L, 2, t->dtype));
    lua_settop(L, 1);
    return 1;
}

static int t_clone(lua_State *L)
{
    rt_tensor *t = rtL_checktensor(L, 1);
    ltensor *u = rtL_newtensor(L);
    if (!(u->t = rt_tensor_clone(S(L)->ctx, t))) return rtL_fail(L);
    rtL_account(L, u->t);
    return 1;
}

/* dst:copy(src) */
static int t_copy(lua_State *L)
{
    rt_tensor *d = rtL_checktensor(L, 1), *s = rtL_checktensor(L, 2);
    if (rt_tensor_copy(S(L)->ctx, d, s)) return rtL_fail(L);
    lua_settop(L, 1);
    return 1;
}

/* t:narrow(dim, start, len), 1-based dim and start: a view. */
static int t_narrow(lua_State *L)
{
    rt_tensor *t = rtL_checktensor(L, 1);
    lua_Integer d = luaL_checkinteger(L, 2), st = luaL_checkinteger(L, 3), len = luaL_checkinteger(L, 4);
    luaL_argcheck(L, d >= 1 && d <= t->ndim, 2, "dimension out of range");
    ltensor *u = rtL_newtensor(L);
    /* st - 1 would overflow at the smallest integer; any st < 1 is outside */
    if (!(u->t = rt_tensor_narrow(S(L)->ctx, t, (int)d - 1, st < 1 ? -1 : st - 1, len))) return rtL_fail(L);
    return 1;
}

static int t_reshape(lua_State *L)
{
    rt_tensor *t = rtL_checktensor(L, 1);
    int64_t shape[RT_MAX_DIMS];
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)lua_rawlen(L, 2);
    if (n > RT_MAX_DIMS) luaL_argerror(L, 2, "too many dimensions");
    for (int k = 0; k < n; k++) {
        lua_rawgeti(L, 2, k + 1);
        shape[k] = luaL_checkinteger(L, -1);
        lua_pop(L, 1);
    }
    ltensor *u = rtL_newtensor(L);
    if (!(u->t = rt_tensor_reshape(S(L)->ctx, t, n, shape))) return rtL_fail(L);
    return 1;
}

static int t_sum(lua_State *L)
{
    rt_tensor *t = rtL_checktensor(L, 1);
    double s = 0;
    int64_t n = rt_numel(t);
    if (t->dtype == RT_DTYPE_F32 && rt_is_contiguous(t)) s = rt_sum(rt_f32(t), n);
    else
        for (int64_t i = 0; i < n; i++) s += rt_tensor_get(t, i);
    lua_pushnumber(L, s);
    return 1;
}

static int t_all_finite(lua_State *L)
{
    lua_pushboolean(L, rt_tensor_all_finite(rtL_checktensor(L, 1)));
    return 1;
}

/* t:argmax() for [N, C] f32: an i32 [N] tensor of class ids (0-based). */
static int t_argmax(lua_State *L)
{
    rt_tensor *t = rtL_checktensor(L, 1);
    if (t->dtype != RT_DTYPE_F32 || t->ndim != 2 || !rt_is_contiguous(t))
        luaL_argerror(L, 1, "argmax needs a contiguous f32 [N, C] tensor");
    ltensor *u = rtL_newtensor(L);
    if (!(u->t = rt_tensor_new(S(L)->ctx, RT_DTYPE_I32, 1, t->shape))) return rtL_fail(L);
    rtL_account(L, u->t);
    rt_argmax(rt_f32(t), t->shape[0], t->shape[1], rt_i32(u->t));
    return 1;
}

static int t_tostring(lua_State *L)
{
    ltensor *u = luaL_checkudata(L, 1, MT_TENSOR);
    if (!u->t) {
        lua_pushstring(L, "retort.Tensor (closed)");
        return 1;
    }
    char b[128];
    lua_pushfstring(L, "retort.Tensor %s %s", rt_dtype_name(u->t->dtype), rt_tensor_shape_str(u->t, b, sizeof b));
    return 1;
}

static int t_len(lua_State *L)
{
    rt_tensor *t = rtL_checktensor(L, 1);
    lua_pushinteger(L, t->ndim ? t->shape[0] : 0);
    return 1;
}

static const luaL_Reg tensor_methods[] = {
    {"shape", t_shape},     {"size", t_size},         {"dim", t_dim},       {"numel", t_numel},
    {"nbytes", t_nbytes},   {"dtype", t_dtype},       {"get", t_get},       {"set", t_set},
    {"totable", t_totable}, {"fill", t_fill},         {"clone", t_clone},   {"copy", t_copy},
    {"narrow", t_narrow},   {"reshape", t_reshape},   {"sum", t_sum},       {"all_finite", t_all_finite},
    {"argmax", t_argmax},   {NULL, NULL}};

static const luaL_Reg tensor_functions[] = {
    {"tensor", l_tensor},
    {"zeros", l_zeros},
    {"full", l_full},
    {NULL, NULL}};

/* The class Tensor and its constructors (module table at the top). */
void rtL_open_tensor(lua_State *L)
{
    rtL_new_class(L, MT_TENSOR, tensor_methods, NULL, t_gc);
    luaL_getmetatable(L, MT_TENSOR);
    lua_pushcfunction(L, t_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_getfield(L, LUA_REGISTRYINDEX, MT_STATE);
    lua_pushcclosure(L, t_len, 1);
    lua_setfield(L, -2, "__len");
    lua_pop(L, 1);
    rtL_setfuncs(L, tensor_functions);
}
