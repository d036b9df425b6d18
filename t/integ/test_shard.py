#!/usr/bin/python3
"""test_shard.py - one CAS for many reactords (storage: sharded,
reactor.conf(5)): three reactords share one redis-server the test starts,
each with its own disk store as one shard of the same sharded CAS (every
config lists the three shards by unix socket and names itself).

- blobs uploaded through A are found and read through B and C byte for
  byte, FindMissingBlobs agrees through all three, and each blob is stored
  on disk only in its owner's store (the owner computed here with the
  same rendezvous hashing);
- a 64 MiB ByteStream Write and Read through reactords that do not own
  the blob;
- a shard killed gives UNAVAILABLE naming it to a CAS call touching it
  (never "missing"), and after its restart everything reads back;
- Bazel sends a build to A, whose instance has no workers; the workers
  are attached to B and C only: the build runs remotely, its outputs equal
  a local build's, and a clean rebuild through C is all cache hits.

Run by `make check`; by hand: /usr/bin/python3 t/integ/test_shard.py [NAME...]
"""

import hashlib
import os
import random
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402

CAS = "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
BS = "/google.bytestream.ByteStream/"
NAMES = ["a", "b", "c"]
TIMEOUT = 30 * h.SLOW
M64 = 1 << 64


def fnv1a(s):
    v = 0xcbf29ce484222325
    for ch in s.encode():
        v = ((v ^ ch) * 0x100000001b3) % M64
    return v


def mix(v):
    v ^= v >> 30
    v = (v * 0xbf58476d1ce4e5b9) % M64
    v ^= v >> 27
    v = (v * 0x94d049bb133111eb) % M64
    v ^= v >> 31
    return v


def owner(hexhash):
    """The shard rendezvous hashing gives the digest (cas_remote.c)."""
    k = int.from_bytes(bytes.fromhex(hexhash)[:8], "little")
    return max(NAMES, key=lambda n: mix(fnv1a(n) ^ k))


def digest(data):
    return h.pb().re.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


class ShardCase(h.ReactordTestCase):
    def setUp(self):
        super().setUp()
        self.ext = self.start_redis()
        self.srv = {}

    def sock(self, name):
        return os.path.join(self.tmp, name + ".sock")

    def config(self, name, workers):
        cfg = self.base_config(name)
        cfg["redis"] = {"embedded": False, "address": "unix:" + self.ext.sock,
                        "reconnect-max": "200ms", "connect-timeout": "1s"}
        cfg["log"] = {"level": "info", "access-log": False}
        cfg["instances"] = [{
            "name": "", "execution": True, "storage": "sharded", "shard-self": name,
            "shards": [{"name": n, "address": "unix:" + self.sock(n)} for n in NAMES],
        }]
        cfg["workers"] = {"local": workers}
        return cfg

    def start_all(self, workers=(0, 0, 0)):
        for n, w in zip(NAMES, workers):
            self.srv[n] = self.start_reactord(cfg=self.config(n, w), name=n)
        self.ch = {n: self.channel(self.srv[n].tcp_addr) for n in NAMES}

    def restart(self, name, workers=0):
        os.unlink(self.srv[name].ready_file)
        srv = self.start_reactord(cfg=self.config(name, workers), name=name)
        self.srv[name] = srv
        self.ch[name] = self.channel(srv.tcp_addr)

    def call(self, name, method, req, resp_cls):
        return h.unary(self.ch[name], CAS + method, type(req), resp_cls)(req, timeout=TIMEOUT)

    def store_has(self, name, d):
        """The blob is in this reactord's own disk store: as a file, or
        packed in a segment (small blobs; a record's header carries the
        raw SHA-256, and this test deletes nothing, so no tombstones)."""
        root = os.path.join(self.tmp, name + "-state", "cas", "default")
        path = os.path.join(root, "cas", d.hash[:2], "%s-%d" % (d.hash, d.size_bytes))
        if os.path.exists(path):
            return True
        raw = bytes.fromhex(d.hash)
        pack = os.path.join(root, "pack")
        for seg in os.listdir(pack) if os.path.isdir(pack) else ():
            with open(os.path.join(pack, seg), "rb") as f:
                if raw in f.read():
                    return True
        return False

    def upload(self, via, blobs):
        req = h.pb().re.BatchUpdateBlobsRequest(requests=[
            h.pb().re.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b) for b in blobs])
        r = self.call(via, "BatchUpdateBlobs", req, h.pb().re.BatchUpdateBlobsResponse)
        self.assertEqual([x.status.code for x in r.responses], [0] * len(blobs), r)

    def find_missing(self, via, digests):
        r = self.call(via, "FindMissingBlobs", h.pb().re.FindMissingBlobsRequest(blob_digests=digests),
                      h.pb().re.FindMissingBlobsResponse)
        return [d.hash for d in r.missing_blob_digests]

    def bs_write(self, via, data, chunk=1 << 20):
        d = digest(data)
        name = "uploads/%s/blobs/%s/%d" % ("0f" * 16, d.hash, d.size_bytes)

        def reqs():
            for off in range(0, len(data), chunk):
                yield h.pb().bytestream.WriteRequest(resource_name=name if off == 0 else "",
                                         write_offset=off, data=data[off:off + chunk],
                                         finish_write=off + chunk >= len(data))
        w = self.ch[via].stream_unary(BS + "Write", request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=h.pb().bytestream.WriteResponse.FromString)
        return w(reqs(), timeout=TIMEOUT * 4)

    def bs_read(self, via, d):
        r = self.ch[via].unary_stream(BS + "Read", request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=h.pb().bytestream.ReadResponse.FromString)
        out = bytearray()
        for m in r(h.pb().bytestream.ReadRequest(resource_name="blobs/%s/%d" % (d.hash, d.size_bytes)),
                   timeout=TIMEOUT * 4):
            out += m.data
        return bytes(out)


class TestShardedCas(ShardCase):
    def test_blobs_across_three_reactords(self):
        self.start_all()
        rnd = random.Random(14)
        blobs = [bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 3000)))
                 for _ in range(90)]
        ds = [digest(b) for b in blobs]
        self.upload("a", blobs)
        absent = [digest(b"not uploaded %d" % i) for i in range(12)]
        for via in NAMES:
            self.assertEqual(self.find_missing(via, ds + absent), [d.hash for d in absent],
                             "FindMissingBlobs through " + via)
        for via in ("b", "c"):
            r = self.call(via, "BatchReadBlobs", h.pb().re.BatchReadBlobsRequest(digests=ds + absent[:2]),
                          h.pb().re.BatchReadBlobsResponse)
            self.assertEqual([x.digest.hash for x in r.responses], [d.hash for d in ds + absent[:2]])
            self.assertEqual([x.data for x in r.responses[:len(ds)]], blobs)
            self.assertEqual([x.status.code for x in r.responses[len(ds):]], [5, 5])
        # Each blob lives only in its owner's store, and every shard owns some.
        per = {n: 0 for n in NAMES}
        for d in ds:
            where = [n for n in NAMES if self.store_has(n, d)]
            self.assertEqual(where, [owner(d.hash)], d.hash)
            per[where[0]] += 1
        self.assertTrue(all(per.values()), per)

    def test_large_bytestream_through_non_owners(self):
        self.start_all()
        data = os.urandom(1 << 20) * 64  # 64 MiB
        d = digest(data)
        own = owner(d.hash)
        others = [n for n in NAMES if n != own]
        resp = self.bs_write(others[0], data)
        self.assertEqual(resp.committed_size, len(data))
        self.assertEqual([n for n in NAMES if self.store_has(n, d)], [own])
        got = self.bs_read(others[1], d)
        self.assertEqual(len(got), len(data))
        self.assertEqual(hashlib.sha256(got).hexdigest(), d.hash)
        # A write of a blob the owner has ends at once with its size.
        self.assertEqual(self.bs_write(others[1], data).committed_size, len(data))

    def test_killed_shard_is_unavailable_then_back(self):
        self.start_all()
        rnd = random.Random(7)
        blobs = [bytes(rnd.getrandbits(8) for _ in range(200)) + b"%d" % i for i in range(40)]
        ds = [digest(b) for b in blobs]
        self.upload("a", blobs)
        on_b = [d for d in ds if owner(d.hash) == "b"]
        self.assertTrue(on_b)
        self.srv["b"].kill()
        for via in ("a", "c"):
            for method, req, cls in (
                    ("FindMissingBlobs", h.pb().re.FindMissingBlobsRequest(blob_digests=ds),
                     h.pb().re.FindMissingBlobsResponse),
                    ("BatchReadBlobs", h.pb().re.BatchReadBlobsRequest(digests=on_b[:3]),
                     h.pb().re.BatchReadBlobsResponse)):
                with self.assertRaises(h.grpc.RpcError) as cm:
                    self.call(via, method, req, cls)
                self.assertEqual(cm.exception.code(), h.grpc.StatusCode.UNAVAILABLE)
                self.assertIn("CAS shard b (unix:%s) unavailable" % self.sock("b"),
                              cm.exception.details())
        with self.assertRaises(h.grpc.RpcError) as cm:
            self.bs_read("a", on_b[0])
        self.assertEqual(cm.exception.code(), h.grpc.StatusCode.UNAVAILABLE)
        # Digests the live shards own still answer.
        not_b = [d for d in ds if owner(d.hash) != "b"]
        self.assertEqual(self.find_missing("c", not_b), [])
        self.srv["b"].expected_rc = None
        self.restart("b")

        def back():
            try:
                return self.find_missing("a", ds) == []
            except h.grpc.RpcError:
                return False
        h.wait_for(back, 20 * h.SLOW, "shard b back through a")
        for via in NAMES:
            r = self.call(via, "BatchReadBlobs", h.pb().re.BatchReadBlobsRequest(digests=ds),
                          h.pb().re.BatchReadBlobsResponse)
            self.assertEqual([x.data for x in r.responses], blobs, via)


NO_BAZEL = "SKIP: bazel not found in PATH (Debian: bazel-bootstrap) or set BAZEL"


class TestShardedBazel(ShardCase):
    @unittest.skipUnless(h.BAZEL, NO_BAZEL)
    def test_build_on_a_runs_on_b_and_c_rebuild_on_c_hits(self):
        self.start_all(workers=(0, 1, 1))
        outputs = ["hello.txt", "upper.txt", "big.bin"]

        def bazel(tmpname, ws_env, *args):
            ws, env, startup = ws_env
            r = subprocess.run(startup + list(args), cwd=ws, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=200 * h.SLOW)
            self.assertEqual(r.returncode, 0, "bazel %s failed:\n%s\nlogs:\n%s" % (
                " ".join(args), r.stdout[-4000:],
                "\n".join(self.srv[n].log_tail(20) for n in NAMES)))
            return r.stdout

        def hashes(ws):
            got = {}
            for name in outputs:
                with open(os.path.join(ws, "bazel-bin", name), "rb") as f:
                    got[name] = hashlib.sha256(f.read()).hexdigest()
            return got

        common = ["--noshow_progress", "--color=no", "--curses=no", "--repository_cache=",
                  "--remote_timeout=60"]
        # A local build: the reference outputs.
        local_tmp = os.path.join(self.tmp, "local")
        os.mkdir(local_tmp)
        lws = h.bazel_setup(local_tmp)
        bazel("local", lws, "build", *common, "--spawn_strategy=local", "//:all")
        want = hashes(lws[0])

        rtmp = os.path.join(self.tmp, "remote")
        os.mkdir(rtmp)
        rws = h.bazel_setup(rtmp)
        out = bazel("remote", rws, "build", *common,
                    "--remote_executor=grpc://" + self.srv["a"].tcp_addr, "//:all")
        s = h.bazel_summary(out)
        print("\n  bazel through a: %s" % s, flush=True)
        self.assertEqual(s.get("remote", 0), len(outputs), s)
        self.assertEqual(hashes(rws[0]), want)
        # A has no workers (workers.local 0): the actions ran on B's or C's.

        # A clean rebuild through C, with a new output base: all hits.
        shutil.rmtree(rws[0])
        ctmp = os.path.join(self.tmp, "clean")
        os.mkdir(ctmp)
        cws = h.bazel_setup(ctmp)
        out = bazel("clean", cws, "build", *common,
                    "--remote_executor=grpc://" + self.srv["c"].tcp_addr, "//:all")
        s = h.bazel_summary(out)
        print("  clean rebuild through c: %s" % s, flush=True)
        self.assertEqual(s.get("remote cache hit", 0), len(outputs), s)
        self.assertEqual(hashes(cws[0]), want)


if __name__ == "__main__":
    h.main()
