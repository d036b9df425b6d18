/*
 * log.c - the logger.  Writes whole lines with one write(2) each so lines
 * from reactord and its children never interleave mid-line.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum log_level log_threshold = LOG_INFO;
static bool log_json;

const char *const log_level_names[] = {"error", "warn", "info", "debug", NULL};

void log_set_level(enum log_level lvl)
{
	log_threshold = lvl;
}

void log_set_json(bool json)
{
	log_json = json;
}

static size_t timestamp(char *buf, size_t len)
{
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(buf + n, len - n, ".%03dZ", (int)(tv.tv_usec / 1000));
	return n;
}

/* Append s to buf as a JSON string body (no quotes). */
static size_t json_escape(char *buf, size_t len, const char *s)
{
	size_t o = 0;
	for (; *s && o + 7 < len; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)c;
		} else if (c < 0x20) {
			o += (size_t)snprintf(buf + o, len - o, "\\u%04x", c);
		} else {
			buf[o++] = (char)c;
		}
	}
	buf[o] = '\0';
	return o;
}

static void emit(char *line, size_t n)
{
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

void log_msg(enum log_level lvl, const char *mod, const char *fmt, ...)
{
	if (lvl > log_threshold)
		return;
	char msg[2048], line[4600], ts[40];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	timestamp(ts, sizeof(ts));
	size_t n;
	if (log_json) {
		char esc[4200];
		json_escape(esc, sizeof(esc), msg);
		n = (size_t)snprintf(
			line, sizeof(line) - 1,
			"{\"ts\":\"%s\",\"level\":\"%s\",\"mod\":\"%s\",\"msg\":\"%s\"}", ts,
			log_level_names[lvl], mod, esc);
	} else {
		n = (size_t)snprintf(line, sizeof(line) - 1, "%s %-5s %s: %s", ts,
				     log_level_names[lvl], mod, msg);
	}
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	emit(line, n);
}

void log_access(const struct log_access *a)
{
	char line[2048], ts[40];
	timestamp(ts, sizeof(ts));
	size_t n;
	if (log_json) {
		char peer[300], method[600], inv[300], who[300];
		json_escape(peer, sizeof(peer), a->peer ? a->peer : "");
		json_escape(method, sizeof(method), a->method ? a->method : "");
		json_escape(inv, sizeof(inv), a->invocation_id ? a->invocation_id : "");
		json_escape(who, sizeof(who), a->identity ? a->identity : "");
		n = (size_t)snprintf(
			line, sizeof(line) - 1,
			"{\"ts\":\"%s\",\"type\":\"access\",\"peer\":\"%s\",\"conn\":%" PRIu64
			",\"stream\":%" PRId32 ",\"method\":\"%s\",\"grpc_status\":%d,\"duration_"
					       "ms\":%.3f,\"bytes_in\":%llu,"
			"\"bytes_out\":%llu,\"invocation_id\":\"%s\",\"identity\":\"%s\"}",
			ts, peer, a->conn, a->stream, method, a->status, a->duration_ms,
			a->bytes_in, a->bytes_out, inv, who);
	} else {
		n = (size_t)snprintf(line, sizeof(line) - 1,
				     "%s access peer=%s " LOG_STREAM " method=%s grpc-status=%d "
				     "duration=%.3fms in=%llu out=%llu invocation=%s identity=%s",
				     ts, a->peer ? a->peer : "-", a->conn, a->stream,
				     a->method ? a->method : "-", a->status, a->duration_ms,
				     a->bytes_in, a->bytes_out,
				     a->invocation_id && *a->invocation_id ? a->invocation_id
									   : "-",
				     a->identity && *a->identity ? a->identity : "-");
	}
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	emit(line, n);
}
