#!/usr/bin/env bash
# exec.sh - benchmark of the remote-execution scheduler (on demand; not part
# of `make check`), with the Redis ceiling of this machine measured in the
# same run.
#
# A redis-server of our own (AOF on, everysec, as the embedded default) runs
# on CPU 1 and reactord on CPU 0, so "one core" means one core.
# contrib/bench/exec_load (built here on demand; C, one event loop, on CPU 1
# next to Redis) uploads distinct trivial Actions and drives Execute ->
# COMPLETED with fake bots in the same process that report every lease
# COMPLETED in their next UpdateBotSession:
#
#   idle        reactord RSS per idle waiting Execute stream (no bots; the
#               streams are then cancelled and, with cancel-orphaned-jobs,
#               so are their jobs)
#   latency     1 client, 1 bot, one action at a time: p50/p99 (goals
#               < 2 ms, < 10 ms) and Redis memory per finished operation
#   throughput  CLIENTS concurrent Execute loops (one connection each),
#               BOTS bot sessions: actions/s (goal >= 3,000), reactord's
#               CPU time (utime+stime) and actions per reactord core-second,
#               EVALSHA round trips per action
#   ceiling     redis-benchmark EVALSHA of a script doing one action's whole
#               Redis work (enqueue, assign, complete, view: the ~45
#               commands the scheduler's scripts run per action) on the same
#               redis-server; its rate is the most actions/s this Redis
#               allows; the ratio says how close reactord gets
#
# usage: contrib/bench/exec.sh [BUILD_DIR]     (default: build)
#   LAT_N=1000 TP_N=20000 CLIENTS=64 BOTS=16 IDLE_STREAMS=1000 contrib/bench/exec.sh
#   MODE=skip|miss|nocache   how each Execute avoids the action cache
#                            (default skip: skip_cache_lookup; see exec_load.c)
#   BENCH_REQS=50000         redis-benchmark requests per ceiling run
#   REDIS_ARGS="--appendonly no" ...   (extra redis-server args)
#   PERF=1                   perf record -g reactord during the throughput
#                            run; prints the top of its profile
# Without a C toolchain it falls back to contrib/bench/exec_load.py (Python
# clients and bots, which saturate before reactord does: a floor only).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build}
case $build in /*) ;; *) build=$(pwd)/$build ;; esac
[ -x "$build/reactord" ] || { echo "exec.sh: no reactord in $build (run make)" >&2; exit 2; }
LAT_N=${LAT_N:-1000}
TP_N=${TP_N:-20000}
CLIENTS=${CLIENTS:-64}
BOTS=${BOTS:-16}
IDLE_STREAMS=${IDLE_STREAMS:-1000}
MODE=${MODE:-skip}
BENCH_REQS=${BENCH_REQS:-50000}
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server)}

if ! make -s -C "$build" contrib/bench/exec_load >&2; then
	echo "exec.sh: cannot build contrib/bench/exec_load; using the Python clients" >&2
	CLIENTS=$CLIENTS BOTS=$BOTS LAT_N=$LAT_N TP_N=$TP_N IDLE_STREAMS=$IDLE_STREAMS \
	REACTORD=$build/reactord REACTORCTL=$build/reactorctl REACTOR_GEN_PY=$build/gen-py \
	REACTOR_SRCDIR=$top REDIS_SERVER=$REDIS_SERVER \
		exec /usr/bin/python3 "$top/contrib/bench/exec_load.py"
fi
load=$build/contrib/bench/exec_load

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
redis_pid=$!
pids+=($redis_pid)
R() { redis-cli -s "$sock" "$@"; }
for _ in $(seq 200); do R PING >/dev/null 2>&1 && break; sleep 0.05; done

cat > "$tmp/r.conf" <<CONF
listen: [127.0.0.1:0]
ready-file: $tmp/ready
state-dir: $tmp/state
log: {level: warn}
redis: {embedded: false, address: $sock}
http2: {max-concurrent-streams: 100000}
workers: {local: 0}
instances:
  - name: ""
    execution: true
    storage: memory
    no-worker-timeout: 1h
    operation-retention: 10m
    cancel-orphaned-jobs: true
CONF
taskset -c 0 "$build/reactord" -c "$tmp/r.conf" 2>"$tmp/reactord.log" &
rd_pid=$!
pids+=($rd_pid)
for _ in $(seq 200); do [ -s "$tmp/ready" ] && break; sleep 0.05; done
addr=$(head -1 "$tmp/ready")
# Health says SERVING once Redis is up and the scripts are loaded.
for _ in $(seq 200); do "$build/reactorctl" -s "$addr" health >/dev/null 2>&1 && break; sleep 0.05; done

info() { R INFO "$1" | tr -d '\r' | awk -F: -v k="$2" '$1 == k {print $2}'; }
evalsha_calls() { R INFO commandstats | tr -d '\r' |
	awk -F'[:=,]' '$1 == "cmdstat_evalsha" {print $3}'; }
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p; s/^$1=\([^[:space:]]*\).*/\1/p" | head -1; }
load1() { taskset -c 1 "$load" -m "$MODE" -p "$rd_pid" -r "$redis_pid" "$@"; }

echo "reactord on CPU 0; redis-server and exec_load on CPU 1; mode $MODE"
echo "reactord: $addr (pid $rd_pid), redis: $sock (pid $redis_pid)"

# ---- idle streams (first, while reactord's heap is fresh) -----------------
idle_out=$(taskset -c 1 "$load" -I -p "$rd_pid" -t idle "$addr" "$IDLE_STREAMS")
echo "idle:       $idle_out"
# The cancelled streams' jobs leave the queue (cancel-orphaned-jobs).
for _ in $(seq 100); do [ "$(R ZCARD reactor:queue::)" = 0 ] && break; sleep 0.1; done
[ "$(R ZCARD reactor:queue::)" = 0 ] || { echo "exec.sh: idle jobs still queued" >&2; exit 1; }

# ---- latency: 1 client, 1 bot ----------------------------------------------
R CONFIG RESETSTAT >/dev/null
m0=$(info memory used_memory)
lat_out=$(load1 -t lat "$addr" 1 1 "$LAT_N")
m1=$(info memory used_memory)
echo "latency:    $lat_out"
lat_n=$(field actions <<<"$lat_out")
lat_rt=$(awk -v c="$(evalsha_calls)" -v n="$lat_n" 'BEGIN {printf "%.2f", n ? c / n : 0}')
lat_mem=$(awk -v a="$m0" -v b="$m1" -v n="$lat_n" 'BEGIN {printf "%.0f", n ? (b - a) / n : 0}')

# ---- throughput: CLIENTS clients, BOTS bots --------------------------------
R CONFIG RESETSTAT >/dev/null
rw0=$(info persistence aof_rewrites)
if [ -n "${PERF:-}" ]; then
	perf record -F 999 -g -o "$tmp/perf.data" -p "$rd_pid" 2>"$tmp/perf.log" &
	perf_pid=$!
	sleep 0.5
fi
tp_out=$(load1 -t tp "$addr" "$CLIENTS" "$BOTS" "$TP_N")
if [ -n "${PERF:-}" ]; then
	kill -INT "$perf_pid"
	wait "$perf_pid" || true
fi
rw1=$(info persistence aof_rewrites)
echo "throughput: $tp_out"
tp_n=$(field actions <<<"$tp_out")
tp_rate=$(field per_sec <<<"$tp_out")
tp_rt=$(awk -v c="$(evalsha_calls)" -v n="$tp_n" 'BEGIN {printf "%.2f", n ? c / n : 0}')
[ "$rw0" = "$rw1" ] || echo "note: Redis rewrote its AOF during the throughput run" \
	"(a forked child on CPU 1 competed with it)"

# ---- ceiling: one action's Redis work as one script ------------------------
# Mirrors what src/state/lua/sched_*.lua do per action: the enqueue
# (sched_enqueue.lua: new job, op, queue, publish), the bot's
# UpdateBotSession assigning it (sched_bot_update.lua: session refresh,
# queue head, job and session hashes, deadline), the next one completing
# it (finish in sched_prelude.lua: hashes, queue and deadline removal, 3
# retire entries with EXPIRE, version bump, publish) and the waiting
# stream's view (sched_view.lua: op and job hashes).
sha=$(R SCRIPT LOAD "
local id, now, res = ARGV[1], ARGV[2], ARGV[3]
local action = '3f2a9c1d5e7b8a6c4d2e0f1a3b5c7d9e1f2a4b6c3f2a9c1d5e7b8a6c4d2e0f1a/142'
local jk, op = 'bench:job:' .. id, 'bench:op:operations/' .. id
local ak, qk, dk, rk = 'bench:actionjob::' .. id, 'bench:queue::', 'bench:deadlines', 'bench:retire'
local sk = 'bench:bot:' .. (tonumber(id) % 16)
redis.call('GET', ak)
local seq = redis.call('INCR', 'bench:seq')
redis.call('HSET', jk, 'instance', '', 'action', action, 'platform', '', 'queue', qk,
  'priority', '0', 'seq', seq, 'timeout', '3600000000', 'stage', 'QUEUED', 'ops', 1, 'bot', '',
  'lease', '', 'attempts', 0, 'max_attempts', '5', 'bots', '', 'queued', now, 'retention', '600',
  'do_not_cache', '0', 'version', 1)
redis.call('SADD', jk .. ':ops', op)
redis.call('SET', ak, jk)
redis.call('HSET', op, 'instance', '', 'job', jk, 'action', action, 'created', now)
redis.call('ZADD', 'bench:ops:', now, op)
redis.call('ZADD', qk, seq, jk)
redis.call('SADD', 'bench:platforms:', '')
redis.call('PUBLISH', 'bench:queue', '\n')
for pass = 1, 2 do
  redis.call('HMGET', sk, 'instance', 'bot_id', 'lease', 'props')
  redis.call('HSET', sk, 'expire', now, 'seen', now, 'status', '1')
  redis.call('ZADD', 'bench:bots:', now, sk)
end
redis.call('HMGET', sk, 'lease', 'bot_id')
redis.call('SMEMBERS', 'bench:platforms:')
local head = redis.call('ZRANGE', qk, 0, 0, 'WITHSCORES')
redis.call('ZREM', qk, head[1] or jk)
redis.call('HMGET', jk, 'timeout', 'bots', 'action')
redis.call('HSET', jk, 'bot', sk, 'lease', 'PENDING', 'assigned', now, 'bots', 'bench-bot',
  'deadline', now)
redis.call('HINCRBY', jk, 'attempts', 1)
redis.call('ZADD', dk, now, jk)
redis.call('HSET', sk, 'lease', jk)
redis.call('HMGET', jk, 'stage', 'bot', 'lease', 'action', 'do_not_cache')
redis.call('HSET', sk, 'lease', '')
redis.call('HSET', jk, 'lease', 'COMPLETED')
redis.call('HMGET', jk, 'instance', 'action', 'queue', 'retention', 'stage', 'lease')
redis.call('HSET', jk, 'stage', 'COMPLETED', 'completed', now, 'status', '0', 'message', '')
redis.call('HSET', jk, 'result', res)
redis.call('ZREM', qk, jk)
redis.call('ZREM', dk, jk)
if redis.call('GET', ak) == jk then redis.call('DEL', ak) end
for _, k in ipairs({jk, jk .. ':ops', op}) do
  redis.call('ZADD', rk, now, k)
  redis.call('EXPIRE', k, 660)
end
redis.call('SMEMBERS', jk .. ':ops')
redis.call('HINCRBY', jk, 'version', 1)
redis.call('PUBLISH', 'bench:job', jk)
redis.call('HMGET', op, 'job', 'stage', 'status', 'message', 'result', 'cached', 'action')
redis.call('HMGET', jk, 'stage', 'status', 'message', 'result', 'version')
return 1")
# An ActionResult about the size of the bots' (exit 0, worker name).
result=$(printf 'r%.0s' $(seq 40))
bench() { # clients pipeline
	taskset -c 0 redis-benchmark -s "$sock" -c "$1" -P "$2" -n "$BENCH_REQS" -r 100000 -q \
		EVALSHA "$sha" 0 __rand_int__ 1700000000000000 "$result" 2>/dev/null |
		tr '\r' '\n' |
		awk '/requests per second/ {for (i = 1; i <= NF; i++) if ($i == "requests") print $(i-1)}' |
		tail -1
}
c50=$(bench 50 1)
p16=$(bench 50 16)
ceil=$(awk -v a="$c50" -v b="$p16" 'BEGIN {print (a > b ? a : b)}')
echo "ceiling:    redis-benchmark EVALSHA (one action's Redis work): -c 50: $c50/s" \
	" -c 50 -P 16: $p16/s"

echo
printf "%-34s %s\n" \
	"latency_p50" "$(field p50_ms <<<"$lat_out") ms (goal < 2)" \
	"latency_p99" "$(field p99_ms <<<"$lat_out") ms (goal < 10)" \
	"evalsha_per_action (latency run)" "$lat_rt" \
	"redis_bytes_per_finished_operation" "$lat_mem" \
	"throughput" "$tp_rate actions/s with $CLIENTS clients, $BOTS bots (goal >= 3000)" \
	"throughput_p50/p99" "$(field p50_ms <<<"$tp_out") / $(field p99_ms <<<"$tp_out") ms" \
	"reactord_cpu" "$(awk -v c="$(field reactord_cpu_s <<<"$tp_out")" \
		-v s="$(field seconds <<<"$tp_out")" 'BEGIN {printf "%.2fs = %.0f%% of one core", c, 100 * c / s}')" \
	"actions_per_reactord_core_second" "$(field per_reactord_core_s <<<"$tp_out")" \
	"redis_cpu / exec_load_cpu (CPU 1)" "$(field redis_cpu_s <<<"$tp_out")s / $(field loadgen_cpu_s <<<"$tp_out")s" \
	"evalsha_per_action (throughput)" "$tp_rt" \
	"memory_per_idle_stream" "$(field per_stream_kib <<<"$idle_out") KiB (goal < 16)" \
	"redis_ceiling" "$ceil actions/s (EVALSHA of one action's work)" \
	"throughput_vs_ceiling" "$(awk -v a="$tp_rate" -v c="$ceil" 'BEGIN {printf "%.2f", c ? a / c : 0}')"
if [ -n "${PERF:-}" ]; then
	echo
	echo "reactord profile (perf, self time, top 40):"
	perf report -i "$tmp/perf.data" --stdio --no-children --sort sym 2>/dev/null |
		grep -E '^ +[0-9.]+%' | head -40
fi
