/*
 * worker_run.h - one action on reactor-worker: stage the input root from
 * the CAS into a fresh directory, run the Command in its own process
 * group with a timeout, and collect the outputs (files, Tree messages for
 * directories, symlinks, stdout/stderr) into an ActionResult whose blobs
 * are uploaded.  Blocking; the caller's heartbeat hook runs while the
 * command does.
 */
#ifndef REACTOR_WORKER_RUN_H
#define REACTOR_WORKER_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "proto/pb.h"
#include "cmd/worker/worker_cas.h"

/* Called every `heartbeat_us` while the command runs; returning false
 * kills it (the lease was cancelled or the session lost). */
typedef bool (*wrun_beat_fn)(void *arg);

struct sandbox;

struct wrun_req {
	struct wcas *cas;
	const char *dir;    /* the action's scratch directory, created and removed here */
	const char *worker; /* ExecutedActionMetadata.worker */
	const PbAction *action;
	const PbCommand *command;
	int64_t timeout_us; /* 0 = none */
	int64_t heartbeat_us;
	wrun_beat_fn beat;
	void *beat_arg;
	int64_t queued_us; /* when the lease arrived (metadata) */
	const struct sandbox *sandbox; /* how the command runs (sandbox.h) */
};

/* Outcome of an action.  code/message: the google.rpc.Status for the
 * lease (GRPC_OK, DEADLINE_EXCEEDED, FAILED_PRECONDITION for a missing
 * input, INTERNAL/UNAVAILABLE for our failures, CANCELLED).  result: the
 * packed ActionResult (malloc'd; NULL when there is none). */
struct wrun_out {
	int code;
	char *message;
	uint8_t *result;
	size_t result_len;
};

void wrun_action(const struct wrun_req *r, struct wrun_out *out);
void wrun_out_free(struct wrun_out *o);

/* Remove a directory tree (best effort; makes read-only dirs writable). */
void wrun_rmtree(const char *path);

/* Kill the running command's process group, if any (async-signal-safe). */
void wrun_kill_running(void);

#endif
