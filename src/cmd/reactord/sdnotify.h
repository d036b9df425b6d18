/*
 * sdnotify.h - the systemd readiness protocol (sd_notify(3)), written by
 * hand: one datagram of "KEY=VALUE" lines to the unix socket named by
 * $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace).  With
 * no $NOTIFY_SOCKET every call does nothing, so reactord run by hand or
 * by tests behaves the same.  reactord sends READY=1 once its listeners
 * serve and Redis answers, RELOADING=1 (with MONOTONIC_USEC) and READY=1
 * around a SIGHUP reload, STOPPING=1 when it starts to drain, and STATUS=
 * lines for `systemctl status`.
 */
#ifndef REACTOR_SDNOTIFY_H
#define REACTOR_SDNOTIFY_H

#include "core/util.h"

/* Take $NOTIFY_SOCKET and remove it from the environment, so neither the
 * embedded redis-server (which speaks the protocol too) nor the local
 * workers can report "ready" for reactord.  Call once, first thing. */
void sdn_init(void);

/* Send one message (lines of KEY=VALUE, printf format).  Returns 0 (also
 * when there is no socket), or -1 with errno when the datagram could not
 * be sent; callers log and go on: the protocol is advisory. */
int sdn_send(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* Free what sdn_init kept. */
void sdn_free(void);

#endif
