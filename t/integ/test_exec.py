#!/usr/bin/python3
"""test_exec.py - end-to-end tests of remote execution: Execute and
WaitExecution (grpcio clients), the Operations service, and the Bots API
driven by testbot.Bot, against real reactord and redis-server processes.

Covers the success path, action-cache hits, in-flight deduplication,
missing inputs (PreconditionFailure), priorities, platform matching and
the no-worker failure, cancellation (one operation, then all; reaching
the bot), a bot dying mid-lease, max-attempts, action timeouts,
WaitExecution after completion / after retention / for garbage, Redis and
reactord restarts, two reactords sharing one Redis, and the quiet cost of
idle waiters.

Run by `make check`; by hand: /usr/bin/python3 t/integ/test_exec.py [NAME...]
"""

import os
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import testbot as tb  # noqa: E402
from harness import grpc, pb  # noqa: E402

OK, CANCELLED, DEADLINE_EXCEEDED, FAILED_PRECONDITION, UNAVAILABLE = 0, 1, 4, 9, 14
LINUX = (("OSFamily", "linux"),)
# redis.prefix: every key and channel reactord writes starts with it.
NS = "reactor:"


def exec_config(**inst):
    i = {"name": "", "execution": True, "storage": "memory",
         "platform-properties": ["pool"], "no-worker-timeout": "30s",
         "operation-retention": "1m", "max-attempts": 5}
    i.update(inst)
    return {"instances": [i],
            "scheduler": {"bot-session-keepalive": "2s", "safety-net-interval": "1s",
                          "keepalive-interval": "30s", "sweep-interval": "100ms",
                          "long-poll": "1s"}}


class ExecCase(h.ReactordTestCase):
    def start(self, sched=None, name="reactord", **inst):
        cfg = exec_config(**inst)
        if sched:
            cfg["scheduler"].update(sched)
        srv = self.start_reactord(cfg, name=name)
        ch = self.channel(srv.tcp_addr)
        return srv, ch

    def bot(self, srv, bot_id, **kw):
        b = tb.Bot(srv.tcp_addr, bot_id, **kw)
        self.addCleanup(b.stop)
        b.start()
        return b

    def action(self, ch, *args, **kw):
        d, blobs = tb.make_action(args or ("true",), **kw)
        tb.upload(ch, blobs)
        return d

    def first(self, stream):
        """The first Operation of a stream (QUEUED or later)."""
        return next(stream)

    def assert_done(self, ops, code=OK, cached=False):
        last = ops[-1]
        self.assertTrue(last.done)
        self.assertFalse(last.HasField("error"), "Operation.error must never be set")
        r = tb.op_response(last)
        self.assertEqual(r.status.code, code, r.status.message)
        self.assertEqual(r.cached_result, cached)
        self.assertEqual(tb.stage_name(tb.op_meta(last).stage), "COMPLETED")
        return r


# ---- success, cache, dedup ----------------------------------------------------


class TestExecute(ExecCase):
    def test_success_then_cache_hit(self):
        srv, ch = self.start()
        bot = self.bot(srv, "b1", mode="active", stdout=b"hello\n", delay=0.3)
        d = self.action(ch, "echo", "hello")
        ops = tb.run_to_end(tb.execute(ch, d))
        stages = [tb.stage_name(tb.op_meta(o).stage) for o in ops]
        self.assertEqual(stages[0], "QUEUED", stages)
        self.assertIn("EXECUTING", stages)
        self.assertEqual(stages[-1], "COMPLETED")
        self.assertEqual(len(set(o.name for o in ops)), 1)
        self.assertEqual(tb.op_meta(ops[0]).action_digest, d)
        r = self.assert_done(ops)
        self.assertEqual(r.result.exit_code, 0)
        self.assertEqual(r.result.stdout_raw, b"hello\n")
        self.assertEqual(r.result.execution_metadata.worker, "b1")
        self.assertEqual(len(bot.completed), 1)
        # GetOperation and a late WaitExecution see the result.
        g = tb.get_operation(ch, ops[0].name)
        self.assertTrue(g.done)
        self.assertEqual(tb.op_response(g).result.stdout_raw, b"hello\n")
        w = tb.run_to_end(tb.wait_execution(ch, ops[0].name))
        self.assertEqual(len(w), 1)
        self.assertEqual(tb.op_response(w[0]).result.stdout_raw, b"hello\n")
        # Executing again is a cache hit, answered at once.
        again = tb.run_to_end(tb.execute(ch, d))
        self.assertEqual(len(again), 1)
        r2 = self.assert_done(again, cached=True)
        self.assertEqual(r2.result.stdout_raw, b"hello\n")
        self.assertNotEqual(again[0].name, ops[0].name)
        self.assertEqual(len(bot.got), 1, "a cache hit must not run the action")
        # skip_cache_lookup runs it again.
        self.assert_done(tb.run_to_end(tb.execute(ch, d, skip_cache=True)))
        self.assertEqual(len(bot.got), 2)
        # GetActionResult agrees.
        re_ = pb().re
        ar = h.unary(ch, "/build.bazel.remote.execution.v2.ActionCache/GetActionResult",
                     re_.GetActionResultRequest, re_.ActionResult)(
            re_.GetActionResultRequest(action_digest=d), timeout=5)
        self.assertEqual(ar.stdout_raw, b"hello\n")

    def test_failed_action_not_cached(self):
        srv, ch = self.start()
        bot = self.bot(srv, "b1", exit_code=3)
        d = self.action(ch, "false")
        r = self.assert_done(tb.run_to_end(tb.execute(ch, d)))
        self.assertEqual(r.result.exit_code, 3)
        self.assert_done(tb.run_to_end(tb.execute(ch, d)))
        self.assertEqual(len(bot.got), 2, "exit code 3 must not be cached")

    def test_do_not_cache(self):
        srv, ch = self.start()
        bot = self.bot(srv, "b1")
        d = self.action(ch, "date", do_not_cache=True)
        self.assert_done(tb.run_to_end(tb.execute(ch, d)))
        self.assert_done(tb.run_to_end(tb.execute(ch, d)))
        self.assertEqual(len(bot.got), 2)

    def test_dedup(self):
        srv, ch = self.start()
        d = self.action(ch, "sleep", "1")
        streams = [tb.execute(ch, d) for _ in range(10)]
        firsts = [self.first(s) for s in streams]
        names = set(o.name for o in firsts)
        self.assertEqual(len(names), 10)
        r = tb.embedded_redis(srv)
        self.addCleanup(r.close)
        jobs = set(r("HGET", NS + "op:" + n, "job") for n in names)
        self.assertEqual(len(jobs), 1, jobs)
        job = jobs.pop().decode()
        self.assertEqual(int(r("HGET", NS + "job:" + job, "ops")), 10)
        bot = self.bot(srv, "b1")
        for s in streams:
            self.assert_done(list(s))
        self.assertEqual(bot.got, [job])
        self.assertEqual(r("SCARD", NS + "job:%s:ops" % job), 10)

    def test_missing_inputs(self):
        srv, ch = self.start()
        re_ = pb().re
        d, blobs = tb.make_action(("cc", "x.c"))
        from google.rpc import error_details_pb2, status_pb2
        # Nothing uploaded: the Action itself is missing.
        e = h.rpc_error(list, tb.execute(ch, d))
        self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION)

        def violations(err):
            md = dict(err.trailing_metadata())
            st = status_pb2.Status.FromString(md["grpc-status-details-bin"])
            self.assertEqual(st.code, FAILED_PRECONDITION)
            pf = error_details_pb2.PreconditionFailure()
            self.assertTrue(st.details[0].Unpack(pf))
            return sorted((v.type, v.subject) for v in pf.violations)
        self.assertEqual(violations(e), [("MISSING", "blobs/%s/%d" % (d.hash, d.size_bytes))])
        # Only the Action: Command and input root are missing.
        act = re_.Action.FromString(blobs[d.hash])
        tb.upload(ch, [blobs[d.hash]])
        e = h.rpc_error(list, tb.execute(ch, d))
        self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION)
        want = sorted(("MISSING", "blobs/%s/%d" % (x.hash, x.size_bytes))
                      for x in (act.command_digest,) +
                      ((act.input_root_digest,) if act.input_root_digest.size_bytes else ()))
        self.assertEqual(violations(e), want)
        self.assertIn(act.command_digest.hash, e.details())
        # Garbage digest: INVALID_ARGUMENT.
        bad = re_.Digest(hash="xyz", size_bytes=1)
        e = h.rpc_error(list, tb.execute(ch, bad))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assert_serving(srv)

    def test_timeout_over_max_is_invalid(self):
        srv, ch = self.start(**{"max-execution-timeout": "10s"})
        d = self.action(ch, "sleep", "100", timeout=100)
        e = h.rpc_error(list, tb.execute(ch, d))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("max-execution-timeout", e.details())

    def test_parsed_blob_size_caps(self):
        # Checked against the digest before reading: over the cap is
        # INVALID_ARGUMENT naming the limit, at the cap is accepted.
        srv, ch = self.start(**{"max-batch-size": "12MiB"})
        MIB = 1 << 20
        d = self.action(ch, "x" * (4 * MIB + 1))
        e = h.rpc_error(list, tb.execute(ch, d))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertRegex(e.details(), r"^Command blobs/[0-9a-f]{64}/\d+ is \d+ bytes, "
                         r"over the 4 MiB limit for a parsed Command$")
        d = self.action(ch, "true", salt=b"s" * (MIB + 1))
        e = h.rpc_error(list, tb.execute(ch, d))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertRegex(e.details(), r"^Action blobs/%s/%d is %d bytes, over the 1 MiB "
                         r"limit for a parsed Action$" % (d.hash, d.size_bytes, d.size_bytes))
        # Just under both caps: queued.
        d = self.action(ch, "y" * (4 * MIB - 64), salt=b"s" * (MIB - 512))
        self.assertEqual(self.first(tb.execute(ch, d)).done, False)

    def test_execution_disabled(self):
        srv = self.start_reactord()  # execution is off by default
        ch = self.channel(srv.tcp_addr)
        d, blobs = tb.make_action(("true",))
        e = h.rpc_error(list, tb.execute(ch, d))
        self.assertEqual(e.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.assertIn("execution", e.details())
        caps = h.get_capabilities(ch)
        self.assertFalse(caps.execution_capabilities.exec_enabled)

    def test_capabilities(self):
        srv, ch = self.start()
        ec = h.get_capabilities(ch).execution_capabilities
        self.assertTrue(ec.exec_enabled)
        self.assertEqual(ec.digest_function, pb().re.DigestFunction.SHA256)
        self.assertTrue(ec.execution_priority_capabilities.priorities)
        pr = ec.execution_priority_capabilities.priorities[0]
        self.assertLess(pr.min_priority, 0)
        self.assertGreater(pr.max_priority, 0)
        self.assertIn("pool", list(ec.supported_node_properties))
        self.assertIn("OSFamily", list(ec.supported_node_properties))


# ---- scheduling -----------------------------------------------------------------


class TestScheduling(ExecCase):
    def test_priorities(self):
        srv, ch = self.start()
        # Queue five jobs with no bot around, then let one bot take them.
        specs = [("p5", 5), ("m5a", -5), ("z0", 0), ("m5b", -5), ("p5b", 5)]
        streams = []
        for name, prio in specs:
            d = self.action(ch, "echo", name)
            s = tb.execute(ch, d, priority=prio)
            self.assertEqual(tb.stage_name(tb.op_meta(self.first(s)).stage), "QUEUED")
            streams.append((name, s))
        r = tb.embedded_redis(srv)
        self.addCleanup(r.close)
        order_jobs = r("ZRANGE", NS + "queue::", 0, -1)
        self.assertEqual(len(order_jobs), 5)
        bot = self.bot(srv, "b1")
        for _, s in streams:
            self.assert_done(list(s))
        self.assertEqual([j.encode() for j in bot.got], order_jobs)
        # Priority first (lower runs sooner), then arrival.
        by_action = {}
        for name, _ in specs:
            dd, _ = tb.make_action(("echo", name))
            by_action["%s/%d" % (dd.hash, dd.size_bytes)] = name
        ran = [by_action[r("HGET", NS + "job:" + j, "action").decode()] for j in bot.got]
        self.assertEqual(ran, ["m5a", "m5b", "z0", "p5", "p5b"])

    def test_dedup_raises_priority(self):
        srv, ch = self.start()
        d1 = self.action(ch, "echo", "one")
        d2 = self.action(ch, "echo", "two")
        s1 = tb.execute(ch, d1, priority=10)
        s2 = tb.execute(ch, d2, priority=0)
        self.first(s1), self.first(s2)
        s1b = tb.execute(ch, d1, priority=-10)  # same action, better priority
        self.first(s1b)
        bot = self.bot(srv, "b1")
        for s in (s1, s2, s1b):
            list(s)
        r = tb.embedded_redis(srv)
        self.addCleanup(r.close)
        first = r("HGET", NS + "job:" + bot.got[0], "action").decode()
        self.assertEqual(first, "%s/%d" % (d1.hash, d1.size_bytes))

    def test_platform_matching_and_no_worker(self):
        srv, ch = self.start(**{"no-worker-timeout": "1s"})
        lin = self.action(ch, "uname", platform=(("OSFamily", "linux"), ("pool", "big")))
        win = self.action(ch, "ver", platform=(("OSFamily", "windows"),))
        big = self.bot(srv, "big", props=(("OSFamily", "linux"), ("pool", "big"),
                                          ("ISA", "x86-64")))
        small = self.bot(srv, "small", props=(("OSFamily", "linux"),))
        t0 = time.monotonic()
        sw = tb.execute(ch, win)
        self.assert_done(tb.run_to_end(tb.execute(ch, lin)))
        self.assertEqual(len(big.got), 1)
        self.assertEqual(small.got, [])
        ops = tb.run_to_end(sw)
        r = self.assert_done(ops, code=FAILED_PRECONDITION)
        self.assertIn("OSFamily=windows", r.status.message)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertEqual(big.got + small.got, big.got)
        # An undeclared property is refused at once.
        odd = self.action(ch, "x", platform=(("gpu", "yes"),))
        e = h.rpc_error(list, tb.execute(ch, odd))
        self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn('"gpu"', e.details())

    def test_command_platform_is_used(self):
        srv, ch = self.start()
        d = self.action(ch, "uname", command_platform=(("pool", "small"),))
        s = tb.execute(ch, d)
        self.first(s)
        r = tb.embedded_redis(srv)
        self.addCleanup(r.close)
        self.assertEqual(r("SMEMBERS", NS + "platforms:"), [b"pool=small"])
        other = self.bot(srv, "other", props=(("pool", "big"),))
        right = self.bot(srv, "right", props=(("pool", "small"),))
        self.assert_done(list(s))
        self.assertEqual(other.got, [])
        self.assertEqual(len(right.got), 1)


# ---- cancellation, failures, timeouts ----------------------------------------------


class TestCancel(ExecCase):
    def test_cancel_one_then_both(self):
        srv, ch = self.start()
        d = self.action(ch, "sleep", "9")
        s1, s2 = tb.execute(ch, d), tb.execute(ch, d)
        o1, o2 = self.first(s1), self.first(s2)
        tb.cancel_operation(ch, o1.name)
        self.assert_done(tb.run_to_end(s1), code=CANCELLED)
        r = tb.embedded_redis(srv)
        self.addCleanup(r.close)
        job = r("HGET", NS + "op:" + o2.name, "job").decode()
        self.assertEqual(r("HGET", NS + "job:" + job, "stage"), b"QUEUED")
        self.assertEqual(r("ZCARD", NS + "queue::"), 1)
        tb.cancel_operation(ch, o2.name)
        self.assert_done(tb.run_to_end(s2), code=CANCELLED)
        self.assertEqual(r("HGET", NS + "job:" + job, "stage"), b"COMPLETED")
        self.assertEqual(r("ZCARD", NS + "queue::"), 0)
        g = tb.get_operation(ch, o1.name)
        self.assertEqual(tb.op_response(g).status.code, CANCELLED)
        # Cancelling a finished operation is fine; an unknown one is not.
        tb.cancel_operation(ch, o1.name)
        e = h.rpc_error(tb.cancel_operation, ch, "operations/nope")
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)

    def test_cancel_reaches_bot(self):
        srv, ch = self.start()
        bot = self.bot(srv, "b1", mode="hang")
        d = self.action(ch, "sleep", "99")
        s = tb.execute(ch, d)
        o = self.first(s)
        self.assertTrue(bot.got_ev.wait(10 * h.SLOW))
        tb.cancel_operation(ch, o.name)
        self.assert_done(tb.run_to_end(s), code=CANCELLED)
        self.assertTrue(bot.cancel_ev.wait(10 * h.SLOW), "the bot never saw CANCELLED")
        self.assertEqual(bot.cancelled, bot.got)

    def test_orphaned_job_cancelled_when_configured(self):
        srv, ch = self.start(**{"cancel-orphaned-jobs": True})
        d = self.action(ch, "sleep", "99")
        s = tb.execute(ch, d)
        o = self.first(s)
        s.cancel()
        r = tb.embedded_redis(srv)
        self.addCleanup(r.close)
        h.wait_for(lambda: r("HGET", NS + "op:" + o.name, "stage") == b"COMPLETED", 5,
                   "the orphaned operation to be cancelled")
        self.assertEqual(r("ZCARD", NS + "queue::"), 0)

    def test_client_gone_job_runs_on(self):
        srv, ch = self.start()
        d = self.action(ch, "sleep", "1")
        s = tb.execute(ch, d)
        o = self.first(s)
        s.cancel()
        bot = self.bot(srv, "b1")
        self.assert_done(tb.run_to_end(tb.wait_execution(ch, o.name)))
        self.assertEqual(len(bot.completed), 1)

    def test_bot_dies_mid_lease(self):
        srv, ch = self.start()
        dead = self.bot(srv, "dies", mode="die")
        d = self.action(ch, "make")
        s = tb.execute(ch, d)
        self.first(s)
        self.assertTrue(dead.got_ev.wait(10 * h.SLOW))
        good = self.bot(srv, "good")
        ops = tb.run_to_end(s)
        r = self.assert_done(ops)
        self.assertEqual(r.result.execution_metadata.worker, "good")
        self.assertEqual(good.got, dead.got)
        rr = tb.embedded_redis(srv)
        self.addCleanup(rr.close)
        job = good.got[0]
        self.assertEqual(rr("HGET", NS + "job:" + job, "attempts"), b"2")
        self.assertEqual(rr("HGET", NS + "job:" + job, "bots"), b"dies,good")
        self.assertIn("expired", srv.log())

    def test_max_attempts(self):
        srv, ch = self.start(**{"max-attempts": 2})
        d = self.action(ch, "crash")
        s = tb.execute(ch, d)
        self.first(s)
        b1 = self.bot(srv, "first", mode="die")
        self.assertTrue(b1.got_ev.wait(10 * h.SLOW))
        b2 = self.bot(srv, "second", mode="die")
        r = self.assert_done(tb.run_to_end(s), code=UNAVAILABLE)
        self.assertIn("first", r.status.message)
        self.assertIn("second", r.status.message)
        self.assertIn("max-attempts", r.status.message)

    def test_action_timeout(self):
        srv, ch = self.start()
        bot = self.bot(srv, "b1", mode="hang")
        d = self.action(ch, "sleep", "99", timeout=1)
        t0 = time.monotonic()
        r = self.assert_done(tb.run_to_end(tb.execute(ch, d)), code=DEADLINE_EXCEEDED)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertIn("timed out", r.status.message)
        self.assertTrue(bot.cancel_ev.wait(10 * h.SLOW), "the bot never saw CANCELLED")


# ---- operations ---------------------------------------------------------------------


class TestOperations(ExecCase):
    def test_wait_execution_and_retention(self):
        srv, ch = self.start(**{"operation-retention": "1s"})
        self.bot(srv, "b1")
        d = self.action(ch, "true")
        ops = tb.run_to_end(tb.execute(ch, d))
        name = ops[0].name
        w = tb.run_to_end(tb.wait_execution(ch, name))
        self.assert_done(w)
        e = h.rpc_error(list, tb.wait_execution(ch, "operations/garbage-name"))
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
        e = h.rpc_error(list, tb.wait_execution(ch, ""))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)

        def gone():
            try:
                tb.get_operation(ch, name)
                return False
            except grpc.RpcError as ex:
                return ex.code() == grpc.StatusCode.NOT_FOUND
        h.wait_for(gone, 5, "operation to pass its retention")
        e = h.rpc_error(list, tb.wait_execution(ch, name))
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
        r = tb.embedded_redis(srv)
        self.addCleanup(r.close)
        h.wait_for(lambda: not r("KEYS", NS + "job:*"), 5, "job keys to be removed")
        self.assertEqual(r("ZCARD", NS + "ops:"), 0)

    def test_wait_operation(self):
        srv, ch = self.start()
        o = pb().operations
        from google.protobuf import duration_pb2
        wait = h.unary(ch, tb.OPS + "WaitOperation", o.WaitOperationRequest, o.Operation)
        # Nobody runs it yet: the wait ends at its timeout, not done.
        s = tb.execute(ch, self.action(ch, "wait-op"))
        name = self.first(s).name
        t0 = time.monotonic()
        op = wait(o.WaitOperationRequest(name=name,
                                         timeout=duration_pb2.Duration(nanos=300000000)),
                  timeout=10)
        self.assertFalse(op.done)
        self.assertEqual(op.name, name)
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        # A bot arrives while we wait: the answer comes when it is done.
        pending = wait.future(o.WaitOperationRequest(
            name=name, timeout=duration_pb2.Duration(seconds=30)), timeout=40)
        self.bot(srv, "b1")
        op = pending.result()
        self.assertTrue(op.done)
        self.assert_done([op])
        # Done already: answered at once.
        op = wait(o.WaitOperationRequest(name=name), timeout=10)
        self.assertTrue(op.done)
        e = h.rpc_error(wait, o.WaitOperationRequest(name="operations/none"), timeout=10)
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
        e = h.rpc_error(wait, o.WaitOperationRequest(name=""), timeout=10)
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        s.cancel()

    def test_list_get_delete(self):
        srv, ch = self.start()
        bot = self.bot(srv, "b1")
        done = tb.run_to_end(tb.execute(ch, self.action(ch, "a")))
        bot.stop()
        s = tb.execute(ch, self.action(ch, "b"))
        queued = self.first(s)
        names = set()
        tok = ""
        while True:
            resp = tb.list_operations(ch, "", page_size=1, page_token=tok)
            names.update(o.name for o in resp.operations)
            tok = resp.next_page_token
            if not tok:
                break
        self.assertEqual(names, {done[0].name, queued.name})
        q = tb.list_operations(ch, "", filter="stage=QUEUED")
        self.assertEqual([o.name for o in q.operations], [queued.name])
        c = tb.list_operations(ch, "", filter="stage = COMPLETED")
        self.assertEqual([o.name for o in c.operations], [done[0].name])
        e = h.rpc_error(tb.list_operations, ch, "", filter="done=maybe")
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        o = pb().operations
        from google.protobuf import empty_pb2
        h.unary(ch, tb.OPS + "DeleteOperation", o.DeleteOperationRequest, empty_pb2.Empty)(
            o.DeleteOperationRequest(name=done[0].name), timeout=5)
        e = h.rpc_error(tb.get_operation, ch, done[0].name)
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
        s.cancel()

    def test_bots_api_errors(self):
        srv, ch = self.start()
        b = pb().bots
        create = h.unary(ch, tb.BOTS + "CreateBotSession", b.CreateBotSessionRequest,
                         b.BotSession)
        update = h.unary(ch, tb.BOTS + "UpdateBotSession", b.UpdateBotSessionRequest,
                         b.BotSession)
        e = h.rpc_error(create, b.CreateBotSessionRequest(parent="", bot_session=b.BotSession()),
                        timeout=5)
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        s1 = create(b.CreateBotSessionRequest(bot_session=b.BotSession(bot_id="x", status=b.OK)),
                    timeout=5)
        self.assertTrue(s1.name)
        self.assertGreater(s1.expire_time.seconds, time.time())
        # Wrong bot id: refused, and the session is closed.
        e = h.rpc_error(update, b.UpdateBotSessionRequest(
            name=s1.name, bot_session=b.BotSession(name=s1.name, bot_id="y")), timeout=5)
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        e = h.rpc_error(update, b.UpdateBotSessionRequest(
            name=s1.name, bot_session=b.BotSession(name=s1.name, bot_id="x")), timeout=5)
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
        # A new session for the same bot id replaces the old one.
        s2 = create(b.CreateBotSessionRequest(bot_session=b.BotSession(bot_id="x")), timeout=5)
        s3 = create(b.CreateBotSessionRequest(bot_session=b.BotSession(bot_id="x")), timeout=5)
        e = h.rpc_error(update, b.UpdateBotSessionRequest(
            name=s2.name, bot_session=b.BotSession(name=s2.name, bot_id="x")), timeout=5)
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
        # An idle bot's update long-polls and comes back without a lease.
        t0 = time.monotonic()
        r = update(b.UpdateBotSessionRequest(
            name=s3.name, bot_session=b.BotSession(name=s3.name, bot_id="x", status=b.OK)),
            timeout=2)
        self.assertEqual(len(r.leases), 0)
        self.assertGreaterEqual(time.monotonic() - t0, 0.5)
        # PostBotEventTemp is logged.
        from google.protobuf import empty_pb2
        h.unary(ch, tb.BOTS + "PostBotEventTemp", b.PostBotEventTempRequest, empty_pb2.Empty)(
            b.PostBotEventTempRequest(name=s3.name, type=b.PostBotEventTempRequest.ERROR,
                                      msg="disk on fire"), timeout=5)
        srv.wait_log("disk on fire")

    def test_long_poll_wakes_on_work(self):
        srv, ch = self.start(sched={"long-poll": "20s"})
        b = pb().bots
        create = h.unary(ch, tb.BOTS + "CreateBotSession", b.CreateBotSessionRequest,
                         b.BotSession)
        update = h.unary(ch, tb.BOTS + "UpdateBotSession", b.UpdateBotSessionRequest,
                         b.BotSession)
        s = create(b.CreateBotSessionRequest(bot_session=b.BotSession(bot_id="w")), timeout=5)
        fut = update.future(b.UpdateBotSessionRequest(
            name=s.name, bot_session=b.BotSession(name=s.name, bot_id="w", status=b.OK)),
            timeout=30)
        srv.wait_log("bot w opens session")
        time.sleep(0.3)  # let the update reach its long poll (not readiness)
        self.assertFalse(fut.done())
        d = self.action(ch, "wake")
        t0 = time.monotonic()
        st = tb.execute(ch, d)
        self.first(st)
        r = fut.result()
        self.assertLess(time.monotonic() - t0, 3, "the long poll was not woken by pub/sub")
        self.assertEqual(len(r.leases), 1)
        dg = pb().re.Digest()
        self.assertTrue(r.leases[0].payload.Unpack(dg))
        self.assertEqual(dg, d)
        st.cancel()


# ---- restarts and scale ---------------------------------------------------------------


class TestRestart(ExecCase):
    def test_redis_restart_waiters_recover(self):
        srv, ch = self.start()
        d = self.action(ch, "after-restart")
        s = tb.execute(ch, d)
        self.first(s)
        os.kill(srv.redis_pid(srv.state_dir), signal.SIGKILL)
        self.wait_health(srv, "NOT_SERVING", 10)
        self.wait_health(srv, "SERVING", 20)
        bot = self.bot(srv, "b1")
        self.assert_done(tb.run_to_end(s))
        self.assertEqual(len(bot.completed), 1)

    def test_sigkill_restart_loses_nothing(self):
        srv, ch = self.start()
        queued = []
        for i in range(5):
            s = tb.execute(ch, self.action(ch, "job", str(i)))
            queued.append(self.first(s).name)
        srv.expected_rc = None
        srv.kill()
        # SIGKILL leaves the ready-file (and the embedded redis-server)
        # behind; the new process reuses the server and rewrites the file.
        os.unlink(srv.ready_file)
        srv2 = self.start_reactord(srv.cfg, name="reactord")
        ch2 = self.channel(srv2.tcp_addr)
        self.bot(srv2, "b1")
        for name in queued:
            self.assert_done(tb.run_to_end(tb.wait_execution(ch2, name)))

    def test_two_reactords_2000_jobs(self):
        ext = self.start_redis()
        N = 2000
        cfgs = []
        srvs = []
        for name in ("ra", "rb"):
            cfg = h.deep_merge(self.base_config(name), exec_config())
            cfg["redis"] = {"embedded": False, "address": "unix:" + ext.sock,
                            "reconnect-max": "200ms"}
            cfg["log"] = {"level": "warn"}
            srvs.append(self.start_reactord(cfg=cfg, name=name))
        chs = [self.channel(s.tcp_addr) for s in srvs]
        actions = []
        blobs = {}
        for i in range(N):
            d, bl = tb.make_action(("job", str(i)))
            actions.append(d)
            blobs.update(bl)
        # Each reactord has its own memory CAS: both need the blobs.
        for c in chs:
            tb.upload(c, blobs)
        bots = [self.bot(srvs[i % 2], "bot%d" % i, poll=3.0) for i in range(4)]
        errors = []

        def client(k):
            try:
                c = chs[k % 2]
                for j in range(k, N, 16):
                    ops = tb.run_to_end(tb.execute(c, actions[j], timeout=120))
                    if tb.op_response(ops[-1]).status.code != 0:
                        errors.append(tb.op_response(ops[-1]).status)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        ts = [threading.Thread(target=client, args=(k,)) for k in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(200)
        self.assertEqual(errors, [])
        done = [l for b in bots for l in b.completed]
        self.assertEqual(len(done), N, "completions reported by bots")
        self.assertEqual(len(set(done)), N, "a job was run twice")
        r = tb.Resp(ext.sock)
        self.addCleanup(r.close)
        keys = [k for k in r("KEYS", NS + "job:*") if not k.endswith(b":ops")]
        self.assertEqual(len(keys), N)
        for k in keys:
            f = r.hgetall(k)
            self.assertEqual(f["stage"], b"COMPLETED")
            self.assertEqual(f["attempts"], b"1", k)
            self.assertEqual(f["status"], b"0")
        self.assertEqual(r("ZCARD", NS + "queue::"), 0)
        self.assertGreater(sum(len(b.completed) > 0 for b in bots), 1)
        # One namespace: nothing the two reactords wrote lies outside it.
        self.assertEqual([k for k in r("KEYS", "*") if not k.startswith(NS.encode())], [])


class TestQuietCost(ExecCase):
    def test_idle_waiters_cost_only_safety_net(self):
        srv, ch = self.start(sched={"safety-net-interval": "1s", "sweep-interval": "1s",
                                    "long-poll": "20s"})
        streams = []
        for i in range(100):
            s = tb.execute(ch, self.action(ch, "idle", str(i), platform=(("pool", "none"),)))
            self.first(s)
            streams.append(s)
        bots = [self.bot(srv, "idle%d" % i, poll=30.0) for i in range(10)]
        r = tb.embedded_redis(srv)
        self.addCleanup(r.close)
        h.wait_for(lambda: r("ZCARD", NS + "bots:") == 10, 10, "10 bot sessions")
        time.sleep(1.5)  # let every bot reach its long poll (a measurement, not readiness)
        before = r.commandstats()
        t0 = time.monotonic()
        time.sleep(4)
        after = r.commandstats()
        secs = time.monotonic() - t0
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        delta = {k: v for k, v in delta.items() if v}
        # Our own INFO, the scripts' inner calls and EVALSHA only.
        allowed = {"info", "evalsha", "hmget", "hget", "zrangebyscore", "hkeys", "smembers",
                   "zcard", "zrange", "zrem", "srem"}
        self.assertLessEqual(set(delta) - allowed, set(), delta)
        # Per second: one safety-net read of the watched jobs, one queue
        # probe for the waiting bots, one sweep (plus slack for timing).
        self.assertLessEqual(delta.get("evalsha", 0), 3 * (secs + 1) + 2, delta)
        for s in streams:
            s.cancel()


if __name__ == "__main__":
    h.main()
