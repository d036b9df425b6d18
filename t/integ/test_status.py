#!/usr/bin/python3
"""test_status.py - the status page on reactord's http: listener, in a real
browser and without one.

TestStatusPage drives a headless Chromium (Debian `chromium`) over the
Chrome DevTools Protocol on a pipe (--remote-debugging-pipe: NUL-terminated
JSON on fds 3 and 4, no websocket library): the page loads; an operation
started through gRPC (Execute, held EXECUTING by a test bot that never
finishes) and a build put into a bucket (Buckets.Put) appear in the
rendered DOM within 2 s without a reload (pushed by /events); a build
parameter holding <script>alert(1)</script> is shown as text (no script
element, no dialog); the operation and build pages render their data; no
console error, exception or error log entry; a screenshot is saved as
t/artifacts/status.png under the directory the test runs in (the build
dir in `make check`, next to t/integ/test_status.log).  Chromium runs in
its own process group, killed in finally.  Only a missing chromium is a
SKIP.

TestStatusHTTP checks with urllib what needs no browser: headers (CSP
default-src 'self'), escaping in the JSON, 404/400/405 answers, the log
endpoint, and the cap on /events clients.
"""

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import testbot as tb  # noqa: E402
from harness import grpc  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
EVIL = "<script>alert(1)</script>"
BK = "/reactor.buckets.v1.Buckets/"
LIVE_S = 2.0 * h.SLOW  # the issue: visible within 2 s without reload
ARTIFACTS = os.environ.get("REACTOR_ARTIFACTS") or os.path.join(os.getcwd(), "t", "artifacts")
MAX_EVENT_CLIENTS = 32  # STATUS_MAX_EVENT_CLIENTS
JOB_CHANNEL = b"reactor:sched:job"  # keys_sched("job") with the default redis.prefix


def status_config(tmp):
    return {
        "http": ["127.0.0.1:0"],
        "instances": [{"name": "", "execution": True, "storage": "memory",
                       "platform-properties": ["pool"], "no-worker-timeout": "5m",
                       "operation-retention": "10m"}],
        "scheduler": {"bot-session-keepalive": "5s", "safety-net-interval": "1s",
                      "long-poll": "1s", "sweep-interval": "200ms"},
    }


def put_build(ch, bucket, params):
    from reactor.buckets.v1 import buckets_pb2 as bpb
    put = h.unary(ch, BK + "Put", bpb.PutRequest, bpb.BuildResponse)
    r = put(bpb.PutRequest(bucket=bucket, parameters_json=json.dumps(params)), timeout=10)
    if r.HasField("error") and r.error.reason:
        raise AssertionError("Put failed: %s" % r.error)
    return r.build


def http_get(url, method="GET"):
    """(status, headers, body bytes) of one request on a fresh connection
    (http.client: no "Connection: close", as browsers send)."""
    hostport, _, path = url[len("http://"):].partition("/")
    host, port = hostport.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.putrequest(method, "/" + path)
        c.endheaders()
        r = c.getresponse()
        return r.status, r.headers, r.read()
    finally:
        c.close()


def urlopen_get(url):
    """The same through urllib, which sends "Connection: close"."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


# ---- the DevTools protocol over a pipe -----------------------------------------


class Chromium:
    """One headless Chromium spoken to over --remote-debugging-pipe."""

    def __init__(self, tmp):
        self.events = []
        self.replies = {}
        self.cv = threading.Condition()
        self.next_id = 0
        self.closed = False
        to_r, to_w = os.pipe()      # we write commands, chromium reads fd 3
        from_r, from_w = os.pipe()  # chromium writes fd 4, we read
        args = [CHROMIUM, "--headless=new", "--remote-debugging-pipe",
                "--user-data-dir=" + os.path.join(tmp, "chromium-profile"),
                "--no-first-run", "--no-default-browser-check", "--disable-gpu",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-dev-shm-usage", "--mute-audio",
                "--window-size=1280,1400", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")

        def fds():
            # Move the pipe ends out of the way, then onto 3 and 4.
            a, b = os.dup(to_r), os.dup(from_w)
            a2, b2 = os.dup2(a, 100), os.dup2(b, 101)
            os.dup2(a2, 3)
            os.dup2(b2, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.log = open(os.path.join(tmp, "chromium.log"), "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=fds,
                                     start_new_session=True, close_fds=True,
                                     pass_fds=(3, 4))  # kept after fds() runs
        os.close(to_r)
        os.close(from_w)
        self.wfd, self.rfd = to_w, from_r
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self.rfd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self.cv:
                    self.closed = True
                    self.cv.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                m = json.loads(msg)
                with self.cv:
                    if "id" in m:
                        self.replies[m["id"]] = m
                    else:
                        self.events.append(m)
                    self.cv.notify_all()

    def call(self, method, params=None, session=None, timeout=15):
        with self.cv:
            self.next_id += 1
            mid = self.next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout * h.SLOW
        with self.cv:
            while mid not in self.replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise AssertionError("chromium: no answer to %s" % method)
                self.cv.wait(left)
            r = self.replies.pop(mid)
        if "error" in r:
            raise AssertionError("chromium: %s: %s" % (method, r["error"]))
        return r.get("result", {})

    def close(self):
        """Kill chromium's whole process group and reap it."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for fd in (self.wfd, self.rfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()


class Page:
    """One tab: navigate, evaluate, wait for the DOM, collect errors."""

    def __init__(self, cr):
        self.cr = cr
        tid = cr.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.sid = cr.call("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]
        for m in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.call(m)

    def call(self, method, params=None, timeout=15):
        return self.cr.call(method, params, session=self.sid, timeout=timeout)

    def goto(self, url):
        self.call("Page.navigate", {"url": url})

    def js(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True})
        if "exceptionDetails" in r:
            raise AssertionError("page: %s: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def wait_js(self, expr, timeout, what):
        """Poll expr until truthy; the time it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            v = self.js(expr)
            if v:
                return time.monotonic() - t0
            if time.monotonic() > deadline:
                raise AssertionError("%s: not in the page after %.1fs; page text:\n%s" % (
                    what, timeout, self.js("document.body ? document.body.innerText : ''")))
            time.sleep(0.02)

    def problems(self):
        """Console errors, exceptions, error log entries and dialogs so far."""
        out = []
        with self.cr.cv:
            evs = [e for e in self.cr.events if e.get("sessionId") == self.sid]
        for e in evs:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.%s: %s" % (p["type"], [a.get("value") for a in p.get("args", [])]))
            elif m == "Runtime.exceptionThrown":
                out.append("exception: %s" % p.get("exceptionDetails"))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: %s %s" % (p["entry"].get("text"), p["entry"].get("url", "")))
            elif m == "Page.javascriptDialogOpening":
                out.append("dialog: %s" % p.get("message"))
        return out

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path


# ---- the tests --------------------------------------------------------------------


class StatusCase(h.ReactordTestCase):
    def start(self):
        srv = self.start_reactord(status_config(self.tmp))
        self.assertTrue(srv.http_addrs, "no http:// line in the ready-file")
        ch = self.channel(srv.tcp_addr)
        return srv, ch, srv.http_url

    def busy_bot(self, srv, bot_id="slowbot"):
        """A bot for pool=slow that takes a lease and never finishes it."""
        b = tb.Bot(srv.tcp_addr, bot_id, props=(("OSFamily", "linux"), ("pool", "slow")),
                   mode="hang", poll=1.0)
        self.addCleanup(b.stop)
        b.start()
        return b

    def start_op(self, ch, *args):
        """Execute args on pool=slow; the operation's name (its stream is
        kept open and cancelled at cleanup)."""
        d, blobs = tb.make_action(args, platform=(("pool", "slow"),))
        tb.upload(ch, blobs)
        stream = tb.execute(ch, d, timeout=120)
        self.addCleanup(stream.cancel)
        return next(stream).name


class TestStatusPage(StatusCase):
    def setUp(self):
        super().setUp()
        if not os.access(CHROMIUM, os.X_OK):
            self.skipTest("SKIP: chromium is not installed (%s); contrib/deps.sh installs it"
                          % CHROMIUM)

    def test_live_page_in_chromium(self):
        srv, ch, url = self.start()
        bot = self.busy_bot(srv)
        cr = Chromium(self.tmp)
        try:
            page = Page(cr)
            page.goto(url + "/")
            page.wait_js("document.getElementById('ops-running') && "
                         "document.getElementById('live').textContent === 'live'",
                         15 * h.SLOW, "the overview, following /events")
            page.js("window.__noReload = 42")
            self.assertIn("SERVING", page.js("document.getElementById('health').textContent"))

            # An operation started through gRPC appears, without reload.
            name = self.start_op(ch, "sleep", "1000")
            op = name  # "operations/UUID": the page's links keep the slash
            took = page.wait_js("!!document.querySelector('#ops-running a[href=\"/operations/%s\"]')"
                                % op, LIVE_S, "operation %s" % op)
            h.wait_for(lambda: bot.got, 10 * h.SLOW, "the bot's lease")
            page.wait_js("document.querySelector('#ops-running').innerText.includes('slowbot')",
                         LIVE_S, "the operation's worker")
            print("operation visible after %.2fs" % took)

            # A build whose parameter holds markup appears, shown as text.
            b = put_build(ch, "status-test", {"builder_name": "demo",
                                              "properties": {"evil": EVIL}})
            took = page.wait_js("!!document.querySelector('#builds a[href=\"/builds/%d\"]')"
                                % b.id, LIVE_S, "build %d" % b.id)
            print("build visible after %.2fs" % took)
            self.assertEqual(page.js("window.__noReload"), 42, "the page was reloaded")
            self.assertIn(EVIL, page.js("document.getElementById('builds').textContent"))
            self.assertEqual(page.js("document.querySelectorAll('script').length"), 1)
            self.assertEqual(page.js("document.querySelectorAll('#main script, #main img').length"), 0)
            self.assertEqual(page.problems(), [])
            shot = page.screenshot(os.path.join(ARTIFACTS, "status.png"))
            print("screenshot: %s" % shot)
            self.assertGreater(os.path.getsize(shot), 10000)

            # The operation's page: command, stage, worker, timeline.
            page.goto(url + "/operations/" + op)
            page.wait_js("document.getElementById('argv') && "
                         "document.getElementById('argv').textContent === 'sleep 1000'",
                         10 * h.SLOW, "the operation's command line")
            text = page.js("document.getElementById('main').innerText")
            for want in ("EXECUTING", "slowbot", "pool", "slow", "queued", "started"):
                self.assertIn(want, text)
            shot_op = page.screenshot(os.path.join(ARTIFACTS, "status-operation.png"))

            # The build's page: its parameters, as text.
            page.goto(url + "/builds/%d" % b.id)
            page.wait_js("document.getElementById('params') && "
                         "document.getElementById('params').textContent.includes('demo')",
                         10 * h.SLOW, "the build's parameters")
            self.assertIn(EVIL, page.js("document.getElementById('params').textContent"))
            text = page.js("document.getElementById('main').innerText")
            for want in ("status-test", "SCHEDULED", "created"):
                self.assertIn(want, text)
            self.assertEqual(page.js("document.querySelectorAll('script').length"), 1)
            page.screenshot(os.path.join(ARTIFACTS, "status-build.png"))
            self.assertEqual(page.problems(), [])
            self.assertTrue(os.path.exists(shot_op))
        finally:
            cr.close()


class TestStatusHTTP(StatusCase):
    def test_headers_escaping_and_errors(self):
        srv, ch, url = self.start()
        st, hd, body = http_get(url + "/")
        self.assertEqual(st, 200)
        self.assertEqual(urlopen_get(url + "/")[2], body, "with Connection: close")
        self.assertEqual(urlopen_get(url + "/api/nope")[0], 404, "with Connection: close")
        self.assertIn("default-src 'self'", hd["Content-Security-Policy"])
        self.assertTrue(hd["Content-Type"].startswith("text/html"))
        self.assertNotIn(b"<script>", body, "the page has no inline script")
        self.assertIn(b'<script src="/status.js"', body)
        for path, ctype in (("/status.js", "text/javascript"), ("/status.css", "text/css")):
            st, hd, body = http_get(url + path)
            self.assertEqual(st, 200, path)
            self.assertTrue(hd["Content-Type"].startswith(ctype), hd["Content-Type"])
            if path.endswith(".js"):
                self.assertNotIn(b"innerHTML", body)

        b = put_build(ch, "esc", {"builder_name": "x<y>", "properties": {"p": EVIL + "&\"'"}})
        st, hd, raw = http_get(url + "/api/status")
        self.assertEqual(st, 200)
        self.assertTrue(hd["Content-Type"].startswith("application/json"))
        for bad in (b"<", b">", b"&"):
            self.assertNotIn(bad, raw, "raw markup characters in the JSON")
        s = json.loads(raw)
        self.assertEqual(s["health"], "SERVING")
        got = [x for x in s["builds"] if x["id"] == str(b.id)]
        self.assertEqual(len(got), 1)
        self.assertEqual(json.loads(got[0]["parameters_json"])["properties"]["p"], EVIL + "&\"'")
        st, _, raw = http_get(url + "/api/builds/%d" % b.id)
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(raw)["build"]["bucket"], "esc")

        # Not found, malformed, read-only.
        for path, code in (("/nope", 404), ("/api/nope", 404), ("/builds/abc", 404),
                           ("/operations/%3Cscript%3E", 404), ("/operations/a//b", 404), ("/operations/a/../b", 404),
                           ("/api/builds/99999999", 404), ("/api/builds/abc", 400),
                           ("/api/builds/-1", 400),
                           ("/api/operations/%3Cscript%3Ealert(1)%3C%2Fscript%3E", 400),
                           ("/api/operations/00000000-0000-4000-8000-000000000000", 404),
                           ("/api/logs/zzz", 400),
                           ("/api/logs/" + "ab" * 32 + "-5", 404)):
            st, hd, body = http_get(url + path)
            self.assertEqual(st, code, "%s: %s %r" % (path, st, body))
            self.assertNotIn(b"<script", body.lower(), path)
            self.assertIn("default-src 'self'", hd.get("Content-Security-Policy", ""), path)
        # Read-only: HEAD answers like GET without a body (other methods
        # never reach the page: transport/http.c answers them 405).
        st, hd, body = http_get(url + "/api/status", method="HEAD")
        self.assertEqual((st, body), (200, b""))
        self.assertTrue(hd["Content-Type"].startswith("application/json"))
        st, hd, body = http_get(url + "/events", method="HEAD")
        self.assertEqual((st, body), (200, b""))
        self.assertTrue(hd["Content-Type"].startswith("text/event-stream"))

    def test_operation_and_log(self):
        srv, ch, url = self.start()
        bot = tb.Bot(srv.tcp_addr, "fastbot", props=(("OSFamily", "linux"), ("pool", "slow")),
                     mode="complete", stdout=b"hello <b>world</b>\n", exit_code=3, poll=1.0)
        self.addCleanup(bot.stop)
        bot.start()
        d, blobs = tb.make_action(("echo", "hello <b>world</b>"), platform=(("pool", "slow"),))
        tb.upload(ch, blobs)
        ops = tb.run_to_end(tb.execute(ch, d, timeout=30))
        op = ops[-1].name
        st, _, raw = http_get(url + "/api/operations/" + op)
        self.assertEqual(st, 200, raw)
        self.assertNotIn(b"<b>", raw)
        o = json.loads(raw)
        self.assertEqual(o["stage"], "COMPLETED")
        self.assertEqual(o["command"]["arguments"], ["echo", "hello <b>world</b>"])
        self.assertEqual(o["result"]["exit_code"], 3)
        self.assertEqual(o["result"]["stdout"]["text"], "hello <b>world</b>\n")
        self.assertEqual([p["value"] for p in o["action"]["platform"]], ["slow"])
        events = [e["event"] for e in o["timeline"]]
        for want in ("created", "queued", "completed"):
            self.assertIn(want, events)
        # A log blob straight from the CAS, as text/plain.
        data = b"line <1>\n" * 10
        tb.upload(ch, [data])
        dg = tb.digest_of(data)
        st, hd, body = http_get(url + "/api/logs/%s-%d" % (dg.hash, dg.size_bytes))
        self.assertEqual(st, 200)
        self.assertEqual(body, data)
        self.assertTrue(hd["Content-Type"].startswith("text/plain"))
        self.assertEqual(hd["X-Content-Type-Options"], "nosniff")

    def test_events_clients_are_bounded(self):
        srv, ch, url = self.start()
        host, port = url[len("http://"):].rsplit(":", 1)
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])

        def open_events():
            s = socket.create_connection((host, int(port)), 10)
            socks.append(s)
            s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b"\r\n\r\n" not in got:
                c = s.recv(4096)
                if not c:
                    break
                got += c
            return got
        for i in range(MAX_EVENT_CLIENTS):
            head = open_events()
            self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
            self.assertIn(b"text/event-stream", head)
        head = open_events()
        self.assertTrue(head.startswith(b"HTTP/1.1 503"), head)
        # A change reaches a listening client as an event.
        s = socks[0]
        put_build(ch, "ev", {"builder_name": "x"})
        s.settimeout(5 * h.SLOW)
        got = b""
        while b"event: build" not in got:
            c = s.recv(4096)
            self.assertTrue(c, "stream closed: %r" % got)
            got += c
        # Closed clients free their places.
        for s in socks:
            s.close()
        socks.clear()
        h.wait_for(lambda: open_events().startswith(b"HTTP/1.1 200"), 5 * h.SLOW,
                   "an /events place after clients left")
        # reactord stops cleanly (exit 0, no sanitizer report) with pages
        # still following, and ends their streams.
        s = socks[-1]
        t0 = time.monotonic()
        self.assertEqual(srv.stop(), 0, srv.log_tail())
        s.settimeout(5 * h.SLOW)
        while s.recv(4096):
            pass
        self.assertLess(time.monotonic() - t0, 10 * h.SLOW)

    def test_slow_events_client_is_dropped(self):
        srv, ch, url = self.start()
        host, port = url[len("http://"):].rsplit(":", 1)
        slow = socket.socket()
        self.addCleanup(slow.close)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(10)
        slow.connect((host, int(port)))
        slow.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(slow.recv(4096).startswith(b"HTTP/1.1 200"))
        # Job-change messages, straight on the channel reactord follows,
        # until the unread ones pass STATUS_MAX_EVENT_BACKLOG (the kernel's
        # socket buffers hold the first megabytes).  Small batches: the
        # changes of one loop pass past 32 become one "refresh" event.
        r = tb.embedded_redis(srv)
        self.addCleanup(r.close)
        mark = srv.log_mark()
        sent = 0
        n = 8
        deadline = time.monotonic() + 60 * h.SLOW
        while "events client dropped" not in srv.log()[mark:] and time.monotonic() < deadline:
            batch = []
            for i in range(n):
                job = b"j%08d" % (sent + i) + b"x" * 240
                batch.append(b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                             % (len(JOB_CHANNEL), JOB_CHANNEL, len(job), job))
            r.s.sendall(b"".join(batch))
            for i in range(n):
                r._read()
            sent += n
            # A round trip to reactord, so one batch is (mostly) one loop
            # pass there even when it runs slowly (sanitizers).
            h.health_check(ch)
        srv.wait_log("events client dropped: [0-9]+ bytes unsent \\(limit 65536\\)", 10 * h.SLOW,
                     since=mark)
        # Its connection is closed: reading to the end meets EOF.
        slow.settimeout(10 * h.SLOW)
        while slow.recv(65536):
            pass
        # And the page still serves.
        self.assertEqual(http_get(url + "/api/status")[0], 200)

    def test_master_reports_the_page_and_steps_link_logs(self):
        cfg = status_config(self.tmp)
        del cfg["instances"][0]["platform-properties"]
        cfg["workers"] = {"local": 1}
        cfg["master"] = {
            "buckets": ["ci"], "poll-interval": "300ms", "heartbeat-interval": "500ms",
            "lease-duration": "5s", "on-shutdown": "reset",
            "builders": {"say": {"steps": [
                {"name": "hello", "argv": ["sh", "-c", "echo 'out <i>1</i>'; echo err >&2"],
                 "cache": False},
                {"name": "slow", "argv": ["sleep", "2"], "cache": False},
                {"name": "fail", "argv": ["sh", "-c", "exit 4"], "cache": False}]}}}
        srv = self.start_reactord(cfg)
        ch = self.channel(srv.tcp_addr)
        url = srv.http_url
        b = put_build(ch, "ci", {"builder_name": "say"})

        # While it runs: the master's step records and its operation.
        def running():
            st, _, raw = http_get(url + "/api/builds/%d" % b.id)
            j = json.loads(raw)
            live = j.get("live_steps") or []
            ok = [x["name"] for x in live] == ["hello", "slow"] and live[1]["status"] == "RUNNING"
            return j if ok and j.get("current_op") else None
        j = h.wait_for(running, 30 * h.SLOW, "build %d's step slow running" % b.id, 0.05)
        self.assertEqual(j["build"]["status"], "STARTED")
        self.assertEqual(j["live_steps"][0]["status"], "SUCCESS")
        st, _, raw = http_get(url + "/api/operations/" + j["current_op"])
        self.assertEqual(st, 200, raw)
        self.assertEqual(json.loads(raw)["command"]["arguments"], ["sleep", "2"])

        def done():
            st, _, raw = http_get(url + "/api/builds/%d" % b.id)
            j = json.loads(raw)
            return j if st == 200 and j["build"]["status"] == "COMPLETED" else None
        j = h.wait_for(done, 60 * h.SLOW, "build %d to complete" % b.id, 0.1)
        got = j["build"]
        self.assertEqual(got["url"], "%s/builds/%d" % (url, b.id))
        self.assertEqual(got["result"], "FAILURE")
        steps = json.loads(got["result_details_json"])["steps"]
        self.assertEqual([(x["name"], x["exit_code"]) for x in steps], [("hello", 0), ("slow", 0), ("fail", 4)])
        st, hd, body = http_get(url + "/api/logs/%s?instance=%s" % (
            steps[0]["stdout_digest"].replace("/", "-"), j["log_instance"]))
        self.assertEqual((st, body), (200, b"out <i>1</i>\n"))
        st, _, body = http_get(url + "/api/logs/%s" % steps[0]["stderr_digest"].replace("/", "-"))
        self.assertEqual((st, body), (200, b"err\n"))
        # The URL the master reported opens the build's page.
        st, hd, body = http_get(got["url"])
        self.assertEqual(st, 200)
        self.assertTrue(hd["Content-Type"].startswith("text/html"))


if __name__ == "__main__":
    h.main()
