/*
 * lua.h - the Lua scripts reactord runs inside Redis.  Their text lives in
 * .lua files (src/state/lua/NAME.lua); the build embeds them
 * (contrib/build/lua2c.sh) into the sorted table below, and callers
 * register them with store_script_register(name, lua_source(name)), so
 * every script is loaded once with SCRIPT LOAD and called with EVALSHA.
 */
#ifndef REACTOR_LUA_H
#define REACTOR_LUA_H

#include <stddef.h>

struct lua_script {
	const char *name; /* file name without ".lua" */
	const char *src;  /* the file's text */
};

/* Sorted by name; generated at build time. */
extern const struct lua_script lua_scripts[];
extern const size_t lua_nscripts;

/* The text of script `name`; aborts when no such file was embedded (a
 * build error, not a run-time condition). */
const char *lua_source(const char *name);

#endif
