/*
 * redisproc.c - spawns and supervises the embedded redis-server.  It owns
 * <state_dir>/redis/: the lock that keeps a second reactord out of the
 * directory, the generated redis.conf, and the one child process serving
 * it on a unix socket with AOF persistence.  Startup and shutdown block
 * (bounded, at most about 10 s each) because nothing can run before Redis
 * is up or after it is gone; while the loop runs, supervision is
 * non-blocking: a SIGCHLD event reaps a dead server and a timer respawns it
 * with backoff, and store.c's reconnect logic finds the new server.
 */
#define _GNU_SOURCE
#include "state/redisproc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "core/cfg.h"
#include "core/child.h"
#include "core/log.h"

#define MOD "redis"

/* How long startup waits for PING, and stop waits for an exit, before
 * giving up (startup) or escalating to SIGKILL (stop). */
#define READY_TIMEOUT_US (10 * 1000000LL)
#define STOP_TIMEOUT_US	 (10 * 1000000LL)
#define POLL_US		 20000
/* Respawn backoff: a server that crashes at once (bad AOF, full disk)
 * must not be respawned in a tight loop; one that ran a while is
 * respawned quickly again. */
#define RESPAWN_MIN_US	  100000LL
#define RESPAWN_MAX_US	  (30 * 1000000LL)
#define RESPAWN_STABLE_US (60 * 1000000LL)
/* redis.maxmemory's default, for a cfg that leaves it 0. */
#define DEFAULT_MAXMEMORY (1LL << 30)

static struct {
	bool started;
	struct event_base *base;
	char *dir; /* canonical absolute <state_dir>/redis */
	char *conf, *sock, *pidfile, *logfile, *lockfile;
	char *server;	/* binary to exec */
	char *password; /* NULL when none */
	long long maxmemory;
	int lock_fd;
	pid_t pid; /* 0 while down */
	int64_t spawned_us;
	int64_t backoff_us;
	unsigned long restarts;
	struct event *sigchld, *respawn;
} rp = {.lock_fd = -1};

static void sleep_us(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Redis config values go through sdssplitargs: double-quote them and
 * escape what it would interpret, so paths with spaces or a password with
 * quotes survive. */
static void put_quoted(FILE *f, const char *key, const char *val)
{
	fprintf(f, "%s \"", key);
	for (const unsigned char *s = (const unsigned char *)val; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if (*s < 0x20 || *s >= 0x7f)
			fprintf(f, "\\x%02x", *s);
		else
			fputc(*s, f);
	}
	fputs("\"\n", f);
}

static int write_conf(char **err)
{
	char *tmp = xasprintf("%s.tmp", rp.conf);
	FILE *f = fopen(tmp, "w");
	if (!f) {
		*err = xasprintf("cannot write %s: %s", tmp, strerror(errno));
		free(tmp);
		return -1;
	}
	fputs("# Written by reactord at every start; edits are lost.\n"
	      "# Unix socket only: nothing but this user can reach it.\n"
	      "port 0\n",
	      f);
	put_quoted(f, "unixsocket", rp.sock);
	fputs("unixsocketperm 700\n", f);
	put_quoted(f, "dir", rp.dir);
	put_quoted(f, "pidfile", rp.pidfile);
	put_quoted(f, "logfile", rp.logfile);
	fputs("daemonize no\n"
	      "supervised no\n"
	      "always-show-logo no\n"
	      "# All durable reactord state lives here: AOF, no RDB snapshots.\n"
	      "appendonly yes\n"
	      "appendfsync everysec\n"
	      "save \"\"\n",
	      f);
	/* Bounded, and never evicting: an evicted key would silently lose a
	 * queued job or a build's state.  A full server refuses writes with
	 * OOM, which reactord answers RESOURCE_EXHAUSTED. */
	fprintf(f,
		"# redis.maxmemory in reactor.conf\n"
		"maxmemory %lld\n"
		"maxmemory-policy noeviction\n",
		rp.maxmemory);
	if (rp.password)
		put_quoted(f, "requirepass", rp.password);
	bool bad = ferror(f) != 0;
	if (fclose(f) != 0 || bad || rename(tmp, rp.conf) < 0) {
		*err = xasprintf("cannot write %s: %s", rp.conf, strerror(errno));
		unlink(tmp);
		free(tmp);
		return -1;
	}
	free(tmp);
	return 0;
}

/* Last non-empty line of redis.log, so errors say why redis gave up. */
static char *log_tail(void)
{
	char buf[4096];
	int fd = open(rp.logfile, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return xstrdup("(no log)");
	off_t end = lseek(fd, 0, SEEK_END);
	off_t start = end > (off_t)sizeof buf - 1 ? end - (off_t)sizeof buf + 1 : 0;
	ssize_t n = pread(fd, buf, sizeof buf - 1, start);
	close(fd);
	if (n <= 0)
		return xstrdup("(empty log)");
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	buf[n] = '\0';
	char *nl = strrchr(buf, '\n');
	return xstrdup(nl ? nl + 1 : buf);
}

/* A process is gone when it no longer exists or is a zombie: a zombie is
 * not ours to reap and holds no files. */
static bool proc_gone(pid_t pid)
{
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return true;
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return errno == ENOENT;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* "pid (comm) S ...": comm may contain ')', so take the last one. */
	char *rp_ = strrchr(buf, ')');
	return rp_ && rp_[1] == ' ' && (rp_[2] == 'Z' || rp_[2] == 'X');
}

/* True when pid runs a redis-server: comm is "redis-server" or the
 * basename of the configured binary (comm keeps 15 characters). */
static bool proc_is_redis(pid_t pid)
{
	char path[64], comm[64];
	snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	bool ok = fgets(comm, sizeof comm, f) != NULL;
	fclose(f);
	if (!ok)
		return false;
	comm[strcspn(comm, "\n")] = '\0';
	const char *base = strrchr(rp.server, '/');
	base = base ? base + 1 : rp.server;
	return strncmp(comm, "redis-server", 15) == 0 || strncmp(comm, base, 15) == 0;
}

/* Redis chdirs to its `dir`, so a server whose cwd is our directory is one
 * that serves our data, whatever socket it listens on. */
static bool proc_cwd_is(pid_t pid, const char *dir)
{
	char path[64], cwd[PATH_MAX];
	snprintf(path, sizeof path, "/proc/%d/cwd", (int)pid);
	ssize_t n = readlink(path, cwd, sizeof cwd - 1);
	if (n < 0)
		return false;
	cwd[n] = '\0';
	return strcmp(cwd, dir) == 0;
}

static pid_t read_pidfile(void)
{
	FILE *f = fopen(rp.pidfile, "re");
	if (!f)
		return 0;
	long v = 0;
	if (fscanf(f, "%ld", &v) != 1 || v <= 1 || v > INT_MAX)
		v = 0;
	fclose(f);
	return (pid_t)v;
}

/* Synchronous connection to our socket, authenticated when a password is
 * configured.  Startup and shutdown only. */
static redisContext *sync_connect(long timeout_us)
{
	struct timeval tv = {timeout_us / 1000000, timeout_us % 1000000};
	redisContext *c = redisConnectUnixWithTimeout(rp.sock, tv);
	if (!c || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	if (rp.password) {
		redisReply *r = redisCommand(c, "AUTH %s", rp.password);
		if (r)
			freeReplyObject(r);
		if (!r) {
			redisFree(c);
			return NULL;
		}
	}
	return c;
}

/* 1: answered PONG; 0: answered with an error (LOADING, NOAUTH...: it is
 * a live server all the same); -1: no answer.  `why` gets the error. */
static int ping(long timeout_us, char *why, size_t len)
{
	redisContext *c = sync_connect(timeout_us);
	if (!c)
		return -1;
	redisReply *r = redisCommand(c, "PING");
	int rc = -1;
	if (r && r->type == REDIS_REPLY_STATUS) {
		rc = 1;
	} else if (r && r->type == REDIS_REPLY_ERROR) {
		snprintf(why, len, "%s", r->str);
		rc = 0;
	}
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return rc;
}

/* Ask the server on our socket to SHUTDOWN (it flushes and fsyncs the
 * AOF).  Success shows as the connection closing without a reply. */
static int send_shutdown(void)
{
	redisContext *c = sync_connect(1000000);
	if (!c)
		return -1;
	redisReply *r = redisCommand(c, "SHUTDOWN");
	int rc = 0;
	if (r) {
		LOGW(MOD, "SHUTDOWN refused: %s",
		     r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		freeReplyObject(r);
		rc = -1;
	}
	redisFree(c);
	return rc;
}

/* Wait for a process that is not our child to go away. */
static bool wait_gone(pid_t pid, int64_t timeout_us)
{
	int64_t deadline = mono_us() + timeout_us;
	while (!proc_gone(pid)) {
		if (mono_us() > deadline)
			return false;
		sleep_us(POLL_US);
	}
	return true;
}

/* Never two servers on one data dir: a server left by an earlier reactord
 * (found by its pid file, or answering on our socket) is shut down before
 * ours starts.  We hold the directory lock, so it is not another live
 * reactord's. */
static int shutdown_stale(char **err)
{
	char why[256] = "";
	pid_t old = read_pidfile();
	if (old > 0 && old != getpid() && !proc_gone(old) && proc_is_redis(old)) {
		int answers = ping(500000, why, sizeof why);
		if (answers < 0 && !proc_cwd_is(old, rp.dir)) {
			LOGW(MOD,
			     "%s names pid %d, a redis-server that neither runs in %s "
			     "nor answers on %s; leaving it alone",
			     rp.pidfile, (int)old, rp.dir, rp.sock);
		} else {
			LOGW(MOD,
			     "redis-server pid %d left by an earlier run is still "
			     "serving %s; shutting it down",
			     (int)old, rp.dir);
			if (answers < 0 || send_shutdown() < 0)
				kill(old, SIGTERM);
			if (!wait_gone(old, STOP_TIMEOUT_US)) {
				LOGW(MOD, "pid %d did not exit in 10 s; killing it", (int)old);
				kill(old, SIGKILL);
				if (!wait_gone(old, 2000000)) {
					*err = xasprintf("old redis-server pid %d in %s "
							 "does not exit",
							 (int)old, rp.dir);
					return -1;
				}
			}
		}
	}
	/* No pid file, but something still serves our socket: same rule. */
	if (ping(200000, why, sizeof why) >= 0) {
		LOGW(MOD, "an unknown redis-server answers on %s; shutting it down", rp.sock);
		int64_t deadline = mono_us() + STOP_TIMEOUT_US;
		if (send_shutdown() < 0) {
			*err = xasprintf("a redis-server without a pid file answers on %s "
					 "and refuses SHUTDOWN; stop it by hand",
					 rp.sock);
			return -1;
		}
		while (ping(100000, why, sizeof why) >= 0) {
			if (mono_us() > deadline) {
				*err = xasprintf("redis-server on %s keeps answering "
						 "after SHUTDOWN",
						 rp.sock);
				return -1;
			}
			sleep_us(POLL_US);
		}
	}
	if (unlink(rp.sock) < 0 && errno != ENOENT) {
		*err = xasprintf("cannot remove stale socket %s: %s", rp.sock, strerror(errno));
		return -1;
	}
	return 0;
}

/* In the child, between fork and exec: only async-signal-safe calls. */
static void child_exec(int errfd, pid_t parent)
{
	struct {
		int stage, err;
	} fail = {0, 0};
	/* Die with reactord, even when it is SIGKILLed (SIGTERM makes redis
	 * flush its AOF). */
	int prep = child_prepare(SIGTERM, parent);
	if (prep == -2) {
		fail.stage = 1;
		goto out;
	}
	if (prep == -1)
		_exit(1);
	/* Our sockets (hiredis, listeners) are not all close-on-exec. */
	if (errfd > 3)
		close_range(3, (unsigned)errfd - 1, 0);
	close_range((unsigned)errfd + 1, ~0U, 0);
	char *argv[] = {rp.server, rp.conf, NULL};
	execvp(rp.server, argv);
	fail.stage = 2;
out:
	fail.err = errno;
	if (write(errfd, &fail, sizeof fail) < 0)
		_exit(126);
	_exit(127);
}

/* Fork and exec the server.  A close-on-exec pipe reports a failed exec
 * (the read returns at once when exec succeeds), so the error names the
 * cause instead of "exited with status 127". */
static pid_t spawn(char **err)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		*err = xasprintf("pipe: %s", strerror(errno));
		return -1;
	}
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		*err = xasprintf("fork: %s", strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (pid == 0)
		child_exec(pfd[1], parent);
	close(pfd[1]);
	struct {
		int stage, err;
	} fail;
	ssize_t n;
	while ((n = read(pfd[0], &fail, sizeof fail)) < 0 && errno == EINTR)
		;
	close(pfd[0]);
	if (n == (ssize_t)sizeof fail) {
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		*err = xasprintf("cannot %s %s: %s",
				 fail.stage == 1 ? "set parent-death signal for" : "execute",
				 rp.server, strerror(fail.err));
		return -1;
	}
	rp.spawned_us = mono_us();
	LOGI(MOD, "started %s pid %d on %s", rp.server, (int)pid, rp.sock);
	return pid;
}

static void stop_child(pid_t pid);

/* Block until the new server answers PING or dies (startup only). */
static int wait_ready(pid_t pid, char **err)
{
	int64_t deadline = mono_us() + READY_TIMEOUT_US;
	char why[256] = "", sbuf[128];
	for (;;) {
		int st;
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid) {
			char *tail = log_tail();
			*err = xasprintf("%s %s during startup; %s says: %s", rp.server,
					 child_status_str(st, sbuf, sizeof sbuf), rp.logfile, tail);
			free(tail);
			return -1;
		}
		int p = ping(100000, why, sizeof why);
		if (p > 0)
			return 0;
		if (p == 0 && strncmp(why, "LOADING", 7) == 0) {
			/* A large AOF can take longer than our wait; the store's
			 * handshake PING retries until loading finishes. */
			LOGI(MOD, "redis-server pid %d is loading its AOF", (int)pid);
			return 0;
		}
		if (mono_us() > deadline) {
			char *tail = log_tail();
			*err = xasprintf("%s pid %d did not answer PING on %s within 10 s%s%s; "
					 "%s says: %s",
					 rp.server, (int)pid, rp.sock, why[0] ? ": " : "", why,
					 rp.logfile, tail);
			free(tail);
			stop_child(pid);
			return -1;
		}
		sleep_us(POLL_US);
	}
}

/* SHUTDOWN our child (SIGTERM if that cannot be sent or after half the
 * wait), SIGKILL after 10 s, and always reap it. */
static void stop_child(pid_t pid)
{
	char sbuf[128];
	int st = 0;
	bool termed = send_shutdown() < 0;
	if (termed)
		kill(pid, SIGTERM);
	int64_t start = mono_us();
	pid_t r;
	while ((r = waitpid(pid, &st, WNOHANG)) == 0 && mono_us() - start < STOP_TIMEOUT_US) {
		if (!termed && mono_us() - start > STOP_TIMEOUT_US / 2) {
			LOGW(MOD,
			     "redis-server pid %d still running 5 s after SHUTDOWN; "
			     "sending SIGTERM",
			     (int)pid);
			kill(pid, SIGTERM);
			termed = true;
		}
		sleep_us(POLL_US);
	}
	if (r == 0) {
		LOGW(MOD, "redis-server pid %d did not exit within 10 s; killing it", (int)pid);
		kill(pid, SIGKILL);
		while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
			;
	}
	if (r == pid)
		LOGI(MOD, "redis-server pid %d %s", (int)pid,
		     child_status_str(st, sbuf, sizeof sbuf));
	else
		LOGW(MOD, "waitpid %d: %s", (int)pid, strerror(errno));
}

static void arm_respawn(void)
{
	struct timeval tv = {rp.backoff_us / 1000000, rp.backoff_us % 1000000};
	evtimer_add(rp.respawn, &tv);
	rp.backoff_us = rp.backoff_us * 2 > RESPAWN_MAX_US ? RESPAWN_MAX_US : rp.backoff_us * 2;
}

/* SIGCHLD: reactord may have other children (local workers), so reap only
 * our pid and never wait(-1). */
static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
	(void)sig, (void)what, (void)arg;
	if (rp.pid <= 0)
		return;
	int st = 0;
	pid_t r = waitpid(rp.pid, &st, WNOHANG);
	if (r == 0 || (r < 0 && errno != ECHILD))
		return;
	char sbuf[128], lbuf[32], dbuf[32];
	if (r < 0)
		snprintf(sbuf, sizeof sbuf, "was reaped by someone else");
	else
		child_status_str(st, sbuf, sizeof sbuf);
	int64_t lived = mono_us() - rp.spawned_us;
	if (lived > RESPAWN_STABLE_US)
		rp.backoff_us = RESPAWN_MIN_US;
	char *tail = log_tail();
	LOGE(MOD, "embedded redis-server pid %d %s after %s (log: %s); restarting in %s",
	     (int)rp.pid, sbuf, fmt_duration(lived, lbuf, sizeof lbuf), tail,
	     fmt_duration(rp.backoff_us, dbuf, sizeof dbuf));
	free(tail);
	rp.pid = 0;
	arm_respawn();
}

/* Respawn without waiting for PING: the loop must not block, and the
 * store reconnects on its own once the socket answers. */
static void on_respawn(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	char *err = NULL;
	unlink(rp.sock);
	pid_t pid = spawn(&err);
	if (pid < 0) {
		char dbuf[32];
		LOGE(MOD, "cannot restart redis-server: %s; retrying in %s", err,
		     fmt_duration(rp.backoff_us, dbuf, sizeof dbuf));
		free(err);
		arm_respawn();
		return;
	}
	rp.pid = pid;
	rp.restarts++;
}

static void reset(void)
{
	free(rp.dir);
	free(rp.conf);
	free(rp.sock);
	free(rp.pidfile);
	free(rp.logfile);
	free(rp.lockfile);
	free(rp.server);
	free(rp.password);
	if (rp.sigchld)
		event_free(rp.sigchld);
	if (rp.respawn)
		event_free(rp.respawn);
	if (rp.lock_fd >= 0)
		close(rp.lock_fd);
	unsigned long restarts = rp.restarts;
	memset(&rp, 0, sizeof rp);
	rp.lock_fd = -1;
	rp.restarts = restarts;
}

static int setup_paths(const struct cfg *cfg, char **err)
{
	const char *sd = cfg->state_dir ? cfg->state_dir : ".";
	char *want = xasprintf("%s/redis", sd);
	int rc = mkdir_p(want, 0700);
	if (rc < 0) {
		*err = xasprintf("cannot create %s: %s", want, strerror(-rc));
		free(want);
		return -1;
	}
	/* Absolute and canonical: redis resolves paths after chdir to `dir`,
	 * and /proc/PID/cwd shows the canonical form. */
	rp.dir = realpath(want, NULL);
	if (!rp.dir) {
		*err = xasprintf("cannot resolve %s: %s", want, strerror(errno));
		free(want);
		return -1;
	}
	free(want);
	rp.conf = xasprintf("%s/redis.conf", rp.dir);
	rp.sock = xasprintf("%s/redis.sock", rp.dir);
	rp.pidfile = xasprintf("%s/redis.pid", rp.dir);
	rp.logfile = xasprintf("%s/redis.log", rp.dir);
	rp.lockfile = xasprintf("%s/reactord.lock", rp.dir);
	struct sockaddr_un sun;
	if (strlen(rp.sock) >= sizeof sun.sun_path) {
		*err = xasprintf("socket path %s is %zu bytes, over the unix limit of "
				 "%zu; use a shorter state_dir",
				 rp.sock, strlen(rp.sock), sizeof sun.sun_path - 1);
		return -1;
	}
	return 0;
}

int redisproc_start(struct event_base *base, const struct cfg *cfg, char **err)
{
	if (rp.started) {
		*err = xstrdup("embedded redis-server already started");
		return -1;
	}
	rp.base = base;
	rp.server = xstrdup(cfg->redis_server && *cfg->redis_server ? cfg->redis_server
								    : "redis-server");
	rp.password =
		cfg->redis_password && *cfg->redis_password ? xstrdup(cfg->redis_password) : NULL;
	rp.maxmemory =
		cfg->redis_maxmemory > 0 ? (long long)cfg->redis_maxmemory : DEFAULT_MAXMEMORY;
	rp.backoff_us = RESPAWN_MIN_US;
	rp.restarts = 0;
	if (setup_paths(cfg, err) < 0)
		goto fail;
	rp.lock_fd = open(rp.lockfile, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (rp.lock_fd < 0) {
		*err = xasprintf("cannot open %s: %s", rp.lockfile, strerror(errno));
		goto fail;
	}
	if (flock(rp.lock_fd, LOCK_EX | LOCK_NB) < 0) {
		*err = xasprintf("%s is in use by another reactord (%s is locked)", rp.dir,
				 rp.lockfile);
		goto fail;
	}
	if (shutdown_stale(err) < 0 || write_conf(err) < 0)
		goto fail;
	/* Watch SIGCHLD before spawning so no death goes unseen; until the
	 * loop runs, wait_ready reaps a server that dies at startup. */
	rp.sigchld = evsignal_new(base, SIGCHLD, on_sigchld, NULL);
	rp.respawn = evtimer_new(base, on_respawn, NULL);
	if (!rp.sigchld || !rp.respawn || evsignal_add(rp.sigchld, NULL) < 0) {
		*err = xstrdup("cannot register SIGCHLD event");
		goto fail;
	}
	pid_t pid = spawn(err);
	if (pid < 0)
		goto fail;
	if (wait_ready(pid, err) < 0)
		goto fail;
	rp.pid = pid;
	rp.started = true;
	return 0;
fail:
	reset();
	return -1;
}

void redisproc_stop(void)
{
	if (!rp.started)
		return;
	/* Stop supervising first, or the SIGCHLD handler would reap and
	 * respawn the server we are stopping. */
	event_free(rp.sigchld);
	event_free(rp.respawn);
	rp.sigchld = rp.respawn = NULL;
	if (rp.pid > 0)
		stop_child(rp.pid);
	reset();
}

const char *redisproc_socket(void)
{
	return rp.started ? rp.sock : NULL;
}

pid_t redisproc_pid(void)
{
	return rp.started ? rp.pid : 0;
}

unsigned long redisproc_restarts(void)
{
	return rp.restarts;
}
