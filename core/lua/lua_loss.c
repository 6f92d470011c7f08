/*
 * lua_loss.c -- losses written in Lua, bridged to the loss ABI.
 */
#include "rtlua.h"

void rtL_open_lua_loss(lua_State *L) { (void)L; }
