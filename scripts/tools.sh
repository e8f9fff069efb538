#!/usr/bin/env bash
# Monitoring clients the tests run against pgstrata, as users install them: Debian's
# check-pgbackrest (Dalibo's check_pgbackrest) and its Perl modules, unpacked from the Debian
# packages into the checkout (.tools/), never installed system-wide; and the Prometheus
# project's Python client (its text-format parser reads `info --output=prometheus`) in a venv
# there. Writes .tools/env with PGSTRATA_TEST_CHECK_PGBACKREST, PERL5LIB and
# PGSTRATA_TEST_PROMETHEUS_PYTHON.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="$ROOT/.tools"
PACKAGES=(check-pgbackrest=2.3-1 libjson-perl libdata-dump-perl)

if [ ! -x "$TOOLS/root/usr/bin/check_pgbackrest" ]; then
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
PROMETHEUS_CLIENT_VERSION=0.26.0
if ! "$TOOLS/venv/bin/python" -c "import prometheus_client" 2>/dev/null; then
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet "prometheus-client==$PROMETHEUS_CLIENT_VERSION"
fi
cat > "$TOOLS/env" <<ENV
export PGSTRATA_TEST_CHECK_PGBACKREST="$TOOLS/root/usr/bin/check_pgbackrest"
export PGSTRATA_TEST_PROMETHEUS_PYTHON="$TOOLS/venv/bin/python"
export PERL5LIB="$TOOLS/root/usr/share/perl5\${PERL5LIB:+:\$PERL5LIB}"
ENV
