#!/usr/bin/env bash
# cas.sh - remote-cache throughput of reactord against the ceilings of this
# machine, all measured in the same run:
#
#   sha256     openssl speed -evp sha256, one core: the hashing limit of
#              every CAS write (and of verified reads)
#   write      ByteStream Write of a 1 GiB blob with reactorctl upload (the
#              digest given, so the client does not hash); a fresh store per
#              run.  Goal: >= 60% of sha256.  Again with h2load posting a
#              pre-framed request body (1 MiB WriteRequests): the leanest
#              client, so what is left is the server.  For both, reactord's
#              share of its core (utime+stime over wall time), its CPU
#              seconds per GB and its run-queue wait (/proc/PID/schedstat):
#              a share well under 100% with little wait means the client
#              or flow control limits, not reactord.
#   pagecache  dd of the blob into the state dir in 1 MiB writes on CPU 0:
#              the page-cache write every disk Write pays on top of sha256.
#   read       ByteStream Read of the 1 GiB blob with h2load (a raw gRPC
#              request; the fastest client there is) and with reactorctl
#              download (verifies SHA-256 as it goes, so it is hash-bound);
#              nghttpd serving the same file as a static file to the same
#              h2load is the HTTP/2 ceiling.  Goal: >= 1.5 GB/s or >= 50% of
#              nghttpd.
#   batch      BatchUpdateBlobs of 1,000 x 1 KiB new blobs per call (grpcio,
#              requests serialized up front), to the disk store and to a
#              memory-store instance of the same server.
#   find       FindMissingBlobs with 10,000 digests per call (all present /
#              all missing), h2load at concurrency 1 and 8 (connections).
#              Goal: < 20 ms per call.
#   rss        reactord's RSS idle and while serving 8 concurrent 1 GiB
#              reads (sampled every 20 ms; VmHWM of a fresh process).
#   stalls     the longest Health.Check round trip seen by a prober (one
#              call every 2 ms) during a 1 GiB Write, the 8 reads and the
#              BatchUpdateBlobs runs: how long the event loop was blocked.
#
# reactord and nghttpd run on CPU 0, every client on CPU 1.  Everything
# lives in one temp dir, removed on exit with every process started here.
#
# usage: contrib/bench/cas.sh [BUILD_DIR]   (default: build)
# env:   SIZE (default 1073741824), WRITE_RUNS (3), READ_RUNS (3),
#        FIND_CALLS (200)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
SIZE=${SIZE:-1073741824}
WRITE_RUNS=${WRITE_RUNS:-3}
READ_RUNS=${READ_RUNS:-3}
FIND_CALLS=${FIND_CALLS:-200}
PY=/usr/bin/python3
for tool in openssl h2load nghttpd taskset "$PY" "$build/reactord" "$build/reactorctl"; do
	command -v "$tool" >/dev/null || { echo "cas.sh: $tool not found" >&2; exit 2; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cas-bench.XXXXXX")
declare -A write_cpu # rate -> reactord's "share cpu-s/GB runq-wait" in that run
rpid=""
npid=""
bgpid=""
loadpid=""
stop_pid() { # pid: SIGTERM, then wait (reactord stops its redis-server)
	[ -n "$1" ] || return 0
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
cleanup() {
	stop_pid "$loadpid"
	stop_pid "$bgpid"
	stop_pid "$npid"
	stop_pid "$rpid"
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
gbps() { calc "$1 / $2 / 1e9" 2; } # bytes seconds -> GB/s

# ---- reactord -----------------------------------------------------------
start_reactord() { # state-dir
	rm -f "$tmp/ready"
	cat > "$tmp/r.conf" <<CONF
listen: [127.0.0.1:0]
ready-file: $tmp/ready
state-dir: $1
log: {level: warn}
grpc: {max-recv-message-size: 64MiB, max-send-message-size: 64MiB}
instances: [{name: ""}, {name: mem, storage: memory, storage-max-size: 1GiB}]
CONF
	taskset -c 0 "$build/reactord" -c "$tmp/r.conf" >>"$tmp/reactord.log" 2>&1 &
	rpid=$!
	for _ in $(seq 400); do
		[ -s "$tmp/ready" ] && break
		kill -0 "$rpid" 2>/dev/null || { cat "$tmp/reactord.log" >&2; exit 1; }
		sleep 0.025
	done
	[ -s "$tmp/ready" ] || { echo "cas.sh: reactord not ready" >&2; exit 1; }
	addr=$(head -1 "$tmp/ready")
}
stop_reactord() { stop_pid "$rpid"; rpid=""; }
vm() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$rpid/status"; } # KiB
ctl() { taskset -c 1 "$build/reactorctl" -s "$addr" "$@"; }

# Loop stalls: a prober calls Health.Check every 2 ms on its own connection
# while a phase runs; SIGTERM makes it print "max_ms p99_ms calls".  It
# shares CPU 1 with the load (at a higher priority when we may raise it),
# so the figures are upper bounds.
cat > "$tmp/probe.py" <<'PY'
import signal, sys, time, grpc
ch = grpc.insecure_channel(sys.argv[1], options=[("grpc.use_local_subchannel_pool", 1)])
check = ch.unary_unary("/grpc.health.v1.Health/Check")
lat, stop = [], []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
check(b"", timeout=10)
open(sys.argv[2], "w").close()  # ready
while not stop:
    t0 = time.perf_counter()
    check(b"", timeout=60)
    lat.append(time.perf_counter() - t0)
    time.sleep(0.002)
lat.sort()
print("%.1f %.1f %d" % (lat[-1] * 1000, lat[int(len(lat) * 0.99)] * 1000, len(lat)))
PY
probe_nice=0
[ "$(id -u)" -eq 0 ] && probe_nice=-10
probe_start() {
	rm -f "$tmp/probe.ready" "$tmp/probe.out"
	taskset -c 1 nice -n "$probe_nice" "$PY" "$tmp/probe.py" "$addr" "$tmp/probe.ready" \
		> "$tmp/probe.out" &
	bgpid=$!
	for _ in $(seq 400); do [ -e "$tmp/probe.ready" ] && break; sleep 0.025; done
}
probe_stop() { # sets $stall to "max_ms p99_ms calls" (no subshell: it waits)
	kill -TERM "$bgpid"
	wait "$bgpid" || true
	bgpid=""
	stall=$(cat "$tmp/probe.out")
	[ -n "$stall" ] || stall="? ? 0"
}

# ---- 1. the sha256 ceiling ------------------------------------------------
# 16 KiB blocks: the size the issue's goal is stated in (1 MiB blocks
# measure the same within a percent).
sha=$(taskset -c 0 openssl speed -evp sha256 -bytes 16384 -seconds 3 2>/dev/null |
	awk '$1 == "sha256" { v = $NF; sub(/k$/, "", v); printf "%.0f", v * 1000 }')
[ -n "$sha" ] || { echo "cas.sh: could not parse openssl speed" >&2; exit 1; }

# ---- 2. the blob --------------------------------------------------------------
blob="$tmp/blob"
# AES-CTR of zeros: incompressible and much faster than /dev/urandom.
head -c "$SIZE" < <(openssl enc -aes-128-ctr -nosalt -pass pass:reactor -in /dev/zero \
	2>/dev/null) > "$blob"
hash=$(sha256sum "$blob" | cut -d' ' -f1)
digest="$hash/$SIZE"

# ---- 3. ByteStream Write: a fresh store per run -----------------------------
# The Write as one pre-framed gRPC body for h2load: 1 MiB WriteRequests
# (resource_name = 1 on the first, write_offset = 2, finish_write = 3 on
# the last, data = 10), each behind its 5-byte prefix.
"$PY" - "$blob" "$tmp/write.bin" "uploads/00000000-0000-4000-8000-000000000001/blobs/$digest" <<'PY'
import os, struct, sys
src, dst, name = sys.argv[1], sys.argv[2], sys.argv[3].encode()
def varint(n):
    b = bytearray()
    while n >= 0x80:
        b.append(n & 0x7F | 0x80)
        n >>= 7
    b.append(n)
    return bytes(b)
size, off = os.path.getsize(src), 0
with open(src, "rb") as f, open(dst, "wb") as o:
    while off < size:
        d = f.read(1 << 20)
        h = b"\x0a" + varint(len(name)) + name if off == 0 else b"\x10" + varint(off)
        if off + len(d) >= size:
            h += b"\x18\x01"
        h += b"\x52" + varint(len(d))
        o.write(b"\0" + struct.pack(">I", len(h) + len(d)) + h)
        o.write(d)
        off += len(d)
PY
tck=$(getconf CLK_TCK)
cpu_mark() { # reactord's CPU ticks (utime+stime) and run-queue wait (ns)
	echo "$(awk '{ print $14 + $15 }' "/proc/$rpid/stat") $(awk '{ print $2 }' "/proc/$rpid/schedstat")"
}
cpu_since() { # "ticks ns" t0 t1 -> "share% cpu-s/GB runq-wait%"
	local c0 q0 c1 q1
	read -r c0 q0 <<< "$1"
	read -r c1 q1 <<< "$(cpu_mark)"
	echo "$(calc "($c1 - $c0) / $tck / ($3 - $2) * 100" 0)%" \
		"$(calc "($c1 - $c0) / $tck / ($SIZE / 1e9)")" \
		"$(calc "($q1 - $q0) / 1e9 / ($3 - $2) * 100" 0)%"
}
write_rates=()
hwrite_rates=()
for i in $(seq "$WRITE_RUNS"); do
	rm -rf "$tmp/state"
	start_reactord "$tmp/state"
	m=$(cpu_mark)
	t0=$(now)
	out=$(ctl upload "$blob" "$digest")
	t1=$(now)
	[ "$out" = "$digest" ] || { echo "cas.sh: upload said \"$out\"" >&2; exit 1; }
	write_rates+=("$(calc "$SIZE / ($t1 - $t0)" 0)")
	write_cpu[${write_rates[-1]}]=$(cpu_since "$m" "$t0" "$t1")
	stop_reactord
	rm -rf "$tmp/state"
	start_reactord "$tmp/state"
	m=$(cpu_mark)
	t0=$(now)
	taskset -c 1 h2load -n 1 -c 1 -m 1 -d "$tmp/write.bin" \
		-H 'content-type: application/grpc' -H 'te: trailers' \
		"http://$addr/google.bytestream.ByteStream/Write" > "$tmp/hwrite.out" 2>&1
	t1=$(now)
	[ -z "$(printf '%s\n' "$digest" | ctl missing)" ] ||
		{ cat "$tmp/hwrite.out" >&2; echo "cas.sh: h2load Write did not store the blob" >&2; exit 1; }
	hwrite_rates+=("$(calc "$SIZE / ($t1 - $t0)" 0)")
	write_cpu[${hwrite_rates[-1]}]=$(cpu_since "$m" "$t0" "$t1")
	stop_reactord
done
rm -f "$tmp/write.bin"
# The page-cache ceiling: the same bytes into a fresh file of the state dir.
rm -rf "$tmp/state"
mkdir -p "$tmp/state"
t0=$(now)
taskset -c 0 dd if="$blob" of="$tmp/state/dd" bs=1M status=none
t1=$(now)
pagecache=$(calc "$SIZE / ($t1 - $t0)" 0)
rm -f "$tmp/state/dd"
# Once more with the prober (not counted: it shares the client's CPU).
rm -rf "$tmp/state"
start_reactord "$tmp/state"
probe_start
ctl upload "$blob" "$digest" >/dev/null
probe_stop
stall_write=$stall
stop_reactord
best_write=$(printf '%s\n' "${write_rates[@]}" | sort -n | tail -1)
best_hwrite=$(printf '%s\n' "${hwrite_rates[@]}" | sort -n | tail -1)

# gRPC request bodies (5-byte prefix + message), built with the generated
# protos; the BatchUpdateBlobs bench runs from the same script.
"$PY" - "$build/gen-py" "$tmp" "$digest" <<'PY'
import hashlib, os, struct, sys
sys.path.insert(0, sys.argv[1])
from build.bazel.remote.execution.v2 import remote_execution_pb2 as re2
from google.bytestream import bytestream_pb2 as bs
tmp, digest = sys.argv[2], sys.argv[3]
def body(msg):
    b = msg.SerializeToString()
    return b"\0" + struct.pack(">I", len(b)) + b
open(os.path.join(tmp, "read.bin"), "wb").write(body(bs.ReadRequest(resource_name="blobs/" + digest)))
# 10 x 1,000 x 1 KiB blobs for BatchUpdateBlobs (kept for the find bench).
rnd = os.urandom(1024 * 10000)
blobs = [rnd[i * 1024:(i + 1) * 1024] for i in range(10000)]
ds = [re2.Digest(hash=hashlib.sha256(b).hexdigest(), size_bytes=1024) for b in blobs]
with open(os.path.join(tmp, "batches.bin"), "wb") as f:
    for k in range(10):
        m = re2.BatchUpdateBlobsRequest(requests=[
            re2.BatchUpdateBlobsRequest.Request(digest=d, data=b)
            for d, b in zip(ds[k * 1000:(k + 1) * 1000], blobs[k * 1000:(k + 1) * 1000])])
        s = m.SerializeToString()
        f.write(struct.pack(">I", len(s)) + s)
open(os.path.join(tmp, "find-present.bin"), "wb").write(
    body(re2.FindMissingBlobsRequest(blob_digests=ds)))
missing = [re2.Digest(hash=hashlib.sha256(b"absent %d" % i).hexdigest(), size_bytes=1024 + i)
           for i in range(10000)]
open(os.path.join(tmp, "find-missing.bin"), "wb").write(
    body(re2.FindMissingBlobsRequest(blob_digests=missing)))
PY

# ---- 4. RSS: a fresh reactord over the stored blob, 8 concurrent reads -------
grpc_h=(-H 'content-type: application/grpc' -H 'te: trailers')
start_reactord "$tmp/state"
ctl download "$digest" /dev/null # warm: index and page cache
rss_idle=$(vm VmRSS)
probe_start
taskset -c 1 h2load -n 8 -c 8 -m 1 -d "$tmp/read.bin" "${grpc_h[@]}" \
	"http://$addr/google.bytestream.ByteStream/Read" > "$tmp/rss8.out" 2>&1 &
loadpid=$!
rss_peak=$rss_idle
while kill -0 "$loadpid" 2>/dev/null; do
	r=$(vm VmRSS)
	[ "$r" -gt "$rss_peak" ] && rss_peak=$r
	sleep 0.02
done
wait "$loadpid" || true
probe_stop
stall_read8=$stall
rss_hwm=$(vm VmHWM)
read8=$(awk '/^traffic:/ { print $2 }' "$tmp/rss8.out")

# ---- 5. ByteStream Read ---------------------------------------------------------
h2time() { # h2load output -> seconds
	awk '/finished in/ { t = $3; sub(/,$/, "", t)
		if (t ~ /ms$/) { sub(/ms$/, "", t); t /= 1000 } else sub(/s$/, "", t)
		print t }' "$1"
}
h2ok() { awk '/^requests:/ { print $8 }' "$1"; } # succeeded
taskset -c 1 h2load -n "$READ_RUNS" -c 1 -m 1 -d "$tmp/read.bin" "${grpc_h[@]}" \
	"http://$addr/google.bytestream.ByteStream/Read" > "$tmp/read.out" 2>&1
[ "$(h2ok "$tmp/read.out")" = "$READ_RUNS" ] || { cat "$tmp/read.out" >&2; exit 1; }
read_h2=$(calc "$SIZE * $READ_RUNS / $(h2time "$tmp/read.out")" 0)
t0=$(now)
ctl download "$digest" /dev/null
t1=$(now)
read_ctl=$(calc "$SIZE / ($t1 - $t0)" 0)

# ---- 6. BatchUpdateBlobs --------------------------------------------------------
probe_start
batch=$(taskset -c 1 "$PY" - "$addr" "$tmp/batches.bin" "$build/gen-py" <<'PY'
import struct, sys, time, grpc
sys.path.insert(0, sys.argv[3])
from build.bazel.remote.execution.v2 import remote_execution_pb2 as re2
ch = grpc.insecure_channel(sys.argv[1], options=[("grpc.max_send_message_length", 64 << 20),
                                                 ("grpc.max_receive_message_length", 64 << 20)])
call = ch.unary_unary("/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs")
data = open(sys.argv[2], "rb").read()
reqs, off = [], 0
while off < len(data):
    n = struct.unpack(">I", data[off:off + 4])[0]
    reqs.append(data[off + 4:off + 4 + n])
    off += 4 + n
call(b"", timeout=10)  # connect
out = []
# The same requests to the disk instance "" and the memory instance "mem"
# (instance_name appended: the last occurrence of a field wins).
for suffix in (b"", b"\x0a\x03mem"):
    times = []
    for r in reqs:
        t0 = time.perf_counter()
        resp = call(r + suffix, timeout=60)
        times.append(time.perf_counter() - t0)
        sts = re2.BatchUpdateBlobsResponse.FromString(resp).responses
        bad = [x.status for x in sts if x.status.code]
        assert len(sts) == 1000 and not bad, "per-blob errors: %s" % bad[:3]
    times.sort()
    out.append("%.2f %.1f" % (times[len(times) // 2] * 1000, len(reqs) / sum(times)))
print(" ".join(out))
PY
)
read -r batch_ms batch_cps mbatch_ms mbatch_cps <<< "$batch"
probe_stop
stall_batch=$stall

# ---- 7. FindMissingBlobs --------------------------------------------------------
find_run() { # body-file concurrency -> "calls/s mean_ms p99_ms"
	local calls=$FIND_CALLS
	[ "$2" -gt 1 ] && calls=$((FIND_CALLS * 2))
	rm -f "$tmp/find.log"
	taskset -c 1 h2load -n "$calls" -c "$2" -m 1 -d "$1" "${grpc_h[@]}" \
		--log-file="$tmp/find.log" \
		"http://$addr/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs" \
		> "$tmp/find.out" 2>&1
	[ "$(h2ok "$tmp/find.out")" = "$calls" ] || { cat "$tmp/find.out" >&2; exit 1; }
	local cps
	cps=$(calc "$calls / $(h2time "$tmp/find.out")" 0)
	sort -n -k3 "$tmp/find.log" | awk -v cps="$cps" '{ a[NR] = $3; s += $3 }
		END { printf "%s %.2f %.2f", cps, s / NR / 1000, a[int(NR * 0.99)] / 1000 }'
}
# Sanity: a present digest set comes back empty, a missing one full.
[ -z "$(printf '%s\n' "$digest" | ctl missing)" ] || { echo "cas.sh: blob missing" >&2; exit 1; }
fp1=$(find_run "$tmp/find-present.bin" 1)
fp8=$(find_run "$tmp/find-present.bin" 8)
fm1=$(find_run "$tmp/find-missing.bin" 1)
fm8=$(find_run "$tmp/find-missing.bin" 8)
stop_reactord

# ---- 8. the HTTP/2 ceiling: nghttpd serving the same file ---------------------------
port=$((20000 + RANDOM % 20000))
taskset -c 0 nghttpd --no-tls -d "$tmp" "$port" >/dev/null 2>&1 &
npid=$!
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.025; done
taskset -c 1 h2load -n "$READ_RUNS" -c 1 -m 1 "http://127.0.0.1:$port/blob" > "$tmp/ng.out" 2>&1
[ "$(h2ok "$tmp/ng.out")" = "$READ_RUNS" ] || { cat "$tmp/ng.out" >&2; exit 1; }
read_ng=$(calc "$SIZE * $READ_RUNS / $(h2time "$tmp/ng.out")" 0)
stop_pid "$npid"
npid=""

# ---- report ------------------------------------------------------------------------
mib=$((SIZE >> 20))
loadpid=""
echo "reactord CAS benchmark: $(nproc) CPUs, $(uname -r); reactord on CPU 0, clients on CPU 1;" \
	"blob $mib MiB"
printf '%-44s %12s   %s\n' "measure" "value" "ratio / goal"
printf '%-44s %9s GB/s   %s\n' "sha256 ceiling (openssl, 1 core)" "$(gbps "$sha" 1)" "1.00"
printf '%-44s %9s GB/s   %s of sha256 (goal >= 0.60)\n' \
	"Write ${mib} MiB, reactorctl upload (best of $WRITE_RUNS)" "$(gbps "$best_write" 1)" \
	"$(calc "$best_write / $sha")"
echo "   reactord during that Write: ${write_cpu[$best_write]} (share of its core, CPU s/GB, run-queue wait)"
printf '%-44s %9s GB/s   %s of sha256; reactord %s\n' \
	"Write ${mib} MiB, h2load pre-framed (best of $WRITE_RUNS)" "$(gbps "$best_hwrite" 1)" \
	"$(calc "$best_hwrite / $sha")" "${write_cpu[$best_hwrite]}"
printf '%-44s %9s GB/s   sha256 + page cache together: %s of sha256\n' \
	"page-cache write ${mib} MiB (dd, CPU 0)" "$(gbps "$pagecache" 1)" \
	"$(calc "1 / (1 + $sha / $pagecache)")"
printf '%-44s %9s GB/s   %s of nghttpd; goal >= 1.5 GB/s or >= 0.50\n' \
	"Read ${mib} MiB, h2load (x$READ_RUNS)" "$(gbps "$read_h2" 1)" "$(calc "$read_h2 / $read_ng")"
printf '%-44s %9s GB/s   %s of sha256 (client verifies)\n' \
	"Read ${mib} MiB, reactorctl download" "$(gbps "$read_ctl" 1)" "$(calc "$read_ctl / $sha")"
printf '%-44s %9s GB/s   ceiling\n' "nghttpd static ${mib} MiB file, h2load (x$READ_RUNS)" \
	"$(gbps "$read_ng" 1)"
printf '%-44s %9s ms     %s calls/s, %s MB/s of blobs\n' \
	"BatchUpdateBlobs 1000 x 1 KiB, disk (median)" "$batch_ms" "$batch_cps" \
	"$(calc "$batch_cps * 1000 * 1024 / 1e6" 1)" \
	"BatchUpdateBlobs 1000 x 1 KiB, memory (median)" "$mbatch_ms" "$mbatch_cps" \
	"$(calc "$mbatch_cps * 1000 * 1024 / 1e6" 1)"
for row in "present c=1:$fp1" "present c=8:$fp8" "missing c=1:$fm1" "missing c=8:$fm8"; do
	set -- ${row#*:}
	printf '%-44s %9s ms     %s calls/s, p99 %s ms (goal < 20 ms)\n' \
		"FindMissingBlobs 10,000 ${row%%:*} (mean)" "$2" "$1" "$3"
done
printf '%-44s %9s MiB\n' "RSS idle (after one read)" "$((rss_idle / 1024))"
printf '%-44s %9s MiB    VmHWM %s MiB; %s served\n' "RSS peak, 8 concurrent ${mib} MiB reads" \
	"$((rss_peak / 1024))" "$((rss_hwm / 1024))" "$read8"
for row in "Write ${mib} MiB:$stall_write" "8 x Read ${mib} MiB:$stall_read8" \
	"BatchUpdateBlobs runs:$stall_batch"; do
	set -- ${row#*:}
	printf '%-44s %9s ms     p99 %s ms over %s Health.Check calls\n' \
		"worst loop stall, ${row%%:*}" "$1" "$2" "$3"
done
echo "write runs (B/s): ${write_rates[*]}; h2load: ${hwrite_rates[*]}"
