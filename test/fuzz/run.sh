#!/usr/bin/env bash
# Proves that the input functions of counter.sharded_counter and the decoder
# of its stored values (versions 1 and 2) reject every malformed input
# cleanly (a documented SQLSTATE, no sanitizer report) and round-trip every
# accepted one, by fuzzing them with libFuzzer.
#   test/fuzz/run.sh short   (make test)  about 20 s of fuzzing
#   test/fuzz/run.sh long    (make fuzz)  FUZZ_SECONDS in total (default 600)
# Builds src/type.c itself with test/fuzz/shim.c (the backend symbols it
# needs) and fuzz_sc.c into three targets, fuzz_text (sharded_counter_in),
# fuzz_binary (sharded_counter_recv) and fuzz_stored (a stored value read by
# sharded_counter_from_datum), with clang -fsanitize=fuzzer,address,
# undefined, in a temporary directory (never in the source tree).  Tests:
# the build; per target, a replay of the seed corpus (corpus/text,
# corpus/binary, corpus/stored: version 1 seeds are little-endian) and a
# bounded fuzzing run with a fresh corpus in the temporary directory.  A
# build failure, a missing clang or libFuzzer, and any crash (sanitizer report, abort() of a violated check, leak, timeout)
# count as failed.  Prints executions and crashes per target and, as its
# last line, "N passed, M failed".  After a failure the temporary directory
# (crash artifacts, logs) is kept and its path printed.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODE=${1:-short}
PG_CONFIG=${PG_CONFIG:-pg_config}
CC=${FUZZ_CC:-clang}
TARGETS=(text binary stored)
PASSED=0
FAILED=0

case $MODE in
short) TOTAL=20 ;;
long) TOTAL=${FUZZ_SECONDS:-600} ;;
*)
    echo "usage: $0 {short|long}" >&2
    exit 2
    ;;
esac
PER_TARGET=$((TOTAL / ${#TARGETS[@]}))
((PER_TARGET > 0)) || PER_TARGET=1

WORK=$(mktemp -d /tmp/counter-fuzz.XXXXXX)

# Record one test result: NAME ok|FAILED [note].
result() {
    local name=$1 status=$2
    shift 2
    printf '%-22s %s%s\n' "$name" "$status" "${*:+ ($*)}"
    if [[ $status == ok ]]; then
        PASSED=$((PASSED + 1))
    else
        FAILED=$((FAILED + 1))
    fi
}

# Print the summary line; keep the work directory if anything failed.
finish() {
    if ((FAILED > 0)); then
        echo "fuzz: work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    echo "$PASSED passed, $FAILED failed"
}

# Build both targets into $WORK; returns non-zero on any failure.
build() {
    local inc cflags t def
    inc=$("$PG_CONFIG" --includedir-server) || return 1
    command -v "$CC" >/dev/null || { echo "fuzz: $CC not found (install clang libclang-rt-14-dev)"; return 1; }
    cflags=(-g -O1 -Wall -Werror -Wno-ignored-attributes -fno-sanitize-recover=all
        -I"$inc" -I"$ROOT/src" -I"$HERE")
    "$CC" "${cflags[@]}" -fsanitize=fuzzer-no-link,address,undefined \
        -c "$ROOT/src/type.c" -o "$WORK/type.o" || return 1
    "$CC" "${cflags[@]}" -fsanitize=address,undefined -c "$HERE/shim.c" -o "$WORK/shim.o" || return 1
    for t in "${TARGETS[@]}"; do
        def=()
        [[ $t == binary ]] && def=(-DSC_FUZZ_BINARY)
        [[ $t == stored ]] && def=(-DSC_FUZZ_STORED)
        "$CC" "${cflags[@]}" "${def[@]}" -fsanitize=fuzzer,address,undefined \
            "$HERE/fuzz_sc.c" "$WORK/type.o" "$WORK/shim.o" -o "$WORK/fuzz_$t" || {
            echo "fuzz: linking fuzz_$t failed (is libFuzzer, package libclang-rt-14-dev, installed?)"
            return 1
        }
    done
}

# Print the number of crash artifacts libFuzzer left with prefix $1.
artifacts() {
    compgen -G "$1*" | wc -l
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "fuzz: mode $MODE, ${PER_TARGET}s per target, work directory $WORK"
if build >"$WORK/build.log" 2>&1; then
    result build ok
else
    cat "$WORK/build.log"
    result build FAILED
    for t in "${TARGETS[@]}"; do
        result "seeds_$t" FAILED "not built"
        result "fuzz_$t" FAILED "not built"
    done
    finish
    exit 1
fi

for t in "${TARGETS[@]}"; do
    bin=$WORK/fuzz_$t
    opts=(-max_len=4096 -timeout=10 -rss_limit_mb=2048)
    [[ $t == text ]] && opts+=(-dict="$HERE/text.dict")

    # every seed once: valid ones pass all checks, invalid ones are rejected cleanly
    mkdir -p "$WORK/art_seeds_$t"
    if "$bin" "${opts[@]}" -artifact_prefix="$WORK/art_seeds_$t/" "$HERE/corpus/$t"/* \
        >"$WORK/seeds_$t.log" 2>&1; then
        result "seeds_$t" ok "$(find "$HERE/corpus/$t" -type f | wc -l) seeds"
    else
        tail -n 40 "$WORK/seeds_$t.log"
        result "seeds_$t" FAILED "see $WORK/seeds_$t.log"
    fi

    # bounded fuzzing from the seeds; new inputs go to a corpus in $WORK
    mkdir -p "$WORK/corpus_$t" "$WORK/art_$t"
    rc=0
    "$bin" "${opts[@]}" -max_total_time="$PER_TARGET" -print_final_stats=1 \
        -artifact_prefix="$WORK/art_$t/" "$WORK/corpus_$t" "$HERE/corpus/$t" \
        >"$WORK/fuzz_$t.log" 2>&1 || rc=$?
    execs=$(awk '/^stat::number_of_executed_units:/ { print $2 }' "$WORK/fuzz_$t.log")
    crashes=$(artifacts "$WORK/art_$t/")
    corpus=$(find "$WORK/corpus_$t" -type f | wc -l)
    echo "fuzz_$t: ${execs:-0} executions in ${PER_TARGET}s, $crashes crashes, corpus $corpus new inputs, exit status $rc"
    if ((rc == 0 && crashes == 0)) && [[ -n $execs ]] && ((execs > 0)); then
        result "fuzz_$t" ok "${execs} executions"
    else
        grep -A 30 -m 1 -E '^==[0-9]+==|runtime error|fuzz_sc:|fuzz shim:' "$WORK/fuzz_$t.log"
        result "fuzz_$t" FAILED "crash artifacts in $WORK/art_$t"
    fi
done

finish
((FAILED == 0))
