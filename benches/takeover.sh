#!/usr/bin/env bash
# Restoring a pgBackRest backup: pgBackRest itself against pgstrata taking its repository over
# (issue 25), side by side in one run, on the same backup.
#   benches/takeover.sh [SCALE]        (pgbench scale, default 100 = ~1.5 GB)
#   PGBACKREST=path                    (the pgBackRest that writes and restores; default
#                                       ../shared/tools/pgbackrest-2.59.1)
#   COMPRESS=gz                        (compress-type of the backup; gz is pgBackRest's default)
#   REPEAT=3                           (restores per tool, alternating; the median counts)
#   KEEP=1                             (keep the work directory, for profiling)
# The repository is written as PGO configures it: aes-256-cbc, bundles, block incremental,
# process-max 2. A full, then pgbench transactions and an incr; the incr (block maps over both
# backups) is restored by each tool into an empty directory with process-max 2. Prints wall
# time and peak RSS of each restore, and the ratio. Needs PostgreSQL binaries and GNU time.
set -euo pipefail
SCALE="${1:-100}"
REPEAT="${REPEAT:-3}"
COMPRESS="${COMPRESS:-gz}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PG_BIN="${PGSTRATA_PG_BIN:-/usr/lib/postgresql/15/bin}"
PGBACKREST="${PGBACKREST:-$(cd "$ROOT/.." && pwd)/shared/tools/pgbackrest-2.59.1}"
[ -x "$PGBACKREST" ] || { echo "takeover: $PGBACKREST not found (set PGBACKREST)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "takeover: GNU time not found (apt-get install time)" >&2; exit 1; }

(cd "$ROOT" && cargo build --release --quiet --bin pgstrata)
W="$(mktemp -d "${BENCH_DIR:-/tmp}/pgstrata-takeover-XXXXXX")"
chmod 0755 "$W"
cd "$W"
mkdir -p "$W/bin-pgbackrest" "$W/bin-pgstrata" "$W/sock" "$W/lock" "$W/log" "$W/spool" "$W/repo"
cp "$PGBACKREST" "$W/bin-pgbackrest/pgbackrest"
cp "$ROOT/target/release/pgstrata" "$W/bin-pgstrata/pgbackrest"
if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$W"; as_pg() { runuser -u postgres -- "$@"; }; else as_pg() { "$@"; }; fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m immediate -w stop > /dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then echo "takeover: kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
cat > "$W/pgbackrest.conf" << CONF
[global]
repo1-path=$W/repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench passphrase
repo1-bundle=y
repo1-block=y
compress-type=$COMPRESS
process-max=2
lock-path=$W/lock
log-path=$W/log
spool-path=$W/spool
log-level-console=warn
log-level-file=off
start-fast=y

[bench]
pg1-path=$W/data
pg1-socket-path=$W/sock
pg1-port=$PORT
CONF
[ "$(id -u)" = 0 ] && chown postgres:postgres "$W/pgbackrest.conf"
tool() { # $1 = bin-pgbackrest | bin-pgstrata, then the command
  local bin="$W/$1"
  shift
  as_pg "$bin/pgbackrest" "--config=$W/pgbackrest.conf" --stanza=bench "$@"
}
as_pg "$PG_BIN/initdb" -k -D "$W/data" -U postgres -A trust > /dev/null
cat >> "$W/data/postgresql.conf" << CONF
port = $PORT
unix_socket_directories = '$W/sock'
listen_addresses = ''
archive_mode = on
archive_command = '$W/bin-pgbackrest/pgbackrest --config=$W/pgbackrest.conf --stanza=bench archive-push "%p"'
wal_level = replica
autovacuum = off
CONF
as_pg "$PG_BIN/pg_ctl" -D "$W/data" -l "$W/pg.log" -w start > /dev/null
tool bin-pgbackrest stanza-create
as_pg "$PG_BIN/pgbench" -h "$W/sock" -p "$PORT" -U postgres -i -s "$SCALE" -q postgres > /dev/null 2>&1
tool bin-pgbackrest backup --type=full
as_pg "$PG_BIN/pgbench" -h "$W/sock" -p "$PORT" -U postgres -n -t 20000 postgres > /dev/null 2>&1
tool bin-pgbackrest backup --type=incr
as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m fast -w stop > /dev/null
SIZE=$(du -sh "$W/data" | cut -f1)
REPO=$(du -sh "$W/repo" | cut -f1)

measure() { # $1 = bin dir; prints "seconds rss_kib"
  rm -rf "$W/restored"
  sync
  /usr/bin/time -f "%e %M" -o "$W/time.txt" runuser -u postgres -- "$W/$1/pgbackrest" \
    "--config=$W/pgbackrest.conf" --stanza=bench restore "--pg1-path=$W/restored" > /dev/null
  cat "$W/time.txt"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > "$W/pgbackrest.times"
: > "$W/pgstrata.times"
for _ in $(seq "$REPEAT"); do
  measure bin-pgbackrest >> "$W/pgbackrest.times"
  measure bin-pgstrata >> "$W/pgstrata.times"
done
PB=$(cut -d' ' -f1 "$W/pgbackrest.times" | median)
PS=$(cut -d' ' -f1 "$W/pgstrata.times" | median)
PBM=$(cut -d' ' -f2 "$W/pgbackrest.times" | median)
PSM=$(cut -d' ' -f2 "$W/pgstrata.times" | median)
echo "restore of pgBackRest's incr (scale $SCALE, cluster $SIZE, repository $REPO, $COMPRESS, aes-256-cbc, bundles + block, process-max 2; median of $REPEAT)"
printf '%-22s %8s s  peak RSS %6s MiB (largest process)\n' "pgBackRest $("$PGBACKREST" version | cut -d' ' -f2)" "$PB" "$((PBM / 1024))"
printf '%-22s %8s s  peak RSS %6s MiB\n' "pgstrata" "$PS" "$((PSM / 1024))"
awk -v a="$PB" -v b="$PS" 'BEGIN { printf "pgstrata vs pgBackRest: %.2fx the speed\n", a / b }'
