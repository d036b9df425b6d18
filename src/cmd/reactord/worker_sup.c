/*
 * worker_sup.c - supervision of local reactor-workers (worker_sup.h).
 * One slot per configured worker: its pid while it runs, a restart timer
 * while it is down.  A worker that lived less than STABLE_US before it
 * died doubles its slot's restart delay (up to BACKOFF_MAX_US), so a
 * broken binary or an unreachable listener does not spin.
 */
#define _GNU_SOURCE /* close_range */
#include "cmd/reactord/worker_sup.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/cfg.h"
#include "core/child.h"
#include "core/digest.h"
#include "core/log.h"
#include "transport/server.h"

#define MOD	       "workers"
#define BACKOFF_MIN_US 100000LL
#define BACKOFF_MAX_US (10 * 1000000LL)
#define STABLE_US      (10 * 1000000LL)
#define STOP_WAIT_US   (2 * 1000000LL)

struct slot {
	int idx;
	pid_t pid;
	char *name;
	int64_t started_us, backoff_us;
	struct event *timer;
};

static struct {
	struct event_base *base;
	struct event *sigchld;
	struct slot *slots;
	int n;
	char **argv; /* the command line, with the name slot filled per spawn */
	int argc, name_at;
	bool stopping;
	bool running;	/* worker_sup_run has spawned them */
	char *own_work; /* the per-start work dir we made, removed at exit */
	int own_lock;	/* its descriptor, flock()ed while we live */
} sv;

/* In the child: async-signal-safe calls only until exec. */
static void child_exec(char **argv, pid_t parent)
{
	int prep = child_prepare(SIGTERM, parent);
	if (prep == -2)
		_exit(126);
	if (prep == -1)
		_exit(1);
	close_range(3, ~0U, 0);
	execv(argv[0], argv);
	static const char m[] = "reactord: cannot execute the local worker binary\n";
	if (write(2, m, sizeof m - 1) < 0)
		_exit(127);
	_exit(127);
}

static void spawn(struct slot *s)
{
	sv.argv[sv.name_at] = s->name;
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		LOGE(MOD, "fork for worker %s: %s", s->name, strerror(errno));
		s->pid = 0;
		struct timeval tv = {s->backoff_us / 1000000, s->backoff_us % 1000000};
		evtimer_add(s->timer, &tv);
		return;
	}
	if (pid == 0)
		child_exec(sv.argv, parent);
	s->pid = pid;
	s->started_us = mono_us();
	LOGI(MOD, "started worker %s pid %d", s->name, (int)pid);
}

static void restart_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct slot *s = arg;
	if (!sv.stopping && s->pid == 0)
		spawn(s);
}

static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
	(void)sig, (void)what, (void)arg;
	for (int i = 0; i < sv.n; i++) {
		struct slot *s = &sv.slots[i];
		if (s->pid <= 0)
			continue;
		int st = 0;
		pid_t r = waitpid(s->pid, &st, WNOHANG);
		if (r == 0 || (r < 0 && errno != ECHILD))
			continue;
		char buf[128];
		if (r < 0)
			snprintf(buf, sizeof buf, "was reaped by someone else");
		else
			child_status_str(st, buf, sizeof buf);
		s->pid = 0;
		if (sv.stopping) {
			LOGI(MOD, "worker %s %s", s->name, buf);
			continue;
		}
		if (mono_us() - s->started_us > STABLE_US)
			s->backoff_us = BACKOFF_MIN_US;
		LOGW(MOD, "worker %s %s; restarting it in %.1fs", s->name, buf,
		     (double)s->backoff_us / 1e6);
		struct timeval tv = {s->backoff_us / 1000000, s->backoff_us % 1000000};
		evtimer_add(s->timer, &tv);
		s->backoff_us =
			s->backoff_us * 2 > BACKOFF_MAX_US ? BACKOFF_MAX_US : s->backoff_us * 2;
	}
}

/* The address the workers dial: a unix listener if there is one, else
 * the first one, with a wildcard host made loopback. */
static char *default_binary(void)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n <= 0)
		return xstrdup("reactor-worker");
	exe[n] = '\0';
	char *slash = strrchr(exe, '/');
	*slash = '\0';
	return xasprintf("%s/reactor-worker", exe);
}

static void push(char ***v, int *n, char *s)
{
	*v = xrealloc(*v, (size_t)(*n + 2) * sizeof(**v));
	(*v)[(*n)++] = s;
	(*v)[*n] = NULL;
}

/* The bwrap the workers use (NULL with mode none); false with *err when
 * the sandbox is bwrap and there is none: reactord refuses to start
 * rather than have the workers run actions unisolated. */
static bool find_bwrap(const struct cfg *cfg, char **bwrap, char **err)
{
	*bwrap = NULL;
	if (cfg->workers_sandbox == CFG_SANDBOX_NONE)
		return true;
	char *b = cfg->workers_bwrap ? xstrdup(cfg->workers_bwrap) : find_in_path("bwrap");
	if (b && b[0] == '/' && access(b, X_OK) == 0) {
		*bwrap = b;
		return true;
	}
	*err = b ? xasprintf("workers.bwrap %s: %s (install bubblewrap, or set "
			     "workers.sandbox: none explicitly)",
			     b, b[0] != '/' ? "not an absolute path" : strerror(errno))
		 : xstrdup("workers.sandbox is bwrap but there is no bwrap in PATH (install "
			   "bubblewrap, set workers.bwrap, or set workers.sandbox: none "
			   "explicitly)");
	free(b);
	return false;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

/* True when path is dir or lies below it (both resolved). */
static bool path_within(const char *path, const char *dir)
{
	char *rp = realpath(path, NULL), *rd = realpath(dir, NULL);
	bool in = false;
	if (rp && rd) {
		size_t l = strlen(rd);
		in = !strncmp(rp, rd, l) && (rp[l] == '\0' || rp[l] == '/' || l == 1);
	}
	free(rp);
	free(rd);
	return in;
}

/* Per-start work dirs of reactords that died without removing theirs
 * (SIGKILL, a crash): a live reactord holds an flock on its own, so an
 * unlocked reactord-work.* older than a minute (past the moment between
 * mkdtemp and flock of one starting now) is stale and removed. */
static void sweep_stale(const char *tmp)
{
	DIR *d = opendir(tmp);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, "reactord-work.", 14) != 0)
			continue;
		char *p = xasprintf("%s/%s", tmp, e->d_name);
		struct stat st;
		int fd = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0 && fstat(fd, &st) == 0 && st.st_uid == geteuid() &&
		    st.st_mtime < time(NULL) - 60 && flock(fd, LOCK_EX | LOCK_NB) == 0) {
			LOGI(MOD, "removing %s, the work dir of a reactord that is gone", p);
			nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS);
		}
		if (fd >= 0)
			close(fd);
		free(p);
	}
	closedir(d);
}

/* The work dir: the configured one (never inside the state dir, where
 * Redis's socket and the CAS live), or a fresh one under $TMPDIR or
 * /var/tmp for this start.  0711: the actions' user must reach its
 * exec roots below, but may not list it. */
static char *work_dir(const struct cfg *cfg, char **err)
{
	if (cfg->workers_work_dir) {
		char *work = xstrdup(cfg->workers_work_dir);
		if (mkdir(work, 0711) != 0 && errno != EEXIST) {
			*err = xasprintf("workers.work-dir %s: %s", work, strerror(errno));
			free(work);
			return NULL;
		}
		if (path_within(work, cfg->state_dir)) {
			*err = xasprintf("workers.work-dir %s lies inside the state directory %s; "
					 "actions must not run there",
					 work, cfg->state_dir);
			free(work);
			return NULL;
		}
		return work;
	}
	const char *tmp = getenv("TMPDIR");
	if (!tmp || tmp[0] != '/')
		tmp = "/var/tmp";
	sweep_stale(tmp);
	char *work = xasprintf("%s/reactord-work.XXXXXX", tmp);
	sv.own_lock = -1;
	if (!mkdtemp(work) || chmod(work, 0711) != 0 ||
	    (sv.own_lock = open(work, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    flock(sv.own_lock, LOCK_EX | LOCK_NB) != 0) {
		*err = xasprintf("cannot create a work dir for the local workers (%s): %s", work,
				 strerror(errno));
		if (sv.own_lock >= 0)
			close(sv.own_lock);
		free(work);
		return NULL;
	}
	if (path_within(work, cfg->state_dir)) {
		*err = xasprintf("the workers' work dir %s would lie inside the state directory "
				 "%s (TMPDIR); set workers.work-dir",
				 work, cfg->state_dir);
		rmdir(work);
		close(sv.own_lock);
		free(work);
		return NULL;
	}
	sv.own_work = xstrdup(work);
	return work;
}

int worker_sup_start(struct event_base *base, const struct cfg *cfg, char **err)
{
	if (cfg->workers_local <= 0)
		return 0;
	char *bin = cfg->workers_binary ? xstrdup(cfg->workers_binary) : default_binary();
	if (access(bin, X_OK) != 0) {
		*err = xasprintf("workers.binary %s: %s (workers.local is %d; set workers.binary "
				 "or workers.local: 0)",
				 bin, strerror(errno), cfg->workers_local);
		free(bin);
		return -1;
	}
	char *target = server_self_target();
	if (target && !strncmp(target, "grpcs://", 8)) {
		free(target);
		target = NULL;
	}
	if (!target) {
		*err = xstrdup("no listener for the local workers to connect to (they need a unix "
			       "socket or a plaintext listener serving every service)");
		free(bin);
		return -1;
	}
	char *bwrap;
	if (!find_bwrap(cfg, &bwrap, err)) {
		free(bin);
		free(target);
		return -1;
	}
	char *work = work_dir(cfg, err);
	if (!work) {
		free(bin);
		free(target);
		free(bwrap);
		return -1;
	}
	sv.base = base;
	sv.sigchld = evsignal_new(base, SIGCHLD, on_sigchld, NULL);
	if (!sv.sigchld || evsignal_add(sv.sigchld, NULL) < 0) {
		*err = xstrdup("cannot register a SIGCHLD event for the local workers");
		if (sv.sigchld)
			event_free(sv.sigchld);
		sv.sigchld = NULL;
		free(bin);
		free(target);
		free(work);
		free(bwrap);
		if (sv.own_work) {
			rmdir(sv.own_work);
			close(sv.own_lock);
		}
		free(sv.own_work);
		sv.own_work = NULL;
		return -1;
	}
	push(&sv.argv, &sv.argc, bin);
	push(&sv.argv, &sv.argc, xstrdup("-s"));
	push(&sv.argv, &sv.argc, target);
	push(&sv.argv, &sv.argc, xstrdup("-d"));
	push(&sv.argv, &sv.argc, work);
	for (int i = 0; i < cfg->n_workers_properties; i++) {
		push(&sv.argv, &sv.argc, xstrdup("-p"));
		push(&sv.argv, &sv.argc, xstrdup(cfg->workers_properties[i]));
	}
	push(&sv.argv, &sv.argc, xstrdup("-S"));
	push(&sv.argv, &sv.argc, xstrdup(bwrap ? "bwrap" : "none"));
	if (bwrap) {
		push(&sv.argv, &sv.argc, xstrdup("-B"));
		push(&sv.argv, &sv.argc, bwrap);
	}
	if (cfg->workers_run_as) {
		push(&sv.argv, &sv.argc, xstrdup("-u"));
		push(&sv.argv, &sv.argc, xstrdup(cfg->workers_run_as));
	}
	push(&sv.argv, &sv.argc, xstrdup("-n"));
	sv.name_at = sv.argc;
	push(&sv.argv, &sv.argc, NULL); /* the name, per spawn */

	char host[HOST_NAME_MAX + 1] = "localhost";
	gethostname(host, sizeof host - 1);
	for (char *p = host; *p; p++)
		if (*p == '/')
			*p = '_';
	/* With a Redis shared by several reactords, two of them on one host
	 * must not name their workers alike (each would keep replacing the
	 * other's sessions): there the name also carries a short hash of the
	 * state dir, which is as stable as the host name. */
	char *stem = xstrdup(host);
	if (!cfg->redis_embedded) {
		char *rp = realpath(cfg->state_dir, NULL);
		const char *sd = rp ? rp : cfg->state_dir;
		struct digest dg;
		digest_of(sd, strlen(sd), &dg);
		free(stem);
		stem = xasprintf("%s-%02x%02x%02x", host, dg.hash[0], dg.hash[1], dg.hash[2]);
		free(rp);
	}
	sv.n = cfg->workers_local;
	sv.slots = xcalloc((size_t)sv.n, sizeof(*sv.slots));
	LOGI(MOD,
	     "%d local worker(s) on %s (%s), work dir %s, sandbox %s: starting once Redis "
	     "answers",
	     sv.n, target, bin, work, cfg->workers_sandbox == CFG_SANDBOX_NONE ? "none" : "bwrap");
	for (int i = 0; i < sv.n; i++) {
		struct slot *s = &sv.slots[i];
		s->idx = i;
		/* Stable across restarts of reactord (no pid in it): a new
		 * worker's session replaces the one its predecessor left -
		 * same bot id, same owner - at once, requeueing its lease,
		 * instead of lingering beside it until its keepalive ends. */
		s->name = xasprintf("%s-local-%d", stem, i);
		s->backoff_us = BACKOFF_MIN_US;
		s->timer = evtimer_new(base, restart_cb, s);
	}
	free(stem);
	return 0;
}

void worker_sup_run(void)
{
	if (sv.running || sv.stopping)
		return;
	sv.running = true;
	for (int i = 0; i < sv.n; i++)
		spawn(&sv.slots[i]);
}

void worker_sup_stop(void)
{
	if (sv.stopping)
		return;
	sv.stopping = true;
	for (int i = 0; i < sv.n; i++) {
		struct slot *s = &sv.slots[i];
		if (s->timer)
			evtimer_del(s->timer);
		if (s->pid > 0 && kill(s->pid, SIGTERM) == 0)
			LOGI(MOD, "stopping worker %s pid %d", s->name, (int)s->pid);
	}
}

void worker_sup_shutdown(void)
{
	worker_sup_stop();
	int64_t deadline = mono_us() + STOP_WAIT_US;
	for (int i = 0; i < sv.n; i++) {
		struct slot *s = &sv.slots[i];
		while (s->pid > 0) {
			int st;
			pid_t r = waitpid(s->pid, &st, WNOHANG);
			if (r == s->pid || (r < 0 && errno != EINTR)) {
				s->pid = 0;
				break;
			}
			if (mono_us() >= deadline) {
				LOGW(MOD, "worker %s pid %d did not stop: killing it", s->name,
				     (int)s->pid);
				kill(s->pid, SIGKILL);
				while (waitpid(s->pid, &st, 0) < 0 && errno == EINTR)
					;
				s->pid = 0;
				break;
			}
			struct timespec ts = {0, 5000000};
			nanosleep(&ts, NULL);
		}
		if (s->timer)
			event_free(s->timer);
		free(s->name);
	}
	free(sv.slots);
	sv.slots = NULL;
	sv.n = 0;
	sv.running = false;
	if (sv.sigchld)
		event_free(sv.sigchld);
	sv.sigchld = NULL;
	for (int i = 0; i < sv.argc; i++)
		if (i != sv.name_at)
			free(sv.argv[i]);
	free(sv.argv);
	sv.argv = NULL;
	sv.argc = 0;
	if (sv.own_work) {
		nftw(sv.own_work, rm_one, 16, FTW_DEPTH | FTW_PHYS);
		close(sv.own_lock);
		free(sv.own_work);
		sv.own_work = NULL;
	}
}
