#!/usr/bin/env bash
# make bench: throughput and latency of the counter extension against
# baselines, all in ONE scratch cluster (preloaded, durable commits: fsync and
# synchronous_commit on).  Expects the extension to be installed
# (test/setup.sh bench does that first).
#   BENCH_SECONDS         seconds per pgbench run (default 5)
#   BENCH_CLIENTS         client counts (default "1 16 64")
#   BENCH_WORKER_SECONDS  length of the worker-lag run (default 60)
#   BENCH_ONLY            regex: run only the workloads whose name matches
#   BENCH_SCALE_KEYS      keys (and events) of the scale section's keyspaces
#                         (default 1000000)
#   BENCH_SCALE_ROUNDS    runs, in turn, of each read of the scale section and
#                         of its baseline, the median kept (default 3)
#   BENCH_SCALE_10M=1     also the scale section's keyspaces at 10x that (10M
#                         keys: about 40 minutes more on a 2-core machine)
#   pg_incremental        the scale section's compaction peer; not in Debian:
#                         build and install it (with pg_cron) from its source
#                         with test/bench/pg_incremental.sh SRCDIR; without
#                         it the section runs the pipeline's statement by hand
#                         and says so
#   BENCH_ROUNDS          rounds of the pgbench workloads (default 1); with
#                         more, each workload and client count reports its
#                         run of median tps (this machine's commit latency
#                         moves by +-20% between runs of 5 s)
# Sections: durable workloads at every client count; synchronous_commit = off
# at the largest; Redis INCR (if installed); the events worker's lag under
# load; compaction throughput of a 1M-event backlog; the scale section
# (BENCH_ONLY='^scale$' alone): 1M keys uniform and Zipf (10M opt-in),
# compaction against pg_incremental, top/value against a plain indexed table,
# value of a hot slots key under 64 writers, one statement of 1M adds,
# idempotent adds or likes, bytes per key of each mode, the
# worker's backlog under a 60 s zipfian load over 1M keys).  Prints a table (tps,
# latency p50/p99 from pgbench's per-transaction logs, ratios) and a targets
# block; writes test/bench/results/bench-<stamp>.csv, .png (gnuplot), .log
# (every pgbench output) and .server.log; the CSV and PNG are copied to
# results/latest.*.
# Exits non-zero only if a run failed or a value was not exact, never on a
# ratio.  Workloads the extension cannot run yet (setup raising 0A000, e.g.
# mode 'buffered') are reported as "unavailable".
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/setup.sh
source "$BENCH_DIR/../setup.sh"

DURATION=${BENCH_SECONDS:-5}
CLIENTS=${BENCH_CLIENTS:-1 16 64}
WORKER_SECONDS=${BENCH_WORKER_SECONDS:-60}
ONLY=${BENCH_ONLY:-}
ROUNDS=${BENCH_ROUNDS:-1}
SCALE_ROUNDS=${BENCH_SCALE_ROUNDS:-3}
MAX_CLIENTS=$(tr ' ' '\n' <<<"$CLIENTS" | grep -E '^[0-9]+$' | sort -n | tail -n 1)
REDIS_CLIENTS="64 16"
REDIS_REQUESTS=200000
WORKER_CLIENTS=64
GRACE=20
BACKLOG_EVENTS=1000000
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=$BENCH_DIR/results
CSV=$RESULTS/bench-$STAMP.csv
PNG=$RESULTS/bench-$STAMP.png
LOG=$RESULTS/bench-$STAMP.log
SERVER_LOG=$RESULTS/bench-$STAMP.server.log

# Workloads, one per line:  name | pgbench scripts and variables | setup SQL,
# run once before the first run (idempotent) | check SQL.
# Scripts (in test/bench) may carry a weight (file.sql@2); NAME=VALUE is passed
# as pgbench -D.  A script's line "-- delta: N" says by how much one of its
# transactions grows the check number (default 1); after a run the check must
# have grown by exactly the sum over scripts of transactions x delta (empty
# check: none).  Ratio columns compare with floor, hot_update, insert and
# select1 at the same client count.
WORKLOADS="
select1           | select1.sql                            | |
floor             | floor.sql                              | |
insert            | insert.sql                             | CREATE TABLE IF NOT EXISTS ev (k int, d int8, at timestamptz DEFAULT now()); CREATE INDEX IF NOT EXISTS ev_k ON ev (k) | SELECT count(*) FROM ev
hot_update        | hot_update.sql                         | CREATE TABLE IF NOT EXISTS hot (id int PRIMARY KEY, n bigint); INSERT INTO hot VALUES (1, 0) ON CONFLICT DO NOTHING | SELECT n FROM hot WHERE id = 1
pk_select         | pk_select.sql                          | CREATE TABLE IF NOT EXISTS pk (id int PRIMARY KEY, v int8); INSERT INTO pk SELECT i, i FROM generate_series(1, 10000) i ON CONFLICT DO NOTHING; ANALYZE pk |
slotted_upsert    | slotted_upsert.sql                     | CREATE TABLE IF NOT EXISTS t (key int, slot int, n int8 NOT NULL, PRIMARY KEY (key, slot)) WITH (fillfactor = 10) | SELECT coalesce(sum(n), 0) FROM t
add_slots_hot     | add_hot.sql c=hot_slots                | SELECT bench_counter('hot_slots') | SELECT counter.value('hot_slots', 'k')
add_events_hot    | add_hot.sql c=hot_events               | SELECT bench_counter('hot_events', 'events') | SELECT counter.value('hot_events', 'k')
add_buffered_hot  | add_hot.sql c=hot_buffered             | SELECT bench_counter('hot_buffered', 'buffered') | SELECT counter.value('hot_buffered', 'k')
add_wal_hot       | add_hot.sql c=hot_wal                  | SELECT bench_counter('hot_wal', 'wal') | SELECT counter.value('hot_wal', 'k')
add_slots_zipf    | add_zipf.sql c=zipf_slots              | SELECT bench_counter('zipf_slots') | SELECT bench_sum('zipf_slots')
add_events_zipf   | add_zipf.sql c=zipf_events             | SELECT bench_counter('zipf_events', 'events') | SELECT bench_sum('zipf_events')
add_buffered_zipf | add_zipf.sql c=zipf_buffered           | SELECT bench_counter('zipf_buffered', 'buffered') | SELECT bench_sum('zipf_buffered')
add_wal_zipf      | add_zipf.sql c=zipf_wal                | SELECT bench_counter('zipf_wal', 'wal') | SELECT bench_sum('zipf_wal')
value_slots_hot   | value_hot.sql c=hot_slots              | SELECT bench_counter('hot_slots'); SELECT counter.add('hot_slots', 'k') |
value_events_hot  | value_hot.sql c=hot_events             | SELECT bench_counter('hot_events', 'events'); SELECT counter.add('hot_events', 'k') |
value_wal_hot     | value_hot.sql c=hot_wal                | SELECT bench_counter('hot_wal', 'wal'); SELECT counter.add('hot_wal', 'k') |
top_slots_zipf    | top.sql c=zipf_slots                   | SELECT bench_counter('zipf_slots'); SELECT counter.add('zipf_slots', concat('k', i)) FROM generate_series(1, 10000) i |
top_events_zipf   | top.sql c=zipf_events                  | SELECT bench_counter('zipf_events', 'events'); SELECT counter.add('zipf_events', concat('k', i)) FROM generate_series(1, 10000) i |
add_many_100      | add_many.sql c=many                    | SELECT bench_counter('many', 'events') | SELECT bench_sum('many')
add_many_100_buffered | add_many.sql c=many_buffered       | SELECT bench_counter('many_buffered', 'buffered') | SELECT bench_sum('many_buffered')
add_many_100_wal  | add_many.sql c=many_wal                | SELECT bench_counter('many_wal', 'wal') | SELECT bench_sum('many_wal')
bounded_pm1       | bounded_inc.sql@1 bounded_dec.sql@1 c=bounded | SELECT bench_counter('bounded', min => 0, fill => 1000000000) | SELECT counter.value('bounded', 'k')
like_zipf         | like_zipf.sql c=likes                  | SELECT counter.create('likes', members => true) WHERE NOT EXISTS (SELECT 1 FROM counter.list() l WHERE l.name = 'likes') |
relike            | relike.sql c=likes                     | SELECT counter.create('likes', members => true) WHERE NOT EXISTS (SELECT 1 FROM counter.list() l WHERE l.name = 'likes'); SELECT count(counter.\"like\"('likes', 'k', concat('u', i))) FROM generate_series(1, 1000) i | SELECT counter.value('likes', 'k')
"
# Run again with synchronous_commit = off, at the largest client count only,
# as NAME_async (same scripts, setup and check).
ASYNC="select1 floor insert hot_update add_slots_hot add_events_hot add_buffered_hot add_wal_hot"

# Helpers in the scratch database: bench_counter creates a counter unless it
# exists (and pre-fills key 'k' once); bench_sum is the exact sum of keys
# k<lo>..k<hi> read through the API.
HELPERS="
CREATE FUNCTION bench_counter(n text, m text DEFAULT 'slots', min int8 DEFAULT NULL,
                              fill int8 DEFAULT 0, rollups interval[] DEFAULT '{1 hour,1 day}')
RETURNS void LANGUAGE plpgsql AS \$\$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM counter.list() l WHERE l.name = n) THEN
        PERFORM counter.create(n, mode => m, min => min, rollups => rollups);
        IF fill <> 0 THEN
            PERFORM counter.add(n, 'k', fill);
        END IF;
    END IF;
END \$\$;
CREATE FUNCTION bench_sum(n text, lo int DEFAULT 1, hi int DEFAULT 10000) RETURNS numeric
LANGUAGE sql AS \$\$
    SELECT coalesce(sum(value), 0)
      FROM counter.values(n, ARRAY(SELECT 'k' || i FROM generate_series(lo, hi) i))
\$\$;
"

# --- helpers ------------------------------------------------------------------

# True if workload $1 is selected by BENCH_ONLY.
selected() {
    [[ -z $ONLY || $1 =~ $ONLY ]]
}

# True if any of the given workload names is selected.
selected_any() {
    local name
    for name in "$@"; do
        if selected "$name"; then
            return 0
        fi
    done
    return 1
}

# Run SQL like sql() but with SQLSTATEs in error messages (to tell 0A000).
sql_verbose() {
    as_pg "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose \
        -h "$SCRATCH" -p "$PGPORT_SCRATCH" -d postgres -c "$1"
}

# Append one result: name clients tps transactions p50_ms p99_ms exact note.
record() {
    local note=${8//[$'\t\n']/ }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${@:1:7}" "$note" >>"$RAW"
}

# LOGPREFIX: print "p50 p99" in ms of the latencies (3rd field, us) in the
# pgbench per-transaction logs LOGPREFIX.*, nearest rank; "- -" if none.
# Deletes the logs afterwards (they can be large).
latency_pcts() {
    local sorted=$SCRATCH/latencies n
    { cat "$1".* 2>/dev/null || true; } | awk '$3 ~ /^[0-9]+$/ { print $3 }' | sort -n >"$sorted"
    n=$(wc -l <"$sorted")
    rm -f "$1".*
    if ((n == 0)); then
        echo "- -"
        return
    fi
    awk -v n="$n" '
        function rank(p,  r) { r = int(n * p); if (r < n * p) r++; return r < 1 ? 1 : r }
        BEGIN { r50 = rank(0.50); r99 = rank(0.99) }
        NR == r50 { p50 = $1 } NR == r99 { p99 = $1 }
        END { printf "%.3f %.3f\n", p50 / 1000, p99 / 1000 }' "$sorted"
}

# Print the "-- delta: N" of pgbench script $1 (default 1).
script_delta() {
    local d
    d=$(sed -n 's/^-- delta: *\(-\{0,1\}[0-9][0-9]*\).*/\1/p' "$1" | head -n 1)
    echo "${d:-1}"
}

# LOGPREFIX NSCRIPTS: print the completed transactions of each script, one a
# line, counted in the pgbench per-transaction logs LOGPREFIX.* (4th field:
# script number).  Not from pgbench's summary: its per-script counts can
# miss transactions that its total includes.
script_transactions() {
    { cat "$1".* 2>/dev/null || true; } |
        awk -v n="$2" '$3 ~ /^[0-9]+$/ { tx[$4]++ } END { for (i = 0; i < n; i++) print tx[i] + 0 }'
}

# Run pgbench: bench_pgbench TAG CLIENTS SECONDS PGOPTIONS SPEC.  SPEC is a
# workload's script field.  Per-transaction logs go to $SCRATCH/logs/TAG.*.
# Sets OUT (pgbench output), RC (its exit status), DELTAS (per-script deltas)
# and TIMED_OUT (non-empty if the watchdog had to cancel calls).
bench_pgbench() {
    local tag=$1 clients=$2 secs=$3 pgoptions=$4 item args=() i watchdog
    local stop=$SCRATCH/watchdog.stop fired=$SCRATCH/watchdog.fired
    DELTAS=()
    for item in $5; do
        if [[ $item == *=* ]]; then
            args+=(-D "$item")
        else
            args+=(-f "$SCRATCH/scripts/$item")
            DELTAS+=("$(script_delta "$SCRATCH/scripts/${item%@*}")")
        fi
    done
    rm -f "$SCRATCH/logs/$tag".* "$stop" "$fired"
    # watchdog: pgbench -T lets running transactions finish; cancel those
    # still running $GRACE s after the end (a pathologically slow call must
    # not hold up the whole bench)
    (
        for ((i = 0; i < (secs + GRACE) * 5; i++)); do
            [[ ! -e $stop ]] || exit 0
            sleep 0.2
        done
        touch "$fired"
        sql "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity
              WHERE application_name = 'pgbench' AND pid <> pg_backend_pid()" >/dev/null 2>&1 || true
    ) &
    watchdog=$!
    RC=0
    OUT=$(as_pg env PGOPTIONS="$pgoptions" "$PGBIN/pgbench" -n -M prepared -j 2 -c "$clients" -T "$secs" \
        -l --log-prefix="$SCRATCH/logs/$tag" -h "$SCRATCH" -p "$PGPORT_SCRATCH" "${args[@]}" postgres 2>&1) || RC=$?
    touch "$stop"
    wait "$watchdog" || true
    TIMED_OUT=
    [[ ! -e $fired ]] || TIMED_OUT=1
}

# --- durable and synchronous_commit = off workloads -----------------------------

# Parse $WORKLOADS into NAMES/SPECS/CHECKS and run the setup SQL of each
# workload that will run (itself or its _async twin).  A setup raising 0A000
# (feature not supported: mode 'buffered' before it exists) marks the workload
# UNAVAILABLE; any other setup error marks it BROKEN.
setup_workloads() {
    local name spec setup check err
    NAMES=() SPECS=() CHECKS=()
    declare -gA BROKEN=() UNAVAILABLE=() INDEX=()
    while IFS='|' read -r name spec setup check; do
        name=${name//[[:space:]]/}
        [[ -n $name ]] || continue
        INDEX[$name]=${#NAMES[@]}
        NAMES+=("$name")
        SPECS+=("$spec")
        CHECKS+=("$check")
        selected "$name" || { [[ " $ASYNC " == *" $name "* ]] && selected "${name}_async"; } || continue
        [[ -n ${setup//[[:space:]]/} ]] || continue
        if ! err=$(sql_verbose "$setup" 2>&1); then
            echo "### setup of $name failed: $err" >>"$LOG"
            if [[ $err == *0A000* ]]; then
                UNAVAILABLE[$name]=$(sed -n 's/^ERROR: *0A000: *//p' <<<"$err" | head -n 1)
                echo "$name: unavailable ($err)" | head -n 1 >&2
            else
                echo "setup of $name failed (see $LOG)" >&2
                BROKEN[$name]=1
            fi
        fi
    done <<<"$WORKLOADS"
}

# run_workload INDEX CLIENTS [async]: run one workload, record its result.
run_workload() {
    local name=${NAMES[$1]} spec=${SPECS[$1]} check=${CHECKS[$1]} clients=$2 mode=${3:-}
    local label=$name pgoptions="" before="" after="" tps=0 tx=0 p50=- p99=- exact=- note=""
    local expected logged i failed tag
    local -a txs
    if [[ $mode == async ]]; then
        label=${name}_async
        pgoptions="-c synchronous_commit=off"
    fi
    selected "$label" || return 0
    [[ -n ${check//[[:space:]]/} ]] || check=
    if [[ -n ${BROKEN[$name]:-} ]]; then
        exact="setup-failed"
    elif [[ -n ${UNAVAILABLE[$name]:-} ]]; then
        exact="unavailable"
        note=${UNAVAILABLE[$name]}
    else
        sql "CHECKPOINT" >>"$LOG" 2>&1 || true
        if [[ -n $check ]]; then
            before=$(sql "$check" 2>&1) || before=error
        fi
        tag="$label-$clients"
        bench_pgbench "$tag" "$clients" "$DURATION" "$pgoptions" "$spec"
        read -r tps tx < <(pgbench_parse <<<"$OUT")
        mapfile -t txs < <(script_transactions "$SCRATCH/logs/$tag" "${#DELTAS[@]}")
        read -r p50 p99 < <(latency_pcts "$SCRATCH/logs/$tag")
        failed=$(awk '/^number of failed transactions:/ { print $5 }' <<<"$OUT")
        if [[ -n $TIMED_OUT ]]; then
            exact="timeout"
            note="calls still running ${GRACE}s after the run were cancelled"
        elif ((RC != 0)) || [[ -n $failed && $failed != 0 ]]; then
            exact="pgbench-failed"
        elif [[ -n $check ]]; then
            after=$(sql "$check" 2>&1) || after=error
            expected=0 logged=0
            for i in "${!DELTAS[@]}"; do
                expected=$((expected + ${txs[$i]:-0} * DELTAS[i]))
                logged=$((logged + ${txs[$i]:-0}))
            done
            exact=no
            note="check before: $before; after: $after; expected change $expected"
            if ((logged != tx)); then
                # pgbench's log and its summary disagree: no verdict
                note="$logged transactions logged but $tx processed"
            fi
            if ((logged == tx)) && [[ $before =~ ^-?[0-9]+$ && $after =~ ^-?[0-9]+$ ]]; then
                note="change $((after - before)); expected $expected"
                ((after - before != expected)) || exact=yes
            fi
        fi
        [[ $name != add_many_100* ]] || note="increments/s=$(awk -v t="$tps" 'BEGIN { printf "%.0f", t * 100 }'); $note"
        printf '### %s, %s clients (check before: %s, after: %s)\n%s\n\n' \
            "$label" "$clients" "${before:--}" "${after:--}" "$OUT" >>"$LOG"
    fi
    printf '%-24s %4s clients %12.1f tps  p50 %8s ms  p99 %8s ms  exact: %s\n' \
        "$label" "$clients" "$tps" "$p50" "$p99" "$exact"
    record "$label" "$clients" "$tps" "$tx" "$p50" "$p99" "$exact" "$note"
}

# With ROUNDS > 1: one line of $RAW per workload and client count, the run of
# median tps; a run that was not exact gives its line instead, so a failed
# check is never hidden by the others.
collapse_rounds() {
    ((ROUNDS > 1)) || return 0
    awk -F'\t' -v OFS='\t' '
        {
            k = $1 FS $2
            if (!(k in n)) order[++nk] = k
            n[k]++; row[k, n[k]] = $0; tps[k, n[k]] = $3 + 0
            if ($7 != "yes" && $7 != "-") bad[k] = $0
        }
        END {
            for (o = 1; o <= nk; o++) {
                k = order[o]; m = n[k]
                if (k in bad) { print bad[k]; continue }
                for (i = 1; i <= m; i++) idx[i] = i
                for (i = 1; i <= m; i++)
                    for (j = i + 1; j <= m; j++)
                        if (tps[k, idx[j]] < tps[k, idx[i]]) { t = idx[i]; idx[i] = idx[j]; idx[j] = t }
                split(row[k, idx[int((m + 1) / 2)]], f, FS)
                if (m > 1) f[8] = "median of " m " runs" (f[8] == "" ? "" : "; " f[8])
                print f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]
            }
        }' "$RAW" >"$RAW.median"
    mv "$RAW.median" "$RAW"
}

# --- Redis --------------------------------------------------------------------

REDIS_PID=

# Stop the Redis server this script started, if any.
redis_stop() {
    [[ -n $REDIS_PID ]] || return 0
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=
}

# redis_bench NAME REDIS-ARGS...: start redis-server on a free loopback port
# with the given persistence, run redis-benchmark INCR at each of
# $REDIS_CLIENTS, record the results, stop it.
redis_bench() {
    local name=$1 port dir i line tps p50 p99 c
    shift
    selected "$name" || return 0
    port=$(free_port)
    dir=$SCRATCH/redis-$name
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize no "$@" >"$dir/server.log" 2>&1 &
    REDIS_PID=$!
    for ((i = 0; i < 100; i++)); do
        (: <>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    for c in $REDIS_CLIENTS; do
        if line=$(redis-benchmark -h 127.0.0.1 -p "$port" -c "$c" -n "$REDIS_REQUESTS" -t incr -q --csv 2>&1); then
            echo "### $name, $c clients: $*" >>"$LOG"
            echo "$line" >>"$LOG"
            # "INCR","rps","avg","min","p50","p95","p99","max"
            read -r tps p50 p99 < <(awk -F'"' '$2 == "INCR" { print $4, $10, $14 }' <<<"$line")
            printf '%-24s %4s clients %12.1f tps  p50 %8s ms  p99 %8s ms\n' "$name" "$c" "${tps:-0}" "${p50:--}" "${p99:--}"
            record "$name" "$c" "${tps:-0}" "$REDIS_REQUESTS" "${p50:--}" "${p99:--}" - "redis-benchmark -t incr -n $REDIS_REQUESTS"
        else
            echo "$line" >>"$LOG"
            echo "$name: redis-benchmark failed (see $LOG)" >&2
            record "$name" "$c" 0 0 - - failed "redis-benchmark failed"
        fi
    done
    redis_stop
}

redis_section() {
    if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
        echo "(redis-server/redis-benchmark not installed: Redis comparison skipped)"
        return 0
    fi
    redis_bench redis_incr --save '' --appendonly no
    redis_bench redis_incr_aof_everysec --save '' --appendonly yes --appendfsync everysec
}

# --- worker -------------------------------------------------------------------

# Seconds (1 decimal) until counter $1 has no pending events, polled every
# 0.1 s for at most $2 s; ">$2" if it still has some then.
drain_seconds() {
    local i pending
    for ((i = 0; i <= $2 * 10; i++)); do
        pending=$(sql "SELECT pending_events FROM counter.stats WHERE name = '$1'" 2>&1) || break
        if [[ $pending == 0 ]]; then
            awk -v i="$i" 'BEGIN { printf "%.1f", i / 10 }'
            return
        fi
        sleep 0.1
    done
    echo ">$2"
}

# Events mode, $WORKER_CLIENTS clients adding on 10k zipfian keys for
# $WORKER_SECONDS while a background loop samples the pending events and the
# age of the oldest one every second; then the time the worker takes to drain.
worker_lag() {
    local name=worker_events_zipf c=worker_events tag stop=$SCRATCH/sampler.stop samples=$SCRATCH/samples
    local sampler before after tps tx p50 p99 exact=no expected max_pending max_lag bounded drain i
    selected "$name" || return 0
    if ! sql "SELECT bench_counter('$c', 'events')" >>"$LOG" 2>&1; then
        record "$name" "$WORKER_CLIENTS" 0 0 - - setup-failed "see the log"
        return 0
    fi
    sql "CHECKPOINT" >>"$LOG" 2>&1 || true
    before=$(sql "SELECT bench_sum('$c')" 2>&1) || before=error
    rm -f "$stop"
    : >"$samples"
    (
        for ((i = 0; i < WORKER_SECONDS + 60; i++)); do
            [[ ! -e $stop ]] || break
            sql "SELECT pending_events, coalesce(extract(epoch FROM oldest_pending_age), 0)
                   FROM counter.stats WHERE name = '$c'" >>"$samples" 2>/dev/null || true
            sleep 1
        done
    ) &
    sampler=$!
    tag="$name-$WORKER_CLIENTS"
    bench_pgbench "$tag" "$WORKER_CLIENTS" "$WORKER_SECONDS" "" "add_zipf.sql c=$c"
    touch "$stop"
    wait "$sampler" || true
    read -r tps tx < <(pgbench_parse <<<"$OUT")
    read -r p50 p99 < <(latency_pcts "$SCRATCH/logs/$tag")
    echo "### $name, $WORKER_CLIENTS clients, ${WORKER_SECONDS}s" >>"$LOG"
    echo "$OUT" >>"$LOG"
    # after the load: seconds until the worker has compacted every event
    drain=$(drain_seconds "$c" 30)
    after=$(sql "SELECT bench_sum('$c')" 2>&1) || after=error
    expected=$tx
    if [[ -n $TIMED_OUT ]]; then
        exact="timeout"
    elif ((RC != 0)); then
        exact="pgbench-failed"
    elif [[ $before =~ ^[0-9]+$ && $after =~ ^[0-9]+$ ]] && ((after - before == expected)); then
        exact=yes
    fi
    # max pending, max lag; "bounded": the lag of the second half of the
    # samples stays within 1.5x (+1 s) of the first half's, and the backlog drains
    read -r max_pending max_lag bounded < <(awk -F'|' -v drained="$([[ $drain == ">30" ]] && echo 0 || echo 1)" '
        { p[NR] = $1; l[NR] = $2 }
        END {
            for (i = 1; i <= NR; i++) {
                if (p[i] > mp) mp = p[i]
                if (l[i] > ml) ml = l[i]
                if (i <= NR / 2) { if (l[i] > m1) m1 = l[i] } else if (l[i] > m2) m2 = l[i]
            }
            printf "%d %.2f %s\n", mp, ml, (NR > 0 && m2 <= 1.5 * m1 + 1 && drained ? "yes" : "no")
        }' "$samples")
    WORKER_BOUNDED=$bounded WORKER_MAX_PENDING=$max_pending WORKER_MAX_LAG=$max_lag
    printf '%-24s %4s clients %12.1f tps  p50 %8s ms  p99 %8s ms  exact: %s\n' \
        "$name" "$WORKER_CLIENTS" "$tps" "$p50" "$p99" "$exact"
    echo "    max pending events $max_pending, max lag ${max_lag}s, drained ${drain}s after the load ($(wc -l <"$samples") samples)"
    record "$name" "$WORKER_CLIENTS" "$tps" "$tx" "$p50" "$p99" "$exact" \
        "max_pending=$max_pending; max_lag_s=$max_lag; drain_s=$drain; bounded=$bounded"
}

# Compaction throughput: a backlog of $BACKLOG_EVENTS events on 10k keys
# loaded with the worker off, then one timed counter.compact().
compaction() {
    local name=compact_backlog c=backlog chunk=$((BACKLOG_EVENTS / 4)) i t0 t1 load pending out moved secs rate sum exact=no
    selected "$name" || return 0
    if ! sql "SELECT bench_counter('$c', 'events', rollups => '{1 hour}')" >>"$LOG" 2>&1 ||
        ! sql "ALTER SYSTEM SET counter.worker_enabled = off" >>"$LOG" 2>&1 ||
        ! sql "SELECT pg_reload_conf()" >>"$LOG" 2>&1; then
        record "$name" 1 0 0 - - setup-failed "see the log"
        return 0
    fi
    sleep 1
    t0=$(date +%s.%N)
    for ((i = 0; i < 4; i++)); do
        if ! sql "SELECT count(counter.add('$c', 'k' || (i % 10000), 1))
                    FROM generate_series($((i * chunk + 1)), $(((i + 1) * chunk))) i" >>"$LOG" 2>&1; then
            sql "ALTER SYSTEM RESET counter.worker_enabled" >>"$LOG" 2>&1 || true
            sql "SELECT pg_reload_conf()" >>"$LOG" 2>&1 || true
            record "$name" 1 0 0 - - failed "loading the backlog failed (see the log)"
            return 0
        fi
    done
    t1=$(date +%s.%N)
    load=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    pending=$(sql "SELECT pending_events FROM counter.stats WHERE name = '$c'" 2>&1) || pending=error
    sql "CHECKPOINT" >>"$LOG" 2>&1 || true
    # one session: clock before, compact, clock after (each its own transaction)
    out=$(as_pg "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SCRATCH" -p "$PGPORT_SCRATCH" -d postgres 2>&1 <<EOF
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT counter.compact('$c') AS moved \gset
SELECT :moved, extract(epoch FROM clock_timestamp()) - :t0;
EOF
    ) || out="error: $out"
    sql "ALTER SYSTEM RESET counter.worker_enabled" >>"$LOG" 2>&1 || true
    sql "SELECT pg_reload_conf()" >>"$LOG" 2>&1 || true
    echo "### $name: pending before compact $pending; compact: $out" >>"$LOG"
    moved=${out%%|*} secs=${out##*|}
    sum=$(sql "SELECT bench_sum('$c', 0, 9999) || ' ' || (SELECT coalesce(sum(value), 0) FROM counter.totals WHERE counter = '$c')" 2>&1) ||
        sum=error
    if [[ $moved =~ ^[0-9]+$ && $secs =~ ^[0-9.]+$ ]]; then
        rate=$(awk -v m="$moved" -v s="$secs" 'BEGIN { printf "%.1f", (s > 0 ? m / s : 0) }')
        [[ $sum == "$BACKLOG_EVENTS $BACKLOG_EVENTS" ]] && exact=yes
    else
        rate=0 moved=0 secs=- exact=failed
    fi
    printf '%-24s %4s call    %12.1f events/s (%s events moved in %ss; pending before %s; load %ss)  exact: %s\n' \
        "$name" 1 "$rate" "$moved" "$secs" "$pending" "$load" "$exact"
    [[ $exact == yes ]] || echo "    values sum / totals sum: $sum (expected $BACKLOG_EVENTS)" >&2
    record "$name" 1 "$rate" "$moved" - - "$exact" \
        "events/s; compact ${secs}s; pending before $pending; load ${load}s; sums $sum"
}

# --- scale --------------------------------------------------------------------

# Seconds (3 decimals) that SQL $1 takes, run as one statement in its own session.
timed_sql() {
    as_pg "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SCRATCH" -p "$PGPORT_SCRATCH" -d "${SCRATCH_DB:-postgres}" 2>&1 <<EOF
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
$1;
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3);
EOF
}

# tps of pgbench script text $1 (8 clients, $DURATION s), or 0.
scale_tps() {
    local f=$SCRATCH/scripts/scale_$RANDOM.sql
    printf '%s\n' "$1" >"$f"
    chmod 644 "$f"
    pgbench_run "$f" 8 "$DURATION" | tee -a "$LOG" | pgbench_parse | awk '{ print $1 }'
}

# scale_pair A B: "tpsA tpsB" of pgbench scripts A and B, each the median
# of SCALE_ROUNDS runs taken in turn, A then B, so that both
# meet the same moments of this shared machine's drift.
scale_pair() {
    local r a=() b=()
    for ((r = 0; r < SCALE_ROUNDS; r++)); do
        a+=("$(scale_tps "$1")")
        b+=("$(scale_tps "$2")")
    done
    echo "$(median "${a[@]}")" "$(median "${b[@]}")"
}

# The median of the numbers given (the lower middle one of an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# Print a / b with 2 decimals (0 when b is 0).
div() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'
}

# scale_target LABEL MEASURED OP REQUIRED: keep one line of the scale
# section's targets (OP >= or <=), printed at its end.
scale_target() {
    SCALE_TARGETS+=("$(awk -v l="$1" -v m="$2" -v op="$3" -v r="$4" 'BEGIN {
        ok = (op == ">=") ? (m >= r) : (m <= r)
        printf "  %-62s %8.2fx   (need %s %sx)  %s", l, m, op, r, (ok ? "met" : "NOT met") }')")
}

# Turn the worker on or off ($1: on/off) and give it a moment to notice.
scale_worker() {
    if [[ $1 == off ]]; then
        sql "ALTER SYSTEM SET counter.worker_enabled = off" >>"$LOG" 2>&1
    else
        sql "ALTER SYSTEM RESET counter.worker_enabled" >>"$LOG" 2>&1
    fi
    sql "SELECT pg_reload_conf()" >>"$LOG" 2>&1
    sleep 1
}

# Seconds (3 decimals) to compact counter $1 completely: counter.compact($1)
# called until it moves nothing (in one DO block).
scale_compact() {
    timed_sql "DO \$\$ BEGIN WHILE counter.compact('$1') > 0 LOOP END LOOP; END \$\$"
}

# True if the scratch cluster can create pg_incremental (and its pg_cron is
# preloaded): test/bench/pg_incremental.sh installs both.
peer_available() {
    [[ $(sql "SELECT count(*) FROM pg_available_extensions WHERE name IN ('pg_incremental', 'pg_cron')") == 2 &&
        $(sql "SHOW shared_preload_libraries") == *pg_cron* ]]
}

# scale_keyspace N DIST: N events over a keyspace of N keys, DIST uniform
# (every key once: N distinct keys) or zipf (keys drawn with P(rank r) ~ 1/r,
# rank = floor(N^u) for u uniform in [0, 1), fixed seed).  The events are
# generated once into a plain events table (id from an identity, key, delta,
# at), the source of pg_incremental's sequence pipeline; the counter (events
# mode, daily rollup like the pipeline's (key, day) table, worker off) gets
# the same events through counter.add.  Then: compaction (counter.compact
# until it moves nothing) against the pipeline's fold of the same events
# (incremental.execute_pipeline; without pg_incremental the pipeline's
# statement run by hand, reported as such), both checked exact; top(10) and
# value() of random keys against a plain indexed (key, n) table holding the
# same values, 8 clients.  Also the fold's floor: the plain INSERTs alone of
# the rows it wrote, into tables like counter.totals and counter.rollups.
scale_keyspace() {
    local n=$1 dist=$2 tag keyexpr c ev roll plain t_load t_c t_p sum keys exact peer_exact d_sum d_keys
    local peer_label peer_note psum pkeys tps_top tps_ptop tps_val tps_pval top_exact label t_floor
    label=$(awk -v n="$n" 'BEGIN { print (n >= 1000000 ? n / 1000000 "m" : n / 1000 "k") }')
    tag=${dist}_$label c=scale_${dist}_$label ev=scale_ev_${dist}_$label roll=scale_roll_${dist}_$label plain=scale_plain_${dist}_$label
    if [[ $dist == uniform ]]; then
        keyexpr="'k' || i"
    else
        keyexpr="'k' || floor(exp(random() * ln($n)))::int8"
    fi
    echo "-- $dist, $n events over a keyspace of $n keys"
    sql "SELECT bench_counter('$c', 'events', rollups => '{1 day}')" >>"$LOG" 2>&1
    as_pg "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SCRATCH" -p "$PGPORT_SCRATCH" -d postgres >>"$LOG" 2>&1 <<EOF
CREATE TABLE $ev (id int8 GENERATED ALWAYS AS IDENTITY, key text NOT NULL, d int8 NOT NULL, at timestamptz NOT NULL DEFAULT now());
SELECT setseed(0.42);
INSERT INTO $ev (key, d) SELECT $keyexpr, 1 FROM generate_series(1, $n) i;
CREATE INDEX ON $ev USING brin (id);
CREATE TABLE $roll (key text, day timestamptz, n int8 NOT NULL, PRIMARY KEY (key, day));
EOF
    read -r d_sum d_keys < <(sql "SELECT sum(d), count(DISTINCT key) FROM $ev" | tr '|' ' ')
    # the state the worker (or, with it off, any call of counter.compact())
    # leaves between two loads: the table folded by the last rotation emptied
    sql "SELECT counter.compact()" >>"$LOG" 2>&1
    t_load=$(timed_sql "SELECT count(counter.add('$c', key, d)) FROM $ev" | tail -n 1)
    sql "VACUUM ANALYZE $ev" >>"$LOG" 2>&1
    sql "CHECKPOINT" >>"$LOG" 2>&1
    t_c=$(scale_compact "$c" | tail -n 1)
    read -r sum keys < <(sql "SELECT sum(value), count(*) FROM counter.totals WHERE counter = '$c'" | tr '|' ' ')
    exact=no
    [[ $sum == "$d_sum" && $keys == "$d_keys" ]] && exact=yes
    # the reads below are measured as the worker's next round leaves the
    # tables (as before the load): the table folded whole emptied
    sql "SELECT counter.compact()" >>"$LOG" 2>&1
    # the floor: only the plain INSERTs, in primary-key order, of the rows the
    # fold wrote into tables like counter.totals and counter.rollups (their
    # indexes, the generated value), nothing read or aggregated
    sql "CREATE TABLE floor_tot_$tag (LIKE counter.totals INCLUDING ALL);
         CREATE TABLE floor_roll_$tag (LIKE counter.rollups INCLUDING ALL);
         CHECKPOINT" >>"$LOG" 2>&1
    t_floor=$(timed_sql "INSERT INTO floor_tot_$tag (counter, key, node, state, updated)
           SELECT counter, key, node, state, updated FROM counter.totals WHERE counter = '$c' ORDER BY key;
         INSERT INTO floor_roll_$tag SELECT r.* FROM counter.rollups r
          WHERE r.counter_id = (SELECT id FROM counter.counters WHERE name = '$c') ORDER BY r.key, r.granularity, r.bucket" | tail -n 1)
    sql "DROP TABLE floor_tot_$tag, floor_roll_$tag; CHECKPOINT" >>"$LOG" 2>&1
    local fold="INSERT INTO $roll SELECT key, date_trunc('day', at), sum(d) FROM $ev"
    local merge="GROUP BY 1, 2 ON CONFLICT (key, day) DO UPDATE SET n = $roll.n + excluded.n"
    if ((PEER)); then
        sql "SELECT incremental.create_sequence_pipeline('p_$tag', '$ev',
               \$p\$ $fold WHERE id BETWEEN \$1 AND \$2 $merge \$p\$,
               schedule => NULL, execute_immediately => false)" >>"$LOG" 2>&1
        t_p=$(timed_sql "CALL incremental.execute_pipeline('p_$tag')" | tail -n 1)
        peer_label="pg_incremental sequence pipeline"
        peer_note="pg_incremental execute_pipeline"
    else
        t_p=$(timed_sql "$fold $merge" | tail -n 1)
        peer_label="the pipeline's statement by hand (pg_incremental not installed)"
        peer_note="pipeline statement by hand; pg_incremental not installed"
    fi
    read -r psum pkeys < <(sql "SELECT sum(n), count(DISTINCT key) FROM $roll" | tr '|' ' ')
    peer_exact=no
    [[ $psum == "$d_sum" && $pkeys == "$d_keys" ]] && peer_exact=yes
    printf '%-24s %s events, %s keys; load by counter.add %ss; compact %ss: %s events/s, %s keys/s; %s %ss: %s events/s; ratio %sx; exact: counter %s, peer %s\n' \
        "compact_$tag" "$n" "$d_keys" "$t_load" "$t_c" "$(div "$n" "$t_c")" "$(div "$d_keys" "$t_c")" \
        "$peer_label" "$t_p" "$(div "$n" "$t_p")" "$(div "$t_p" "$t_c")" "$exact" "$peer_exact"
    printf '%-24s the plain INSERTs of the fold'"'"'s rows alone %ss: %sx the peer, %s of the fold\n' \
        "compact_floor_$tag" "$t_floor" "$(div "$t_p" "$t_floor")" "$(awk -v a="$t_floor" -v b="$t_c" 'BEGIN { printf "%.0f%%", (b > 0 ? 100 * a / b : 0) }')"
    record "compact_floor_$tag" 1 "$(div "$d_keys" "$t_floor")" "$d_keys" - - - \
        "keys/s of the plain INSERTs alone of the fold's totals and rollups rows (tables like them, primary-key order); ${t_floor}s; peer ${t_p}s; ratio $(div "$t_p" "$t_floor")"
    [[ $peer_exact == yes ]] || exact=no
    ((n > 1000000)) || scale_target "compaction $dist $label, counter / ${peer_label%% (*}" "$(div "$t_p" "$t_c")" ">=" 1.0
    record "compact_$tag" 1 "$(div "$n" "$t_c")" "$n" - - "$exact" \
        "events/s; keys/s $(div "$d_keys" "$t_c"); $d_keys keys; compact ${t_c}s; peer ${t_p}s ($peer_note; exact $peer_exact); ratio $(div "$t_p" "$t_c"); load ${t_load}s"

    sql "CREATE TABLE $plain (key text PRIMARY KEY, n int8);
         INSERT INTO $plain SELECT key, value FROM counter.totals WHERE counter = '$c';
         CREATE INDEX ON $plain (n DESC)" >>"$LOG" 2>&1
    sql "VACUUM ANALYZE $plain" >>"$LOG" 2>&1
    top_exact=no
    [[ $(sql "SELECT array_agg(value ORDER BY value DESC) FROM counter.top('$c', 10)") == \
        "$(sql "SELECT array_agg(n ORDER BY n DESC) FROM (SELECT n FROM $plain ORDER BY n DESC LIMIT 10) s")" ]] && top_exact=yes
    read -r tps_top tps_ptop < <(scale_pair "SELECT * FROM counter.top('$c', 10);" \
        "SELECT key, n FROM $plain ORDER BY n DESC LIMIT 10;")
    read -r tps_val tps_pval < <(scale_pair "\\set i random(1, $n)
SELECT counter.value('$c', 'k' || :i);" "\\set i random(1, $n)
SELECT n FROM $plain WHERE key = 'k' || :i;")
    printf '%-24s top(10) %s tps vs plain ORDER BY n DESC LIMIT 10 %s tps: %sx (same values: %s); value() %s tps vs plain PK %s tps: %sx (8 clients, %s keys)\n' \
        "top_value_$tag" "$tps_top" "$tps_ptop" "$(div "$tps_top" "$tps_ptop")" "$top_exact" \
        "$tps_val" "$tps_pval" "$(div "$tps_val" "$tps_pval")" "$d_keys"
    scale_target "top(10) $dist $label / indexed plain query" "$(div "$tps_top" "$tps_ptop")" ">=" 0.5
    [[ $dist != uniform ]] || scale_target "value() random keys, $label / plain PK SELECT" "$(div "$tps_val" "$tps_pval")" ">=" 0.9
    record "top_$tag" 8 "$tps_top" 0 - - "$top_exact" "plain indexed query ${tps_ptop} tps; ratio $(div "$tps_top" "$tps_ptop"); $d_keys keys"
    record "value_$tag" 8 "$tps_val" 0 - - - "plain primary-key select ${tps_pval} tps; ratio $(div "$tps_val" "$tps_pval"); random keys of $n; $d_keys exist"
    # the big tables are not needed any more (the counter's rows stay: verify_all);
    # truncated, not dropped: dropping a pipeline's source calls pg_cron's
    # unschedule, which fails for a pipeline created without a schedule
    sql "TRUNCATE $ev, $roll, $plain" >>"$LOG" 2>&1
}

# value() of one hot slots key while 64 clients add to it, against a
# primary-key SELECT of a plain one-row table under the same 64 writers;
# 8 reading clients each.
scale_hot_read() {
    local f=$SCRATCH/scripts/scale_writers.sql wpid tps_val tps_pk wout
    sql "SELECT bench_counter('scale_hot'); SELECT counter.add('scale_hot', 'k');
         CREATE TABLE scale_hot_pk (id int PRIMARY KEY, v int8); INSERT INTO scale_hot_pk VALUES (1, 1)" >>"$LOG" 2>&1
    printf '%s\n' "SELECT counter.add('scale_hot', 'k');" >"$f"
    chmod 644 "$f"
    as_pg "$PGBIN/pgbench" -n -M prepared -j 2 -c 64 -T $((2 * SCALE_ROUNDS * (DURATION + 1) + 6)) -f - \
        -h "$SCRATCH" -p "$PGPORT_SCRATCH" postgres <"$f" >"$SCRATCH/writers.out" 2>&1 &
    wpid=$!
    sleep 2
    read -r tps_val tps_pk < <(scale_pair "SELECT counter.value('scale_hot', 'k');" \
        "SELECT v FROM scale_hot_pk WHERE id = 1;")
    wait "$wpid" || true
    wout=$(pgbench_parse <"$SCRATCH/writers.out")
    cat "$SCRATCH/writers.out" >>"$LOG"
    printf '%-24s value() of a hot slots key %s tps vs PK SELECT %s tps under the same 64 writers (%s adds/s): %sx\n' \
        value_hot_64w "$tps_val" "$tps_pk" "${wout%% *}" "$(div "$tps_val" "$tps_pk")"
    scale_target "value() hot slots key, 64 writers / PK SELECT" "$(div "$tps_val" "$tps_pk")" ">=" 0.8
    record value_hot_64w 8 "$tps_val" 0 - - - "PK select ${tps_pk} tps under the same 64 writers (${wout%% *} adds/s); ratio $(div "$tps_val" "$tps_pk")"
}

# Bytes of every relation of schema counter (tables, their indexes and TOAST).
schema_bytes() {
    sql "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
          WHERE c.relnamespace = 'counter'::regnamespace AND c.relkind IN ('r', 'm', 'p')"
}

# Bytes per key of each mode with default settings (counter.create(name,
# mode => m), default rollups): 100k keys each added to once, the growth of
# schema counter's relations before compaction and after it (compact until
# nothing moves), against a plain (text PRIMARY KEY, bigint) table of the
# same keys.  Worker off, one mode at a time, so nothing else moves.
# Each mode is measured in a database of its own, as a new install with
# one counter is (the plain table is alone in its table too): among other
# counters' keys, a compaction inserts its keys in order into the middle of
# the indexes of counter.totals, where nbtree splits pages in half, which
# costs the index about twice; that cost is printed as well ("among other
# counters", measured in the scratch database after the scale counters).
# "After" is the state one round later: the events table a rotation folded
# whole is kept until no snapshot can read it, then emptied (the next
# compaction, as the worker's next round does).
# Buffered and wal keys wait in shared memory until compacted: their
# "before" is tables only (the shared memory, allocated at start for
# counter.buffered_keys, is not counted); a key that finds no room there is
# stored as an event, so the events pending after the adds are printed.
scale_bytes() {
    local plain m b0 b1 b2 t0 t1 ev mixed
    local SCRATCH_DB=postgres
    mixed=$(scale_bytes_mixed)
    sql "CREATE TABLE scale_plain100k (key text PRIMARY KEY, n int8);
         INSERT INTO scale_plain100k SELECT 'k' || i, 1 FROM generate_series(1, 100000) i" >>"$LOG" 2>&1
    plain=$(sql "SELECT pg_total_relation_size('scale_plain100k')")
    for m in slots events buffered wal; do
        SCRATCH_DB=postgres
        sql "DROP DATABASE IF EXISTS bench_bytes_$m WITH (FORCE)" >>"$LOG" 2>&1
        sql "CREATE DATABASE bench_bytes_$m" >>"$LOG" 2>&1
        SCRATCH_DB=bench_bytes_$m
        sql "CREATE EXTENSION counter;
             SELECT counter.create('bpk_$m', mode => '$m')" >>"$LOG" 2>&1
        wal_armed
        scale_worker off
        b0=$(schema_bytes)
        t0=$(sql "SELECT pg_total_relation_size('counter.totals') + pg_total_relation_size('counter.rollups')")
        sql "SELECT count(counter.add('bpk_$m', 'k' || i)) FROM generate_series(1, 100000) i" >>"$LOG" 2>&1
        b1=$(schema_bytes)
        ev=$(sql "SELECT pending_events FROM counter.stats WHERE name = 'bpk_$m'")
        scale_compact "bpk_$m" >>"$LOG"
        # and the next round's (the worker's, or any counter.compact()):
        # the events table the compaction folded whole is emptied
        sql "SELECT counter.compact()" >>"$LOG" 2>&1
        b2=$(schema_bytes)
        t1=$(sql "SELECT pg_total_relation_size('counter.totals') + pg_total_relation_size('counter.rollups')")
        [[ $(sql "SELECT sum(value) = 100000 AND count(*) = 100000 FROM counter.totals WHERE counter = 'bpk_$m'") == t ]] ||
            echo "    bpk_$m: totals after compaction are not 100000 keys of 1" >&2
        printf '%-24s %-8s 100k keys added once: %6s bytes/key before compaction (%sx the plain table; %s stored as events), %6s after (%sx; totals + rollups %s bytes/key)\n' \
            "bytes_per_key_$m" "$m" "$(((b1 - b0) / 100000))" "$(div "$((b1 - b0))" "$plain")" "$ev" \
            "$(((b2 - b0) / 100000))" "$(div "$((b2 - b0))" "$plain")" "$(((t1 - t0) / 100000))"
        # the targets are of the default settings: mode slots
        if [[ $m == slots ]]; then
            scale_target "bytes/key $m, before compaction / plain table" "$(div "$((b1 - b0))" "$plain")" "<=" 3
            scale_target "bytes/key $m, after compaction / plain table" "$(div "$((b2 - b0))" "$plain")" "<=" 2
        fi
        record "bytes_per_key_$m" 1 "$(((b1 - b0) / 100000))" 100000 - - - \
            "bytes/key before compaction; ratio $(div "$((b1 - b0))" "$plain"); after $(((b2 - b0) / 100000)) (ratio $(div "$((b2 - b0))" "$plain"); totals+rollups $(((t1 - t0) / 100000))); plain table $((plain / 100000)); $ev adds stored as events"
        scale_worker on
    done
    SCRATCH_DB=postgres
    echo "    plain (text PRIMARY KEY, bigint) table: $((plain / 100000)) bytes/key; counter.buffered_keys = $(sql "SHOW counter.buffered_keys") (shared memory, not counted above)"
    echo "    among other counters (the scratch database, 100k keys of slots counter bpk_mixed compacted): $mixed bytes/key of totals"
    record bytes_per_key_mixed 1 "$mixed" 100000 - - - "bytes/key of totals of 100k keys compacted into the scratch database's counter.totals, among the scale counters' keys"
}

# Bytes per key of totals (table and indexes) for 100k keys of a slots
# counter compacted into the scratch database, whose counter.totals holds
# the scale counters' millions of keys (named after these: the new keys go
# into the middle of its indexes).
scale_bytes_mixed() {
    local t0 t1
    sql "SELECT counter.create('bpk_mixed')" >>"$LOG" 2>&1
    t0=$(sql "SELECT pg_total_relation_size('counter.totals')")
    sql "SELECT count(counter.add('bpk_mixed', 'k' || i)) FROM generate_series(1, 100000) i" >>"$LOG" 2>&1
    scale_compact bpk_mixed >>"$LOG"
    t1=$(sql "SELECT pg_total_relation_size('counter.totals')")
    echo $(((t1 - t0) / 100000))
}

# The change feed at 1M keys: two events counters (no rollups) get one add
# on each of 1M keys, one with the feed and one without, and each is
# compacted (counter.compact() until it moves nothing) while a session
# LISTENs on the feed's channel; reports both times, their ratio, the keys
# the listener received and the ones counter.stats counts dropped (a full
# NOTIFY queue); exact when every key was either received or dropped.
scale_feed() {
    local n=${BENCH_SCALE_KEYS:-1000000} ch out=$SCRATCH/feed.out stop=$SCRATCH/feed.stop
    local listener t_on t_off got dropped exact=no
    sql "SELECT counter.create('scale_feed', mode => 'events', feed => true);
         SELECT counter.create('scale_nofeed', mode => 'events');
         SELECT counter.compact()" >>"$LOG" 2>&1
    ch=$(sql "SELECT counter.channel('scale_feed')")
    rm -f "$stop"
    (
        echo "LISTEN \"$ch\";"
        while [[ ! -e $stop ]]; do
            echo "SELECT pg_sleep(0.2);"
            sleep 0.2
        done
        echo "SELECT pg_sleep(1);"
    ) | as_pg "$PGBIN/psql" -X -q -At -h "$SCRATCH" -p "$PGPORT_SCRATCH" -d postgres >"$out" 2>&1 &
    listener=$!
    sql "SELECT count(counter.add('scale_feed', 'k' || i)) FROM generate_series(1, $n) i" >>"$LOG" 2>&1
    t_on=$(scale_compact scale_feed | tail -n 1)
    sql "SELECT counter.compact()" >>"$LOG" 2>&1
    sql "SELECT count(counter.add('scale_nofeed', 'k' || i)) FROM generate_series(1, $n) i" >>"$LOG" 2>&1
    t_off=$(scale_compact scale_nofeed | tail -n 1)
    touch "$stop"
    wait "$listener" || true
    got=$(grep -o '"key"' "$out" | wc -l)
    dropped=$(sql "SELECT feed_dropped FROM counter.stats WHERE name = 'scale_feed'")
    [[ $((got + dropped)) == "$n" && $(sql "SELECT count(*) FROM counter.totals WHERE counter = 'scale_feed'") == "$n" ]] && exact=yes
    printf '%-24s %s keys added once: compact with the feed %ss, without %ss (%sx); listener got %s keys, %s dropped (counter.stats); exact: %s\n' \
        feed_1m "$n" "$t_on" "$t_off" "$(div "$t_off" "$t_on")" "$got" "$dropped" "$exact"
    record feed_1m 1 "$(div "$n" "$t_on")" "$n" - - "$exact" \
        "keys/s compacted with the feed; without ${t_off}s; ratio $(div "$t_off" "$t_on"); listener got $got keys, $dropped dropped"
}

# The worker under load: 16 clients add for $WORKER_SECONDS to an events
# counter (default settings) on keys drawn Zipf (s = 1.1) from 1M keys, while
# a sampler reads every 0.5 s the counter's pending events, the age of its
# oldest one and the worker's count of compaction rounds; then the time to
# drain.  Reports the max pending events, the max lag and the longest gap
# between two rounds ending (the longest round, plus a naptime).
scale_lag() {
    local c=scale_lag f=$SCRATCH/scripts/scale_lag.sql samples=$SCRATCH/lag.samples stop=$SCRATCH/lag.stop
    local sampler tps tx drain sum exact=no max_pending max_lag longest naptime
    sql "SELECT counter.create('$c', mode => 'events')" >>"$LOG" 2>&1
    naptime=$(sql "SHOW counter.naptime")
    printf '%s\n' "\\set k random_zipfian(1, 1000000, 1.1)" "SELECT counter.add('$c', 'k' || :k);" >"$f"
    chmod 644 "$f"
    rm -f "$stop"
    : >"$samples"
    (
        while [[ ! -e $stop ]]; do
            sql "SELECT extract(epoch FROM clock_timestamp()), s.pending_events,
                        coalesce(extract(epoch FROM s.oldest_pending_age), 0),
                        (SELECT coalesce(sum(compactions), 0) FROM counter.worker_status())
                   FROM counter.stats s WHERE s.name = '$c'" >>"$samples" 2>/dev/null || true
            sleep 0.5
        done
    ) &
    sampler=$!
    read -r tps tx < <(pgbench_run "$f" 16 "$WORKER_SECONDS" | tee -a "$LOG" | pgbench_parse)
    drain=$(drain_seconds "$c" 120)
    touch "$stop"
    wait "$sampler" || true
    sum=$(sql "SELECT coalesce(sum(value), 0) FROM counter.totals WHERE counter = '$c'")
    [[ $drain != ">120" && $sum == "$tx" && $tx -gt 0 ]] && exact=yes
    read -r max_pending max_lag longest < <(awk -F'|' '
        { if ($2 > mp) mp = $2; if ($3 > ml) ml = $3
          if (NR == 1 || $4 != last) { if (NR > 1 && $1 - at > lg) lg = $1 - at; at = $1; last = $4 } }
        END { printf "%d %.2f %.1f\n", mp, ml, lg }' "$samples")
    printf '%-24s 16 clients, %ss, zipfian over 1M keys: %s adds/s; max pending %s events, max lag %ss, longest round <= %ss (naptime %s); drained %ss after; exact: %s\n' \
        worker_lag_1m "$WORKER_SECONDS" "$tps" "$max_pending" "$max_lag" "$longest" "$naptime" "$drain" "$exact"
    record worker_lag_1m 16 "$tps" "$tx" - - "$exact" \
        "max_pending=$max_pending; max_lag_s=$max_lag; longest_round_s<=$longest; naptime $naptime; drain_s=$drain; $(wc -l <"$samples") samples"
}

# One statement of 1M adds (BENCH_SCALE_KEYS) over 1,000 keys of a slots
# counter, of 1M adds with as many idempotency keys (then the first 1,000
# again: skipped), and of 1M likes by as many members of 1,000 posts: adds
# per second, and each exact after compaction.  A key added to many times in
# one transaction (1.4): its slot row is written once, the rest are events,
# so the slots table grows by pages per key, not by a page per 17 adds.
scale_shapes() {
    local n=${BENCH_SCALE_KEYS:-1000000} t b0 b1 label
    label=$(awk -v n="$n" 'BEGIN { print (n >= 1000000 ? n / 1000000 "m" : n / 1000 "k") }')
    sql "SELECT counter.create('scale_rep'); SELECT counter.create('scale_idem', mode => 'events');
         SELECT counter.create('scale_likes', members => true)" >>"$LOG" 2>&1
    b0=$(sql "SELECT pg_relation_size('counter.slots')")
    t=$(timed_sql "SELECT count(counter.add('scale_rep', 'k' || (i % 1000))) FROM generate_series(1, $n) i" | tail -n 1)
    b1=$(sql "SELECT pg_relation_size('counter.slots')")
    shape_report "shape_one_xact_$label" "$n" "$t" scale_rep \
        "SELECT sum(value) = $n AND count(*) = 1000 FROM counter.totals WHERE counter = 'scale_rep'" \
        "adds over 1000 slots keys in one statement; slots table +$(((b1 - b0) / 1024)) kB"
    t=$(timed_sql "SELECT count(counter.add('scale_idem', 'k' || (i % 1000), 1, idempotency_key => 'i' || i)) FROM generate_series(1, $n) i" | tail -n 1)
    sql "SELECT count(counter.add('scale_idem', 'k' || (i % 1000), 1, idempotency_key => 'i' || i)) FROM generate_series(1, 1000) i" >>"$LOG" 2>&1
    shape_report "shape_idempotency_$label" "$n" "$t" scale_idem \
        "SELECT (SELECT sum(value) FROM counter.totals WHERE counter = 'scale_idem') = $n
            AND (SELECT count(*) FROM counter.idempotency WHERE counter = 'scale_idem') = $n" \
        "adds with as many idempotency keys in one statement; the first 1000 again: skipped"
    t=$(timed_sql "SELECT count(counter.\"like\"('scale_likes', 'p' || (i % 1000), 'u' || i)) FROM generate_series(1, $n) i" | tail -n 1)
    shape_report "shape_likes_$label" "$n" "$t" scale_likes \
        "SELECT (SELECT sum(counter.value('scale_likes', 'p' || i)) FROM generate_series(0, 999) i) = $n
            AND (SELECT count(*) FROM counter.members('scale_likes', 'p7', $n)) = $((n / 1000))" \
        "likes by as many members of 1000 posts in one statement"
}

# shape_report NAME N SECONDS COUNTER CHECK WHAT: compact COUNTER, then
# print and record N adds in SECONDS, exact when SQL CHECK is true.
shape_report() {
    local exact=no
    scale_compact "$4" >>"$LOG"
    [[ $(sql "$5") == t ]] && exact=yes
    printf '%-24s %s %s: %ss, %s/s; exact: %s\n' "$1" "$2" "$6" "$3" "$(div "$2" "$3")" "$exact"
    record "$1" 1 "$(div "$2" "$3")" "$2" - - "$exact" "per second: $6"
}

# The scale section: compaction, top() and value() at 1M keys (uniform and
# Zipf; 10M too with BENCH_SCALE_10M=1) against pg_incremental and plain
# tables, the change feed's cost at 1M keys, three transaction shapes at
# 1M (scale_shapes), value() of a hot slots key
# under 64 writers, bytes per key of each mode, and the worker under a 60 s
# zipfian load over 1M keys.
scale() {
    local n=${BENCH_SCALE_KEYS:-1000000} sizes dist size line
    selected scale || return 0
    SCALE_TARGETS=()
    sizes=$n
    [[ ${BENCH_SCALE_10M:-0} == 0 ]] || sizes="$n $((10 * n))"
    PEER=0
    if peer_available; then
        sql "CREATE EXTENSION pg_incremental CASCADE" >>"$LOG" 2>&1 && PEER=1
    fi
    echo "== scale: compaction/top/value at $sizes keys (uniform, zipf), hot read under writers, bytes per key, worker lag =="
    ((PEER)) || echo "    pg_incremental: not installed (not in Debian; test/bench/pg_incremental.sh SRCDIR installs it): its rows fold by hand"
    scale_worker off
    # the reads are measured among another counter's buffered entries, as
    # in a cluster where a buffered counter is in use (its entries stay in
    # shared memory after their flush)
    sql "SELECT bench_counter('scale_other_buffered', 'buffered');
         SELECT count(counter.add('scale_other_buffered', 'b' || i)) FROM generate_series(1, 20000) i" >>"$LOG" 2>&1
    for size in $sizes; do
        for dist in uniform zipf; do
            scale_keyspace "$size" "$dist"
        done
    done
    scale_feed
    scale_shapes
    scale_worker on
    scale_hot_read
    scale_bytes
    scale_lag
    echo "scale targets (issue 12; storage: slots is the default mode):"
    for line in "${SCALE_TARGETS[@]}"; do
        echo "$line"
    done
}

# Every counter's rollups must agree with its values (counter.verify drift 0).
verify_all() {
    local out
    out=$(sql "SELECT l.name || ' ' || v.granularity || ' ' || v.drift
                 FROM counter.list() l, counter.verify(l.name) v WHERE v.drift <> 0" 2>&1) || out="error: $out"
    echo "### counter.verify drift: ${out:-none}" >>"$LOG"
    if [[ -n $out ]]; then
        echo "counter.verify reports drift: $out" >&2
        record verify_drift 0 0 0 - - no "$(tr '\n' ';' <<<"$out")"
    fi
}

# --- report -------------------------------------------------------------------

# Turn $RAW into the CSV (ratios to floor, hot_update, insert and select1 at
# the same client count; NAME_async rows compare with the _async baselines)
# and print it as a table.
report() {
    awk -F'\t' -v secs="$DURATION" '
        function ratio(base,  b) {
            if ($1 ~ /_async$/ && (base "_async", $2) in tps) base = base "_async"
            b = tps[base, $2]
            return (b > 0 && $3 > 0 && $1 != "compact_backlog" ? sprintf("%.2f", $3 / b) : "-")
        }
        NR == FNR { if (!(($1, $2) in tps)) tps[$1, $2] = $3; next }
        FNR == 1 { print "workload,clients,seconds,tps,transactions,p50_ms,p99_ms,vs_floor,vs_hot_update,vs_insert,vs_select1,exact,note" }
        { gsub(/,/, ";", $8)
          printf "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n", $1, $2, secs, $3, $4, $5, $6,
                 ratio("floor"), ratio("hot_update"), ratio("insert"), ratio("select1"), $7, $8 }
    ' "$RAW" "$RAW" >"$CSV"
    echo
    awk -F, 'NR == 1 { $4 = sprintf("%11s", $4) } NR > 1 { $4 = sprintf("%11.1f", $4) }
             { printf "%-24s %7s %s %8s %8s %8s %8s %8s %8s  %-11s %s\n", $1, $2, $4, $6, $7, $8, $9, $10, $11, $12, $13 }' "$CSV"
    echo "(p50/p99: nearest rank over pgbench -l per-transaction times; pgbench stamps time once per"
    echo " pass of its event loop, so transactions faster than ~0.1 ms may log as 0.  Redis: redis-benchmark's.)"
    echo
}

# PNG bar chart (log scale) of tps per workload at the largest client count.
chart() {
    local data=$SCRATCH/chart.dat
    if ! command -v gnuplot >/dev/null; then
        echo "(gnuplot not installed: no PNG; install gnuplot-nox)"
        PNG=
        return 0
    fi
    # name tps colour: baselines grey, counter blue, Redis red
    awk -F'\t' -v c="$MAX_CLIENTS" '
        $2 == c && $3 > 0 {
            col = ($1 ~ /^redis/) ? 3 : ($1 ~ /^(add|value|top|bounded|worker)/) ? 2 : 1
            printf "\"%s\" %s %d\n", $1, $3, col
        }' "$RAW" >"$data"
    if [[ ! -s $data ]]; then
        echo "(no results at $MAX_CLIENTS clients: no PNG)"
        PNG=
        return 0
    fi
    if ! gnuplot >>"$LOG" 2>&1 <<EOF; then
set terminal pngcairo size 1400,750 noenhanced font ",10"
set output '$PNG'
set title "counter bench $STAMP: transactions/s at $MAX_CLIENTS clients (log scale; grey: baselines, blue: counter, red: Redis INCR)"
set logscale y
set yrange [1:*]
set grid ytics
set ylabel "tps"
set style fill solid 0.85 border -1
set boxwidth 0.75
set xtics rotate by -50 scale 0
set bmargin 11
set rmargin 10
set linetype 1 lc rgb "#888888"
set linetype 2 lc rgb "#2a6fbb"
set linetype 3 lc rgb "#cc3333"
plot '$data' using 0:2:3:xtic(1) with boxes lc variable notitle, \
     '' using 0:2:(sprintf("%.0f", \$2)) with labels offset 0,0.7 font ",8" notitle
EOF
        echo "(gnuplot failed: no PNG; see $LOG)"
        PNG=
    fi
}

# tps of workload $1 at $2 clients ("" if not run or 0).
tps_of() {
    awk -F'\t' -v n="$1" -v c="$2" '$1 == n && $2 == c && $3 > 0 { print $3; exit }' "$RAW"
}

# target LABEL MEASURED REQUIRED [UNIT]: print one target line.  MEASURED
# empty: n/a.  Ratios are printed with 2 decimals, absolute values as integers.
target() {
    local label=$1 measured=$2 required=$3 unit=${4:-x}
    if [[ -z $measured ]]; then
        printf '  %-62s %12s   (need >= %s%s)  n/a\n' "$label" "-" "$required" "$unit"
        return
    fi
    awk -v l="$label" -v m="$measured" -v r="$required" -v u="$unit" 'BEGIN {
        fmt = (u == "x") ? "%.2f" : "%.0f"
        printf "  %-62s %12s   (need >= %s%s)  %s\n", l, sprintf(fmt, m) u, r, u, (m >= r ? "met" : "NOT met") }'
}

# ratio A B: A / B, empty if either is empty.
ratio() {
    [[ -n $1 && -n $2 ]] || return 0
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.6f", a / b }'
}

# The ratios the project is judged on, at the largest client count.
targets() {
    local c=$MAX_CLIENTS best best_name s mode r redis
    local floor hot ins sel pk ups slots events buffered
    floor=$(tps_of floor "$c") hot=$(tps_of hot_update "$c") ins=$(tps_of insert "$c")
    sel=$(tps_of select1 "$c") pk=$(tps_of pk_select "$c") ups=$(tps_of slotted_upsert "$c")
    slots=$(tps_of add_slots_hot "$c") buffered=$(tps_of add_buffered_hot "$c")
    best=$slots best_name=slots
    for mode in events wal; do
        r=$(tps_of "add_${mode}_hot" "$c")
        if [[ -n $r ]] && { [[ -z $best ]] || awk -v a="$r" -v b="$best" 'BEGIN { exit !(a > b) }'; }; then
            best=$r best_name=$mode
        fi
    done
    redis=$(tps_of redis_incr_aof_everysec "$c")
    [[ -n $redis ]] || redis=$(tps_of redis_incr_aof_everysec 64)
    echo "targets (at $c clients; durable = fsync + synchronous_commit on):"
    target "durable add, best mode ($best_name), hot key / floor" "$(ratio "$best" "$floor")" 0.9
    target "durable add, best mode ($best_name), hot key / hot UPDATE" "$(ratio "$best" "$hot")" 7
    target "durable add, best mode ($best_name), hot key / slotted upsert" "$(ratio "$best" "$ups")" 1.2
    for mode in slots events wal; do
        r=$(tps_of "add_${mode}_hot" "$c")
        target "add ($mode), hot key / hot UPDATE" "$(ratio "$r" "$hot")" 5
        target "add ($mode), hot key / INSERT" "$(ratio "$r" "$ins")" 0.6
        target "add ($mode), hot key / floor" "$(ratio "$r" "$floor")" 0.9
    done
    for mode in slots events wal; do
        target "value ($mode), hot key / PK SELECT" "$(ratio "$(tps_of "value_${mode}_hot" "$c")" "$pk")" 0.8
    done
    s=$(tps_of add_many_100 "$c")
    target "add_many(100), events mode, increments/s" "$([[ -z $s ]] || awk -v t="$s" 'BEGIN { print t * 100 }')" 100000 " inc/s"
    s=$(tps_of add_many_100_wal "$c")
    target "add_many(100), wal mode (durable), increments/s (stretch 1M)" "$([[ -z $s ]] || awk -v t="$s" 'BEGIN { print t * 100 }')" 1000000 " inc/s"
    s=$(tps_of add_many_100_buffered "$c")
    target "add_many(100), buffered mode, increments/s (stretch 1M)" "$([[ -z $s ]] || awk -v t="$s" 'BEGIN { print t * 100 }')" 1000000 " inc/s"
    target "buffered add, hot key / SELECT 1" "$(ratio "$buffered" "$sel")" 0.8
    target "buffered add, hot key / Redis INCR appendfsync everysec" "$(ratio "$buffered" "$redis")" 1
    target "bounded add (+1/-1) / unbounded slots add, hot key" "$(ratio "$(tps_of bounded_pm1 "$c")" "$slots")" 0.5
    if [[ -n ${WORKER_BOUNDED:-} ]]; then
        printf '  %-62s %12s   (max pending %s events, max lag %ss)  %s\n' \
            "worker: events pending bounded under $WORKER_CLIENTS-client zipfian load" "$WORKER_BOUNDED" \
            "$WORKER_MAX_PENDING" "$WORKER_MAX_LAG" "$([[ $WORKER_BOUNDED == yes ]] && echo met || echo "NOT met")"
    else
        printf '  %-62s %12s   (max pending, max lag)  n/a\n' "worker: events pending bounded" "-"
    fi
    target "compaction events/s" "$(tps_of compact_backlog 1)" 1000000 " ev/s"
    s=$(awk -F'\t' '$1 == "add_buffered_hot" && $3 == 0 { print $7 ": " $8; exit }' "$RAW")
    [[ -z $s ]] || echo "  (buffered add: $s)"
}

# Wait (up to 30 s) for the worker to arm wal mode once a wal counter exists:
# until then wal adds are stored as events, which would measure events mode.
wal_armed() {
    local i
    [[ $(sql "SELECT count(*) FROM counter.counters WHERE mode = 'wal'") != 0 ]] || return 0
    for ((i = 0; i < 300; i++)); do
        [[ $(sql "SELECT start_lsn IS NOT NULL FROM counter.wal_state") == t ]] && return 0
        sleep 0.1
    done
    echo "bench: wal mode was not armed after 30 s; wal rows measure events mode" >&2
}

# --- main ---------------------------------------------------------------------

# EXIT: stop Redis, keep the server log, drop the cluster.
cleanup() {
    redis_stop
    if [[ -n ${SCRATCH:-} && -f $SCRATCH/server.log ]]; then
        cp "$SCRATCH/server.log" "$SERVER_LOG" 2>/dev/null || true
        if grep -qE 'PANIC|terminated by signal' "$SERVER_LOG"; then
            echo "bench: the server log has a crash: $SERVER_LOG" >&2
        fi
    fi
    cluster_stop
}

# Start the cluster, run every section, report.
main() {
    local clients i name names round started=$SECONDS preload
    mkdir -p "$RESULTS"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    # max_wal_size: no checkpoint forced by WAL volume in the middle of a run
    # (each run starts after a CHECKPOINT)
    # pg_cron (pg_incremental's scheduler) must be preloaded for the scale
    # section's peer; only when that section runs and pg_cron is installed
    preload=()
    if selected scale && [[ -f $("$PG_CONFIG" --pkglibdir)/pg_cron.so ]]; then
        preload=("shared_preload_libraries = 'counter,pg_cron'")
    fi
    cluster_start "max_connections = 200" "shared_buffers = 512MB" "fsync = on" \
        "synchronous_commit = on" "counter.naptime = '100ms'" "max_wal_size = '8GB'" "${preload[@]}"
    RAW=$SCRATCH/raw
    : >"$RAW"
    as_pg mkdir -p "$SCRATCH/logs"
    mkdir -p "$SCRATCH/scripts"
    cp "$BENCH_DIR"/*.sql "$SCRATCH/scripts/"
    chmod -R a+rX "$SCRATCH/scripts"
    {
        echo "# bench $STAMP: ${DURATION}s per run, $ROUNDS round(s), clients: $CLIENTS," \
            "worker run ${WORKER_SECONDS}s, $(nproc) CPUs${ONLY:+, only: $ONLY}"
        sql "SELECT version()"
    } | tee "$LOG"
    sql "CREATE EXTENSION counter"
    sql "$HELPERS"
    setup_workloads
    wal_armed

    read -ra names <<<"${ASYNC// /_async }_async"
    for ((round = 1; round <= ROUNDS; round++)); do
        ((ROUNDS == 1)) || echo "== round $round of $ROUNDS =="
        ! selected_any "${NAMES[@]}" || echo "== durable (fsync on, synchronous_commit on) =="
        for clients in $CLIENTS; do
            for i in "${!NAMES[@]}"; do
                run_workload "$i" "$clients"
            done
        done
        ! selected_any "${names[@]}" || echo "== synchronous_commit = off, $MAX_CLIENTS clients =="
        for name in $ASYNC; do
            run_workload "${INDEX[$name]}" "$MAX_CLIENTS" async
        done
    done
    collapse_rounds
    ! selected_any redis_incr redis_incr_aof_everysec || echo "== Redis INCR (redis-benchmark, -n $REDIS_REQUESTS) =="
    redis_section
    ! selected_any worker_events_zipf ||
        echo "== worker: events mode, $WORKER_CLIENTS clients, 10k zipfian keys, ${WORKER_SECONDS}s =="
    worker_lag
    ! selected_any compact_backlog || echo "== compaction of a $BACKLOG_EVENTS-event backlog (worker off) =="
    compaction
    scale
    verify_all

    report
    chart
    cp "$CSV" "$RESULTS/latest.csv"
    if [[ -n $PNG ]]; then
        cp "$PNG" "$RESULTS/latest.png"
    fi
    targets
    echo
    echo "CSV: $CSV"
    echo "PNG: ${PNG:-none}"
    echo "pgbench output: $LOG"
    echo "bench took $((SECONDS - started))s"
    if awk -F'\t' '$7 == "timeout" { t = 1 } END { exit !t }' "$RAW"; then
        echo "bench: some runs had calls still running ${GRACE}s after their end (cancelled; see the table)" >&2
    fi
    if awk -F'\t' '$7 !~ /^(yes|-|unavailable|timeout)$/ { bad = 1 } END { exit !bad }' "$RAW"; then
        echo "bench: some runs failed or were not exact (see $LOG)" >&2
        return 1
    fi
}

main "$@"
