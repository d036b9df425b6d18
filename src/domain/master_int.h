/*
 * master_int.h - what master.c (leases, peeks, heartbeats, events,
 * shutdown) and master_build.c (one build's run: validation, workspace,
 * steps as REAPI actions, the report) share.  Not for other modules.
 */
#ifndef REACTOR_MASTER_INT_H
#define REACTOR_MASTER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "core/cfg.h"
#include "core/digest.h"
#include "core/json.h"
#include "core/list.h"
#include "core/util.h"
#include "proto/pb.h"
#include "reactor/buckets/v1/buckets.pb-c.h"
#include "rpc/client.h"

struct event_base;

#define MMOD "master"

/* Short names of the generated reactor.buckets.v1 types and enums. */
#define BKM(x) Reactor__Buckets__V1__##x
#define BKE(x) REACTOR__BUCKETS__V1__##x

#define RPC_OK 0 /* gRPC status OK (rpc/grpc.h is not the domain's to include) */

/* A build's life in this master (enum, names in master.c). */
enum mb_state {
	MB_LEASING,   /* Lease sent */
	MB_STARTING,  /* leased; Start (or Fail INVALID_BUILD_DEFINITION) sent */
	MB_RUNNING,   /* a step's upload or Execute is in flight */
	MB_REPORTING, /* Succeed or Fail sent */
	MB_DONE,      /* reported, or given up: off the held list */
};

/* One file of the workspace, carried from step to step. */
struct mb_file {
	char *path; /* relative, '/'-separated */
	struct digest d;
	bool exec;
};

/* One step's record (the result details' "steps" entry). */
struct mb_steprec {
	char *name;
	const char *status; /* "SUCCESS", "FAILURE", "INFRA_FAILURE" */
	int exit_code;
	int64_t duration_us;
	bool cached;
	char *worker;
	char action[DIGEST_STR_LEN], out[DIGEST_STR_LEN], err[DIGEST_STR_LEN];
};

/* A copy of the builder a build runs with: a reload may free the config
 * while the build goes on. */
struct mb_builder {
	char *name;
	struct cfg_step *steps;
	int n_steps;
};

/* One build leased (or being leased) by this master.  refs: the list
 * holds one while the build is held, every call in flight one more; the
 * build is freed at zero.  A call's callback first checks `gone`. */
struct mbuild {
	struct list link; /* on the master's held list while !gone */
	int refs;
	bool gone; /* lease lost, reported or master stopping: ignore replies */
	enum mb_state state;
	int64_t id;
	int64_t lease_key;
	char *bucket;
	char *params_json;
	char *builder_name;
	char *url;
	char *props_json;    /* the build's properties with the builder's defaults, an object */
	char *build_json;    /* build.json for cacheable steps (no build_id) */
	char *build_json_id; /* build.json with build_id, for cache: false steps */
	struct mb_builder *bld;
	int step; /* current step index */
	int64_t step_start_mono;
	struct mb_file *files; /* the workspace */
	int nfiles;
	struct mb_steprec *recs;
	int nrecs;
	struct rc_call *exec_call; /* the running Execute, to cancel */
	PbDigest *cur_action;	   /* scratch owned by the step in flight */
	struct digest action_d;
	ProtobufCMessage *last_op; /* the Execute stream's last Operation */
	int pending_trees;	   /* output directories still being read */
	/* master_state.c */
	bool saved;		 /* its record is in Redis */
	bool keep_state;	 /* released by a shutdown: the record stays for a restart */
	char *op_name;		 /* the running step's operation, once Execute named it */
	int64_t step_started_us; /* wall clock, for a resumed step's duration */
};

/* ---- master.c, for master_build.c -------------------------------------- */

/* The clients (reconnected when their connection has gone). */
struct rc_client *master_bk(void);
struct rc_client *master_ex(void);
const char *master_instance(void);
const char *master_name(void);
const struct cfg_master *master_cfg(void);

void mb_ref(struct mbuild *b);
void mb_unref(struct mbuild *b);
/* Drop the build from the held list (its slot is free again) and mark it
 * gone; the master peeks again if it had no free slot. */
void mb_release(struct mbuild *b, const char *why);
const char *mb_state_name(enum mb_state s);
void mb_set_state(struct mbuild *b, enum mb_state to);

/* Put a build read back from Redis on the held list (it holds that
 * list reference); a heartbeat for every held lease now. */
void mb_adopt(struct mbuild *b);
void master_heartbeat_now(void);
/* Peek on the next loop pass. */
void master_wake(void);
/* True once master_drain() began. */
bool master_draining(void);

/* ---- master_build.c ----------------------------------------------------- */

/* The build b was just leased: validate its parameters against the
 * builder (Fail INVALID_BUILD_DEFINITION when they do not fit), Start it
 * and run its steps, then report.  b holds its list reference. */
void mb_run(struct mbuild *b, const struct cfg_builder *builder);
/* Free what master_build.c hung on b. */
void mb_free_run(struct mbuild *b);
/* Cancel b's running Execute, if any (the lease is lost or we stop). */
void mb_cancel_exec(struct mbuild *b);
/* A build held before a restart and read back (workspace, records, step,
 * operation restored by master_state.c): Start it unless started, then
 * re-attach to the step's operation with WaitExecution (an unknown or
 * failed one runs the step again) or run the step. */
void mb_resume(struct mbuild *b, const struct cfg_builder *builder, bool started);
/* Append JSON text of j to *s (length *n; realloc'd). */
void mb_json_text(char **s, size_t *n, const struct json *j);

/* ---- master_state.c: the master's keys in Redis (state/keys.c) ---------- */

/* The lease was taken: record the held build (b->saved). */
void mstate_hold(struct mbuild *b);
/* Step b->step began (its action in b->action_d), Execute named its
 * operation, it ended (its record is the last of b->recs). */
void mstate_step_start(struct mbuild *b);
void mstate_step_op(struct mbuild *b, const char *op);
void mstate_step_end(struct mbuild *b);
/* Forget b (reported, lease lost, reset); its step records expire. */
void mstate_drop(struct mbuild *b);
/* Record b's changes once per (id, revision), take the recorded forms
 * into b->params_json, then mb_run(b, the builder) -- at once when there
 * is nothing to record. */
void mstate_changes(struct mbuild *b, const struct cfg_builder *builder);
/* Read back what this master held and resume what the Buckets service
 * says it still holds; drop the rest.  Peeks wait (mstate_resuming)
 * until that is done or 10 s have passed. */
void mstate_resume(struct event_base *base);
bool mstate_resuming(void);
void mstate_free(void);

/* ---- one step's blobs and the JSON writer (master_action.c, master_build.c) ---- */

/* A blob the master made for a step (directory, build.json, command,
 * action), uploaded unless the CAS has it. */
struct mblob {
	struct digest d;
	uint8_t *data;
	size_t len;
};

/* One step's uploads in flight. */
struct mstep {
	struct mbuild *b;
	struct mblob *blobs;
	size_t nblobs;
};

struct sbuf {
	char *s;
	size_t n;
};

void mb_sb_add(struct sbuf *sb, const char *fmt, ...) PRINTF_LIKE(2, 3);
void mb_sb_str(struct sbuf *sb, const char *s, size_t len);
void mb_sb_json(struct sbuf *sb, const struct json *j);
/* A protobuf Digest for d: the struct is malloc'd, its hash points into d. */
PbDigest *mb_pbd(const struct digest *d);
/* msg packed into a malloc'd buffer of *len bytes. */
uint8_t *mb_pack(const ProtobufCMessage *msg, size_t *len);
/* Build the current step's input root, Command and Action as blobs in st. */
void mb_make_action(struct mbuild *b, struct mstep *st);
void mb_step_free(struct mstep *st);

#endif
