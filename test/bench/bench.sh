#!/usr/bin/env bash
# make bench: throughput of counter.add against baselines, all in one scratch
# cluster (preloaded, durable commits).  Expects the extension to be installed
# (test/setup.sh bench does that first).
#   BENCH_SECONDS  seconds per pgbench run (default 10)
#   BENCH_CLIENTS  client counts (default "16 64")
# Prints a table and writes test/bench/results/bench-<date>.csv (+ .log with
# every pgbench output).  Exits non-zero if a run failed or was not exact.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/setup.sh
source "$BENCH_DIR/../setup.sh"

DURATION=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-16 64}
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=$BENCH_DIR/results
CSV=$RESULTS/bench-$STAMP.csv
LOG=$RESULTS/bench-$STAMP.log

# Workloads, one per line:  name | pgbench script (in test/bench) | setup SQL,
# run once | check SQL returning a number that grows by exactly 1 per
# transaction (empty: no exactness check).  The ratio columns compare against
# the workloads named hot_update, insert and floor.
WORKLOADS="
select1        | select1.sql        | |
floor          | floor.sql          | |
insert         | insert.sql         | CREATE TABLE ev (k int, d int8, at timestamptz DEFAULT now()); CREATE INDEX ON ev (k) | SELECT count(*) FROM ev
hot_update     | hot_update.sql     | CREATE TABLE hot (id int PRIMARY KEY, n bigint); INSERT INTO hot VALUES (1, 0) | SELECT n FROM hot WHERE id = 1
counter_slots  | counter_slots.sql  | SELECT counter.create('hot_slots') | SELECT counter.value('hot_slots', 'k')
counter_events | counter_events.sql | SELECT counter.create('hot_events', mode => 'events') | SELECT counter.value('hot_events', 'k')
"

# Parse $WORKLOADS into NAMES/SCRIPTS/CHECKS and run each setup SQL; a workload
# whose setup fails is recorded in BROKEN and reported instead of run.
setup_workloads() {
    local name script setup check
    NAMES=() SCRIPTS=() CHECKS=()
    declare -gA BROKEN=()
    while IFS='|' read -r name script setup check; do
        name=${name//[[:space:]]/}
        [[ -n $name ]] || continue
        NAMES+=("$name")
        SCRIPTS+=("$BENCH_DIR/${script//[[:space:]]/}")
        CHECKS+=("$check")
        if [[ -n ${setup//[[:space:]]/} ]] && ! sql "$setup" >>"$LOG" 2>&1; then
            echo "setup of $name failed (see $LOG)" >&2
            BROKEN[$name]=1
        fi
    done <<<"$WORKLOADS"
}

# Run workload number $1 with $2 clients; appends "name clients tps transactions exact" to $RAW.
run_workload() {
    local name=${NAMES[$1]} script=${SCRIPTS[$1]} check=${CHECKS[$1]} clients=$2
    local out before after tps=0 tx=0 exact=-
    [[ -n ${check//[[:space:]]/} ]] || check=
    if [[ -n ${BROKEN[$name]:-} ]]; then
        exact="setup-failed"
    else
        sql "CHECKPOINT"
        if [[ -n $check ]]; then
            before=$(sql "$check" 2>&1) || before=error
        fi
        if out=$(pgbench_run "$script" "$clients" "$DURATION"); then
            read -r tps tx < <(pgbench_parse <<<"$out")
            if [[ -n $check ]]; then
                after=$(sql "$check" 2>&1) || after=error
                exact=no
                if [[ $before =~ ^[0-9]+$ && $after =~ ^[0-9]+$ ]] && ((after - before == tx)); then
                    exact=yes
                fi
            fi
        else
            exact="pgbench-failed"
        fi
        printf '### %s, %s clients (check before: %s, after: %s)\n%s\n\n' \
            "$name" "$clients" "${before:--}" "${after:--}" "$out" >>"$LOG"
    fi
    printf '%-15s %4s clients %12.1f tps  exact: %s\n' "$name" "$clients" "$tps" "$exact"
    echo "$name $clients $tps $tx $exact" >>"$RAW"
}

# Turn $RAW into the CSV (with ratios to hot_update, insert and floor at the
# same client count) and print it as a table.
report() {
    awk -v secs="$DURATION" '
        function ratio(base) { b = tps[base, $2]; return (b > 0 && $3 > 0 ? sprintf("%.2f", $3 / b) : "-") }
        NR == FNR { tps[$1, $2] = $3; next }
        FNR == 1 { print "workload,clients,seconds,tps,transactions,vs_hot_update,vs_insert,vs_floor,exact" }
        { printf "%s,%s,%s,%s,%s,%s,%s,%s,%s\n", $1, $2, secs, $3, $4, ratio("hot_update"), ratio("insert"), ratio("floor"), $5 }
    ' "$RAW" "$RAW" >"$CSV"
    echo
    awk -F, 'NR == 1 { $4 = sprintf("%12s", $4) } NR > 1 { $4 = sprintf("%12.1f", $4) }
             { printf "%-15s %7s %s %13s %9s %8s  %s\n", $1, $2, $4, $6, $7, $8, $9 }' "$CSV"
    echo
    echo "CSV: $CSV"
    echo "pgbench output: $LOG"
}

# Start the cluster, run every workload at every client count, report.
main() {
    local clients i
    mkdir -p "$RESULTS"
    trap cluster_stop EXIT
    trap 'exit 130' INT TERM
    cluster_start "max_connections = 200" "shared_buffers = 512MB"
    RAW=$SCRATCH/raw
    {
        echo "# bench $STAMP: ${DURATION}s per run, clients: $CLIENTS, $(nproc) CPUs"
        sql "SELECT version()"
    } | tee "$LOG"
    sql "CREATE EXTENSION counter"
    setup_workloads
    for clients in $CLIENTS; do
        for i in "${!NAMES[@]}"; do
            run_workload "$i" "$clients"
        done
    done
    report
    if awk '$5 != "yes" && $5 != "-" { bad = 1 } END { exit !bad }' "$RAW"; then
        echo "bench: some runs failed or were not exact (see $LOG)" >&2
        return 1
    fi
}

main "$@"
