/*
 * resname.h - ByteStream resource names of REAPI v2, parsed exactly as the
 * remote_execution.proto comments lay them out:
 *
 *   read:   {instance}/blobs/{digest_function/}{hash}/{size}
 *           {instance}/compressed-blobs/{compressor}/{digest_function/}{hash}/{size}
 *   write:  {instance}/uploads/{uuid}/blobs/{digest_function/}{hash}/{size}{/metadata}
 *           {instance}/uploads/{uuid}/compressed-blobs/{compressor}/{digest_function/}
 *             {hash}/{size}{/metadata}
 *
 * The instance part may be empty (then there is no leading slash) or hold
 * several segments; it never uses the reserved words, so the first
 * "blobs"/"compressed-blobs"/"uploads" segment is the marker.
 */
#ifndef REACTOR_RESNAME_H
#define REACTOR_RESNAME_H

#include <stdbool.h>
#include <stdint.h>

#include "core/util.h"

struct resname {
	char *instance;	       /* "" when empty */
	char *uuid;	       /* uploads only */
	char *compressor;      /* NULL for plain blobs; else lowercase name */
	char *digest_function; /* NULL when omitted */
	char *hash;	       /* as written (validated later by digest_parse) */
	int64_t size;
	char *metadata; /* uploads: the optional trailing part, or NULL */
};

/* Parse `name` as a read (upload=false) or write (upload=true) resource.
 * Returns 0, or -1 with *err (malloc'd) saying what is wrong.  On success
 * free with resname_free. */
int resname_parse(const char *name, bool upload, struct resname *out, char **err) WARN_UNUSED;
void resname_free(struct resname *r);

#endif
