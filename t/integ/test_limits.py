#!/usr/bin/python3
"""test_limits.py - what one client can make reactord hold is bounded
(issue 11, section 3): request bytes buffered per connection (flow-control
windows reopen only as messages are consumed), connections per client
address, and requests that never finish (a unary call that never
half-closes, a streaming call that goes quiet).

Each test plays the attack over real sockets with the hand-rolled HTTP/2
client of harness.py (which, unlike grpcio, lets us stop in the middle of a
message), asserts the precise status and the limit it names, that
reactord's VmRSS stays bounded, and that other clients are served.

Run by `make check`; by hand: /usr/bin/python3 t/integ/test_limits.py [NAME...]
"""

import hashlib
import os
import socket
import struct
import sys
import time
import uuid

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from harness import pb  # noqa: E402

OK, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED = 0, 4, 8
CAS = "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
CAPS = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities"
WRITE = "/google.bytestream.ByteStream/Write"
MIB = 1 << 20


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


class FlowSender:
    """Sends DATA on a RawH2 connection no faster than the server's
    flow-control windows allow (as a real client must: exceeding them is a
    connection error), tracking SETTINGS and WINDOW_UPDATE frames."""

    def __init__(self, raw):
        self.raw = raw
        self.seen = 0
        self.conn = 65535
        self.init = 65535
        self.streams = {}

    def pump(self, timeout):
        """Read frames for up to `timeout` seconds; True if any window
        opened."""
        opened = False
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            f = self.raw.read_frame(max(left, 0)) if left > 0 else None
            while self.seen < len(self.raw.frames):
                ftype, flags, sid, payload = self.raw.frames[self.seen]
                self.seen += 1
                if ftype == h.SETTINGS and not flags & h.ACK:
                    for i in range(0, len(payload) - 5, 6):
                        k, v = struct.unpack(">HI", payload[i:i + 6])
                        if k == 4:  # INITIAL_WINDOW_SIZE
                            for s in self.streams:
                                self.streams[s] += v - self.init
                            self.init = v
                            opened = True
                elif ftype == h.WINDOW_UPDATE:
                    inc = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
                    if sid == 0:
                        self.conn += inc
                    elif sid in self.streams:
                        self.streams[sid] += inc
                    opened = True
            if f is None or opened:
                return opened

    def open(self, sid, path):
        self.raw.send_headers(sid, h.grpc_request_headers(path))
        self.streams[sid] = self.init

    def send(self, sid, data):
        """Send as much of data as the windows allow; returns the count."""
        n = min(len(data), self.conn, self.streams[sid], 16384)
        if n <= 0:
            return 0
        self.raw.send_data(sid, data[:n], end_stream=False)
        self.conn -= n
        self.streams[sid] -= n
        return n


class TestLimits(h.ReactordTestCase):
    def assert_served(self, srv, addr=None):
        """A well-behaved client on another connection gets real work
        done: capabilities and a 5 MiB blob upload (a message larger than
        the stream window, so it needs a window grant) through ByteStream.Write."""
        ch = self.channel(addr or srv.tcp_addr)
        h.get_capabilities(ch, timeout=10)
        bs = pb().bytestream
        blob = os.urandom(5 * MIB)
        name = "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), hashlib.sha256(blob).hexdigest(),
                                           len(blob))
        write = ch.stream_unary(WRITE, request_serializer=bs.WriteRequest.SerializeToString,
                                response_deserializer=bs.WriteResponse.FromString)
        resp = write(iter([bs.WriteRequest(resource_name=name, data=blob, finish_write=True)]),
                     timeout=20 * h.SLOW)
        self.assertEqual(resp.committed_size, len(blob))

    # -- (a) partial messages -------------------------------------------------
    def test_partial_messages_on_many_streams_are_throttled(self):
        """40 streams each declare a 4 MiB message and send all of it but
        the last byte.  Before the fix every byte was taken (the window
        reopened on receipt) and RSS grew by ~160 MB; now the connection
        holds at most its budget plus one connection window, the streams
        that would deadlock it end with RESOURCE_EXHAUSTED naming the
        limit, and another client is served meanwhile."""
        srv = self.start_reactord({
            "limits": {"max-buffered-per-connection": "16MiB"},
            "http2": {"connection-window": "4MiB"},
        })
        self.assert_served(srv)
        base = rss_kib(srv.pid)
        raw = self.raw(srv.tcp_addr, timeout=10)
        raw.handshake()
        fs = FlowSender(raw)
        fs.pump(2)
        declared = 4 * MIB
        body = bytes([0]) + struct.pack(">I", declared) + b"\x0a" * (declared - 1)
        sids = list(range(1, 81, 2))
        for sid in sids:
            fs.open(sid, CAS + "BatchUpdateBlobs")
        sent = {sid: 0 for sid in sids}
        peak = base
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 3 * h.SLOW:
            progress = False
            for sid in sids:
                st = raw.streams.get(sid)
                if st is not None and st.done:
                    continue
                while sent[sid] < len(body):
                    n = fs.send(sid, body[sent[sid]:sent[sid] + 16384])
                    if n == 0:
                        break
                    sent[sid] += n
                    progress = True
            peak = max(peak, rss_kib(srv.pid))
            if fs.pump(0.05 if progress else 0.3) or progress:
                idle_since = time.monotonic()
            if all(sent[s] >= len(body) or (raw.streams.get(s) and raw.streams[s].done)
                   for s in sids):
                break
        fs.pump(1)
        peak = max(peak, rss_kib(srv.pid))
        grew = (peak - base) / 1024.0
        print("partial messages: sent %.1f MiB, RSS %d -> peak %d KiB (+%.1f MiB)"
              % (sum(sent.values()) / MIB, base, peak, grew))
        # Meanwhile (the attacker's connection still open and full):
        self.assert_served(srv)
        ended = [raw.streams[s] for s in sids if raw.streams.get(s) and raw.streams[s].done]
        statuses = [st.grpc_status for st in ended]
        self.assertTrue(ended, "no stream was ended: %r" % [raw.streams.get(s) for s in sids])
        self.assertEqual(set(statuses), {RESOURCE_EXHAUSTED}, statuses)
        msg = ended[0].grpc_message
        self.assertIn("limits.max-buffered-per-connection", msg)
        self.assertIn("16777216", msg)
        if not h.ASAN:
            self.assertLess(grew, 40, "RSS grew by %.1f MiB under the attack" % grew)
        raw.close()
        self.assert_served(srv)

    def test_message_over_the_connection_budget(self):
        """A single message that could never fit the per-connection budget
        fails at once (no waiting for bytes that cannot be held)."""
        srv = self.start_reactord({
            "limits": {"max-buffered-per-connection": "1MiB"},
        })
        raw = self.raw(srv.tcp_addr)
        raw.handshake()
        raw.send_headers(1, h.grpc_request_headers(CAS + "BatchUpdateBlobs"))
        raw.send_data(1, bytes([0]) + struct.pack(">I", 2 * MIB) + b"\x0a" * 1000,
                      end_stream=False)
        st = raw.wait_stream(1, timeout=10)
        self.assertEqual(st.grpc_status, RESOURCE_EXHAUSTED, st)
        self.assertIn("limits.max-buffered-per-connection", st.grpc_message)
        self.assertIn("1048576", st.grpc_message)
        h.get_capabilities(self.channel(srv.tcp_addr))

    # -- (b) connections ------------------------------------------------------
    def test_connections_per_address(self):
        """1,000 connections from 127.0.0.1: 256 (the default limit) stay
        open, the rest are closed at once; RSS stays bounded; a client from
        another address and one on the unix socket are served; once the
        flood is gone 127.0.0.1 connects again."""
        srv = self.start_reactord(serving=False)
        # (health over the unix socket: no TCP connection of ours is open)
        self.wait_health(srv, "SERVING", target=srv.unix_addr)
        base = rss_kib(srv.pid)
        host, port = srv.tcp_addr.rsplit(":", 1)
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(1000):
            s = socket.create_connection((host, int(port)), 10)
            s.setblocking(False)
            socks.append(s)

        def closed_count():
            n = 0
            for s in socks:
                try:
                    if s.recv(1, socket.MSG_PEEK) == b"":
                        n += 1
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    n += 1
            return n
        h.wait_for(lambda: closed_count() >= 1000 - 256, 20, "extra connections closed")
        time.sleep(0.3)  # nothing more gets closed: the limit holds exactly
        self.assertEqual(closed_count(), 1000 - 256)
        grew = (rss_kib(srv.pid) - base) / 1024.0
        print("1000 connections: RSS +%.1f MiB" % grew)
        if not h.ASAN:
            self.assertLess(grew, 30)
        srv.wait_log(r"limits\.max-connections-per-address", timeout=5)
        # At most one log line a second about it, not one per connection.
        self.assertLess(len([ln for ln in srv.log().splitlines()
                             if "limits.max-connections-per-address" in ln]), 10)
        # Another address (all of 127/8 is loopback) is served.
        other = socket.socket()
        other.settimeout(5)
        other.bind(("127.0.0.2", 0))
        other.connect((host, int(port)))
        raw = self.raw(srv.unix_addr)
        raw.sock.close()
        raw.sock = other
        raw.handshake()
        raw.grpc_call(1, h.HEALTH + "Check", h.grpc_msg(b""))
        self.assertEqual(raw.wait_stream(1).grpc_status, OK)
        self.assert_served(srv, srv.unix_addr)
        for s in socks:
            s.close()
        socks.clear()
        h.wait_for(lambda: self._tcp_serves(srv), 20, "127.0.0.1 served again")

    def _tcp_serves(self, srv):
        try:
            self.assert_served(srv)
            return True
        except Exception:
            return False

    # -- (c) requests that never finish --------------------------------------
    def test_unary_without_half_close(self):
        """A whole unary request, then nothing (no END_STREAM): the call
        ends DEADLINE_EXCEEDED after limits.half-close-timeout, not after
        the hour of grpc.max-call-duration."""
        srv = self.start_reactord({"limits": {"half-close-timeout": "1s"}})
        raw = self.raw(srv.tcp_addr)
        raw.handshake()
        t0 = time.monotonic()
        raw.grpc_call(1, CAPS, h.grpc_msg(b""), end_stream=False)
        # and a message that is never finished
        raw.send_headers(3, h.grpc_request_headers(CAS + "FindMissingBlobs"))
        raw.send_data(3, bytes([0]) + struct.pack(">I", 100) + b"\x0a", end_stream=False)
        for sid in (1, 3):
            st = raw.wait_stream(sid, timeout=10)
            self.assertEqual(st.grpc_status, DEADLINE_EXCEEDED, st)
            self.assertIn("limits.half-close-timeout", st.grpc_message)
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 8 * h.SLOW)
        self.assert_served(srv)

    def test_streaming_request_goes_quiet(self):
        """ByteStream.Write sends one chunk and then nothing: the call ends
        after limits.request-idle-timeout."""
        srv = self.start_reactord({"limits": {"request-idle-timeout": "1s"}})
        bs = pb().bytestream
        data = b"x" * 100
        name = "uploads/%s/blobs/%s/%d" % ("6a1a7f8c-0000-4000-8000-000000000001",
                                           hashlib.sha256(data).hexdigest(), len(data))
        req = bs.WriteRequest(resource_name=name, write_offset=0, data=data[:10])
        raw = self.raw(srv.tcp_addr)
        raw.handshake()
        t0 = time.monotonic()
        raw.grpc_call(1, WRITE, h.grpc_msg(req.SerializeToString()), end_stream=False)
        st = raw.wait_stream(1, timeout=10)
        self.assertEqual(st.grpc_status, DEADLINE_EXCEEDED, st)
        self.assertIn("limits.request-idle-timeout", st.grpc_message)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assert_served(srv)


if __name__ == "__main__":
    h.main()
