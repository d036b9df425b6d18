/*
 * check_store.c - tests for store.c and redisproc.c against real
 * redis-server processes in a private temporary state directory.  Each
 * test is its own TCase: an unchecked fixture in the runner process makes
 * the directory and, whatever happened in the forked test (failure, crash,
 * timeout), kills every process still running in it and removes it, so no
 * redis-server outlives a run.  Waiting is done by running the event loop
 * until a callback sets a counter, under a timeout; nothing sleeps for
 * readiness.
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "core/cfg.h"
#include "core/err.h"
#include "core/log.h"
#include "state/redisproc.h"
#include "state/store.h"
#include "check_run.h"

static char g_dir[64];		  /* made by the runner, per test */
static struct event_base *g_base; /* per test process */
static struct cfg *g_cfg;
static int g_up, g_down;		     /* observer transitions */
static pid_t g_hand_pid;		     /* a redis-server the test started itself */
static pid_t g_stopped_pid;		     /* a server the test SIGSTOPped */
static const char *g_redis = "redis-server"; /* $REDIS_SERVER overrides */

/* ---- runner-side fixture: temp dir and leftovers ---- */

static bool gone(pid_t pid)
{
	char path[64], buf[512];
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return true;
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return true;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	return p && (p[2] == 'Z' || p[2] == 'X');
}

/* Kill every process whose cwd is inside our dir (redis chdirs to its
 * data dir); returns how many there were. */
static int kill_leftovers(const char *dir)
{
	char real[PATH_MAX];
	if (!realpath(dir, real))
		return 0;
	size_t rl = strlen(real);
	int killed = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL) {
		char path[300], cwd[PATH_MAX];
		pid_t pid = (pid_t)atoi(e->d_name);
		if (pid <= 0 || pid == getpid())
			continue;
		snprintf(path, sizeof path, "/proc/%s/cwd", e->d_name);
		ssize_t n = readlink(path, cwd, sizeof cwd - 1);
		if (n < 0)
			continue;
		cwd[n] = '\0';
		if (strncmp(cwd, real, rl) == 0 && (cwd[rl] == '\0' || cwd[rl] == '/')) {
			kill(pid, SIGKILL);
			for (int i = 0; i < 500 && !gone(pid); i++)
				usleep(10000);
			killed++;
		}
	}
	if (d)
		closedir(d);
	return killed;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	remove(p);
	return 0;
}

static void dir_setup(void)
{
	snprintf(g_dir, sizeof g_dir, "/tmp/check_store.XXXXXX");
	if (!mkdtemp(g_dir))
		abort();
}

static void dir_teardown(void)
{
	int n = kill_leftovers(g_dir);
	if (n > 0)
		fprintf(stderr, "check_store: killed %d leftover process(es) in %s\n", n, g_dir);
	nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- test-side fixture ---- */

static void obs(bool up, void *arg)
{
	(void)arg;
	if (up)
		g_up++;
	else
		g_down++;
}

static void setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	log_set_level(LOG_DEBUG);
	g_base = event_base_new();
	ck_assert_ptr_nonnull(g_base);
	g_cfg = calloc(1, sizeof *g_cfg);
	g_cfg->state_dir = g_dir;
	g_cfg->redis_embedded = true;
	g_cfg->redis_server = (char *)g_redis;
	g_cfg->redis_connect_timeout_us = 1000000;
	g_cfg->redis_reconnect_max_us = 300000;
	g_up = g_down = 0;
	g_hand_pid = 0;
	g_stopped_pid = 0;
	store_on_state(obs, NULL);
}

static void teardown(void)
{
	/* Never leave a stopped server behind (dir_teardown SIGKILLs what a
	 * failed test leaves; SIGKILL works on stopped processes too). */
	if (g_stopped_pid > 0)
		kill(g_stopped_pid, SIGCONT);
	g_stopped_pid = 0;
	store_stop();
	if (g_hand_pid > 0) {
		kill(g_hand_pid, SIGKILL);
		waitpid(g_hand_pid, NULL, 0);
	}
	free(g_cfg);
	event_base_free(g_base);
}

/* ---- helpers ---- */

/* Run the loop until *v >= min or timeout; true when reached. */
static bool run_until(const int *v, int min, int64_t us)
{
	return check_loop_until(g_base, v, min, us);
}

static void run_for(int64_t us)
{
	static const int never = 0;
	run_until(&never, 1, us);
}

struct result {
	int done, type, elements;
	bool null;
	long long integer;
	char *str;
	size_t len;
};

static void on_result(redisReply *r, void *arg)
{
	struct result *res = arg;
	res->done++;
	res->null = r == NULL;
	if (!r)
		return;
	res->type = r->type;
	res->integer = r->integer;
	res->elements = (int)r->elements;
	free(res->str);
	res->str = NULL;
	if (r->str) {
		res->str = malloc(r->len + 1);
		memcpy(res->str, r->str, r->len);
		res->str[r->len] = '\0';
	}
	res->len = r->len;
}

/* Issue a command through the store and wait for its reply. */
static struct result cmdv(int argc, const char **argv, const size_t *lens)
{
	struct result res = {0};
	ck_assert_int_eq(store_commandargv(on_result, &res, argc, argv, lens), 0);
	ck_assert_msg(run_until(&res.done, 1, 5000000), "no reply to %s", argv[0]);
	ck_assert(!res.null);
	return res;
}
#define CMD(...)                                                                                   \
	cmdv(ARRAY_LEN(((const char *[]){__VA_ARGS__})), (const char *[]){__VA_ARGS__}, NULL)

static void expect_str(struct result r, const char *want)
{
	ck_assert_msg(r.type == REDIS_REPLY_STRING || r.type == REDIS_REPLY_STATUS,
		      "type %d (%s), want \"%s\"", r.type, r.str ? r.str : "", want);
	ck_assert_str_eq(r.str, want);
	free(r.str);
}

static void start_embedded(void)
{
	char *err = NULL;
	int rc = store_start(g_base, g_cfg, &err);
	ck_assert_msg(rc == 0, "store_start: %s", err ? err : "?");
	ck_assert_msg(run_until(&g_up, 1, 5000000), "store never came up");
	ck_assert(store_up());
}

/* A redis-server started by hand, as an earlier reactord or an operator
 * would have; dies with this test process. */
static pid_t spawn_redis(const char *const *argv)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int null = open("/dev/null", O_RDWR);
		dup2(null, 1);
		close_range(3, ~0U, 0);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

static redisContext *sync_conn(const char *sock, int64_t wait_us)
{
	int64_t deadline = mono_us() + wait_us;
	for (;;) {
		struct timeval tv = {1, 0};
		redisContext *c = redisConnectUnixWithTimeout(sock, tv);
		if (c && !c->err) {
			/* A server still loading its AOF answers LOADING: not ready. */
			redisReply *r = redisCommand(c, "PING");
			bool ok = r != NULL && !(r->type == REDIS_REPLY_ERROR &&
						 strncmp(r->str, "LOADING", 7) == 0);
			if (r)
				freeReplyObject(r);
			if (ok)
				return c;
		}
		if (c)
			redisFree(c);
		ck_assert_msg(mono_us() < deadline, "nothing answers on %s", sock);
		usleep(20000);
	}
}

/* Run a command on a plain connection; its reply must contain `want`. */
static void sync_expect(redisContext *c, const char *fmt, const char *a, const char *want)
{
	redisReply *r = redisCommand(c, fmt, a);
	ck_assert_ptr_nonnull(r);
	const char *got = r->str ? r->str : "(nil)";
	ck_assert_msg(strstr(got, want), "%s: got \"%s\", want \"%s\"", fmt, got, want);
	freeReplyObject(r);
}

struct inbox {
	int n;
	char channel[64];
	char msg[64];
	size_t len;
};

static void on_msg(const char *channel, const char *msg, size_t len, void *arg)
{
	struct inbox *in = arg;
	in->n++;
	snprintf(in->channel, sizeof in->channel, "%s", channel);
	in->len = len < sizeof in->msg ? len : sizeof in->msg;
	memcpy(in->msg, msg, in->len);
}

/* Publish until someone receives it: the subscriber connects on its own
 * schedule and the API does not expose its state. */
static void publish_until(struct inbox *in, const char *channel, const char *msg, size_t len)
{
	int before = in->n;
	const char *argv[] = {"PUBLISH", channel, msg};
	size_t lens[] = {7, strlen(channel), len};
	int64_t deadline = mono_us() + 5000000;
	for (;;) {
		struct result r = cmdv(3, argv, lens);
		free(r.str);
		ck_assert_int_eq(r.type, REDIS_REPLY_INTEGER);
		if (r.integer > 0)
			break;
		ck_assert_msg(mono_us() < deadline, "nobody subscribed to %s", channel);
		run_for(20000);
	}
	ck_assert_msg(run_until(&in->n, before + 1, 5000000), "no message on %s", channel);
}

/* ---- tests ---- */

START_TEST(test_set_get)
{
	start_embedded();
	const char *sock = store_embedded_socket();
	ck_assert_ptr_nonnull(sock);
	struct stat sb;
	ck_assert_int_eq(stat(sock, &sb), 0);
	ck_assert(S_ISSOCK(sb.st_mode));
	ck_assert_int_eq(sb.st_mode & 0777, 0700);
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/redis", g_dir);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(sb.st_mode & 0777, 0700);

	expect_str(CMD("SET", "k", "hello world"), "OK");
	expect_str(CMD("GET", "k"), "hello world");
	const char *argv[] = {"SET", "bin", "a\0b"};
	size_t lens[] = {3, 3, 3};
	free(cmdv(3, argv, lens).str);
	struct result r = CMD("GET", "bin");
	ck_assert_uint_eq(r.len, 3);
	ck_assert_mem_eq(r.str, "a\0b", 3);
	free(r.str);
	r = CMD("CONFIG", "GET", "appendonly");
	ck_assert_int_eq(r.type, REDIS_REPLY_ARRAY);
	free(r.str);

	struct store_stats s;
	store_get_stats(&s);
	ck_assert_uint_eq(s.commands, 5);
	ck_assert_uint_eq(s.replies, 5);
	ck_assert_uint_eq(s.embedded_restarts, 0);
	ck_assert_int_eq(g_up, 1);
	ck_assert_int_eq(g_down, 0);
}
END_TEST

/* External Redis that is not there: start succeeds, commands fail at once,
 * and the store connects as soon as a server appears. */
START_TEST(test_down_fails_fast)
{
	struct result res = {0};
	ck_assert_int_eq(store_command(on_result, &res, "PING"), ERR_STORE_DOWN);
	char addr[PATH_MAX + 8], sock[PATH_MAX];
	snprintf(sock, sizeof sock, "%s/ext.sock", g_dir);
	snprintf(addr, sizeof addr, "unix:%s", sock);
	g_cfg->redis_embedded = false;
	g_cfg->redis_address = addr;
	char *err = NULL;
	ck_assert_int_eq(store_start(g_base, g_cfg, &err), 0);
	ck_assert_ptr_null(store_embedded_socket());
	run_for(400000);
	ck_assert(!store_up());
	ck_assert_int_eq(g_up, 0);
	int64_t t0 = mono_us();
	ck_assert_int_eq(store_command(on_result, &res, "PING"), ERR_STORE_DOWN);
	ck_assert_int_lt(mono_us() - t0, 10000);
	run_for(50000);
	ck_assert_int_eq(res.done, 0);
	struct store_stats s;
	store_get_stats(&s);
	ck_assert_uint_eq(s.commands, 0);
	ck_assert_uint_ge(s.reconnects, 2);

	const char *argv[] = {g_redis, "--port", "0", "--unixsocket", sock, "--dir",
			      g_dir,   "--save", "",  "--appendonly", "no", NULL};
	g_hand_pid = spawn_redis(argv);
	ck_assert_msg(run_until(&g_up, 1, 5000000), "store did not find the new server");
	expect_str(CMD("SET", "x", "1"), "OK");

	/* A command in flight when the server dies gets a NULL reply. */
	ck_assert_int_eq(store_command(on_result, &res, "BLPOP %s %d", "never", 0), 0);
	run_for(50000);
	kill(g_hand_pid, SIGKILL);
	ck_assert(run_until(&res.done, 1, 5000000));
	ck_assert(res.null);
	ck_assert(run_until(&g_down, 1, 5000000));
	ck_assert_int_eq(store_command(on_result, &res, "PING"), ERR_STORE_DOWN);
	run_for(50000);
	ck_assert_int_eq(res.done, 1);
}
END_TEST

/* Bad addresses fail start; unreachable ones are just down; a server
 * that accepts but never answers is abandoned at the deadline and
 * retried, not waited on forever. */
START_TEST(test_external_unreachable)
{
	char *err = NULL;
	g_cfg->redis_embedded = false;
	g_cfg->redis_address = "localhost:notaport";
	ck_assert_int_eq(store_start(g_base, g_cfg, &err), -1);
	ck_assert_ptr_nonnull(strstr(err, "localhost:notaport"));
	free(err);
	g_cfg->redis_address = "[::1";
	ck_assert_int_eq(store_start(g_base, g_cfg, &err), -1);
	free(err);
	g_cfg->redis_address = "127.0.0.1:1";
	ck_assert_int_eq(store_start(g_base, g_cfg, &err), 0);
	run_for(200000);
	struct result res = {0};
	ck_assert_int_eq(store_command(on_result, &res, "PING"), ERR_STORE_DOWN);
	store_stop();

	char sock[100];
	snprintf(sock, sizeof sock, "%s/mute.sock", g_dir);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", sock);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
	ck_assert_int_eq(listen(fd, 64), 0);
	g_cfg->redis_address = sock;
	g_cfg->redis_connect_timeout_us = 150000;
	g_cfg->redis_reconnect_max_us = 100000;
	store_on_state(obs, NULL);
	ck_assert_int_eq(store_start(g_base, g_cfg, &err), 0);
	run_for(1000000);
	ck_assert_int_eq(g_up, 0);
	struct store_stats s;
	store_get_stats(&s);
	/* Each attempt takes 150 ms + 100 ms backoff, on two connections. */
	ck_assert_uint_ge(s.reconnects, 4);
	store_stop();
	close(fd);
}
END_TEST

START_TEST(test_scripts)
{
	int echo = store_script_register("echo", "return KEYS[1] .. ':' .. ARGV[1]");
	int incr = store_script_register("incr", "return redis.call('INCRBY', KEYS[1], ARGV[1])");
	ck_assert_int_ge(echo, 0);
	ck_assert_int_ne(echo, incr);
	ck_assert_int_eq(store_script_register("echo", "return KEYS[1] .. ':' .. ARGV[1]"), echo);
	start_embedded();
	ck_assert_int_eq(store_script_register("late", "return 1"), ERR_PRECONDITION);

	struct result r = {0};
	const char *args[] = {"k", "v"};
	ck_assert_int_eq(store_evalsha(echo, on_result, &r, 1, 1, args, NULL), 0);
	ck_assert(run_until(&r.done, 1, 5000000));
	expect_str(r, "k:v");

	expect_str(CMD("SCRIPT", "FLUSH"), "OK");
	struct result e = {0}, n = {0};
	const char *iargs[] = {"counter", "5"};
	ck_assert_int_eq(store_evalsha(echo, on_result, &e, 1, 1, args, NULL), 0);
	ck_assert_int_eq(store_evalsha(incr, on_result, &n, 1, 1, iargs, NULL), 0);
	ck_assert(run_until(&n.done, 1, 5000000));
	/* Replies are ordered: a duplicate callback would precede this one. */
	expect_str(CMD("GET", "counter"), "5");
	ck_assert_int_eq(e.done, 1);
	ck_assert_int_eq(n.done, 1);
	ck_assert_int_eq(n.type, REDIS_REPLY_INTEGER);
	ck_assert_int_eq(n.integer, 5);
	expect_str(e, "k:v");
	ck_assert_int_eq(store_evalsha(99, on_result, &r, 0, 0, NULL, NULL), -EINVAL);
}
END_TEST

START_TEST(test_pubsub)
{
	struct inbox a = {0}, p = {0}, late = {0};
	store_subscribe("chan:a", on_msg, &a);
	store_subscribe("pat:*", on_msg, &p);
	start_embedded();
	publish_until(&a, "chan:a", "hel\0lo", 6);
	ck_assert_str_eq(a.channel, "chan:a");
	ck_assert_uint_eq(a.len, 6);
	ck_assert_mem_eq(a.msg, "hel\0lo", 6);
	publish_until(&p, "pat:xyz", "p1", 2);
	ck_assert_str_eq(p.channel, "pat:xyz");
	ck_assert_mem_eq(p.msg, "p1", 2);
	store_subscribe("late", on_msg, &late);
	publish_until(&late, "late", "z", 1);
	ck_assert_int_eq(a.n, 1);
	ck_assert_int_eq(late.n, 1);
}
END_TEST

START_TEST(test_kill9_restart)
{
	struct inbox in = {0};
	store_subscribe("chan:r", on_msg, &in);
	start_embedded();
	expect_str(CMD("SET", "before", "1"), "OK");
	pid_t old = redisproc_pid();
	ck_assert_int_gt(old, 0);
	ck_assert_int_eq(kill(old, SIGKILL), 0);
	ck_assert_msg(run_until(&g_down, 1, 5000000), "observer never saw down");
	ck_assert(!store_up());
	struct result res = {0};
	ck_assert_int_eq(store_command(on_result, &res, "PING"), ERR_STORE_DOWN);
	ck_assert_msg(run_until(&g_up, 2, 10000000), "store never came back up");
	pid_t now = redisproc_pid();
	ck_assert_int_gt(now, 0);
	ck_assert_int_ne(now, old);
	ck_assert_int_eq(kill(now, 0), 0);
	struct store_stats s;
	store_get_stats(&s);
	ck_assert_uint_eq(s.embedded_restarts, 1);
	ck_assert_uint_ge(s.reconnects, 1);
	expect_str(CMD("SET", "after", "2"), "OK");
	expect_str(CMD("GET", "after"), "2");
	/* The subscription was re-issued on the new connection. */
	publish_until(&in, "chan:r", "again", 5);
	ck_assert_str_eq(in.channel, "chan:r");
	ck_assert_int_eq(g_down, 1);
	ck_assert_int_eq(g_up, 2);
}
END_TEST

/* A server left running on our data dir (as by a killed reactord) is shut
 * down cleanly, so its AOF keeps what it acknowledged, and replaced. */
START_TEST(test_leftover_replaced)
{
	start_embedded();
	store_stop();
	char conf[PATH_MAX], sock[PATH_MAX], pidfile[PATH_MAX];
	snprintf(conf, sizeof conf, "%s/redis/redis.conf", g_dir);
	snprintf(sock, sizeof sock, "%s/redis/redis.sock", g_dir);
	snprintf(pidfile, sizeof pidfile, "%s/redis/redis.pid", g_dir);
	ck_assert_int_ne(access(sock, F_OK), 0);

	const char *argv[] = {g_redis, conf, NULL};
	g_hand_pid = spawn_redis(argv);
	redisContext *c = sync_conn(sock, 5000000);
	sync_expect(c, "SET survivor %s", "yes", "OK");
	redisFree(c);
	FILE *f = fopen(pidfile, "r");
	ck_assert_ptr_nonnull(f);
	int filepid = 0;
	ck_assert_int_eq(fscanf(f, "%d", &filepid), 1);
	fclose(f);
	ck_assert_int_eq(filepid, g_hand_pid);

	store_on_state(obs, NULL);
	g_up = 0;
	start_embedded();
	int st = 0;
	ck_assert_int_eq(waitpid(g_hand_pid, &st, WNOHANG), g_hand_pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "old server status 0x%x", st);
	ck_assert_int_ne(redisproc_pid(), g_hand_pid);
	g_hand_pid = 0;
	expect_str(CMD("GET", "survivor"), "yes");
}
END_TEST

static void stop_cb(redisReply *r, void *arg)
{
	(void)r, (void)arg;
	store_stop();
}

static void stop_on_down(bool up, void *arg)
{
	if (!up) {
		(*(int *)arg)++;
		store_stop();
	}
}

/* store_stop from inside a reply callback: hiredis frees the context
 * after the callback; the queued command still gets its NULL reply. */
START_TEST(test_stop_leaves_nothing)
{
	start_embedded();
	pid_t pid = redisproc_pid();
	char sock[PATH_MAX];
	snprintf(sock, sizeof sock, "%s", store_embedded_socket());
	struct result res = {0};
	ck_assert_int_eq(store_command(stop_cb, NULL, "PING"), 0);
	ck_assert_int_eq(store_command(on_result, &res, "BLPOP %s %d", "never", 0), 0);
	ck_assert(run_until(&res.done, 1, 5000000));
	ck_assert(res.null);
	ck_assert_int_eq(kill(pid, 0), -1);
	ck_assert_int_eq(errno, ESRCH);
	ck_assert_int_ne(access(sock, F_OK), 0);
	ck_assert(!store_up());
	ck_assert_int_eq(store_command(on_result, &res, "PING"), ERR_STORE_DOWN);
	ck_assert_int_eq(
		event_base_get_num_events(g_base, EVENT_BASE_COUNT_ADDED | EVENT_BASE_COUNT_ACTIVE),
		0);
	ck_assert_int_eq(event_base_loop(g_base, EVLOOP_NONBLOCK), 1);
	ck_assert_int_eq(res.done, 1);

	/* And from an observer told the server died (inside hiredis'
	 * disconnect callback). */
	int downs = 0;
	g_up = 0;
	store_on_state(obs, NULL);
	store_on_state(stop_on_down, &downs);
	start_embedded();
	pid = redisproc_pid();
	kill(pid, SIGKILL);
	ck_assert(run_until(&downs, 1, 5000000));
	ck_assert_int_eq(kill(pid, 0), -1);
	ck_assert_int_eq(
		event_base_get_num_events(g_base, EVENT_BASE_COUNT_ADDED | EVENT_BASE_COUNT_ACTIVE),
		0);
}
END_TEST

/* A server that answers nothing (stopped) is killed after the bounded
 * wait, and reaped. */
START_TEST(test_stop_hung)
{
	start_embedded();
	pid_t pid = redisproc_pid();
	ck_assert_int_eq(kill(pid, SIGSTOP), 0);
	int64_t t0 = mono_us();
	store_stop();
	ck_assert_int_lt(mono_us() - t0, 15000000);
	ck_assert_int_eq(kill(pid, 0), -1);
	ck_assert_int_eq(errno, ESRCH);
}
END_TEST

/* A SIGKILLed reactord takes its redis-server with it (PR_SET_PDEATHSIG
 * makes redis SIGTERM itself, which flushes the AOF). */
START_TEST(test_parent_killed)
{
	int pfd[2];
	ck_assert_int_eq(pipe(pfd), 0);
	pid_t child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		char *err = NULL;
		struct event_base *b = event_base_new();
		pid_t rpid = store_start(b, g_cfg, &err) == 0 ? redisproc_pid() : 0;
		if (write(pfd[1], &rpid, sizeof rpid) < 0)
			_exit(2);
		raise(SIGKILL);
	}
	close(pfd[1]);
	pid_t rpid = 0;
	ck_assert_int_eq(read(pfd[0], &rpid, sizeof rpid), (int)sizeof rpid);
	close(pfd[0]);
	ck_assert_int_gt(rpid, 0);
	int st;
	ck_assert_int_eq(waitpid(child, &st, 0), child);
	ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	for (int i = 0; i < 500 && !gone(rpid); i++)
		usleep(10000);
	ck_assert_msg(gone(rpid), "redis-server %d outlived its killed parent", (int)rpid);
	start_embedded();
}
END_TEST

START_TEST(test_auth_select)
{
	g_cfg->redis_password = "s3 \"cret\\";
	g_cfg->redis_db = 3;
	start_embedded();
	expect_str(CMD("SET", "k", "in3"), "OK");
	redisContext *c = sync_conn(store_embedded_socket(), 1000000);
	sync_expect(c, "GET %s", "k", "NOAUTH");
	sync_expect(c, "AUTH %s", g_cfg->redis_password, "OK");
	sync_expect(c, "SELECT %s", "3", "OK");
	sync_expect(c, "GET %s", "k", "in3");
	sync_expect(c, "SELECT %s", "0", "OK");
	sync_expect(c, "GET %s", "k", "(nil)");
	redisFree(c);
	store_stop();

	/* A wrong password never comes up, and keeps retrying. */
	char sock[100];
	snprintf(sock, sizeof sock, "%s/pw.sock", g_dir);
	const char *argv[] = {g_redis, "--port", "0", "--unixsocket",  sock,	"--dir",
			      g_dir,   "--save", "",  "--requirepass", "right", NULL};
	g_hand_pid = spawn_redis(argv);
	redisFree(sync_conn(sock, 5000000));
	g_cfg->redis_embedded = false;
	g_cfg->redis_address = sock;
	g_cfg->redis_password = "wrong";
	g_up = 0;
	store_on_state(obs, NULL);
	char *err = NULL;
	ck_assert_int_eq(store_start(g_base, g_cfg, &err), 0);
	run_for(500000);
	ck_assert_int_eq(g_up, 0);
	struct store_stats st;
	store_get_stats(&st);
	ck_assert_uint_ge(st.reconnects, 2);
}
END_TEST

START_TEST(test_start_failures)
{
	char *err = NULL;
	g_cfg->redis_server = "/nonexistent/redis-server";
	ck_assert_int_eq(store_start(g_base, g_cfg, &err), -1);
	ck_assert_msg(strstr(err, "cannot execute /nonexistent/redis-server"), "%s", err);
	free(err);
	err = NULL;
	g_cfg->redis_server = "false";
	ck_assert_int_eq(store_start(g_base, g_cfg, &err), -1);
	ck_assert_msg(strstr(err, "exited with status 1"), "%s", err);
	free(err);
	err = NULL;
	ck_assert(!store_up());

	/* Another reactord holds the state dir. */
	g_cfg->redis_server = (char *)g_redis;
	char lock[PATH_MAX];
	snprintf(lock, sizeof lock, "%s/redis/reactord.lock", g_dir);
	int fd = open(lock, O_RDWR | O_CREAT, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
	ck_assert_int_eq(store_start(g_base, g_cfg, &err), -1);
	ck_assert_msg(strstr(err, "in use by another reactord"), "%s", err);
	free(err);
	close(fd);
	ck_assert_int_eq(kill_leftovers(g_dir), 0);
}
END_TEST

/* ---- bounds: maxmemory, OOM, command timeout, pending cap ---- */

/* The embedded server is bounded and never evicts. */
START_TEST(test_maxmemory_config)
{
	g_cfg->redis_maxmemory = 64LL << 20;
	start_embedded();
	redisContext *c = sync_conn(store_embedded_socket(), 1000000);
	redisReply *r = redisCommand(c, "CONFIG GET maxmemory");
	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
	ck_assert_uint_eq(r->elements, 2);
	ck_assert_str_eq(r->element[1]->str, "67108864");
	freeReplyObject(r);
	r = redisCommand(c, "CONFIG GET maxmemory-policy");
	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(r->elements, 2);
	ck_assert_str_eq(r->element[1]->str, "noeviction");
	freeReplyObject(r);
	redisFree(c);
	store_stop();

	/* Left 0, the default applies: 1GiB. */
	g_cfg->redis_maxmemory = 0;
	g_up = 0;
	store_on_state(obs, NULL);
	start_embedded();
	struct result res = CMD("CONFIG", "GET", "maxmemory");
	ck_assert_int_eq(res.type, REDIS_REPLY_ARRAY);
	free(res.str);
	c = sync_conn(store_embedded_socket(), 1000000);
	r = redisCommand(c, "CONFIG GET maxmemory");
	ck_assert_str_eq(r->element[1]->str, "1073741824");
	freeReplyObject(r);
	redisFree(c);
}
END_TEST

struct rc_result {
	int done, rc;
};

static void on_rc(redisReply *r, void *arg)
{
	struct rc_result *res = arg;
	res->done++;
	res->rc = store_reply_rc(r);
}

/* A full server refuses writes, plain and from scripts, with a code of
 * their own; reads and deletes keep working. */
START_TEST(test_oom_reply)
{
	int set = store_script_register("set", "return redis.call('SET', KEYS[1], ARGV[1])");
	ck_assert_int_ge(set, 0);
	g_cfg->redis_maxmemory = 2LL << 20;
	start_embedded();
	static char big[100000];
	memset(big, 'x', sizeof big);
	int full_at = -1;
	for (int i = 0; i < 200 && full_at < 0; i++) {
		char key[32];
		snprintf(key, sizeof key, "big:%d", i);
		const char *argv[] = {"SET", key, big};
		size_t lens[] = {3, strlen(key), sizeof big};
		struct rc_result res = {0};
		ck_assert_int_eq(store_commandargv(on_rc, &res, 3, argv, lens), 0);
		ck_assert(run_until(&res.done, 1, 5000000));
		if (res.rc == ERR_STORE_FULL)
			full_at = i;
		else
			ck_assert_int_eq(res.rc, 0);
	}
	ck_assert_msg(full_at > 0, "2MiB of Redis never filled up");
	struct rc_result res = {0};
	/* As large as the write that was refused: the server is at its
	 * limit only while such a request is buffered. */
	const char *args[] = {"viascript", big};
	size_t alens[] = {9, sizeof big};
	ck_assert_int_eq(store_evalsha(set, on_rc, &res, 1, 1, args, alens), 0);
	ck_assert(run_until(&res.done, 1, 5000000));
	ck_assert_int_eq(res.rc, ERR_STORE_FULL);
	struct result r = CMD("GET", "big:0");
	ck_assert_uint_eq(r.len, sizeof big);
	free(r.str);
	/* Other errors stay ERR_STORE_REPLY; no reply is ERR_STORE_FAILED. */
	memset(&res, 0, sizeof res);
	ck_assert_int_eq(store_command(on_rc, &res, "HGET %s f", "big:0"), 0);
	ck_assert(run_until(&res.done, 1, 5000000));
	ck_assert_int_eq(res.rc, ERR_STORE_REPLY);
	ck_assert_int_eq(store_reply_rc(NULL), ERR_STORE_FAILED);
	/* Deleting makes room again. */
	r = CMD("FLUSHALL");
	free(r.str);
	expect_str(CMD("SET", "after", "ok"), "OK");
}
END_TEST

/* A server that stops answering: the command fails after the timeout
 * (not never), the connection is recycled, and everything recovers when
 * the server resumes. */
START_TEST(test_command_timeout)
{
	struct inbox in = {0};
	store_subscribe("chan:t", on_msg, &in);
	g_cfg->redis_command_timeout_us = 300000;
	start_embedded();
	ck_assert_ptr_null(store_last_error());
	expect_str(CMD("SET", "k", "v"), "OK");
	publish_until(&in, "chan:t", "one", 3);
	pid_t pid = redisproc_pid();
	g_stopped_pid = pid;
	ck_assert_int_eq(kill(pid, SIGSTOP), 0);
	struct result a = {0}, b = {0};
	int64_t t0 = mono_us();
	ck_assert_int_eq(store_command(on_result, &a, "GET k"), 0);
	run_for(100000);
	ck_assert_int_eq(store_command(on_result, &b, "GET k"), 0);
	ck_assert_msg(run_until(&b.done, 1, 3000000), "no answer 3 s after a 300 ms timeout");
	int64_t took = mono_us() - t0;
	ck_assert_int_eq(a.done, 1);
	ck_assert(a.null && b.null);
	ck_assert_msg(took >= 290000 && took < 1500000, "failed after %lld us", (long long)took);
	ck_assert_int_eq(g_down, 1);
	ck_assert(!store_up());
	ck_assert_int_eq(store_command(on_result, &a, "GET k"), ERR_STORE_DOWN);
	const char *why = store_last_error();
	ck_assert_ptr_nonnull(why);
	ck_assert_msg(strstr(why, "did not answer within 300ms"), "%s", why);
	ck_assert_msg(strstr(why, "redis.command-timeout"), "%s", why);
	/* Still stopped: reconnects fail at their handshake deadline. */
	run_for(1500000);
	ck_assert(!store_up());
	ck_assert_int_eq(kill(pid, SIGCONT), 0);
	g_stopped_pid = 0;
	ck_assert_msg(run_until(&g_up, 2, 10000000), "store never came back");
	ck_assert_int_eq(redisproc_pid(), pid);
	ck_assert_ptr_null(store_last_error());
	expect_str(CMD("GET", "k"), "v");
	/* The subscriber was recycled with it and works. */
	publish_until(&in, "chan:t", "two", 3);
	ck_assert_mem_eq(in.msg, "two", 3);
}
END_TEST

/* A slow reply within the timeout is no failure, however many wait. */
START_TEST(test_command_timeout_slow_ok)
{
	g_cfg->redis_command_timeout_us = 1000000;
	start_embedded();
	struct result a = {0}, b = {0};
	/* A script that keeps the server busy for 0.5 s (DEBUG is disabled
	 * by default since Redis 7). */
	ck_assert_int_eq(store_command(on_result, &a, "EVAL %s 0",
				       "local t = redis.call('TIME') "
				       "local s = t[1] * 1000000 + t[2] "
				       "repeat t = redis.call('TIME') "
				       "until t[1] * 1000000 + t[2] - s > 500000 "
				       "return 1"),
			 0);
	ck_assert_int_eq(store_command(on_result, &b, "PING"), 0);
	ck_assert(run_until(&b.done, 1, 5000000));
	ck_assert(!a.null && !b.null);
	ck_assert_int_eq(a.type, REDIS_REPLY_INTEGER);
	ck_assert_int_eq(g_down, 0);
	free(a.str);
	free(b.str);
}
END_TEST

/* At max-pending commands in flight, new ones fail at once with their
 * own code; they are accepted again as replies come in. */
START_TEST(test_max_pending)
{
	int echo = store_script_register("echo1", "return ARGV[1]");
	g_cfg->redis_max_pending = 3;
	start_embedded();
	struct result r[3] = {{0}};
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(store_command(on_result, &r[i], "PING"), 0);
	struct result x = {0};
	ck_assert_int_eq(store_command(on_result, &x, "PING"), ERR_STORE_BUSY);
	const char *argv[] = {"PING"};
	ck_assert_int_eq(store_commandargv(on_result, &x, 1, argv, NULL), ERR_STORE_BUSY);
	const char *args[] = {"a"};
	ck_assert_int_eq(store_evalsha(echo, on_result, &x, 0, 1, args, NULL), ERR_STORE_BUSY);
	ck_assert(run_until(&r[2].done, 1, 5000000));
	ck_assert_int_eq(x.done, 0);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(r[i].done, 1);
		free(r[i].str);
	}
	ck_assert(store_up());
	expect_str(CMD("PING"), "PONG");
	struct store_stats s;
	store_get_stats(&s);
	ck_assert_uint_eq(s.commands, 4);
}
END_TEST

static void add(Suite *s, const char *name, const TTest *t)
{
	TCase *tc = tcase_create(name);
	tcase_add_unchecked_fixture(tc, dir_setup, dir_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, t);
	suite_add_tcase(s, tc);
}

int main(void)
{
	if (getenv("REDIS_SERVER") && *getenv("REDIS_SERVER"))
		g_redis = getenv("REDIS_SERVER");
	Suite *s = suite_create("store");
	add(s, "set_get", test_set_get);
	add(s, "down_fails_fast", test_down_fails_fast);
	add(s, "external_unreachable", test_external_unreachable);
	add(s, "scripts", test_scripts);
	add(s, "pubsub", test_pubsub);
	add(s, "kill9_restart", test_kill9_restart);
	add(s, "leftover_replaced", test_leftover_replaced);
	add(s, "stop_leaves_nothing", test_stop_leaves_nothing);
	add(s, "stop_hung", test_stop_hung);
	add(s, "parent_killed", test_parent_killed);
	add(s, "auth_select", test_auth_select);
	add(s, "start_failures", test_start_failures);
	add(s, "maxmemory_config", test_maxmemory_config);
	add(s, "oom_reply", test_oom_reply);
	add(s, "command_timeout", test_command_timeout);
	add(s, "command_timeout_slow_ok", test_command_timeout_slow_ok);
	add(s, "max_pending", test_max_pending);
	return check_run(s);
}
