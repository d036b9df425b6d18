#!/usr/bin/python3
"""exec_load.py - the scheduler benchmark behind contrib/bench/exec.sh.

Starts one reactord (embedded redis, memory CAS, execution on), bots that
complete every lease at once (t/integ/testbot.py, in worker processes so
Python's GIL is not the only thing measured), and grpcio Execute clients:

  latency     one client, Execute -> COMPLETED of trivial actions, p50/p99
  throughput  C concurrent clients (processes x threads), B bot sessions,
              completed actions per second and reactord's CPU use
  ceiling     redis-benchmark EVALSHA of a script doing what one enqueue
              does (HSET, ZADD, SADD, PUBLISH) on the same redis-server
  memory      reactord RSS per idle waiting Execute stream; Redis
              used_memory per finished operation

Prints one "name value unit" line per figure.  The clients are Python:
the figures are a floor for what reactord itself sustains.
"""

import hashlib
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.environ.get("REACTOR_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRC, "t", "integ"))
import harness as h  # noqa: E402
import testbot as tb  # noqa: E402
from harness import pb  # noqa: E402


def cfg_text(tmp):
    cfg = {
        "listen": ["127.0.0.1:0"],
        "ready-file": os.path.join(tmp, "ready"),
        "state-dir": os.path.join(tmp, "state"),
        "log": {"level": "warn"},
        "redis": {"embedded": True, "server": h.REDIS_SERVER},
        "http2": {"max-concurrent-streams": 100000},
        "scheduler": {"long-poll": "5s"},
        "instances": [{"name": "", "execution": True, "storage": "memory",
                       "platform-properties": ["pool"], "no-worker-timeout": "1h",
                       "operation-retention": "10m"}],
    }
    return h.to_yaml(cfg) + "\n"


def actions(n, tag):
    out, blobs = [], {}
    for i in range(n):
        d, b = tb.make_action(("bench", tag, str(i)))
        out.append(d)
        blobs.update(b)
    return out, blobs


def bot_proc(target, ids, stop):
    bots = [tb.Bot(target, i, poll=10.0) for i in ids]
    for b in bots:
        b.start()
    stop.wait()
    for b in bots:
        b.stop()


def client_proc(target, digests, threads, q):
    ch = h.channel(target)
    lat, lock = [], threading.Lock()

    def run(part):
        for d in part:
            t0 = time.monotonic()
            ops = list(tb.execute(ch, d, skip_cache=True))
            dt = time.monotonic() - t0
            if ops and ops[-1].done:
                with lock:
                    lat.append(dt)
    ts = [threading.Thread(target=run, args=(digests[k::threads],)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q.put(lat)


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        st = f.read().rsplit(")", 1)[1].split()
    return int(st[11]) + int(st[12])


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] if v else float("nan")


def main():
    n_lat = int(os.environ.get("LAT_N", "500"))
    n_tp = int(os.environ.get("TP_N", "6000"))
    clients = int(os.environ.get("CLIENTS", "64"))
    n_bots = int(os.environ.get("BOTS", "16"))
    idle = int(os.environ.get("IDLE_STREAMS", "1000"))
    tmp = tempfile.mkdtemp(prefix="rd-bench.", dir="/tmp")
    with open(os.path.join(tmp, "r.yaml"), "w") as f:
        f.write(cfg_text(tmp))
    log = open(os.path.join(tmp, "reactord.log"), "wb")
    proc = subprocess.Popen([h.REACTORD, "-c", os.path.join(tmp, "r.yaml")],
                            stdout=log, stderr=subprocess.STDOUT)
    stop = mp.Event()
    bots = []
    try:
        h.wait_for(lambda: os.path.exists(os.path.join(tmp, "ready")), 20, "ready-file")
        target = open(os.path.join(tmp, "ready")).read().split()[0]
        ch = h.channel(target)
        h.wait_for(lambda: h.status_name(h.health_check(ch).status) == "SERVING", 10, "up")
        sock = os.path.join(tmp, "state", "redis", "redis.sock")
        r = tb.Resp(sock)

        lat_d, blobs = actions(n_lat, "lat")
        tp_d, b2 = actions(n_tp, "tp")
        blobs.update(b2)
        tb.upload(ch, blobs)
        per = max(1, n_bots // 4)
        for k in range(0, n_bots, per):
            p = mp.Process(target=bot_proc, args=(
                target, ["bench-bot%d" % i for i in range(k, min(n_bots, k + per))], stop))
            p.start()
            bots.append(p)
        h.wait_for(lambda: r("ZCARD", "bots:") == n_bots, 20, "bot sessions")

        # Latency: one client, one action at a time.
        mem0 = int(dict(ln.split(":", 1) for ln in r("INFO", "memory").decode().split("\r\n")
                        if ":" in ln)["used_memory"])
        q = mp.Queue()
        client_proc(target, lat_d, 1, q)
        lat = q.get()
        print("latency_p50 %.2f ms" % (pct(lat, 0.5) * 1000))
        print("latency_p99 %.2f ms" % (pct(lat, 0.99) * 1000))
        mem1 = int(dict(ln.split(":", 1) for ln in r("INFO", "memory").decode().split("\r\n")
                        if ":" in ln)["used_memory"])
        print("redis_bytes_per_finished_operation %d bytes" % ((mem1 - mem0) // max(1, len(lat))))

        # Throughput: `clients` concurrent Execute loops.
        nproc = min(8, clients)
        t0, c0 = time.monotonic(), cpu_ticks(proc.pid)
        ps = []
        for k in range(nproc):
            p = mp.Process(target=client_proc, args=(target, tp_d[k::nproc], clients // nproc, q))
            p.start()
            ps.append(p)
        done = sum(len(q.get()) for _ in ps)
        for p in ps:
            p.join()
        secs = time.monotonic() - t0
        cpu = (cpu_ticks(proc.pid) - c0) / os.sysconf("SC_CLK_TCK")
        print("throughput %.0f actions/s (%d clients, %d bots, %d actions in %.1fs)" % (
            done / secs, clients, n_bots, done, secs))
        print("reactord_cpu %.0f %% of one core" % (100 * cpu / secs))

        # Ceiling: EVALSHA of an enqueue-sized script on the same server.
        lua = ("redis.call('HSET', KEYS[1], 'stage', 'QUEUED', 'priority', ARGV[1], "
               "'queued', ARGV[1]) redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1]) "
               "redis.call('SADD', KEYS[3], ARGV[1]) "
               "redis.call('PUBLISH', 'bench:ch', KEYS[1]) return 1")
        sha = r("SCRIPT", "LOAD", lua).decode()
        rb = shutil.which("redis-benchmark")
        if rb:
            out = subprocess.run([rb, "-s", sock, "-n", "100000", "-c", "50", "-P", "1", "-q",
                                  "EVALSHA", sha, "3", "bench:job:__rand_int__", "bench:q",
                                  "bench:s", "1"],
                                 capture_output=True, text=True, timeout=120).stdout
            m = re.search(r"([\d.,]+) requests per second", out)
            rate = float(m.group(1).replace(",", "")) if m else float("nan")
            print("redis_evalsha_ceiling %.0f scripts/s" % rate)
            # One action costs about 4 script runs (enqueue, view, bot
            # update reporting it, bot update assigning it).
            print("throughput_vs_ceiling %.2f (actions/s * 4 / scripts/s)" % (
                done / secs * 4 / rate))

        # Memory per idle waiting stream.
        stop.set()  # bots go away first so the streams stay idle
        for p in bots:
            p.join(30)
        idle_d, bl = actions(idle, "idle")
        tb.upload(ch, bl)
        rss0 = rss_kib(proc.pid)
        streams = []
        ich = h.channel(target)
        re_ = pb().re
        for d in idle_d:
            req = re_.ExecuteRequest(action_digest=d, skip_cache_lookup=True)
            req.execution_policy.priority = 0
            s = h.server_stream(ich, tb.EXEC + "Execute", pb().operations.Operation)(req)
            streams.append(s)
        for s in streams:
            next(s)
        time.sleep(1)
        rss1 = rss_kib(proc.pid)
        print("memory_per_idle_stream %.1f KiB (%d streams)" % ((rss1 - rss0) / idle, idle))
        for s in streams:
            s.cancel()
        ich.close()
        ch.close()
        r.close()
    finally:
        stop.set()
        for p in bots:
            p.join(30)
            if p.is_alive():
                p.kill()
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
