#!/bin/sh
# deps.sh -- install the Debian 12 packages jobrunner needs to build, run and test.
#
# Checks the packages with dpkg-query, so on a complete machine it does nothing,
# prints nothing and exits 0 quickly.  If something is missing: as root, runs
# `apt-get update` then `apt-get install -y --no-install-recommends ...` for just
# the missing packages; not as root, prints that command and exits 1.
#
# `sh scripts/deps.sh bench` (make bench) also installs what only the
# benchmark needs: gnuplot for its plot, linux-perf for its profile pass.
#
# postgresql-15 may create and start a "main" cluster through its service on
# install; nothing relies on it (the tests start their own servers on free
# ports), and it does no harm.  pgbouncer likewise: the tests run their own
# (tests/support/harness.py PgBouncer) in front of their own PostgreSQL.
set -eu

BUILD="cmake gcc clang pkg-config make libhiredis-dev libpq-dev libmicrohttpd-dev libcjson-dev libssl-dev libcurl4-openssl-dev"
SERVERS="redis-server redis-sentinel postgresql-15 pgbouncer"
TESTS="python3 python3-pytest python3-psycopg2 python3-redis python3-yaml python3-jsonschema curl procps chromium nodejs openssl"
BENCH=""
[ "${1:-}" = bench ] && BENCH="gnuplot-nox linux-perf"

# One dpkg-query for all: "name status" per known package (unknown ones are
# reported on stderr and left out).
# shellcheck disable=SC2086
installed=$(dpkg-query -W -f='${Package} ${Status}\n' $BUILD $SERVERS $TESTS $BENCH 2>/dev/null |
	awk '/ ok installed$/ { print $1 }' || true)
missing=""
for pkg in $BUILD $SERVERS $TESTS $BENCH; do
	echo "$installed" | grep -qxF "$pkg" || missing="$missing $pkg"
done
# npm (the dashboard's browser test installs puppeteer-core with it): the
# Debian package, unless a nodejs from elsewhere already brings its own.
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0

cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing packages:$missing" >&2
	echo "run as root:  apt-get update && $cmd" >&2
	exit 1
fi

echo "deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# $cmd is word-split on purpose: package names contain no spaces.
# shellcheck disable=SC2086
$cmd
