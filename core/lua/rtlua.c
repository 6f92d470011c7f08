/*
 * rtlua.c -- the helpers every file of the binding shares (rtlua.h):
 * the state, errors, boxes, tensor and instance userdata, argument
 * checks, options as JSON, registering functions.  Moved here from
 * retort_lua.c whole, so that the binding's files call down into this
 * one and it calls none of them: no call cycle (docs/architecture.md).
 * The rules at the top of retort_lua.c hold here.
 */
#include <lauxlib.h>
#include <lua.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int rtL_box_gc(lua_State *L)
{
    box *b = luaL_checkudata(L, 1, MT_BOX);
    if (b->p && b->free) b->free(b->p);
    b->p = NULL;
    return 0;
}

box *rtL_box_new(lua_State *L, void (*fr)(void *))
{
    box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->p = NULL;
    b->free = fr;
    luaL_setmetatable(L, MT_BOX);
    return b;
}

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

/* The string at stack index i (already known to be a string) for C, or a
 * Lua error naming what and where when it holds a NUL byte. */
const char *rtL_tocstr(lua_State *L, int i, const char *what)
{
    size_t n;
    const char *s = lua_tolstring(L, i, &n);
    if (strlen(s) != n) luaL_error(L, "%s contains a NUL byte at position %d", what, (int)strlen(s) + 1);
    return s;
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
    box *bx = rtL_box_new(L, sbuf_free);
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

/* Moved from retort_lua.c with its split by class: shared by its files. */

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

/* Creates metatable `name` with __index = a table of the given methods
 * (each a closure over the state). */
void rtL_new_class(lua_State *L, const char *name, const luaL_Reg *m1, const luaL_Reg *m2, lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    rtL_setfuncs(L, m1);
    if (m2) rtL_setfuncs(L, m2);
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

/* Pushes a GC-owned array of all of i's parameters (no fixed limit) and
 * returns it; *n gets the count. */
rt_param *rtL_push_params(lua_State *L, rt_instance *i, int *n)
{
    *n = rt_instance_param_count(i);
    rt_param *p = lua_newuserdatauv(L, sizeof(rt_param) * (size_t)(*n > 0 ? *n : 1), 0);
    int again = rt_instance_params(i, p, *n);
    if (again != *n)
        luaL_error(L, "%s '%s': reported %d parameters, then %d", rt_kind_name(rt_instance_desc(i)->kind),
                   rt_instance_desc(i)->name, *n, again);
    return p;
}

/* Metadata table at index i -> parallel key/value arrays in a GC-owned
 * userdata (pointers into Lua strings that stay on the stack/table). */
int rtL_meta_arrays(lua_State *L, int i, const char ***keys, const char ***vals)
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
