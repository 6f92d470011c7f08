/*
 * runfolder_lua.c -- the run folder's guards for the Lua layer
 * (scripts/retort/run_folder.lua uses them):
 *
 *   rt.run_lock(dir)          -> a RunLock, or an error naming the holder's
 *                                pid; lock:release() (also __close and
 *                                __gc: a `local l <close>` frees it on error)
 *   rt.run_clean_temps(dir)   -> how many stale temp files were removed
 *   rt.append_file(path, s)   -> appends s whole, or raises and adds nothing
 */
#include "rtlua.h"

#define MT_RUNLOCK "retort.RunLock"

typedef struct lrunlock {
    rt_runlock *l;
} lrunlock;

static int l_run_lock(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    lrunlock *u = lua_newuserdatauv(L, sizeof *u, 0); /* exists before the lock: never leaks */
    u->l = NULL;
    luaL_setmetatable(L, MT_RUNLOCK);
    if (rt_runlock_acquire(rtL_S(L)->ctx, dir, &u->l)) return rtL_fail(L);
    return 1;
}

static int rl_release(lua_State *L)
{
    lrunlock *u = luaL_checkudata(L, 1, MT_RUNLOCK);
    rt_runlock_release(u->l);
    u->l = NULL;
    return 0;
}

static int rl_held(lua_State *L)
{
    lrunlock *u = luaL_checkudata(L, 1, MT_RUNLOCK);
    lua_pushboolean(L, u->l != NULL);
    return 1;
}

static int l_run_clean_temps(lua_State *L)
{
    int n;
    if (rt_run_clean_temps(rtL_S(L)->ctx, luaL_checkstring(L, 1), &n)) return rtL_fail(L);
    lua_pushinteger(L, n);
    return 1;
}

static int l_append_file(lua_State *L)
{
    size_t len;
    const char *path = luaL_checkstring(L, 1), *s = luaL_checklstring(L, 2, &len);
    if (rt_append_file(rtL_S(L)->ctx, path, s, len)) return rtL_fail(L);
    return 0;
}

static const luaL_Reg functions[] = {
    {"run_lock", l_run_lock}, {"run_clean_temps", l_run_clean_temps}, {"append_file", l_append_file}, {NULL, NULL}};

void rtL_open_runfolder(lua_State *L)
{
    luaL_newmetatable(L, MT_RUNLOCK);
    lua_newtable(L);
    lua_pushcfunction(L, rl_release);
    lua_setfield(L, -2, "release");
    lua_pushcfunction(L, rl_held);
    lua_setfield(L, -2, "held");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, rl_release);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, rl_release);
    lua_setfield(L, -2, "__close");
    lua_pushliteral(L, MT_RUNLOCK);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    rtL_setfuncs(L, functions);
}
