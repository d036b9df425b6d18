#!/usr/bin/python3
"""test_cas.py - end-to-end tests of the ContentAddressableStorage and
ByteStream services over both blob stores: FindMissingBlobs, BatchUpdateBlobs
and BatchReadBlobs with their per-blob statuses and the advertised batch
limit, GetTree paging within and across calls, ByteStream Read offsets and
limits, Write digest and offset checks, early return, compressed-blobs,
an interrupted Write resumed through QueryWriteStatus, concurrent writers,
the always-present empty blob, LRU eviction under storage-max-size, blobs
surviving a restart, corrupt input answered precisely while the server keeps
serving, and reactorctl upload/download/missing (our C client).

TestBig (a 2 GiB blob through ByteStream, reporting reactord's peak RSS) is
opt-in: it runs only with REACTOR_BIG_TESTS=1.

Each test starts its own reactord (and embedded redis-server) in a fresh
temp dir through harness.py and leaves no process behind.  Run by `make
check`; by hand: /usr/bin/python3 t/integ/test_cas.py [NAME-SUBSTRING...]
"""

import filecmp
import hashlib
import os
import random
import struct
import subprocess
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from harness import grpc, pb  # noqa: E402

RE = "/build.bazel.remote.execution.v2."
CAS = RE + "ContentAddressableStorage/"
BS = "/google.bytestream.ByteStream/"
EMPTY_HASH = hashlib.sha256(b"").hexdigest()
HASH0 = "0" * 64
SC = grpc.StatusCode if grpc else None
KIB, MIB = 1 << 10, 1 << 20


def rpb():
    return pb().re


def bspb():
    return pb().bytestream


def digest(data):
    return rpb().Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def dstr(d):
    return "%s/%d" % (d.hash, d.size_bytes)


def code_name(code):
    """grpc.StatusCode for a numeric google.rpc.Status code."""
    return next(c for c in grpc.StatusCode if c.value[0] == code)


def blob(tag, n):
    """n deterministic pseudo-random bytes, different for every tag."""
    return random.Random(tag).randbytes(n)


def read_name(d, instance=""):
    return "%sblobs/%s" % (instance + "/" if instance else "", dstr(d))


def write_name(d, instance="", u=None):
    return "%suploads/%s/blobs/%s" % (instance + "/" if instance else "", u or uuid.uuid4(),
                                       dstr(d))


def chunks_of(data, n):
    return [data[i:i + n] for i in range(0, len(data), n)] or [b""]


def ctl(*args, timeout=60, **kw):
    return subprocess.run([h.REACTORCTL, *args], capture_output=True,
                          timeout=timeout * h.SLOW, **kw)


def vm_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


class CASTestCase(h.ReactordTestCase):
    """A reactord plus typed wrappers for every CAS and ByteStream call."""

    TIMEOUT = 20

    def start(self, overrides=None, name="reactord"):
        self.srv = self.start_reactord(overrides, name=name)
        self.ch = self.channel(self.srv.tcp_addr)
        return self.srv

    def memory_instance(self, max_size=None):
        inst = {"name": "", "storage": "memory"}
        if max_size:
            inst["storage-max-size"] = max_size
        return {"instances": [inst]}

    # -- ContentAddressableStorage
    def _unary(self, method, req_cls, resp_cls, req, ch=None):
        return h.unary(ch or self.ch, CAS + method, req_cls, resp_cls)(
            req, timeout=self.TIMEOUT * h.SLOW)

    def find_missing(self, digests, instance="", **kw):
        r = rpb()
        resp = self._unary("FindMissingBlobs", r.FindMissingBlobsRequest,
                           r.FindMissingBlobsResponse,
                           r.FindMissingBlobsRequest(instance_name=instance,
                                                     blob_digests=digests, **kw))
        return [dstr(d) for d in resp.missing_blob_digests]

    def batch_update(self, pairs, instance=""):
        """pairs: [(Digest, data)] -> [(code, message)] in request order."""
        r = rpb()
        req = r.BatchUpdateBlobsRequest(instance_name=instance, requests=[
            r.BatchUpdateBlobsRequest.Request(digest=d, data=b) for d, b in pairs])
        resp = self._unary("BatchUpdateBlobs", r.BatchUpdateBlobsRequest,
                           r.BatchUpdateBlobsResponse, req)
        self.assertEqual([dstr(x.digest) for x in resp.responses], [dstr(d) for d, _ in pairs])
        return [(code_name(x.status.code), x.status.message) for x in resp.responses]

    def put(self, *blobs, instance=""):
        """Store blobs with BatchUpdateBlobs (asserting OK); their digests."""
        sts = self.batch_update([(digest(b), b) for b in blobs], instance)
        for (code, msg), b in zip(sts, blobs):
            self.assertEqual(code, SC.OK, "storing %s: %s" % (dstr(digest(b)), msg))
        return [digest(b) for b in blobs]

    def batch_read(self, digests, instance=""):
        """-> [(code, message, data)] in request order."""
        r = rpb()
        resp = self._unary("BatchReadBlobs", r.BatchReadBlobsRequest, r.BatchReadBlobsResponse,
                           r.BatchReadBlobsRequest(instance_name=instance, digests=digests))
        self.assertEqual([dstr(x.digest) for x in resp.responses], [dstr(d) for d in digests])
        return [(code_name(x.status.code), x.status.message, x.data) for x in resp.responses]

    def get_tree(self, root, page_size=0, page_token="", instance=""):
        """-> list of GetTreeResponse of one call."""
        r = rpb()
        call = h.server_stream(self.ch, CAS + "GetTree", r.GetTreeResponse)(
            r.GetTreeRequest(instance_name=instance, root_digest=root, page_size=page_size,
                             page_token=page_token), timeout=self.TIMEOUT * h.SLOW)
        return list(call)

    # -- ByteStream
    def read(self, name, offset=0, limit=0, ch=None):
        """-> (data, [chunk sizes])."""
        b = bspb()
        call = h.server_stream(ch or self.ch, BS + "Read", b.ReadResponse)(
            b.ReadRequest(resource_name=name, read_offset=offset, read_limit=limit),
            timeout=self.TIMEOUT * h.SLOW)
        parts = [m.data for m in call]
        return b"".join(parts), [len(p) for p in parts]

    def read_blob(self, d, instance=""):
        return self.read(read_name(d, instance))[0]

    def write_stub(self, ch=None):
        b = bspb()
        return (ch or self.ch).stream_unary(
            BS + "Write", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=b.WriteResponse.FromString)

    def write(self, reqs, ch=None):
        """Send WriteRequests; -> committed_size."""
        return self.write_stub(ch)(iter(reqs), timeout=self.TIMEOUT * h.SLOW).committed_size

    def write_reqs(self, name, data, chunk=64 * KIB, offset=0, finish=True):
        b = bspb()
        out, off = [], offset
        for i, c in enumerate(chunks_of(data, chunk)):
            out.append(b.WriteRequest(resource_name=name if i == 0 else "", write_offset=off,
                                      data=c))
            off += len(c)
        out[-1].finish_write = finish
        return out

    def upload(self, data, instance="", chunk=64 * KIB):
        d = digest(data)
        self.assertEqual(self.write(self.write_reqs(write_name(d, instance), data, chunk)),
                         len(data))
        return d

    def query(self, name, ch=None):
        b = bspb()
        r = h.unary(ch or self.ch, BS + "QueryWriteStatus", b.QueryWriteStatusRequest,
                    b.QueryWriteStatusResponse)(b.QueryWriteStatusRequest(resource_name=name),
                                                timeout=self.TIMEOUT * h.SLOW)
        return r.committed_size, r.complete

    # -- assertions
    def assert_rpc_error(self, code, fn, *a, contains=(), **kw):
        e = h.rpc_error(fn, *a, **kw)
        self.assertEqual(e.code(), code, e.details())
        for s in ([contains] if isinstance(contains, str) else contains):
            self.assertIn(s, e.details())
        return e

    def caps_limit(self):
        caps = h.get_capabilities(self.ch)
        return caps.cache_capabilities.max_batch_total_size_bytes


# ---- FindMissingBlobs ------------------------------------------------------------


class TestFindMissing(CASTestCase):
    def test_present_missing_and_empty(self):
        self.start()
        a, b = self.put(b"alpha", b"beta")
        gone = digest(b"never stored")
        empty = rpb().Digest(hash=EMPTY_HASH, size_bytes=0)
        got = self.find_missing([a, gone, b, empty, gone])
        # Missing ones come back, in order (duplicates are allowed to repeat).
        self.assertEqual(sorted(set(got)), [dstr(gone)])
        self.assertEqual(self.find_missing([]), [])
        # Same hash, other size: a different blob.
        self.assertEqual(self.find_missing([rpb().Digest(hash=a.hash, size_bytes=6)]),
                         ["%s/6" % a.hash])

    def test_digest_function(self):
        self.start()
        a, = self.put(b"x")
        DF = rpb().DigestFunction
        self.assertEqual(self.find_missing([a], digest_function=DF.SHA256), [])
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.find_missing, [a],
                              digest_function=DF.MD5, contains="MD5")

    def test_invalid_digests_name_the_culprit(self):
        self.start()
        good = digest(b"good")
        D = rpb().Digest
        cases = [
            (D(hash="a" * 65, size_bytes=1), "a" * 60),
            (D(hash="A" * 64, size_bytes=1), "A" * 60),
            (D(hash="g" * 64, size_bytes=1), "g" * 60),
            (D(hash="", size_bytes=0), '""'),
            (D(hash="b" * 64, size_bytes=-1), "-1"),
        ]
        for bad, needle in cases:
            with self.subTest(bad=dstr(bad)):
                e = self.assert_rpc_error(SC.INVALID_ARGUMENT, self.find_missing, [good, bad],
                                          contains=["blob_digests[1]", needle])
                self.assertNotIn("blob_digests[0]", e.details())
        self.assertEqual(self.find_missing([good]), [dstr(good)])

    def test_wire_forms(self):
        # FindMissingBlobs requests are decoded by hand: every wire form
        # protobuf accepts is accepted, and the answer is the same message.
        self.start()
        a, = self.put(b"wire")
        r = rpb()
        raw = lambda b: self.ch.unary_unary(CAS + "FindMissingBlobs")(
            b, timeout=self.TIMEOUT * h.SLOW)
        parse = lambda b: [dstr(d) for d in
                           r.FindMissingBlobsResponse.FromString(b).missing_blob_digests]
        absent = hashlib.sha256(b"absent").hexdigest()
        def dig(hash_, size, extra=b"", size_first=False):
            hf = b"\x0a\x40" + hash_.encode()
            sf = b"\x10" + bytes([size]) if size else b""
            m = (sf + hf if size_first else hf + sf) + extra
            return b"\x12" + bytes([len(m)]) + m
        # Size before hash, unknown fields inside and outside the digest,
        # instance_name twice (the last wins), a size-0 digest, digest_function.
        body = (b"\x0a\x04nope" + dig(a.hash, a.size_bytes, size_first=True) +
                dig(absent, 7, extra=b"\x78\x01") + b"\xa0\x01\x05" + dig(absent, 0) +
                b"\x0a\x00" + b"\x18\x01")
        self.assertEqual(parse(raw(body)), ["%s/7" % absent, "%s/0" % absent])
        # A hash that is no UTF-8 names the field; broken framing is no message.
        bad_utf8 = b"\x12\x44\x0a\x40" + b"\xff" * 64 + b"\x10\x01"
        self.assert_rpc_error(SC.INVALID_ARGUMENT, raw, bad_utf8,
                              contains="string field hash")
        for broken in (body[:-5], b"\x10\x05", b"\x12\x03\x0a\x05ab",
                       b"\x12\x02\x08\x01" + dig(absent, 1)):
            with self.subTest(broken=broken):
                self.assert_rpc_error(SC.INVALID_ARGUMENT, raw, broken,
                                      contains="not a valid")

    def test_many_digests_across_slices(self):
        # 10,000 digests are checked over several loop passes: the answer
        # keeps request order and an invalid digest late in the list still
        # fails the whole call, naming its index.
        self.start()
        present = self.put(*[b"present %d" % i for i in range(300)])
        want, digests = [], []
        for i in range(10000):
            if i % 33 == 0 and i // 33 < len(present):
                digests.append(present[i // 33])
            else:
                d = rpb().Digest(hash=hashlib.sha256(b"absent %d" % i).hexdigest(),
                                 size_bytes=i)
                digests.append(d)
                want.append(dstr(d))
        self.assertEqual(self.find_missing(digests), want)
        bad = digests[:9999] + [rpb().Digest(hash="x" * 64, size_bytes=1)]
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.find_missing, bad,
                              contains="blob_digests[9999]")
        self.assertEqual(self.find_missing(present[:3]), [])

    def test_unknown_instance(self):
        self.start({"instances": [{"name": ""}, {"name": "team/a"}]})
        a, = self.put(b"in team/a", instance="team/a")
        self.assertEqual(self.find_missing([a], instance="team/a"), [])
        self.assertEqual(self.find_missing([a]), [dstr(a)])  # instances are separate
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.find_missing, [a], instance="team",
                              contains='"team"')


# ---- BatchUpdateBlobs / BatchReadBlobs ---------------------------------------------


class TestBatch(CASTestCase):
    def test_update_per_blob_statuses(self):
        self.start()
        D = rpb().Digest
        ok1, ok2 = b"first blob", b"second blob"
        wrong = b"these bytes do not hash to the digest"
        pairs = [
            (digest(ok1), ok1),
            (D(hash=digest(b"other").hash, size_bytes=len(wrong)), wrong),  # mismatch
            (D(hash=digest(ok2).hash, size_bytes=len(ok2) + 1), ok2),       # size lies
            (D(hash="X" * 64, size_bytes=3), b"abc"),                        # bad digest
            (digest(ok2), ok2),
        ]
        sts = self.batch_update(pairs)
        codes = [c for c, _ in sts]
        self.assertEqual(codes, [SC.OK, SC.INVALID_ARGUMENT, SC.INVALID_ARGUMENT,
                                 SC.INVALID_ARGUMENT, SC.OK], sts)
        self.assertIn(digest(b"other").hash, sts[1][1])
        self.assertIn("X" * 60, sts[3][1])
        # Nothing was stored for the failures.
        self.assertEqual(sorted(self.find_missing([d for d, _ in pairs[:3]])),
                         sorted([dstr(pairs[1][0]), dstr(pairs[2][0])]))
        self.assertEqual(self.read_blob(digest(ok1)), ok1)

    def test_update_compressor_rejected_per_blob(self):
        self.start()
        r = rpb()
        data = b"zstd? no"
        req = r.BatchUpdateBlobsRequest(requests=[
            r.BatchUpdateBlobsRequest.Request(digest=digest(data), data=data,
                                              compressor=r.Compressor.ZSTD)])
        resp = self._unary("BatchUpdateBlobs", r.BatchUpdateBlobsRequest,
                           r.BatchUpdateBlobsResponse, req)
        self.assertEqual(code_name(resp.responses[0].status.code), SC.INVALID_ARGUMENT)
        self.assertEqual(self.find_missing([digest(data)]), [dstr(digest(data))])

    def test_capabilities_advertise_identity_only(self):
        self.start()
        cc = h.get_capabilities(self.ch).cache_capabilities
        ident = rpb().Compressor.IDENTITY
        self.assertTrue(set(cc.supported_compressors) <= {ident}, cc)
        self.assertTrue(set(cc.supported_batch_update_compressors) <= {ident}, cc)

    def test_batch_limit_from_capabilities(self):
        self.start()
        limit = self.caps_limit()
        self.assertGreater(limit, 64 * KIB)
        half = limit // 2
        a, b = blob("lim-a", half), blob("lim-b", limit - half)
        # Exactly the limit: accepted.
        self.assertEqual([c for c, _ in self.batch_update([(digest(a), a), (digest(b), b)])],
                         [SC.OK, SC.OK])
        # One byte over: the whole call is INVALID_ARGUMENT, nothing stored.
        c = blob("lim-c", limit - half + 1)
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.batch_update,
                              [(digest(blob("lim-d", half)), blob("lim-d", half)),
                               (digest(c), c)], contains="max_batch_total_size_bytes")
        self.assertEqual(self.find_missing([digest(c)]), [dstr(digest(c))])
        # Reads are held to the same limit (counted from the digests).  A
        # response of exactly the limit plus its envelope is over grpcio's
        # default 4 MiB receive limit: raise it for this read.
        big_rx = self.channel(self.srv.tcp_addr, ("grpc.max_receive_message_length", 2 * limit))
        r = rpb()
        resp = self._unary("BatchReadBlobs", r.BatchReadBlobsRequest, r.BatchReadBlobsResponse,
                           r.BatchReadBlobsRequest(digests=[digest(a), digest(b)]), ch=big_rx)
        sts = [(code_name(x.status.code), x.status.message, x.data) for x in resp.responses]
        self.assertEqual([(x[0], x[2]) for x in sts], [(SC.OK, a), (SC.OK, b)])
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.batch_read, [digest(a), digest(c)],
                              contains="max_batch_total_size_bytes")

    def test_read_limit_cannot_be_overflowed(self):
        # Four claimed sizes of 2^62 sum to 2^64: a signed 64-bit total
        # wraps to 0 (undefined behaviour; UBSan stops the server) and the
        # limit check passes.  The call must be INVALID_ARGUMENT.
        srv = self.start()
        D = rpb().Digest
        huge = [D(hash="%064x" % i, size_bytes=1 << 62) for i in range(4)]
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.batch_read, huge,
                              contains="max_batch_total_size_bytes")
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.batch_read,
                              huge[:1] + [D(hash="b" * 64, size_bytes=(1 << 63) - 1)])
        self.assert_serving(srv)

    def test_read_per_blob_statuses(self):
        self.start()
        a, b = self.put(b"read me", b"and me")
        gone = digest(b"not there")
        D = rpb().Digest
        sts = self.batch_read([a, gone, D(hash=EMPTY_HASH), b, D(hash="z", size_bytes=1),
                               D(hash=a.hash, size_bytes=-5)])
        self.assertEqual([x[0] for x in sts],
                         [SC.OK, SC.NOT_FOUND, SC.OK, SC.OK, SC.INVALID_ARGUMENT,
                          SC.INVALID_ARGUMENT], sts)
        self.assertEqual([sts[0][2], sts[1][2], sts[2][2], sts[3][2]],
                         [b"read me", b"", b"", b"and me"])
        self.assertIn(gone.hash, sts[1][1])
        self.assertIn("-5", sts[5][1])

    def test_many_blobs_across_slices(self):
        # 1,000 blobs per call are stored and read over several loop passes;
        # statuses and data stay in request order, and calls cancelled
        # mid-way leave the server serving.
        self.start()
        blobs = [b"slice %d " % i + os.urandom(i % 50) for i in range(1000)]
        pairs = [(digest(b), b) for b in blobs]
        pairs[500] = (digest(b"other"), b"wrong data")
        sts = self.batch_update(pairs)
        self.assertEqual([c for c, _ in sts],
                         [SC.OK] * 500 + [SC.INVALID_ARGUMENT] + [SC.OK] * 499)
        ds = [d for d, _ in pairs]
        got = self.batch_read(ds)
        self.assertEqual([c for c, _, _ in got], [SC.OK] * 500 + [SC.NOT_FOUND] + [SC.OK] * 499)
        self.assertEqual([x for _, _, x in got[:500]], blobs[:500])
        self.assertEqual([x for _, _, x in got[501:]], blobs[501:])
        r = rpb()
        read = h.unary(self.ch, CAS + "BatchReadBlobs", r.BatchReadBlobsRequest,
                       r.BatchReadBlobsResponse)
        find = h.unary(self.ch, CAS + "FindMissingBlobs", r.FindMissingBlobsRequest,
                       r.FindMissingBlobsResponse)
        futs = [read.future(r.BatchReadBlobsRequest(digests=ds)) for _ in range(4)]
        futs += [find.future(r.FindMissingBlobsRequest(blob_digests=ds * 10))
                 for _ in range(4)]
        for f in futs:
            f.cancel()
        self.assertEqual(self.find_missing(ds[:2]), [])
        self.assertEqual(self.batch_read(ds[:1])[0][2], blobs[0])

    def test_memory_store(self):
        self.start(self.memory_instance())
        data = blob("mem", 100 * KIB)
        d, = self.put(data)
        self.assertEqual(self.find_missing([d]), [])
        self.assertEqual(self.batch_read([d])[0][2], data)
        self.assertEqual(self.read_blob(d), data)


# ---- GetTree -------------------------------------------------------------------


def make_tree():
    """A 7-directory tree: root -> a, b; a -> a1, a2; b -> b1; a1 -> deep.
    Returns (root digest, {digest string: Directory}, [(digest, bytes)])."""
    r = rpb()

    def mk(name, children):
        dirs = [r.DirectoryNode(name=n, digest=d) for n, d in children]
        f = r.FileNode(name=name + ".txt", digest=digest(name.encode()))
        return r.Directory(files=[f], directories=dirs)

    made = {}
    blobs = []

    def add(name, children=()):
        d = mk(name, list(children))
        raw = d.SerializeToString()
        dg = digest(raw)
        made[dstr(dg)] = d
        blobs.append((dg, raw))
        return dg

    deep = add("deep")
    a1 = add("a1", [("deep", deep)])
    a2 = add("a2")
    b1 = add("b1")
    a = add("a", [("a1", a1), ("a2", a2)])
    b = add("b", [("b1", b1)])
    root = add("root", [("a", a), ("b", b)])
    return root, made, blobs


class TestGetTree(CASTestCase):
    def setUp(self):
        super().setUp()
        self.start()
        self.root, self.dirs, blobs = make_tree()
        self.assertEqual({c for c, _ in self.batch_update(blobs)}, {SC.OK})

    def test_whole_tree_in_one_response(self):
        resps = self.get_tree(self.root)
        got = [d for r in resps for d in r.directories]
        self.assertEqual(len(got), 7)
        self.assertEqual(got[0], self.dirs[dstr(self.root)])
        self.assertEqual(sorted(dstr(digest(d.SerializeToString())) for d in got),
                         sorted(self.dirs))
        self.assertEqual(resps[-1].next_page_token, "")

    def test_paging_within_and_across_calls(self):
        for n in (1, 2, 3, 7, 8):
            with self.subTest(page_size=n):
                self.check_paging(n)

    def check_paging(self, page_size):
        resps = self.get_tree(self.root, page_size=page_size)
        pages = [list(r.directories) for r in resps]
        self.assertTrue(all(1 <= len(p) <= page_size for p in pages), [len(p) for p in pages])
        self.assertEqual(len(pages), -(-7 // page_size))
        flat = [d for p in pages for d in p]
        self.assertEqual(sorted(dstr(digest(d.SerializeToString())) for d in flat),
                         sorted(self.dirs))
        tokens = [r.next_page_token for r in resps]
        self.assertEqual(tokens[-1], "")
        self.assertTrue(all(tokens[:-1]), tokens)
        # Each token, given to a new call, yields exactly the rest.
        done = 0
        for tok, page in zip(tokens[:-1], pages):
            done += len(page)
            rest = [d for r in self.get_tree(self.root, page_size=page_size, page_token=tok)
                    for d in r.directories]
            self.assertEqual(rest, flat[done:], "resuming at token %r" % tok)

    def test_missing_root_and_bad_token(self):
        self.assert_rpc_error(SC.NOT_FOUND, self.get_tree, digest(b"no such dir"),
                              contains=digest(b"no such dir").hash)
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.get_tree, self.root, 2, "not-a-token",
                              contains="page_token")
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.get_tree,
                              rpb().Digest(hash="Q" * 64, size_bytes=1), contains="root_digest")

    def test_missing_subtree_omitted_and_empty_root(self):
        r = rpb()
        ghost = digest(b"a subdirectory nobody uploaded")
        top = r.Directory(directories=[r.DirectoryNode(name="g", digest=ghost),
                                       r.DirectoryNode(name="a", digest=self.root)])
        raw = top.SerializeToString()
        self.put(raw)
        got = [d for x in self.get_tree(digest(raw)) for d in x.directories]
        self.assertEqual(len(got), 8)  # top + the 7 below root; the ghost is left out
        empty = self.get_tree(r.Digest(hash=EMPTY_HASH, size_bytes=0))
        self.assertEqual([d for x in empty for d in x.directories], [r.Directory()])

    def test_paging_many_pages_one_call_per_page(self):
        # 1 + 30 + 300 directories plus a subtree shared by every branch
        # (sent once within a call).  A client paging call by call, each
        # resumed from the last token, sees every directory, in the order
        # of the single call.
        r = rpb()
        shared = r.Directory(files=[r.FileNode(name="s", digest=digest(b"s"))])
        shared_b = shared.SerializeToString()
        blobs, mids = [(digest(shared_b), shared_b)], []
        for i in range(30):
            kids = []
            for j in range(10):
                leaf = r.Directory(files=[r.FileNode(name="f%d_%d" % (i, j),
                                                     digest=digest(b"%d" % j))])
                b = leaf.SerializeToString()
                blobs.append((digest(b), b))
                kids.append(r.DirectoryNode(name="l%d" % j, digest=digest(b)))
            kids.append(r.DirectoryNode(name="shared", digest=digest(shared_b)))
            b = r.Directory(directories=kids).SerializeToString()
            blobs.append((digest(b), b))
            mids.append(r.DirectoryNode(name="m%d" % i, digest=digest(b)))
        b = r.Directory(directories=mids).SerializeToString()
        root = digest(b)
        blobs.append((root, b))
        for k in range(0, len(blobs), 100):
            self.assertEqual({c for c, _ in self.batch_update(blobs[k:k + 100])}, {SC.OK})
        want = sorted(dstr(d) for d, _ in blobs)
        whole = [dstr(digest(x.SerializeToString()))
                 for p in self.get_tree(root, page_size=7) for x in p.directories]
        self.assertEqual(sorted(whole), want)
        got, tok, calls = [], "", 0
        while True:
            call = h.server_stream(self.ch, CAS + "GetTree", r.GetTreeResponse)(
                r.GetTreeRequest(root_digest=root, page_size=7, page_token=tok),
                timeout=self.TIMEOUT * h.SLOW)
            page = next(call)
            call.cancel()
            calls += 1
            got += [dstr(digest(x.SerializeToString())) for x in page.directories]
            tok = page.next_page_token
            if not tok:
                break
        # A resumed call does not know what went before its token, so only
        # the shared subtree may come again; everything else exactly once.
        sh = dstr(digest(shared_b))
        self.assertEqual([x for x in got if x != sh], [x for x in whole if x != sh])
        self.assertEqual(sorted(set(got)), want)
        self.assertLessEqual(got.count(sh), calls)
        self.assertEqual(calls, -(-len(got) // 7))
        # Forged tokens: another root, an index past the children, junk.
        t = self.get_tree(root, page_size=7)[0].next_page_token
        head, _, path = t.rpartition(":")
        other = digest(b"x")
        for bad in [head + ":" + path + ".99", head + ":999", "t1:%s:0" % other.hash[:16],
                    head + ":" + path + ".", head + ":-1", t + "x"]:
            with self.subTest(token=bad):
                self.assert_rpc_error(SC.INVALID_ARGUMENT, self.get_tree, root, 7, bad,
                                      contains="invalid page_token")

    def test_directory_size_cap(self):
        r = rpb()
        big = r.Directory(files=[r.FileNode(name="f" * (4 << 20), digest=digest(b""))])
        raw = big.SerializeToString()
        d = self.upload(raw)
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.get_tree, d,
                              contains="Directory blobs/%s/%d is %d bytes, over the 4 MiB "
                              "limit for a parsed Directory" % (d.hash, len(raw), len(raw)))
        top = r.Directory(directories=[r.DirectoryNode(name="big", digest=d)]).SerializeToString()
        self.put(top)
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.get_tree, digest(top),
                              contains="over the 4 MiB limit for a parsed Directory")

    def test_root_not_a_directory(self):
        junk, = self.put(b"\xff\xff\xff\xff")
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.get_tree, junk, contains="Directory")


# ---- ByteStream Read --------------------------------------------------------------


class TestRead(CASTestCase):
    def test_offsets_and_limits(self):
        self.start()
        data = blob("read", 3 * MIB + 12345)
        d = self.upload(data, chunk=MIB)
        name = read_name(d)
        whole, sizes = self.read(name)
        self.assertEqual(whole, data)
        self.assertGreater(len(sizes), 1, "a 3 MiB blob should come in several chunks")
        n = len(data)
        for off, lim in [(0, 1), (1, 0), (n - 1, 0), (n - 1, 5), (MIB + 7, 2 * MIB),
                         (12345, 1), (0, n), (0, n + 100), (n, 0), (n, 10)]:
            with self.subTest(offset=off, limit=lim):
                got, _ = self.read(name, off, lim)
                self.assertEqual(got, data[off:off + lim] if lim else data[off:])

    def test_errors(self):
        self.start()
        data = b"0123456789"
        d = self.upload(data)
        name = read_name(d)
        self.assert_rpc_error(SC.OUT_OF_RANGE, self.read, name, 11, contains="11")
        self.assert_rpc_error(SC.OUT_OF_RANGE, self.read, name, -1)
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.read, name, 0, -1, contains="-1")
        gone = digest(b"absent")
        self.assert_rpc_error(SC.NOT_FOUND, self.read, read_name(gone), contains=gone.hash)
        # Offset past the end of a blob that does not exist: the range is
        # checked against the name's size first, whatever the store holds.
        self.assert_rpc_error(SC.OUT_OF_RANGE, self.read, read_name(gone), 100)
        self.assertEqual(self.read(name, 3, 4)[0], b"3456")

    def test_concurrent_and_cancelled_reads(self):
        srv = self.start()
        data = blob("many readers", 6 * MIB + 1)
        d = self.upload(data, chunk=MIB)
        b = bspb()
        # Readers that stop after the first message, on one connection.
        for _ in range(5):
            call = h.server_stream(self.ch, BS + "Read", b.ReadResponse)(
                b.ReadRequest(resource_name=read_name(d)), timeout=self.TIMEOUT * h.SLOW)
            first = next(call).data
            self.assertTrue(data.startswith(first) and first, len(first))
            call.cancel()
        # Eight whole reads at once, each on its own connection.
        results = [None] * 8

        def reader(i):
            ch = h.channel(srv.tcp_addr)
            try:
                results[i] = self.read(read_name(d), ch=ch)[0] == data
            except Exception as e:  # reported below
                results[i] = e
            finally:
                ch.close()

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60 * h.SLOW)
        self.assertEqual(results, [True] * 8)
        self.assert_serving(srv)

    def test_resource_name_forms(self):
        self.start({"instances": [{"name": ""}, {"name": "team/a"}]})
        data = b"names"
        d = self.upload(data)
        dt = self.upload(data + b"!", instance="team/a")
        self.assertEqual(self.read("blobs/sha256/%s" % dstr(d))[0], data)
        self.assertEqual(self.read("team/a/blobs/%s" % dstr(dt))[0], data + b"!")
        self.assert_rpc_error(SC.NOT_FOUND, self.read, "team/a/blobs/%s" % dstr(d))
        self.assert_rpc_error(SC.UNIMPLEMENTED, self.read,
                              "compressed-blobs/zstd/%s" % dstr(d), contains="compressed")
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.read,
                              "blobs/md5/%s/5" % ("a" * 32), contains="md5")

    def test_empty_blob_always_present(self):
        for overrides in ({}, self.memory_instance()):
            with self.subTest(storage=overrides or "disk"):
                self.start(overrides, name="r%d" % len(self.servers))
                D = rpb().Digest
                e = D(hash=EMPTY_HASH, size_bytes=0)
                self.assertEqual(self.find_missing([e]), [])
                self.assertEqual(self.read("blobs/%s/0" % EMPTY_HASH), (b"", []))
                self.assertEqual(self.batch_read([e]), [(SC.OK, "", b"")])
                self.assertEqual(self.query(write_name(e)), (0, True))
                self.assertEqual(self.write(self.write_reqs(write_name(e), b"")), 0)
                self.assert_rpc_error(SC.OUT_OF_RANGE, self.read, "blobs/%s/0" % EMPTY_HASH, 1)


# ---- ByteStream Write -------------------------------------------------------------


class TestWrite(CASTestCase):
    def test_round_trip_chunk_sizes(self):
        self.start()
        for i, (size, chunk) in enumerate([(1, 1), (1000, 7), (MIB + 1, 64 * KIB),
                                           (3 * MIB, 3 * MIB)]):
            with self.subTest(size=size, chunk=chunk):
                data = blob("w%d" % i, size)
                d = self.upload(data, chunk=chunk)
                self.assertEqual(self.read_blob(d), data)
                self.assertEqual(self.query(write_name(d)), (size, True))

    def test_digest_mismatch_stores_nothing(self):
        self.start()
        data = blob("mismatch", 200 * KIB)
        claimed = rpb().Digest(hash=digest(b"something else").hash, size_bytes=len(data))
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.write,
                              self.write_reqs(write_name(claimed), data),
                              contains=[claimed.hash, digest(data).hash])
        self.assertEqual(self.find_missing([claimed, digest(data)]),
                         [dstr(claimed), dstr(digest(data))])
        # More data than the name declares.
        short = rpb().Digest(hash=digest(data[:100]).hash, size_bytes=100)
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.write,
                              self.write_reqs(write_name(short), data[:101]), contains="100")
        # Less data than declared, then finish_write.
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.write,
                              self.write_reqs(write_name(digest(data)), data[:-1]))
        self.assertEqual(self.find_missing([short, digest(data)]),
                         [dstr(short), dstr(digest(data))])

    def test_write_offset_checks(self):
        self.start()
        data = blob("offsets", 300 * KIB)
        d = digest(data)
        b = bspb()
        # A new upload must start at 0.
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.write,
                              [b.WriteRequest(resource_name=write_name(d), write_offset=5,
                                              data=data[5:], finish_write=True)],
                              contains="write_offset 5")
        # Within a stream, each offset must continue the last one.
        reqs = self.write_reqs(write_name(d), data, 100 * KIB)
        reqs[1].write_offset += 1
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.write, reqs, contains="write_offset")
        # Data after finish_write.
        reqs = self.write_reqs(write_name(d), data, 100 * KIB)
        reqs[0].finish_write = True
        self.assertEqual(self.find_missing([d]), [dstr(d)])
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.write, reqs)
        # The stream ends without finish_write: the error says where to resume.
        name = write_name(d)
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.write,
                              self.write_reqs(name, data[:1000], finish=False),
                              contains="1000")
        self.assertEqual(self.query(name), (1000, False))
        self.assertEqual(self.find_missing([d]), [dstr(d)])

    def test_early_return_when_blob_exists(self):
        self.start()
        data = blob("exists", 2 * MIB)
        d = self.upload(data)
        sent = []
        done = threading.Event()

        def reqs():
            # The first message only; then wait (bounded) for the answer.
            b = bspb()
            sent.append(1)
            yield b.WriteRequest(resource_name=write_name(d), data=data[:1000])
            done.wait(10 * h.SLOW)

        try:
            t0 = time.monotonic()
            resp = self.write_stub()(reqs(), timeout=self.TIMEOUT * h.SLOW)
            took = time.monotonic() - t0
        finally:
            done.set()
        self.assertEqual(resp.committed_size, len(data))
        self.assertEqual(len(sent), 1)
        self.assertLess(took, 5 * h.SLOW, "the answer came only after the client gave up")

    def test_compressed_blobs_unimplemented(self):
        self.start()
        data = b"compress me"
        d = digest(data)
        name = "uploads/%s/compressed-blobs/zstd/%s" % (uuid.uuid4(), dstr(d))
        self.assert_rpc_error(SC.UNIMPLEMENTED, self.write, self.write_reqs(name, data),
                              contains="compressed")
        self.assert_rpc_error(SC.UNIMPLEMENTED, self.query, name)
        self.assertEqual(self.find_missing([d]), [dstr(d)])

    def test_metadata_and_digest_function_segments(self):
        self.start()
        data = b"with metadata"
        d = digest(data)
        name = "uploads/%s/blobs/sha256/%s/some/metadata" % (uuid.uuid4(), dstr(d))
        self.assertEqual(self.write(self.write_reqs(name, data)), len(data))
        self.assertEqual(self.read_blob(d), data)

    def test_query_write_status(self):
        self.start()
        self.assert_rpc_error(SC.NOT_FOUND, self.query, write_name(digest(b"no upload")))
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.query, "blobs/%s/1" % HASH0)

    def test_interrupted_write_resumes(self):
        self.start()
        chunk = 256 * KIB
        data = blob("resume", 10 * chunk + 77)
        d = digest(data)
        name = write_name(d)
        reqs = self.write_reqs(name, data, chunk)
        k = 4
        stop = threading.Event()

        def first_part():
            for r in reqs[:k]:
                yield r
            stop.wait(30 * h.SLOW)  # hold the stream open until cancelled

        fut = self.write_stub().future(first_part(), timeout=self.TIMEOUT * h.SLOW)
        try:
            # The server holds the k chunks: QueryWriteStatus sees them
            # while the stream is still open.
            def committed():
                try:
                    return self.query(name) == (k * chunk, False)
                except grpc.RpcError as e:  # NOT_FOUND until the first chunk lands
                    if e.code() != SC.NOT_FOUND:
                        raise
                    return False
            h.wait_for(committed, 10, "QueryWriteStatus to report %d bytes" % (k * chunk))
            mark = self.srv.log_mark()
            fut.cancel()
        finally:
            stop.set()
        self.assertTrue(fut.cancelled())
        self.srv.wait_log(r"method=/google\.bytestream\.ByteStream/Write grpc-status=1 ",
                          since=mark)
        self.assertEqual(self.query(name), (k * chunk, False))
        self.assertEqual(self.find_missing([d]), [dstr(d)])
        # A new Write under the same name continues at the committed offset.
        b = bspb()
        rest = [b.WriteRequest(resource_name=name, write_offset=r.write_offset, data=r.data,
                               finish_write=r.finish_write) for r in reqs[k:]]
        self.assertEqual(self.write(rest), len(data))
        self.assertEqual(self.read_blob(d), data)
        self.assertEqual(self.query(name), (len(data), True))

    def test_resume_at_wrong_offset_then_restart_from_zero(self):
        self.start()
        data = blob("restart", 500 * KIB)
        d = digest(data)
        name = write_name(d)
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.write,
                              self.write_reqs(name, data[:100 * KIB], finish=False))
        self.assertEqual(self.query(name), (100 * KIB, False))
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.write,
                              self.write_reqs(name, data[50 * KIB:], offset=50 * KIB),
                              contains=str(100 * KIB))
        # Offset 0 starts the upload over.
        self.assertEqual(self.write(self.write_reqs(name, data)), len(data))
        self.assertEqual(self.read_blob(d), data)

    def test_concurrent_writers_of_one_blob(self):
        self.start()
        data = blob("concurrent", 4 * MIB + 3)
        d = digest(data)
        n = 8
        results = [None] * n
        barrier = threading.Barrier(n)

        def writer(i):
            ch = h.channel(self.srv.tcp_addr)
            try:
                barrier.wait(10 * h.SLOW)
                results[i] = self.write(self.write_reqs(write_name(d), data, 128 * KIB), ch=ch)
            except Exception as e:  # reported below
                results[i] = e
            finally:
                ch.close()

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60 * h.SLOW)
        self.assertEqual(results, [len(data)] * n)
        self.assertEqual(self.read_blob(d), data)
        self.assertEqual(self.find_missing([d]), [])


# ---- storage limits, restart ----------------------------------------------------------


class TestEviction(CASTestCase):
    def check_lru(self, overrides):
        srv = self.start(overrides)
        size = 300 * KIB
        a, b, c, e = (blob("evict-" + t, size) for t in "abce")
        da = self.upload(a)
        db, dc = self.put(b, c)
        # Touch a: now b is the least recently used.
        self.assertEqual(self.batch_read([da])[0][2], a)
        de = self.upload(e)  # 1200 KiB > 1 MiB: one blob must go
        self.assertEqual(self.find_missing([da, db, dc, de]), [dstr(db)])
        self.assertEqual(self.read_blob(da), a)
        self.assertEqual(self.read_blob(de), e)
        self.assert_rpc_error(SC.NOT_FOUND, self.read_blob, db)
        # Keep writing: the store stays under its budget, the newest stays.
        ds = [self.upload(blob("evict-more-%d" % i, size)) for i in range(6)]
        present = [x for x in ds + [da, dc, de] if dstr(x) not in
                   set(self.find_missing(ds + [da, dc, de]))]
        self.assertLessEqual(len(present) * size, MIB)
        self.assertIn(dstr(ds[-1]), [dstr(x) for x in present])
        self.assertEqual(self.read_blob(ds[-1]), blob("evict-more-5", size))
        self.assert_serving(srv)

    DISK_1MIB = {"instances": [{"name": "", "storage": "disk", "storage-max-size": "1MiB"}]}

    def test_disk_lru(self):
        self.check_lru(self.DISK_1MIB)

    def test_memory_lru(self):
        self.check_lru(self.memory_instance("1MiB"))

    def test_blob_bigger_than_store_is_resource_exhausted(self):
        # The issue: "RESOURCE_EXHAUSTED when full".  BatchUpdateBlobs says
        # so per blob; a ByteStream Write must say so too (not INTERNAL).
        for overrides in (self.DISK_1MIB, self.memory_instance("1MiB")):
            with self.subTest(storage=overrides["instances"][0]["storage"]):
                self.start(overrides, name="r%d" % len(self.servers))
                keep = self.upload(b"small and kept")
                big = blob("evict-big", MIB + 1)
                sts = self.batch_update([(digest(big), big)])
                self.assertEqual(sts[0][0], SC.RESOURCE_EXHAUSTED, sts)
                self.assert_rpc_error(SC.RESOURCE_EXHAUSTED, self.write,
                                      self.write_reqs(write_name(digest(big)), big))
                self.assertEqual(self.find_missing([digest(big), keep]), [dstr(digest(big))])


class TestRestart(CASTestCase):
    def test_disk_blobs_survive_restart(self):
        srv = self.start()
        small = [b"restart %d" % i for i in range(50)]
        ds = self.put(*small)
        big = blob("restart-big", 5 * MIB)
        dbig = self.upload(big, chunk=MIB)
        # An unfinished upload does not become a blob.
        partial = blob("restart-partial", 100 * KIB)
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.write,
                              self.write_reqs(write_name(digest(partial)), partial[:50 * KIB],
                                              finish=False))
        self.ch.close()
        self.assertEqual(srv.stop(), 0, srv.log_tail())
        srv2 = self.start_reactord(cfg=srv.cfg)
        self.ch = self.channel(srv2.tcp_addr)
        # Asked at once: the index may still be building in the background.
        self.assertEqual(self.find_missing(ds + [dbig, digest(partial)]),
                         [dstr(digest(partial))])
        self.assertEqual(self.read_blob(dbig), big)
        self.assertEqual([x[2] for x in self.batch_read(ds)], small)

    def blob_file(self, d):
        """Where the disk store keeps d (layout documented in src/domain/blob.h)."""
        path = os.path.join(self.srv.state_dir, "cas", "default", "cas", d.hash[:2],
                            "%s-%d" % (d.hash, d.size_bytes))
        self.assertTrue(os.path.isfile(path), path)
        return path

    def test_corrupt_files_are_detected_and_dropped(self):
        # Streamed reads are verified only with verify-reads (small
        # whole-blob reads always are).
        self.start({"instances": [{"name": "", "verify-reads": True}]})
        a, b, c = (blob("corrupt-" + t, 300 * KIB) for t in "abc")
        da, db, dc = self.put(a, b, c)
        with open(self.blob_file(da), "r+b") as f:  # flip a byte
            f.seek(1000)
            f.write(bytes([a[1000] ^ 1]))
        with open(self.blob_file(db), "r+b") as f:  # torn: same size, zeros at the end
            f.seek(len(b) - 4096)
            f.write(bytes(4096))
        os.truncate(self.blob_file(dc), 1000)      # short
        sts = self.batch_read([da])
        self.assertEqual(sts[0][0], SC.NOT_FOUND, sts)
        self.assert_rpc_error(SC.DATA_LOSS, self.read_blob, db)
        # A file of the wrong size is not that blob: missing, dropped.
        self.assert_rpc_error(SC.NOT_FOUND, self.read_blob, dc)
        # Each is now gone, and can be stored again.
        self.assertEqual(sorted(self.find_missing([da, db])), sorted([dstr(da), dstr(db)]))
        self.put(a, b)
        self.assertEqual([x[2] for x in self.batch_read([da, db])], [a, b])

    def test_unfinished_uploads_leave_nothing_after_restart(self):
        srv = self.start()
        data = blob("unfinished", 400 * KIB)
        name = write_name(digest(data))
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.write,
                              self.write_reqs(name, data[:200 * KIB], finish=False))
        self.assertEqual(self.query(name), (200 * KIB, False))
        self.ch.close()
        self.assertEqual(srv.stop(), 0)
        self.srv = self.start_reactord(cfg=srv.cfg)
        self.ch = self.channel(self.srv.tcp_addr)
        self.assert_rpc_error(SC.NOT_FOUND, self.query, name)
        self.assertEqual(os.listdir(os.path.join(srv.state_dir, "cas", "default", "tmp")), [])
        self.assertEqual(self.write(self.write_reqs(name, data)), len(data))

    def test_memory_store_starts_empty(self):
        # The counterpart: proves the restart test above can fail.
        srv = self.start(self.memory_instance())
        d, = self.put(b"volatile")
        self.ch.close()
        self.assertEqual(srv.stop(), 0)
        srv2 = self.start_reactord(cfg=srv.cfg)
        self.ch = self.channel(srv2.tcp_addr)
        self.assertEqual(self.find_missing([d]), [dstr(d)])


# ---- corrupt input ----------------------------------------------------------------


class TestCorruptInput(CASTestCase):
    def test_bad_inputs_answered_precisely(self):
        srv = self.start()
        good = b"still serving"
        dg = self.upload(good)
        D = rpb().Digest
        h65, hup = "a" * 65, "A" * 64

        def still_ok():
            self.assertEqual(self.read_blob(dg), good)

        # Digests in every CAS method.
        for bad, needle in [(D(hash=h65, size_bytes=1), h65[:60]),
                            (D(hash=hup, size_bytes=1), hup[:60]),
                            (D(hash=HASH0, size_bytes=-1), "-1")]:
            with self.subTest(digest=dstr(bad)):
                self.assert_rpc_error(SC.INVALID_ARGUMENT, self.find_missing, [bad],
                                      contains=needle)
                self.assertEqual(self.batch_update([(bad, b"x")])[0][0], SC.INVALID_ARGUMENT)
                self.assertEqual(self.batch_read([bad])[0][0], SC.INVALID_ARGUMENT)
                self.assert_rpc_error(SC.INVALID_ARGUMENT, self.get_tree, bad,
                                      contains="root_digest")
                still_ok()

        # Read resource names.
        hx = dg.hash
        for name, code, needle in [
            ("", SC.INVALID_ARGUMENT, "not a read name"),
            ("blobs", SC.INVALID_ARGUMENT, "{hash}/{size}"),
            ("blobs/%s" % hx, SC.INVALID_ARGUMENT, "{hash}/{size}"),
            ("blobs/%s/-1" % hx, SC.INVALID_ARGUMENT, '"-1"'),
            ("blobs/%s/1x" % hx, SC.INVALID_ARGUMENT, '"1x"'),
            ("blobs/%s/99999999999999999999" % hx, SC.INVALID_ARGUMENT, "99999999999999999999"),
            ("blobs/%s/5" % h65, SC.INVALID_ARGUMENT, h65[:60]),
            ("blobs/%s/5" % hup, SC.INVALID_ARGUMENT, hup[:60]),
            ("blobs/%s/13/extra" % hx, SC.INVALID_ARGUMENT, '"extra"'),
            ("/blobs/%s/13" % hx, SC.INVALID_ARGUMENT, "empty instance"),
            ("nope/blobs/%s/13" % hx, SC.INVALID_ARGUMENT, '"nope"'),
            ("uploads/%s/blobs/%s/13" % (uuid.uuid4(), hx), SC.INVALID_ARGUMENT, "instance"),
            ("compressed-blobs/zstd/%s/13" % hx, SC.UNIMPLEMENTED, "zstd"),
            ("compressed-blobs//%s/13" % hx, SC.INVALID_ARGUMENT, "compressor"),
            ("blobs/sha1/%s/13" % hx, SC.INVALID_ARGUMENT, "sha1"),
        ]:
            with self.subTest(read=name):
                self.assert_rpc_error(code, self.read, name, contains=needle)
                still_ok()

        # Write resource names.
        for name, code, needle in [
            ("blobs/%s/13" % hx, SC.INVALID_ARGUMENT, "upload name"),
            ("uploads//blobs/%s/13" % hx, SC.INVALID_ARGUMENT, "uuid"),
            ("uploads/u1/%s/13" % hx, SC.INVALID_ARGUMENT, "after the upload uuid"),
            ("uploads/u1/blobs/%s/-13" % hx, SC.INVALID_ARGUMENT, "-13"),
            ("uploads/u1/blobs/%s/13" % h65, SC.INVALID_ARGUMENT, h65[:60]),
            ("uploads/u1/compressed-blobs/zstd/%s/13" % hx, SC.UNIMPLEMENTED, "zstd"),
        ]:
            with self.subTest(write=name):
                self.assert_rpc_error(code, self.write, self.write_reqs(name, good),
                                      contains=needle)
                still_ok()
        # A Write with no message at all.
        self.assert_rpc_error(SC.INVALID_ARGUMENT, self.write, [])

        # Bytes that are no protobuf message.
        raw = h.unary(self.ch, CAS + "FindMissingBlobs", None, None)
        self.assert_rpc_error(SC.INVALID_ARGUMENT, raw, b"\x0a\xff\xff\xff\xff\xff",
                              timeout=10 * h.SLOW, contains="not a valid")
        still_ok()
        self.assert_serving(srv)


# ---- reactorctl ------------------------------------------------------------------


class TestReactorctl(CASTestCase):
    def test_upload_download_round_trip(self):
        srv = self.start()
        for n, target in ((20 * MIB, srv.tcp_addr), (72 * MIB + 5, srv.unix_addr)):
            with self.subTest(size=n):
                path = os.path.join(self.tmp, "in-%d" % n)
                hs = hashlib.sha256()
                rng = random.Random(n)
                with open(path, "wb") as f:
                    left = n
                    while left:
                        b = rng.randbytes(min(left, MIB))
                        hs.update(b)
                        f.write(b)
                        left -= len(b)
                want = "%s/%d" % (hs.hexdigest(), n)
                r = ctl("-s", target, "upload", path)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.decode().strip(), want)
                out = os.path.join(self.tmp, "out-%d" % n)
                r = ctl("-s", target, "download", want, out)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertTrue(filecmp.cmp(path, out, shallow=False), "download differs")
                # Again: the blob exists, the server answers at once.
                r = ctl("-s", target, "upload", path)
                self.assertEqual((r.returncode, r.stdout.decode().strip()), (0, want), r.stderr)
                os.unlink(out)
                os.unlink(path)

    def test_missing_and_errors(self):
        srv = self.start()
        a = srv.tcp_addr
        da, = self.put(b"ctl present")
        gone = dstr(digest(b"ctl absent"))
        r = ctl("-s", a, "missing", dstr(da), gone, "%s/0" % EMPTY_HASH)
        self.assertEqual((r.returncode, r.stdout.decode()), (0, gone + "\n"), r.stderr)
        r = ctl("-s", a, "missing", input=("%s\n%s\n" % (dstr(da), gone)).encode())
        self.assertEqual((r.returncode, r.stdout.decode()), (0, gone + "\n"), r.stderr)
        r = ctl("-s", a, "missing", "%s/1" % ("a" * 65))
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"INVALID_ARGUMENT", r.stderr)
        r = ctl("-s", a, "missing", "nohash")
        self.assertEqual(r.returncode, 2)
        # Download: to stdout; NOT_FOUND leaves no file behind.
        r = ctl("-s", a, "download", dstr(da))
        self.assertEqual((r.returncode, r.stdout), (0, b"ctl present"), r.stderr)
        out = os.path.join(self.tmp, "never")
        r = ctl("-s", a, "download", gone, out)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"NOT_FOUND", r.stderr)
        self.assertFalse(os.path.exists(out))
        # Upload under a digest the data does not match.
        path = os.path.join(self.tmp, "f")
        with open(path, "wb") as f:
            f.write(b"some data")
        r = ctl("-s", a, "upload", path, "%s/9" % HASH0)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"INVALID_ARGUMENT", r.stderr)
        self.assertEqual(self.find_missing([rpb().Digest(hash=HASH0, size_bytes=9)]),
                         ["%s/9" % HASH0])
        r = ctl("-s", a, "upload", os.path.join(self.tmp, "no-such-file"))
        self.assertEqual(r.returncode, 1)  # a missing file is not bad usage (issue 13)


# ---- 2 GiB (opt-in) ---------------------------------------------------------------


class TestBig(CASTestCase):
    SIZE = 2 << 30
    BLOCK = MIB

    def blocks(self, pool):
        """The blob as SIZE/BLOCK blocks, generated on the fly: a pool block
        chosen pseudo-randomly, stamped with its index (so no two blocks
        are equal)."""
        rng = random.Random(2)
        for i in range(self.SIZE // self.BLOCK):
            yield struct.pack("<Q", i) + pool[rng.randrange(len(pool))][8:]

    @unittest.skipUnless(os.environ.get("REACTOR_BIG_TESTS") == "1",
                         "2 GiB ByteStream round trip: set REACTOR_BIG_TESTS=1 to run it")
    def test_2gib_round_trip_bounded_memory(self):
        srv = self.start()
        ch = self.channel(srv.tcp_addr, ("grpc.max_receive_message_length", 64 * MIB))
        rnd = random.Random(1)
        pool = [rnd.randbytes(self.BLOCK) for _ in range(16)]
        hs = hashlib.sha256()
        for b in self.blocks(pool):
            hs.update(b)
        d = rpb().Digest(hash=hs.hexdigest(), size_bytes=self.SIZE)
        name = write_name(d)
        # WriteRequests framed by hand (no 1 MiB message copies in protobuf).
        head = b"\x0a" + _varint(len(name)) + name.encode()
        tail_tag = b"\x52" + _varint(self.BLOCK)

        def reqs():
            off = 0
            for i, b in enumerate(self.blocks(pool)):
                fields = head if i == 0 else b""
                if off:
                    fields += b"\x10" + _varint(off)
                if off + len(b) == self.SIZE:
                    fields += b"\x18\x01"
                yield fields + tail_tag + b
                off += len(b)

        t0 = time.monotonic()
        write = ch.stream_unary(BS + "Write", request_serializer=lambda m: m,
                                response_deserializer=bspb().WriteResponse.FromString)
        self.assertEqual(write(reqs(), timeout=600 * h.SLOW).committed_size, self.SIZE)
        t_up = time.monotonic() - t0
        hwm_up = vm_kib(srv.pid, "VmHWM")
        t0 = time.monotonic()
        got = hashlib.sha256()
        n = 0
        call = h.server_stream(ch, BS + "Read", bspb().ReadResponse)(
            bspb().ReadRequest(resource_name=read_name(d)), timeout=600 * h.SLOW)
        for m in call:
            got.update(m.data)
            n += len(m.data)
        t_down = time.monotonic() - t0
        self.assertEqual((n, got.hexdigest()), (self.SIZE, d.hash))
        hwm = vm_kib(srv.pid, "VmHWM")
        print("\n  2 GiB: upload %.1fs (%.0f MB/s), download %.1fs (%.0f MB/s); reactord "
              "VmHWM %d MiB after upload, %d MiB after download"
              % (t_up, self.SIZE / t_up / 1e6, t_down, self.SIZE / t_down / 1e6,
                 hwm_up // 1024, hwm // 1024), flush=True)
        self.assertLess(hwm, 256 * 1024, "reactord's peak RSS grew with the blob")


def _varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


if __name__ == "__main__":
    h.main()
