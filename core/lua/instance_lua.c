/*
 * instance_lua.c -- the Student, Teacher and Loss userdata: rt.student/
 * teacher/loss, the methods common to the three (name, parameters, save,
 * load, ...), each kind's forward/backward, rt.copy_parameters.
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

static const char *kind_mt(rt_kind k)
{
    return k == RT_KIND_STUDENT ? MT_STUDENT : k == RT_KIND_TEACHER ? MT_TEACHER : MT_LOSS;
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

/* obj:parameters() -> { {name=, value=, grad=}, ... } in order */
static int i_parameters(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    int n;
    rt_param *p = rtL_push_params(L, u->i, &n);
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
    rt_param *p = rtL_push_params(L, u->i, &n);
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

/* obj:save(path [, metadata]) -- parameters (values) to safetensors */
static int i_save(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    const char *path = rtL_checkcstr(L, 2, "path");
    const char **k, **v;
    int n = rtL_meta_arrays(L, 3, &k, &v);
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
    rt_param *pd = rtL_push_params(L, d->i, &nd), *ps = rtL_push_params(L, s->i, &ns);
    if (nd != ns) luaL_error(L, "copy_parameters: %d parameters vs %d", nd, ns);
    for (int k = 0; k < nd; k++) {
        if (strcmp(pd[k].name, ps[k].name)) luaL_error(L, "copy_parameters: '%s' vs '%s'", pd[k].name, ps[k].name);
        if (rt_tensor_copy(S(L)->ctx, pd[k].value, ps[k].value)) return rtL_fail(L);
    }
    return 0;
}

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

static const luaL_Reg instance_functions[] = {
    {"student", l_student},
    {"teacher", l_teacher},
    {"loss", l_loss},
    {"copy_parameters", l_copy_parameters},
    {NULL, NULL}};

/* The classes Student, Teacher, Loss (module table at the top). */
void rtL_open_instance(lua_State *L)
{
    rtL_new_class(L, MT_STUDENT, common_methods, student_methods, rtL_inst_gc);
    rtL_new_class(L, MT_TEACHER, common_methods, teacher_methods, rtL_inst_gc);
    rtL_new_class(L, MT_LOSS, common_methods, loss_methods, rtL_inst_gc);
    rtL_setfuncs(L, instance_functions);
}
