/*
 * worker_run.c - stage, run and collect one action for reactor-worker
 * (worker_run.h).  Layout of an action's scratch directory:
 *   DIR/root/    the input root; the command runs in root/working_directory
 *   DIR/stdout, DIR/stderr
 * Everything allocated while collecting outputs goes on one arena that is
 * freed when the ActionResult is packed, so the protobuf-c structs built
 * by hand here never need a walker of their own.
 */
#define _GNU_SOURCE /* close_range */
#include "cmd/worker/worker_run.h"

#include "core/child.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rpc/grpc.h"
#include "core/log.h"
#include "core/util.h"

#define MOD "worker"

/* Pre-v2.1 clients name outputs in output_files / output_directories and
 * expect symlinks in output_file_symlinks: those fields are deprecated,
 * not gone. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#define RE(x)	   BUILD__BAZEL__REMOTE__EXECUTION__V2__##x
#define URL_RESULT "type.googleapis.com/build.bazel.remote.execution.v2.ActionResult"

extern char **environ;

static volatile pid_t running_pgid;

void wrun_kill_running(void)
{
	pid_t p = running_pgid;
	if (p > 0)
		kill(-p, SIGKILL);
}

/* ---- arena ------------------------------------------------------------------------ */

struct arena {
	void **p;
	size_t n, cap;
};

static void *a_keep(struct arena *a, void *p)
{
	if (a->n == a->cap)
		a->p = xrealloc(a->p, (a->cap = a->cap * 2 + 64) * sizeof(*a->p));
	a->p[a->n++] = p;
	return p;
}

static void *a_zalloc(struct arena *a, size_t n)
{
	return a_keep(a, xcalloc(1, n ? n : 1));
}

static char *a_strdup(struct arena *a, const char *s)
{
	return a_keep(a, xstrdup(s));
}

static void a_free(struct arena *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->p[i]);
	free(a->p);
	a->p = NULL;
	a->n = a->cap = 0;
}

static PbDigest *a_digest(struct arena *a, const struct digest *d)
{
	PbDigest *pd = a_zalloc(a, sizeof(*pd));
	build__bazel__remote__execution__v2__digest__init(pd);
	pd->hash = a_strdup(a, d->hex);
	pd->size_bytes = d->size;
	return pd;
}

/* A growable array of pointers kept on the arena when done. */
struct vec {
	void **v;
	size_t n, cap;
};

static void vec_push(struct vec *v, void *p)
{
	if (v->n == v->cap)
		v->v = xrealloc(v->v, (v->cap = v->cap * 2 + 16) * sizeof(*v->v));
	v->v[v->n++] = p;
}

/* ---- files ---------------------------------------------------------------------- */

void wrun_rmtree(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return;
	if (!S_ISDIR(st.st_mode)) {
		unlink(path);
		return;
	}
	chmod(path, 0700);
	DIR *d = opendir(path);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			char *p = xasprintf("%s/%s", path, e->d_name);
			wrun_rmtree(p);
			free(p);
		}
		closedir(d);
	}
	rmdir(path);
}

/* A single path component from a Directory: no "/", not "." or "..". */
static bool good_name(const char *n)
{
	return n && *n && !strchr(n, '/') && strcmp(n, ".") && strcmp(n, "..");
}

/* A relative path without ".." components (outputs, working directory). */
static bool good_relpath(const char *p)
{
	if (!p || p[0] == '/')
		return false;
	for (const char *s = p; *s;) {
		size_t l = strcspn(s, "/");
		if (l == 2 && s[0] == '.' && s[1] == '.')
			return false;
		s += l + (s[l] == '/');
	}
	return true;
}

/* ---- staging ------------------------------------------------------------------ */

struct pend {
	struct digest d;
	char *path;
};

static int stage_inputs(struct wcas *cas, const struct digest *root, const char *dir, int *code,
			char **err)
{
	struct pend *level = xcalloc(1, sizeof(*level));
	size_t nlevel = 1;
	level[0].d = *root;
	level[0].path = xstrdup(dir);
	struct wcas_file *files = NULL;
	size_t nfiles = 0, capf = 0;
	int rc = 0;
	while (nlevel && rc == 0) {
		struct digest *ds = xcalloc(nlevel, sizeof(*ds));
		uint8_t **bufs = xcalloc(nlevel, sizeof(*bufs));
		size_t *lens = xcalloc(nlevel, sizeof(*lens));
		for (size_t i = 0; i < nlevel; i++)
			ds[i] = level[i].d;
		rc = wcas_read_many(cas, ds, nlevel, bufs, lens, err);
		struct pend *next = NULL;
		size_t nnext = 0, capn = 0;
		for (size_t i = 0; i < nlevel && rc == 0; i++) {
			PbDirectory *pd = build__bazel__remote__execution__v2__directory__unpack(
				NULL, lens[i], bufs[i]);
			if (!pd) {
				*err = xasprintf("input directory blobs/%s/%lld is not a valid "
						 "Directory message",
						 ds[i].hex, (long long)ds[i].size);
				rc = WCAS_MISSING - 1; /* invalid input */
				break;
			}
			for (size_t j = 0; j < pd->n_files && rc == 0; j++) {
				const PbFileNode *f = pd->files[j];
				struct digest fd;
				if (!good_name(f->name) || !f->digest ||
				    digest_parse(f->digest->hash, f->digest->size_bytes, &fd,
						 NULL)) {
					*err = xasprintf(
						"input directory %s has a bad file entry \"%s\"",
						ds[i].hex, f->name ? f->name : "");
					rc = WCAS_MISSING - 1;
					break;
				}
				if (nfiles == capf)
					files = xrealloc(files,
							 (capf = capf * 2 + 64) * sizeof(*files));
				files[nfiles].d = fd;
				files[nfiles].path = xasprintf("%s/%s", level[i].path, f->name);
				files[nfiles++].exec = f->is_executable;
			}
			for (size_t j = 0; j < pd->n_symlinks && rc == 0; j++) {
				const PbSymlinkNode *s = pd->symlinks[j];
				if (!good_name(s->name) || !s->target || !*s->target) {
					*err = xasprintf(
						"input directory %s has a bad symlink entry",
						ds[i].hex);
					rc = WCAS_MISSING - 1;
					break;
				}
				char *p = xasprintf("%s/%s", level[i].path, s->name);
				if (symlink(s->target, p) != 0) {
					*err = xasprintf("cannot create symlink %s: %s", p,
							 strerror(errno));
					rc = WCAS_EIO;
				}
				free(p);
			}
			for (size_t j = 0; j < pd->n_directories && rc == 0; j++) {
				const PbDirectoryNode *dn = pd->directories[j];
				struct digest dd;
				if (!good_name(dn->name) || !dn->digest ||
				    digest_parse(dn->digest->hash, dn->digest->size_bytes, &dd,
						 NULL)) {
					*err = xasprintf(
						"input directory %s has a bad directory entry",
						ds[i].hex);
					rc = WCAS_MISSING - 1;
					break;
				}
				char *p = xasprintf("%s/%s", level[i].path, dn->name);
				if (mkdir(p, 0755) != 0) {
					*err = xasprintf("cannot create %s: %s", p,
							 strerror(errno));
					free(p);
					rc = WCAS_EIO;
					break;
				}
				if (nnext == capn)
					next = xrealloc(next,
							(capn = capn * 2 + 16) * sizeof(*next));
				next[nnext].d = dd;
				next[nnext++].path = p;
			}
			build__bazel__remote__execution__v2__directory__free_unpacked(pd, NULL);
		}
		for (size_t i = 0; i < nlevel; i++) {
			free(bufs[i]);
			free(level[i].path);
		}
		free(bufs);
		free(lens);
		free(ds);
		free(level);
		level = next;
		nlevel = nnext;
		if (rc != 0) {
			for (size_t i = 0; i < nlevel; i++)
				free(level[i].path);
			nlevel = 0;
		}
	}
	free(level);
	if (rc == 0)
		rc = wcas_fetch_files(cas, files, nfiles, err);
	for (size_t i = 0; i < nfiles; i++)
		free(files[i].path);
	free(files);
	*code = rc == 0			 ? GRPC_OK
		: rc == WCAS_MISSING	 ? GRPC_FAILED_PRECONDITION
		: rc == WCAS_MISSING - 1 ? GRPC_INVALID_ARGUMENT
					 : GRPC_INTERNAL;
	return rc;
}

/* ---- running ---------------------------------------------------------------------- */

/* In the child: only async-signal-safe calls until exec. */
static void child(const char *cwd, int out, int err, char **argv, char **envp)
{
	/* The action dies with the worker, even when it is SIGKILLed. */
	child_prepare(SIGKILL, 0);
	dup2(out, 1);
	dup2(err, 2);
	close_range(3, ~0U, 0);
	if (chdir(cwd) != 0) {
		static const char m[] = "reactor-worker: cannot enter the working directory\n";
		if (write(2, m, sizeof m - 1) < 0)
			_exit(127);
		_exit(127);
	}
	environ = envp;
	execvp(argv[0], argv);
	int e = errno;
	static const char m[] = "reactor-worker: cannot execute ";
	if (write(2, m, sizeof m - 1) < 0 || write(2, argv[0], strlen(argv[0])) < 0 ||
	    write(2, ": ", 2) < 0 || write(2, strerror(e), strlen(strerror(e))) < 0 ||
	    write(2, "\n", 1) < 0)
		_exit(127);
	_exit(127);
}

enum run_end { RUN_EXITED, RUN_TIMEOUT, RUN_CANCELLED, RUN_FAILED };

static enum run_end run(const struct wrun_req *r, const char *cwd, const char *outp,
			const char *errp, int *exit_code, char **err)
{
	const PbCommand *cmd = r->command;
	int out = open(outp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int er = open(errp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0 || er < 0) {
		*err = xasprintf("cannot create stdout/stderr files: %s", strerror(errno));
		if (out >= 0)
			close(out);
		if (er >= 0)
			close(er);
		return RUN_FAILED;
	}
	char **argv = xcalloc(cmd->n_arguments + 1, sizeof(*argv));
	for (size_t i = 0; i < cmd->n_arguments; i++)
		argv[i] = cmd->arguments[i];
	char **envp = xcalloc(cmd->n_environment_variables + 1, sizeof(*envp));
	for (size_t i = 0; i < cmd->n_environment_variables; i++)
		envp[i] = xasprintf("%s=%s", cmd->environment_variables[i]->name,
				    cmd->environment_variables[i]->value);
	pid_t pid = fork();
	if (pid == 0)
		child(cwd, out, er, argv, envp);
	int fork_errno = errno;
	close(out);
	close(er);
	for (size_t i = 0; i < cmd->n_environment_variables; i++)
		free(envp[i]);
	free(envp);
	free(argv);
	if (pid < 0) {
		*err = xasprintf("fork: %s", strerror(fork_errno));
		return RUN_FAILED;
	}
	setpgid(pid, pid); /* either side may win the race */
	running_pgid = pid;
	int64_t start = mono_us(), next_beat = start + r->heartbeat_us;
	int64_t nap = 1000;
	enum run_end end = RUN_EXITED;
	int st = 0;
	for (;;) {
		pid_t w = waitpid(pid, &st, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			*err = xasprintf("waitpid: %s", strerror(errno));
			end = RUN_FAILED;
			kill(-pid, SIGKILL);
			break;
		}
		int64_t now = mono_us();
		if (end == RUN_EXITED && r->timeout_us > 0 && now - start >= r->timeout_us) {
			LOGI(MOD, "action timed out after %.1fs: killing it",
			     (double)(now - start) / 1e6);
			end = RUN_TIMEOUT;
			kill(-pid, SIGKILL);
		}
		if (end == RUN_EXITED && r->beat && now >= next_beat) {
			if (!r->beat(r->beat_arg)) {
				end = RUN_CANCELLED;
				kill(-pid, SIGKILL);
			}
			next_beat = mono_us() + r->heartbeat_us;
		}
		struct timespec ts = {0, (long)nap * 1000};
		nanosleep(&ts, NULL);
		if (nap < 20000)
			nap *= 2;
	}
	/* Background processes the command left behind go with it. */
	kill(-pid, SIGKILL);
	running_pgid = 0;
	if (end == RUN_EXITED)
		*exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	else
		*exit_code = -1;
	return end;
}

/* ---- outputs ------------------------------------------------------------------ */

struct collect {
	struct arena a;
	struct vec blobs; /* struct wcas_blob * */
	struct vec kids;  /* struct tree_kid * : children of the Tree being built */
	char *err;
};

struct tree_kid {
	struct digest d;
	uint8_t *data;
	size_t len;
};

static void add_blob(struct collect *c, const struct digest *d, const char *path,
		     const uint8_t *data)
{
	struct wcas_blob *b = a_zalloc(&c->a, sizeof(*b));
	b->d = *d;
	b->path = path;
	b->data = data;
	vec_push(&c->blobs, b);
}

static int name_cmp(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int skip_dots(const struct dirent *e)
{
	return strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
}

/* Pack the Directory at path (recursively adding its subdirectories to
 * c->kids and its files to c->blobs).  Returns 0 or -1 with c->err. */
static int pack_dir(struct collect *c, const char *path, uint8_t **data, size_t *len,
		    struct digest *d)
{
	struct dirent **ents = NULL;
	int n = scandir(path, &ents, skip_dots, name_cmp);
	if (n < 0) {
		c->err = xasprintf("cannot read output directory %s: %s", path, strerror(errno));
		return -1;
	}
	PbDirectory dir = RE(DIRECTORY__INIT);
	struct vec files = {0}, dirs = {0}, links = {0};
	int rc = 0;
	for (int i = 0; i < n && rc == 0; i++) {
		char *p = a_keep(&c->a, xasprintf("%s/%s", path, ents[i]->d_name));
		struct stat st;
		if (lstat(p, &st) != 0)
			continue;
		char *name = a_strdup(&c->a, ents[i]->d_name);
		if (S_ISREG(st.st_mode)) {
			struct digest fd;
			if (wcas_digest_file(p, &fd) != 0) {
				c->err = xasprintf("cannot read output %s: %s", p, strerror(errno));
				rc = -1;
				break;
			}
			PbFileNode *f = a_zalloc(&c->a, sizeof(*f));
			build__bazel__remote__execution__v2__file_node__init(f);
			f->name = name;
			f->digest = a_digest(&c->a, &fd);
			f->is_executable = (st.st_mode & S_IXUSR) != 0;
			vec_push(&files, f);
			add_blob(c, &fd, p, NULL);
		} else if (S_ISDIR(st.st_mode)) {
			uint8_t *kd;
			size_t kl;
			struct digest dd;
			if (pack_dir(c, p, &kd, &kl, &dd) != 0) {
				rc = -1;
				break;
			}
			bool dup = false;
			for (size_t j = 0; j < c->kids.n && !dup; j++)
				dup = digest_eq(&((struct tree_kid *)c->kids.v[j])->d, &dd);
			if (!dup) {
				struct tree_kid *k = a_zalloc(&c->a, sizeof(*k));
				k->d = dd;
				k->data = kd;
				k->len = kl;
				vec_push(&c->kids, k);
			}
			PbDirectoryNode *dn = a_zalloc(&c->a, sizeof(*dn));
			build__bazel__remote__execution__v2__directory_node__init(dn);
			dn->name = name;
			dn->digest = a_digest(&c->a, &dd);
			vec_push(&dirs, dn);
		} else if (S_ISLNK(st.st_mode)) {
			char *t = a_zalloc(&c->a, (size_t)st.st_size + 2);
			ssize_t tl = readlink(p, t, (size_t)st.st_size + 1);
			if (tl < 0 || tl > st.st_size)
				continue;
			PbSymlinkNode *s = a_zalloc(&c->a, sizeof(*s));
			build__bazel__remote__execution__v2__symlink_node__init(s);
			s->name = name;
			s->target = t;
			vec_push(&links, s);
		}
	}
	for (int i = 0; i < n; i++)
		free(ents[i]);
	free(ents);
	if (rc == 0) {
		dir.n_files = files.n;
		dir.files = (void *)files.v;
		dir.n_directories = dirs.n;
		dir.directories = (void *)dirs.v;
		dir.n_symlinks = links.n;
		dir.symlinks = (void *)links.v;
		*len = protobuf_c_message_get_packed_size(&dir.base);
		*data = a_zalloc(&c->a, *len);
		protobuf_c_message_pack(&dir.base, *data);
		digest_of(*data, *len, d);
	}
	free(files.v);
	free(dirs.v);
	free(links.v);
	return rc;
}

/* Tree{root = 1, children = 2}, encoded by hand from packed Directories. */
static int tree_of(struct collect *c, const char *path, struct digest *td)
{
	c->kids.n = 0;
	uint8_t *root;
	size_t rlen;
	struct digest rd;
	if (pack_dir(c, path, &root, &rlen, &rd) != 0)
		return -1;
	size_t total = 11 + rlen;
	for (size_t i = 0; i < c->kids.n; i++)
		total += 11 + ((struct tree_kid *)c->kids.v[i])->len;
	uint8_t *t = a_zalloc(&c->a, total), *p = t;
	*p++ = 0x0a;
	p += pb_varint_put(p, rlen);
	memcpy(p, root, rlen);
	p += rlen;
	for (size_t i = 0; i < c->kids.n; i++) {
		struct tree_kid *k = c->kids.v[i];
		*p++ = 0x12;
		p += pb_varint_put(p, k->len);
		memcpy(p, k->data, k->len);
		p += k->len;
	}
	digest_of(t, (size_t)(p - t), td);
	add_blob(c, td, NULL, t);
	return 0;
}

static Google__Protobuf__Timestamp *a_ts(struct arena *a, int64_t us)
{
	Google__Protobuf__Timestamp *t = a_zalloc(a, sizeof(*t));
	google__protobuf__timestamp__init(t);
	t->seconds = us / 1000000;
	t->nanos = (int32_t)(us % 1000000) * 1000;
	return t;
}

/* One output path (relative to the working directory). */
static int collect_one(struct collect *c, const char *cwd, const char *rel, int want,
		       struct vec *ofiles, struct vec *odirs, struct vec *olinks)
{
	char *p = a_keep(&c->a, xasprintf("%s/%s", cwd, rel));
	struct stat st;
	if (lstat(p, &st) != 0)
		return 0; /* not produced: the client decides */
	if (S_ISLNK(st.st_mode) && want != 0) {
		/* Legacy output_files / output_directories follow symlinks. */
		if (stat(p, &st) != 0)
			return 0;
	}
	if (S_ISLNK(st.st_mode)) {
		char *t = a_zalloc(&c->a, (size_t)st.st_size + 2);
		ssize_t tl = readlink(p, t, (size_t)st.st_size + 1);
		if (tl < 0 || tl > st.st_size)
			return 0;
		PbOutputSymlink *s = a_zalloc(&c->a, sizeof(*s));
		build__bazel__remote__execution__v2__output_symlink__init(s);
		s->path = a_strdup(&c->a, rel);
		s->target = t;
		vec_push(olinks, s);
	} else if (S_ISREG(st.st_mode) && want != 2) {
		struct digest d;
		if (wcas_digest_file(p, &d) != 0) {
			c->err = xasprintf("cannot read output %s: %s", rel, strerror(errno));
			return -1;
		}
		PbOutputFile *f = a_zalloc(&c->a, sizeof(*f));
		build__bazel__remote__execution__v2__output_file__init(f);
		f->path = a_strdup(&c->a, rel);
		f->digest = a_digest(&c->a, &d);
		f->is_executable = (st.st_mode & S_IXUSR) != 0;
		vec_push(ofiles, f);
		add_blob(c, &d, p, NULL);
	} else if (S_ISDIR(st.st_mode) && want != 1) {
		struct digest td;
		if (tree_of(c, p, &td) != 0)
			return -1;
		PbOutputDirectory *o = a_zalloc(&c->a, sizeof(*o));
		build__bazel__remote__execution__v2__output_directory__init(o);
		o->path = a_strdup(&c->a, rel);
		o->tree_digest = a_digest(&c->a, &td);
		vec_push(odirs, o);
	}
	return 0;
}

/* ---- the whole action ------------------------------------------------------- */

static void set_out(struct wrun_out *o, int code, char *msg)
{
	o->code = code;
	free(o->message);
	o->message = msg;
}

void wrun_action(const struct wrun_req *r, struct wrun_out *out)
{
	const PbCommand *cmd = r->command;
	memset(out, 0, sizeof(*out));
	out->code = GRPC_OK;
	int64_t t_start = now_us();
	char *root = xasprintf("%s/root", r->dir);
	char *outp = xasprintf("%s/stdout", r->dir);
	char *errp = xasprintf("%s/stderr", r->dir);
	const char *wd = cmd->working_directory ? cmd->working_directory : "";
	char *cwd = *wd ? xasprintf("%s/%s", root, wd) : xstrdup(root);
	char *err = NULL;
	struct collect c = {0};

	wrun_rmtree(r->dir);
	if (mkdir_p(r->dir, 0755) != 0 || mkdir(root, 0755) != 0) {
		set_out(out, GRPC_INTERNAL,
			xasprintf("cannot create the action directory %s: %s", r->dir,
				  strerror(errno)));
		goto done;
	}
	if (cmd->n_arguments == 0 || !good_relpath(wd)) {
		set_out(out, GRPC_INVALID_ARGUMENT,
			xstrdup(cmd->n_arguments == 0 ? "the Command has no arguments"
						      : "bad working_directory in the Command"));
		goto done;
	}

	/* Stage. */
	struct digest rootd;
	if (!r->action->input_root_digest ||
	    digest_parse(r->action->input_root_digest->hash,
			 r->action->input_root_digest->size_bytes, &rootd, NULL)) {
		set_out(out, GRPC_INVALID_ARGUMENT,
			xstrdup("the Action has no valid input_root_digest"));
		goto done;
	}
	int64_t t_fetch = now_us();
	int code;
	if (stage_inputs(r->cas, &rootd, root, &code, &err) != 0) {
		set_out(out, code,
			code == GRPC_FAILED_PRECONDITION
				? xasprintf("missing input: %s", err)
				: xasprintf("cannot stage the input root: %s", err));
		goto done;
	}
	int64_t t_fetched = now_us();

	/* Parents of outputs (relative to the working directory). */
	bool legacy = cmd->n_output_paths == 0;
	size_t nouts =
		legacy ? cmd->n_output_files + cmd->n_output_directories : cmd->n_output_paths;
	for (size_t i = 0; i < nouts; i++) {
		const char *o = !legacy ? cmd->output_paths[i]
				: i < cmd->n_output_files
					? cmd->output_files[i]
					: cmd->output_directories[i - cmd->n_output_files];
		if (!good_relpath(o)) {
			set_out(out, GRPC_INVALID_ARGUMENT,
				xasprintf("bad output path \"%s\" in the Command", o));
			goto done;
		}
		char *p = xasprintf("%s/%s", cwd, o);
		char *slash = strrchr(p, '/');
		*slash = '\0';
		int mr = mkdir_p(p, 0755);
		free(p);
		if (mr != 0) {
			set_out(out, GRPC_INTERNAL,
				xasprintf("cannot create the parent of output %s: %s", o,
					  strerror(-mr)));
			goto done;
		}
	}
	int mr = mkdir_p(cwd, 0755);
	if (mr != 0) {
		set_out(out, GRPC_INTERNAL,
			xasprintf("cannot create the working directory: %s", strerror(-mr)));
		goto done;
	}

	/* Run. */
	int64_t t_exec = now_us();
	int exit_code = 0;
	enum run_end end = run(r, cwd, outp, errp, &exit_code, &err);
	int64_t t_execd = now_us();
	if (end == RUN_FAILED) {
		set_out(out, GRPC_INTERNAL, xasprintf("cannot run the command: %s", err));
		goto done;
	}
	if (end == RUN_CANCELLED) {
		set_out(out, GRPC_CANCELLED, xstrdup("the lease was cancelled"));
		goto done;
	}
	if (end == RUN_TIMEOUT)
		set_out(out, GRPC_DEADLINE_EXCEEDED,
			xasprintf("the action ran longer than its timeout of %.3fs and was killed",
				  (double)r->timeout_us / 1e6));

	/* Collect. */
	int64_t t_up = now_us();
	struct vec ofiles = {0}, odirs = {0}, olinks = {0};
	int crc = 0;
	for (size_t i = 0; i < nouts && crc == 0 && end == RUN_EXITED; i++) {
		const char *o;
		int want = 0;
		if (!legacy) {
			o = cmd->output_paths[i];
		} else if (i < cmd->n_output_files) {
			o = cmd->output_files[i];
			want = 1;
		} else {
			o = cmd->output_directories[i - cmd->n_output_files];
			want = 2;
		}
		crc = collect_one(&c, cwd, o, want, &ofiles, &odirs, &olinks);
	}
	struct digest sod, sed;
	if (crc == 0 && (wcas_digest_file(outp, &sod) != 0 || wcas_digest_file(errp, &sed) != 0)) {
		c.err = xasprintf("cannot read stdout/stderr: %s", strerror(errno));
		crc = -1;
	}
	if (crc == 0) {
		add_blob(&c, &sod, outp, NULL);
		add_blob(&c, &sed, errp, NULL);
		/* c.blobs holds pointers; wcas_upload wants an array of structs. */
		struct wcas_blob *arr = xcalloc(c.blobs.n ? c.blobs.n : 1, sizeof(*arr));
		for (size_t i = 0; i < c.blobs.n; i++)
			arr[i] = *(struct wcas_blob *)c.blobs.v[i];
		crc = wcas_upload(r->cas, arr, c.blobs.n, &c.err);
		free(arr);
	}
	if (crc != 0) {
		set_out(out, GRPC_UNAVAILABLE,
			xasprintf("cannot upload the outputs: %s", c.err ? c.err : "error"));
	} else {
		PbActionResult ar = RE(ACTION_RESULT__INIT);
		PbExecutedActionMetadata md = RE(EXECUTED_ACTION_METADATA__INIT);
		ar.exit_code = exit_code;
		ar.n_output_files = ofiles.n;
		ar.output_files = (void *)ofiles.v;
		ar.n_output_directories = odirs.n;
		ar.output_directories = (void *)odirs.v;
		if (legacy) {
			ar.n_output_file_symlinks = olinks.n;
			ar.output_file_symlinks = (void *)olinks.v;
		} else {
			ar.n_output_symlinks = olinks.n;
			ar.output_symlinks = (void *)olinks.v;
		}
		ar.stdout_digest = a_digest(&c.a, &sod);
		ar.stderr_digest = a_digest(&c.a, &sed);
		md.worker = (char *)r->worker;
		int64_t t_done = now_us();
		md.queued_timestamp = a_ts(&c.a, r->queued_us ? r->queued_us : t_start);
		md.worker_start_timestamp = a_ts(&c.a, t_start);
		md.input_fetch_start_timestamp = a_ts(&c.a, t_fetch);
		md.input_fetch_completed_timestamp = a_ts(&c.a, t_fetched);
		md.execution_start_timestamp = a_ts(&c.a, t_exec);
		md.execution_completed_timestamp = a_ts(&c.a, t_execd);
		md.output_upload_start_timestamp = a_ts(&c.a, t_up);
		md.output_upload_completed_timestamp = a_ts(&c.a, t_done);
		md.worker_completed_timestamp = a_ts(&c.a, t_done);
		ar.execution_metadata = &md;
		out->result_len = protobuf_c_message_get_packed_size(&ar.base);
		out->result = xmalloc(out->result_len ? out->result_len : 1);
		protobuf_c_message_pack(&ar.base, out->result);
	}
	free(ofiles.v);
	free(odirs.v);
	free(olinks.v);
done:
	free(c.blobs.v);
	free(c.kids.v);
	free(c.err);
	a_free(&c.a);
	free(err);
	wrun_rmtree(r->dir);
	free(root);
	free(outp);
	free(errp);
	free(cwd);
}

void wrun_out_free(struct wrun_out *o)
{
	free(o->message);
	free(o->result);
	o->message = NULL;
	o->result = NULL;
}
