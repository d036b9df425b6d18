/*
 * check_redis.h - one private redis-server for the Check programs that test
 * Lua scripts and stores against the real thing (domain/check_ac,
 * check_buckets, check_sched).  Include once, after defining
 * CHECK_REDIS_NAME (the program's name, for the temp dir and messages);
 * register redis_setup/redis_teardown as an unchecked fixture so the
 * server outlives the forked tests.  The server listens only on a unix
 * socket in a fresh temp dir (g_sock), persists nothing, and dies with the
 * runner (PR_SET_PDEATHSIG) even when a test crashes it.  $REDIS_SERVER
 * picks the binary (redis_setup reads it).
 */
#ifndef REACTOR_CHECK_REDIS_H
#define REACTOR_CHECK_REDIS_H

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "core/util.h"

#ifndef CHECK_REDIS_NAME
#error "define CHECK_REDIS_NAME before including check_redis.h"
#endif

static char g_dir[64];
static char g_sock[128];
static pid_t g_redis_pid;

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	remove(p);
	return 0;
}

/* A plain connection to the test server once it answers PING, or NULL
 * after wait_us. */
static redisContext *sync_conn(int64_t wait_us)
{
	int64_t deadline = mono_us() + wait_us;
	for (;;) {
		struct timeval tv = {1, 0};
		redisContext *c = redisConnectUnixWithTimeout(g_sock, tv);
		if (c && !c->err) {
			redisReply *r = redisCommand(c, "PING");
			bool ok = r && r->type == REDIS_REPLY_STATUS;
			if (r)
				freeReplyObject(r);
			if (ok)
				return c;
		}
		if (c)
			redisFree(c);
		if (mono_us() > deadline)
			return NULL;
		usleep(10000);
	}
}

static void redis_setup(void)
{
	const char *bin = getenv("REDIS_SERVER");
	if (!bin || !*bin)
		bin = "redis-server";
	snprintf(g_dir, sizeof g_dir, "/tmp/" CHECK_REDIS_NAME ".XXXXXX");
	if (!mkdtemp(g_dir))
		abort();
	snprintf(g_sock, sizeof g_sock, "%s/redis.sock", g_dir);
	pid_t parent = getpid();
	g_redis_pid = fork();
	if (g_redis_pid < 0)
		abort();
	if (g_redis_pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 1);
		execlp(bin, bin, "--port", "0", "--unixsocket", g_sock, "--save", "", "--appendonly",
		       "no", "--dir", g_dir, (char *)NULL);
		_exit(127);
	}
	redisContext *c = sync_conn(10000000);
	if (!c) {
		fprintf(stderr, CHECK_REDIS_NAME ": redis-server did not start on %s\n", g_sock);
		return;
	}
	redisFree(c);
}

static void redis_teardown(void)
{
	if (g_redis_pid > 0) {
		kill(g_redis_pid, SIGKILL);
		waitpid(g_redis_pid, NULL, 0);
		g_redis_pid = 0;
	}
	nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
