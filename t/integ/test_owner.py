#!/usr/bin/python3
"""test_owner.py - ownership end to end (issue 12): a real reactord with
its embedded redis-server, an auth: section with a tokens file, and grpcio
clients of several identities sending "authorization: Bearer ...".

Covers a second identity trying to read, wait on, cancel or delete
another's operation (PERMISSION_DENIED naming ops-admin), ListOperations
showing one's own operations only, a deduplicated Execute owning its own
operation on the shared job, an ops-admin acting on anyone's; a second
identity trying to take over a bot id or report on another bot's lease
(PERMISSION_DENIED, the lease and the action cache untouched), writing
the action cache without ac-write; builds' created_by, and Cancel /
CancelBatch / Reset of another identity's build refused unless bucket
admin.

Needs the auth: config section (src/services/auth*.c); skipped when the
reactord under test does not know it.

Run by `make check`; by hand: /usr/bin/python3 t/integ/test_owner.py [NAME...]
"""

import hashlib
import json
import os
import secrets
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import testbot as tb  # noqa: E402
from harness import grpc, pb  # noqa: E402
from reactor.buckets.v1 import buckets_pb2 as bpb  # noqa: E402

SC = grpc.StatusCode if grpc else None
RE = "/build.bazel.remote.execution.v2."
OPS = "/google.longrunning.Operations/"
BOTS = "/google.devtools.remoteworkers.v1test2.Bots/"
BK = "/reactor.buckets.v1.Buckets/"
US = 1000000

# identity: roles on every instance and bucket (tokens-file lines).
IDENTITIES = {
    "alice": ["cas-read", "cas-write", "ac-read", "execute", "read", "put"],
    "bob": ["cas-read", "cas-write", "ac-read", "execute", "read", "put"],
    "opsadmin": ["ops-admin"],  # no execute: operators need not run actions
    "w1": ["cas-read", "cas-write", "bot"],
    "w2": ["cas-read", "cas-write", "bot"],
    "master": ["read", "lease"],
    "bkadmin": ["read", "admin"],
}


def auth_supported():
    try:
        with open(h.REACTORD, "rb") as f:
            return b"tokens-file" in f.read()
    except OSError:
        return False


class _Md(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds one identity's bearer token to every call of a channel."""

    def __init__(self, token):
        self.md = [("authorization", "Bearer " + token)]

    def _details(self, d):
        class D(grpc.ClientCallDetails):
            pass
        n = D()
        n.method, n.timeout, n.credentials = d.method, d.timeout, d.credentials
        n.metadata = list(d.metadata or []) + self.md
        n.wait_for_ready = getattr(d, "wait_for_ready", None)
        n.compression = getattr(d, "compression", None)
        return n

    def intercept_unary_unary(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_unary_stream(self, cont, d, req):
        return cont(self._details(d), req)


@unittest.skipUnless(auth_supported(), "reactord has no auth: config section")
class OwnerCase(h.ReactordTestCase):
    def setUp(self):
        super().setUp()
        self.tokens = {i: secrets.token_urlsafe(24) for i in IDENTITIES}
        path = os.path.join(self.tmp, "tokens")
        with open(path, "w") as f:
            for ident, roles in IDENTITIES.items():
                f.write("%s %s %s\n" % (hashlib.sha256(self.tokens[ident].encode()).hexdigest(),
                                        ident, " ".join(roles)))
        cfg = {"auth": {"tokens-file": path},
               "instances": [{"name": "", "execution": True, "storage": "memory",
                              "no-worker-timeout": "5m", "operation-retention": "1m"}],
               "scheduler": {"bot-session-keepalive": "30s", "long-poll": "1s",
                             "sweep-interval": "100ms"}}
        self.srv = self.start_reactord(cfg)
        self.ch = {}

    def as_(self, ident):
        """A channel whose every call carries ident's token."""
        if ident not in self.ch:
            base = self.channel(self.srv.tcp_addr)
            self.ch[ident] = grpc.intercept_channel(base, _Md(self.tokens[ident]))
        return self.ch[ident]

    def assert_denied(self, fn, *needles):
        with self.assertRaises(grpc.RpcError) as cm:
            r = fn()
            if hasattr(r, "__next__"):
                list(r)
        self.assertEqual(cm.exception.code(), SC.PERMISSION_DENIED, cm.exception.details())
        for n in needles:
            self.assertIn(n, cm.exception.details())

    def action(self, ident, *args):
        d, blobs = tb.make_action(args or ("true",), salt=os.urandom(8))
        tb.upload(self.as_(ident), blobs)
        return d


class TestOperations(OwnerCase):
    def test_operations_are_their_creators(self):
        d = self.action("alice", "echo", "a")
        a_stream = tb.execute(self.as_("alice"), d)
        a_op = next(a_stream).name
        bob = self.as_("bob")
        # bob may not read, wait on, cancel or delete alice's operation.
        deny = ("bob lacks role ops-admin", "belongs to another identity")
        self.assert_denied(lambda: tb.get_operation(bob, a_op), *deny)
        self.assert_denied(lambda: tb.wait_execution(bob, a_op, timeout=5), *deny)
        self.assert_denied(lambda: tb.cancel_operation(bob, a_op), *deny)
        o = pb().operations
        from google.protobuf import empty_pb2
        delete = h.unary(bob, OPS + "DeleteOperation", o.DeleteOperationRequest,
                         empty_pb2.Empty)
        self.assert_denied(lambda: delete(o.DeleteOperationRequest(name=a_op), timeout=5),
                           *deny)
        self.assertFalse(tb.get_operation(self.as_("alice"), a_op).done)

        # bob's Execute of the same action joins alice's job with an
        # operation of his own, which he may wait on and cancel.
        b_stream = tb.execute(bob, d)
        b_op = next(b_stream).name
        self.assertNotEqual(a_op, b_op)
        self.assertEqual(tb.get_operation(bob, b_op).name, b_op)
        self.assertEqual([x.name for x in tb.list_operations(bob).operations], [b_op])
        self.assertEqual([x.name for x in tb.list_operations(self.as_("alice")).operations],
                         [a_op])
        self.assertEqual(sorted(x.name for x in tb.list_operations(
            self.as_("opsadmin")).operations), sorted([a_op, b_op]))
        tb.cancel_operation(bob, b_op)
        self.assertTrue(tb.get_operation(bob, b_op).done)
        self.assertFalse(tb.get_operation(self.as_("alice"), a_op).done)

        # An ops-admin reads and cancels anyone's.
        adm = self.as_("opsadmin")
        self.assertEqual(tb.get_operation(adm, a_op).name, a_op)
        tb.cancel_operation(adm, a_op)
        last = tb.run_to_end(a_stream)[-1]
        self.assertEqual(tb.op_response(last).status.code, 1)  # CANCELLED
        a_stream.cancel()
        b_stream.cancel()


class TestBots(OwnerCase):
    def bots(self, ident, method, req_cls):
        return h.unary(self.as_(ident), BOTS + method, req_cls, pb().bots.BotSession)

    def session(self, name, bot_id, leases=()):
        b = pb().bots
        from google.devtools.remoteworkers.v1test2 import worker_pb2
        dev = worker_pb2.Device(handle="cpu", properties=[
            worker_pb2.Device.Property(key="OSFamily", value="linux")])
        return b.BotSession(name=name, bot_id=bot_id, status=b.OK,
                            worker=worker_pb2.Worker(devices=[dev]), leases=list(leases))

    def completed(self, lease, stdout):
        b, re_ = pb().bots, pb().re
        res = re_.ActionResult(exit_code=0, stdout_raw=stdout)
        out = b.Lease(id=lease.id, payload=lease.payload, state=b.COMPLETED)
        out.status.code = 0
        out.result.Pack(res)
        return out

    def test_bot_id_bound_to_identity(self):
        b, re_ = pb().bots, pb().re
        d = self.action("alice", "echo", "b")
        stream = tb.execute(self.as_("alice"), d)
        op = next(stream).name
        create = lambda ident, bot_id: self.bots(ident, "CreateBotSession",  # noqa: E731
                                                 b.CreateBotSessionRequest)(
            b.CreateBotSessionRequest(parent="", bot_session=self.session("", bot_id)),
            timeout=10 * h.SLOW)
        update = lambda ident, req: self.bots(ident, "UpdateBotSession",  # noqa: E731
                                              b.UpdateBotSessionRequest)(req, timeout=10 * h.SLOW)
        s1 = create("w1", "bot-1")
        self.assertEqual(len(s1.leases), 1)
        lease = s1.leases[0]

        # w2 cannot take bot-1 over...
        self.assert_denied(lambda: create("w2", "bot-1"), "bot-1", "bound to the identity")
        # ...nor report on its lease (a forged result), nor close its session.
        forged = b.UpdateBotSessionRequest(
            name=s1.name, bot_session=self.session(s1.name, "bot-1",
                                                   [self.completed(lease, b"forged")]))
        self.assert_denied(lambda: update("w2", forged), "w2 may not use bot bot-1")
        other = b.UpdateBotSessionRequest(name=s1.name,
                                          bot_session=self.session(s1.name, "bot-x"))
        self.assert_denied(lambda: update("w2", other))
        self.assertFalse(tb.get_operation(self.as_("alice"), op).done)
        ac = h.unary(self.as_("alice"), RE + "ActionCache/GetActionResult",
                     re_.GetActionResultRequest, re_.ActionResult)
        with self.assertRaises(grpc.RpcError) as cm:
            ac(re_.GetActionResultRequest(action_digest=d), timeout=5 * h.SLOW)
        self.assertEqual(cm.exception.code(), SC.NOT_FOUND)

        # The owner's report goes through, and its result reaches the cache.
        real = b.UpdateBotSessionRequest(
            name=s1.name, bot_session=self.session(s1.name, "bot-1",
                                                   [self.completed(lease, b"real")]))
        update("w1", real)
        last = tb.run_to_end(stream)[-1]
        self.assertEqual(tb.op_response(last).result.stdout_raw, b"real")
        self.assertEqual(ac(re_.GetActionResultRequest(action_digest=d),
                            timeout=5 * h.SLOW).stdout_raw, b"real")

    def test_ac_write_needs_the_role(self):
        re_ = pb().re
        d = tb.digest_of(b"x")
        upd = h.unary(self.as_("w1"), RE + "ActionCache/UpdateActionResult",
                      re_.UpdateActionResultRequest, re_.ActionResult)
        self.assert_denied(lambda: upd(re_.UpdateActionResultRequest(
            action_digest=d, action_result=re_.ActionResult(exit_code=0)), timeout=5),
            "w1 lacks role ac-write")


class TestBuilds(OwnerCase):
    def bk(self, ident, name, req, resp=bpb.BuildResponse):
        return lambda r: h.unary(self.as_(ident), BK + name, req, resp)(r, timeout=10 * h.SLOW)

    def put(self, ident):
        r = self.bk(ident, "Put", bpb.PutRequest)(
            bpb.PutRequest(bucket="nightly", parameters_json=json.dumps({"builder_name": "x"})))
        self.assertFalse(r.HasField("error"), r.error.message)
        return r.build

    def test_cancel_by_creator_or_admin(self):
        b1 = self.put("alice")
        self.assertEqual(b1.created_by, "alice")
        deny = ('bob lacks role admin on bucket "nightly"', "created by another identity")
        self.assert_denied(lambda: self.bk("bob", "Cancel", bpb.CancelRequest)(
            bpb.CancelRequest(id=b1.id)), *deny)
        self.assert_denied(lambda: self.bk("bob", "CancelBatch", bpb.CancelBatchRequest,
                                           bpb.CancelBatchResponse)(
            bpb.CancelBatchRequest(build_ids=[b1.id])), *deny)
        get = self.bk("bob", "Get", bpb.GetRequest)
        self.assertEqual(bpb.Status.Name(get(bpb.GetRequest(id=b1.id)).build.status),
                         "SCHEDULED")
        # bob may not lease, start or reset it either (no lease role).
        self.assert_denied(lambda: self.bk("bob", "Lease", bpb.LeaseRequest)(
            bpb.LeaseRequest(id=b1.id)), "lease")
        self.assert_denied(lambda: self.bk("bob", "Reset", bpb.ResetRequest)(
            bpb.ResetRequest(id=b1.id)), "lease")
        # A master leases it; its creator cancels it.
        lr = self.bk("master", "Lease", bpb.LeaseRequest)(bpb.LeaseRequest(id=b1.id))
        self.assertFalse(lr.HasField("error"), lr.error.message)
        cr = self.bk("alice", "Cancel", bpb.CancelRequest)(bpb.CancelRequest(id=b1.id))
        self.assertFalse(cr.HasField("error"), cr.error.message)
        self.assertEqual(bpb.Result.Name(cr.build.result), "CANCELED")
        # A bucket admin cancels anyone's.
        b2 = self.put("alice")
        cr = self.bk("bkadmin", "CancelBatch", bpb.CancelBatchRequest, bpb.CancelBatchResponse)(
            bpb.CancelBatchRequest(build_ids=[b2.id]))
        self.assertFalse(cr.results[0].HasField("error"), cr.results[0].error.message)
        self.assertEqual(bpb.Result.Name(cr.results[0].build.result), "CANCELED")


if __name__ == "__main__":
    h.main()
