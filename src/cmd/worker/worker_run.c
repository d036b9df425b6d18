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

#include "cmd/worker/sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmd/worker/worker_path.h"
#include "domain/dirtree.h"
#include "rpc/grpc.h"
#include "core/log.h"
#include "core/util.h"

#define MOD "worker"

/* Pre-v2.1 clients name outputs in output_files / output_directories and
 * expect symlinks in output_file_symlinks: those fields are deprecated,
 * not gone. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
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

/* ---- staging ------------------------------------------------------------------ */

/* stage_* results besides 0 and the WCAS_* codes: the input tree itself
 * is malformed (INVALID_ARGUMENT). */
#define STAGE_INVALID (WCAS_MISSING - 1)

struct pend {
	struct digest d;
	char *path; /* relative to the input root; "" for the root */
};

struct link {
	char *path, *target;
};

/* The input tree, staged one level of directories at a time beneath the
 * root's fd: every Directory is validated (dirtree_check_dir) before
 * anything of it is created; directories are made as they come, files
 * are fetched at the end (in batches) and symlinks are created after
 * everything else, so no input symlink can redirect a later write. */
struct stage {
	int root;
	unsigned flags; /* DIRTREE_* */
	struct wcas_file *files;
	size_t nfiles, capf;
	struct link *links;
	size_t nlinks, capl;
	struct pend *next;
	size_t nnext, capn;
	char **err;
};

static char *join_rel(const char *dir, const char *name)
{
	return *dir ? xasprintf("%s/%s", dir, name) : xstrdup(name);
}

/* One Directory blob d found at path: checked, its subdirectories made
 * and queued with its files and symlinks. */
static int stage_dir(struct stage *s, const uint8_t *buf, size_t len, const struct digest *d,
		     const char *path)
{
	PbDirectory *pd = build__bazel__remote__execution__v2__directory__unpack(NULL, len, buf);
	if (!pd) {
		*s->err = xasprintf("input tree: \"%s\": blobs/%s/%lld is not a valid Directory "
				    "message",
				    *path ? path : ".", d->hex, (long long)d->size);
		return STAGE_INVALID;
	}
	int rc = 0, dfd = -1;
	if (dirtree_check_dir(pd, buf, len, path, s->flags, s->err) != 0) {
		rc = STAGE_INVALID;
		goto out;
	}
	if (pd->n_directories &&
	    (dfd = wpath_open(s->root, path, O_PATH | O_DIRECTORY, 0, WPATH_NO_SYMLINKS)) < 0) {
		*s->err = xasprintf("cannot open %s: %s", *path ? path : ".", wpath_strerror(dfd));
		rc = WCAS_EIO;
		goto out;
	}
	for (size_t j = 0; j < pd->n_directories && rc == 0; j++) {
		const PbDirectoryNode *dn = pd->directories[j];
		char *p = join_rel(path, dn->name);
		if (mkdirat(dfd, dn->name, 0755) != 0) {
			*s->err = xasprintf("cannot create %s: %s", p, strerror(errno));
			free(p);
			rc = WCAS_EIO;
			break;
		}
		if (s->nnext == s->capn)
			s->next =
				xrealloc(s->next, (s->capn = s->capn * 2 + 16) * sizeof(*s->next));
		/* dirtree_check_dir checked the digest. */
		if (digest_parse(dn->digest->hash, dn->digest->size_bytes, &s->next[s->nnext].d,
				 NULL) != 0)
			abort();
		s->next[s->nnext++].path = p;
	}
	if (dfd >= 0)
		close(dfd);
	for (size_t j = 0; j < pd->n_files && rc == 0; j++) {
		const PbFileNode *f = pd->files[j];
		if (s->nfiles == s->capf)
			s->files = xrealloc(s->files,
					    (s->capf = s->capf * 2 + 64) * sizeof(*s->files));
		if (digest_parse(f->digest->hash, f->digest->size_bytes, &s->files[s->nfiles].d,
				 NULL) != 0)
			abort();
		s->files[s->nfiles].path = join_rel(path, f->name);
		s->files[s->nfiles++].exec = f->is_executable;
	}
	for (size_t j = 0; j < pd->n_symlinks && rc == 0; j++) {
		if (s->nlinks == s->capl)
			s->links = xrealloc(s->links,
					    (s->capl = s->capl * 2 + 16) * sizeof(*s->links));
		s->links[s->nlinks].path = join_rel(path, pd->symlinks[j]->name);
		s->links[s->nlinks++].target = xstrdup(pd->symlinks[j]->target);
	}
out:
	build__bazel__remote__execution__v2__directory__free_unpacked(pd, NULL);
	return rc;
}

/* Read one level's Directory blobs in one batch and stage each; the next
 * level lands in s->next.  Frees the level. */
static int stage_level(struct wcas *cas, struct stage *s, struct pend *level, size_t nlevel)
{
	struct digest *ds = xcalloc(nlevel, sizeof(*ds));
	uint8_t **bufs = xcalloc(nlevel, sizeof(*bufs));
	size_t *lens = xcalloc(nlevel, sizeof(*lens));
	for (size_t i = 0; i < nlevel; i++)
		ds[i] = level[i].d;
	int rc = wcas_read_many(cas, ds, nlevel, bufs, lens, s->err);
	for (size_t i = 0; i < nlevel && rc == 0; i++)
		rc = stage_dir(s, bufs[i], lens[i], &ds[i], level[i].path);
	for (size_t i = 0; i < nlevel; i++) {
		free(bufs[i]);
		free(level[i].path);
	}
	free(bufs);
	free(lens);
	free(ds);
	free(level);
	return rc;
}

/* The symlinks, last: each made in its parent, opened beneath the root
 * through no symlink. */
static int stage_links(struct stage *s)
{
	for (size_t i = 0; i < s->nlinks; i++) {
		const char *p = s->links[i].path;
		const char *slash = strrchr(p, '/');
		char *parent = slash ? xstrndup(p, (size_t)(slash - p)) : xstrdup("");
		int dfd = wpath_open(s->root, parent, O_PATH | O_DIRECTORY, 0, WPATH_NO_SYMLINKS);
		int rc = 0;
		if (dfd < 0) {
			*s->err = xasprintf("cannot open %s: %s", *parent ? parent : ".",
					    wpath_strerror(dfd));
			rc = WCAS_EIO;
		} else {
			if (symlinkat(s->links[i].target, dfd, slash ? slash + 1 : p) != 0) {
				*s->err = xasprintf("cannot create symlink %s: %s", p,
						    strerror(errno));
				rc = WCAS_EIO;
			}
			close(dfd);
		}
		free(parent);
		if (rc)
			return rc;
	}
	return 0;
}

/* Materialize the input root `root` in the directory fd rootfd.  Returns
 * 0 or a WCAS_* / STAGE_INVALID code with *err, and the lease status for
 * it in *code. */
static int stage_inputs(struct wcas *cas, const struct digest *root, int rootfd, int *code,
			char **err)
{
	struct stage s = {
		.root = rootfd,
		.flags = cas->absolute_symlinks ? DIRTREE_ABSOLUTE_SYMLINKS : 0,
		.err = err,
	};
	struct pend *level = xcalloc(1, sizeof(*level));
	size_t nlevel = 1;
	level[0].d = *root;
	level[0].path = xstrdup("");
	int rc = 0;
	while (nlevel && rc == 0) {
		s.next = NULL;
		s.nnext = s.capn = 0;
		rc = stage_level(cas, &s, level, nlevel);
		level = s.next;
		nlevel = s.nnext;
	}
	for (size_t i = 0; i < nlevel; i++)
		free(level[i].path);
	free(level);
	if (rc == 0)
		rc = wcas_fetch_files(cas, rootfd, s.files, s.nfiles, err);
	if (rc == 0)
		rc = stage_links(&s);
	for (size_t i = 0; i < s.nfiles; i++)
		free(s.files[i].path);
	free(s.files);
	for (size_t i = 0; i < s.nlinks; i++) {
		free(s.links[i].path);
		free(s.links[i].target);
	}
	free(s.links);
	*code = rc == 0		      ? GRPC_OK
		: rc == WCAS_MISSING  ? GRPC_FAILED_PRECONDITION
		: rc == STAGE_INVALID ? GRPC_INVALID_ARGUMENT
				      : GRPC_INTERNAL;
	return rc;
}

/* ---- running ---------------------------------------------------------------------- */

/* In the child: only async-signal-safe calls until exec (sandbox.h). */
static void child(const struct sandbox *sb, const char *cwd, int out, int err, char **argv,
		  char **envp, pid_t parent)
{
	/* The action dies with the worker, even when it is SIGKILLed. */
	sandbox_exec_child(sb, cwd, out, err, argv, envp, parent);
}

enum run_end { RUN_EXITED, RUN_TIMEOUT, RUN_CANCELLED, RUN_FAILED };

static enum run_end run(const struct wrun_req *r, const char *root, const char *cwd,
			const char *outp, const char *errp, int *exit_code, char **err)
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
	bool net = sandbox_net_requested(r->action, cmd);
	char **argv = sandbox_argv(r->sandbox, root, cwd, net, cmd->arguments, cmd->n_arguments);
	char **envp = xcalloc(cmd->n_environment_variables + 1, sizeof(*envp));
	for (size_t i = 0; i < cmd->n_environment_variables; i++)
		envp[i] = xasprintf("%s=%s", cmd->environment_variables[i]->name,
				    cmd->environment_variables[i]->value);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0)
		child(r->sandbox, cwd, out, er, argv, envp, parent);
	int fork_errno = errno;
	close(out);
	close(er);
	for (size_t i = 0; i < cmd->n_environment_variables; i++)
		free(envp[i]);
	free(envp);
	sandbox_argv_free(argv);
	if (pid < 0) {
		*err = xasprintf("fork: %s", strerror(fork_errno));
		return RUN_FAILED;
	}
	setpgid(pid, pid); /* either side may win the race */
	running_pgid = pid;
	int64_t start = mono_us(), next_beat = start + r->heartbeat_us;
	int64_t nap = 1000;
	/* Woken when the command exits; without pidfds, naps growing to 20 ms. */
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
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
		if (pidfd >= 0) {
			/* Until the command exits or the next beat or deadline. */
			int64_t until = end == RUN_EXITED && r->beat ? next_beat : now + 1000000;
			if (end == RUN_EXITED && r->timeout_us > 0 && start + r->timeout_us < until)
				until = start + r->timeout_us;
			int ms = until > now ? (int)((until - now + 999) / 1000) : 0;
			struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
			poll(&pfd, 1, ms > 1000 ? 1000 : ms);
			continue;
		}
		struct timespec ts = {0, (long)nap * 1000};
		nanosleep(&ts, NULL);
		if (nap < 20000)
			nap *= 2;
	}
	if (pidfd >= 0)
		close(pidfd);
	/* Background processes the command left behind go with it; with
	 * bwrap, the whole pid namespace (sandbox_reap): nothing of the
	 * action runs while its outputs are collected. */
	kill(-pid, SIGKILL);
	sandbox_reap();
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
	int root;	  /* the exec root's fd: every output is resolved beneath it */
	bool abs_links;	  /* absolute output symlink targets are allowed */
	int code;	  /* the status for err when it is the action's fault, or 0 */
	char *err;
};

struct tree_kid {
	struct digest d;
	uint8_t *data;
	size_t len;
};

/* A blob to upload: in memory, or the file at path (beneath the directory
 * fd at, or AT_FDCWD for one of our own absolute paths). */
static void add_blob(struct collect *c, const struct digest *d, int at, const char *path,
		     const uint8_t *data)
{
	struct wcas_blob *b = a_zalloc(&c->a, sizeof(*b));
	b->d = *d;
	b->at = at;
	b->path = path;
	b->data = data;
	vec_push(&c->blobs, b);
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in the directory fd dfd, sorted, on the arena; -1 with errno. */
static int list_dir(struct collect *c, int dfd, char ***names, size_t *n)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	struct vec v = {0};
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			vec_push(&v, a_strdup(&c->a, e->d_name));
	closedir(d);
	if (v.n)
		qsort(v.v, v.n, sizeof(*v.v), str_cmp);
	*names = (char **)a_keep(&c->a, v.v);
	*n = v.n;
	return 0;
}

/* A regular file `name` in dfd, opened without following a symlink or
 * blocking on a FIFO put there: digest and executable bit.  1 when it is
 * a regular file, 0 when it is not (or is gone), -1 with errno. */
static int digest_at(int dfd, const char *name, struct digest *d, bool *exec)
{
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ELOOP ? 0 : -1;
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) != 0)
		rc = -1;
	else if (S_ISREG(st.st_mode))
		rc = wcas_digest_fd(fd, d) == 0 ? 1 : -1;
	*exec = rc > 0 && (st.st_mode & S_IXUSR) != 0;
	int e = errno;
	close(fd);
	errno = e;
	return rc;
}

/* The target of symlink `name` in dfd, on the arena (NULL if it is gone),
 * checked against the absolute-path strategy: -1 with c->err when refused. */
static int link_at(struct collect *c, int dfd, const char *name, const char *rel, off_t size,
		   char **target)
{
	char *t = a_zalloc(&c->a, (size_t)size + 2);
	ssize_t tl = readlinkat(dfd, name, t, (size_t)size + 1);
	*target = tl < 0 || tl > size ? NULL : t;
	if (*target && *t == '/' && !c->abs_links) {
		c->code = GRPC_FAILED_PRECONDITION;
		c->err = xasprintf("output \"%s\" is a symlink to the absolute path \"%s\", and "
				   "this server's symlink_absolute_path_strategy is DISALLOWED",
				   rel, t);
		return -1;
	}
	return 0;
}

/* Pack the Directory open as dfd, at rel beneath the exec root
 * (recursively adding its subdirectories to c->kids and its files to
 * c->blobs).  Nothing is followed: subdirectories are opened O_NOFOLLOW,
 * symlinks become SymlinkNodes.  Returns 0 or -1 with c->err. */
static int pack_dir(struct collect *c, int dfd, const char *rel, uint8_t **data, size_t *len,
		    struct digest *d)
{
	char **names;
	size_t n;
	if (list_dir(c, dfd, &names, &n) != 0) {
		c->err = xasprintf("cannot read output directory %s: %s", rel, strerror(errno));
		return -1;
	}
	PbDirectory dir = REV2(DIRECTORY__INIT);
	struct vec files = {0}, dirs = {0}, links = {0};
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		char *name = names[i];
		char *p = a_keep(&c->a, join_rel(rel, name));
		struct stat st;
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		if (S_ISREG(st.st_mode)) {
			struct digest fd;
			bool exec;
			int got = digest_at(dfd, name, &fd, &exec);
			if (got < 0) {
				c->err = xasprintf("cannot read output %s: %s", p, strerror(errno));
				rc = -1;
				break;
			}
			if (got == 0)
				continue;
			PbFileNode *f = a_zalloc(&c->a, sizeof(*f));
			build__bazel__remote__execution__v2__file_node__init(f);
			f->name = name;
			f->digest = a_digest(&c->a, &fd);
			f->is_executable = exec;
			vec_push(&files, f);
			add_blob(c, &fd, c->root, p, NULL);
		} else if (S_ISDIR(st.st_mode)) {
			uint8_t *kd;
			size_t kl;
			struct digest dd;
			int sub =
				openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0) {
				c->err = xasprintf("cannot read output directory %s: %s", p,
						   strerror(errno));
				rc = -1;
				break;
			}
			rc = pack_dir(c, sub, p, &kd, &kl, &dd);
			close(sub);
			if (rc != 0)
				break;
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
			char *t;
			if (link_at(c, dfd, name, p, st.st_size, &t) != 0) {
				rc = -1;
				break;
			}
			if (!t)
				continue;
			PbSymlinkNode *s = a_zalloc(&c->a, sizeof(*s));
			build__bazel__remote__execution__v2__symlink_node__init(s);
			s->name = name;
			s->target = t;
			vec_push(&links, s);
		}
	}
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
static int tree_of(struct collect *c, int dfd, const char *rel, struct digest *td)
{
	c->kids.n = 0;
	uint8_t *root;
	size_t rlen;
	struct digest rd;
	if (pack_dir(c, dfd, rel, &root, &rlen, &rd) != 0)
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
	add_blob(c, td, AT_FDCWD, NULL, t);
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

/* Where an output lives: its parent directory opened beneath the exec
 * root (following only symlinks that stay beneath it) and its last
 * component.  Returns the fd, -1 when the output was not produced (no
 * such parent), or -2 with c->err. */
static int output_parent(struct collect *c, const char *full, const char *rel, const char **base)
{
	const char *slash = strrchr(full, '/');
	char *parent = slash ? xstrndup(full, (size_t)(slash - full)) : xstrdup("");
	*base = slash ? slash + 1 : full;
	int fd = wpath_open(c->root, parent, O_PATH | O_DIRECTORY, 0, WPATH_BENEATH);
	if (fd == -ENOENT || fd == -ENOTDIR) {
		fd = -1;
	} else if (fd < 0) {
		if (fd == -EXDEV || fd == -ELOOP)
			c->code = GRPC_FAILED_PRECONDITION;
		c->err = xasprintf("output \"%s\": \"%s\" %s", rel, *parent ? parent : ".",
				   wpath_strerror(fd));
		fd = -2;
	}
	free(parent);
	return fd;
}

/* One output path rel (relative to the working directory wd): *want is 0
 * for an output_paths entry, 1 for a file, 2 for a directory.  A symlink
 * is reported as one (in olinks, or odlinks for a legacy directory),
 * never followed. */
static int collect_one(struct collect *c, const char *wd, const char *rel, int want,
		       struct vec *ofiles, struct vec *odirs, struct vec *olinks,
		       struct vec *odlinks)
{
	char *full = a_keep(&c->a, !*rel ? xstrdup(wd) : join_rel(wd, rel));
	int pfd;
	const char *base;
	struct stat st;
	if (!*full) {
		/* The whole exec root (an empty output directory path). */
		pfd = openat(c->root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
		base = ".";
	} else {
		pfd = output_parent(c, full, rel, &base);
	}
	if (pfd == -1)
		return 0; /* not produced: the client decides */
	if (pfd < 0)
		return -1;
	int rc = 0;
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) != 0) {
		/* not produced */
	} else if (S_ISLNK(st.st_mode)) {
		char *t;
		rc = link_at(c, pfd, base, rel, st.st_size, &t);
		if (rc == 0 && t) {
			PbOutputSymlink *s = a_zalloc(&c->a, sizeof(*s));
			build__bazel__remote__execution__v2__output_symlink__init(s);
			s->path = a_strdup(&c->a, rel);
			s->target = t;
			vec_push(want == 2 ? odlinks : olinks, s);
		}
	} else if (S_ISREG(st.st_mode) && want != 2) {
		struct digest d;
		bool exec;
		int got = digest_at(pfd, base, &d, &exec);
		if (got < 0) {
			c->err = xasprintf("cannot read output %s: %s", rel, strerror(errno));
			rc = -1;
		} else if (got > 0) {
			PbOutputFile *f = a_zalloc(&c->a, sizeof(*f));
			build__bazel__remote__execution__v2__output_file__init(f);
			f->path = a_strdup(&c->a, rel);
			f->digest = a_digest(&c->a, &d);
			f->is_executable = exec;
			vec_push(ofiles, f);
			add_blob(c, &d, c->root, full, NULL);
		}
	} else if (S_ISDIR(st.st_mode) && want != 1) {
		struct digest td;
		int dfd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dfd < 0) {
			c->err = xasprintf("cannot read output directory %s: %s", rel,
					   strerror(errno));
			rc = -1;
		} else {
			rc = tree_of(c, dfd, full, &td);
			close(dfd);
		}
		if (rc == 0) {
			PbOutputDirectory *o = a_zalloc(&c->a, sizeof(*o));
			build__bazel__remote__execution__v2__output_directory__init(o);
			o->path = a_strdup(&c->a, rel);
			o->tree_digest = a_digest(&c->a, &td);
			vec_push(odirs, o);
		}
	}
	close(pfd);
	return rc;
}

/* ---- the whole action ------------------------------------------------------- */

static void set_out(struct wrun_out *o, int code, char *msg)
{
	o->code = code;
	free(o->message);
	o->message = msg;
}

/* Where an action stands: its paths and the metadata timestamps. */
struct action {
	const struct wrun_req *r;
	const PbCommand *cmd;
	char *root, *outp, *errp, *cwd;
	const char *wd; /* working_directory, relative to root */
	int rootfd;	/* root, once it exists: paths are resolved beneath it */
	bool legacy;	/* outputs in output_files/output_directories */
	size_t nouts;	/* output paths of either kind */
	int exit_code;
	int64_t t_start, t_fetch, t_fetched, t_exec, t_execd, t_up;
};

/* Output i of the Command (relative to the working directory); *want is
 * 0 for an output_paths entry, 1 for a file, 2 for a directory; field
 * gets its name in the Command, e.g. "output_paths[3]". */
static const char *output_at(const struct action *x, size_t i, int *want, char *field,
			     size_t fieldsz)
{
	const PbCommand *cmd = x->cmd;
	if (!x->legacy) {
		*want = 0;
		snprintf(field, fieldsz, "output_paths[%zu]", i);
		return cmd->output_paths[i];
	}
	if (i < cmd->n_output_files) {
		*want = 1;
		snprintf(field, fieldsz, "output_files[%zu]", i);
		return cmd->output_files[i];
	}
	*want = 2;
	snprintf(field, fieldsz, "output_directories[%zu]", i - cmd->n_output_files);
	return cmd->output_directories[i - cmd->n_output_files];
}

/* The Command's paths, lexically: relative, no "." / ".." / empty
 * component (an empty output directory or output path means the working
 * directory itself, as REAPI allows). */
static int check_paths(struct action *x, struct wrun_out *out)
{
	char *msg = NULL;
	int rc = dirtree_check_relpath("working_directory", x->wd, true, &msg);
	for (size_t i = 0; i < x->nouts && rc == 0; i++) {
		int want;
		char field[64];
		const char *o = output_at(x, i, &want, field, sizeof field);
		rc = dirtree_check_relpath(field, o, want != 1, &msg);
	}
	if (rc != 0) {
		set_out(out, GRPC_INVALID_ARGUMENT, xasprintf("bad Command: %s", msg));
		free(msg);
		return -1;
	}
	return 0;
}

/* A fresh scratch directory and a Command that can run in it. */
static int prepare(struct action *x, struct wrun_out *out)
{
	const struct wrun_req *r = x->r;
	wrun_rmtree(r->dir);
	if (mkdir_p(r->dir, 0755) != 0 || mkdir(x->root, 0755) != 0) {
		set_out(out, GRPC_INTERNAL,
			xasprintf("cannot create the action directory %s: %s", r->dir,
				  strerror(errno)));
		return -1;
	}
	if (x->cmd->n_arguments == 0) {
		set_out(out, GRPC_INVALID_ARGUMENT, xstrdup("the Command has no arguments"));
		return -1;
	}
	return check_paths(x, out);
}

/* The input root, staged under x->root. */
static int stage(struct action *x, struct wrun_out *out)
{
	const PbAction *action = x->r->action;
	struct digest rootd;
	if (!action->input_root_digest ||
	    digest_parse(action->input_root_digest->hash, action->input_root_digest->size_bytes,
			 &rootd, NULL)) {
		set_out(out, GRPC_INVALID_ARGUMENT,
			xstrdup("the Action has no valid input_root_digest"));
		return -1;
	}
	x->t_fetch = now_us();
	x->rootfd = open(x->root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (x->rootfd < 0) {
		set_out(out, GRPC_INTERNAL,
			xasprintf("cannot open %s: %s", x->root, strerror(errno)));
		return -1;
	}
	int code;
	char *err = NULL;
	int rc = stage_inputs(x->r->cas, &rootd, x->rootfd, &code, &err);
	if (rc != 0)
		set_out(out, code,
			code == GRPC_FAILED_PRECONDITION ? xasprintf("missing input: %s", err)
			: code == GRPC_INVALID_ARGUMENT
				? xstrdup(err)
				: xasprintf("cannot stage the input root: %s", err));
	free(err);
	x->t_fetched = now_us();
	return rc ? -1 : 0;
}

/* The working directory and the parents of the outputs, which the
 * command may expect to exist: made beneath the exec root, so an input
 * symlink on the way that leads out of it stops the action here
 * (FAILED_PRECONDITION) before anything is created there. */
static int make_output_dirs(struct action *x, struct wrun_out *out)
{
	char *bad = NULL;
	int mr = wpath_mkdirs(x->rootfd, x->wd, &bad);
	if (mr != 0) {
		set_out(out,
			mr == -EXDEV || mr == -ELOOP ? GRPC_FAILED_PRECONDITION : GRPC_INTERNAL,
			xasprintf("cannot create the working_directory \"%s\": \"%s\" %s", x->wd,
				  *bad ? bad : ".", wpath_strerror(mr)));
		free(bad);
		return -1;
	}
	for (size_t i = 0; i < x->nouts; i++) {
		int want;
		char field[64];
		const char *o = output_at(x, i, &want, field, sizeof field);
		char *p = *o ? join_rel(x->wd, o) : xstrdup(x->wd);
		char *slash = strrchr(p, '/');
		if (*o)
			*(slash ? slash : p) = '\0';
		mr = wpath_mkdirs(x->rootfd, p, &bad);
		free(p);
		if (mr != 0) {
			set_out(out,
				mr == -EXDEV || mr == -ELOOP ? GRPC_FAILED_PRECONDITION
							     : GRPC_INTERNAL,
				xasprintf("cannot create the parent of %s \"%s\": \"%s\" %s", field,
					  o, *bad ? bad : ".", wpath_strerror(mr)));
			free(bad);
			return -1;
		}
	}
	return 0;
}

/* Run the command.  0 when it exited (or timed out: the status says so,
 * and no outputs are collected), -1 when there is nothing to report. */
static int execute(struct action *x, enum run_end *end, struct wrun_out *out)
{
	char *err = NULL;
	/* The action's user owns its exec root (when the worker is root). */
	int gr = sandbox_give(x->r->sandbox, x->root);
	if (gr != 0) {
		set_out(out, GRPC_INTERNAL,
			xasprintf("cannot hand the exec root to the action's user: %s",
				  strerror(-gr)));
		return -1;
	}
	x->t_exec = now_us();
	*end = run(x->r, x->root, x->cwd, x->outp, x->errp, &x->exit_code, &err);
	x->t_execd = now_us();
	int rc = 0;
	if (*end == RUN_FAILED) {
		set_out(out, GRPC_INTERNAL, xasprintf("cannot run the command: %s", err));
		rc = -1;
	} else if (*end == RUN_CANCELLED) {
		set_out(out, GRPC_CANCELLED, xstrdup("the lease was cancelled"));
		rc = -1;
	} else if (*end == RUN_TIMEOUT) {
		set_out(out, GRPC_DEADLINE_EXCEEDED,
			xasprintf("the action ran longer than its timeout of %.3fs and was killed",
				  (double)x->r->timeout_us / 1e6));
	}
	free(err);
	return rc;
}

/* What the command left: the output entries of the ActionResult
 * (dlinks: symlinks at legacy output_directories paths). */
struct outputs {
	struct vec files, dirs, links, dlinks;
	struct digest out, err; /* stdout, stderr */
};

/* Collect the outputs (none after a timeout) and stdout/stderr, and
 * upload every blob they need.  Returns 0 or -1 with c->err. */
static int collect_and_upload(struct action *x, struct collect *c, bool outputs_too,
			      struct outputs *o)
{
	int crc = 0;
	c->root = x->rootfd;
	c->abs_links = x->r->cas->absolute_symlinks;
	for (size_t i = 0; i < x->nouts && crc == 0 && outputs_too; i++) {
		int want;
		char field[64];
		const char *p = output_at(x, i, &want, field, sizeof field);
		crc = collect_one(c, x->wd, p, want, &o->files, &o->dirs, &o->links, &o->dlinks);
	}
	if (crc == 0 &&
	    (wcas_digest_file(x->outp, &o->out) != 0 || wcas_digest_file(x->errp, &o->err) != 0)) {
		c->err = xasprintf("cannot read stdout/stderr: %s", strerror(errno));
		crc = -1;
	}
	if (crc == 0) {
		add_blob(c, &o->out, AT_FDCWD, x->outp, NULL);
		add_blob(c, &o->err, AT_FDCWD, x->errp, NULL);
		/* c->blobs holds pointers; wcas_upload wants an array of structs. */
		struct wcas_blob *arr = xcalloc(c->blobs.n ? c->blobs.n : 1, sizeof(*arr));
		for (size_t i = 0; i < c->blobs.n; i++)
			arr[i] = *(struct wcas_blob *)c->blobs.v[i];
		crc = wcas_upload(x->r->cas, arr, c->blobs.n, &c->err);
		free(arr);
	}
	return crc;
}

/* The packed ActionResult, with the metadata timestamps, into out. */
static void pack_result(struct action *x, struct collect *c, struct outputs *o,
			struct wrun_out *out)
{
	PbActionResult ar = REV2(ACTION_RESULT__INIT);
	PbExecutedActionMetadata md = REV2(EXECUTED_ACTION_METADATA__INIT);
	ar.exit_code = x->exit_code;
	ar.n_output_files = o->files.n;
	ar.output_files = (void *)o->files.v;
	ar.n_output_directories = o->dirs.n;
	ar.output_directories = (void *)o->dirs.v;
	if (x->legacy) {
		ar.n_output_file_symlinks = o->links.n;
		ar.output_file_symlinks = (void *)o->links.v;
		ar.n_output_directory_symlinks = o->dlinks.n;
		ar.output_directory_symlinks = (void *)o->dlinks.v;
	} else {
		ar.n_output_symlinks = o->links.n;
		ar.output_symlinks = (void *)o->links.v;
	}
	ar.stdout_digest = a_digest(&c->a, &o->out);
	ar.stderr_digest = a_digest(&c->a, &o->err);
	md.worker = (char *)x->r->worker;
	int64_t t_done = now_us();
	md.queued_timestamp = a_ts(&c->a, x->r->queued_us ? x->r->queued_us : x->t_start);
	md.worker_start_timestamp = a_ts(&c->a, x->t_start);
	md.input_fetch_start_timestamp = a_ts(&c->a, x->t_fetch);
	md.input_fetch_completed_timestamp = a_ts(&c->a, x->t_fetched);
	md.execution_start_timestamp = a_ts(&c->a, x->t_exec);
	md.execution_completed_timestamp = a_ts(&c->a, x->t_execd);
	md.output_upload_start_timestamp = a_ts(&c->a, x->t_up);
	md.output_upload_completed_timestamp = a_ts(&c->a, t_done);
	md.worker_completed_timestamp = a_ts(&c->a, t_done);
	ar.execution_metadata = &md;
	out->result_len = protobuf_c_message_get_packed_size(&ar.base);
	out->result = xmalloc(out->result_len ? out->result_len : 1);
	protobuf_c_message_pack(&ar.base, out->result);
}

void wrun_action(const struct wrun_req *r, struct wrun_out *out)
{
	memset(out, 0, sizeof(*out));
	out->code = GRPC_OK;
	const PbCommand *cmd = r->command;
	const char *wd = cmd->working_directory ? cmd->working_directory : "";
	struct action x = {
		.r = r,
		.cmd = cmd,
		.root = xasprintf("%s/root", r->dir),
		.outp = xasprintf("%s/stdout", r->dir),
		.errp = xasprintf("%s/stderr", r->dir),
		.legacy = cmd->n_output_paths == 0,
		.t_start = now_us(),
		.wd = wd,
		.rootfd = -1,
	};
	x.cwd = *wd ? xasprintf("%s/%s", x.root, wd) : xstrdup(x.root);
	x.nouts = x.legacy ? cmd->n_output_files + cmd->n_output_directories : cmd->n_output_paths;
	struct collect c = {0};
	struct outputs o = {0};
	enum run_end end;
	if (prepare(&x, out) == 0 && stage(&x, out) == 0 && make_output_dirs(&x, out) == 0 &&
	    execute(&x, &end, out) == 0) {
		x.t_up = now_us();
		if (collect_and_upload(&x, &c, end == RUN_EXITED, &o) != 0)
			set_out(out, c.code ? c.code : GRPC_UNAVAILABLE,
				c.code ? xstrdup(c.err)
				       : xasprintf("cannot upload the outputs: %s",
						   c.err ? c.err : "error"));
		else
			pack_result(&x, &c, &o, out);
	}
	free(o.files.v);
	free(o.dirs.v);
	free(o.links.v);
	free(o.dlinks.v);
	free(c.blobs.v);
	free(c.kids.v);
	free(c.err);
	a_free(&c.a);
	if (x.rootfd >= 0)
		close(x.rootfd);
	wrun_rmtree(r->dir);
	free(x.root);
	free(x.outp);
	free(x.errp);
	free(x.cwd);
}

void wrun_out_free(struct wrun_out *o)
{
	free(o->message);
	free(o->result);
	o->message = NULL;
	o->result = NULL;
}
