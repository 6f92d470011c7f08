/*
 * lm_lua.c -- language-model data and generation for the Lua layer (issue
 * 11).
 *
 *   rt.text_load(path, {context = T [, windows = n, seed = 1, epoch = 0,
 *                val_fraction = 0.1, val_windows = n, skip_suffix = s,
 *                max_bytes = b]})
 *     -> { train_x, train_y, val_x, val_y ([n, T] i32 each; val_* nil
 *          without a validation split), files, bytes, train_tokens,
 *          val_tokens, vocab, tokenizer }
 *     Byte-level (rt_text.h): train has `windows` random windows drawn
 *     from (seed, epoch) (rt_text_epoch_rng, rt_text_batch); val the
 *     deterministic windows rt_text_windows (all of them, or the first
 *     val_windows).  x is a window's first T tokens, y the same shifted by
 *     one (the next tokens).
 *
 *   rt.generate_ids(student, ids, {max_tokens, temperature, top_k, top_p,
 *                   seed, cache}) -> { ids = {...}, cached, seconds }
 *     rt_generate (core/rt_generate.h); rt.generate (scripts/retort/lm.lua)
 *     wraps it with text.
 *
 *   rt.bytes_encode(s) -> {ids}, rt.bytes_decode({ids}) -> s
 */
#include <stdlib.h>
#include <string.h>

#include "rt_generate.h"
#include "rt_text.h"
#include "rtlua.h"

/* The layout of retort_lua.c's box (MT_BOX's __gc frees p with free). */
typedef struct lbox {
    void *p;
    void (*free)(void *);
} lbox;

static lbox *lbox_new(lua_State *L, void (*fr)(void *))
{
    lbox *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->p = NULL;
    b->free = fr;
    luaL_setmetatable(L, MT_BOX);
    return b;
}

static void text_free(void *p) { rt_text_free(p); }

static lua_Integer opt_int(lua_State *L, int t, const char *k, lua_Integer def)
{
    lua_getfield(L, t, k);
    lua_Integer v = def;
    if (!lua_isnil(L, -1)) {
        int ok;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok) luaL_error(L, "option '%s' must be an integer", k);
    }
    lua_pop(L, 1);
    return v;
}

static lua_Number opt_num(lua_State *L, int t, const char *k, lua_Number def)
{
    lua_getfield(L, t, k);
    lua_Number v = def;
    if (!lua_isnil(L, -1)) {
        if (!lua_isnumber(L, -1)) luaL_error(L, "option '%s' must be a number", k);
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

/* Pushes x [n, T] and y [n, T] from windows [n, T+1]. */
static void push_xy(lua_State *L, const int32_t *w, int64_t n, int64_t T)
{
    rt_ctx *ctx = rtL_S(L)->ctx;
    int64_t s[2] = {n, T};
    for (int k = 0; k < 2; k++) {
        ltensor *u = rtL_newtensor(L);
        if (!(u->t = rt_tensor_new(ctx, RT_DTYPE_I32, 2, s))) rtL_fail(L);
        rtL_account(L, u->t);
        for (int64_t i = 0; i < n; i++) memcpy(rt_i32(u->t) + i * T, w + i * (T + 1) + k, sizeof(int32_t) * (size_t)T);
    }
}

static int l_text_load(lua_State *L)
{
    const char *path = rtL_checkcstr(L, 1, "path");
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer T = opt_int(L, 2, "context", 0), nw = opt_int(L, 2, "windows", 0);
    lua_Integer seed = opt_int(L, 2, "seed", 1), epoch = opt_int(L, 2, "epoch", 0);
    lua_Integer vmax = opt_int(L, 2, "val_windows", 0), maxb = opt_int(L, 2, "max_bytes", 0);
    lua_Number vf = opt_num(L, 2, "val_fraction", 0.1);
    luaL_argcheck(L, T >= 1 && T <= 1 << 20, 2, "'context' must be in [1, 1048576]");
    luaL_argcheck(L, nw >= 0 && nw <= 1 << 24, 2, "'windows' must be in [0, 16777216]");
    luaL_argcheck(L, vmax >= 0, 2, "'val_windows' must be >= 0");
    lua_getfield(L, 2, "skip_suffix");
    const char *skip = lua_isnil(L, -1) ? NULL : rtL_tocstr(L, -1, "skip_suffix");
    rt_ctx *ctx = rtL_S(L)->ctx;
    lbox *b = lbox_new(L, text_free); /* owns the text from here */
    rt_text_opts to = {.val_fraction = vf, .max_bytes = maxb, .skip_suffix = skip};
    rt_text *d = NULL;
    if (rt_text_open(ctx, path, NULL, &to, &d)) return rtL_fail(L);
    b->p = d;
    lua_newtable(L);
    int res = lua_gettop(L);
    /* windows buffer in a box too */
    int64_t nv = rt_text_count(d, RT_TEXT_VAL) > T ? rt_text_windows_count(d, RT_TEXT_VAL, T) : 0;
    if (vmax && nv > vmax) nv = vmax;
    int64_t rows = nw > nv ? nw : nv;
    lbox *wb = lbox_new(L, free);
    if (rows && !(wb->p = malloc(sizeof(int32_t) * (size_t)(rows * (T + 1)))))
        return luaL_error(L, "rt.text_load: out of memory for %d windows", (int)rows);
    int32_t *w = wb->p;
    if (nw) {
        rt_rng r;
        rt_text_epoch_rng(&r, (uint64_t)seed, (uint64_t)epoch);
        if (rt_text_batch(d, ctx, RT_TEXT_TRAIN, nw, T, &r, w)) return rtL_fail(L);
        push_xy(L, w, nw, T);
        lua_setfield(L, res, "train_y");
        lua_setfield(L, res, "train_x");
    }
    if (nv) {
        if (rt_text_windows(d, ctx, RT_TEXT_VAL, 0, nv, T, w) < 0) return rtL_fail(L);
        push_xy(L, w, nv, T);
        lua_setfield(L, res, "val_y");
        lua_setfield(L, res, "val_x");
    }
    lua_pop(L, 1); /* the window box: collected */
    lua_pushinteger(L, rt_text_files(d));
    lua_setfield(L, res, "files");
    lua_pushinteger(L, rt_text_bytes(d));
    lua_setfield(L, res, "bytes");
    lua_pushinteger(L, rt_text_count(d, RT_TEXT_TRAIN));
    lua_setfield(L, res, "train_tokens");
    lua_pushinteger(L, rt_text_count(d, RT_TEXT_VAL));
    lua_setfield(L, res, "val_tokens");
    const rt_tokenizer *tok = rt_text_tokenizer(d);
    lua_pushinteger(L, tok->vocab_size(tok->self));
    lua_setfield(L, res, "vocab");
    lua_pushstring(L, tok->name(tok->self));
    lua_setfield(L, res, "tokenizer");
    return 1;
}

static int l_generate_ids(lua_State *L)
{
    linst *u = rtL_checkinst(L, 1, MT_STUDENT);
    luaL_checktype(L, 2, LUA_TTABLE);
    int top = lua_gettop(L);
    if (top < 3 || lua_isnil(L, 3)) {
        lua_settop(L, 2);
        lua_newtable(L);
    }
    luaL_checktype(L, 3, LUA_TTABLE);
    rt_gen_opts o = {
        .max_tokens = opt_int(L, 3, "max_tokens", 64),
        .temperature = (float)opt_num(L, 3, "temperature", 1.0),
        .top_k = opt_int(L, 3, "top_k", 0),
        .top_p = (float)opt_num(L, 3, "top_p", 1.0),
        .seed = (uint64_t)opt_int(L, 3, "seed", 1),
    };
    lua_getfield(L, 3, "cache");
    o.no_cache = !lua_isnil(L, -1) && !lua_toboolean(L, -1);
    lua_pop(L, 1);
    luaL_argcheck(L, o.max_tokens >= 0 && o.max_tokens <= 1 << 24, 3, "'max_tokens' must be in [0, 16777216]");
    lua_Integer np = (lua_Integer)lua_rawlen(L, 2);
    lbox *b = lbox_new(L, free);
    if (!(b->p = malloc(sizeof(int32_t) * (size_t)(np + o.max_tokens + 1))))
        return luaL_error(L, "rt.generate: out of memory");
    int32_t *ids = b->p, *out = ids + np;
    for (lua_Integer i = 0; i < np; i++) {
        lua_rawgeti(L, 2, i + 1);
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < INT32_MIN || v > INT32_MAX) return luaL_error(L, "prompt id %d is not an integer", (int)i + 1);
        ids[i] = (int32_t)v;
        lua_pop(L, 1);
    }
    rt_gen_stats st;
    if (rt_generate(u->i, rtL_S(L)->ctx, ids, np, &o, out, &st)) return rtL_fail(L);
    lua_createtable(L, 0, 3);
    lua_createtable(L, (int)o.max_tokens, 0);
    for (int64_t i = 0; i < o.max_tokens; i++) {
        lua_pushinteger(L, out[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "ids");
    lua_pushboolean(L, st.cached);
    lua_setfield(L, -2, "cached");
    lua_pushnumber(L, st.seconds);
    lua_setfield(L, -2, "seconds");
    return 1;
}

static int l_bytes_encode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushinteger(L, (unsigned char)s[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int l_bytes_decode(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_Buffer b;
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    luaL_buffinit(L, &b);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        lua_Integer v = lua_tointeger(L, -1);
        lua_pop(L, 1);
        if (v < 0 || v > 255) return luaL_error(L, "id %d at position %d is not a byte", (int)v, (int)i);
        luaL_addchar(&b, (char)v);
    }
    luaL_pushresult(&b);
    return 1;
}

void rtL_open_lm(lua_State *L)
{
    static const luaL_Reg f[] = {
        {"text_load", l_text_load},
        {"generate_ids", l_generate_ids},
        {"bytes_encode", l_bytes_encode},
        {"bytes_decode", l_bytes_decode},
        {NULL, NULL},
    };
    rtL_setfuncs(L, f);
}
