"""harness.py - shared machinery for reactord's integration tests.

Owns everything a test needs to drive real processes: locating the binaries
and generated protobuf modules, writing a YAML config into a fresh temp dir,
starting reactord (and, for external-Redis tests, a redis-server of our own)
and waiting for its ready-file, gRPC helpers over Debian's grpcio, a tiny
hand-rolled HTTP/2 client (with an HPACK encoder and decoder) for feeding
the server bytes no well-behaved client would send, and a unittest main that
prints "N passed, N failed[, N skipped]".

Cleanup is the point of most of this file: every process a test starts is
registered with addCleanup before it can fail, reactord is stopped with
SIGTERM and its exit status checked (0, so a sanitizer leak report, which
exits 23, fails the test), and after each test /proc is scanned for any
process whose command line still names the test's temp dir; such strays
are SIGKILLed and fail the test.
"""

import importlib.util
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

# ---- environment -------------------------------------------------------------

_HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("REACTOR_SRCDIR") or os.path.dirname(os.path.dirname(_HERE))
_BUILD = os.path.join(SRCDIR, "build")
REACTORD = os.environ.get("REACTORD") or os.path.join(_BUILD, "reactord")
REACTORCTL = os.environ.get("REACTORCTL") or os.path.join(_BUILD, "reactorctl")
REDIS_SERVER = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or ""
GEN_PY = os.environ.get("REACTOR_GEN_PY") or os.path.join(_BUILD, "gen-py")



def _slow_factor():
    """Every wait scales with this: 3 for a sanitizer build (slower to start,
    serve and stop), else 1; REACTOR_TEST_SLOW overrides."""
    if os.environ.get("REACTOR_TEST_SLOW"):
        return float(os.environ["REACTOR_TEST_SLOW"])
    try:
        with open(REACTORD, "rb") as f:
            # libasan may be linked dynamically: its hooks still leave
            # __asan_* references in the binary.
            data = f.read()
            return 3.0 if b"AddressSanitizer" in data or b"__asan_" in data else 1.0
    except OSError:
        return 1.0


SLOW = _slow_factor()


def _asan():
    try:
        with open(REACTORD, "rb") as f:
            return b"__asan_" in f.read()
    except OSError:
        return False


BAZEL = os.environ.get("BAZEL") or shutil.which("bazel")
BAZEL_WS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bazel_ws")


def bazel_setup(tmp):
    """(workspace, env, startup args) for a hermetic Bazel run in tmp: a
    copy of t/integ/bazel_ws, a private HOME and output root, proxies
    pointed at a closed port (nothing may be downloaded), no user or
    workspace rc (the system rc stays: Debian's holds the install base of
    its unpacked Bazel)."""
    ws = os.path.join(tmp, "ws")
    shutil.copytree(BAZEL_WS, ws, symlinks=True)
    home = os.path.join(tmp, "home")
    os.mkdir(home)
    closed = "http://127.0.0.1:9"  # discard port: nothing listens
    env = {"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "TMPDIR": tmp, "LANG": "C.UTF-8",
           "http_proxy": closed, "https_proxy": closed, "HTTP_PROXY": closed,
           "HTTPS_PROXY": closed, "no_proxy": "", "NO_PROXY": ""}
    startup = [BAZEL, "--output_user_root=" + os.path.join(tmp, "ubase"), "--batch",
               "--nohome_rc", "--noworkspace_rc"]
    return ws, env, startup


# An AddressSanitizer build keeps freed memory in its quarantine (256 MiB),
# so there VmRSS tracks churn, not what is live: tests that bound RSS under
# an attack check the bound only without it (their statuses still count).
ASAN = _asan()

if GEN_PY not in sys.path:
    sys.path.insert(0, GEN_PY)

try:
    import grpc  # Debian's python3-grpcio
except ImportError:  # pragma: no cover - reported by main()
    grpc = None


def _load_file_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _PB:
    """The generated *_pb2 modules.  grpc/health/v1/health_pb2.py cannot be
    imported as grpc.health.v1 (grpcio owns the "grpc" package), so it is
    loaded from its file; the others import normally from GEN_PY."""

    def __init__(self):
        self.health = _load_file_module(
            "reactor_health_pb2",
            os.path.join(GEN_PY, "grpc", "health", "v1", "health_pb2.py"))
        from build.bazel.remote.execution.v2 import remote_execution_pb2
        from google.bytestream import bytestream_pb2
        from google.devtools.remoteworkers.v1test2 import bots_pb2
        from google.longrunning import operations_pb2
        self.re = remote_execution_pb2
        self.bytestream = bytestream_pb2
        self.bots = bots_pb2
        self.operations = operations_pb2


_pb = None


def pb():
    global _pb
    if _pb is None:
        _pb = _PB()
    return _pb


# ---- small utilities -----------------------------------------------------------


def wait_for(pred, timeout, what, interval=0.02):
    """Poll pred() every interval seconds until it returns a true value
    (returned) or timeout seconds pass (AssertionError naming `what`)."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout * SLOW, what))
        time.sleep(interval)


def procs_with(needle):
    """[(pid, cmdline)] of live processes whose command line contains
    needle (zombies have an empty cmdline and do not match)."""
    out = []
    nb = needle.encode()
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if nb in cmd:
            out.append((int(d), cmd.replace(b"\0", b" ").decode(errors="replace").strip()))
    return out


def pid_alive(pid):
    """True if pid names a live, non-zombie process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rindex(")") + 2] != "Z"


def _yaml_scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if s and re.fullmatch(r"[A-Za-z0-9_./@-][A-Za-z0-9_./:@-]*", s):
        return s
    return json.dumps(s)  # a JSON string is a valid double-quoted YAML scalar


def to_yaml(obj, indent=0):
    """Block-style YAML for nested dicts/lists of scalars."""
    pad = " " * indent
    lines = []
    for k, v in obj.items():
        if isinstance(v, dict):
            lines.append("%s%s:" % (pad, k))
            lines.append(to_yaml(v, indent + 2))
        elif isinstance(v, list):
            lines.append("%s%s:" % (pad, k))
            for item in v:
                if isinstance(item, dict):
                    sub = to_yaml(item, indent + 4).split("\n")
                    sub[0] = pad + "  - " + sub[0].lstrip()
                    lines.extend(sub)
                else:
                    lines.append("%s  - %s" % (pad, _yaml_scalar(item)))
        else:
            lines.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))
    return "\n".join(lines)


def deep_merge(base, over):
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        elif v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _short_tmp_base():
    # Unix socket paths are limited to 107 bytes: keep the temp tree short.
    base = os.environ.get("TMPDIR") or "/tmp"
    if len(base) > 40 or not os.path.isdir(base):
        base = "/tmp"
    return base


RUN_DIR = None  # one directory per run of the file; each test gets a subdir


def run_dir():
    global RUN_DIR
    if RUN_DIR is None:
        RUN_DIR = tempfile.mkdtemp(prefix="rd-integ.", dir=_short_tmp_base())
    return RUN_DIR


# ---- processes ----------------------------------------------------------------

SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error: ")


class Reactord:
    """One reactord process: started with `-c cfg`, stdout+stderr to a log
    file, ready when its ready-file appears."""

    def __init__(self, tmp, cfg_path, ready_file, name="reactord"):
        self.tmp = tmp
        self.cfg_path = cfg_path
        self.ready_file = ready_file
        self.name = name
        self.log_path = os.path.join(tmp, name + ".log")
        self.proc = None
        self.addrs = []
        self.http_addrs = []
        self.rc = None
        self.expected_rc = 0     # what cleanup insists on; None = don't check
        self._final_log = None

    # -- lifecycle
    def start(self, extra_args=()):
        self._logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen([REACTORD, "-c", self.cfg_path, *extra_args],
                                     stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, cwd=self.tmp)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, timeout=20):
        """Poll for the ready-file (short intervals, hard timeout); fails
        at once if reactord exits first.  Returns the bound addresses."""
        def ready():
            if os.path.exists(self.ready_file):
                return True
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %s before it was ready; log:\n%s"
                                     % (self.name, self.proc.returncode, self.log_tail()))
            return False
        wait_for(ready, timeout, "%s ready-file %s" % (self.name, self.ready_file), 0.01)
        with open(self.ready_file) as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        # gRPC listeners first, then the http: ones as "http://ADDR".
        self.addrs = [ln for ln in lines if not ln.startswith("http://")]
        self.http_addrs = [ln[len("http://"):] for ln in lines if ln.startswith("http://")]
        if not self.addrs:
            raise AssertionError("ready-file %s is empty" % self.ready_file)
        return self.addrs

    @property
    def tcp_addr(self):
        return next(a for a in self.addrs if not a.startswith("unix:"))

    @property
    def unix_addr(self):
        return next(a for a in self.addrs if a.startswith("unix:"))

    @property
    def http_url(self):
        """http://HOST:PORT of the first TCP http: listener (no trailing /)."""
        return "http://" + next(a for a in self.http_addrs if not a.startswith("unix:"))

    @property
    def http_port(self):
        return int(self.http_url.rsplit(":", 1)[1])

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Wait for exit; returns the exit code, AssertionError on timeout."""
        try:
            self.rc = self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running %.1fs later" % (self.name, timeout * SLOW))
        self._close_log()
        return self.rc

    def stop(self, timeout=15):
        """SIGTERM and wait; SIGKILL (and AssertionError) if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._close_log()
                raise AssertionError("%s ignored SIGTERM for %.0fs; killed" % (self.name, timeout))
        self.rc = self.proc.returncode
        self._close_log()
        return self.rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def _close_log(self):
        if getattr(self, "_logf", None) and not self._logf.closed:
            self._logf.close()
        if self.proc is not None and self.proc.poll() is not None:
            self._final_log = self._read_log()

    # -- log
    def _read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return self._final_log or ""

    def log(self):
        return self._read_log() if os.path.exists(self.log_path) else (self._final_log or "")

    def log_tail(self, n=60):
        return "\n".join(self.log().splitlines()[-n:])

    def log_mark(self):
        """An offset into the log; wait_log(..., since=mark) looks only
        at what was logged after it."""
        return len(self.log())

    def wait_log(self, pattern, timeout=5, since=0, count=1):
        """Wait until `pattern` (a regex) matches at least `count` times in
        the log after offset `since`; returns the list of matches."""
        rx = re.compile(pattern)

        def found():
            m = list(rx.finditer(self.log()[since:]))
            return m if len(m) >= count else None
        try:
            return wait_for(found, timeout, "log /%s/ x%d" % (pattern, count), 0.02)
        except AssertionError as e:
            raise AssertionError("%s; %s log tail:\n%s" % (e, self.name, self.log_tail()))

    def redis_pid(self, state_dir):
        with open(os.path.join(state_dir, "redis", "redis.pid")) as f:
            return int(f.read().strip())


class RedisServer:
    """A redis-server of the test's own (external mode), on a unix socket
    only (--port 0), with persistence off."""

    def __init__(self, tmp, name="ext-redis"):
        self.tmp = tmp
        self.sock = os.path.join(tmp, name + ".sock")
        self.log_path = os.path.join(tmp, name + ".log")
        self.proc = None

    def start(self, timeout=10):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", self.tmp,
             "--logfile", self.log_path, "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=self.tmp)

        def pong():
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited with %s" % self.proc.returncode)
            return self.ping()
        wait_for(pong, timeout, "redis-server on %s" % self.sock, 0.01)
        return self

    def ping(self):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.settimeout(1)
            s.connect(self.sock)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False
        finally:
            s.close()

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


# ---- gRPC over grpcio ----------------------------------------------------------

HEALTH = "/grpc.health.v1.Health/"
CAPS = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities"
# A local subchannel pool gives every channel its own connection: without
# it, channels to one target share one, and a test's "fresh" channel would
# queue behind another channel's streams.
CHANNEL_OPTS = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0),
                ("grpc.use_local_subchannel_pool", 1)]


def channel(target, *options):
    return grpc.insecure_channel(target, options=CHANNEL_OPTS + list(options))


def unary(ch, path, req_cls_or_none, resp_cls):
    ser = (lambda b: b) if req_cls_or_none is None else (lambda m: m.SerializeToString())
    des = (lambda b: b) if resp_cls is None else resp_cls.FromString
    return ch.unary_unary(path, request_serializer=ser, response_deserializer=des)


def server_stream(ch, path, resp_cls):
    des = (lambda b: b) if resp_cls is None else resp_cls.FromString
    return ch.unary_stream(path, request_serializer=lambda m: m if isinstance(m, bytes)
                           else m.SerializeToString(), response_deserializer=des)


def health_check(ch, service="", timeout=5):
    h = pb().health
    return unary(ch, HEALTH + "Check", h.HealthCheckRequest, h.HealthCheckResponse)(
        h.HealthCheckRequest(service=service), timeout=timeout * SLOW)


def health_watch(ch, service="", timeout=None):
    h = pb().health
    return server_stream(ch, HEALTH + "Watch", h.HealthCheckResponse)(
        h.HealthCheckRequest(service=service), timeout=timeout)


def status_name(code):
    return pb().health.HealthCheckResponse.ServingStatus.Name(code)


def get_capabilities(ch, instance="", timeout=5):
    re_ = pb().re
    return unary(ch, CAPS, re_.GetCapabilitiesRequest, re_.ServerCapabilities)(
        re_.GetCapabilitiesRequest(instance_name=instance), timeout=timeout * SLOW)


def rpc_error(fn, *a, **kw):
    """Call fn, which must raise grpc.RpcError; return the error."""
    try:
        r = fn(*a, **kw)
    except grpc.RpcError as e:
        return e
    raise AssertionError("expected the call to fail, it returned %r" % (r,))


# ---- HPACK (RFC 7541) ----------------------------------------------------------

_STATIC = [
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
    (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
    (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""),
    ("accept", ""), ("access-control-allow-origin", ""), ("age", ""), ("allow", ""),
    ("authorization", ""), ("cache-control", ""), ("content-disposition", ""),
    ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
    ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
    ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""),
    ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""),
    ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
]

# Code lengths of the HPACK Huffman code (RFC 7541 Appendix B), symbols
# 0..256.  The code is canonical, so lengths alone determine every code.
_HUFF_LENGTHS = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30,
]


def _huff_table():
    order = sorted(range(257), key=lambda s: (_HUFF_LENGTHS[s], s))
    table, code, prev = {}, 0, _HUFF_LENGTHS[order[0]]
    for i, sym in enumerate(order):
        n = _HUFF_LENGTHS[sym]
        if i:
            code = (code + 1) << (n - prev)
        prev = n
        table[(n, code)] = sym
    return table


_HUFF = _huff_table()


def huffman_decode(data):
    out = bytearray()
    code = n = 0
    for byte in data:
        for i in range(7, -1, -1):
            code = (code << 1) | ((byte >> i) & 1)
            n += 1
            sym = _HUFF.get((n, code))
            if sym is not None:
                if sym == 256:
                    raise ValueError("EOS in Huffman string")
                out.append(sym)
                code = n = 0
            elif n > 30:
                raise ValueError("bad Huffman code")
    if n > 7 or code != (1 << n) - 1:
        raise ValueError("bad Huffman padding")
    return bytes(out)


# Known answers from RFC 7541 C.4: a wrong length table fails here, not in a test.
assert huffman_decode(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")) == b"www.example.com"
assert huffman_decode(bytes.fromhex("a8eb10649cbf")) == b"no-cache"
assert huffman_decode(bytes.fromhex("25a849e95bb8e8b4bf")) == b"custom-value"


def _hp_int(data, pos, prefix):
    mask = (1 << prefix) - 1
    v = data[pos] & mask
    pos += 1
    if v < mask:
        return v, pos
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        v += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, pos


def _hp_enc_int(v, prefix, first=0):
    mask = (1 << prefix) - 1
    if v < mask:
        return bytes([first | v])
    out = bytearray([first | mask])
    v -= mask
    while v >= 128:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def hpack_encode(headers):
    """Literal header field without indexing, new name, no Huffman."""
    out = bytearray()
    for name, value in headers:
        n = name.encode() if isinstance(name, str) else name
        v = value.encode() if isinstance(value, str) else value
        out += b"\x00" + _hp_enc_int(len(n), 7) + n + _hp_enc_int(len(v), 7) + v
    return bytes(out)


class HpackDecoder:
    def __init__(self):
        self.dyn = []
        self.size = 0
        self.max = 4096

    def _get(self, i):
        if i <= 0:
            raise ValueError("HPACK index 0")
        if i <= len(_STATIC):
            return _STATIC[i - 1]
        return self.dyn[i - len(_STATIC) - 1]

    def _add(self, name, value):
        self.dyn.insert(0, (name, value))
        self.size += len(name) + len(value) + 32
        self._evict()

    def _evict(self):
        while self.size > self.max and self.dyn:
            n, v = self.dyn.pop()
            self.size -= len(n) + len(v) + 32

    def _str(self, data, pos):
        huff = data[pos] & 0x80
        n, pos = _hp_int(data, pos, 7)
        s = bytes(data[pos:pos + n])
        pos += n
        return (huffman_decode(s) if huff else s).decode("latin-1"), pos

    def decode(self, data):
        out, pos = [], 0
        while pos < len(data):
            b = data[pos]
            if b & 0x80:
                i, pos = _hp_int(data, pos, 7)
                out.append(self._get(i))
            elif b & 0x40 or not b & 0x20:
                prefix = 6 if b & 0x40 else 4
                i, pos = _hp_int(data, pos, prefix)
                if i:
                    name = self._get(i)[0]
                else:
                    name, pos = self._str(data, pos)
                value, pos = self._str(data, pos)
                if b & 0x40:
                    self._add(name, value)
                out.append((name, value))
            else:
                self.max, pos = _hp_int(data, pos, 5)
                self._evict()
        return out


# ---- a raw HTTP/2 client ------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid & 0x7FFFFFFF) + payload


def grpc_msg(body, flag=0):
    return bytes([flag]) + struct.pack(">I", len(body)) + body


def grpc_request_headers(path, extra=(), authority="x"):
    return [(":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", authority), ("content-type", "application/grpc"),
            ("te", "trailers"), *extra]


class StreamResult:
    def __init__(self):
        self.blocks = []        # decoded header blocks, in order
        self.data = b""
        self.ended = False      # END_STREAM seen from the server
        self.rst = None         # RST_STREAM error code
        self.end_on_headers = False

    @property
    def done(self):
        return self.ended or self.rst is not None

    def header(self, name):
        for blk in reversed(self.blocks):
            for n, v in blk:
                if n == name:
                    return v
        return None

    @property
    def grpc_status(self):
        v = self.header("grpc-status")
        return None if v is None else int(v)

    @property
    def grpc_message(self):
        v = self.header("grpc-message")
        if v is None:
            return None
        return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), v)

    def messages(self):
        out, d = [], self.data
        while len(d) >= 5:
            n = struct.unpack(">I", d[1:5])[0]
            out.append(d[5:5 + n])
            d = d[5 + n:]
        return out

    def __repr__(self):
        return "StreamResult(blocks=%r, data=%r, ended=%r, rst=%r)" % (
            self.blocks, self.data[:64], self.ended, self.rst)


class RawH2:
    """Just enough HTTP/2 to send hand-made frames and read the answers."""

    def __init__(self, addr, timeout=5):
        if addr.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(timeout)
            self.sock.connect(addr[5:])
        else:
            host, port = addr.rsplit(":", 1)
            self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout)
            # HEADERS and DATA go out as separate writes: don't let Nagle
            # and delayed ACKs add 40 ms to every call.
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.dec = HpackDecoder()
        self.streams = {}
        self.goaway = None            # (last_stream_id, error_code, debug)
        self.server_settings = {}
        self.frames = []              # every frame received: (type, flags, sid, payload)
        self._hblock = None           # (sid, bytes, end_stream) while CONTINUATIONs come

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def handshake(self, settings=b""):
        self.send(PREFACE + frame(SETTINGS, 0, 0, settings))

    def send_headers(self, sid, headers, end_stream=False, max_frame=16384, raw_block=None):
        block = raw_block if raw_block is not None else hpack_encode(headers)
        first, rest = block[:max_frame], block[max_frame:]
        flags = (END_STREAM if end_stream else 0) | (0 if rest else END_HEADERS)
        out = frame(HEADERS, flags, sid, first)
        while rest:
            chunk, rest = rest[:max_frame], rest[max_frame:]
            out += frame(CONTINUATION, 0 if rest else END_HEADERS, sid, chunk)
        self.send(out)
        self.streams.setdefault(sid, StreamResult())

    def send_data(self, sid, data, end_stream=True):
        self.send(frame(DATA, END_STREAM if end_stream else 0, sid, data))

    def send_rst(self, sid, code=8):  # 8 = CANCEL
        self.send(frame(RST_STREAM, 0, sid, struct.pack(">I", code)))

    def ping(self, timeout=5):
        """Round trip a PING: every frame sent before it has been processed."""
        data = os.urandom(8)
        self.send(frame(PING, 0, 0, data))
        f = self.wait_frame(lambda f: f[0] == PING and f[1] & ACK and f[3] == data, timeout)
        if f is None:
            raise AssertionError("no PING ack (eof=%s)" % self.eof)

    def grpc_call(self, sid, path, body=b"", extra=(), end_stream=True):
        """Send a whole request (HEADERS + one DATA frame)."""
        self.send_headers(sid, grpc_request_headers(path, extra))
        self.send_data(sid, body, end_stream)

    # -- reading
    def _recv(self, timeout):
        r, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not r:
            return False
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_frame(self, timeout=5):
        """The next frame, or None at EOF/timeout (self.eof tells which)."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            if len(self.buf) >= 9:
                n = struct.unpack(">I", b"\0" + self.buf[:3])[0]
                if len(self.buf) >= 9 + n:
                    ftype, flags = self.buf[3], self.buf[4]
                    sid = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
                    payload = self.buf[9:9 + n]
                    self.buf = self.buf[9 + n:]
                    f = (ftype, flags, sid, payload)
                    self.frames.append(f)
                    self._process(f)
                    return f
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0 or not self._recv(left):
                if self.eof:
                    continue
                return None

    def _quiet_send(self, data):
        try:
            self.send(data)
        except OSError:
            pass

    def _process(self, f):
        ftype, flags, sid, payload = f
        if ftype == SETTINGS and not flags & ACK:
            for i in range(0, len(payload) - 5, 6):
                k, v = struct.unpack(">HI", payload[i:i + 6])
                self.server_settings[k] = v
            self._quiet_send(frame(SETTINGS, ACK, 0))
        elif ftype == PING and not flags & ACK:
            self._quiet_send(frame(PING, ACK, 0, payload))
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaway = (last & 0x7FFFFFFF, code, payload[8:])
        elif ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                p = payload
                if flags & 0x8:  # PADDED
                    p = p[1:len(p) - p[0]]
                if flags & 0x20:  # PRIORITY
                    p = p[5:]
                self._hblock = (sid, p, bool(flags & END_STREAM))
            elif self._hblock is not None:
                self._hblock = (self._hblock[0], self._hblock[1] + payload, self._hblock[2])
            if flags & END_HEADERS and self._hblock is not None:
                s_id, block, end = self._hblock
                self._hblock = None
                st = self.streams.setdefault(s_id, StreamResult())
                st.blocks.append(self.dec.decode(block))
                if end:
                    st.ended = True
                    st.end_on_headers = True
        elif ftype == DATA:
            st = self.streams.setdefault(sid, StreamResult())
            p = payload
            if flags & 0x8:
                p = p[1:len(p) - p[0]]
            st.data += p
            if flags & END_STREAM:
                st.ended = True
            if payload:  # keep the windows open for long tests
                self._quiet_send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(payload))) +
                                 frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", len(payload))))
        elif ftype == RST_STREAM:
            st = self.streams.setdefault(sid, StreamResult())
            st.rst = struct.unpack(">I", payload[:4])[0]

    def wait_stream(self, sid, timeout=5):
        """Read until stream `sid` ends (END_STREAM or RST_STREAM) and return
        its StreamResult; AssertionError if the connection ends or the time
        runs out first."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            st = self.streams.get(sid)
            if st is not None and st.done:
                return st
            left = deadline - time.monotonic()
            if left <= 0 or (self.read_frame(left) is None and (self.eof or
                                                                 time.monotonic() >= deadline)):
                raise AssertionError(
                    "stream %d did not end (%s); got %r, goaway=%r" % (
                        sid, "connection closed" if self.eof else "timeout",
                        self.streams.get(sid), self.goaway))

    def wait_frame(self, pred, timeout=5):
        """Read until a frame satisfies pred (returned); None on EOF/timeout."""
        deadline = time.monotonic() + timeout * SLOW
        for f in self.frames:
            if pred(f):
                return f
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            f = self.read_frame(left)
            if f is None:
                if self.eof or time.monotonic() >= deadline:
                    return None
                continue
            if pred(f):
                return f

    def wait_eof(self, timeout=5):
        """True once the server closed the connection within timeout."""
        deadline = time.monotonic() + timeout * SLOW
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.read_frame(left)
        return True


# ---- the test case base ---------------------------------------------------------


class ReactordTestCase(unittest.TestCase):
    """Gives each test a fresh temp dir; start_reactord() writes a config
    there and starts reactord; everything is torn down after the test,
    whatever happened, and the test fails if a process survives."""

    maxDiff = None

    def setUp(self):
        if grpc is None:
            self.fail("python3-grpcio is not installed (contrib/deps.sh installs it)")
        self.tmp = tempfile.mkdtemp(prefix="t", dir=run_dir())
        self.servers = []
        self.redises = []
        self.addCleanup(self._final_checks)

    # -- config and processes
    def base_config(self, name="reactord"):
        state = os.path.join(self.tmp, name + "-state")
        return {
            "listen": ["127.0.0.1:0", "unix:" + os.path.join(self.tmp, name + ".sock")],
            "ready-file": os.path.join(self.tmp, name + ".ready"),
            "state-dir": state,
            "log": {"level": "info", "access-log": True},
            "redis": {"embedded": True, "server": REDIS_SERVER, "reconnect-max": "200ms",
                      "connect-timeout": "1s"},
            "http2": {"max-concurrent-streams": 1000, "max-header-list-size": "16KiB",
                      "idle-timeout": "5m"},
            "grpc": {"max-recv-message-size": "16MiB", "max-call-duration": "1h"},
            "shutdown-grace": "2s",
            "instances": [{"name": ""}],
        }

    def write_config(self, cfg, name="reactord"):
        path = os.path.join(self.tmp, name + ".yaml")
        with open(path, "w") as f:
            f.write(to_yaml(cfg) + "\n")
        return path

    def start_reactord(self, overrides=None, name="reactord", wait=True, cfg=None,
                       serving=True):
        """Write config (base_config deep-merged with overrides, or cfg as
        given) and start reactord; with wait, block until ready, and with
        serving too until health says SERVING (the ready-file can come a
        moment before the Redis connection is up: see TestStartup)."""
        if cfg is None:
            cfg = deep_merge(self.base_config(name), overrides or {})
        path = self.write_config(cfg, name)
        srv = Reactord(self.tmp, path, cfg.get("ready-file"), name)
        srv.cfg = cfg
        srv.state_dir = cfg["state-dir"]
        self.servers.append(srv)
        self.addCleanup(self._stop_server, srv)
        srv.start()
        if wait:
            srv.wait_ready()
            if serving:
                self.wait_health(srv, "SERVING")
        return srv

    def start_redis(self, name="ext-redis"):
        r = RedisServer(self.tmp, name)
        self.redises.append(r)
        self.addCleanup(r.kill)
        return r.start()

    def channel(self, target, *options):
        ch = channel(target, *options)
        self.addCleanup(ch.close)
        return ch

    def raw(self, addr, timeout=5):
        c = RawH2(addr, timeout)
        self.addCleanup(c.close)
        return c

    def assert_serving(self, srv, msg=""):
        """The server still answers a fresh grpcio Check with SERVING."""
        self.assertTrue(srv.running(), "reactord exited (%s) %s; log:\n%s"
                        % (srv.proc.returncode, msg, srv.log_tail()))
        ch = channel(srv.tcp_addr)
        try:
            r = health_check(ch)
        finally:
            ch.close()
        self.assertEqual(status_name(r.status), "SERVING", msg)

    def bounce_redis(self, srv):
        """SIGKILL the embedded redis-server and watch health go
        NOT_SERVING and back to SERVING after the respawn.  Walks the
        server's watcher list twice, so it also exposes watchers that were
        freed but left on the list."""
        ch = channel(srv.unix_addr)
        self.addCleanup(ch.close)
        w = health_watch(ch, "", timeout=20 * SLOW)
        try:
            self.assertEqual(status_name(next(w).status), "SERVING")
            os.kill(srv.redis_pid(srv.state_dir), signal.SIGKILL)
            self.assertEqual(status_name(next(w).status), "NOT_SERVING")
            self.assertEqual(status_name(next(w).status), "SERVING")
        finally:
            w.cancel()
        self.assertTrue(srv.running(), "reactord died on a health change; log:\n"
                        + srv.log_tail())

    def wait_health(self, srv, want, timeout=10, target=None):
        """Poll Check (short intervals, hard deadline) until it says want."""
        ch = channel(target or srv.tcp_addr)
        self.addCleanup(ch.close)
        seen = []

        def ok():
            try:
                st = status_name(health_check(ch, timeout=1).status)
            except grpc.RpcError as e:
                st = str(e.code())
            if not seen or seen[-1] != st:
                seen.append(st)
            return st == want
        try:
            wait_for(ok, timeout, "health %s" % want, 0.02)
        except AssertionError as e:
            raise AssertionError("%s (saw %s); log:\n%s" % (e, seen, srv.log_tail()))

    # -- teardown
    def _stop_server(self, srv):
        if srv.proc is None:
            return
        was_running = srv.running()
        rc = srv.stop()
        log = srv.log()
        san = SANITIZER_RE.search(log)
        if san:
            self.fail("%s: sanitizer report in the log:\n%s" % (srv.name, srv.log_tail(80)))
        if srv.expected_rc is not None:
            self.assertEqual(rc, srv.expected_rc, "%s exited %s (%s); log:\n%s" % (
                srv.name, rc, "after SIGTERM" if was_running else "on its own",
                srv.log_tail()))

    def _final_checks(self):
        strays = procs_with(self.tmp)
        for pid, _ in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if strays:
            wait_for(lambda: not procs_with(self.tmp), 10, "stray processes to die")
        shutil.rmtree(self.tmp, ignore_errors=True)
        if strays:
            self.fail("processes still running after the test (killed now): %s" % strays)

    def dump_logs(self, stream):
        for srv in getattr(self, "servers", []):
            stream.write("---- %s log (last 60 lines) ----\n%s\n" % (srv.name, srv.log_tail()))


# ---- main ----------------------------------------------------------------------


class _Result(unittest.TextTestResult):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.bad = set()
        self.dumped = set()
        self.durations = {}

    def startTest(self, test):
        self._t0 = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        self.durations[test.id()] = time.monotonic() - self._t0

    def _dump(self, test):
        if test.id() in self.dumped:
            return
        self.dumped.add(test.id())
        if hasattr(test, "dump_logs"):
            test.dump_logs(self.stream)
            self.stream.flush()

    def addError(self, test, err):
        super().addError(test, err)
        self.bad.add(test.id())
        self._dump(test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.bad.add(test.id())
        self._dump(test)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.bad.add(test.id())
            self._dump(test)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.bad.add(test.id())


def main(module="__main__"):
    if grpc is None:
        print("python3-grpcio is missing: install it (contrib/deps.sh)")
        print("0 passed, 1 failed")
        sys.exit(99)
    for what, path in (("REACTORD", REACTORD), ("REACTORCTL", REACTORCTL),
                       ("REDIS_SERVER", REDIS_SERVER)):
        if not path or not os.access(path, os.X_OK):
            print("%s=%r is not an executable" % (what, path))
            print("0 passed, 1 failed")
            sys.exit(99)
    t0 = time.monotonic()
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[module])
    if len(sys.argv) > 1:  # run only tests whose id contains an argument
        keep = sys.argv[1:]
        flat = []

        def walk(s):
            for t in s:
                if isinstance(t, unittest.TestSuite):
                    walk(t)
                elif any(k in t.id() for k in keep):
                    flat.append(t)
        walk(suite)
        suite = unittest.TestSuite(flat)
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=_Result)
    try:
        res = runner.run(suite)
    finally:
        leftovers = procs_with(RUN_DIR) if RUN_DIR else []
        for pid, _ in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if RUN_DIR:
            shutil.rmtree(RUN_DIR, ignore_errors=True)
    failed = len(res.bad)
    if leftovers:
        print("stray processes at exit (killed): %s" % leftovers)
        failed += 1
    skipped = len(res.skipped)
    passed = max(0, res.testsRun - skipped - len(res.bad) - len(res.expectedFailures))
    slow = sorted(res.durations.items(), key=lambda kv: -kv[1])[:5]
    print("slowest: " + ", ".join("%s %.1fs" % (k.rsplit(".", 1)[-1], v) for k, v in slow))
    print("total time %.1fs" % (time.monotonic() - t0))
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    sys.stdout.flush()
    sys.exit(1 if failed else 0)


def bazel_summary(output):
    """Bazel's process summary, e.g. {"remote cache hit": 3, "internal": 1,
    "total": 4} from "INFO: 4 processes: 3 remote cache hit, 1 internal."."""
    m = re.search(r"INFO: (\d+) process(?:es)?(?:: (.*?))?\.?$", output, re.M)
    if not m:
        raise AssertionError("no process summary in Bazel's output:\n" + output[-3000:])
    out = {"total": int(m.group(1))}
    for part in (m.group(2) or "").split(","):
        part = part.strip().rstrip(".")
        if part:
            n, kind = part.split(" ", 1)
            out[kind] = int(n)
    return out
