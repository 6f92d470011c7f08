/*
 * dataset_lua.c -- the Dataset userdata (rt.dataset: size, x, y, gather)
 * and the iterator of ds:batches.
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

typedef struct ldataset {
    rt_dataset *d;
} ldataset;

static int d_gc(lua_State *L)
{
    ldataset *u = luaL_checkudata(L, 1, MT_DATASET);
    rt_dataset_free(u->d);
    u->d = NULL;
    return 0;
}

static ldataset *check_dataset(lua_State *L, int i)
{
    ldataset *u = luaL_checkudata(L, i, MT_DATASET);
    if (!u->d) luaL_argerror(L, i, "dataset is closed");
    return u;
}

/* rt.dataset(x [, y]) */
static int l_dataset(lua_State *L)
{
    rt_tensor *x = rtL_checktensor(L, 1), *y = rtL_opttensor(L, 2);
    ldataset *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->d = NULL;
    luaL_setmetatable(L, MT_DATASET);
    if (!(u->d = rt_dataset_new(S(L)->ctx, x, y))) return rtL_fail(L);
    return 1;
}

static int d_size(lua_State *L)
{
    lua_pushinteger(L, rt_dataset_size(check_dataset(L, 1)->d));
    return 1;
}

static int d_x(lua_State *L)
{
    rtL_pushborrowed(L, rt_dataset_x(check_dataset(L, 1)->d));
    return 1;
}

static int d_y(lua_State *L)
{
    rtL_pushborrowed(L, rt_dataset_y(check_dataset(L, 1)->d));
    return 1;
}

/* ds:gather(idx_i32 [, xout [, yout]]) -> x, y: rows idx (0-based sample
 * ids, as the batch iterator returns them) into xout/yout or new tensors. */
static int d_gather(lua_State *L)
{
    ldataset *u = check_dataset(L, 1);
    rt_tensor *idx = rtL_checktensor(L, 2);
    if (idx->dtype != RT_DTYPE_I32 || idx->ndim != 1 || !rt_is_contiguous(idx))
        luaL_argerror(L, 2, "indices must be a contiguous i32 [B] tensor");
    rt_tensor *xo = rtL_opttensor(L, 3), *yo = rtL_opttensor(L, 4);
    int64_t B = idx->shape[0];
    rt_tensor *x = rt_dataset_x(u->d), *y = rt_dataset_y(u->d);
    if (!xo) {
        int64_t shape[RT_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        shape[0] = B;
        ltensor *t = rtL_newtensor(L);
        if (!(t->t = rt_tensor_new(S(L)->ctx, x->dtype, x->ndim, shape))) return rtL_fail(L);
        xo = t->t;
    } else {
        lua_pushvalue(L, 3);
    }
    if (y && !yo) {
        ltensor *t = rtL_newtensor(L);
        int64_t ys[RT_MAX_DIMS];
        memcpy(ys, y->shape, sizeof ys);
        ys[0] = B;
        if (!(t->t = rt_tensor_new(S(L)->ctx, RT_DTYPE_I32, y->ndim, ys))) return rtL_fail(L);
        yo = t->t;
    } else if (yo) {
        lua_pushvalue(L, 4);
    } else {
        lua_pushnil(L);
    }
    int64_t *ii = lua_newuserdatauv(L, sizeof(int64_t) * (size_t)(B ? B : 1), 0);
    for (int64_t k = 0; k < B; k++) ii[k] = rt_i32(idx)[k];
    lua_pop(L, 1);
    if (rt_dataset_gather(u->d, S(L)->ctx, ii, B, xo, y ? yo : NULL)) return rtL_fail(L);
    return 2;
}

/* The batch iterator's state: the core's batcher (core/data/batcher.c);
 * the dataset userdata is its uservalue, so the dataset outlives it. */
typedef struct batcher {
    rt_batcher *b;
} batcher;

static int b_gc(lua_State *L)
{
    batcher *u = luaL_checkudata(L, 1, MT_BATCHER);
    rt_batcher_free(u->b);
    u->b = NULL;
    return 0;
}

/* The iterator function: returns x, y, idx or nothing at the end.  The
 * tensors are reused by the next call. */
static int b_next(lua_State *L)
{
    batcher *u = luaL_checkudata(L, lua_upvalueindex(2), MT_BATCHER);
    rtL_state *st = S(L);
    if (!u->b) return 0;
    rt_tensor *xb, *yb, *ib;
    int64_t B = rt_batcher_next(u->b, st->ctx, &xb, &yb, &ib);
    if (B < 0) return rtL_fail(L);
    if (B == 0) return 0;
    if (B == rt_batcher_batch_size(u->b)) {
        rtL_pushborrowed(L, xb);
        rtL_pushborrowed(L, yb);
        rtL_pushborrowed(L, ib);
        return 3;
    }
    /* The last, short batch: views of the first B rows. */
    rt_tensor *v[3] = {xb, yb, ib};
    for (int k = 0; k < 3; k++) {
        if (!v[k]) {
            lua_pushnil(L);
            continue;
        }
        ltensor *t = rtL_newtensor(L);
        if (!(t->t = rt_tensor_narrow(st->ctx, v[k], 0, 0, B))) return rtL_fail(L);
    }
    return 3;
}

/* ds:batches(size [, {shuffle=, seed=, epoch=, drop_last=, augment=}]) -> iterator
 * Order: a permutation drawn from the stream (seed, epoch), so epoch e
 * has the same order in every run and after a resume.
 * augment = {shape = {C, H, W}, pad = 4, flip = true}: each batch's images
 * (f32, C H W values per sample) get a random crop with zero padding and a
 * horizontal flip (rt_batcher_augment), drawn from their own stream
 * (seed, epoch): reproducible, and the shuffle's draws are unchanged. */
static int d_batches(lua_State *L)
{
    ldataset *u = check_dataset(L, 1);
    lua_Integer bs = luaL_checkinteger(L, 2);
    luaL_argcheck(L, bs >= 1, 2, "batch size must be >= 1");
    int shuffle = 0, drop_last = 0, aug_index = 0;
    lua_Integer seed = 0, epoch = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_getfield(L, 3, "shuffle");
        shuffle = lua_toboolean(L, -1);
        lua_getfield(L, 3, "drop_last");
        drop_last = lua_toboolean(L, -1);
        lua_getfield(L, 3, "seed");
        seed = luaL_optinteger(L, -1, 0);
        lua_getfield(L, 3, "epoch");
        epoch = luaL_optinteger(L, -1, 0);
        lua_pop(L, 4);
        lua_getfield(L, 3, "augment");
        if (!lua_isnil(L, -1)) aug_index = lua_gettop(L);
        else lua_pop(L, 1);
    }
    int64_t aug[5] = {0, 0, 0, 4, 1}; /* C, H, W, pad, flip */
    if (aug_index) {
        luaL_argcheck(L, lua_istable(L, aug_index), 3, "augment must be a table {shape = {C, H, W}, pad =, flip =}");
        lua_getfield(L, aug_index, "shape");
        int ok = lua_istable(L, -1) && luaL_len(L, -1) == 3;
        for (int k = 0; ok && k < 3; k++) {
            lua_geti(L, -1, k + 1);
            aug[k] = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
            ok = aug[k] >= 1;
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        if (!ok) return luaL_error(L, "batches: augment.shape must be {C, H, W}, three integers >= 1");
        lua_getfield(L, aug_index, "pad");
        aug[3] = luaL_optinteger(L, -1, 4);
        lua_getfield(L, aug_index, "flip");
        aug[4] = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
        lua_pop(L, 3); /* pad, flip, augment */
    }
    batcher *b = lua_newuserdatauv(L, sizeof *b, 1);
    b->b = NULL;
    luaL_setmetatable(L, MT_BATCHER);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1); /* keeps the dataset alive */
    if (rt_batcher_new(S(L)->ctx, u->d, bs, shuffle, (uint64_t)seed, (uint64_t)epoch, drop_last, &b->b))
        return rtL_fail(L);
    if (aug_index && rt_batcher_augment(b->b, S(L)->ctx, aug[0], aug[1], aug[2], aug[3], (int)aug[4]))
        return rtL_fail(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, -2);
    lua_pushcclosure(L, b_next, 2);
    return 1;
}

static const luaL_Reg dataset_methods[] = {
    {"size", d_size}, {"x", d_x}, {"y", d_y}, {"gather", d_gather}, {"batches", d_batches}, {NULL, NULL}};

static const luaL_Reg dataset_functions[] = {
    {"dataset", l_dataset},
    {NULL, NULL}};

/* The classes Dataset and Batcher (module table at the top). */
void rtL_open_dataset(lua_State *L)
{
    rtL_new_class(L, MT_DATASET, dataset_methods, NULL, d_gc);
    luaL_newmetatable(L, MT_BATCHER);
    lua_pushcfunction(L, b_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    rtL_setfuncs(L, dataset_functions);
}
