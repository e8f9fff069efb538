#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs and starts the storage emulators (pinned versions,
# into the checkout), installs a PostgreSQL server of every major 13-18 (scripts/postgres.sh), runs every workspace test with PGSTRATA_REQUIRE_SERVERS=1 (a server that
# cannot start is a failure, never a skip) after fmt and clippy checks, builds the fuzz targets,
# builds and smoke-tests the container image (scripts/image.sh), and stops the emulators by pid. Monitoring clients the tests run (check_pgbackrest) are unpacked
# into .tools/ by scripts/tools.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

export PGSTRATA_PG_BIN="${PGSTRATA_PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ ! -x "$PGSTRATA_PG_BIN/initdb" ]; then
  echo "test: PostgreSQL binaries not found in $PGSTRATA_PG_BIN (set PGSTRATA_PG_BIN)" >&2
  exit 1
fi

trap 'scripts/emulators.sh stop' EXIT
scripts/emulators.sh start
# shellcheck disable=SC1091
. .emu/env
scripts/tools.sh
# shellcheck disable=SC1091
. .tools/env
# A server of every supported major (13-18): the matrix in tests/e2e/majors.rs needs them all.
scripts/postgres.sh
# shellcheck disable=SC1091
. .pg/env
export PGSTRATA_REQUIRE_SERVERS=1

# The layering rule (docs/architecture.md): no import cycle of more than three files of src/, none
# across module folders, and no file below the front ends refers to them, the request layer or
# the option table.
python3 scripts/imports.py --max 3 --layers
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Three test threads on two cores: the end-to-end tests spend most of their time waiting on
# PostgreSQL (start, checkpoints, recovery), not computing.
RUST_TEST_THREADS="${RUST_TEST_THREADS:-3}" cargo test --workspace --all-targets --locked
# The container image, with the binary the tests ran, smoke-tested from its root filesystem.
PGSTRATA_BIN="$ROOT/target/debug/pgstrata" scripts/image.sh
scripts/fuzz.sh build
