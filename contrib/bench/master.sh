#!/usr/bin/env bash
# master.sh - benchmark of the build master (reactor-buckets(7), MASTER), on
# demand; not part of `make check`.
#
# One redis-server of our own (AOF on, everysec, as the embedded default),
# an executor reactord with WORKERS local reactor-workers, and 3 reactords
# that are masters of bucket "ci" (default poll interval, 10 s, so the
# timer cannot be what sets the latency; builder "one": one step, `true`,
# not cached) running their steps on the executor.  contrib/bench/
# master_load.py then measures (see its banner):
#
#   throughput   N builds put at once: builds/s end to end, the masters' CPU
#                per build, Redis commands and EVALSHA per build
#   latency      LAT_N builds one at a time on idle masters: Put -> Start
#                p50/p99 (goal p50 < 50 ms, p99 < 250 ms)
#   round trips  RT_N builds one at a time under MONITOR: Redis commands
#                sent per build, by command
#
# usage: contrib/bench/master.sh [BUILD_DIR]     (default: build)
#   N=1000 LAT_N=200 RT_N=50 WORKERS=4 LEASES=10 contrib/bench/master.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build}
case $build in /*) ;; *) build=$(pwd)/$build ;; esac
[ -x "$build/reactord" ] || { echo "master.sh: no reactord in $build (run make)" >&2; exit 2; }
WORKERS=${WORKERS:-4}
LEASES=${LEASES:-10}
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server)}

tmp=$(mktemp -d /tmp/master-bench.XXXXXX)
pids=()
cleanup() {
	# reactords first (SIGTERM: they stop their workers), then Redis.
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill "${pids[i]}" 2>/dev/null || true
		wait "${pids[i]}" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

sock=$tmp/redis.sock
"$REDIS_SERVER" --port 0 --unixsocket "$sock" --unixsocketperm 700 \
	--dir "$tmp" --appendonly yes --appendfsync everysec --save "" \
	--logfile "$tmp/redis.log" --daemonize no &
pids+=($!)
R() { redis-cli -s "$sock" "$@"; }
for _ in $(seq 200); do R PING >/dev/null 2>&1 && break; sleep 0.05; done

# start NAME CONFIG-BODY: a reactord with the common keys; echoes its pid.
start() {
	local name=$1 body=$2
	cat > "$tmp/$name.conf" <<CONF
listen: [127.0.0.1:0, "unix:$tmp/$name.sock"]
ready-file: $tmp/$name.ready
state-dir: $tmp/$name-state
log: {level: warn}
redis: {embedded: false, address: "unix:$sock"}
$body
CONF
	"$build/reactord" -c "$tmp/$name.conf" 2>"$tmp/$name.log" &
	local pid=$!
	pids+=($pid)
	for _ in $(seq 200); do [ -s "$tmp/$name.ready" ] && break; sleep 0.05; done
	local addr
	addr=$(head -1 "$tmp/$name.ready")
	for _ in $(seq 200); do
		"$build/reactorctl" -s "$addr" health >/dev/null 2>&1 && break
		sleep 0.05
	done
	last_pid=$pid
	last_addr=$addr
}

start ex "workers: {local: $WORKERS}
instances:
  - {name: \"\", execution: true, storage: memory}"
ex_pid=$last_pid
ex_addr=$last_addr
masters=()
for i in 0 1 2; do
	start "m$i" "master:
  name: m$i
  buckets: [ci]
  executor: \"unix:$tmp/ex.sock\"
  max-lease-count: $LEASES
  builders:
    one:
      steps:
        - {name: only, argv: [\"true\"], cache: false}"
	masters+=($last_pid)
done
echo "redis $sock; executor $ex_addr ($WORKERS local workers); 3 masters" \
	"(pids ${masters[*]}, max-lease-count $LEASES); $(nproc) cores"
REACTOR_GEN_PY=$build/gen-py /usr/bin/python3 "$top/contrib/bench/master_load.py" \
	"$sock" "$ex_addr" "$ex_pid" "${masters[@]}"
for n in ex m0 m1 m2; do
	if grep -qE ' (warn|error) ' "$tmp/$n.log"; then
		echo "--- $n: warnings and errors ---"
		grep -E ' (warn|error) ' "$tmp/$n.log" | tail -5
	fi
done
