/*
 * ac_walk.h - the completeness check of an ActionResult (internal to the
 * action cache, ac.c): validate every digest it holds and find the
 * referenced blobs missing from CAS, including the files listed in its
 * output directories' Tree blobs.  The walk runs in slices of bounded time
 * on the event loop, reads each distinct Tree once (in chunks, hashing as
 * it goes) and parses it one Directory at a time, so a result naming one
 * large Tree three hundred times costs one read and never holds the loop.
 */
#ifndef REACTOR_AC_WALK_H
#define REACTOR_AC_WALK_H

#include <stdbool.h>
#include <stddef.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"

struct blob_store;
struct digest;
struct event_base;
struct ac_walk;

/* What the walk found; valid until ac_walk_free.  The result is complete
 * and well-formed iff !invalid && !ioerr && !nmissing. */
struct ac_walk_res {
	char *invalid;		/* first malformed reference (the walk stopped there) */
	bool too_large;		/* invalid is about a Tree over AC_TREE_MAX */
	char *ioerr;		/* first storage error other than absence */
	struct digest *missing; /* sorted, without duplicates */
	size_t nmissing;
};

/* A walk of r (borrowed: it must outlive the walk) against cas.  done runs
 * once when the walk has finished: from inside ac_walk_run when it
 * finishes in the first slice, else from a later loop pass on base. */
struct ac_walk *ac_walk_new(struct event_base *base, struct blob_store *cas,
			    const Build__Bazel__Remote__Execution__V2__ActionResult *r,
			    void (*done)(void *arg), void *arg);
void ac_walk_run(struct ac_walk *w);
const struct ac_walk_res *ac_walk_res(const struct ac_walk *w);
/* Free w; a walk still running stops (done is not called). */
void ac_walk_free(struct ac_walk *w);

#endif
