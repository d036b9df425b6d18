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
- Execute through a reactord fetches the Action's Command and input root
  from their owners also when it owns the Action itself, and concurrent
  Executes sharing a fetched Command each find it;
- GetTree through any of the three, over a tree whose Directories are on
  all shards, answers exactly what a single-store reactord holding the
  same blobs answers, page for page (page tokens included, and a token of
  either resumes on the other); a down shard holding part of the tree is
  UNAVAILABLE naming it, and /metrics shows it down;
- the read-through cache (cache-size): a second read of a blob another
  shard owns, by BatchReadBlobs or ByteStream, does not reach the owner
  (its /metrics count), FindMissingBlobs always does;
- Bazel sends a build to A, whose instance has no workers; the workers
  are attached to B and C only: the build runs remotely, its outputs equal
  a local build's, and a clean rebuild through C is all cache hits;
- a shard (not A) SIGKILLed during such a build (16 genrules of half a
  second): while it is down CAS calls touching it through A and the
  survivor are UNAVAILABLE naming it and both keep serving; the build
  fails naming UNAVAILABLE or succeeds by Bazel's retries; after the
  restart (same state dir) a rebuild with a new output base equals the
  local build byte for byte, and every output reads back matching its
  digest and is present through each reactord.

Run by `make check`; by hand: /usr/bin/python3 t/integ/test_shard.py [NAME...]
"""

import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import testbot as tb  # noqa: E402

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

    def config(self, name, workers, cache_size=None):
        cfg = self.base_config(name)
        cfg["redis"] = {"embedded": False, "address": "unix:" + self.ext.sock,
                        "reconnect-max": "200ms", "connect-timeout": "1s"}
        cfg["log"] = {"level": "info", "access-log": False}
        cfg["instances"] = [{
            "name": "", "execution": True, "storage": "sharded", "shard-self": name,
            "shards": [{"name": n, "address": "unix:" + self.sock(n)} for n in NAMES],
        }]
        if cache_size:
            cfg["instances"][0]["cache-size"] = cache_size
        cfg["workers"] = {"local": workers}
        cfg["http"] = ["127.0.0.1:0"]
        return cfg

    def start_all(self, workers=(0, 0, 0), cache_size=None):
        for n, w in zip(NAMES, workers):
            self.srv[n] = self.start_reactord(cfg=self.config(n, w, cache_size), name=n)
        self.ch = {n: self.channel(self.srv[n].tcp_addr) for n in NAMES}

    def metric(self, name, pattern):
        """Sum of the samples of metric `name` whose labels match pattern."""
        with urllib.request.urlopen(self.srv[name].http_url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            m = re.match(r"(\w+)(\{[^}]*\})? (\S+)$", line)
            if m and re.search(pattern, m.group(1) + (m.group(2) or "")):
                total += float(m.group(3))
        return total

    def rpcs(self, name, method):
        return self.metric(name, r'^reactor_rpc_calls_total\{.*method="[^"]*/%s"' % method)

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

    def get_tree(self, ch, root, page_size=0, page_token=""):
        """Every GetTreeResponse of one call, serialized."""
        f = ch.unary_stream(CAS + "GetTree", request_serializer=lambda m: m.SerializeToString(),
                            response_deserializer=lambda b: b)
        return list(f(h.pb().re.GetTreeRequest(root_digest=root, page_size=page_size,
                                               page_token=page_token), timeout=TIMEOUT))

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


    def test_execute_reads_inputs_a_local_action_names(self):
        # An Execute through A of an Action A owns whose Command another
        # shard owns: A fetches the Command from its owner (it used to
        # fetch the inputs only of Actions it had fetched itself, and
        # answered "missing from CAS" for the Command Bazel had uploaded).
        self.start_all(workers=(0, 1, 0))
        for i in range(1000):
            args = ("/bin/sh", "-c", "echo local action %d" % i)
            d, blobs = tb.make_action(args)
            cmd = [x for x in blobs if x != d.hash and blobs[x]][0]
            if owner(d.hash) == "a" and owner(cmd) == "b":
                break
        else:
            self.fail("no Action owned by a with a Command owned by b")
        self.upload("a", list(blobs.values()))
        r = tb.op_response(tb.run_to_end(tb.execute(self.ch["a"], d))[-1])
        self.assertEqual(r.status.code, 0, r.status.message)
        self.assertEqual(r.result.exit_code, 0)
        out = r.result.stdout_raw or self.call(
            "a", "BatchReadBlobs", h.pb().re.BatchReadBlobsRequest(digests=[r.result.stdout_digest]),
            h.pb().re.BatchReadBlobsResponse).responses[0].data
        self.assertEqual(out, b"local action %d\n" % i)

    def test_concurrent_executes_share_a_fetched_command(self):
        # Many Executes through A at once, one Command (owned by b) and
        # each its own input root (owned by c): each Execute's copy of the
        # Command must outlive the others' cleanup (no bots: each is
        # answered QUEUED once its inputs are found).
        self.start_all()
        re_ = h.pb().re
        for i in range(1000):
            cmd = re_.Command(arguments=["/bin/sh", "-c", "exit 0 # %d" % i]).SerializeToString()
            if owner(digest(cmd).hash) == "b":
                break
        acts, blobs = [], [cmd]
        i = 0
        while len(acts) < 24:
            i += 1
            root = re_.Directory(symlinks=[re_.SymlinkNode(name="l%d" % i, target="t")])
            rb = root.SerializeToString()
            act = re_.Action(command_digest=digest(cmd), input_root_digest=digest(rb))
            ab = act.SerializeToString()
            if owner(digest(rb).hash) == "c" and owner(digest(ab).hash) == "c":
                blobs += [rb, ab]
                acts.append(digest(ab))
        self.upload("a", blobs)
        streams = [tb.execute(self.ch["a"], d) for d in acts]
        try:
            firsts = [tb.stage_name(tb.op_meta(next(st)).stage) for st in streams]
        finally:
            for st in streams:
                st.cancel()
        self.assertEqual(firsts, ["QUEUED"] * len(acts))

def make_tree(rnd, ndirs=80):
    """A random tree of Directory blobs: (root digest, {hash: bytes}, the
    serialized Directories in creation order).  Some subtrees are shared,
    and one child names a Directory that is never uploaded (omitted)."""
    re_ = h.pb().re
    blobs = {}
    made = []

    def add(d):
        b = d.SerializeToString()
        blobs[hashlib.sha256(b).hexdigest()] = b
        made.append(digest(b))
        return made[-1]
    for i in range(ndirs):
        d = re_.Directory(files=[re_.FileNode(name="f%d" % i, digest=digest(b"x%d" % i))])
        kids = rnd.sample(made, min(len(made), rnd.randint(0, 4))) if made else []
        for j, k in enumerate(sorted(kids, key=lambda x: x.hash)):
            d.directories.add(name="d%d_%d" % (i, j), digest=k)
        if i == ndirs // 2:
            d.directories.add(name="zz_missing", digest=digest(b"no such directory"))
        add(d)
    top = re_.Directory()
    for j, k in enumerate(made[-12:]):
        top.directories.add(name="t%02d" % j, digest=k)
    root = add(top)
    return root, blobs


class TestShardedGetTree(ShardCase):
    def setUp(self):
        super().setUp()
        self.root, self.blobs = make_tree(random.Random(41))
        owners = {owner(x) for x in self.blobs}
        self.assertEqual(owners, set(NAMES))
        self.start_all()
        self.upload("a", list(self.blobs.values()))
        solo = self.start_reactord(name="solo")
        self.solo = self.channel(solo.tcp_addr)
        req = h.pb().re.BatchUpdateBlobsRequest(requests=[
            h.pb().re.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b)
            for b in self.blobs.values()])
        h.unary(self.solo, CAS + "BatchUpdateBlobs", type(req),
                h.pb().re.BatchUpdateBlobsResponse)(req, timeout=TIMEOUT)

    def test_get_tree_equals_single_store(self):
        want = self.get_tree(self.solo, self.root)
        self.assertEqual(len(want), 1)
        dirs = h.pb().re.GetTreeResponse.FromString(want[0]).directories
        self.assertGreater(len(dirs), 40)
        for via in NAMES:  # the root's owner and two non-owners
            self.assertEqual(self.get_tree(self.ch[via], self.root), want, via)
        # Pages of 7: the same pages and tokens; a token resumes on either.
        pages = self.get_tree(self.solo, self.root, page_size=7)
        self.assertGreater(len(pages), 3)
        for via in ("b", "c"):
            self.assertEqual(self.get_tree(self.ch[via], self.root, page_size=7), pages, via)
        tok = h.pb().re.GetTreeResponse.FromString(pages[1]).next_page_token
        self.assertTrue(tok)
        # (A resumed walk may send again a subtree shared with what came
        # before the token: compare with the single store resuming.)
        resumed = self.get_tree(self.solo, self.root, 7, tok)
        self.assertEqual(resumed[-1], pages[-1])
        for via in NAMES:
            self.assertEqual(self.get_tree(self.ch[via], self.root, 7, tok), resumed, via)
        tok2 = h.pb().re.GetTreeResponse.FromString(
            self.get_tree(self.ch["c"], self.root, 7)[3]).next_page_token
        self.assertEqual(self.get_tree(self.solo, self.root, 7, tok2),
                         self.get_tree(self.ch["b"], self.root, 7, tok2))
        with self.assertRaises(h.grpc.RpcError) as cm:
            self.get_tree(self.ch["b"], self.root, 7, tok[:-1] + "9999")
        self.assertEqual(cm.exception.code(), h.grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(h.grpc.RpcError) as cm:
            self.get_tree(self.ch["c"], digest(b"no root"))
        self.assertEqual(cm.exception.code(), h.grpc.StatusCode.NOT_FOUND)

    def test_get_tree_shard_down_is_unavailable(self):
        own = owner(self.root.hash)
        down = [n for n in NAMES if n != own][0]
        via = [n for n in NAMES if n != down][0]
        self.assertEqual(self.metric(via, r'^reactor_cas_shard_up\{.*shard="%s"' % down), 1)
        self.srv[down].kill()
        self.srv[down].expected_rc = None
        with self.assertRaises(h.grpc.RpcError) as cm:
            self.get_tree(self.ch[via], self.root)
        self.assertEqual(cm.exception.code(), h.grpc.StatusCode.UNAVAILABLE)
        self.assertIn("CAS shard %s (unix:%s) unavailable" % (down, self.sock(down)),
                      cm.exception.details())
        self.assertEqual(self.metric(via, r'^reactor_cas_shard_up\{.*shard="%s"' % down), 0)
        self.assertGreater(
            self.metric(via, r'^reactor_cas_shard_errors_total\{.*shard="%s"' % down), 0)


class TestShardedCache(ShardCase):
    def test_cache_spares_the_owner_reads_not_presence(self):
        self.start_all(cache_size="8MiB")
        rnd = random.Random(3)
        blobs = [bytes(rnd.getrandbits(8) for _ in range(500)) + b"%d" % i for i in range(60)]
        on_b = [b for b in blobs if owner(digest(b).hash) == "b"][:6]
        self.assertGreaterEqual(len(on_b), 2)
        self.upload("b", on_b)
        ds = [digest(b) for b in on_b[:-1]]
        req = h.pb().re.BatchReadBlobsRequest(digests=ds)
        before = self.rpcs("b", "BatchReadBlobs")
        for _ in range(2):
            r = self.call("a", "BatchReadBlobs", req, h.pb().re.BatchReadBlobsResponse)
            self.assertEqual([x.data for x in r.responses], on_b[:-1])
        self.assertEqual(self.rpcs("b", "BatchReadBlobs"), before + 1)
        # ByteStream: the first read fills the cache, the second is a hit.
        last = digest(on_b[-1])
        before = self.rpcs("b", "Read")
        self.assertEqual(self.bs_read("a", last), on_b[-1])
        self.assertEqual(self.bs_read("a", last), on_b[-1])
        self.assertEqual(self.rpcs("b", "Read"), before + 1)
        # Presence is the owner's: FindMissingBlobs asks it every time.
        before = self.rpcs("b", "FindMissingBlobs")
        self.assertEqual(self.find_missing("a", ds), [])
        self.assertEqual(self.rpcs("b", "FindMissingBlobs"), before + 1)


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



# The kill test's package: genrules that each take a moment (the workload,
# so that the build is still running when a shard dies; the test itself
# never sleeps), with outputs of different sizes spread over the shards.
KILL_RULES = 16
KILL_BUILD = "".join(
    'genrule(name = "k%02d", outs = ["k%02d.txt"], '
    'cmd = "sleep 0.5; seq 1 %d | sed s/^/%02d:/ > $@")\n' % (i, i, 200 + i * 1500, i)
    for i in range(KILL_RULES))


class TestShardKilledMidBuild(ShardCase):
    """A shard killed mid-build: UNAVAILABLE naming it while it is down,
    the others keep serving, and no corruption once it is back."""

    def config(self, name, workers, cache_size=None):
        cfg = super().config(name, workers, cache_size)
        # A killed reactord's worker loses its lease: requeue it in seconds
        # (bot sessions expire 2 s after their last update), not minutes.
        cfg["scheduler"] = {"bot-session-keepalive": "2s", "safety-net-interval": "1s",
                            "sweep-interval": "100ms", "long-poll": "1s"}
        return cfg

    def bazel_ws(self, sub):
        tmp = os.path.join(self.tmp, sub)
        os.mkdir(tmp)
        ws, env, startup = h.bazel_setup(tmp)
        os.mkdir(os.path.join(ws, "kill"))
        with open(os.path.join(ws, "kill", "BUILD"), "w") as f:
            f.write(KILL_BUILD)
        return ws, env, startup

    def bazel_start(self, ws_env, *args):
        """Start Bazel in its own process group (killed with it on any
        failure); its output goes to a file: (Popen, output path)."""
        ws, env, startup = ws_env
        out = os.path.join(ws, "..", "bazel.out")
        with open(out, "wb") as f:
            p = subprocess.Popen(startup + list(args), cwd=ws, env=env, stdin=subprocess.DEVNULL,
                                 stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

        def reap():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.addCleanup(reap)
        return p, out

    def bazel_wait(self, p_out):
        p, out = p_out
        try:
            p.wait(200 * h.SLOW)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            self.fail("bazel hung; output:\n%s\nlogs:\n%s" % (self.read(out)[-4000:], self.logs()))
        return p.returncode, self.read(out)

    def bazel(self, ws_env, *args):
        rc, out = self.bazel_wait(self.bazel_start(ws_env, *args))
        self.assertEqual(rc, 0, "bazel %s failed:\n%s\nlogs:\n%s" % (
            " ".join(args), out[-4000:], self.logs()))
        return out

    @staticmethod
    def read(path):
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")

    def logs(self):
        return "\n".join("-- %s:\n%s" % (n, s.log_tail(25)) for n, s in self.srv.items())

    def outputs(self, ws, partial=False):
        got = {}
        for i in range(KILL_RULES):
            path = os.path.join(ws, "bazel-bin", "kill", "k%02d.txt" % i)
            if partial and not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                got[i] = f.read()
        return got

    @unittest.skipUnless(h.BAZEL, NO_BAZEL)
    def test_shard_killed_mid_build(self):
        common = ["--noshow_progress", "--color=no", "--curses=no", "--repository_cache=",
                  "--remote_timeout=60", "//kill:all"]
        # The local build: the reference outputs, and which shards own them.
        lws = self.bazel_ws("local")
        self.bazel(lws, "build", "--spawn_strategy=local", *common)
        want = self.outputs(lws[0])
        ds = {i: digest(b) for i, b in want.items()}
        per = {n: [d for d in ds.values() if owner(d.hash) == n] for n in NAMES}
        victim = max(("b", "c"), key=lambda n: len(per[n]))
        alive = [n for n in NAMES if n != victim]
        self.assertTrue(per[victim])

        self.start_all(workers=(0, 1, 1))
        rws = self.bazel_ws("remote")
        build = self.bazel_start(rws, "build", "--remote_executor=grpc://" + self.srv["a"].tcp_addr,
                                 *common)
        # Underway: some actions have finished through A, most have not.
        h.wait_for(lambda: build[0].poll() is not None or self.rpcs("a", "Execute") >= 3,
                   120, "3 Executes through a", 0.05)
        self.assertIsNone(build[0].poll(), "the build ended before the kill:\n"
                          + self.read(build[1])[-3000:])
        self.srv[victim].kill()
        self.srv[victim].expected_rc = None

        # While it is down, calls touching it are UNAVAILABLE naming it, the
        # others are answered, and A and the survivor keep serving.
        msg = "CAS shard %s (unix:%s) unavailable" % (victim, self.sock(victim))
        mine = [d for n in alive for d in per[n]]
        for via in alive:
            for method, req, cls in (
                    ("FindMissingBlobs", h.pb().re.FindMissingBlobsRequest(
                        blob_digests=list(ds.values())), h.pb().re.FindMissingBlobsResponse),
                    ("BatchReadBlobs", h.pb().re.BatchReadBlobsRequest(digests=per[victim][:2]),
                     h.pb().re.BatchReadBlobsResponse)):
                with self.assertRaises(h.grpc.RpcError) as cm:
                    self.call(via, method, req, cls)
                self.assertEqual(cm.exception.code(), h.grpc.StatusCode.UNAVAILABLE, via)
                self.assertIn(msg, cm.exception.details())
            with self.assertRaises(h.grpc.RpcError) as cm:
                self.bs_read(via, per[victim][0])
            self.assertEqual(cm.exception.code(), h.grpc.StatusCode.UNAVAILABLE, via)
            self.find_missing(via, mine)  # answered (what is missing varies)
            self.assertEqual(self.metric(via, r'^reactor_cas_shard_up\{.*shard="%s"' % victim), 0)
            self.assert_serving(self.srv[via], "with %s down" % victim)

        # The build ends: failed with the shard's UNAVAILABLE, or done by
        # Bazel's retries; either way no reactord died.
        rc, out = self.bazel_wait(build)
        err = re.search(r"^ERROR: .*$", out, re.M)
        print("\n  build with shard %s killed: rc %d %s" % (victim, rc, err.group(0)[:240] if err
                                                          else ""), flush=True)
        if rc != 0:
            # A remote error: UNAVAILABLE, or (Bazel 4 hides an upload's
            # cause) the upload of a blob the dead shard owns, which A
            # failed with UNAVAILABLE naming it.
            up = re.search(r"Error while uploading artifact with digest '([0-9a-f]{64})/", out)
            self.assertTrue("UNAVAILABLE" in out or (up and owner(up.group(1)) == victim),
                            "bazel failed without a remote error for %s:\n%s"
                            % (victim, out[-4000:]))
            self.assertIn("failed: UNAVAILABLE: " + msg, self.srv["a"].log())
            # What it did download is right.
            got = self.outputs(rws[0], partial=True)
            self.assertEqual(got, {i: want[i] for i in got})
        else:
            self.assertEqual(self.outputs(rws[0]), want)
        for n in alive:
            self.assert_serving(self.srv[n], "after the build with %s down" % victim)

        # Back, with the same state dir: the others reconnect.
        self.restart(victim, workers=1)

        def back():
            try:
                return all(self.find_missing(n, mine) is not None for n in alive)
            except h.grpc.RpcError:
                return False
        h.wait_for(back, 20, "shard %s back through %s" % (victim, alive))

        # A rebuild with a new output base through A: byte for byte local.
        shutil.rmtree(rws[0])
        out = self.bazel(self.bazel_ws("again"), "build",
                         "--remote_executor=grpc://" + self.srv["a"].tcp_addr, *common)
        print("  rebuild through a: %s" % h.bazel_summary(out), flush=True)
        self.assertEqual(self.outputs(os.path.join(self.tmp, "again", "ws")), want)
        # Every output reads back matching its digest through each, and
        # presence agrees everywhere.
        absent = [digest(b"never built %d" % i) for i in range(4)]
        order = [ds[i] for i in range(KILL_RULES)]
        for via in NAMES:
            r = self.call(via, "BatchReadBlobs", h.pb().re.BatchReadBlobsRequest(digests=order),
                          h.pb().re.BatchReadBlobsResponse)
            self.assertEqual([x.status.code for x in r.responses], [0] * KILL_RULES, via)
            self.assertEqual([x.data for x in r.responses], [want[i] for i in range(KILL_RULES)],
                             via)
            for x in r.responses:
                self.assertEqual(hashlib.sha256(x.data).hexdigest(), x.digest.hash)
            big = max(order, key=lambda d: d.size_bytes)
            self.assertEqual(hashlib.sha256(self.bs_read(via, big)).hexdigest(), big.hash, via)
            self.assertEqual(self.find_missing(via, order + absent), [d.hash for d in absent], via)
        for d in order:
            self.assertEqual([n for n in NAMES if self.store_has(n, d)], [owner(d.hash)], d.hash)

if __name__ == "__main__":
    h.main()
