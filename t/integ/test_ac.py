#!/usr/bin/python3
"""test_ac.py - end-to-end tests of the ActionCache service: UpdateActionResult
and GetActionResult round trips, the completeness rule (an update naming
missing blobs fails with a PreconditionFailure listing each one; an entry
whose blob was evicted from CAS is dropped and answered NOT_FOUND), inlining
of stdout/stderr/output files, allow-updates, digest validation, Redis being
down, persistence across a restart and instance isolation.

Each test starts its own reactord and embedded redis-server in a fresh temp
dir through harness.py, uploads blobs with CAS BatchUpdateBlobs, drives the
ActionCache with grpcio and looks at the Redis keys directly.  Run by `make
check`; by hand: /usr/bin/python3 t/integ/test_ac.py [NAME-SUBSTRING...]
"""

import hashlib
import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from harness import grpc, pb  # noqa: E402

RE = "/build.bazel.remote.execution.v2."
GET = RE + "ActionCache/GetActionResult"
UPDATE = RE + "ActionCache/UpdateActionResult"
BATCH_UPDATE = RE + "ContentAddressableStorage/BatchUpdateBlobs"
FIND_MISSING = RE + "ContentAddressableStorage/FindMissingBlobs"
PRECONDITION_URL = "type.googleapis.com/google.rpc.PreconditionFailure"
EMPTY_HASH = hashlib.sha256(b"").hexdigest()


def rpb():
    return pb().re


def rpc_pb():
    """google.rpc.Status and PreconditionFailure from the generated tree."""
    from google.rpc import error_details_pb2, status_pb2
    return status_pb2, error_details_pb2


def digest(data):
    return rpb().Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def subject(d):
    return "blobs/%s/%d" % (d.hash, d.size_bytes)


def tree_of(files):
    """A Tree whose root holds `files` {name: data} and one child directory
    holding a file of its own; returns (tree bytes, [file digests])."""
    r = rpb()
    child_data = b"child file of " + b",".join(files[n] for n in sorted(files))
    child = r.Directory(files=[r.FileNode(name="c.txt", digest=digest(child_data))])
    child_bytes = child.SerializeToString()
    root = r.Directory(
        files=[r.FileNode(name=n, digest=digest(d)) for n, d in sorted(files.items())],
        directories=[r.DirectoryNode(name="sub", digest=digest(child_bytes))])
    tree = r.Tree(root=root, children=[child])
    return tree.SerializeToString(), [digest(d) for _, d in sorted(files.items())] + [
        digest(child_data)], child_data


def redis_cmd(sock_path, *args):
    """One command on a unix socket, RESP by hand; returns the decoded
    reply (bytes, int, None, list), raising on an error reply."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5 * h.SLOW)
    s.connect(sock_path)
    try:
        s.sendall(out)
        f = s.makefile("rb")

        def parse():
            line = f.readline()
            if not line.endswith(b"\r\n"):
                raise AssertionError("short Redis reply %r" % line)
            t, rest = line[:1], line[1:-2]
            if t == b"+":
                return rest
            if t == b"-":
                raise AssertionError("Redis error: %s" % rest.decode(errors="replace"))
            if t == b":":
                return int(rest)
            if t == b"$":
                n = int(rest)
                if n < 0:
                    return None
                data = f.read(n + 2)
                return data[:-2]
            if t == b"*":
                n = int(rest)
                return None if n < 0 else [parse() for _ in range(n)]
            raise AssertionError("unexpected Redis reply %r" % line)
        return parse()
    finally:
        s.close()


class ACTestCase(h.ReactordTestCase):
    # -- servers and clients
    def start(self, overrides=None, name="reactord"):
        self.srv = self.start_reactord(overrides, name=name)
        self.ch = self.channel(self.srv.tcp_addr)
        return self.srv

    def redis(self, *args, srv=None):
        srv = srv or self.srv
        return redis_cmd(os.path.join(srv.state_dir, "redis", "redis.sock"), *args)

    def ac_key(self, action, instance=""):
        # "reactor:" is the default redis.prefix.
        return "reactor:ac:%s:%s-%d" % (instance, action.hash, action.size_bytes)

    # -- RPCs
    def upload(self, blobs, instance=""):
        r = rpb()
        req = r.BatchUpdateBlobsRequest(instance_name=instance, requests=[
            r.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b) for b in blobs])
        resp = h.unary(self.ch, BATCH_UPDATE, r.BatchUpdateBlobsRequest,
                       r.BatchUpdateBlobsResponse)(req, timeout=10 * h.SLOW)
        for x in resp.responses:
            self.assertEqual(x.status.code, 0, "upload of %s: %s" % (subject(x.digest),
                                                                      x.status.message))
        return [digest(b) for b in blobs]

    def missing(self, digests, instance=""):
        r = rpb()
        resp = h.unary(self.ch, FIND_MISSING, r.FindMissingBlobsRequest,
                       r.FindMissingBlobsResponse)(
            r.FindMissingBlobsRequest(instance_name=instance, blob_digests=digests),
            timeout=10 * h.SLOW)
        return {subject(d) for d in resp.missing_blob_digests}

    def update(self, action, result, instance="", **kw):
        r = rpb()
        req = r.UpdateActionResultRequest(instance_name=instance, action_digest=action,
                                          action_result=result, **kw)
        return h.unary(self.ch, UPDATE, r.UpdateActionResultRequest, r.ActionResult)(
            req, timeout=10 * h.SLOW)

    def get(self, action, instance="", **kw):
        r = rpb()
        req = r.GetActionResultRequest(instance_name=instance, action_digest=action, **kw)
        return h.unary(self.ch, GET, r.GetActionResultRequest, r.ActionResult)(
            req, timeout=10 * h.SLOW)

    def error_of(self, fn, *a, **kw):
        return h.rpc_error(fn, *a, **kw)

    def precondition_subjects(self, err):
        """Decode grpc-status-details-bin: google.rpc.Status whose details
        hold one PreconditionFailure; returns the set of MISSING subjects."""
        status_pb2, ed_pb2 = rpc_pb()
        md = dict(err.trailing_metadata() or ())
        self.assertIn("grpc-status-details-bin", md, "no rich status in the trailers")
        st = status_pb2.Status.FromString(md["grpc-status-details-bin"])
        self.assertEqual(st.code, grpc.StatusCode.FAILED_PRECONDITION.value[0])
        self.assertEqual(len(st.details), 1, st)
        self.assertEqual(st.details[0].type_url, PRECONDITION_URL)
        pf = ed_pb2.PreconditionFailure.FromString(st.details[0].value)
        for v in pf.violations:
            self.assertEqual(v.type, "MISSING", v)
        subjects = [v.subject for v in pf.violations]
        self.assertEqual(len(subjects), len(set(subjects)), "duplicate violations")
        return set(subjects)

    # -- fixtures
    def full_result(self, tag=b"", instance=""):
        """Upload everything a rich result references; returns
        (action digest, ActionResult, dict of the blobs by role)."""
        r = rpb()
        out_a = b"output file a " + tag
        out_b = b"output file b " + tag * 3
        stdout = b"hello from stdout\n" + tag
        stderr = b"warning: stderr\n" + tag
        tree_bytes, tree_files, child_data = tree_of({"x.txt": b"tree x " + tag,
                                                       "y.txt": b"tree y " + tag})
        self.upload([out_a, out_b, stdout, stderr, tree_bytes, b"tree x " + tag,
                     b"tree y " + tag, child_data], instance)
        action = digest(b"action " + tag)
        res = r.ActionResult(
            output_files=[r.OutputFile(path="out/a", digest=digest(out_a), is_executable=True),
                          r.OutputFile(path="out/b", digest=digest(out_b)),
                          r.OutputFile(path="out/empty", digest=digest(b""))],
            output_directories=[r.OutputDirectory(path="out/dir", tree_digest=digest(tree_bytes))],
            output_symlinks=[r.OutputSymlink(path="out/link", target="a")],
            exit_code=3, stdout_digest=digest(stdout), stderr_digest=digest(stderr))
        res.execution_metadata.worker = "test-worker"
        res.execution_metadata.worker_start_timestamp.seconds = 1700000000
        return action, res, {"a": out_a, "b": out_b, "stdout": stdout, "stderr": stderr,
                             "tree": tree_bytes, "tree_files": tree_files}


# ---- round trips and lookups -----------------------------------------------------


class TestRoundTrip(ACTestCase):
    def test_update_then_get(self):
        self.start()
        action, res, blobs = self.full_result(b"rt")
        echoed = self.update(action, res)
        self.assertEqual(echoed, res)
        got = self.get(action)
        self.assertEqual(got, res)
        # Nothing inlined unless asked.
        self.assertEqual(got.stdout_raw, b"")
        self.assertEqual(got.output_files[0].contents, b"")

        # The readable fields of the Redis hash.
        key = self.ac_key(action)
        fields = self.redis("HGETALL", key)
        fields = dict(zip(fields[0::2], fields[1::2]))
        self.assertEqual(rpb().ActionResult.FromString(fields[b"result"]), res)
        self.assertEqual(fields[b"exit_code"], b"3")
        self.assertEqual(fields[b"outputs"], b"5")  # 3 files, 1 directory, 1 symlink
        self.assertEqual(fields[b"stdout"], subject(digest(blobs["stdout"]))[6:].encode())
        self.assertEqual(fields[b"stderr"], subject(digest(blobs["stderr"]))[6:].encode())
        self.assertGreater(int(fields[b"updated"]), 1600000000 * 10**6)
        # Hits are counted after the reply, fire-and-forget.
        h.wait_for(lambda: self.redis("HGET", key, "hits") == b"1", 5, "hits = 1")
        self.get(action)
        h.wait_for(lambda: self.redis("HGET", key, "hits") == b"2", 5, "hits = 2")

    def test_overwrite(self):
        self.start()
        action, res, _ = self.full_result(b"ow")
        self.update(action, res)
        res2 = rpb().ActionResult(exit_code=0)
        self.assertEqual(self.update(action, res2), res2)
        self.assertEqual(self.get(action), res2)
        self.assertEqual(self.redis("HGET", self.ac_key(action), "outputs"), b"0")
        self.assertEqual(self.redis("HGET", self.ac_key(action), "stdout"), b"")

    def test_unknown_action_not_found(self):
        self.start()
        action = digest(b"never stored")
        e = self.error_of(self.get, action)
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn(action.hash, e.details())

    def test_empty_result_and_empty_blobs(self):
        # The empty digest counts as present without being uploaded.
        self.start()
        r = rpb()
        action = digest(b"action with empty outputs")
        res = r.ActionResult(
            output_files=[r.OutputFile(path="e", digest=r.Digest(hash=EMPTY_HASH))],
            output_directories=[r.OutputDirectory(path="d",
                                                  tree_digest=r.Digest(hash=EMPTY_HASH))],
            stdout_digest=r.Digest(hash=EMPTY_HASH, size_bytes=0))
        self.assertEqual(self.update(action, res), res)
        self.assertEqual(self.get(action, inline_stdout=True, inline_output_files=["e"]), res)

    def test_capabilities_advertise_updates(self):
        self.start({"instances": [{"name": ""}, {"name": "ro", "allow-updates": False}]})
        caps = h.get_capabilities(self.ch, "")
        self.assertTrue(caps.cache_capabilities.action_cache_update_capabilities.update_enabled)
        caps = h.get_capabilities(self.ch, "ro")
        self.assertFalse(caps.cache_capabilities.action_cache_update_capabilities.update_enabled)


# ---- completeness ------------------------------------------------------------


class TestCompleteness(ACTestCase):
    def test_update_with_missing_blobs(self):
        self.start()
        r = rpb()
        present = self.upload([b"present file"])[0]
        missing_file = digest(b"never uploaded file")
        missing_stdout = digest(b"never uploaded stdout")
        missing_tree_bytes = r.Tree(root=r.Directory(files=[
            r.FileNode(name="p", digest=present)])).SerializeToString()
        missing_tree = digest(missing_tree_bytes)
        # A present Tree whose files are missing: each file counts.
        tree_bytes, tree_files, _ = tree_of({"in-tree.txt": b"missing tree file"})
        self.upload([tree_bytes])
        action = digest(b"action with holes")
        res = r.ActionResult(
            output_files=[r.OutputFile(path="p", digest=present),
                          r.OutputFile(path="m", digest=missing_file),
                          r.OutputFile(path="m2", digest=missing_file)],  # listed once
            output_directories=[r.OutputDirectory(path="t1", tree_digest=missing_tree),
                                r.OutputDirectory(path="t2", tree_digest=digest(tree_bytes))],
            stdout_digest=missing_stdout)
        e = self.error_of(self.update, action, res)
        self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION, e.details())
        want = {subject(d) for d in [missing_file, missing_stdout, missing_tree] + tree_files}
        self.assertEqual(self.precondition_subjects(e), want)
        self.assertIn("%d blobs missing" % len(want), e.details())
        self.assertEqual(self.redis("EXISTS", self.ac_key(action)), 0)
        e = self.error_of(self.get, action)
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)

        # Upload what was missing and the same update succeeds.
        self.upload([b"never uploaded file", b"never uploaded stdout", missing_tree_bytes])
        e = self.error_of(self.update, action, res)
        self.assertEqual(self.precondition_subjects(e), {subject(d) for d in tree_files})
        _, _, child_data = tree_of({"in-tree.txt": b"missing tree file"})
        self.upload([b"missing tree file", child_data])
        self.assertEqual(self.update(action, res), res)
        self.assertEqual(self.get(action), res)

    def test_many_missing_blobs_fit_the_trailer(self):
        # The rich status must stay within grpcio's metadata limit.
        self.start()
        r = rpb()
        files = [r.OutputFile(path="f%d" % i, digest=digest(b"missing %d" % i))
                 for i in range(500)]
        e = self.error_of(self.update, digest(b"many"), r.ActionResult(output_files=files))
        self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION)
        subjects = self.precondition_subjects(e)
        self.assertGreater(len(subjects), 10)
        self.assertTrue(subjects <= {subject(f.digest) for f in files})
        self.assertIn("500 blobs missing", e.details())
        self.assert_serving(self.srv)

    def evict_setup(self):
        self.start({"instances": [{"name": "", "storage": "memory",
                                   "storage-max-size": "64KiB"}]})
        r = rpb()
        direct = b"D" * 8000
        in_tree = b"T" * 8000
        tree_bytes, _, child_data = tree_of({"big.bin": in_tree})
        self.upload([direct, in_tree, tree_bytes, child_data])
        a1 = digest(b"action direct")
        a2 = digest(b"action via tree")
        r1 = r.ActionResult(output_files=[r.OutputFile(path="d", digest=digest(direct))])
        r2 = r.ActionResult(output_directories=[
            r.OutputDirectory(path="t", tree_digest=digest(tree_bytes))])
        self.update(a1, r1)
        self.update(a2, r2)
        # Warm the check cache: a hit must not hide a later eviction.
        self.assertEqual(self.get(a1), r1)
        self.assertEqual(self.get(a2), r2)
        return (a1, digest(direct)), (a2, digest(in_tree)), [tree_bytes, child_data]

    def push_out(self, digests):
        """Upload 96 KB of newer blobs, one per call, so the least recently
        used ones (everything uploaded before) leave the 64 KiB store.  No
        lookups in between: FindMissingBlobs counts as a use."""
        for i in range(6):
            self.upload([bytes([i]) * 16000 + b"filler"])
        self.assertEqual(self.missing(digests), {subject(d) for d in digests},
                         "blobs were not evicted from the 64 KiB memory store")

    def test_evicted_blob_drops_entry(self):
        (a1, d1), (a2, d2), tree_blobs = self.evict_setup()
        self.assertEqual(self.redis("EXISTS", self.ac_key(a1)), 1)
        self.push_out([d1, d2] + [digest(b) for b in tree_blobs])
        # The Tree itself is back; only the file inside it is missing.
        self.upload(tree_blobs)
        for action, gone in ((a1, d1), (a2, d2)):
            with self.subTest(action=action.hash):
                e = self.error_of(self.get, action)
                self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
                self.assertIn(subject(gone), e.details())
                self.assertEqual(self.redis("EXISTS", self.ac_key(action)), 0,
                                 "stale entry still in Redis")
                e = self.error_of(self.get, action)
                self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
        self.assert_serving(self.srv)

    def test_corrupt_entry_is_dropped(self):
        self.start()
        action = digest(b"corrupt")
        key = self.ac_key(action)
        self.redis("HSET", key, "result", b"\xff\xff\xff not a protobuf")
        e = self.error_of(self.get, action)
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
        self.assertEqual(self.redis("EXISTS", key), 0)
        # A stored result with an invalid digest inside is dropped too.
        r = rpb()
        bad = r.ActionResult(output_files=[r.OutputFile(path="x", digest=r.Digest(
            hash="Z" * 64, size_bytes=1))])
        self.redis("HSET", key, "result", bad.SerializeToString())
        e = self.error_of(self.get, action)
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("output_files[0]", e.details())
        self.assertEqual(self.redis("EXISTS", key), 0)


# ---- inlining ---------------------------------------------------------------------


class TestInline(ACTestCase):
    def test_inline_stdout_stderr_files(self):
        self.start()
        action, res, blobs = self.full_result(b"inl")
        self.update(action, res)
        got = self.get(action, inline_stdout=True)
        self.assertEqual(got.stdout_raw, blobs["stdout"])
        self.assertEqual(got.stderr_raw, b"")
        self.assertEqual(got.stdout_digest, res.stdout_digest)
        got = self.get(action, inline_stderr=True, inline_output_files=["out/b", "nope"])
        self.assertEqual(got.stdout_raw, b"")
        self.assertEqual(got.stderr_raw, blobs["stderr"])
        self.assertEqual(got.output_files[0].contents, b"")
        self.assertEqual(got.output_files[1].contents, blobs["b"])
        # Apart from the inlined bytes, the result is the stored one.
        got.stderr_raw = b""
        got.output_files[1].contents = b""
        self.assertEqual(got, res)

    def test_large_blobs_not_inlined(self):
        self.start()
        r = rpb()
        big = b"o" * ((1 << 20) + 1)
        files = [bytes([65 + i]) * (1000 << 10) for i in range(5)]
        self.upload([big])
        for f in files:
            self.upload([f])
        action = digest(b"large outputs")
        res = r.ActionResult(
            stdout_digest=digest(big),
            output_files=[r.OutputFile(path="f%d" % i, digest=digest(f))
                          for i, f in enumerate(files)])
        self.update(action, res)
        got = self.get(action, inline_stdout=True,
                       inline_output_files=["f%d" % i for i in range(5)])
        self.assertEqual(got.stdout_raw, b"", "a blob over 1 MiB was inlined")
        inlined = [f.contents for f in got.output_files if f.contents]
        self.assertGreater(len(inlined), 0)
        self.assertLess(sum(map(len, inlined)), 4 << 20, "over the 4 MiB inline budget")
        for i, f in enumerate(got.output_files):
            if f.contents:
                self.assertEqual(f.contents, files[i])


# ---- errors -----------------------------------------------------------------------


class TestErrors(ACTestCase):
    def test_updates_disabled(self):
        self.start({"instances": [{"name": "", "allow-updates": False}]})
        r = rpb()
        e = self.error_of(self.update, digest(b"a"), r.ActionResult(exit_code=1))
        self.assertEqual(e.code(), grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("allow-updates", e.details())
        e = self.error_of(self.get, digest(b"a"))
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)

    def test_invalid_digests(self):
        self.start()
        r = rpb()
        good = self.upload([b"good blob"])[0]
        bad = {
            "65 chars": r.Digest(hash="a" * 65, size_bytes=1),
            "uppercase": r.Digest(hash=hashlib.sha256(b"x").hexdigest().upper(), size_bytes=1),
            "negative size": r.Digest(hash=hashlib.sha256(b"x").hexdigest(), size_bytes=-1),
            "empty hash": r.Digest(hash="", size_bytes=0),
        }
        for what, d in bad.items():
            with self.subTest(what=what, rpc="get"):
                e = self.error_of(self.get, d)
                self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn("action_digest", e.details())
            with self.subTest(what=what, rpc="update action"):
                e = self.error_of(self.update, d, r.ActionResult())
                self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn("action_digest", e.details())
            for field, res in (
                    ("output_files[1]", r.ActionResult(output_files=[
                        r.OutputFile(path="ok", digest=good), r.OutputFile(path="bad", digest=d)])),
                    ("output_directories[0]", r.ActionResult(output_directories=[
                        r.OutputDirectory(path="dir", tree_digest=d)])),
                    ("stdout_digest", r.ActionResult(stdout_digest=d)),
                    ("stderr_digest", r.ActionResult(stderr_digest=d))):
                with self.subTest(what=what, field=field):
                    e = self.error_of(self.update, digest(b"act"), res)
                    self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
                    self.assertIn(field, e.details())
        # A Tree with a bad file digest inside, and a blob that is no Tree.
        tree = r.Tree(root=r.Directory(files=[r.FileNode(name="f", digest=bad["uppercase"])]))
        tb = tree.SerializeToString()
        self.upload([tb, b"\xff\xff not a tree"])
        for blob in (tb, b"\xff\xff not a tree"):
            res = r.ActionResult(output_directories=[
                r.OutputDirectory(path="dir", tree_digest=digest(blob))])
            e = self.error_of(self.update, digest(b"act"), res)
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT, e.details())
            self.assertIn("output_directories[0]", e.details())
        # Missing pieces.
        e = self.error_of(self.update, digest(b"act"), None)
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("action_result", e.details())
        e = self.error_of(self.update, digest(b"act"), r.ActionResult(
            output_files=[r.OutputFile(path="no digest")]))
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("output_files[0]", e.details())
        e = self.error_of(self.get, None)
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        # Digest functions and instances.
        e = self.error_of(self.get, good, digest_function=r.DigestFunction.SHA1)
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("SHA1", e.details())
        e = self.error_of(self.update, good, r.ActionResult(),
                          digest_function=r.DigestFunction.BLAKE3)
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIsInstance(self.update(good, r.ActionResult(),
                                          digest_function=r.DigestFunction.SHA256),
                              r.ActionResult)
        for fn in (lambda: self.get(good, instance="nope"),
                   lambda: self.update(good, r.ActionResult(), instance="nope")):
            e = self.error_of(fn)
            self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("nope", e.details())
        # Garbage bytes as the request.
        e = self.error_of(h.unary(self.ch, GET, None, None), b"\xff\xff\xff", timeout=5)
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assert_serving(self.srv)
        self.assertEqual(self.get(good), r.ActionResult())

    def test_redis_down_is_unavailable(self):
        redis = self.start_redis()
        self.start({"redis": {"embedded": False, "address": redis.sock, "server": None}})
        action, res, _ = self.full_result(b"down")
        self.update(action, res)
        redis.kill()
        self.wait_health(self.srv, "NOT_SERVING")
        for fn in (lambda: self.get(action), lambda: self.update(action, res)):
            e = self.error_of(fn)
            self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertIn("Redis is unavailable", e.details())


# ---- bounded work: large Trees do not stall other clients -------------------------


class TestLargeTrees(ACTestCase):
    """An UpdateActionResult whose 300 output directories all name one
    1.6 MB Tree (and a GetActionResult of such an entry) must not hold the
    loop: the Tree is read and parsed once per request, in slices, while
    Health.Check on another connection keeps answering."""

    NFILES = 19000   # FileNodes in the Tree: about 1.6 MB serialized
    NDIRS = 300
    PROBE_MAX = 0.1  # seconds a concurrent Health.Check may wait

    def big_tree(self, extra=None):
        r = rpb()
        blobs = [b"shared file %d" % i for i in range(64)]
        files = [r.FileNode(name="f%05d" % i, digest=digest(blobs[i % len(blobs)]))
                 for i in range(self.NFILES)]
        if extra is not None:
            files.append(r.FileNode(name="zz-extra", digest=digest(extra)))
        tree = r.Tree(root=r.Directory(files=files)).SerializeToString()
        self.assertGreater(len(tree), 1500000)
        return tree, blobs

    def result_of(self, tree):
        r = rpb()
        return r.ActionResult(exit_code=0, output_directories=[
            r.OutputDirectory(path="out/d%03d" % i, tree_digest=digest(tree))
            for i in range(self.NDIRS)])

    def probe_during(self, fn):
        """Run fn() in a thread; meanwhile call Health.Check on a second
        connection back to back.  Returns (fn's result or exception,
        worst probe seconds, number of probes, fn's seconds)."""
        probe_ch = self.channel(self.srv.tcp_addr)
        h.health_check(probe_ch, timeout=10)  # connected and warm
        out = {}

        def run():
            t0 = time.monotonic()
            try:
                out["res"] = fn()
            except grpc.RpcError as e:
                out["res"] = e
            out["secs"] = time.monotonic() - t0
        th = threading.Thread(target=run)
        th.start()
        worst, n = 0.0, 0
        while th.is_alive() or n == 0:
            t0 = time.monotonic()
            h.health_check(probe_ch, timeout=30)
            worst = max(worst, time.monotonic() - t0)
            n += 1
        th.join()
        probe_ch.close()
        return out["res"], worst, n, out["secs"]

    def test_update_and_get_many_dirs_one_big_tree(self):
        self.start()
        tree, blobs = self.big_tree()
        self.upload(blobs)
        self.upload([tree])
        action = digest(b"300 dirs, one big tree")
        res = self.result_of(tree)
        self.assertGreater(len(res.SerializeToString()), 20000)
        got, worst, n, secs = self.probe_during(lambda: self.update(action, res))
        print("update: %.3f s; %d Health.Check probes, worst %.1f ms"
              % (secs, n, worst * 1000), file=sys.stderr)
        self.assertEqual(got, res)
        self.assertLess(worst, self.PROBE_MAX * h.SLOW,
                        "Health.Check waited %.0f ms during the update" % (worst * 1000))
        # A read with no remembered check walks the Tree again: write the
        # entry under another key by hand, as another reactord would.
        other = digest(b"same result, written by someone else")
        self.redis("HSET", self.ac_key(other), "result", res.SerializeToString())
        got, worst, n, secs = self.probe_during(lambda: self.get(other))
        print("get: %.3f s; %d Health.Check probes, worst %.1f ms"
              % (secs, n, worst * 1000), file=sys.stderr)
        self.assertEqual(got, res)
        self.assertLess(worst, self.PROBE_MAX * h.SLOW,
                        "Health.Check waited %.0f ms during the read" % (worst * 1000))

    def test_big_tree_missing_file_reported_once(self):
        self.start()
        gone = b"a file that was never uploaded"
        tree, blobs = self.big_tree(extra=gone)
        self.upload(blobs)
        self.upload([tree])
        action = digest(b"300 dirs, one big tree, one hole")
        e = self.error_of(self.update, action, self.result_of(tree))
        self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION, e.details())
        self.assertEqual(self.precondition_subjects(e), {subject(digest(gone))})
        self.assertIn("1 blob missing", e.details())
        self.assertEqual(self.redis("EXISTS", self.ac_key(action)), 0)
        self.assert_serving(self.srv)

    def test_tree_over_the_limit_is_refused(self):
        # The limit (64 MiB) is checked on the digest's size before any
        # read: a Tree digest over it is refused naming the limit.
        self.start()
        r = rpb()
        huge = r.Digest(hash=hashlib.sha256(b"huge").hexdigest(), size_bytes=(64 << 20) + 1)
        res = r.ActionResult(output_directories=[
            r.OutputDirectory(path="big", tree_digest=huge)])
        e = self.error_of(self.update, digest(b"huge tree"), res)
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT, e.details())
        self.assertIn("output_directories[0]", e.details())
        self.assertIn("67108864 bytes", e.details())


# ---- persistence and instances ----------------------------------------------------


class TestPersistence(ACTestCase):
    def test_restart_keeps_entries(self):
        self.start()
        action, res, blobs = self.full_result(b"persist")
        self.update(action, res)
        self.ch.close()
        self.assertEqual(self.srv.stop(), 0)
        self.start()  # same name: same config, state dir, disk CAS and AOF
        self.assertEqual(self.get(action), res)
        self.assertEqual(self.get(action, inline_stdout=True).stdout_raw, blobs["stdout"])

    def test_restart_with_memory_store_drops_entries(self):
        # Redis keeps the entry, the memory CAS does not keep its blobs:
        # the first read after the restart finds the hole and drops it.
        cfg = {"instances": [{"name": "", "storage": "memory"}]}
        self.start(cfg)
        action, res, blobs = self.full_result(b"mem")
        self.update(action, res)
        self.ch.close()
        self.assertEqual(self.srv.stop(), 0)
        self.start(cfg)
        self.assertEqual(self.redis("EXISTS", self.ac_key(action)), 1)
        e = self.error_of(self.get, action)
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("no longer in CAS", e.details())
        self.assertEqual(self.redis("EXISTS", self.ac_key(action)), 0)

    def test_instances_isolated(self):
        self.start({"instances": [{"name": ""}, {"name": "team/b", "storage": "memory"}]})
        action, res, _ = self.full_result(b"iso")
        self.update(action, res)
        e = self.error_of(self.get, action, instance="team/b")
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
        # The blobs are in "" only: the same result cannot go into team/b.
        e = self.error_of(self.update, action, res, instance="team/b")
        self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION)
        other = rpb().ActionResult(exit_code=7)
        self.update(action, other, instance="team/b")
        self.assertEqual(self.get(action, instance="team/b"), other)
        self.assertEqual(self.get(action), res)
        self.assertEqual(self.redis("EXISTS", self.ac_key(action, "team/b")), 1)


if __name__ == "__main__":
    h.main()
