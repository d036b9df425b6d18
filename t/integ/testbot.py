"""testbot.py - a scriptable bot for reactord's execution tests, written
against the Remote Workers API (google.devtools.remoteworkers.v1test2.Bots)
with grpcio, plus the REAPI client helpers the tests share: building and
uploading Actions, running Execute / WaitExecution, and a tiny RESP client
to read Redis directly.

A Bot runs in a thread: CreateBotSession, then UpdateBotSession in a loop
(long-polling while idle), reporting its one lease.  What it does with a
lease is its `mode`:

  complete  report the lease COMPLETED with an ActionResult (exit_code,
            stdout_raw, execution_metadata.worker = bot id)
  active    report ACTIVE first, then COMPLETED on the next call
  hang      report ACTIVE forever (until the server cancels the lease)
  die       stop calling right after receiving a lease (a crashed bot)

Every lease id received, completed or seen CANCELLED is recorded, so a
test can assert what the server told the bot.
"""

import os
import socket
import threading
import time

import harness as h
from harness import grpc, pb

BOTS = "/google.devtools.remoteworkers.v1test2.Bots/"
EXEC = "/build.bazel.remote.execution.v2.Execution/"
OPS = "/google.longrunning.Operations/"
CAS_UPDATE = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs"


def _status_pb2():
    from google.rpc import status_pb2
    return status_pb2


# ---- REAPI helpers ---------------------------------------------------------------


def digest_of(data):
    import hashlib
    return pb().re.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def make_action(args=("true",), platform=None, timeout=None, do_not_cache=False, salt=b"",
                command_platform=None):
    """(action digest, {digest hash: bytes}) for a Command running args."""
    re_ = pb().re
    cmd = re_.Command(arguments=list(args))
    if command_platform:
        cmd.platform.CopyFrom(re_.Platform(properties=[
            re_.Platform.Property(name=k, value=v) for k, v in command_platform]))
    cmd_b = cmd.SerializeToString()
    root_b = re_.Directory().SerializeToString()
    act = re_.Action(command_digest=digest_of(cmd_b), input_root_digest=digest_of(root_b),
                     do_not_cache=do_not_cache, salt=salt)
    if platform:
        act.platform.CopyFrom(re_.Platform(properties=[
            re_.Platform.Property(name=k, value=v) for k, v in platform]))
    if timeout is not None:
        act.timeout.FromNanoseconds(int(timeout * 1e9))
    act_b = act.SerializeToString()
    blobs = {digest_of(b).hash: b for b in (cmd_b, root_b, act_b)}
    return digest_of(act_b), blobs


def upload(ch, blobs, instance=""):
    re_ = pb().re
    items = list(blobs.values()) if isinstance(blobs, dict) else list(blobs)
    for i in range(0, len(items), 500):
        req = re_.BatchUpdateBlobsRequest(instance_name=instance, requests=[
            re_.BatchUpdateBlobsRequest.Request(digest=digest_of(b), data=b)
            for b in items[i:i + 500]])
        resp = h.unary(ch, CAS_UPDATE, re_.BatchUpdateBlobsRequest,
                       re_.BatchUpdateBlobsResponse)(req, timeout=30 * h.SLOW)
        for r in resp.responses:
            if r.status.code != 0:
                raise AssertionError("upload of %s failed: %s" % (r.digest.hash, r.status))


def execute(ch, action_digest, instance="", skip_cache=False, priority=None, timeout=60):
    """The Execute stream (an iterator of Operation)."""
    re_ = pb().re
    req = re_.ExecuteRequest(instance_name=instance, action_digest=action_digest,
                             skip_cache_lookup=skip_cache)
    if priority is not None:
        req.execution_policy.priority = priority
    return h.server_stream(ch, EXEC + "Execute", pb().operations.Operation)(
        req, timeout=timeout * h.SLOW)


def wait_execution(ch, name, timeout=60):
    re_ = pb().re
    return h.server_stream(ch, EXEC + "WaitExecution", pb().operations.Operation)(
        re_.WaitExecutionRequest(name=name), timeout=timeout * h.SLOW)


def op_meta(op):
    md = pb().re.ExecuteOperationMetadata()
    op.metadata.Unpack(md)
    return md


def op_response(op):
    r = pb().re.ExecuteResponse()
    op.response.Unpack(r)
    return r


def stage_name(stage):
    return pb().re.ExecutionStage.Value.Name(stage)


def run_to_end(stream):
    """All Operations of a stream; the last one must be done."""
    ops = list(stream)
    if not ops or not ops[-1].done:
        raise AssertionError("stream ended without a done Operation: %r" % ops)
    return ops


def get_operation(ch, name, timeout=10):
    o = pb().operations
    return h.unary(ch, OPS + "GetOperation", o.GetOperationRequest, o.Operation)(
        o.GetOperationRequest(name=name), timeout=timeout * h.SLOW)


def cancel_operation(ch, name, timeout=10):
    o = pb().operations
    from google.protobuf import empty_pb2
    return h.unary(ch, OPS + "CancelOperation", o.CancelOperationRequest, empty_pb2.Empty)(
        o.CancelOperationRequest(name=name), timeout=timeout * h.SLOW)


def list_operations(ch, name="", filter="", page_size=0, page_token="", timeout=10):
    o = pb().operations
    return h.unary(ch, OPS + "ListOperations", o.ListOperationsRequest,
                   o.ListOperationsResponse)(
        o.ListOperationsRequest(name=name, filter=filter, page_size=page_size,
                                page_token=page_token), timeout=timeout * h.SLOW)


# ---- Redis ------------------------------------------------------------------------


class Resp:
    """A blocking RESP client on a unix socket, enough for the tests."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(10)
        self.s.connect(path)
        self.buf = b""

    def close(self):
        self.s.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError("redis closed the connection")
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
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
            while len(self.buf) < n + 2:
                d = self.s.recv(65536)
                if not d:
                    raise EOFError("redis closed the connection")
                self.buf += d
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError("bad RESP line %r" % line)

    def __call__(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))
        return self._read()

    def hgetall(self, key):
        v = self("HGETALL", key) or []
        return {v[i].decode(): v[i + 1] for i in range(0, len(v), 2)}

    def commandstats(self):
        """{command: calls} from INFO commandstats."""
        info = self("INFO", "commandstats").decode()
        out = {}
        for ln in info.splitlines():
            if ln.startswith("cmdstat_"):
                name, rest = ln[8:].split(":", 1)
                calls = int(rest.split(",")[0].split("=")[1])
                out[name] = calls
        return out


def embedded_redis(srv):
    return Resp(os.path.join(srv.state_dir, "redis", "redis.sock"))


# ---- the bot ------------------------------------------------------------------------


class Bot(threading.Thread):
    def __init__(self, target, bot_id, props=(("OSFamily", "linux"),), instance="",
                 mode="complete", poll=2.0, exit_code=0, stdout=b"", delay=0.0):
        super().__init__(daemon=True, name="bot-" + bot_id)
        self.target, self.bot_id, self.props = target, bot_id, list(props)
        self.instance, self.mode, self.poll = instance, mode, poll
        self.exit_code, self.stdout, self.delay = exit_code, stdout, delay
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.got, self.completed, self.cancelled, self.errors = [], [], [], []
        self.sessions = []
        self.fut = None
        self.got_ev = threading.Event()
        self.cancel_ev = threading.Event()
        self.ch = h.channel(target)

    # -- stubs
    def _create(self):
        b = pb().bots
        st = self._stub("CreateBotSession", b.CreateBotSessionRequest)
        resp = st(b.CreateBotSessionRequest(parent=self.instance,
                                            bot_session=self._session("")), timeout=10)
        with self.lock:
            self.sessions.append(resp.name)
        return resp

    def _stub(self, method, req_cls):
        return h.unary(self.ch, BOTS + method, req_cls, pb().bots.BotSession)

    def _session(self, name, leases=()):
        b = pb().bots
        from google.devtools.remoteworkers.v1test2 import worker_pb2
        dev = worker_pb2.Device(handle="cpu", properties=[
            worker_pb2.Device.Property(key=k, value=v) for k, v in self.props])
        return b.BotSession(name=name, bot_id=self.bot_id, status=b.OK,
                            worker=worker_pb2.Worker(devices=[dev]), leases=list(leases))

    def _result_lease(self, lease):
        b, re_ = pb().bots, pb().re
        res = re_.ActionResult(exit_code=self.exit_code, stdout_raw=self.stdout)
        res.execution_metadata.worker = self.bot_id
        out = b.Lease(id=lease.id, payload=lease.payload, state=b.COMPLETED)
        out.status.CopyFrom(_status_pb2().Status(code=0))
        out.result.Pack(res)
        return out

    # -- the loop
    def _handle(self, resp):
        """The leases to report next, or None when the bot "dies"."""
        b = pb().bots
        report = []
        for l in resp.leases:
            if l.state == b.CANCELLED:
                with self.lock:
                    self.cancelled.append(l.id)
                self.cancel_ev.set()
            elif l.state == b.PENDING:
                with self.lock:
                    self.got.append(l.id)
                self.got_ev.set()
                if self.mode == "die":
                    return None
                if self.mode in ("hang", "active"):
                    report.append(b.Lease(id=l.id, payload=l.payload, state=b.ACTIVE))
                    continue
                if self.delay:
                    time.sleep(self.delay)
                report.append(self._result_lease(l))
                with self.lock:
                    self.completed.append(l.id)
            elif l.state == b.ACTIVE:
                if self.mode == "active":
                    if self.delay:
                        time.sleep(self.delay)
                    report.append(self._result_lease(l))
                    with self.lock:
                        self.completed.append(l.id)
                else:
                    report.append(b.Lease(id=l.id, payload=l.payload, state=b.ACTIVE))
        return report

    def run(self):
        b = pb().bots
        try:
            sess = self._create()
        except grpc.RpcError as e:
            self.errors.append("create: %s" % e)
            return
        report = self._handle(sess)
        while report is not None and not self.stop_ev.is_set():
            req = b.UpdateBotSessionRequest(name=sess.name,
                                            bot_session=self._session(sess.name, report))
            try:
                with self.lock:
                    if self.stop_ev.is_set():
                        return
                    self.fut = self._stub("UpdateBotSession", b.UpdateBotSessionRequest).future(
                        req, timeout=self.poll)
                resp = self.fut.result()
            except grpc.FutureCancelledError:
                return
            except grpc.RpcError as e:
                if self.stop_ev.is_set():
                    return
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    try:
                        sess = self._create()
                        report = self._handle(sess)
                    except grpc.RpcError:
                        time.sleep(0.05)
                elif e.code() in (grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.DEADLINE_EXCEEDED):
                    time.sleep(0.05)
                else:
                    self.errors.append("update: %s %s" % (e.code(), e.details()))
                    time.sleep(0.05)
                continue
            report = self._handle(resp)

    def stop(self):
        with self.lock:
            self.stop_ev.set()
            if self.fut is not None:
                self.fut.cancel()
        self.join(self.poll * 2 + 10)
        self.ch.close()
