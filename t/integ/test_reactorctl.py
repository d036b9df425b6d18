#!/usr/bin/env python3
"""reactorctl against a real reactord + redis-server + local reactor-worker.

Every command of the caps/health/cas/exec set is run as a subprocess and
checked for its output and exit code (0 ok, 1 the remote operation failed,
2 usage, 3 cannot connect); --json output is parsed.  Error paths: a closed
port, a missing unix socket, an unknown command, a bad flag, an unknown
digest, a missing local file.  A 512 MiB file and a directory tree (nested
directories, an executable, a symlink, an empty file) round-trip byte for
byte; the progress bar shows under a pty and not through a pipe; an
interrupted download leaves nothing at its final path; exec runs commands
with inputs and outputs and exits with their exit code.
"""
import hashlib
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

MIB = 1 << 20


def ctl(*args, timeout=60, cwd=None, env=None, text=True):
    e = dict(os.environ)
    e.pop("REACTOR_SERVER", None)
    e.update(env or {})
    return subprocess.run([h.REACTORCTL, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=text, timeout=timeout * h.SLOW, cwd=cwd, env=e)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sha_file(path):
    hs = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(MIB)
            if not b:
                return hs.hexdigest()
            hs.update(b)


def big_file(path, mib):
    """mib MiB: one random MiB repeated, each copy stamped with its index."""
    block = os.urandom(MIB)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(i.to_bytes(8, "little") + block[8:])


def tree_listing(root):
    """Everything under root: path -> ("f", sha, exec) / ("l", target) / ("d",)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("l", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("d",)
            else:
                out[rel] = ("f", sha_file(p), os.access(p, os.X_OK))
    return out


def run_pty(args, timeout=120):
    """Run args with stdout/stderr on a pty; returns (exit code, output)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout * h.SLOW
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                b = os.read(master, 65536)
            except OSError:
                b = b""
            if not b:
                break
            out += b
        elif p.poll() is not None:
            break
    os.close(master)
    return p.wait(timeout=30), out.decode(errors="replace")


class CtlCase(h.ReactordTestCase):
    def start(self, local=0):
        cfg = {"instances": [{"name": "", "execution": True, "no-worker-timeout": "10s"}],
               "scheduler": {"bot-session-keepalive": "3s", "safety-net-interval": "1s",
                             "sweep-interval": "100ms", "long-poll": "10s",
                             "start-grace": "0s"},
               "workers": {"local": local, "sandbox": "none", "run-as": "root"}}
        return self.start_reactord(cfg)


class TestBasics(CtlCase):
    def test_caps_health_json_and_usage(self):
        srv = self.start()
        for addr in (srv.tcp_addr, srv.unix_addr):
            r = ctl("-s", addr, "caps")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("cache.digest_functions: SHA256", r.stdout)
            r = ctl("-s", addr, "--json", "caps")
            self.assertEqual(r.returncode, 0, r.stderr)
            j = json.loads(r.stdout)
            self.assertEqual(j["cache"]["digest_functions"], ["SHA256"])
            self.assertGreater(j["cache"]["max_batch_total_size_bytes"], 0)
            self.assertTrue(j["execution"]["exec_enabled"])
        r = ctl("-s", srv.tcp_addr, "health")
        self.assertEqual((r.returncode, r.stdout), (0, "SERVING\n"), r.stderr)
        r = ctl("-s", srv.tcp_addr, "health", "--json")
        self.assertEqual(json.loads(r.stdout), {"service": "", "status": "SERVING"})
        r = ctl("-s", srv.tcp_addr, "health", "no.such.Service")
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)
        # $REACTOR_SERVER is the default target.
        r = ctl("health", env={"REACTOR_SERVER": srv.tcp_addr})
        self.assertEqual((r.returncode, r.stdout), (0, "SERVING\n"), r.stderr)
        # Usage errors: exit 2, saying what was wrong.
        r = ctl("-s", srv.tcp_addr, "frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'frobnicate'", r.stderr)
        r = ctl("-s", srv.tcp_addr, "--no-such-flag", "caps")
        self.assertEqual(r.returncode, 2)
        r = ctl("-s", srv.tcp_addr, "cas", "get", "--bogus", "x/1")
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage: reactorctl", r.stderr)
        r = ctl("help", "cas", "put")
        self.assertEqual(r.returncode, 0)
        self.assertIn("example:", r.stdout)
        r = ctl("cas", "has", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("usage: reactorctl [OPTIONS] cas has", r.stdout)
        r = ctl("-V")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^reactorctl \S+\n$")
        r = ctl("--help")
        self.assertEqual(r.returncode, 0)
        for cmd in ("caps", "health", "cas put", "cas get", "cas has", "exec", "call"):
            self.assertIn("\n  " + cmd, r.stdout)

    def test_cannot_connect(self):
        port = free_port()
        r = ctl("-s", "127.0.0.1:%d" % port, "caps")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("cannot connect to 127.0.0.1:%d: Connection refused" % port, r.stderr)
        sock = os.path.join(self.tmp, "nobody.sock")
        r = ctl("-s", "unix:" + sock, "health")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn(sock, r.stderr)
        self.assertIn("No such file or directory", r.stderr)
        r = ctl("-s", "no-such-host.invalid:50051", "health")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("no-such-host.invalid", r.stderr)


class TestCas(CtlCase):
    def test_put_has_get_file_and_errors(self):
        srv = self.start()
        a = srv.tcp_addr
        path = os.path.join(self.tmp, "small")
        with open(path, "wb") as f:
            f.write(b"hello reactorctl\n")
        want = "%s/%d" % (hashlib.sha256(b"hello reactorctl\n").hexdigest(), 17)
        gone = "%s/5" % hashlib.sha256(b"nope!").hexdigest()
        r = ctl("-s", a, "cas", "has", want)
        self.assertEqual((r.returncode, r.stdout), (1, "missing %s\n" % want), r.stderr)
        r = ctl("-s", a, "cas", "put", path)
        self.assertEqual((r.returncode, r.stdout), (0, want + "\n"), r.stderr)
        r = ctl("-s", a, "--json", "cas", "put", path)
        j = json.loads(r.stdout)
        self.assertEqual((j["items"][0]["digest"], j["uploaded_blobs"]), (want, 0))
        r = ctl("-s", a, "cas", "has", want)
        self.assertEqual((r.returncode, r.stdout), (0, ""), r.stderr)
        r = ctl("-s", a, "cas", "has", want, gone, "--json")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(json.loads(r.stdout), {"missing": [gone], "present": [want]})
        r = ctl("-s", a, "cas", "get", want)
        self.assertEqual((r.returncode, r.stdout), (0, "hello reactorctl\n"), r.stderr)
        out = os.path.join(self.tmp, "copy")
        r = ctl("-s", a, "cas", "get", "-o", out, want)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"hello reactorctl\n")
        # Unknown digest: exit 1, NOT_FOUND, nothing left behind.
        never = os.path.join(self.tmp, "never")
        r = ctl("-s", a, "cas", "get", "-o", never, gone)
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)
        self.assertEqual(sorted(os.listdir(self.tmp)),
                         sorted(x for x in os.listdir(self.tmp) if "reactorctl-" not in x))
        self.assertFalse(os.path.exists(never))
        # A local file that is not there: a clear message, exit 1, not usage.
        r = ctl("-s", a, "cas", "put", os.path.join(self.tmp, "no-such-file"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("no-such-file: No such file or directory", r.stderr)
        r = ctl("-s", a, "cas", "get", "nohash")
        self.assertEqual(r.returncode, 2)

    def test_tree_round_trip(self):
        srv = self.start()
        src = os.path.join(self.tmp, "src")
        os.makedirs(os.path.join(src, "a", "b", "c"))
        os.makedirs(os.path.join(src, "emptydir"))
        with open(os.path.join(src, "a", "b", "c", "deep.txt"), "w") as f:
            f.write("deep\n")
        with open(os.path.join(src, "run.sh"), "w") as f:
            f.write("#!/bin/sh\necho run\n")
        os.chmod(os.path.join(src, "run.sh"), 0o755)
        open(os.path.join(src, "empty"), "w").close()
        with open(os.path.join(src, "a", "big.bin"), "wb") as f:
            f.write(os.urandom(3 * MIB))
        os.symlink("b/c/deep.txt", os.path.join(src, "a", "link"))
        r = ctl("-s", srv.tcp_addr, "cas", "put", src)
        self.assertEqual(r.returncode, 0, r.stderr)
        root = r.stdout.strip()
        self.assertRegex(root, r"^[0-9a-f]{64}/\d+$")
        dst = os.path.join(self.tmp, "dst")
        r = ctl("-s", srv.unix_addr, "cas", "get", "-o", dst, root)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(tree_listing(dst), tree_listing(src))
        # Into an existing path: refused, nothing changed.
        r = ctl("-s", srv.tcp_addr, "cas", "get", "--tree", "-o", dst, root)
        self.assertEqual(r.returncode, 1)
        self.assertIn("already exists", r.stderr)
        # --file: the Directory blob itself.
        r = ctl("-s", srv.tcp_addr, "cas", "get", "--file", root, text=False)
        self.assertEqual(r.returncode, 0)
        self.assertEqual("%s/%d" % (hashlib.sha256(r.stdout).hexdigest(), len(r.stdout)), root)

    def test_512mib_round_trip_progress_and_interrupt(self):
        srv = self.start()
        path = os.path.join(self.tmp, "big")
        big_file(path, 512)
        want = "%s/%d" % (sha_file(path), 512 * MIB)
        # Under a pty: a progress bar (bytes, rate, ETA) on stderr
        # (--progress: from the first byte; a fast upload ends within the
        # second after which it would show on its own).
        rc, out = run_pty([h.REACTORCTL, "-s", srv.tcp_addr, "--progress", "cas", "put", path])
        self.assertEqual(rc, 0, out)
        self.assertIn(want, out)
        self.assertRegex(out, r"upload \[[#.]+\] +\d+% .*/s")
        out_path = os.path.join(self.tmp, "big.out")
        r = ctl("-s", srv.tcp_addr, "cas", "get", "-o", out_path, want, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")  # piped: no progress bar
        self.assertEqual(sha_file(out_path), want.split("/")[0])
        os.unlink(out_path)
        # Killed mid-transfer: nothing at the final path, no temporary left.
        p = subprocess.Popen([h.REACTORCTL, "-s", srv.tcp_addr, "cas", "get", "-o", out_path,
                              want], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        h.wait_for(lambda: any("reactorctl-" in n and os.path.getsize(
            os.path.join(self.tmp, n)) > 16 * MIB for n in os.listdir(self.tmp)),
                   60, "the download to start")
        rpid = srv.redis_pid(srv.state_dir)
        srv.expected_rc = None
        srv.kill()
        rc = p.wait(timeout=60)
        # The embedded redis-server follows its reactord down.
        if rpid:
            h.wait_for(lambda: not h.pid_alive(rpid), 20, "the embedded redis-server to exit")
        p.stdout.close()
        p.stderr.close()
        self.assertNotEqual(rc, 0)
        self.assertFalse(os.path.exists(out_path))
        self.assertEqual([n for n in os.listdir(self.tmp) if "reactorctl-" in n], [])


class TestExec(CtlCase):
    def test_exec(self):
        srv = self.start(local=1)
        a = srv.tcp_addr
        r = ctl("-s", a, "exec", "--", "sh", "-c", "echo hi; exit 3")
        self.assertEqual((r.returncode, r.stdout), (3, "hi\n"), r.stderr)
        # Inputs and outputs.
        src = os.path.join(self.tmp, "in")
        os.makedirs(os.path.join(src, "sub"))
        with open(os.path.join(src, "sub", "x.txt"), "w") as f:
            f.write("input data\n")
        work = os.path.join(self.tmp, "work")
        os.makedirs(work)
        r = ctl("-s", a, "exec", "--input", src, "--output", "out/y.txt", "--output", "od",
                "--no-cache", "--env", "GREETING=hello", "--",
                "sh", "-c", "mkdir -p out od/n; tr a-z A-Z < sub/x.txt > out/y.txt; "
                "echo $GREETING > od/n/g; echo done >&2", cwd=work)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("done", r.stderr)
        with open(os.path.join(work, "out", "y.txt")) as f:
            self.assertEqual(f.read(), "INPUT DATA\n")
        with open(os.path.join(work, "od", "n", "g")) as f:
            self.assertEqual(f.read(), "hello\n")
        # --json: the ActionResult summary.
        r = ctl("-s", a, "--json", "exec", "--", "sh", "-c", "echo json; exit 4")
        self.assertEqual(r.returncode, 4, r.stderr)
        j = json.loads(r.stdout)
        self.assertEqual((j["exit_code"], j["stdout"]), (4, "json\n"))
        # A platform no worker offers fails, naming the status.
        r = ctl("-s", a, "exec", "--platform", "OSFamily=plan9", "--timeout", "5s", "--",
                "true", timeout=120)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("FAILED_PRECONDITION", r.stderr)
        self.assertIn("OSFamily=plan9", r.stderr)
        # The action's environment: PATH is the usual one unless --env gives it
        # (sh's own default when PATH is unset is a different list).
        r = ctl("-s", a, "exec", "--", "sh", "-c", 'echo "$PATH"')
        self.assertEqual((r.returncode, r.stdout), (0, "/usr/local/bin:/usr/bin:/bin\n"), r.stderr)
        r = ctl("-s", a, "exec", "--env", "PATH=/bin", "--", "sh", "-c", 'echo "$PATH"')
        self.assertEqual((r.returncode, r.stdout), (0, "/bin\n"), r.stderr)


if __name__ == "__main__":
    h.main()
