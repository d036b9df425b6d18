#!/usr/bin/env bash
# buckets.sh - build-bucket throughput of reactord against the Redis ceiling
# of this machine, measured in the same run.
#
# A redis-server of our own (AOF on, everysec, as the embedded default) runs
# on CPU 1 and reactord on CPU 0, so "one core" means one core.
# contrib/bench/buckets_load (built here on demand) drives whole lifecycles
# (Put -> Lease -> Start -> Succeed) from 3 concurrent clients (connections)
# at a few depths (lifecycles in flight per client).  For each run it prints
# lifecycles/s and latency, the Redis round trips per lifecycle (EVALSHA
# calls counted by Redis / lifecycles) and Redis memory per completed build.
# Then redis-benchmark runs EVALSHA of a script comparable to one transition
# (TIME, HGETALL, HSET, ZREM, ZADD, PUBLISH, HGETALL on a build-sized hash)
# against the same redis-server; its rate divided by the round trips per
# lifecycle is the ceiling, and the ratio says how close reactord gets.
#
# usage: contrib/bench/buckets.sh [BUILD_DIR]     (default: build)
#   SECS=10 DEPTHS="1 4 16" BENCH_REQS=200000 contrib/bench/buckets.sh
#   REDIS_ARGS="--hash-max-listpack-value 1024" ...   (extra redis-server args)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build}
SECS=${SECS:-10}
DEPTHS=${DEPTHS:-"1 4 16"}
BENCH_REQS=${BENCH_REQS:-200000}
REDIS_SERVER=${REDIS_SERVER:-redis-server}

make -s -C "$build" contrib/bench/buckets_load
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

sock=$tmp/redis.sock
taskset -c 1 "$REDIS_SERVER" --port 0 --unixsocket "$sock" --unixsocketperm 700 \
	--dir "$tmp" --appendonly yes --appendfsync everysec --save "" \
	--logfile "$tmp/redis.log" --daemonize no ${REDIS_ARGS:-} &
pids+=($!)
R() { redis-cli -s "$sock" "$@"; }
for _ in $(seq 200); do R PING >/dev/null 2>&1 && break; sleep 0.05; done

cat > "$tmp/r.conf" <<CONF
listen: [127.0.0.1:0]
ready-file: $tmp/ready
state-dir: $tmp/state
log: {level: warn}
redis: {embedded: false, address: $sock}
CONF
taskset -c 0 "$build/reactord" -c "$tmp/r.conf" 2>"$tmp/reactord.log" &
pids+=($!)
for _ in $(seq 200); do [ -s "$tmp/ready" ] && break; sleep 0.05; done
addr=$(head -1 "$tmp/ready")
# Health says SERVING once Redis is up and the scripts are loaded.
for _ in $(seq 200); do "$build/reactorctl" -s "$addr" health >/dev/null 2>&1 && break; sleep 0.05; done

info() { R INFO "$1" | tr -d '\r' | awk -F: -v k="$2" '$1 == k {print $2}'; }
evalsha_calls() { R INFO commandstats | tr -d '\r' |
	awk -F'[:=,]' '$1 == "cmdstat_evalsha" {print $3}'; }

echo "reactord on CPU 0, redis-server on CPU 1; 3 clients; ${SECS}s per run"
printf "%-6s %-12s %-8s %-8s %-10s %-14s\n" depth lifecycles/s p50_ms p99_ms rt/lifecycle bytes/build
best=0
rt_best=4
for d in $DEPTHS; do
	R FLUSHALL >/dev/null
	R CONFIG RESETSTAT >/dev/null
	m0=$(info memory used_memory)
	out=$(taskset -c 1 "$build/contrib/bench/buckets_load" "$addr" 3 "$d" "$SECS" bench)
	n=$(sed -n 's/.*lifecycles=\([0-9]*\).*/\1/p' <<<"$out")
	rate=$(sed -n 's/.*per_sec=\([0-9]*\).*/\1/p' <<<"$out")
	p50=$(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' <<<"$out")
	p99=$(sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' <<<"$out")
	calls=$(evalsha_calls)
	# Whatever namespace reactord runs with: the {bb} tag marks the buckets keys.
	done_key=$(R --scan --pattern '*{bb}:bucket:bench:COMPLETED' | head -n 1)
	done_builds=$(R ZCARD "${done_key:-none}")
	m1=$(info memory used_memory)
	rt=$(awk -v c="$calls" -v n="$n" 'BEGIN {printf "%.2f", n ? c / n : 0}')
	per=$(awk -v a="$m0" -v b="$m1" -v n="$done_builds" 'BEGIN {printf "%.0f", n ? (b - a) / n : 0}')
	printf "%-6s %-12s %-8s %-8s %-10s %-14s (%s builds completed)\n" "$d" "$rate" "$p50" \
		"$p99" "$rt" "$per" "$done_builds"
	if [ "$rate" -gt "$best" ]; then best=$rate; rt_best=$rt; fi
done

# The ceiling: EVALSHA of a comparable script on build-sized hashes.
R FLUSHALL >/dev/null
R EVAL "for i = 0, 999 do
  redis.call('HSET', string.format('bench:build:%012d', i), 'bucket', 'bench',
    'tags', '[\"builder:linux-rel\",\"buildset:bench\",\"user_agent:buckets_load\"]',
    'parameters_json', ARGV[1], 'status', 'SCHEDULED', 'created_by', 'anonymous',
    'created_ts', '1700000000000000', 'updated_ts', '1700000000000000',
    'status_changed_ts', '1700000000000000')
end" 0 '{"builder_name":"linux-rel","properties":{"revision":"3f2a9c1d5e7b8a6c4d2e0f1a3b5c7d9e1f2a4b6c","repository":"https://example.org/src.git","clobber":false}}' >/dev/null
sha=$(R SCRIPT LOAD "
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local k = 'bench:build:' .. ARGV[1]
local a = redis.call('HGETALL', k)
local b = {}
for i = 1, #a, 2 do b[a[i]] = a[i + 1] end
if not b.status then return {'ERR', 'BUILD_NOT_FOUND', ARGV[1]} end
redis.call('HSET', k, 'lease_key', '123456789', 'lease_expiration_ts', string.format('%.0f', now + 60000000),
  'updated_ts', string.format('%.0f', now))
redis.call('ZREM', 'bench:peek', ARGV[1])
redis.call('ZADD', 'bench:leased', string.format('%.0f', now), ARGV[1])
redis.call('PUBLISH', 'bench:events', '{\"build_id\":\"' .. ARGV[1] .. '\",\"event\":\"LEASE\"}')
return {'OK', string.format('%.0f', now), '0', {ARGV[1], redis.call('HGETALL', k)}}")
bench() { # clients pipeline
	taskset -c 0 redis-benchmark -s "$sock" -c "$1" -P "$2" -n "$BENCH_REQS" -r 1000 -q \
		EVALSHA "$sha" 0 __rand_int__ 2>/dev/null | tr '\r' '\n' |
		awk '/requests per second/ {for (i = 1; i <= NF; i++) if ($i == "requests") print $(i-1)}' |
		tail -1
}
c3=$(bench 3 1)
c50=$(bench 50 1)
p16=$(bench 50 16)
echo "redis-benchmark EVALSHA (comparable script): -c 3: $c3/s  -c 50: $c50/s  -c 50 -P 16: $p16/s"
ceil=$(awk -v a="$c50" -v b="$p16" 'BEGIN {print (a > b ? a : b)}')
awk -v best="$best" -v ceil="$ceil" -v rt="$rt_best" 'BEGIN {
	c = ceil / rt
	printf "best: %d lifecycles/s at %.2f round trips each; ceiling %.0f EVALSHA/s / %.2f = %.0f lifecycles/s; ratio %.2f\n",
		best, rt, ceil, rt, c, best / c }'
