#!/bin/sh
# layers.sh - the include check: every #include "..." in src/ must point to
# the file's own layer or one below it (DESIGN.md, "Layers").  Two stacks
# meet at the services:
#   core < transport < rpc < services       (the wire side)
#   core < state < domain < services        (the data side)
# The domain may use the rpc client (remote stores and the master call
# other servers), never the server side of rpc.  Programs (src/cmd/NAME)
# may include any layer but not another program.  Generated protobuf
# headers are data types: the domain, services, programs and (for
# google/rpc and google/protobuf, the status trailer) rpc may use them.
# src/proto/ holds typedef shorthands of those generated types: it may
# include only generated headers, and counts as one for everyone else.
# Prints one line per violation and a count; exits 1 on any.
set -eu
src=${REACTOR_SRCDIR:-$(dirname "$0")/..}/src
cd "$src"
find . -name '*.[ch]' | sed 's|^\./||' | LC_ALL=C sort | while read -r f; do
	grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" |
		sed 's/^\([0-9]*\):.*"\(.*\)".*/\1 \2/' | while read -r line inc; do
		echo "$f $line $inc"
	done
done | awk '
function layer(path,   p) {
	split(path, p, "/")
	if (p[1] == "cmd") return "cmd/" p[2]
	return p[1]
}
function allowed(from, inc,   to) {
	if (inc == "config.h") return 1
	to = layer(inc)
	if (from == "proto")
		return to !~ /^(core|transport|rpc|services|domain|state|proto|cmd\/.*)$/
	if (to !~ /^(core|transport|rpc|services|domain|state|cmd\/.*)$/) {
		# a generated protobuf header
		if (from ~ /^(domain|services|cmd\/)/) return 1
		if (from == "rpc" && inc ~ /^google\/(rpc|protobuf)\//) return 1
		return 0
	}
	if (from == to) return 1
	if (from ~ /^cmd\//) return to !~ /^cmd\//
	if (to == "core") return 1
	if (from == "transport") return 0
	if (from == "rpc") return to == "transport"
	if (from == "state") return 0
	if (from == "domain") return to == "state" || inc == "rpc/client.h"
	if (from == "services") return 1
	return 0
}
{
	from = layer($1)
	if (allowed(from, $3)) { ok++; next }
	printf "%s:%s: %s may not include \"%s\"\n", $1, $2, from, $3
	bad++
}
END {
	printf "layers: %d includes checked, %d upward\n", ok + bad, bad + 0
	exit bad > 0
}'
