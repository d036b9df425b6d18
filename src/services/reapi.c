/*
 * reapi.c - helpers shared by the REAPI services (see reapi.h): digests,
 * digest functions, and the PreconditionFailure for missing blobs.
 */
#include "services/reapi.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "google/rpc/error_details.pb-c.h"

#define REAPI_PRECONDITION_URL "type.googleapis.com/google.rpc.PreconditionFailure"

int reapi_digest_err(const PbDigest *pd, struct digest *out, char **err)
{
	if (!pd) {
		*err = xstrdup("missing digest");
		return -1;
	}
	return digest_parse(pd->hash, pd->size_bytes, out, err);
}

int reapi_digest(struct call *c, const PbDigest *pd, const char *what, struct digest *out)
{
	char *err = NULL;
	if (reapi_digest_err(pd, out, &err) == 0)
		return 0;
	call_finish(c, GRPC_INVALID_ARGUMENT, "%s: %s", what, err);
	free(err);
	return -1;
}

int reapi_digest_function(struct call *c, int value)
{
	if (value == BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__UNKNOWN ||
	    value == BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256)
		return 0;
	const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
		&build__bazel__remote__execution__v2__digest_function__value__descriptor, value);
	call_finish(c, GRPC_INVALID_ARGUMENT,
		    "digest function %s is not supported: this server uses SHA256",
		    v ? v->name : "(unknown value)");
	return -1;
}

void reapi_pb_digest(PbDigest *pd, const struct digest *d)
{
	build__bazel__remote__execution__v2__digest__init(pd);
	pd->hash = (char *)d->hex;
	pd->size_bytes = d->size;
}

void reapi_finish_missing(struct call *c, const struct digest *missing, const char *const *labels,
			  size_t n, const char *fmt, ...)
{
	Google__Rpc__PreconditionFailure__Violation *vs = xcalloc(n ? n : 1, sizeof(*vs));
	Google__Rpc__PreconditionFailure__Violation **vp = xcalloc(n ? n : 1, sizeof(*vp));
	char **subjects = xcalloc(n ? n : 1, sizeof(*subjects));
	char **descs = xcalloc(n ? n : 1, sizeof(*descs));
	size_t used = 0, nv = 0;
	for (size_t i = 0; i < n; i++) {
		subjects[i] =
			xasprintf("blobs/%s/%lld", missing[i].hex, (long long)missing[i].size);
		google__rpc__precondition_failure__violation__init(&vs[i]);
		vs[i].type = (char *)"MISSING";
		vs[i].subject = subjects[i];
		if (labels) {
			descs[i] = xasprintf("the %s is not in CAS", labels[i]);
			vs[i].description = descs[i];
		}
		/* + tag and length of the repeated field */
		size_t sz = protobuf_c_message_get_packed_size(&vs[i].base) + 3;
		if (used + sz <= REAPI_DETAILS_MAX) {
			used += sz;
			vp[nv++] = &vs[i];
		}
	}
	Google__Rpc__PreconditionFailure pf = GOOGLE__RPC__PRECONDITION_FAILURE__INIT;
	pf.n_violations = nv;
	pf.violations = vp;
	size_t len = protobuf_c_message_get_packed_size(&pf.base);
	uint8_t *buf = xmalloc(len ? len : 1);
	protobuf_c_message_pack(&pf.base, buf);
	struct grpc_any any = {REAPI_PRECONDITION_URL, buf, len};

	char list[400] = "";
	size_t off = 0;
	for (size_t i = 0; i < n && i < 3; i++) {
		int k = snprintf(list + off, sizeof(list) - off, "%s%s%s%s", i ? ", " : "",
				 labels ? labels[i] : "", labels ? " " : "", subjects[i]);
		if (k < 0 || (size_t)k >= sizeof(list) - off)
			break;
		off += (size_t)k;
	}
	va_list ap;
	va_start(ap, fmt);
	char *prefix = xvasprintf(fmt, ap);
	va_end(ap);
	call_finish_details(c, GRPC_FAILED_PRECONDITION, &any, 1, "%s: %s%s%s", prefix, list,
			    n > 3 ? ", ..." : "", nv < n ? " (details list the first ones)" : "");
	free(prefix);
	free(buf);
	for (size_t i = 0; i < n; i++) {
		free(subjects[i]);
		free(descs[i]);
	}
	free(descs);
	free(subjects);
	free(vp);
	free(vs);
}
