/*
 * sdnotify.c - the systemd notification protocol by hand (sdnotify.h):
 * no libsystemd, one SOCK_DGRAM send per message.
 */
#include "cmd/reactord/sdnotify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static char *sdn_path; /* $NOTIFY_SOCKET as given, NULL without one */

void sdn_init(void)
{
	const char *s = getenv("NOTIFY_SOCKET");
	free(sdn_path);
	sdn_path = s && (s[0] == '/' || s[0] == '@') && s[1] ? xstrdup(s) : NULL;
	unsetenv("NOTIFY_SOCKET");
}

void sdn_free(void)
{
	free(sdn_path);
	sdn_path = NULL;
}

int sdn_send(const char *fmt, ...)
{
	if (!sdn_path)
		return 0;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t len = strlen(sdn_path);
	if (len > sizeof sa.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sa.sun_path, sdn_path, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract: no terminating NUL counted */
	socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	va_list ap;
	va_start(ap, fmt);
	char *msg = xvasprintf(fmt, ap);
	va_end(ap);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int rc = -1;
	if (fd >= 0) {
		ssize_t n =
			sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
		rc = n == (ssize_t)strlen(msg) ? 0 : -1;
		int e = errno;
		close(fd);
		errno = e;
	}
	free(msg);
	return rc;
}
