/*
 * check_cfg.c - unit tests for the config loader (src/cfg.c): defaults, a
 * file that sets every key, the exact text and position of each class of
 * error, the reload diff, and loading real files including the shipped
 * conf/reactor.conf (found through $srcdir, which automake sets).
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cfg.h"
#include "core/log.h"
#include "check_run.h"

static struct cfg *load_ok(const char *text)
{
	struct cfg *c = NULL;
	char *err = NULL;
	int r = cfg_load_string("reactor.conf", text, &c, &err);
	ck_assert_msg(r == 0, "unexpected error: %s", err ? err : "(none)");
	ck_assert_ptr_null(err);
	ck_assert_ptr_nonnull(c);
	return c;
}

/* Every field of a config that set nothing. */
static void assert_defaults(const struct cfg *c)
{
	ck_assert_int_eq(c->n_listen, 1);
	ck_assert_int_eq(c->listen[0].kind, CFG_LISTEN_TCP);
	ck_assert_str_eq(c->listen[0].host, "127.0.0.1");
	ck_assert_int_eq(c->listen[0].port, 50051);
	ck_assert_ptr_null(c->listen[0].path);
	ck_assert_ptr_null(c->ready_file);
	ck_assert_str_eq(c->state_dir, "state");
	ck_assert_int_eq(c->log_level, LOG_INFO);
	ck_assert(!c->log_json);
	ck_assert(!c->access_log);
	ck_assert(c->redis_embedded);
	ck_assert_str_eq(c->redis_server, "redis-server");
	ck_assert_ptr_null(c->redis_address);
	ck_assert_ptr_null(c->redis_password);
	ck_assert_int_eq(c->redis_db, 0);
	ck_assert_int_eq(c->redis_connect_timeout_us, 2000000);
	ck_assert_int_eq(c->redis_reconnect_max_us, 5000000);
	ck_assert_uint_eq(c->h2_max_concurrent_streams, 1000);
	ck_assert_uint_eq(c->h2_max_header_list_size, 16 << 10);
	ck_assert_uint_eq(c->h2_conn_window, 16 << 20);
	ck_assert_uint_eq(c->h2_stream_window, 4 << 20);
	ck_assert_int_eq(c->h2_idle_timeout_us, 300000000LL);
	ck_assert_int_eq(c->h2_max_output_buffer, 4 << 20);
	ck_assert_int_eq(c->grpc_max_recv_message_size, 16 << 20);
	ck_assert_int_eq(c->grpc_max_send_message_size, 16 << 20);
	ck_assert_int_eq(c->grpc_max_call_duration_us, 3600000000LL);
	ck_assert_int_eq(c->shutdown_grace_us, 10000000);
	ck_assert_int_eq(c->n_instances, 1);
	ck_assert_str_eq(c->instances[0].name, "");
}

START_TEST(test_defaults_empty)
{
	struct cfg *c = load_ok("");
	ck_assert_str_eq(c->file, "reactor.conf");
	assert_defaults(c);
	cfg_free(c);

	/* Comments only, and sections left empty, are still all defaults. */
	c = load_ok("# nothing here\nlog:\nredis:\n  # embedded: true\n");
	assert_defaults(c);
	cfg_free(c);
}
END_TEST

static const char full_conf[] = "listen:\n"
				"  - 0.0.0.0:8980\n"
				"  - \"[::1]:0\"\n"
				"  - unix:/run/reactord.sock\n"
				"ready-file: /run/reactord.ready\n"
				"state-dir: /var/lib/reactord\n"
				"log:\n"
				"  level: debug\n"
				"  format: json\n"
				"  access-log: yes\n"
				"redis:\n"
				"  embedded: off\n"
				"  server: /opt/redis/bin/redis-server\n"
				"  address: redis.internal:6380\n"
				"  password: \"s3cret\"\n"
				"  database: 15\n"
				"  connect-timeout: 500ms\n"
				"  reconnect-max: 1m\n"
				"http2:\n"
				"  max-concurrent-streams: 250\n"
				"  max-header-list-size: 64KiB\n"
				"  connection-window: 1GiB\n"
				"  stream-window: 64KiB\n"
				"  idle-timeout: 0\n"
				"  max-output-buffer: 8MiB\n"
				"grpc:\n"
				"  max-recv-message-size: 1KiB\n"
				"  max-send-message-size: 32MiB\n"
				"  max-call-duration: 7d\n"
				"shutdown-grace: 0s\n"
				"instances:\n"
				"  - name: \"\"\n"
				"  - name: main\n"
				"  - name: team/ci-2\n";

START_TEST(test_full_file)
{
	struct cfg *c = load_ok(full_conf);
	ck_assert_int_eq(c->n_listen, 3);
	ck_assert_int_eq(c->listen[0].kind, CFG_LISTEN_TCP);
	ck_assert_str_eq(c->listen[0].host, "0.0.0.0");
	ck_assert_int_eq(c->listen[0].port, 8980);
	ck_assert_int_eq(c->listen[1].kind, CFG_LISTEN_TCP);
	ck_assert_str_eq(c->listen[1].host, "::1");
	ck_assert_int_eq(c->listen[1].port, 0);
	ck_assert_int_eq(c->listen[2].kind, CFG_LISTEN_UNIX);
	ck_assert_str_eq(c->listen[2].path, "/run/reactord.sock");
	ck_assert_ptr_null(c->listen[2].host);
	ck_assert_str_eq(c->ready_file, "/run/reactord.ready");
	ck_assert_str_eq(c->state_dir, "/var/lib/reactord");
	ck_assert_int_eq(c->log_level, LOG_DEBUG);
	ck_assert(c->log_json);
	ck_assert(c->access_log);
	ck_assert(!c->redis_embedded);
	ck_assert_str_eq(c->redis_server, "/opt/redis/bin/redis-server");
	ck_assert_str_eq(c->redis_address, "redis.internal:6380");
	ck_assert_str_eq(c->redis_password, "s3cret");
	ck_assert_int_eq(c->redis_db, 15);
	ck_assert_int_eq(c->redis_connect_timeout_us, 500000);
	ck_assert_int_eq(c->redis_reconnect_max_us, 60000000);
	ck_assert_uint_eq(c->h2_max_concurrent_streams, 250);
	ck_assert_uint_eq(c->h2_max_header_list_size, 64 << 10);
	ck_assert_uint_eq(c->h2_conn_window, 1u << 30);
	ck_assert_uint_eq(c->h2_stream_window, 64 << 10);
	ck_assert_int_eq(c->h2_idle_timeout_us, 0);
	ck_assert_int_eq(c->h2_max_output_buffer, 8 << 20);
	ck_assert_int_eq(c->grpc_max_recv_message_size, 1024);
	ck_assert_int_eq(c->grpc_max_send_message_size, 32 << 20);
	ck_assert_int_eq(c->grpc_max_call_duration_us, 7 * 86400000000LL);
	ck_assert_int_eq(c->shutdown_grace_us, 0);
	ck_assert_int_eq(c->n_instances, 3);
	ck_assert_str_eq(c->instances[0].name, "");
	ck_assert_str_eq(c->instances[1].name, "main");
	ck_assert_str_eq(c->instances[2].name, "team/ci-2");

	ck_assert_ptr_eq(cfg_instance_find(c, ""), &c->instances[0]);
	ck_assert_ptr_eq(cfg_instance_find(c, "team/ci-2"), &c->instances[2]);
	ck_assert_ptr_null(cfg_instance_find(c, "team"));
	cfg_free(c);
}
END_TEST

/* "unix:/path" is accepted for redis.address and handed on as "/path",
 * the only socket spelling the redis module understands. */
START_TEST(test_redis_unix_address)
{
	struct cfg *c = load_ok("redis:\n  embedded: false\n  address: unix:/tmp/r.sock\n");
	ck_assert_str_eq(c->redis_address, "/tmp/r.sock");
	cfg_free(c);
	c = load_ok("redis: {embedded: false, address: \"[::1]:6379\"}\n");
	ck_assert_str_eq(c->redis_address, "[::1]:6379");
	cfg_free(c);
}
END_TEST

START_TEST(test_listen_mapping)
{
	struct cfg *c = load_ok("listen:\n"
				"  - unix:/tmp/r.sock\n"
				"  - address: \"[::]:8980\"\n"
				"    tls:\n"
				"      cert: s.pem\n"
				"      key: s.key\n"
				"      client-ca: ca.pem\n"
				"      client-auth: require\n"
				"    services: [bots, google.bytestream.ByteStream]\n"
				"  - {address: 0.0.0.0:1, insecure: yes}\n");
	ck_assert_int_eq(c->n_listen, 3);
	ck_assert_ptr_null(c->listen[0].tls);
	ck_assert_int_eq(c->listen[0].n_services, 0);
	ck_assert(!c->listen[0].insecure);
	ck_assert_int_eq(c->listen[1].kind, CFG_LISTEN_TCP);
	ck_assert_str_eq(c->listen[1].host, "::");
	ck_assert_int_eq(c->listen[1].port, 8980);
	ck_assert_str_eq(c->listen[1].tls->cert, "s.pem");
	ck_assert_str_eq(c->listen[1].tls->key, "s.key");
	ck_assert_str_eq(c->listen[1].tls->client_ca, "ca.pem");
	ck_assert_int_eq(c->listen[1].tls->client_auth, CFG_CLIENT_AUTH_REQUIRE);
	ck_assert_int_eq(c->listen[1].n_services, 2);
	ck_assert_str_eq(c->listen[1].services[0], "google.devtools.remoteworkers.v1test2.Bots");
	ck_assert_str_eq(c->listen[1].services[1], "google.bytestream.ByteStream");
	ck_assert(c->listen[2].insecure);
	ck_assert_str_eq(cfg_service_name("cas"),
			 "build.bazel.remote.execution.v2.ContentAddressableStorage");
	ck_assert_ptr_null(cfg_service_name("nope"));

	/* New TLS files or client-auth are a reload; TLS on/off, insecure and
	 * services need a restart. */
	struct cfg *d = load_ok("listen:\n"
				"  - unix:/tmp/r.sock\n"
				"  - address: \"[::]:8980\"\n"
				"    tls: {cert: t.pem, key: t.key}\n"
				"    services: [bots, bytestream]\n"
				"  - {address: 0.0.0.0:1, insecure: yes}\n");
	ck_assert_ptr_null(cfg_diff_static(c, d));
	cfg_free(d);
	d = load_ok("listen:\n"
		    "  - unix:/tmp/r.sock\n"
		    "  - address: \"[::]:8980\"\n"
		    "    services: [bots, bytestream]\n"
		    "  - {address: 0.0.0.0:1, insecure: yes}\n");
	char *diff = cfg_diff_static(c, d);
	ck_assert_str_eq(diff, "listen");
	free(diff);
	cfg_free(d);
	cfg_free(c);
}
END_TEST

static const struct {
	const char *text;
	const char *err;
} bad[] = {
	/* unknown key, with and without a near miss */
	{"listen:\n  - 127.0.0.1:1\nstat-dir: /tmp\n",
	 "reactor.conf:3:1: stat-dir: unknown key (did you mean \"state-dir\"?)"},
	{"redis:\n  adress: 1.2.3.4:6379\n",
	 "reactor.conf:2:3: redis.adress: unknown key (did you mean \"address\"?)"},
	{"colour: blue\n", "reactor.conf:1:1: colour: unknown key"},
	/* duplicate key, also inside a section */
	{"state-dir: a\nstate-dir: b\n",
	 "reactor.conf:2:1: state-dir: duplicate key (first at line 1)"},
	{"log:\n  level: info\n  level: debug\n",
	 "reactor.conf:3:3: log.level: duplicate key (first at line 2)"},
	/* listen entries */
	{"listen:\n  - 127.0.0.1:50051\n  - 10.0.0.1:70000\n",
	 "reactor.conf:3:5: listen[1]: port 70000 out of range 0..65535"},
	{"listen:\n  - 127.0.0.1:70000\n",
	 "reactor.conf:2:5: listen[0]: port 70000 out of range 0..65535"},
	/* listen forms (issue 13): every complaint quotes the value and names
	 * the accepted forms; "*" and URLs are refused, never widened */
#define FORMS "accepted forms: HOST:PORT (an IPv4 address or a host name), [IPV6]:PORT, unix:PATH; 0.0.0.0:PORT or [::]:PORT listen on every interface"
	{"listen:\n  - ::1:80\n",
	 "reactor.conf:2:5: listen[0]: \"::1:80\": IPv6 addresses need brackets, like "
	 "[::1]:50051; " FORMS},
	{"listen:\n  - \"*:50201\"\n",
	 "reactor.conf:2:5: listen[0]: \"*:50201\": no host; to listen on every interface "
	 "write 0.0.0.0:50201 (IPv4) or [::]:50201 (IPv6), with TLS or insecure: true; " FORMS},
	{"listen:\n  - \":50201\"\n",
	 "reactor.conf:2:5: listen[0]: \":50201\": no host; to listen on every interface "
	 "write 0.0.0.0:50201 (IPv4) or [::]:50201 (IPv6), with TLS or insecure: true; " FORMS},
	{"listen:\n  - tcp://127.0.0.1:50201\n",
	 "reactor.conf:2:5: listen[0]: \"tcp://127.0.0.1:50201\": a listen address takes no "
	 "scheme (tcp://, http://, grpc://...); " FORMS},
	{"listen:\n  - http://localhost:80\n",
	 "reactor.conf:2:5: listen[0]: \"http://localhost:80\": a listen address takes no "
	 "scheme (tcp://, http://, grpc://...); " FORMS},
	{"listen:\n  - address: grpc://[::1]:1\n",
	 "reactor.conf:2:14: listen[0].address: \"grpc://[::1]:1\": a listen address takes no "
	 "scheme (tcp://, http://, grpc://...); " FORMS},
	{"listen:\n  - localhost\n", "reactor.conf:2:5: listen[0]: \"localhost\": no port; " FORMS},
#undef FORMS
	{"listen:\n  - \"unix:\"\n",
	 "reactor.conf:2:5: listen[0]: unix: needs a socket path, like unix:/run/reactord.sock"},
	{"listen:\n  - localhost:http\n", "reactor.conf:2:5: listen[0]: bad port \"http\""},
	{"listen: []\n", "reactor.conf:1:9: listen: needs at least one entry"},
	{"listen: 127.0.0.1:1\n", "reactor.conf:1:9: listen: expected a list"},
	/* listen mappings (TLS, insecure, services) */
	{"listen:\n  - {tls: {cert: a, key: b}}\n",
	 "reactor.conf:2:5: listen[0]: missing required key \"address\""},
	{"listen:\n  - address: 127.0.0.1:1\n    tls: {cert: a}\n",
	 "reactor.conf:3:10: listen[0].tls: missing required key \"key\""},
	{"listen:\n  - address: 127.0.0.1:1\n    tls: {cert: a, key: b, client-auth: require}\n",
	 "reactor.conf:3:41: listen[0].tls.client-auth: require needs client-ca (the CA client "
	 "certificates chain to)"},
	{"listen:\n  - address: 127.0.0.1:1\n    tls: {cert: a, key: b, client-ca: c}\n",
	 "reactor.conf:3:39: listen[0].tls.client-ca: is unused with client-auth: none (set "
	 "optional or require)"},
	{"listen:\n  - address: 127.0.0.1:1\n    tls: {cert: a, key: b, client-auth: maybe}\n",
	 "reactor.conf:3:41: listen[0].tls.client-auth: expected one of none, optional, require"},
	{"listen:\n  - address: 127.0.0.1:99999\n",
	 "reactor.conf:2:14: listen[0].address: port 99999 out of range 0..65535"},
	{"listen:\n  - address: 127.0.0.1:1\n    services: [cas, cas]\n",
	 "reactor.conf:3:21: listen[0].services[1]: "
	 "build.bazel.remote.execution.v2.ContentAddressableStorage is listed twice"},
	{"listen:\n  - address: 127.0.0.1:1\n    services: [cache]\n",
	 "reactor.conf:3:16: listen[0].services[0]: unknown service; expected one of "
	 "capabilities, cas, ac, execution, bytestream, operations, bots, health, buckets (or a "
	 "full name)"},
	{"listen:\n  - address: 127.0.0.1:1\n    insecure: 1\n",
	 "reactor.conf:3:15: listen[0].insecure: expected a boolean (true/false)"},
	/* bad duration, size, integer bounds, enum, boolean */
	{"redis:\n  connect-timeout: soon\n",
	 "reactor.conf:2:20: redis.connect-timeout: expected a duration like 10s or 1m"},
	{"shutdown-grace: nan\n",
	 "reactor.conf:1:17: shutdown-grace: expected a duration like 10s or 1m"},
	{"grpc:\n  max-call-duration: 8d\n",
	 "reactor.conf:2:22: grpc.max-call-duration: 8d out of range 1s..7d"},
	{"http2:\n  stream-window: 4 MiB\n",
	 "reactor.conf:2:18: http2.stream-window: expected a size like 4MiB"},
	{"http2:\n  connection-window: 2GiB\n",
	 "reactor.conf:2:22: http2.connection-window: 2GiB out of range 64KiB..1GiB"},
	{"redis:\n  database: 16\n", "reactor.conf:2:13: redis.database: 16 out of range 0..15"},
	{"http2:\n  max-concurrent-streams: 0\n",
	 "reactor.conf:2:27: http2.max-concurrent-streams: 0 out of range 1..1000000"},
	{"redis:\n  database: one\n", "reactor.conf:2:13: redis.database: expected an integer"},
	{"log:\n  level: verbose\n",
	 "reactor.conf:2:10: log.level: expected one of error, warn, info, debug"},
	{"log:\n  format: xml\n", "reactor.conf:2:11: log.format: expected one of text, json"},
	{"log:\n  access-log: maybe\n",
	 "reactor.conf:2:15: log.access-log: expected a boolean (true/false)"},
	{"log: debug\n", "reactor.conf:1:6: log: expected a mapping of keys"},
	{"state-dir:\n", "reactor.conf:1:11: state-dir: needs a value"},
	{"state-dir: [a]\n", "reactor.conf:1:12: state-dir: expected a string"},
	/* YAML syntax, encoding, and shape of the document */
	{"listen: [127.0.0.1:1\nlog: {}\n", "reactor.conf:2:4: did not find expected ',' or ']' "
					    "(while parsing a flow sequence at 1:9)"},
	{"log:\n  level: info\n   format: json\n",
	 "reactor.conf:3:10: mapping values are not allowed in this context"},
	{"state-dir: \"a\xff\"\n", "reactor.conf:1:14: invalid leading UTF-8 octet (byte 0xff)"},
	{"- listen\n", "reactor.conf:1:1: expected a mapping of keys at the top level"},
	{"a: &x 1\nb: *x\n", "reactor.conf:2:4: YAML aliases are not supported"},
	{"log: {}\n---\nlog: {}\n", "reactor.conf:2:1: only one YAML document is allowed"},
	/* redis embedded/external */
	{"redis:\n  address: 10.1.1.1:6379\n",
	 "reactor.conf:2:12: redis.address: cannot be used with an embedded redis (set "
	 "redis.embedded: false)"},
	{"redis:\n  embedded: false\n", "reactor.conf:2:13: redis.embedded: false needs "
					"redis.address (the external server to use)"},
	{"redis:\n  embedded: false\n  address: 10.1.1.1:0\n",
	 "reactor.conf:3:12: redis.address: port 0 out of range 1..65535"},
	{"redis:\n  embedded: false\n  address: unix:redis.sock\n",
	 "reactor.conf:3:12: redis.address: unix: needs an absolute socket path, like "
	 "unix:/run/redis.sock"},
	/* instances */
	{"instances:\n  - name: main\n  - name: ci\n  - name: main\n",
	 "reactor.conf:4:11: instances[2].name: duplicate instance name \"main\" (also "
	 "instances[0])"},
	{"instances:\n  - {}\n  - name: \"\"\n",
	 "reactor.conf:3:11: instances[1].name: duplicate instance name \"\" (also instances[0])"},
	{"instances:\n  - name: team/blobs/x\n",
	 "reactor.conf:2:11: instances[0].name: instance name \"team/blobs/x\" uses the reserved "
	 "segment \"blobs\""},
	{"instances:\n  - name: actionResults\n",
	 "reactor.conf:2:11: instances[0].name: instance name \"actionResults\" uses the reserved "
	 "segment \"actionResults\""},
	{"instances:\n  - name: team/\n", "reactor.conf:2:11: instances[0].name: instance name "
					  "\"team/\" must not start or end with \"/\""},
	{"instances:\n  - name: main\n    nmae: x\n",
	 "reactor.conf:3:5: instances[0].nmae: unknown key (did you mean \"name\"?)"},
	{"instances:\n  - main\n",
	 "reactor.conf:2:5: instances[0]: expected a mapping like {name: \"\"}"},
};

START_TEST(test_errors)
{
	struct cfg *c = (struct cfg *)1;
	char *err = NULL;
	int r = cfg_load_string("reactor.conf", bad[_i].text, &c, &err);
	ck_assert_msg(r == -1, "case %d loaded: %s", _i, bad[_i].text);
	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(err);
	ck_assert_str_eq(err, bad[_i].err);
	free(err);
}
END_TEST

START_TEST(test_diff_static)
{
	struct cfg *a = load_ok("redis:\n  embedded: false\n  address: 10.0.0.1:6379\n");
	struct cfg *b = load_ok("listen:\n  - 127.0.0.1:50052\n"
				"log:\n  level: debug\n  access-log: true\n"
				"redis:\n  embedded: false\n  address: 10.0.0.2:6379\n"
				"http2:\n  max-concurrent-streams: 10\n"
				"grpc:\n  max-recv-message-size: 1MiB\n  max-call-duration: 1s\n"
				"shutdown-grace: 1s\n");
	struct cfg *d = load_ok("redis:\n  embedded: false\n  address: 10.0.0.1:6379\n"
				"log:\n  format: json\n");
	struct cfg *e = load_ok("redis:\n  embedded: false\n  address: 10.0.0.1:6379\n"
				"instances:\n  - name: x\n");

	char *diff = cfg_diff_static(a, b);
	ck_assert_ptr_nonnull(diff);
	ck_assert_str_eq(diff, "listen, redis.address");
	free(diff);
	/* Only reloadable keys changed: nothing to refuse. */
	ck_assert_ptr_null(cfg_diff_static(a, d));
	ck_assert_ptr_null(cfg_diff_static(a, a));
	diff = cfg_diff_static(d, e);
	ck_assert_ptr_nonnull(diff);
	ck_assert_str_eq(diff, "instances");
	free(diff);
	cfg_free(a);
	cfg_free(b);
	cfg_free(d);
	cfg_free(e);
}
END_TEST

START_TEST(test_missing_file)
{
	struct cfg *c = (struct cfg *)1;
	char *err = NULL;
	ck_assert_int_eq(cfg_load("/nonexistent/reactor.conf", &c, &err), -1);
	ck_assert_ptr_null(c);
	ck_assert_str_eq(err, "/nonexistent/reactor.conf: cannot open: No such file or directory");
	free(err);
}
END_TEST

/* A real file: errors carry its path, and a good one loads. */
START_TEST(test_load_file)
{
	char path[] = "/tmp/check_cfg.XXXXXX";
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	FILE *f = fdopen(fd, "w");
	fputs("state-dir: /srv/r\nredis:\n  databse: 2\n", f);
	fclose(f);

	struct cfg *c;
	char *err;
	ck_assert_int_eq(cfg_load(path, &c, &err), -1);
	char want[256];
	snprintf(want, sizeof want,
		 "%s:3:3: redis.databse: unknown key (did you mean \"database\"?)", path);
	ck_assert_str_eq(err, want);
	free(err);

	f = fopen(path, "w");
	fputs("state-dir: /srv/r\nredis:\n  database: 2\n", f);
	fclose(f);
	ck_assert_int_eq(cfg_load(path, &c, &err), 0);
	ck_assert_str_eq(c->file, path);
	ck_assert_str_eq(c->state_dir, "/srv/r");
	ck_assert_int_eq(c->redis_db, 2);
	cfg_free(c);
	unlink(path);
}
END_TEST

/* The shipped default must load and mean exactly the built-in defaults,
 * so its comments cannot drift from the key table unnoticed. */
/* reactord(8) lists exactly the keys SIGHUP may change (issue 13): the
 * ".It Ic KEY" lines between its reloadable-keys markers. */
static void collect_key(const char *name, void *arg)
{
	char **list = arg;
	char *old = *list;
	*list = xasprintf("%s%s\n", old ? old : "\n", name);
	free(old);
}

START_TEST(test_reloadable_keys_in_man)
{
	const char *srcdir = getenv("srcdir");
	char path[4096], line[1024];
	snprintf(path, sizeof path, "%s/man/reactord.8", srcdir ? srcdir : ".");
	FILE *f = fopen(path, "r");
	ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
	char *man = NULL, *table = NULL;
	bool in = false;
	int n_man = 0;
	while (fgets(line, sizeof line, f)) {
		if (strstr(line, "reloadable-keys-begin"))
			in = true;
		else if (strstr(line, "reloadable-keys-end"))
			in = false;
		else if (in && !strncmp(line, ".It Ic ", 7)) {
			line[strcspn(line, "\n")] = '\0';
			collect_key(line + 7, &man);
			n_man++;
		}
	}
	fclose(f);
	cfg_each_reloadable(collect_key, &table);
	ck_assert_ptr_nonnull(table);
	ck_assert_msg(man != NULL, "%s: no reloadable-keys list", path);
	/* Each reloadable key is listed, and each listed key is reloadable. */
	for (char *k = table + 1; *k; k += strcspn(k, "\n") + 1) {
		char want[256];
		snprintf(want, sizeof want, "\n%.*s\n", (int)strcspn(k, "\n"), k);
		ck_assert_msg(strstr(man, want), "reactord(8) does not list reloadable key %s",
			      want + 1);
	}
	for (char *k = man + 1; *k; k += strcspn(k, "\n") + 1) {
		char want[256];
		snprintf(want, sizeof want, "\n%.*s\n", (int)strcspn(k, "\n"), k);
		ck_assert_msg(strstr(table, want), "reactord(8) lists %s, which is not reloadable",
			      want + 1);
	}
	ck_assert_int_gt(n_man, 40);
	free(man);
	free(table);
}
END_TEST

START_TEST(test_shipped_conf)
{
	const char *srcdir = getenv("srcdir");
	char path[4096], *err;
	struct cfg *c;
	snprintf(path, sizeof path, "%s/conf/reactor.conf", srcdir ? srcdir : ".");
	ck_assert_msg(cfg_load(path, &c, &err) == 0, "%s", err);
	assert_defaults(c);
	cfg_free(c);
}
END_TEST

/* The example master of the shipped config, what `make run` starts:
 * what issue 10 asks for (bucket local, builder hello of two steps, the
 * second reading the first's output, a required string property
 * greeting), everything else at its default. */
START_TEST(test_shipped_master)
{
	const char *srcdir = getenv("srcdir");
	char path[4096], *err;
	struct cfg *c;
	snprintf(path, sizeof path, "%s/conf/reactor.conf", srcdir ? srcdir : ".");
	ck_assert_msg(cfg_load(path, &c, &err) == 0, "%s", err);
	const struct cfg_master *m = c->master;
	ck_assert_ptr_nonnull(m);
	ck_assert_int_eq(m->n_buckets, 1);
	ck_assert_str_eq(m->buckets[0], "local");
	ck_assert_ptr_null(m->server);
	ck_assert_ptr_null(m->executor);
	ck_assert_str_eq(m->executor_instance, "");
	ck_assert_int_eq(m->max_lease_count, 10);
	ck_assert_int_eq(m->poll_interval_us, 10000000LL);
	ck_assert_int_eq(m->heartbeat_interval_us, 60000000LL);
	ck_assert_int_eq(m->lease_duration_us, 300000000LL);
	ck_assert(!m->on_shutdown_reset);
	ck_assert_int_eq(m->n_builders, 1);
	const struct cfg_builder *b = cfg_builder_find(m, "hello");
	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(b->n_props, 1);
	ck_assert_str_eq(b->props[0].name, "greeting");
	ck_assert_int_eq(b->props[0].type, CFG_PROP_STRING);
	ck_assert(b->props[0].required);
	ck_assert_int_eq(b->n_steps, 2);
	const struct cfg_step *w = &b->steps[0], *s = &b->steps[1];
	ck_assert_str_eq(w->name, "write");
	ck_assert_int_eq(w->argc, 3);
	ck_assert_ptr_nonnull(strstr(w->argv[2], "$PROP_GREETING"));
	ck_assert_int_eq(w->n_outputs, 1);
	ck_assert_str_eq(w->outputs[0], "out/greeting.txt");
	ck_assert(w->cache);
	ck_assert_str_eq(s->name, "show");
	ck_assert_int_eq(s->argc, 2);
	ck_assert_str_eq(s->argv[0], "cat");
	ck_assert_str_eq(s->argv[1], w->outputs[0]);
	/* The leasee defaults to host name and the first listener. */
	char host[256], want[300];
	ck_assert_int_eq(gethostname(host, sizeof host), 0);
	snprintf(want, sizeof want, "%s:127.0.0.1:50051", host);
	ck_assert_str_eq(m->name, want);
	cfg_free(c);
}
END_TEST

/* Remote execution: the scheduler: section and the per-instance keys. */
START_TEST(test_sched_keys)
{
	struct cfg *c = load_ok("");
	ck_assert_int_eq(c->sched_bot_keepalive_us, 60000000LL);
	ck_assert_int_eq(c->sched_long_poll_us, 60000000LL);
	ck_assert_int_eq(c->sched_safety_net_us, 5000000LL);
	ck_assert_int_eq(c->sched_keepalive_us, 30000000LL);
	ck_assert_int_eq(c->sched_sweep_us, 1000000LL);
	const struct cfg_instance *i = &c->instances[0];
	ck_assert(!i->execution);
	ck_assert_int_eq(i->max_execution_timeout_us, 3600LL * 1000000);
	ck_assert_int_eq(i->no_worker_timeout_us, 600LL * 1000000);
	ck_assert_int_eq(i->max_attempts, 5);
	ck_assert_int_eq(i->operation_retention_us, 600LL * 1000000);
	ck_assert(!i->cancel_orphaned_jobs);
	ck_assert_int_eq(i->n_platform_properties, 2);
	ck_assert_str_eq(i->platform_properties[0], "OSFamily");
	ck_assert_str_eq(i->platform_properties[1], "ISA");
	struct cfg *d = load_ok("scheduler:\n  bot-session-keepalive: 2s\n  long-poll: 0s\n"
				"  safety-net-interval: 100ms\n  keepalive-interval: 1m\n"
				"  sweep-interval: 50ms\n"
				"instances:\n  - name: a\n    execution: true\n"
				"    max-execution-timeout: 10m\n    no-worker-timeout: 1s\n"
				"    max-attempts: 2\n    operation-retention: 1h\n"
				"    cancel-orphaned-jobs: yes\n"
				"    platform-properties: [pool, gpu]\n");
	ck_assert_int_eq(d->sched_bot_keepalive_us, 2000000LL);
	ck_assert_int_eq(d->sched_long_poll_us, 0);
	ck_assert_int_eq(d->sched_safety_net_us, 100000LL);
	ck_assert_int_eq(d->sched_keepalive_us, 60000000LL);
	ck_assert_int_eq(d->sched_sweep_us, 50000LL);
	i = &d->instances[0];
	ck_assert(i->execution);
	ck_assert_int_eq(i->max_execution_timeout_us, 600LL * 1000000);
	ck_assert_int_eq(i->no_worker_timeout_us, 1000000LL);
	ck_assert_int_eq(i->max_attempts, 2);
	ck_assert_int_eq(i->operation_retention_us, 3600LL * 1000000);
	ck_assert(i->cancel_orphaned_jobs);
	ck_assert_int_eq(i->n_platform_properties, 2);
	ck_assert_str_eq(i->platform_properties[1], "gpu");
	cfg_free(c);
	cfg_free(d);
	static const struct {
		const char *text, *err;
	} cases[] = {
		{"scheduler:\n  sweep-interval: 5ms\n",
		 "reactor.conf:2:19: scheduler.sweep-interval: 5ms out of range 10ms..1h"},
		{"instances:\n  - name: x\n    max-attempts: 0\n",
		 "reactor.conf:3:19: instances[0].max-attempts: 0 out of range 1..100"},
		{"instances:\n  - name: x\n    platform-properties: [\"\"]\n",
		 "reactor.conf:3:27: instances[0].platform-properties[0]: expected a non-empty "
		 "string"},
		{"instances:\n  - name: x\n    execution: maybe\n",
		 "reactor.conf:3:16: instances[0].execution: expected a boolean (true/false)"},
	};
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		char *err = NULL;
		ck_assert_int_eq(cfg_load_string("reactor.conf", cases[k].text, &c, &err), -1);
		ck_assert_str_eq(err, cases[k].err);
		free(err);
	}
	/* The shipped config runs actions on its default instance. */
	const char *srcdir = getenv("srcdir");
	char path[4096], *err;
	snprintf(path, sizeof path, "%s/conf/reactor.conf", srcdir ? srcdir : ".");
	ck_assert_msg(cfg_load(path, &c, &err) == 0, "%s", err);
	ck_assert(c->instances[0].execution);
	cfg_free(c);
}
END_TEST

/* The buckets: section: defaults, every key set, bounds, reloadable. */
START_TEST(test_buckets_keys)
{
	struct cfg *c = load_ok("");
	ck_assert_int_eq(c->buckets_expiry_interval_us, 10000000LL);
	ck_assert_int_eq(c->buckets_build_timeout_us, 2LL * 86400 * 1000000);
	ck_assert_int_eq(c->buckets_timeout_check_interval_us, 60000000LL);
	ck_assert_int_eq(c->buckets_op_ttl_us, 60000000LL);
	struct cfg *d = load_ok("buckets:\n  expiry-interval: 250ms\n  build-timeout: 1h\n"
				"  timeout-check-interval: 5s\n  client-operation-ttl: 2m\n");
	ck_assert_int_eq(d->buckets_expiry_interval_us, 250000LL);
	ck_assert_int_eq(d->buckets_build_timeout_us, 3600LL * 1000000);
	ck_assert_int_eq(d->buckets_timeout_check_interval_us, 5000000LL);
	ck_assert_int_eq(d->buckets_op_ttl_us, 120000000LL);
	ck_assert_ptr_null(cfg_diff_static(c, d));
	cfg_free(c);
	cfg_free(d);
	static const struct {
		const char *text, *err;
	} cases[] = {
		{"buckets:\n  expiry-interval: 11s\n",
		 "reactor.conf:2:20: buckets.expiry-interval: 11s out of range 10ms..10s"},
		{"buckets:\n  build-timeout: 0s\n",
		 "reactor.conf:2:18: buckets.build-timeout: 0s out of range 1s..365d"},
		{"buckets:\n  timeout-check-interval: 2h\n",
		 "reactor.conf:2:27: buckets.timeout-check-interval: 2h out of range 10ms..1h"},
		{"buckets:\n  client-operation-ttl: soon\n",
		 "reactor.conf:2:25: buckets.client-operation-ttl: expected a duration like 10s or "
		 "1m"},
		{"buckets:\n  expiry-intervall: 1s\n",
		 "reactor.conf:2:3: buckets.expiry-intervall: unknown key (did you mean "
		 "\"expiry-interval\"?)"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *err = NULL;
		ck_assert_int_eq(cfg_load_string("reactor.conf", cases[i].text, &c, &err), -1);
		ck_assert_str_eq(err, cases[i].err);
		free(err);
	}
}
END_TEST

/* The workers: section (local reactor-workers). */
START_TEST(test_workers_keys)
{
	struct cfg *c = load_ok("");
	ck_assert_int_eq(c->workers_local, 0);
	ck_assert_ptr_null(c->workers_binary);
	ck_assert_ptr_null(c->workers_work_dir);
	ck_assert_int_eq(c->n_workers_properties, 2);
	ck_assert_str_eq(c->workers_properties[0], "OSFamily=linux");
	ck_assert_str_eq(c->workers_properties[1], "ISA=x86-64");
	struct cfg *d = load_ok("workers:\n  local: 4\n  binary: /opt/rw\n  work-dir: /scratch\n"
				"  properties: [OSFamily=linux, pool=big=1]\n");
	ck_assert_int_eq(d->workers_local, 4);
	ck_assert_str_eq(d->workers_binary, "/opt/rw");
	ck_assert_str_eq(d->workers_work_dir, "/scratch");
	ck_assert_int_eq(d->n_workers_properties, 2);
	ck_assert_str_eq(d->workers_properties[1], "pool=big=1");
	/* Restart-only: the running workers were started with the old ones. */
	char *diff = cfg_diff_static(c, d);
	ck_assert_str_eq(diff, "workers.local, workers.binary, workers.work-dir, "
			       "workers.properties");
	free(diff);
	/* The sandbox: bwrap unless none is chosen. */
	ck_assert_int_eq(c->workers_sandbox, CFG_SANDBOX_BWRAP);
	ck_assert_ptr_null(c->workers_bwrap);
	ck_assert_ptr_null(c->workers_run_as);
	struct cfg *e = load_ok("workers:\n  sandbox: none\n  bwrap: /opt/bwrap\n"
				"  run-as: 1000:1000\n");
	ck_assert_int_eq(e->workers_sandbox, CFG_SANDBOX_NONE);
	ck_assert_str_eq(e->workers_bwrap, "/opt/bwrap");
	ck_assert_str_eq(e->workers_run_as, "1000:1000");
	cfg_free(e);
	cfg_free(c);
	cfg_free(d);
	static const struct {
		const char *text, *err;
	} cases[] = {
		{"workers:\n  local: 257\n",
		 "reactor.conf:2:10: workers.local: 257 out of range 0..256"},
		{"workers:\n  sandbox: off\n",
		 "reactor.conf:2:12: workers.sandbox: expected one of bwrap, none"},
		{"workers:\n  properties: [OSFamily]\n",
		 "reactor.conf:2:16: workers.properties[0]: expected KEY=VALUE, like "
		 "OSFamily=linux"},
		{"workers:\n  properties: [\"=x\"]\n", "reactor.conf:2:16: workers.properties[0]: "
						       "expected KEY=VALUE, like OSFamily=linux"},
		{"workers:\n  binary: \"\"\n",
		 "reactor.conf:2:11: workers.binary: must not be empty"},
		{"workers:\n  locals: 2\n",
		 "reactor.conf:2:3: workers.locals: unknown key (did you mean \"local\"?)"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *err = NULL;
		ck_assert_int_eq(cfg_load_string("reactor.conf", cases[i].text, &c, &err), -1);
		ck_assert_str_eq(err, cases[i].err);
		free(err);
	}
	/* The shipped config starts two local workers. */
	const char *srcdir = getenv("srcdir");
	char path[4096], *err;
	snprintf(path, sizeof path, "%s/conf/reactor.conf", srcdir ? srcdir : ".");
	ck_assert_msg(cfg_load(path, &c, &err) == 0, "%s", err);
	ck_assert_int_eq(c->workers_local, 2);
	cfg_free(c);
}
END_TEST

/* ---- master: ------------------------------------------------------------ */

static const char master_conf[] =
	"listen:\n  - \"[::1]:7000\"\n"
	"master:\n"
	"  name: ci-master-1\n"
	"  buckets: [local, ci.main, try_2]\n"
	"  server: 10.0.0.5:50051\n"
	"  executor: grpc://unix:/run/exec.sock\n"
	"  executor-instance: team/ci\n"
	"  max-lease-count: 250\n"
	"  poll-interval: 250ms\n"
	"  heartbeat-interval: 2s\n"
	"  lease-duration: 4s\n"
	"  on-shutdown: reset\n"
	"  builders:\n"
	"    hello:\n"
	"      properties:\n"
	"        greeting: {type: string}\n"
	"        times: {type: int, default: 1}\n"
	"        fast: {type: bool, default: yes}\n"
	"        ratio: {type: number, default: -2.5e3}\n"
	"        motto: {type: string, default: 'say \"hi\"\\n'}\n"
	"      steps:\n"
	"        - name: write\n"
	"          argv: [sh, -c, 'printf \"%s\\n\" \"$PROP_GREETING\" > out/greeting.txt', \"\"]\n"
	"          env: {LANG: C, EMPTY: \"\"}\n"
	"          timeout: 60s\n"
	"          platform: {OSFamily: linux, pool: a=b}\n"
	"          outputs: [out/greeting.txt, out/dir]\n"
	"          cache: false\n"
	"        - name: show\n"
	"          argv: [cat, out/greeting.txt]\n"
	"    x.y_z-1:\n"
	"      steps:\n"
	"        - {name: only, argv: [\"true\"]}\n";

START_TEST(test_master_full)
{
	struct cfg *c = load_ok(master_conf);
	const struct cfg_master *m = c->master;
	ck_assert_ptr_nonnull(m);
	ck_assert_str_eq(m->name, "ci-master-1");
	ck_assert_int_eq(m->n_buckets, 3);
	ck_assert_str_eq(m->buckets[0], "local");
	ck_assert_str_eq(m->buckets[1], "ci.main");
	ck_assert_str_eq(m->buckets[2], "try_2");
	ck_assert_str_eq(m->server, "10.0.0.5:50051");
	ck_assert_str_eq(m->executor, "unix:/run/exec.sock");
	ck_assert_str_eq(m->executor_instance, "team/ci");
	ck_assert_int_eq(m->max_lease_count, 250);
	ck_assert_int_eq(m->poll_interval_us, 250000);
	ck_assert_int_eq(m->heartbeat_interval_us, 2000000);
	ck_assert_int_eq(m->lease_duration_us, 4000000);
	ck_assert(m->on_shutdown_reset);
	ck_assert_int_eq(m->n_builders, 2);

	const struct cfg_builder *b = &m->builders[0];
	ck_assert_str_eq(b->name, "hello");
	ck_assert_int_eq(b->n_props, 5);
	ck_assert_str_eq(b->props[0].name, "greeting");
	ck_assert_int_eq(b->props[0].type, CFG_PROP_STRING);
	ck_assert(b->props[0].required);
	ck_assert_ptr_null(b->props[0].def_json);
	ck_assert_str_eq(b->props[1].name, "times");
	ck_assert_int_eq(b->props[1].type, CFG_PROP_INT);
	ck_assert(!b->props[1].required);
	ck_assert_str_eq(b->props[1].def_json, "1");
	ck_assert_str_eq(b->props[2].name, "fast");
	ck_assert_int_eq(b->props[2].type, CFG_PROP_BOOL);
	ck_assert_str_eq(b->props[2].def_json, "true");
	ck_assert_str_eq(b->props[3].name, "ratio");
	ck_assert_int_eq(b->props[3].type, CFG_PROP_NUMBER);
	ck_assert_str_eq(b->props[3].def_json, "-2.5e3");
	ck_assert_str_eq(b->props[4].name, "motto");
	ck_assert_int_eq(b->props[4].type, CFG_PROP_STRING);
	ck_assert_str_eq(b->props[4].def_json, "\"say \\\"hi\\\"\\\\n\"");

	ck_assert_int_eq(b->n_steps, 2);
	const struct cfg_step *s = &b->steps[0];
	ck_assert_str_eq(s->name, "write");
	ck_assert_int_eq(s->argc, 4);
	ck_assert_str_eq(s->argv[0], "sh");
	ck_assert_str_eq(s->argv[1], "-c");
	ck_assert_str_eq(s->argv[2], "printf \"%s\\n\" \"$PROP_GREETING\" > out/greeting.txt");
	ck_assert_str_eq(s->argv[3], "");
	ck_assert_int_eq(s->n_env, 2);
	ck_assert_str_eq(s->env[0], "LANG=C");
	ck_assert_str_eq(s->env[1], "EMPTY=");
	ck_assert_int_eq(s->timeout_us, 60000000);
	ck_assert_int_eq(s->n_platform, 2);
	ck_assert_str_eq(s->platform[0], "OSFamily=linux");
	ck_assert_str_eq(s->platform[1], "pool=a=b");
	ck_assert_int_eq(s->n_outputs, 2);
	ck_assert_str_eq(s->outputs[0], "out/greeting.txt");
	ck_assert_str_eq(s->outputs[1], "out/dir");
	ck_assert(!s->cache);
	s = &b->steps[1];
	ck_assert_str_eq(s->name, "show");
	ck_assert_int_eq(s->argc, 2);
	ck_assert_str_eq(s->argv[0], "cat");
	ck_assert_str_eq(s->argv[1], "out/greeting.txt");
	ck_assert_int_eq(s->n_env, 0);
	ck_assert_ptr_null(s->env);
	ck_assert_int_eq(s->timeout_us, 0);
	ck_assert_int_eq(s->n_platform, 0);
	ck_assert_ptr_null(s->platform);
	ck_assert_int_eq(s->n_outputs, 0);
	ck_assert_ptr_null(s->outputs);
	ck_assert(s->cache);

	b = &m->builders[1];
	ck_assert_str_eq(b->name, "x.y_z-1");
	ck_assert_int_eq(b->n_props, 0);
	ck_assert_ptr_null(b->props);
	ck_assert_int_eq(b->n_steps, 1);
	ck_assert_str_eq(b->steps[0].name, "only");
	ck_assert_int_eq(b->steps[0].argc, 1);
	ck_assert_str_eq(b->steps[0].argv[0], "true");

	ck_assert_ptr_eq(cfg_builder_find(m, "hello"), &m->builders[0]);
	ck_assert_ptr_eq(cfg_builder_find(m, "x.y_z-1"), &m->builders[1]);
	ck_assert_ptr_null(cfg_builder_find(m, "hell"));
	ck_assert_ptr_null(cfg_builder_find(NULL, "hello"));
	cfg_free(c);
}
END_TEST

/* Only buckets and builders given: every other key at its default, the
 * name from the host and the first listener. */
START_TEST(test_master_defaults)
{
	struct cfg *c = load_ok("");
	ck_assert_ptr_null(c->master);
	cfg_free(c);

	char host[256];
	ck_assert_int_eq(gethostname(host, sizeof host), 0);
	static const struct {
		const char *listen, *suffix;
	} names[] = {
		{"", ":127.0.0.1:50051"},
		{"listen: [\"[::1]:7\", 127.0.0.1:1]\n", ":[::1]:7"},
		{"listen: [unix:/run/r.sock]\n", ":unix:/run/r.sock"},
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		char text[512], want[512];
		snprintf(text, sizeof text,
			 "master:\n  buckets: [local]\n  builders:\n"
			 "    b: {steps: [{name: s, argv: [x]}]}\n%s",
			 names[i].listen);
		snprintf(want, sizeof want, "%s%s", host, names[i].suffix);
		c = load_ok(text);
		ck_assert_str_eq(c->master->name, want);
		if (i)
			goto next;
		const struct cfg_master *m = c->master;
		ck_assert_int_eq(m->n_buckets, 1);
		ck_assert_str_eq(m->buckets[0], "local");
		ck_assert_ptr_null(m->server);
		ck_assert_ptr_null(m->executor);
		ck_assert_str_eq(m->executor_instance, "");
		ck_assert_int_eq(m->max_lease_count, 10);
		ck_assert_int_eq(m->poll_interval_us, 10000000LL);
		ck_assert_int_eq(m->heartbeat_interval_us, 60000000LL);
		ck_assert_int_eq(m->lease_duration_us, 300000000LL);
		ck_assert(!m->on_shutdown_reset);
		ck_assert_int_eq(m->n_builders, 1);
		ck_assert_str_eq(m->builders[0].name, "b");
		ck_assert_int_eq(m->builders[0].n_props, 0);
		ck_assert_int_eq(m->builders[0].n_steps, 1);
		ck_assert_int_eq(m->builders[0].steps[0].timeout_us, 0);
		ck_assert(m->builders[0].steps[0].cache);
	next:
		cfg_free(c);
	}
	/* Port 0 is known only once bound: no name yet, the engine makes it. */
	c = load_ok("listen: [127.0.0.1:0]\nmaster:\n  buckets: [a]\n"
		    "  builders: {b: {steps: [{name: s, argv: [x]}]}}\n");
	ck_assert_ptr_null(c->master->name);
	cfg_free(c);
	/* Exactly twice the heartbeat is enough. */
	c = load_ok("master:\n  buckets: [a]\n  heartbeat-interval: 1m\n  lease-duration: 2m\n"
		    "  builders: {b: {steps: [{name: s, argv: [x]}]}}\n");
	ck_assert_int_eq(c->master->lease_duration_us, 120000000LL);
	cfg_free(c);
}
END_TEST

#define M_HEAD "master:\n  buckets: [local]\n"
#define M_B    M_HEAD "  builders:\n    hello:\n"
static const struct {
	const char *text, *err;
} master_bad[] = {
	{"master:\n  name: x\n", "reactor.conf:2:3: master: missing required key \"buckets\""},
	{"master:\n", "reactor.conf:1:8: master: missing required key \"buckets\""},
	{"master: [local]\n", "reactor.conf:1:9: master: expected a mapping of keys"},
	{M_HEAD, "reactor.conf:2:3: master: missing required key \"builders\""},
	{"master:\n  buckets: []\n", "reactor.conf:2:12: master.buckets: needs at least one entry"},
	{"master:\n  buckets: [local, Local]\n",
	 "reactor.conf:2:20: master.buckets[1]: \"Local\" is not a valid bucket name (want "
	 "[a-z0-9][a-z0-9._-]{0,99})"},
	{"master:\n  buckets: [-x]\n",
	 "reactor.conf:2:13: master.buckets[0]: \"-x\" is not a valid "
	 "bucket name (want [a-z0-9][a-z0-9._-]{0,99})"},
	{"master:\n  buckets: [a, b, a]\n",
	 "reactor.conf:2:19: master.buckets[2]: duplicate bucket \"a\" (also master.buckets[0])"},
	{"master:\n  bukets: [local]\n",
	 "reactor.conf:2:3: master.bukets: unknown key (did you mean \"buckets\"?)"},
	{"mastr:\n  buckets: [local]\n",
	 "reactor.conf:1:1: mastr: unknown key (did you mean \"master\"?)"},
	{M_HEAD "  server: localhost\n",
	 "reactor.conf:3:11: master.server: expected host:port, got \"localhost\""},
	{M_HEAD "  executor: unix:exec.sock\n",
	 "reactor.conf:3:13: master.executor: unix: needs an absolute socket path, like "
	 "unix:/run/reactord.sock"},
	{M_HEAD "  executor-instance: a/blobs\n",
	 "reactor.conf:3:22: master.executor-instance: instance name \"a/blobs\" uses the "
	 "reserved segment \"blobs\""},
	{M_HEAD "  name: \"a b\"\n",
	 "reactor.conf:3:9: master.name: must not contain spaces or control characters"},
	{M_HEAD "  max-lease-count: 0\n",
	 "reactor.conf:3:20: master.max-lease-count: 0 out of range 1..10000"},
	{M_HEAD "  poll-interval: 50ms\n",
	 "reactor.conf:3:18: master.poll-interval: 50ms out of range 100ms..1h"},
	{M_HEAD "  heartbeat-interval: 2h\n",
	 "reactor.conf:3:23: master.heartbeat-interval: 2h out of range 100ms..1h"},
	{M_HEAD "  on-shutdown: keep\n",
	 "reactor.conf:3:16: master.on-shutdown: expected one of abandon, reset"},
	{M_HEAD "  lease-duration: 1m\n  builders: {b: {steps: [{name: s, argv: [x]}]}}\n",
	 "reactor.conf:3:19: master.lease-duration: lease-duration (1m) must be at least twice "
	 "heartbeat-interval (1m), so one lost heartbeat does not lose the lease"},
	{M_HEAD "  heartbeat-interval: 3m\n  builders: {b: {steps: [{name: s, argv: [x]}]}}\n",
	 "reactor.conf:3:23: master.heartbeat-interval: lease-duration (5m) must be at least "
	 "twice heartbeat-interval (3m), so one lost heartbeat does not lose the lease"},
	/* builders */
	{M_HEAD "  builders: {}\n", "reactor.conf:3:13: master.builders: needs at least one entry"},
	{M_HEAD "  builders: [hello]\n", "reactor.conf:3:13: master.builders: expected a mapping"},
	{M_HEAD "  builders:\n    he llo: {steps: [{name: s, argv: [x]}]}\n",
	 "reactor.conf:4:5: master.builders.he llo: \"he llo\" may only contain letters, "
	 "digits, \"_\", \".\" and \"-\""},
	{M_HEAD "  builders:\n    \"\": {steps: [{name: s, argv: [x]}]}\n",
	 "reactor.conf:4:5: master.builders.: must not be empty"},
	{M_B "      steps: [{name: s, argv: [x]}]\n    hello: {}\n",
	 "reactor.conf:6:5: master.builders.hello: duplicate key (first at line 4)"},
	{M_B "      properties: {}\n",
	 "reactor.conf:5:7: master.builders.hello: missing required key \"steps\""},
	{M_B "      step: []\n",
	 "reactor.conf:5:7: master.builders.hello.step: unknown key (did you mean \"steps\"?)"},
	{M_B "      steps: []\n",
	 "reactor.conf:5:14: master.builders.hello.steps: needs at least one entry"},
	/* properties */
	{M_B "      properties:\n        n: {type: float}\n",
	 "reactor.conf:6:19: master.builders.hello.properties.n.type: expected one of string, "
	 "int, bool, number"},
	{M_B "      properties:\n        n: {default: 1}\n",
	 "reactor.conf:6:12: master.builders.hello.properties.n: missing required key \"type\""},
	{M_B "      properties:\n        n: string\n",
	 "reactor.conf:6:12: master.builders.hello.properties.n: expected a mapping like {type: "
	 "string}"},
	{M_B "      properties:\n        n: {type: int, default: abc}\n",
	 "reactor.conf:6:33: master.builders.hello.properties.n.default: \"abc\" is not of type "
	 "int (like 3 or -1)"},
	{M_B "      properties:\n        n: {type: int, default: 1.5}\n",
	 "reactor.conf:6:33: master.builders.hello.properties.n.default: \"1.5\" is not of type "
	 "int (like 3 or -1)"},
	{M_B "      properties:\n        n: {type: bool, default: 1}\n",
	 "reactor.conf:6:34: master.builders.hello.properties.n.default: \"1\" is not of type "
	 "bool (true or false)"},
	{M_B "      properties:\n        n: {type: number, default: nan}\n",
	 "reactor.conf:6:36: master.builders.hello.properties.n.default: \"nan\" is not of type "
	 "number (like 1.5 or 3)"},
	{M_B "      properties:\n        n: {type: string, default: ~}\n",
	 "reactor.conf:6:36: master.builders.hello.properties.n.default: needs a value (leave "
	 "default out to make the property required)"},
	{M_B "      properties:\n        $x: {type: string}\n",
	 "reactor.conf:6:9: master.builders.hello.properties.$x: \"$x\" may only contain "
	 "letters, digits, \"_\", \".\" and \"-\""},
	/* steps */
	{M_B "      steps:\n        - {name: a, argv: [x]}\n        - {name: b, argv: [x]}\n"
	     "        - {name: a, argv: [y]}\n",
	 "reactor.conf:8:18: master.builders.hello.steps[2].name: duplicate step name \"a\" "
	 "(also master.builders.hello.steps[0])"},
	{M_B "      steps:\n        - {name: a, argv: []}\n",
	 "reactor.conf:6:27: master.builders.hello.steps[0].argv: needs at least one entry"},
	{M_B "      steps:\n        - {name: a}\n",
	 "reactor.conf:6:11: master.builders.hello.steps[0]: missing required key \"argv\""},
	{M_B "      steps:\n        - {argv: [x]}\n",
	 "reactor.conf:6:11: master.builders.hello.steps[0]: missing required key \"name\""},
	{M_B "      steps:\n        - {name: a, argv: [\"\", x]}\n",
	 "reactor.conf:6:28: master.builders.hello.steps[0].argv[0]: the program name must not "
	 "be empty"},
	{M_B "      steps:\n        - {name: a, argv: [x, ~]}\n",
	 "reactor.conf:6:31: master.builders.hello.steps[0].argv[1]: expected a string (quote "
	 "\"\" for an empty argument)"},
	{M_B
	 "      steps:\n        - name: a\n          argv: [x]\n          outputs: [out/../x]\n",
	 "reactor.conf:8:21: master.builders.hello.steps[0].outputs[0]: \"out/../x\" must not "
	 "contain \".\" or \"..\""},
	{M_B
	 "      steps:\n        - name: a\n          argv: [x]\n          outputs: [a, /etc/x]\n",
	 "reactor.conf:8:24: master.builders.hello.steps[0].outputs[1]: \"/etc/x\" must be "
	 "relative to the workspace"},
	{M_B "      steps:\n        - name: a\n          argv: [x]\n          outputs: [out//x]\n",
	 "reactor.conf:8:21: master.builders.hello.steps[0].outputs[0]: \"out//x\" has an empty "
	 "component"},
	{M_B "      steps:\n        - name: a\n          argv: [x]\n          outputs: [out/]\n",
	 "reactor.conf:8:21: master.builders.hello.steps[0].outputs[0]: \"out/\" has an empty "
	 "component"},
	{M_B "      steps:\n        - name: a\n          argv: [x]\n          outputs: [a, b, a]\n",
	 "reactor.conf:8:27: master.builders.hello.steps[0].outputs[2]: duplicate output \"a\" "
	 "(also master.builders.hello.steps[0].outputs[0])"},
	{M_B "      steps:\n        - name: a\n          argv: [x]\n          env: {\"\": x}\n",
	 "reactor.conf:8:17: master.builders.hello.steps[0].env.: names must not be empty"},
	{M_B "      steps:\n        - name: a\n          argv: [x]\n          env: {A=B: x}\n",
	 "reactor.conf:8:17: master.builders.hello.steps[0].env.A=B: names must not contain "
	 "\"=\""},
	{M_B "      steps:\n        - name: a\n          argv: [x]\n          env: [A=B]\n",
	 "reactor.conf:8:16: master.builders.hello.steps[0].env: expected a mapping"},
	{M_B
	 "      steps:\n        - name: a\n          argv: [x]\n          platform: {\"\": x}\n",
	 "reactor.conf:8:22: master.builders.hello.steps[0].platform.: names must not be empty"},
	{M_B "      steps:\n        - name: a\n          argv: [x]\n          platform: {pool: }\n",
	 "reactor.conf:8:28: master.builders.hello.steps[0].platform.pool: expected a string "
	 "(quote \"\" for an empty value)"},
	{M_B "      steps:\n        - name: a\n          argv: [x]\n          timeout: 8d\n",
	 "reactor.conf:8:20: master.builders.hello.steps[0].timeout: 8d out of range 0s..7d"},
	{M_B "      steps:\n        - name: a\n          argv: [x]\n          cache: sometimes\n",
	 "reactor.conf:8:18: master.builders.hello.steps[0].cache: expected a boolean "
	 "(true/false)"},
	{M_B "      steps:\n        - name: a\n          argv: [x]\n          outptus: [x]\n",
	 "reactor.conf:8:11: master.builders.hello.steps[0].outptus: unknown key (did you mean "
	 "\"outputs\"?)"},
	{M_B "      steps:\n        - {name: \"a/b\", argv: [x]}\n",
	 "reactor.conf:6:18: master.builders.hello.steps[0].name: \"a/b\" may only contain "
	 "letters, digits, \"_\", \".\" and \"-\""},
};

START_TEST(test_master_errors)
{
	struct cfg *c = (struct cfg *)1;
	char *err = NULL;
	int r = cfg_load_string("reactor.conf", master_bad[_i].text, &c, &err);
	ck_assert_msg(r == -1, "case %d loaded: %s", _i, master_bad[_i].text);
	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(err);
	ck_assert_str_eq(err, master_bad[_i].err);
	free(err);
}
END_TEST

/* master.tls and master.token-file (issue 12): the client credentials of
 * the master's connections, grpcs:// endpoints kept as written. */
START_TEST(test_master_tls)
{
#define M_ONE M_HEAD "  builders: {b: {steps: [{name: s, argv: [x]}]}}\n"
	struct cfg *c = load_ok(M_ONE "  server: grpcs://bk.example:443\n"
				      "  executor: https://[::1]:8980\n"
				      "  tls: {ca: /etc/r/ca.pem, cert: /etc/r/m.pem, key: /etc/r/m.key,\n"
				      "        server-name: bk.example}\n"
				      "  token-file: /etc/r/token\n");
	const struct cfg_master *m = c->master;
	ck_assert_str_eq(m->server, "grpcs://bk.example:443");
	ck_assert_str_eq(m->executor, "grpcs://[::1]:8980");
	ck_assert_str_eq(m->tls_ca, "/etc/r/ca.pem");
	ck_assert_str_eq(m->tls_cert, "/etc/r/m.pem");
	ck_assert_str_eq(m->tls_key, "/etc/r/m.key");
	ck_assert_str_eq(m->tls_server_name, "bk.example");
	ck_assert_str_eq(m->token_file, "/etc/r/token");
	cfg_free(c);
	c = load_ok(M_ONE);
	ck_assert_ptr_null(c->master->tls_ca);
	ck_assert_ptr_null(c->master->token_file);
	cfg_free(c);

	static const struct {
		const char *text, *err;
	} tls_bad[] = {
		{M_ONE "  tls: {cert: /c.pem}\n",
		 "reactor.conf:4:15: master.tls.cert: a client certificate needs both tls.cert and "
		 "tls.key"},
		{M_ONE "  server: grpc://10.0.0.5:1\n  tls: {ca: /ca.pem}\n",
		 "reactor.conf:4:11: master.server: \"grpc://10.0.0.5:1\" is plaintext but tls keys "
		 "are set: write grpcs://HOST:PORT (TLS over a unix socket is not supported)"},
		{M_ONE "  executor: unix:/r.sock\n  tls: {server-name: x}\n",
		 "reactor.conf:4:13: master.executor: \"unix:/r.sock\" is plaintext but tls keys are "
		 "set: write grpcs://HOST:PORT (TLS over a unix socket is not supported)"},
		{M_ONE "  server: grpcs://unix:/r.sock\n",
		 "reactor.conf:4:11: master.server: TLS over a unix socket is not supported: write "
		 "unix:PATH"},
		{M_ONE "  tls: {ca: \"\"}\n", "reactor.conf:4:13: master.tls.ca: must not be empty"},
		{M_ONE "  tls: {cafile: x}\n", "reactor.conf:4:9: master.tls.cafile: unknown key"},
	};
	for (size_t i = 0; i < sizeof tls_bad / sizeof tls_bad[0]; i++) {
		char *err = NULL;
		c = NULL;
		ck_assert_int_eq(cfg_load_string("reactor.conf", tls_bad[i].text, &c, &err), -1);
		ck_assert_str_eq(err, tls_bad[i].err);
		free(err);
	}
#undef M_ONE
}
END_TEST

/* SIGHUP may change builders, limits and intervals; the identity and the
 * endpoints need a restart, and so does adding or removing the master. */
START_TEST(test_master_diff)
{
	static const char base[] = "master:\n  buckets: [a]\n"
				   "  builders: {b: {steps: [{name: s, argv: [x]}]}}\n";
	struct cfg *a = load_ok(base);
	struct cfg *none = load_ok("");
	struct cfg *re =
		load_ok("master:\n  buckets: [a]\n  max-lease-count: 3\n"
			"  poll-interval: 1s\n  heartbeat-interval: 1s\n"
			"  lease-duration: 10s\n"
			"  builders:\n    b: {steps: [{name: s, argv: [y]}]}\n"
			"    c: {properties: {p: {type: int}}, steps: [{name: s, argv: [x]}]}\n");
	struct cfg *st = load_ok("master:\n  name: other\n  buckets: [a, b]\n"
				 "  server: 127.0.0.1:1\n  executor: unix:/x.sock\n"
				 "  executor-instance: ci\n  on-shutdown: reset\n"
				 "  builders: {b: {steps: [{name: s, argv: [x]}]}}\n");
	char *diff;

	ck_assert_ptr_null(cfg_diff_static(a, a));
	ck_assert_ptr_null(cfg_diff_static(a, re));
	ck_assert_ptr_null(cfg_diff_static(re, a));
	diff = cfg_diff_static(a, st);
	ck_assert_ptr_nonnull(diff);
	ck_assert_str_eq(diff, "master.name, master.buckets, master.server, master.executor, "
			       "master.executor-instance, master.on-shutdown");
	free(diff);
	diff = cfg_diff_static(a, none);
	ck_assert_ptr_nonnull(diff);
	ck_assert_str_eq(diff, "master");
	free(diff);
	diff = cfg_diff_static(none, a);
	ck_assert_ptr_nonnull(diff);
	ck_assert_str_eq(diff, "master");
	free(diff);
	/* Reloadable, but different: the engine can see what changed. */
	ck_assert_ptr_nonnull(cfg_builder_find(re->master, "c"));
	ck_assert_ptr_null(cfg_builder_find(a->master, "c"));
	cfg_free(a);
	cfg_free(none);
	cfg_free(re);
	cfg_free(st);
}
END_TEST

static Suite *cfg_suite(void)
{
	Suite *s = suite_create("cfg");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_defaults_empty);
	tcase_add_test(tc, test_full_file);
	tcase_add_test(tc, test_redis_unix_address);
	tcase_add_test(tc, test_listen_mapping);
	tcase_add_loop_test(tc, test_errors, 0, (int)(sizeof bad / sizeof bad[0]));
	tcase_add_test(tc, test_diff_static);
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_load_file);
	tcase_add_test(tc, test_shipped_conf);
	tcase_add_test(tc, test_reloadable_keys_in_man);
	tcase_add_test(tc, test_buckets_keys);
	tcase_add_test(tc, test_sched_keys);
	tcase_add_test(tc, test_workers_keys);
	tcase_add_test(tc, test_master_full);
	tcase_add_test(tc, test_master_defaults);
	tcase_add_loop_test(tc, test_master_errors, 0,
			    (int)(sizeof master_bad / sizeof master_bad[0]));
	tcase_add_test(tc, test_master_diff);
	tcase_add_test(tc, test_master_tls);
	tcase_add_test(tc, test_shipped_master);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(cfg_suite());
}
