#!/bin/sh
# run-local.sh BUILD_DIR -- the README's first command: a whole jobrunner on
# this machine.  Starts a throwaway PostgreSQL (as the postgres user when run
# as root) unless DATABASE_URL is set, a throwaway Redis (AOF on, noeviction)
# unless REDIS_URL is set, then the producer and two consumers.  Prints the
# API token as a line API_TOKEN=<token>.  Everything lives in .run/ and
# stops on Ctrl-C.  REDIS_URL=none runs the Redis-less mode.
set -eu
BUILD=${1:-build}
BIN=$(cd "$BUILD/bin" && pwd)
RUN=$(pwd)/.run
PGBIN=/usr/lib/postgresql/15/bin
mkdir -p "$RUN/logs"
pids=""

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {   # wait_for WHAT COMMAND...: polls COMMAND for up to 30 s
	what=$1; shift
	i=0
	until "$@" >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt 300 ]; then echo "run-local: $what did not come up (logs in $RUN)" >&2; exit 1; fi
		sleep 0.1
	done
}

cleanup() {
	trap - EXIT INT TERM
	echo "run-local: stopping"
	for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	if [ -n "${PGDATA_DIR:-}" ]; then
		as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast stop >/dev/null 2>&1 || true
	fi
}
trap cleanup EXIT INT TERM

as_pg() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ -z "${DATABASE_URL:-}" ]; then
	PGDATA_DIR=$RUN/pg/data
	PGPORT=$(free_port)
	mkdir -p "$RUN/pg"
	[ "$(id -u)" -eq 0 ] && chown -R postgres "$RUN/pg"
	if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
		as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -A trust -U postgres >"$RUN/logs/initdb.log"
	fi
	as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$RUN/pg/server.log" -w \
		-o "-p $PGPORT -k $RUN/pg -c listen_addresses=127.0.0.1" start >/dev/null
	DATABASE_URL=postgresql://postgres@127.0.0.1:$PGPORT/postgres
	echo "run-local: PostgreSQL on 127.0.0.1:$PGPORT (throwaway, in .run/pg)"
fi
export DATABASE_URL

if [ "${REDIS_URL:-}" = "none" ]; then
	unset REDIS_URL
	echo "run-local: Redis-less mode (PostgreSQL carries the queue)"
elif [ -z "${REDIS_URL:-}" ]; then
	RPORT=$(free_port)
	mkdir -p "$RUN/redis"
	redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$RUN/redis" --appendonly yes \
		--maxmemory-policy noeviction --save "" >"$RUN/logs/redis.log" 2>&1 &
	pids="$pids $!"
	REDIS_URL=redis://127.0.0.1:$RPORT/0
	export REDIS_URL
	wait_for Redis redis-cli -p "$RPORT" ping
	echo "run-local: Redis on 127.0.0.1:$RPORT (throwaway, AOF on, noeviction)"
fi

API_TOKEN=${API_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
export API_TOKEN
PORT=${PORT:-4000}
# a development system on a workstation: reachable from this machine only
HTTP_BIND_ADDRESS=${HTTP_BIND_ADDRESS:-127.0.0.1}
export PORT HTTP_BIND_ADDRESS LOG_FORMAT=${LOG_FORMAT:-text}

"$BIN/producer" --migrate-only >"$RUN/logs/migrate.log" 2>&1

"$BIN/producer" >"$RUN/logs/producer.log" 2>&1 &
pids="$pids $!"
for n in 1 2; do
	CONSUMER_NAME=worker-$n WORKER_HTTP_PORT=$((9090 + n)) \
		"$BIN/consumer" >"$RUN/logs/consumer-$n.log" 2>&1 &
	pids="$pids $!"
done
wait_for producer curl -sf "http://127.0.0.1:$PORT/api/health"

echo "run-local: producer on http://127.0.0.1:$PORT, consumers worker-1 (:9091) and worker-2 (:9092)"
echo "run-local: logs in .run/logs/; try:"
echo "  curl -s -X POST -H \"Authorization: Bearer \$API_TOKEN\" http://127.0.0.1:$PORT/api/integrations/jobs/noop/run"
echo "  the dashboard: http://127.0.0.1:$PORT/dashboard (sign in with API_TOKEN)"
echo "API_TOKEN=$API_TOKEN"
echo "run-local: Ctrl-C stops everything"
tail -n 0 -F "$RUN/logs/producer.log" "$RUN/logs/consumer-1.log" "$RUN/logs/consumer-2.log" &
pids="$pids $!"
wait
