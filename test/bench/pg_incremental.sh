#!/usr/bin/env bash
# test/bench/pg_incremental.sh SRCDIR: build pg_incremental (Crunchy Data's
# sequence/time pipelines, https://github.com/crunchydata/pg_incremental) from
# the source tree SRCDIR and install it, with the pg_cron it depends on, into
# the PostgreSQL found via $PG_CONFIG (default pg_config), so that make
# bench's scale section can measure its sequence pipeline as the peer of
# counter.compact().  Neither is needed for anything else.
#
# pg_incremental is not packaged by Debian; pg_cron is (postgresql-15-cron,
# installed here if missing and run as root).  When $PG_CONFIG is not the
# system's PostgreSQL (a relocated copy such as /opt/pg-NAME), pg_cron's
# files are copied from the system's directories into the copy's pkglibdir
# and extension dir.  Example:
#   git clone https://github.com/crunchydata/pg_incremental /tmp/pg_incremental
#   PG_CONFIG=/opt/pg-x/lib/postgresql/15/bin/pg_config test/bench/pg_incremental.sh /tmp/pg_incremental
# The bench then preloads pg_cron in its scratch cluster by itself.
set -euo pipefail

SRC=${1:?usage: $0 SRCDIR (a pg_incremental source tree)}
PG_CONFIG=${PG_CONFIG:-pg_config}
SYS_CONFIG=/usr/lib/postgresql/15/bin/pg_config

[[ -f $SRC/pg_incremental.control ]] || { echo "$0: $SRC is not a pg_incremental source tree" >&2; exit 1; }
libdir=$("$PG_CONFIG" --pkglibdir)
extdir=$("$PG_CONFIG" --sharedir)/extension

# pg_cron: the Debian package, copied into a relocated PostgreSQL if needed
if [[ ! -f $libdir/pg_cron.so ]]; then
    if [[ ! -f $("$SYS_CONFIG" --pkglibdir)/pg_cron.so ]]; then
        ((EUID == 0)) || { echo "$0: pg_cron is not installed (apt-get install postgresql-15-cron as root)" >&2; exit 1; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15-cron </dev/null
    fi
    if [[ ! -f $libdir/pg_cron.so ]]; then
        cp "$("$SYS_CONFIG" --pkglibdir)/pg_cron.so" "$libdir/"
        cp "$("$SYS_CONFIG" --sharedir)"/extension/pg_cron.control \
            "$("$SYS_CONFIG" --sharedir)"/extension/pg_cron--*.sql "$extdir/"
    fi
fi

# pg_incremental: built in a scratch copy of SRCDIR (the source stays clean)
build=$(mktemp -d /tmp/pg_incremental-build.XXXXXX)
trap 'rm -rf "$build"' EXIT
cp -r "$SRC"/. "$build/"
make -C "$build" PG_CONFIG="$PG_CONFIG" >/dev/null
make -C "$build" PG_CONFIG="$PG_CONFIG" install >/dev/null
echo "pg_incremental $(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$SRC/pg_incremental.control") and pg_cron installed into $libdir"
