/*
 * child.h - what every process reactord or reactor-worker forks does
 * between fork and exec: its own process group, death with its parent,
 * default signal dispositions, and stdin from /dev/null.
 */
#ifndef REACTOR_CHILD_H
#define REACTOR_CHILD_H

#include <sys/types.h>

/* In a forked child, before exec; async-signal-safe.  The child gets
 * `deathsig` when the parent dies (even by SIGKILL).  When parent is not 0
 * and the parent is already gone, returns -1 (the caller _exits); on a
 * failed prctl returns -2; else 0. */
int child_prepare(int deathsig, pid_t parent);

#endif
