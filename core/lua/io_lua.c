/*
 * io_lua.c -- files: rt.idx_read, rt.load/read_meta/save (safetensors),
 * rt.write_atomic, rt.sha256_file/sha256, rt.mkdir, rt.exists.
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
static box *box_new(lua_State *L, void (*fr)(void *)) { return rtL_box_new(L, fr); }

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
    int nm = rtL_meta_arrays(L, 3, &mk, &mv);
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

static const luaL_Reg io_functions[] = {
    {"idx_read", l_idx_read},
    {"load", l_load},
    {"read_meta", l_read_meta},
    {"save", l_save},
    {"write_atomic", l_write_atomic},
    {"sha256_file", l_sha256_file},
    {"sha256", l_sha256},
    {"mkdir", l_mkdir},
    {"exists", l_exists},
    {NULL, NULL}};

/* The file functions (module table at the top). */
void rtL_open_io(lua_State *L) { rtL_setfuncs(L, io_functions); }
