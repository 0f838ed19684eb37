#!/usr/bin/env bash
# make example: the likes service on a scratch cluster, behind pgbouncer if
# it is installed (Debian package pgbouncer), until Ctrl-C.  Run as root
# (servers run as postgres) or as the user owning the PostgreSQL install.
# LIKES_EXIT=1: stop once the service answers (what the tests check).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v node >/dev/null || die "Node.js is needed (Debian package nodejs, version 18 or later)"
install_deps
build_install >/dev/null
likes_npm_ci
trap likes_stop_all EXIT
trap 'exit 130' INT TERM
likes_cluster_start
if command -v pgbouncer >/dev/null; then
    likes_pgbouncer_start 10
    echo "pgbouncer: 127.0.0.1:$PGBOUNCER_PORT (transaction pooling, 10 server connections)"
else
    echo "pgbouncer not installed: the API pool connects directly"
fi
likes_service_start
echo "likes service: $LIKES_URL/  (API: $LIKES_URL/v1/<post>/counter, metrics: $LIKES_URL/metrics)"
echo "try: curl -X PUT -d '{\"action\":\"increment\"}' $LIKES_URL/v1/post-1/counter"
[[ ${LIKES_EXIT:-} == 1 ]] && exit 0
echo "Ctrl-C stops it."
wait "$LIKES_PID"
