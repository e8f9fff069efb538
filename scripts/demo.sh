#!/usr/bin/env bash
# The main job on an embedded default: a throwaway PostgreSQL cluster archiving WAL into a local
# repository, a full backup, more writes, a restore into a new directory, the restored cluster
# started and compared, and `info`. Everything lives in one temporary directory, removed at exit.
# Needs PostgreSQL binaries (PGSTRATA_PG_BIN, default /usr/lib/postgresql/15/bin).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PG_BIN="${PGSTRATA_PG_BIN:-/usr/lib/postgresql/15/bin}"
[ -x "$PG_BIN/initdb" ] || { echo "demo: PostgreSQL binaries not found in $PG_BIN (set PGSTRATA_PG_BIN)" >&2; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building pgstrata"
(cd "$ROOT" && cargo build --quiet --bin pgstrata)

WORK="$(mktemp -d /tmp/pgstrata-demo-XXXXXX)"
chmod 0755 "$WORK"
cp "$ROOT/target/debug/pgstrata" "$WORK/pgstrata"
BIN="$WORK/pgstrata"
mkdir -p "$WORK/repo" "$WORK/lock" "$WORK/sock-src" "$WORK/sock-restored"

# initdb refuses root: run PostgreSQL (and pgstrata, as PostgreSQL would) as the postgres user.
if [ "$(id -u)" = 0 ]; then
  chown -R postgres:postgres "$WORK"
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SRC_PORT=$(free_port); DST_PORT=$(free_port)

cleanup() {
  as_pg "$PG_BIN/pg_ctl" -D "$WORK/restored" -m immediate -w stop >/dev/null 2>&1 || true
  as_pg "$PG_BIN/pg_ctl" -D "$WORK/src" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/pgstrata.conf" <<CONF
[global]
repo1-path=$WORK/repo
lock-path=$WORK/lock
log-path=$WORK
log-level-console=info
log-level-file=off
compress-type=zst
process-max=2
start-fast=y

[demo]
pg1-path=$WORK/src
pg1-socket-path=$WORK/sock-src
pg1-port=$SRC_PORT
pg1-user=postgres
CONF
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK/pgstrata.conf"
PGS=("$BIN" "--config=$WORK/pgstrata.conf" "--stanza=demo")
psql_src() { as_pg "$PG_BIN/psql" -X -A -t -q -h "$WORK/sock-src" -p "$SRC_PORT" -U postgres -d postgres -c "$1"; }
psql_dst() { as_pg "$PG_BIN/psql" -X -A -t -q -h "$WORK/sock-restored" -p "$DST_PORT" -U postgres -d postgres -c "$1"; }

say "a throwaway cluster (initdb --data-checksums) archiving WAL with pgstrata"
as_pg "$PG_BIN/initdb" --data-checksums -A trust -U postgres -D "$WORK/src" >/dev/null
cat >> "$WORK/src/postgresql.conf" <<PGCONF
archive_mode = on
archive_command = '${PGS[*]} archive-push %p'
wal_level = replica
listen_addresses = ''
unix_socket_directories = '$WORK/sock-src'
port = $SRC_PORT
PGCONF
as_pg "$PG_BIN/pg_ctl" -D "$WORK/src" -l "$WORK/src.log" -w start >/dev/null
echo "archive_command = '${PGS[*]} archive-push %p'"

say "stanza-create"
as_pg "${PGS[@]}" stanza-create

say "some data, then a full backup"
psql_src "create table orders (id int primary key, item text, amount numeric);
          insert into orders select g, 'item ' || g, g * 1.5 from generate_series(1, 100000) g;"
as_pg "${PGS[@]}" backup --type=full

say "more writes after the backup (they reach the repository as WAL)"
psql_src "insert into orders select g, 'late ' || g, g from generate_series(100001, 100500) g;"
SEG=$(psql_src "select pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 100); do
  [ "$(psql_src "select coalesce(last_archived_wal, '') >= '$SEG' from pg_stat_archiver")" = "t" ] && break
  sleep 0.2
done
echo "source: $(psql_src 'select count(*), sum(amount) from orders')"

say "restore into a new directory"
as_pg "${PGS[@]}" restore --pg1-path="$WORK/restored"
cat >> "$WORK/restored/postgresql.conf" <<PGCONF
archive_mode = off
unix_socket_directories = '$WORK/sock-restored'
port = $DST_PORT
PGCONF
grep -A1 'pgstrata restore settings begin' "$WORK/restored/postgresql.auto.conf" | tail -1

say "start the restored cluster: it replays WAL from the archive to the end"
as_pg "$PG_BIN/pg_ctl" -D "$WORK/restored" -l "$WORK/restored.log" -w start >/dev/null
for _ in $(seq 1 120); do
  [ "$(psql_dst 'select pg_is_in_recovery()' 2>/dev/null || true)" = "f" ] && break
  sleep 0.5
done
echo "restored: $(psql_dst 'select count(*), sum(amount) from orders')"
if [ "$(psql_src 'select count(*), sum(amount) from orders')" = "$(psql_dst 'select count(*), sum(amount) from orders')" ]; then
  echo "the restored cluster has every row, including those written after the backup"
else
  echo "MISMATCH between source and restored cluster" >&2
  exit 1
fi

say "info"
as_pg "${PGS[@]}" info --log-level-console=warn
say "info --output=json"
as_pg "${PGS[@]}" info --output=json --log-level-console=warn
echo
