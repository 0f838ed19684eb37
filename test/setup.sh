#!/usr/bin/env bash
# Build/test harness for the counter extension.
#   test/setup.sh deps    install missing Debian packages (as root)
#   test/setup.sh test    build, install, run regress + isolation + TAP suites
#   test/setup.sh demo    scratch cluster + pgbench: counter.add vs hot-row UPDATE
#   test/setup.sh bench   build, install, run test/bench/bench.sh
# Servers and test suites run as the unprivileged user "postgres" when invoked
# as root.  Sourcing this file (as test/bench/bench.sh does) only defines the
# helpers below.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_USER=postgres
# clang and libclang-rt-14-dev (libFuzzer, ASan, UBSan runtimes; only a
# Recommends of clang-14) build test/fuzz, which make test runs briefly.
REQUIRED_PKGS=(make gcc postgresql-15 postgresql-server-dev-15 postgresql-contrib libipc-run-perl clang libclang-rt-14-dev)
BENCH_PKGS=(gnuplot-nox redis-server)
# The likes example's tests (examples/likes/test/run.sh): Node.js and npm,
# a browser, the pooler and the exporter they drive; best effort.
EXAMPLE_PKGS=(nodejs npm chromium pgbouncer prometheus-postgres-exporter curl)
FIRST_PORT=5490
# The PostgreSQL to build against and test with (also read by the Makefile).
export PG_CONFIG=${PG_CONFIG:-pg_config}

# Print a message to stderr and exit non-zero.
die() {
    echo "setup.sh: error: $*" >&2
    exit 1
}

# Run a command as the unprivileged database user (directly if not root).
as_pg() {
    if ((EUID == 0)); then
        runuser -u "$PG_USER" -- "$@"
    else
        "$@"
    fi
}

# Print those of the given packages that dpkg does not list as installed.
missing_pkgs() {
    local pkg
    for pkg in "$@"; do
        [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null) == ii* ]] || echo "$pkg"
    done
}

# Install missing required packages (fatal) and optional ones given as args (best effort).
install_deps() {
    local missing optional pkg
    mapfile -t missing < <(missing_pkgs "${REQUIRED_PKGS[@]}")
    mapfile -t optional < <(missing_pkgs "$@")
    ((${#missing[@]} + ${#optional[@]})) || return 0
    if ((EUID != 0)); then
        ((${#missing[@]} == 0)) || die "missing packages: ${missing[*]} (run 'make deps' as root)"
        echo "setup.sh: optional packages not installed (need root): ${optional[*]}" >&2
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null
    if ((${#missing[@]})); then
        apt-get install -y -q "${missing[@]}" </dev/null
    fi
    for pkg in "${optional[@]}"; do
        apt-get install -y -q "$pkg" </dev/null || echo "setup.sh: optional package $pkg not installed" >&2
    done
}

# Build and install the extension into the PostgreSQL found via $PG_CONFIG.
build_install() {
    make -C "$ROOT"
    make -C "$ROOT" install
}

# --- scratch clusters (demo, bench) -------------------------------------------

# Print the first TCP port from $FIRST_PORT upward that nothing listens on
# (probed by connecting with bash's /dev/tcp; needs neither ss nor a server).
free_port() {
    local port=$FIRST_PORT
    while (: <>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || (: <>"/dev/tcp/::1/$port") 2>/dev/null; do
        port=$((port + 1))
    done
    echo "$port"
}

# Create and start a scratch cluster in a fresh dir; extra args are postgresql.conf lines.
# Sets SCRATCH (the dir, also the socket dir), PGPORT_SCRATCH and PGBIN.
# shellcheck disable=SC2120  # the demo needs no extra settings, bench.sh does
cluster_start() {
    PGBIN=$("$PG_CONFIG" --bindir)
    SCRATCH=$(mktemp -d /tmp/counter-cluster.XXXXXX)
    chmod 755 "$SCRATCH"
    ((EUID != 0)) || chown "$PG_USER:" "$SCRATCH"
    PGPORT_SCRATCH=$(free_port)
    as_pg "$PGBIN/initdb" -D "$SCRATCH/data" -U postgres -A trust -N >"$SCRATCH/initdb.log" 2>&1 ||
        { cat "$SCRATCH/initdb.log"; die "initdb failed"; }
    printf '%s\n' "port = $PGPORT_SCRATCH" "unix_socket_directories = '$SCRATCH'" \
        "shared_preload_libraries = 'counter'" "$@" | as_pg tee -a "$SCRATCH/data/postgresql.conf" >/dev/null
    if ! as_pg "$PGBIN/pg_ctl" -D "$SCRATCH/data" -l "$SCRATCH/server.log" -w start >/dev/null; then
        tail -n 30 "$SCRATCH/server.log" >&2
        die "could not start scratch cluster"
    fi
    echo "scratch cluster: $SCRATCH (port $PGPORT_SCRATCH)"
}

# Stop and delete the scratch cluster, if any (EXIT trap).
cluster_stop() {
    [[ -n ${SCRATCH:-} ]] || return 0
    as_pg "$PGBIN/pg_ctl" -D "$SCRATCH/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$SCRATCH"
    SCRATCH=
}

# Run SQL in the scratch cluster (database $SCRATCH_DB, default postgres);
# prints unaligned tuples-only output, fails on error.
sql() {
    as_pg "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SCRATCH" -p "$PGPORT_SCRATCH" -d "${SCRATCH_DB:-postgres}" -c "$1"
}

# Run SQL and print the result as a psql table (for humans).
sql_table() {
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SCRATCH" -p "$PGPORT_SCRATCH" -d postgres -c "$1"
}

# pgbench SCRIPT CLIENTS SECONDS: run a custom script against the scratch cluster.
# The script is fed on stdin ("-f -") so postgres need not be able to read it.
pgbench_run() {
    as_pg "$PGBIN/pgbench" -n -M prepared -j 2 -c "$2" -T "$3" -f - \
        -h "$SCRATCH" -p "$PGPORT_SCRATCH" postgres <"$1" 2>&1
}

# Print "TPS TRANSACTIONS" from pgbench output on stdin ("0 0" if absent).
pgbench_parse() {
    awk '/^tps = / { tps = $3 }
         /^number of transactions actually processed:/ { split($NF, n, "/"); tx = n[1] }
         END { printf "%s %s\n", (tps == "" ? 0 : tps), (tx == "" ? 0 : tx) }'
}

# --- test ---------------------------------------------------------------------

# Print "PASSED FAILED" from pg_regress/pg_isolation_regress output FILE, given make's exit RC.
count_pg_regress() {
    awk -v rc="$2" '
        match($0, /All [0-9]+ tests passed/) { split(substr($0, RSTART, RLENGTH), w, " "); p += w[2] }
        match($0, /[0-9]+ of [0-9]+ tests failed/) { split(substr($0, RSTART, RLENGTH), w, " "); f += w[1]; p += w[3] - w[1] }
        END { if (rc != 0 && f == 0) f = 1; print p + 0, f + 0 }' "$1"
}

# Print "PASSED FAILED" (assertions) from prove output FILE, given make's exit RC.
# A test file that dies or exits non-zero counts as at least one failure.
count_tap() {
    awk -v rc="$2" '
        /^Files=[0-9]+, Tests=[0-9]+/ { split($2, t, /[=,]/); total = t[2] }
        /\(Wstat: [0-9]+.* Failed: [0-9]+\)/ {
            match($0, /Wstat: [0-9]+/); wstat = substr($0, RSTART + 7, RLENGTH - 7)
            match($0, /Failed: [0-9]+\)/); n = substr($0, RSTART + 8, RLENGTH - 9)
            asserts += n
            f += (n == 0 && wstat != 0) ? 1 : n
        }
        END { if (rc != 0 && f == 0) f = 1; print total - asserts, f + 0 }' "$1"
}

# Run one suite (NAME COUNTER MAKE-ARGS...) via "make installcheck" in $CHECK_DIR as postgres;
# appends "NAME ran PASSED FAILED" to $CHECK_DIR/summary.
run_suite() {
    local name=$1 counter=$2 out="$CHECK_DIR/$1.out" rc=0
    shift 2
    echo "=== $name ===" | tee -a "$LOG"
    as_pg make -C "$CHECK_DIR" installcheck "$@" </dev/null 2>&1 | tee -a "$LOG" "$out" || rc=$?
    echo "$name ran $("$counter" "$out" "$rc")" >>"$CHECK_DIR/summary"
}

# Run a script suite (NAME SCRIPT ARGS...) whose last line is "N passed, M failed";
# appends "NAME ran PASSED FAILED" to $CHECK_DIR/summary (a crash counts as a failure).
run_script_suite() {
    local name=$1 out="$CHECK_DIR/$1.out" rc=0 counts p f
    shift
    echo "=== $name ===" | tee -a "$LOG"
    "$@" </dev/null 2>&1 | tee -a "$LOG" "$out" || rc=$?
    counts=$(awk '/^[0-9]+ passed, [0-9]+ failed$/ { p = $1; f = $3 } END { print p + 0, f + 0 }' "$out")
    read -r p f <<<"$counts"
    ((rc == 0 || f > 0)) || f=1
    echo "$name ran $p $f" >>"$CHECK_DIR/summary"
}

# Print the details of the suites that failed: regression diffs, TAP log tails.
show_failures() {
    local f
    for f in "$CHECK_DIR/regression.diffs" "$CHECK_DIR/output_iso/regression.diffs"; do
        [[ -s $f ]] || continue
        echo "=== ${f#"$CHECK_DIR"/} ==="
        cat "$f"
    done
    if awk '$1 == "tap" && $4 > 0 { found = 1 } END { exit !found }' "$CHECK_DIR/summary"; then
        for f in "$CHECK_DIR"/tmp_check/log/*; do
            [[ -f $f ]] || continue
            echo "=== tail ${f#"$CHECK_DIR"/} ==="
            tail -n 40 "$f"
        done
    fi
    echo "(full output: $LOG; test tree kept in $CHECK_DIR)"
}

# Build, install, run all suites as postgres in a copy of the tree, print the summary.
cmd_test() {
    LOG="$ROOT/check.log"
    : >"$LOG"
    CHECK_DIR=$(mktemp -d /tmp/counter-check.XXXXXX)
    tar -C "$ROOT" --exclude=./.git --exclude=./check.log --exclude=./results --exclude=./output_iso \
        --exclude='./tmp_check*' --exclude=./log -cf - . | tar -C "$CHECK_DIR" -xf -
    ((EUID != 0)) || chown -R "$PG_USER:" "$CHECK_DIR"

    local build=ok rc=0
    echo "=== build ===" | tee -a "$LOG"
    build_install 2>&1 | tee -a "$LOG" || rc=$?
    ((rc == 0)) || build=FAILED

    # One suite per line: name, test files, result counter, and the make args
    # that switch off the other two suites (so one failing never skips the rest).
    local suite files counter args
    while read -r suite files counter args; do
        if ! compgen -G "$ROOT/$files" >/dev/null; then
            echo "$suite none 0 0" >>"$CHECK_DIR/summary"
        elif [[ $build == ok ]]; then
            # shellcheck disable=SC2086  # $args is several words on purpose
            run_suite "$suite" "$counter" $args
        else
            echo "$suite not-run 0 1" >>"$CHECK_DIR/summary"
        fi
    done <<'SUITES'
regress    sql/*.sql          count_pg_regress  ISOLATION= TAP_TESTS=
isolation  test/specs/*.spec  count_pg_regress  REGRESS= TAP_TESTS=
tap        test/t/*.pl        count_tap         REGRESS= ISOLATION=
SUITES
    # Suites that are scripts of their own: each prints "N passed, M failed"
    # as its last line (test/fuzz/run.sh: property and fuzz tests of the type;
    # test/layering.sh: no include or call cycle between source files;
    # examples/likes/test/run.sh: the likes service, skipped without Node.js).
    local name script
    while read -r name script; do
        [[ -x $ROOT/$script ]] || continue
        run_script_suite "$name" "$ROOT/$script" short
    done <<'SCRIPTS'
fuzz       test/fuzz/run.sh
layering   test/layering.sh
likes      examples/likes/test/run.sh
SCRIPTS
    # A failed build already counts once per suite it kept from running.
    if [[ $build != ok ]]; then
        echo "build FAILED 0 $(grep -q not-run "$CHECK_DIR/summary" && echo 0 || echo 1)" >>"$CHECK_DIR/summary"
    fi

    local passed failed
    read -r passed failed < <(awk '{ p += $3; f += $4 } END { print p + 0, f + 0 }' "$CHECK_DIR/summary")
    ((failed == 0)) || show_failures
    {
        echo "=== summary ==="
        awk '$2 == "ran"     { printf "%-10s %d passed, %d failed\n", $1, $3, $4 }
             $2 == "none"    { printf "%-10s no tests\n", $1 }
             $2 == "not-run" { printf "%-10s not run (build failed)\n", $1 }
             $2 == "FAILED"  { printf "%-10s FAILED\n", $1 }' "$CHECK_DIR/summary"
        echo "$passed passed, $failed failed"
    } | tee -a "$LOG"
    if ((failed > 0)); then
        return 1
    fi
    rm -rf "$CHECK_DIR"
}

# --- demo ---------------------------------------------------------------------

# Compare counter.add against a hot-row UPDATE on a scratch cluster and check exactness.
cmd_demo() {
    local secs=${DEMO_SECONDS:-10} clients=16 out tps_c tx_c tps_h tx_h value n exact=yes
    trap cluster_stop EXIT
    trap 'exit 130' INT TERM
    cluster_start
    sql "CREATE EXTENSION counter;
         SELECT counter.create('likes', mode => 'wal');
         SELECT counter.create('views', mode => 'events');
         CREATE TABLE hot (id int PRIMARY KEY, n bigint);
         INSERT INTO hot VALUES (1, 0);" >/dev/null
    # wal-mode adds go through the WAL once the worker has armed the database
    for ((n = 0; n < 100; n++)); do
        [[ $(sql "SELECT start_lsn IS NOT NULL FROM counter.wal_state") == t ]] && break
        sleep 0.1
    done
    echo "SELECT counter.add('likes', 'post-1');" >"$SCRATCH/demo_add.sql"
    echo "UPDATE hot SET n = n + 1 WHERE id = 1;" >"$SCRATCH/demo_hot.sql"

    echo "pgbench: counter.add('likes', 'post-1'), $clients clients, ${secs}s ..."
    out=$(pgbench_run "$SCRATCH/demo_add.sql" "$clients" "$secs") || { echo "$out"; die "pgbench failed"; }
    read -r tps_c tx_c < <(pgbench_parse <<<"$out")
    echo "pgbench: hot-row UPDATE, $clients clients, ${secs}s ..."
    out=$(pgbench_run "$SCRATCH/demo_hot.sql" "$clients" "$secs") || { echo "$out"; die "pgbench failed"; }
    read -r tps_h tx_h < <(pgbench_parse <<<"$out")

    value=$(sql "SELECT counter.value('likes', 'post-1')")
    n=$(sql "SELECT n FROM hot WHERE id = 1")
    [[ $value == "$tx_c" && $n == "$tx_h" ]] || exact=no
    echo
    printf '%-16s %14s tps %12s transactions\n' counter.add "$tps_c" "$tx_c" "hot-row UPDATE" "$tps_h" "$tx_h"
    awk -v a="$tps_c" -v b="$tps_h" 'BEGIN { printf "ratio counter.add / hot-row UPDATE: %.2fx\n", (b > 0 ? a / b : 0) }'
    echo "counter.value('likes','post-1') = $value, pgbench transactions = $tx_c"
    echo "hot.n = $n, pgbench transactions = $tx_h"

    # a crash (immediate stop: no shutdown checkpoint, shared memory lost)
    # loses no acknowledged add: the worker replays the unflushed ones
    sql "SELECT counter.add('likes', 'post-1', 1000000)" >/dev/null
    as_pg "$PGBIN/pg_ctl" -D "$SCRATCH/data" -m immediate stop >/dev/null
    as_pg "$PGBIN/pg_ctl" -D "$SCRATCH/data" -l "$SCRATCH/server.log" -w start >/dev/null ||
        die "could not restart the scratch cluster"
    value=$(sql "SELECT counter.value('likes', 'post-1')")
    echo "after a crash (pg_ctl stop -m immediate) and restart, with one more add of 1000000:"
    echo "counter.value('likes','post-1') = $value, expected $((tx_c + 1000000))"
    [[ $value == $((tx_c + 1000000)) ]] || exact=no
    echo "exact: $exact"
    echo
    sql_table "SELECT * FROM counter.list();"
    sql_table "SELECT * FROM counter.stats;" 2>&1 || echo "(counter.stats not available yet)"
    [[ $exact == yes ]]
}

# --- main ---------------------------------------------------------------------

# Dispatch the subcommand (no "a && b" chains: they switch off set -e inside a).
main() {
    case ${1:-} in
    deps) install_deps ;;
    test)
        install_deps "${EXAMPLE_PKGS[@]}"
        cmd_test
        ;;
    demo)
        install_deps
        build_install
        cmd_demo
        ;;
    bench)
        install_deps "${BENCH_PKGS[@]}"
        build_install
        "$ROOT/test/bench/bench.sh"
        ;;
    soak)
        install_deps
        build_install
        "$ROOT/test/soak/soak.sh"
        ;;
    fuzz)
        install_deps clang
        "$ROOT/test/fuzz/run.sh" long
        ;;
    *)
        echo "usage: $0 {deps|test|demo|bench|soak|fuzz}" >&2
        exit 2
        ;;
    esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
