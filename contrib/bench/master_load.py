#!/usr/bin/python3
"""master_load.py - the load and the arithmetic of contrib/bench/master.sh
(which starts the processes and passes their addresses and pids).

  throughput  N builds (one trivial step each) put at once with PutBatch;
              builds/s from the first Put to the last COMPLETED, the
              masters' CPU (utime+stime from /proc/PID/stat) per build,
              Redis commands per build (INFO commandstats, including the
              commands the Lua scripts run) and EVALSHA per build
  latency     LAT_N builds one at a time on idle masters: Put -> Start
              (the START event on the bucket's Redis channel, read by a
              PSUBSCRIBE of ours) p50/p99, and Put -> SUCCEED
  round trips RT_N builds one at a time under MONITOR: the commands
              reactord sends (not those its scripts run: MONITOR marks
              those "lua") per build, by command

usage: master_load.py REDIS_SOCK PUT_ADDR EXECUTOR_PID MASTER_PID...
"""

import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.environ["REACTOR_GEN_PY"])
import grpc  # noqa: E402
from reactor.buckets.v1 import buckets_pb2 as bpb  # noqa: E402

N = int(os.environ.get("N", "1000"))
LAT_N = int(os.environ.get("LAT_N", "200"))
RT_N = int(os.environ.get("RT_N", "50"))
NS = "reactor:"
EVENTS = NS + "{bb}:events:"
TICK = os.sysconf("SC_CLK_TCK")


class Resp:
    """A blocking RESP client on a unix socket."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("rb")

    def read(self):
        line = self.f.readline()
        if not line:
            raise EOFError
        t, rest = line[:1], line[1:-2]
        if t in (b"+", b"-"):
            return rest.decode()
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            v = self.f.read(n + 2)[:-2]
            return v
        if t == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError("bad RESP %r" % line)

    def __call__(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))
        return self.read()

    def close(self):
        self.s.close()


def cmdstats(r):
    out = {}
    for ln in r("INFO", "commandstats").decode().splitlines():
        if ln.startswith("cmdstat_"):
            name, rest = ln[8:].split(":", 1)
            out[name] = int(rest.split(",")[0].split("=")[1])
    return out


def cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Events:
    """(monotonic time, event) of every bucket event, in order."""

    def __init__(self, sock):
        self.r = Resp(sock)
        self.r("PSUBSCRIBE", EVENTS + "*")
        self.cv = threading.Condition()
        self.seen = {}  # (build id, event) -> time
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                m = self.r.read()
            except (OSError, EOFError, ValueError):
                return
            t = time.monotonic()
            e = json.loads(m[3])
            with self.cv:
                self.seen.setdefault((int(e["build_id"]), e["event"]), t)
                self.cv.notify_all()

    def wait(self, bid, event, timeout=60):
        with self.cv:
            ok = self.cv.wait_for(lambda: (bid, event) in self.seen, timeout)
            if not ok:
                raise SystemExit("build %d: no %s event in %ds" % (bid, event, timeout))
            return self.seen[(bid, event)]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    sock, addr, ex_pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    masters = [int(p) for p in sys.argv[4:]]
    ch = grpc.insecure_channel(addr)
    put = ch.unary_unary("/reactor.buckets.v1.Buckets/Put", bpb.PutRequest.SerializeToString,
                         bpb.BuildResponse.FromString)
    putb = ch.unary_unary("/reactor.buckets.v1.Buckets/PutBatch",
                          bpb.PutBatchRequest.SerializeToString,
                          bpb.PutBatchResponse.FromString)
    r = Resp(sock)
    ev = Events(sock)

    def params(i):
        return json.dumps({"builder_name": "one", "properties": {"n": i}})

    def done_count():
        return r("ZCARD", NS + "{bb}:bucket:ci:COMPLETED")

    # ---- throughput ----------------------------------------------------------
    c0 = [cpu(p) for p in masters]
    e0 = cpu(ex_pid)
    s0 = cmdstats(r)
    base = done_count()
    t0 = time.monotonic()
    for k in range(0, N, 100):
        resp = putb(bpb.PutBatchRequest(builds=[
            bpb.PutRequest(bucket="ci", parameters_json=params(i))
            for i in range(k, min(N, k + 100))]), timeout=60)
        assert not resp.HasField("error"), resp.error
        assert all(not x.HasField("error") for x in resp.results)
    while done_count() < base + N:
        time.sleep(0.01)
    took = time.monotonic() - t0
    s1 = cmdstats(r)
    c1 = [cpu(p) for p in masters]
    e1 = cpu(ex_pid)
    mcpu = sum(c1) - sum(c0)
    total = sum(s1.values()) - sum(s0.values())
    evalsha = s1.get("evalsha", 0) - s0.get("evalsha", 0)
    print("throughput: %d builds in %.2fs = %.0f builds/s; master CPU %.2fs = %.2f ms/build "
          "(per master: %s); executor+workers' reactord CPU %.2f ms/build"
          % (N, took, N / took, mcpu, 1000 * mcpu / N,
             ", ".join("%.2fs" % (b - a) for a, b in zip(c0, c1)), 1000 * (e1 - e0) / N))
    print("throughput: Redis %.1f commands/build (with the scripts' own), %.1f EVALSHA/build"
          % (total / N, evalsha / N))
    top = sorted(((s1.get(k, 0) - s0.get(k, 0), k) for k in s1), reverse=True)[:8]
    print("throughput: top commands/build: " + ", ".join("%s %.2f" % (k, n / N) for n, k in top))

    # ---- latency: one build at a time ------------------------------------------
    time.sleep(1)  # let the masters go idle
    starts, ends = [], []
    for i in range(LAT_N):
        t = time.monotonic()
        bid = put(bpb.PutRequest(bucket="ci", parameters_json=params(i)), timeout=60).build.id
        starts.append(ev.wait(bid, "START") - t)
        ends.append(ev.wait(bid, "SUCCEED") - t)
    ms = [x * 1000 for x in starts]
    me = [x * 1000 for x in ends]
    print("latency:    Put -> Start p50 %.1f ms, p99 %.1f ms, max %.1f ms; Put -> Succeed "
          "p50 %.1f ms, p99 %.1f ms  (%d builds, one at a time)"
          % (pct(ms, 50), pct(ms, 99), max(ms), pct(me, 50), pct(me, 99), LAT_N))

    # ---- round trips, under MONITOR ---------------------------------------------
    mon = Resp(sock)
    mon("MONITOR")
    counts = {}
    stop = threading.Event()

    def monitor():
        while True:
            try:
                line = mon.f.readline()
            except (OSError, ValueError):
                return
            if not line:
                return
            s = line.decode(errors="replace")
            if " [0 lua] " in s or '"' not in s:
                continue
            if stop.is_set() and "zz-bench-stop" in s:
                return
            cmd = s.split('"')[1].lower()
            counts[cmd] = counts.get(cmd, 0) + 1
    th = threading.Thread(target=monitor, daemon=True)
    th.start()
    time.sleep(0.5)
    counts.clear()
    for i in range(RT_N):
        bid = put(bpb.PutRequest(bucket="ci", parameters_json=params(i)), timeout=60).build.id
        ev.wait(bid, "SUCCEED")
    time.sleep(0.2)
    snap = dict(counts)
    stop.set()
    r("ECHO", "zz-bench-stop")
    th.join(5)
    mon.close()
    # Timers (sweeps, safety nets) run meanwhile too: they are part of the cost.
    tot = sum(snap.values())
    print("round trips: %.1f Redis commands sent per build (all reactords, timers "
          "included; %d builds one at a time): %s"
          % (tot / RT_N, RT_N, ", ".join("%s %.2f" % (k, v / RT_N) for k, v in
                                        sorted(snap.items(), key=lambda kv: -kv[1])[:10])))


if __name__ == "__main__":
    main()
