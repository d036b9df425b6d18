/*
 * ctl_exec.c - reactorctl exec: run one command remotely.  Builds the
 * Command and Action, uploads them and the input tree (only what the CAS
 * is missing, through ctl_cas.h), calls Execute and follows its stream of
 * Operations (stage changes on stderr), then downloads the outputs,
 * prints the action's stdout and stderr and exits with its exit code.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "cmd/reactorctl/ctl.h"
#include "cmd/reactorctl/ctl_cas.h"
#include "core/digest.h"
#include "google/longrunning/operations.pb-c.h"
#include "proto/pb.h"
#include "rpc/client.h"
#include "rpc/grpc.h"

#define EXECUTE "/build.bazel.remote.execution.v2.Execution/Execute"
#define DEFAULT_ACTION_PATH "/usr/local/bin:/usr/bin:/bin"

struct kv {
	char *k, *v;
};

static int kv_cmp(const void *a, const void *b)
{
	const struct kv *x = a, *y = b;
	int c = strcmp(x->k, y->k);
	return c ? c : strcmp(x->v, y->v);
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "K=V" into kv (pointing into arg, which is modified). */
static bool split_kv(char *arg, struct kv *kv)
{
	char *eq = strchr(arg, '=');
	if (!eq || eq == arg)
		return false;
	*eq = '\0';
	kv->k = arg;
	kv->v = eq + 1;
	return true;
}

/* The Execute stream: callbacks record; exec_run() looks after each pass. */
struct exec_wait {
	struct ctl *c;
	bool done;
	int code;
	char *msg;
	int stage;
	char *op_name;
	Google__Longrunning__Operation *last; /* the done one */
	bool bad;
};

static const char *stage_name(int s)
{
	const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
		&build__bazel__remote__execution__v2__execution_stage__value__descriptor, s);
	return v ? v->name : "?";
}

static void exec_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	(void)k;
	struct exec_wait *w = arg;
	Google__Longrunning__Operation *op = google__longrunning__operation__unpack(NULL, len, msg);
	if (!op) {
		w->bad = true;
		return;
	}
	if (!w->op_name && op->name && *op->name) {
		w->op_name = xstrdup(op->name);
		ctl_info(w->c, "operation %s", op->name);
	}
	if (op->metadata) {
		Build__Bazel__Remote__Execution__V2__ExecuteOperationMetadata *md =
			build__bazel__remote__execution__v2__execute_operation_metadata__unpack(
				NULL, op->metadata->value.len, op->metadata->value.data);
		if (md && (int)md->stage != w->stage) {
			w->stage = md->stage;
			if (w->c->tty_err || w->c->verbose)
				fprintf(stderr, "%sreactorctl: %s%s\n", ctl_col(w->c, CTL_DIM),
					stage_name(md->stage), ctl_col(w->c, CTL_RESET));
		}
		if (md)
			build__bazel__remote__execution__v2__execute_operation_metadata__free_unpacked(
				md, NULL);
	}
	if (op->done) {
		if (w->last)
			google__longrunning__operation__free_unpacked(w->last, NULL);
		w->last = op;
		return;
	}
	google__longrunning__operation__free_unpacked(op, NULL);
}

static void exec_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct exec_wait *w = arg;
	w->done = true;
	w->code = code;
	w->msg = xstrdup(message);
}

/* Write a blob given raw or by digest to fd. */
static int emit(struct ctl *c, const ProtobufCBinaryData *raw, const PbDigest *pd, int fd,
		const char *what)
{
	if (raw && raw->len) {
		if (write(fd, raw->data, raw->len) != (ssize_t)raw->len)
			return ctl_err(CTL_FAIL, "%s: %s", what, strerror(errno));
		return CTL_OK;
	}
	if (!pd || pd->size_bytes == 0)
		return CTL_OK;
	return cas_read_fd(c, pd->hash, pd->size_bytes, fd, what, false);
}

/* mkdir -p of path's parent directories. */
static int make_parents(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return 0;
	char *dir = xstrndup(path, (size_t)(slash - path));
	int rv = mkdir_p(dir, 0777);
	free(dir);
	return rv;
}

/* The outputs of r, under base. */
static int get_outputs(struct ctl *c, const PbActionResult *r, const char *base)
{
	int rv = CTL_OK;
	for (size_t i = 0; i < r->n_output_files && rv == CTL_OK; i++) {
		const PbOutputFile *f = r->output_files[i];
		char *p = xasprintf("%s/%s", base, f->path);
		struct digest d;
		char *err = NULL;
		if (make_parents(p) != 0) {
			rv = ctl_err(CTL_FAIL, "%s: %s", p, strerror(errno));
		} else if (!f->digest ||
			   digest_parse(f->digest->hash, f->digest->size_bytes, &d, &err) != 0) {
			rv = ctl_err(CTL_FAIL, "output %s: bad digest", f->path);
			free(err);
		} else {
			rv = cas_get_to_path(c, &d, p, f->is_executable, true);
		}
		free(p);
	}
	for (size_t i = 0; i < r->n_output_directories && rv == CTL_OK; i++) {
		const PbOutputDirectory *od = r->output_directories[i];
		char *p = xasprintf("%s/%s", base, od->path);
		struct digest d;
		char *err = NULL;
		if (make_parents(p) != 0) {
			rv = ctl_err(CTL_FAIL, "%s: %s", p, strerror(errno));
		} else if (!od->tree_digest ||
			   digest_parse(od->tree_digest->hash, od->tree_digest->size_bytes, &d,
					&err) != 0) {
			rv = ctl_err(CTL_FAIL, "output %s: bad digest", od->path);
			free(err);
		} else {
			uint8_t *buf;
			size_t len;
			rv = cas_read_mem(c, &d, &buf, &len);
			PbTree *t = rv == CTL_OK
					    ? build__bazel__remote__execution__v2__tree__unpack(
						      NULL, len, buf)
					    : NULL;
			if (rv == CTL_OK && (!t || !t->root))
				rv = ctl_err(CTL_FAIL, "output %s: not a Tree", od->path);
			if (rv == CTL_OK)
				rv = cas_tree_get(c, t->root, t->children, t->n_children, p);
			if (t)
				build__bazel__remote__execution__v2__tree__free_unpacked(t, NULL);
			if (rv == CTL_OK || buf)
				free(buf);
		}
		free(p);
	}
	for (size_t i = 0; i < r->n_output_symlinks && rv == CTL_OK; i++) {
		char *p = xasprintf("%s/%s", base, r->output_symlinks[i]->path);
		if (make_parents(p) != 0 || symlink(r->output_symlinks[i]->target, p) != 0)
			rv = ctl_err(CTL_FAIL, "%s: %s", p, strerror(errno));
		free(p);
	}
	return rv;
}

/* stdout/stderr for --json: raw, or read from the CAS when small. */
static void json_output(struct ctl *c, struct ctl_json *j, const char *key,
			const ProtobufCBinaryData *raw, const PbDigest *pd)
{
	if (raw->len) {
		ctl_json_key(j, key);
		ctl_json_strn(j, (const char *)raw->data, raw->len);
		return;
	}
	struct digest d;
	char *err = NULL;
	if (!pd || pd->size_bytes > (1 << 20) ||
	    digest_parse(pd->hash, pd->size_bytes, &d, &err) != 0) {
		free(err);
		return;
	}
	uint8_t *buf;
	size_t len;
	if (cas_read_mem(c, &d, &buf, &len) == CTL_OK) {
		ctl_json_key(j, key);
		ctl_json_strn(j, (const char *)buf, len);
	}
	free(buf);
}

static void result_json(struct ctl *c, const PbActionResult *r, bool cached, const char *op)
{
	struct ctl_json *j = ctl_json_new();
	char ds[DIGEST_HEX_LEN + 32];
	ctl_json_obj(j);
	ctl_json_kstr(j, "operation", op);
	ctl_json_kint(j, "exit_code", r->exit_code);
	ctl_json_kbool(j, "cached_result", cached);
	ctl_json_key(j, "output_files");
	ctl_json_arr(j);
	for (size_t i = 0; i < r->n_output_files; i++) {
		ctl_json_obj(j);
		ctl_json_kstr(j, "path", r->output_files[i]->path);
		if (r->output_files[i]->digest) {
			snprintf(ds, sizeof(ds), "%s/%" PRId64, r->output_files[i]->digest->hash,
				 r->output_files[i]->digest->size_bytes);
			ctl_json_kstr(j, "digest", ds);
		}
		ctl_json_kbool(j, "is_executable", r->output_files[i]->is_executable);
		ctl_json_end(j);
	}
	ctl_json_end(j);
	ctl_json_key(j, "output_directories");
	ctl_json_arr(j);
	for (size_t i = 0; i < r->n_output_directories; i++) {
		ctl_json_obj(j);
		ctl_json_kstr(j, "path", r->output_directories[i]->path);
		if (r->output_directories[i]->tree_digest) {
			snprintf(ds, sizeof(ds), "%s/%" PRId64,
				 r->output_directories[i]->tree_digest->hash,
				 r->output_directories[i]->tree_digest->size_bytes);
			ctl_json_kstr(j, "tree_digest", ds);
		}
		ctl_json_end(j);
	}
	ctl_json_end(j);
	if (r->stdout_digest) {
		snprintf(ds, sizeof(ds), "%s/%" PRId64, r->stdout_digest->hash,
			 r->stdout_digest->size_bytes);
		ctl_json_kstr(j, "stdout_digest", ds);
	}
	if (r->stderr_digest) {
		snprintf(ds, sizeof(ds), "%s/%" PRId64, r->stderr_digest->hash,
			 r->stderr_digest->size_bytes);
		ctl_json_kstr(j, "stderr_digest", ds);
	}
	json_output(c, j, "stdout", &r->stdout_raw, r->stdout_digest);
	json_output(c, j, "stderr", &r->stderr_raw, r->stderr_digest);
	if (r->execution_metadata)
		ctl_json_kstr(j, "worker", r->execution_metadata->worker);
	ctl_json_end(j);
	ctl_json_print(j);
}

/* Execute the action, follow it, and finish: the exit code. */
static int exec_run(struct ctl *c, const struct digest *action, bool no_cache, const char *base)
{
	struct rc_client *cl = ctl_client(c);
	if (!cl)
		return c->fail_rc;
	Build__Bazel__Remote__Execution__V2__ExecuteRequest req = REV2(EXECUTE_REQUEST__INIT);
	PbDigest ad = REV2(DIGEST__INIT);
	ad.hash = (char *)action->hex;
	ad.size_bytes = action->size;
	req.instance_name = (char *)c->instance;
	req.action_digest = &ad;
	req.skip_cache_lookup = no_cache;
	size_t n = build__bazel__remote__execution__v2__execute_request__get_packed_size(&req);
	uint8_t *pb = xmalloc(n ? n : 1);
	build__bazel__remote__execution__v2__execute_request__pack(&req, pb);
	struct exec_wait w = {.c = c, .stage = -1};
	struct rc_call *k = rc_call_start(cl, EXECUTE, c->timeout_set ? c->timeout_us : 0, NULL, 0,
					  exec_msg, exec_done, &w);
	if (!k) {
		free(pb);
		return ctl_status(c, GRPC_UNAVAILABLE, "connection is closed");
	}
	rc_call_send(k, pb, n);
	free(pb);
	rc_call_close_send(k);
	while (!w.done)
		event_base_loop(c->base, EVLOOP_ONCE);
	int rv;
	if (w.code != GRPC_OK) {
		rv = ctl_status(c, w.code, w.msg);
	} else if (!w.last) {
		rv = ctl_err(CTL_FAIL, "Execute ended without a finished operation%s",
			     w.bad ? " (a malformed Operation arrived)" : "");
	} else if (w.last->result_case == GOOGLE__LONGRUNNING__OPERATION__RESULT_ERROR) {
		const Google__Rpc__Status *st = w.last->error;
		rv = ctl_err(CTL_FAIL, "operation %s failed: %s: %s", w.op_name ? w.op_name : "",
			     grpc_code_name(st ? st->code : GRPC_UNKNOWN), st ? st->message : "");
	} else if (w.last->result_case != GOOGLE__LONGRUNNING__OPERATION__RESULT_RESPONSE) {
		rv = ctl_err(CTL_FAIL, "operation %s finished without a response",
			     w.op_name ? w.op_name : "");
	} else {
		Build__Bazel__Remote__Execution__V2__ExecuteResponse *er =
			build__bazel__remote__execution__v2__execute_response__unpack(
				NULL, w.last->response->value.len, w.last->response->value.data);
		if (!er) {
			rv = ctl_err(CTL_FAIL, "malformed ExecuteResponse");
		} else if (er->status && er->status->code != GRPC_OK) {
			rv = ctl_err(CTL_FAIL, "operation %s failed: %s: %s",
				     w.op_name ? w.op_name : "", grpc_code_name(er->status->code),
				     er->status->message);
			if (er->result && c->verbose)
				emit(c, &er->result->stderr_raw, er->result->stderr_digest,
				     STDERR_FILENO, "stderr");
		} else if (!er->result) {
			rv = ctl_err(CTL_FAIL, "operation %s: no ActionResult",
				     w.op_name ? w.op_name : "");
		} else {
			const PbActionResult *r = er->result;
			if (er->cached_result)
				ctl_info(c, "cached result");
			rv = get_outputs(c, r, base);
			if (rv == CTL_OK && c->json) {
				result_json(c, r, er->cached_result, w.op_name);
			} else if (rv == CTL_OK) {
				fflush(stdout);
				rv = emit(c, &r->stdout_raw, r->stdout_digest, STDOUT_FILENO,
					  "stdout");
				if (rv == CTL_OK)
					rv = emit(c, &r->stderr_raw, r->stderr_digest,
						  STDERR_FILENO, "stderr");
			}
			if (rv == CTL_OK)
				rv = r->exit_code & 0xff;
		}
		if (er)
			build__bazel__remote__execution__v2__execute_response__free_unpacked(er,
											     NULL);
	}
	if (w.last)
		google__longrunning__operation__free_unpacked(w.last, NULL);
	free(w.op_name);
	free(w.msg);
	return rv;
}

enum { OPT_PLATFORM = 0x4000, OPT_INPUT, OPT_OUTPUT, OPT_ACTION_TIMEOUT, OPT_NO_CACHE, OPT_ENV };

static int cmd_exec(struct ctl *c, int argc, char **argv)
{
	static const struct option longs[] = {
		{"platform", required_argument, NULL, OPT_PLATFORM},
		{"input", required_argument, NULL, OPT_INPUT},
		{"output", required_argument, NULL, OPT_OUTPUT},
		{"output-dir", required_argument, NULL, 'o'},
		{"timeout", required_argument, NULL, OPT_ACTION_TIMEOUT},
		{"no-cache", no_argument, NULL, OPT_NO_CACHE},
		{"env", required_argument, NULL, OPT_ENV},
		{NULL, 0, NULL, 0},
	};
	struct kv *plat = xcalloc((size_t)argc, sizeof(*plat));
	struct kv *env = xcalloc((size_t)argc + 1, sizeof(*env));
	char **outs = xcalloc((size_t)argc, sizeof(*outs));
	size_t nplat = 0, nenv = 0, nouts = 0;
	const char *input = NULL, *base = ".";
	int64_t action_timeout = 0;
	bool no_cache = false;
	int opt, rv = CTL_OK;
	/* "+": the command's own arguments are not ours. */
	while (rv == CTL_OK && (opt = getopt_long(argc, argv, "+o:", longs, NULL)) != -1) {
		switch (opt) {
		case OPT_PLATFORM:
			if (!split_kv(optarg, &plat[nplat++]))
				rv = ctl_err(CTL_USAGE, "--platform wants KEY=VALUE, not '%s'",
					     optarg);
			break;
		case OPT_ENV:
			if (!split_kv(optarg, &env[nenv++]))
				rv = ctl_err(CTL_USAGE, "--env wants NAME=VALUE, not '%s'", optarg);
			break;
		case OPT_INPUT: input = optarg; break;
		case OPT_OUTPUT: outs[nouts++] = optarg; break;
		case 'o': base = optarg; break;
		case OPT_ACTION_TIMEOUT:
			if (parse_duration_us(optarg, &action_timeout) != 0 || action_timeout < 0)
				rv = ctl_err(CTL_USAGE, "bad --timeout '%s' (e.g. 30s, 5m)",
					     optarg);
			break;
		case OPT_NO_CACHE: no_cache = true; break;
		default: rv = ctl_usage(c);
		}
	}
	if (rv == CTL_OK && optind >= argc)
		rv = ctl_usage(c);
	/* An action's environment is only what its Command lists.  Without a
	 * PATH, tools that find their helpers through it fail in ways that
	 * don't say so (gcc: "cannot execute 'cc1'"), so give the usual one
	 * unless --env names PATH. */
	bool has_path = false;
	for (size_t i = 0; rv == CTL_OK && i < nenv; i++)
		has_path |= strcmp(env[i].k, "PATH") == 0;
	if (rv == CTL_OK && !has_path) {
		env[nenv].k = (char *)"PATH";
		env[nenv++].v = (char *)DEFAULT_ACTION_PATH;
	}
	struct cas_blobs s = {0};
	struct digest root, cmd_d, act_d;
	if (rv == CTL_OK && input) {
		struct stat st;
		if (stat(input, &st) != 0 || !S_ISDIR(st.st_mode))
			rv = ctl_err(CTL_FAIL, "--input %s: %s", input,
				     errno && !S_ISDIR(st.st_mode) ? strerror(errno)
								   : "not a directory");
		else
			rv = cas_tree_build(c, input, &s, &root);
	} else if (rv == CTL_OK) {
		PbDirectory empty = REV2(DIRECTORY__INIT);
		(void)empty;
		digest_of("", 0, &root);
	}
	if (rv == CTL_OK) {
		PbCommand cmd = REV2(COMMAND__INIT);
		cmd.n_arguments = (size_t)(argc - optind);
		cmd.arguments = argv + optind;
		qsort(env, nenv, sizeof(*env), kv_cmp);
		Build__Bazel__Remote__Execution__V2__Command__EnvironmentVariable *ev =
			xcalloc(nenv ? nenv : 1, sizeof(*ev));
		Build__Bazel__Remote__Execution__V2__Command__EnvironmentVariable **evp =
			xcalloc(nenv ? nenv : 1, sizeof(*evp));
		for (size_t i = 0; i < nenv; i++) {
			build__bazel__remote__execution__v2__command__environment_variable__init(
				&ev[i]);
			ev[i].name = env[i].k;
			ev[i].value = env[i].v;
			evp[i] = &ev[i];
		}
		cmd.n_environment_variables = nenv;
		cmd.environment_variables = evp;
		qsort(outs, nouts, sizeof(*outs), str_cmp);
		cmd.n_output_paths = nouts;
		cmd.output_paths = outs;
		qsort(plat, nplat, sizeof(*plat), kv_cmp);
		PbPlatform pf = REV2(PLATFORM__INIT);
		PbPlatformProperty *pp = xcalloc(nplat ? nplat : 1, sizeof(*pp));
		PbPlatformProperty **ppp = xcalloc(nplat ? nplat : 1, sizeof(*ppp));
		for (size_t i = 0; i < nplat; i++) {
			build__bazel__remote__execution__v2__platform__property__init(&pp[i]);
			pp[i].name = plat[i].k;
			pp[i].value = plat[i].v;
			ppp[i] = &pp[i];
		}
		pf.n_properties = nplat;
		pf.properties = ppp;
/* Command.platform is deprecated in REAPI 2.2 but is where servers before
 * it (and reactord) read the platform; Action.platform gets it too. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
		if (nplat)
			cmd.platform = &pf;
#pragma GCC diagnostic pop
		size_t len = build__bazel__remote__execution__v2__command__get_packed_size(&cmd);
		uint8_t *buf = xmalloc(len ? len : 1);
		build__bazel__remote__execution__v2__command__pack(&cmd, buf);
		cas_blobs_mem(&s, buf, len, &cmd_d);

		PbAction act = REV2(ACTION__INIT);
		PbDigest cd = REV2(DIGEST__INIT), rd = REV2(DIGEST__INIT);
		cd.hash = cmd_d.hex;
		cd.size_bytes = cmd_d.size;
		rd.hash = root.hex;
		rd.size_bytes = root.size;
		act.command_digest = &cd;
		act.input_root_digest = &rd;
		act.do_not_cache = no_cache;
		Google__Protobuf__Duration to = GOOGLE__PROTOBUF__DURATION__INIT;
		if (action_timeout) {
			to.seconds = action_timeout / 1000000;
			to.nanos = (int32_t)(action_timeout % 1000000 * 1000);
			act.timeout = &to;
		}
		if (nplat)
			act.platform = &pf;
		len = build__bazel__remote__execution__v2__action__get_packed_size(&act);
		buf = xmalloc(len ? len : 1);
		build__bazel__remote__execution__v2__action__pack(&act, buf);
		cas_blobs_mem(&s, buf, len, &act_d);
		free(ev);
		free(evp);
		free(pp);
		free(ppp);
		int64_t sent = 0, bytes = 0;
		rv = cas_blobs_upload(c, &s, &sent, &bytes);
		char b[16];
		ctl_info(c, "action %s/%" PRId64 ": %" PRId64 " blobs uploaded (%s)", act_d.hex,
			 act_d.size, sent, ctl_bytes(b, sizeof(b), bytes));
	}
	cas_blobs_free(&s);
	if (rv == CTL_OK)
		rv = exec_run(c, &act_d, no_cache, base);
	free(plat);
	free(env);
	free(outs);
	return rv;
}

const struct ctl_cmd ctl_cmds_exec[] = {
	{"exec",
	 "[--platform K=V]... [--input DIR] [--output PATH]... [-o DIR] [--timeout DUR]\n"
	 "         [--no-cache] [--env K=V]... -- CMD [ARGS...]",
	 "run a command remotely and wait for it",
	 "Builds a Command (arguments, environment, output paths, platform) and an\n"
	 "Action (input root: the tree of --input DIR, else empty), uploads what the\n"
	 "CAS is missing, calls Execute and follows it (stage changes on stderr on a\n"
	 "terminal or with -v).  Then downloads the outputs (--output, relative to\n"
	 "the input root) under -o DIR (default: the current directory), prints the\n"
	 "command's stdout and stderr, and exits with its exit code.  A failed\n"
	 "operation exits 1 and names its status.  --timeout: the action's timeout.\n"
	 "--no-cache: neither look the action up in nor add it to the action cache.\n"
	 "--env: the action's environment; PATH is " DEFAULT_ACTION_PATH " unless given.\n"
	 "With --json: the ActionResult summary as one object instead of the output.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl exec --input src --output out/a.o -- cc -c -o out/a.o a.c\n",
	 cmd_exec},
	{0},
};
