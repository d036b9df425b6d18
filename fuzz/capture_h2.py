#!/usr/bin/python3
"""fuzz/capture_h2.py GEN-PY OUT-DIR - write the h2 seeds: real gRPC requests
as grpcio (python3-grpcio) puts them on the wire, captured by a socket that
answers only with SETTINGS.  Each seed is what the client sent after the
24-byte connection preface (fuzz_h2 sends the preface itself): its SETTINGS,
WINDOW_UPDATE, HEADERS (HPACK as grpcio encodes it) and DATA frames.

Run with the Debian python (/usr/bin/python3) after a build (GEN-PY is
build/gen-py).  The seeds are committed; rerun only to refresh them.
"""
import importlib.util
import os
import socket
import sys
import threading

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402

from build.bazel.remote.execution.v2 import remote_execution_pb2 as re  # noqa: E402
from google.bytestream import bytestream_pb2 as bs  # noqa: E402

# grpcio owns the "grpc" package: load health_pb2 from its file.
_spec = importlib.util.spec_from_file_location(
    "health_pb2", os.path.join(sys.argv[1], "grpc", "health", "v1", "health_pb2.py"))
health_pb2 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(health_pb2)

OUT = sys.argv[2]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SERVER_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
H = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
H1 = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"


def capture(name, do_call):
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    port = lst.getsockname()[1]
    got = bytearray()

    def serve():
        conn, _ = lst.accept()
        conn.sendall(SERVER_SETTINGS + SETTINGS_ACK)
        conn.settimeout(0.5)
        try:
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                got.extend(b)
        except socket.timeout:
            pass
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    ch = grpc.insecure_channel("127.0.0.1:%d" % port)
    try:
        do_call(ch)
    except grpc.RpcError:
        pass
    t.join()
    ch.close()
    lst.close()
    assert got.startswith(PREFACE), name
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes(got[len(PREFACE):]))


def unary(path, req, **kw):
    def go(ch):
        ch.unary_unary(path, request_serializer=lambda m: m if isinstance(m, bytes)
                       else m.SerializeToString())(req, timeout=1.0, **kw)
    return go


def stream(path, reqs, **kw):
    def go(ch):
        ch.stream_unary(path, request_serializer=lambda m: m.SerializeToString())(
            iter(reqs), timeout=1.0, **kw)
    return go


def server_stream(path, req, **kw):
    def go(ch):
        for _ in ch.unary_stream(path, request_serializer=lambda m: m.SerializeToString())(
                req, timeout=1.0, **kw):
            pass
    return go


RE = "/build.bazel.remote.execution.v2."
CAS = RE + "ContentAddressableStorage/"
md = [("build.bazel.remote.execution.v2.requestmetadata-bin",
       re.RequestMetadata(tool_invocation_id="fuzz-1",
                          tool_details=re.ToolDetails(tool_name="bazel")).SerializeToString()),
      ("x-thing-bin", b"\x00\xff\x10")]

capture("health_check", unary("/grpc.health.v1.Health/Check",
                              health_pb2.HealthCheckRequest(service="grpc.health.v1.Health")))
capture("health_watch", server_stream("/grpc.health.v1.Health/Watch",
                                      health_pb2.HealthCheckRequest()))
capture("capabilities", unary(RE + "Capabilities/GetCapabilities",
                              re.GetCapabilitiesRequest(instance_name=""), metadata=md))
capture("find_missing", unary(CAS + "FindMissingBlobs", re.FindMissingBlobsRequest(
    blob_digests=[re.Digest(hash=H, size_bytes=0), re.Digest(hash=H1, size_bytes=1)])))
capture("batch_update", unary(CAS + "BatchUpdateBlobs", re.BatchUpdateBlobsRequest(
    requests=[re.BatchUpdateBlobsRequest.Request(digest=re.Digest(hash=H1, size_bytes=1),
                                                 data=b"a")])))
capture("batch_read", unary(CAS + "BatchReadBlobs", re.BatchReadBlobsRequest(
    digests=[re.Digest(hash=H, size_bytes=0), re.Digest(hash=H1, size_bytes=1)])))
root = re.Directory(files=[re.FileNode(name="a", digest=re.Digest(hash=H1, size_bytes=1))])
capture("get_tree", server_stream(CAS + "GetTree", re.GetTreeRequest(
    root_digest=re.Digest(hash=H, size_bytes=0))))
capture("bs_write", stream("/google.bytestream.ByteStream/Write", [
    bs.WriteRequest(resource_name="uploads/0f1e/blobs/%s/1" % H1, write_offset=0, data=b""),
    bs.WriteRequest(write_offset=0, data=b"a", finish_write=True)]))
capture("bs_read", server_stream("/google.bytestream.ByteStream/Read",
                                 bs.ReadRequest(resource_name="blobs/%s/0" % H)))
capture("bs_query", unary("/google.bytestream.ByteStream/QueryWriteStatus",
                          bs.QueryWriteStatusRequest(resource_name="uploads/u/blobs/%s/1" % H1)))
capture("echo", stream("/fuzz.Echo/Echo", [re.Digest(hash="x", size_bytes=3)] * 2,
                       metadata=md))
capture("unknown", unary("/no.Such/Method", b"\x0a\x01x", metadata=[("x-a", "b")]))


def several(ch):
    """One connection, three streams: store a Directory and a file, then
    walk the tree and read the file back (the server runs them in order)."""
    import hashlib
    d = root.SerializeToString()
    hd = hashlib.sha256(d).hexdigest()
    up = ch.unary_unary(CAS + "BatchUpdateBlobs",
                        request_serializer=lambda m: m.SerializeToString())
    tree = ch.unary_stream(CAS + "GetTree",
                           request_serializer=lambda m: m.SerializeToString())
    rd = ch.unary_stream("/google.bytestream.ByteStream/Read",
                         request_serializer=lambda m: m.SerializeToString())
    f1 = up.future(re.BatchUpdateBlobsRequest(requests=[
        re.BatchUpdateBlobsRequest.Request(digest=re.Digest(hash=H1, size_bytes=1), data=b"a"),
        re.BatchUpdateBlobsRequest.Request(digest=re.Digest(hash=hd, size_bytes=len(d)),
                                           data=d)]), timeout=1.0)
    import time
    time.sleep(0.2)  # its stream first on the wire (not a test: seed order)
    t = tree(re.GetTreeRequest(root_digest=re.Digest(hash=hd, size_bytes=len(d))), timeout=1.0)
    r = rd(bs.ReadRequest(resource_name="blobs/%s/1" % H1), timeout=1.0)
    for call in (t, r):
        try:
            for _ in call:
                pass
        except grpc.RpcError:
            pass
    try:
        f1.result()
    except grpc.RpcError:
        pass


capture("several", several)


# ---- structured seeds (fuzz_h2.c, "structured inputs") -------------------
def calls(name, *cs):
    """cs: (method index, flags, payload bytes)."""
    out = bytearray(b"\x80")
    for m, flags, p in cs:
        out += bytes([m, flags]) + len(p).to_bytes(2, "big") + p
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes(out))


def framed(*msgs):
    return b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in msgs)


(CHECK, WATCH, CAPS, FIND, UPDATE, READ, TREE, BSREAD, BSWRITE, QUERY, ECHO,
 SPLIT, UNKNOWN) = range(13)
RAW, OPEN, TIMEOUT, REQMETA, BADBIN, SPLITF, NOCTYPE = 1, 2, 4, 8, 16, 32, 64
import hashlib  # noqa: E402
sub = re.Directory(files=[re.FileNode(name="f", digest=re.Digest(hash=H1, size_bytes=1),
                                      is_executable=True)],
                   symlinks=[re.SymlinkNode(name="l", target="f")])
sd = sub.SerializeToString()
top = re.Directory(files=[re.FileNode(name="a", digest=re.Digest(hash=H1, size_bytes=1))],
                   directories=[re.DirectoryNode(name="sub", digest=re.Digest(
                       hash=hashlib.sha256(sd).hexdigest(), size_bytes=len(sd)))])
td = top.SerializeToString()
dig = re.Digest(hash=hashlib.sha256(td).hexdigest(), size_bytes=len(td))


def blob(data):
    return re.BatchUpdateBlobsRequest.Request(
        digest=re.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data)),
        data=data)


calls("s_cas",
      (UPDATE, REQMETA, re.BatchUpdateBlobsRequest(
          requests=[blob(b"a"), blob(sd), blob(td)]).SerializeToString()),
      (TREE, 0, re.GetTreeRequest(root_digest=dig, page_size=1).SerializeToString()),
      (READ, 0, re.BatchReadBlobsRequest(digests=[dig]).SerializeToString()),
      (FIND, TIMEOUT, re.FindMissingBlobsRequest(blob_digests=[dig]).SerializeToString()),
      (BSREAD, 0, bs.ReadRequest(resource_name="blobs/%s/%d" % (dig.hash, dig.size_bytes),
                                 read_offset=2, read_limit=3).SerializeToString()))
calls("s_write",
      (BSWRITE, RAW | SPLITF, framed(
          bs.WriteRequest(resource_name="uploads/u1/blobs/%s/1" % H1).SerializeToString(),
          bs.WriteRequest(write_offset=0, data=b"a", finish_write=True).SerializeToString())),
      (QUERY, 0, bs.QueryWriteStatusRequest(
          resource_name="uploads/u1/blobs/%s/1" % H1).SerializeToString()),
      (BSREAD, 0, bs.ReadRequest(resource_name="blobs/%s/1" % H1).SerializeToString()))
hb = hashlib.sha256(b"hello").hexdigest()
calls("s_write_resume",
      (BSWRITE, RAW | OPEN, framed(bs.WriteRequest(
          resource_name="ro/uploads/u2/blobs/%s/5" % hb, data=b"he").SerializeToString())),
      (QUERY, 0, bs.QueryWriteStatusRequest(
          resource_name="ro/uploads/u2/blobs/%s/5" % hb).SerializeToString()),
      (BSWRITE, RAW, framed(bs.WriteRequest(resource_name="uploads/u2/blobs/%s/5" % hb,
                                            write_offset=0, data=b"hello",
                                            finish_write=True).SerializeToString())))
calls("s_health",
      (CHECK, TIMEOUT | REQMETA, health_pb2.HealthCheckRequest(service="").SerializeToString()),
      (WATCH, OPEN, b""),
      (CAPS, BADBIN, re.GetCapabilitiesRequest(instance_name="ro").SerializeToString()),
      (ECHO, RAW | SPLITF, framed(b"\x0a\x03abc", b"", b"\x10\x01")),
      (SPLIT, NOCTYPE, b""),
      (UNKNOWN, 0, b""))
