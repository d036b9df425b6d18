#!/bin/sh
# Installs every build, test and benchmark dependency of reactord from Debian
# packages. Idempotent: packages already present are left alone, and apt is
# not touched at all when nothing is missing. Needs root (or sudo).
set -eu

PKGS="build-essential autoconf automake libtool pkg-config
libevent-dev libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler
libprotobuf-dev protobuf-compiler libhiredis-dev libyaml-dev check libssl-dev
openssl redis-server redis-tools python3 python3-grpcio python3-protobuf
nghttp2-client nghttp2-server valgrind bubblewrap
libjwt-dev"
# make fuzz: clang and its libFuzzer runtime (the version matching clang).
PKGS="$PKGS clang libclang-rt-dev"
# The status page test (t/integ/test_status.py) drives a headless Chromium.
PKGS="$PKGS chromium"
# test_metrics: a real Prometheus scrapes reactord's /metrics.
PKGS="$PKGS prometheus"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing="$missing $p"
	fi
done
if [ -z "$missing" ]; then
	echo "deps.sh: all dependencies are installed"
	exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		echo "deps.sh: installing$missing through sudo" >&2
		SUDO="sudo"
	else
		echo "deps.sh: missing packages:$missing; run this script as root" >&2
		exit 1
	fi
else
	echo "deps.sh: installing$missing" >&2
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
