#!/bin/sh
# exec.sh - benchmark of the remote-execution scheduler (on demand; not
# part of `make check`).  Runs contrib/bench/exec_load.py against the
# reactord of a build tree: Execute -> COMPLETED latency (p50/p99) with
# bots that complete at once, throughput with CLIENTS concurrent clients
# and BOTS bot sessions, the redis-benchmark EVALSHA ceiling on the same
# redis-server, reactord RSS per idle waiting stream and Redis memory per
# finished operation.
#
#   contrib/bench/exec.sh [BUILD-DIR]        (default: build)
#   CLIENTS=64 BOTS=16 TP_N=6000 LAT_N=500 IDLE_STREAMS=1000 contrib/bench/exec.sh
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$here/build}
case $build in /*) ;; *) build=$(pwd)/$build ;; esac
[ -x "$build/reactord" ] || { echo "exec.sh: no reactord in $build (run make)" >&2; exit 2; }
REACTORD=$build/reactord REACTORCTL=$build/reactorctl REACTOR_GEN_PY=$build/gen-py \
REACTOR_SRCDIR=$here REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server)} \
	exec /usr/bin/python3 "$here/contrib/bench/exec_load.py"
