#!/usr/bin/python3
"""test_rough.py - the rough edges a new user hits (issue 13), each against
real reactord, redis-server and reactor-worker processes:

- listen: "*:PORT" and URLs are refused by `reactord -t`, quoting the value
  and naming the accepted forms;
- reactord and reactor-worker answer --help and --version; reactord
  --workers N overrides workers.local (what `make run WORKERS=N` uses);
- local workers start once Redis answers (no error line in the log), with
  bot ids stable across restarts, so a restart leaves exactly the new
  sessions in Redis;
- an Execute for a platform no bot could run fails at once with
  FAILED_PRECONDITION, while one whose bots are busy, briefly gone, or
  reactord's local workers not yet connected keeps waiting;
- sd_notify: READY=1 after the ready-file, RELOADING=1 then READY=1 on
  SIGHUP, STOPPING=1 on SIGTERM, to a path or an abstract socket;
- `make install DESTDIR=...` puts the config, the unit and the
  sysusers/tmpfiles snippets where the unit and reactord expect them.

Run by `make check`; by hand: /usr/bin/python3 t/integ/test_rough.py [NAME...]
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import testbot as tb  # noqa: E402
from harness import grpc  # noqa: E402

FAILED_PRECONDITION = 9
WORKER = os.path.join(os.path.dirname(h.REACTORD), "reactor-worker")
FORMS = "accepted forms: HOST:PORT"


def read(path):
    with open(path) as f:
        return f.read()


def exec_config(**sched):
    s = {"bot-session-keepalive": "2s", "safety-net-interval": "1s",
         "sweep-interval": "100ms", "long-poll": "1s", "start-grace": "0s"}
    s.update(sched)
    return {"instances": [{"name": "", "execution": True, "storage": "memory",
                           "platform-properties": ["pool"], "no-worker-timeout": "30s"}],
            "scheduler": s}


class TestOptions(h.ReactordTestCase):
    def run_prog(self, *args):
        return subprocess.run(list(args), capture_output=True, text=True, timeout=30)

    def test_help_and_version(self):
        for prog in (h.REACTORD, WORKER):
            name = os.path.basename(prog)
            for flag in ("--help", "-h"):
                r = self.run_prog(prog, flag)
                self.assertEqual(r.returncode, 0, (name, flag, r.stderr))
                self.assertIn("usage: " + name, r.stdout)
                self.assertIn("--version", r.stdout)
            for flag in ("--version", "-V"):
                r = self.run_prog(prog, flag)
                self.assertEqual(r.returncode, 0, (name, flag, r.stderr))
                self.assertRegex(r.stdout, r"^%s \d+\.\d+" % name)
        r = self.run_prog(h.REACTORD, "--help")
        self.assertIn("/reactor/reactor.conf", r.stdout)
        self.assertIn("--workers N", r.stdout)
        r = self.run_prog(h.REACTORD, "--workers", "many")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--workers many", r.stderr)

    def check_listen(self, addr):
        path = self.write_config(dict(self.base_config(), listen=[addr]))
        r = self.run_prog(h.REACTORD, "-t", "-c", path)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn('"%s"' % addr, r.stderr)
        self.assertIn(FORMS, r.stderr)
        self.assertNotIn("configuration OK", r.stdout)
        return r.stderr

    def test_listen_forms(self):
        err = self.check_listen("*:50201")
        self.assertIn("0.0.0.0:50201", err)
        self.assertIn("[::]:50201", err)
        for url in ("tcp://127.0.0.1:50201", "http://localhost:8080", "grpc://[::1]:1"):
            err = self.check_listen(url)
            self.assertIn("no scheme", err)
            self.assertNotIn("need brackets", err)
        # The accepted forms still pass.
        path = self.write_config(dict(self.base_config(), listen=[
            "127.0.0.1:0", "[::1]:0", "localhost:0", "unix:" + os.path.join(self.tmp, "s")]))
        r = self.run_prog(h.REACTORD, "-t", "-c", path)
        self.assertEqual(r.returncode, 0, r.stderr)


class TestLocalWorkers(h.ReactordTestCase):
    def config(self, local=2):
        return dict(exec_config(),
                    workers={"local": local, "binary": WORKER, "sandbox": "none"})

    def sessions(self, srv):
        """{session name: bot id} of instance "" as Redis holds them."""
        r = tb.embedded_redis(srv)
        try:
            names = r("ZRANGE", "reactor:bots:", "0", "-1")
            return {n.decode(): r.hgetall("reactor:bot:" + n.decode()).get("bot_id", b"").decode()
                    for n in names}
        finally:
            r.close()

    def wait_sessions(self, srv, n):
        h.wait_for(lambda: len(self.sessions(srv)) == n, 20, "%d bot sessions" % n)
        return self.sessions(srv)

    def test_stable_ids_replace_old_sessions(self):
        srv = self.start_reactord(self.config())
        first = self.wait_sessions(srv, 2)
        host = socket.gethostname()
        self.assertEqual(sorted(first.values()), [host + "-local-0", host + "-local-1"])
        self.assertNotIn(str(srv.pid), " ".join(first.values()))
        log = srv.log()
        self.assertNotRegex(log, r"(?m)^\S+ error ", "an error line on a clean start")
        self.assertNotIn("UNAVAILABLE", log)
        # The workers started after Redis answered: the ready line first.
        self.assertLess(log.index(" main: ready"), log.index("started worker"))
        # Restart on the same state dir (the embedded Redis keeps the old
        # sessions): the new workers' sessions replace the old ones at once,
        # well before the old ones' keepalive could expire them.
        srv.stop()
        srv2 = self.start_reactord(srv.cfg)
        t0 = time.monotonic()
        h.wait_for(lambda: (len(self.sessions(srv2)) == 2
                            and not set(self.sessions(srv2)) & set(first)),
                   20, "exactly the two new sessions")
        now = self.sessions(srv2)
        self.assertEqual(sorted(now.values()), sorted(first.values()))
        self.assertEqual(len(now), 2, now)
        self.assertNotRegex(srv2.log(), r"(?m)^\S+ error ")
        self.assertLess(time.monotonic() - t0, 15)

    def test_shared_redis_names_carry_the_state_dir(self):
        # Two reactords on one host sharing one Redis: their local workers
        # must not take each other's bot ids (each would keep replacing the
        # other's sessions), and each keeps its names over a restart.
        ext = self.start_redis()
        srvs = []
        for name in ("ra", "rb"):
            cfg = h.deep_merge(self.base_config(name), self.config(local=1))
            cfg["redis"] = {"embedded": False, "address": "unix:" + ext.sock,
                            "reconnect-max": "200ms"}
            srvs.append(self.start_reactord(cfg=cfg, name=name))
        r = tb.Resp(ext.sock)
        self.addCleanup(r.close)

        def ids():
            return sorted(r.hgetall("reactor:bot:" + n.decode()).get("bot_id", b"").decode()
                          for n in r("ZRANGE", "reactor:bots:", "0", "-1"))
        h.wait_for(lambda: len(ids()) == 2, 20, "two bot sessions")
        first = ids()
        host = re.escape(socket.gethostname())
        for i in first:
            self.assertRegex(i, r"^%s-[0-9a-f]{6}-local-0$" % host)
        self.assertNotEqual(first[0], first[1])
        srvs[0].stop()
        again = self.start_reactord(cfg=srvs[0].cfg, name="ra")
        again.wait_log(r"started worker")
        h.wait_for(lambda: ids() == first and r("ZCARD", "reactor:bots:") == 2, 20,
                   "the same two bot ids, two sessions")

    def start_with(self, cfg, args, name):
        """start_reactord with extra command-line arguments."""
        path = self.write_config(cfg, name)
        srv = h.Reactord(self.tmp, path, cfg["ready-file"], name)
        srv.cfg, srv.state_dir = cfg, cfg["state-dir"]
        self.servers.append(srv)
        self.addCleanup(self._stop_server, srv)
        srv.start(args)
        srv.wait_ready()
        self.wait_health(srv, "SERVING")
        return srv

    def test_workers_option(self):
        # --workers 1 over the file's 2 ...
        cfg = dict(self.base_config("one"), **self.config(local=2))
        one = self.start_with(cfg, ["--workers", "1"], "one")
        self.assertEqual(list(self.wait_sessions(one, 1).values()),
                         [socket.gethostname() + "-local-0"])
        one.wait_log(r"started worker \S+-local-0")
        self.assertNotIn("-local-1", one.log())
        # ... and --workers 0: none at all.
        one.stop()
        cfg = dict(self.base_config("zero"), **self.config(local=2))
        zero = self.start_with(cfg, ["--workers", "0"], "zero")
        self.assertNotIn("local worker", zero.log())
        # A SIGHUP keeps the override (no "workers.local changed" warning).
        zero.signal(signal.SIGHUP)
        zero.wait_log(r"reloaded ")
        self.assertNotIn("workers.local", zero.log())
        self.assertEqual(self.sessions(zero), {})


class TestFailFast(h.ReactordTestCase):
    def start(self, cfg):
        srv = self.start_reactord(cfg)
        return srv, self.channel(srv.tcp_addr)

    def action(self, ch, *args, **kw):
        d, blobs = tb.make_action(args or ("true",), **kw)
        tb.upload(ch, blobs)
        return d

    def assert_fails_at_once(self, ch, d, platform_text):
        t0 = time.monotonic()
        e = h.rpc_error(list, tb.execute(ch, d))
        self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION, e.details())
        self.assertIn("no bot offers platform {%s}" % platform_text, e.details())
        self.assertLess(time.monotonic() - t0, 5)
        return e.details()

    def assert_waits(self, ch, d):
        """The Execute is QUEUED and still not done after several sweeps."""
        st = tb.execute(ch, d)
        op = next(st)
        self.assertEqual(tb.stage_name(tb.op_meta(op).stage), "QUEUED")
        time.sleep(1.0)  # ten sweeps: the absence of a failure is the point
        self.assertFalse(tb.get_operation(ch, op.name).done)
        st.cancel()
        return op

    def test_never_offered_fails_at_once(self):
        srv, ch = self.start(exec_config())
        win = self.action(ch, "ver", platform=(("OSFamily", "windows"),))
        self.assert_fails_at_once(ch, win, "OSFamily=windows")
        # A bot offering linux does not change that for windows ...
        bot = tb.Bot(srv.tcp_addr, "lin", props=(("OSFamily", "linux"),), mode="hang")
        self.addCleanup(bot.stop)
        bot.start()
        h.wait_for(lambda: bot.sessions, 10, "the bot's session")
        self.assert_fails_at_once(ch, win, "OSFamily=windows")
        # ... but linux work waits while that bot is busy ...
        busy = self.action(ch, "sleep", platform=(("OSFamily", "linux"),))
        first = tb.execute(ch, busy)
        next(first)
        h.wait_for(lambda: bot.got, 10, "the bot's lease")
        self.assert_waits(ch, self.action(ch, "a", platform=(("OSFamily", "linux"),)))
        # ... and while it is briefly gone (its session expired: seen within
        # the no-worker-timeout).
        bot.stop()
        srv.wait_log(r"bot session \S+ expired", timeout=15)
        self.assert_waits(ch, self.action(ch, "b", platform=(("OSFamily", "linux"),)))
        first.cancel()

    def test_start_grace_keeps_the_wait(self):
        srv, ch = self.start(exec_config(**{"start-grace": "1h"}))
        self.assert_waits(ch, self.action(ch, "ver", platform=(("OSFamily", "windows"),)))

    def test_local_workers_platform_waits(self):
        # Local workers that never connect (a stand-in binary): their
        # platform, known from the config, still waits; any other fails.
        fake = os.path.join(self.tmp, "fake-worker")
        with open(fake, "w") as f:
            f.write("#!/bin/sh\nexec sleep 600\n")
        os.chmod(fake, 0o755)
        cfg = dict(exec_config(), workers={"local": 1, "binary": fake, "sandbox": "none",
                                           "properties": ["OSFamily=linux", "pool=local"]})
        srv, ch = self.start(cfg)
        self.assert_waits(ch, self.action(ch, "x", platform=(("pool", "local"),)))
        msg = self.assert_fails_at_once(
            ch, self.action(ch, "y", platform=(("pool", "gpu"),)), "pool=gpu")
        self.assertIn("the local workers offer {OSFamily=linux, pool=local}", msg)


class TestSdNotify(h.ReactordTestCase):
    def notify_socket(self, abstract):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        if abstract:
            name = "reactord-test-%d-%d" % (os.getpid(), time.monotonic_ns())
            s.bind("\0" + name)
            return s, "@" + name
        path = os.path.join(self.tmp, "notify.sock")
        s.bind(path)
        return s, path

    def recv(self, s, want, timeout=20):
        s.settimeout(timeout)
        while True:
            msg = s.recv(4096).decode()
            if want in msg.split("\n"):
                return msg

    def run_case(self, abstract):
        s, addr = self.notify_socket(abstract)
        cfg = self.base_config()
        old = os.environ.get("NOTIFY_SOCKET")
        os.environ["NOTIFY_SOCKET"] = addr
        try:
            srv = self.start_reactord(cfg, wait=False)
        finally:
            if old is None:
                del os.environ["NOTIFY_SOCKET"]
            else:
                os.environ["NOTIFY_SOCKET"] = old
        msg = self.recv(s, "READY=1")
        self.assertTrue(os.path.exists(cfg["ready-file"]), "READY=1 before the ready-file")
        self.assertRegex(msg, r"(?m)^STATUS=serving")
        srv.wait_ready()
        # The embedded redis-server (which speaks the protocol too) did not
        # inherit the socket: only reactord reports readiness.
        with open("/proc/%d/environ" % srv.redis_pid(srv.state_dir), "rb") as f:
            self.assertNotIn(b"NOTIFY_SOCKET=", f.read())
        srv.signal(signal.SIGHUP)
        msg = self.recv(s, "RELOADING=1")
        m = re.search(r"(?m)^MONOTONIC_USEC=(\d+)$", msg)
        self.assertIsNotNone(m, msg)
        self.assertLess(abs(int(m.group(1)) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                            // 1000), 30 * 10**6)
        self.recv(s, "READY=1")
        srv.signal(signal.SIGTERM)
        self.recv(s, "STOPPING=1")
        srv.wait_exit(20)


    def test_path_socket(self):
        self.run_case(abstract=False)

    def test_abstract_socket(self):
        self.run_case(abstract=True)


class TestInstall(unittest.TestCase):
    def test_make_install_destdir(self):
        build = os.path.dirname(h.REACTORD)
        if not os.path.exists(os.path.join(build, "Makefile")):
            self.skipTest("SKIP: no automake build directory next to reactord")
        import tempfile
        dest = tempfile.mkdtemp(prefix="dest", dir=h.run_dir())
        self.addCleanup(subprocess.run, ["rm", "-rf", dest])
        r = subprocess.run(["make", "-C", build, "install", "DESTDIR=" + dest],
                           capture_output=True, text=True, timeout=600)
        self.assertEqual(r.returncode, 0, r.stdout[-2000:] + r.stderr[-2000:])
        files = set()
        for root, _, names in os.walk(dest):
            for n in names:
                files.add(os.path.relpath(os.path.join(root, n), dest))
        # The prefix configure was given (whatever it is), from reactord's
        # own help: the default config path.
        out = subprocess.run([h.REACTORD, "--help"], capture_output=True, text=True).stdout
        conf = re.search(r"default (/\S+/reactor/reactor\.conf)\)", out).group(1)
        self.assertIn(conf.lstrip("/"), files)
        unit = [f for f in files if f.endswith("lib/systemd/system/reactord.service")]
        self.assertEqual(len(unit), 1, sorted(files))
        prefix = unit[0][:-len("lib/systemd/system/reactord.service")]
        self.assertIn(prefix + "lib/sysusers.d/reactord.conf", files)
        self.assertIn(prefix + "lib/tmpfiles.d/reactord.conf", files)
        self.assertIn(prefix + "sbin/reactord", files)
        text = read(os.path.join(dest, unit[0]))
        self.assertIn("Type=notify", text)
        self.assertIn("User=reactord", text)
        self.assertIn("ExecStart=/%ssbin/reactord -c %s\n" % (prefix, conf), text)
        self.assertNotIn("@", text.replace("@...@", ""))
        users = read(os.path.join(dest, prefix, "lib/sysusers.d/reactord.conf"))
        self.assertRegex(users, r"(?m)^u reactord ")
        tmpf = read(os.path.join(dest, prefix, "lib/tmpfiles.d/reactord.conf"))
        self.assertRegex(tmpf, r"(?m)^d /var/lib/reactord 0750 reactord reactord")


if __name__ == "__main__":
    unittest.main()
