#!/usr/bin/python3
"""test_sandbox.py - issue 11 section 1: every action reactor-worker runs is
isolated (bubblewrap, the default).  A real reactord supervises real local
workers; each test runs an action that tries an attack and checks that it
failed and left nothing on the host:

- the embedded Redis socket and the files under reactord's state dir are
  out of reach, and the action sees no host process in /proc;
- writes outside the exec root (/tmp, /var/tmp, $HOME of root, the test's
  own directory, the action dir above the exec root) leave nothing;
- a setsid'd sleeper dies with its action: on exit, on timeout, on
  cancel and when the worker is SIGKILLed (looked for on the host by a
  unique marker in its argv);
- a worker running as root runs the action as a non-root user;
- the network is unshared (reactord's TCP port is unreachable) unless the
  action asks for network=on on a worker that advertises it;
- the work dir is outside the state dir, and reactord refuses one inside
  it, a missing bwrap, and the worker says which mode it runs in.

Run by `make check`; by hand: /usr/bin/python3 t/integ/test_sandbox.py [NAME...]
"""

import fcntl
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import testbot as tb  # noqa: E402
from harness import pb  # noqa: E402
from test_worker import WorkerCase, exec_config, make_action, sha, worker_procs  # noqa: E402

OK, CANCELLED, DEADLINE_EXCEEDED = 0, 1, 4
WORKER = os.environ.get("REACTOR_WORKER") or os.path.join(os.path.dirname(h.REACTORD),
                                                          "reactor-worker")


class SandboxCase(WorkerCase):
    def marker(self, name):
        return "sbx-%s-%s-%s" % (os.path.basename(os.path.dirname(self.tmp)),
                                 os.path.basename(self.tmp), name)

    def sleeper(self, name):
        """An executable copy of sleep(1) named by a unique marker, and a
        cleanup that kills whatever still carries the marker (the old
        code leaves setsid'd sleepers behind)."""
        mark = self.marker(name)
        self.addCleanup(self.kill_marked, mark)
        with open(shutil.which("sleep"), "rb") as f:
            return mark, {mark: (f.read(), True)}

    def kill_marked(self, mark):
        for pid, _ in h.procs_with(mark):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def output(self, ch, r):
        return self.read(ch, r.result.stdout_digest).decode(errors="replace")


class TestIsolation(SandboxCase):
    def test_state_dir_and_redis_out_of_reach(self):
        srv, ch = self.start()
        sock = os.path.join(srv.state_dir, "redis", "redis.sock")
        self.assertTrue(os.path.exists(sock))
        files = [os.path.join(d, f) for d, _, fs in os.walk(srv.state_dir) for f in fs
                 if os.path.isfile(os.path.join(d, f))]
        self.assertTrue(files, "no file under the state dir to try")
        victim = files[0]
        script = ("ls -l %(sock)s; echo ls=$?; cat %(victim)s >/dev/null; echo cat=$?; "
                  "ls %(state)s; echo lsdir=$?; redis-cli -s %(sock)s PING; "
                  "echo pids: $(ls /proc | grep '^[0-9]*$' | tr '\\n' ' '); "
                  "echo cmdlines: $(cat /proc/[0-9]*/cmdline | tr '\\0' ' ')"
                  % {"sock": sock, "victim": victim, "state": srv.state_dir})
        d, blobs = make_action(["/bin/sh", "-c", script])
        r = self.run_action(ch, d, blobs)
        self.assertEqual(r.status.code, OK, r.status.message)
        out = self.output(ch, r)
        self.assertRegex(out, r"\bls=[1-9]", out)
        self.assertRegex(out, r"\bcat=[1-9]", out)
        self.assertRegex(out, r"\blsdir=[1-9]", out)
        self.assertNotIn("PONG", out)
        # Only the action's own processes: none of the host's.
        pids = [int(p) for p in re.search(r"pids: (.*)", out).group(1).split()]
        self.assertLessEqual(len(pids), 10, out)
        self.assertNotIn(srv.pid, pids)
        # (pid 1 is bwrap's own init, whose argv holds the script.)
        cmdlines = re.search(r"cmdlines: (.*)", out).group(1)
        for host in (srv.cfg_path, "redis-server", "reactor-worker -s"):
            self.assertNotIn(host, cmdlines, out)

    def test_writes_outside_the_exec_root_leave_nothing(self):
        srv, ch = self.start()
        m = self.marker("escape")
        targets = ["/tmp/" + m, "/var/tmp/" + m, "/root/" + m, os.path.join(self.tmp, m),
                   os.path.join(srv.state_dir, m)]
        for t in targets:
            self.addCleanup(lambda t=t: os.path.exists(t) and os.unlink(t))
        script = "; ".join("echo x > %s" % t for t in targets)
        # The action dir above the exec root holds stdout and stderr.
        script += "; echo x > ../%s; echo x > ../../%s; echo inside > ok.txt; true" % (m, m)
        d, blobs = make_action(["/bin/sh", "-c", script], output_paths=["ok.txt"])
        r = self.run_action(ch, d, blobs)
        self.assertEqual(r.status.code, OK, r.status.message)
        # Writing inside the exec root works.
        (f,) = r.result.output_files
        self.assertEqual(self.read(ch, f.digest), b"inside\n")
        left = [t for t in targets if os.path.exists(t)]
        left += [p for p, _ in h.procs_with(m)]
        for root in ("/tmp", "/var/tmp", self.tmp):
            for d_, _, fs in os.walk(root):
                left += [os.path.join(d_, x) for x in fs if x == m]
        self.assertEqual(left, [])

    def test_runs_as_an_unprivileged_user(self):
        srv, ch = self.start()
        d, blobs = make_action(["/bin/sh", "-c", "id -u; id -g; touch mine; stat -c %u mine"])
        r = self.run_action(ch, d, blobs)
        self.assertEqual(r.status.code, OK, r.status.message)
        uid, gid, owner = self.output(ch, r).split()
        self.assertNotEqual(uid, "0")
        self.assertNotEqual(owner, "0")
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self.assertEqual((int(uid), int(gid)), (nobody.pw_uid, nobody.pw_gid))
        srv.wait_log(r"actions run as uid %s gid %s" % (uid, gid), 10)

    def test_network_unshared_unless_asked_for(self):
        cfg = exec_config(1, {"properties": ["OSFamily=linux", "ISA=x86-64", "network=on"]})
        cfg["instances"][0]["platform-properties"] = ["OSFamily", "ISA", "network"]
        srv = self.start_reactord(cfg)
        self.addCleanup(self.assert_no_strays, srv)
        ch = self.channel(srv.tcp_addr)
        port = int(srv.tcp_addr.rsplit(":", 1)[1])
        probe = ("import socket\ntry:\n socket.create_connection(('127.0.0.1', %d), 5)\n"
                 " print('connected')\nexcept OSError as e:\n print('refused', e)\n" % port)
        d, blobs = make_action(["python3", "-c", probe])
        r = self.run_action(ch, d, blobs)
        self.assertEqual(r.status.code, OK, r.status.message)
        out = self.output(ch, r)
        self.assertIn("refused", out)
        self.assertNotIn("connected", out)
        # network=on (on a worker that advertises it): the host's network.
        re_ = pb().re
        cmd = re_.Command(arguments=["python3", "-c", probe])
        cmd.environment_variables.add(name="PATH", value="/usr/bin:/bin")
        cb = cmd.SerializeToString()
        tree = re_.Directory().SerializeToString()
        act = re_.Action(command_digest=tb.digest_of(cb), input_root_digest=tb.digest_of(tree),
                         do_not_cache=True)
        act.platform.properties.add(name="network", value="on")
        ab = act.SerializeToString()
        r = self.run_action(ch, tb.digest_of(ab), {sha(cb): cb, sha(ab): ab, sha(tree): tree})
        self.assertEqual(r.status.code, OK, r.status.message)
        self.assertEqual(self.output(ch, r), "connected\n")


class TestNothingSurvives(SandboxCase):
    def daemon(self, mark):
        return "setsid ./%s 1000 </dev/null >/dev/null 2>&1 & " % mark

    def test_setsid_daemon_dies_when_the_action_exits(self):
        srv, ch = self.start()
        mark, files = self.sleeper("exit")
        d, blobs = make_action(["/bin/sh", "-c", self.daemon(mark) + "sleep 0.3; echo done"],
                               files=files)
        r = self.run_action(ch, d, blobs)
        self.assertEqual(r.status.code, OK, r.status.message)
        self.assertEqual(self.output(ch, r), "done\n")
        # Gone by the time the action is reported: the pid namespace died
        # with its first process.
        self.assertEqual(h.procs_with(mark), [])

    def test_setsid_daemon_dies_on_timeout(self):
        srv, ch = self.start()
        mark, files = self.sleeper("timeout")
        d, blobs = make_action(["/bin/sh", "-c", self.daemon(mark) + "exec sleep 1000"],
                               files=files, timeout=1)
        r = self.run_action(ch, d, blobs)
        self.assertEqual(r.status.code, DEADLINE_EXCEEDED, r.status.message)
        self.assertEqual(h.procs_with(mark), [])

    def test_setsid_daemon_dies_on_cancel(self):
        srv, ch = self.start()
        mark, files = self.sleeper("cancel")
        d, blobs = make_action(["/bin/sh", "-c", self.daemon(mark) + "exec sleep 1000"],
                               files=files)
        tb.upload(ch, blobs)
        stream = tb.execute(ch, d, skip_cache=True)
        first = next(stream)
        h.wait_for(lambda: h.procs_with(mark), 20, "the sleeper to start")
        tb.cancel_operation(ch, first.name)
        h.wait_for(lambda: not h.procs_with(mark), 10, "the setsid'd sleeper to die")


    def test_setsid_daemon_dies_with_a_sigkilled_worker(self):
        srv, ch = self.start()
        mark, files = self.sleeper("orphan")
        d, blobs = make_action(["/bin/sh", "-c", self.daemon(mark) + "exec sleep 1000"],
                               files=files)
        tb.upload(ch, blobs)
        stream = tb.execute(ch, d, skip_cache=True)
        next(stream)
        h.wait_for(lambda: h.procs_with(mark), 20, "the sleeper to start")
        (victim,) = worker_procs(srv)
        os.kill(victim, signal.SIGKILL)
        h.wait_for(lambda: not h.procs_with(mark), 10, "the setsid'd sleeper to die")
        stream.cancel()


class TestConfig(SandboxCase):
    def test_work_dir_outside_the_state_dir_and_removed_at_exit(self):
        srv, ch = self.start()
        m = re.search(r"local worker\(s\) on \S+ \(\S+\), work dir (\S+), sandbox bwrap",
                      srv.log())
        self.assertIsNotNone(m, srv.log_tail())
        work = m.group(1)
        self.assertFalse(os.path.realpath(work).startswith(
            os.path.realpath(srv.state_dir) + "/"), work)
        self.assertEqual(os.stat(work).st_mode & 0o777, 0o711)
        srv.wait_log(r"sandbox bwrap \(\S*bwrap; network never\)", 10)
        d, blobs = make_action(["/bin/sh", "-c", "pwd"])
        r = self.run_action(ch, d, blobs)
        self.assertTrue(self.output(ch, r).startswith(os.path.realpath(work) + "/"))
        self.assertEqual(srv.stop(), 0)
        self.assertFalse(os.path.exists(work), "the work dir outlived reactord")

    def test_stale_work_dirs_of_dead_reactords_are_swept(self):
        # A reactord killed with SIGKILL leaves its per-start work dir; the
        # next start removes such dirs, but never one a live reactord
        # holds (flock) nor one just made (younger than a minute).
        tmpdir = os.path.join(self.tmp, "tmpdir")
        os.mkdir(tmpdir)
        old = time.time() - 120

        def mk(name, age):
            d = os.path.join(tmpdir, name)
            os.makedirs(os.path.join(d, "exec-1", "out"))
            with open(os.path.join(d, "exec-1", "out", "f"), "w") as f:
                f.write("x")
            os.utime(d, (age, age))
            return d
        stale, fresh, held = mk("reactord-work.stale1", old), \
            mk("reactord-work.fresh1", time.time()), mk("reactord-work.held01", old)
        other = mk("not-reactord.x", old)
        fd = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        saved = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = tmpdir
        try:
            srv, ch = self.start()
        finally:
            if saved is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = saved
        self.assertFalse(os.path.exists(stale), srv.log_tail())
        self.assertIn("removing %s, the work dir of a reactord that is gone" % stale, srv.log())
        for kept in (fresh, held, other):
            self.assertTrue(os.path.exists(os.path.join(kept, "exec-1", "out", "f")), kept)
        # Its own work dir is under TMPDIR, and a second reactord starting
        # now leaves it alone (it is locked, whatever its age).
        m = re.search(r"work dir (\S+), sandbox", srv.log())
        own = m.group(1)
        self.assertTrue(own.startswith(tmpdir + "/reactord-work."), own)
        os.utime(own, (old, old))
        os.environ["TMPDIR"] = tmpdir
        try:
            srv2 = self.start_reactord(exec_config(1), name="second")
        finally:
            if saved is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = saved
        self.assertTrue(os.path.isdir(own))
        self.assertNotIn("removing %s" % own, srv2.log())

    def refused(self, workers, want):
        cfg = self.base_config()
        cfg.update(exec_config(1, workers))
        srv = self.start_reactord(cfg=cfg, wait=False)
        srv.expected_rc = None
        rc = srv.wait_exit(10)
        self.assertNotEqual(rc, 0)
        self.assertIn(want, srv.log())
        self.assertEqual(h.procs_with(self.tmp), [])

    def test_work_dir_inside_the_state_dir_is_refused(self):
        state = os.path.join(self.tmp, "reactord-state")
        self.refused({"work-dir": os.path.join(state, "work")},
                     "lies inside the state directory")

    def test_missing_bwrap_is_refused(self):
        self.refused({"bwrap": os.path.join(self.tmp, "no-bwrap")},
                     "(install bubblewrap, or set workers.sandbox: none explicitly)")

    def test_worker_refuses_a_missing_bwrap_and_names_its_mode(self):
        r = subprocess.run([WORKER, "-s", "unix:" + os.path.join(self.tmp, "none.sock"),
                            "-d", os.path.join(self.tmp, "wd"), "-B", "/nonexistent/bwrap"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=10)
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertIn("refusing to start: bwrap /nonexistent/bwrap", r.stdout)
        srv, ch = self.start(workers={"sandbox": "none", "run-as": "root"})
        srv.wait_log(r"sandbox none \(actions are not isolated", 10)


if __name__ == "__main__":
    h.main()
