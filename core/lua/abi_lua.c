/*
 * abi_lua.c -- the Lua side of ABI 2.0's surfaces: features and recording,
 * input specs, loss calls with mask / norm / features (table form), the
 * features a loss declares, and the run's parameter list (a student's and
 * its losses' own, prefixed) for the optimizer.
 *
 *   student:features() / teacher:features() -> { "layers.0", ... }
 *   student:record(name [, on = true]) / teacher:record(...)
 *   student:input_spec() -> { dtype =, shape = {...} (0 = any), flat =, vocab = }
 *   loss:features() -> { {name =, from = "student" | "teacher"}, ... }
 *   loss:zero_grad()
 *   loss:forward{ s, t, y, mask =, norm =, features = {...}, epoch =, step = }
 *   loss:backward{ ..., scale =, grad =, feature_grads = {...} } -> grad
 */
#include <string.h>

#include "rtlua.h"

static int f_features(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    int n = rt_instance_features(u->i, NULL, 0);
    const char **names = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n > 0 ? n : 1), 0);
    n = rt_instance_features(u->i, names, n);
    lua_createtable(L, n, 0);
    for (int k = 0; k < n; k++) {
        lua_pushstring(L, names[k]);
        lua_rawseti(L, -2, k + 1);
    }
    return 1;
}

static int f_record(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    const char *name = luaL_checkstring(L, 2);
    int on = lua_isnoneornil(L, 3) ? 1 : lua_toboolean(L, 3);
    if (rt_instance_record(u->i, rtL_S(L)->ctx, name, on)) return rtL_fail(L);
    lua_settop(L, 1);
    return 1;
}

static int s_input_spec(lua_State *L)
{
    linst *u = rtL_checkinst(L, 1, MT_STUDENT);
    rt_spec sp;
    rt_instance_input_spec(u->i, &sp);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, rt_dtype_name(sp.dtype));
    lua_setfield(L, -2, "dtype");
    if (sp.ndim >= 0) {
        lua_createtable(L, sp.ndim, 0);
        for (int k = 0; k < sp.ndim; k++) {
            lua_pushinteger(L, sp.shape[k]);
            lua_rawseti(L, -2, k + 1);
        }
        lua_setfield(L, -2, "shape");
    }
    lua_pushboolean(L, sp.flat);
    lua_setfield(L, -2, "flat");
    lua_pushinteger(L, sp.vocab);
    lua_setfield(L, -2, "vocab");
    return 1;
}

static int lo_features(lua_State *L)
{
    linst *u = rtL_checkinst(L, 1, MT_LOSS);
    int n = rt_loss_features(u->i, NULL, 0);
    rt_feature_req *f = lua_newuserdatauv(L, sizeof *f * (size_t)(n > 0 ? n : 1), 0);
    n = rt_loss_features(u->i, f, n);
    lua_createtable(L, n, 0);
    for (int k = 0; k < n; k++) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, f[k].name ? f[k].name : "");
        lua_setfield(L, -2, "name");
        lua_pushstring(L, f[k].from == RT_FROM_TEACHER ? "teacher" : "student");
        lua_setfield(L, -2, "from");
        lua_rawseti(L, -2, k + 1);
    }
    return 1;
}

/* loss:binds() -> whether the loss sizes itself on a first batch (bind) */
static int lo_binds(lua_State *L)
{
    lua_pushboolean(L, rt_instance_desc(rtL_checkinst(L, 1, MT_LOSS)->i)->loss->bind != NULL);
    return 1;
}

static int lo_zero_grad(lua_State *L)
{
    rt_loss_zero_grad(rtL_checkinst(L, 1, MT_LOSS)->i);
    return 0;
}

/* A list of tensors at table index t field k into a GC-owned array. */
static rt_tensor **tensor_list(lua_State *L, int t, const char *k, int *n)
{
    *n = 0;
    if (lua_getfield(L, t, k) == LUA_TNIL) {
        lua_pop(L, 1);
        return NULL;
    }
    luaL_checktype(L, -1, LUA_TTABLE);
    int m = (int)luaL_len(L, -1), list = lua_gettop(L);
    rt_tensor **v = lua_newuserdatauv(L, sizeof *v * (size_t)(m > 0 ? m : 1), 0);
    for (int i = 0; i < m; i++) {
        lua_rawgeti(L, list, i + 1);
        v[i] = lua_isnil(L, -1) || lua_isboolean(L, -1) ? NULL : rtL_checktensor(L, -1); /* false: a hole */
        lua_pop(L, 1);
    }
    lua_remove(L, list); /* the userdata stays on the stack; the list is the caller's */
    *n = m;
    return v;
}

static rt_tensor *opt_field_tensor(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    rt_tensor *v = lua_isnil(L, -1) ? NULL : rtL_checktensor(L, -1);
    lua_pop(L, 1); /* the table keeps it alive */
    return v;
}

/* loss:forward{...} / loss:backward{...}: the table form (index 2). */
int rtL_loss_call_table(lua_State *L, int backward)
{
    linst *u = rtL_checkinst(L, 1, MT_LOSS);
    luaL_checktype(L, 2, LUA_TTABLE);
    rt_signal sig;
    rt_loss_in in;
    memset(&sig, 0, sizeof sig);
    memset(&in, 0, sizeof in);
    lua_rawgeti(L, 2, 1);
    in.student = rtL_checktensor(L, -1);
    lua_pop(L, 1);
    lua_rawgeti(L, 2, 2);
    if (!lua_isnil(L, -1)) {
        sig.logits = rtL_checktensor(L, -1);
        in.teacher = &sig;
    }
    lua_pop(L, 1);
    lua_rawgeti(L, 2, 3);
    in.target = lua_isnil(L, -1) ? NULL : rtL_checktensor(L, -1);
    lua_pop(L, 1);
    in.mask = opt_field_tensor(L, 2, "mask");
    lua_getfield(L, 2, "norm");
    in.norm = luaL_optnumber(L, -1, 0);
    lua_getfield(L, 2, "epoch");
    in.epoch = luaL_optinteger(L, -1, 0);
    lua_getfield(L, 2, "step");
    in.step = luaL_optinteger(L, -1, 0);
    lua_getfield(L, 2, "scale");
    float scale = (float)luaL_optnumber(L, -1, 1.0);
    lua_pop(L, 4);
    int nf = 0, ng = 0;
    in.features = (const rt_tensor *const *)tensor_list(L, 2, "features", &nf);
    in.nfeatures = nf;
    rt_ctx *ctx = rtL_S(L)->ctx;
    if (!backward) {
        double v;
        if (rt_loss_forward(u->i, ctx, &in, &v)) return rtL_fail(L);
        lua_pushnumber(L, v);
        return 1;
    }
    in.feature_grads = tensor_list(L, 2, "feature_grads", &ng);
    if (in.feature_grads && ng != nf) luaL_error(L, "loss:backward: %d features but %d feature_grads", nf, ng);
    rt_tensor *g = opt_field_tensor(L, 2, "grad");
    if (!g) {
        if (rt_tensor_ensure(ctx, &u->grad, RT_DTYPE_F32, in.student->ndim, in.student->shape)) return rtL_fail(L);
        memset(u->grad->data, 0, rt_tensor_nbytes(u->grad));
        g = u->grad;
    }
    if (rt_loss_backward(u->i, ctx, &in, scale, g)) return rtL_fail(L);
    rtL_pushborrowed(L, g);
    return 1;
}

/* The run's parameters: the student's, then for each {prefix, loss} of
 * the list at index `extras` (nil: none) the loss's own, named
 * prefix .. name.  Pushes a GC-owned array (and the names' anchor table);
 * *n gets the count. */
rt_param *rtL_run_params(lua_State *L, rt_instance *s, int extras, int *n)
{
    int total = rt_instance_param_count(s), ne = lua_isnoneornil(L, extras) ? 0 : (int)luaL_len(L, extras);
    for (int k = 1; k <= ne; k++) {
        lua_rawgeti(L, extras, k);
        lua_rawgeti(L, -1, 2);
        total += rt_instance_param_count(rtL_checkinst(L, -1, MT_LOSS)->i);
        lua_pop(L, 2);
    }
    rt_param *p = lua_newuserdatauv(L, sizeof *p * (size_t)(total > 0 ? total : 1), 1);
    lua_createtable(L, total, 0); /* anchors the prefixed names */
    int m = rt_instance_params(s, p, total);
    for (int k = 1; k <= ne && m <= total; k++) {
        lua_rawgeti(L, extras, k);
        lua_rawgeti(L, -1, 1);
        const char *prefix = luaL_checkstring(L, -1);
        lua_rawgeti(L, -2, 2);
        rt_instance *l = rtL_checkinst(L, -1, MT_LOSS)->i;
        int c = rt_instance_params(l, p + m, total - m);
        for (int j = 0; j < c && m + j < total; j++) {
            p[m + j].name = lua_pushfstring(L, "%s%s", prefix, p[m + j].name);
            lua_rawseti(L, -5, m + j + 1);
        }
        m += c;
        lua_pop(L, 3);
    }
    lua_setiuservalue(L, -2, 1);
    if (m != total) luaL_error(L, "the run's parameter count changed from %d to %d while listing", total, m);
    *n = total;
    return p;
}

void rtL_open_abi(lua_State *L)
{
    static const luaL_Reg fs[] = {{"features", f_features}, {"record", f_record}, {NULL, NULL}};
    static const luaL_Reg st[] = {{"input_spec", s_input_spec}, {NULL, NULL}};
    static const luaL_Reg lo[] = {{"features", lo_features}, {"zero_grad", lo_zero_grad}, {"binds", lo_binds}, {NULL, NULL}};
    rtL_add_methods(L, MT_STUDENT, fs);
    rtL_add_methods(L, MT_TEACHER, fs);
    rtL_add_methods(L, MT_STUDENT, st);
    rtL_add_methods(L, MT_LOSS, lo);
}
