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
 *
 * This file is the module entry: luaopen_retort, the rt.* miscellany
 * (plugins, clock, JSON, threads, RNG, small metrics) and the opening of
 * each class's file, as Lua's linit.c opens its libraries: tensor_lua.c,
 * instance_lua.c, optim_lua.c, dataset_lua.c, io_lua.c, then the others.
 * The helpers every file shares are in rtlua.c.
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
static box *box_new(lua_State *L, void (*fr)(void *)) { return rtL_box_new(L, fr); }

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

/* ------------------------------------------------------------- misc */

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

static const luaL_Reg functions[] = {
    {"plugins", l_plugins},
    {"plugin_help", l_plugin_help},
    {"load_plugin", l_load_plugin},
    {"plugin_dir", l_plugin_dir},
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

    luaL_newmetatable(L, MT_BOX);
    lua_pushcfunction(L, rtL_box_gc);
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

    /* Each class's file: its metatable, methods and constructors. */
    rtL_open_tensor(L);
    rtL_open_instance(L);
    rtL_open_optim(L);
    rtL_open_dataset(L);
    rtL_open_io(L);
    /* The binding's other files add their functions and methods. */
    rtL_open_tensor_ops(L);
    rtL_open_lua_loss(L);
    rtL_open_metrics(L);
    rtL_open_provenance(L);
    rtL_open_runfolder(L);
    rtL_open_finite(L);
    rtL_open_abi(L);
    rtL_open_lm(L);

    /* Run the Lua library: each chunk receives the module table. */
    for (const struct rtL_chunk *c = rtL_lua_chunks; c->name; c++) {
        if (luaL_loadbufferx(L, c->code, c->len, c->name, "t")) return lua_error(L);
        lua_pushvalue(L, -2);
        lua_call(L, 1, 0);
    }
    return 1;
}
