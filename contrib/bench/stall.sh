#!/usr/bin/env bash
# stall.sh - how long heavy requests hold reactord's event loop (on demand;
# not part of `make check`).
#
# A redis-server of our own (no persistence) runs on CPU 1 and reactord on
# CPU 0 (listening on port 0, its address read back from the ready file).
# For each heavy request kind, contrib/bench/stall_load.py sets up the data,
# then runs the load while a prober (stall_probe.c, built here on demand;
# its own connection) calls grpc.health.v1.Health/Check every 2 ms; it prints the worst and
# p99 Health round trip seen during the load, i.e. the longest time a
# client waited for the loop.  Kinds:
#
#   gettree   GetTree of 20,101 directories in pages of 1,000 (one call,
#             then one call resumed from each page token)
#   reads     8 concurrent ByteStream Reads of a 256 MiB blob (h2load)
#   batch     BatchUpdateBlobs / BatchReadBlobs of 1,000 x 4,000 B blobs
#   find      FindMissingBlobs of 10,000 digests
#   exec      Execute of Actions with large Commands / a large Action
#   ac        UpdateActionResult with 300 output directories on one 1.6 MB Tree
#
# The load shares CPU 1 with the prober and Redis, so the figures are upper
# bounds; the goal is worst < 10 ms for every kind.
#
# usage: contrib/bench/stall.sh [BUILD_DIR] [KIND...]   (default: build, all)
# env:   READ_SIZE (bytes per read blob, default 268435456)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build}
[ $# -gt 0 ] && shift
case $build in /*) ;; *) build=$(pwd)/$build ;; esac
PY=/usr/bin/python3
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || true)}
for tool in taskset h2load "$PY" "$REDIS_SERVER" "$build/reactord" "$build/reactorctl"; do
	command -v "$tool" >/dev/null || { echo "stall.sh: $tool not found" >&2; exit 2; }
done

# The prober in C: a Python prober on the loaded CPU adds its own 5-10 ms.
make -s -C "$build" contrib/bench/stall_probe

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stall-bench.XXXXXX")
pids=()
cleanup() {
	# reactord first (it holds the Redis connection), then redis-server.
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

sock=$tmp/redis.sock
taskset -c 1 "$REDIS_SERVER" --port 0 --unixsocket "$sock" --unixsocketperm 700 \
	--dir "$tmp" --appendonly no --save "" --logfile "$tmp/redis.log" --daemonize no &
redis_pid=$!
for _ in $(seq 200); do redis-cli -s "$sock" PING >/dev/null 2>&1 && break; sleep 0.05; done

cat > "$tmp/r.conf" <<CONF
listen: [127.0.0.1:0]
ready-file: $tmp/ready
state-dir: $tmp/state
log: {level: warn}
redis: {embedded: false, address: $sock}
workers: {local: 0}
instances:
  - name: ""
    execution: true
    no-worker-timeout: 1h
    cancel-orphaned-jobs: true
CONF
# As root, reactord (like the prober) runs at nice -10, so that unrelated
# jobs on the machine preempting it do not show up as loop stalls.
prio=()
[ "$(id -u)" = 0 ] && prio=(nice -n -10)
taskset -c 0 "${prio[@]}" "$build/reactord" -c "$tmp/r.conf" 2>"$tmp/reactord.log" &
rd_pid=$!
pids=("$rd_pid" "$redis_pid")
for _ in $(seq 200); do
	[ -s "$tmp/ready" ] && break
	kill -0 "$rd_pid" 2>/dev/null || { cat "$tmp/reactord.log" >&2; exit 1; }
	sleep 0.05
done
[ -s "$tmp/ready" ] || { echo "stall.sh: reactord not ready" >&2; exit 1; }
addr=$(head -1 "$tmp/ready")
# Health says SERVING once Redis is up and the scripts are loaded.
for _ in $(seq 200); do "$build/reactorctl" -s "$addr" health >/dev/null 2>&1 && break; sleep 0.05; done

echo "reactord stall benchmark: $(nproc) CPUs, $(uname -r); reactord on CPU 0," \
	"redis-server, load and prober on CPU 1; $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?')"
STALL_PROBE=$build/contrib/bench/stall_probe taskset -c 1 "$PY" "$top/contrib/bench/stall_load.py" "$addr" "$build/gen-py" "$tmp" "$@"
kill -0 "$rd_pid" 2>/dev/null || { echo "stall.sh: reactord died" >&2; cat "$tmp/reactord.log" >&2; exit 1; }
