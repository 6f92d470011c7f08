/*
 * lua_loss.c -- losses written in Lua, bridged to the loss ABI, and the
 * gradient checker for Lua (rt.gradcheck).
 *
 *   rt.lua_loss{ name = "my_kd",
 *                forward  = function(s, t, y, ctx) return number end,
 *                backward = function(s, t, y, ctx) return grad [N, C] end,
 *                needs_teacher = true, needs_target = false,
 *                options = { temperature = 4,                 -- a number option
 *                            t2 = true,                       -- a bool option
 *                            eps = {1e-8, min = 0, max = 1, help = "..."} },
 *                summary = "one line" } [, {temperature = 2}] -> Loss
 *
 * The result is an ordinary retort.Loss: its instance comes from
 * rt_instance_from_desc over a descriptor built here, whose vtable calls
 * back into Lua.  So a Lua loss goes through the same checked calls as a C
 * plugin (shapes, dtypes, labels in range, the "loss 'name': " prefix),
 * into rt.distill and into the C gradient checker unchanged.
 *
 * The callbacks get s (student logits [N, C]), t (teacher logits or nil),
 * y (i32 labels or nil; nil unless needs_target) and ctx = {epoch, step,
 * name, opts}, where opts holds the current option values (loss:set
 * changes them between steps; schedules use that).  s, t and y are the
 * host's tensors, borrowed for the call: read them, never change them.
 * backward returns d(loss)/d(s), of s's shape; the bridge adds scale times
 * it into the host's gradient (the ABI's accumulate rule), so the Lua code
 * never deals with scale or accumulation.
 *
 * Why a thread of its own: the host calls the vtable from C with no Lua
 * state in hand (from rt.distill's loss:forward, or from inside the C
 * gradient checker).  Each Lua loss keeps a Lua thread, anchored in the
 * registry, and runs its callbacks there under lua_pcall through a C
 * trampoline: every allocation (tensor userdata, the call itself) happens
 * inside the protected call, so a Lua error or an out-of-memory never
 * longjmps through the core's frames.  The error becomes an rt_status with
 * the Lua message, and the host prefixes it with "loss 'name': ".
 *
 * Ownership: the descriptor, its option schema and its strings, the
 * registry references and the current option values live in one block per
 * Lua loss (lua_loss), created before the instance and freed by the
 * instance's destroy: the descriptor outlives the instance as
 * rt_instance_from_desc requires.
 */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rtlua.h"

#define MAX_OPTIONS 32

typedef struct lua_loss {
    rt_plugin_desc desc; /* desc.loss points at vt below */
    rt_loss_vt vt;
    rt_option options[MAX_OPTIONS + 1];
    double values[MAX_OPTIONS]; /* current values of the number options */
    int nopt;
    int dirty;     /* values changed since they were copied into opts */
    lua_State *T;  /* the callbacks' thread (anchored by thread_ref) */
    int thread_ref, fwd_ref, bwd_ref, ctx_ref, opts_ref;
    char *strings[4 + 3 * MAX_OPTIONS]; /* owned: name, summary, sources, option texts */
    int nstrings;
    const char *source[2]; /* forward's and backward's "@file.lua", or short_src for no file; in strings */
    int line[2];           /* where each function is defined */
} lua_loss;

/* Drops the registry references.  The thread's is taken first and dropped
 * last: without it, T may already be collected and no other ref exists. */
static void unref_all(lua_loss *l)
{
    if (l->thread_ref == LUA_NOREF) return;
    int *refs[] = {&l->fwd_ref, &l->bwd_ref, &l->ctx_ref, &l->opts_ref, &l->thread_ref};
    for (size_t k = 0; k < sizeof refs / sizeof *refs; k++) {
        if (*refs[k] != LUA_NOREF) luaL_unref(l->T, LUA_REGISTRYINDEX, *refs[k]);
        *refs[k] = LUA_NOREF;
    }
}

static void free_block(lua_loss *l)
{
    for (int k = 0; k < l->nstrings; k++) free(l->strings[k]);
    free(l);
}

/* The instance's destroy: the last reference to the loss is gone (its
 * userdata was collected, or the state is closing: the registry is still
 * there while finalizers run). */
static void destroy(void *self)
{
    lua_loss *l = self;
    unref_all(l);
    free_block(l);
}

/* create has no user pointer in the ABI, so l_lua_loss hands the block over
 * through this variable, set only around its rt_instance_from_desc call. */
static _Thread_local lua_loss *pending;

static rt_status create(rt_ctx *ctx, const rt_opts *o, void **self)
{
    lua_loss *l = pending;
    if (!l) return rt_error(ctx, RT_STATUS_ERR_STATE, "a Lua loss is created by rt.lua_loss only");
    for (int k = 0; k < l->nopt; k++)
        if (l->options[k].type == RT_OPT_NUMBER) l->values[k] = rt_host_api()->opt_number(o, l->options[k].name);
    *self = l;
    return RT_STATUS_OK;
}

static rt_status set(void *self, rt_ctx *ctx, const char *name, double v)
{
    lua_loss *l = self;
    for (int k = 0; k < l->nopt; k++)
        if (!strcmp(l->options[k].name, name)) {
            l->values[k] = v;
            l->dirty = 1;
            return RT_STATUS_OK;
        }
    return rt_error(ctx, RT_STATUS_ERR_ARG, "no option '%s'", name); /* the host checked: unreachable */
}

/* ------------------------------------------------------------ the calls */

typedef struct call {
    lua_loss *l;
    const rt_loss_in *in;
    int backward;
    float scale;
    rt_tensor *grad; /* backward: the host's gradient */
    double value;    /* forward: the result */
    rt_status code;  /* the status a raised error maps to */
} call;

/* grad += scale * g, any strides of g (the host's grad is contiguous). */
static void accumulate(rt_tensor *grad, const rt_tensor *g, float scale)
{
    int64_t n = rt_numel(grad), idx[RT_MAX_DIMS] = {0}, ig = 0;
    float *out = rt_f32(grad);
    const float *in = rt_f32(g);
    for (int64_t k = 0; k < n; k++) {
        out[k] += scale * in[ig];
        for (int d = g->ndim - 1; d >= 0; d--) {
            ig += g->stride[d];
            if (++idx[d] < g->shape[d]) break;
            ig -= g->stride[d] * g->shape[d];
            idx[d] = 0;
        }
    }
}

/* Runs on the loss's thread under lua_pcall: pushes the arguments, calls
 * the Lua function, checks and converts its result. */
static int trampoline(lua_State *T)
{
    call *c = lua_touserdata(T, 1);
    lua_loss *l = c->l;
    const rt_loss_in *in = c->in;
    const char *what = c->backward ? "backward" : "forward";
    lua_rawgeti(T, LUA_REGISTRYINDEX, c->backward ? l->bwd_ref : l->fwd_ref);
    rtL_pushborrowed(T, (rt_tensor *)in->student);
    rtL_pushborrowed(T, (l->vt.needs & RT_NEEDS_TEACHER) && in->teacher ? in->teacher->logits : NULL);
    rtL_pushborrowed(T, (l->vt.needs & RT_NEEDS_TARGET) ? (rt_tensor *)in->target : NULL);
    lua_rawgeti(T, LUA_REGISTRYINDEX, l->ctx_ref);
    lua_pushinteger(T, in->epoch);
    lua_setfield(T, -2, "epoch");
    lua_pushinteger(T, in->step);
    lua_setfield(T, -2, "step");
    /* ABI 2.0: the host's normaliser (real positions over the global batch)
     * and the mask, so a Lua loss reduces as the C ones do. */
    lua_pushnumber(T, in->norm);
    lua_setfield(T, -2, "norm");
    rtL_pushborrowed(T, (rt_tensor *)in->mask);
    lua_setfield(T, -2, "mask");
    if (l->dirty) {
        lua_rawgeti(T, LUA_REGISTRYINDEX, l->opts_ref);
        for (int k = 0; k < l->nopt; k++)
            if (l->options[k].type == RT_OPT_NUMBER) {
                lua_pushnumber(T, l->values[k]);
                lua_setfield(T, -2, l->options[k].name);
            }
        lua_pop(T, 1);
        l->dirty = 0;
    }
    lua_call(T, 4, 1);
    c->code = RT_STATUS_ERR_SHAPE;
    if (!c->backward) {
        if (lua_type(T, -1) != LUA_TNUMBER)
            return luaL_error(T, "forward must return a number, got %s", luaL_typename(T, -1));
        c->value = lua_tonumber(T, -1);
        return 0;
    }
    ltensor *u = luaL_testudata(T, -1, MT_TENSOR);
    if (!u || !u->t) return luaL_error(T, "backward must return a tensor, got %s", luaL_typename(T, -1));
    char a[64], b[64];
    if (u->t->dtype != RT_DTYPE_F32 || !rt_tensor_same_shape(u->t, in->student))
        return luaL_error(T, "%s returned %s %s for student logits %s", what, rt_dtype_name(u->t->dtype),
                          rt_tensor_shape_str(u->t, a, sizeof a), rt_tensor_shape_str(in->student, b, sizeof b));
    accumulate(c->grad, u->t, c->scale);
    return 0;
}

static rt_status run(lua_loss *l, rt_ctx *ctx, call *c)
{
    lua_State *T = l->T;
    const char *what = c->backward ? "backward" : "forward";
    if (!lua_checkstack(T, 8)) return rt_error(ctx, RT_STATUS_ERR_NOMEM, "%s: Lua stack overflow", what);
    int top = lua_gettop(T);
    c->code = RT_STATUS_ERR_PLUGIN;
    lua_pushcfunction(T, trampoline); /* neither push allocates */
    lua_pushlightuserdata(T, c);
    int st = lua_pcall(T, 1, 0, 0);
    rt_status r = RT_STATUS_OK;
    if (st != LUA_OK) {
        const char *msg = lua_tostring(T, -1);
        r = rt_error(ctx, st == LUA_ERRMEM ? RT_STATUS_ERR_NOMEM : c->code, "%s: %s", what,
                     msg ? msg : "(error object is not a string)");
    }
    lua_settop(T, top);
    return r;
}

static rt_status lforward(void *self, rt_ctx *ctx, const rt_loss_in *in, double *value)
{
    call c = {.l = self, .in = in};
    rt_status st = run(self, ctx, &c);
    if (!st) *value = c.value;
    return st;
}

static rt_status lbackward(void *self, rt_ctx *ctx, const rt_loss_in *in, float scale, rt_tensor *grad)
{
    call c = {.l = self, .in = in, .backward = 1, .scale = scale, .grad = grad};
    return run(self, ctx, &c);
}

/* ------------------------------------------------------------ rt.lua_loss */

/* One option as read from spec.options.  The strings are anchored: names
 * and helps by the spec table, the default's JSON text and its Lua value
 * by the anchor table (slots 2 * slot - 1 and 2 * slot). */
typedef struct optspec {
    const char *name, *def, *help;
    rt_opt_type type;
    double min, max;
    int slot;
} optspec;

static int cmp_opt(const void *a, const void *b) { return strcmp(((const optspec *)a)->name, ((const optspec *)b)->name); }

/* Checks spec.options at index i (nil: none) into os[], sorted by name;
 * anchor is the index of an empty table for the defaults.  Raises on a bad
 * entry; allocates nothing outside Lua.  Returns the count.
 *   name = default                          (number, boolean or string)
 *   name = {default, min =, max =, help =}                               */
static int read_options(lua_State *L, int i, int anchor, optspec *os)
{
    int n = 0;
    if (lua_isnil(L, i)) return 0;
    if (!lua_istable(L, i)) luaL_error(L, "rt.lua_loss: 'options' must be a table {name = default, ...}");
    lua_pushnil(L);
    while (lua_next(L, i)) { /* key -2, value -1 */
        if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "rt.lua_loss: option names must be strings");
        if (n == MAX_OPTIONS) luaL_error(L, "rt.lua_loss: at most %d options", MAX_OPTIONS);
        optspec *o = &os[n++];
        int v = lua_gettop(L), top = v;
        o->name = rtL_tocstr(L, -2, "rt.lua_loss: an option name");
        o->help = "";
        o->min = 1, o->max = 0; /* min > max: unbounded */
        o->slot = n;
        if (lua_istable(L, v)) {
            lua_getfield(L, v, "min");
            lua_getfield(L, v, "max");
            lua_getfield(L, v, "help");
            if (!lua_isnil(L, -3) || !lua_isnil(L, -2)) {
                o->min = lua_isnil(L, -3) ? -HUGE_VAL : luaL_checknumber(L, -3);
                o->max = lua_isnil(L, -2) ? HUGE_VAL : luaL_checknumber(L, -2);
            }
            if (!lua_isnil(L, -1)) o->help = luaL_checkstring(L, -1); /* anchored by the option's table */
            lua_rawgeti(L, v, 1);
            v = lua_gettop(L);
        }
        switch (lua_type(L, v)) {
        case LUA_TNUMBER: o->type = RT_OPT_NUMBER; break;
        case LUA_TBOOLEAN: o->type = RT_OPT_BOOL; break;
        case LUA_TSTRING: o->type = RT_OPT_STRING; break;
        default: luaL_error(L, "rt.lua_loss: option '%s' needs a default number, boolean or string", o->name);
        }
        lua_pushvalue(L, v);
        lua_rawseti(L, anchor, 2 * n);
        o->def = rtL_tojson(L, v);
        lua_rawseti(L, anchor, 2 * n - 1);
        lua_settop(L, top - 1); /* the key stays for lua_next */
    }
    qsort(os, (size_t)n, sizeof *os, cmp_opt);
    return n;
}

static char *own(lua_loss *l, const char *s)
{
    char *p = strdup(s ? s : "");
    if (p) l->strings[l->nstrings++] = p;
    return p;
}

static int field_bool(lua_State *L, int spec, const char *k, int def)
{
    lua_getfield(L, spec, k);
    int v = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static int l_lua_loss(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    static const char *const known[] = {"name", "forward", "backward", "needs_teacher", "needs_target",
                                        "options", "summary", NULL};
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        int ok = 0;
        for (int k = 0; known[k] && lua_type(L, -2) == LUA_TSTRING; k++) ok |= !strcmp(known[k], lua_tostring(L, -2));
        if (!ok) luaL_error(L, "rt.lua_loss: unknown field '%s'", luaL_tolstring(L, -2, NULL));
        lua_pop(L, 1);
    }
    lua_getfield(L, 1, "name"); /* 3 */
    if (lua_type(L, 3) != LUA_TSTRING) luaL_error(L, "rt.lua_loss: 'name' must be a string");
    const char *name = rtL_tocstr(L, 3, "rt.lua_loss: 'name'");
    lua_getfield(L, 1, "forward");  /* 4 */
    lua_getfield(L, 1, "backward"); /* 5 */
    if (!lua_isfunction(L, 4) || !lua_isfunction(L, 5))
        luaL_error(L, "rt.lua_loss '%s': 'forward' and 'backward' must be functions", name);
    lua_getfield(L, 1, "summary"); /* 6 */
    if (lua_isnil(L, 6)) {
        lua_Debug ar;
        lua_pushvalue(L, 4);
        lua_getinfo(L, ">S", &ar);
        lua_pushfstring(L, "a loss written in Lua (%s:%d)", ar.short_src, ar.linedefined);
        lua_replace(L, 6);
    } else if (lua_type(L, 6) != LUA_TSTRING) {
        luaL_error(L, "rt.lua_loss '%s': 'summary' must be a string", name);
    }
    unsigned needs = (field_bool(L, 1, "needs_teacher", 1) ? RT_NEEDS_TEACHER : 0) |
                     (field_bool(L, 1, "needs_target", 0) ? RT_NEEDS_TARGET : 0);
    lua_getfield(L, 1, "options"); /* 7 */
    lua_newtable(L);               /* 8: anchors the defaults */
    optspec os[MAX_OPTIONS];
    int nopt = read_options(L, 7, 8, os);
    const char *json = rtL_tojson(L, 2); /* 9 */

    /* Lua objects next (they may raise; nothing C-owned exists yet). */
    linst *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->i = NULL;
    u->grad = NULL;
    luaL_setmetatable(L, MT_LOSS);
    int ud = lua_gettop(L);
    lua_State *T = lua_newthread(L);
    lua_newtable(L); /* ctx */
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "epoch");
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "step");
    lua_newtable(L); /* opts, filled once the options are validated */
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "opts");
    luaL_checkstack(L, 4, NULL);

    /* The block: nothing below raises until it is owned by the instance or
     * freed. */
    lua_loss *l = calloc(1, sizeof *l);
    if (!l) return luaL_error(L, "rt.lua_loss: out of memory");
    l->fwd_ref = l->bwd_ref = l->ctx_ref = l->opts_ref = l->thread_ref = LUA_NOREF;
    l->T = T;
    l->desc = (rt_plugin_desc){RT_DESC_INIT(RT_KIND_LOSS, own(l, name), "lua", own(l, lua_tostring(L, 6)))};
    l->vt = (rt_loss_vt){.size = sizeof l->vt, .needs = needs, .forward = lforward, .backward = lbackward, .set = set};
    l->desc.loss = &l->vt;
    l->desc.create = create;
    l->desc.destroy = destroy;
    l->desc.options = l->options;
    int oom = !l->desc.name || !l->desc.summary;
    for (int k = 0; k < 2; k++) { /* the provenance: where forward and backward come from */
        lua_Debug ar;
        lua_pushvalue(L, 4 + k);
        lua_getinfo(L, ">S", &ar);
        l->source[k] = own(l, ar.source[0] == '@' ? ar.source : ar.short_src); /* not a whole string chunk */
        l->line[k] = ar.linedefined;
        oom |= !l->source[k];
    }
    for (int k = 0; k < nopt; k++) {
        rt_option *o = &l->options[k];
        o->name = own(l, os[k].name);
        o->def = own(l, os[k].def);
        o->help = own(l, os[k].help);
        o->type = os[k].type;
        o->min = os[k].min;
        o->max = os[k].max;
        oom |= !o->name || !o->def || !o->help;
    }
    l->nopt = nopt;
    if (oom) {
        free_block(l);
        return luaL_error(L, "rt.lua_loss: out of memory");
    }
    rt_ctx *ctx = rtL_S(L)->ctx;
    pending = l;
    rt_status st = rt_instance_from_desc(ctx, &l->desc, json, &u->i);
    pending = NULL;
    if (st) {
        free_block(l); /* create never ran, or failed: no destroy */
        return rtL_fail(L);
    }
    /* From here the instance owns the block (destroy frees it), and a
     * raise below is safe: the userdata's __gc releases the instance, and
     * luaL_unref ignores the refs not taken yet (LUA_NOREF).  The opts
     * table (at the top) gets the validated values: numbers as create
     * read them, the others from the call's options or the defaults. */
    for (int k = 0; k < nopt; k++) {
        if (os[k].type == RT_OPT_NUMBER) {
            lua_pushnumber(L, l->values[k]);
        } else {
            if (lua_istable(L, 2)) lua_getfield(L, 2, os[k].name);
            else lua_pushnil(L);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_rawgeti(L, 8, 2 * os[k].slot);
            }
        }
        lua_setfield(L, -2, os[k].name);
    }
    lua_pushvalue(L, ud + 1); /* the thread first: unref_all relies on it */
    l->thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    l->opts_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    l->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 4);
    l->fwd_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 5);
    l->bwd_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, ud);
    return 1;
}

/* rt.lua_loss_source(loss) -> { forward = {file =, line =, chunk =},
 * backward = {...} } for a loss made by rt.lua_loss, nil for any other:
 * file is the path as Lua loaded it (nil for a chunk that is not a file). */
static int l_lua_loss_source(lua_State *L)
{
    linst *u = rtL_checkinst(L, 1, MT_LOSS);
    const rt_plugin_desc *d = rt_instance_desc(u->i);
    if (d->create != create) {
        lua_pushnil(L);
        return 1;
    }
    const lua_loss *l = (const lua_loss *)d; /* desc is the block's first member */
    lua_createtable(L, 0, 2);
    for (int k = 0; k < 2; k++) {
        const char *src = l->source[k];
        lua_createtable(L, 0, 3);
        if (src[0] == '@') {
            lua_pushstring(L, src + 1);
            lua_setfield(L, -2, "file");
        }
        lua_pushstring(L, src);
        lua_setfield(L, -2, "chunk");
        lua_pushinteger(L, l->line[k]);
        lua_setfield(L, -2, "line");
        lua_setfield(L, -2, k ? "backward" : "forward");
    }
    return 1;
}

/* loss:set(name, value) when value is not a number (lo_set hands those
 * over).  A Lua loss's boolean and string options change: ctx.opts has the
 * new value from the next call on.  A C plugin's set takes numbers only
 * (the ABI), so for it this is an error naming the option and its type. */
int rtL_loss_set_value(lua_State *L)
{
    linst *u = rtL_checkinst(L, 1, MT_LOSS);
    const char *name = luaL_checkstring(L, 2);
    int t = lua_type(L, 3);
    if (t != LUA_TBOOLEAN && t != LUA_TSTRING)
        return luaL_typeerror(L, 3, "number, boolean or string");
    const rt_plugin_desc *d = rt_instance_desc(u->i);
    const rt_option *o = NULL;
    for (const rt_option *p = d->options; p && p->name && !o; p++)
        if (!strcmp(p->name, name)) o = p;
    if (!o) { /* the host's message: "unknown option ... (did you mean ...)" */
        rt_loss_set(u->i, rtL_S(L)->ctx, name, 0);
        return rtL_fail(L);
    }
    int want = o->type == RT_OPT_BOOL ? LUA_TBOOLEAN : o->type == RT_OPT_STRING ? LUA_TSTRING : LUA_TNUMBER;
    if (t != want)
        return luaL_error(L, "loss '%s': option '%s' takes a %s, got a %s", d->name, name,
                          want == LUA_TNUMBER ? "number" : lua_typename(L, want), lua_typename(L, t));
    if (d->loss->forward != lforward)
        return luaL_error(L, "loss '%s': option '%s' is a %s, and only number options change after creation: "
                          "give it when creating the loss", d->name, name, lua_typename(L, want));
    lua_loss *l = rt_instance_self(u->i);
    lua_rawgeti(L, LUA_REGISTRYINDEX, l->opts_ref);
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, name);
    /* options_json() follows: the value as JSON (a boolean or a string) */
    rt_ctx *ctx = rtL_S(L)->ctx;
    if (t == LUA_TBOOLEAN) {
        if (rt_instance_record_option(u->i, ctx, name, lua_toboolean(L, 3) ? "true" : "false")) return rtL_fail(L);
    } else {
        cJSON *js = cJSON_CreateString(lua_tostring(L, 3));
        char *txt = js ? cJSON_PrintUnformatted(js) : NULL;
        cJSON_Delete(js);
        rt_status st = txt ? rt_instance_record_option(u->i, ctx, name, txt)
                           : rt_error(ctx, RT_STATUS_ERR_NOMEM, "option '%s': out of memory", name);
        free(txt);
        if (st) return rtL_fail(L);
    }
    lua_settop(L, 1);
    return 1;
}

/* ------------------------------------------------------------ gradcheck */

static lua_Integer opt_int_field(lua_State *L, int t, const char *k, lua_Integer def)
{
    if (lua_isnoneornil(L, t)) return def;
    lua_getfield(L, t, k);
    lua_Integer v = def;
    if (!lua_isnil(L, -1)) {
        int ok;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok) luaL_error(L, "rt.gradcheck: '%s' must be an integer", k);
    }
    lua_pop(L, 1);
    return v;
}

/* rt.gradcheck(loss_or_student [, {N = 4, C = 10, seed = 1, eps = 0,
 *              input_shape = {...}}]) ->
 *   { max_rel_err, worst, checked, skipped, kind, name,
 *     inputs = { {name, max_rel_err, checked}, ... } (worst per input) }
 * The finite-difference check of retort.h (rt_gradcheck_loss /
 * rt_gradcheck_student).  A failing call into the object raises its error
 * (a non-finite value or gradient included). */
static int l_gradcheck(lua_State *L)
{
    linst *u = rtL_checkany(L, 1);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    rt_kind kind = rt_instance_desc(u->i)->kind;
    if (kind == RT_KIND_TEACHER) luaL_argerror(L, 1, "teachers have no gradient to check (a loss or a student)");
    lua_Integer N = opt_int_field(L, 2, "N", 4), C = opt_int_field(L, 2, "C", 10);
    lua_Integer seed = opt_int_field(L, 2, "seed", 1);
    double eps = 0;
    int64_t shape[RT_MAX_DIMS];
    int nd = 0;
    if (!lua_isnoneornil(L, 2)) {
        lua_getfield(L, 2, "eps");
        eps = luaL_optnumber(L, -1, 0);
        lua_getfield(L, 2, "input_shape");
        if (!lua_isnil(L, -1)) nd = rtL_checkshape(L, lua_gettop(L), shape);
        lua_pop(L, 2);
        static const char *const known[] = {"N", "C", "seed", "eps", "input_shape", NULL};
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            int ok = 0;
            for (int k = 0; known[k] && lua_type(L, -2) == LUA_TSTRING; k++) ok |= !strcmp(known[k], lua_tostring(L, -2));
            if (!ok) luaL_error(L, "rt.gradcheck: unknown field '%s' (N, C, seed, eps, input_shape)", luaL_tolstring(L, -2, NULL));
            lua_pop(L, 1);
        }
    }
    if (N < 1 || C < 1) luaL_error(L, "rt.gradcheck: N and C must be >= 1");
    rt_gradcheck_result res;
    rt_status st = kind == RT_KIND_LOSS
                       ? rt_gradcheck_loss(u->i, rtL_S(L)->ctx, N, C, (uint64_t)seed, eps, &res)
                       : rt_gradcheck_student(u->i, rtL_S(L)->ctx, N, nd ? shape : NULL, nd, (uint64_t)seed, eps, &res);
    if (st) return rtL_fail(L);
    lua_createtable(L, 0, 6);
    lua_pushnumber(L, res.max_rel_err);
    lua_setfield(L, -2, "max_rel_err");
    lua_pushstring(L, res.worst);
    lua_setfield(L, -2, "worst");
    lua_pushinteger(L, res.checked);
    lua_setfield(L, -2, "checked");
    lua_pushinteger(L, res.skipped);
    lua_setfield(L, -2, "skipped");
    lua_pushstring(L, rt_kind_name(kind));
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, rt_instance_desc(u->i)->name);
    lua_setfield(L, -2, "name");
    lua_createtable(L, res.ninputs, 0); /* inputs = { {name, max_rel_err, checked}, ... } */
    for (int k = 0; k < res.ninputs; k++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, res.inputs[k].name);
        lua_setfield(L, -2, "name");
        lua_pushnumber(L, res.inputs[k].max_rel_err);
        lua_setfield(L, -2, "max_rel_err");
        lua_pushinteger(L, res.inputs[k].checked);
        lua_setfield(L, -2, "checked");
        lua_rawseti(L, -2, k + 1);
    }
    lua_setfield(L, -2, "inputs");
    return 1;
}

static const luaL_Reg functions[] = {{"lua_loss", l_lua_loss}, {"gradcheck", l_gradcheck},
                                     {"lua_loss_source", l_lua_loss_source}, {NULL, NULL}};

void rtL_open_lua_loss(lua_State *L) { rtL_setfuncs(L, functions); }
