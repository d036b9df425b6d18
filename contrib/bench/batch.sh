#!/usr/bin/env bash
# batch.sh - small blobs through the CAS batch calls, the disk store against
# the memory store of the same reactord, in the same run:
#
#   update     BatchUpdateBlobs of 1,000 new x 1 KiB blobs per call (grpcio,
#              requests serialized up front), BATCHES calls each to a disk
#              instance with small blobs packed (the default), to a disk
#              instance with one file per blob (storage-small-blob-size: 0)
#              and to a memory instance.  Goal: packed disk within 3x of
#              memory; >= 50,000 small blobs stored per second.
#   read       BatchReadBlobs of the same 1,000 blobs per call, every
#              instance (the disk store hashes every whole-blob read).
#   server     the same calls as reactord's access log times them (request
#              received to reply queued): the store's cost without the
#              Python client's, and the blobs/s one core of reactord stores.
#   store      contrib/bench/blob_put (built here on demand): blob_put and
#              blob_get of 1 KiB blobs straight into each store, no RPC, on
#              CPU 0: blobs/s one core stores (SHA-256 included).
#   stalls     the longest Health.Check round trip a prober (one call every
#              2 ms) saw during the packed runs: how long the loop was held.
#
# reactord runs on CPU 0, every client on CPU 1 (taskset), as the other
# bench scripts do; the machine may be busy, so compare the ratios of one
# run, and repeat (RUNS) to see the spread.  Everything lives in one temp
# dir, removed on exit with every process started here.
#
# usage: contrib/bench/batch.sh [BUILD_DIR]   (default: build)
# env:   BATCHES (default 20), RUNS (default 3)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
BATCHES=${BATCHES:-20}
RUNS=${RUNS:-3}
PY=/usr/bin/python3
for tool in taskset "$PY" "$build/reactord"; do
	command -v "$tool" >/dev/null || { echo "batch.sh: $tool not found" >&2; exit 2; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/batch-bench.XXXXXX")
rpid=""
bgpid=""
stop_pid() {
	[ -n "$1" ] || return 0
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
cleanup() {
	stop_pid "$bgpid"
	stop_pid "$rpid"
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_reactord() { # state-dir
	rm -f "$tmp/ready"
	cat > "$tmp/r.conf" <<CONF
listen: [127.0.0.1:0]
ready-file: $tmp/ready
state-dir: $1
log: {level: warn, access-log: true}
grpc: {max-recv-message-size: 64MiB, max-send-message-size: 64MiB}
instances:
  - {name: ""}
  - {name: files, storage-small-blob-size: 0}
  - {name: mem, storage: memory, storage-max-size: 4GiB}
CONF
	taskset -c 0 "$build/reactord" -c "$tmp/r.conf" >>"$tmp/reactord.log" 2>&1 &
	rpid=$!
	for _ in $(seq 400); do
		[ -s "$tmp/ready" ] && break
		kill -0 "$rpid" 2>/dev/null || { cat "$tmp/reactord.log" >&2; exit 1; }
		sleep 0.025
	done
	[ -s "$tmp/ready" ] || { echo "batch.sh: reactord not ready" >&2; exit 1; }
	addr=$(head -1 "$tmp/ready")
}

cat > "$tmp/probe.py" <<'PY'
import signal, sys, time, grpc
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
PY

# The load: per instance, BATCHES update calls of fresh blobs, then the
# same number of reads of them.  Prints "instance upd_ms upd_blobs_s
# read_ms" lines (medians; blobs/s from the total time).
cat > "$tmp/load.py" <<'PY'
import hashlib, os, struct, sys, time, grpc
sys.path.insert(0, sys.argv[2])
from build.bazel.remote.execution.v2 import remote_execution_pb2 as re2
addr, batches, run = sys.argv[1], int(sys.argv[3]), int(sys.argv[4])
ch = grpc.insecure_channel(addr, options=[("grpc.max_send_message_length", 64 << 20),
                                          ("grpc.max_receive_message_length", 64 << 20)])
upd = ch.unary_unary("/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs")
rd = ch.unary_unary("/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs")
for inst in sys.argv[5:]:
    ureqs, rreqs = [], []
    for k in range(batches):
        rnd = os.urandom(1024 * 1000)
        blobs = [rnd[i * 1024:(i + 1) * 1024] for i in range(1000)]
        ds = [re2.Digest(hash=hashlib.sha256(b).hexdigest(), size_bytes=1024) for b in blobs]
        ureqs.append(re2.BatchUpdateBlobsRequest(instance_name=inst, requests=[
            re2.BatchUpdateBlobsRequest.Request(digest=d, data=b)
            for d, b in zip(ds, blobs)]).SerializeToString())
        rreqs.append(re2.BatchReadBlobsRequest(instance_name=inst,
                                               digests=ds).SerializeToString())
    upd(re2.BatchUpdateBlobsRequest(instance_name=inst).SerializeToString(), timeout=10)
    ut, rt = [], []
    for r in ureqs:
        t0 = time.perf_counter()
        resp = upd(r, timeout=60)
        ut.append(time.perf_counter() - t0)
        sts = re2.BatchUpdateBlobsResponse.FromString(resp).responses
        assert len(sts) == 1000 and not [x for x in sts if x.status.code], inst
    for r in rreqs:
        t0 = time.perf_counter()
        resp = rd(r, timeout=60)
        rt.append(time.perf_counter() - t0)
        sts = re2.BatchReadBlobsResponse.FromString(resp).responses
        assert len(sts) == 1000 and not [x for x in sts if x.status.code], inst
    med = lambda v: sorted(v)[len(v) // 2] * 1000
    print("%s %.2f %.0f %.2f" % (inst or "disk", med(ut), 1000 * len(ut) / sum(ut), med(rt)))
PY

probe_nice=0
[ "$(id -u)" -eq 0 ] && probe_nice=-10
echo "batch.sh: $(nproc) CPUs, $(uname -r); reactord on CPU 0, clients on CPU 1;" \
	"$BATCHES calls of 1,000 x 1 KiB per instance, $RUNS runs (other load on the machine" \
	"shows as spread)"
make -s -C "$build" contrib/bench/blob_put
mkdir "$tmp/direct"
echo "store alone (blob_put/blob_get on CPU 0, SHA-256 included):"
taskset -c 0 "$build/contrib/bench/blob_put" "$tmp/direct" 100000 1024 | sed 's/^/  /'
rm -rf "$tmp/direct"
echo "through reactord (update/read: client-side medians; srv: access-log durations):"
printf '%-4s %-6s %10s %10s %10s %10s %11s %11s   %s\n' run store "update ms" "blobs/s" \
	"read ms" "srv upd ms" "srv blobs/s" "srv read ms" "client ratio to memory"
for run in $(seq "$RUNS"); do
	rm -rf "$tmp/state"
	: > "$tmp/reactord.log"
	start_reactord "$tmp/state"
	rm -f "$tmp/probe.ready"
	taskset -c 1 nice -n "$probe_nice" "$PY" "$tmp/probe.py" "$addr" "$tmp/probe.ready" \
		> "$tmp/probe.out" &
	bgpid=$!
	for _ in $(seq 400); do [ -e "$tmp/probe.ready" ] && break; sleep 0.025; done
	taskset -c 1 "$PY" "$tmp/load.py" "$addr" "$build/gen-py" "$BATCHES" "$run" mem "" files \
		> "$tmp/load.out"
	kill -TERM "$bgpid"
	wait "$bgpid" || true
	bgpid=""
	# Server-side medians from the access log: per instance, one empty
	# update (connect) then BATCHES updates, then BATCHES reads.
	srv() { # method skip-first -> one "median_ms" per instance
		local -a v
		mapfile -t v < <(grep "method=[^ ]*/$1 " "$tmp/reactord.log" |
			sed 's/.* duration=\([0-9.]*\)ms.*/\1/')
		local per=$((BATCHES + $2)) i
		for ((i = 0; i + per <= ${#v[@]}; i += per)); do
			printf '%s\n' "${v[@]:i+$2:BATCHES}" | sort -g |
				awk '{ a[NR] = $1 } END { printf "%s ", a[int((NR + 1) / 2)] }'
		done
	}
	read -r -a supd <<< "$(srv BatchUpdateBlobs 1)"
	read -r -a srd <<< "$(srv BatchReadBlobs 0)"
	mem_ms=$(awk '$1 == "mem" { print $2 }' "$tmp/load.out")
	i=0
	while read -r inst ums bps rms; do
		s_u=${supd[$i]:-0} s_r=${srd[$i]:-0}
		printf '%-4s %-6s %10s %10s %10s %10s %11s %11s   %s\n' "$run" "$inst" "$ums" "$bps" \
			"$rms" "$s_u" "$(awk "BEGIN { printf \"%.0f\", ($s_u > 0) ? 1000000 / $s_u : 0 }")" \
			"$s_r" "$(awk "BEGIN { printf \"%.2f\", $ums / $mem_ms }")"
		i=$((i + 1))
	done < "$tmp/load.out"
	s_mem=${supd[0]:-1}
	echo "     server-side update ratio to memory: disk $(awk "BEGIN { printf \"%.2f\", ${supd[1]:-0} / $s_mem }")," \
		"files $(awk "BEGIN { printf \"%.2f\", ${supd[2]:-0} / $s_mem }")"
	echo "     loop stall during the run (max ms, p99 ms, probes): $(cat "$tmp/probe.out")"
	echo "     segments: $(ls "$tmp/state/cas/default/pack" | wc -l)," \
		"$(du -sk "$tmp/state/cas/default/pack" | cut -f1) KiB;" \
		"files store: $(find "$tmp/state/cas/files/cas" -type f | wc -l) files"
	stop_pid "$rpid"
	rpid=""
done
