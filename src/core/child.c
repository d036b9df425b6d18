/*
 * child.c - the common preparation of a forked child (see child.h).
 */
#include "core/child.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

int child_prepare(int deathsig, pid_t parent)
{
	/* The signal follows the forking thread; our processes have one. */
	if (prctl(PR_SET_PDEATHSIG, deathsig) < 0)
		return -2;
	/* The parent may have died before prctl took effect. */
	if (parent && getppid() != parent)
		return -1;
	/* Own process group: ^C on a terminal reaches the parent, which stops
	 * its children in order. */
	setpgid(0, 0);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			signal(s, SIG_DFL);
	int null = open("/dev/null", O_RDONLY);
	if (null > 0) {
		dup2(null, 0);
		close(null);
	}
	return 0;
}
