/*
 * rtlua.h -- private to the Lua binding (core/lua/): what its files share.
 *
 * Every C function registered through rtL_setfuncs has the binding's state
 * (rtL_state: the call context and the plugin registry) as upvalue 1; reach
 * it with rtL_S(L).  The rules of retort_lua.c hold in every file: check
 * Lua arguments first, acquire C resources after, and let a userdata that
 * exists before the resource own it (rtL_newtensor), so that luaL_error
 * never leaks.
 */
#ifndef RTLUA_H
#define RTLUA_H

#include <lauxlib.h>
#include <lua.h>

#include "retort.h"

#define MT_TENSOR "retort.Tensor"
#define MT_STUDENT "retort.Student"
#define MT_TEACHER "retort.Teacher"
#define MT_LOSS "retort.Loss"
#define MT_OPTIM "retort.Optimizer"
#define MT_DATASET "retort.Dataset"
#define MT_BATCHER "retort.Batcher"
#define MT_STATE "retort.State"
#define MT_BOX "retort.Box"

typedef struct rtL_state {
    rt_ctx *ctx;
    rt_registry *reg;   /* use rtL_registry(L): plugins load on first use */
    int plugins_loaded; /* the default folders were loaded into reg */
    size_t unbilled;    /* tensor bytes not yet billed to the collector */
} rtL_state;

/* A Tensor userdata: one reference to t (NULL once closed). */
typedef struct ltensor {
    rt_tensor *t;
} ltensor;

/* A Student/Teacher/Loss userdata: one reference to the instance; losses
 * keep a reusable gradient buffer. */
typedef struct linst {
    rt_instance *i;
    rt_tensor *grad;
} linst;

rtL_state *rtL_S(lua_State *L);
/* The plugin registry; the first call loads the built-in folder and
 * RETORT_PLUGIN_PATH (warning on stderr, rt.plugin_load_error). */
rt_registry *rtL_registry(lua_State *L);
/* Raises the context's message at the calling Lua line; never returns. */
int rtL_fail(lua_State *L);

/* Pushes an empty Tensor userdata for the caller to fill (->t). */
ltensor *rtL_newtensor(lua_State *L);
/* Bills t's data bytes to the Lua collector (a GC step of that size);
 * call it once the binding has allocated a tensor for a new userdata. */
void rtL_account(lua_State *L, const rt_tensor *t);
/* Pushes t as a Tensor, retaining it; NULL pushes nil. */
void rtL_pushborrowed(lua_State *L, rt_tensor *t);
rt_tensor *rtL_checktensor(lua_State *L, int i);
rt_tensor *rtL_opttensor(lua_State *L, int i);
rt_dtype rtL_checkdtype(lua_State *L, int i, const char *def);
/* A string argument bound for C (path, name, option): one with an embedded
 * NUL is an argument error naming what.  tocstr: the same for a string
 * already on the stack (table keys and values). */
const char *rtL_checkcstr(lua_State *L, int i, const char *what);
const char *rtL_tocstr(lua_State *L, int i, const char *what);
/* A number for a tensor of dtype dt (i32: an integer in int32 range). */
lua_Number rtL_checkelem(lua_State *L, int i, rt_dtype dt);
/* Reads a shape table {d1, ...} into shape; returns ndim. */
int rtL_checkshape(lua_State *L, int i, int64_t *shape);
/* Pushes the JSON text of the value at i (nil -> "{}"), keys sorted. */
const char *rtL_tojson(lua_State *L, int i);

/* A GC-owned array of all of i's parameters, pushed; *n gets the count. */
rt_param *rtL_push_params(lua_State *L, rt_instance *i, int *n);
/* Metadata table at i -> parallel key/value arrays (GC-owned, pushed);
 * returns the count. */
int rtL_meta_arrays(lua_State *L, int i, const char ***keys, const char ***vals);
linst *rtL_checkinst(lua_State *L, int i, const char *mt);
linst *rtL_checkany(lua_State *L, int i); /* student, teacher or loss */
int rtL_inst_gc(lua_State *L);            /* __gc of the three (rtlua.c) */
int rtL_box_gc(lua_State *L);             /* __gc of MT_BOX (rtlua.c) */
/* A box owns a malloc'd C object with a destructor, for objects built
 * before they can be pushed (cJSON trees, parsed files). */
typedef struct box {
    void *p;
    void (*free)(void *);
} box;
/* Pushes an empty box (MT_BOX) whose __gc calls fr on p. */
box *rtL_box_new(lua_State *L, void (*fr)(void *));

/* Sets l into the table at the top, each a closure over the state. */
void rtL_setfuncs(lua_State *L, const luaL_Reg *l);
/* Adds methods to metatable mt's __index table. */
void rtL_add_methods(lua_State *L, const char *mt, const luaL_Reg *l);

/* Creates metatable name with __index = the methods of m1 and m2 (NULL:
 * none), each a closure over the state; gc (or NULL) is __gc and __close. */
void rtL_new_class(lua_State *L, const char *name, const luaL_Reg *m1, const luaL_Reg *m2, lua_CFunction gc);

/* Hooks called by luaopen_retort with the module table at the top of the
 * stack (each leaves the stack as it found it).  One file per class, as
 * Lua splits its libraries: */
void rtL_open_tensor(lua_State *L);     /* tensor_lua.c: Tensor           */
void rtL_open_instance(lua_State *L);   /* instance_lua.c: Student, ...   */
void rtL_open_optim(lua_State *L);      /* optim_lua.c: Optimizer         */
void rtL_open_dataset(lua_State *L);    /* dataset_lua.c: Dataset, batches */
void rtL_open_io(lua_State *L);         /* io_lua.c: files                */
/* and the others: */
void rtL_open_tensor_ops(lua_State *L); /* tensor_ops.c: tensor math     */
void rtL_open_lua_loss(lua_State *L);   /* lua_loss.c: losses in Lua      */
/* lua_loss.c: loss:set(name, value) for a boolean or string value. */
int rtL_loss_set_value(lua_State *L);
void rtL_open_metrics(lua_State *L);    /* metrics_lua.c: evaluation      */
void rtL_open_provenance(lua_State *L); /* provenance_lua.c: weights hash */
void rtL_open_runfolder(lua_State *L);  /* runfolder_lua.c: lock, appends */
void rtL_open_finite(lua_State *L);     /* finite_lua.c: NaN/inf checks   */

/* Raises "WHAT is nan for sample S (0-based), class C" at the calling line
 * when t ([N, C] f32) holds a NaN or inf; ids (i32 [>= N] sample ids, or
 * NULL: rows of the batch) names the sample.  Returns 0 when all finite. */
int rtL_check_rows(lua_State *L, const rt_tensor *t, const char *what, const rt_tensor *ids);
void rtL_open_abi(lua_State *L);        /* abi_lua.c: ABI 2.0 surfaces    */
void rtL_open_lm(lua_State *L);         /* lm_lua.c: text data, generation */
/* abi_lua.c: loss:forward{...} / loss:backward{...} (backward != 0). */
int rtL_loss_call_table(lua_State *L, int backward);
/* abi_lua.c: a student's parameters and, for each {prefix, loss} in the
 * list at index extras, the loss's own (prefixed); GC-owned. */
rt_param *rtL_run_params(lua_State *L, rt_instance *s, int extras, int *n);

#endif
