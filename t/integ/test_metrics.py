#!/usr/bin/python3
"""Metrics: reactord's http: listener and /metrics (Prometheus text format
0.0.4), against a real reactord + redis-server started by harness.py.

- /metrics parses strictly (every line a HELP, TYPE or sample line; HELP
  and TYPE before a family's samples; histogram buckets cumulative with
  +Inf equal to _count), and counters move by what the test did: five
  GetCapabilities add exactly 5 under their method and code OK, a
  GetActionResult for an unknown action counts under NOT_FOUND and as an
  action-cache miss.
- the listener answers 404 for unknown paths and 405 for other methods,
  with the no-store/nosniff headers, and refuses a non-loopback plaintext
  address unless it is marked insecure.
- a real Prometheus (/usr/bin/prometheus), started by the test with a
  generated config, scrapes reactord and its query API returns the RPC
  counter.
"""

import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from harness import grpc, pb  # noqa: E402

CAPS = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities"
GET_AC = "/build.bazel.remote.execution.v2.ActionCache/GetActionResult"
PROMETHEUS = "/usr/bin/prometheus"

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
VALUE = r"(?:[-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|Inf)|NaN)"
SAMPLE_RE = re.compile(r"^(%s)(\{(?:%s(?:,%s)*)?\})? (%s)$" % (NAME, LABEL, LABEL, VALUE))
HELP_RE = re.compile(r"^# HELP (%s) (.*)$" % NAME)
TYPE_RE = re.compile(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % NAME)
LABEL_PAIR_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def unescape(v):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def parse_metrics(test, text):
    """Strict parse: {family: {"type", "help", "samples": [(name, labels, value)]}}."""
    test.assertTrue(text.endswith("\n"), "the exposition ends with a newline")
    fams = {}
    current = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        m = HELP_RE.match(line)
        if m:
            test.assertNotIn(m.group(1), fams, "line %d: second HELP for %s" % (n, m.group(1)))
            current = fams[m.group(1)] = {"help": m.group(2), "type": None, "samples": []}
            continue
        m = TYPE_RE.match(line)
        if m:
            test.assertIs(current, fams.get(m.group(1)), "line %d: TYPE without HELP" % n)
            current["type"] = m.group(2)
            continue
        m = SAMPLE_RE.match(line)
        test.assertIsNotNone(m, "line %d is not a valid sample line: %r" % (n, line))
        name = m.group(1)
        test.assertIsNotNone(current, "line %d: sample before any HELP/TYPE" % n)
        fam = [f for f in fams if name == f or
               (fams[f]["type"] == "histogram" and name in (f + "_bucket", f + "_sum", f + "_count"))]
        test.assertEqual(fam, [list(fams)[-1]], "line %d: %s outside its family's block" % (n, name))
        labels = {k: unescape(v) for k, v in LABEL_PAIR_RE.findall(m.group(2) or "")}
        v = m.group(3)
        value = float("inf") if v in ("+Inf", "Inf") else float("-inf") if v == "-Inf" else float(v)
        current["samples"].append((name, labels, value))
    for f, d in fams.items():
        test.assertIsNotNone(d["type"], "%s has no TYPE line" % f)
        test.assertTrue(f.startswith("reactor_"), "%s is not prefixed reactor_" % f)
        if d["type"] == "histogram":
            check_histogram(test, f, d["samples"])
    return fams


def check_histogram(test, fam, samples):
    series = {}
    for name, labels, value in samples:
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        s = series.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if name == fam + "_bucket":
            s["buckets"].append((float(labels["le"].replace("+Inf", "inf")), value))
        elif name == fam + "_sum":
            s["sum"] = value
        else:
            s["count"] = value
    for key, s in series.items():
        les = [le for le, _ in s["buckets"]]
        test.assertEqual(les, sorted(les), "%s%s: le not ascending" % (fam, key))
        test.assertEqual(les[-1], float("inf"), "%s%s: no +Inf bucket" % (fam, key))
        counts = [c for _, c in s["buckets"]]
        test.assertEqual(counts, sorted(counts), "%s%s: buckets not cumulative" % (fam, key))
        test.assertEqual(counts[-1], s["count"], "%s%s: +Inf bucket != _count" % (fam, key))
        test.assertIsNotNone(s["sum"], "%s%s: no _sum" % (fam, key))


def value_of(fams, fam, name=None, **labels):
    for n, lb, v in fams.get(fam, {"samples": []})["samples"]:
        if n == (name or fam) and all(lb.get(k) == val for k, val in labels.items()):
            return v
    return None


def http_get(url, method="GET", timeout=5):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, u.path or "/")
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


class MetricsCase(h.ReactordTestCase):
    def start(self, overrides=None, serving=True):
        o = {"http": ["127.0.0.1:0"]}
        o.update(overrides or {})
        self.srv = self.start_reactord(o, serving=serving)
        self.ch = h.channel(self.srv.tcp_addr)
        self.addCleanup(self.ch.close)
        return self.srv

    def scrape(self):
        status, hdrs, body = http_get(self.srv.http_url + "/metrics")
        self.assertEqual(status, 200, body)
        self.assertEqual(hdrs.get("Content-Type"), "text/plain; version=0.0.4; charset=utf-8")
        return parse_metrics(self, body.decode())

    def caps(self, n):
        for _ in range(n):
            h.get_capabilities(self.ch)


class TestMetricsPage(MetricsCase):
    def test_counters_move_and_format_is_strict(self):
        self.start()
        before = self.scrape()
        base = value_of(before, "reactor_rpc_calls_total", method=CAPS, code="OK") or 0
        self.caps(5)
        # A NOT_FOUND call: GetActionResult for an action nobody stored.
        d = pb().re.Digest(hash=hashlib.sha256(b"no such action").hexdigest(), size_bytes=14)
        err = h.rpc_error(h.unary(self.ch, GET_AC, pb().re.GetActionResultRequest, pb().re.ActionResult),
                          pb().re.GetActionResultRequest(action_digest=d))
        self.assertEqual(err.code(), grpc.StatusCode.NOT_FOUND)
        after = self.scrape()
        self.assertEqual(value_of(after, "reactor_rpc_calls_total", method=CAPS, code="OK"),
                         base + 5)
        self.assertEqual(value_of(after, "reactor_rpc_calls_total", method=GET_AC,
                                  code="NOT_FOUND"), 1)
        self.assertEqual(value_of(after, "reactor_rpc_duration_seconds",
                                  "reactor_rpc_duration_seconds_count", method=CAPS), base + 5)
        self.assertEqual(value_of(after, "reactor_action_cache_lookups_total", instance="",
                                  result="miss"), 1)
        self.assertEqual(after["reactor_rpc_calls_total"]["type"], "counter")
        self.assertEqual(after["reactor_rpc_duration_seconds"]["type"], "histogram")
        # Bytes moved both ways, and the standard families are there.
        self.assertGreater(value_of(after, "reactor_http2_bytes_total", direction="in"),
                           value_of(before, "reactor_http2_bytes_total", direction="in"))
        self.assertEqual(len(after["reactor_build_info"]["samples"]), 1)
        self.assertGreaterEqual(value_of(after, "reactor_grpc_connections"), 1)
        self.assertEqual(value_of(after, "reactor_redis_up"), 1)
        self.assertEqual(value_of(after, "reactor_scrape_errors"), 0)
        self.assertIsNotNone(value_of(after, "reactor_cas_bytes", instance=""))
        self.assertIsNotNone(value_of(after, "reactor_event_loop_lag_seconds",
                                      "reactor_event_loop_lag_seconds_count"))
        self.assertIsNotNone(value_of(after, "reactor_redis_roundtrip_seconds",
                                      "reactor_redis_roundtrip_seconds_count"))
        self.assertIsNotNone(value_of(after, "reactor_jobs_executing"))

    def test_unknown_methods_share_one_label(self):
        # Method names a client invents do not become label values.
        self.start()
        for i in range(3):
            err = h.rpc_error(h.unary(self.ch, "/no.Such/M%d" % i, pb().re.Digest, pb().re.Digest),
                              pb().re.Digest())
            self.assertEqual(err.code(), grpc.StatusCode.UNIMPLEMENTED)
        fams = self.scrape()
        self.assertEqual(value_of(fams, "reactor_rpc_calls_total", method="unknown",
                                  code="UNIMPLEMENTED"), 3)
        methods = {lb["method"] for _, lb, _ in fams["reactor_rpc_calls_total"]["samples"]}
        self.assertFalse(any(m.startswith("/no.Such/") for m in methods), methods)

    def test_statuses_and_headers(self):
        self.start()
        status, hdrs, body = http_get(self.srv.http_url + "/no/such/page")
        self.assertEqual(status, 404)
        self.assertEqual(hdrs.get("Cache-Control"), "no-store")
        self.assertEqual(hdrs.get("X-Content-Type-Options"), "nosniff")
        self.assertEqual(body, b"not found\n")
        status, hdrs, _ = http_get(self.srv.http_url + "/metricsx")
        self.assertEqual(status, 404)
        for method in ("POST", "PUT", "DELETE"):
            status, hdrs, _ = http_get(self.srv.http_url + "/metrics", method)
            self.assertEqual(status, 405, method)
            self.assertEqual(hdrs.get("Allow"), "GET, HEAD")
        status, hdrs, body = http_get(self.srv.http_url + "/metrics", "HEAD")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"")
        # The listener is logged and in the ready-file.
        self.assertIn("http listening on " + self.srv.http_addrs[0], self.srv.log())

    def test_non_loopback_plaintext_refused(self):
        srv = self.start_reactord({"http": ["0.0.0.0:0"]}, wait=False)
        self.assertEqual(srv.wait_exit(10), 1)
        self.assertIn("http[0] 0.0.0.0:0 is plaintext on a non-loopback address", srv.log())
        srv.expected_rc = 1
        srv2 = self.start_reactord({"http": [{"address": "0.0.0.0:0", "insecure": True}]},
                                   name="insecure")
        self.assertEqual(len(srv2.http_addrs), 1)

    def test_redis_down_leaves_summary_out(self):
        self.start({"redis": {"embedded": False, "address": "127.0.0.1:1",
                              "connect-timeout": "100ms", "reconnect-max": "200ms"}},
                   serving=False)
        fams = self.scrape()
        self.assertEqual(value_of(fams, "reactor_redis_up"), 0)
        self.assertEqual(value_of(fams, "reactor_scrape_errors"), 1)
        self.assertIsNone(value_of(fams, "reactor_jobs_executing"))
        self.assertIsNone(value_of(fams, "reactor_builds_leased"))

    def test_connection_limit_pauses_and_resumes(self):
        self.start()
        socks = []
        try:
            for _ in range(70):  # the limit is 64
                s = socket.create_connection((self.srv.http_url[7:].rsplit(":", 1)[0],
                                              self.srv.http_port))
                socks.append(s)
            self.srv.wait_log("64 connections open \\(the limit\\)", timeout=5)
        finally:
            for s in socks:
                s.close()
        # Closed connections are reaped and new ones served again.
        h.wait_for(lambda: http_get(self.srv.http_url + "/metrics", timeout=2)[0] == 200, 10,
                   "/metrics after the idle connections closed")


class TestPrometheus(MetricsCase):
    def setUp(self):
        if not os.access(PROMETHEUS, os.X_OK):
            self.skipTest("SKIP: %s is not installed (contrib/deps.sh installs Debian's "
                          "prometheus)" % PROMETHEUS)
        super().setUp()

    def start_prometheus(self, target):
        d = os.path.join(self.tmp, "prom")
        os.makedirs(d)
        cfg = os.path.join(d, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: reactord\n"
                    "    static_configs:\n      - targets: ['%s']\n" % target)
        # A free port: bind port 0, read it, close; Prometheus binds it
        # right after (and the test fails clearly if someone took it).
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        log = open(os.path.join(d, "prometheus.log"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + cfg, "--storage.tsdb.path=" + os.path.join(d, "data"),
             "--web.listen-address=127.0.0.1:%d" % port, "--log.level=info"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

        def stop():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.addCleanup(stop)
        self.prom_log = log.name
        return proc, "http://127.0.0.1:%d" % port

    def query(self, base, q):
        url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.load(r)

    def test_prometheus_scrapes_rpc_counter(self):
        self.start()
        self.caps(7)
        proc, base = self.start_prometheus("127.0.0.1:%d" % self.srv.http_port)
        q = 'reactor_rpc_calls_total{method="%s",code="OK"}' % CAPS
        seen = {}

        def ready():
            if proc.poll() is not None:
                with open(self.prom_log) as f:
                    raise AssertionError("prometheus exited with %s:\n%s"
                                         % (proc.returncode, f.read()[-3000:]))
            try:
                r = self.query(base, q)
            except (urllib.error.URLError, ConnectionError, OSError):
                return False
            res = r.get("data", {}).get("result", [])
            if r.get("status") == "success" and res and float(res[0]["value"][1]) >= 7:
                seen.update(res[0])
                return True
            return False
        h.wait_for(ready, 60, "Prometheus to return %s" % q, 0.2)
        self.assertEqual(float(seen["value"][1]), 7)
        self.assertEqual(seen["metric"]["job"], "reactord")
        # The scrape itself is healthy: up == 1 for the target.
        r = self.query(base, 'up{job="reactord"}')
        self.assertEqual(r["data"]["result"][0]["value"][1], "1")


if __name__ == "__main__":
    h.main()
