/*
 * lua.c - finds an embedded Lua script by name (see lua.h).
 */
#include "state/lua.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *lua_source(const char *name)
{
	size_t lo = 0, hi = lua_nscripts;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, lua_scripts[mid].name);

		if (c == 0)
			return lua_scripts[mid].src;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	fprintf(stderr, "lua_source: no embedded script %s\n", name);
	abort();
}
