#!/usr/bin/python3
"""test_fuzz.py - robustness fuzzing of every RPC reactord serves.

The rule under test: nothing a client sends may crash reactord, leak or
corrupt state; bad input gets a precise gRPC status and the server keeps
serving.  For every method path of the dispatch table (src/services/dispatch.c; a
test checks the list below against it, so a new method cannot be missed)
the fuzzer sends, from a fixed seed,

  (a) random bytes as the request message,
  (b) structurally valid but adversarial requests built from the real
      request types (huge/negative sizes, empty/huge strings, 65-char
      hashes, out-of-range enums, deep JSON, thousands of repeated entries,
      instance names with NUL, '/' and non-ASCII, page tokens, ids 0/-1/
      2^63-1, plus names and ids harvested from earlier responses), and
      adversarial blobs in the CAS (Action/Command/Directory/Tree garbage,
      deep and exponentially wide directory DAGs) that Execute, GetTree
      and UpdateActionResult then walk,
  (c) mutations of valid requests (bit flips, truncation, splices),

in concurrent batches with short deadlines.  Every answer must be a gRPC
status the server chose (never UNKNOWN/INTERNAL/UNAVAILABLE/DATA_LOSS, nor
a deadline on a method that does not block), every OK response must parse
as the method's response type, and after each batch reactord must still
answer a Health Check.  At the end the server must still do real work
(CAS round trip, a build Put/Get) and the harness checks that it exits 0
on SIGTERM with no sanitizer report in its log.

Then a regression test per bug the fuzzer found, each a minimal repro.

Environment: REACTOR_FUZZ_ITERS (requests per fuzz test, default 2000
across the three), REACTOR_FUZZ_SEED, REACTOR_FUZZ_OUT (a directory that
receives the inputs of a failing batch), REACTOR_FUZZ_KEEP_GOING=1 (hunt
mode: on a crash save the batch, restart reactord and go on; the test
still fails at the end).

Run by `make check`; by hand: /usr/bin/python3 t/integ/test_fuzz.py [NAME...]
"""

import hashlib
import os
import random
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from harness import grpc, pb  # noqa: E402
from google.protobuf.descriptor import FieldDescriptor as FD  # noqa: E402
from reactor.buckets.v1 import buckets_pb2 as bk  # noqa: E402  (from REACTOR_GEN_PY)
from reactor.admin.v1 import admin_pb2 as adm  # noqa: E402

ITERS = int(os.environ.get("REACTOR_FUZZ_ITERS") or 2000)
SEED = int(os.environ.get("REACTOR_FUZZ_SEED") or 0x5eed)
OUT = os.environ.get("REACTOR_FUZZ_OUT") or ""
KEEP_GOING = os.environ.get("REACTOR_FUZZ_KEEP_GOING") == "1"
BATCH = 48

OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 0, 1, 2, 3, 4, 5
INTERNAL, UNAVAILABLE, DATA_LOSS = 13, 14, 15
# Codes that mean the server failed rather than judged the input.
BAD_CODES = {UNKNOWN, INTERNAL, UNAVAILABLE, DATA_LOSS}

UNARY, SSTREAM, CSTREAM = "unary", "server-stream", "client-stream"
RE = "/build.bazel.remote.execution.v2."
BS = "/google.bytestream.ByteStream/"
BOTS = "/google.devtools.remoteworkers.v1test2.Bots/"
OPS = "/google.longrunning.Operations/"
HEALTH = "/grpc.health.v1.Health/"
BK = "/reactor.buckets.v1.Buckets/"

EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def methods():
    """[(path, kind, request class, response class, may block)] - the
    dispatch table as a client sees it.  Classes are None for methods the
    server answers UNIMPLEMENTED."""
    p = pb()
    re_, bs, bots, ops, hl = p.re, p.bytestream, p.bots, p.operations, p.health
    from google.protobuf import empty_pb2
    E = empty_pb2.Empty
    return [
        (RE + "ActionCache/GetActionResult", UNARY, re_.GetActionResultRequest, re_.ActionResult, False),
        (RE + "ActionCache/UpdateActionResult", UNARY, re_.UpdateActionResultRequest, re_.ActionResult, False),
        (RE + "Capabilities/GetCapabilities", UNARY, re_.GetCapabilitiesRequest, re_.ServerCapabilities, False),
        (RE + "ContentAddressableStorage/BatchReadBlobs", UNARY, re_.BatchReadBlobsRequest, re_.BatchReadBlobsResponse, False),
        (RE + "ContentAddressableStorage/BatchUpdateBlobs", UNARY, re_.BatchUpdateBlobsRequest, re_.BatchUpdateBlobsResponse, False),
        (RE + "ContentAddressableStorage/FindMissingBlobs", UNARY, re_.FindMissingBlobsRequest, re_.FindMissingBlobsResponse, False),
        (RE + "ContentAddressableStorage/GetTree", SSTREAM, re_.GetTreeRequest, re_.GetTreeResponse, False),
        (RE + "ContentAddressableStorage/SpliceBlob", UNARY, None, None, False),
        (RE + "ContentAddressableStorage/SplitBlob", UNARY, None, None, False),
        (RE + "Execution/Execute", SSTREAM, re_.ExecuteRequest, ops.Operation, True),
        (RE + "Execution/WaitExecution", SSTREAM, re_.WaitExecutionRequest, ops.Operation, True),
        (BS + "QueryWriteStatus", UNARY, bs.QueryWriteStatusRequest, bs.QueryWriteStatusResponse, False),
        (BS + "Read", SSTREAM, bs.ReadRequest, bs.ReadResponse, False),
        (BS + "Write", CSTREAM, bs.WriteRequest, bs.WriteResponse, False),
        (BOTS + "CreateBotSession", UNARY, bots.CreateBotSessionRequest, bots.BotSession, True),
        (BOTS + "PostBotEventTemp", UNARY, bots.PostBotEventTempRequest, E, False),
        (BOTS + "UpdateBotSession", UNARY, bots.UpdateBotSessionRequest, bots.BotSession, True),
        (OPS + "CancelOperation", UNARY, ops.CancelOperationRequest, E, False),
        (OPS + "DeleteOperation", UNARY, ops.DeleteOperationRequest, E, False),
        (OPS + "GetOperation", UNARY, ops.GetOperationRequest, ops.Operation, False),
        (OPS + "ListOperations", UNARY, ops.ListOperationsRequest, ops.ListOperationsResponse, False),
        (OPS + "WaitOperation", UNARY, None, None, False),
        (HEALTH + "Check", UNARY, hl.HealthCheckRequest, hl.HealthCheckResponse, False),
        (HEALTH + "List", UNARY, hl.HealthListRequest, hl.HealthListResponse, False),
        (HEALTH + "Watch", SSTREAM, hl.HealthCheckRequest, hl.HealthCheckResponse, True),
        ("/reactor.admin.v1.Admin/GetSummary", UNARY, adm.GetSummaryRequest, adm.Summary, False),
        ("/reactor.admin.v1.Admin/ListBots", UNARY, adm.ListBotsRequest, adm.ListBotsResponse, False),
        ("/reactor.admin.v1.Admin/ListOperations", UNARY, adm.ListOperationsRequest, adm.ListOperationsResponse, False),
        ("/reactor.admin.v1.Admin/ListQueues", UNARY, adm.ListQueuesRequest, adm.ListQueuesResponse, False),
        (BK + "Cancel", UNARY, bk.CancelRequest, bk.BuildResponse, False),
        (BK + "CancelBatch", UNARY, bk.CancelBatchRequest, bk.CancelBatchResponse, False),
        (BK + "Fail", UNARY, bk.FailRequest, bk.BuildResponse, False),
        (BK + "Get", UNARY, bk.GetRequest, bk.BuildResponse, False),
        (BK + "Heartbeat", UNARY, bk.HeartbeatRequest, bk.BuildResponse, False),
        (BK + "HeartbeatBatch", UNARY, bk.HeartbeatBatchRequest, bk.HeartbeatBatchResponse, False),
        (BK + "Lease", UNARY, bk.LeaseRequest, bk.BuildResponse, False),
        (BK + "Peek", UNARY, bk.PeekRequest, bk.SearchResponse, False),
        (BK + "Put", UNARY, bk.PutRequest, bk.BuildResponse, False),
        (BK + "PutBatch", UNARY, bk.PutBatchRequest, bk.PutBatchResponse, False),
        (BK + "Reset", UNARY, bk.ResetRequest, bk.BuildResponse, False),
        (BK + "Retry", UNARY, bk.RetryRequest, bk.BuildResponse, False),
        (BK + "Search", UNARY, bk.SearchRequest, bk.SearchResponse, False),
        (BK + "Start", UNARY, bk.StartRequest, bk.BuildResponse, False),
        (BK + "Succeed", UNARY, bk.SucceedRequest, bk.BuildResponse, False),
        (BK + "WatchBuilds", SSTREAM, bk.WatchBuildsRequest, bk.Build, True),
    ]


def digest(data):
    return pb().re.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def fuzz_config():
    """Every service live: execution on (no worker ever runs the actions;
    fuzz bots only lease them), buckets with fast expiry, short long-polls
    so blocking calls give their slot back quickly."""
    return {
        "instances": [{"name": "", "execution": True, "storage": "memory",
                       "platform-properties": ["pool"], "no-worker-timeout": "2s",
                       "operation-retention": "30s", "max-attempts": 2},
                      {"name": "main", "execution": True, "storage": "memory"}],
        "scheduler": {"bot-session-keepalive": "2s", "safety-net-interval": "1s",
                      "keepalive-interval": "30s", "sweep-interval": "100ms",
                      "long-poll": "300ms"},
        "buckets": {"expiry-interval": "100ms"},
        "log": {"level": "info", "access-log": False},
    }


# ---- value pools -----------------------------------------------------------------

INT64 = [0, 1, -1, 2, 7, 4096, 2 ** 31 - 1, 2 ** 31, -2 ** 31, 2 ** 32, 2 ** 53 + 1,
         2 ** 62, 2 ** 63 - 1, -2 ** 63, -2 ** 63 + 1, 10 ** 15, 16 * 1024 * 1024,
         16 * 1024 * 1024 + 1, 4 * 1024 ** 3]
JUNK_STRINGS = ["", "a", " ", "\x00", "a\x00b", "/", "//", "../../etc/passwd", "é",
                "\U0001F600", "\u202e", "%s%s%n%x", "\\", "\"", "'", "{", "[", "-1", "0",
                "9223372036854775808", "-9223372036854775809", "1e308", "NaN", "\r\n",
                "blobs", "uploads", "operations/", "x" * 257, "y" * 4096]
INSTANCES = ["", "main", "nope", "main/", "/main", "a/b", "blobs", "uploads", "operations",
             "\x00", "main\x00", "é", "..", "a//b", "x" * 300, "compressed-blobs"]
HASH_JUNK = ["a" * 65, "a" * 63, "A" * 64, "g" * 64, "0" * 64, "", "a" * 128, EMPTY_SHA,
             EMPTY_SHA.upper(), "a" * 32 + "\x00" + "a" * 31, " " + "a" * 63,
             "-" + "1" * 63, "a" * 4096]
TOKENS = ["", "0", "1", "-1", "-9223372036854775808", "9223372036854775807",
          "9223372036854775808", "99999999999999999999999", "abc", "1e5", " 1", "0x10",
          "1 ", "+1", "\x00", "2147483648", "4294967296", "18446744073709551615"]
JSONS = ['{}', '', '{', '[]', 'null', '"s"', '{"builder_name": "linux"}', '{"a":' * 2000,
         '[' * 100000, '[' * 100000 + ']' * 100000, '{"a": 1e999}', '{"a": -0}',
         '{"a": "\\ud800"}', '{"a": "\\u0000"}', '{"a":"\x00"}', '{"a": 123456789012345678901234567890}',
         '{"a": [' + ",".join(["1"] * 5000) + ']}', '{"": ""}', '{"a":1,"a":2}',
         '{"builder_name": ' + '"' + "z" * 100000 + '"}', '\ufeff{}', '{"a": tru}',
         '{"a": "\\x"}', '{"a":"' + "\\" * 999 + '"}', '1' * 400]
BUCKETS = ["ci", "ci2", "", "Nope", "x y", "a" * 200, "\x00", "ci\x00", "ci/../", "é",
           "bb:", "*", "ci:builds", "-", "0"]
TAGS = ["k:v", "", ":", "k:", ":v", "k:v:w", "builder:linux", "\x00:\x00", "a" * 1000 + ":b",
        "é:ü", "k"]
TYPE_URLS = ["type.googleapis.com/build.bazel.remote.execution.v2.ActionResult",
             "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse",
             "type.googleapis.com/build.bazel.remote.execution.v2.Action",
             "type.googleapis.com/build.bazel.remote.execution.v2.Digest",
             "type.googleapis.com/google.devtools.remoteworkers.v1test2.AdminTemp",
             "/build.bazel.remote.execution.v2.ActionResult", "", "x",
             "type.googleapis.com/"]


class Pools:
    """Values from the server: real digests, operation and session names,
    build ids; fuzzed requests mix them in so they reach past lookups."""

    def __init__(self):
        self.hashes = [EMPTY_SHA]
        self.sizes = {EMPTY_SHA: 0}
        self.names = []       # operation names, bot session names
        self.lease_ids = []
        self.build_ids = [1, 2]
        self.lease_keys = []
        self.uploads = []     # resource names of uploads in progress

    def add_blob(self, data):
        d = digest(data)
        if d.hash not in self.sizes:
            self.hashes.append(d.hash)
        self.sizes[d.hash] = d.size_bytes
        return d

    def harvest(self, msg):
        """Walk a parsed response; keep names and ids worth replaying."""
        for f, v in msg.ListFields():
            if f.type == FD.TYPE_MESSAGE:
                for sub in (v if f.label == FD.LABEL_REPEATED else [v]):
                    if hasattr(sub, "ListFields"):
                        self.harvest(sub)
            elif f.name == "name" and isinstance(v, str) and v and len(self.names) < 500:
                self.names.append(v)
            elif f.name == "id" and isinstance(v, str) and v and len(self.lease_ids) < 500:
                self.lease_ids.append(v)
            elif f.name in ("id", "retry_of") and isinstance(v, int) and v and len(self.build_ids) < 500:
                self.build_ids.append(v)
            elif f.name == "lease_key" and isinstance(v, int) and v and len(self.lease_keys) < 500:
                self.lease_keys.append(v)


class Gen:
    """Builds adversarial values for a field from its name and type."""

    def __init__(self, rng, pools):
        self.r = rng
        self.p = pools

    def chance(self, x):
        return self.r.random() < x

    def int64(self):
        r = self.r
        c = r.random()
        if c < 0.5:
            return r.choice(INT64)
        if c < 0.75:
            return r.randint(-1000, 100000)
        return r.randint(-2 ** 63, 2 ** 63 - 1)

    def hash(self):
        if self.chance(0.55) and self.p.hashes:
            return self.r.choice(self.p.hashes)
        if self.chance(0.2):
            return hashlib.sha256(self.r.randbytes(8)).hexdigest()
        return self.r.choice(HASH_JUNK)

    def size_for(self, hsh):
        if hsh in self.p.sizes and self.chance(0.7):
            return self.p.sizes[hsh]
        return self.int64()

    def string(self, name, full=""):
        r = self.r
        n = name.lower()
        if n == "hash":
            return self.hash()
        if n == "instance_name":
            return r.choice(INSTANCES)
        if n == "resource_name":
            return self.resource_name()
        if n in ("page_token", "start_cursor", "next_cursor", "cursor"):
            return r.choice(TOKENS)
        if n.endswith("_json"):
            return r.choice(JSONS)
        if n in ("bucket", "buckets"):
            return r.choice(BUCKETS)
        if n == "tags":
            return r.choice(TAGS)
        if n == "type_url":
            return r.choice(TYPE_URLS)
        if n in ("name", "parent", "bot_session_name") and self.p.names and self.chance(0.6):
            nm = r.choice(self.p.names)
            return nm if self.chance(0.7) else self.mangle_str(nm)
        if n == "id" and self.p.lease_ids and self.chance(0.6):
            return r.choice(self.p.lease_ids)
        if n in ("name", "operation_name"):
            return r.choice(["operations/", "operations/x", "", "main/operations/abc",
                             "operations/" + "0" * 36, "bots/x", "a" * 5000, "\x00",
                             "operations/../operations/x"])
        if self.chance(0.6):
            return r.choice(JUNK_STRINGS)
        return self.text(r.choice([1, 8, 64, 1000]))

    def text(self, n):
        alphabet = "ab/:.-_ \x00é\U0001F600%{}[]\"\\0129"
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def mangle_str(self, s):
        r = self.r
        if not s:
            return "\x00"
        i = r.randrange(len(s))
        c = r.random()
        if c < 0.3:
            return s[:i]
        if c < 0.6:
            return s[:i] + r.choice(["/", "\x00", "é", "..", "%"]) + s[i:]
        if c < 0.8:
            return s + s
        return s.upper()

    def resource_name(self):
        r = self.r
        if self.p.uploads and self.chance(0.2):
            return r.choice(self.p.uploads)
        hsh = self.hash()
        size = self.size_for(hsh)
        size_s = r.choice([str(size), str(size), "-0", "+1", "1x", "", "00", "9" * 30,
                           "0x10", " 1"])
        inst = r.choice(INSTANCES[:8] + [""] * 6)
        kind = r.choice(["blobs", "blobs", "uploads/%s/blobs" % self.uuid(),
                         "uploads/%s/blobs" % self.uuid(), "compressed-blobs/zstd",
                         "uploads/%s/compressed-blobs/zstd" % self.uuid(), "uploads//blobs",
                         "uploads", "blobs/sha256", "blobs/blake3", "uploads/x/blobs/sha256"])
        parts = [inst, kind, hsh, size_s] if inst else [kind, hsh, size_s]
        if self.chance(0.2):
            parts.append(r.choice(["extra", "", "a/b/c", "\x00"]))
        if self.chance(0.15):
            del parts[r.randrange(len(parts))]
        if self.chance(0.1):
            r.shuffle(parts)
        name = "/".join(parts)
        if self.chance(0.1):
            name = self.mangle_str(name)
        return name

    def uuid(self):
        r = self.r
        return r.choice(["%08x-%04x-%04x-%04x-%012x" % (
            r.getrandbits(32), r.getrandbits(16), r.getrandbits(16), r.getrandbits(16),
            r.getrandbits(48)), "", "x", "a" * 300, "\x00"])

    def scalar(self, f, msg_name):
        r = self.r
        t = f.type
        if t == FD.TYPE_STRING:
            return self.string(f.name, msg_name)
        if t == FD.TYPE_BYTES:
            if f.name == "value" and self.chance(0.5):
                return self.any_value()
            return r.choice([b"", b"\x00", r.randbytes(r.choice([1, 16, 300])),
                             b"\xff" * 1000, r.randbytes(70000)])
        if t == FD.TYPE_BOOL:
            return self.chance(0.5)
        if t == FD.TYPE_ENUM:
            vals = [v.number for v in f.enum_type.values]
            if self.chance(0.7):
                return r.choice(vals)
            return r.choice([-1, max(vals) + 1, 2 ** 31 - 1, -2 ** 31, 100])
        if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
            if f.name in ("id", "retry_of") and self.p.build_ids and self.chance(0.5):
                return r.choice(self.p.build_ids)
            if f.name == "lease_key" and self.p.lease_keys and self.chance(0.5):
                return r.choice(self.p.lease_keys)
            return self.int64()
        if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
            return r.choice([0, 1, 2 ** 63, 2 ** 64 - 1, r.getrandbits(64)])
        if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
            return r.choice([0, 1, -1, 2 ** 31 - 1, -2 ** 31, 1000, 1000000,
                             r.randint(-2 ** 31, 2 ** 31 - 1)])
        if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
            return r.choice([0, 1, 2 ** 32 - 1, 2 ** 31, r.getrandbits(32)])
        if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
            return r.choice([0.0, -1.0, 1e300 if t == FD.TYPE_DOUBLE else 1e30,
                             float("nan"), float("inf")])
        raise AssertionError("unhandled field type %d" % t)

    def any_value(self):
        """A serialized message of a type the server unpacks from Any."""
        re_ = pb().re
        cls = self.r.choice([re_.ActionResult, re_.ExecuteResponse, re_.Digest])
        return self.message(cls, 2).SerializeToString()

    def message(self, cls, depth=0, density=0.6):
        m = cls()
        self.fill(m, depth, density)
        return m

    def fill(self, m, depth, density):
        r = self.r
        d = m.DESCRIPTOR
        for f in d.fields:
            if not self.chance(density):
                continue
            is_map = f.message_type is not None and f.message_type.GetOptions().map_entry
            if f.label == FD.LABEL_REPEATED:
                n = r.choice([1, 1, 2, 3, 0, 5])
                if self.chance(0.04):
                    n = r.choice([1000, 3000, 10000])
                field = getattr(m, f.name)
                if is_map:
                    kf, vf = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
                    for _ in range(min(n, 100)):
                        k = self.scalar(kf, d.name)
                        if vf.type == FD.TYPE_MESSAGE:
                            field[k].CopyFrom(self.message(vf.message_type._concrete_class, depth + 1))
                        else:
                            field[k] = self.scalar(vf, d.name)
                elif f.type == FD.TYPE_MESSAGE:
                    if depth > 5:
                        continue
                    proto = self.message(f.message_type._concrete_class, depth + 1,
                                         density * 0.9)
                    for i in range(n):
                        sub = field.add()
                        if n > 50 and i:
                            sub.CopyFrom(proto)
                        else:
                            self.fill(sub, depth + 1, density * 0.9)
                else:
                    if n > 50:
                        v = self.scalar(f, d.name)
                        vals = [v] * n if self.chance(0.5) else \
                            [self.scalar(f, d.name) for _ in range(min(n, 200))] * (n // 200 + 1)
                        field.extend(vals[:n])
                    else:
                        field.extend(self.scalar(f, d.name) for _ in range(n))
            elif f.type == FD.TYPE_MESSAGE:
                if depth > 5:
                    continue
                sub = getattr(m, f.name)
                sub.SetInParent()
                self.fill(sub, depth + 1, density * 0.9)
                if f.message_type.name == "Digest" and sub.hash and self.chance(0.7):
                    sub.size_bytes = self.size_for(sub.hash)
            else:
                setattr(m, f.name, self.scalar(f, d.name))


# ---- byte-level mutation ---------------------------------------------------------


def mutate(rng, data):
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        c = rng.random()
        if not b:
            b += rng.randbytes(rng.randint(1, 8))
            continue
        i = rng.randrange(len(b))
        if c < 0.35:
            b[i] ^= 1 << rng.randrange(8)
        elif c < 0.5:
            del b[i:]
        elif c < 0.6:
            b[i] = rng.choice([0x00, 0xff, 0x7f, 0x80, 0x0a, 0x12, 0x08, 0x1a])
        elif c < 0.7:
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif c < 0.8:  # a varint that never ends / a huge length
            b[i:i] = b"\xff" * rng.randint(1, 11)
        elif c < 0.9:
            j = rng.randrange(len(b))
            b += b[min(i, j):max(i, j)]
        else:
            del b[i:i + rng.randint(1, 8)]
    return bytes(b)


def random_bytes(rng):
    c = rng.random()
    if c < 0.3:
        return rng.randbytes(rng.randint(0, 16))
    if c < 0.6:
        return rng.randbytes(rng.randint(0, 512))
    if c < 0.7:
        return b""
    if c < 0.8:  # deep nesting: groups and length-delimited fields in fields
        depth = rng.choice([100, 1000, 10000])
        tag = rng.choice([b"\x0b", b"\x13", b"\x1b"])  # start-group, fields 1..3
        return tag * depth
    if c < 0.9:  # plausible tags, wild values
        out = bytearray()
        for _ in range(rng.randint(1, 20)):
            field = rng.randint(1, 25)
            wt = rng.choice([0, 1, 2, 5, 2, 2])
            out.append((field << 3 | wt) & 0x7f if field < 16 else 0x80 | ((field << 3 | wt) & 0x7f))
            if field >= 16:
                out.append((field << 3 | wt) >> 7)
            if wt == 0:
                out += rng.choice([b"\x00", b"\x01", b"\xff" * 9 + b"\x01", b"\xff" * 10 + b"\x7f"])
            elif wt == 1:
                out += rng.randbytes(8)
            elif wt == 5:
                out += rng.randbytes(4)
            else:
                n = rng.choice([0, 1, 5, 64, 2 ** 31, 2 ** 32 + 1, 2 ** 63])
                v = n
                enc = bytearray()
                while True:
                    x = v & 0x7f
                    v >>= 7
                    enc.append(x | (0x80 if v else 0))
                    if not v:
                        break
                out += enc + rng.randbytes(min(n, 64))
        return bytes(out)
    return rng.randbytes(rng.randint(4096, 200000))


# ---- the fuzz driver ------------------------------------------------------------


class Call:
    """One request in flight and what came back."""

    def __init__(self, path, kind, req, desc):
        self.path, self.kind, self.req, self.desc = path, kind, req, desc
        self.code = None
        self.details = ""
        self.responses = []
        self.handle = None

    def short(self):
        req = self.req if isinstance(self.req, bytes) else b"".join(self.req)
        return "%s [%s] %d bytes: %s%s" % (self.path, self.desc, len(req),
                                            req[:96].hex(), "..." if len(req) > 96 else "")


class FuzzCase(h.ReactordTestCase):
    def setUp(self):
        super().setUp()
        self.table = methods()
        self.crashes = []

    def start(self):
        self.srv = self.start_reactord(fuzz_config())
        self.ch = self.channel(self.srv.tcp_addr, ("grpc.max_receive_message_length", -1),
                               ("grpc.max_send_message_length", -1))
        return self.srv

    # -- issuing and collecting
    def issue(self, call, timeout):
        ser = None
        if call.kind == UNARY:
            mc = self.ch.unary_unary(call.path, request_serializer=ser, response_deserializer=ser)
            call.handle = mc.future(call.req, timeout=timeout)
        elif call.kind == SSTREAM:
            mc = self.ch.unary_stream(call.path, request_serializer=ser, response_deserializer=ser)
            call.handle = mc(call.req, timeout=timeout)
        else:
            mc = self.ch.stream_unary(call.path, request_serializer=ser, response_deserializer=ser)
            call.handle = mc.future(iter(list(call.req)), timeout=timeout)

    def collect(self, call):
        try:
            if call.kind == SSTREAM:
                for i, msg in enumerate(call.handle):
                    call.responses.append(msg)
                    if i >= 20:
                        call.handle.cancel()
                        break
                call.code = OK
            else:
                call.responses.append(call.handle.result())
                call.code = OK
        except grpc.RpcError as e:
            call.code = e.code().value[0]
            call.details = e.details() or ""
        except grpc.FutureCancelledError:
            call.code = CANCELLED

    def judge(self, call, resp_cls, blocking, pools):
        """A list of problems with one answer ([] if fine)."""
        bad = []
        if call.code in BAD_CODES:
            # A server that is gone answers UNAVAILABLE: reported by the
            # health check with the log, not here.
            bad.append("status %d %r" % (call.code, call.details))
        elif call.code == DEADLINE_EXCEEDED and not blocking:
            bad.append("DEADLINE_EXCEEDED on a call that should not block")
        if resp_cls is not None:
            for raw in call.responses:
                try:
                    m = resp_cls.FromString(raw)
                except Exception as e:  # noqa: BLE001 - any parse failure is the finding
                    bad.append("response does not parse as %s: %s" % (resp_cls.__name__, e))
                    continue
                pools.harvest(m)
        return bad

    def run_batch(self, calls, pools, timeout):
        by_path = {t[0]: t for t in self.table}
        for c in calls:
            self.issue(c, timeout)
        problems = []
        for c in calls:
            self.collect(c)
            _, _, _, resp_cls, blocking = by_path.get(c.path, (None, None, None, None, True))
            for p in self.judge(c, resp_cls, blocking, pools):
                problems.append("%s: %s" % (c.short(), p))
        return problems

    def check_alive(self, calls, what):
        """The server still runs and answers Health; else the batch is the
        suspect: save it and fail (or, hunting, restart and go on)."""
        err = None
        if not self.srv.running():
            err = "reactord exited with %s" % self.srv.proc.returncode
        else:
            try:
                self.assert_serving(self.srv, what)
            except (AssertionError, grpc.RpcError) as e:
                err = "health check failed: %s" % e
        if err is None and h.SANITIZER_RE.search(self.srv.log()):
            err = "sanitizer report in the log"
        if err is None:
            return True
        batch = "\n".join(c.short() for c in calls)
        if OUT:
            os.makedirs(OUT, exist_ok=True)
            tag = "%s-%d" % (self.id().rsplit(".", 1)[-1], len(self.crashes))
            with open(os.path.join(OUT, tag + ".batch"), "w") as f:
                for c in calls:
                    reqs = [c.req] if isinstance(c.req, bytes) else list(c.req)
                    f.write("%s %s %s\n" % (c.path, c.kind, ",".join(r.hex() for r in reqs)))
            with open(os.path.join(OUT, tag + ".log"), "w") as f:
                f.write(self.srv.log())
        report = "%s after %s; log tail:\n%s\nbatch:\n%s" % (err, what, self.srv.log_tail(80), batch)
        if not KEEP_GOING:
            self.fail(report)
        self.crashes.append(report)
        print("CRASH (%s): %s" % (what, err), flush=True)
        self.srv.expected_rc = None
        self.srv.kill()
        self.start()
        return False

    def fuzz(self, name, n, make_call, seed_state=None):
        """Send n requests made by make_call(rng, pools) in batches."""
        rng = random.Random("%s:%s" % (SEED, name))
        srv = self.start()
        pools = Pools()
        if seed_state:
            seed_state(pools)
        timeout = 1.0 * h.SLOW
        problems = []
        sent = 0
        codes = {}
        t0 = time.monotonic()
        while sent < n:
            calls = [make_call(rng, pools) for _ in range(min(BATCH, n - sent))]
            sent += len(calls)
            probs = self.run_batch(calls, pools, timeout)
            for c in calls:
                codes[c.code] = codes.get(c.code, 0) + 1
            alive = self.check_alive(calls, "%s batch ending at request %d" % (name, sent))
            if alive:
                problems += probs
            if seed_state and not alive:
                seed_state(pools)
        print("  %s: %d requests in %.1fs, status codes %s" % (
            name, sent, time.monotonic() - t0,
            ", ".join("%s:%d" % kv for kv in sorted(codes.items(), key=lambda kv: str(kv[0])))),
            flush=True)
        self.assertEqual(self.crashes, [], "reactord crashed %d times" % len(self.crashes))
        self.assertEqual(problems[:30], [], "%d bad answers" % len(problems))
        self.sanity(srv)

    def sanity(self, srv):
        """State is not corrupt: the server still does real work."""
        self.assert_serving(self.srv, "after fuzzing")
        re_ = pb().re
        data = b"sanity %f" % time.time()
        d = digest(data)
        up = h.unary(self.ch, RE + "ContentAddressableStorage/BatchUpdateBlobs",
                     re_.BatchUpdateBlobsRequest, re_.BatchUpdateBlobsResponse)(
            re_.BatchUpdateBlobsRequest(requests=[re_.BatchUpdateBlobsRequest.Request(
                digest=d, data=data)]), timeout=10 * h.SLOW)
        self.assertEqual([r.status.code for r in up.responses], [0])
        rd = h.unary(self.ch, RE + "ContentAddressableStorage/BatchReadBlobs",
                     re_.BatchReadBlobsRequest, re_.BatchReadBlobsResponse)(
            re_.BatchReadBlobsRequest(digests=[d]), timeout=10 * h.SLOW)
        self.assertEqual([(r.status.code, r.data) for r in rd.responses], [(0, data)])
        put = h.unary(self.ch, BK + "Put", bk.PutRequest, bk.BuildResponse)(
            bk.PutRequest(bucket="sanity", parameters_json='{"builder_name": "x"}'),
            timeout=10 * h.SLOW)
        self.assertFalse(put.HasField("error"), put.error)
        got = h.unary(self.ch, BK + "Get", bk.GetRequest, bk.BuildResponse)(
            bk.GetRequest(id=put.build.id), timeout=10 * h.SLOW)
        self.assertEqual((got.build.id, got.build.bucket), (put.build.id, "sanity"))

    # -- state the adversarial requests can refer to
    def seed_state(self, pools):
        re_ = pb().re
        g = Gen(random.Random("%s:state" % SEED), pools)
        blobs = [b"", b"hello", os.urandom(1000)]
        # Adversarial blobs the server will unpack: garbage, and messages of
        # the types it looks for (Action, Command, Directory, Tree,
        # ActionResult) with wild fields.
        blobs += [g.r.randbytes(g.r.randint(1, 300)) for _ in range(5)]
        for cls in (re_.Command, re_.Directory, re_.Tree, re_.ActionResult):
            for _ in range(3):
                blobs.append(g.message(cls, 0).SerializeToString())
        for b in list(blobs):
            pools.add_blob(b)
        # Actions pointing at all of that, and at missing digests.
        for _ in range(8):
            a = g.message(re_.Action, 1)
            a.command_digest.CopyFrom(digest(g.r.choice(blobs)))
            a.input_root_digest.CopyFrom(digest(g.r.choice(blobs)))
            blobs.append(a.SerializeToString())
            pools.add_blob(blobs[-1])
        # A well-formed action too, so Execute gets queued and bots lease.
        cmd = re_.Command(arguments=["true"]).SerializeToString()
        root = re_.Directory().SerializeToString()
        act = re_.Action(command_digest=digest(cmd), input_root_digest=digest(root)).SerializeToString()
        blobs += [cmd, root, act]
        # A deep directory chain and an exponentially wide DAG (each level
        # names the one below twice): walks must not recurse without bound
        # or visit shared subtrees again.
        for depth, fan in ((600, 1), (40, 2)):
            child = re_.Directory().SerializeToString()
            blobs.append(child)
            for i in range(depth):
                dd = re_.Directory(directories=[
                    re_.DirectoryNode(name="d%d" % j, digest=digest(child)) for j in range(fan)])
                child = dd.SerializeToString()
                blobs.append(child)
        for b in blobs:
            pools.add_blob(b)
        uniq = {hashlib.sha256(b).hexdigest(): b for b in blobs if len(b) < 1 << 20}
        batches, cur, size = [], [], 0
        for b in uniq.values():
            if cur and (len(cur) >= 200 or size + len(b) > 4 << 20):
                batches.append(cur)
                cur, size = [], 0
            cur.append(b)
            size += len(b)
        batches.append(cur)
        up = h.unary(self.ch, RE + "ContentAddressableStorage/BatchUpdateBlobs",
                     re_.BatchUpdateBlobsRequest, re_.BatchUpdateBlobsResponse)
        for inst in ("", "main"):
            for items in batches:
                up(re_.BatchUpdateBlobsRequest(instance_name=inst, requests=[
                    re_.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b)
                    for b in items]), timeout=30 * h.SLOW)
        # Builds, and a few operations to name.
        put = h.unary(self.ch, BK + "Put", bk.PutRequest, bk.BuildResponse)
        for i in range(4):
            r = put(bk.PutRequest(bucket="ci", tags=["k:v"], parameters_json='{"builder_name": "linux"}',
                                  lease_expiration_ts=0 if i % 2 else int((time.time() + 60) * 1e6)),
                    timeout=10 * h.SLOW)
            pools.harvest(r)
        ex = self.ch.unary_stream(RE + "Execution/Execute", request_serializer=None,
                                  response_deserializer=None)
        for d in (digest(act), digest(blobs[12])):
            st = ex(re_.ExecuteRequest(action_digest=d, skip_cache_lookup=True).SerializeToString(),
                    timeout=1 * h.SLOW)
            try:
                for raw in st:
                    pools.harvest(pb().operations.Operation.FromString(raw))
                    break
            except grpc.RpcError:
                pass
            st.cancel()

    # -- request makers
    def pick(self, rng, live=True):
        t = rng.choice(self.table)
        while live and t[2] is None and rng.random() < 0.8:
            t = rng.choice(self.table)
        return t

    def make_random(self, rng, pools):
        path, kind, _, _, _ = self.pick(rng, live=False)
        if rng.random() < 0.03:
            path = rng.choice(["/", "/x", "/grpc.health.v1.Health/", path + "x",
                               "/reactor.buckets.v1.Buckets/%7f", path.upper()])
        if kind == CSTREAM:
            return Call(path, kind, [random_bytes(rng) for _ in range(rng.randint(0, 4))], "random")
        return Call(path, kind, random_bytes(rng), "random")

    def build(self, rng, pools, cls, path):
        g = Gen(rng, pools)
        m = g.message(cls, 0, density=rng.choice([0.3, 0.6, 0.9]))
        return m

    def make_adversarial(self, rng, pools):
        path, kind, req_cls, _, _ = self.pick(rng)
        if req_cls is None:
            return Call(path, kind, b"", "unimplemented")
        if kind == CSTREAM:
            msgs = []
            g = Gen(rng, pools)
            name = g.resource_name()
            off = 0
            for i in range(rng.randint(1, 5)):
                m = self.build(rng, pools, req_cls, path)
                if rng.random() < 0.7:
                    m.resource_name = name if (i == 0 or rng.random() < 0.3) else ""
                    m.write_offset = off if rng.random() < 0.8 else g.int64()
                off += len(m.data)
                msgs.append(m.SerializeToString())
            if rng.random() < 0.3 and "uploads/" in name:
                pools.uploads.append(name)
            return Call(path, kind, msgs, "adversarial")
        return Call(path, kind, self.build(rng, pools, req_cls, path).SerializeToString(),
                    "adversarial")

    def valid(self, rng, pools, path, req_cls):
        """A request the server should accept (the seed for mutation)."""
        re_, ops, bots = pb().re, pb().operations, pb().bots
        hsh = rng.choice(pools.hashes)
        d = re_.Digest(hash=hsh, size_bytes=pools.sizes[hsh])
        name = rng.choice(pools.names) if pools.names else "operations/x"
        bid = rng.choice(pools.build_ids)
        leaf = path.rsplit("/", 1)[-1]
        m = {
            "GetActionResult": lambda: re_.GetActionResultRequest(action_digest=d),
            "UpdateActionResult": lambda: re_.UpdateActionResultRequest(
                action_digest=d, action_result=re_.ActionResult(
                    exit_code=1, stdout_digest=d, output_files=[re_.OutputFile(path="a/b", digest=d)],
                    output_directories=[re_.OutputDirectory(path="o", tree_digest=d)])),
            "GetCapabilities": lambda: re_.GetCapabilitiesRequest(instance_name="main"),
            "BatchReadBlobs": lambda: re_.BatchReadBlobsRequest(digests=[d, d]),
            "BatchUpdateBlobs": lambda: re_.BatchUpdateBlobsRequest(requests=[
                re_.BatchUpdateBlobsRequest.Request(digest=digest(b"abc"), data=b"abc")]),
            "FindMissingBlobs": lambda: re_.FindMissingBlobsRequest(blob_digests=[d]),
            "GetTree": lambda: re_.GetTreeRequest(root_digest=d, page_size=rng.choice([0, 1, 5]),
                                                  page_token=rng.choice(["", "1"])),
            "Execute": lambda: re_.ExecuteRequest(action_digest=d, skip_cache_lookup=True),
            "WaitExecution": lambda: re_.WaitExecutionRequest(name=name),
            "QueryWriteStatus": lambda: pb().bytestream.QueryWriteStatusRequest(
                resource_name="uploads/%s/blobs/%s/%d" % (Gen(rng, pools).uuid(), hsh, d.size_bytes)),
            "Read": lambda: pb().bytestream.ReadRequest(
                resource_name="blobs/%s/%d" % (hsh, d.size_bytes), read_offset=rng.choice([0, 1]),
                read_limit=rng.choice([0, 2])),
            "CreateBotSession": lambda: bots.CreateBotSessionRequest(
                parent="", bot_session=bots.BotSession(bot_id="fz%d" % rng.randint(0, 3),
                                                       status=1)),
            "PostBotEventTemp": lambda: bots.PostBotEventTempRequest(name=name, msg="m", type=1),
            "UpdateBotSession": lambda: bots.UpdateBotSessionRequest(
                name=name, bot_session=bots.BotSession(name=name, bot_id="fz0", status=1, leases=[
                    bots.Lease(id=rng.choice(pools.lease_ids or ["l"]), state=4)])),
            "CancelOperation": lambda: ops.CancelOperationRequest(name=name),
            "DeleteOperation": lambda: ops.DeleteOperationRequest(name=name),
            "GetOperation": lambda: ops.GetOperationRequest(name=name),
            "ListOperations": lambda: ops.ListOperationsRequest(name="", page_size=2,
                                                                page_token=rng.choice(TOKENS[:3])),
            "Check": lambda: pb().health.HealthCheckRequest(service=""),
            "List": lambda: pb().health.HealthListRequest(),
            "Watch": lambda: pb().health.HealthCheckRequest(service=""),
            "Cancel": lambda: bk.CancelRequest(id=bid, result_details_json="{}"),
            "CancelBatch": lambda: bk.CancelBatchRequest(build_ids=[bid, bid]),
            "Fail": lambda: bk.FailRequest(id=bid, lease_key=rng.choice(pools.lease_keys or [1])),
            "Get": lambda: bk.GetRequest(id=bid),
            "Heartbeat": lambda: bk.HeartbeatRequest(id=bid, lease_key=rng.choice(pools.lease_keys or [1]),
                                                     lease_expiration_ts=int((time.time() + 30) * 1e6)),
            "HeartbeatBatch": lambda: bk.HeartbeatBatchRequest(heartbeats=[bk.HeartbeatRequest(
                id=bid, lease_key=rng.choice(pools.lease_keys or [1]),
                lease_expiration_ts=int((time.time() + 30) * 1e6))]),
            "Lease": lambda: bk.LeaseRequest(id=bid, lease_expiration_ts=int((time.time() + 30) * 1e6)),
            "Peek": lambda: bk.PeekRequest(buckets=["ci"], max_builds=3),
            "Put": lambda: bk.PutRequest(bucket="ci", tags=["a:b"], parameters_json='{"builder_name": "l"}'),
            "PutBatch": lambda: bk.PutBatchRequest(builds=[bk.PutRequest(bucket="ci2")] * 2),
            "Reset": lambda: bk.ResetRequest(id=bid),
            "Retry": lambda: bk.RetryRequest(id=bid),
            "Search": lambda: bk.SearchRequest(buckets=["ci"], max_builds=2,
                                               start_cursor=rng.choice(TOKENS[:3])),
            "Start": lambda: bk.StartRequest(id=bid, lease_key=rng.choice(pools.lease_keys or [1]),
                                             url="http://x"),
            "Succeed": lambda: bk.SucceedRequest(id=bid, lease_key=rng.choice(pools.lease_keys or [1]),
                                                 result_details_json='{"a": 1}'),
            "WatchBuilds": lambda: bk.WatchBuildsRequest(buckets=["ci"]),
        }
        try:
            return m[leaf]()
        except (KeyError, ValueError, TypeError):
            return req_cls()

    def make_mutation(self, rng, pools):
        path, kind, req_cls, _, _ = self.pick(rng)
        if req_cls is None:
            return Call(path, kind, mutate(rng, b"\x0a\x01a"), "mutated")
        if kind == CSTREAM:
            hsh = rng.choice(pools.hashes)
            data = rng.randbytes(rng.choice([0, 5, 100]))
            d = digest(data) if rng.random() < 0.7 else pb().re.Digest(hash=hsh, size_bytes=pools.sizes[hsh])
            name = "uploads/%s/blobs/%s/%d" % (Gen(rng, pools).uuid(), d.hash, d.size_bytes)
            msgs, off = [], 0
            chunks = [data[:len(data) // 2], data[len(data) // 2:]]
            for i, ch in enumerate(chunks):
                m = req_cls(resource_name=name if i == 0 else "", write_offset=off, data=ch,
                            finish_write=(i == len(chunks) - 1))
                off += len(ch)
                msgs.append(m.SerializeToString())
            j = rng.randrange(len(msgs))
            msgs[j] = mutate(rng, msgs[j])
            return Call(path, kind, msgs, "mutated")
        base = self.valid(rng, pools, path, req_cls).SerializeToString()
        return Call(path, kind, mutate(rng, base), "mutated")


class TestFuzz(FuzzCase):
    def test_dispatch_table_is_covered(self):
        """Every method of src/services/dispatch.c is in methods(), with its kind."""
        with open(os.path.join(h.SRCDIR, "src", "services", "dispatch.c")) as f:
            src = f.read()
        kinds = {"RPC_UNARY": UNARY, "RPC_SERVER_STREAM": SSTREAM, "RPC_CLIENT_STREAM": CSTREAM}
        table = {p: kinds[k] for p, k in re.findall(r'\.path = "(/[^"]+)",\s*\.kind = (RPC_\w+)', src)}
        self.assertGreater(len(table), 30)
        self.assertEqual({t[0]: t[1] for t in self.table}, table)

    def test_random_bytes(self):
        self.fuzz("random", max(1, ITERS * 3 // 10), self.make_random)

    def test_adversarial_messages(self):
        self.fuzz("adversarial", max(1, ITERS * 45 // 100), self.make_adversarial,
                  self.seed_state)

    def test_mutated_valid_requests(self):
        self.fuzz("mutated", max(1, ITERS * 25 // 100), self.make_mutation, self.seed_state)

    def test_cancel_and_disconnect_storm(self):
        """Calls cut short at every point (RST_STREAM at once or after a
        moment, the connection dropped with calls in flight, client streams
        left open, gRPC frames that lie about their length or compression):
        the server must clean up whatever each call had started."""
        rng = random.Random("%s:storm" % SEED)
        srv = self.start()
        pools = Pools()
        self.seed_state(pools)
        n = max(1, ITERS // 10)
        sent = 0
        resets = []
        while sent < n:
            c = h.RawH2(srv.tcp_addr)
            c.handshake()
            calls = []
            for k in range(min(BATCH, n - sent)):
                sid = 2 * k + 1
                path, kind, req_cls, _, _ = self.pick(rng)
                if req_cls is None:
                    body = b""
                elif rng.random() < 0.7:
                    body = self.valid(rng, pools, path, req_cls).SerializeToString()
                else:
                    body = Gen(rng, pools).message(req_cls, 0).SerializeToString()
                if len(body) > 8000:  # stay inside the default flow-control windows
                    body = self.valid(rng, pools, path, req_cls).SerializeToString()
                frame = h.grpc_msg(body)
                x = rng.random()
                if x < 0.05:
                    frame = h.grpc_msg(body, flag=1)  # "compressed", no grpc-encoding
                elif x < 0.1:
                    frame = frame[:5] + frame[5:][:len(body) // 2]  # length lies
                elif x < 0.15:
                    frame = frame + frame  # two messages
                calls.append(Call(path, kind, frame, "storm"))
                end = kind != CSTREAM or rng.random() < 0.5
                y = rng.random()
                try:
                    c.send_headers(sid, h.grpc_request_headers(path))
                    for i in range(0, len(frame), 16384):
                        c.send_data(sid, frame[i:i + 16384],
                                    end_stream=end and i + 16384 >= len(frame))
                    if y < 0.4:
                        c.send_rst(sid)
                    elif y < 0.6:
                        time.sleep(rng.random() * 0.01)
                        c.send_rst(sid)
                except OSError as e:
                    # The server may end a connection (GOAWAY) for what
                    # this client does; it must say why and live on.
                    while c.read_frame(0.2):
                        pass
                    resets.append("%s after %d streams (goaway=%r)" % (e, k + 1, c.goaway))
                    break
            sent += len(calls)
            if rng.random() < 0.5:
                time.sleep(rng.random() * 0.05)
            c.close()
            self.check_alive(calls, "storm batch ending at request %d" % sent)
        print("  storm: %d requests, %d connections ended by the server: %s" % (
            sent, len(resets), resets[:3]), flush=True)
        self.assertEqual(self.crashes, [], "reactord crashed %d times" % len(self.crashes))
        self.sanity(srv)


# ---- regression tests: one minimal repro per bug the fuzzer found ----------------


class TestFuzzRegressions(FuzzCase):
    def call(self, path, req, timeout=5):
        return h.unary(self.ch, path, None, None)(req, timeout=timeout * h.SLOW)

    def expect_status(self, path, req, code, timeout=5):
        e = h.rpc_error(self.call, path, req, timeout)
        self.assertEqual(e.code().value[0], code, e.details())
        self.assertTrue(e.details(), "an error must say what is wrong")
        return e

    # -- bug 1: the call layer finishing a client-streaming call (bad second
    # message, NUL in a string, stream ending inside a gRPC frame) does not
    # run the method's cancel hook, so ByteStream.Write leaks its state
    # (LeakSanitizer: write_begin, svc_bytestream.c) and leaves the upload
    # owned by a call that no longer exists: every later Write of that
    # resource name answers ABORTED "is being written by another stream",
    # and the idle sweeper never frees it (it skips owned uploads).

    def _write_rest(self, name, data):
        bs = pb().bytestream
        w = self.ch.stream_unary(BS + "Write", request_serializer=None,
                                 response_deserializer=bs.WriteResponse.FromString)
        return w(iter([bs.WriteRequest(resource_name=name, write_offset=0, data=data,
                                       finish_write=True).SerializeToString()]),
                 timeout=5 * h.SLOW)

    def test_write_released_after_bad_second_message(self):
        self.start()
        bs = pb().bytestream
        w = self.ch.stream_unary(BS + "Write", request_serializer=None, response_deserializer=None)
        seconds = {
            "not a WriteRequest": b"\xff",
            "NUL in resource_name": bs.WriteRequest(resource_name="a\x00b", write_offset=50,
                                                    data=b"x").SerializeToString(),
        }
        for i, (what, second) in enumerate(sorted(seconds.items())):
            with self.subTest(second=what):
                data = b"%d" % i * 100
                d = digest(data)
                name = "uploads/1b4e28ba-2fa1-11d2-883f-0016d3cca42%d/blobs/%s/%d" % (
                    i, d.hash, d.size_bytes)
                first = bs.WriteRequest(resource_name=name, write_offset=0,
                                        data=data[:50]).SerializeToString()
                e = h.rpc_error(w, iter([first, second]), timeout=5 * h.SLOW)
                self.assertEqual(e.code().value[0], INVALID_ARGUMENT, e.details())
                try:
                    r = self._write_rest(name, data)
                except grpc.RpcError as e:
                    self.fail("a fresh Write of %s after the failed one: %s %s"
                              % (name, e.code(), e.details()))
                self.assertEqual(r.committed_size, len(data))

    def test_write_released_after_truncated_frame(self):
        srv = self.start()
        bs = pb().bytestream
        data = b"t" * 100
        d = digest(data)
        name = "uploads/1b4e28ba-2fa1-11d2-883f-0016d3cca427/blobs/%s/%d" % (d.hash, d.size_bytes)
        first = bs.WriteRequest(resource_name=name, write_offset=0, data=data[:50]).SerializeToString()
        c = self.raw(srv.tcp_addr)
        c.handshake()
        c.send_headers(1, h.grpc_request_headers(BS + "Write"))
        # The second gRPC frame announces 16 bytes; the stream ends after 3.
        c.send_data(1, h.grpc_msg(first) + b"\x00\x00\x00\x00\x10abc", end_stream=True)
        st = c.wait_stream(1)
        # INTERNAL, as grpc's own servers answer a truncated message.
        self.assertEqual(st.grpc_status, INTERNAL, st)
        c.close()
        try:
            r = self._write_rest(name, data)
        except grpc.RpcError as e:
            self.fail("a fresh Write of %s after the truncated one: %s %s"
                      % (name, e.code(), e.details()))
        self.assertEqual(r.committed_size, len(data))

    # -- bug 2 (fixed): strings that are not UTF-8 were accepted (the call
    # layer rejected NUL bytes, not invalid UTF-8) and echoed back or
    # stored, so conforming proto3 clients (Python, Java, Go) could not
    # parse the answer; via UpdateActionResult the bad entry was stored and
    # broke GetActionResult for every client that asked for that action.
    # proto3 forbids such strings: the call is refused with
    # INVALID_ARGUMENT before any method sees it.

    def test_update_action_result_invalid_utf8_not_stored(self):
        self.start()
        re_ = pb().re
        d = digest(b"utf8 action")
        req = re_.UpdateActionResultRequest(action_digest=d, action_result=re_.ActionResult(
            output_symlinks=[re_.OutputSymlink(path="pX", target="t")])).SerializeToString()
        req = req.replace(b"pX", b"p\xff")
        self.expect_status(RE + "ActionCache/UpdateActionResult", req, INVALID_ARGUMENT)
        get = re_.GetActionResultRequest(action_digest=d).SerializeToString()
        self.expect_status(RE + "ActionCache/GetActionResult", get, NOT_FOUND)

    def test_batch_read_blobs_invalid_utf8_hash(self):
        self.start()
        re_ = pb().re
        req = re_.BatchReadBlobsRequest(digests=[re_.Digest(hash="X" * 64, size_bytes=3)])
        req = req.SerializeToString().replace(b"X" * 64, b"\xff" * 64)
        self.expect_status(RE + "ContentAddressableStorage/BatchReadBlobs", req,
                           INVALID_ARGUMENT)

    def test_buckets_peek_invalid_utf8_bucket(self):
        self.start()
        req = bk.PeekRequest(buckets=["cX"]).SerializeToString().replace(b"cX", b"c\xe3")
        self.expect_status(BK + "Peek", req, INVALID_ARGUMENT)

    def test_bot_session_invalid_utf8_bot_id(self):
        self.start()
        bots = pb().bots
        req = bots.CreateBotSessionRequest(bot_session=bots.BotSession(
            bot_id="botX", status=1)).SerializeToString().replace(b"botX", b"bot\xff")
        self.expect_status(BOTS + "CreateBotSession", req, INVALID_ARGUMENT)


if __name__ == "__main__":
    h.main()
