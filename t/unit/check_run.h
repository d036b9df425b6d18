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

#endif
