/*
 * log.h - leveled logging to stderr, as text lines or JSON lines.
 * Every message carries a module tag; connection and stream ids are part of
 * the message text ("conn=12 stream=3 ...") so grep finds a whole exchange.
 */
#ifndef REACTOR_LOG_H
#define REACTOR_LOG_H

#include <inttypes.h>
#include <stdbool.h>

#include "core/util.h"

/* The one way every layer names a connection and a stream in a log line:
 * "conn=12" and "conn=12 stream=3" (a uint64_t connection id, an int32_t
 * HTTP/2 stream id).  The peer's address is logged once per connection, on
 * the line that accepts it; the access log repeats it.  Use as
 *   LOGI("h2", LOG_STREAM ": reset", conn_id, stream_id); */
#define LOG_CONN   "conn=%" PRIu64
#define LOG_STREAM LOG_CONN " stream=%" PRId32

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Current threshold; messages above it are dropped cheaply. */
extern enum log_level log_threshold;

void log_set_level(enum log_level lvl);
void log_set_json(bool json);
/* "error", "warn", "info", "debug", indexed by enum log_level, then NULL:
 * the one list of level names (the config's log.level parses with it). */
extern const char *const log_level_names[];

void log_msg(enum log_level lvl, const char *mod, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* Structured access-log record (one line per finished RPC). */
struct log_access {
	const char *peer;
	uint64_t conn; /* LOG_STREAM's ids */
	int32_t stream;
	const char *method;
	int status;
	double duration_ms;
	unsigned long long bytes_in, bytes_out;
	const char *invocation_id; /* may be NULL */
	const char *identity;	   /* the caller (services/auth.c); may be NULL */
};
void log_access(const struct log_access *a);

#define LOGE(mod, ...) log_msg(LOG_ERROR, mod, __VA_ARGS__)
#define LOGW(mod, ...)                                                                             \
	do {                                                                                       \
		if (log_threshold >= LOG_WARN)                                                     \
			log_msg(LOG_WARN, mod, __VA_ARGS__);                                       \
	} while (0)
#define LOGI(mod, ...)                                                                             \
	do {                                                                                       \
		if (log_threshold >= LOG_INFO)                                                     \
			log_msg(LOG_INFO, mod, __VA_ARGS__);                                       \
	} while (0)
#define LOGD(mod, ...)                                                                             \
	do {                                                                                       \
		if (log_threshold >= LOG_DEBUG)                                                    \
			log_msg(LOG_DEBUG, mod, __VA_ARGS__);                                      \
	} while (0)

#endif
