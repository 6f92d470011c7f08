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
        if (!(t->t = rt_tensor_new(S(L)->ctx, RT_DTYPE_I32, 1, &B))) return rtL_fail(L);
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

/* The batch iterator's state.  The permutation lives in the same
 * userdata; x/y/idx buffers are reused across batches. */
typedef struct batcher {
    rt_dataset *d; /* borrowed: the dataset userdata is its uservalue */
    int64_t n, bs, pos;
    int drop_last;
    rt_tensor *xb, *yb, *ib; /* [bs, ...], [bs], [bs] i32 sample ids */
    int64_t perm[];
} batcher;

static int b_gc(lua_State *L)
{
    batcher *b = luaL_checkudata(L, 1, MT_BATCHER);
    rt_tensor_release(b->xb);
    rt_tensor_release(b->yb);
    rt_tensor_release(b->ib);
    b->xb = b->yb = b->ib = NULL;
    return 0;
}

/* The iterator function: returns x, y, idx or nothing at the end.  The
 * tensors are reused by the next call. */
static int b_next(lua_State *L)
{
    batcher *b = luaL_checkudata(L, lua_upvalueindex(2), MT_BATCHER);
    rtL_state *st = S(L);
    int64_t left = b->n - b->pos;
    if (left <= 0 || (b->drop_last && left < b->bs)) return 0;
    int64_t B = left < b->bs ? left : b->bs;
    if (rt_dataset_gather(b->d, st->ctx, b->perm + b->pos, B, b->xb, b->yb)) return rtL_fail(L);
    int32_t *ids = rt_i32(b->ib);
    for (int64_t k = 0; k < B; k++) ids[k] = (int32_t)b->perm[b->pos + k];
    b->pos += B;
    if (B == b->bs) {
        rtL_pushborrowed(L, b->xb);
        rtL_pushborrowed(L, b->yb);
        rtL_pushborrowed(L, b->ib);
        return 3;
    }
    /* The last, short batch: views of the first B rows. */
    rt_tensor *v[3] = {b->xb, b->yb, b->ib};
    for (int k = 0; k < 3; k++) {
        if (!v[k]) {
            lua_pushnil(L);
            continue;
        }
        ltensor *u = rtL_newtensor(L);
        if (!(u->t = rt_tensor_narrow(st->ctx, v[k], 0, 0, B))) return rtL_fail(L);
    }
    return 3;
}

/* ds:batches(size [, {shuffle=, seed=, epoch=, drop_last=}]) -> iterator
 * Order: a permutation drawn from the stream (seed, epoch), so epoch e
 * has the same order in every run and after a resume. */
static int d_batches(lua_State *L)
{
    ldataset *u = check_dataset(L, 1);
    lua_Integer bs = luaL_checkinteger(L, 2);
    luaL_argcheck(L, bs >= 1, 2, "batch size must be >= 1");
    int shuffle = 0, drop_last = 0;
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
    }
    int64_t n = rt_dataset_size(u->d);
    if (bs > n && n > 0) bs = n;
    batcher *b = lua_newuserdatauv(L, sizeof *b + sizeof(int64_t) * (size_t)(n ? n : 1), 1);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, MT_BATCHER);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1); /* keeps the dataset alive */
    b->d = u->d;
    b->n = n;
    b->bs = bs;
    b->drop_last = drop_last;
    if (shuffle) {
        rt_rng r;
        rt_rng_seed(&r, (uint64_t)seed, 0x6261746368ull + (uint64_t)epoch);
        rt_rng_permutation(&r, b->perm, n);
    } else {
        for (int64_t k = 0; k < n; k++) b->perm[k] = k;
    }
    rt_tensor *x = rt_dataset_x(u->d), *y = rt_dataset_y(u->d);
    int64_t shape[RT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = bs;
    rt_ctx *ctx = S(L)->ctx;
    int64_t bsz = bs;
    if (!(b->xb = rt_tensor_new(ctx, x->dtype, x->ndim, shape)) ||
        (y && !(b->yb = rt_tensor_new(ctx, RT_DTYPE_I32, 1, &bsz))) ||
        !(b->ib = rt_tensor_new(ctx, RT_DTYPE_I32, 1, &bsz)))
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
