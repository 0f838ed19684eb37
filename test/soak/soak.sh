#!/usr/bin/env bash
# Proves that under a long mixed load (64 pgbench clients, every mode, mode switches, cancels, compact()
# in transaction blocks) every committed add counts exactly once, nothing rolled back counts, and memory stays bounded.
#
# make soak: one scratch cluster (preloaded, naptime 100ms), one counter per
# mode (slots, events, buffered, wal), a bounded slots counter (min 0), a
# membership counter, and s_switch, whose mode a loop switches every
# SOAK_SWITCH_EVERY seconds.  64 pgbench clients run a weighted mix of the
# scripts in test/soak/ for SOAK_SECONDS; every add inserts a row into the
# plain table ledger (or mledger for likes) in the same transaction, so the
# committed adds equal the ledger sums exactly.  Meanwhile a loop starts
# psql sessions that add in every mode, write the ledger and sleep, and
# cancels them (57014: add and ledger row roll back together).
# At the end: value() of every key against the ledger (before and after a
# final compact), counter.verify() drift 0, top(10) against the ledger,
# membership against mledger, no unexpected error in the server log, the
# load ran, and the RSS / memory contexts of the worker and of pgbench's
# backends did not grow beyond a bound.  Prints a figures table and, as its
# last line, "N passed, M failed"; exits non-zero on any failure.  Expects
# the extension to be installed (test/setup.sh soak does that first).
#   SOAK_SECONDS       length of the load (default 600)
#   SOAK_CLIENTS       pgbench clients (default 64)
#   SOAK_KEYS          keyspace k1..kN of the add scripts (default 100000)
#   SOAK_SWITCH_EVERY  seconds between two mode switches of s_switch (default 3)
#   SOAK_MIX           pgbench scripts and weights (default: the mix below)
#   SOAK_COMPACT_CLIENTS  clients of the second pgbench, running compact() in transaction blocks (default 2)
#   SOAK_LOGS          directory that keeps the logs (default a new /tmp/counter-soak.XXXXXX)
set -euo pipefail

SOAK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/setup.sh
source "$SOAK_DIR/../setup.sh"

DURATION=${SOAK_SECONDS:-600}
CLIENTS=${SOAK_CLIENTS:-64}
KEYS=${SOAK_KEYS:-100000}
SWITCH_EVERY=${SOAK_SWITCH_EVERY:-3}
LOGS=${SOAK_LOGS:-$(mktemp -d /tmp/counter-soak.XXXXXX)}
# Memory bound: a sample at the end may be at most GROWTH_FACTOR x the one
# taken after the warm-up plus GROWTH_SLACK_MB.  Caches (catalog, plans,
# the backend-local buffered hash) and allocator fragmentation still grow
# after a warm-up of 15 s, by a few MB; a leak per add or per compaction
# round (millions of each in 10 minutes) grows far beyond the bound.
GROWTH_FACTOR=2
GROWTH_SLACK_MB=50
# Unbounded counters fed by add.sql (one script per counter) and add_many.sql.
ADD_COUNTERS="s_slots s_events s_buffered s_wal s_switch"
# pgbench scripts and weights of the main load.
MIX=${SOAK_MIX:-"add_s_slots@10 add_s_events@10 add_s_buffered@10 add_s_wal@10 add_s_switch@10 bounded@8 add_many@5
     reads@5 members@8"}
# The compact() shapes run in a second pgbench of their own, with few
# clients: one compaction runs per database at a time and takes seconds
# under this load, so in the main mix the clients queue behind it until
# nearly all of them wait (measured: 36 tps instead of 665).
COMPACT_MIX="compact@2 compact_rollback@1"
COMPACT_CLIENTS=${SOAK_COMPACT_CLIENTS:-2}
SWITCH_MODES=(events buffered wal slots)
VICTIM_APP=soak_victim

PASSED=0
FAILED=0
RETRIES=0
LOOP_PIDS=()
FIGURES=()

# check NAME OK DETAIL: count one check (OK is "yes" or anything else) and print it.
check() {
    if [[ $2 == yes ]]; then
        PASSED=$((PASSED + 1))
        printf '  ok      %-58s %s\n' "$1" "$3"
    else
        FAILED=$((FAILED + 1))
        printf '  FAILED  %-58s %s\n' "$1" "$3"
    fi
}

# figure LABEL VALUE: remember one line of the figures table.
figure() {
    FIGURES+=("$(printf '  %-44s %s' "$1" "$2")")
}

# Print the seconds since the load started (integer).
elapsed() {
    echo $((SECONDS - LOAD_START))
}

# --- set-up -------------------------------------------------------------------

# Create the ledgers and the counters, wait until wal mode is armed.
setup_counters() {
    local i
    sql "CREATE EXTENSION counter;
         CREATE TABLE ledger (counter text NOT NULL, key text NOT NULL, delta int8 NOT NULL);
         CREATE TABLE mledger (key text NOT NULL, member text NOT NULL, delta int8 NOT NULL);
         SELECT counter.create('s_slots', rollups => '{1 hour,1 day}');
         SELECT counter.create('s_events', rollups => '{1 hour,1 day}', mode => 'events');
         SELECT counter.create('s_buffered', rollups => '{1 hour,1 day}', mode => 'buffered');
         SELECT counter.create('s_wal', rollups => '{1 hour,1 day}', mode => 'wal');
         SELECT counter.create('s_bounded', rollups => '{1 hour,1 day}', min => 0);
         SELECT counter.create('s_members', rollups => '{1 hour,1 day}', members => true);
         SELECT counter.create('s_switch', rollups => '{1 hour,1 day}');" >/dev/null
    for ((i = 0; i < 300; i++)); do
        [[ $(sql "SELECT start_lsn IS NOT NULL FROM counter.wal_state") == t ]] && break
        sleep 0.1
    done
    WAL_ARMED=$(sql "SELECT start_lsn IS NOT NULL FROM counter.wal_state")
}

# Copy the scripts where postgres can read them: add.sql once per counter.
setup_scripts() {
    local c
    mkdir -p "$SCRATCH/scripts"
    cp "$SOAK_DIR"/*.sql "$SCRATCH/scripts/"
    for c in $ADD_COUNTERS; do
        sed "s/@COUNTER@/$c/g" "$SOAK_DIR/add.sql" >"$SCRATCH/scripts/add_$c.sql"
    done
    rm "$SCRATCH/scripts/add.sql"
    chmod -R a+rX "$SCRATCH/scripts"
}

# --- load ---------------------------------------------------------------------

# pgbench_start TAG CLIENTS MIX: run pgbench with a weighted mix in the
# background (output in $LOGS/TAG.out, pid in PGBENCH_PIDS[TAG], its
# sessions' application_name pgbench_TAG).  -T lets
# running transactions finish; timeout(1) bounds a hung run.
pgbench_start() {
    local item args=()
    for item in $3; do
        args+=(-f "$SCRATCH/scripts/${item%@*}.sql@${item#*@}")
    done
    as_pg env PGAPPNAME="pgbench_$1" timeout -s INT $((DURATION + 120)) "$PGBIN/pgbench" -n -M prepared -j 2 -c "$2" -T "$DURATION" \
        --max-tries=5 --failures-detailed -D keys="$KEYS" -h "$SCRATCH" -p "$PGPORT_SCRATCH" "${args[@]}" postgres \
        >"$LOGS/$1.out" 2>&1 &
    PGBENCH_PIDS[$1]=$!
}

# Switch the mode of s_switch every $SWITCH_EVERY s until the deadline;
# "switch ok|failed MODE" lines go to $LOGS/switch.log.
switch_loop() {
    local n=0 mode
    while ((SECONDS < DEADLINE)) && [[ ! -e $STOP ]]; do
        sleep "$SWITCH_EVERY"
        mode=${SWITCH_MODES[n % ${#SWITCH_MODES[@]}]}
        if sql "SELECT counter.alter('s_switch', mode => '$mode')" >>"$LOGS/switch.log" 2>&1; then
            echo "switch ok $mode" >>"$LOGS/switch.log"
        else
            echo "switch failed $mode" >>"$LOGS/switch.log"
        fi
        n=$((n + 1))
    done
}

# One victim: a transaction that adds 1000 on k1 in every unbounded mode
# (ledger rows included), likes p1 for member "victim", takes 1 of bounded
# k1, then sleeps until cancelled.  Its stderr (with SQLSTATE) is in FILE.
victim() {
    local c q="BEGIN;"
    for c in $ADD_COUNTERS; do
        q+="SELECT counter.add('$c', 'k1', 1000); INSERT INTO ledger VALUES ('$c', 'k1', 1000);"
    done
    q+="INSERT INTO mledger SELECT 'p1', 'victim', 1 WHERE counter.\"like\"('s_members', 'p1', 'victim');
        INSERT INTO ledger SELECT 's_bounded', 'k1', 1 WHERE counter.try_add('s_bounded', 'k1', 1) IS NOT NULL;
        SELECT pg_sleep(20); COMMIT;"
    as_pg env PGAPPNAME="$VICTIM_APP" "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose \
        -h "$SCRATCH" -p "$PGPORT_SCRATCH" -d postgres -c "$q" >"$1" 2>&1
}

# Until the deadline: start a victim, wait until it sleeps, cancel it after
# 0-0.5 s with pg_cancel_backend, wait for it.  "cancel ok|missed|..." lines
# go to $LOGS/cancel.log.
cancel_loop() {
    local n=0 vpid pid i rc out
    while ((SECONDS < DEADLINE - 5)) && [[ ! -e $STOP ]]; do
        n=$((n + 1))
        out=$LOGS/victim-$n.out
        victim "$out" &
        vpid=$!
        pid=
        for ((i = 0; i < 300; i++)); do
            sleep 0.1
            pid=$(sql "SELECT pid FROM pg_stat_activity
                        WHERE application_name = '$VICTIM_APP' AND wait_event = 'PgSleep'" 2>/dev/null || true)
            [[ -z $pid ]] || break
        done
        if [[ -n $pid ]]; then
            sleep "0.$((RANDOM % 5))"
            sql "SELECT pg_cancel_backend($pid)" >/dev/null 2>&1 || true
        fi
        rc=0
        wait "$vpid" || rc=$?
        if [[ -z $pid && $rc == 0 ]]; then
            # its adds took longer than the wait under load, then it slept
            # uncancelled and committed, ledger rows and all: counted as such
            echo "cancel late $n (victim committed before it was seen sleeping)" >>"$LOGS/cancel.log"
        elif [[ -z $pid ]]; then
            echo "cancel none $n (victim never slept; rc $rc)" >>"$LOGS/cancel.log"
        elif ((rc != 0)) && grep -q '57014' "$out"; then
            echo "cancel ok $n" >>"$LOGS/cancel.log"
            rm -f "$out"
        else
            echo "cancel missed $n (rc $rc; see $out)" >>"$LOGS/cancel.log"
        fi
        sleep 1
    done
}

# Start a bash function in the background and remember its pid.
start_loop() {
    "$@" &
    LOOP_PIDS+=($!)
}

# --- memory -------------------------------------------------------------------

# Print "VmRSS RssAnon" of process $1 in kB ("- -" if gone).
rss_of() {
    awk '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } END { print (r == "" ? "-" : r), (a == "" ? "-" : a) }' \
        "/proc/$1/status" 2>/dev/null || echo "- -"
}

# Ask the processes $@ to log their memory contexts and print, per pid, the
# bytes of the "Grand total" line each logged after the request ("-" if none within 10 s).
context_totals() {
    local pid lines i total
    lines=$(wc -l <"$SCRATCH/server.log")
    # one session for all requests: under this load a psql start takes seconds
    sql "SELECT pg_log_backend_memory_contexts(p) FROM unnest('{$(IFS=,; echo "$*")}'::int[]) p" >/dev/null 2>&1 || true
    for pid in "$@"; do
        total=-
        for ((i = 0; i < 100; i++)); do
            total=$(tail -n +"$((lines + 1))" "$SCRATCH/server.log" |
                awk -v p="[$pid]" 'index($0, p) && /Grand total: [0-9]+ bytes/ {
                        sub(/.*Grand total: /, ""); t = $1 } END { print (t == "" ? "-" : t) }')
            [[ $total == - ]] || break
            sleep 0.1
        done
        echo "$total"
    done
}

# Sample memory (TAG start|end): RSS and memory contexts of the worker and
# of $MEM_BACKENDS.  Sets RSS_<TAG>[pid]
# and CTX_<TAG>[pid].
memory_sample() {
    local tag=$1 pid totals i
    local -a pids=("$WORKER_PID" "${MEM_BACKENDS[@]}")
    local -n rss=RSS_$tag ctx=CTX_$tag
    for pid in "${pids[@]}"; do
        rss[$pid]=$(rss_of "$pid")
    done
    mapfile -t totals < <(context_totals "${pids[@]}")
    for i in "${!pids[@]}"; do
        ctx[${pids[i]}]=${totals[i]}
    done
    echo "memory at $(elapsed)s ($tag): $(for i in "${pids[@]}"; do printf '%s rss=%s ctx=%s; ' "$i" "${rss[$i]}" "${ctx[$i]:--}"; done)"
}

# Pick the worker of this database and three backends of the main load for
# the memory samples (not the compact ones: a sample in the middle of a
# compaction measures that statement's executor memory, not a leak).
memory_pick() {
    WORKER_PID=$(sql "SELECT pid FROM counter.worker_status() WHERE database = current_database()")
    mapfile -t MEM_BACKENDS < <(sql "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench_load'
                                      ORDER BY backend_start, pid LIMIT 3")
    [[ -n $WORKER_PID && ${#MEM_BACKENDS[@]} -gt 0 ]] ||
        die "no worker or no pgbench backend to sample after the warm-up (worker '${WORKER_PID}', backends ${#MEM_BACKENDS[@]})"
}

# within_bound START END: true if END <= GROWTH_FACTOR * START + GROWTH_SLACK_MB (kB or bytes given as $3).
within_bound() {
    local unit=$3
    [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ ]] || return 1
    awk -v s="$1" -v e="$2" -v f="$GROWTH_FACTOR" -v m="$GROWTH_SLACK_MB" -v u="$unit" \
        'BEGIN { exit !(e <= f * s + m * 1024 * (u == "bytes" ? 1024 : 1)) }'
}

# MB with one decimal of a number of kB or bytes ($2).
mb() {
    [[ $1 =~ ^[0-9]+$ ]] || { echo "$1"; return; }
    awk -v v="$1" -v u="${2:-kB}" 'BEGIN { printf "%.1f", v / (u == "bytes" ? 1048576 : 1024) }'
}

# Check and report the memory samples.
memory_checks() {
    local pid role vs va ve ae cs ce
    for pid in "$WORKER_PID" "${MEM_BACKENDS[@]}"; do
        role=backend
        [[ $pid != "$WORKER_PID" ]] || role=worker
        read -r vs va <<<"${RSS_start[$pid]}"
        read -r ve ae <<<"${RSS_end[$pid]}"
        figure "RSS $role $pid (VmRSS / RssAnon MB)" "$(mb "$vs") / $(mb "$va") -> $(mb "$ve") / $(mb "$ae")"
        within_bound "$va" "$ae" kB && ok=yes || ok=no
        check "$role $pid private RSS (RssAnon) within ${GROWTH_FACTOR}x + ${GROWTH_SLACK_MB} MB" "$ok" \
            "$(mb "$va") -> $(mb "$ae") MB"
        cs=${CTX_start[$pid]} ce=${CTX_end[$pid]}
        figure "memory contexts $role $pid (Grand total MB)" "$(mb "$cs" bytes) -> $(mb "$ce" bytes)"
        within_bound "$cs" "$ce" bytes && ok=yes || ok=no
        check "$role $pid memory contexts within ${GROWTH_FACTOR}x + ${GROWTH_SLACK_MB} MB" "$ok" \
            "$(mb "$cs" bytes) -> $(mb "$ce" bytes) MB"
    done
}

# --- final checks -------------------------------------------------------------

# Check every key k1..k$KEYS (and every ledger key) of every ledger counter
# against the ledger: value per key and the sum over keys.  $1 labels the check.
check_exact() {
    local label=$1 c out bad vsum lsum
    for c in $ADD_COUNTERS s_bounded; do
        out=$(sql "WITH l AS (SELECT key, sum(delta) AS s FROM ledger WHERE counter = '$c' GROUP BY key),
                        v AS (SELECT * FROM counter.values('$c', ARRAY(
                                  SELECT 'k' || i FROM generate_series(1, $KEYS) i
                                  UNION SELECT key FROM l)))
                   SELECT count(*) FILTER (WHERE v.value IS DISTINCT FROM coalesce(l.s, 0)),
                          coalesce(sum(v.value), 0), coalesce(sum(l.s), 0)
                     FROM v LEFT JOIN l USING (key)" 2>&1) || out="error $out"
        IFS='|' read -r bad vsum lsum <<<"$out"
        [[ $bad == 0 && $vsum == "$lsum" ]] && ok=yes || ok=no
        check "$label: $c value = ledger, every key" "$ok" "keys differing $bad; sum $vsum, ledger $lsum"
        if [[ $ok != yes ]]; then
            sql "WITH l AS (SELECT key, sum(delta) AS s FROM ledger WHERE counter = '$c' GROUP BY key)
                 SELECT 'key ' || v.key || ': value ' || v.value || ', ledger ' || coalesce(l.s, 0)
                   FROM counter.values('$c', ARRAY(SELECT 'k' || i FROM generate_series(1, $KEYS) i
                                                   UNION SELECT key FROM l)) v LEFT JOIN l USING (key)
                  WHERE v.value IS DISTINCT FROM coalesce(l.s, 0) ORDER BY v.key LIMIT 10" 2>&1 | sed 's/^/          /' || true
        fi
        [[ $label != final ]] || figure "$c: ledger sum / value sum" "$lsum / $vsum"
    done
}

# Membership: value = number of members = ledger, per key; is_member and
# members() agree with the ledger's state of every (key, member).
check_members() {
    local out bad_state bad_value bad_member bad_list members
    out=$(sql "WITH st AS (SELECT key, member, sum(delta) AS s FROM mledger GROUP BY key, member),
                    ks AS (SELECT 'p' || i AS key FROM generate_series(1, 1000) i UNION SELECT key FROM st),
                    mem AS (SELECT ks.key, m FROM ks, counter.members('s_members', ks.key, 1000000) m),
                    per AS (SELECT ks.key, counter.value('s_members', ks.key) AS v,
                                   (SELECT count(*) FROM mem WHERE mem.key = ks.key) AS n,
                                   (SELECT coalesce(sum(s), 0) FROM st WHERE st.key = ks.key) AS l
                              FROM ks)
               SELECT (SELECT count(*) FROM st WHERE s NOT IN (0, 1)),
                      (SELECT count(*) FROM per WHERE v <> n OR v <> l),
                      (SELECT count(*) FROM st WHERE counter.is_member('s_members', key, member) <> (s = 1)),
                      (SELECT count(*) FROM (SELECT key, member FROM st WHERE s = 1) a
                                  FULL JOIN mem b ON a.key = b.key AND a.member = b.m
                        WHERE a.key IS NULL OR b.key IS NULL),
                      (SELECT count(*) FROM mem)" 2>&1) || out="error $out"
    IFS='|' read -r bad_state bad_value bad_member bad_list members <<<"$out"
    [[ $bad_state == 0 ]] && ok=yes || ok=no
    check "members: every (key, member) liked at most once net" "$ok" "pairs with net not 0/1: $bad_state"
    [[ $bad_value == 0 ]] && ok=yes || ok=no
    check "members: value = count(members) = ledger, every key" "$ok" "keys differing: $bad_value"
    [[ $bad_member == 0 ]] && ok=yes || ok=no
    check "members: is_member = ledger state, every pair" "$ok" "pairs differing: $bad_member"
    [[ $bad_list == 0 ]] && ok=yes || ok=no
    check "members: members() = the ledger's members" "$ok" "pairs differing: $bad_list; $members members"
    figure "s_members: members at the end" "$members"
}

# top(10) of every ledger counter against the ledger's 10 largest (ties by key, byte order).
check_top() {
    local c got want
    for c in $ADD_COUNTERS s_bounded; do
        got=$(sql "SELECT string_agg(key || '=' || value, ' ') FROM counter.top('$c', 10)" 2>&1) || got="error $got"
        want=$(sql "SELECT string_agg(key || '=' || s, ' ') FROM (
                      SELECT key, sum(delta) AS s FROM ledger WHERE counter = '$c' GROUP BY key
                       ORDER BY 2 DESC, key COLLATE \"C\" LIMIT 10) t" 2>&1) || want="error $want"
        [[ $got == "$want" ]] && ok=yes || ok=no
        check "top(10) of $c = ledger's top 10" "$ok" "$(cut -c1-60 <<<"$got")"
        [[ $ok == yes ]] || echo "          top: $got; ledger: $want"
        if [[ $ok != yes && $(sed -E 's/[^ =]+=//g' <<<"$got") == "$(sed -E 's/[^ =]+=//g' <<<"$want")" ]]; then
            echo "          (same values: the keys differ only among keys of equal value, not in byte order)"
        fi
    done
}

# counter.verify: drift 0 for every counter and granularity.
check_verify() {
    local out
    out=$(sql "SELECT string_agg(l.name || ' ' || v.granularity || ' drift ' || v.drift, '; ')
                 FROM counter.list() l, counter.verify(l.name) v WHERE v.drift <> 0" 2>&1) || out="error: $out"
    [[ -z $out ]] && ok=yes || ok=no
    check "counter.verify drift 0, every counter" "$ok" "${out:-no drift}"
}

# Wait (up to 60 s) until nothing is left pending: events, slot rows with a
# value, unflushed buffered and wal adds.  Prints what is left.
wait_drained() {
    local i left
    for ((i = 0; i < 600; i++)); do
        left=$(sql "SELECT coalesce(sum(pending_events), 0) + coalesce(sum(abs(buffered_unflushed)), 0)
                      FROM counter.stats") || left=error
        [[ $left != 0 ]] || break
        sleep 0.1
    done
    echo "$left"
}

# The server log: only the expected errors (57014 of the victims, 40001 of
# pgbench's retried or failed transactions), no FATAL/PANIC/crash, no
# warning.  Sets ERR_57014 and ERR_40001, and ERR_40001_LATE: those logged
# after the load's end (LOAD_END), which pgbench neither retries nor
# counts once its time is up.
check_log() {
    local log=$SCRATCH/server.log unexpected serial='\] 40001 pgbench_(load|compact) ERROR: ' serials
    ERR_57014=$(grep -cE "\] 57014 $VICTIM_APP ERROR:  canceling statement due to user request" "$log" || true)
    serials=$(grep -E "$serial" "$log" || true)
    ERR_40001=$(grep -c . <<<"$serials" || true)
    ERR_40001_LATE=$(awk -v end="$LOAD_END" '($1 " " $2) >= end' <<<"$serials" | grep -c . || true)
    unexpected=$(grep -E '(ERROR|FATAL|PANIC|WARNING):|terminated by signal|was terminated' "$log" |
        grep -vE "\] 57014 $VICTIM_APP ERROR:  canceling statement due to user request" |
        grep -vE "$serial" || true)
    [[ -z $unexpected ]] && ok=yes || ok=no
    check "server log: no error but 57014 (victims) and 40001 (pgbench)" "$ok" \
        "57014: $ERR_57014, 40001: $ERR_40001, other: $(grep -c . <<<"$unexpected" || true)"
    [[ -z $unexpected ]] || { sort <<<"$unexpected" | sed -E 's/^[^]]*\] //' | sort | uniq -c | sort -rn | head -n 20; }
}

# check_pgbench TAG CLIENTS MIX: exit status 0, every script of MIX ran
# transactions; totals and per-script tps into the figures.  Adds the
# retries (40001 errors) to RETRIES.
check_pgbench() {
    local tag=$1 out=$LOGS/$1.out rc=${PGBENCH_RCS[$1]} tps tx failed retried retries scripts n name
    read -r tps tx < <(pgbench_parse <"$out")
    failed=$(awk '/^number of failed transactions:/ { print $5 }' "$out")
    retried=$(awk '/^number of transactions retried:/ { print $5 }' "$out")
    retries=$(awk '/^total number of retries:/ { print $5 }' "$out")
    RETRIES=$((RETRIES + ${retries:-0} + ${failed:-0}))
    [[ $rc == 0 ]] && ok=yes || ok=no
    check "pgbench $tag: exit status 0" "$ok" "status $rc"
    [[ $ok == yes ]] || tail -n 20 "$out" | sed 's/^/          /'
    # "SQL script N: PATH" then " - W transactions (P% of total, tps = T)"
    scripts=$(awk '/^SQL script [0-9]+:/ { name = $4; sub(/.*\//, "", name); sub(/\.sql$/, "", name) }
                   /^ - [0-9]+ transactions \(/ && name != "" { t = $0; sub(/.*tps = /, "", t); sub(/\).*/, "", t)
                                                               print name, $2, t; name = "" }' "$out")
    n=$(grep -c . <<<"$scripts" || true)
    [[ $n == $(wc -w <<<"$3") ]] && ! awk '$2 == 0 { z = 1 } END { exit !z }' <<<"$scripts" && ok=yes || ok=no
    check "pgbench $tag: every script processed > 0 transactions" "$ok" "$n scripts; $tx transactions in all"
    figure "pgbench $tag: clients, seconds" "$2, $DURATION"
    figure "pgbench $tag: transactions, tps" "$tx, $tps"
    figure "pgbench $tag: retried, retries, failed" "${retried:-0}, ${retries:-0}, ${failed:-0}"
    while read -r name n tps; do
        [[ -n $name ]] || continue
        figure "  script $name: transactions, tps" "$n, $tps"
    done <<<"$scripts"
}

# --- main ---------------------------------------------------------------------

# EXIT: stop the loops and pgbench, keep the logs, drop the cluster.
cleanup() {
    local pid
    touch "${STOP:-/dev/null}" 2>/dev/null || true
    for pid in "${LOOP_PIDS[@]}" "${PGBENCH_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    if [[ -n ${SCRATCH:-} && -f $SCRATCH/server.log ]]; then
        cp "$SCRATCH/server.log" "$LOGS/server.log" 2>/dev/null || true
    fi
    cluster_stop
}

# Set up, run the load with the loops, sample memory, check, report.
main() {
    local warmup end_sample tag pid switches switch_failed cancels missed none left ok moved
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    declare -gA RSS_start=() RSS_end=() CTX_start=() CTX_end=() PGBENCH_PIDS=() PGBENCH_RCS=()
    # max_wal_size: no checkpoint forced by WAL volume every few seconds
    cluster_start "max_connections = 200" "shared_buffers = 256MB" "counter.naptime = '100ms'" \
        "max_wal_size = '4GB'" "lc_messages = 'C'" "log_line_prefix = '%m [%p] %e %a '"
    STOP=$SCRATCH/stop
    echo "soak: ${DURATION}s, $CLIENTS clients, keys k1..k$KEYS, logs in $LOGS"
    setup_counters
    check "wal mode armed (counter.wal_state.start_lsn set)" "$([[ $WAL_ARMED == t ]] && echo yes || echo no)" ""
    setup_scripts

    warmup=15
    ((DURATION >= 60)) || warmup=$((DURATION / 4))
    # the end sample well before pgbench ends, so its backends are still there
    end_sample=$((DURATION - (DURATION >= 120 ? 30 : 5)))
    LOAD_START=$SECONDS
    DEADLINE=$((SECONDS + DURATION))
    # the load's end in the server log's time (log_line_prefix %m)
    LOAD_END=$(sql "SELECT to_char((clock_timestamp() + interval '$DURATION seconds')
                                     AT TIME ZONE current_setting('log_timezone'), 'YYYY-MM-DD HH24:MI:SS.MS')")
    pgbench_start load "$CLIENTS" "$MIX"
    pgbench_start compact "$COMPACT_CLIENTS" "$COMPACT_MIX"
    start_loop switch_loop
    start_loop cancel_loop

    sleep "$warmup"
    memory_pick
    memory_sample start
    while (($(elapsed) < end_sample)); do
        sleep 1
    done
    memory_sample end

    for tag in load compact; do
        PGBENCH_RCS[$tag]=0
        wait "${PGBENCH_PIDS[$tag]}" || PGBENCH_RCS[$tag]=$?
        unset "PGBENCH_PIDS[$tag]"
    done
    touch "$STOP"
    for pid in "${LOOP_PIDS[@]}"; do
        wait "$pid" || true
    done
    LOOP_PIDS=()
    echo "load done after $(elapsed)s"

    echo "checks:"
    check_pgbench load "$CLIENTS" "$MIX"
    check_pgbench compact "$COMPACT_CLIENTS" "$COMPACT_MIX"
    switches=$(grep -c '^switch ok' "$LOGS/switch.log" 2>/dev/null || true)
    switch_failed=$(grep -c '^switch failed' "$LOGS/switch.log" 2>/dev/null || true)
    ((switches > 0 && switch_failed == 0)) && ok=yes || ok=no
    check "mode switches of s_switch ran, none failed" "$ok" "$switches switches, $switch_failed failed"
    cancels=$(grep -c '^cancel ok' "$LOGS/cancel.log" 2>/dev/null || true)
    missed=$(grep -c '^cancel missed' "$LOGS/cancel.log" 2>/dev/null || true)
    none=$(grep -c '^cancel none' "$LOGS/cancel.log" 2>/dev/null || true)
    ((cancels > 0 && missed == 0 && none == 0)) && ok=yes || ok=no
    check "cancel loop: victims cancelled with 57014" "$ok" "$cancels cancelled, $missed missed, $none never slept"

    check_exact live
    # bounded: a compaction stuck behind a lock fails the check, not the script
    moved=$(as_pg env PGOPTIONS="-c statement_timeout=600s" "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
        -h "$SCRATCH" -p "$PGPORT_SCRATCH" -d postgres -c "SELECT counter.compact()" -c "SELECT counter.compact()" 2>&1 |
        tail -n 1) || moved="error: $moved"
    left=$(wait_drained)
    [[ $left == 0 && $moved =~ ^[0-9]+$ ]] && ok=yes || ok=no
    check "drained after compact(): no pending event or unflushed add" "$ok" "left $left; second compact moved $moved"
    check_exact final
    check_top
    check_members
    check_verify
    ok=no
    [[ -z $WORKER_PID || $(sql "SELECT pid FROM counter.worker_status() WHERE database = current_database()") != "$WORKER_PID" ]] ||
        ok=yes
    check "worker alive, same pid as at the start" "$ok" "pid ${WORKER_PID:-none}"
    memory_checks
    check_log
    ((ERR_57014 == cancels)) && ok=yes || ok=no
    check "57014 in the log = victims cancelled" "$ok" "$ERR_57014 logged, $cancels cancelled"
    ((ERR_40001 >= RETRIES && ERR_40001 - RETRIES <= ERR_40001_LATE)) && ok=yes || ok=no
    check "40001 in the log = pgbench retries + failures (+ those after the load's end)" "$ok" \
        "$ERR_40001 logged ($ERR_40001_LATE after the end), $RETRIES retried or failed"

    figure "keys (k1..k$KEYS) / ledger rows" "$KEYS / $(sql "SELECT count(*) FROM ledger")"
    figure "adds committed (ledger rows, + mledger)" "$(sql "SELECT count(*) FROM ledger") + $(sql "SELECT count(*) FROM mledger")"
    figure "bounded: try_add applied / transactions" "$(sql "SELECT count(*) FROM ledger WHERE counter = 's_bounded'") / $(awk \
        '/^SQL script [0-9]+:.*bounded.sql/ { f = 1; next } f && /transactions \(/ { print $2; exit }' "$LOGS/load.out")"
    figure "mode switches / cancels (57014)" "$switches / $cancels"
    figure "expected errors in the log" "57014: $ERR_57014, 40001: $ERR_40001"
    figure "s_switch mode at the end" "$(sql "SELECT mode FROM counter.list() WHERE name = 's_switch'")"
    echo
    echo "figures:"
    printf '%s\n' "${FIGURES[@]}"
    echo "logs: $LOGS"
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0))
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
