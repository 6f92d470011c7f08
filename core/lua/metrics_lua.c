/*
 * metrics_lua.c -- evaluation metrics for the Lua layer.
 *
 *   rt.count_topk(logits, y, k) -> rows whose label is in the top k
 *   rt.js_sum(t, s [, T])       -> sum over rows of JS(softmax t, softmax s)
 *   rt.class_stats(C [, nbins]) -> a ClassStats accumulator:
 *     stats:add(logits, y)      confusion matrix and calibration bins
 *     stats:result()            { samples, confusion = {{...}} (row = label,
 *                                 column = prediction), per_class = {acc...},
 *                                 ece, bins = {{lo, hi, count, confidence,
 *                                 accuracy}, ...} }
 *
 * A ClassStats is one userdata holding its arrays (no malloc), so an error
 * in add() leaks nothing.
 */
#include <math.h>
#include <string.h>

#include "rtlua.h"

#define MT_CLASS_STATS "retort.ClassStats"
#define MAX_CLASSES 4096 /* a [C, C] int64 matrix: 128 MiB at this bound */
#define MAX_BINS 1000

typedef struct cstats {
    int64_t C, nbins, samples;
    int64_t *cm;    /* [C * C] */
    int64_t *count; /* [nbins] */
    double *conf;   /* [nbins] */
    double *hits;   /* [nbins] */
} cstats;

static int l_count_topk(lua_State *L)
{
    rt_tensor *z = rtL_checktensor(L, 1), *y = rtL_checktensor(L, 2);
    lua_Integer k = luaL_checkinteger(L, 3);
    luaL_argcheck(L, k >= 1 && k <= 1 << 30, 3, "k must be >= 1");
    int64_t n = rt_count_topk(rtL_S(L)->ctx, z, y, (int)k);
    if (n < 0) return rtL_fail(L);
    lua_pushinteger(L, n);
    return 1;
}

static int l_js_sum(lua_State *L)
{
    rt_tensor *t = rtL_checktensor(L, 1), *s = rtL_checktensor(L, 2);
    double v = rt_js_sum(rtL_S(L)->ctx, t, s, (float)luaL_optnumber(L, 3, 1.0));
    if (v < 0) return rtL_fail(L);
    lua_pushnumber(L, v);
    return 1;
}

static int l_class_stats(lua_State *L)
{
    lua_Integer C = luaL_checkinteger(L, 1), nb = luaL_optinteger(L, 2, 15);
    luaL_argcheck(L, C >= 1 && C <= MAX_CLASSES, 1, "classes must be in [1, 4096]");
    luaL_argcheck(L, nb >= 1 && nb <= MAX_BINS, 2, "bins must be in [1, 1000]");
    /* one block: header, then int64 cm and count, then the double arrays */
    size_t bytes = sizeof(cstats) + sizeof(int64_t) * (size_t)(C * C + nb) + sizeof(double) * (size_t)(2 * nb);
    cstats *s = lua_newuserdatauv(L, bytes, 0);
    memset(s, 0, bytes);
    s->C = C;
    s->nbins = nb;
    s->cm = (int64_t *)(s + 1);
    s->count = s->cm + C * C;
    s->conf = (double *)(s->count + nb);
    s->hits = s->conf + nb;
    luaL_setmetatable(L, MT_CLASS_STATS);
    return 1;
}

static int cs_add(lua_State *L)
{
    cstats *s = luaL_checkudata(L, 1, MT_CLASS_STATS);
    rt_tensor *z = rtL_checktensor(L, 2), *y = rtL_checktensor(L, 3);
    rt_ctx *ctx = rtL_S(L)->ctx;
    if (z->ndim != 2 || z->shape[1] != s->C)
        return luaL_error(L, "class_stats: logits must be [N, %d], got %d dims", (int)s->C, z->ndim);
    /* confusion first: it checks every label before either array changes */
    if (rt_confusion_add(ctx, z, y, s->cm)) return rtL_fail(L);
    if (rt_calibration_add(ctx, z, y, (int)s->nbins, s->conf, s->hits, s->count)) return rtL_fail(L);
    s->samples += z->shape[0];
    return 0;
}

static int cs_result(lua_State *L)
{
    cstats *s = luaL_checkudata(L, 1, MT_CLASS_STATS);
    int64_t C = s->C, nb = s->nbins, N = s->samples;
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, N);
    lua_setfield(L, -2, "samples");
    lua_createtable(L, (int)C, 0); /* confusion */
    lua_createtable(L, (int)C, 0); /* per_class: recall of each label */
    for (int64_t i = 0; i < C; i++) {
        int64_t row = 0;
        lua_createtable(L, (int)C, 0);
        for (int64_t j = 0; j < C; j++) {
            lua_pushinteger(L, s->cm[i * C + j]);
            lua_rawseti(L, -2, j + 1);
            row += s->cm[i * C + j];
        }
        lua_rawseti(L, -3, i + 1);
        if (row > 0) lua_pushnumber(L, (double)s->cm[i * C + i] / (double)row);
        else lua_pushboolean(L, 0); /* no sample of this class: no figure */
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -3, "per_class");
    lua_setfield(L, -2, "confusion");
    double ece = 0;
    lua_createtable(L, (int)nb, 0);
    for (int64_t b = 0; b < nb; b++) {
        lua_createtable(L, 0, 5);
        lua_pushnumber(L, (double)b / (double)nb);
        lua_setfield(L, -2, "lo");
        lua_pushnumber(L, (double)(b + 1) / (double)nb);
        lua_setfield(L, -2, "hi");
        lua_pushinteger(L, s->count[b]);
        lua_setfield(L, -2, "count");
        if (s->count[b] > 0) {
            lua_pushnumber(L, s->conf[b] / (double)s->count[b]);
            lua_setfield(L, -2, "confidence");
            lua_pushnumber(L, s->hits[b] / (double)s->count[b]);
            lua_setfield(L, -2, "accuracy");
        }
        lua_rawseti(L, -2, b + 1);
        ece += fabs(s->hits[b] - s->conf[b]);
    }
    lua_setfield(L, -2, "bins");
    if (N > 0) {
        lua_pushnumber(L, ece / (double)N);
        lua_setfield(L, -2, "ece");
    }
    return 1;
}

static const luaL_Reg functions[] = {
    {"count_topk", l_count_topk}, {"js_sum", l_js_sum}, {"class_stats", l_class_stats}, {NULL, NULL}};

static const luaL_Reg cs_methods[] = {{"add", cs_add}, {"result", cs_result}, {NULL, NULL}};

void rtL_open_metrics(lua_State *L)
{
    luaL_newmetatable(L, MT_CLASS_STATS);
    lua_newtable(L);
    rtL_setfuncs(L, cs_methods);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, MT_CLASS_STATS);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    rtL_setfuncs(L, functions);
}
