/*
 * util.c - allocation helpers, clocks, base64, unit parsing, UUIDs and
 * UTF-8 checks.  These are leaf functions with no state; every other
 * module may use them.
 */
#include "core/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

static void oom(size_t n)
{
	fprintf(stderr, "reactord: out of memory allocating %zu bytes\n", n);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom(n);
	return p;
}

void *xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);
	if (!p)
		oom(n * m);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom(n);
	return q;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *xvasprintf(const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		abort();
	char *p = xmalloc((size_t)n + 1);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *p = xvasprintf(fmt, ap);
	va_end(ap);
	return p;
}

int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *b64_encode(const uint8_t *in, size_t len, bool pad)
{
	char *out = xmalloc(4 * ((len + 2) / 3) + 1);
	char *o = out;
	size_t i = 0;
	for (; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*o++ = b64chars[v >> 18];
		*o++ = b64chars[(v >> 12) & 63];
		*o++ = b64chars[(v >> 6) & 63];
		*o++ = b64chars[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		*o++ = b64chars[v >> 18];
		*o++ = b64chars[(v >> 12) & 63];
		if (i + 1 < len)
			*o++ = b64chars[(v >> 6) & 63];
		else if (pad)
			*o++ = '=';
		if (pad)
			*o++ = '=';
	}
	*o = '\0';
	return out;
}

static int b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

uint8_t *b64_decode(const char *in, size_t len, size_t *outlen)
{
	/* Strip up to two '=' of padding; the rest must be alphabet only. */
	while (len > 0 && in[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return NULL;
	uint8_t *out = xmalloc(len / 4 * 3 + 3);
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64val((unsigned char)in[i]);
		if (v < 0) {
			free(out);
			return NULL;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	*outlen = o;
	return out;
}

int parse_duration_us(const char *s, int64_t *out)
{
	static const struct {
		const char *suffix;
		int64_t mult;
	} units[] = {
		{"us", 1},	 {"ms", 1000},	      {"s", 1000000},
		{"m", 60000000}, {"h", 3600000000LL}, {"d", 86400000000LL},
	};
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || v < 0)
		return -1;
	if (*end == '\0') {
		*out = (int64_t)(v * 1e6);
		return 0;
	}
	for (size_t i = 0; i < ARRAY_LEN(units); i++) {
		if (strcmp(end, units[i].suffix) == 0) {
			double r = v * (double)units[i].mult;
			if (r > 9.2e18)
				return -1;
			*out = (int64_t)r;
			return 0;
		}
	}
	return -1;
}

int parse_size(const char *s, int64_t *out)
{
	static const struct {
		const char *suffix;
		int64_t mult;
	} units[] = {
		{"", 1},
		{"B", 1},
		{"K", 1024},
		{"KiB", 1024},
		{"KB", 1000},
		{"M", 1 << 20},
		{"MiB", 1 << 20},
		{"MB", 1000000},
		{"G", 1LL << 30},
		{"GiB", 1LL << 30},
		{"GB", 1000000000LL},
		{"T", 1LL << 40},
		{"TiB", 1LL << 40},
		{"TB", 1000000000000LL},
	};
	char *end;
	errno = 0;
	if (!isdigit((unsigned char)*s))
		return -1;
	double v = strtod(s, &end);
	if (end == s || errno || v < 0)
		return -1;
	for (size_t i = 0; i < ARRAY_LEN(units); i++) {
		if (strcmp(end, units[i].suffix) == 0) {
			double r = v * (double)units[i].mult;
			if (r > 9.2e18)
				return -1;
			*out = (int64_t)r;
			return 0;
		}
	}
	return -1;
}

const char *fmt_duration(int64_t us, char *buf, size_t len)
{
	if (us < 1000)
		snprintf(buf, len, "%lldus", (long long)us);
	else if (us < 1000000)
		snprintf(buf, len, "%.3gms", (double)us / 1e3);
	else
		snprintf(buf, len, "%.3gs", (double)us / 1e6);
	return buf;
}

bool str_endswith(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

int mkdir_p(const char *path, mode_t mode)
{
	if (!*path) {
		errno = ENOENT;
		return -ENOENT;
	}
	char *p = xstrdup(path);
	int rc = 0;
	/* Each prefix that ends at a '/' (or the end), skipping a leading one. */
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;
		*s = '\0';
		if (mkdir(p, mode) != 0 && errno != EEXIST) {
			rc = -errno;
			break;
		}
		*s = c;
		if (c == '\0')
			break;
	}
	struct stat st;
	if (rc == 0 && stat(p, &st) != 0)
		rc = -errno;
	else if (rc == 0 && !S_ISDIR(st.st_mode))
		rc = -ENOTDIR;
	free(p);
	if (rc)
		errno = -rc;
	return rc;
}

size_t pb_varint_put(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	while (v > 0x7f) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

int pb_varint_get(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	const uint8_t *q = *p;
	uint64_t r = 0;
	for (int shift = 0; shift < 70 && q < end; shift += 7) {
		uint8_t b = *q++;
		r |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = r;
			*p = q;
			return 0;
		}
	}
	return -1;
}

char *uuid4(void)
{
	uint8_t b[16];
	/* No entropy: there is nothing sane to hand out. */
	if (RAND_bytes(b, sizeof b) != 1)
		abort();
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	return xasprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
			 b[12], b[13], b[14], b[15]);
}

size_t utf8_seq_len(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0];
	size_t n;
	unsigned cp;
	if (c < 0x80)
		return 1;
	/* Lead bytes: 0xc0/0xc1 could only start an overlong pair, 0xf5 and
	 * up only code points past U+10FFFF. */
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	if ((size_t)(end - p) < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

bool utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;
	while (p < end) {
		size_t n = *p ? utf8_seq_len(p, end) : 0;
		if (!n)
			return false;
		p += n;
	}
	return true;
}

char *find_in_path(const char *name)
{
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
	for (const char *p = path; *p;) {
		size_t l = strcspn(p, ":");
		if (l > 0 && p[0] == '/') {
			char *c = xasprintf("%.*s/%s", (int)l, p, name);
			if (access(c, X_OK) == 0)
				return c;
			free(c);
		}
		p += l + (p[l] == ':');
	}
	return NULL;
}

bool host_is_loopback(const char *host)
{
	struct addrinfo hints = {0}, *res, *ai;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if (getaddrinfo(host, "0", &hints, &res) != 0)
		return false;
	bool loop = res != NULL;
	for (ai = res; ai && loop; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET) {
			const struct sockaddr_in *in = (const void *)ai->ai_addr;
			loop = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
		} else if (ai->ai_family == AF_INET6) {
			const struct sockaddr_in6 *in6 = (const void *)ai->ai_addr;
			const uint8_t *b = in6->sin6_addr.s6_addr;
			static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
			loop = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
			       (!memcmp(b, v4mapped, 12) && b[12] == 127);
		} else {
			loop = false;
		}
	}
	freeaddrinfo(res);
	return loop;
}
