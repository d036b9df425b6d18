/*
 * reapi.c - helpers shared by the REAPI services (see reapi.h).
 */
#include "services/reapi.h"

#include <stdlib.h>

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
