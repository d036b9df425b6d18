/*
 * sandbox.c - the bubblewrap command line of an action, the switch to the
 * action's user, and the check at start that the sandbox works
 * (sandbox.h).
 */
#define _GNU_SOURCE /* close_range, setresuid */
#include "cmd/worker/sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/child.h"

extern char **environ;

/* Inside the sandbox the command is started by sh, so one that cannot be
 * executed exits 127 (126: not executable) with the shell's line on
 * stderr, as it would run directly; bwrap itself would exit 1. */
static const char shell_exec[] = "exec \"$0\" \"$@\"";

static void vpush(char ***v, size_t *n, const char *s)
{
	*v = xrealloc(*v, (*n + 2) * sizeof(**v));
	(*v)[(*n)++] = xstrdup(s);
	(*v)[*n] = NULL;
}

/* The read-only system: /usr and /etc bound, and each of the host's
 * /bin, /sbin, /lib* bound when it is a directory or recreated when it is
 * a symlink (merged /usr). */
static void build_sys(struct sandbox *sb)
{
	size_t n = 0;
	static const char *const fixed[] = {
		"--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
		"--unshare-uts",     "--ro-bind",     "/usr",	       "/usr"};
	for (size_t i = 0; i < ARRAY_LEN(fixed); i++)
		vpush(&sb->sys, &n, fixed[i]);
	static const char *const top[] = {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};
	for (size_t i = 0; i < ARRAY_LEN(top); i++) {
		struct stat st;
		if (lstat(top[i], &st) != 0)
			continue;
		if (S_ISLNK(st.st_mode)) {
			char t[PATH_MAX];
			ssize_t l = readlink(top[i], t, sizeof t - 1);
			if (l <= 0)
				continue;
			t[l] = '\0';
			vpush(&sb->sys, &n, "--symlink");
			vpush(&sb->sys, &n, t);
		} else if (S_ISDIR(st.st_mode)) {
			vpush(&sb->sys, &n, "--ro-bind");
			vpush(&sb->sys, &n, top[i]);
		} else {
			continue;
		}
		vpush(&sb->sys, &n, top[i]);
	}
	static const char *const rest[] = {"--ro-bind", "/etc", "/etc",	   "--proc", "/proc",
					   "--dev",	"/dev", "--tmpfs", "/tmp"};
	for (size_t i = 0; i < ARRAY_LEN(rest); i++)
		vpush(&sb->sys, &n, rest[i]);
}

/* run_as: USER, UID or UID:GID. */
static int parse_user(const char *s, uid_t *uid, gid_t *gid, char **err)
{
	char *end;
	errno = 0;
	unsigned long u = strtoul(s, &end, 10);
	if (end != s && (*end == '\0' || *end == ':') && errno == 0 && u < (uid_t)-1) {
		*uid = (uid_t)u;
		if (*end == ':') {
			const char *g = end + 1;
			unsigned long gv = strtoul(g, &end, 10);
			if (end == g || *end || gv >= (gid_t)-1) {
				*err = xasprintf("run-as %s: want USER, UID or UID:GID", s);
				return -1;
			}
			*gid = (gid_t)gv;
		} else {
			struct passwd *pw = getpwuid(*uid);
			*gid = pw ? pw->pw_gid : (gid_t)u;
		}
		return 0;
	}
	struct passwd *pw = getpwnam(s);
	if (!pw) {
		if (!strcmp(s, "nobody")) {
			*uid = 65534;
			*gid = 65534;
			return 0;
		}
		*err = xasprintf("run-as %s: no such user", s);
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

int sandbox_init(struct sandbox *sb, const char *mode, const char *bwrap, const char *run_as,
		 bool allow_net, char **err)
{
	memset(sb, 0, sizeof(*sb));
	sb->allow_net = allow_net;
	if (!mode || !strcmp(mode, "bwrap")) {
		sb->mode = SANDBOX_BWRAP;
	} else if (!strcmp(mode, "none")) {
		sb->mode = SANDBOX_NONE;
	} else {
		*err = xasprintf("sandbox %s: want bwrap or none", mode);
		return -1;
	}
	if (sb->mode == SANDBOX_BWRAP) {
		if (bwrap) {
			if (bwrap[0] != '/' || access(bwrap, X_OK) != 0) {
				*err = xasprintf("bwrap %s: %s (install bubblewrap, or choose "
						 "sandbox none explicitly)",
						 bwrap,
						 bwrap[0] != '/' ? "not an absolute path"
								 : strerror(errno));
				return -1;
			}
			sb->bwrap = xstrdup(bwrap);
		} else if (!(sb->bwrap = find_in_path("bwrap"))) {
			*err = xstrdup(
				"the sandbox is bwrap but there is no bwrap in PATH (install "
				"bubblewrap, give its path, or choose sandbox none "
				"explicitly)");
			return -1;
		}
		build_sys(sb);
	}
	uid_t me = geteuid();
	uid_t uid = me;
	gid_t gid = getegid();
	if (run_as || me == 0) {
		if (parse_user(run_as ? run_as : "nobody", &uid, &gid, err) != 0) {
			sandbox_free(sb);
			return -1;
		}
	}
	if (uid != me && me != 0) {
		*err = xasprintf("run-as %s: only a worker running as root can run actions as "
				 "another user",
				 run_as);
		sandbox_free(sb);
		return -1;
	}
	sb->uid = uid;
	sb->gid = gid;
	sb->drop = me == 0 && uid != 0;
	return 0;
}

void sandbox_free(struct sandbox *sb)
{
	free(sb->bwrap);
	sandbox_argv_free(sb->sys);
	sb->bwrap = NULL;
	sb->sys = NULL;
}

char *sandbox_describe(const struct sandbox *sb)
{
	char *who = xasprintf("actions run as uid %u gid %u%s", (unsigned)sb->uid,
			      (unsigned)sb->gid, sb->uid == 0 ? " (root)" : "");
	char *d;
	if (sb->mode == SANDBOX_BWRAP)
		d = xasprintf("sandbox bwrap (%s; network %s), %s", sb->bwrap,
			      sb->allow_net ? "for actions with network=on" : "never", who);
	else
		d = xasprintf("sandbox none (actions are not isolated; a process that calls "
			      "setsid can outlive its action), %s",
			      who);
	free(who);
	return d;
}

static bool platform_net(const PbPlatform *p)
{
	for (size_t i = 0; p && i < p->n_properties; i++)
		if (p->properties[i]->name && !strcmp(p->properties[i]->name, "network") &&
		    p->properties[i]->value && !strcmp(p->properties[i]->value, "on"))
			return true;
	return false;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
bool sandbox_net_requested(const PbAction *a, const PbCommand *c)
{
	if (a && a->platform)
		return platform_net(a->platform);
	return c && platform_net(c->platform);
}
#pragma GCC diagnostic pop

char **sandbox_argv(const struct sandbox *sb, const char *root, const char *cwd, bool net,
		    char *const *args, size_t nargs)
{
	char **v = NULL;
	size_t n = 0;
	if (sb->mode == SANDBOX_BWRAP) {
		vpush(&v, &n, sb->bwrap);
		for (char **s = sb->sys; *s; s++)
			vpush(&v, &n, *s);
		if (!(net && sb->allow_net))
			vpush(&v, &n, "--unshare-net");
		vpush(&v, &n, "--bind");
		vpush(&v, &n, root);
		vpush(&v, &n, root);
		vpush(&v, &n, "--remount-ro");
		vpush(&v, &n, "/");
		vpush(&v, &n, "--chdir");
		vpush(&v, &n, cwd);
		vpush(&v, &n, "--");
		vpush(&v, &n, "/bin/sh");
		vpush(&v, &n, "-c");
		vpush(&v, &n, shell_exec);
	}
	for (size_t i = 0; i < nargs; i++)
		vpush(&v, &n, args[i]);
	if (!v)
		v = xcalloc(1, sizeof(*v));
	return v;
}

void sandbox_argv_free(char **argv)
{
	for (char **s = argv; s && *s; s++)
		free(*s);
	free(argv);
}

static int give(const struct sandbox *sb, int at, const char *name)
{
	if (fchownat(at, name, sb->uid, sb->gid, AT_SYMLINK_NOFOLLOW) != 0)
		return -errno;
	int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOTDIR || errno == ELOOP ? 0 : -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		int e = errno;
		close(fd);
		return -e;
	}
	int rc = 0;
	struct dirent *e;
	while (rc == 0 && (e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			rc = give(sb, dirfd(d), e->d_name);
	closedir(d);
	return rc;
}

int sandbox_give(const struct sandbox *sb, const char *path)
{
	return sb->drop ? give(sb, AT_FDCWD, path) : 0;
}

static void say(int fd, const char *a, const char *b, const char *c)
{
	if (write(fd, a, strlen(a)) < 0 || write(fd, b, strlen(b)) < 0 ||
	    write(fd, c, strlen(c)) < 0)
		_exit(127);
}

void sandbox_exec_child(const struct sandbox *sb, const char *cwd, int out, int err, char **argv,
			char **envp, pid_t parent)
{
	dup2(out, 1);
	dup2(err, 2);
	close_range(3, ~0U, 0);
	/* Mode none enters the working directory as root, so its parents
	 * need not be open to the action's user. */
	if (chdir(sb->mode == SANDBOX_NONE ? cwd : "/") != 0) {
		say(2, "reactor-worker: cannot enter the working directory ", cwd, "\n");
		_exit(127);
	}
	if (sb->drop && (setgroups(0, NULL) != 0 || setresgid(sb->gid, sb->gid, sb->gid) != 0 ||
			 setresuid(sb->uid, sb->uid, sb->uid) != 0)) {
		say(2, "reactor-worker: cannot switch to the action's user: ", strerror(errno),
		    "\n");
		_exit(127);
	}
	/* After the switch: a change of credentials clears the parent-death
	 * signal. */
	if (child_prepare(SIGKILL, parent) != 0)
		_exit(127);
	environ = envp;
	execvp(argv[0], argv);
	int e = errno;
	say(2, "reactor-worker: cannot execute ", argv[0], ": ");
	say(2, strerror(e), "\n", "");
	_exit(127);
}

void sandbox_reap(void)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
	for (;;) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		FILE *f = fopen(path, "re");
		if (f) {
			long p;
			while (fscanf(f, "%ld", &p) == 1)
				kill((pid_t)p, SIGKILL);
			fclose(f);
		}
		/* Without the children file, rely on their parent-death signal. */
		if (waitpid(-1, NULL, 0) < 0 && errno != EINTR)
			return; /* ECHILD: none left */
	}
}

int sandbox_probe(const struct sandbox *sb, const char *dir, char **err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0) {
		*err = xasprintf("pipe: %s", strerror(errno));
		return -1;
	}
	char *args[] = {(char *)"true"};
	char **argv = sandbox_argv(sb, dir, dir, false, args, 1);
	char *envp[] = {(char *)"PATH=/usr/bin:/bin", NULL};
	/* A SIGTERM waits for the end of the probe: killed midway, bwrap can
	 * leave a process behind. */
	sigset_t term, old;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigaddset(&term, SIGINT);
	sigprocmask(SIG_BLOCK, &term, &old);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0)
		sandbox_exec_child(sb, dir, p[1], p[1], argv, envp, parent);
	int fe = errno;
	close(p[1]);
	sandbox_argv_free(argv);
	if (pid < 0) {
		close(p[0]);
		sigprocmask(SIG_SETMASK, &old, NULL);
		*err = xasprintf("fork: %s", strerror(fe));
		return -1;
	}
	char buf[1024];
	size_t len = 0;
	ssize_t r;
	while (len < sizeof buf - 1 &&
	       ((r = read(p[0], buf + len, sizeof buf - 1 - len)) > 0 || (r < 0 && errno == EINTR)))
		if (r > 0)
			len += (size_t)r;
	close(p[0]);
	buf[len] = '\0';
	while (len && buf[len - 1] == '\n')
		buf[--len] = '\0';
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	kill(-pid, SIGKILL);
	sandbox_reap();
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	char how[64];
	*err = xasprintf("the sandbox does not work: `true` in it %s%s%s",
			 child_status_str(st, how, sizeof how), len ? ": " : "", buf);
	return -1;
}
