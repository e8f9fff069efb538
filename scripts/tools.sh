#!/usr/bin/env bash
# Monitoring clients the tests run against pgstrata, as users install them: Debian's
# check-pgbackrest (Dalibo's check_pgbackrest) and its Perl modules, unpacked from the Debian
# packages into the checkout (.tools/), not installed system-wide; and the Prometheus
# project's Python client (its text-format parser reads `info --output=prometheus`) in a venv
# there, with dateutil (Spilo's clone_with_wale.py parses backup-list's times with it); envdir
# from Debian's daemontools (Spilo runs wal-g under `envdir`). Writes .tools/env with
# PGSTRATA_TEST_CHECK_PGBACKREST, PERL5LIB, PGSTRATA_TEST_PROMETHEUS_PYTHON and
# PGSTRATA_TEST_ENVDIR; and pgBackRest for the migration tests (PGSTRATA_TEST_PGBACKREST_CURRENT,
# _DEBIAN): the one package installed system-wide (apt-get, as root) when missing, since the
# current release built in ../shared/tools links the libraries it brings.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="$ROOT/.tools"
PACKAGES=(check-pgbackrest=2.3-1 libjson-perl libdata-dump-perl daemontools)

if [ ! -x "$TOOLS/root/usr/bin/check_pgbackrest" ] || [ ! -x "$TOOLS/root/usr/bin/envdir" ]; then
  mkdir -p "$TOOLS/debs" "$TOOLS/root"
  (cd "$TOOLS/debs" && apt-get download "${PACKAGES[@]}" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
  for deb in "$TOOLS"/debs/*.deb; do
    dpkg-deb -x "$deb" "$TOOLS/root"
  done
fi
if [ ! -x "$TOOLS/root/usr/bin/check_pgbackrest" ]; then
  echo "tools: check_pgbackrest could not be unpacked from Debian's check-pgbackrest" >&2
  exit 1
fi
if [ ! -x "$TOOLS/root/usr/bin/envdir" ]; then
  echo "tools: envdir could not be unpacked from Debian's daemontools" >&2
  exit 1
fi
PROMETHEUS_CLIENT_VERSION=0.26.0
DATEUTIL_VERSION=2.9.0.post0
if ! "$TOOLS/venv/bin/python" -c "import prometheus_client, dateutil" 2>/dev/null; then
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet "prometheus-client==$PROMETHEUS_CLIENT_VERSION" "python-dateutil==$DATEUTIL_VERSION"
fi
# pgBackRest, to write the repositories the migration tests take over: the current release
# (../shared/tools/pgbackrest-2.59.1, built from its release tag) and Debian's 2.45, whose package
# also brings the libraries the current release links.
CURRENT_PGBACKREST="$(cd "$ROOT/.." && pwd)/shared/tools/pgbackrest-2.59.1"
if ! command -v pgbackrest > /dev/null || { [ -x "$CURRENT_PGBACKREST" ] && ldd "$CURRENT_PGBACKREST" | grep -q "not found"; }; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y pgbackrest libssh2-1 > /dev/null
  else
    echo "tools: pgBackRest (and the libraries of $CURRENT_PGBACKREST) missing: apt-get install -y pgbackrest libssh2-1" >&2
  fi
fi
cat > "$TOOLS/env" <<ENV
export PGSTRATA_TEST_CHECK_PGBACKREST="$TOOLS/root/usr/bin/check_pgbackrest"
export PGSTRATA_TEST_PROMETHEUS_PYTHON="$TOOLS/venv/bin/python"
export PGSTRATA_TEST_ENVDIR="$TOOLS/root/usr/bin/envdir"
export PGSTRATA_TEST_PGBACKREST_CURRENT="$CURRENT_PGBACKREST"
export PGSTRATA_TEST_PGBACKREST_DEBIAN="$(command -v pgbackrest || true)"
export PERL5LIB="$TOOLS/root/usr/share/perl5\${PERL5LIB:+:\$PERL5LIB}"
ENV
