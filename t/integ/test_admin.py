#!/usr/bin/python3
"""test_admin.py - the read-only Admin service (reactor.admin.v1) with a
grpcio client against real reactord and redis-server processes, bots
driven by testbot.Bot: ListBots shows a bot with its properties and the
lease it holds while an action runs; ListQueues counts actions queued for
a platform whose only bot is busy; ListOperations filters by stage and
names the bot; GetSummary counts queues, bots and builds; an auth config
refuses callers without ops-admin.

Run by `make check`; by hand: /usr/bin/python3 t/integ/test_admin.py [NAME...]
"""

import hashlib
import os
import secrets
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import testbot as tb  # noqa: E402
from harness import grpc, pb  # noqa: E402
from reactor.admin.v1 import admin_pb2 as apb  # noqa: E402
from reactor.buckets.v1 import buckets_pb2 as bpb  # noqa: E402

ADM = "/reactor.admin.v1.Admin/"
BK = "/reactor.buckets.v1.Buckets/"
SC = grpc.StatusCode


def list_bots(ch, instance="", limit=0, md=None):
    return h.unary(ch, ADM + "ListBots", apb.ListBotsRequest, apb.ListBotsResponse)(
        apb.ListBotsRequest(instance_name=instance, limit=limit), timeout=10 * h.SLOW,
        metadata=md)


def list_queues(ch, instance="", md=None):
    return h.unary(ch, ADM + "ListQueues", apb.ListQueuesRequest, apb.ListQueuesResponse)(
        apb.ListQueuesRequest(instance_name=instance), timeout=10 * h.SLOW, metadata=md)


def list_ops(ch, instance="", stage="", limit=0, md=None):
    return h.unary(ch, ADM + "ListOperations", apb.ListOperationsRequest,
                   apb.ListOperationsResponse)(
        apb.ListOperationsRequest(instance_name=instance, stage=stage, limit=limit),
        timeout=10 * h.SLOW, metadata=md)


def summary(ch, md=None):
    return h.unary(ch, ADM + "GetSummary", apb.GetSummaryRequest, apb.Summary)(
        apb.GetSummaryRequest(), timeout=10 * h.SLOW, metadata=md)


def config(**extra):
    cfg = {"instances": [{"name": "", "execution": True, "storage": "memory",
                          "platform-properties": ["pool"], "no-worker-timeout": "5m",
                          "operation-retention": "5m"}],
           "scheduler": {"bot-session-keepalive": "30s", "long-poll": "1s",
                         "sweep-interval": "100ms"}}
    cfg.update(extra)
    return cfg


class AdminCase(h.ReactordTestCase):
    def bot(self, srv, bot_id, **kw):
        b = tb.Bot(srv.tcp_addr, bot_id, **kw)
        self.addCleanup(b.stop)
        b.start()
        return b

    def action(self, ch, *args, **kw):
        d, blobs = tb.make_action(args or ("true",), salt=os.urandom(8), **kw)
        tb.upload(ch, blobs)
        return d


class TestAdmin(AdminCase):
    def test_bots_queues_operations_summary(self):
        srv = self.start_reactord(config())
        ch = self.channel(srv.tcp_addr)
        props = (("OSFamily", "linux"), ("pool", "gpu"))
        bot = self.bot(srv, "gpu-1", props=props, mode="hang")
        plat = (("OSFamily", "linux"), ("pool", "gpu"))
        d1 = self.action(ch, "sleep", "100", platform=plat)
        s1 = tb.execute(ch, d1)
        op1 = next(s1).name
        h.wait_for(lambda: bot.got, 10 * h.SLOW, "the bot's lease")
        # ListBots: the bot, its properties and the lease it holds.
        def leased():
            r = list_bots(ch)
            return r if r.bots and r.bots[0].lease_state == "ACTIVE" else None
        r = h.wait_for(leased, 10 * h.SLOW, "an ACTIVE lease in ListBots")
        self.assertEqual(r.total, 1)
        self.assertFalse(r.truncated)
        b = r.bots[0]
        self.assertEqual(b.bot_id, "gpu-1")
        self.assertEqual(b.state, "OK")
        self.assertEqual(b.properties, "OSFamily=linux;pool=gpu")
        self.assertTrue(b.busy)
        self.assertEqual(b.lease_action_digest, "%s/%d" % (d1.hash, d1.size_bytes))
        self.assertEqual(list(b.lease_operations), [op1])
        now = time.time() * 1e6
        self.assertLess(abs(b.last_seen_us - now), 60e6)
        self.assertGreater(b.expire_us, b.last_seen_us)
        # Two more actions for that platform queue behind the busy bot;
        # one for a platform the bot does not offer does not match it.
        s2 = tb.execute(ch, self.action(ch, "true", platform=plat))
        s3 = tb.execute(ch, self.action(ch, "false", platform=plat))
        next(s2), next(s3)
        q = list_queues(ch)
        self.assertFalse(q.truncated)
        self.assertEqual([x.platform for x in q.queues], ["OSFamily=linux;pool=gpu"])
        gq = q.queues[0]
        self.assertEqual(gq.queued, 2)
        self.assertEqual((gq.bots, gq.bots_busy), (1, 1))
        self.assertLess(abs(gq.oldest_queued_us - now), 60e6)
        # ListOperations: newest first, stage filter, the bot running it.
        ops = list_ops(ch)
        self.assertEqual(len(ops.operations), 3)
        self.assertEqual(ops.operations[-1].name, op1)
        ex = list_ops(ch, stage="EXECUTING")
        self.assertEqual([o.name for o in ex.operations], [op1])
        self.assertEqual(ex.operations[0].bot_id, "gpu-1")
        self.assertEqual(ex.operations[0].session, b.session)
        self.assertGreater(ex.operations[0].started_us, 0)
        self.assertEqual(len(list_ops(ch, stage="QUEUED").operations), 2)
        self.assertEqual(len(list_ops(ch, limit=1).operations), 1)
        self.assertTrue(list_ops(ch, limit=1).truncated)
        e = h.rpc_error(list_ops, ch, stage="RUNNING")
        self.assertEqual(e.code(), SC.INVALID_ARGUMENT)
        self.assertIn("unknown stage", e.details())
        e = h.rpc_error(list_bots, ch, instance="nope")
        self.assertEqual(e.code(), SC.INVALID_ARGUMENT)
        # GetSummary.
        bpb_put = h.unary(ch, BK + "Put", bpb.PutRequest, bpb.BuildResponse)
        for _ in range(2):
            bpb_put(bpb.PutRequest(bucket="ci", parameters_json='{"builder_name": "x"}'),
                    timeout=10 * h.SLOW)
        s = summary(ch)
        self.assertEqual(len(s.instances), 1)
        i = s.instances[0]
        self.assertEqual((i.instance_name, i.operations, i.queued, i.bots, i.bots_busy),
                         ("", 3, 2, 1, 1))
        self.assertEqual([(x.platform, x.queued) for x in s.queue_depth],
                         [("OSFamily=linux;pool=gpu", 2)])
        self.assertEqual(s.jobs_executing, 1)
        self.assertEqual([(x.bucket, x.scheduled, x.started, x.completed) for x in s.buckets],
                         [("ci", 2, 0, 0)])
        self.assertEqual(s.master, "")
        # Once the operation is cancelled the lease goes and the next job
        # is handed out.
        tb.cancel_operation(ch, op1)
        done = h.wait_for(lambda: [o for o in list_ops(ch, stage="COMPLETED").operations
                                   if o.name == op1], 10 * h.SLOW, "op1 COMPLETED")
        self.assertEqual(done[0].status_code, 1)  # CANCELLED
        for s_ in (s1, s2, s3):
            s_.cancel()

    def test_completed_operation_has_exit_code(self):
        srv = self.start_reactord(config())
        ch = self.channel(srv.tcp_addr)
        self.bot(srv, "b1", exit_code=3)
        d = self.action(ch, "false")
        ops = tb.run_to_end(tb.execute(ch, d))
        r = list_ops(ch, stage="COMPLETED")
        self.assertEqual(len(r.operations), 1)
        o = r.operations[0]
        self.assertEqual(o.name, ops[0].name)
        self.assertTrue(o.has_exit_code)
        self.assertEqual(o.exit_code, 3)
        self.assertEqual(o.bot_id, "b1")
        self.assertGreater(o.completed_us, 0)
        self.assertEqual(o.session, "")
        # With no bot busy, the bot is idle.
        b = list_bots(ch).bots[0]
        self.assertFalse(b.busy)
        self.assertEqual(b.lease_job, "")

    def test_operations_by_stage_exact(self):
        """GetSummary and /metrics count operations by stage exactly: three
        waiting on queued jobs (one joined to another's job), one cancelled,
        two executing until one times out, four completed OK (one of them
        from the action cache)."""
        import test_metrics as tm
        srv = self.start_reactord(config(http=["127.0.0.1:0"]))
        ch = self.channel(srv.tcp_addr)

        def from_summary():
            i = summary(ch).instances[0]
            return (i.operations_queued, i.operations_executing, i.operations_completed_ok,
                    i.operations_completed_failed, i.operations_completed_cancelled)

        def counts():
            """The counts, once a scrape falls between two equal summaries
            (the bots move work meanwhile)."""
            for _ in range(100):
                before, scraped = from_summary(), scrape()
                if from_summary() == before:
                    self.assertEqual(scraped, tuple(float(x) for x in before),
                                     "/metrics vs GetSummary")
                    return before
                time.sleep(0.02)
            self.fail("the counts never held still")

        def scrape():
            status, _, body = tm.http_get(srv.http_url + "/metrics")
            self.assertEqual(status, 200)
            fams = tm.parse_metrics(self, body.decode())
            self.assertEqual(fams["reactor_operations"]["type"], "gauge")
            self.assertEqual(fams["reactor_operations_completed_total"]["type"], "counter")
            return tuple(
                [tm.value_of(fams, "reactor_operations", instance="", stage=st)
                 for st in ("QUEUED", "EXECUTING")] +
                [tm.value_of(fams, "reactor_operations_completed_total", instance="", result=r)
                 for r in ("ok", "failed", "cancelled")])
            return scraped

        self.assertEqual(counts(), (0, 0, 0, 0, 0))
        gpu = (("OSFamily", "linux"), ("pool", "gpu"))
        self.bot(srv, "gpu-1", props=gpu, mode="hang")
        s1 = tb.execute(ch, self.action(ch, "sleep", "100", platform=gpu))
        next(s1)
        h.wait_for(lambda: list_ops(ch, stage="EXECUTING").operations, 10 * h.SLOW,
                   "op1 EXECUTING")
        self.assertEqual(counts(), (0, 1, 0, 0, 0))
        # Three more wait behind the busy bot; the third joins the first's job.
        dq1 = self.action(ch, "true", platform=gpu)
        sq = [tb.execute(ch, d) for d in (dq1, self.action(ch, "false", platform=gpu), dq1)]
        names = [next(s).name for s in sq]
        self.assertEqual(counts(), (3, 1, 0, 0, 0))
        tb.cancel_operation(ch, names[1])
        self.assertEqual(counts(), (2, 1, 0, 0, 1))
        # Three complete on another bot, and one again from the cache.
        cpu = (("OSFamily", "linux"), ("pool", "cpu"))
        self.bot(srv, "cpu-1", props=cpu)
        dc = [self.action(ch, "echo", str(n), platform=cpu) for n in range(3)]
        for d in dc:
            tb.run_to_end(tb.execute(ch, d))
        self.assertEqual(counts(), (2, 1, 3, 0, 1))
        last = tb.run_to_end(tb.execute(ch, dc[0]))[-1]
        self.assertTrue(tb.op_response(last).cached_result)
        self.assertEqual(counts(), (2, 1, 4, 0, 1))
        # One runs past its timeout: executing, then failed.
        slow = (("OSFamily", "linux"), ("pool", "slow"))
        self.bot(srv, "slow-1", props=slow, mode="hang")
        st = tb.execute(ch, self.action(ch, "sleep", "100", platform=slow, timeout=3))
        next(st)
        h.wait_for(lambda: counts()[1] == 2, 10 * h.SLOW, "two executing")
        self.assertEqual(counts(), (2, 2, 4, 0, 1))
        ops = tb.run_to_end(st)
        self.assertEqual(tb.op_response(ops[-1]).status.code, 4)  # DEADLINE_EXCEEDED
        self.assertEqual(counts(), (2, 1, 4, 1, 1))
        # The indexed count is still what the index holds.
        self.assertEqual(summary(ch).instances[0].operations, 9)
        for s_ in [s1] + sq:
            s_.cancel()


def auth_supported():
    try:
        with open(h.REACTORD, "rb") as f:
            return b"tokens-file" in f.read()
    except OSError:
        return False


def write_tokens(tmp, ids):
    """A tokens file in tmp for {identity: [roles]}: (its path, {identity:
    token})."""
    tokens = {i: secrets.token_urlsafe(24) for i in ids}
    path = os.path.join(tmp, "tokens")
    with open(path, "w") as f:
        for ident, roles in ids.items():
            f.write("%s %s %s\n" % (hashlib.sha256(tokens[ident].encode()).hexdigest(),
                                    ident, " ".join(roles)))
    return path, tokens


@unittest.skipUnless(auth_supported(), "reactord has no auth: config section")
class TestAdminRoles(AdminCase):
    def test_ops_admin_required(self):
        ids = {"dev": ["cas-read", "cas-write", "execute", "read", "put"],
               "oper": ["ops-admin"]}
        path, tokens = write_tokens(self.tmp, ids)
        srv = self.start_reactord(config(auth={"tokens-file": path}))
        ch = self.channel(srv.tcp_addr)
        md = {i: [("authorization", "Bearer " + t)] for i, t in tokens.items()}
        for fn in (list_bots, list_queues, list_ops, summary):
            e = h.rpc_error(fn, ch, md=md["dev"])
            self.assertEqual(e.code(), SC.PERMISSION_DENIED, e.details())
            self.assertIn("dev lacks role ops-admin", e.details())
            e = h.rpc_error(fn, ch)
            self.assertIn(e.code(), (SC.PERMISSION_DENIED, SC.UNAUTHENTICATED))
        self.assertEqual(list(list_bots(ch, md=md["oper"]).bots), [])
        self.assertEqual(list(list_queues(ch, md=md["oper"]).queues), [])
        self.assertEqual(list(list_ops(ch, md=md["oper"]).operations), [])
        self.assertEqual(summary(ch, md=md["oper"]).instances[0].instance_name, "")


if __name__ == "__main__":
    unittest.main()
