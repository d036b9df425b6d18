/*
 * sched_lua.h - the scheduler's Lua script texts (sched_lua.c documents
 * each one's KEYS, ARGV and reply).  sched.c registers them with the
 * store and is their only caller.
 */
#ifndef REACTOR_SCHED_LUA_H
#define REACTOR_SCHED_LUA_H

extern const char sched_lua_enqueue[];
extern const char sched_lua_cached[];
extern const char sched_lua_view[];
extern const char sched_lua_cancel[];
extern const char sched_lua_delete[];
extern const char sched_lua_list[];
extern const char sched_lua_bot_create[];
extern const char sched_lua_bot_update[];
extern const char sched_lua_assign[];
extern const char sched_lua_unassign[];
extern const char sched_lua_queued[];
extern const char sched_lua_sweep[];

#endif
