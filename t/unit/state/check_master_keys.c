/*
 * check_master_keys.c - the build master's Redis keys (keys.c, "The build
 * master") and its scripts (master_save, master_drop, master_change),
 * run with EVAL on a private redis-server (unix socket in a temporary
 * directory, killed with the test, and with us: PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include <check.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "core/util.h"
#include "state/keys.h"
#include "state/lua.h"
#include "check_run.h"

static const char *g_redis = "redis-server";

START_TEST(test_key_names)
{
	keys_set_ns("rx:");
	char *k = keys_master("host/127.0.0.1:5");
	ck_assert_str_eq(k, "rx:master:host/127.0.0.1:5");
	free(k);
	k = keys_master_build("m1", 1796606442517166000LL);
	ck_assert_str_eq(k, "rx:master:m1:build:1796606442517166000");
	free(k);
	k = keys_mstep(42, 3);
	ck_assert_str_eq(k, "rx:mstep:42:3");
	free(k);
	/* ':' and '%' escaped, so "a:b"+"c" and "a"+"b:c" are two changes. */
	k = keys_mchange("a:b", "c");
	ck_assert_str_eq(k, "rx:mchange:a%3Ab:c");
	free(k);
	k = keys_mchange("a", "b:c%");
	ck_assert_str_eq(k, "rx:mchange:a:b%3Ac%25");
	free(k);
	keys_set_ns("");
}
END_TEST

/* ---- a private redis-server --------------------------------------------------------- */

struct rs {
	pid_t pid;
	char dir[64], sock[96];
	redisContext *c;
};

static void rs_start(struct rs *r)
{
	snprintf(r->dir, sizeof(r->dir), "/tmp/ckmk.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(r->dir));
	snprintf(r->sock, sizeof(r->sock), "%s/r.sock", r->dir);
	/* Its log (stdout) tells when it accepts connections: no polling. */
	int pfd[2];
	ck_assert_int_eq(pipe(pfd), 0);
	r->pid = fork();
	ck_assert_int_ge(r->pid, 0);
	if (r->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(pfd[1], 1);
		close(pfd[0]);
		close(pfd[1]);
		execlp(g_redis, g_redis, "--port", "0", "--unixsocket", r->sock, "--save", "",
		       "--appendonly", "no", "--dir", r->dir, "--logfile", "", (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	FILE *log = fdopen(pfd[0], "r");
	char line[512];
	bool ready = false;
	while (!ready && fgets(line, sizeof(line), log))
		ready = strstr(line, "ready to accept connections") != NULL;
	fclose(log); /* later log lines go nowhere */
	ck_assert_msg(ready, "%s exited before it was ready", g_redis);
	r->c = redisConnectUnix(r->sock);
	ck_assert_ptr_nonnull(r->c);
	ck_assert_msg(!r->c->err, "connect: %s", r->c->errstr);
}

static void rs_stop(struct rs *r)
{
	if (r->c)
		redisFree(r->c);
	kill(r->pid, SIGKILL);
	waitpid(r->pid, NULL, 0);
	char *cmd = xasprintf("rm -rf %s", r->dir);
	ck_assert_int_eq(system(cmd), 0);
	free(cmd);
}

/* EVAL script name with nkeys keys then args (argv NULL-terminated). */
static redisReply *eval(struct rs *r, const char *name, int nkeys, const char **argv)
{
	int n = 0;
	while (argv[n])
		n++;
	const char **v = xcalloc((size_t)n + 3, sizeof(*v));
	char nk[16];
	snprintf(nk, sizeof(nk), "%d", nkeys);
	v[0] = "EVAL";
	v[1] = lua_source(name);
	v[2] = nk;
	for (int i = 0; i < n; i++)
		v[3 + i] = argv[i];
	redisReply *rep = redisCommandArgv(r->c, n + 3, v, NULL);
	free(v);
	ck_assert_ptr_nonnull(rep);
	ck_assert_msg(rep->type != REDIS_REPLY_ERROR, "%s: %s", name, rep->str);
	return rep;
}

static long long cmd_int(struct rs *r, const char *fmt, const char *a, const char *b)
{
	redisReply *rep = redisCommand(r->c, fmt, a, b);
	ck_assert_ptr_nonnull(rep);
	ck_assert_int_eq(rep->type, REDIS_REPLY_INTEGER);
	long long v = rep->integer;
	freeReplyObject(rep);
	return v;
}

static void assert_hget(struct rs *r, const char *key, const char *field, const char *want)
{
	redisReply *rep = redisCommand(r->c, "HGET %s %s", key, field);
	ck_assert_ptr_nonnull(rep);
	if (!want) {
		ck_assert_int_eq(rep->type, REDIS_REPLY_NIL);
	} else {
		ck_assert_int_eq(rep->type, REDIS_REPLY_STRING);
		ck_assert_str_eq(rep->str, want);
	}
	freeReplyObject(rep);
}

START_TEST(test_save_and_drop)
{
	struct rs r = {0};
	rs_start(&r);
	const char *k1 = "master:m", *k2 = "master:m:build:7", *k3 = "mstep:7:0";
	/* An update of a build never taken changes nothing. */
	redisReply *rep = eval(&r, "master_save", 2,
			       (const char *[]){k1, k2, "7", "update", "1", "op", "x", NULL});
	ck_assert_int_eq(rep->integer, 0);
	freeReplyObject(rep);
	ck_assert_int_eq(cmd_int(&r, "EXISTS %s %s", k1, k2), 0);
	/* Taken. */
	rep = eval(
		&r, "master_save", 2,
		(const char *[]){k1, k2, "7", "new", "2", "lease_key", "99", "step", "-1", NULL});
	ck_assert_int_eq(rep->integer, 1);
	freeReplyObject(rep);
	ck_assert_int_eq(cmd_int(&r, "SISMEMBER %s %s", k1, "7"), 1);
	assert_hget(&r, k2, "lease_key", "99");
	/* A step starts: both hashes at once. */
	rep = eval(&r, "master_save", 3,
		   (const char *[]){k1, k2, k3, "7", "update", "1", "step", "0", "name", "one",
				    "status", "RUNNING", NULL});
	ck_assert_int_eq(rep->integer, 1);
	freeReplyObject(rep);
	assert_hget(&r, k2, "step", "0");
	assert_hget(&r, k2, "lease_key", "99");
	assert_hget(&r, k3, "status", "RUNNING");
	assert_hget(&r, k3, "name", "one");
	/* Released: the held set and the hash go, the step record expires. */
	rep = eval(&r, "master_drop", 4,
		   (const char *[]){k1, k2, k3, "mstep:7:1", "7", "3600", NULL});
	freeReplyObject(rep);
	ck_assert_int_eq(cmd_int(&r, "EXISTS %s %s", k1, k2), 0);
	assert_hget(&r, k3, "status", "RUNNING");
	ck_assert_int_eq(cmd_int(&r, "EXISTS %s %s", "mstep:7:1", "mstep:7:1"), 0);
	rep = redisCommand(r.c, "TTL %s", k3);
	ck_assert(rep->integer > 0 && rep->integer <= 3600);
	freeReplyObject(rep);
	/* A late write after the release brings nothing back. */
	rep = eval(&r, "master_save", 3,
		   (const char *[]){k1, k2, k3, "7", "update", "1", "op", "late", "status",
				    "SUCCESS", NULL});
	ck_assert_int_eq(rep->integer, 0);
	freeReplyObject(rep);
	ck_assert_int_eq(cmd_int(&r, "EXISTS %s %s", k1, k2), 0);
	assert_hget(&r, k3, "status", "RUNNING");
	rs_stop(&r);
}
END_TEST

START_TEST(test_change_once)
{
	struct rs r = {0};
	rs_start(&r);
	const char *k = "mchange:c1:r1";
	redisReply *rep =
		eval(&r, "master_change", 1,
		     (const char *[]){k, "c1", "r1", "{\"id\":\"c1\",\"x\":1}", "10", "100", NULL});
	ck_assert_int_eq(rep->type, REDIS_REPLY_STRING);
	ck_assert_str_eq(rep->str, "{\"id\":\"c1\",\"x\":1}");
	freeReplyObject(rep);
	/* The second build's form is not taken: the first one is returned. */
	rep = eval(&r, "master_change", 1,
		   (const char *[]){k, "c1", "r1", "{\"id\":\"c1\",\"x\":2}", "11", "200", NULL});
	ck_assert_str_eq(rep->str, "{\"id\":\"c1\",\"x\":1}");
	freeReplyObject(rep);
	assert_hget(&r, k, "builds", "2");
	assert_hget(&r, k, "first_build", "10");
	assert_hget(&r, k, "last_build", "11");
	assert_hget(&r, k, "created", "100");
	assert_hget(&r, k, "revision", "r1");
	rep = redisCommand(r.c, "TTL %s", k);
	ck_assert_int_eq(rep->integer, -1);
	freeReplyObject(rep);
	rs_stop(&r);
}
END_TEST

int main(void)
{
	if (getenv("REDIS_SERVER") && *getenv("REDIS_SERVER"))
		g_redis = getenv("REDIS_SERVER");
	Suite *s = suite_create("master_keys");
	TCase *tc = tcase_create("keys");
	tcase_add_test(tc, test_key_names);
	suite_add_tcase(s, tc);
	tc = tcase_create("scripts");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_save_and_drop);
	tcase_add_test(tc, test_change_once);
	suite_add_tcase(s, tc);
	return check_run(s);
}
