/*
 * resname.c - ByteStream resource-name parser (see resname.h).
 */
#include "services/resname.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Lowercase DigestFunction.Value names that may appear as a segment. */
static const char *const digest_functions[] = {
	"sha256", "sha1",    "md5",	   "vso",    "sha384",
	"sha512", "murmur3", "sha256tree", "blake3", "gitsha1",
};

static bool is_digest_function(const char *s)
{
	for (size_t i = 0; i < ARRAY_LEN(digest_functions); i++)
		if (strcmp(s, digest_functions[i]) == 0)
			return true;
	return false;
}

static int parse_size_seg(const char *s, int64_t *out)
{
	if (!*s)
		return -1;
	int64_t v = 0;
	for (const char *p = s; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return -1;
		if (v > (INT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (*p - '0');
	}
	*out = v;
	return 0;
}

static char *join(char **seg, int from, int to)
{
	size_t len = 0;
	for (int i = from; i < to; i++)
		len += strlen(seg[i]) + 1;
	char *out = xmalloc(len + 1), *o = out;
	for (int i = from; i < to; i++) {
		if (i > from)
			*o++ = '/';
		size_t n = strlen(seg[i]);
		memcpy(o, seg[i], n);
		o += n;
	}
	*o = '\0';
	return out;
}

void resname_free(struct resname *r)
{
	free(r->instance);
	free(r->uuid);
	free(r->compressor);
	free(r->digest_function);
	free(r->hash);
	free(r->metadata);
	memset(r, 0, sizeof(*r));
}

int resname_parse(const char *name, bool upload, struct resname *out, char **err)
{
	memset(out, 0, sizeof(*out));
	char *copy = xstrdup(name);
	size_t cap = 8, n = 0;
	char **seg = xmalloc(cap * sizeof(*seg));
	for (char *p = copy;;) {
		char *slash = strchr(p, '/');
		if (n == cap)
			seg = xrealloc(seg, (cap *= 2) * sizeof(*seg));
		seg[n++] = p;
		if (!slash)
			break;
		*slash = '\0';
		p = slash + 1;
	}

	const char *want = upload ? "uploads" : NULL;
	int i = 0, nseg = (int)n;
	const char *what = upload ? "upload" : "read";
	/* Find the marker: the first reserved segment. */
	for (; i < nseg; i++) {
		if (upload ? strcmp(seg[i], want) == 0
			   : strcmp(seg[i], "blobs") == 0 ||
				     strcmp(seg[i], "compressed-blobs") == 0)
			break;
	}
	if (i == nseg) {
		*err = xasprintf("resource name \"%s\" is not a %s name: want "
				 "\"{instance}/%s\"",
				 name, what,
				 upload ? "uploads/{uuid}/blobs/{hash}/{size}"
					: "blobs/{hash}/{size}");
		goto fail;
	}
	for (int k = 0; k < i; k++) {
		if (!*seg[k]) {
			*err = xasprintf("resource name \"%s\" has an empty instance segment",
					 name);
			goto fail;
		}
	}
	out->instance = join(seg, 0, i);
	if (upload) {
		if (i + 1 >= nseg || !*seg[i + 1]) {
			*err = xasprintf("resource name \"%s\": missing upload uuid", name);
			goto fail;
		}
		out->uuid = xstrdup(seg[i + 1]);
		i += 2;
		if (i >= nseg || (strcmp(seg[i], "blobs") && strcmp(seg[i], "compressed-blobs"))) {
			*err = xasprintf(
				"resource name \"%s\": want \"blobs\" or \"compressed-blobs\" "
				"after the upload uuid",
				name);
			goto fail;
		}
	}
	bool compressed = strcmp(seg[i], "compressed-blobs") == 0;
	i++;
	if (compressed) {
		if (i >= nseg || !*seg[i]) {
			*err = xasprintf("resource name \"%s\": missing compressor", name);
			goto fail;
		}
		out->compressor = xstrdup(seg[i]);
		i++;
	}
	if (i < nseg && is_digest_function(seg[i])) {
		out->digest_function = xstrdup(seg[i]);
		i++;
	}
	if (i + 1 >= nseg) {
		*err = xasprintf("resource name \"%s\": want {hash}/{size} after \"%s\"", name,
				 compressed ? "compressed-blobs/{compressor}" : "blobs");
		goto fail;
	}
	out->hash = xstrdup(seg[i]);
	if (parse_size_seg(seg[i + 1], &out->size) != 0) {
		*err = xasprintf("resource name \"%s\": size \"%s\" is not a non-negative integer",
				 name, seg[i + 1]);
		goto fail;
	}
	i += 2;
	if (i < nseg) {
		if (!upload) {
			*err = xasprintf("resource name \"%s\": unexpected \"%s\" after the size",
					 name, seg[i]);
			goto fail;
		}
		out->metadata = join(seg, i, nseg);
	}
	free(seg);
	free(copy);
	return 0;
fail:
	free(seg);
	free(copy);
	resname_free(out);
	return -1;
}
