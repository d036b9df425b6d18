/*
 * ctl.h - reactorctl's sub-command framework: the global options and
 * state every command shares (struct ctl), the command tables (struct
 * ctl_cmd; one array per file, each ending with an empty entry), the exit
 * codes scripts rely on, and the helpers commands need: the lazily
 * connected client, a unary call that prints "CODE: message" on failure
 * and returns the exit code, and the output helpers (aligned tables,
 * relative times, byte sizes, colour on a terminal only, a JSON writer for
 * --json and a progress bar for transfers).  main.c parses the global
 * options and runs a command; ctl_out.c holds the output helpers.
 */
#ifndef REACTOR_CTL_H
#define REACTOR_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <protobuf-c/protobuf-c.h>

#include "core/util.h"
#include "rpc/client.h"

struct event_base;

/* Exit codes. */
enum {
	CTL_OK = 0,	/* done; for queries: the answer is "yes" */
	CTL_FAIL = 1,	/* the remote operation failed (a gRPC status, a bad digest,
			   a local file that can't be read or written) */
	CTL_USAGE = 2,	/* bad command line, or a TLS/token file that can't be used */
	CTL_NOCONN = 3, /* cannot connect: refused, no such socket, unknown host */
};

struct ctl {
	/* Global options, as parsed by main.c. */
	const char *target;   /* -s: host:port, unix:PATH, grpcs://...  */
	const char *instance; /* -i: REAPI instance name, "" by default */
	int64_t timeout_us;   /* --timeout: deadline of each call (default 30 s) */
	bool timeout_set;     /* --timeout given: transfers get a deadline too */
	bool json;	      /* --json: machine-readable output on stdout */
	int verbose;	      /* -v count */
	bool tty_out;	      /* stdout is a terminal */
	bool tty_err;	      /* stderr is a terminal (progress bars, stage changes) */
	bool progress_now;    /* --progress: bars from the first byte, not after 1 s */
	bool colour;	      /* colour on stdout: a terminal and no $NO_COLOR */
	struct rc_client_opts copts;

	/* State. */
	struct event_base *base;
	struct rc_client *cl;	   /* NULL until ctl_client() */
	bool answered;		   /* a call on cl got an answer from the server */
	int fail_rc;		   /* why ctl_client() returned NULL: CTL_USAGE or CTL_NOCONN */
	const struct ctl_cmd *cmd; /* the command running */
};

/* One sub-command.  run() gets argv[0] = the command's last word and the
 * arguments after it; optind is reset (0) before it is called so it can
 * use getopt_long(3) right away.  "-h"/"--help" among the arguments
 * (before "--") never reach run(): main prints the help.  A "--json"
 * there sets c->json and is removed.  run() returns an exit code.
 * A command with summary NULL is a hidden alias (not listed). */
struct ctl_cmd {
	const char *name;    /* "caps", "cas put", "op ls" */
	const char *args;    /* synopsis of the arguments: "[-o PATH] DIGEST" */
	const char *summary; /* one line, for `reactorctl help` */
	const char *help;    /* what it does, its options, an example */
	int (*run)(struct ctl *c, int argc, char **argv);
};

/* The command tables, one per file; each ends with {0}. */
extern const struct ctl_cmd ctl_cmds_cas[];   /* ctl_cas.c: caps, health, cas ... */
extern const struct ctl_cmd ctl_cmds_exec[];  /* ctl_exec.c: exec */
extern const struct ctl_cmd ctl_cmds_ops[];   /* ctl_ops.c: op, ac, bot */
extern const struct ctl_cmd ctl_cmds_build[]; /* ctl_build.c: build ... */

/* ---- client and calls (main.c) ---------------------------------------- */

/* The connected client (connects on first use).  NULL when the target
 * can't be used: the cause is printed ("cannot connect to HOST:PORT: Name
 * or service not known", "cannot connect to unix:/x.sock: No such file or
 * directory", a TLS file error) and c->fail_rc says the exit code. */
struct rc_client *ctl_client(struct ctl *c);

/* Report a call's end: OK returns CTL_OK and prints nothing; otherwise
 * prints "reactorctl: CODE: message" on stderr and returns CTL_FAIL, or,
 * when the connection could never be made, "reactorctl: cannot connect to
 * TARGET: Connection refused" and CTL_NOCONN. */
int ctl_status(struct ctl *c, int code, const char *msg);

/* Synchronous unary call on ctl_client() with c->timeout_us: CTL_OK with
 * *resp (free with protobuf_c_message_free_unpacked(*resp, NULL)), or the
 * exit code (the error already printed, *resp NULL). */
int ctl_unary(struct ctl *c, const char *path, const ProtobufCMessage *req,
	      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp) WARN_UNUSED;

/* Print "usage: reactorctl NAME ARGS" and the help pointer on stderr;
 * returns CTL_USAGE.  For a bad option or argument count. */
int ctl_usage(struct ctl *c);
/* Print "reactorctl: " fmt on stderr; returns rc. */
int ctl_err(int rc, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* Log at -v: "reactorctl: " fmt on stderr when c->verbose. */
void ctl_info(struct ctl *c, const char *fmt, ...) PRINTF_LIKE(2, 3);

/* ---- output (ctl_out.c) ------------------------------------------------ */

/* Colours: the escape sequence when c->colour, else "". */
enum ctl_colour { CTL_RESET, CTL_BOLD, CTL_DIM, CTL_RED, CTL_GREEN, CTL_YELLOW, CTL_BLUE };
const char *ctl_col(const struct ctl *c, enum ctl_colour k);

/* "1.5 MiB", "512 B" into buf (at least 16 bytes); returns buf. */
const char *ctl_bytes(char *buf, size_t len, int64_t n);
/* when_us (wall clock, µs since the epoch) relative to now: "3m ago",
 * "in 5s", "just now", "-" for 0.  buf at least 32 bytes; returns buf. */
const char *ctl_reltime(char *buf, size_t len, int64_t when_us);
/* A duration: "850ms", "12s", "3m05s", "2h10m", "4d3h". */
const char *ctl_duration(char *buf, size_t len, int64_t us);

/* An aligned table: columns as wide as their widest cell (ANSI colour
 * sequences and UTF-8 continuation bytes don't count), a header row (in
 * bold on a terminal), two spaces between columns, the last one not
 * padded. */
struct ctl_table;
struct ctl_table *ctl_table_new(const struct ctl *c, size_t ncols, ...); /* ncols headers */
/* Add a row of ncols cells (copied; NULL prints "-"). */
void ctl_table_row(struct ctl_table *t, ...);
/* Add a row from a printf per cell: not needed often; ctl_table_row takes
 * strings.  Print to f and free the table. */
void ctl_table_print(struct ctl_table *t, FILE *f);

/* A JSON writer for --json: builds one document, ctl_json_print() writes
 * it to stdout with a newline and frees it.  Keys and separators are
 * handled: call ctl_json_key() before each value inside an object. */
struct ctl_json;
struct ctl_json *ctl_json_new(void);
void ctl_json_obj(struct ctl_json *j); /* { */
void ctl_json_arr(struct ctl_json *j); /* [ */
void ctl_json_end(struct ctl_json *j); /* } or ] */
void ctl_json_key(struct ctl_json *j, const char *k);
void ctl_json_str(struct ctl_json *j, const char *s); /* NULL: null */
void ctl_json_strn(struct ctl_json *j, const char *s, size_t n);
void ctl_json_int(struct ctl_json *j, int64_t v);
void ctl_json_bool(struct ctl_json *j, bool v);
void ctl_json_null(struct ctl_json *j);
/* Shorthands: key then value. */
void ctl_json_kstr(struct ctl_json *j, const char *k, const char *s);
void ctl_json_kint(struct ctl_json *j, const char *k, int64_t v);
void ctl_json_kbool(struct ctl_json *j, const char *k, bool v);
void ctl_json_print(struct ctl_json *j);

/* A progress bar on stderr for a transfer of `total` bytes (-1: unknown):
 * drawn only when stderr is a terminal, and only once the transfer has
 * taken more than a second (with --progress: from the first byte); bytes,
 * rate and ETA; erased at the end. */
struct ctl_progress {
	const struct ctl *c;
	const char *label;
	int64_t total, done;
	int64_t start_us, last_us;
	bool shown;
};
void ctl_progress_start(struct ctl_progress *p, const struct ctl *c, const char *label,
			int64_t total);
void ctl_progress_add(struct ctl_progress *p, int64_t n);
void ctl_progress_end(struct ctl_progress *p);

#endif
