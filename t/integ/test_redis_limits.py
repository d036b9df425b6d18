#!/usr/bin/python3
"""test_redis_limits.py - Redis is bounded (issue 11, section 4): the embedded
redis-server runs with maxmemory and maxmemory-policy noeviction; a full
Redis makes writes fail RESOURCE_EXHAUSTED with a message naming the limit
while reads keep working; a Redis that stops answering (SIGSTOP) makes
calls fail UNAVAILABLE after redis.command-timeout instead of hanging, and
everything recovers after SIGCONT; past redis.max-pending commands in
flight, calls fail UNAVAILABLE at once naming the limit.

Each test starts its own reactord and embedded redis-server through
harness.py and drives the ActionCache with grpcio.  A stopped redis-server
is always continued again (finally, and a cleanup that runs before
reactord is stopped), so nothing is left stopped or stray.  Run by `make
check`; by hand: /usr/bin/python3 t/integ/test_redis_limits.py [NAME...]
"""

import hashlib
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from harness import grpc, pb  # noqa: E402
from test_ac import redis_cmd  # noqa: E402

RE = "/build.bazel.remote.execution.v2."
GET = RE + "ActionCache/GetActionResult"
UPDATE = RE + "ActionCache/UpdateActionResult"
BATCH_UPDATE = RE + "ContentAddressableStorage/BatchUpdateBlobs"
BATCH_READ = RE + "ContentAddressableStorage/BatchReadBlobs"


def rpb():
    return pb().re


def digest(data):
    return rpb().Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


class RedisLimits(h.ReactordTestCase):
    def start(self, redis=None):
        self.srv = self.start_reactord({"redis": redis or {}})
        self.ch = self.channel(self.srv.tcp_addr)
        return self.srv

    def redis(self, *args):
        return redis_cmd(os.path.join(self.srv.state_dir, "redis", "redis.sock"), *args)

    def update(self, action, result, timeout=10):
        r = rpb()
        req = r.UpdateActionResultRequest(action_digest=action, action_result=result)
        return h.unary(self.ch, UPDATE, r.UpdateActionResultRequest, r.ActionResult)(
            req, timeout=timeout * h.SLOW)

    def get(self, action, timeout=10, ch=None):
        r = rpb()
        return h.unary(ch or self.ch, GET, r.GetActionResultRequest, r.ActionResult)(
            r.GetActionResultRequest(action_digest=action), timeout=timeout * h.SLOW)

    def stop_redis(self):
        """SIGSTOP the embedded redis-server; it is continued by
        cont_redis, and in any case before reactord is stopped."""
        pid = self.srv.redis_pid(self.srv.state_dir)
        self.addCleanup(self._cont, pid)
        os.kill(pid, signal.SIGSTOP)
        return pid

    @staticmethod
    def _cont(pid):
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def assert_recovers(self, action, result):
        self.wait_health(self.srv, "SERVING", timeout=15)
        self.assertEqual(self.get(action), result)

    # ---- maxmemory --------------------------------------------------------

    def test_embedded_default_maxmemory_noeviction(self):
        self.start()
        self.assertEqual(self.redis("CONFIG", "GET", "maxmemory"),
                         [b"maxmemory", str(1 << 30).encode()])
        self.assertEqual(self.redis("CONFIG", "GET", "maxmemory-policy"),
                         [b"maxmemory-policy", b"noeviction"])

    def test_full_redis_is_resource_exhausted(self):
        self.start({"maxmemory": "2MiB"})
        self.assertEqual(self.redis("CONFIG", "GET", "maxmemory"),
                         [b"maxmemory", str(2 << 20).encode()])
        self.assertEqual(self.redis("CONFIG", "GET", "maxmemory-policy"),
                         [b"maxmemory-policy", b"noeviction"])
        r = rpb()
        first = None
        err = None
        for i in range(100):
            action = digest(b"oom action %d" % i)
            res = r.ActionResult(exit_code=0, stdout_raw=b"%d" % i * 50000)
            try:
                self.update(action, res)
            except grpc.RpcError as e:
                err = e
                break
            if first is None:
                first = (action, res)
        self.assertIsNotNone(err, "100 x 50 KB never filled a 2 MiB Redis")
        self.assertIsNotNone(first, "the very first write failed: %s" % err)
        self.assertEqual(err.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, err.details())
        self.assertIn("Redis is out of memory (maxmemory 2MiB, config redis.maxmemory)",
                      err.details())
        # Nothing was evicted, reads keep working and so does the server.
        self.assertEqual(self.get(first[0]), first[1])
        self.assert_serving(self.srv)
        blob = b"cas still works"
        resp = h.unary(self.ch, BATCH_UPDATE, r.BatchUpdateBlobsRequest,
                       r.BatchUpdateBlobsResponse)(r.BatchUpdateBlobsRequest(requests=[
                           r.BatchUpdateBlobsRequest.Request(digest=digest(blob), data=blob)]),
                           timeout=10 * h.SLOW)
        self.assertEqual(resp.responses[0].status.code, 0)
        resp = h.unary(self.ch, BATCH_READ, r.BatchReadBlobsRequest,
                       r.BatchReadBlobsResponse)(
            r.BatchReadBlobsRequest(digests=[digest(blob)]), timeout=10 * h.SLOW)
        self.assertEqual(resp.responses[0].data, blob)
        self.assertRegex(self.srv.log(), r"OOM command not allowed")

    def test_external_evicting_policy_warns(self):
        ext = self.start_redis()
        redis_cmd(ext.sock, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
        self.start({"embedded": False, "address": ext.sock})
        self.srv.wait_log(r"warn .*has maxmemory-policy allkeys-lru: .*evicted keys corrupt")
        # An external server keeps its own settings.
        self.assertEqual(redis_cmd(ext.sock, "CONFIG", "GET", "maxmemory"), [b"maxmemory", b"0"])
        self.assert_serving(self.srv)

    def test_external_noeviction_is_quiet(self):
        ext = self.start_redis()
        self.start({"embedded": False, "address": ext.sock})
        action = digest(b"quiet")
        self.update(action, rpb().ActionResult(exit_code=1))
        self.assertNotIn("maxmemory-policy", self.srv.log())

    # ---- a Redis that stops answering -------------------------------------------

    def test_stopped_redis_fails_unavailable_after_timeout(self):
        self.start({"command-timeout": "500ms"})
        action = digest(b"before the stop")
        res = rpb().ActionResult(exit_code=7)
        self.update(action, res)
        pid = self.stop_redis()
        try:
            t0 = time.monotonic()
            err = h.rpc_error(self.get, action, timeout=30)
            took = time.monotonic() - t0
            self.assertEqual(err.code(), grpc.StatusCode.UNAVAILABLE, err.details())
            self.assertIn("Redis did not answer within 500ms, config redis.command-timeout",
                          err.details())
            self.assertLess(took, 5 * h.SLOW, "the call waited %.1fs" % took)
            # While it stays stopped, calls fail too rather than hang.
            t0 = time.monotonic()
            err = h.rpc_error(self.get, action, timeout=30)
            self.assertEqual(err.code(), grpc.StatusCode.UNAVAILABLE, err.details())
            self.assertLess(time.monotonic() - t0, 5 * h.SLOW)
            self.srv.wait_log(r"lost: Redis did not answer within 500ms")
        finally:
            os.kill(pid, signal.SIGCONT)
        self.assert_recovers(action, res)
        self.assertTrue(h.pid_alive(pid))
        self.assertEqual(self.srv.redis_pid(self.srv.state_dir), pid)

    # ---- the pending cap --------------------------------------------------------

    def test_pending_cap_fails_at_once(self):
        self.start({"command-timeout": "1m", "max-pending": 4})
        action = digest(b"pending cap")
        res = rpb().ActionResult(exit_code=3)
        self.update(action, res)
        pid = self.stop_redis()
        limit_msg = "too many commands wait for Redis (limit 4, config redis.max-pending)"
        n = 16
        try:
            r = rpb()
            call = h.unary(self.ch, GET, r.GetActionResultRequest, r.ActionResult)
            t0 = time.monotonic()
            futs = [call.future(r.GetActionResultRequest(action_digest=action),
                                timeout=60 * h.SLOW) for _ in range(n)]
            busy = []
            deadline = time.monotonic() + 5 * h.SLOW
            while time.monotonic() < deadline:
                busy = [f for f in futs if f.done() and f.exception() is not None]
                if len(busy) >= n - 4:
                    break
                time.sleep(0.02)
            took = time.monotonic() - t0
            self.assertGreaterEqual(len(busy), n - 4,
                                    "only %d of %d calls failed at once" % (len(busy), n))
            self.assertLess(took, 5 * h.SLOW)
            for f in busy:
                e = f.exception()
                self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE, e.details())
                self.assertIn(limit_msg, e.details())
            waiting = [f for f in futs if not f.done()]
            self.assertGreater(len(waiting), 0, "no call waited for Redis at all")
        finally:
            os.kill(pid, signal.SIGCONT)
        # The calls that waited get their answers once Redis resumes.
        for f in waiting:
            self.assertEqual(f.result(timeout=20 * h.SLOW), res)
        self.srv.wait_log(r"limit 4, config redis\.max-pending")
        self.assert_recovers(action, res)


if __name__ == "__main__":
    h.main()
