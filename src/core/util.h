/*
 * util.h - allocation helpers that abort on out-of-memory, time helpers,
 * base64 and small string utilities shared by every reactord module.
 * Nothing here touches the event loop.
 */
#ifndef REACTOR_UTIL_H
#define REACTOR_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The struct that holds member `member` at address p. */
#define container_of(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))
#define ARRAY_LEN(a)		      (sizeof(a) / sizeof((a)[0]))
#define WARN_UNUSED		      __attribute__((warn_unused_result))
#define PRINTF_LIKE(f, a)	      __attribute__((format(printf, f, a)))

/* Allocation: never return NULL; abort with a message on out-of-memory.
 * Free with free(). */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) PRINTF_LIKE(1, 2);
char *xvasprintf(const char *fmt, va_list ap) PRINTF_LIKE(1, 0);

/* Wall-clock time in microseconds / monotonic time in microseconds. */
int64_t now_us(void);
int64_t mono_us(void);

/* Base64 (standard alphabet).  b64_encode writes no padding when pad is
 * false; returns a NUL-terminated string owned by the caller.  b64_decode
 * accepts input with or without '=' padding; returns a malloc'd buffer and
 * its length in *outlen, or NULL if the input is not valid base64. */
char *b64_encode(const uint8_t *in, size_t len, bool pad);
uint8_t *b64_decode(const char *in, size_t len, size_t *outlen);

/* Parse a duration like "10s", "1m", "250ms", "2h", "1d", "500us" or a bare
 * number of seconds into microseconds.  Returns 0 on success, -1 on a bad
 * string. */
int parse_duration_us(const char *s, int64_t *out) WARN_UNUSED;

/* Parse a size like "4MiB", "512KiB", "1GiB", "16MB", "100" (bytes) into
 * bytes.  Returns 0 on success, -1 on a bad string. */
int parse_size(const char *s, int64_t *out) WARN_UNUSED;

/* Format a duration in microseconds as a short human string ("1.5s").
 * Writes into buf (at least 32 bytes) and returns it. */
const char *fmt_duration(int64_t us, char *buf, size_t len);

/* True when s ends with suffix. */
bool str_endswith(const char *s, const char *suffix);

/* mkdir -p: create path and each missing parent with mode (less the
 * umask).  A directory that already exists is fine.  Returns 0, or -errno
 * of the mkdir that failed (-ENOENT for "", -ENOTDIR when path exists and
 * is not a directory); errno is set to the same code on failure. */
int mkdir_p(const char *path, mode_t mode) WARN_UNUSED;
/* The absolute path of an executable `name` in $PATH (a default PATH when
 * unset; empty and relative entries are skipped), or NULL.  Malloc'd. */
char *find_in_path(const char *name);
/* True when every address host (numeric or a name) resolves to is a
 * loopback one (127/8, ::1, ::ffff:127/104); false when it does not
 * resolve.  Decides which listeners may be plaintext. */
bool host_is_loopback(const char *host);

/* Protobuf base-128 varints (the wire format's integers and lengths).
 * pb_varint_put writes v at p (room for PB_VARINT_MAX bytes) and returns
 * the bytes written.  pb_varint_get reads one varint from *p (not past
 * end) into *v and advances *p; returns 0, or -1 when the input ends
 * inside the varint or it runs past 10 bytes. */
enum { PB_VARINT_MAX = 10 };
size_t pb_varint_put(uint8_t *p, uint64_t v);
int pb_varint_get(const uint8_t **p, const uint8_t *end, uint64_t *v) WARN_UNUSED;

/* A random RFC 4122 version-4 UUID, "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx"
 * in lower-case hex (malloc'd), from OpenSSL's RAND_bytes (aborts if the
 * generator cannot be seeded). */
char *uuid4(void);

/* UTF-8.  utf8_seq_len: the length (1-4) of the well-formed sequence at p
 * (p < end), or 0 when it is malformed (overlong, a surrogate, past
 * U+10FFFF, truncated, or a stray continuation byte).  utf8_valid: true
 * when s[0..len) is such sequences only and holds no NUL byte, i.e. text a
 * C string or a protobuf string field may carry. */
size_t utf8_seq_len(const unsigned char *p, const unsigned char *end);
bool utf8_valid(const char *s, size_t len);

#endif
