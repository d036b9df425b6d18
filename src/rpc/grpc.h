/*
 * grpc.h - gRPC wire framing done by hand: the 5-byte length prefix and
 * message reassembly across DATA frames, grpc-timeout parsing, status codes
 * and their names, grpc-message percent-encoding, and the
 * grpc-status-details-bin trailer.  Pure functions and small structs; no
 * event loop, no HTTP/2.
 */
#ifndef REACTOR_GRPC_H
#define REACTOR_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

enum grpc_code {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_ALREADY_EXISTS = 6,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_ABORTED = 10,
	GRPC_OUT_OF_RANGE = 11,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
	GRPC_DATA_LOSS = 15,
	GRPC_UNAUTHENTICATED = 16,
};

/* "OK", "CANCELLED", ...; "UNKNOWN_CODE" outside 0..16. */
const char *grpc_code_name(int code);

/* Parse a grpc-timeout value ("1-8 digits" + one of H M S m u n) into
 * microseconds (sub-microsecond values round up to 1).  Returns 0 or -1. */
int grpc_timeout_parse(const char *s, int64_t *us) WARN_UNUSED;

/* Format a timeout for the grpc-timeout header (at most 8 digits).
 * buf must hold at least 16 bytes. */
void grpc_timeout_format(int64_t us, char *buf, size_t len);

/* Percent-encode a grpc-message value (bytes outside 0x20..0x7e and '%').
 * Returns a malloc'd string.  grpc_percent_decode is the inverse and
 * passes malformed escapes through unchanged, as gRPC specifies. */
char *grpc_percent_encode(const char *msg);
char *grpc_percent_decode(const char *s);

/* Write the 5-byte message prefix. */
void grpc_prefix(uint8_t out[5], bool compressed, uint32_t len);

/* Message reassembly.  Feed DATA payloads as they arrive; each complete
 * message is handed to the callback (the buffer is valid only during the
 * call).  Errors stop the reader for good.  The buffer of a message split
 * across payloads grows with the bytes that arrived (doubling, capped at
 * the declared length): a prefix alone allocates nothing.  A message that
 * starts in the payload that completed the previous one reuses its
 * buffer; a payload that ends between messages frees it. */
enum grpc_reader_err {
	GRPC_READER_OK = 0,
	GRPC_READER_TOO_LARGE,	/* message length over the limit */
	GRPC_READER_COMPRESSED, /* compressed flag set (we speak identity only) */
	GRPC_READER_BAD_FLAG,	/* flag byte other than 0 or 1 */
	GRPC_READER_STOPPED,	/* the callback asked to stop */
};

struct grpc_reader {
	uint8_t hdr[5];
	size_t hdr_have;
	uint8_t *buf;
	size_t need, have;
	size_t cap; /* bytes allocated at buf: grows with `have`, never past need */
	size_t max_len;
	uint32_t last_len; /* declared length of the message that failed */
	enum grpc_reader_err err;
	uint64_t messages;
};

/* Callback returns 0 to continue, nonzero to stop reading. */
typedef int (*grpc_msg_fn)(void *arg, const uint8_t *msg, size_t len);

void grpc_reader_init(struct grpc_reader *r, size_t max_len);
void grpc_reader_free(struct grpc_reader *r);
/* Returns GRPC_READER_OK or the (sticky) error. */
enum grpc_reader_err grpc_reader_feed(struct grpc_reader *r, const uint8_t *data, size_t len,
				      grpc_msg_fn fn, void *arg);
/* True when a message is partly received (a truncated stream at EOF). */
bool grpc_reader_partial(const struct grpc_reader *r);
/* Bytes the reader holds of a message in progress (prefix included). */
size_t grpc_reader_buffered(const struct grpc_reader *r);
/* The message in progress, once its prefix is complete: its declared
 * length through *len, true.  False between messages. */
bool grpc_reader_pending(const struct grpc_reader *r, size_t *len);

/* Serialize google.rpc.Status{code, message, details} and base64 it
 * without padding, for grpc-status-details-bin.  `details` are already
 * serialized google.protobuf.Any messages (may be NULL / 0).  Returns a
 * malloc'd string. */
struct grpc_any {
	const char *type_url;
	const uint8_t *value;
	size_t len;
};
char *grpc_status_details_bin(int code, const char *message, const struct grpc_any *details,
			      size_t ndetails);

#endif
