/*
 * check_client_url.c - how the client reads a target (rc_target_parse:
 * schemes, TLS or not, hosts, ports, unix sockets, the conflicts it
 * refuses), the command-line flags (rc_client_opt) and the checks of TLS
 * and token files made before any connection (rc_client_opts_check).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rpc/client.h"
#include "check_run.h"

/* Parse target; on success check the parts ("" for NULL). */
static void ok(const char *target, bool want_tls, bool tls, const char *host, const char *port,
	       const char *path)
{
	struct rc_target t;
	char *err = NULL;
	int rv = rc_target_parse(target, want_tls, &t, &err);
	ck_assert_msg(rv == 0, "%s: %s", target, err ? err : "?");
	ck_assert_msg(t.tls == tls, "%s: tls %d", target, t.tls);
	ck_assert_str_eq(t.host ? t.host : "", host);
	ck_assert_str_eq(t.port ? t.port : "", port);
	ck_assert_str_eq(t.path ? t.path : "", path);
	rc_target_free(&t);
}

static void bad(const char *target, bool want_tls, const char *needle)
{
	struct rc_target t;
	char *err = NULL;
	ck_assert_msg(rc_target_parse(target, want_tls, &t, &err) != 0, "%s accepted", target);
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strstr(err, needle), "%s: \"%s\" lacks \"%s\"", target, err, needle);
	free(err);
}

START_TEST(test_plaintext_targets)
{
	ok("127.0.0.1:50051", false, false, "127.0.0.1", "50051", "");
	ok("grpc://build.example:8980", false, false, "build.example", "8980", "");
	ok("http://build.example:80/", false, false, "build.example", "80", "");
	ok("[::1]:50051", false, false, "::1", "50051", "");
	ok("::1:50051", false, false, "::1", "50051", ""); /* as before: last colon */
	ok("unix:/run/reactord.sock", false, false, "", "", "/run/reactord.sock");
	ok("grpc://unix:/run/r.sock", false, false, "", "", "/run/r.sock");
}
END_TEST

START_TEST(test_tls_targets)
{
	ok("grpcs://build.example:443", false, true, "build.example", "443", "");
	ok("GRPCS://build.example:8980", false, true, "build.example", "8980", "");
	ok("https://[2001:db8::1]:8443/", false, true, "2001:db8::1", "8443", "");
	ok("grpcs://build.example", false, true, "build.example", "443", "");
	ok("build.example:8980", true, true, "build.example", "8980", ""); /* --tls-ca & co */
	ok("grpcs://10.0.0.5:50051", true, true, "10.0.0.5", "50051", "");
}
END_TEST

START_TEST(test_bad_targets)
{
	bad("grpc://10.0.0.5:50051", true, "plaintext target but TLS settings");
	bad("http://10.0.0.5:50051", true, "write grpcs://10.0.0.5:50051");
	bad("unix:/run/r.sock", true, "TLS over a unix socket is not supported");
	bad("grpcs://unix:/run/r.sock", false, "TLS over a unix socket");
	bad("unix:", false, "bad unix socket path");
	bad("build.example", false, "needs HOST:PORT");
	bad("grpc://build.example", false, "needs HOST:PORT");
	bad(":50051", false, "needs HOST:PORT");
	bad("host:0", false, "port 1..65535");
	bad("host:65536", false, "port 1..65535");
	bad("host:http", false, "needs HOST:PORT");
	bad("host:80x", false, "needs HOST:PORT");
	bad("[::1", false, "bad IPv6 target");
	bad("[::1]x", false, "bad IPv6 target");
}
END_TEST

START_TEST(test_flags)
{
	struct rc_client_opts o = {0};
	ck_assert(!rc_client_opts_tls(&o));
	ck_assert(!rc_client_opts_tls(NULL));
	ck_assert(rc_client_opt(&o, RC_OPT_TLS_SERVER_NAME, "build.example"));
	ck_assert(rc_client_opts_tls(&o)); /* any TLS flag means TLS */
	ck_assert(rc_client_opt(&o, RC_OPT_TOKEN_FILE, "/x/token"));
	ck_assert(!rc_client_opt(&o, 's', "ignored"));
	ck_assert_str_eq(o.tls.server_name, "build.example");
	ck_assert_str_eq(o.token_file, "/x/token");

	struct rc_client_opts e = {0};
	setenv("REACTOR_TOKEN_FILE", "/env/token", 1);
	rc_client_opts_env(&e);
	ck_assert_str_eq(e.token_file, "/env/token");
	rc_client_opts_env(&o); /* the flag wins */
	ck_assert_str_eq(o.token_file, "/x/token");
	unsetenv("REACTOR_TOKEN_FILE");
}
END_TEST

static char tmpdir[64];

static const char *write_file(const char *name, const char *content)
{
	static char path[128];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(content, f);
	fclose(f);
	return path;
}

static void check_fails(const struct rc_client_opts *o, const char *needle)
{
	char *err = NULL;
	ck_assert_int_ne(rc_client_opts_check(o, &err), 0);
	ck_assert_msg(strstr(err, needle), "\"%s\" lacks \"%s\"", err, needle);
	/* The token never shows in a message. */
	ck_assert_ptr_null(strstr(err, "s3cret"));
	free(err);
}

START_TEST(test_token_files)
{
	ck_assert_ptr_nonnull(mkdtemp(strcpy(tmpdir, "/tmp/ckurl.XXXXXX")));
	char *err = NULL;
	struct rc_client_opts o = {.token_file = write_file("good", "  s3cret-Token.1\r\n\n")};
	ck_assert_int_eq(rc_client_opts_check(&o, &err), 0);
	o.token_file = write_file("empty", " \n");
	check_fails(&o, "is empty");
	o.token_file = write_file("space", "s3cret token\n");
	check_fails(&o, "one line of printable ASCII");
	o.token_file = write_file("lines", "s3cret\nother\n");
	check_fails(&o, "one line of printable ASCII");
	o.token_file = "/nonexistent/token";
	check_fails(&o, "token file /nonexistent/token: No such file");
	o.token_file = NULL;
	o.token = "s3cret\x01";
	check_fails(&o, "the token holds a character");
	o.token = "s3cret";
	ck_assert_int_eq(rc_client_opts_check(&o, &err), 0);

	struct rc_client_opts t = {.tls = {.ca = "/nonexistent/ca.pem"}};
	check_fails(&t, "CA file /nonexistent/ca.pem: No such file");
	t.tls.ca = write_file("notpem", "hello\n");
	check_fails(&t, "CA file");
	t.tls.ca = NULL;
	t.tls.cert = write_file("cert", "x\n");
	check_fails(&t, "needs both a certificate file and its key file");
	t.tls.cert = NULL;
	t.tls.server_name = "";
	check_fails(&t, "server name is empty");

	const char *names[] = {"good", "empty", "space", "lines", "notpem", "cert"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char p[128];
		snprintf(p, sizeof(p), "%s/%s", tmpdir, names[i]);
		unlink(p);
	}
	rmdir(tmpdir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("client_url");
	TCase *tc = tcase_create("targets");
	tcase_add_test(tc, test_plaintext_targets);
	tcase_add_test(tc, test_tls_targets);
	tcase_add_test(tc, test_bad_targets);
	tcase_add_test(tc, test_flags);
	tcase_add_test(tc, test_token_files);
	suite_add_tcase(s, tc);
	return check_run(s);
}
