#!/usr/bin/env bash
# auth.sh - the cost of authentication per call: unary.sh's unary gRPC load
# (h2load, GetCapabilities, which needs no role, so only the credential
# check differs) against one reactord with an auth: section, sent
#   - without credentials (anonymous),
#   - with "authorization: Bearer <token>" (SHA-256 + tokens-file lookup),
#   - with "authorization: Bearer <JWT>" (HS256 and RS256 verification),
# plus a reactord with no auth: section at all as the baseline.  Same
# pinning as unary.sh: reactord on CPU 0, h2load on CPU 1.
#
# usage: contrib/bench/auth.sh [BUILD_DIR]   (default: build)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build}
REQS=${REQS:-200000}
C=${C:-64}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s bench cas-read\n' "$(printf %s "$token" | sha256sum | cut -d' ' -f1)" > "$tmp/tokens"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$tmp/hs.secret"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/rsa.key" 2>/dev/null
openssl pkey -in "$tmp/rsa.key" -pubout -out "$tmp/rsa.pub" 2>/dev/null
jwts=$(/usr/bin/python3 - "$tmp" <<'PY'
import sys, time, jwt
d = sys.argv[1]
c = {"sub": "bench", "aud": "bench", "exp": int(time.time()) + 3600, "roles": ["cas-read"]}
print(jwt.encode(c, open(d + "/hs.secret").read(), algorithm="HS256"))
print(jwt.encode(c, open(d + "/rsa.key").read(), algorithm="RS256"))
PY
)
jwt_hs=$(echo "$jwts" | sed -n 1p)
jwt_rs=$(echo "$jwts" | sed -n 2p)

start() { # name auth-yaml; sets $addr
	cat > "$tmp/$1.conf" <<CONF
listen: [127.0.0.1:0]
ready-file: $tmp/$1.ready
state-dir: $tmp/$1-state
log: {level: warn}
http2: {max-concurrent-streams: 2000}
$2
CONF
	taskset -c 0 "$build/reactord" -c "$tmp/$1.conf" >"$tmp/$1.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 200); do [ -s "$tmp/$1.ready" ] && break; sleep 0.05; done
	addr=$(head -1 "$tmp/$1.ready")
}

printf '\0\0\0\0\0' > "$tmp/req.bin"
run() { # addr extra-h2load-args...
	local addr=$1; shift
	local m=$(( C > 8 ? 8 : C )); local conns=$(( (C + m - 1) / m ))
	taskset -c 1 h2load -n "$REQS" -c "$conns" -m "$m" -d "$tmp/req.bin" \
		-H 'content-type: application/grpc' -H 'te: trailers' "$@" \
		"http://$addr/build.bazel.remote.execution.v2.Capabilities/GetCapabilities" 2>&1 |
		awk '/finished in/ { for (i = 1; i <= NF; i++) if ($i ~ /req\/s/) rps = $(i-1) }
		     /^requests:/ { ok = $8 } END { printf "%s %s\n", rps, ok }'
}

start plain ""
plain=$addr
start authd "auth:
  tokens-file: $tmp/tokens
  jwt: {keys: [$tmp/hs.secret, $tmp/rsa.pub], audience: bench}
  anonymous: [cas-read]"
authd=$addr

base=$(run "$plain")
anon=$(run "$authd")
tok=$(run "$authd" -H "authorization: Bearer $token")
hs=$(run "$authd" -H "authorization: Bearer $jwt_hs")
rs=$(run "$authd" -H "authorization: Bearer $jwt_rs")
echo "concurrency=$C requests=$REQS"
echo "case                     req/s      succeeded  ratio_vs_no_auth"
for row in "no-auth-section:$base" "auth,anonymous:$anon" "auth,bearer-token:$tok" \
	"auth,jwt-HS256:$hs" "auth,jwt-RS256:$rs"; do
	name=${row%%:*}; set -- ${row#*:}
	b=${base%% *}
	printf '%-24s %-10s %-10s %s\n' "$name" "$1" "$2" \
		"$(awk -v a="$1" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
done
if grep -q "$token" "$tmp/authd.log" || grep -qF "$jwt_rs" "$tmp/authd.log"; then
	echo "FAIL: a credential appears in reactord's log" >&2
	exit 1
fi
