#!/usr/bin/env python3
"""test_streams_limits.py - reactord bounds what slow or absent clients can
make it hold (issue 11, part 3):

  - partial ByteStream uploads: a cap per connection and in total (status
    RESOURCE_EXHAUSTED naming the config key), no descriptor held by an
    upload whose stream ended, temp files gone after
    uploads.abandon-timeout, and temp bytes counted against
    storage-max-size;
  - server streams whose client stops reading (a raw HTTP/2 client that
    never reads, so never opens its flow-control window): Execute streams
    keep only the newest Operation, WatchBuilds streams end with
    RESOURCE_EXHAUSTED once buckets.watch-max-queued states wait; reactord's
    VmRSS stays bounded and other clients are served meanwhile;
  - WatchBuilds over buckets.watch-max-ids build ids is refused.
"""

import hashlib
import json
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import testbot as tb  # noqa: E402
from harness import grpc, pb  # noqa: E402
from reactor.buckets.v1 import buckets_pb2 as bpb  # noqa: E402

RESOURCE_EXHAUSTED = 8
WRITE = "/google.bytestream.ByteStream/Write"
EXECUTE = "/build.bazel.remote.execution.v2.Execution/Execute"
BK = "/reactor.buckets.v1.Buckets/"
MIB = 1 << 20
# VmRSS growth allowed under attack.  An AddressSanitizer build holds freed
# memory in its quarantine (256 MiB), so there RSS tracks churn, not what is
# live: the bound is not checked (the statuses still are).
RSS_LIMIT = 16 * MIB


ASAN = h.ASAN


def rss_ok(grown):
    return ASAN or grown < RSS_LIMIT


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for %d" % pid)


def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def write_req(size, data, offset=0, finish=False, blob=None):
    """A WriteRequest starting an upload of a random blob of `size` bytes
    (its digest only: the data sent never completes it)."""
    blob = blob or os.urandom(16)
    hx = hashlib.sha256(blob).hexdigest()
    name = "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), hx, size)
    return pb().bytestream.WriteRequest(resource_name=name, write_offset=offset,
                                        data=data, finish_write=finish).SerializeToString()


def send_msg(raw, sid, body):
    """One gRPC message as DATA frames within the default max frame size,
    the stream left open."""
    data = h.grpc_msg(body)
    for i in range(0, len(data), 16384):
        raw.send_data(sid, data[i:i + 16384], end_stream=False)


class StreamsCase(h.ReactordTestCase):
    def tmp_files(self, srv):
        d = os.path.join(srv.state_dir, "cas", "default", "tmp")
        return os.listdir(d) if os.path.isdir(d) else []

    def open_uploads(self, raw, first_sid, n, size=4096):
        """Start n uploads on raw (HEADERS + one DATA, no END_STREAM): each
        sends all but nothing of finish_write, so reactord writes a temp
        file and waits.  Returns the stream ids."""
        sids = []
        for i in range(n):
            sid = first_sid + 2 * i
            raw.send_headers(sid, h.grpc_request_headers(WRITE))
            raw.send_data(sid, h.grpc_msg(write_req(size, os.urandom(size))), end_stream=False)
            sids.append(sid)
        raw.ping(timeout=20)
        return sids

    def refused(self, raw, sids, key):
        """Read until the server answered; the streams it refused with
        RESOURCE_EXHAUSTED naming `key` (the others must still be open)."""
        raw.ping(timeout=20)
        out = []
        for sid in sids:
            st = raw.streams.get(sid)
            if st is not None and st.done:
                self.assertEqual(st.grpc_status, RESOURCE_EXHAUSTED, st)
                self.assertIn(key, st.grpc_message)
                out.append(sid)
        return out

    def assert_served(self, srv, limit_s=3.0):
        t0 = time.monotonic()
        self.assert_serving(srv)
        ch = h.channel(srv.tcp_addr)
        try:
            h.get_capabilities(ch, timeout=limit_s * h.SLOW)
        finally:
            ch.close()
        self.assertLess(time.monotonic() - t0, limit_s * h.SLOW)


# ---- partial uploads ----------------------------------------------------------------


class TestAbandonedUploads(StreamsCase):
    def test_300_abandoned_uploads(self):
        srv = self.start_reactord({"uploads": {"max-open": 100, "max-per-connection": 64,
                                               "abandon-timeout": "3s"}})
        pid = srv.pid
        fd0 = nfds(pid)
        # One connection, 300 uploads: 64 are taken, the rest refused.
        a = self.raw(srv.tcp_addr, timeout=20)
        a.handshake()
        sids = self.open_uploads(a, 1, 300)
        ref = self.refused(a, sids, "uploads.max-per-connection")
        self.assertEqual(len(ref), 300 - 64)
        self.assertIn("limit 64", a.streams[ref[0]].grpc_message)
        # Abandon the 64: reset their streams, then the connection.
        for sid in sids:
            if sid not in ref:
                a.send_rst(sid)
        a.ping()
        a.close()
        # More connections: the total cap (100) refuses past 36 more.
        b = self.raw(srv.tcp_addr, timeout=20)
        b.handshake()
        sids_b = self.open_uploads(b, 1, 100)
        ref_b = self.refused(b, sids_b, "uploads.max")
        total = [sid for sid in ref_b if "uploads.max-open" in b.streams[sid].grpc_message]
        self.assertEqual(len(total), 100 - 36, [b.streams[s].grpc_message for s in ref_b][:3])
        self.assertIn("limit 100", b.streams[total[0]].grpc_message)
        self.assert_served(srv)
        b.close()
        # All 100 partial uploads are parked now: temp files stay (for a
        # resume), descriptors do not.
        h.wait_for(lambda: nfds(pid) <= fd0 + 4, 5, "descriptors back to %d+4 (now %d)"
                   % (fd0, nfds(pid)))
        n_tmp = len(self.tmp_files(srv))
        self.assertLessEqual(n_tmp, 100)
        self.assertGreater(n_tmp, 0)
        # After uploads.abandon-timeout the temp files go too.
        h.wait_for(lambda: not self.tmp_files(srv), 10, "temp files removed after abandon")
        self.assertLessEqual(nfds(pid), fd0 + 4)
        # And new uploads are taken again.
        c = self.raw(srv.tcp_addr, timeout=20)
        c.handshake()
        sids_c = self.open_uploads(c, 1, 10)
        self.assertEqual(self.refused(c, sids_c, "uploads"), [])

    def test_resume_after_park(self):
        # A parked upload closed its file; resuming appends to it.
        srv = self.start_reactord({"uploads": {"abandon-timeout": "1m"}})
        ch = self.channel(srv.tcp_addr)
        blob = os.urandom(600 * 1024)
        hx = hashlib.sha256(blob).hexdigest()
        name = "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), hx, len(blob))
        raw = self.raw(srv.tcp_addr)
        raw.handshake()
        raw.ping()
        fd0 = nfds(srv.pid)
        raw.send_headers(1, h.grpc_request_headers(WRITE))
        send_msg(raw, 1, pb().bytestream.WriteRequest(
            resource_name=name, data=blob[:300 * 1024]).SerializeToString())
        raw.ping()
        self.assertEqual(nfds(srv.pid), fd0 + 1)  # the temp file, while streaming
        raw.send_rst(1)
        raw.ping()
        self.assertEqual(nfds(srv.pid), fd0)  # parked: no descriptor
        bs = pb().bytestream
        q = h.unary(ch, "/google.bytestream.ByteStream/QueryWriteStatus",
                    bs.QueryWriteStatusRequest, bs.QueryWriteStatusResponse)
        self.assertEqual(q(bs.QueryWriteStatusRequest(resource_name=name),
                           timeout=5).committed_size, 300 * 1024)
        w = ch.stream_unary(WRITE, request_serializer=bs.WriteRequest.SerializeToString,
                            response_deserializer=bs.WriteResponse.FromString)
        r = w(iter([bs.WriteRequest(resource_name=name, write_offset=300 * 1024,
                                    data=blob[300 * 1024:], finish_write=True)]), timeout=10)
        self.assertEqual(r.committed_size, len(blob))
        rd = ch.unary_stream("/google.bytestream.ByteStream/Read",
                             request_serializer=bs.ReadRequest.SerializeToString,
                             response_deserializer=bs.ReadResponse.FromString)
        got = b"".join(x.data for x in rd(bs.ReadRequest(
            resource_name="blobs/%s/%d" % (hx, len(blob))), timeout=10))
        self.assertEqual(got, blob)

    def test_temp_bytes_count_against_storage_max_size(self):
        srv = self.start_reactord({"instances": [{"name": "", "storage-max-size": "1MiB"}]})
        raw = self.raw(srv.tcp_addr, timeout=20)
        raw.handshake()
        # 600 KiB held by a first partial upload ...
        raw.send_headers(1, h.grpc_request_headers(WRITE))
        send_msg(raw, 1, write_req(900 * 1024, os.urandom(600 * 1024)))
        raw.ping()
        self.assertFalse(raw.streams[1].done, raw.streams[1])
        # ... leave 424 KiB: a second one may not take 600 KiB more.
        raw.send_headers(3, h.grpc_request_headers(WRITE))
        send_msg(raw, 3, write_req(900 * 1024, os.urandom(600 * 1024)))
        st = raw.wait_stream(3, timeout=10)
        self.assertEqual(st.grpc_status, RESOURCE_EXHAUSTED, st)
        self.assertIn("storage-max-size", st.grpc_message)
        self.assertIn("1048576", st.grpc_message)
        # The first goes on: once it is gone the room is back.
        raw.send_rst(1)
        raw.send_headers(5, h.grpc_request_headers(WRITE))
        send_msg(raw, 5, write_req(900 * 1024, os.urandom(300 * 1024)))
        raw.ping()
        self.assertFalse(raw.streams[5].done, raw.streams[5])


# ---- server streams nobody reads ------------------------------------------------------


class TestSlowReaders(StreamsCase):
    def watch_rss(self, pid, base, limit, seconds, what):
        """Poll VmRSS for `seconds`; fail as soon as it grew by `limit`."""
        peak = base
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            peak = max(peak, rss_bytes(pid))
            self.assertTrue(ASAN or peak - base < limit,
                            "%s: VmRSS grew by %.1f MiB (limit %.1f)"
                            % (what, (peak - base) / MIB, limit / MIB))
            time.sleep(0.2)
        sys.stderr.write("%s: VmRSS %.1f MiB -> peak %.1f MiB (+%.1f)\n"
                         % (what, base / MIB, peak / MIB, (peak - base) / MIB))
        return peak

    def test_execute_streams_nobody_reads(self):
        cfg = {"instances": [{"name": "", "execution": True, "storage": "memory",
                              "no-worker-timeout": "10m", "operation-retention": "10m"}],
               "scheduler": {"keepalive-interval": "10ms", "safety-net-interval": "1s",
                             "long-poll": "1s", "bot-session-keepalive": "2s"}}
        srv = self.start_reactord(cfg)
        ch = self.channel(srv.tcp_addr)
        d, blobs = tb.make_action(("true",))
        tb.upload(ch, blobs)
        req = pb().re.ExecuteRequest(action_digest=d).SerializeToString()
        raw = self.raw(srv.tcp_addr, timeout=20)
        raw.handshake()
        n = 250
        for i in range(n):
            raw.grpc_call(1 + 2 * i, EXECUTE, h.grpc_msg(req))
        # From here on the raw client reads nothing: no window updates, so
        # at most 64 KiB leave reactord for the whole connection.
        time.sleep(1.5)  # every Execute queued its operation
        base = rss_bytes(srv.pid)
        self.watch_rss(srv.pid, base, RSS_LIMIT, 10, "%d unread Execute streams" % n)
        self.assert_served(srv)
        # The streams still work: a bot runs the action and each stream,
        # read now, ends with the done Operation.
        bot = tb.Bot(srv.tcp_addr, "b1")
        self.addCleanup(bot.stop)
        bot.start()
        for i in range(n):
            st = raw.wait_stream(1 + 2 * i, timeout=30)
            self.assertEqual(st.grpc_status, 0, st)
            last = pb().operations.Operation.FromString(st.messages()[-1])
            self.assertTrue(last.done, last)

    def test_watchbuilds_streams_nobody_reads(self):
        srv = self.start_reactord({"buckets": {"watch-max-queued": 20}})
        ch = self.channel(srv.tcp_addr)
        put_batch = h.unary(ch, BK + "PutBatch", bpb.PutBatchRequest, bpb.PutBatchResponse)
        get = h.unary(ch, BK + "Get", bpb.GetRequest, bpb.BuildResponse)
        req = bpb.WatchBuildsRequest(buckets=["flood"]).SerializeToString()
        raw = self.raw(srv.tcp_addr, timeout=20)
        raw.handshake()
        n = 20
        sids = [1 + 2 * i for i in range(n)]
        for sid in sids:
            raw.grpc_call(sid, BK + "WatchBuilds", h.grpc_msg(req))
        # Wait until every watch is live (response headers), then read no more.
        h.wait_for(lambda: (raw.read_frame(0.1) or True) and all(
            raw.streams.get(s) and raw.streams[s].blocks for s in sids), 10, "watches live")
        base = rss_bytes(srv.pid)
        params = json.dumps({"builder_name": "x", "pad": "p" * 2048})
        ids = []
        for _ in range(10):
            r = put_batch(bpb.PutBatchRequest(builds=[
                bpb.PutRequest(bucket="flood", parameters_json=params) for _ in range(100)]),
                timeout=30 * h.SLOW)
            ids.append(r.results[0].build.id)
            self.assertTrue(rss_ok(rss_bytes(srv.pid) - base),
                            "VmRSS grew by more than %d MiB" % (RSS_LIMIT // MIB))
            # Others are served meanwhile.
            t0 = time.monotonic()
            self.assertEqual(get(bpb.GetRequest(id=ids[-1]), timeout=5).build.id, ids[-1])
            self.assertLess(time.monotonic() - t0, 2 * h.SLOW)
        self.watch_rss(srv.pid, base, RSS_LIMIT, 2, "%d unread WatchBuilds streams" % n)
        # Read now: each stream ended RESOURCE_EXHAUSTED naming the limit.
        for sid in sids:
            st = raw.wait_stream(sid, timeout=20)
            self.assertEqual(st.grpc_status, RESOURCE_EXHAUSTED, st)
            self.assertIn("buckets.watch-max-queued", st.grpc_message)
            self.assertIn("limit 20", st.grpc_message)

    def test_watchbuilds_too_many_ids(self):
        srv = self.start_reactord({"buckets": {"watch-max-ids": 50}})
        ch = self.channel(srv.tcp_addr)
        watch = h.server_stream(ch, BK + "WatchBuilds", bpb.Build)
        e = h.rpc_error(lambda: next(watch(bpb.WatchBuildsRequest(
            build_ids=list(range(1, 52))), timeout=5)))
        self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("buckets.watch-max-ids", e.details())
        self.assertIn("limit 50", e.details())
        # At the limit it is a watch like any other.
        it = watch(bpb.WatchBuildsRequest(build_ids=list(range(1, 51))), timeout=2)
        e = h.rpc_error(lambda: next(it))
        self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED)


if __name__ == "__main__":
    h.main()
