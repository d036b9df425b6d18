/*
 * buckets_scripts.c - registers the build-bucket scripts with the store.
 * Their text lives in src/state/lua/bk_*.lua (embedded at build time); each
 * script is the shared prelude bk_lib.lua, then bk_merge.lua for Peek and
 * Search, then its own file, loaded once with SCRIPT LOAD and run with
 * EVALSHA.  The registration lives here, in the domain, so the state layer
 * stays ignorant of buckets.
 */
#include <stdlib.h>

#include "domain/buckets_int.h"
#include "state/lua.h"
#include "state/store.h"

int bk_scripts[BK_S_COUNT];

int bk_scripts_register(void)
{
	static const struct {
		const char *name; /* bk_NAME.lua */
		bool merge;	  /* needs bk_merge.lua */
	} all[BK_S_COUNT] = {
		[BK_S_PUT] = {"bk_put", false},
		[BK_S_RETRY] = {"bk_retry", false},
		[BK_S_LEASE] = {"bk_lease", false},
		[BK_S_START] = {"bk_start", false},
		[BK_S_HEARTBEAT] = {"bk_heartbeat", false},
		[BK_S_COMPLETE] = {"bk_complete", false},
		[BK_S_CANCEL] = {"bk_cancel", false},
		[BK_S_RESET] = {"bk_reset", false},
		[BK_S_EXPIRE] = {"bk_expire", false},
		[BK_S_TIMEOUT] = {"bk_timeout", false},
		[BK_S_PEEK] = {"bk_peek", true},
		[BK_S_SEARCH] = {"bk_search", true},
	};
	for (int i = 0; i < BK_S_COUNT; i++) {
		char *src = xasprintf("%s%s%s", lua_source("bk_lib"),
				      all[i].merge ? lua_source("bk_merge") : "",
				      lua_source(all[i].name));
		bk_scripts[i] = store_script_register(all[i].name, src);
		free(src);
		if (bk_scripts[i] < 0)
			return bk_scripts[i];
	}
	return 0;
}
