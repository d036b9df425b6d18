/*
 * fuzz_resname.c - libFuzzer target for ByteStream resource names
 * (src/services/resname.c): read and write names, their instance part, and
 * the digest the hash and size make (core/digest.c).  Checks: a parse
 * either fails with a message or fills every mandatory field; the instance
 * never holds an empty segment nor a reserved word; re-joining the parts
 * gives a name that parses to the same thing.
 *
 * Input: byte 0 bit 0 = upload (write) name; the rest is the name.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "core/digest.h"
#include "core/util.h"
#include "services/resname.h"

static bool streq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The name the parts spell, in the layout resname.h documents. */
static char *rebuild(const struct resname *r, bool upload)
{
	char *s = xstrdup(r->instance);
	char *t;
#define APPEND(part)                                                                               \
	do {                                                                                       \
		t = *s ? xasprintf("%s/%s", s, part) : xstrdup(part);                              \
		free(s);                                                                           \
		s = t;                                                                             \
	} while (0)
	if (upload) {
		APPEND("uploads");
		APPEND(r->uuid);
	}
	if (r->compressor) {
		APPEND("compressed-blobs");
		APPEND(r->compressor);
	} else {
		APPEND("blobs");
	}
	if (r->digest_function)
		APPEND(r->digest_function);
	APPEND(r->hash);
	char size[32];
	snprintf(size, sizeof(size), "%lld", (long long)r->size);
	APPEND(size);
	if (r->metadata)
		APPEND(r->metadata);
#undef APPEND
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool upload = data[0] & 1;
	char *name = xmalloc(size);
	memcpy(name, data + 1, size - 1);
	name[size - 1] = '\0';

	struct resname r;
	char *err = NULL;
	if (resname_parse(name, upload, &r, &err) != 0) {
		CHECK(err != NULL);
		free(err);
		free(name);
		return 0;
	}
	CHECK(err == NULL);
	CHECK(r.instance && r.hash && r.size >= 0);
	CHECK(!upload || r.uuid);
	CHECK(upload || !r.metadata);
	/* The instance: no empty segment, no leading/trailing slash. */
	size_t il = strlen(r.instance);
	if (il) {
		CHECK(r.instance[0] != '/' && r.instance[il - 1] != '/');
		CHECK(!strstr(r.instance, "//"));
	}

	struct digest d;
	char *derr = NULL;
	if (digest_parse(r.hash, r.size, &d, &derr) == 0) {
		char buf[160];
		digest_str(&d, buf, sizeof(buf));
		CHECK(buf[0] != '\0');
	} else {
		CHECK(derr != NULL);
	}
	free(derr);

	/* Only names without trailing junk in the size (leading zeros) rebuild
	 * exactly; the parts must survive a round trip in any case. */
	char *again = rebuild(&r, upload);
	struct resname r2;
	char *err2 = NULL;
	int rv = resname_parse(again, upload, &r2, &err2);
	if (rv != 0)
		fprintf(stderr, "fuzz_resname: \"%s\" -> \"%s\": %s\n", name, again, err2);
	CHECK(rv == 0);
	CHECK(streq(r.instance, r2.instance) && streq(r.uuid, r2.uuid) &&
	      streq(r.compressor, r2.compressor) && streq(r.digest_function, r2.digest_function) &&
	      streq(r.hash, r2.hash) && r.size == r2.size && streq(r.metadata, r2.metadata));
	resname_free(&r2);
	free(again);
	resname_free(&r);
	free(name);
	return 0;
}
