/*
 * child.h - what every process reactord or reactor-worker forks does
 * between fork and exec: its own process group, death with its parent,
 * default signal dispositions, and stdin from /dev/null; and how its end
 * is described in the logs.
 */
#ifndef REACTOR_CHILD_H
#define REACTOR_CHILD_H

#include <stddef.h>
#include <sys/types.h>

/* In a forked child, before exec; async-signal-safe.  The child gets
 * `deathsig` when the parent dies (even by SIGKILL).  When parent is not 0
 * and the parent is already gone, returns -1 (the caller _exits); on a
 * failed prctl returns -2; else 0. */
int child_prepare(int deathsig, pid_t parent);

/* How a child ended, from its waitpid() status, as a predicate for a log
 * line that names the child: "exited with status 1", "was killed by signal
 * 9 (Killed)", "was stopped by signal 19 (Stopped (signal))".  Written
 * into buf (64 bytes are plenty), which is returned. */
const char *child_status_str(int status, char *buf, size_t len);

#endif
