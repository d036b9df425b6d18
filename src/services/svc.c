/*
 * svc.c - what every service shares: the configuration in force.  The
 * daemon swaps it on a successful SIGHUP reload; handlers read it per call
 * and never keep the pointer across an asynchronous wait.
 */
#include "services/svc.h"

#include <stddef.h>

static const struct cfg *current;

void svc_set_config(const struct cfg *cfg)
{
	current = cfg;
}

const struct cfg *svc_config(void)
{
	return current;
}
