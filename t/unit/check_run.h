/*
 * check_run.h - the one way every unit-test program runs its suite: all
 * tests, normal output, exit status 1 when any failed.
 */
#ifndef REACTOR_CHECK_RUN_H
#define REACTOR_CHECK_RUN_H

#include <check.h>
#include <stdlib.h>

static inline int check_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* Run `base` until *v >= min or `us` microseconds pass (a timer guards
 * the wait, never a sleep); true when reached. */
#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

static inline void check_guard_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	*(bool *)arg = true;
}

static inline bool check_loop_until(struct event_base *base, const int *v, int min, int64_t us)
{
	bool expired = false;
	struct event *t = evtimer_new(base, check_guard_cb, &expired);
	struct timeval tv = {us / 1000000, us % 1000000};
	evtimer_add(t, &tv);
	while (*v < min && !expired)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	return *v >= min;
}

#endif
