#!/usr/bin/env bash
# unary.sh - unary gRPC throughput and latency of reactord against the
# HTTP/2-on-loopback ceiling of this machine, measured in the same run.
#
# h2load drives Capabilities.GetCapabilities (a prepared gRPC request body)
# at a few concurrency levels; then nghttpd serves a small static file with
# the same h2load settings.  reactord and nghttpd are pinned to CPU 0 and
# h2load to CPU 1, so "one core" means one core.  Prints req/s, p50/p99 and
# the ratio, then reactord's RSS idle and with 1,000 idle streams open.
#
# With --tls both servers speak TLS (a P-256 certificate made here with the
# openssl CLI; ALPN h2, h2load on https:// URLs): reactord on a TLS
# listener against nghttpd with the same key and certificate.  The RSS
# figures are taken in plaintext mode only.
#
# Then (plaintext) the same h2load settings against reactord and the gRPC
# C++ 1.51 asynchronous REAPI server (REAPI_PEER, default
# ../shared/peers/grpcxx/build/reapi-peer next to the repository; built by
# its build.sh), both pinned to CPU 0 with one thread, for
# GetCapabilities, FindMissingBlobs of one digest (present) and of 1,000
# digests (500 present, interleaved with 500 absent; the same 500 blobs
# uploaded to both first): calls/s of each and the ratio.  Skipped, with a
# note, when the peer is not built.
#
# usage: contrib/bench/unary.sh [--tls] [BUILD_DIR]   (default: build)
# env:   REQS (200000 small calls), FMB_REQS (20000 1,000-digest calls),
#        REAPI_PEER, PEER_ONLY=1 (only the reactord-vs-peer table)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
tls=0
if [ "${1:-}" = --tls ]; then tls=1; shift; fi
build=${1:-$top/build}
REQS=${REQS:-200000}
FMB_REQS=${FMB_REQS:-20000}
PEER_ONLY=${PEER_ONLY:-0}
REAPI_PEER=${REAPI_PEER:-$top/../shared/peers/grpcxx/build/reapi-peer}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

listen="[127.0.0.1:0]"
scheme=http
if [ "$tls" = 1 ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
		-keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
	listen="[{address: 127.0.0.1:0, tls: {cert: $tmp/cert.pem, key: $tmp/key.pem}}]"
	scheme=https
fi
cat > "$tmp/r.conf" <<CONF
listen: $listen
ready-file: $tmp/ready
state-dir: $tmp/state
log: {level: warn}
http2: {max-concurrent-streams: 2000}
CONF
taskset -c 0 "$build/reactord" -c "$tmp/r.conf" 2>"$tmp/reactord.log" &
rpid=$!; pids+=("$rpid")
for _ in $(seq 200); do [ -s "$tmp/ready" ] && break; sleep 0.05; done
addr=$(head -1 "$tmp/ready")

# GetCapabilities{instance_name: ""}: a zero-length message.
printf '\0\0\0\0\0' > "$tmp/req.bin"
printf 'x%.0s' $(seq 100) > "$tmp/small.txt"
port=$((20000 + RANDOM % 20000))
if [ "$tls" = 1 ]; then
	taskset -c 0 nghttpd -d "$tmp" "$port" "$tmp/key.pem" "$tmp/cert.pem" >/dev/null 2>&1 &
else
	taskset -c 0 nghttpd --no-tls -d "$tmp" "$port" >/dev/null 2>&1 &
fi
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done

run() { # name url extra-args...
	local name=$1 url=$2; shift 2
	taskset -c 1 h2load -n "$REQS" "$@" "$url" 2>&1 |
		awk -v name="$name" '
			/finished in/ { for (i = 1; i <= NF; i++) if ($i ~ /req\/s/) rps = $(i-1) }
			/^requests:/ { ok = $8 }
			/^time for request:/ { mean = $6; sd = $7 }
			END { printf "%s %s %s %s\n", name, rps, mean, ok }'
}
pct() { # p50/p99 from a per-request log
	sort -n "$1" | awk '{a[NR]=$1} END {printf "%.3f %.3f", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}'
}

rss() { awk '/VmRSS/ {print $2}' "/proc/$rpid/status"; }
if [ "$tls" = 0 ] && [ "$PEER_ONLY" = 0 ]; then
idle=$(rss)
# 1,000 idle streams: Health.Watch calls that stay open, on one connection.
/usr/bin/python3 - "$addr" "$build/gen-py" "$tmp/watch.ready" <<'PY' &
import sys, time, grpc
# HealthCheckRequest{service: ""} is the empty message; replies stay raw.
ch = grpc.insecure_channel(sys.argv[1])
w = ch.unary_stream("/grpc.health.v1.Health/Watch")
calls = [w(b"") for _ in range(1000)]
for c in calls:
    next(c)
open(sys.argv[3], "w").write("ok")
time.sleep(60)
PY
ppid=$!; pids+=("$ppid")
for _ in $(seq 600); do [ -s "$tmp/watch.ready" ] && break; sleep 0.05; done
busy=$(rss)
echo "rss_idle_kib=$idle rss_1000_watch_streams_kib=$busy per_stream_bytes=$(( (busy - idle) * 1024 / 1000 ))"
kill "$ppid" 2>/dev/null; wait "$ppid" 2>/dev/null || true
fi

if [ "$PEER_ONLY" = 0 ]; then
[ "$tls" = 1 ] && echo "TLS: reactord and nghttpd both over TLS ($(openssl version))"
echo "concurrency  reactord_req/s  nghttpd_req/s  ratio  reactord_p50/p99_ms  nghttpd_p50/p99_ms"
for c in 1 8 64; do
	m=$(( c > 8 ? 8 : c )); conns=$(( (c + m - 1) / m ))
	taskset -c 1 h2load -n "$REQS" -c "$conns" -m "$m" -d "$tmp/req.bin" \
		-H 'content-type: application/grpc' -H 'te: trailers' --log-file="$tmp/r.log" \
		"$scheme://$addr/build.bazel.remote.execution.v2.Capabilities/GetCapabilities" > "$tmp/r.out" 2>&1
	taskset -c 1 h2load -n "$REQS" -c "$conns" -m "$m" --log-file="$tmp/n.log" \
		"$scheme://127.0.0.1:$port/small.txt" > "$tmp/n.out" 2>&1
	r=$(awk '/finished in/ {for(i=1;i<=NF;i++) if($i ~ /req\/s/) print $(i-1)}' "$tmp/r.out" | tr -d ',')
	n=$(awk '/finished in/ {for(i=1;i<=NF;i++) if($i ~ /req\/s/) print $(i-1)}' "$tmp/n.out" | tr -d ',')
	rok=$(awk '/^status codes:/ {print $3}' "$tmp/r.out")
	rp=$(awk '{print $3}' "$tmp/r.log" > "$tmp/r.lat"; pct "$tmp/r.lat")
	np=$(awk '{print $3}' "$tmp/n.log" > "$tmp/n.lat"; pct "$tmp/n.lat")
	printf "%-11s  %-14s  %-13s  %-5s  %-19s  %s   (2xx: %s)\n" "$c" "$r" "$n" \
		"$(awk -v a="$r" -v b="$n" 'BEGIN{printf "%.2f", a/b}')" "$rp" "$np" "$rok"
	rm -f "$tmp/r.log" "$tmp/n.log"
done
fi

# ---- reactord against the gRPC C++ peer ------------------------------------
[ "$tls" = 1 ] && exit 0
if [ ! -x "$REAPI_PEER" ]; then
	echo "reapi-peer not found at $REAPI_PEER (run ../shared/peers/grpcxx/build.sh" \
		"or set REAPI_PEER): skipping the comparison with the gRPC C++ peer"
	exit 0
fi
taskset -c 0 "$REAPI_PEER" --threads 1 127.0.0.1:0 > "$tmp/peer.out" 2>&1 &
pids+=($!)
paddr=
for _ in $(seq 200); do
	paddr=$(awk '/listening on/ {print $4}' "$tmp/peer.out")
	[ -n "$paddr" ] && break
	sleep 0.05
done
[ -n "$paddr" ] || { echo "unary.sh: reapi-peer did not start" >&2; cat "$tmp/peer.out" >&2; exit 1; }
# The same 500 blobs stored in both servers; request bodies prepared once.
/usr/bin/python3 - "$build/gen-py" "$tmp" "$addr" "$paddr" <<'PY'
import hashlib, struct, sys, grpc
sys.path.insert(0, sys.argv[1])
from build.bazel.remote.execution.v2 import remote_execution_pb2 as re2
tmp = sys.argv[2]
def body(msg):
    b = msg.SerializeToString()
    return b"\0" + struct.pack(">I", len(b)) + b
blobs = [b"unary.sh blob %d " % i * 4 for i in range(500)]
present = [re2.Digest(hash=hashlib.sha256(b).hexdigest(), size_bytes=len(b)) for b in blobs]
absent = [re2.Digest(hash=hashlib.sha256(b"absent %d" % i).hexdigest(), size_bytes=100 + i)
          for i in range(500)]
up = re2.BatchUpdateBlobsRequest(requests=[
    re2.BatchUpdateBlobsRequest.Request(digest=d, data=b) for d, b in zip(present, blobs)])
for a in sys.argv[3:]:
    ch = grpc.insecure_channel(a)
    r = ch.unary_unary("/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
                       request_serializer=lambda m: m.SerializeToString(),
                       response_deserializer=re2.BatchUpdateBlobsResponse.FromString)(up, timeout=30)
    assert all(x.status.code == 0 for x in r.responses), r
    ch.close()
mixed = [d for pair in zip(present, absent) for d in pair]
for a in sys.argv[3:]:  # both answer the same: the 500 absent ones
    ch = grpc.insecure_channel(a)
    r = ch.unary_unary("/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs",
                       request_serializer=lambda m: m.SerializeToString(),
                       response_deserializer=re2.FindMissingBlobsResponse.FromString)(
        re2.FindMissingBlobsRequest(blob_digests=mixed), timeout=30)
    assert list(r.missing_blob_digests) == absent, a
    ch.close()
open(tmp + "/fmb1.bin", "wb").write(body(re2.FindMissingBlobsRequest(blob_digests=present[:1])))
open(tmp + "/fmb1000.bin", "wb").write(body(re2.FindMissingBlobsRequest(blob_digests=mixed)))
PY
cas=build.bazel.remote.execution.v2.ContentAddressableStorage
rate() { awk '/finished in/ {for(i=1;i<=NF;i++) if($i ~ /req\/s/) print $(i-1)}' "$1" | tr -d ','; }
echo "reactord vs the gRPC C++ peer ($(grep -o 'grpc [0-9.]*' "$tmp/peer.out")), one thread each on CPU 0, h2load on CPU 1"
echo "call                     concurrency  reactord_calls/s  peer_calls/s  ratio  (2xx/ok: reactord peer)"
for call in "GetCapabilities:build.bazel.remote.execution.v2.Capabilities/GetCapabilities:req.bin:$REQS" \
	"FindMissingBlobs x1:$cas/FindMissingBlobs:fmb1.bin:$REQS" \
	"FindMissingBlobs x1000:$cas/FindMissingBlobs:fmb1000.bin:$FMB_REQS"; do
	IFS=: read -r name path body n <<< "$call"
	for c in 1 8 64; do
		m=$(( c > 8 ? 8 : c )); conns=$(( (c + m - 1) / m ))
		for who in r p; do
			a=$addr; [ "$who" = p ] && a=$paddr
			taskset -c 1 h2load -n "$n" -c "$conns" -m "$m" -d "$tmp/$body" \
				-H 'content-type: application/grpc' -H 'te: trailers' \
				"http://$a/$path" > "$tmp/$who.out" 2>&1
		done
		r=$(rate "$tmp/r.out"); p=$(rate "$tmp/p.out")
		printf "%-24s %-11s  %-16s  %-12s  %-5s  (%s %s)\n" "$name" "$c" "$r" "$p" \
			"$(awk -v a="$r" -v b="$p" 'BEGIN{printf "%.2f", a/b}')" \
			"$(awk '/^requests:/ {print $8}' "$tmp/r.out")" "$(awk '/^requests:/ {print $8}' "$tmp/p.out")"
	done
done
