#!/usr/bin/env bash
# Shell helpers of the likes example (sourced by run.sh and test/run.sh):
# a scratch cluster with the extension and the example's schema, pgbouncer
# in transaction pooling mode in front of it, and the service, all run as
# the unprivileged user postgres from a copy of this directory in the
# cluster's scratch dir.  Reuses test/setup.sh's cluster helpers.
LIKES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../test/setup.sh
source "$LIKES_DIR/../../test/setup.sh"

# Install the example's npm dependencies from package-lock.json if missing.
likes_npm_ci() {
    [[ -d $LIKES_DIR/node_modules && $LIKES_DIR/node_modules/.package-lock.json -nt $LIKES_DIR/package-lock.json ]] ||
        (cd "$LIKES_DIR" && npm ci --no-audit --no-fund --loglevel=error)
}

# Start a scratch cluster whose feed is quick (compaction every 100 ms,
# notifications at most every 100 ms) and load the example's schema.
likes_cluster_start() {
    cluster_start "counter.naptime = '100ms'" "counter.notify_interval = '100ms'" \
        "counter.flush_interval = '100ms'" "max_connections = 200"
    sql "CREATE EXTENSION counter;" >/dev/null
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SCRATCH" -p "$PGPORT_SCRATCH" -d postgres \
        <"$LIKES_DIR/schema.sql" >/dev/null
    mkdir -p "$SCRATCH/likes"
    tar -C "$LIKES_DIR" --exclude=./test-output -cf - . | tar -C "$SCRATCH/likes" -xf -
    ((EUID != 0)) || chown -R "$PG_USER:" "$SCRATCH/likes"
}

# Start pgbouncer (transaction pooling, POOL_SIZE server connections,
# default 10) in front of the scratch cluster; sets PGBOUNCER_PORT.
likes_pgbouncer_start() {
    local size=${1:-10}
    PGBOUNCER_PORT=$(FIRST_PORT=6432 free_port)
    as_pg tee "$SCRATCH/pgbouncer.ini" >/dev/null <<INI
[databases]
postgres = host=$SCRATCH port=$PGPORT_SCRATCH dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir = $SCRATCH
auth_type = trust
auth_file = $SCRATCH/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = $size
max_client_conn = 2000
ignore_startup_parameters = extra_float_digits,options
logfile = $SCRATCH/pgbouncer.log
pidfile = $SCRATCH/pgbouncer.pid
INI
    echo '"postgres" ""' | as_pg tee "$SCRATCH/userlist.txt" >/dev/null
    as_pg pgbouncer -d "$SCRATCH/pgbouncer.ini" || die "pgbouncer did not start"
}

# Stop a process started in the background through as_pg: runuser does
# not pass signals on, so its child first.
stop_bg() {
    [[ -n ${1:-} ]] || return 0
    kill $(pgrep -P "$1") "$1" 2>/dev/null || true
}

# Stop pgbouncer if it runs.
likes_pgbouncer_stop() {
    [[ -f ${SCRATCH:-/nonexistent}/pgbouncer.pid ]] || return 0
    kill "$(cat "$SCRATCH/pgbouncer.pid")" 2>/dev/null || true
}

# Start the service in the background (API through pgbouncer if it runs,
# the feed direct); sets LIKES_PID and LIKES_URL, waits until it answers.
likes_service_start() {
    local api="postgresql://postgres@127.0.0.1:${PGBOUNCER_PORT:-$PGPORT_SCRATCH}/postgres" n
    [[ -n ${PGBOUNCER_PORT:-} ]] || api="postgresql://postgres@%2F${SCRATCH//\//%2F}:$PGPORT_SCRATCH/postgres"
    LIKES_PORT=$(FIRST_PORT=8080 free_port)
    LIKES_URL="http://127.0.0.1:$LIKES_PORT"
    as_pg env PORT="$LIKES_PORT" POOL_MAX="${LIKES_POOL_MAX:-100}" API_DATABASE_URL="$api" \
        FEED_DATABASE_URL="postgresql://postgres@127.0.0.1:$PGPORT_SCRATCH/postgres" \
        node "$SCRATCH/likes/server.js" >"$SCRATCH/likes.log" 2>&1 &
    LIKES_PID=$!
    for ((n = 0; n < 100; n++)); do
        curl -fs "$LIKES_URL/healthz" 2>/dev/null | grep -q '"feed":true' && return 0
        sleep 0.1
    done
    cat "$SCRATCH/likes.log" >&2
    die "the likes service did not start"
}

# Stop the service, pgbouncer and the cluster (EXIT trap).
likes_stop_all() {
    stop_bg "${LIKES_PID:-}"
    LIKES_PID=
    likes_pgbouncer_stop
    cluster_stop
}
