#!/bin/sh
# The system packages the test suite drives (headless Chromium for the browser test, PgBouncer for
# the pooled-PostgreSQL tests; with `bench`, pgloader too), installed with apt-get when missing. Run by `make test`; idempotent.
set -e
missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -x /usr/bin/chromedriver ] || missing="$missing chromium-driver"
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing="$missing pgbouncer"
# `bench`: also pgloader, which `make bench` and `make bench-scale` run beside the backfill.
[ "${1:-}" != bench ] || command -v pgloader >/dev/null 2>&1 || missing="$missing pgloader"
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing system packages:$missing; install them with your package manager, then run make test again" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing system packages for the tests:$missing" >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
