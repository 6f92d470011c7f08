/*
 * metrics_lua.c -- evaluation metrics for the Lua layer.
 */
#include "rtlua.h"

void rtL_open_metrics(lua_State *L) { (void)L; }
