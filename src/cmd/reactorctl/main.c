/*
 * main.c - reactorctl's entry: the global options, the command tables and
 * how a command line finds its command ("cas put" is two words), help,
 * the lazily connected client with errors that name the cause, and the
 * raw `call` command.  The commands themselves live in ctl_*.c.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <fcntl.h>
#include <unistd.h>

#include <event2/event.h>

#include "config.h"
#include "cmd/reactorctl/ctl.h"
#include "core/log.h"
#include "rpc/grpc.h"

static int cmd_call(struct ctl *c, int argc, char **argv);

static const struct ctl_cmd ctl_cmds_main[] = {
	{"call", "PATH", "send one empty request to a method, print the status",
	 "Calls PATH (\"/package.Service/Method\") with one empty request message and\n"
	 "prints the gRPC status it ends with; exit 0 only for OK.  For probing\n"
	 "which methods a server has.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl call /grpc.health.v1.Health/Check\n",
	 cmd_call},
	{0},
};

static const struct ctl_cmd *const tables[] = {
	ctl_cmds_cas, ctl_cmds_exec, ctl_cmds_ops, ctl_cmds_build, ctl_cmds_main,
};

#define GLOBAL_USAGE                                                                               \
	"usage: reactorctl [OPTIONS] COMMAND [ARGS]\n"                                             \
	"       reactorctl help [COMMAND]\n"                                                       \
	"       reactorctl -h | --help | -V | --version\n"                                         \
	"options:\n"                                                                               \
	"  -s, --server TARGET  HOST:PORT, unix:PATH or grpcs://HOST:PORT (default\n"              \
	"                       $REACTOR_SERVER, else 127.0.0.1:50051)\n"                          \
	"  -i, --instance NAME  REAPI instance name (default \"\")\n"                              \
	"  -T, --timeout DUR    deadline of each call, e.g. 10s (default 30s; transfers\n"         \
	"                       and exec have none unless given)\n"                                \
	"      --json           machine-readable output\n"                                         \
	"      --progress       progress bars from the first byte (on a terminal; else\n"        \
	"                       only for transfers taking over a second)\n"                      \
	"  -v, --verbose        say more (twice: debug log of the connection)\n"                   \
	"  -h, --help           this help\n"                                                       \
	"  -V, --version        print the version\n" RC_CLIENT_USAGE

/* "  name args" on f, words wrapped at 80 columns (continuation lines
 * indented by 6), the args' own line breaks read as spaces; returns the
 * width of the one line, or SIZE_MAX when it took more. */
static size_t put_synopsis(FILE *f, const char *name, const char *args)
{
	char *text = xasprintf("%s %s", name, args ? args : "");
	size_t col = 2;
	bool wrapped = false, line_start = true;
	fputs("  ", f);
	for (char *w = strtok(text, " \n"); w; w = strtok(NULL, " \n")) {
		size_t n = strlen(w);
		if (!line_start && col + 1 + n > 80) {
			fputs("\n      ", f);
			col = 6;
			wrapped = line_start = true;
		}
		col += (size_t)fprintf(f, "%s%s", line_start ? "" : " ", w);
		line_start = false;
	}
	free(text);
	return wrapped ? SIZE_MAX : col;
}

static void list_commands(FILE *f)
{
	fprintf(f, "commands:\n");
	for (size_t t = 0; t < ARRAY_LEN(tables); t++)
		for (const struct ctl_cmd *k = tables[t]; k->name; k++) {
			if (!k->summary)
				continue;
			/* The summary at column 34, on the next line after a
			 * longer synopsis. */
			size_t col = put_synopsis(f, k->name, k->args);
			if (col > 32)
				fprintf(f, "\n%34s%s\n", "", k->summary);
			else
				fprintf(f, "%*s%s\n", (int)(34 - col), "", k->summary);
		}
	fprintf(f, "exit status: 0 ok, 1 the remote operation failed, 2 usage, 3 cannot "
		   "connect.\n'reactorctl help COMMAND' shows a command's options and an "
		   "example.\n");
}

static void usage(FILE *f)
{
	fputs(GLOBAL_USAGE, f);
	list_commands(f);
}

static void cmd_help_print(const struct ctl_cmd *k, FILE *f)
{
	fprintf(f, "usage: reactorctl [OPTIONS] %s %s\n\n%s\n\n%s", k->name, k->args ? k->args : "",
		k->summary ? k->summary : "(alias)", k->help ? k->help : "");
}

/* Number of words of name matching argv[0..argc); 0 when not all do. */
static int match_words(const char *name, int argc, char **argv)
{
	int i = 0;
	const char *p = name;
	while (*p) {
		const char *sp = strchr(p, ' ');
		size_t n = sp ? (size_t)(sp - p) : strlen(p);
		if (i >= argc || strlen(argv[i]) != n || strncmp(argv[i], p, n) != 0)
			return 0;
		i++;
		p += n;
		while (*p == ' ')
			p++;
	}
	return i;
}

/* The command argv starts with (longest match), and its word count. */
static const struct ctl_cmd *find_cmd(int argc, char **argv, int *words)
{
	const struct ctl_cmd *best = NULL;
	*words = 0;
	for (size_t t = 0; t < ARRAY_LEN(tables); t++)
		for (const struct ctl_cmd *k = tables[t]; k->name; k++) {
			int w = match_words(k->name, argc, argv);
			if (w > *words) {
				*words = w;
				best = k;
			}
		}
	return best;
}

/* argv[0] names a group ("cas"): list its commands on f; false if none. */
static bool list_group(const char *group, FILE *f)
{
	size_t gl = strlen(group);
	bool any = false;
	for (size_t t = 0; t < ARRAY_LEN(tables); t++)
		for (const struct ctl_cmd *k = tables[t]; k->name; k++)
			if (k->summary && strncmp(k->name, group, gl) == 0 && k->name[gl] == ' ') {
				if (!any)
					fprintf(f, "'%s' needs a sub-command:\n", group);
				any = true;
				fprintf(f, "  reactorctl %s %s\n      %s\n", k->name,
					k->args ? k->args : "", k->summary);
			}
	return any;
}

static int cmd_help(int argc, char **argv)
{
	if (argc == 0) {
		usage(stdout);
		return CTL_OK;
	}
	int w;
	const struct ctl_cmd *k = find_cmd(argc, argv, &w);
	if (k && w == argc) {
		cmd_help_print(k, stdout);
		return CTL_OK;
	}
	if (argc == 1 && list_group(argv[0], stdout))
		return CTL_OK;
	return ctl_err(CTL_USAGE, "no command '%s' (see reactorctl help)", argv[0]);
}

/* ---- errors ------------------------------------------------------------- */

int ctl_err(int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("reactorctl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return rc;
}

void ctl_info(struct ctl *c, const char *fmt, ...)
{
	if (!c->verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	fputs("reactorctl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

int ctl_usage(struct ctl *c)
{
	const struct ctl_cmd *k = c->cmd;
	if (k)
		fprintf(stderr, "usage: reactorctl [OPTIONS] %s %s\n(see reactorctl help %s)\n",
			k->name, k->args ? k->args : "", k->name);
	else
		fputs(GLOBAL_USAGE, stderr);
	return CTL_USAGE;
}

/* ---- connecting ----------------------------------------------------------- */

struct rc_client *ctl_client(struct ctl *c)
{
	if (c->cl)
		return c->cl;
	struct rc_target t;
	char *err = NULL;
	c->fail_rc = CTL_USAGE;
	if (rc_target_parse(c->target, rc_client_opts_tls(&c->copts), &t, &err) != 0) {
		ctl_err(0, "%s", err);
		free(err);
		return NULL;
	}
	/* The library would fail on these too, but exit 3 and the name of
	 * what is missing are ours to give. */
	bool nohost = false;
	int gai = 0;
	if (t.path) {
		struct stat st;
		if (stat(t.path, &st) != 0) {
			ctl_err(0, "cannot connect to %s: %s: %s", c->target, t.path,
				strerror(errno));
			nohost = true;
		}
	} else {
		struct addrinfo hints = {0}, *res;
		hints.ai_socktype = SOCK_STREAM;
		gai = getaddrinfo(t.host, t.port, &hints, &res);
		if (gai != 0) {
			ctl_err(0, "cannot connect to %s: %s: %s", c->target, t.host,
				gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
			nohost = true;
		} else {
			freeaddrinfo(res);
		}
	}
	rc_target_free(&t);
	if (nohost) {
		c->fail_rc = CTL_NOCONN;
		return NULL;
	}
	c->cl = rc_client_connect_opts(c->base, c->target, &c->copts, &err);
	if (!c->cl) {
		ctl_err(0, "%s", err);
		free(err);
		return NULL;
	}
	return c->cl;
}

int ctl_status(struct ctl *c, int code, const char *msg)
{
	if (code == GRPC_OK) {
		c->answered = true;
		return CTL_OK;
	}
	/* A connection that never worked: the client library says so
	 * ("cannot connect to TARGET: Connection refused"). */
	if (!c->answered && code == GRPC_UNAVAILABLE && msg &&
	    (strncmp(msg, "cannot connect to ", 18) == 0 || strncmp(msg, "cannot reach ", 13) == 0)) {
		ctl_err(0, "%s", msg);
		return CTL_NOCONN;
	}
	if (code != GRPC_UNAVAILABLE && code != GRPC_CANCELLED)
		c->answered = true;
	return ctl_err(CTL_FAIL, "%s: %s", grpc_code_name(code),
		       msg && *msg ? msg : "(no message)");
}

int ctl_unary(struct ctl *c, const char *path, const ProtobufCMessage *req,
	      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp)
{
	*resp = NULL;
	struct rc_client *cl = ctl_client(c);
	if (!cl)
		return c->fail_rc;
	char *msg = NULL;
	int code = rc_unary(cl, path, req, resp_desc, resp, &msg, c->timeout_us);
	int rv = ctl_status(c, code, msg);
	free(msg);
	if (rv != CTL_OK && *resp) {
		protobuf_c_message_free_unpacked(*resp, NULL);
		*resp = NULL;
	}
	return rv;
}

/* ---- call ----------------------------------------------------------------- */

struct raw_done {
	bool done;
	int code;
	char *msg;
};

static void raw_done_cb(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct raw_done *r = arg;
	r->done = true;
	r->code = code;
	r->msg = xstrdup(message);
}

static int cmd_call(struct ctl *c, int argc, char **argv)
{
	if (argc != 2 || argv[1][0] != '/')
		return ctl_usage(c);
	struct rc_client *cl = ctl_client(c);
	if (!cl)
		return c->fail_rc;
	struct raw_done r = {0};
	struct rc_call *k =
		rc_call_start(cl, argv[1], c->timeout_us, NULL, 0, NULL, raw_done_cb, &r);
	if (!k)
		return ctl_status(c, GRPC_UNAVAILABLE, "connection is closed");
	rc_call_send(k, (const uint8_t *)"", 0);
	rc_call_close_send(k);
	while (!r.done)
		event_base_loop(c->base, EVLOOP_ONCE);
	int rv;
	if (r.code == GRPC_OK) {
		c->answered = true;
		printf("OK: %s\n", r.msg);
		rv = CTL_OK;
	} else {
		rv = ctl_status(c, r.code, r.msg);
		if (rv == CTL_FAIL)
			printf("%s: %s\n", grpc_code_name(r.code), r.msg);
	}
	free(r.msg);
	return rv;
}

/* ---- main ----------------------------------------------------------------- */

enum { OPT_JSON = 0x2000, OPT_PROGRESS };

int main(int argc, char **argv)
{
	struct ctl c = {0};
	c.target = getenv("REACTOR_SERVER");
	if (!c.target || !*c.target)
		c.target = "127.0.0.1:50051";
	c.instance = "";
	c.timeout_us = 30 * 1000000LL;
	static const struct option longs[] = {
		RC_CLIENT_LONGOPTS,
		{"server", required_argument, NULL, 's'},
		{"instance", required_argument, NULL, 'i'},
		{"timeout", required_argument, NULL, 'T'},
		{"json", no_argument, NULL, OPT_JSON},
		{"progress", no_argument, NULL, OPT_PROGRESS},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int opt;
	/* "+": options end at the command; its own come after it. */
	while ((opt = getopt_long(argc, argv, "+s:i:T:vhV", longs, NULL)) != -1) {
		if (rc_client_opt(&c.copts, opt, optarg))
			continue;
		switch (opt) {
		case 's': c.target = optarg; break;
		case 'i': c.instance = optarg; break;
		case 'T':
			if (parse_duration_us(optarg, &c.timeout_us) != 0 || c.timeout_us < 0)
				return ctl_err(CTL_USAGE, "bad timeout '%s' (e.g. 10s, 500ms, 2m)",
					       optarg);
			c.timeout_set = true;
			break;
		case OPT_JSON: c.json = true; break;
		case OPT_PROGRESS: c.progress_now = true; break;
		case 'v': c.verbose++; break;
		case 'h': usage(stdout); return CTL_OK;
		case 'V': printf("reactorctl %s\n", PACKAGE_VERSION); return CTL_OK;
		default: fprintf(stderr, "(see reactorctl --help)\n"); return CTL_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return CTL_USAGE;
	}
	argc -= optind;
	argv += optind;
	if (strcmp(argv[0], "help") == 0)
		return cmd_help(argc - 1, argv + 1);
	int words;
	const struct ctl_cmd *k = find_cmd(argc, argv, &words);
	if (!k) {
		if (argc >= 1 && list_group(argv[0], stderr))
			return CTL_USAGE;
		return ctl_err(CTL_USAGE, "unknown command '%s' (see reactorctl help)", argv[0]);
	}
	c.cmd = k;
	/* The command's own arguments start at its last word. */
	argv += words - 1;
	argc -= words - 1;
	/* -h/--help and --json anywhere before "--". */
	int out = 1;
	bool dashdash = false;
	for (int i = 1; i < argc; i++) {
		if (!dashdash && strcmp(argv[i], "--") == 0)
			dashdash = true;
		if (!dashdash && (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)) {
			cmd_help_print(k, stdout);
			return CTL_OK;
		}
		if (!dashdash && strcmp(argv[i], "--json") == 0) {
			c.json = true;
			continue;
		}
		argv[out++] = argv[i];
	}
	argc = out;
	argv[argc] = NULL;

	rc_client_opts_env(&c.copts);
	char *ferr = NULL;
	if (rc_client_opts_check(&c.copts, &ferr) != 0) {
		ctl_err(0, "%s", ferr);
		free(ferr);
		return CTL_USAGE;
	}
	c.tty_out = isatty(STDOUT_FILENO);
	c.tty_err = isatty(STDERR_FILENO);
	const char *nc = getenv("NO_COLOR");
	c.colour = c.tty_out && !(nc && *nc) && !c.json;
	/* The client library logs connection events at info: noise for a
	 * command-line tool unless asked for. */
	log_set_level(c.verbose >= 2 ? LOG_DEBUG : c.verbose ? LOG_INFO : LOG_WARN);
	/* A server that hangs up (one refusing our certificate does) must
	 * cost a call, not the process. */
	signal(SIGPIPE, SIG_IGN);
	c.base = event_base_new();
	optind = 0;
	int rv = k->run(&c, argc, argv);
	fflush(stdout);
	if (c.cl)
		rc_client_free(c.cl);
	event_base_free(c.base);
	return rv;
}
