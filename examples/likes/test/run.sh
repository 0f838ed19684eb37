#!/usr/bin/env bash
# The likes example's tests (make test runs this through run_script_suite):
# a scratch cluster, pgbouncer (transaction pooling, 10 server connections)
# in front of it, the service (API pool of 100 through pgbouncer, LISTEN
# direct), then: API tests, the browser test (headless Chromium), the load
# test, the postgres_exporter queries file, make example.  Each check prints
# "ok - ..." or "not ok - ..."; the last line is "N passed, M failed".
# Skipped (0 passed, 0 failed) only when Node.js is absent.  LIKES_ONLY=
# "browser load" runs only those node tests (while working on them).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../lib.sh"
set +e
OUT=${LIKES_OUT:-$LIKES_DIR/test-output}
mkdir -p "$OUT"
RESULTS=$OUT/checks.txt
: >"$RESULTS"

if ! command -v node >/dev/null; then
    echo "likes example: SKIPPED: Node.js is not installed (Debian package nodejs)"
    echo "0 passed, 0 failed"
    exit 0
fi

# record one check from the shell
shell_check() {
    if eval "$2"; then echo "ok - $1"; else echo "not ok - $1"; fi | tee -a "$RESULTS"
}

# run one node test file, its checks counted
node_test() {
    [[ -z ${LIKES_ONLY:-} || " $LIKES_ONLY " == *" ${1%.test.js} "* ]] || return 0
    echo "--- $1"
    as_pg env "${TEST_ENV[@]}" node "$SCRATCH/likes/test/$1" 2>&1 | tee -a "$RESULTS"
    [[ ${PIPESTATUS[0]} == 0 ]] || grep -q '^not ok' "$RESULTS" || echo "not ok - $1 exited non-zero" | tee -a "$RESULTS"
}

run_all() {
    likes_npm_ci || { echo "not ok - npm ci" | tee -a "$RESULTS"; return; }
    command -v pgbouncer >/dev/null || { echo "not ok - pgbouncer is not installed (Debian package pgbouncer)" | tee -a "$RESULTS"; return; }
    likes_cluster_start
    chmod 777 "$OUT"
    likes_pgbouncer_start 10
    likes_service_start
    echo "service $LIKES_URL, pgbouncer port $PGBOUNCER_PORT, cluster port $PGPORT_SCRATCH"
    # a second instance whose database does not answer (port of nothing)
    local dead_port dead_pid
    dead_port=$(FIRST_PORT=8180 free_port)
    as_pg env PORT="$dead_port" API_DATABASE_URL="postgresql://postgres@127.0.0.1:1/postgres" \
        FEED_DATABASE_URL="postgresql://postgres@127.0.0.1:1/postgres" \
        node "$SCRATCH/likes/server.js" >"$SCRATCH/dead.log" 2>&1 &
    dead_pid=$!
    for ((n = 0; n < 50; n++)); do curl -s "http://127.0.0.1:$dead_port/" >/dev/null && break; sleep 0.1; done
    TEST_ENV=(LIKES_URL="$LIKES_URL" DEAD_URL="http://127.0.0.1:$dead_port" OUT_DIR="$OUT"
        DIRECT_DATABASE_URL="postgresql://postgres@127.0.0.1:$PGPORT_SCRATCH/postgres"
        PGBOUNCER_ADMIN_URL="postgresql://postgres@127.0.0.1:$PGBOUNCER_PORT/pgbouncer")
    node_test api.test.js
    stop_bg "$dead_pid"
    if [[ -x /usr/bin/chromium || -n ${LIKES_ONLY:-} ]]; then
        node_test browser.test.js
    else
        echo "not ok - browser test: /usr/bin/chromium missing (Debian package chromium)" | tee -a "$RESULTS"
    fi
    node_test load.test.js
    [[ -n ${LIKES_ONLY:-} ]] && return
    exporter_test
    shell_check "the service logged no unexpected error (a 500)" "! grep -v '^likes service listening' '$SCRATCH/likes.log'"
    likes_stop_all
    make_example_test
}

# postgres_exporter (Debian's prometheus-postgres-exporter) with the queries file
exporter_test() {
    local exp=/usr/bin/prometheus-postgres-exporter port pid out n
    if [[ ! -x $exp ]]; then
        echo "not ok - postgres_exporter: $exp missing (Debian package prometheus-postgres-exporter)" | tee -a "$RESULTS"
        return
    fi
    port=$(FIRST_PORT=9187 free_port)
    as_pg env DATA_SOURCE_NAME="postgresql://postgres@127.0.0.1:$PGPORT_SCRATCH/postgres?sslmode=disable" \
        "$exp" --web.listen-address="127.0.0.1:$port" --extend.query-path="$SCRATCH/likes/postgres_exporter.yml" \
        >"$SCRATCH/exporter.log" 2>&1 &
    pid=$!
    for ((n = 0; n < 100; n++)); do out=$(curl -fs "http://127.0.0.1:$port/metrics" 2>/dev/null) && [[ $out == *counter_stats_keys* ]] && break; sleep 0.2; done
    stop_bg "$pid"
    echo "$out" | grep '^counter_stats_' | head -n 20 >"$OUT/exporter-metrics.txt"
    shell_check "postgres_exporter serves counter.stats by the queries file (counter_stats_keys of likes)" \
        "grep -Eq '^counter_stats_keys\\{counter=\"likes\",mode=\"events\"(,server=\"[^\"]*\")?\\} [1-9]' '$OUT/exporter-metrics.txt'"
    shell_check "postgres_exporter: every column of the file is exported (pending_events, oldest_pending_age_seconds, buffered_unflushed, quarantined_keys)" \
        "grep -q '^counter_stats_pending_events' '$OUT/exporter-metrics.txt' && grep -q '^counter_stats_oldest_pending_age_seconds' '$OUT/exporter-metrics.txt' && grep -q '^counter_stats_buffered_unflushed' '$OUT/exporter-metrics.txt' && grep -q '^counter_stats_quarantined_keys' '$OUT/exporter-metrics.txt'"
    shell_check "postgres_exporter logged no error about the queries file" "! grep -Ei 'error.*(counter_stats|query)' '$SCRATCH/exporter.log'"
}

# make example: starts, prints its URL, serves the page
make_example_test() {
    local out
    out=$(LIKES_EXIT=1 timeout 120 "$LIKES_DIR/run.sh" 2>&1)
    echo "$out" | tail -n 4
    shell_check "make example starts the service and prints its URL" "grep -Eq '^likes service: http://127.0.0.1:[0-9]+/' <<<\"\$out\""
}

trap 'likes_stop_all' EXIT
run_all 2>&1
passed=$(grep -c '^ok - ' "$RESULTS")
failed=$(grep -c '^not ok - ' "$RESULTS")
echo "$passed passed, $failed failed"
