#!/usr/bin/python3
"""test_tls.py - TLS listeners, client certificates, certificate rotation by
SIGHUP, the refusal of an insecure public listener and listener services.

Certificates are made by the openssl CLI in the run's temp dir (never
committed): a CA, a server certificate for 127.0.0.1/localhost, client
certificates that are good (URI SAN; CN only), expired, and signed by an
unknown CA, and a second server certificate for the rotation.  grpcio
speaks TLS with ssl_channel_credentials; Python's ssl module looks at what
certificate a new connection is served; Bazel builds with
--remote_cache=grpcs://... --tls_certificate.

Run by `make check`; by hand: /usr/bin/python3 t/integ/test_tls.py
"""

import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import testbot as tb  # noqa: E402
from harness import pb  # noqa: E402
from test_worker import make_action  # noqa: E402

WORKER = os.path.join(os.path.dirname(h.REACTORD), "reactor-worker")

BAZEL = h.BAZEL

_CERTS = None


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise AssertionError("openssl %s failed:\n%s" % (" ".join(args), r.stdout))


def _issue(d, name, ca, subj, days=30, san=None, serial=1):
    """name.key + name.pem signed by ca ("ca" or "other"), or self-signed
    when ca is None (a CA)."""
    key, pem = name + ".key", name + ".pem"
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key]
    if ca is None:
        _openssl("req", "-x509", *newkey, "-out", pem, "-days", str(days), "-subj", subj,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        return
    _openssl("req", *newkey, "-out", name + ".csr", "-subj", subj, cwd=d)
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\n")
        if san:
            f.write("subjectAltName=%s\n" % san)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
             "-set_serial", str(serial), "-days", str(days), "-extfile", ext, "-out", pem, cwd=d)


def certs():
    """The run's certificates (made once): a dict name -> path prefix."""
    global _CERTS
    if _CERTS is None:
        d = os.path.join(h.run_dir(), "certs")
        os.makedirs(d, exist_ok=True)
        _issue(d, "ca", None, "/CN=reactord test CA")
        _issue(d, "other", None, "/CN=unknown CA")
        _issue(d, "server", "ca", "/CN=server-one", san="IP:127.0.0.1,DNS:localhost",
               serial=0x1001)
        _issue(d, "server2", "ca", "/CN=server-two", san="IP:127.0.0.1,DNS:localhost",
               serial=0x2002)
        _issue(d, "ci", "ca", "/CN=ci-runner", san="URI:spiffe://reactor.test/ci,DNS:ci.test",
               serial=0x11)
        _issue(d, "alice", "ca", "/CN=dev-alice", serial=0x12)
        # -days -1: its notAfter is a day ago.
        _issue(d, "expired", "ca", "/CN=expired", days=-1, serial=0x13)
        _issue(d, "stranger", "other", "/CN=stranger", serial=0x14)
        _CERTS = {n: os.path.join(d, n) for n in
                  ("ca", "other", "server", "server2", "ci", "alice", "expired", "stranger")}
    return _CERTS


def read(path):
    with open(path, "rb") as f:
        return f.read()


def tls_channel(target, client=None):
    c = certs()
    creds = h.grpc.ssl_channel_credentials(
        root_certificates=read(c["ca"] + ".pem"),
        private_key=read(c[client] + ".key") if client else None,
        certificate_chain=read(c[client] + ".pem") if client else None)
    return h.grpc.secure_channel(target, creds, options=h.CHANNEL_OPTS)


def served_cert(addr, alpn=("h2",)):
    """The certificate a new TLS connection to addr is served (Python's
    ssl module, ALPN h2), as getpeercert()'s dict."""
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=certs()["ca"] + ".pem")
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    with socket.create_connection((host, int(port)), timeout=5 * h.SLOW) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return t.getpeercert()


def cn(cert):
    return dict(x[0] for x in cert["subject"])["commonName"]


def tls_listen(client_auth=None, cert="server", **extra):
    c = certs()
    tls = {"cert": c[cert] + ".pem", "key": c[cert] + ".key"}
    if client_auth:
        tls["client-ca"] = c["ca"] + ".pem"
        tls["client-auth"] = client_auth
    return dict({"address": "127.0.0.1:0", "tls": tls}, **extra)


class TlsCase(h.ReactordTestCase):
    def start_tls(self, client_auth=None, cert="server", extra_listen=()):
        """reactord with a plaintext 127.0.0.1 listener (addrs[0], for the
        harness's health checks), a TLS one (addrs[1]) and a unix socket."""
        cfg = self.base_config()
        cfg["listen"] = ["127.0.0.1:0", tls_listen(client_auth, cert), cfg["listen"][1],
                         *extra_listen]
        srv = self.start_reactord(cfg=cfg)
        return srv, srv.addrs[1]

    def caps_ok(self, ch):
        r = h.get_capabilities(ch)
        self.assertTrue(r.cache_capabilities.digest_functions)

    def caps_fail(self, ch):
        e = h.rpc_error(h.get_capabilities, ch)
        self.assertEqual(e.code(), h.grpc.StatusCode.UNAVAILABLE, e)
        return e


class TestTls(TlsCase):
    def test_tls_and_plaintext_listeners_together(self):
        srv, taddr = self.start_tls()
        self.assertRegex(srv.log(), r"%s: serving TLS with subject CN ?= ?server-one, serial 1001"
                         % re.escape(taddr))
        ch = tls_channel(taddr)
        self.addCleanup(ch.close)
        self.caps_ok(ch)
        # CAS over TLS: upload, find, read back.
        re_ = h.pb().re
        import hashlib
        blob = b"over TLS\n" * 100
        dg = re_.Digest(hash=hashlib.sha256(blob).hexdigest(), size_bytes=len(blob))
        cas = "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
        up = h.unary(ch, cas + "BatchUpdateBlobs", re_.BatchUpdateBlobsRequest,
                     re_.BatchUpdateBlobsResponse)(re_.BatchUpdateBlobsRequest(
                         requests=[re_.BatchUpdateBlobsRequest.Request(digest=dg, data=blob)]),
                         timeout=10 * h.SLOW)
        self.assertEqual(up.responses[0].status.code, 0)
        miss = h.unary(ch, cas + "FindMissingBlobs", re_.FindMissingBlobsRequest,
                       re_.FindMissingBlobsResponse)(re_.FindMissingBlobsRequest(
                           blob_digests=[dg]), timeout=10 * h.SLOW)
        self.assertEqual(list(miss.missing_blob_digests), [])
        rd = h.unary(ch, cas + "BatchReadBlobs", re_.BatchReadBlobsRequest,
                     re_.BatchReadBlobsResponse)(re_.BatchReadBlobsRequest(digests=[dg]),
                                                 timeout=10 * h.SLOW)
        self.assertEqual(rd.responses[0].data, blob)
        # The plaintext listener and the unix socket still speak h2c.
        self.caps_ok(self.channel(srv.addrs[0]))
        self.caps_ok(self.channel(srv.unix_addr))
        # No client certificate asked for: no identity.
        srv.wait_log(r"TLS TLSv1\.[23] \S+ from 127\.0\.0\.1:\d+ identity=-")
        # A plaintext client on the TLS port fails; the server keeps serving.
        self.caps_fail(self.channel(taddr))
        self.caps_ok(ch)

    def test_alpn_h2_is_required(self):
        srv, taddr = self.start_tls()
        self.assertEqual(cn(served_cert(taddr)), "server-one")
        # Offering only http/1.1: the handshake fails (no_application_protocol).
        with self.assertRaises(ssl.SSLError) as e:
            served_cert(taddr, alpn=("http/1.1",))
        self.assertIn("NO APPLICATION PROTOCOL", str(e.exception).upper().replace("_", " "))
        # Offering no ALPN at all: closed right after the handshake.
        mark = srv.log_mark()
        host, port = taddr.rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=certs()["ca"] + ".pem")
        with socket.create_connection((host, int(port)), timeout=5 * h.SLOW) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                try:
                    data = t.recv(100)
                except (ssl.SSLError, OSError):
                    data = b""
                self.assertEqual(data, b"")
        srv.wait_log(r"closed: TLS client did not negotiate ALPN h2", since=mark)
        self.caps_ok(tls_channel(taddr))

    def test_mtls_require(self):
        srv, taddr = self.start_tls("require")
        ch = tls_channel(taddr, "ci")
        self.addCleanup(ch.close)
        self.caps_ok(ch)
        # The identity: URI SAN first (this certificate also has a DNS SAN and a CN).
        srv.wait_log(r"TLS TLSv1\.[23] \S+ from 127\.0\.0\.1:\d+ identity=spiffe://reactor\.test/ci\n")
        ch2 = tls_channel(taddr, "alice")
        self.addCleanup(ch2.close)
        self.caps_ok(ch2)
        srv.wait_log(r"identity=dev-alice\n")  # no SAN: the subject CN
        for client, why in (("expired", "certificate has expired"),
                            ("stranger", "unable to get local issuer certificate"),
                            (None, "peer did not return a certificate")):
            with self.subTest(client=client):
                mark = srv.log_mark()
                bad = tls_channel(taddr, client)
                self.addCleanup(bad.close)
                self.caps_fail(bad)
                srv.wait_log(r"closed: TLS: .*%s" % re.escape(why), since=mark)
        self.caps_ok(ch)

    def test_mtls_optional(self):
        srv, taddr = self.start_tls("optional")
        mark = srv.log_mark()
        anon = tls_channel(taddr)
        self.addCleanup(anon.close)
        self.caps_ok(anon)
        srv.wait_log(r"identity=-\n", since=mark)
        ci = tls_channel(taddr, "ci")
        self.addCleanup(ci.close)
        self.caps_ok(ci)
        srv.wait_log(r"identity=spiffe://reactor\.test/ci\n")
        # A certificate that is presented must verify, even here.
        for client in ("expired", "stranger"):
            with self.subTest(client=client):
                bad = tls_channel(taddr, client)
                self.addCleanup(bad.close)
                self.caps_fail(bad)
        self.caps_ok(anon)

    def test_sighup_rotates_certificate_keeping_connections(self):
        c = certs()
        live = os.path.join(self.tmp, "live")
        os.mkdir(live)
        for ext in (".pem", ".key"):
            shutil.copy(c["server"] + ext, os.path.join(live, "srv" + ext))
        cfg = self.base_config()
        cfg["listen"] = ["127.0.0.1:0", {"address": "127.0.0.1:0", "tls": {
            "cert": os.path.join(live, "srv.pem"), "key": os.path.join(live, "srv.key")}}]
        srv = self.start_reactord(cfg=cfg)
        taddr = srv.addrs[1]
        old = tls_channel(taddr)
        self.addCleanup(old.close)
        self.caps_ok(old)
        self.assertEqual(cn(served_cert(taddr)), "server-one")
        accepted = len(re.findall(r"accepted from", srv.log()))

        # Rotate: new files in place, then SIGHUP.
        for ext in (".pem", ".key"):
            shutil.copy(c["server2"] + ext, os.path.join(live, "srv" + ext + ".new"))
            os.rename(os.path.join(live, "srv" + ext + ".new"), os.path.join(live, "srv" + ext))
        mark = srv.log_mark()
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"%s: reloaded TLS: subject CN ?= ?server-two, serial 2002"
                     % re.escape(taddr), since=mark)
        new = served_cert(taddr)
        self.assertEqual(cn(new), "server-two")
        self.assertEqual(new["serialNumber"], "2002")
        # The connection opened before the rotation is still the same one and works.
        n_acc = len(re.findall(r"accepted from", srv.log()))
        self.caps_ok(old)
        self.assertEqual(len(re.findall(r"accepted from", srv.log())), n_acc)
        self.assertGreater(n_acc, accepted)  # served_cert's connections

        # A broken certificate: the old one stays, an error is logged.
        with open(os.path.join(live, "srv.pem"), "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        mark = srv.log_mark()
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"%s: TLS reload failed, keeping the previous certificate: tls\.cert "
                     % re.escape(taddr), since=mark)
        self.assertEqual(cn(served_cert(taddr)), "server-two")
        self.caps_ok(old)
        self.caps_ok(tls_channel(taddr))


class TestSelfTarget(TlsCase):
    """Local workers and the master reach their own reactord through a unix
    socket, else a plaintext listener, never by dialing a TLS one in clear,
    whichever listener comes first."""

    def boot(self, listen):
        cfg = self.base_config()
        cfg["listen"] = listen
        cfg.update({"instances": [{"name": "", "execution": True, "storage": "memory"}],
                    "workers": {"local": 1},
                    "master": {"buckets": ["ci"], "builders": {
                        "t": {"steps": [{"name": "s", "argv": ["true"], "cache": False}]}}}})
        return self.start_reactord(cfg=cfg, serving=False)

    def test_unix_socket_first(self):
        unix = self.base_config()["listen"][1]
        srv = self.boot([tls_listen(), "127.0.0.1:0", unix])
        srv.wait_log(r"local worker\(s\) on %s " % re.escape(unix), 10)
        srv.wait_log(r"buckets at %s, executor at %s" % (re.escape(unix), re.escape(unix)), 10)

    def test_plaintext_before_tls(self):
        srv = self.boot([tls_listen(), "127.0.0.1:0"])
        plain = srv.addrs[1]
        srv.wait_log(r"local worker\(s\) on %s " % re.escape(plain), 10)
        srv.wait_log(r"buckets at %s, executor at %s" % (re.escape(plain), re.escape(plain)), 10)
        self.wait_health(srv, "SERVING", target=plain)


class TestListenerPolicy(TlsCase):
    def run_reactord(self, cfg, *args):
        path = self.write_config(cfg)
        return subprocess.run([h.REACTORD, "-c", path, *args], cwd=self.tmp,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=30 * h.SLOW)

    def test_insecure_public_listener_is_refused(self):
        addrs = ["0.0.0.0:0", "[::]:0"]
        # A non-loopback address of this machine, when it has one.
        r = subprocess.run(["hostname", "-I"], stdout=subprocess.PIPE, text=True)
        ips = [a for a in r.stdout.split() if ":" not in a and not a.startswith("127.")]
        if ips:
            addrs.append(ips[0] + ":0")
        for addr in addrs:
            with self.subTest(addr=addr):
                cfg = self.base_config()
                cfg["listen"] = [cfg["listen"][1], addr]
                for args in ((), ("-t",)):
                    r = self.run_reactord(cfg, *args)
                    self.assertEqual(r.returncode, 1, r)
                    lines = r.stderr.splitlines()
                    self.assertEqual(len(lines), 1, r.stderr)
                    self.assertRegex(lines[0], r"^reactord: .*: listen\[1\] %s is plaintext and "
                                     r"unauthenticated on a non-loopback address: refusing to "
                                     r"start \(use tls: with client-auth: require, or set "
                                     r"insecure: true on this listener\)$"
                                     % re.escape(addr))
                self.assertFalse(os.path.exists(cfg["ready-file"]))
        # Loopback, localhost and unix sockets are fine.
        cfg = self.base_config()
        cfg["listen"] = ["localhost:0", "[::1]:0", "127.0.0.2:0", cfg["listen"][1]]
        r = self.run_reactord(cfg, "-t")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_unauthenticated_public_tls_listener_is_refused(self):
        # TLS without client certificates, and no auth: section (everyone
        # is anonymous with every role): refused beyond loopback.
        cfg = self.base_config()
        cfg["listen"] = [cfg["listen"][1], tls_listen(address="0.0.0.0:0")]
        r = self.run_reactord(cfg, "-t")
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.stderr.strip(),
                         "reactord: %s: listen[1] 0.0.0.0:0 is TLS but unauthenticated on a "
                         "non-loopback address (no client-auth: require, and no auth: section "
                         "that refuses callers without credentials): refusing to start (or "
                         "set insecure: true on this listener)" % self.write_config(cfg))
        # client-auth: optional is not enough on its own, nor an auth:
        # section that gives anonymous callers roles.
        cfg["listen"][1] = tls_listen("optional", address="0.0.0.0:0")
        cfg["auth"] = {"anonymous": ["cas-read"]}
        self.assertEqual(self.run_reactord(cfg, "-t").returncode, 1)
        # Accepted: an auth: section that requires credentials, one whose
        # anonymous callers hold no role, or insecure: true.
        for auth, extra in (({"require": True}, {}), ({}, {}),
                            (None, {"insecure": True})):
            with self.subTest(auth=auth, extra=extra):
                cfg = self.base_config()
                cfg["listen"] = [cfg["listen"][1], tls_listen(address="0.0.0.0:0", **extra)]
                if auth is not None:
                    cfg["auth"] = auth
                r = self.run_reactord(cfg, "-t")
                self.assertEqual(r.returncode, 0, r.stderr)

    def test_insecure_true_and_mtls_are_accepted(self):
        cfg = self.base_config()
        cfg["listen"] = [{"address": "0.0.0.0:0", "insecure": True},
                         tls_listen("require", address="0.0.0.0:0"), cfg["listen"][1]]
        srv = self.start_reactord(cfg=cfg, serving=False)
        port = srv.addrs[0].rsplit(":", 1)[1]
        self.wait_health(srv, "SERVING", target="127.0.0.1:" + port)
        tport = srv.addrs[1].rsplit(":", 1)[1]
        self.caps_ok(self.channel("127.0.0.1:" + port))
        ch = tls_channel("127.0.0.1:" + tport, "ci")
        self.addCleanup(ch.close)
        self.caps_ok(ch)

    def test_services_restriction(self):
        cfg = self.base_config()
        cfg["listen"] = ["127.0.0.1:0",
                         {"address": "127.0.0.1:0", "services": ["capabilities", "cas",
                                                                 "google.bytestream.ByteStream"]},
                         tls_listen(services=["bots"]), cfg["listen"][1]]
        srv = self.start_reactord(cfg=cfg)
        limited = self.channel(srv.addrs[1])
        self.caps_ok(limited)
        e = h.rpc_error(h.health_check, limited)
        self.assertEqual(e.code(), h.grpc.StatusCode.PERMISSION_DENIED)
        self.assertEqual(e.details(), "service grpc.health.v1.Health is not served on this "
                         "listener")
        bots_only = tls_channel(srv.addrs[2])
        self.addCleanup(bots_only.close)
        e = h.rpc_error(h.get_capabilities, bots_only)
        self.assertEqual(e.code(), h.grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("build.bazel.remote.execution.v2.Capabilities is not served", e.details())
        # Unrestricted listeners serve everything.
        self.assertEqual(h.status_name(h.health_check(self.channel(srv.unix_addr)).status),
                         "SERVING")
        self.caps_ok(self.channel(srv.addrs[0]))

    def test_config_errors(self):
        c = certs()
        base = self.base_config()
        cases = [
            ({"address": "127.0.0.1:0", "tls": {"cert": c["server"] + ".pem"}},
             r"listen\[0\]\.tls: missing required key \"key\""),
            (tls_listen(client_auth="require") | {"tls": {"cert": c["server"] + ".pem",
                                                          "key": c["server"] + ".key",
                                                          "client-auth": "require"}},
             r"listen\[0\]\.tls\.client-auth: require needs client-ca"),
            ({"address": "127.0.0.1:0", "services": ["cas", "nope"]},
             r"listen\[0\]\.services\[1\]: unknown service; expected one of capabilities, cas"),
            ({"address": "127.0.0.1:0", "insecure": "maybe"},
             r"listen\[0\]\.insecure: expected a boolean"),
            ({"adress": "127.0.0.1:0"}, r"listen\[0\]\.adress: unknown key"),
            ({"address": "127.0.0.1:99999"},
             r"listen\[0\]\.address: port 99999 out of range"),
        ]
        for entry, want in cases:
            with self.subTest(want=want):
                cfg = dict(base, listen=[entry])
                r = self.run_reactord(cfg, "-t")
                self.assertEqual(r.returncode, 1, r)
                self.assertRegex(r.stderr, r"reactord: \S+\.yaml:\d+:\d+: " + want)
        # Files that do not load: named in the message, before anything starts.
        cfg = dict(base, listen=[tls_listen(cert="server") | {"tls": {
            "cert": c["server"] + ".pem", "key": c["ci"] + ".key"}}])
        r = self.run_reactord(cfg, "-t")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("tls.key %s: " % (c["ci"] + ".key"), r.stderr)
        self.assertIn("key values mismatch", r.stderr)
        cfg = dict(base, listen=[{"address": "127.0.0.1:0", "tls": {
            "cert": os.path.join(self.tmp, "missing.pem"), "key": c["ci"] + ".key"}}])
        r = self.run_reactord(cfg)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("tls.cert %s" % os.path.join(self.tmp, "missing.pem"), r.stderr)


class TestBazelTls(TlsCase):
    @unittest.skipUnless(BAZEL, "SKIP: bazel not found in PATH")
    def test_bazel_remote_cache_over_tls(self):
        srv, taddr = self.start_tls()
        port = taddr.rsplit(":", 1)[1]
        ws, env, startup = h.bazel_setup(self.tmp)
        build = ["build", "--noshow_progress", "--color=no", "--curses=no",
                 "--spawn_strategy=local", "--repository_cache=",
                 "--remote_cache=grpcs://localhost:" + port,
                 "--tls_certificate=" + certs()["ca"] + ".pem",
                 "--remote_timeout=60", "//:all"]

        def bazel(*args):
            r = subprocess.run(startup + list(args), cwd=ws, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=150 * h.SLOW)
            if r.returncode != 0 and client_lacks_alpn():
                self.skipTest("SKIP: this Bazel cannot speak TLS at all: its Netty finds no "
                              "ALPN in the JDK (\"JDK provider does not support ALPN "
                              "protocol\" in java.log, before any connection)")
            self.assertEqual(r.returncode, 0, "bazel %s failed:\n%s\nreactord log:\n%s" % (
                " ".join(args), r.stdout[-4000:], srv.log_tail(30)))
            return r.stdout

        def client_lacks_alpn():
            ub = os.path.join(self.tmp, "ubase")
            for root, _, files in os.walk(ub):
                for f in files:
                    if f.startswith("java.log"):
                        with open(os.path.join(root, f), errors="replace") as fh:
                            if "JDK provider does not support ALPN protocol" in fh.read():
                                return not re.search(r"conn=\d+ (TLS |closed: TLS)", srv.log())
            return False

        first = h.bazel_summary(bazel(*build))
        self.assertEqual(first.get("remote cache hit", 0), 0, first)
        bazel("clean")
        second = h.bazel_summary(bazel(*build))
        self.assertEqual(second.get("local", 0), 0, second)
        self.assertGreater(second.get("remote cache hit", 0), 0, second)
        # Bazel's connections were TLS ones on the TLS listener.
        srv.wait_log(r"TLS TLSv1\.[23] \S+ from 127\.0\.0\.1:\d+ identity=-")


class TestRemoteWorker(TlsCase):
    """End to end: a reactor-worker on "another machine" reaches reactord
    only through a TLS listener that wants client certificates, proves who
    it is with a token, and runs an action a CI identity submitted over
    TLS with its own token; neither token reaches a log."""

    WTOKEN = "worker-Secret-token-0123456789"
    CTOKEN = "ci-Secret-token-9876543210"

    def start_worker(self, addr, token, name):
        c = certs()
        tf = os.path.join(self.tmp, name + ".token")
        with open(tf, "w") as f:
            f.write(token + "\n")
        log = os.path.join(self.tmp, name + ".log")
        with open(log, "w") as lf:
            w = subprocess.Popen(
                [WORKER, "-s", "grpcs://" + addr, "-n", name, "-d",
                 os.path.join(self.tmp, name + "-wd"), "-S", "none", "--tls-ca", c["ca"] + ".pem",
                 "--tls-cert", c["ci"] + ".pem", "--tls-key", c["ci"] + ".key",
                 "--token-file", tf], stdout=lf, stderr=subprocess.STDOUT)

        def stop():
            if w.poll() is None:
                w.terminate()
                w.wait(10)
        self.addCleanup(stop)
        return log

    def test_worker_and_client_over_mtls_with_tokens(self):
        tokens = os.path.join(self.tmp, "tokens")
        with open(tokens, "w") as f:
            for tok, ident, roles in ((self.WTOKEN, "remote-worker", "bot cas-read cas-write"),
                                      (self.CTOKEN, "ci", "execute cas-read cas-write ac-read")):
                f.write("%s %s %s\n" % (hashlib.sha256(tok.encode()).hexdigest(), ident, roles))
        cfg = self.base_config()
        cfg["listen"] = ["127.0.0.1:0", tls_listen("require"), cfg["listen"][1]]
        cfg.update({"auth": {"tokens-file": tokens},
                    "instances": [{"name": "", "execution": True, "storage": "memory"}],
                    "scheduler": {"long-poll": "5s"}})
        srv = self.start_reactord(cfg=cfg)
        taddr = srv.addrs[1]
        # A worker whose token lacks `bot` is refused, naming the role.
        bad = self.start_worker(taddr, self.CTOKEN, "nobot")
        h.wait_for(lambda: "lacks role bot" in open(bad).read(), 15 * h.SLOW,
                   "the refusal of a worker without the bot role")
        wlog = self.start_worker(taddr, self.WTOKEN, "remote1")
        c = certs()
        creds = h.grpc.composite_channel_credentials(
            h.grpc.ssl_channel_credentials(root_certificates=read(c["ca"] + ".pem"),
                                           private_key=read(c["alice"] + ".key"),
                                           certificate_chain=read(c["alice"] + ".pem")),
            h.grpc.access_token_call_credentials(self.CTOKEN))
        ch = h.grpc.secure_channel(taddr, creds, options=h.CHANNEL_OPTS)
        self.addCleanup(ch.close)
        d, blobs = make_action(["/bin/sh", "-c", "echo over-tls"])
        tb.upload(ch, blobs)
        ops = tb.run_to_end(tb.execute(ch, d, skip_cache=True, timeout=60 * h.SLOW))
        res = tb.op_response(ops[-1])
        self.assertEqual(res.status.code, 0, res.status)
        self.assertEqual(res.result.exit_code, 0)
        self.assertEqual(res.result.execution_metadata.worker, "remote1")
        re_ = pb().re
        got = h.unary(ch, tb.CAS_UPDATE.replace("BatchUpdateBlobs", "BatchReadBlobs"),
                      re_.BatchReadBlobsRequest, re_.BatchReadBlobsResponse)(
            re_.BatchReadBlobsRequest(digests=[res.result.stdout_digest]), timeout=10)
        self.assertEqual(got.responses[0].data, b"over-tls\n")
        log = srv.log()
        self.assertRegex(log, r"method=/google.devtools.remoteworkers.v1test2.Bots/\S+ .*"
                         r"identity=remote-worker")
        self.assertRegex(log, r"method=/build.bazel.remote.execution.v2.Execution/Execute .*"
                         r"identity=ci")
        for text in (log, open(wlog).read(), open(bad).read()):
            self.assertNotIn(self.WTOKEN, text)
            self.assertNotIn(self.CTOKEN, text)


if __name__ == "__main__":
    h.main()
