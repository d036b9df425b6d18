/*
 * cfg_value.c - the config loader's scalar parsers: booleans, integers, the
 * shape a size or duration must have before util.c's parsers see it,
 * host:port and listen addresses, and the edit distance behind "did you
 * mean" suggestions.  Pure functions of their arguments.
 */
#include "core/cfg_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- scalar helpers ------------------------------------------------------ */

bool cfg_streq_null(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

int cfg_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on"};
	static const char *const no[] = {"false", "no", "off"};
	for (size_t i = 0; i < ARRAY_LEN(yes); i++) {
		if (!strcasecmp(s, yes[i]) || !strcasecmp(s, no[i])) {
			*out = !strcasecmp(s, yes[i]);
			return 0;
		}
	}
	return -1;
}

int cfg_parse_int(const char *s, int64_t *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (end == s || *end || errno == EINVAL)
		return -1;
	*out = v; /* ERANGE saturates, which the bounds check then reports */
	return 0;
}

/* Sizes and durations must look like "12", "1.5" or "16MiB": util.c's
 * parsers use strtod, which would also take "nan", "1e30" or "0x10", and a
 * bare number of seconds is multiplied without an overflow check.  Returns
 * 0 for a bad shape, -1 for an integer part too long to convert safely
 * (the caller reports it as out of range), 1 when it may be parsed. */
int cfg_number_shape(const char *s)
{
	size_t digits = strspn(s, "0123456789");
	if (digits == 0)
		return 0;
	int ok = digits > 9 ? -1 : 1;
	s += digits;
	if (*s == '.') {
		size_t frac = strspn(s + 1, "0123456789");
		if (frac == 0)
			return 0;
		s += 1 + frac;
	}
	if (strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(s))
		return 0;
	return ok;
}

/* Optimal string alignment distance (Levenshtein plus swapped neighbours,
 * the commonest typo).  Long strings are never "close". */
int cfg_edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	int d[64][64];
	if (la >= 64 || lb >= 64)
		return 64;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = (int)i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = (int)j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			int cost = a[i - 1] != b[j - 1];
			int v = d[i - 1][j - 1] + cost;
			if (d[i - 1][j] + 1 < v)
				v = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < v)
				v = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	}
	return d[la][lb];
}

/* ---- addresses and instance names ---------------------------------------- */

/* Split "host:port" or "[v6addr]:port" with port in min_port..65535.  On
 * success sets *host (caller frees) and *port and returns NULL; otherwise
 * returns a malloc'd complaint. */
char *cfg_split_hostport(const char *s, int min_port, char **host, int *port)
{
	const char *h = s, *colon;
	size_t hl;

	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return xasprintf("expected [address]:port, got \"%s\"", s);
		h = s + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return xasprintf("expected host:port, got \"%s\"", s);
		hl = (size_t)(colon - s);
		if (memchr(s, ':', hl))
			return xasprintf("IPv6 addresses need brackets, like [::1]:50051");
	}
	if (hl == 0)
		return xasprintf("missing host before \":%s\"", colon + 1);
	const char *ps = colon + 1;
	if (!*ps || strspn(ps, "0123456789") != strlen(ps))
		return xasprintf("bad port \"%s\"", ps);
	long v = strtol(ps, NULL, 10); /* saturates at LONG_MAX: out of range */
	if (v < min_port || v > 65535)
		return xasprintf("port %s out of range %d..65535", ps, min_port);
	*host = xstrndup(h, hl);
	*port = (int)v;
	return NULL;
}

#define LISTEN_FORMS                                                                       \
	"accepted forms: HOST:PORT (an IPv4 address or a host name), [IPV6]:PORT, "       \
	"unix:PATH; 0.0.0.0:PORT or [::]:PORT listen on every interface"

char *cfg_parse_listen(const char *s, struct cfg_listen *l)
{
	/* No form widens a bind without saying so: "*" (or an empty host) is
	 * refused rather than read as "every interface", and a URL is not
	 * mistaken for a host with colons in it. */
	if (strstr(s, "://"))
		return xasprintf("\"%s\": a listen address takes no scheme (tcp://, http://, "
				 "grpc://...); " LISTEN_FORMS,
				 s);
	const char *colon = strrchr(s, ':');
	if (s[0] != '[' && colon && strncmp(s, "unix:", 5) &&
	    (colon == s || (colon == s + 1 && s[0] == '*')))
		return xasprintf("\"%s\": no host; to listen on every interface write "
				 "0.0.0.0:%s (IPv4) or [::]:%s (IPv6), with TLS or insecure: true; "
				 "" LISTEN_FORMS,
				 s, colon + 1, colon + 1);
	if (s[0] != '[' && colon && memchr(s, ':', (size_t)(colon - s)) && strncmp(s, "unix:", 5))
		return xasprintf("\"%s\": IPv6 addresses need brackets, like [::1]:50051; "
				 "" LISTEN_FORMS,
				 s);
	if (s[0] != '[' && s[0] != '/' && !colon)
		return xasprintf("\"%s\": no port; " LISTEN_FORMS, s);
	if (!strncmp(s, "unix:", 5)) {
		if (!s[5])
			return xasprintf("unix: needs a socket path, like unix:/run/reactord.sock");
		l->kind = CFG_LISTEN_UNIX;
		l->path = xstrdup(s + 5);
		return NULL;
	}
	if (s[0] == '/')
		return xasprintf("write unix sockets as unix:%s", s);
	l->kind = CFG_LISTEN_TCP;
	return cfg_split_hostport(s, 0, &l->host, &l->port);
}
