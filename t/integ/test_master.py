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
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from harness import pb  # noqa: E402
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


if __name__ == "__main__":
    h.main()
