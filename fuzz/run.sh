#!/bin/sh
# fuzz/run.sh BUILD-DIR SECONDS [TARGET...] - run each libFuzzer target
# (default: all of fuzz/fuzz_*.c) for SECONDS, one at a time, one process.
# Each starts from its committed seeds (fuzz/corpus/NAME, read only) plus
# what earlier runs found (BUILD-DIR/fuzz-corpus/NAME, where new inputs go);
# a crash leaves its input in BUILD-DIR/fuzz-crashes/.  Prints one line per
# target with libFuzzer's total executions, and fails when any target found
# a crash, a leak, a timeout or an out-of-memory.
set -u
build=$1
secs=$2
shift 2
src=$(cd "$(dirname "$0")" && pwd)
if [ $# -eq 0 ]; then
	set --
	for f in "$src"/fuzz_*.c; do
		n=$(basename "$f" .c)
		set -- "$@" "${n#fuzz_}"
	done
fi

# Largest input per target: big enough for what the target parses, small
# enough to keep executions fast.
max_len() {
	case $1 in
	h2) echo 16384 ;;
	cfg) echo 8192 ;;
	json) echo 4096 ;;
	*) echo 1024 ;;
	esac
}

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
mkdir -p "$build/fuzz-crashes"
status=0
total=0
for t in "$@"; do
	bin="$build/fuzz/fuzz_$t"
	if [ ! -x "$bin" ]; then
		echo "fuzz $t: no binary $bin (make fuzz builds it)" >&2
		status=1
		continue
	fi
	work="$build/fuzz-corpus/$t"
	mkdir -p "$work"
	log="$build/fuzz-$t.log"
	dict=""
	[ -f "$src/$t.dict" ] && dict="-dict=$src/$t.dict"
	# shellcheck disable=SC2086
	"$bin" -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$build/fuzz-crashes/$t-" $dict \
		"$work" "$src/corpus/$t" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
	if [ "$rc" -eq 0 ] && [ -n "$runs" ]; then
		echo "fuzz $t: ${runs} executions in ${secs}s, 0 crashes"
		total=$((total + runs))
	else
		art=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
		echo "fuzz $t: FAILED (crash, leak or timeout) after $(sed -n 's/^stat::number_of_executed_units: *//p' \
			"$log" | tail -n 1) executions (exit $rc); input: ${art:-none}; log: $log"
		grep -m 3 -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|fuzz_[a-z0-9]*:)' "$log" |
			sed 's/^/    /'
		status=1
	fi
done
echo "fuzz: $total executions in total"
exit $status
