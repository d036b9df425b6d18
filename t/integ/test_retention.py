#!/usr/bin/python3
"""test_retention.py - what clients grow in Redis is bounded (issue 11,
part 4): action-cache entries expire after action-cache.retention and a
hit extends them; completed builds go after buckets.retention with every
index entry naming them; tags per build and per Search are capped
(buckets.max-tags); the scheduler's platform set holds only platforms with
waiting work and is capped (scheduler.max-platforms), so junk platforms
neither slow the sweep for good nor survive a restart; and a bot's
COMPLETED report retried after a lost reply still lands in the action
cache, once.

Every check reads the real redis-server reactord runs (its unix socket).
Run by `make check`; by hand: /usr/bin/python3 t/integ/test_retention.py [NAME...]
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import testbot as tb  # noqa: E402
from harness import grpc, pb  # noqa: E402
from reactor.buckets.v1 import buckets_pb2 as bpb  # noqa: E402

NS = "reactor:"
BB = NS + "{bb}:"
RE = "/build.bazel.remote.execution.v2."
BK = "/reactor.buckets.v1.Buckets/"


def exec_config(sched=None, **inst):
    i = {"name": "", "execution": True, "storage": "memory",
         "platform-properties": ["pool"], "no-worker-timeout": "1h",
         "operation-retention": "1m"}
    i.update(inst)
    s = {"bot-session-keepalive": "5s", "safety-net-interval": "1s",
         "keepalive-interval": "30s", "sweep-interval": "50ms", "long-poll": "1s"}
    s.update(sched or {})
    return {"instances": [i], "scheduler": s}


def ac_key(d, instance=""):
    return "%sac:%s:%s-%d" % (NS, instance, d.hash, d.size_bytes)


class Case(h.ReactordTestCase):
    def start(self, cfg, name="reactord"):
        srv = self.start_reactord(cfg, name=name)
        ch = self.channel(srv.tcp_addr)
        r = tb.embedded_redis(srv)
        self.addCleanup(r.close)
        return srv, ch, r

    def ac_update(self, ch, d, result):
        re_ = pb().re
        return h.unary(ch, RE + "ActionCache/UpdateActionResult",
                       re_.UpdateActionResultRequest, re_.ActionResult)(
            re_.UpdateActionResultRequest(action_digest=d, action_result=result),
            timeout=10 * h.SLOW)

    def ac_get(self, ch, d):
        re_ = pb().re
        return h.unary(ch, RE + "ActionCache/GetActionResult",
                       re_.GetActionResultRequest, re_.ActionResult)(
            re_.GetActionResultRequest(action_digest=d), timeout=10 * h.SLOW)

    def bk(self, ch, method, req, resp_cls):
        return h.unary(ch, BK + method, type(req), resp_cls)(req, timeout=10 * h.SLOW)


# ---- action cache --------------------------------------------------------------


class TestActionCacheRetention(Case):
    def test_ttl_set_and_extended_on_hit(self):
        srv, ch, r = self.start({"instances": [{"name": "", "storage": "memory"}],
                                 "action-cache": {"retention": "100s"}})
        d = tb.digest_of(b"an action")
        res = pb().re.ActionResult(exit_code=0, stdout_raw=b"out")
        self.ac_update(ch, d, res)
        ttl = r("PTTL", ac_key(d))
        self.assertGreater(ttl, 90000, "a new entry expires after the retention")
        self.assertLessEqual(ttl, 100000)
        # Shorten it by hand, then a hit sets the full retention again.
        r("PEXPIRE", ac_key(d), 5000)
        self.assertEqual(self.ac_get(ch, d).stdout_raw, b"out")
        h.wait_for(lambda: r("PTTL", ac_key(d)) > 90000, 5 * h.SLOW,
                   "the hit to extend the entry's life")
        self.assertEqual(int(r("HGET", ac_key(d), "hits")), 1)
        # An update restarts it as well.
        r("PEXPIRE", ac_key(d), 5000)
        self.ac_update(ch, d, res)
        self.assertGreater(r("PTTL", ac_key(d)), 90000)

    def test_entry_written_by_execute_expires(self):
        cfg = exec_config()
        cfg["action-cache"] = {"retention": "1h"}
        srv, ch, r = self.start(cfg)
        bot = tb.Bot(srv.tcp_addr, "b1", stdout=b"hi\n")
        self.addCleanup(bot.stop)
        bot.start()
        d, blobs = tb.make_action(("echo", "hi"))
        tb.upload(ch, blobs)
        ops = tb.run_to_end(tb.execute(ch, d))
        self.assertEqual(tb.op_response(ops[-1]).status.code, 0)
        h.wait_for(lambda: r("EXISTS", ac_key(d)) == 1, 5 * h.SLOW, "the AC entry")
        ttl = r("PTTL", ac_key(d))
        self.assertGreater(ttl, 3500 * 1000)
        self.assertLessEqual(ttl, 3600 * 1000)


# ---- build buckets -------------------------------------------------------------


def bparams(builder="linux", **extra):
    d = {"builder_name": builder}
    d.update(extra)
    return json.dumps(d)


def reason(resp):
    return bpb.ErrorReason.Name(resp.error.reason) if resp.HasField("error") else "OK"


class TestBuildRetention(Case):
    def cfg(self, **b):
        c = {"expiry-interval": "100ms", "timeout-check-interval": "100ms"}
        c.update(b)
        return {"buckets": c}

    def ok(self, resp):
        self.assertFalse(resp.HasField("error"), "%s: %s" % (reason(resp), resp.error.message))
        return resp.build

    def test_completed_build_and_its_index_entries_go(self):
        srv, ch, r = self.start(self.cfg(retention="1s"))
        put = lambda **kw: self.ok(self.bk(ch, "Put", bpb.PutRequest(bucket="ret", **kw),
                                           bpb.BuildResponse))
        changes = [{"id": "c:1", "revision": "r%1", "author": {"email": "a@b.c"}}]
        done = put(parameters_json=bparams(changes=changes), tags=["a:1", "b:2"])
        keep = put(parameters_json=bparams(), tags=["a:1"])
        lb = self.ok(self.bk(ch, "Lease", bpb.LeaseRequest(id=done.id), bpb.BuildResponse))
        self.ok(self.bk(ch, "Succeed", bpb.SucceedRequest(id=done.id, lease_key=lb.lease_key,
                                                          new_tags=["c:3"]),
                        bpb.BuildResponse))
        did = str(done.id)
        self.assertIsNotNone(r("ZSCORE", BB + "done", did))
        chg = BB + "change:c%3A1:r%251"
        self.assertIsNotNone(r("ZSCORE", chg, did))

        def gone():
            resp = self.bk(ch, "Get", bpb.GetRequest(id=done.id), bpb.BuildResponse)
            return reason(resp) == "BUILD_NOT_FOUND"
        h.wait_for(gone, 10 * h.SLOW, "the completed build to be removed")
        self.assertEqual(r("EXISTS", BB + "build:" + did), 0)
        for k in ("bucket:ret:COMPLETED", "bucket:ret:SCHEDULED", "bucket:ret:peek",
                  "tag:a:1", "tag:b:2", "tag:c:3", "tag:builder:linux", "done", "leased"):
            self.assertIsNone(r("ZSCORE", BB + k, did), k)
        self.assertEqual(r("EXISTS", chg), 0)
        # The SCHEDULED build stays, with its index entries.
        self.assertEqual(self.ok(self.bk(ch, "Get", bpb.GetRequest(id=keep.id),
                                         bpb.BuildResponse)).status, bpb.SCHEDULED)
        self.assertIsNotNone(r("ZSCORE", BB + "tag:a:1", str(keep.id)))
        self.assertEqual(r("SISMEMBER", BB + "buckets", "ret"), 1)
        s = self.bk(ch, "Search", bpb.SearchRequest(tags=["a:1"]), bpb.SearchResponse)
        self.assertEqual([b.id for b in s.builds], [keep.id])

    def test_search_drops_dangling_index_entries(self):
        srv, ch, r = self.start(self.cfg())
        # An id whose build is gone, as an older version could leave.
        r("ZADD", BB + "tag:x:1", 0, "1700000000000000000")
        s = self.bk(ch, "Search", bpb.SearchRequest(tags=["x:1"]), bpb.SearchResponse)
        self.assertEqual(list(s.builds), [])
        self.assertEqual(r("EXISTS", BB + "tag:x:1"), 0)

    def test_tags_per_build_and_search_capped(self):
        srv, ch, r = self.start(self.cfg(**{"max-tags": 4}))
        put = lambda tags: self.bk(ch, "Put", bpb.PutRequest(
            bucket="cap", parameters_json=bparams(), tags=tags), bpb.BuildResponse)
        resp = put(["k:%d" % i for i in range(4)])  # + builder:linux = 5
        self.assertEqual(reason(resp), "INVALID_INPUT")
        self.assertIn("5 tags", resp.error.message)
        self.assertIn("limit of 4 per build (config buckets.max-tags)", resp.error.message)
        self.assertEqual(r("EXISTS", BB + "tag:k:0"), 0, "nothing written")
        b = self.ok(put(["k:%d" % i for i in range(3)]))
        self.assertEqual(len(b.tags), 4)
        lb = self.ok(self.bk(ch, "Lease", bpb.LeaseRequest(id=b.id), bpb.BuildResponse))
        resp = self.bk(ch, "Succeed", bpb.SucceedRequest(id=b.id, lease_key=lb.lease_key,
                                                         new_tags=["n:1"]), bpb.BuildResponse)
        self.assertEqual(reason(resp), "INVALID_INPUT")
        self.assertIn("limit of 4 per build (config buckets.max-tags)", resp.error.message)
        self.assertEqual(r("EXISTS", BB + "tag:n:1"), 0)
        g = self.ok(self.bk(ch, "Get", bpb.GetRequest(id=b.id), bpb.BuildResponse))
        self.assertEqual(g.status, bpb.SCHEDULED, "the refused Succeed changed nothing")
        self.ok(self.bk(ch, "Succeed", bpb.SucceedRequest(id=b.id, lease_key=lb.lease_key),
                        bpb.BuildResponse))
        s = self.bk(ch, "Search", bpb.SearchRequest(tags=["t:%d" % i for i in range(5)]),
                    bpb.SearchResponse)
        self.assertEqual(reason(s), "INVALID_INPUT")
        self.assertIn("5 tags, over the limit of 4 per Search (config buckets.max-tags)",
                      s.error.message)

    def test_search_page_capped(self):
        srv, ch, r = self.start(self.cfg())
        for _ in range(2):
            resp = self.bk(ch, "PutBatch", bpb.PutBatchRequest(builds=[
                bpb.PutRequest(bucket="many", parameters_json=bparams())
                for _ in range(600)]), bpb.PutBatchResponse)
            self.assertEqual(len(resp.results), 600)
        s = self.bk(ch, "Search", bpb.SearchRequest(buckets=["many"], max_builds=100000),
                    bpb.SearchResponse)
        self.assertEqual(len(s.builds), 1000)
        self.assertNotEqual(s.next_cursor, "")


# ---- the platform set ------------------------------------------------------------


class TestPlatforms(Case):
    def queue(self, ch, pool, salt=b""):
        """Execute an action for platform pool=<pool>; the first
        Operation (QUEUED) and the stream is left."""
        d, blobs = tb.make_action(("true",), platform=(("pool", pool),), salt=salt)
        tb.upload(ch, blobs)
        s = tb.execute(ch, d)
        op = next(s)
        s.cancel()
        return op.name

    def plats(self, r):
        return r("SCARD", NS + "platforms:")

    def test_cap_names_the_limit_and_entries_go(self):
        srv, ch, r = self.start(exec_config(sched={"max-platforms": 3}))
        ops = [self.queue(ch, "p%d" % i) for i in range(3)]
        self.assertEqual(self.plats(r), 3)
        d, blobs = tb.make_action(("true",), platform=(("pool", "p3"),))
        tb.upload(ch, blobs)
        e = h.rpc_error(list, tb.execute(ch, d))
        self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("limit 3, config scheduler.max-platforms", e.details())
        self.assertIn("pool=p3", e.details())
        self.assertEqual(r("EXISTS", NS + "queue::pool=p3"), 0, "nothing queued")
        # A platform already waiting is still served.
        ops.append(self.queue(ch, "p0", salt=b"again"))
        # Cancelled work takes its platform with it; then p3 fits.
        for name in ops:
            tb.cancel_operation(ch, name)
        self.assertEqual(self.plats(r), 0)
        self.queue(ch, "p3")
        self.assertEqual(self.plats(r), 1)
        # A bot taking the last job of a queue empties the set too.
        bot = tb.Bot(srv.tcp_addr, "b3", props=(("OSFamily", "linux"), ("pool", "p3")))
        self.addCleanup(bot.stop)
        bot.start()
        h.wait_for(lambda: bot.completed, 10 * h.SLOW, "the bot to run the p3 job")
        self.assertEqual(self.plats(r), 0)
        self.assert_serving(srv)

    def test_no_worker_failures_empty_the_set(self):
        srv, ch, r = self.start(exec_config(**{"no-worker-timeout": "300ms"}))
        for i in range(50):
            self.queue(ch, "nw%d" % i)
        h.wait_for(lambda: self.plats(r) == 0, 10 * h.SLOW,
                   "no-worker failures to empty the platform set")

    def evalsha_cost(self, r, secs=1.5):
        """Mean microseconds per EVALSHA while idle (the sweep every 50ms
        and the safety net every second, both walking the platform set)."""
        def stat():
            info = r("INFO", "commandstats").decode()
            for ln in info.splitlines():
                if ln.startswith("cmdstat_evalsha:"):
                    f = dict(kv.split("=") for kv in ln.split(":", 1)[1].split(","))
                    return int(f["calls"]), int(f["usec"])
            return 0, 0
        c0, u0 = stat()
        time.sleep(secs)  # a measurement window, not a readiness wait
        c1, u1 = stat()
        self.assertGreater(c1 - c0, 10, "the sweep runs")
        return (u1 - u0) / (c1 - c0)

    def test_2000_junk_platforms_leave_no_trace(self):
        srv, ch, r = self.start(exec_config(sched={"max-platforms": 2500}))
        base = self.evalsha_cost(r)
        re_ = pb().re
        acts = [tb.make_action(("true",), platform=(("pool", "junk%d" % i),))
                for i in range(2000)]
        blobs = {}
        for _, b in acts:
            blobs.update(b)
        tb.upload(ch, blobs)
        names = []
        # A fresh connection per hundred streams: cancelling thousands of
        # streams on one connection looks like a rapid-reset attack.
        for i in range(0, len(acts), 100):
            c = h.channel(srv.tcp_addr)
            for d, _ in acts[i:i + 100]:
                s = tb.execute(c, d)
                names.append(next(s).name)
            c.close()
        self.assertEqual(self.plats(r), 2000)
        loaded = self.evalsha_cost(r)
        for n in names:
            tb.cancel_operation(ch, n)
        self.assertEqual(self.plats(r), 0, "cancelled work leaves no platform behind")
        after = self.evalsha_cost(r)
        sys.stderr.write("evalsha mean: baseline %.1f us, 2000 junk platforms %.1f us, "
                         "after cancelling %.1f us\n" % (base, loaded, after))
        # Wall time inside Redis is noisy on a loaded machine: compare
        # orders of magnitude (the junk made it ~200x dearer here).
        self.assertLess(after, loaded / 10, "the sweep is back to its baseline cost")
        # Garbage an older version left (platforms without a queue) goes too,
        # and nothing comes back after a restart.
        for i in range(500):
            r("SADD", NS + "platforms:", "pool=old%d" % i)
        srv.stop()
        r.close()
        cfg = dict(srv.cfg)
        cfg["ready-file"] = os.path.join(self.tmp, "again.ready")
        srv2, ch2, r2 = self.start(cfg, name="again")
        h.wait_for(lambda: self.plats(r2) == 0, 10 * h.SLOW,
                   "the sweep to drop platforms without a queue")
        self.assertLess(self.evalsha_cost(r2), loaded / 10)
        self.assert_serving(srv2)


# ---- idempotent completion --------------------------------------------------------


class TestIdempotentCompletion(Case):
    def lease(self, srv, ch, r, salt):
        d, blobs = tb.make_action(("echo", "x"), salt=salt)
        tb.upload(ch, blobs)
        stream = tb.execute(ch, d)
        self.assertEqual(tb.stage_name(tb.op_meta(next(stream)).stage), "QUEUED")
        bot = tb.Bot(srv.tcp_addr, "idem", stdout=b"x\n")
        self.addCleanup(bot.ch.close)
        b = pb().bots
        sess = bot._create()
        upd = bot._stub("UpdateBotSession", b.UpdateBotSessionRequest)
        resp = sess
        deadline = time.time() + 10 * h.SLOW
        while not resp.leases and time.time() < deadline:
            resp = upd(b.UpdateBotSessionRequest(name=sess.name,
                                                 bot_session=bot._session(sess.name)),
                       timeout=5 * h.SLOW)
        self.assertEqual(len(resp.leases), 1)
        done = b.UpdateBotSessionRequest(
            name=sess.name, bot_session=bot._session(sess.name,
                                                     [bot._result_lease(resp.leases[0])]))
        return d, stream, upd, done, resp.leases[0].id

    def test_retried_completed_report(self):
        srv, ch, r = self.start(exec_config(sched={"long-poll": "0s"}))
        for salt, drop in ((b"1", False), (b"2", True)):
            with self.subTest(drop_ac_between=drop):
                d, stream, upd, done, job = self.lease(srv, ch, r, salt)
                upd(done, timeout=5 * h.SLOW)
                ops = tb.run_to_end(stream)
                self.assertEqual(tb.op_response(ops[-1]).result.stdout_raw, b"x\n")
                h.wait_for(lambda: r("EXISTS", ac_key(d)) == 1, 5 * h.SLOW, "AC entry")
                first = r.hgetall(NS + "job:" + job)
                if drop:
                    r("DEL", ac_key(d))
                # The reply was "lost": the bot sends the same report again.
                upd(done, timeout=5 * h.SLOW)
                h.wait_for(lambda: r("EXISTS", ac_key(d)) == 1, 5 * h.SLOW,
                           "the retried report to store the result")
                self.assertEqual(self.ac_get(ch, d).stdout_raw, b"x\n")
                again = r.hgetall(NS + "job:" + job)
                for f in ("stage", "completed", "version", "status"):
                    self.assertEqual(again[f], first[f], f)
                self.assertEqual(again["stage"], b"COMPLETED")
        self.assert_serving(srv)


if __name__ == "__main__":
    h.main()
