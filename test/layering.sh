#!/usr/bin/env bash
# Proves that the C sources in src/ depend on each other in one direction
# only: no include cycle and no call cycle between files, and every include
# and every call goes down the layer order declared below.
#   test/layering.sh   (make test, through test/setup.sh's run_script_suite)
# A file's module is its basename: src/x.c and src/x.h are module x; a
# header without a .c is a module of its own.  Includes are read from the
# #include "..." lines; calls (and references to variables) from the
# compiled objects: nm --defined-only says which module defines a symbol,
# nm -u which symbols a module uses.  The objects are compiled here, into a
# temporary directory, with the flags of $PG_CONFIG.  Tests: the build;
# every module declared in a layer; no include cycle; no call cycle; every
# include down the layers; every call down the layers.  Prints the edges
# that break a rule and, as its last line, "N passed, M failed".
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
PASSED=0
FAILED=0

# Layers, top to bottom: a module may include and call only modules of a
# lower line (a later line), never one of its own line or above.
LAYERS="
counter
api members nodes
worker
walreplay compact
apply
slots
read topk
commit
feed
events buffer
wal
shmem
legacy
catalog
guc
type
"

# Record one test's result.
check() {
    local name=$1 ok=$2
    if [[ $ok == yes ]]; then
        PASSED=$((PASSED + 1))
        echo "ok      $name"
    else
        FAILED=$((FAILED + 1))
        echo "FAILED  $name"
    fi
}

TMP=$(mktemp -d /tmp/counter-layering.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# module of a file name: basename without .c/.h
module() {
    local b
    b=$(basename "$1")
    echo "${b%.*}"
}

# --- build -------------------------------------------------------------------
CC=$("$PG_CONFIG" --cc)
read -r -a CFLAGS <<<"$("$PG_CONFIG" --cflags) $("$PG_CONFIG" --cflags_sl)"
INC=$("$PG_CONFIG" --includedir-server)
LIBPQ_INC=$("$PG_CONFIG" --includedir)	# libpq-fe.h, for nodes.c
built=yes
for c in "$ROOT"/src/*.c; do
    if ! "$CC" "${CFLAGS[@]}" -I"$ROOT/src" -I"$INC" -I"$LIBPQ_INC" -c "$c" -o "$TMP/$(module "$c").o" 2>"$TMP/build.log"; then
        cat "$TMP/build.log"
        built=no
    fi
done
check "build of src/*.c" $built

# --- graphs --------------------------------------------------------------------
# includes: "from to" per #include "x.h" of a module other than itself
for f in "$ROOT"/src/*.c "$ROOT"/src/*.h; do
    m=$(module "$f")
    sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)\.h".*/\1/p' "$f" |
        while read -r h; do
            [[ -f $ROOT/src/$h.h && $h != "$m" ]] && echo "$m $h"
        done
    true
done | sort -u >"$TMP/includes"

# calls: "from to symbol" per undefined symbol another module defines
if [[ $built == yes ]]; then
    for o in "$TMP"/*.o; do
        nm --defined-only -g "$o" | awk -v m="$(module "$o")" 'NF == 3 { print $3, m }'
    done | sort -k1,1 >"$TMP/defs"
    for o in "$TMP"/*.o; do
        nm -u "$o" | awk -v m="$(module "$o")" '{ print $NF, m }'
    done | sort -k1,1 | join "$TMP/defs" - | awk '$2 != $3 { print $3, $2, $1 }' | sort -u >"$TMP/calls"
else
    : >"$TMP/calls"
fi

# --- layers --------------------------------------------------------------------
declare -A RANK=()
rank=0
while read -r line; do
    [[ -n $line ]] || continue
    for m in $line; do RANK[$m]=$rank; done
    rank=$((rank + 1))
done <<<"$LAYERS"

undeclared=""
for f in "$ROOT"/src/*.c "$ROOT"/src/*.h; do
    m=$(module "$f")
    [[ -n ${RANK[$m]:-} ]] || undeclared="$undeclared $m"
done
undeclared=$(tr ' ' '\n' <<<"$undeclared" | sort -u | tr '\n' ' ')
[[ -z ${undeclared// /} ]] || echo "  modules in no layer:$undeclared"
check "every module of src/ in a layer" "$([[ -z ${undeclared// /} ]] && echo yes || echo no)"

# Print the cycles of the graph in file $1 ("from to ..." lines): tsort
# names the members of each loop it breaks.  True if there is none.
acyclic() {
    local loops
    loops=$(awk '{ print $1, $2 }' "$1" | sort -u | tsort 2>&1 >/dev/null)
    [[ -z $loops ]] && return 0
    sed 's/^tsort: -: /  /; s/^tsort: /  /' <<<"$loops"
    return 1
}

# Print the edges of file $1 that do not go down the layers.  True if none.
downward() {
    local bad=0 from to rest
    while read -r from to rest; do
        if [[ -z ${RANK[$from]:-} || -z ${RANK[$to]:-} ]] || ((RANK[$from] >= RANK[$to])); then
            echo "  $from -> $to $rest"
            bad=1
        fi
    done <"$1"
    return $bad
}

# Run test $1: command $2.. prints the offending edges, true if none.
rule() {
    local name=$1 out ok=yes
    shift
    out=$("$@") || ok=no
    [[ -z $out ]] || echo "$out"
    check "$name" $ok
}

rule "no include cycle between modules" acyclic "$TMP/includes"
rule "no call cycle between modules" acyclic "$TMP/calls"
rule "every include goes down the layers" downward "$TMP/includes"
rule "every call goes down the layers" downward "$TMP/calls"

echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
