#!/usr/bin/python3
"""sandbox.py - what the action sandbox costs (issue 11): a reactord with one
local reactor-worker runs N trivial actions (`true`, distinct, never cached)
one after the other, once with `workers.sandbox: none` and once with
`bwrap`, and prints the wall time per action both ways; the difference is
the sandbox's start and teardown.  It also times the bare spawn: N runs of
`true` directly and inside the same bwrap command line the worker builds
(as the worker's run-as user when run as root).

usage: contrib/bench/sandbox.py [BUILD_DIR]      (default: build)
   N=300 contrib/bench/sandbox.py
On demand, not part of `make check`.
"""
import os
import pwd
import resource
import shutil
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(SRC, "build"))
os.environ.setdefault("REACTOR_SRCDIR", SRC)
os.environ.setdefault("REACTOR_GEN_PY", os.path.join(BUILD, "gen-py"))
os.environ.setdefault("REACTORD", os.path.join(BUILD, "reactord"))
sys.path.insert(0, os.path.join(SRC, "t", "integ"))
import harness as h  # noqa: E402
import testbot as tb  # noqa: E402
from harness import pb  # noqa: E402

N = int(os.environ.get("N", "200"))
WARM = 10


def action(i):
    re_ = pb().re
    cmd = re_.Command(arguments=["true"])
    cmd.environment_variables.add(name="PATH", value="/usr/bin:/bin")
    cb = cmd.SerializeToString()
    root = re_.Directory().SerializeToString()
    act = re_.Action(command_digest=tb.digest_of(cb), input_root_digest=tb.digest_of(root),
                     do_not_cache=True, salt=b"%d" % i)
    ab = act.SerializeToString()
    return tb.digest_of(ab), {tb.digest_of(b).hash: b for b in (cb, root, ab)}


def per_action_ms(mode, tmp):
    d = os.path.join(tmp, mode)
    os.mkdir(d)
    cfg = {"listen": ["127.0.0.1:0", "unix:" + os.path.join(d, "r.sock")],
           "ready-file": os.path.join(d, "ready"), "state-dir": os.path.join(d, "state"),
           "log": {"level": "warn"},
           "redis": {"embedded": True, "server": h.REDIS_SERVER},
           "scheduler": {"long-poll": "10s"},
           "workers": {"local": 1, "sandbox": mode},
           "instances": [{"name": "", "execution": True, "storage": "memory"}]}
    path = os.path.join(d, "r.yaml")
    with open(path, "w") as f:
        f.write(h.to_yaml(cfg) + "\n")
    srv = h.Reactord(d, path, cfg["ready-file"]).start()
    try:
        srv.wait_ready()
        ch = h.channel(srv.tcp_addr)
        h.wait_for(lambda: h.health_check(ch).status == 1, 20, "SERVING")
        acts = [action(i) for i in range(N + WARM)]
        for _, blobs in acts:
            tb.upload(ch, blobs)
        t0 = 0
        for i, (dg, _) in enumerate(acts):
            if i == WARM:
                t0 = time.monotonic()
            ops = tb.run_to_end(tb.execute(ch, dg, skip_cache=True))
            r = tb.op_response(ops[-1])
            assert r.status.code == 0 and r.result.exit_code == 0, r
        ms = (time.monotonic() - t0) * 1000 / N
        ch.close()
        return ms
    finally:
        srv.stop()


def spawn_ms(argv, user):
    def pre():
        if user:
            os.setgroups([])
            os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
            os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)
    t0 = time.monotonic()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(N):
        subprocess.run(argv, check=True, preexec_fn=pre, env={"PATH": "/usr/bin:/bin"})
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000 / N
    return (time.monotonic() - t0) * 1000 / N, cpu


def main():
    tmp = tempfile.mkdtemp(prefix="sbx-bench.")
    os.chmod(tmp, 0o711)
    try:
        none = per_action_ms("none", tmp)
        bw = per_action_ms("bwrap", tmp)
        user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        bwrap = shutil.which("bwrap")
        box = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
               "--unshare-uts", "--unshare-net", "--ro-bind", "/usr", "/usr"]
        for p in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(p):
                box += ["--symlink", os.readlink(p), p]
            elif os.path.isdir(p):
                box += ["--ro-bind", p, p]
        box += ["--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev", "--tmpfs",
                "/tmp", "--bind", tmp, tmp, "--remount-ro", "/", "--chdir", tmp, "--",
                "/bin/sh", "-c", 'exec "$0" "$@"', "true"]
        direct = spawn_ms(["true"], user)
        boxed = spawn_ms(box, user)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("actions: %d sequential `true` actions through reactord and one local worker"
          % N)
    print("%-34s %.2f ms/action" % ("sandbox none", none))
    print("%-34s %.2f ms/action" % ("sandbox bwrap", bw))
    print("%-34s %.2f ms/action" % ("bwrap overhead (end to end)", bw - none))
    print("%-34s %.2f ms wall, %.2f ms CPU" % (("spawn `true` directly",) + direct))
    print("%-34s %.2f ms wall, %.2f ms CPU" % (("spawn `true` in bwrap",) + boxed))
    print("%-34s %.2f ms wall, %.2f ms CPU" % ("bwrap overhead (spawn only)",
                                               boxed[0] - direct[0], boxed[1] - direct[1]))
    print("load average: %.2f (wall times grow with it; CPU times do not)" % os.getloadavg()[0])


if __name__ == "__main__":
    main()
