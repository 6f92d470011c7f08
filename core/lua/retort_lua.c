/*
 * retort_lua.c -- the Lua binding: luaopen_retort.  The only code besides
 * main.c that includes lua.h.
 *
 * Rules kept here (Lua's own liolib.c, and the Torch7 lesson):
 *  - Check every Lua argument first; acquire C resources after.
 *  - A C resource is always owned by a userdata that exists BEFORE the
 *    resource is acquired (created with a NULL pointer and its metatable,
 *    whose __gc accepts NULL), so a luaL_error longjmp never leaks.
 *  - Text built for C (options JSON) lives in a box-owned buffer: GC-owned.
 *  - Indices are 1-based here and 0-based in the core; this file converts.
 *    Class ids and labels are data values (0-based as in the files), not
 *    indices, and are never converted.
 *  - Core errors become Lua errors with the core's message, positioned at
 *    the Lua line that called.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "retort.h"
#include "rtlua.h"

static rtL_state *S(lua_State *L) { return rtL_S(L); }

rtL_state *rtL_S(lua_State *L) { return (rtL_state *)lua_touserdata(L, lua_upvalueindex(1)); }

/* Raises the context's message as a Lua error at the calling Lua line. */
int rtL_fail(lua_State *L)
{
    luaL_where(L, 1);
    lua_pushstring(L, rt_ctx_message(S(L)->ctx));
    lua_concat(L, 2);
    rt_ctx_clear(S(L)->ctx);
    return lua_error(L);
}

/* ----------------------------------------------------------------- boxes */

/* A box owns a malloc'd C object with a destructor, for objects built
 * before they can be pushed (cJSON trees, parsed files). */
typedef struct box {
    void *p;
    void (*free)(void *);
} box;

static int box_gc(lua_State *L)
{
    box *b = luaL_checkudata(L, 1, MT_BOX);
    if (b->p && b->free) b->free(b->p);
    b->p = NULL;
    return 0;
}

static box *box_new(lua_State *L, void (*fr)(void *))
{
    box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->p = NULL;
    b->free = fr;
    luaL_setmetatable(L, MT_BOX);
    return b;
}

/* --------------------------------------------------------------- tensors */


/* Pushes an empty tensor userdata to be filled by the caller: it exists
 * before the tensor does, so a failure after this never leaks. */
ltensor *rtL_newtensor(lua_State *L)
{
    ltensor *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->t = NULL;
    luaL_setmetatable(L, MT_TENSOR);
    return u;
}

/* Bills the bytes of t (its data and header), which this binding just
 * allocated for a Tensor userdata, to the Lua collector as if Lua had
 * allocated them: the userdata itself is a few bytes, so without this a
 * loop of tensor math makes gigabytes of garbage before the collector
 * thinks it has any work.  Bytes are billed by the whole kB (the unit of
 * LUA_GCSTEP); the remainder waits for the next tensor.  A collector
 * stopped by collectgarbage("stop") stays stopped. */
void rtL_account(lua_State *L, const rt_tensor *t)
{
    rtL_state *s = S(L);
    if (!t) return;
    s->unbilled += rt_tensor_nbytes(t) + sizeof *t;
    if (s->unbilled < 1024) return;
    size_t kb = s->unbilled / 1024;
    s->unbilled %= 1024;
    if (lua_gc(L, LUA_GCISRUNNING)) lua_gc(L, LUA_GCSTEP, kb > INT_MAX ? INT_MAX : (int)kb);
}

/* The registry, with the built-in folder and RETORT_PLUGIN_PATH loaded on
 * the first call.  A plugin file that fails to load registers nothing; the
 * others load.  That is said once, on stderr, and the reason is kept in
 * rt.plugin_load_error.  Call it before acquiring C resources (it may
 * raise on OOM). */
rt_registry *rtL_registry(lua_State *L)
{
    rtL_state *s = S(L);
    if (s->plugins_loaded) return s->reg;
    s->plugins_loaded = 1;
    if (rt_registry_load_default(s->reg, s->ctx)) {
        fprintf(stderr, "retort: warning: %s\n", rt_ctx_message(s->ctx));
        if (lua_getiuservalue(L, lua_upvalueindex(1), 1) == LUA_TTABLE) {
            lua_pushstring(L, rt_ctx_message(s->ctx));
            lua_setfield(L, -2, "plugin_load_error");
        }
        lua_pop(L, 1);
    }
    rt_ctx_clear(s->ctx);
    return s->reg;
}

/* Pushes t retaining it (the callee keeps its own reference). */
void rtL_pushborrowed(lua_State *L, rt_tensor *t)
{
    if (!t) {
        lua_pushnil(L);
        return;
    }
    ltensor *u = rtL_newtensor(L);
    rt_tensor_retain(t);
    u->t = t;
}

rt_tensor *rtL_checktensor(lua_State *L, int i)
{
    ltensor *u = luaL_checkudata(L, i, MT_TENSOR);
    if (!u->t) luaL_argerror(L, i, "tensor is closed");
    return u->t;
}

rt_tensor *rtL_opttensor(lua_State *L, int i)
{
    return lua_isnoneornil(L, i) ? NULL : rtL_checktensor(L, i);
}

rt_dtype rtL_checkdtype(lua_State *L, int i, const char *def)
{
    const char *s = luaL_optstring(L, i, def);
    if (!strcmp(s, "f32")) return RT_DTYPE_F32;
    if (!strcmp(s, "i32")) return RT_DTYPE_I32;
    if (!strcmp(s, "i64")) return RT_DTYPE_I64;
    return (rt_dtype)luaL_argerror(L, i, lua_pushfstring(L, "dtype must be 'f32', 'i32' or 'i64', got '%s'", s));
}

/* A string argument that C will read up to its first NUL (a path, a name,
 * an option): one with an embedded NUL would silently mean a different,
 * shorter string, so it is refused.  what names it in the error. */
const char *rtL_checkcstr(lua_State *L, int i, const char *what)
{
    size_t n;
    const char *s = luaL_checklstring(L, i, &n);
    size_t z = strlen(s);
    if (z != n) luaL_argerror(L, i, lua_pushfstring(L, "%s contains a NUL byte at position %d", what, (int)z + 1));
    return s;
}

/* The string at stack index i (already known to be a string) for C, or a
 * Lua error naming what and where when it holds a NUL byte. */
const char *rtL_tocstr(lua_State *L, int i, const char *what)
{
    size_t n;
    const char *s = lua_tolstring(L, i, &n);
    if (strlen(s) != n) luaL_error(L, "%s contains a NUL byte at position %d", what, (int)strlen(s) + 1);
    return s;
}

/* The number at i as a value for a tensor of dtype dt: any number for f32;
 * for i32 an integer in [-2^31, 2^31) (a cast of anything else would be
 * undefined or silently wrong). */
lua_Number rtL_checkelem(lua_State *L, int i, rt_dtype dt)
{
    lua_Number v = luaL_checknumber(L, i);
    if (dt == RT_DTYPE_I32 && !(v == floor(v) && v >= -2147483648.0 && v < 2147483648.0))
        luaL_argerror(L, i,
                      lua_pushfstring(L, "%f is not an integer in [-2^31, 2^31): an i32 tensor holds integers", v));
    return v;
}

/* Reads a shape table {d1, d2, ...} at index i. */
int rtL_checkshape(lua_State *L, int i, int64_t *shape)
{
    luaL_checktype(L, i, LUA_TTABLE);
    int n = (int)lua_rawlen(L, i);
    if (n > RT_MAX_DIMS) luaL_argerror(L, i, "too many dimensions");
    for (int k = 0; k < n; k++) {
        lua_rawgeti(L, i, k + 1);
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < 0) luaL_argerror(L, i, "shape entries must be non-negative integers");
        shape[k] = v;
        lua_pop(L, 1);
    }
    return n;
}

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

/* ----------------------------------------------------- options as JSON */

/* A growable byte buffer owned by a box: safe across luaL_error, and
 * unlike luaL_Buffer it uses no stack slots, so it can be appended to
 * while lua_next's key and value sit on the stack. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sbuf_free(void *v)
{
    sbuf *b = v;
    free(b->p);
    free(b);
}

static sbuf *sbuf_new(lua_State *L)
{
    box *bx = box_new(L, sbuf_free);
    sbuf *b = calloc(1, sizeof *b);
    if (!b) luaL_error(L, "out of memory");
    bx->p = b;
    return b;
}

static void sb_addlstring(lua_State *L, sbuf *b, const char *s, size_t n)
{
    if (b->cap - b->n < n + 1) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n < n + 1) cap *= 2;
        char *g = realloc(b->p, cap);
        if (!g) luaL_error(L, "out of memory");
        b->p = g;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_addstring(lua_State *L, sbuf *b, const char *s) { sb_addlstring(L, b, s, strlen(s)); }
static void sb_addchar(lua_State *L, sbuf *b, char c) { sb_addlstring(L, b, &c, 1); }

static void json_string(lua_State *L, sbuf *b, const char *s, size_t n)
{
    sb_addchar(L, b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            sb_addchar(L, b, '\\');
            sb_addchar(L, b, (char)c);
        } else if (c < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", c);
            sb_addstring(L, b, e);
        } else {
            sb_addchar(L, b, (char)c);
        }
    }
    sb_addchar(L, b, '"');
}

/* Is the table at i a sequence 1..n with nothing else? */
static int is_array(lua_State *L, int i)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, i), count = 0;
    lua_pushnil(L);
    while (lua_next(L, i)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1)) {
            lua_pop(L, 1);
            return 0;
        }
        lua_Integer k = lua_tointeger(L, -1);
        if (k < 1 || k > n) {
            lua_pop(L, 1);
            return 0;
        }
        count++;
    }
    return n > 0 && count == n;
}

static int cmp_keys(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Appends the Lua value at index i as JSON; errors name the key path. */
static void to_json(lua_State *L, sbuf *b, int i, int depth, const char *path)
{
    if (depth > 32) luaL_error(L, "options: '%s' nests too deep", path);
    switch (lua_type(L, i)) {
    case LUA_TBOOLEAN: sb_addstring(L, b, lua_toboolean(L, i) ? "true" : "false"); return;
    case LUA_TNUMBER: {
        char num[64];
        if (lua_isinteger(L, i)) snprintf(num, sizeof num, LUA_INTEGER_FMT, lua_tointeger(L, i));
        else {
            lua_Number v = lua_tonumber(L, i);
            if (!isfinite(v)) luaL_error(L, "options: '%s' is %s (numbers must be finite)", path, isnan(v) ? "nan" : "inf");
            snprintf(num, sizeof num, "%.17g", v);
        }
        sb_addstring(L, b, num);
        return;
    }
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, i, &n);
        if (strlen(s) != n)
            luaL_error(L, "options: '%s' contains a NUL byte at position %d", path, (int)strlen(s) + 1);
        json_string(L, b, s, n);
        return;
    }
    case LUA_TTABLE: break;
    default: luaL_error(L, "options: '%s' is a %s (want number, boolean, string or table)", path, luaL_typename(L, i));
    }
    if (is_array(L, i)) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, i);
        sb_addchar(L, b, '[');
        for (lua_Integer k = 1; k <= n; k++) {
            if (k > 1) sb_addchar(L, b, ',');
            lua_rawgeti(L, i, k);
            int top = lua_gettop(L);
            char sub[256];
            snprintf(sub, sizeof sub, "%s[%d]", path, (int)k);
            to_json(L, b, top, depth + 1, sub);
            lua_remove(L, top);
        }
        sb_addchar(L, b, ']');
        return;
    }
    /* Objects are written with their keys sorted, so the same table gives
     * the same text in every process (Lua randomises string hashing). */
    int nkeys = 0;
    lua_pushnil(L);
    while (lua_next(L, i)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "options: '%s' has a %s key (keys must be names)", path, luaL_typename(L, -2));
        nkeys++;
        lua_pop(L, 1);
    }
    const char **keys = lua_newuserdatauv(L, sizeof(char *) * (size_t)(nkeys + 1), 0);
    int ku = lua_gettop(L), k = 0;
    lua_pushnil(L);
    while (lua_next(L, i)) {
        keys[k++] = rtL_tocstr(L, -2, "options: a key"); /* anchored by the table at i */
        lua_pop(L, 1);
    }
    qsort(keys, (size_t)nkeys, sizeof *keys, cmp_keys);
    sb_addchar(L, b, '{');
    for (k = 0; k < nkeys; k++) {
        if (k) sb_addchar(L, b, ',');
        json_string(L, b, keys[k], strlen(keys[k]));
        sb_addchar(L, b, ':');
        lua_getfield(L, i, keys[k]);
        char sub[256];
        snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", keys[k]);
        to_json(L, b, lua_gettop(L), depth + 1, sub);
        lua_pop(L, 1);
    }
    lua_remove(L, ku);
    sb_addchar(L, b, '}');
}

/* Pushes the JSON text of the value at i (nil -> "{}"). */
const char *rtL_tojson(lua_State *L, int i)
{
    i = lua_absindex(L, i);
    if (lua_isnoneornil(L, i)) {
        lua_pushliteral(L, "{}");
        return lua_tostring(L, -1);
    }
    sbuf *b = sbuf_new(L);
    to_json(L, b, i, 0, "");
    lua_pushlstring(L, b->p ? b->p : "", b->n);
    lua_remove(L, -2); /* the box: its memory is freed by the GC */
    return lua_tostring(L, -1);
}

/* ------------------------------------------------------------- instances */


static const char *kind_mt(rt_kind k)
{
    return k == RT_KIND_STUDENT ? MT_STUDENT : k == RT_KIND_TEACHER ? MT_TEACHER : MT_LOSS;
}

int rtL_inst_gc(lua_State *L)
{
    linst *u = lua_touserdata(L, 1);
    if (u) {
        rt_instance_release(u->i);
        rt_tensor_release(u->grad);
        u->i = NULL;
        u->grad = NULL;
    }
    return 0;
}

linst *rtL_checkinst(lua_State *L, int i, const char *mt)
{
    linst *u = luaL_checkudata(L, i, mt);
    if (!u->i) luaL_argerror(L, i, "object is closed");
    return u;
}

/* Any of the three kinds. */
linst *rtL_checkany(lua_State *L, int i)
{
    linst *u = luaL_testudata(L, i, MT_STUDENT);
    if (!u) u = luaL_testudata(L, i, MT_TEACHER);
    if (!u) u = luaL_testudata(L, i, MT_LOSS);
    if (!u || !u->i) luaL_typeerror(L, i, "retort student, teacher or loss");
    return u;
}

static int make_instance(lua_State *L, rt_kind kind)
{
    rtL_registry(L);
    const char *name = rtL_checkcstr(L, 1, "plugin name");
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    const char *json = rtL_tojson(L, 2);
    linst *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->i = NULL;
    u->grad = NULL;
    luaL_setmetatable(L, kind_mt(kind));
    if (rt_instance_create(S(L)->reg, S(L)->ctx, kind, name, json, &u->i)) return rtL_fail(L);
    return 1;
}

static int l_student(lua_State *L) { return make_instance(L, RT_KIND_STUDENT); }
static int l_teacher(lua_State *L) { return make_instance(L, RT_KIND_TEACHER); }
static int l_loss(lua_State *L) { return make_instance(L, RT_KIND_LOSS); }

static int i_name(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    lua_pushstring(L, rt_instance_desc(u->i)->name);
    return 1;
}

static int i_kind(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    lua_pushstring(L, rt_kind_name(rt_instance_desc(u->i)->kind));
    return 1;
}

static int i_version(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    lua_pushstring(L, rt_instance_desc(u->i)->version);
    return 1;
}

/* The validated options with defaults, as JSON text. */
static int i_options_json(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    lua_pushstring(L, rt_instance_options(u->i));
    return 1;
}

/* Pushes a GC-owned array of all of i's parameters (no fixed limit) and
 * returns it; *n gets the count. */
static rt_param *push_params(lua_State *L, rt_instance *i, int *n)
{
    *n = rt_instance_param_count(i);
    rt_param *p = lua_newuserdatauv(L, sizeof(rt_param) * (size_t)(*n > 0 ? *n : 1), 0);
    int again = rt_instance_params(i, p, *n);
    if (again != *n)
        luaL_error(L, "%s '%s': reported %d parameters, then %d", rt_kind_name(rt_instance_desc(i)->kind),
                   rt_instance_desc(i)->name, *n, again);
    return p;
}

/* obj:parameters() -> { {name=, value=, grad=}, ... } in order */
static int i_parameters(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    int n;
    rt_param *p = push_params(L, u->i, &n);
    lua_createtable(L, n, 0);
    for (int k = 0; k < n; k++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, p[k].name);
        lua_setfield(L, -2, "name");
        rtL_pushborrowed(L, p[k].value);
        lua_setfield(L, -2, "value");
        if (p[k].grad) {
            rtL_pushborrowed(L, p[k].grad);
            lua_setfield(L, -2, "grad");
        }
        lua_rawseti(L, -2, k + 1);
    }
    return 1;
}

/* obj:param_count() -> number of scalar parameters, bytes */
static int i_param_count(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    int n;
    rt_param *p = push_params(L, u->i, &n);
    int64_t total = 0, bytes = 0;
    for (int k = 0; k < n; k++) {
        total += rt_numel(p[k].value);
        bytes += (int64_t)rt_tensor_nbytes(p[k].value);
    }
    lua_pushinteger(L, total);
    lua_pushinteger(L, bytes);
    return 2;
}

static int i_flops(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    int64_t f = rt_instance_flops(u->i);
    if (f < 0) lua_pushnil(L);
    else lua_pushinteger(L, f);
    return 1;
}

static int i_feature(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    rtL_pushborrowed(L, rt_instance_feature(u->i, rtL_checkcstr(L, 2, "feature name")));
    return 1;
}

/* Metadata table at index i -> parallel key/value arrays in a GC-owned
 * userdata (pointers into Lua strings that stay on the stack/table). */
static int meta_arrays(lua_State *L, int i, const char ***keys, const char ***vals)
{
    int n = 0;
    if (lua_isnoneornil(L, i)) {
        *keys = *vals = NULL;
        return 0;
    }
    luaL_checktype(L, i, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, i)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "metadata must map strings to strings");
        n++;
        lua_pop(L, 1);
    }
    const char **k = lua_newuserdatauv(L, sizeof(char *) * (size_t)(2 * n + 1), 0);
    const char **v = k + n;
    int j = 0;
    lua_pushnil(L);
    while (lua_next(L, i)) {
        k[j] = rtL_tocstr(L, -2, "metadata key"); /* strings owned by the table at i */
        v[j] = rtL_tocstr(L, -1, "metadata value");
        j++;
        lua_pop(L, 1);
    }
    *keys = k;
    *vals = v;
    return n;
}

/* obj:save(path [, metadata]) -- parameters (values) to safetensors */
static int i_save(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    const char *path = rtL_checkcstr(L, 2, "path");
    const char **k, **v;
    int n = meta_arrays(L, 3, &k, &v);
    if (rt_instance_save(u->i, S(L)->ctx, path, n, k, v)) return rtL_fail(L);
    return 0;
}

static int i_load(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    if (rt_instance_load(u->i, S(L)->ctx, rtL_checkcstr(L, 2, "path"))) return rtL_fail(L);
    lua_settop(L, 1);
    return 1;
}

/* student:forward(x [, train]) -> logits (valid until the next forward) */
static int s_forward(lua_State *L)
{
    linst *u = rtL_checkinst(L, 1, MT_STUDENT);
    rt_tensor *x = rtL_checktensor(L, 2), *out = NULL;
    int train = lua_toboolean(L, 3);
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "train");
        train = lua_toboolean(L, -1);
    }
    if (rt_student_forward(u->i, S(L)->ctx, x, train, &out)) return rtL_fail(L);
    rtL_pushborrowed(L, out);
    return 1;
}

/* student:backward(grad_out [, taps {name = tensor}] [, want_grad_in]) */
static int s_backward(lua_State *L)
{
    linst *u = rtL_checkinst(L, 1, MT_STUDENT);
    rt_tensor *g = rtL_checktensor(L, 2);
    int want = lua_toboolean(L, 4);
    rt_tap taps[32];
    int nt = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (nt == 32) luaL_error(L, "at most 32 taps");
            if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "taps map feature names to tensors");
            taps[nt].name = rtL_tocstr(L, -2, "tap name");
            taps[nt].grad = rtL_checktensor(L, -1);
            nt++;
            lua_pop(L, 1);
        }
    }
    rt_tensor *gin = NULL;
    if (rt_student_backward(u->i, S(L)->ctx, g, taps, nt, want ? &gin : NULL)) return rtL_fail(L);
    if (want) {
        rtL_pushborrowed(L, gin);
        return 1;
    }
    return 0;
}

static int s_zero_grad(lua_State *L)
{
    rt_student_zero_grad(rtL_checkinst(L, 1, MT_STUDENT)->i);
    return 0;
}

/* teacher:forward(x [, ids]) -> logits, finite: a NaN or inf is an error
 * naming the sample and the class.  ids: the batch's dataset rows (0-based,
 * i32 as the batcher yields them, or i64), for teachers that look rows up. */
static int te_forward(lua_State *L)
{
    linst *u = rtL_checkinst(L, 1, MT_TEACHER);
    rt_tensor *x = rtL_checktensor(L, 2), *ids = rtL_opttensor(L, 3);
    const rt_tensor *ids_named = ids; /* as given: names samples in errors */
    if (ids && ids->dtype == RT_DTYPE_I32) { /* widened into a GC-owned i64 copy */
        if (ids->ndim != 1 || !rt_is_contiguous(ids)) luaL_argerror(L, 3, "sample ids must be a contiguous [N]");
        ltensor *w = rtL_newtensor(L);
        if (!(w->t = rt_tensor_new(S(L)->ctx, RT_DTYPE_I64, 1, ids->shape))) return rtL_fail(L);
        for (int64_t k = 0; k < ids->shape[0]; k++) rt_i64(w->t)[k] = rt_i32(ids)[k];
        ids = w->t;
    }
    rt_signal sig;
    if (rt_teacher_forward_ids(u->i, S(L)->ctx, x, ids, &sig)) return rtL_fail(L);
    if (!sig.logits) luaL_error(L, "teacher '%s' gives a top-k signal; not yet supported in Lua",
                                rt_instance_desc(u->i)->name);
    char what[160];
    snprintf(what, sizeof what, "teacher '%s': its logit", rt_instance_desc(u->i)->name);
    rtL_check_rows(L, sig.logits, what, ids_named);
    rtL_pushborrowed(L, sig.logits);
    return 1;
}

/* The loss arguments (s, t, y [, epoch, step]) at 2..6. */
static void loss_args(lua_State *L, rt_loss_in *in, rt_signal *sig)
{
    memset(in, 0, sizeof *in);
    memset(sig, 0, sizeof *sig);
    in->student = rtL_checktensor(L, 2);
    if (!lua_isnoneornil(L, 3)) {
        sig->logits = rtL_checktensor(L, 3);
        in->teacher = sig;
    }
    in->target = rtL_opttensor(L, 4);
    in->epoch = luaL_optinteger(L, 5, 0);
    in->step = luaL_optinteger(L, 6, 0);
}

/* loss:forward(s, t, y [, epoch, step]) -> number */
static int lo_forward(lua_State *L)
{
    if (lua_istable(L, 2)) return rtL_loss_call_table(L, 0); /* ABI 2.0: mask, norm, features */
    linst *u = rtL_checkinst(L, 1, MT_LOSS);
    rt_loss_in in;
    rt_signal sig;
    loss_args(L, &in, &sig);
    double v;
    if (rt_loss_forward(u->i, S(L)->ctx, &in, &v)) return rtL_fail(L);
    lua_pushnumber(L, v);
    return 1;
}

/* loss:backward(s, t, y [, epoch, step [, scale [, grad]]]) -> grad
 * Without grad: a buffer owned by the loss, zeroed, then filled (reused
 * across calls).  With grad: accumulated into it (several loss terms). */
static int lo_backward(lua_State *L)
{
    if (lua_istable(L, 2)) return rtL_loss_call_table(L, 1);
    linst *u = rtL_checkinst(L, 1, MT_LOSS);
    rt_loss_in in;
    rt_signal sig;
    loss_args(L, &in, &sig);
    float scale = (float)luaL_optnumber(L, 7, 1.0);
    rt_tensor *g = rtL_opttensor(L, 8);
    if (!g) {
        if (rt_tensor_ensure(S(L)->ctx, &u->grad, RT_DTYPE_F32, in.student->ndim, in.student->shape))
            return rtL_fail(L);
        memset(u->grad->data, 0, rt_tensor_nbytes(u->grad));
        g = u->grad;
    }
    if (rt_loss_backward(u->i, S(L)->ctx, &in, scale, g)) return rtL_fail(L);
    rtL_pushborrowed(L, g);
    return 1;
}

static int lo_set(lua_State *L)
{
    linst *u = rtL_checkinst(L, 1, MT_LOSS);
    if (lua_type(L, 3) != LUA_TNUMBER) return rtL_loss_set_value(L); /* booleans, strings */
    if (rt_loss_set(u->i, S(L)->ctx, rtL_checkcstr(L, 2, "option name"), luaL_checknumber(L, 3))) return rtL_fail(L);
    lua_settop(L, 1);
    return 1;
}

/* loss:needs() -> needs_teacher, needs_target */
static int lo_needs(lua_State *L)
{
    linst *u = rtL_checkinst(L, 1, MT_LOSS);
    unsigned n = rt_instance_desc(u->i)->loss->needs;
    lua_pushboolean(L, (n & RT_NEEDS_TEACHER) != 0);
    lua_pushboolean(L, (n & RT_NEEDS_TARGET) != 0);
    return 2;
}

/* Copies a live instance's parameter values into another's (same names
 * and shapes): rt.copy_parameters(dst, src). */
static int l_copy_parameters(lua_State *L)
{
    linst *d = rtL_checkany(L, 1), *s = rtL_checkany(L, 2);
    int nd, ns;
    rt_param *pd = push_params(L, d->i, &nd), *ps = push_params(L, s->i, &ns);
    if (nd != ns) luaL_error(L, "copy_parameters: %d parameters vs %d", nd, ns);
    for (int k = 0; k < nd; k++) {
        if (strcmp(pd[k].name, ps[k].name)) luaL_error(L, "copy_parameters: '%s' vs '%s'", pd[k].name, ps[k].name);
        if (rt_tensor_copy(S(L)->ctx, pd[k].value, ps[k].value)) return rtL_fail(L);
    }
    return 0;
}

/* ------------------------------------------------------------- plugins */

static int l_plugins(lua_State *L)
{
    rt_registry *r = rtL_registry(L);
    int n = rt_registry_count(r);
    lua_createtable(L, n, 0);
    for (int k = 0; k < n; k++) {
        const rt_plugin_desc *d = rt_registry_at(r, k);
        lua_createtable(L, 0, 6);
        lua_pushstring(L, rt_kind_name(d->kind));
        lua_setfield(L, -2, "kind");
        lua_pushstring(L, d->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, d->version);
        lua_setfield(L, -2, "version");
        lua_pushstring(L, d->summary);
        lua_setfield(L, -2, "summary");
        lua_pushstring(L, rt_registry_path_at(r, k));
        lua_setfield(L, -2, "path");
        lua_pushfstring(L, "%d.%d", (int)d->abi_major, (int)d->abi_minor);
        lua_setfield(L, -2, "abi");
        lua_rawseti(L, -2, k + 1);
    }
    return 1;
}

static int kind_from_string(lua_State *L, int i)
{
    static const char *const names[] = {"teacher", "loss", "student", NULL};
    return luaL_checkoption(L, i, NULL, names) + 1;
}

/* rt.plugin_help(kind, name) -> text */
static int l_plugin_help(lua_State *L)
{
    rt_kind k = (rt_kind)kind_from_string(L, 1);
    const char *name = rtL_checkcstr(L, 2, "plugin name");
    const rt_plugin_desc *d = rt_registry_find(rtL_registry(L), S(L)->ctx, k, name);
    if (!d) return rtL_fail(L);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return luaL_error(L, "out of memory");
    rt_options_print_help(d, f);
    fclose(f);
    lua_pushlstring(L, text, len); /* may raise on OOM: free first is impossible; */
    free(text);                    /* lua_pushlstring copies before we free */
    return 1;
}

static int l_load_plugin(lua_State *L)
{
    if (rt_registry_load(rtL_registry(L), S(L)->ctx, rtL_checkcstr(L, 1, "path"))) return rtL_fail(L);
    return 0;
}

static int l_plugin_dir(lua_State *L)
{
    lua_pushstring(L, rt_builtin_plugin_dir());
    return 1;
}

/* ----------------------------------------------------------- optimizers */

typedef struct loptim {
    rt_optim *o;
} loptim;

static int o_gc(lua_State *L)
{
    loptim *u = luaL_checkudata(L, 1, MT_OPTIM);
    rt_optim_free(u->o);
    u->o = NULL;
    return 0;
}

static float field_num(lua_State *L, int t, const char *k, float def)
{
    lua_getfield(L, t, k);
    float v = def;
    if (!lua_isnil(L, -1)) {
        int ok;
        v = (float)lua_tonumberx(L, -1, &ok);
        if (!ok) luaL_error(L, "optimizer: '%s' must be a number", k);
    }
    lua_pop(L, 1);
    return v;
}

/* rt.optimizer(kind, {lr=, ...}) with kind "sgd" | "adam" | "adamw" */
static int l_optimizer(lua_State *L)
{
    static const char *const kinds[] = {"sgd", "adam", "adamw", NULL};
    int k = luaL_checkoption(L, 1, NULL, kinds);
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const known[] = {"lr", "momentum", "dampening", "nesterov", "weight_decay", "betas", "eps", NULL};
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        int ok = 0;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (int j = 0; known[j]; j++) ok |= !strcmp(known[j], lua_tostring(L, -2));
        if (!ok) luaL_error(L, "optimizer %s: unknown option '%s'", kinds[k], luaL_tolstring(L, -2, NULL));
        lua_pop(L, 1);
    }
    rt_optim_cfg c = {0};
    c.kind = k == 0 ? RT_OPTIM_SGD : RT_OPTIM_ADAM;
    c.lr = field_num(L, 2, "lr", k == 0 ? 0.01f : 1e-3f);
    c.weight_decay = field_num(L, 2, "weight_decay", k == 2 ? 0.01f : 0.0f);
    c.momentum = field_num(L, 2, "momentum", 0);
    c.dampening = field_num(L, 2, "dampening", 0);
    lua_getfield(L, 2, "nesterov");
    c.nesterov = lua_toboolean(L, -1);
    lua_pop(L, 1);
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    lua_getfield(L, 2, "betas");
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        c.beta1 = (float)luaL_checknumber(L, -2);
        c.beta2 = (float)luaL_checknumber(L, -1);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    c.eps = field_num(L, 2, "eps", 1e-8f);
    c.decoupled = k == 2;
    loptim *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->o = NULL;
    luaL_setmetatable(L, MT_OPTIM);
    if (!(u->o = rt_optim_new(S(L)->ctx, &c))) return rtL_fail(L);
    return 1;
}

static loptim *check_optim(lua_State *L, int i)
{
    loptim *u = luaL_checkudata(L, i, MT_OPTIM);
    if (!u->o) luaL_argerror(L, i, "optimizer is closed");
    return u;
}

/* opt:step(student [, lr]): one update, then the student's zero_grad. */
static int o_step(lua_State *L)
{
    loptim *u = check_optim(L, 1);
    linst *s = rtL_checkinst(L, 2, MT_STUDENT);
    float lr = (float)luaL_optnumber(L, 3, rt_optim_config(u->o)->lr);
    int n;
    /* extras (arg 4): { {prefix, loss}, ... } whose own parameters train too */
    rt_param *p = lua_isnoneornil(L, 4) ? push_params(L, s->i, &n) : rtL_run_params(L, s->i, 4, &n);
    if (rt_optim_step(u->o, S(L)->ctx, p, n, lr)) return rtL_fail(L);
    rt_student_zero_grad(s->i);
    for (lua_Integer k = 1; !lua_isnoneornil(L, 4) && k <= luaL_len(L, 4); k++) {
        lua_rawgeti(L, 4, k);
        lua_rawgeti(L, -1, 2);
        rt_loss_zero_grad(rtL_checkinst(L, -1, MT_LOSS)->i);
        lua_pop(L, 2);
    }
    return 0;
}

static int o_lr(lua_State *L)
{
    lua_pushnumber(L, rt_optim_config(check_optim(L, 1)->o)->lr);
    return 1;
}

/* A float setting as the shortest decimal that reads back as the same
 * float: 1e-3f is 0.001 in a manifest, not 0.0010000000474974513. */
static void push_float(lua_State *L, float v)
{
    char b[32];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(b, sizeof b, "%.*g", digits, (double)v);
        if (strtof(b, NULL) == v) break;
    }
    lua_pushnumber(L, strtod(b, NULL));
}

/* opt:config() -> { kind = "sgd" | "adam" | "adamw", lr, weight_decay,
 *   betas = {b1, b2}, eps (Adam) | momentum, dampening, nesterov (SGD) }:
 * every setting in force, defaults included (for the manifest). */
static int o_config(lua_State *L)
{
    const rt_optim_cfg *c = rt_optim_config(check_optim(L, 1)->o);
    int sgd = c->kind == RT_OPTIM_SGD;
    lua_createtable(L, 0, 6);
    lua_pushstring(L, sgd ? "sgd" : c->decoupled ? "adamw" : "adam");
    lua_setfield(L, -2, "kind");
    push_float(L, c->lr);
    lua_setfield(L, -2, "lr");
    push_float(L, c->weight_decay);
    lua_setfield(L, -2, "weight_decay");
    if (sgd) {
        push_float(L, c->momentum);
        lua_setfield(L, -2, "momentum");
        push_float(L, c->dampening);
        lua_setfield(L, -2, "dampening");
        lua_pushboolean(L, c->nesterov);
        lua_setfield(L, -2, "nesterov");
    } else {
        lua_createtable(L, 2, 0);
        push_float(L, c->beta1);
        lua_rawseti(L, -2, 1);
        push_float(L, c->beta2);
        lua_rawseti(L, -2, 2);
        lua_setfield(L, -2, "betas");
        push_float(L, c->eps);
        lua_setfield(L, -2, "eps");
        lua_pushstring(L, c->decoupled ? "decoupled (p -= lr * wd * p)" : "L2 in the gradient");
        lua_setfield(L, -2, "weight_decay_mode");
    }
    return 1;
}

static int o_steps(lua_State *L)
{
    lua_pushinteger(L, rt_optim_steps(check_optim(L, 1)->o));
    return 1;
}

/* opt:state() -> { {name=, value=}, ... }, steps */
static int o_state(lua_State *L)
{
    loptim *u = check_optim(L, 1);
    int n = rt_optim_state_count(u->o);
    lua_createtable(L, n, 0);
    for (int k = 0; k < n; k++) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, rt_optim_state_name(u->o, k));
        lua_setfield(L, -2, "name");
        rtL_pushborrowed(L, rt_optim_state_tensor(u->o, k));
        lua_setfield(L, -2, "value");
        lua_rawseti(L, -2, k + 1);
    }
    lua_pushinteger(L, rt_optim_steps(u->o));
    return 2;
}

typedef struct lookup_ud {
    lua_State *L;
    int table;
} lookup_ud;

/* Looks a name up in the Lua table of tensors (no raising: a non-tensor
 * is reported as missing). */
static rt_tensor *lookup_tensor(void *ud, const char *name)
{
    lookup_ud *l = ud;
    lua_getfield(l->L, l->table, name);
    ltensor *t = luaL_testudata(l->L, -1, MT_TENSOR);
    lua_pop(l->L, 1);
    return t ? t->t : NULL;
}

/* opt:restore(student, {name = tensor}, steps) */
static int o_restore(lua_State *L)
{
    loptim *u = check_optim(L, 1);
    linst *s = rtL_checkinst(L, 2, MT_STUDENT);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer steps = luaL_checkinteger(L, 4);
    int n;
    rt_param *p = lua_isnoneornil(L, 5) ? push_params(L, s->i, &n) : rtL_run_params(L, s->i, 5, &n);
    lookup_ud ud = {L, 3};
    if (rt_optim_restore(u->o, S(L)->ctx, p, n, steps, lookup_tensor, &ud)) return rtL_fail(L);
    return 0;
}

/* An integer field in [0, 2^53] (a plain cast of a larger or non-finite
 * number to int64 is undefined). */
static int64_t field_count(lua_State *L, int t, const char *k, int64_t def)
{
    lua_getfield(L, t, k);
    int64_t v = def;
    if (!lua_isnil(L, -1)) {
        int ok;
        lua_Number x = lua_tonumberx(L, -1, &ok);
        if (!ok || !(x >= 0 && x <= 9007199254740992.0) || x != floor(x))
            luaL_error(L, "schedule: '%s' must be an integer in [0, 2^53]", k);
        v = (int64_t)x;
    }
    lua_pop(L, 1);
    return v;
}

/* rt.schedule_lr({kind=, lr=, min_lr=, gamma=, step_size=, warmup=, total=}, step) */
static int l_schedule_lr(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer step = luaL_checkinteger(L, 2);
    static const char *const kinds[] = {"constant", "step", "cosine", NULL};
    lua_getfield(L, 1, "kind");
    int k = luaL_checkoption(L, -1, "constant", kinds);
    lua_pop(L, 1);
    rt_schedule s = {0};
    s.kind = (rt_sched_kind)(k + 1);
    s.lr = field_num(L, 1, "lr", 1e-3f);
    s.min_lr = field_num(L, 1, "min_lr", 0);
    s.gamma = field_num(L, 1, "gamma", 0.1f);
    s.step_size = field_count(L, 1, "step_size", 1);
    s.warmup = field_count(L, 1, "warmup", 0);
    s.total = field_count(L, 1, "total", 1);
    lua_pushnumber(L, rt_schedule_lr(&s, step));
    return 1;
}

/* -------------------------------------------------------------- datasets */

typedef struct ldataset {
    rt_dataset *d;
} ldataset;

static int d_gc(lua_State *L)
{
    ldataset *u = luaL_checkudata(L, 1, MT_DATASET);
    rt_dataset_free(u->d);
    u->d = NULL;
    return 0;
}

static ldataset *check_dataset(lua_State *L, int i)
{
    ldataset *u = luaL_checkudata(L, i, MT_DATASET);
    if (!u->d) luaL_argerror(L, i, "dataset is closed");
    return u;
}

/* rt.dataset(x [, y]) */
static int l_dataset(lua_State *L)
{
    rt_tensor *x = rtL_checktensor(L, 1), *y = rtL_opttensor(L, 2);
    ldataset *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->d = NULL;
    luaL_setmetatable(L, MT_DATASET);
    if (!(u->d = rt_dataset_new(S(L)->ctx, x, y))) return rtL_fail(L);
    return 1;
}

static int d_size(lua_State *L)
{
    lua_pushinteger(L, rt_dataset_size(check_dataset(L, 1)->d));
    return 1;
}

static int d_x(lua_State *L)
{
    rtL_pushborrowed(L, rt_dataset_x(check_dataset(L, 1)->d));
    return 1;
}

static int d_y(lua_State *L)
{
    rtL_pushborrowed(L, rt_dataset_y(check_dataset(L, 1)->d));
    return 1;
}

/* ds:gather(idx_i32 [, xout [, yout]]) -> x, y: rows idx (0-based sample
 * ids, as the batch iterator returns them) into xout/yout or new tensors. */
static int d_gather(lua_State *L)
{
    ldataset *u = check_dataset(L, 1);
    rt_tensor *idx = rtL_checktensor(L, 2);
    if (idx->dtype != RT_DTYPE_I32 || idx->ndim != 1 || !rt_is_contiguous(idx))
        luaL_argerror(L, 2, "indices must be a contiguous i32 [B] tensor");
    rt_tensor *xo = rtL_opttensor(L, 3), *yo = rtL_opttensor(L, 4);
    int64_t B = idx->shape[0];
    rt_tensor *x = rt_dataset_x(u->d), *y = rt_dataset_y(u->d);
    if (!xo) {
        int64_t shape[RT_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        shape[0] = B;
        ltensor *t = rtL_newtensor(L);
        if (!(t->t = rt_tensor_new(S(L)->ctx, x->dtype, x->ndim, shape))) return rtL_fail(L);
        xo = t->t;
    } else {
        lua_pushvalue(L, 3);
    }
    if (y && !yo) {
        ltensor *t = rtL_newtensor(L);
        if (!(t->t = rt_tensor_new(S(L)->ctx, RT_DTYPE_I32, 1, &B))) return rtL_fail(L);
        yo = t->t;
    } else if (yo) {
        lua_pushvalue(L, 4);
    } else {
        lua_pushnil(L);
    }
    int64_t *ii = lua_newuserdatauv(L, sizeof(int64_t) * (size_t)(B ? B : 1), 0);
    for (int64_t k = 0; k < B; k++) ii[k] = rt_i32(idx)[k];
    lua_pop(L, 1);
    if (rt_dataset_gather(u->d, S(L)->ctx, ii, B, xo, y ? yo : NULL)) return rtL_fail(L);
    return 2;
}

/* The batch iterator's state.  The permutation lives in the same
 * userdata; x/y/idx buffers are reused across batches. */
typedef struct batcher {
    rt_dataset *d; /* borrowed: the dataset userdata is its uservalue */
    int64_t n, bs, pos;
    int drop_last;
    int aug, aflip;          /* augment = {...}: crop with padding apad, flip */
    int64_t aC, aH, aW, apad;
    rt_rng arng;             /* augmentation stream (seed, epoch) */
    rt_tensor *xb, *yb, *ib; /* [bs, ...], [bs], [bs] i32 sample ids */
    int64_t perm[];
} batcher;

static int b_gc(lua_State *L)
{
    batcher *b = luaL_checkudata(L, 1, MT_BATCHER);
    rt_tensor_release(b->xb);
    rt_tensor_release(b->yb);
    rt_tensor_release(b->ib);
    b->xb = b->yb = b->ib = NULL;
    return 0;
}

/* The iterator function: returns x, y, idx or nothing at the end.  The
 * tensors are reused by the next call. */
static int b_next(lua_State *L)
{
    batcher *b = luaL_checkudata(L, lua_upvalueindex(2), MT_BATCHER);
    rtL_state *st = S(L);
    int64_t left = b->n - b->pos;
    if (left <= 0 || (b->drop_last && left < b->bs)) return 0;
    int64_t B = left < b->bs ? left : b->bs;
    if (rt_dataset_gather(b->d, st->ctx, b->perm + b->pos, B, b->xb, b->yb)) return rtL_fail(L);
    if (b->aug && rt_augment_crop_flip(st->ctx, rt_f32(b->xb), B, b->aC, b->aH, b->aW, b->apad, b->aflip, &b->arng))
        return rtL_fail(L);
    int32_t *ids = rt_i32(b->ib);
    for (int64_t k = 0; k < B; k++) ids[k] = (int32_t)b->perm[b->pos + k];
    b->pos += B;
    if (B == b->bs) {
        rtL_pushborrowed(L, b->xb);
        rtL_pushborrowed(L, b->yb);
        rtL_pushborrowed(L, b->ib);
        return 3;
    }
    /* The last, short batch: views of the first B rows. */
    rt_tensor *v[3] = {b->xb, b->yb, b->ib};
    for (int k = 0; k < 3; k++) {
        if (!v[k]) {
            lua_pushnil(L);
            continue;
        }
        ltensor *u = rtL_newtensor(L);
        if (!(u->t = rt_tensor_narrow(st->ctx, v[k], 0, 0, B))) return rtL_fail(L);
    }
    return 3;
}

/* ds:batches(size [, {shuffle=, seed=, epoch=, drop_last=, augment=}]) -> iterator
 * Order: a permutation drawn from the stream (seed, epoch), so epoch e
 * has the same order in every run and after a resume.
 * augment = {shape = {C, H, W}, pad = 4, flip = true}: each batch's images
 * (f32, C H W values per sample) get a random crop with zero padding and a
 * horizontal flip (rt_augment_crop_flip), drawn from their own stream
 * (seed, epoch): reproducible, and the shuffle's draws are unchanged. */
static int d_batches(lua_State *L)
{
    ldataset *u = check_dataset(L, 1);
    lua_Integer bs = luaL_checkinteger(L, 2);
    luaL_argcheck(L, bs >= 1, 2, "batch size must be >= 1");
    int shuffle = 0, drop_last = 0, aug_index = 0;
    lua_Integer seed = 0, epoch = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_getfield(L, 3, "shuffle");
        shuffle = lua_toboolean(L, -1);
        lua_getfield(L, 3, "drop_last");
        drop_last = lua_toboolean(L, -1);
        lua_getfield(L, 3, "seed");
        seed = luaL_optinteger(L, -1, 0);
        lua_getfield(L, 3, "epoch");
        epoch = luaL_optinteger(L, -1, 0);
        lua_pop(L, 4);
        lua_getfield(L, 3, "augment");
        if (!lua_isnil(L, -1)) aug_index = lua_gettop(L);
        else lua_pop(L, 1);
    }
    int64_t n = rt_dataset_size(u->d);
    if (bs > n && n > 0) bs = n;
    int64_t aug[5] = {0, 0, 0, 4, 1}; /* C, H, W, pad, flip */
    if (aug_index) {
        luaL_argcheck(L, lua_istable(L, aug_index), 3, "augment must be a table {shape = {C, H, W}, pad =, flip =}");
        lua_getfield(L, aug_index, "shape");
        int ok = lua_istable(L, -1) && luaL_len(L, -1) == 3;
        for (int k = 0; ok && k < 3; k++) {
            lua_geti(L, -1, k + 1);
            aug[k] = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
            ok = aug[k] >= 1;
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        if (!ok) return luaL_error(L, "batches: augment.shape must be {C, H, W}, three integers >= 1");
        lua_getfield(L, aug_index, "pad");
        aug[3] = luaL_optinteger(L, -1, 4);
        lua_getfield(L, aug_index, "flip");
        aug[4] = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
        lua_pop(L, 2);
        rt_tensor *x0 = rt_dataset_x(u->d);
        if (x0->dtype != RT_DTYPE_F32 || rt_row_size(x0) != aug[0] * aug[1] * aug[2])
            return luaL_error(L, "batches: augment.shape {%d, %d, %d} needs f32 samples of %d values, the data has %s "
                              "samples of %d", (int)aug[0], (int)aug[1], (int)aug[2], (int)(aug[0] * aug[1] * aug[2]),
                              x0->dtype == RT_DTYPE_F32 ? "f32" : "non-f32", (int)rt_row_size(x0));
        if (aug[3] < 0 || aug[3] > aug[1] || aug[3] > aug[2])
            return luaL_error(L, "batches: augment.pad = %d must lie in [0, %d] (the image's height and width)",
                              (int)aug[3], (int)(aug[1] < aug[2] ? aug[1] : aug[2]));
    }
    batcher *b = lua_newuserdatauv(L, sizeof *b + sizeof(int64_t) * (size_t)(n ? n : 1), 1);
    memset(b, 0, sizeof *b);
    if (aug_index) {
        b->aug = 1;
        b->aC = aug[0], b->aH = aug[1], b->aW = aug[2], b->apad = aug[3], b->aflip = (int)aug[4];
        rt_rng_seed(&b->arng, (uint64_t)seed, 0x6175676dull + (uint64_t)epoch); /* "augm" + epoch */
    }
    luaL_setmetatable(L, MT_BATCHER);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1); /* keeps the dataset alive */
    b->d = u->d;
    b->n = n;
    b->bs = bs;
    b->drop_last = drop_last;
    if (shuffle) {
        rt_rng r;
        rt_rng_seed(&r, (uint64_t)seed, 0x6261746368ull + (uint64_t)epoch);
        rt_rng_permutation(&r, b->perm, n);
    } else {
        for (int64_t k = 0; k < n; k++) b->perm[k] = k;
    }
    rt_tensor *x = rt_dataset_x(u->d), *y = rt_dataset_y(u->d);
    int64_t shape[RT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = bs;
    rt_ctx *ctx = S(L)->ctx;
    int64_t bsz = bs;
    if (!(b->xb = rt_tensor_new(ctx, x->dtype, x->ndim, shape)) ||
        (y && !(b->yb = rt_tensor_new(ctx, RT_DTYPE_I32, 1, &bsz))) ||
        !(b->ib = rt_tensor_new(ctx, RT_DTYPE_I32, 1, &bsz)))
        return rtL_fail(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, -2);
    lua_pushcclosure(L, b_next, 2);
    return 1;
}

/* ------------------------------------------------------------ files, io */

/* rt.idx_read(path [, dtype [, scale]]) -> tensor */
static int l_idx_read(lua_State *L)
{
    const char *path = rtL_checkcstr(L, 1, "path");
    rt_dtype dt = rtL_checkdtype(L, 2, "f32");
    float scale = (float)luaL_optnumber(L, 3, 1.0);
    ltensor *u = rtL_newtensor(L);
    if (rt_idx_read(S(L)->ctx, path, dt, scale, &u->t)) return rtL_fail(L);
    return 1;
}

static void st_free(void *p) { rt_st_free(p); }

/* rt.load(path) -> tensors {name = Tensor}, metadata {k = v}, names {...};
 * every f32 tensor finite (the first NaN or inf is an error naming it) */
static int l_load(lua_State *L)
{
    const char *path = rtL_checkcstr(L, 1, "path");
    box *bx = box_new(L, st_free);
    if (rt_st_read(S(L)->ctx, path, (rt_st **)&bx->p)) return rtL_fail(L);
    rt_st *f = bx->p;
    if (rt_st_check_finite(S(L)->ctx, f, path)) return rtL_fail(L); /* weights enter finite */
    int n = rt_st_count(f);
    lua_createtable(L, 0, n);
    lua_createtable(L, 0, rt_st_meta_count(f));
    lua_createtable(L, n, 0);
    for (int k = 0; k < n; k++) {
        rtL_pushborrowed(L, rt_st_tensor(f, k));
        lua_setfield(L, -4, rt_st_name(f, k));
        lua_pushstring(L, rt_st_name(f, k));
        lua_rawseti(L, -2, k + 1);
    }
    for (int k = 0; k < rt_st_meta_count(f); k++) {
        lua_pushstring(L, rt_st_meta_value(f, k));
        lua_setfield(L, -3, rt_st_meta_key(f, k));
    }
    return 3;
}

/* rt.read_meta(path) -> metadata table (reads the header only) */
static int l_read_meta(lua_State *L)
{
    const char *path = rtL_checkcstr(L, 1, "path");
    box *bx = box_new(L, st_free);
    if (rt_st_read_meta(S(L)->ctx, path, (rt_st **)&bx->p)) return rtL_fail(L);
    rt_st *f = bx->p;
    lua_createtable(L, 0, rt_st_meta_count(f));
    for (int k = 0; k < rt_st_meta_count(f); k++) {
        lua_pushstring(L, rt_st_meta_value(f, k));
        lua_setfield(L, -2, rt_st_meta_key(f, k));
    }
    return 1;
}

/* rt.save(path, { {name, tensor}, ... } [, metadata]) -- atomic */
static int l_save(lua_State *L)
{
    const char *path = rtL_checkcstr(L, 1, "path");
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 3); /* metadata stays at 3 (nil if not given) under what is pushed below */
    int n = (int)lua_rawlen(L, 2);
    const char **names = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
    const rt_tensor **ts = lua_newuserdatauv(L, sizeof(rt_tensor *) * (size_t)(n + 1), 0);
    for (int k = 0; k < n; k++) {
        lua_rawgeti(L, 2, k + 1);
        if (!lua_istable(L, -1)) luaL_error(L, "save: entry %d must be {name, tensor}", k + 1);
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "save: entry %d has no name", k + 1);
        names[k] = rtL_tocstr(L, -2, "save: tensor name"); /* owned by the entry table */
        ts[k] = rtL_checktensor(L, -1);
        lua_pop(L, 3);
    }
    const char **mk, **mv;
    int nm = meta_arrays(L, 3, &mk, &mv);
    if (rt_st_write(S(L)->ctx, path, n, names, (const rt_tensor *const *)ts, nm, mk, mv)) return rtL_fail(L);
    return 0;
}

static int l_write_atomic(lua_State *L)
{
    size_t len;
    const char *path = rtL_checkcstr(L, 1, "path"), *data = luaL_checklstring(L, 2, &len);
    if (rt_write_atomic(S(L)->ctx, path, data, len)) return rtL_fail(L);
    return 0;
}

/* rt.sha256_file(path [, max_bytes [, max_seconds]]): regular files only;
 * the bounds (0: none) are for paths read from files. */
static int l_sha256_file(lua_State *L)
{
    char out[65];
    const char *path = rtL_checkcstr(L, 1, "path");
    lua_Integer max_bytes = luaL_optinteger(L, 2, 0);
    double max_seconds = (double)luaL_optnumber(L, 3, 0);
    luaL_argcheck(L, max_bytes >= 0, 2, "max_bytes must be >= 0");
    if (rt_sha256_file_bounded(S(L)->ctx, path, (uint64_t)max_bytes, max_seconds, out)) return rtL_fail(L);
    lua_pushstring(L, out);
    return 1;
}

static int l_sha256(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char out[65];
    rt_sha256_hex(s, len, out);
    lua_pushstring(L, out);
    return 1;
}

/* rt.mkdir(path): mkdir -p; true, or nil + message */
static int l_mkdir(lua_State *L)
{
    const char *p = rtL_checkcstr(L, 1, "path");
    luaL_Buffer b;
    size_t n = strlen(p);
    char *tmp = luaL_buffinitsize(L, &b, n + 1);
    memcpy(tmp, p, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == 0) {
            char c = tmp[i];
            tmp[i] = 0;
            if (mkdir(tmp, 0777) && errno != EEXIST) {
                lua_pushnil(L);
                lua_pushfstring(L, "mkdir %s: %s", tmp, strerror(errno));
                return 2;
            }
            tmp[i] = c;
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_exists(lua_State *L)
{
    struct stat st;
    lua_pushboolean(L, stat(rtL_checkcstr(L, 1, "path"), &st) == 0);
    return 1;
}

static int l_clock(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + ts.tv_nsec * 1e-9);
    return 1;
}

static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 2)));
    return 1;
}

/* ------------------------------------------------------------------ json */

static void json_free(void *p) { cJSON_Delete(p); }

static void push_json(lua_State *L, const cJSON *j)
{
    if (cJSON_IsNull(j)) lua_pushnil(L);
    else if (cJSON_IsBool(j)) lua_pushboolean(L, cJSON_IsTrue(j));
    else if (cJSON_IsNumber(j)) {
        double v = j->valuedouble;
        if (v == floor(v) && fabs(v) < 9007199254740992.0) lua_pushinteger(L, (lua_Integer)v);
        else lua_pushnumber(L, v);
    } else if (cJSON_IsString(j)) lua_pushstring(L, j->valuestring);
    else if (cJSON_IsArray(j)) {
        lua_createtable(L, cJSON_GetArraySize(j), 0);
        int k = 1;
        for (const cJSON *c = j->child; c; c = c->next) {
            push_json(L, c);
            lua_rawseti(L, -2, k++);
        }
    } else {
        lua_createtable(L, 0, 4);
        for (const cJSON *c = j->child; c; c = c->next) {
            push_json(L, c);
            lua_setfield(L, -2, c->string);
        }
    }
}

/* rt.json_decode(text) -> value */
static int l_json_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    box *bx = box_new(L, json_free);
    const char *end = NULL;
    bx->p = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    if (!bx->p) return luaL_error(L, "json: invalid at byte %d", end ? (int)(end - s) : -1);
    while (end && end < s + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')) end++;
    if (end && end < s + len) return luaL_error(L, "json: trailing data at byte %d", (int)(end - s));
    push_json(L, bx->p);
    return 1;
}

/* rt.json_encode(value) -> compact text (tables as in options; an empty
 * table is {}) */
static int l_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    if (lua_isnil(L, 1)) {
        lua_pushliteral(L, "null");
        return 1;
    }
    rtL_tojson(L, 1);
    return 1;
}

/* --------------------------------------------------------- misc globals */

static int l_set_threads(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 256, 1, "threads must be in 1..256");
    rt_set_threads((int)n);
    return 0;
}

static int l_threads(lua_State *L)
{
    lua_pushinteger(L, rt_get_threads());
    return 1;
}

static int l_blas_core(lua_State *L)
{
    lua_pushstring(L, rt_blas_core());
    return 1;
}

/* rt.seed(n): the training stream (dropout) */
static int l_seed(lua_State *L)
{
    rt_rng_seed(rt_ctx_rng(S(L)->ctx), (uint64_t)luaL_checkinteger(L, 1), 0x747261696eull);
    return 0;
}

/* rt.permutation(n, seed) -> {ids}: a permutation of 1..n drawn from its
 * own stream (seed, "split"), so it neither reads nor moves the training
 * stream; the same (n, seed) gives the same list on every machine. */
static int l_permutation(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1), seed = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0 && n <= INT32_MAX, 1, "n must be in [0, 2^31)");
    int64_t *perm = lua_newuserdatauv(L, sizeof(int64_t) * (size_t)(n ? n : 1), 0);
    rt_rng r;
    rt_rng_seed(&r, (uint64_t)seed, 0x73706c6974ull);
    rt_rng_permutation(&r, perm, (int64_t)n);
    lua_createtable(L, (int)n, 0);
    for (lua_Integer k = 0; k < n; k++) {
        lua_pushinteger(L, perm[k] + 1);
        lua_rawseti(L, -2, k + 1);
    }
    return 1;
}

static int l_rng_state(lua_State *L)
{
    char hex[65];
    rt_rng_to_hex(rt_ctx_rng(S(L)->ctx), hex);
    lua_pushstring(L, hex);
    return 1;
}

static int l_set_rng_state(lua_State *L)
{
    if (rt_rng_from_hex(rt_ctx_rng(S(L)->ctx), rtL_checkcstr(L, 1, "RNG state")))
        luaL_argerror(L, 1, "not an RNG state (64 hex digits)");
    return 0;
}

/* rt.count_correct(logits, y), rt.count_agree(a, b), rt.kl_sum(t, s [, T]) */
static int l_count_correct(lua_State *L)
{
    int64_t n = rt_count_correct(S(L)->ctx, rtL_checktensor(L, 1), rtL_checktensor(L, 2));
    if (n < 0) return rtL_fail(L);
    lua_pushinteger(L, n);
    return 1;
}

static int l_count_agree(lua_State *L)
{
    int64_t n = rt_count_agree(S(L)->ctx, rtL_checktensor(L, 1), rtL_checktensor(L, 2));
    if (n < 0) return rtL_fail(L);
    lua_pushinteger(L, n);
    return 1;
}

static int l_kl_sum(lua_State *L)
{
    double v = rt_kl_sum(S(L)->ctx, rtL_checktensor(L, 1), rtL_checktensor(L, 2), (float)luaL_optnumber(L, 3, 1.0));
    if (v < 0) return rtL_fail(L);
    lua_pushnumber(L, v);
    return 1;
}

/* rt.closest(name, {names...}) -> the closest name if close enough, or nil
 * (the did-you-mean of option and plugin errors). */
static int l_closest(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)lua_rawlen(L, 2);
    const char **names = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
    for (int k = 0; k < n; k++) {
        lua_rawgeti(L, 2, k + 1);
        names[k] = lua_tostring(L, -1); /* anchored by the table */
        lua_pop(L, 1);
        if (!names[k]) return luaL_argerror(L, 2, "names must be strings");
    }
    const char *best = rt_closest_name(name, names, n);
    if (best) lua_pushstring(L, best);
    else lua_pushnil(L);
    return 1;
}

/* ---------------------------------------------------------------- open */

void rtL_setfuncs(lua_State *L, const luaL_Reg *l)
{
    lua_getfield(L, LUA_REGISTRYINDEX, MT_STATE);
    luaL_setfuncs(L, l, 1);
}

void rtL_add_methods(lua_State *L, const char *mt, const luaL_Reg *l)
{
    luaL_getmetatable(L, mt);
    lua_getfield(L, -1, "__index");
    rtL_setfuncs(L, l);
    lua_pop(L, 2);
}

static int state_gc(lua_State *L)
{
    /* Not luaL_checkudata: registry[MT_STATE] holds the state itself (the
     * functions' upvalue), not this metatable, so the check would fail and
     * lua_close would leak the context and the registry.  Only this
     * metatable has this __gc, so the argument is always the state. */
    rtL_state *s = lua_touserdata(L, 1);
    rt_registry_free(s->reg);
    rt_ctx_free(s->ctx);
    s->reg = NULL;
    s->ctx = NULL;
    return 0;
}

static const luaL_Reg tensor_methods[] = {
    {"shape", t_shape},     {"size", t_size},         {"dim", t_dim},       {"numel", t_numel},
    {"nbytes", t_nbytes},   {"dtype", t_dtype},       {"get", t_get},       {"set", t_set},
    {"totable", t_totable}, {"fill", t_fill},         {"clone", t_clone},   {"copy", t_copy},
    {"narrow", t_narrow},   {"reshape", t_reshape},   {"sum", t_sum},       {"all_finite", t_all_finite},
    {"argmax", t_argmax},   {NULL, NULL}};

static const luaL_Reg common_methods[] = {{"name", i_name},
                                          {"kind", i_kind},
                                          {"version", i_version},
                                          {"options_json", i_options_json},
                                          {"parameters", i_parameters},
                                          {"param_count", i_param_count},
                                          {"flops", i_flops},
                                          {"feature", i_feature},
                                          {"save", i_save},
                                          {"load", i_load},
                                          {NULL, NULL}};

static const luaL_Reg student_methods[] = {
    {"forward", s_forward}, {"backward", s_backward}, {"zero_grad", s_zero_grad}, {NULL, NULL}};
static const luaL_Reg teacher_methods[] = {{"forward", te_forward}, {NULL, NULL}};
static const luaL_Reg loss_methods[] = {
    {"forward", lo_forward}, {"backward", lo_backward}, {"set", lo_set}, {"needs", lo_needs}, {NULL, NULL}};
static const luaL_Reg optim_methods[] = {
    {"step", o_step}, {"lr", o_lr}, {"config", o_config}, {"steps", o_steps}, {"state", o_state}, {"restore", o_restore}, {NULL, NULL}};
static const luaL_Reg dataset_methods[] = {
    {"size", d_size}, {"x", d_x}, {"y", d_y}, {"gather", d_gather}, {"batches", d_batches}, {NULL, NULL}};

static const luaL_Reg functions[] = {
    {"tensor", l_tensor},
    {"zeros", l_zeros},
    {"full", l_full},
    {"student", l_student},
    {"teacher", l_teacher},
    {"loss", l_loss},
    {"copy_parameters", l_copy_parameters},
    {"plugins", l_plugins},
    {"plugin_help", l_plugin_help},
    {"load_plugin", l_load_plugin},
    {"plugin_dir", l_plugin_dir},
    {"optimizer", l_optimizer},
    {"schedule_lr", l_schedule_lr},
    {"dataset", l_dataset},
    {"idx_read", l_idx_read},
    {"load", l_load},
    {"read_meta", l_read_meta},
    {"save", l_save},
    {"write_atomic", l_write_atomic},
    {"sha256_file", l_sha256_file},
    {"sha256", l_sha256},
    {"mkdir", l_mkdir},
    {"exists", l_exists},
    {"clock", l_clock},
    {"isatty", l_isatty},
    {"json_decode", l_json_decode},
    {"json_encode", l_json_encode},
    {"set_threads", l_set_threads},
    {"threads", l_threads},
    {"blas_core", l_blas_core},
    {"seed", l_seed},
    {"rng_state", l_rng_state},
    {"set_rng_state", l_set_rng_state},
    {"permutation", l_permutation},
    {"count_correct", l_count_correct},
    {"count_agree", l_count_agree},
    {"kl_sum", l_kl_sum},
    {"closest", l_closest},
    {NULL, NULL}};

/* Creates metatable `name` with __index = a table of the given methods
 * (each a closure over the state at the top of the stack). */
static void new_class(lua_State *L, const char *name, const luaL_Reg *m1, const luaL_Reg *m2, lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    lua_pushvalue(L, -3);
    luaL_setfuncs(L, m1, 1);
    if (m2) {
        lua_pushvalue(L, -3);
        luaL_setfuncs(L, m2, 1);
    }
    lua_setfield(L, -2, "__index");
    if (gc) {
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__close");
    }
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

/* The embedded Lua library (the files of scripts/retort, generated into
 * lualib.c by embed.lua): runs each chunk with the module table. */
extern const struct rtL_chunk {
    const char *name;
    const char *code;
    size_t len;
} rtL_lua_chunks[];

int luaopen_retort(lua_State *L)
{
    luaL_checkversion(L);
    rtL_state *s = lua_newuserdatauv(L, sizeof *s, 1); /* user value: the module table */
    s->ctx = NULL;
    s->reg = NULL;
    s->plugins_loaded = 0;
    s->unbilled = 0;
    luaL_newmetatable(L, MT_STATE);
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    s->ctx = rt_ctx_new();
    s->reg = rt_registry_new();
    if (!s->ctx || !s->reg) return luaL_error(L, "retort: out of memory");
    rt_ctx_set_registry(s->ctx, s->reg);
    /* Keep the state alive as long as the Lua state. */
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, MT_STATE);
    /* The plugins load on first use (rtL_registry), not here: commands
     * that need none (info, report, compare, --help) run no plugin code. */

    new_class(L, MT_TENSOR, tensor_methods, NULL, t_gc);
    luaL_getmetatable(L, MT_TENSOR);
    lua_pushcfunction(L, t_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, t_len, 1);
    lua_setfield(L, -2, "__len");
    lua_pop(L, 1);
    new_class(L, MT_STUDENT, common_methods, student_methods, rtL_inst_gc);
    new_class(L, MT_TEACHER, common_methods, teacher_methods, rtL_inst_gc);
    new_class(L, MT_LOSS, common_methods, loss_methods, rtL_inst_gc);
    new_class(L, MT_OPTIM, optim_methods, NULL, o_gc);
    new_class(L, MT_DATASET, dataset_methods, NULL, d_gc);
    luaL_newmetatable(L, MT_BATCHER);
    lua_pushcfunction(L, b_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, MT_BOX);
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    lua_newtable(L); /* the module */
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, functions, 1);
    lua_pushliteral(L, RT_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushfstring(L, "%d.%d", RT_ABI_MAJOR, RT_ABI_MINOR);
    lua_setfield(L, -2, "abi");
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, -3, 1); /* the state's user value: where rtL_registry sets plugin_load_error */

    /* The binding's other files add their functions and methods. */
    rtL_open_tensor_ops(L);
    rtL_open_lua_loss(L);
    rtL_open_metrics(L);
    rtL_open_provenance(L);
    rtL_open_runfolder(L);
    rtL_open_finite(L);
    rtL_open_abi(L);

    /* Run the Lua library: each chunk receives the module table. */
    for (const struct rtL_chunk *c = rtL_lua_chunks; c->name; c++) {
        if (luaL_loadbufferx(L, c->code, c->len, c->name, "t")) return lua_error(L);
        lua_pushvalue(L, -2);
        lua_call(L, 1, 0);
    }
    return 1;
}
