#!/usr/bin/python3
"""test_master.py - end-to-end tests of the build master inside reactord
(reactor-buckets(7), MASTER): a real reactord with a real redis-server and
local reactor-workers is a master of a bucket; builds are put with a
grpcio Buckets client and must be leased, started, run step by step as
REAPI actions on the workers and reported, with result details, step
records and worker tags; failing steps, unknown builders, invalid
parameters, the workspace carried between steps, the action cache and the
pub/sub wake-up (Put -> Start well under the poll interval).

Built on harness.py.  Run by `make check`; by hand:
    /usr/bin/python3 t/integ/test_master.py [NAME-SUBSTRING...]
"""

import json
import re
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from harness import pb  # noqa: E402
import testbot as tb  # noqa: E402
from reactor.buckets.v1 import buckets_pb2 as bpb  # noqa: E402  (from REACTOR_GEN_PY)

PFX = "/reactor.buckets.v1.Buckets/"
READ = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs"
TIMEOUT = 10 * h.SLOW

WRITE = ('printf "%s %s\\n" "$PROP_GREETING" "$PROP_TIMES" > out/greeting.txt && '
         'cp build.json out/ && mkdir -p tree/sub && echo deep > tree/sub/f.txt')
SHOW = 'cat out/greeting.txt tree/sub/f.txt && echo "change=$CHANGE_REVISION"'


def builders():
    return {
        "hello": {
            "properties": {"greeting": {"type": "string"}, "times": {"type": "int", "default": 2}},
            "steps": [
                {"name": "write", "argv": ["sh", "-c", WRITE], "cache": False,
                 "outputs": ["out/greeting.txt", "out/build.json", "tree"]},
                {"name": "show", "argv": ["sh", "-c", SHOW], "cache": False},
            ]},
        "failing": {
            "steps": [
                {"name": "ok", "argv": ["true"], "cache": False},
                {"name": "boom", "argv": ["sh", "-c", "echo boom >&2; exit 3"], "cache": False},
                {"name": "never", "argv": ["true"], "cache": False},
            ]},
        "cached": {
            "properties": {"x": {"type": "string"}},
            "steps": [
                {"name": "one", "argv": ["sh", "-c", 'echo "$PROP_X" > out.txt'],
                 "outputs": ["out.txt"]},
                {"name": "two", "argv": ["cat", "out.txt"]},
            ]},
    }


def master_config(poll="300ms", **over):
    m = {"buckets": ["ci"], "max-lease-count": 4, "poll-interval": poll,
         "heartbeat-interval": "500ms", "lease-duration": "5s", "on-shutdown": "reset",
         "builders": builders()}
    m.update(over)
    return {"instances": [{"name": "", "execution": True, "storage": "memory",
                           "no-worker-timeout": "60s", "max-attempts": 3}],
            "scheduler": {"bot-session-keepalive": "3s", "safety-net-interval": "1s",
                          "sweep-interval": "100ms", "long-poll": "10s"},
            "workers": {"local": 1},
            "master": m}


class MasterCase(h.ReactordTestCase):
    def start(self, **kw):
        srv = self.start_reactord(master_config(**kw))
        ch = self.channel(srv.tcp_addr)
        self.put_ = h.unary(ch, PFX + "Put", bpb.PutRequest, bpb.BuildResponse)
        self.get_ = h.unary(ch, PFX + "Get", bpb.GetRequest, bpb.BuildResponse)
        self.read_ = h.unary(ch, READ, pb().re.BatchReadBlobsRequest,
                             pb().re.BatchReadBlobsResponse)
        return srv, ch

    def put(self, builder, **params):
        p = {"builder_name": builder}
        p.update(params)
        r = self.put_(bpb.PutRequest(bucket="ci", parameters_json=json.dumps(p)),
                      timeout=TIMEOUT)
        self.assertFalse(r.HasField("error"), r.error)
        return r.build.id

    def get(self, bid):
        r = self.get_(bpb.GetRequest(id=bid), timeout=TIMEOUT)
        self.assertFalse(r.HasField("error"), r.error)
        return r.build

    def wait_done(self, bid, timeout=60):
        return h.wait_for(lambda: (lambda b: b if b.status == bpb.COMPLETED else None)(
            self.get(bid)), timeout, "build %d to complete" % bid, 0.05)

    def blob(self, ref):
        hsh, size = ref.split("/")
        if int(size) == 0:
            return b""
        r = self.read_(pb().re.BatchReadBlobsRequest(
            digests=[pb().re.Digest(hash=hsh, size_bytes=int(size))]), timeout=TIMEOUT)
        self.assertEqual(r.responses[0].status.code, 0, r.responses[0].status)
        return r.responses[0].data


class TestMaster(MasterCase):
    def test_build_runs_step_by_step_and_succeeds(self):
        srv, _ = self.start()
        bid = self.put("hello", properties={"greeting": "hi there"},
                       changes=[{"id": "c1", "revision": "abc123",
                                 "author": {"email": "a@example.com"}}])
        b = self.wait_done(bid)
        self.assertEqual(b.result, bpb.SUCCESS, b)
        self.assertTrue(b.url.startswith("reactor://") and b.url.endswith("/builds/%d" % bid),
                        b.url)
        self.assertTrue(b.started_ts > 0)
        d = json.loads(b.result_details_json)
        self.assertEqual(d["properties"], {"greeting": "hi there", "times": 2})
        self.assertEqual([s["name"] for s in d["steps"]], ["write", "show"])
        for s in d["steps"]:
            self.assertEqual(s["status"], "SUCCESS")
            self.assertEqual(s["exit_code"], 0)
            self.assertFalse(s["cached"])
            self.assertRegex(s["action_digest"], r"^[0-9a-f]{64}/\d+$")
            self.assertTrue(s["worker"])
        workers = sorted(t for t in b.tags if t.startswith("worker:"))
        self.assertEqual(workers, sorted({"worker:" + s["worker"] for s in d["steps"]}))
        # The second step read the first one's output, and the change's
        # fields came as environment variables.
        out = self.blob(d["steps"][1]["stdout_digest"]).decode()
        self.assertEqual(out, "hi there 2\ndeep\nchange=abc123\n")

    def test_property_defaults_and_overrides_reach_the_steps(self):
        srv, _ = self.start()
        bid = self.put("hello", properties={"greeting": "yo", "times": 5})
        b = self.wait_done(bid)
        self.assertEqual(b.result, bpb.SUCCESS, b.result_details_json)
        d = json.loads(b.result_details_json)
        self.assertEqual(self.blob(d["steps"][1]["stdout_digest"]).decode(),
                         "yo 5\ndeep\nchange=\n")

    def test_failing_step_stops_the_build(self):
        srv, _ = self.start()
        bid = self.put("failing")
        b = self.wait_done(bid)
        self.assertEqual(b.result, bpb.FAILURE)
        self.assertEqual(b.failure_reason, bpb.BUILD_FAILURE)
        d = json.loads(b.result_details_json)
        self.assertEqual([(s["name"], s["status"], s["exit_code"]) for s in d["steps"]],
                         [("ok", "SUCCESS", 0), ("boom", "FAILURE", 3)])
        self.assertIn("boom", d["error"])
        self.assertEqual(self.blob(d["steps"][1]["stderr_digest"]), b"boom\n")

    def test_invalid_parameters(self):
        srv, _ = self.start()
        missing = self.put("hello", properties={"times": 1})
        wrong = self.put("hello", properties={"greeting": 5})
        notint = self.put("hello", properties={"greeting": "a", "times": 1.5})
        for bid, words in ((missing, ["greeting", "required"]), (wrong, ["greeting", "string"]),
                           (notint, ["times", "int"])):
            b = self.wait_done(bid)
            self.assertEqual(b.result, bpb.FAILURE)
            self.assertEqual(b.failure_reason, bpb.INVALID_BUILD_DEFINITION)
            err = json.loads(b.result_details_json)["error"]
            for w in words:
                self.assertIn(w, err)

    def test_unknown_builder_is_left_scheduled(self):
        srv, _ = self.start()
        other = self.put("nobody-has-it")
        mine = self.put("failing")
        self.wait_done(mine)
        time.sleep(0.5)  # a few more poll intervals (300 ms)
        b = self.get(other)
        self.assertEqual(b.status, bpb.SCHEDULED)
        self.assertEqual(b.lease_key, 0)
        self.assertEqual(b.leasee, "")

    def test_identical_build_is_served_from_the_action_cache(self):
        srv, _ = self.start()
        first = self.wait_done(self.put("cached", properties={"x": "same"}))
        self.assertEqual(first.result, bpb.SUCCESS, first.result_details_json)
        second = self.wait_done(self.put("cached", properties={"x": "same"}))
        self.assertEqual(second.result, bpb.SUCCESS, second.result_details_json)
        a = json.loads(first.result_details_json)["steps"]
        b = json.loads(second.result_details_json)["steps"]
        self.assertEqual([s["cached"] for s in a], [False, False])
        self.assertEqual([s["cached"] for s in b], [True, True])
        self.assertEqual([s["action_digest"] for s in a], [s["action_digest"] for s in b])
        self.assertEqual(self.blob(b[1]["stdout_digest"]), b"same\n")

    def test_put_to_start_is_woken_by_events(self):
        srv, _ = self.start(poll="30s")
        time.sleep(0.3)  # let the first (start-up) peek go by
        t0 = time.monotonic()
        bid = self.put("hello", properties={"greeting": "fast"})
        h.wait_for(lambda: self.get(bid).status != bpb.SCHEDULED, 2, "the build to start",
                   0.01)
        took = time.monotonic() - t0
        self.assertLess(took, 2 * h.SLOW)
        b = self.wait_done(bid)
        self.assertEqual(b.result, bpb.SUCCESS)

    def test_lease_reset_from_outside_stops_the_build(self):
        over = builders()
        over["slow"] = {"steps": [{"name": "sleep", "argv": ["sleep", "30"], "cache": False}]}
        srv, ch = self.start(builders=over)
        reset = h.unary(ch, PFX + "Reset", bpb.ResetRequest, bpb.BuildResponse)
        bid = self.put("slow")
        h.wait_for(lambda: self.get(bid).status == bpb.STARTED, 20, "the build to start")
        r = reset(bpb.ResetRequest(id=bid), timeout=TIMEOUT)
        self.assertFalse(r.HasField("error"), r.error)
        h.wait_for(lambda: "build %d: lease lost" % bid in open(srv.log_path).read(), 10,
                   "the master to notice the lost lease")
        # Nothing was reported for it: it is not completed.
        self.assertNotEqual(self.get(bid).status, bpb.COMPLETED)

    def test_shutdown_resets_unfinished_builds(self):
        over = builders()
        over["slow"] = {"steps": [{"name": "sleep", "argv": ["sleep", "30"], "cache": False}]}
        srv, _ = self.start(builders=over)
        bid = self.put("slow")
        h.wait_for(lambda: self.get(bid).status == bpb.STARTED, 20, "the build to start")
        self.assertEqual(srv.stop(), 0)
        self.assertIn("reset for another master", open(srv.log_path).read())


# ---- the master's state in Redis: keys, restart, changes --------------------------------

NS = "reactor:"


class TestMasterState(MasterCase):
    """The master's durable state (reactor-redis(7), MASTER) against a
    redis-server of the test's own, so it outlives a killed reactord."""

    def state_config(self, name, ext, **over):
        cfg = h.deep_merge(self.base_config(name), master_config(**over))
        cfg["master"]["name"] = "m1"
        cfg["instances"][0]["storage"] = "disk"  # blobs outlive a restart
        cfg["redis"] = {"embedded": False, "address": "unix:" + ext.sock,
                        "reconnect-max": "200ms"}
        # A state dir shared by both runs, a ready-file and socket per run.
        cfg["state-dir"] = os.path.join(self.tmp, "state")
        cfg["listen"] = ["127.0.0.1:0"]
        return cfg

    def boot(self, name, ext, **over):
        srv = self.start_reactord(cfg=self.state_config(name, ext, **over), name=name)
        ch = self.channel(srv.tcp_addr)
        self.put_ = h.unary(ch, PFX + "Put", bpb.PutRequest, bpb.BuildResponse)
        self.get_ = h.unary(ch, PFX + "Get", bpb.GetRequest, bpb.BuildResponse)
        self.read_ = h.unary(ch, READ, pb().re.BatchReadBlobsRequest,
                             pb().re.BatchReadBlobsResponse)
        return srv

    def resp(self, ext):
        r = tb.Resp(ext.sock)
        self.addCleanup(r.close)
        return r

    @staticmethod
    def two_steps():
        over = builders()
        # The first step takes long enough to be interrupted; the second
        # uses its output.
        over["twostep"] = {"steps": [
            {"name": "first", "argv": ["sh", "-c", "sleep 2 && echo one > one.txt"],
             "cache": False, "outputs": ["one.txt"]},
            {"name": "second", "argv": ["sh", "-c", "cat one.txt"], "cache": False}]}
        return over

    def test_keys_exist_during_the_build_and_go_after(self):
        ext = self.start_redis()
        r = self.resp(ext)
        self.boot("ra", ext, builders=self.two_steps())
        bid = self.put("twostep")
        held = NS + "master:m1"
        bkey = NS + "master:m1:build:%d" % bid
        h.wait_for(lambda: r.hgetall(bkey).get("op"), 20, "the first step's operation")
        self.assertEqual(r("SMEMBERS", held), [str(bid).encode()])
        rec = r.hgetall(bkey)
        b = self.get(bid)
        self.assertEqual(b.status, bpb.STARTED)
        self.assertGreater(int(rec["lease_key"]), 0)
        self.assertEqual(b.leasee, "m1")
        self.assertEqual(rec["bucket"], b"ci")
        self.assertEqual(rec["builder"], b"twostep")
        self.assertEqual(rec["step"], b"0")
        self.assertEqual(json.loads(rec["records"]), [])
        st = r.hgetall(NS + "mstep:%d:0" % bid)
        self.assertEqual(st["name"], b"first")
        self.assertEqual(st["status"], b"RUNNING")
        self.assertEqual(st["operation"], rec["op"])
        self.assertEqual(st["master"], b"m1")
        self.assertEqual(r("TTL", NS + "mstep:%d:0" % bid), -1)

        done = self.wait_done(bid)
        self.assertEqual(done.result, bpb.SUCCESS, done.result_details_json)
        # Released: the held set and the build's hash are gone at once...
        h.wait_for(lambda: r("EXISTS", bkey) == 0, 5, "the build's hash to go")
        self.assertEqual(r("SMEMBERS", held), [])
        # ...and the step records stay readable for a while.
        steps = json.loads(done.result_details_json)["steps"]
        for i, s in enumerate(steps):
            k = NS + "mstep:%d:%d" % (bid, i)
            f = r.hgetall(k)
            self.assertEqual(f["name"].decode(), s["name"])
            self.assertEqual(f["status"], b"SUCCESS")
            self.assertEqual(f["exit_code"], b"0")
            self.assertEqual(f["action"].decode(), s["action_digest"])
            self.assertEqual(f["stdout"].decode(), s["stdout_digest"])
            self.assertEqual(f["worker"].decode(), s["worker"])
            self.assertEqual(int(f["duration_us"]), s["duration_us"])
            ttl = r("TTL", k)
            self.assertTrue(0 < ttl <= 86400, ttl)

    def plain(self, ext):
        """A reactord on the same Redis with no master and no workers (its
        own state dir: its CAS is not the master's)."""
        cfg = self.state_config("rp", ext)
        del cfg["master"]
        del cfg["workers"]
        cfg["state-dir"] = os.path.join(self.tmp, "rp-state")
        srv = self.start_reactord(cfg=cfg, name="rp")
        return srv, self.channel(srv.tcp_addr)

    def restart_mid_step(self, stop, forget_op=False, cancel_op=False):
        ext = self.start_redis()
        r = self.resp(ext)
        over = self.two_steps()
        srv = self.boot("ra", ext, builders=over, **{"on-shutdown": "abandon"})
        bid = self.put("twostep")
        bkey = NS + "master:m1:build:%d" % bid
        op = h.wait_for(lambda: r.hgetall(bkey).get("op"), 20, "the first step's operation")
        lease_key = int(r.hgetall(bkey)["lease_key"])
        before = self.get(bid)
        self.assertEqual(before.status, bpb.STARTED)
        stop(srv)
        # Still held: the lease, the record, the operation.
        self.assertEqual(r.hgetall(bkey).get("op"), op)
        if forget_op:
            self.assertEqual(r("DEL", NS + "op:" + op.decode()), 1)
        if cancel_op:
            p, ch = self.plain(ext)
            cancel = h.unary(ch, "/google.longrunning.Operations/CancelOperation",
                             pb().operations.CancelOperationRequest, None)
            cancel(pb().operations.CancelOperationRequest(name=op.decode()), timeout=TIMEOUT)
            self.assertEqual(p.stop(), 0)
        srv2 = self.boot("rb", ext, builders=over, **{"on-shutdown": "abandon"})
        srv2.wait_log(r"build %d \(ci, builder twostep\): resumed with lease key %d at step 1, "
                      r"operation %s" % (bid, lease_key, re.escape(op.decode())),
                      timeout=10)
        b = self.wait_done(bid)
        self.assertEqual(b.result, bpb.SUCCESS, b.result_details_json)
        # Started once (by the first run), completed once, each step once.
        self.assertEqual(b.started_ts, before.started_ts)
        d = json.loads(b.result_details_json)
        self.assertEqual([(s["name"], s["status"]) for s in d["steps"]],
                         [("first", "SUCCESS"), ("second", "SUCCESS")])
        self.assertEqual(self.blob(d["steps"][1]["stdout_digest"]), b"one\n")
        self.assertNotIn("build %d: completed" % bid, open(srv.log_path).read())
        self.assertEqual(srv2.log().count("build %d: completed" % bid), 1)
        self.assertNotIn("build %d: leased" % bid, srv2.log())
        if forget_op or cancel_op:
            # The operation was unknown, or cancelled while no master
            # watched it: the step ran again, once.
            srv2.wait_log(r"build %d: step first: operation %s cannot be resumed \((%s)"
                          % (bid, re.escape(op.decode()),
                             "cancelled" if cancel_op else "operation .* not found"))
            self.assertEqual(srv2.log().count("build %d: step 1/2 first" % bid), 1)
        else:
            # Re-attached to the running operation, not run again.
            self.assertNotIn("cannot be resumed", srv2.log())
            self.assertNotIn("build %d: step 1/2 first" % bid, srv2.log())
        h.wait_for(lambda: r("EXISTS", bkey) == 0, 5, "the build's hash to go")
        self.assertEqual(r("SMEMBERS", NS + "master:m1"), [])

    def test_restart_after_sigterm_with_abandon_resumes(self):
        def stop(srv):
            self.assertEqual(srv.stop(), 0)
            self.assertIn("abandoned to their lease expiry", open(srv.log_path).read())
        self.restart_mid_step(stop)

    def test_restart_after_sigkill_resumes(self):
        def stop(srv):
            srv.expected_rc = None
            srv.kill()
        self.restart_mid_step(stop)

    def test_restart_with_the_operation_gone_runs_the_step_again(self):
        self.restart_mid_step(lambda srv: self.assertEqual(srv.stop(), 0), forget_op=True)

    def test_restart_with_the_operation_cancelled_runs_the_step_again(self):
        self.restart_mid_step(lambda srv: self.assertEqual(srv.stop(), 0), cancel_op=True)

    def test_expired_lease_is_dropped_on_restart(self):
        ext = self.start_redis()
        r = self.resp(ext)
        over = self.two_steps()
        srv = self.boot("ra", ext, builders=over, **{"on-shutdown": "abandon",
                                                      "lease-duration": "1s"})
        bid = self.put("twostep")
        bkey = NS + "master:m1:build:%d" % bid
        h.wait_for(lambda: r.hgetall(bkey).get("op"), 20, "the first step's operation")
        self.assertEqual(srv.stop(), 0)
        # Another reactord (no master) sees the lease expire and the build
        # go back to SCHEDULED; then the master comes back.
        _, ch = self.plain(ext)
        get = h.unary(ch, PFX + "Get", bpb.GetRequest, bpb.BuildResponse)
        h.wait_for(lambda: get(bpb.GetRequest(id=bid), timeout=TIMEOUT).build.status
                   == bpb.SCHEDULED, 20, "the lease to expire")
        self.assertEqual(r.hgetall(bkey).get("builder"), b"twostep")  # still recorded
        srv2 = self.boot("rb", ext, builders=over, **{"on-shutdown": "abandon"})
        srv2.wait_log(r"build %d: no longer ours" % bid, timeout=10)
        # The build is run afresh under a new lease (by this master too).
        b = self.wait_done(bid)
        self.assertEqual(b.result, bpb.SUCCESS, b.result_details_json)
        self.assertIn("build %d (ci, builder twostep): leased" % bid, srv2.log())
        self.assertNotIn("resumed", srv2.log())

    def test_reset_and_lost_leases_drop_the_record(self):
        ext = self.start_redis()
        r = self.resp(ext)
        over = self.two_steps()
        srv = self.boot("ra", ext, builders=over)  # on-shutdown: reset
        ch = self.channel(srv.tcp_addr)
        reset = h.unary(ch, PFX + "Reset", bpb.ResetRequest, bpb.BuildResponse)
        held = NS + "master:m1"
        lost, handed = self.put("twostep"), self.put("twostep")
        for bid in (lost, handed):
            h.wait_for(lambda: r.hgetall(NS + "master:m1:build:%d" % bid).get("op"), 20,
                       "build %d's first operation" % bid)
        self.assertEqual(sorted(r("SMEMBERS", held)), sorted([b"%d" % lost, b"%d" % handed]))
        # A lease reset from outside: the master lets the build go.
        self.assertFalse(reset(bpb.ResetRequest(id=lost), timeout=TIMEOUT).HasField("error"))
        srv.wait_log(r"build %d: lease lost" % lost, timeout=10)
        h.wait_for(lambda: r("EXISTS", NS + "master:m1:build:%d" % lost) == 0, 20,
                   "the lost build's hash to go")
        self.assertGreater(r("TTL", NS + "mstep:%d:0" % lost), 0)
        self.assertEqual(r("SMEMBERS", held), [b"%d" % handed])
        # A shutdown with on-shutdown: reset hands the other one over:
        # nothing is left to resume.
        self.assertEqual(srv.stop(), 0)
        self.assertEqual(r("EXISTS", NS + "master:m1:build:%d" % handed), 0)
        self.assertEqual(r("SMEMBERS", held), [])

    def test_change_recorded_once_and_reused(self):
        ext = self.start_redis()
        r = self.resp(ext)
        over = builders()
        over["showchange"] = {"steps": [
            {"name": "cat", "argv": ["sh", "-c", 'cat build.json; echo "$CHANGE_SUBJECT"'],
             "cache": False}]}
        self.boot("ra", ext, builders=over)
        change = {"id": "I42", "revision": "deadbeef", "author": {"email": "a@example.com"},
                  "subject": "first words"}
        one = self.wait_done(self.put("showchange", changes=[change]))
        self.assertEqual(one.result, bpb.SUCCESS, one.result_details_json)
        # A later build names the same change with other details: the
        # recorded change is what it runs with.
        other = dict(change, subject="changed words", author={"email": "b@example.com"})
        two = self.wait_done(self.put("showchange", changes=[other]))
        self.assertEqual(two.result, bpb.SUCCESS, two.result_details_json)
        self.assertEqual(r("KEYS", NS + "mchange:*"),
                         [(NS + "mchange:I42:deadbeef").encode()])
        f = r.hgetall(NS + "mchange:I42:deadbeef")
        self.assertEqual(f["id"], b"I42")
        self.assertEqual(f["revision"], b"deadbeef")
        self.assertEqual(f["builds"], b"2")
        self.assertEqual(int(f["first_build"]), one.id)
        self.assertEqual(int(f["last_build"]), two.id)
        self.assertEqual(json.loads(f["json"]), change)
        # The second build's build.json and environment carry the
        # recorded change.
        out = self.blob(json.loads(two.result_details_json)["steps"][0]["stdout_digest"])
        bj, subject = out.decode().rsplit("\n", 2)[:2]
        self.assertEqual(json.loads(bj)["changes"], [change])
        self.assertEqual(subject, "first words")
        # A different revision is another change; ':' in a name is escaped.
        three = self.wait_done(self.put("showchange",
                                        changes=[dict(change, revision="cafe"),
                                                 dict(change, id="p:7")]))
        self.assertEqual(three.result, bpb.SUCCESS)
        self.assertEqual(sorted(r("KEYS", NS + "mchange:*")),
                         sorted([(NS + "mchange:I42:deadbeef").encode(),
                                 (NS + "mchange:I42:cafe").encode(),
                                 (NS + "mchange:p%3A7:deadbeef").encode()]))
        self.assertEqual(r.hgetall(NS + "mchange:I42:deadbeef")["builds"], b"2")


if __name__ == "__main__":
    h.main()
