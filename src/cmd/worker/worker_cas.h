/*
 * worker_cas.h - reactor-worker's CAS access: the programs' one CAS client
 * (domain/cas_client.h: batches within max_batch_total_size_bytes,
 * ByteStream for larger blobs, every read verified) with the worker's
 * rules on top: input files created beneath the input root without
 * following a symlink, output files opened beneath the working
 * directory.  Calls are synchronous: they run the client's event loop
 * until the RPC ends (the worker is a separate process and may block).
 */
#ifndef REACTOR_WORKER_CAS_H
#define REACTOR_WORKER_CAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/digest.h"
#include "domain/cas_client.h"

struct rc_client;
struct event_base;

/* The worker's settings of the programs' CAS client (domain/cas_client.h). */
struct wcas {
	struct casc c;
	int64_t max_batch; /* bytes of blob data per batch request */
	/* The server's symlink_absolute_path_strategy is ALLOWED. */
	bool absolute_symlinks;
};

/* Errors: 0; WCAS_MISSING when a blob is not in the CAS (the caller turns
 * it into FAILED_PRECONDITION; *err names it "blobs/HASH/SIZE"); WCAS_EIO
 * for anything else (transport, bad digest, local I/O), *err says what.
 * *err is malloc'd; the caller frees it. */
#define WCAS_MISSING (-2)
#define WCAS_EIO     (-1)

/* Ask GetCapabilities for the batch limit.  Returns 0 or WCAS_EIO. */
int wcas_init(struct wcas *w, struct event_base *base, struct rc_client *cl, const char *instance,
	      char **err);

/* Read n blobs into memory: out[i] is malloc'd (never NULL, even for an
 * empty blob) with length lens[i]; on error nothing is returned (all
 * freed). */
int wcas_read_many(struct wcas *w, const struct digest *d, size_t n, uint8_t **out, size_t *lens,
		   char **err);

/* Write blobs to files: each digest goes to path[i], relative to the
 * directory fd `at` (created 0644 or 0755 when exec[i]; parents must
 * exist).  Every file is new (O_EXCL) and resolved beneath `at` without
 * following any symlink, so an input tree cannot write elsewhere.
 * Duplicate digests are fetched once. */
struct wcas_file {
	struct digest d;
	char *path;
	bool exec;
};
int wcas_fetch_files(struct wcas *w, int at, const struct wcas_file *f, size_t n, char **err);

/* A blob to upload: either in memory (data) or in a file (path, opened
 * beneath the directory fd `at` with no symlink as its last component;
 * with at == AT_FDCWD, path is opened as it is, still O_NOFOLLOW). */
struct wcas_blob {
	struct digest d;
	const uint8_t *data; /* borrowed; NULL when path is set */
	const char *path;    /* borrowed */
	int at;
};
/* Upload those blobs the CAS is missing (FindMissingBlobs first).  Empty
 * blobs are skipped: servers must treat them as always present. */
int wcas_upload(struct wcas *w, const struct wcas_blob *b, size_t n, char **err);

/* Hash a file (not through a symlink at the end of path), or what is left
 * of an open one: 0 or -1 with errno set. */
int wcas_digest_file(const char *path, struct digest *out);
int wcas_digest_fd(int fd, struct digest *out);

#endif
