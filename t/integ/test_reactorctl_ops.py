#!/usr/bin/python3
"""test_reactorctl_ops.py - reactorctl's op, ac, bot, queue and build
commands against real reactord and redis-server processes: scripted bots
(testbot.Bot) for the operation, cache, bot and queue commands, and a
reactord running its master with a local reactor-worker for the build
commands.  Each command's table output, its --json (parsed here) and its
exit code (0 ok, 1 the remote operation failed, 2 usage, 3 cannot
connect), including the error paths.

Run by `make check`; by hand: /usr/bin/python3 t/integ/test_reactorctl_ops.py [NAME...]
"""

import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import test_admin as ta  # noqa: E402
import testbot as tb  # noqa: E402
from reactor.admin.v1 import admin_pb2 as apb  # noqa: E402

GPU = (("OSFamily", "linux"), ("pool", "gpu"))


def dstr(d):
    return "%s/%d" % (d.hash, d.size_bytes)


class CtlCase(h.ReactordTestCase):
    def ctl(self, *args, timeout=60):
        return subprocess.run([h.REACTORCTL, "-s", self.srv.tcp_addr, *args],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=timeout * h.SLOW)

    def ok(self, *args):
        r = self.ctl(*args)
        self.assertEqual(r.returncode, 0, "%s: %s%s" % (args, r.stdout, r.stderr))
        return r.stdout

    def js(self, *args):
        return json.loads(self.ok("--json", *args))

    def fails(self, rc, *args, needle=None):
        r = self.ctl(*args)
        self.assertEqual(r.returncode, rc, "%s: %s%s" % (args, r.stdout, r.stderr))
        if needle:
            self.assertIn(needle, r.stderr)
        return r


class TestOpsCommands(CtlCase):
    def setUp(self):
        super().setUp()
        cfg = {"instances": [{"name": "", "execution": True, "storage": "memory",
                              "platform-properties": ["pool"], "no-worker-timeout": "5m",
                              "operation-retention": "5m"}],
               "scheduler": {"bot-session-keepalive": "30s", "long-poll": "1s",
                             "sweep-interval": "100ms"}}
        self.srv = self.start_reactord(cfg)
        self.ch = self.channel(self.srv.tcp_addr)

    def bot(self, bot_id, **kw):
        b = tb.Bot(self.srv.tcp_addr, bot_id, **kw)
        self.addCleanup(b.stop)
        b.start()
        return b

    def action(self, *args, **kw):
        d, blobs = tb.make_action(args or ("true",), salt=os.urandom(8), **kw)
        tb.upload(self.ch, blobs)
        return d

    def test_op_ac_bot_queue(self):
        bot = self.bot("gpu-1", props=GPU, mode="hang")
        d1 = self.action("sleep", "100", platform=GPU)
        s1 = tb.execute(self.ch, d1)
        op1 = next(s1).name
        h.wait_for(lambda: bot.got, 10 * h.SLOW, "the lease")
        s2 = tb.execute(self.ch, self.action("true", platform=GPU))
        op2 = next(s2).name

        # bot ls: the bot, its lease and operation, last seen.
        def active():
            j = self.js("bot", "ls")
            return j if j["bots"] and j["bots"][0]["lease_state"] == "ACTIVE" else None
        j = h.wait_for(active, 10 * h.SLOW, "ACTIVE in bot ls")
        b = j["bots"][0]
        self.assertEqual((b["bot_id"], b["state"], b["busy"]), ("gpu-1", "OK", True))
        self.assertEqual(b["lease_operations"], [op1])
        self.assertEqual(b["lease_action_digest"], dstr(d1))
        out = self.ok("bot", "ls").splitlines()
        self.assertRegex(out[0], r"^BOT\s+STATE\s+LEASE\s+OPERATION\s+LAST SEEN\s+PROPERTIES")
        self.assertRegex(out[1], r"^gpu-1\s+OK\s+ACTIVE\s+%s\s+(just now|\d+s ago)\s+"
                                 r"OSFamily=linux;pool=gpu$" % op1)

        # queue ls: one queued behind the busy bot.
        j = self.js("queue", "ls")
        self.assertEqual([(q["platform"], q["queued"], q["bots"], q["bots_busy"])
                          for q in j["queues"]], [("OSFamily=linux;pool=gpu", 1, 1, 1)])
        out = self.ok("queue", "ls").splitlines()
        self.assertRegex(out[0], r"^PLATFORM\s+QUEUED\s+OLDEST\s+BOTS\s+BUSY$")
        self.assertRegex(out[1], r"^OSFamily=linux;pool=gpu\s+1\s+(just now|\d+s ago)\s+1\s+1$")

        # op ls: both, newest first; --stage filters (any case).
        j = self.js("op", "ls")
        self.assertEqual([o["name"] for o in j["operations"]], [op2, op1])
        self.assertEqual(j["operations"][1]["bot_id"], "gpu-1")
        self.assertIsNone(j["operations"][1]["exit_code"])
        j = self.js("op", "ls", "--stage", "queued")
        self.assertEqual([o["name"] for o in j["operations"]], [op2])
        out = self.ok("op", "ls", "--stage", "EXECUTING").splitlines()
        self.assertRegex(out[0], r"^NAME\s+STAGE\s+CREATED\s+BOT\s+EXIT\s+STATUS$")
        self.assertRegex(out[1], r"^%s\s+EXECUTING\s+(just now|\d+s ago)\s+gpu-1\s+-\s+-$" % op1)
        self.assertEqual(len(out), 2)
        self.fails(1, "op", "ls", "--stage", "RUNNING", needle="INVALID_ARGUMENT: unknown stage")
        self.fails(2, "op", "ls", "--bogus")

        # op get while running.
        j = self.js("op", "get", op1)
        self.assertEqual((j["name"], j["stage"], j["done"], j["action_digest"]),
                         (op1, "EXECUTING", False, dstr(d1)))
        self.assertIn("stage:   EXECUTING", self.ok("op", "get", op1))
        self.fails(1, "op", "get", "no-such-op", needle="NOT_FOUND")
        self.fails(2, "op", "get")

        # op cancel, then op wait reports the failure (exit 1).
        self.assertEqual(self.ok("op", "cancel", op1).strip(), "cancelled %s" % op1)
        r = self.fails(1, "op", "wait", op1)
        self.assertIn("status:  CANCELLED", r.stdout)
        j = json.loads(self.fails(1, "--json", "op", "wait", op1).stdout)
        self.assertEqual((j["done"], j["status_code"]), (True, 1))
        self.fails(1, "op", "cancel", "no-such-op", needle="NOT_FOUND")
        for s in (s1, s2):
            s.cancel()

    def test_op_wait_and_ac_get(self):
        self.bot("b1", mode="active", stdout=b"hi\n", delay=0.5)
        d_ok = self.action("echo", "hi")
        op = next(tb.execute(self.ch, d_ok)).name
        # op wait follows the stages (stderr) and exits 0 on success.
        r = self.ctl("op", "wait", op)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("COMPLETED", r.stderr)
        self.assertIn("exit:    0", r.stdout)
        self.assertIn("worker:  b1", r.stdout)
        j = self.js("op", "wait", op)
        self.assertEqual((j["stage"], j["exit_code"], j["worker"]), ("COMPLETED", 0, "b1"))
        # ac get: the cached result.
        j = self.js("ac", "get", dstr(d_ok))
        self.assertEqual((j["exit_code"], j["worker"]), (0, "b1"))
        self.assertEqual(j["stdout_digest"], "")  # the bot inlines stdout_raw
        out = self.ok("ac", "get", dstr(d_ok))
        self.assertIn("exit:    0", out)
        self.fails(1, "ac", "get", "%s/1" % ("0" * 64), needle="NOT_FOUND")
        self.fails(2, "ac", "get", "nonsense")
        # op ls shows the exit code of the finished one.
        j = self.js("op", "ls", "--stage", "COMPLETED")
        self.assertEqual([(o["name"], o["exit_code"]) for o in j["operations"]], [(op, 0)])

    def test_failed_action_wait_exits_1(self):
        self.bot("b2", exit_code=3)
        d = self.action("false")
        op = next(tb.execute(self.ch, d)).name
        r = self.fails(1, "op", "wait", op)
        self.assertIn("exit:    3", r.stdout)

    def test_unreachable(self):
        r = subprocess.run([h.REACTORCTL, "-s", "unix:%s/nope.sock" % self.tmp, "bot", "ls"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 3, r.stderr)


class TestHelp(CtlCase):
    def test_help_lists_every_summary(self):
        """`reactorctl help` wraps a long synopsis and keeps every command's
        summary (build put's was cut off with its synopsis)."""
        r = subprocess.run([h.REACTORCTL, "help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        for summary in ("schedule a build", "run a command remotely and wait for it",
                        "list the builds of a bucket", "list the instance's operations"):
            self.assertIn(summary, out)
        flat = " ".join(out.split())
        self.assertIn("build put --bucket B --builder NAME [--prop K=V]... [--tag K:V]... "
                      "[--change-json FILE] schedule a build", flat)
        self.assertIn("-- CMD [ARGS...] run a command remotely", flat)
        for line in out.splitlines():
            if line.startswith("  ") and "  " in line.strip():
                self.assertLessEqual(len(line.split("  ")[1]) + 2, 80, line)


@unittest.skipUnless(ta.auth_supported(), "reactord has no auth: config section")
class TestOpLsFallback(CtlCase):
    def test_op_ls_without_ops_admin(self):
        from harness import pb
        ids = {"dev": ["cas-read", "cas-write", "execute"],
               "other": ["cas-read", "cas-write", "execute"],
               "oper": ["ops-admin"]}
        path, tokens = ta.write_tokens(self.tmp, ids)
        tfile = {}
        for ident, tok in tokens.items():
            tfile[ident] = os.path.join(self.tmp, ident + ".token")
            with open(tfile[ident], "w") as f:
                f.write(tok + "\n")
        self.srv = self.start_reactord({
            "instances": [{"name": "", "execution": True, "storage": "memory",
                           "no-worker-timeout": "5m"}],
            "auth": {"tokens-file": path}})
        ch = self.channel(self.srv.tcp_addr)
        re_ = pb().re
        names, streams = {}, []
        for ident in ("dev", "other"):
            md = [("authorization", "Bearer " + tokens[ident])]
            d, blobs = tb.make_action(("true",), salt=os.urandom(8))
            req = re_.BatchUpdateBlobsRequest(requests=[
                re_.BatchUpdateBlobsRequest.Request(digest=tb.digest_of(b), data=b)
                for b in blobs.values()])
            h.unary(ch, tb.CAS_UPDATE, re_.BatchUpdateBlobsRequest,
                    re_.BatchUpdateBlobsResponse)(req, timeout=10 * h.SLOW, metadata=md)
            st = h.server_stream(ch, tb.EXEC + "Execute", pb().operations.Operation)(
                re_.ExecuteRequest(action_digest=d), timeout=60 * h.SLOW, metadata=md)
            streams.append(st)
            names[ident] = next(st).name
        self.addCleanup(lambda: [st.cancel() for st in streams])
        # Without ops-admin: the caller's own operations, said on stderr at -v.
        r = self.ctl("--token-file", tfile["dev"], "-v", "--json", "op", "ls")
        self.assertEqual(r.returncode, 0, r.stderr)
        j = json.loads(r.stdout)
        self.assertEqual([o["name"] for o in j["operations"]], [names["dev"]])
        self.assertEqual(j["operations"][0]["stage"], "QUEUED")
        self.assertIn("google.longrunning", r.stderr)
        self.assertIn("PERMISSION_DENIED", r.stderr)
        r = self.ctl("--token-file", tfile["dev"], "op", "ls")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        self.assertIn(names["dev"], r.stdout)
        self.assertNotIn(names["other"], r.stdout)
        j = json.loads(self.ctl("--token-file", tfile["other"], "--json", "op", "ls",
                                "--stage", "executing").stdout)
        self.assertEqual(j["operations"], [])
        # An ops-admin lists everyone's through the Admin service.
        r = self.ctl("--token-file", tfile["oper"], "-v", "--json", "op", "ls")
        self.assertEqual(r.returncode, 0, r.stderr)
        j = json.loads(r.stdout)
        self.assertEqual(sorted(o["name"] for o in j["operations"]), sorted(names.values()))
        self.assertEqual(sorted(o["owner"] for o in j["operations"]), ["dev", "other"])
        self.assertNotIn("google.longrunning", r.stderr)


def master_config():
    builders = {
        "hello": {
            "properties": {"greeting": {"type": "string"},
                           "times": {"type": "int", "default": 1}},
            "steps": [
                {"name": "write", "argv": ["sh", "-c",
                                           'echo "$PROP_GREETING x$PROP_TIMES"; echo warn >&2'],
                 "cache": False},
                {"name": "show", "argv": ["sh", "-c", 'echo "change=$CHANGE_REVISION"'],
                 "cache": False},
            ]},
        "failing": {"steps": [{"name": "boom", "argv": ["sh", "-c", "echo boom >&2; exit 3"],
                               "cache": False}]},
        "slow": {"steps": [{"name": "wait", "argv": ["sleep", "60"], "cache": False}]},
    }
    return {"instances": [{"name": "", "execution": True, "storage": "memory",
                           "no-worker-timeout": "60s", "max-attempts": 3}],
            "scheduler": {"bot-session-keepalive": "3s", "safety-net-interval": "1s",
                          "sweep-interval": "100ms", "long-poll": "10s"},
            "workers": {"local": 1},
            "master": {"buckets": ["ci"], "max-lease-count": 4, "poll-interval": "300ms",
                       "heartbeat-interval": "500ms", "lease-duration": "5s",
                       "on-shutdown": "reset", "builders": builders},
            "http": ["127.0.0.1:0"]}


class TestBuildCommands(CtlCase):
    def setUp(self):
        super().setUp()
        self.srv = self.start_reactord(master_config())

    def wait_done(self, bid):
        return h.wait_for(lambda: (lambda j: j if j["status"] == "COMPLETED" else None)(
            self.js("build", "get", str(bid))), 60 * h.SLOW, "build %d to complete" % bid, 0.1)

    def test_put_get_ls_log(self):
        chg = os.path.join(self.tmp, "change.json")
        with open(chg, "w") as f:
            json.dump({"id": "c1", "revision": "abc123", "author": {"email": "a@example.com"}}, f)
        out = self.ok("build", "put", "--bucket", "ci", "--builder", "hello",
                      "--prop", "greeting=<hi there>", "--prop", "times=3",
                      "--change-json", chg, "--tag", "team:infra")
        bid = int(out.strip())
        b = self.wait_done(bid)
        self.assertEqual((b["id"], b["bucket"], b["builder"], b["result"]),
                         (str(bid), "ci", "hello", "SUCCESS"))
        self.assertIn("team:infra", b["tags"])
        self.assertEqual(json.loads(b["parameters_json"])["properties"],
                         {"greeting": "<hi there>", "times": 3})
        out = self.ok("build", "get", str(bid))
        self.assertIn("builder:   hello", out)
        self.assertIn("result:    SUCCESS", out)
        # A failing build.
        fid = int(self.ok("build", "put", "--bucket", "ci", "--builder", "failing").strip())
        f = self.wait_done(fid)
        self.assertEqual((f["result"], f["failure_reason"]), ("FAILURE", "BUILD_FAILURE"))
        # ls: newest first, filters by result and tag.
        j = self.js("build", "ls", "--bucket", "ci")
        self.assertEqual([x["id"] for x in j["builds"]], [str(fid), str(bid)])
        j = self.js("build", "ls", "--bucket", "ci", "--status", "success")
        self.assertEqual([x["id"] for x in j["builds"]], [str(bid)])
        j = self.js("build", "ls", "--bucket", "ci", "--tag", "team:infra")
        self.assertEqual([x["id"] for x in j["builds"]], [str(bid)])
        out = self.ok("build", "ls", "--bucket", "ci").splitlines()
        self.assertRegex(out[0], r"^ID\s+BUILDER\s+STATUS\s+RESULT\s+CREATED$")
        self.assertRegex(out[1], r"^%d\s+failing\s+COMPLETED\s+FAILURE \(BUILD_FAILURE\)\s+"
                         % fid)
        self.assertRegex(out[2], r"^%d\s+hello\s+COMPLETED\s+SUCCESS\s+" % bid)
        self.fails(2, "build", "ls", "--bucket", "ci", "--status", "sideways")
        self.fails(2, "build", "ls")
        # log: every step with a header, or one step (stderr apart).
        out = self.ok("build", "log", str(bid))
        self.assertRegex(out, r"== step 1 write: SUCCESS, exit 0, [^=]+ ==\n"
                              r"<hi there> x3\nwarn\n== step 2 show: SUCCESS, exit 0, "
                              r"[^=]+ ==\nchange=abc123\n")
        r = self.ctl("build", "log", str(bid), "write")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "<hi there> x3\n", "warn\n"))
        self.assertEqual(self.ok("build", "log", str(bid), "2"), "change=abc123\n")
        j = self.js("build", "log", str(fid))
        self.assertEqual([(s["name"], s["status"], s["exit_code"]) for s in j["steps"]],
                         [("boom", "FAILURE", 3)])
        r = self.ctl("build", "log", str(fid), "boom")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", "boom\n"))
        self.fails(1, "build", "log", str(bid), "nope", needle="no step")
        # The Admin summary counts the bucket's builds and names the master.
        ch = self.channel(self.srv.tcp_addr)
        s = h.unary(ch, "/reactor.admin.v1.Admin/GetSummary", apb.GetSummaryRequest,
                    apb.Summary)(apb.GetSummaryRequest(), timeout=10 * h.SLOW)
        self.assertEqual([(x.bucket, x.scheduled, x.started, x.completed) for x in s.buckets],
                         [("ci", 0, 0, 2)])
        self.assertNotEqual(s.master, "")
        self.assertEqual((s.master_leases, s.builds_leased), (0, 0))
        self.fails(1, "build", "get", "12345", needle="BUILD_NOT_FOUND")
        self.fails(2, "build", "get", "x12")
        self.fails(2, "build", "put", "--bucket", "ci")
        self.fails(1, "build", "put", "--bucket", "ci", "--builder", "hello", "--change-json",
                   os.path.join(self.tmp, "missing.json"))

    def test_master_leases_while_running(self):
        """While the master runs a build, GetSummary and /metrics count its
        lease (reactor_master_leases{master} 1); none once it is cancelled."""
        import test_metrics as tm
        bid = int(self.ok("build", "put", "--bucket", "ci", "--builder", "slow").strip())
        h.wait_for(lambda: self.js("build", "get", str(bid))["status"] == "STARTED",
                   30 * h.SLOW, "build %d STARTED" % bid, 0.1)
        ch = self.channel(self.srv.tcp_addr)
        summary = h.unary(ch, "/reactor.admin.v1.Admin/GetSummary", apb.GetSummaryRequest,
                          apb.Summary)

        def leases():
            s = summary(apb.GetSummaryRequest(), timeout=10 * h.SLOW)
            status, _, body = tm.http_get(self.srv.http_url + "/metrics")
            self.assertEqual(status, 200)
            fams = tm.parse_metrics(self, body.decode())
            return (s.master_leases, s.builds_leased,
                    tm.value_of(fams, "reactor_master_leases", master=s.master))

        self.assertEqual(leases(), (1, 1, 1.0))
        self.ok("build", "cancel", str(bid))
        h.wait_for(lambda: leases() == (0, 0, 0.0), 30 * h.SLOW, "the lease released", 0.1)

    def test_cancel_and_watch(self):
        # "held" is no master's bucket: its builds stay SCHEDULED.
        w = subprocess.Popen([h.REACTORCTL, "-s", self.srv.tcp_addr, "build", "watch",
                              "--bucket", "held"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (w.poll() is None and w.kill(), w.wait()))
        # The watch is set up when the server has answered its headers;
        # put builds until the first event shows up.
        bid = None
        deadline = time.time() + 20 * h.SLOW
        import select
        line = ""
        while time.time() < deadline and not line:
            bid = int(self.ok("build", "put", "--bucket", "held", "--builder", "hello").strip())
            ready, _, _ = select.select([w.stdout], [], [], 1.0)
            if ready:
                line = w.stdout.readline()
        self.assertRegex(line, r"^\d\d:\d\d:\d\d  \d+  hello  SCHEDULED$")
        # Cancel the latest: the watcher prints it completed.
        out = self.ok("build", "cancel", str(bid))
        self.assertEqual(out.strip(), "%d CANCELED (CANCELED_EXPLICITLY)" % bid)
        want = r"^\d\d:\d\d:\d\d  %d  hello  COMPLETED  CANCELED \(CANCELED_EXPLICITLY\)$" % bid
        seen = []
        while time.time() < deadline:
            ready, _, _ = select.select([w.stdout], [], [], 1.0)
            if ready:
                seen.append(w.stdout.readline())
                if any(__import__("re").match(want, s) for s in seen):
                    break
        self.assertTrue(any(__import__("re").match(want, s) for s in seen), seen)
        self.assertIsNone(w.poll(), "build watch must keep following")
        j = self.js("build", "get", str(bid))
        self.assertEqual((j["status"], j["result"]), ("COMPLETED", "CANCELED"))
        # Cancelling again answers the same; an unknown build fails.
        self.ok("build", "cancel", str(bid))
        self.fails(1, "build", "cancel", "999", needle="BUILD_NOT_FOUND")


if __name__ == "__main__":
    unittest.main()
