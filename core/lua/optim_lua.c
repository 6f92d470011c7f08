/*
 * optim_lua.c -- the Optimizer userdata (rt.optimizer: step, lr, config,
 * state, restore) and rt.schedule_lr.
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
    /* extras (arg 4): { {prefix, loss}, ... } whose own parameters train
     * too.  Tested before rtL_push_params pushes its box: without extras
     * that box lands at index 4. */
    int extras = !lua_isnoneornil(L, 4);
    rt_param *p = extras ? rtL_run_params(L, s->i, 4, &n) : rtL_push_params(L, s->i, &n);
    if (rt_optim_step(u->o, S(L)->ctx, p, n, lr)) return rtL_fail(L);
    rt_student_zero_grad(s->i);
    for (lua_Integer k = 1; extras && k <= luaL_len(L, 4); k++) {
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
    rt_param *p = lua_isnoneornil(L, 5) ? rtL_push_params(L, s->i, &n) : rtL_run_params(L, s->i, 5, &n);
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

static const luaL_Reg optim_methods[] = {
    {"step", o_step}, {"lr", o_lr}, {"config", o_config}, {"steps", o_steps}, {"state", o_state}, {"restore", o_restore}, {NULL, NULL}};

/* rt.clip_grad_norm(student, max_norm [, extras]) -> the global norm
 * before clipping: rt_clip_grad_norm over the parameters opt:step would
 * update (the student's, and with extras { {prefix, loss}, ... } those
 * losses' own), scaling their gradients in place when above max_norm. */
static int l_clip_grad_norm(lua_State *L)
{
    linst *s = rtL_checkinst(L, 1, MT_STUDENT);
    double max_norm = luaL_checknumber(L, 2);
    int n;
    rt_param *p = lua_isnoneornil(L, 3) ? rtL_push_params(L, s->i, &n) : rtL_run_params(L, s->i, 3, &n);
    double norm;
    if (rt_clip_grad_norm(S(L)->ctx, p, n, max_norm, &norm)) return rtL_fail(L);
    lua_pushnumber(L, norm);
    return 1;
}

static const luaL_Reg optim_functions[] = {
    {"optimizer", l_optimizer},
    {"clip_grad_norm", l_clip_grad_norm},
    {"schedule_lr", l_schedule_lr},
    {NULL, NULL}};

/* The class Optimizer (module table at the top). */
void rtL_open_optim(lua_State *L)
{
    rtL_new_class(L, MT_OPTIM, optim_methods, NULL, o_gc);
    rtL_setfuncs(L, optim_functions);
}
