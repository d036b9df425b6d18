/*
 * cas_client.h - the one client-side CAS of the programs: GetCapabilities
 * (the batch limit, the symlink strategy), FindMissingBlobs in slices,
 * uploading a set of blobs of which only the missing ones go (small ones
 * in BatchUpdateBlobs requests within max_batch_total_size_bytes, big ones
 * streamed with ByteStream Write paced by QueryWriteStatus), and reads
 * verified against their digests (ByteStream Read into a file descriptor
 * or memory; BatchReadBlobs for the small blobs of a set).  Used by
 * reactorctl and reactor-worker over one rc_client.
 *
 * It lives in the domain layer, not rpc: it speaks REAPI messages, and
 * t/layers.sh lets only the domain, services and programs use those
 * generated types (rpc may use google/rpc and google/protobuf only); the
 * domain may use rpc/client.h.
 *
 * Calls are synchronous: each runs the client's event loop until its RPCs
 * end, so only a separate process (reactorctl, the worker) may use them,
 * never reactord's own loop.  Errors follow core/err.h: 0, -ENOENT when a
 * blob is not in the CAS (*msg "blobs/HASH/SIZE"), -EIO for anything else
 * (the server's answer, transport, a bad digest, local I/O), with *msg
 * (malloc'd) saying what.  When the failure was a gRPC status, c->status
 * and c->status_msg hold it (so a command line tool can print the server's
 * own words); both are reset by each call.
 */
#ifndef REACTOR_DOMAIN_CAS_CLIENT_H
#define REACTOR_DOMAIN_CAS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/digest.h"
#include "core/util.h"

struct event_base;
struct rc_client;
struct casc_blob;

/* Progress of one ByteStream transfer, for a progress bar: begin(verb
 * "upload" or "download", the file being uploaded or NULL, total bytes),
 * add(bytes moved), end().  Any may be NULL. */
struct casc_progress {
	void (*begin)(void *arg, const char *verb, const char *path, int64_t total);
	void (*add)(void *arg, int64_t n);
	void (*end)(void *arg);
};

struct casc {
	struct event_base *base;
	struct rc_client *cl; /* borrowed */
	const char *instance; /* borrowed */
	int64_t timeout_us;   /* deadline of each unary call; 0 none */
	int64_t stream_us;    /* deadline of each ByteStream call; 0 none */
	/* From GetCapabilities (casc_caps): bytes per batch request, and
	 * whether absolute symlink targets are ALLOWED. */
	int64_t max_batch;
	bool absolute_symlinks;
	bool have_caps;
	/* The gRPC status of the call that failed (0: the failure was local). */
	int status;
	char *status_msg;
	const struct casc_progress *progress; /* NULL: none */
	void *progress_arg;
	/* Open a file blob for reading (NULL: open(path, O_RDONLY |
	 * O_NOFOLLOW)): fd, or -1 with *msg. */
	int (*open_blob)(const struct casc_blob *b, char **msg);
};

/* Set c up (no RPC yet).  Strings and the client are borrowed. */
void casc_init(struct casc *c, struct event_base *base, struct rc_client *cl, const char *instance);
/* Free c->status_msg. */
void casc_fini(struct casc *c);

/* GetCapabilities, once: fills max_batch (default 4 MiB when the server
 * says nothing) and absolute_symlinks. */
int casc_caps(struct casc *c, char **msg) WARN_UNUSED;

/* FindMissingBlobs of d[0..n), in slices under the message size limit:
 * missing[i] set for each blob the server lacks. */
int casc_find_missing(struct casc *c, const struct digest *d, size_t n, bool *missing,
		      char **msg) WARN_UNUSED;

/* A blob to upload: in memory (data), or a file (path; `at` is for the
 * caller's open_blob hook, e.g. a directory fd). */
struct casc_blob {
	struct digest d;
	const uint8_t *data; /* borrowed; NULL when path is set */
	const char *path;    /* borrowed */
	int at;
};
/* Upload the blobs the server is missing (each digest once; empty blobs
 * never: servers have them).  sent, bytes (may be NULL): how many blobs
 * and bytes went. */
int casc_upload(struct casc *c, const struct casc_blob *b, size_t n, int64_t *sent, int64_t *bytes,
		char **msg) WARN_UNUSED;

/* One ByteStream Write of the len bytes of fd (from its current offset)
 * under HASH/SIZE, passed through unchecked (the server judges them); path
 * names fd in errors.  Stops early, successfully, when the server reports
 * the blob complete. */
int casc_write_fd(struct casc *c, const char *hash, int64_t size, int fd, int64_t len,
		  const char *path, char **msg) WARN_UNUSED;

/* ByteStream Read of HASH/SIZE (hash unchecked) into fd, verified: what
 * arrived must hash to HASH and have SIZE bytes.  what names fd in errors. */
int casc_read_fd(struct casc *c, const char *hash, int64_t size, int fd, const char *what,
		 char **msg) WARN_UNUSED;
/* The same into memory: *buf malloc'd (never NULL), *len bytes. */
int casc_read_mem(struct casc *c, const struct digest *d, uint8_t **buf, size_t *len,
		  char **msg) WARN_UNUSED;

/* Read n distinct blobs, small ones in batches, big ones streamed: for
 * each i, either data(arg, i, bytes, len) (a batched or empty blob; bytes
 * valid during the call) or fd(arg, i, &msg) then a verified ByteStream
 * Read into that descriptor, which the callee owns (closes).  A callback
 * returns 0 or -EIO with *msg, which stops the reads. */
struct casc_sink {
	int (*data)(void *arg, size_t i, const uint8_t *bytes, size_t len, char **msg);
	int (*fd)(void *arg, size_t i, char **msg);
	int (*fd_done)(void *arg, size_t i, int fd, char **msg); /* close it; 0 or -EIO */
};
int casc_fetch(struct casc *c, const struct digest *d, size_t n, const struct casc_sink *sink,
	       void *arg, char **msg) WARN_UNUSED;

/* Read n blobs (duplicates allowed) into memory: out[i] malloc'd (never
 * NULL), lens[i] bytes; on error nothing is returned. */
int casc_read_many(struct casc *c, const struct digest *d, size_t n, uint8_t **out, size_t *lens,
		   char **msg) WARN_UNUSED;

/* "blobs/HASH/SIZE" / "uploads/UUID/blobs/HASH/SIZE" under c's instance. */
char *casc_read_name(const struct casc *c, const char *hash, int64_t size);
char *casc_write_name(const struct casc *c, const char *hash, int64_t size);

#endif
