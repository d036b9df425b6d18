"""stall_probe.py ADDR READY-FILE - call grpc.health.v1.Health/Check every
2 ms on a connection of its own until SIGTERM, then print
"worst_ms p99_ms calls".  Used by contrib/bench/stall.sh."""
import signal
import sys
import time

import grpc

ch = grpc.insecure_channel(sys.argv[1], options=[("grpc.use_local_subchannel_pool", 1)])
check = ch.unary_unary("/grpc.health.v1.Health/Check")
lat, stop = [], []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
check(b"", timeout=10)
open(sys.argv[2], "w").close()
while not stop:
    t0 = time.perf_counter()
    check(b"", timeout=60)
    lat.append(time.perf_counter() - t0)
    time.sleep(0.002)
lat.sort()
print("%.1f %.1f %d" % (lat[-1] * 1000, lat[int(len(lat) * 0.99)] * 1000, len(lat)))
