/*
 * child.c - the common preparation of a forked child, and the text of its
 * exit status (see child.h).
 */
#include "core/child.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
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

const char *child_status_str(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else if (WIFSTOPPED(status))
		snprintf(buf, len, "was stopped by signal %d (%s)", WSTOPSIG(status),
			 strsignal(WSTOPSIG(status)));
	else
		snprintf(buf, len, "changed state (status 0x%x)", (unsigned)status);
	return buf;
}
