#!/usr/bin/env python3
"""test_tls_client.py - the client side of TLS and bearer tokens (issue 12).

reactorctl and reactor-worker against a peer we did not write: a grpcio
server in this process (grpc.ssl_server_credentials, with a client CA and
require_client_auth for mTLS) that implements Health.Check and
Capabilities.GetCapabilities and records each call's metadata and peer
certificate.  Certificates are made per test run with the openssl CLI in
the temp dir: a CA, a server certificate for 127.0.0.1/localhost, one for
another name, a second CA with its own server and client certificates, and
a client certificate of the first CA.

What must hold: the right CA works and a wrong one fails with a clear
message and exit status 1; a name mismatch fails unless --tls-server-name
names what the certificate says; mTLS works with a client certificate and
fails without one or with one of an unknown CA; a TLS client meets a
plaintext server or one without ALPN h2 with a clear error; the token
arrives exactly as "authorization: Bearer xyz" on every call and appears
in none of reactorctl's or reactor-worker's output, even at debug level;
unusable TLS or token files are refused up front (exit status 2).
"""

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import grpc, pb  # noqa: E402

WORKER = os.environ.get("REACTOR_WORKER") or os.path.join(
    os.path.dirname(harness.REACTORCTL), "reactor-worker")
TOKEN = "xyz-Secret.Token_42"


def openssl(*args, cwd):
    r = subprocess.run(("openssl",) + args, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("openssl %s failed: %s" % (" ".join(args), r.stderr))


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
            "-subj", "/CN=" + name, cwd=d)


def make_cert(d, name, ca, cn, san, usage):
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        if san:
            f.write("subjectAltName=%s\n" % san)
        f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                "extendedKeyUsage=%s\n" % usage)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=d)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", ext, cwd=d)


class Peer:
    """A grpcio server on 127.0.0.1:0 answering Health.Check (SERVING)
    and Capabilities.GetCapabilities, recording (method, metadata, peer CN)
    for every call."""

    def __init__(self, creds=None):
        self.calls = []
        self.lock = threading.Lock()
        P = pb()

        def record(method, ctx):
            cn = ctx.auth_context().get("x509_common_name")
            with self.lock:
                self.calls.append((method, tuple(ctx.invocation_metadata()),
                                   cn[0].decode() if cn else None))

        def check(req, ctx):
            record("Check", ctx)
            return P.health.HealthCheckResponse(status=P.health.HealthCheckResponse.SERVING)

        def caps(req, ctx):
            record("GetCapabilities", ctx)
            re = P.re
            return re.ServerCapabilities(
                cache_capabilities=re.CacheCapabilities(
                    digest_functions=[re.DigestFunction.SHA256],
                    max_batch_total_size_bytes=4 << 20),
                execution_capabilities=re.ExecutionCapabilities(exec_enabled=True))

        def unary(fn, req, resp):
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.FromString,
                response_serializer=resp.SerializeToString)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
                "Check": unary(check, P.health.HealthCheckRequest,
                               P.health.HealthCheckResponse)}),
            grpc.method_handlers_generic_handler("build.bazel.remote.execution.v2.Capabilities", {
                "GetCapabilities": unary(caps, P.re.GetCapabilitiesRequest,
                                         P.re.ServerCapabilities)}),
        ))
        if creds is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        self.server.start()

    def stop(self):
        self.server.stop(None)

    def snapshot(self):
        with self.lock:
            return list(self.calls)


class NoAlpnPeer:
    """A TLS server (Python's ssl) that offers no ALPN: it completes the
    handshake and then just holds the connection."""

    def __init__(self, cert, key):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.ctx = ctx
        self.conns = []
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                self.conns.append(self.ctx.wrap_socket(c, server_side=True))
            except (OSError, ssl.SSLError):
                c.close()

    def stop(self):
        self.sock.close()
        for c in self.conns:
            c.close()


class TestTlsClient(harness.ReactordTestCase):
    @classmethod
    def setUpClass(cls):
        d = cls.certs = os.path.join(harness.run_dir(), "certs")
        os.makedirs(d, exist_ok=True)
        make_ca(d, "ca")
        make_ca(d, "otherca")
        make_cert(d, "server", "ca", "localhost", "DNS:localhost,IP:127.0.0.1", "serverAuth")
        make_cert(d, "named", "ca", "build.example", "DNS:build.example", "serverAuth")
        make_cert(d, "client", "ca", "ci-bot", None, "clientAuth")
        make_cert(d, "stranger", "otherca", "stranger", None, "clientAuth")

    def f(self, name):
        return os.path.join(self.certs, name)

    def read(self, name):
        with open(self.f(name), "rb") as fh:
            return fh.read()

    def peer(self, cert="server", client_ca=None, plaintext=False):
        creds = None
        if not plaintext:
            creds = grpc.ssl_server_credentials(
                [(self.read(cert + ".key"), self.read(cert + ".pem"))],
                root_certificates=self.read(client_ca + ".pem") if client_ca else None,
                require_client_auth=bool(client_ca))
        p = Peer(creds)
        self.addCleanup(p.stop)
        return p

    def ctl(self, target, *args, env=None, timeout=20):
        e = dict(os.environ)
        e.pop("REACTOR_TOKEN_FILE", None)
        e.update(env or {})
        r = subprocess.run([harness.REACTORCTL, "-s", target, "-T", "10s"] + list(args),
                           capture_output=True, text=True, timeout=timeout * harness.SLOW,
                           env=e)
        return r.returncode, r.stdout, r.stderr

    def token_file(self, content=TOKEN + "\n"):
        path = os.path.join(self.tmp, "token")
        with open(path, "w") as fh:
            fh.write(content)
        os.chmod(path, 0o600)
        return path

    def assert_fails(self, rc, out, err, *needles):
        self.assertEqual(rc, 1, "stdout %r stderr %r" % (out, err))
        self.assertIn("UNAVAILABLE", err)
        for n in needles:
            self.assertIn(n, err)
        self.assertEqual(out, "")

    # -- server verification

    def test_good_ca(self):
        p = self.peer()
        rc, out, err = self.ctl("grpcs://127.0.0.1:%d" % p.port, "--tls-ca", self.f("ca.pem"),
                                "health")
        self.assertEqual((rc, out), (0, "SERVING\n"), err)
        rc, out, err = self.ctl("127.0.0.1:%d" % p.port, "--tls-ca", self.f("ca.pem"), "caps")
        self.assertEqual(rc, 0, err)
        self.assertIn("cache.digest_functions: SHA256", out)
        self.assertIn("execution.exec_enabled: true", out)
        # By name: SNI and name check against DNS:localhost.
        rc, out, err = self.ctl("https://localhost:%d/" % p.port, "--tls-ca",
                                self.f("ca.pem"), "health")
        self.assertEqual((rc, out), (0, "SERVING\n"), err)
        self.assertEqual([c[0] for c in p.snapshot()], ["Check", "GetCapabilities", "Check"])
        # No token configured: no authorization header.
        for _, md, _ in p.snapshot():
            self.assertNotIn("authorization", dict(md))

    def test_wrong_ca(self):
        p = self.peer()
        rc, out, err = self.ctl("grpcs://127.0.0.1:%d" % p.port, "--tls-ca",
                                self.f("otherca.pem"), "health")
        self.assert_fails(rc, out, err, "certificate was not accepted",
                          "unable to get local issuer certificate")
        # The system's store does not know our test CA either.
        rc, out, err = self.ctl("grpcs://127.0.0.1:%d" % p.port, "health")
        self.assert_fails(rc, out, err, "certificate was not accepted")
        self.assertEqual(p.snapshot(), [])

    def test_name_mismatch(self):
        p = self.peer(cert="named")  # certificate for build.example only
        target = "grpcs://127.0.0.1:%d" % p.port
        rc, out, err = self.ctl(target, "--tls-ca", self.f("ca.pem"), "health")
        self.assert_fails(rc, out, err, "IP address mismatch", "--tls-server-name")
        rc, out, err = self.ctl(target, "--tls-ca", self.f("ca.pem"), "--tls-server-name",
                                "other.example", "health")
        self.assert_fails(rc, out, err, "hostname mismatch")
        self.assertEqual(p.snapshot(), [])
        rc, out, err = self.ctl(target, "--tls-ca", self.f("ca.pem"), "--tls-server-name",
                                "build.example", "health")
        self.assertEqual((rc, out), (0, "SERVING\n"), err)
        # The override is the authority gRPC servers see.
        self.assertEqual(len(p.snapshot()), 1)
        # Nor may the right name on the wrong certificate pass: the server's
        # 127.0.0.1 certificate does not say build.example.
        p2 = self.peer()
        rc, out, err = self.ctl("grpcs://127.0.0.1:%d" % p2.port, "--tls-ca",
                                self.f("ca.pem"), "--tls-server-name", "build.example",
                                "health")
        self.assert_fails(rc, out, err, "hostname mismatch")

    # -- client certificates

    def test_mtls(self):
        p = self.peer(client_ca="ca")
        target = "grpcs://127.0.0.1:%d" % p.port
        rc, out, err = self.ctl(target, "--tls-ca", self.f("ca.pem"), "--tls-cert",
                                self.f("client.pem"), "--tls-key", self.f("client.key"),
                                "health")
        self.assertEqual((rc, out), (0, "SERVING\n"), err)
        self.assertEqual(p.snapshot()[0][2], "ci-bot")
        # No client certificate: the server refuses us after the handshake.
        rc, out, err = self.ctl(target, "--tls-ca", self.f("ca.pem"), "health")
        self.assert_fails(rc, out, err, "TLS connection to %s failed" % target,
                          "client certificate")
        # One from a CA the server does not trust.
        rc, out, err = self.ctl(target, "--tls-ca", self.f("ca.pem"), "--tls-cert",
                                self.f("stranger.pem"), "--tls-key", self.f("stranger.key"),
                                "health")
        self.assert_fails(rc, out, err, "TLS connection to %s failed" % target)
        self.assertEqual(len(p.snapshot()), 1)

    def test_bad_files_refused_up_front(self):
        p = self.peer()
        target = "grpcs://127.0.0.1:%d" % p.port
        cases = [
            (["--tls-ca", self.f("missing.pem")], "CA file %s: No such file" % self.f("missing.pem")),
            (["--tls-ca", self.f("ca.key")], "CA file"),
            (["--tls-ca", self.f("ca.pem"), "--tls-cert", self.f("client.pem")],
             "needs both a certificate file and its key file"),
            (["--tls-ca", self.f("ca.pem"), "--tls-cert", self.f("client.pem"), "--tls-key",
              self.f("stranger.key")], "does not belong to the certificate"),
            (["--token-file", self.f("nonexistent")], "token file %s: No such file"
             % self.f("nonexistent")),
        ]
        for args, needle in cases:
            with self.subTest(args=args):
                rc, out, err = self.ctl(target, *(args + ["health"]))
                self.assertEqual(rc, 2, err)
                self.assertIn(needle, err)
        # Plaintext scheme with TLS flags, TLS over a unix socket.
        rc, out, err = self.ctl("grpc://127.0.0.1:%d" % p.port, "--tls-ca", self.f("ca.pem"),
                                "health")
        self.assertEqual(rc, 2, err)
        self.assertIn("write grpcs://127.0.0.1:%d for TLS" % p.port, err)
        rc, out, err = self.ctl("unix:" + os.path.join(self.tmp, "x.sock"), "--tls", "health")
        self.assertIn("TLS over a unix socket is not supported", err)
        self.assertEqual(rc, 2, err)
        self.assertEqual(p.snapshot(), [])

    # -- the wrong kind of server

    def test_plaintext_server(self):
        p = self.peer(plaintext=True)
        rc, out, err = self.ctl("127.0.0.1:%d" % p.port, "--tls-ca", self.f("ca.pem"), "health")
        self.assert_fails(rc, out, err, "failed", "plaintext")
        # and plaintext still works against it
        rc, out, err = self.ctl("grpc://127.0.0.1:%d" % p.port, "health")
        self.assertEqual((rc, out), (0, "SERVING\n"), err)

    def test_no_alpn(self):
        srv = NoAlpnPeer(self.f("server.pem"), self.f("server.key"))
        self.addCleanup(srv.stop)
        rc, out, err = self.ctl("grpcs://127.0.0.1:%d" % srv.port, "--tls-ca",
                                self.f("ca.pem"), "health")
        self.assert_fails(rc, out, err, "did not agree to HTTP/2 (no ALPN h2)")

    # -- bearer tokens

    def test_token(self):
        p = self.peer()
        target = "grpcs://127.0.0.1:%d" % p.port
        tf = self.token_file("  %s \n\n" % TOKEN)
        rc, out, err = self.ctl(target, "-v", "-v", "--tls-ca", self.f("ca.pem"),
                                "--token-file", tf, "health")
        self.assertEqual((rc, out), (0, "SERVING\n"), err)
        rc, out2, err2 = self.ctl(target, "-vv", "--tls-ca", self.f("ca.pem"), "caps",
                                  env={"REACTOR_TOKEN_FILE": tf})
        self.assertEqual(rc, 0, err2)
        calls = p.snapshot()
        self.assertEqual(len(calls), 2)
        for method, md, _ in calls:
            auth = [v for k, v in md if k == "authorization"]
            self.assertEqual(auth, ["Bearer " + TOKEN], method)
        for text in (out, err, out2, err2):
            self.assertNotIn(TOKEN, text)
            self.assertNotIn("Secret", text)
        self.assertIn("debug", err2)  # -vv did log: the token is simply not in it

        # A failed call's message does not carry it either.
        p2 = self.peer(cert="named")
        rc, out, err = self.ctl("grpcs://127.0.0.1:%d" % p2.port, "-vv", "--tls-ca",
                                self.f("ca.pem"), "--token-file", tf, "health")
        self.assertEqual(rc, 1)
        self.assertNotIn("Secret", out + err)

    def test_bad_token_file(self):
        p = self.peer()
        target = "grpcs://127.0.0.1:%d" % p.port
        for content, needle in (("\n", "is empty"),
                                ("two words\n", "one line of printable ASCII"),
                                ("a\nb\n", "one line of printable ASCII")):
            with self.subTest(content=content):
                tf = self.token_file(content)
                rc, out, err = self.ctl(target, "--tls-ca", self.f("ca.pem"),
                                        "--token-file", tf, "health")
                self.assertEqual(rc, 2, err)
                self.assertIn("token file %s " % tf, err)
                self.assertIn(needle, err)
                self.assertNotIn("words", err)
        self.assertEqual(p.snapshot(), [])

    # -- reactor-worker

    def test_worker_tls_token(self):
        """reactor-worker connects with TLS, a client certificate and the
        token; the peer sees GetCapabilities (its first call) with both,
        and the worker logs neither the token nor a TLS error."""
        p = self.peer(client_ca="ca")
        tf = self.token_file()
        log = os.path.join(self.tmp, "worker.log")
        with open(log, "w") as lf:
            w = subprocess.Popen(
                [WORKER, "-s", "grpcs://127.0.0.1:%d" % p.port, "-n", "tlsbot", "-d",
                 os.path.join(self.tmp, "wd"), "-S", "none", "-v", "--tls-ca", self.f("ca.pem"),
                 "--tls-cert", self.f("client.pem"), "--tls-key", self.f("client.key"),
                 "--token-file", tf], stdout=lf, stderr=subprocess.STDOUT)

        def stop():
            if w.poll() is None:
                w.terminate()
                w.wait(10)
        self.addCleanup(stop)
        try:
            harness.wait_for(lambda: any(c[0] == "GetCapabilities" for c in p.snapshot()), 10,
                             "the worker's GetCapabilities")
        except AssertionError:
            raise AssertionError("no GetCapabilities; worker log:\n" + open(log).read())
        method, md, cn = p.snapshot()[0]
        self.assertEqual(method, "GetCapabilities")
        self.assertEqual([v for k, v in md if k == "authorization"], ["Bearer " + TOKEN])
        self.assertEqual(cn, "ci-bot")
        # The connect is the point here, not the sandbox (-S none: the
        # test's temp dir is private to us).  It goes on to the Bots API
        # (UNIMPLEMENTED here) and retries.
        harness.wait_for(lambda: "CreateBotSession" in open(log).read() or
                         "UNIMPLEMENTED" in open(log).read() or
                         len(p.snapshot()) > 1, 10, "the worker's next step")
        stop()
        text = open(log).read()
        self.assertNotIn(TOKEN, text)
        self.assertNotIn("TLS", text)

        # A worker with an unreadable CA file refuses to start (status 2).
        r = subprocess.run([WORKER, "-s", "grpcs://127.0.0.1:%d" % p.port, "-n", "bad", "-d",
                            os.path.join(self.tmp, "wd"), "-S", "none", "--tls-ca",
                            self.f("nope.pem")],
                           capture_output=True, text=True, timeout=20 * harness.SLOW)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("CA file %s: No such file" % self.f("nope.pem"), r.stderr)


    # -- the master's connections

    def master_cfg(self, port, **over):
        m = {"buckets": ["ci"], "server": "grpcs://127.0.0.1:%d" % port,
             "poll-interval": "200ms", "heartbeat-interval": "500ms", "lease-duration": "5s",
             "builders": {"b": {"steps": [{"name": "s", "argv": ["true"]}]}},
             "tls": {"ca": self.f("ca.pem"), "cert": self.f("client.pem"),
                     "key": self.f("client.key")},
             "token-file": self.token_file()}
        m.update(over)
        return {"master": m}

    def test_master_tls_token(self):
        """A master whose bucket service is across TLS: its calls arrive
        with its client certificate and the token."""
        seen = []
        lock = threading.Lock()

        class Any(grpc.GenericRpcHandler):
            def service(self, details):  # records, then UNIMPLEMENTED
                with lock:
                    seen.append((details.method, tuple(details.invocation_metadata)))
                return None

        creds = grpc.ssl_server_credentials(
            [(self.read("server.key"), self.read("server.pem"))],
            root_certificates=self.read("ca.pem"), require_client_auth=True)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        server.add_generic_rpc_handlers((Any(),))
        port = server.add_secure_port("127.0.0.1:0", creds)
        server.start()
        self.addCleanup(server.stop, None)
        srv = self.start_reactord(self.master_cfg(port))

        def buckets_calls():
            with lock:
                return [c for c in seen if c[0].startswith("/reactor.buckets.")]
        calls = harness.wait_for(buckets_calls, 10, "the master's calls to the bucket service")
        for method, md in calls:
            self.assertEqual([v for k, v in md if k == "authorization"], ["Bearer " + TOKEN],
                             method)
        log = srv.log()
        self.assertNotIn(TOKEN, log)
        self.assertNotIn("TLS connection", log)
        self.assertNotIn("TLS handshake", log)

    def test_master_bad_tls_refused(self):
        """An unreadable CA file stops reactord at start, saying which."""
        cfg = self.master_cfg(1)
        cfg["master"]["tls"]["ca"] = self.f("absent-ca.pem")
        srv = self.start_reactord(cfg, wait=False)
        srv.expected_rc = None
        rc = srv.wait_exit(20)
        self.assertNotEqual(rc, 0)
        self.assertIn("master: CA file %s: No such file" % self.f("absent-ca.pem"), srv.log())


if __name__ == "__main__":
    harness.main()
