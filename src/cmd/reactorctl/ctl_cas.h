/*
 * ctl_cas.h - reactorctl's CAS client, shared by the cas and exec
 * commands: capabilities (the batch limit), FindMissingBlobs, uploading
 * a set of blobs (files or memory) of which only the missing ones are
 * sent (small ones batched, big ones streamed), verified downloads to a
 * file descriptor, to memory or to a path (a temporary name renamed once
 * the digest matched), and the Directory trees of `cas put DIR`, `cas get
 * --tree` and exec's inputs and outputs.  Every function returns a ctl
 * exit code (CTL_OK...) with the error already printed.
 */
#ifndef REACTOR_CTL_CAS_H
#define REACTOR_CTL_CAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd/reactorctl/ctl.h"
#include "core/digest.h"
#include "proto/pb.h"

/* "HASH/SIZE" split; the hash unchecked (the server judges it).  0 or -1. */
int cas_parse_digest_arg(const char *arg, char **hash, int64_t *size);
/* "HASH/SIZE" into a checked digest: 0, or -1 with the error printed. */
int cas_parse_digest(const char *arg, struct digest *d);

/* The server's max_batch_total_size_bytes (GetCapabilities, asked once). */
int cas_max_batch(struct ctl *c, int64_t *max_batch);

/* ByteStream Write of the file at path under digest_arg ("HASH/SIZE", NULL:
 * hash the file); *out gets "HASH/SIZE" (malloc'd) on success. */
int cas_write_file(struct ctl *c, const char *path, const char *digest_arg, char **out);
/* ByteStream Read of HASH/SIZE into fd, verified; `what` names fd in
 * errors; progress: draw a bar (on a terminal). */
int cas_read_fd(struct ctl *c, const char *hash, int64_t size, int fd, const char *what,
		bool progress);
/* The same into memory: *buf malloc'd (never NULL), *len bytes. */
int cas_read_mem(struct ctl *c, const struct digest *d, uint8_t **buf, size_t *len);
/* Download d to path: written under a temporary name in path's directory,
 * renamed to path only once the digest matched (mode 0755 when exec). */
int cas_get_to_path(struct ctl *c, const struct digest *d, const char *path, bool exec,
		    bool progress);

/* FindMissingBlobs: missing[i] set for each d[i] the server lacks. */
int cas_find_missing(struct ctl *c, const struct digest *d, size_t n, bool *missing);

/* A set of blobs to upload. */
struct cas_blob {
	struct digest d;
	char *path;    /* a file (malloc'd), or NULL */
	uint8_t *data; /* or the bytes (malloc'd) */
};
struct cas_blobs {
	struct cas_blob *b;
	size_t n, cap;
};
/* Add a file (path copied) or bytes (ownership of data passes). */
void cas_blobs_file(struct cas_blobs *s, const char *path, const struct digest *d);
void cas_blobs_mem(struct cas_blobs *s, uint8_t *data, size_t len, struct digest *out);
/* Upload what the server is missing; sent, bytes (may be NULL): how many
 * blobs and bytes went. */
int cas_blobs_upload(struct ctl *c, struct cas_blobs *s, int64_t *sent, int64_t *bytes);
void cas_blobs_free(struct cas_blobs *s);

/* The Directory tree of the local directory at path: every file and
 * Directory blob added to s, the root's digest in *root. */
int cas_tree_build(struct ctl *c, const char *path, struct cas_blobs *s, struct digest *root);
/* Materialize the tree whose root Directory is `root` at path, which must
 * not exist: built under a temporary name beside it and renamed once
 * every file is in place and verified.  children: the Directory messages
 * of an REAPI Tree (n of them), or NULL: read them from the CAS. */
int cas_tree_get(struct ctl *c, const PbDirectory *root, PbDirectory **children, size_t n,
		 const char *path);

#endif
