/*
 * inst.h - the REAPI instances this server serves, at run time: each
 * configured instance name with its open blob store.  Services look the
 * instance up by the request's instance_name and answer INVALID_ARGUMENT
 * (via inst_lookup's message) when it is not configured.
 */
#ifndef REACTOR_INST_H
#define REACTOR_INST_H

#include <stdbool.h>

#include "rpc/call.h"
#include "core/util.h"

struct event_base;
struct cfg;
struct cfg_instance;
struct blob_store;

struct cas_remote;
struct inst {
	char *name;
	struct blob_store *cas;
	struct cas_remote *cas_remote; /* storage: remote | sharded (cas_remote.h), else NULL */
};

/* The config in force (per-instance switches, message size limit); called
 * at start and on every reload, cfg valid until the next call. */
void inst_configure(const struct cfg *cfg);

/* Open every instance's blob store (disk stores live under
 * STATE-DIR/cas/<name>).  Returns 0, or -1 with *err (malloc'd). */
int inst_open_all(struct event_base *base, const struct cfg *cfg, char **err) WARN_UNUSED;
void inst_close_all(void);

/* The instance called `name`, or NULL. */
struct inst *inst_find(const char *name);

/* Find the instance or finish the call with INVALID_ARGUMENT naming it. */
struct inst *inst_lookup(struct call *c, const char *name);

/* The live (reloadable) configuration entry of an instance. */
const struct cfg_instance *inst_cfg(const struct inst *in);

/* The batch limit for CAS batch calls: the instance's max-batch-size
 * clipped to what max-recv-message-size can carry. */
int64_t inst_max_batch(const struct inst *in);

#endif
