/*
 * finite_lua.c -- NaN and inf checks for the Lua layer, naming samples.
 *
 *   rt.check_finite(t, what [, ids]) -> t, or an error at the calling line:
 *     "WHAT is nan for sample 17 (0-based), class 3" for [N, C] f32 t when
 *     ids (i32 [>= N], the batch's sample ids: the third value of
 *     ds:batches) maps rows to samples; "at row R (0-based) of the batch"
 *     without; "at [i, j, ...]" for other shapes.  One vectorised pass
 *     (rt_check_finite); i32 tensors always pass.
 *
 *   rt.label_range(y) -> smallest, largest label of an i32 tensor
 *   rt.label_mask(y [, mask]) -> mask, count: 1 where labelled (y >= 0)
 *
 * The trainer calls check_finite on teacher outputs and on each loss term's
 * gradient; teacher:forward(x [, ids]) calls rtL_check_rows on its logits.
 */
#include "rtlua.h"

int rtL_check_rows(lua_State *L, const rt_tensor *t, const char *what, const rt_tensor *ids)
{
    if (t->dtype != RT_DTYPE_F32) return 0;
    if (!rt_is_contiguous(t) || t->ndim != 2) {
        if (rt_tensor_all_finite(t)) return 0;
        if (rt_is_contiguous(t) && rt_tensor_check_finite(rtL_S(L)->ctx, t, what)) return rtL_fail(L);
        return luaL_error(L, "%s has NaN or inf values", what);
    }
    int64_t k = rt_check_finite(rt_f32(t), rt_numel(t));
    if (k < 0) return 0;
    int64_t C = t->shape[1], row = k / C, col = k % C;
    const char *v = rt_nonfinite_name(rt_f32(t)[k]);
    if (ids && ids->dtype == RT_DTYPE_I32 && ids->ndim == 1 && rt_is_contiguous(ids) && ids->shape[0] >= t->shape[0])
        return luaL_error(L, "%s is %s for sample %d (0-based), class %d", what, v, (int)rt_i32(ids)[row], (int)col);
    return luaL_error(L, "%s is %s at row %d (0-based) of the batch, class %d", what, v, (int)row, (int)col);
}

static int l_check_finite(lua_State *L)
{
    rt_tensor *t = rtL_checktensor(L, 1);
    const char *what = luaL_checkstring(L, 2);
    rt_tensor *ids = rtL_opttensor(L, 3);
    rtL_check_rows(L, t, what, ids);
    lua_settop(L, 1);
    return 1;
}

/* rt.label_range(y) -> smallest, largest of an i32 tensor (nothing when
 * empty): the trainer checks labels against the classes before a step. */
static int l_label_range(lua_State *L)
{
    rt_tensor *y = rtL_checktensor(L, 1);
    luaL_argcheck(L, y->dtype == RT_DTYPE_I32 && rt_is_contiguous(y), 1, "labels must be a contiguous i32 tensor");
    int64_t n = rt_numel(y);
    if (n == 0) return 0;
    const int32_t *v = rt_i32(y);
    int32_t lo = v[0], hi = v[0];
    for (int64_t i = 1; i < n; i++) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
    }
    lua_pushinteger(L, lo);
    lua_pushinteger(L, hi);
    return 2;
}

/* rt.label_mask(y [, mask]) -> mask, count: mask i32 of y's shape, 1 where
 * y holds a label (>= 0), 0 where it is -1 (unlabelled); count = the
 * labelled positions.  mask (reused when its shape fits, else a new one)
 * lets a step avoid an allocation per batch. */
static int l_label_mask(lua_State *L)
{
    rt_tensor *y = rtL_checktensor(L, 1);
    luaL_argcheck(L, y->dtype == RT_DTYPE_I32 && rt_is_contiguous(y), 1, "labels must be a contiguous i32 tensor");
    rt_tensor *m = rtL_opttensor(L, 2);
    int fits = m && m->dtype == RT_DTYPE_I32 && rt_is_contiguous(m) && rt_tensor_same_shape(m, y);
    if (!fits) {
        ltensor *u = rtL_newtensor(L);
        if (!(u->t = rt_tensor_new(rtL_S(L)->ctx, RT_DTYPE_I32, y->ndim, y->shape))) return rtL_fail(L);
        rtL_account(L, u->t);
        m = u->t;
    } else {
        lua_pushvalue(L, 2);
    }
    int64_t n = rt_numel(y), count = 0;
    const int32_t *v = rt_i32(y);
    int32_t *o = rt_i32(m);
    for (int64_t i = 0; i < n; i++) {
        o[i] = v[i] >= 0;
        count += o[i];
    }
    lua_pushinteger(L, count);
    return 2;
}

static const luaL_Reg functions[] = {{"check_finite", l_check_finite}, {"label_range", l_label_range},
                                     {"label_mask", l_label_mask}, {NULL, NULL}};

void rtL_open_finite(lua_State *L) { rtL_setfuncs(L, functions); }
