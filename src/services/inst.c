/*
 * inst.c - run-time REAPI instances: one blob store per configured
 * instance name.  Stores are opened at start-up (not reloadable); the
 * reloadable per-instance switches (allow-updates) are read on every call
 * from the config the daemon passes in with inst_configure.
 */
#include "services/inst.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "domain/blob.h"
#include "services/cas_remote.h"
#include "core/cfg.h"
#include "core/log.h"

#define MEMORY_DEFAULT_MAX (1LL << 30)
/* Room for the request envelope around the blobs of a batch. */
#define BATCH_OVERHEAD (64 * 1024)

static struct inst *insts;
static int ninsts;
static const struct cfg *live; /* inst_configure */

void inst_configure(const struct cfg *cfg)
{
	live = cfg;
}

/* Instance names may hold '/': keep the directory name flat and readable. */
static char *dir_name(const char *name)
{
	if (!*name)
		return xstrdup("default");
	char *out = xmalloc(strlen(name) * 3 + 1), *o = out;
	for (const char *p = name; *p; p++) {
		if (*p == '/' || *p == '%') {
			o += sprintf(o, "%%%02X", (unsigned char)*p);
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
	return out;
}

int inst_open_all(struct event_base *base, const struct cfg *cfg, char **err)
{
	insts = xcalloc((size_t)cfg->n_instances, sizeof(*insts));
	char *casdir = xasprintf("%s/cas", cfg->state_dir);
	bool any_disk = false;
	for (int i = 0; i < cfg->n_instances; i++)
		any_disk |= cfg->instances[i].storage == CFG_STORAGE_DISK ||
			    cfg->instances[i].shard_self;
	if (any_disk && mkdir(casdir, 0755) != 0 && errno != EEXIST) {
		*err = xasprintf("%s: %s", casdir, strerror(errno));
		free(casdir);
		return -1;
	}
	for (int i = 0; i < cfg->n_instances; i++) {
		const struct cfg_instance *ci = &cfg->instances[i];
		struct inst *in = &insts[i];
		in->name = xstrdup(ci->name);
		ninsts++;
		if ((ci->storage == CFG_STORAGE_REMOTE || ci->storage == CFG_STORAGE_SHARDED) &&
		    !ci->shard_self) {
			/* No shard of its own: a memory store for Execute's inputs. */
			in->cas = blob_open_memory(ci->cache_size ? ci->cache_size : 64LL << 20);
		} else if (ci->storage == CFG_STORAGE_MEMORY) {
			in->cas = blob_open_memory(ci->storage_max_size ? ci->storage_max_size
									: MEMORY_DEFAULT_MAX);
		} else {
			char *d = dir_name(ci->name);
			char *dir = xasprintf("%s/%s", casdir, d);
			free(d);
			in->cas = blob_open_disk(base, dir, ci->storage_max_size, err);
			free(dir);
			if (!in->cas) {
				free(casdir);
				return -1;
			}
			blob_disk_set_verify_streams(in->cas, ci->verify_reads);
			blob_disk_set_fsync(in->cas, ci->storage_fsync);
			blob_disk_set_pack(in->cas, ci->small_blob_size, ci->segment_size,
					   ci->compact_live_percent);
		}
		if ((ci->storage == CFG_STORAGE_REMOTE || ci->storage == CFG_STORAGE_SHARDED) &&
		    cas_remote_open(base, ci, in->cas, &in->cas_remote, err) != 0) {
			free(casdir);
			return -1;
		}
		LOGI("inst", "instance \"%s\": %s CAS%s", ci->name,
		     ci->storage == CFG_STORAGE_MEMORY	 ? "memory"
		     : ci->storage == CFG_STORAGE_REMOTE ? "remote"
		     : ci->storage == CFG_STORAGE_SHARDED ? "sharded"
							  : "disk",
		     ci->storage_max_size ? " with a size limit" : "");
	}
	free(casdir);
	return 0;
}

void inst_close_all(void)
{
	for (int i = 0; i < ninsts; i++) {
		cas_remote_close(insts[i].cas_remote);
		if (insts[i].cas)
			blob_close(insts[i].cas);
		free(insts[i].name);
	}
	free(insts);
	insts = NULL;
	ninsts = 0;
}

struct inst *inst_find(const char *name)
{
	for (int i = 0; i < ninsts; i++)
		if (strcmp(insts[i].name, name) == 0)
			return &insts[i];
	return NULL;
}

struct inst *inst_lookup(struct call *c, const char *name)
{
	struct inst *in = inst_find(name);
	if (!in)
		call_finish(c, GRPC_INVALID_ARGUMENT,
			    "unknown instance name \"%s\": not in this server's instances list",
			    name);
	return in;
}

const struct cfg_instance *inst_cfg(const struct inst *in)
{
	const struct cfg_instance *ci = live ? cfg_instance_find(live, in->name) : NULL;
	/* A reload may drop an instance; its stores stay open until restart,
	 * and it keeps the defaults. */
	static const struct cfg_instance fallback = {.allow_updates = true,
						     .max_batch_size = (4 << 20) - (64 << 10)};
	return ci ? ci : &fallback;
}

int64_t inst_max_batch(const struct inst *in)
{
	int64_t lim = inst_cfg(in)->max_batch_size;
	int64_t msg = live ? live->grpc_max_recv_message_size : 4 << 20;
	/* The envelope's room, never more than a quarter of a small message,
	 * so the advertised batch size stays positive down to the 1 KiB minimum. */
	int64_t carry = msg - (msg / 4 < BATCH_OVERHEAD ? msg / 4 : BATCH_OVERHEAD);
	return lim < carry ? lim : carry;
}
