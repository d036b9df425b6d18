#!/usr/bin/python3
"""test_buckets.py - end-to-end tests of reactor.buckets.v1.Buckets: a
grpcio client (the reference gRPC implementation, speaking the project's
own .proto) drives real reactord processes and redis-servers through the
whole life of builds; every domain error is checked for its exact reason
and for leaving Redis untouched; lease expiry, lease contention between
three clients, two reactords sharing one Redis, SIGKILL and restart, and
WatchBuilds next to `redis-cli SUBSCRIBE`.

Built on harness.py (temp dirs, process cleanup, the "N passed, N failed"
line).  Run by `make check`; by hand:
    /usr/bin/python3 t/integ/test_buckets.py [NAME-SUBSTRING...]
"""

import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from harness import grpc  # noqa: E402
from reactor.buckets.v1 import buckets_pb2 as pb  # noqa: E402  (from REACTOR_GEN_PY)

PFX = "/reactor.buckets.v1.Buckets/"
REDIS_CLI = os.path.join(os.path.dirname(h.REDIS_SERVER), "redis-cli")
if not os.access(REDIS_CLI, os.X_OK):
    REDIS_CLI = "redis-cli"
UNARY = [
    ("Put", pb.PutRequest, pb.BuildResponse),
    ("PutBatch", pb.PutBatchRequest, pb.PutBatchResponse),
    ("Get", pb.GetRequest, pb.BuildResponse),
    ("Search", pb.SearchRequest, pb.SearchResponse),
    ("Peek", pb.PeekRequest, pb.SearchResponse),
    ("Lease", pb.LeaseRequest, pb.BuildResponse),
    ("Reset", pb.ResetRequest, pb.BuildResponse),
    ("Start", pb.StartRequest, pb.BuildResponse),
    ("Heartbeat", pb.HeartbeatRequest, pb.BuildResponse),
    ("HeartbeatBatch", pb.HeartbeatBatchRequest, pb.HeartbeatBatchResponse),
    ("Succeed", pb.SucceedRequest, pb.BuildResponse),
    ("Fail", pb.FailRequest, pb.BuildResponse),
    ("Cancel", pb.CancelRequest, pb.BuildResponse),
    ("CancelBatch", pb.CancelBatchRequest, pb.CancelBatchResponse),
    ("Retry", pb.RetryRequest, pb.BuildResponse),
]
US = 1000000
TIMEOUT = 10 * h.SLOW


def stubs(ch):
    s = types.SimpleNamespace()
    for name, req, resp in UNARY:
        fn = h.unary(ch, PFX + name, req, resp)
        setattr(s, name, (lambda f: lambda r, **kw: f(r, timeout=kw.pop("timeout", TIMEOUT),
                                                        **kw))(fn))
    s.WatchBuilds = h.server_stream(ch, PFX + "WatchBuilds", pb.Build)
    return s


def params(builder="linux", **extra):
    d = {"builder_name": builder}
    d.update(extra)
    return json.dumps(d)


def now_us():
    return int(time.time() * US)


def reason(r):
    return pb.ErrorReason.Name(r.error.reason) if r.HasField("error") else "OK"


# ---- a tiny Redis client (RESP over the unix socket) ---------------------------


class Redis:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(10)
        self.s.connect(path)
        self.f = self.s.makefile("rb")

    def close(self):
        self.f.close()
        self.s.close()

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self._read()

    def _read(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError("bad RESP line %r" % line)

    def snapshot(self):
        """Every buckets key and its serialized value (TTLs aside)."""
        snap = {}
        for k in self.cmd("KEYS", "*{bb}:*"):
            snap[k] = self.cmd("DUMP", k)
        return snap

    def bb(self):
        """The base of every buckets key: the namespace reactord runs with
        (its `redis: prefix`) and the {bb} hash tag, read off the bucket
        list, which exists once any build was put.  Every buckets key must
        carry that same base."""
        names = self.cmd("KEYS", "*{bb}:buckets")
        assert len(names) == 1, "want one bucket list, got %r" % names
        base = names[0].decode()[:-len("buckets")]
        for k in self.cmd("KEYS", "*{bb}:*"):
            assert k.decode().startswith(base), "%r is not under %r" % (k, base)
        return base

    def hgetall(self, key):
        a = self.cmd("HGETALL", key)
        return {a[i].decode(): a[i + 1].decode() for i in range(0, len(a), 2)}


class BucketsCase(h.ReactordTestCase):
    def start(self, overrides=None, name="reactord", **kw):
        cfg = {"buckets": {"expiry-interval": "100ms"}}
        cfg.update(overrides or {})
        srv = self.start_reactord(h.deep_merge(cfg, {}), name=name, **kw)
        return srv

    def api(self, srv):
        return stubs(self.channel(srv.tcp_addr))

    def redis(self, path):
        r = Redis(path)
        self.addCleanup(r.close)
        return r

    def embedded_redis(self, srv):
        return self.redis(os.path.join(srv.state_dir, "redis", "redis.sock"))

    def ok(self, r):
        self.assertFalse(r.HasField("error"), "unexpected error %s: %s" % (
            reason(r), r.error.message))
        self.assertTrue(r.HasField("build"))
        self.assertGreater(r.build.utcnow_ts, 0)
        return r.build

    def put(self, api, bucket="ci", builder="linux", **kw):
        return self.ok(api.Put(pb.PutRequest(bucket=bucket, parameters_json=params(builder),
                                             **kw)))

    def leased(self, api, bucket="ci", start=False, exp=0):
        b = self.put(api, bucket)
        lb = self.ok(api.Lease(pb.LeaseRequest(id=b.id, lease_expiration_ts=exp)))
        if start:
            self.ok(api.Start(pb.StartRequest(id=b.id, lease_key=lb.lease_key)))
        return b.id, lb.lease_key

    def wait_status(self, api, bid, status, timeout=10):
        return h.wait_for(lambda: (lambda b: b if b.status == status else None)(
            api.Get(pb.GetRequest(id=bid)).build), timeout,
            "build %d to become %s" % (bid, pb.Status.Name(status)))


# ---- 1. the whole life of a build ------------------------------------------------


class TestLifecycle(BucketsCase):
    def test_full_life(self):
        srv = self.start()
        api = self.api(srv)
        t0 = now_us()
        changes = [{"id": "4711", "revision": "deadbeef", "author": {"email": "a@b.c"},
                    "create_ts": t0, "files": [{"path": "src/x.c"}], "message": "fix",
                    "branch": "main", "url": "https://review/4711", "project": "p"}]
        r = api.Put(pb.PutRequest(bucket="ci", tags=["buildset:bs/1", "a:b", "a:b"],
                                  parameters_json=params(properties={"x": 1}, changes=changes),
                                  client_operation_id="op-1"))
        b = self.ok(r)
        bid = b.id
        self.assertGreater(bid, 0)
        self.assertEqual(b.bucket, "ci")
        self.assertEqual(list(b.tags), ["a:b", "builder:linux", "buildset:bs/1"])
        self.assertEqual(b.status, pb.SCHEDULED)
        self.assertEqual(b.lease_key, 0)
        self.assertEqual(b.created_by, "anonymous")
        self.assertGreaterEqual(b.created_ts, t0 - 5 * US)
        self.assertEqual(b.created_ts, b.updated_ts)
        self.assertEqual(b.created_ts, b.status_changed_ts)
        # Get, Peek, Search see it.
        self.assertEqual(self.ok(api.Get(pb.GetRequest(id=bid))).parameters_json,
                         b.parameters_json)
        p = api.Peek(pb.PeekRequest(buckets=["ci"]))
        self.assertEqual([x.id for x in p.builds], [bid])
        self.assertEqual(p.next_cursor, "")
        s = api.Search(pb.SearchRequest(tags=["buildset:bs/1"]))
        self.assertEqual([x.id for x in s.builds], [bid])
        # Lease.
        lb = self.ok(api.Lease(pb.LeaseRequest(id=bid, leasee="master-a")))
        key = lb.lease_key
        self.assertNotEqual(key, 0)
        self.assertEqual(lb.leasee, "master-a")
        self.assertAlmostEqual(lb.lease_expiration_ts, lb.utcnow_ts + 60 * US, delta=US)
        self.assertEqual(list(api.Peek(pb.PeekRequest(buckets=["ci"])).builds), [])
        # Start.
        sb = self.ok(api.Start(pb.StartRequest(id=bid, lease_key=key, url="http://ci/1")))
        self.assertEqual(sb.status, pb.STARTED)
        self.assertEqual(sb.lease_key, 0)
        self.assertEqual(sb.url, "http://ci/1")
        self.assertGreater(sb.started_ts, 0)
        # Heartbeat, single and batch.
        exp = now_us() + 3600 * US
        hb = self.ok(api.Heartbeat(pb.HeartbeatRequest(id=bid, lease_key=key,
                                                        lease_expiration_ts=exp)))
        self.assertEqual(hb.lease_expiration_ts, exp)
        hbr = api.HeartbeatBatch(pb.HeartbeatBatchRequest(heartbeats=[
            pb.HeartbeatRequest(id=bid, lease_key=key, lease_expiration_ts=exp + 1),
            pb.HeartbeatRequest(id=bid, lease_key=key + 1, lease_expiration_ts=exp + 2),
            pb.HeartbeatRequest(id=12345, lease_key=key, lease_expiration_ts=exp)]))
        self.assertEqual([(x.build_id, x.lease_expiration_ts, pb.ErrorReason.Name(x.error.reason)
                           if x.HasField("error") else "OK") for x in hbr.results],
                         [(bid, exp + 1, "OK"), (bid, 0, "LEASE_EXPIRED"),
                          (12345, 0, "BUILD_NOT_FOUND")])
        self.assertFalse(hbr.HasField("error"))
        # Succeed.
        fb = self.ok(api.Succeed(pb.SucceedRequest(
            id=bid, lease_key=key, result_details_json='{"properties": {"got_revision": "x"}}',
            new_tags=["bot_id:bot1"])))
        self.assertEqual((fb.status, fb.result), (pb.COMPLETED, pb.SUCCESS))
        self.assertEqual(fb.url, "http://ci/1")
        self.assertEqual(fb.lease_expiration_ts, 0)
        self.assertEqual(fb.leasee, "")
        self.assertGreater(fb.completed_ts, 0)
        self.assertEqual(list(fb.tags), ["a:b", "bot_id:bot1", "builder:linux", "buildset:bs/1"])
        # Idempotent repeat; the same operation id returns the first build.
        again = self.ok(api.Succeed(pb.SucceedRequest(
            id=bid, lease_key=key, result_details_json='{"properties": {"got_revision": "x"}}')))
        self.assertEqual(again.updated_ts, fb.updated_ts)
        dup = self.ok(api.Put(pb.PutRequest(bucket="ci", parameters_json=params("other"),
                                            client_operation_id="op-1")))
        self.assertEqual(dup.id, bid)
        # Search by status/result; Retry.
        s = api.Search(pb.SearchRequest(buckets=["ci"], status=pb.COMPLETED, result=pb.SUCCESS))
        self.assertEqual([x.id for x in s.builds], [bid])
        rb = self.ok(api.Retry(pb.RetryRequest(id=bid, lease_expiration_ts=now_us() + 60 * US,
                                               leasee="m2")))
        self.assertEqual(rb.retry_of, bid)
        self.assertNotEqual(rb.lease_key, 0)
        self.assertEqual(rb.leasee, "m2")
        self.assertEqual(list(rb.tags), ["a:b", "builder:linux", "buildset:bs/1"])
        self.assertGreater(rb.id, bid)
        # Fail the retry as an infra failure.
        fl = self.ok(api.Fail(pb.FailRequest(id=rb.id, lease_key=rb.lease_key,
                                             failure_reason=pb.INFRA_FAILURE)))
        self.assertEqual((fl.result, fl.failure_reason), (pb.FAILURE, pb.INFRA_FAILURE))
        # Batches: PutBatch answers in request order, CancelBatch per item.
        pbr = api.PutBatch(pb.PutBatchRequest(builds=[
            pb.PutRequest(bucket="ci", parameters_json=params(), client_operation_id="b1"),
            pb.PutRequest(bucket="BAD", parameters_json=params(), client_operation_id="b2"),
            pb.PutRequest(bucket="ci2", parameters_json=params(), tags=["x:y"])]))
        self.assertEqual([x.client_operation_id for x in pbr.results], ["b1", "b2", ""])
        self.assertEqual([reason(x) for x in pbr.results], ["OK", "INVALID_INPUT", "OK"])
        self.assertEqual(pbr.results[2].build.bucket, "ci2")
        ids = [pbr.results[0].build.id, pbr.results[2].build.id]
        cbr = api.CancelBatch(pb.CancelBatchRequest(build_ids=ids + [bid, 99]))
        self.assertEqual([x.build_id for x in cbr.results], ids + [bid, 99])
        self.assertEqual([reason(x) for x in cbr.results],
                         ["OK", "OK", "BUILD_IS_COMPLETED", "BUILD_NOT_FOUND"])
        self.assertEqual(cbr.results[0].build.cancelation_reason, pb.CANCELED_EXPLICITLY)
        # Redis holds what the replies said, readably.
        rd = self.embedded_redis(srv)
        bb = rd.bb()
        hsh = rd.hgetall(bb + "build:%d" % bid)
        self.assertEqual(hsh["status"], "COMPLETED")
        self.assertEqual(hsh["result"], "SUCCESS")
        self.assertEqual(json.loads(hsh["tags"]), list(fb.tags))
        self.assertNotIn("lease_key", hsh)
        self.assertEqual(rd.cmd("ZSCORE", bb + "change:4711:deadbeef", str(bid)), b"0")
        self.assertEqual(rd.cmd("ZSCORE", bb + "change:4711:deadbeef", str(rb.id)), b"0")
        self.assertEqual(set(rd.cmd("SMEMBERS", bb + "buckets")), {b"ci", b"ci2"})


# ---- 2. every error, its reason, and nothing changed in Redis -----------------


class TestErrors(BucketsCase):
    def test_every_error(self):
        srv = self.start()
        api = self.api(srv)
        rd = self.embedded_redis(srv)
        done = self.put(api)
        dk = self.ok(api.Lease(pb.LeaseRequest(id=done.id))).lease_key
        self.ok(api.Succeed(pb.SucceedRequest(id=done.id, lease_key=dk)))
        sched = self.put(api)
        lid, lkey = self.leased(api)
        sid, skey = self.leased(api, start=True)
        canc = self.put(api)
        self.ok(api.Cancel(pb.CancelRequest(id=canc.id)))
        now = now_us()
        far = now + 3 * 3600 * US
        P = pb.PutRequest
        cases = [
            # Put input
            ("Put", P(bucket="Bad", parameters_json=params()), "INVALID_INPUT", "bucket"),
            ("Put", P(bucket="", parameters_json=params()), "INVALID_INPUT", "bucket"),
            ("Put", P(bucket="a" * 101, parameters_json=params()), "INVALID_INPUT", "bucket"),
            ("Put", P(bucket="ci"), "INVALID_INPUT", "parameters_json"),
            ("Put", P(bucket="ci", parameters_json="[1]"), "INVALID_INPUT",
             "parameters_json: must be a JSON object"),
            ("Put", P(bucket="ci", parameters_json="{\"builder_name\": \"x\",}"),
             "INVALID_INPUT", "parameters_json: invalid JSON"),
            ("Put", P(bucket="ci", parameters_json="{}"), "INVALID_INPUT",
             "parameters_json.builder_name"),
            ("Put", P(bucket="ci", parameters_json=params(properties=[])), "INVALID_INPUT",
             "parameters_json.properties"),
            ("Put", P(bucket="ci", parameters_json=params(properties={"buildbucket": 1})),
             "INVALID_INPUT", "parameters_json.properties.buildbucket"),
            ("Put", P(bucket="ci", parameters_json=params(changes={})), "INVALID_INPUT",
             "parameters_json.changes"),
            ("Put", P(bucket="ci", parameters_json=params(changes=[{"id": "c9"}])),
             "INVALID_INPUT", "changes[0] (id \"c9\").author"),
            ("Put", P(bucket="ci", parameters_json=params(changes=[
                {"id": "c9", "author": {"email": "e"}, "create_ts": "x"}])),
             "INVALID_INPUT", "(id \"c9\").create_ts"),
            ("Put", P(bucket="ci", parameters_json=params(changes=[
                {"id": "c9", "author": {"email": "e"}, "files": [{"path": 1}]}])),
             "INVALID_INPUT", "(id \"c9\").files[0].path"),
            ("Put", P(bucket="ci", parameters_json=params(), tags=["nocolon"]),
             "INVALID_INPUT", "tags[0]"),
            ("Put", P(bucket="ci", parameters_json=params(), tags=["builder:mac"]),
             "INVALID_INPUT", "builder_name"),
            ("Put", P(bucket="ci", parameters_json=params(), lease_expiration_ts=now - US),
             "INVALID_INPUT", "in the past"),
            ("Put", P(bucket="ci", parameters_json=params(), lease_expiration_ts=far),
             "INVALID_INPUT", "2 hours"),
            ("Get", pb.GetRequest(id=1), "BUILD_NOT_FOUND", "not found"),
            # Lease
            ("Lease", pb.LeaseRequest(id=1), "BUILD_NOT_FOUND", "not found"),
            ("Lease", pb.LeaseRequest(id=done.id), "CANNOT_LEASE_BUILD", "COMPLETED"),
            ("Lease", pb.LeaseRequest(id=lid), "CANNOT_LEASE_BUILD", "already leased"),
            ("Lease", pb.LeaseRequest(id=sid), "CANNOT_LEASE_BUILD", "already leased"),
            ("Lease", pb.LeaseRequest(id=sched.id, lease_expiration_ts=now - US),
             "INVALID_INPUT", "in the past"),
            ("Lease", pb.LeaseRequest(id=sched.id, lease_expiration_ts=far),
             "INVALID_INPUT", "2 hours"),
            # Keyed calls, in the order of checks
            ("Start", pb.StartRequest(id=1, lease_key=0), "BUILD_NOT_FOUND", "not found"),
            ("Start", pb.StartRequest(id=done.id, lease_key=0), "BUILD_IS_COMPLETED", "completed"),
            ("Start", pb.StartRequest(id=lid, lease_key=0), "INVALID_INPUT", "lease_key"),
            ("Start", pb.StartRequest(id=lid, lease_key=lkey + 1), "LEASE_EXPIRED", "incorrect"),
            ("Start", pb.StartRequest(id=sched.id, lease_key=5), "LEASE_EXPIRED", "incorrect"),
            ("Heartbeat", pb.HeartbeatRequest(id=1), "BUILD_NOT_FOUND", "not found"),
            ("Heartbeat", pb.HeartbeatRequest(id=done.id, lease_key=dk), "BUILD_IS_COMPLETED",
             "completed"),
            ("Heartbeat", pb.HeartbeatRequest(id=sid, lease_expiration_ts=now + US),
             "INVALID_INPUT", "lease_key"),
            ("Heartbeat", pb.HeartbeatRequest(id=sid, lease_key=skey + 1,
                                              lease_expiration_ts=now + US),
             "LEASE_EXPIRED", "incorrect"),
            ("Heartbeat", pb.HeartbeatRequest(id=sid, lease_key=skey), "INVALID_INPUT",
             "lease_expiration_ts is required"),
            ("Heartbeat", pb.HeartbeatRequest(id=sid, lease_key=skey, lease_expiration_ts=far),
             "INVALID_INPUT", "2 hours"),
            ("Succeed", pb.SucceedRequest(id=1), "BUILD_NOT_FOUND", "not found"),
            ("Succeed", pb.SucceedRequest(id=canc.id), "BUILD_IS_COMPLETED", "completed"),
            ("Succeed", pb.SucceedRequest(id=done.id, url="http://elsewhere"),
             "BUILD_IS_COMPLETED", "completed"),
            ("Succeed", pb.SucceedRequest(id=sid), "INVALID_INPUT", "lease_key"),
            ("Succeed", pb.SucceedRequest(id=sid, lease_key=skey - 1), "LEASE_EXPIRED",
             "incorrect"),
            ("Succeed", pb.SucceedRequest(id=sid, lease_key=skey, new_tags=["builder:x"]),
             "INVALID_INPUT", "new_tags[0]"),
            ("Succeed", pb.SucceedRequest(id=sid, lease_key=skey, result_details_json="[]"),
             "INVALID_INPUT", "result_details_json"),
            ("Fail", pb.FailRequest(id=1), "BUILD_NOT_FOUND", "not found"),
            ("Fail", pb.FailRequest(id=done.id, lease_key=dk), "BUILD_IS_COMPLETED",
             "completed"),
            ("Fail", pb.FailRequest(id=lid), "INVALID_INPUT", "lease_key"),
            ("Fail", pb.FailRequest(id=lid, lease_key=7), "LEASE_EXPIRED", "incorrect"),
            ("Fail", pb.FailRequest(id=lid, lease_key=lkey, new_tags=["x"]), "INVALID_INPUT",
             "new_tags[0]"),
            # Cancel, Reset, Retry
            ("Cancel", pb.CancelRequest(id=1), "BUILD_NOT_FOUND", "not found"),
            ("Cancel", pb.CancelRequest(id=done.id), "BUILD_IS_COMPLETED", "completed"),
            ("Reset", pb.ResetRequest(id=1), "BUILD_NOT_FOUND", "not found"),
            ("Reset", pb.ResetRequest(id=done.id), "BUILD_IS_COMPLETED", "completed"),
            ("Reset", pb.ResetRequest(id=canc.id), "BUILD_IS_COMPLETED", "completed"),
            ("Retry", pb.RetryRequest(id=1), "BUILD_NOT_FOUND", "not found"),
            ("Retry", pb.RetryRequest(id=sched.id), "INVALID_BUILD_STATE", "completed"),
            ("Retry", pb.RetryRequest(id=sid), "INVALID_BUILD_STATE", "STARTED"),
            ("Retry", pb.RetryRequest(id=done.id, lease_expiration_ts=now - US),
             "INVALID_INPUT", "in the past"),
            # Peek and Search
            ("Peek", pb.PeekRequest(), "INVALID_INPUT", "buckets"),
            ("Peek", pb.PeekRequest(buckets=["ci", "Nope"]), "INVALID_INPUT", "buckets[1]"),
            ("Peek", pb.PeekRequest(buckets=["ci"], start_cursor="zz"), "INVALID_INPUT",
             "start_cursor"),
            ("Search", pb.SearchRequest(tags=["x"]), "INVALID_INPUT", "tags[0]"),
            ("Search", pb.SearchRequest(buckets=["X"]), "INVALID_INPUT", "buckets[0]"),
            ("Search", pb.SearchRequest(start_cursor="1"), "INVALID_INPUT", "start_cursor"),
            ("Peek", pb.PeekRequest(buckets=["b%d" % i for i in range(101)]), "INVALID_INPUT",
             "101 names; at most 100 per request"),
            ("Search", pb.SearchRequest(buckets=["b%d" % i for i in range(101)]),
             "INVALID_INPUT", "101 names; at most 100 per request"),
        ]
        for method, req, want, text in cases:
            with self.subTest(method=method, req=str(req)[:120]):
                before = rd.snapshot()
                r = getattr(api, method)(req)
                self.assertTrue(r.HasField("error"), "%s succeeded: %s" % (method, r))
                self.assertEqual(pb.ErrorReason.Name(r.error.reason), want, r.error.message)
                self.assertIn(text, r.error.message)
                if isinstance(r, pb.SearchResponse):
                    self.assertEqual(len(r.builds), 0)
                else:
                    self.assertFalse(r.HasField("build"), "a failed reply carries no build")
                self.assertEqual(rd.snapshot(), before, "Redis changed")
        # Batches too large: a top-level error, nothing done.
        before = rd.snapshot()
        r = api.PutBatch(pb.PutBatchRequest(builds=[P(bucket="ci", parameters_json=params())]
                                            * 1001))
        self.assertEqual(pb.ErrorReason.Name(r.error.reason), "INVALID_INPUT")
        self.assertEqual(len(r.results), 0)
        r = api.HeartbeatBatch(pb.HeartbeatBatchRequest(heartbeats=[pb.HeartbeatRequest()]
                                                        * 1001))
        self.assertEqual(pb.ErrorReason.Name(r.error.reason), "INVALID_INPUT")
        r = api.CancelBatch(pb.CancelBatchRequest(build_ids=[sched.id] * 1001))
        self.assertEqual(pb.ErrorReason.Name(r.error.reason), "INVALID_INPUT")
        self.assertEqual(rd.snapshot(), before)
        # WatchBuilds with nothing to watch: a gRPC status.
        e = h.rpc_error(lambda: next(api.WatchBuilds(pb.WatchBuildsRequest(), timeout=5)))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        # The build states are what they were.
        self.assertEqual(self.ok(api.Get(pb.GetRequest(id=sid))).status, pb.STARTED)
        self.assertEqual(self.ok(api.Get(pb.GetRequest(id=sched.id))).status, pb.SCHEDULED)

    def test_redis_down_is_unavailable(self):
        ext = self.start_redis()
        srv = self.start({"redis": {"embedded": False, "address": ext.sock}})
        api = self.api(srv)
        self.wait_health(srv, "SERVING")
        bid = self.put(api).id
        ext.kill()
        self.wait_health(srv, "NOT_SERVING")
        for call in (lambda: api.Put(pb.PutRequest(bucket="ci", parameters_json=params())),
                     lambda: api.Get(pb.GetRequest(id=bid)),
                     lambda: api.Peek(pb.PeekRequest(buckets=["ci"])),
                     lambda: api.PutBatch(pb.PutBatchRequest(builds=[
                         pb.PutRequest(bucket="ci", parameters_json=params())]))):
            e = h.rpc_error(call)
            self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertIn("Redis", e.details())


# ---- 3. lease expiry ----------------------------------------------------------------


class TestExpiry(BucketsCase):
    def test_expiry_reschedules_started_build(self):
        srv = self.start()
        a, b = self.api(srv), self.api(srv)
        bid, key = self.leased(a, start=False, exp=now_us() + 700000)
        self.ok(a.Start(pb.StartRequest(id=bid, lease_key=key, url="http://a")))
        built = self.wait_status(b, bid, pb.SCHEDULED, timeout=5)
        self.assertEqual(built.lease_expiration_ts, 0)
        self.assertEqual(built.url, "")
        self.assertEqual(built.leasee, "")
        self.assertGreaterEqual(built.status_changed_ts, built.updated_ts)
        # Rescheduled within an expiry interval (+ slack) of the expiration.
        self.assertLess(built.updated_ts, now_us())
        # The old holder lost it; another client leases it with a new key.
        r = a.Heartbeat(pb.HeartbeatRequest(id=bid, lease_key=key,
                                             lease_expiration_ts=now_us() + 60 * US))
        self.assertEqual(reason(r), "LEASE_EXPIRED")
        self.assertEqual(reason(a.Succeed(pb.SucceedRequest(id=bid, lease_key=key))),
                         "LEASE_EXPIRED")
        self.assertEqual([x.id for x in b.Peek(pb.PeekRequest(buckets=["ci"])).builds], [bid])
        lb = self.ok(b.Lease(pb.LeaseRequest(id=bid, leasee="b")))
        self.assertNotEqual(lb.lease_key, key)
        self.ok(b.Start(pb.StartRequest(id=lb.id, lease_key=lb.lease_key)))
        self.ok(b.Succeed(pb.SucceedRequest(id=lb.id, lease_key=lb.lease_key)))
        # A heartbeated lease survives past its first expiration.
        bid2, key2 = self.leased(a, start=True, exp=now_us() + 500000)
        for _ in range(4):
            self.ok(a.Heartbeat(pb.HeartbeatRequest(id=bid2, lease_key=key2,
                                                     lease_expiration_ts=now_us() + 500000)))
            time.sleep(0.25)
        self.assertEqual(self.ok(a.Get(pb.GetRequest(id=bid2))).status, pb.STARTED)

    def test_build_timeout(self):
        srv = self.start({"buckets": {"expiry-interval": "100ms", "build-timeout": "1s",
                                      "timeout-check-interval": "100ms"}})
        api = self.api(srv)
        bid, _ = self.leased(api, start=True, exp=now_us() + 3600 * US)
        b = self.wait_status(api, bid, pb.COMPLETED, timeout=5)
        self.assertEqual((b.result, b.cancelation_reason), (pb.CANCELED, pb.TIMEOUT))
        self.assertEqual(b.lease_expiration_ts, 0)
        self.assertGreaterEqual(b.completed_ts - b.created_ts, US)


# ---- 4. lease contention --------------------------------------------------------------


class TestContention(BucketsCase):
    def test_three_clients_race_for_1000_builds(self):
        srv = self.start({"log": {"level": "warn", "access-log": False}})
        setup = self.api(srv)
        n = 1000
        r = setup.PutBatch(pb.PutBatchRequest(builds=[
            pb.PutRequest(bucket="race", parameters_json=params()) for _ in range(n)]))
        ids = {x.build.id for x in r.results}
        self.assertEqual(len(ids), n)
        log = queue.Queue()  # (event, client, build id, key, server time)
        errors = []
        refused = []  # CANNOT_LEASE_BUILD answers: the race really happened

        def client(name, seed):
            rnd = random.Random(seed)
            api = self.api(srv)  # its own connection
            try:
                while True:
                    peeked = list(api.Peek(pb.PeekRequest(buckets=["race"],
                                                          max_builds=30)).builds)
                    if not peeked:
                        return
                    rnd.shuffle(peeked)
                    for b in peeked:
                        lr = api.Lease(pb.LeaseRequest(id=b.id, leasee=name))
                        if lr.HasField("error"):
                            if lr.error.reason != pb.CANNOT_LEASE_BUILD:
                                errors.append((name, b.id, reason(lr), lr.error.message))
                            refused.append(b.id)
                            continue
                        key = lr.build.lease_key
                        log.put(("lease", name, b.id, key, lr.build.updated_ts))
                        sr = api.Start(pb.StartRequest(id=b.id, lease_key=key))
                        if sr.HasField("error"):
                            errors.append((name, b.id, "start", reason(sr)))
                            continue
                        if rnd.random() < 0.1:
                            rr = api.Reset(pb.ResetRequest(id=b.id))
                            log.put(("release", name, b.id, key, rr.build.updated_ts))
                            continue
                        fr = api.Succeed(pb.SucceedRequest(id=b.id, lease_key=key))
                        if fr.HasField("error"):
                            errors.append((name, b.id, "succeed", reason(fr)))
                            continue
                        log.put(("complete", name, b.id, key, fr.build.updated_ts))
            except Exception as e:  # surfaced below
                errors.append((name, repr(e)))

        threads = [threading.Thread(target=client, args=("m%d" % i, i)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(150 * h.SLOW)
        self.assertFalse(any(t.is_alive() for t in threads), "clients still running")
        self.assertEqual(errors, [])
        self.assertGreater(len(refused), 0, "no two clients ever raced for one build")
        events = []
        while not log.empty():
            events.append(log.get())
        per = {}
        for ev, name, bid, key, ts in events:
            per.setdefault(bid, []).append((ts, ev, name, key))
        self.assertEqual(set(per), ids)
        leases = 0
        for bid, evs in per.items():
            evs.sort()
            # lease, then release or complete by the same holder with the
            # same key, alternating: never two leases at once.
            holder = None
            completed = 0
            for ts, ev, name, key in evs:
                if ev == "lease":
                    self.assertIsNone(holder, "build %d leased twice at once: %s" % (bid, evs))
                    holder = (name, key)
                    leases += 1
                else:
                    self.assertEqual(holder, (name, key), "build %d: %s" % (bid, evs))
                    holder = None
                    completed += ev == "complete"
            self.assertIsNone(holder)
            self.assertEqual(completed, 1, "build %d completed %d times" % (bid, completed))
            keys = [k for _, ev, _, k in evs if ev == "lease"]
            self.assertEqual(len(set(keys)), len(keys), "lease keys reused")
        self.assertGreaterEqual(leases, n)
        by = {}
        for ev, name, *_ in events:
            if ev == "complete":
                by[name] = by.get(name, 0) + 1
        self.assertEqual(sum(by.values()), n)
        s = setup.Search(pb.SearchRequest(buckets=["race"], status=pb.COMPLETED,
                                          max_builds=1000))
        self.assertEqual({b.id for b in s.builds}, ids)
        self.assertTrue(all(b.result == pb.SUCCESS for b in s.builds))


# ---- 5. two reactords, one Redis; SIGKILL and restart ------------------------------


class TestShared(BucketsCase):
    def test_two_reactords_share_buckets(self):
        ext = self.start_redis()
        over = {"redis": {"embedded": False, "address": ext.sock}}
        a_srv = self.start(over, name="ra")
        b_srv = self.start(over, name="rb")
        a, b = self.api(a_srv), self.api(b_srv)
        watch = b.WatchBuilds(pb.WatchBuildsRequest(buckets=["shared"]), timeout=30)
        watch.initial_metadata()
        seen = iter(watch)  # B's watcher sees changes made through A and B
        put = self.put(a, "shared")
        self.assertEqual((next(seen).id, put.id), (put.id, put.id))
        self.assertEqual([x.id for x in b.Peek(pb.PeekRequest(buckets=["shared"])).builds],
                         [put.id])
        lb = self.ok(b.Lease(pb.LeaseRequest(id=put.id, leasee="b")))
        self.assertEqual(next(seen).lease_expiration_ts, lb.lease_expiration_ts)
        self.assertEqual(reason(a.Lease(pb.LeaseRequest(id=put.id))), "CANNOT_LEASE_BUILD")
        self.assertEqual(list(a.Peek(pb.PeekRequest(buckets=["shared"])).builds), [])
        self.ok(a.Start(pb.StartRequest(id=put.id, lease_key=lb.lease_key, url="u")))
        m = next(seen)
        self.assertEqual((m.status, m.url), (pb.STARTED, "u"))
        fb = self.ok(b.Succeed(pb.SucceedRequest(id=put.id, lease_key=lb.lease_key)))
        m = next(seen)
        self.assertEqual((m.status, m.result, m.updated_ts), (pb.COMPLETED, pb.SUCCESS,
                                                               fb.updated_ts))
        watch.cancel()
        ga = self.ok(a.Get(pb.GetRequest(id=put.id)))
        self.assertEqual((ga.status, ga.result, ga.updated_ts),
                         (pb.COMPLETED, pb.SUCCESS, fb.updated_ts))
        self.assertEqual(reason(a.Succeed(pb.SucceedRequest(id=put.id, lease_key=lb.lease_key,
                                                            url="other"))),
                         "BUILD_IS_COMPLETED")
        # Ids from both servers are unique and increasing.
        ids = []
        for i in range(20):
            ids.append(self.put(a if i % 2 else b, "shared").id)
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(len(set(ids)), 20)

    def test_sigkill_and_restart(self):
        srv = self.start()
        api = self.api(srv)
        ids = [self.put(api, "k").id for _ in range(5)]
        long_id, long_key = self.leased(api, "k", start=True, exp=now_us() + 3600 * US)
        short_id, short_key = self.leased(api, "k", start=True, exp=now_us() + 1500000)
        srv.expected_rc = None
        srv.signal(signal.SIGKILL)
        srv.wait_exit(10)
        cfg = dict(srv.cfg)
        cfg["ready-file"] = os.path.join(self.tmp, "again.ready")
        srv2 = self.start_reactord(cfg=cfg, name="again")
        api2 = self.api(srv2)
        # Nothing lost.
        for bid in ids:
            self.assertEqual(self.ok(api2.Get(pb.GetRequest(id=bid))).status, pb.SCHEDULED)
        # The long lease still holds; the short one expires on the new server.
        self.ok(api2.Heartbeat(pb.HeartbeatRequest(id=long_id, lease_key=long_key,
                                                    lease_expiration_ts=now_us() + 60 * US)))
        b = self.wait_status(api2, short_id, pb.SCHEDULED, timeout=6)
        self.assertEqual(b.lease_expiration_ts, 0)
        self.assertEqual(reason(api2.Start(pb.StartRequest(id=short_id, lease_key=short_key))),
                         "LEASE_EXPIRED")
        lb = self.ok(api2.Lease(pb.LeaseRequest(id=short_id)))
        self.assertNotEqual(lb.lease_key, short_key)
        self.ok(api2.Succeed(pb.SucceedRequest(id=long_id, lease_key=long_key)))
        later = self.put(api2, "k")
        self.assertGreater(later.id, max(ids + [short_id, long_id]))


# ---- 6. WatchBuilds and redis-cli SUBSCRIBE --------------------------------------


class TestWatch(BucketsCase):
    def subscribe(self, sock, channel):
        p = subprocess.Popen([REDIS_CLI, "-s", sock, "--no-raw", "SUBSCRIBE", channel],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, text=True)
        self.addCleanup(lambda: (p.kill(), p.wait()))
        lines = queue.Queue()

        def pump():
            for ln in p.stdout:
                lines.put(ln.rstrip("\n"))
        threading.Thread(target=pump, daemon=True).start()
        # "subscribe" / channel / count: the subscription is live.
        while '"subscribe"' not in lines.get(timeout=10 * h.SLOW):
            pass
        lines.get(timeout=5)
        self.assertIn("(integer) 1", lines.get(timeout=5))
        return lines

    def next_event(self, lines):
        """The JSON payload of the next "message" from redis-cli."""
        while True:
            ln = lines.get(timeout=10 * h.SLOW)
            if ln.endswith('"message"'):
                lines.get(timeout=5)  # channel
                payload = lines.get(timeout=5)
                # --no-raw prints a quoted, escaped string.
                return json.loads(json.loads(payload.split(") ", 1)[1]))

    def test_watch_and_subscribe_see_every_transition(self):
        srv = self.start()
        api = self.api(srv)
        sock = os.path.join(srv.state_dir, "redis", "redis.sock")
        self.put(api, "first")  # makes the keys the namespace is read from
        lines = self.subscribe(sock, self.redis(sock).bb() + "events:wb")
        wb = api.WatchBuilds(pb.WatchBuildsRequest(buckets=["wb"]), timeout=60)
        wb.initial_metadata()  # headers sent: the subscription is live
        other = self.put(api, "elsewhere")  # not watched
        steps = []
        b = self.put(api, "wb")
        bid = b.id
        wid = api.WatchBuilds(pb.WatchBuildsRequest(build_ids=[bid, other.id]), timeout=60)
        wid.initial_metadata()
        steps.append(("PUT", pb.SCHEDULED, False))
        lb = self.ok(api.Lease(pb.LeaseRequest(id=bid, leasee="w")))
        key = lb.lease_key
        steps.append(("LEASE", pb.SCHEDULED, True))
        self.ok(api.Start(pb.StartRequest(id=bid, lease_key=key, url="u1")))
        steps.append(("START", pb.STARTED, True))
        self.ok(api.Start(pb.StartRequest(id=bid, lease_key=key, url="u2")))  # url change
        steps.append(("START", pb.STARTED, True))
        self.ok(api.Heartbeat(pb.HeartbeatRequest(id=bid, lease_key=key,
                                                   lease_expiration_ts=now_us() + 600 * US)))
        steps.append(("HEARTBEAT", pb.STARTED, True))
        self.ok(api.Reset(pb.ResetRequest(id=bid)))
        steps.append(("RESET", pb.SCHEDULED, False))
        self.ok(api.Cancel(pb.CancelRequest(id=bid)))
        steps.append(("CANCEL", pb.COMPLETED, False))
        # redis-cli saw one event per transition, in order.
        evs = [self.next_event(lines) for _ in steps]
        self.assertEqual([e["event"] for e in evs], [s[0] for s in steps])
        self.assertTrue(all(e["build_id"] == str(bid) for e in evs))
        self.assertEqual([e["status"] for e in evs], [pb.Status.Name(s[1]) for s in steps])
        ups = [e["updated_ts"] for e in evs]
        self.assertEqual(ups, sorted(set(ups)))
        # Both watchers end with the final state; every state they send is
        # one of the states the build went through, in order, lease_key 0.
        for stream in (wb, wid):
            got = []
            for m in stream:
                self.assertEqual(m.id, bid)
                self.assertEqual(m.lease_key, 0)
                self.assertGreater(m.utcnow_ts, 0)
                got.append(m)
                if m.status == pb.COMPLETED:
                    break
            stream.cancel()
            self.assertEqual([m.updated_ts for m in got], sorted(set(m.updated_ts for m in got)))
            self.assertTrue(set(m.updated_ts for m in got) <= set(ups))
            self.assertEqual(got[-1].result, pb.CANCELED)
            self.assertEqual(got[-1].updated_ts, ups[-1])
        self.assertTrue(srv.running())

    def test_watch_each_step_and_merged_burst(self):
        srv = self.start()
        api = self.api(srv)
        w = api.WatchBuilds(pb.WatchBuildsRequest(buckets=["wb2"]), timeout=60)
        w.initial_metadata()
        it = iter(w)
        b = self.put(api, "wb2")
        m = next(it)
        self.assertEqual((m.id, m.status), (b.id, pb.SCHEDULED))
        lb = self.ok(api.Lease(pb.LeaseRequest(id=b.id)))
        m = next(it)
        self.assertEqual(m.lease_expiration_ts, lb.lease_expiration_ts)
        self.assertEqual(m.lease_key, 0)
        self.ok(api.Start(pb.StartRequest(id=b.id, lease_key=lb.lease_key, url="x")))
        m = next(it)
        self.assertEqual((m.status, m.url), (pb.STARTED, "x"))
        # A burst of heartbeats may merge, but the last one arrives.
        last = 0
        for i in range(50):
            last = now_us() + (600 + i) * US
            self.ok(api.Heartbeat(pb.HeartbeatRequest(id=b.id, lease_key=lb.lease_key,
                                                       lease_expiration_ts=last)))
        n = 0
        while True:
            m = next(it)
            n += 1
            if m.lease_expiration_ts == last:
                break
        self.assertLessEqual(n, 50)
        # Lease expiry is a change too.
        self.ok(api.Heartbeat(pb.HeartbeatRequest(id=b.id, lease_key=lb.lease_key,
                                                   lease_expiration_ts=now_us() + 300000)))
        for _ in range(3):  # the heartbeat, then the expiry (they may merge)
            m = next(it)
            if m.status == pb.SCHEDULED:
                break
        self.assertEqual((m.status, m.lease_expiration_ts, m.url), (pb.SCHEDULED, 0, ""))
        w.cancel()
        # The server dropped the watcher (the next watch works as well).
        w2 = api.WatchBuilds(pb.WatchBuildsRequest(build_ids=[b.id]), timeout=30)
        w2.initial_metadata()
        self.ok(api.Cancel(pb.CancelRequest(id=b.id)))
        self.assertEqual(next(iter(w2)).status, pb.COMPLETED)
        w2.cancel()

    def test_watch_ends_on_shutdown(self):
        srv = self.start()
        api = self.api(srv)
        w = api.WatchBuilds(pb.WatchBuildsRequest(buckets=["z"]), timeout=60)
        w.initial_metadata()
        srv.signal(signal.SIGTERM)
        e = h.rpc_error(lambda: next(iter(w)))
        self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(srv.wait_exit(15), 0)


if __name__ == "__main__":
    h.main()
