#!/usr/bin/python3
"""test_master_multi.py - several build masters on one bucket
(reactor-buckets(7), MASTER): reactords sharing a redis-server the test
starts itself, one of them the executor with local workers, the others
masters of bucket "ci" that run their steps there.  Every Lease, Start and
Succeed is logged from the bucket's Redis event channel (the test's own
PSUBSCRIBE) and attributed to a master through that master's log, so the
tests check what happened, in order: 3 masters and many one-step builds
(each completed exactly once, never by two masters, no master above its
lease limit), a builder only one master has, on-shutdown reset, a master
SIGKILLed mid-build, a worker lost past its attempts, and Put -> Start
with and without pub/sub.

Built on harness.py.  Run by `make check`; by hand:
    /usr/bin/python3 t/integ/test_master_multi.py [NAME-SUBSTRING...]
MASTER_MULTI_N sets the build count of the 3-master test (default 1000).
"""

import json
import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import testbot as tb  # noqa: E402
from reactor.buckets.v1 import buckets_pb2 as bpb  # noqa: E402  (from REACTOR_GEN_PY)

PFX = "/reactor.buckets.v1.Buckets/"
NS = "reactor:"  # redis.prefix
EVENTS = NS + "{bb}:events:"
TIMEOUT = 10 * h.SLOW
N_BUILDS = int(os.environ.get("MASTER_MULTI_N", "1000"))

TRIVIAL = {"steps": [{"name": "only", "argv": ["true"], "cache": False}]}


def sleeper(flag, secs):
    """A one-step builder whose step sleeps in a shell named flag (the
    sandboxed step cannot touch a file of the test; h.procs_with(flag)
    shows it runs on a worker)."""
    return {"steps": [{"name": "nap", "argv": ["sh", "-c", "sleep %s; true" % secs, flag],
                       "cache": False}]}


class EventLog:
    """Every event of every bucket, in the order Redis published them,
    from a PSUBSCRIBE of the test's own: [(monotonic time, event dict)]."""

    STOP = EVENTS + "zz-test-stop"

    def __init__(self, sock):
        self.sock = sock
        self.events = []
        self.r = tb.Resp(sock)
        self.r.s.settimeout(None)
        reply = self.r("PSUBSCRIBE", EVENTS + "*")
        assert reply[0] == b"psubscribe", reply
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while True:
            try:
                msg = self.r._read()
            except (OSError, EOFError):
                return
            if msg[2] == self.STOP.encode():
                return
            self.events.append((time.monotonic(), json.loads(msg[3])))

    def stop(self):
        if self.t.is_alive():
            pub = tb.Resp(self.sock)
            pub("PUBLISH", self.STOP, "stop")
            pub.close()
            self.t.join(10)
        self.r.close()

    def of(self, bid):
        return [e["event"] for _, e in self.events if int(e["build_id"]) == bid]


class MultiCase(h.ReactordTestCase):
    def setUp(self):
        super().setUp()
        self.ext = self.start_redis()
        self.ex = None

    def redis_cfg(self):
        return {"embedded": False, "address": "unix:" + self.ext.sock,
                "reconnect-max": "200ms", "connect-timeout": "1s"}

    def common(self, name, level="info"):
        cfg = self.base_config(name)
        cfg["redis"] = self.redis_cfg()
        cfg["log"] = {"level": level, "access-log": False}
        cfg["buckets"] = {"expiry-interval": "100ms"}
        return cfg

    def start_executor(self, workers=2, **inst):
        """The reactord the masters' steps run on: execution on instance
        "", local workers.  It holds the CAS the masters upload to."""
        cfg = self.common("ex", level="warn")
        i = {"name": "", "execution": True, "storage": "memory", "no-worker-timeout": "60s",
             "max-attempts": 3}
        i.update(inst)
        cfg["instances"] = [i]
        cfg["scheduler"] = {"bot-session-keepalive": "2s", "safety-net-interval": "1s",
                            "sweep-interval": "100ms", "long-poll": "10s"}
        cfg["workers"] = {"local": workers}
        self.ex = self.start_reactord(cfg=cfg, name="ex")
        return self.ex

    def start_master(self, name, builders, level="info", **over):
        """A reactord that is a master of bucket ci (its own Buckets
        service, which shares the Redis) running steps on the executor."""
        cfg = self.common(name, level)
        m = {"name": name, "buckets": ["ci"], "executor": self.ex.unix_addr,
             "max-lease-count": 4, "poll-interval": "1s", "heartbeat-interval": "500ms",
             "lease-duration": "30s", "on-shutdown": "reset", "builders": builders}
        m.update(over)
        cfg["master"] = m
        srv = self.start_reactord(cfg=cfg, name=name)
        # The master starts once the listener is up; its first peek and
        # WatchBuilds follow at once.
        srv.wait_log(r"master %s of 1 bucket" % re.escape(name), 10)
        return srv

    def client(self, srv):
        ch = self.channel(srv.tcp_addr)
        self.put_ = h.unary(ch, PFX + "Put", bpb.PutRequest, bpb.BuildResponse)
        self.putb_ = h.unary(ch, PFX + "PutBatch", bpb.PutBatchRequest, bpb.PutBatchResponse)
        self.get_ = h.unary(ch, PFX + "Get", bpb.GetRequest, bpb.BuildResponse)
        return ch

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

    def wait_status(self, bid, status, timeout=30):
        return h.wait_for(lambda: (lambda b: b if b.status == status else None)(
            self.get(bid)), timeout, "build %d to be %s" % (bid, bpb.Status.Name(status)),
            0.02)

    def events(self):
        ev = EventLog(self.ext.sock)
        self.addCleanup(ev.stop)
        return ev

    def redis(self):
        r = tb.Resp(self.ext.sock)
        self.addCleanup(r.close)
        return r

    @staticmethod
    def logged(srv, what):
        """Build ids srv's master logged `what` for ("leased", "started",
        "completed (SUCCESS)" ...)."""
        rx = re.compile(r"master: build (\d+)(?: \([^)]*\))?: %s" % re.escape(what))
        return [int(m.group(1)) for m in rx.finditer(srv.log())]


class TestManyMasters(MultiCase):
    def test_three_masters_share_a_bucket(self):
        N, LIMIT = N_BUILDS, 4
        self.start_executor(workers=3)
        ev = self.events()
        ms = [self.start_master("m%d" % i, {"one": TRIVIAL}, **{"max-lease-count": LIMIT,
                                                               "heartbeat-interval": "1s"})
              for i in range(3)]
        self.client(self.ex)
        t0 = time.monotonic()
        ids = []
        for k in range(0, N, 100):
            req = bpb.PutBatchRequest(builds=[
                bpb.PutRequest(bucket="ci", parameters_json=json.dumps(
                    {"builder_name": "one", "properties": {"n": i}}))
                for i in range(k, min(N, k + 100))])
            resp = self.putb_(req, timeout=TIMEOUT)
            self.assertFalse(resp.HasField("error"), resp.error)
            for res in resp.results:
                self.assertFalse(res.HasField("error"), res.error)
                ids.append(res.build.id)
        self.assertEqual(len(set(ids)), N)
        r = self.redis()
        h.wait_for(lambda: r("ZCARD", NS + "{bb}:bucket:ci:COMPLETED") == N, 240,
                   "%d builds to complete" % N, 0.2)
        took = time.monotonic() - t0
        # The masters' last Succeed has been published: flush the log.
        ev.stop()
        print("%d builds by 3 masters in %.1fs (%.0f builds/s)" % (N, took, N / took))

        # Who leased what: every master logs the builds it leased, started
        # and completed; no build is in two masters' logs.
        owner = {}
        for m in ms:
            leased = self.logged(m, "leased")
            self.assertEqual(len(leased), len(set(leased)), "%s leased a build twice" % m.name)
            self.assertEqual(sorted(self.logged(m, "started")), sorted(leased), m.name)
            self.assertEqual(sorted(self.logged(m, "completed (SUCCESS)")), sorted(leased),
                             m.name)
            for bid in leased:
                self.assertNotIn(bid, owner, "build %d leased by %s and %s"
                                 % (bid, owner.get(bid), m.name))
                owner[bid] = m.name
            self.assertGreater(len(leased), 0, "%s ran nothing" % m.name)
        self.assertEqual(sorted(owner), sorted(ids))

        # Redis's own record, in publication order: each build put, leased,
        # started and succeeded exactly once (heartbeats aside), nothing
        # reset, expired or failed.
        seq = {bid: [] for bid in ids}
        for _, e in ev.events:
            if e["bucket"] == "ci" and e["event"] != "HEARTBEAT":
                seq[int(e["build_id"])].append(e["event"])
        bad = {bid: s for bid, s in seq.items() if s != ["PUT", "LEASE", "START", "SUCCEED"]}
        self.assertEqual(bad, {})

        # No master above its lease limit at any moment: walk the events
        # in order, counting each master's leases.
        held = {m.name: 0 for m in ms}
        peak = dict(held)
        for _, e in ev.events:
            if e["bucket"] != "ci":
                continue
            who = owner[int(e["build_id"])]
            if e["event"] == "LEASE":
                held[who] += 1
                peak[who] = max(peak[who], held[who])
                self.assertLessEqual(held[who], LIMIT, "%s above its limit at build %s"
                                     % (who, e["build_id"]))
            elif e["event"] == "SUCCEED":
                held[who] -= 1
        self.assertEqual(held, {m.name: 0 for m in ms})
        # The limit was binding (so the check above could fail).
        self.assertEqual(max(peak.values()), LIMIT, peak)

        # The final records: SUCCESS with the one step's record.
        for bid in ids[:: max(1, N // 50)]:
            b = self.get(bid)
            self.assertEqual((b.status, b.result), (bpb.COMPLETED, bpb.SUCCESS))
            self.assertEqual(b.leasee, "")
            steps = json.loads(b.result_details_json)["steps"]
            self.assertEqual([(s["name"], s["status"]) for s in steps], [("only", "SUCCESS")])
            self.assertTrue(b.url.endswith("/builds/%d" % bid))
            self.assertIn("reactor://%s/" % owner[bid], b.url)


class TestHandOver(MultiCase):
    def test_unknown_builder_left_for_a_master_that_has_it(self):
        self.start_executor(workers=1)
        ev = self.events()
        a = self.start_master("ma", {"one": TRIVIAL}, level="debug",
                              **{"poll-interval": "200ms"})
        self.client(a)
        bid = self.put("two", properties={"x": 1})
        mine = self.put("one")
        self.assertEqual(self.wait_status(mine, bpb.COMPLETED).result, bpb.SUCCESS)
        # A saw the build (on the event and on a few polls) and left it.
        a.wait_log(r"build %d: builder two is not ours" % bid, 10, count=3)
        b = self.get(bid)
        self.assertEqual((b.status, b.leasee, b.lease_key), (bpb.SCHEDULED, "", 0))
        self.assertEqual(ev.of(bid), ["PUT"])
        bm = self.start_master("mb", {"one": TRIVIAL, "two": TRIVIAL})
        done = self.wait_status(bid, bpb.COMPLETED)
        self.assertEqual(done.result, bpb.SUCCESS, done.result_details_json)
        self.assertIn("reactor://mb/", done.url)
        self.assertEqual(self.logged(bm, "leased"), [bid])
        self.assertNotIn(bid, self.logged(a, "leased"))

    def test_shutdown_reset_hands_over_at_once(self):
        self.start_executor(workers=2)
        ev = self.events()
        flag = "ran-" + os.path.basename(self.tmp)
        # ma's step outlasts the test, so only the hand-over can finish the
        # build, however slowly mb starts; mb's own run takes 2 s.
        slow = {"slow": sleeper(flag, 2)}
        # A long lease: only the reset can move the build quickly.
        a = self.start_master("ma", {"slow": sleeper(flag, 120)}, **{"lease-duration": "60s"})
        self.client(self.ex)
        bid = self.put("slow")
        self.assertEqual(self.wait_status(bid, bpb.STARTED).leasee, "ma")
        h.wait_for(lambda: h.procs_with(flag), 20, "the step to run")
        bm = self.start_master("mb", slow, **{"lease-duration": "60s"})
        t0 = time.monotonic()
        self.assertEqual(a.stop(), 0)
        self.assertIn("build %d: reset for another master" % bid, a.log())
        done = self.wait_status(bid, bpb.COMPLETED, 30)
        took = time.monotonic() - t0
        self.assertEqual(done.result, bpb.SUCCESS, done.result_details_json)
        self.assertIn("reactor://mb/", done.url)
        self.assertEqual(self.logged(bm, "leased"), [bid])
        # Well before the 60 s lease would have run out (2 s of step).
        self.assertLess(took, 15 * h.SLOW)
        seq = [e for e in ev.of(bid) if e != "HEARTBEAT"]
        self.assertEqual(seq, ["PUT", "LEASE", "START", "RESET", "LEASE", "START", "SUCCEED"])

    def test_sigkilled_master_lease_expires_and_build_moves(self):
        self.start_executor(workers=2)
        ev = self.events()
        flag = "ran-" + os.path.basename(self.tmp)
        slow = {"slow": sleeper(flag, 1)}
        short = {"lease-duration": "2s", "heartbeat-interval": "500ms", "poll-interval": "5s"}
        # As above: ma's step never finishes within the test, mb's takes 1 s.
        a = self.start_master("ma", {"slow": sleeper(flag, 120)}, **short)
        self.client(self.ex)
        bid = self.put("slow")
        self.assertEqual(self.wait_status(bid, bpb.STARTED).leasee, "ma")
        h.wait_for(lambda: h.procs_with(flag), 20, "the step to run")
        bm = self.start_master("mb", slow, **short)
        a.expected_rc = None
        t0 = time.monotonic()
        a.kill()
        done = self.wait_status(bid, bpb.COMPLETED, 30)
        took = time.monotonic() - t0
        self.assertEqual(done.result, bpb.SUCCESS, done.result_details_json)
        self.assertIn("reactor://mb/", done.url)
        self.assertEqual(self.logged(bm, "leased"), [bid])
        # Moved by the expiry (at most 2 s after a's last heartbeat), and
        # the expiry's event woke mb long before its 5 s poll.
        seq = [e for e in ev.of(bid) if e != "HEARTBEAT"]
        self.assertEqual(seq, ["PUT", "LEASE", "START", "EXPIRE", "LEASE", "START", "SUCCEED"])
        t_exp = next(t for t, e in ev.events if int(e["build_id"]) == bid
                     and e["event"] == "EXPIRE")
        t_lease2 = [t for t, e in ev.events if int(e["build_id"]) == bid
                    and e["event"] == "LEASE"][1]
        self.assertGreater(t_exp - t0, 1.0)
        self.assertLess(t_exp - t0, 4 * h.SLOW)
        self.assertLess(t_lease2 - t_exp, 1.0 * h.SLOW)
        self.assertLess(took, 15 * h.SLOW)


def worker_procs(srv):
    sock = next(a for a in srv.cfg["listen"] if a.startswith("unix:"))
    return [p for p, cmd in h.procs_with(sock)
            if "reactor-worker" in cmd and h.pid_alive(p)]


class TestInfra(MultiCase):
    def test_worker_lost_past_its_attempts_is_infra_failure(self):
        ex = self.start_executor(workers=1, **{"max-attempts": 1})
        flag = "ran-" + os.path.basename(self.tmp)
        m = self.start_master("ma", {"slow": sleeper(flag, 60)})
        self.client(m)
        bid = self.put("slow")
        self.wait_status(bid, bpb.STARTED)
        h.wait_for(lambda: h.procs_with(flag), 20, "the step to run")
        (victim,) = worker_procs(ex)
        os.kill(victim, signal.SIGKILL)
        b = self.wait_status(bid, bpb.COMPLETED, 30)
        self.assertEqual(b.result, bpb.FAILURE)
        self.assertEqual(b.failure_reason, bpb.INFRA_FAILURE, b.result_details_json)
        d = json.loads(b.result_details_json)
        self.assertIn("max-attempts", d["error"])
        self.assertIn("nap", d["error"])
        self.assertEqual([(s["name"], s["status"]) for s in d["steps"]],
                         [("nap", "INFRA_FAILURE")])
        self.assertIn("build %d: infrastructure failure" % bid, m.log())


class TestLatency(MultiCase):
    def put_to_start(self, n):
        out = []
        for i in range(n):
            t0 = time.monotonic()
            bid = self.put("one")
            h.wait_for(lambda: self.get(bid).status != bpb.SCHEDULED, 5,
                       "build %d to start" % bid, 0.005)
            out.append(time.monotonic() - t0)
            self.wait_status(bid, bpb.COMPLETED)
        return out

    def subscribers(self, r):
        """Redis clients subscribed to anything (CLIENT LIST sub=/psub=)."""
        lines = r("CLIENT", "LIST").decode().splitlines()
        return [ln for ln in lines
                if re.search(r" (?:p?sub)=([1-9]\d*)", ln)]

    def test_put_to_start_with_and_without_pubsub(self):
        self.start_executor(workers=1)
        m = self.start_master("ma", {"one": TRIVIAL}, **{"poll-interval": "1s"})
        self.client(m)
        r = self.redis()
        # Woken by the bucket's events: well under the 1 s poll.
        fast = self.put_to_start(5)
        self.assertLess(max(fast), 0.3 * h.SLOW, fast)
        # Pub/sub lost: every subscriber connection is killed and Redis
        # takes no new connection, so the events of the Puts below reach
        # nobody (reactord's WatchBuilds streams stay open, deaf) and only
        # the master's poll timer can find the builds.
        r("CONFIG", "SET", "maxclients", "1")
        self.addCleanup(r, "CONFIG", "SET", "maxclients", "10000")
        mark = m.log_mark()
        self.assertGreater(r("CLIENT", "KILL", "TYPE", "pubsub"), 0)
        m.wait_log(r"subscriber connection to \S+ lost", 5, since=mark)
        self.assertEqual(self.subscribers(r), [])
        slow = self.put_to_start(4)
        self.assertEqual(self.subscribers(r), [], "a subscriber got back in")
        self.assertLess(max(slow), 1.5 * h.SLOW, slow)
        print("Put -> Start with events: %s; without: %s"
              % (["%.0fms" % (x * 1000) for x in fast], ["%.0fms" % (x * 1000) for x in slow]))
        # Back to normal once the subscriber is back.
        mark = m.log_mark()
        r("CONFIG", "SET", "maxclients", "10000")
        m.wait_log(r"subscriber connection to \S+ up", 10, since=mark)
        h.wait_for(lambda: len(self.subscribers(r)) >= 2, 10, "both subscribers back")
        again = self.put_to_start(2)
        self.assertLess(max(again), 0.3 * h.SLOW, again)


if __name__ == "__main__":
    h.main()
