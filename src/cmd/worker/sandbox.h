/*
 * sandbox.h - how reactor-worker isolates an action.
 *
 * Mode bwrap (the default): the command runs under bubblewrap with new
 * pid, ipc and uts namespaces (and net, unless the action's platform has
 * network=on and the worker advertises network=on itself), /usr, /etc and
 * the host's /bin, /sbin and /lib* read-only, a fresh /proc and /dev, a
 * private /tmp, the root of the tmpfs read-only, and only the action's
 * exec root writable, bound at its own path.  --die-with-parent and the
 * pid namespace take every process of the action down with it, even ones
 * that called setsid; --new-session keeps it off any terminal.
 *
 * Mode none (only when asked for): the command runs directly, in a process
 * group of its own; a process that leaves the group (setsid) escapes the
 * kill at the end of the action.
 *
 * In both modes a worker running as root switches to an unprivileged
 * user first (run-as; default nobody), and the exec root is handed to
 * that user.  bwrap then runs unprivileged, in a user namespace of that
 * user, so the action is that user on the host as well.
 */
#ifndef REACTOR_SANDBOX_H
#define REACTOR_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "proto/pb.h"
#include "core/util.h"

enum sandbox_mode { SANDBOX_BWRAP, SANDBOX_NONE };

struct sandbox {
	enum sandbox_mode mode;
	char *bwrap; /* absolute path of bwrap (mode bwrap) */
	char **sys;  /* bwrap's fixed options (NULL-terminated) */
	bool drop;   /* switch to uid/gid in the child */
	uid_t uid;   /* the action's user (drop) */
	gid_t gid;
	bool allow_net; /* this worker advertises network=on */
};

/* Fill sb: mode "bwrap" or "none" (NULL = bwrap); bwrap: its path (NULL =
 * search PATH); run_as: USER, UID or UID:GID (NULL = nobody when we are
 * root, else ourselves).  Returns 0, or -1 with *err (malloc'd) when the
 * mode is unknown, bwrap cannot be found or the user does not exist. */
int sandbox_init(struct sandbox *sb, const char *mode, const char *bwrap, const char *run_as,
		 bool allow_net, char **err) WARN_UNUSED;
void sandbox_free(struct sandbox *sb);

/* "bwrap (/usr/bin/bwrap), actions run as uid 65534 gid 65534" and so on;
 * malloc'd. */
char *sandbox_describe(const struct sandbox *sb);

/* True when the Action's (or, for older clients, the Command's) platform
 * asks for network=on. */
bool sandbox_net_requested(const PbAction *a, const PbCommand *c);

/* The argv to exec for args (nargs of them) run in cwd, which lies in the
 * exec root `root`; net shares the host's network.  NULL-terminated and
 * malloc'd: free it with sandbox_argv_free. */
char **sandbox_argv(const struct sandbox *sb, const char *root, const char *cwd, bool net,
		    char *const *args, size_t nargs);
void sandbox_argv_free(char **argv);

/* Give the tree at path to the action's user (when sb->drop), so the
 * action may write in it.  Returns 0 or -errno. */
int sandbox_give(const struct sandbox *sb, const char *path) WARN_UNUSED;

/* In a forked child (async-signal-safe): stdout/stderr to out/err, every
 * other descriptor closed, the user switched, death with `parent`, cwd
 * entered (mode none), then exec argv (from sandbox_argv) with envp.
 * Never returns; exits 127 with a line on err when it cannot exec. */
void sandbox_exec_child(const struct sandbox *sb, const char *cwd, int out, int err, char **argv,
			char **envp, pid_t parent) __attribute__((noreturn));

/* SIGKILL and reap every child of the worker (which runs one action at a
 * time, so each is that action's: with bwrap, the first process of its
 * pid namespace, which becomes our child when bwrap exits, as the worker
 * is a child subreaper; it can be left behind when bwrap dies early, and
 * it takes every process of the action with it).  Returns when none is
 * left.  Not async-signal-safe. */
void sandbox_reap(void);

/* Run `true` in the sandbox with dir as its exec root, as an action would
 * be; 0, or -1 with *err saying what failed (bwrap's own complaint). */
int sandbox_probe(const struct sandbox *sb, const char *dir, char **err) WARN_UNUSED;

#endif
