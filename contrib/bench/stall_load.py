"""stall_load.py - the heavy requests of contrib/bench/stall.sh, one kind at a
time, each with a Health.Check prober running beside it.

usage: stall_load.py ADDR GEN_PY TMPDIR [KIND...]

For each kind: set up its data (not measured), start the prober (a separate
process calling grpc.health.v1.Health/Check every 2 ms on its own
connection: $STALL_PROBE, see stall_probe.c, else stall_probe.py), run the load, stop the prober and print
one line "kind worst_ms p99_ms probes load_s".  The prober's figures are
the event-loop stalls a client of reactord sees while the load runs.
"""
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time

ADDR, GEN_PY, TMP = sys.argv[1], sys.argv[2], sys.argv[3]
KINDS = sys.argv[4:]
sys.path.insert(0, GEN_PY)
import grpc  # noqa: E402
from build.bazel.remote.execution.v2 import remote_execution_pb2 as re2  # noqa: E402
from google.bytestream import bytestream_pb2 as bs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# The C prober (contrib/bench/stall_probe, built by stall.sh); the Python one
# is the fallback, but its own run time on the loaded CPU shows up as stalls.
PROBE = os.environ.get("STALL_PROBE")
CAS = "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
MIB = 1 << 20
OPTS = [("grpc.max_send_message_length", 64 * MIB),
        ("grpc.max_receive_message_length", 64 * MIB)]
ch = grpc.insecure_channel(ADDR, options=OPTS)


def unary(method, req_cls, resp_cls):
    return ch.unary_unary(method, request_serializer=req_cls.SerializeToString,
                          response_deserializer=resp_cls.FromString)


def digest(b):
    return re2.Digest(hash=hashlib.sha256(b).hexdigest(), size_bytes=len(b))


batch_update = unary(CAS + "BatchUpdateBlobs", re2.BatchUpdateBlobsRequest,
                     re2.BatchUpdateBlobsResponse)
batch_read = unary(CAS + "BatchReadBlobs", re2.BatchReadBlobsRequest,
                   re2.BatchReadBlobsResponse)
find_missing = unary(CAS + "FindMissingBlobs", re2.FindMissingBlobsRequest,
                     re2.FindMissingBlobsResponse)
get_tree = ch.unary_stream(CAS + "GetTree",
                           request_serializer=re2.GetTreeRequest.SerializeToString,
                           response_deserializer=re2.GetTreeResponse.FromString)
bs_write = ch.stream_unary("/google.bytestream.ByteStream/Write",
                           request_serializer=bs.WriteRequest.SerializeToString,
                           response_deserializer=bs.WriteResponse.FromString)
execute = ch.unary_stream("/build.bazel.remote.execution.v2.Execution/Execute",
                          request_serializer=re2.ExecuteRequest.SerializeToString,
                          response_deserializer=lambda b: b)
update_ac = unary("/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult",
                  re2.UpdateActionResultRequest, re2.ActionResult)


def put_batches(blobs, limit=3 * MIB):
    """Upload (digest, bytes) pairs in batches under the batch limit."""
    batch, size = [], 0
    for d, b in blobs + [(None, None)]:
        if d is None or size + len(b) > limit:
            if batch:
                r = batch_update(re2.BatchUpdateBlobsRequest(requests=batch), timeout=120)
                bad = [x.status for x in r.responses if x.status.code]
                assert not bad, bad[:3]
            batch, size = [], 0
        if d is not None:
            batch.append(re2.BatchUpdateBlobsRequest.Request(digest=d, data=b))
            size += len(b)


def upload(data):
    d = digest(data)
    name = "uploads/%s/blobs/%s/%d" % (hashlib.md5(data[:64]).hexdigest(), d.hash, d.size_bytes)

    def reqs():
        for off in range(0, max(len(data), 1), MIB):
            yield bs.WriteRequest(resource_name=name if off == 0 else "", write_offset=off,
                                  data=data[off:off + MIB],
                                  finish_write=off + MIB >= len(data))
    r = bs_write(reqs(), timeout=300)
    assert r.committed_size == len(data), r
    return d


# ---- the prober ---------------------------------------------------------------

class Probe:
    def __enter__(self):
        ready = os.path.join(TMP, "probe.ready")
        if os.path.exists(ready):
            os.unlink(ready)
        cmd = ["taskset", "-c", "1"]
        if os.getuid() == 0:
            cmd += ["nice", "-n", "-10"]
        if PROBE:
            cmd += [PROBE, ADDR, ready]
        else:
            cmd += [sys.executable, os.path.join(HERE, "stall_probe.py"), ADDR, ready]
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not os.path.exists(ready):
            assert self.p.poll() is None and time.monotonic() < deadline, "prober failed"
            time.sleep(0.01)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.secs = time.monotonic() - self.t0
        self.p.send_signal(signal.SIGTERM)
        out, _ = self.p.communicate(timeout=30)
        self.result = out.split() or ["?", "?", "0"]
        return False


def measure(kind, load):
    with Probe() as p:
        load()
    print("%-40s %8s %8s %7s %7.2f" % (kind, p.result[0], p.result[1], p.result[2], p.secs),
          flush=True)


# ---- the kinds -----------------------------------------------------------------

def kind_gettree():
    """A tree of 1 + 100 + 20,000 directories; one GetTree call streaming it
    all in pages of 1,000, then one call per page resumed from each token
    (a client paging call by call)."""
    leaves = []
    mids = []
    blobs = []
    for i in range(100):
        kids = []
        for j in range(200):
            d = re2.Directory(files=[re2.FileNode(name="f%d_%d" % (i, j),
                                                  digest=digest(b"%d %d" % (i, j)))])
            raw = d.SerializeToString()
            blobs.append((digest(raw), raw))
            kids.append(re2.DirectoryNode(name="d%03d" % j, digest=blobs[-1][0]))
        raw = re2.Directory(directories=kids).SerializeToString()
        blobs.append((digest(raw), raw))
        mids.append(re2.DirectoryNode(name="m%03d" % i, digest=blobs[-1][0]))
    raw = re2.Directory(directories=mids).SerializeToString()
    root = digest(raw)
    blobs.append((root, raw))
    put_batches(blobs)
    want = len(blobs)

    def load():
        n, tokens = 0, []
        for r in get_tree(re2.GetTreeRequest(root_digest=root, page_size=1000), timeout=300):
            n += len(r.directories)
            if r.next_page_token:
                tokens.append(r.next_page_token)
        assert n == want, (n, want)
        for tok in tokens:
            call = get_tree(re2.GetTreeRequest(root_digest=root, page_size=1000,
                                               page_token=tok), timeout=300)
            first = next(call)
            assert first.directories
            call.cancel()
    measure("GetTree 20,101 dirs, pages of 1,000", load)


def kind_reads():
    """8 concurrent ByteStream Reads of one 256 MiB blob (h2load, as cas.sh)."""
    size = int(os.environ.get("READ_SIZE", 256 * MIB))
    data = (hashlib.sha256(b"stall").digest() * (size // 32 + 1))[:size]
    # Not all one pattern: vary every MiB so nothing dedups or compresses.
    data = b"".join(hashlib.sha256(b"%d" % i).digest() + data[i * MIB + 32:(i + 1) * MIB]
                    for i in range(size // MIB))
    d = upload(data)
    del data
    body = os.path.join(TMP, "read.bin")
    msg = bs.ReadRequest(resource_name="blobs/%s/%d" % (d.hash, d.size_bytes))
    s = msg.SerializeToString()
    with open(body, "wb") as f:
        f.write(b"\0" + len(s).to_bytes(4, "big") + s)
    cmd = ["taskset", "-c", "1", "h2load", "-n", "8", "-c", "8", "-m", "1", "-d", body,
           "-H", "content-type: application/grpc", "-H", "te: trailers",
           "http://%s/google.bytestream.ByteStream/Read" % ADDR]

    def load():
        out = subprocess.run(cmd, capture_output=True, text=True).stdout
        ok = [l for l in out.splitlines() if l.startswith("requests:")]
        assert ok and ok[0].split()[7] == "8", out
    measure("8 x ByteStream.Read %d MiB" % (size // MIB), load)


def kind_batch():
    """BatchUpdateBlobs of 1,000 x 4,000-byte new blobs per call (10 calls),
    then BatchReadBlobs of the same (10 calls)."""
    sets = []
    for k in range(10):
        rnd = os.urandom(4000 * 1000)
        sets.append([(digest(rnd[i * 4000:(i + 1) * 4000]), rnd[i * 4000:(i + 1) * 4000])
                     for i in range(1000)])
    reqs = [re2.BatchUpdateBlobsRequest(requests=[
        re2.BatchUpdateBlobsRequest.Request(digest=d, data=b) for d, b in s]) for s in sets]

    def load():
        for r in reqs:
            resp = batch_update(r, timeout=120)
            assert not [x for x in resp.responses if x.status.code]
    measure("BatchUpdateBlobs 10 x 1,000 x 4,000 B", load)
    rreqs = [re2.BatchReadBlobsRequest(digests=[d for d, _ in s]) for s in sets]

    def rload():
        for r in rreqs:
            resp = batch_read(r, timeout=120)
            assert not [x for x in resp.responses if x.status.code]
    measure("BatchReadBlobs 10 x 1,000 x 4,000 B", rload)


def kind_find():
    """FindMissingBlobs of 10,000 digests (all missing), 50 calls."""
    req = re2.FindMissingBlobsRequest(blob_digests=[
        re2.Digest(hash=hashlib.sha256(b"absent %d" % i).hexdigest(), size_bytes=1000 + i)
        for i in range(10000)])

    def load():
        for _ in range(50):
            assert len(find_missing(req, timeout=60).missing_blob_digests) == 10000
    measure("FindMissingBlobs 10,000 digests x 50", load)


def exec_once(action_d):
    """Execute; return the status code (OK when the operation streamed)."""
    call = execute(re2.ExecuteRequest(action_digest=action_d, skip_cache_lookup=True),
                   timeout=60)
    try:
        next(call)
        call.cancel()
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def kind_exec():
    """Execute of an Action whose Command has argument lists of 4 MiB (at the
    cap) and 12 MiB (over it), and an Action of 2 MiB (its salt); 20 each."""
    empty = digest(b"")
    out = []
    for label, cmd_mib, salt_mib in (("Command 4 MiB", 4, 0), ("Command 12 MiB", 12, 0),
                                     ("Action 2 MiB", 0, 2)):
        # 17 bytes per argument on the wire; just under cmd_mib MiB.
        n = (cmd_mib * MIB - 64 * 1024) // 17
        cmd = re2.Command(arguments=["arg%012d" % i for i in range(n)] if cmd_mib
                          else ["true"])
        craw = cmd.SerializeToString()
        cd = upload(craw)
        act = re2.Action(command_digest=cd, input_root_digest=empty, do_not_cache=True,
                         salt=os.urandom(salt_mib * MIB) if salt_mib else b"")
        ad = upload(act.SerializeToString())
        codes = []

        def load():
            for _ in range(20):
                codes.append(exec_once(ad))
        measure("Execute, %s (%.1f MiB)" % (label, max(len(craw), ad.size_bytes) / MIB), load)
        out.append((label, codes[0].name))
    print("  execute statuses: " + ", ".join("%s: %s" % x for x in out), flush=True)


def kind_ac():
    """UpdateActionResult with 300 output directories pointing at one Tree of
    10,000 child directories (about 1.6 MB), 3 calls."""
    kids = [re2.Directory(files=[re2.FileNode(name="file-%05d-%s" % (i, "x" * 100),
                                              digest=digest(b"f%d" % i))])
            for i in range(10000)]
    tree = re2.Tree(root=re2.Directory(), children=kids)
    put_batches([(digest(b"f%d" % i), b"f%d" % i) for i in range(10000)])
    td = upload(tree.SerializeToString())
    res = re2.ActionResult(output_directories=[
        re2.OutputDirectory(path="out/%d" % i, tree_digest=td) for i in range(300)])

    def load():
        for k in range(3):
            ad = digest(b"stall ac action %d %f" % (k, time.time()))
            update_ac(re2.UpdateActionResultRequest(action_digest=ad, action_result=res),
                      timeout=120)
    measure("UpdateActionResult 300 x Tree %.1f MB" % (td.size_bytes / 1e6), load)


ALL = {"gettree": kind_gettree, "reads": kind_reads, "batch": kind_batch,
       "find": kind_find, "exec": kind_exec, "ac": kind_ac}
print("%-40s %8s %8s %7s %7s" % ("kind", "worst_ms", "p99_ms", "probes", "load_s"), flush=True)
with Probe() as p:
    time.sleep(1)
print("%-40s %8s %8s %7s %7.2f" % ("idle (baseline)", p.result[0], p.result[1], p.result[2],
                                   p.secs), flush=True)
for k in KINDS or ALL:
    try:
        ALL[k]()
    except Exception as e:  # one broken kind must not hide the others
        print("%-40s failed: %r" % (k, e), flush=True)
