/*
 * provenance_lua.c -- what the manifests need from C: the weights' sha256
 * of a live model or of a table of tensors.
 *
 *   rt.weights_sha256(model)             student or teacher: its parameters
 *   rt.weights_sha256({name = tensor})   e.g. the tensors rt.load returned
 *   -> 64 hex chars (rt_params_sha256: names sorted, then each name,
 *      dtype, shape and the bytes; no file layout enters it)
 */
#include <stdlib.h>

#include "rtlua.h"

#define MAX_PARAMS 1024

static int l_weights_sha256(lua_State *L)
{
    const char **names = lua_newuserdatauv(L, sizeof(char *) * MAX_PARAMS, 0); /* GC-owned */
    const rt_tensor **ts = lua_newuserdatauv(L, sizeof(rt_tensor *) * MAX_PARAMS, 0);
    int n = 0;
    if (lua_istable(L, 1)) {
        lua_pushnil(L);
        while (lua_next(L, 1)) {
            if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "rt.weights_sha256: keys must be tensor names");
            if (n == MAX_PARAMS) luaL_error(L, "rt.weights_sha256: more than %d tensors", MAX_PARAMS);
            names[n] = lua_tostring(L, -2); /* anchored by the table at 1 */
            ts[n] = rtL_checktensor(L, -1);
            n++;
            lua_pop(L, 1);
        }
    } else {
        linst *u = rtL_checkany(L, 1);
        rt_param *p = lua_newuserdatauv(L, sizeof(rt_param) * MAX_PARAMS, 0);
        n = rt_instance_params(u->i, p, MAX_PARAMS);
        if (n > MAX_PARAMS) luaL_error(L, "rt.weights_sha256: more than %d parameters", MAX_PARAMS);
        for (int k = 0; k < n; k++) {
            names[k] = p[k].name;
            ts[k] = p[k].value;
        }
    }
    char out[65];
    if (rt_params_sha256(rtL_S(L)->ctx, n, names, ts, out)) return rtL_fail(L);
    lua_pushstring(L, out);
    return 1;
}

static const luaL_Reg functions[] = {{"weights_sha256", l_weights_sha256}, {NULL, NULL}};

void rtL_open_provenance(lua_State *L) { rtL_setfuncs(L, functions); }
