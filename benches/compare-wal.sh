#!/usr/bin/env bash
# Side-by-side WAL archiving and recovery: pgstrata and pgBackRest, in one run.
#   benches/compare-wal.sh [SEGMENTS] [RECOVERY_GIB]     (defaults 64 and 1)
# (a) synchronous archive-push: mean wall time per 16 MiB segment over SEGMENTS segments, and
#     the largest peak RSS of one call;
# (b) asynchronous archive-push, process-max=2: segments per second, the foreground called once
#     per segment the way PostgreSQL's archiver does (.ready renamed to .done after each success);
# (c) recovery of RECOVERY_GIB of archived WAL through archive-get with archive-async=y: restore
#     of the same base backup, then replay from the archive to the end, wall time from start to
#     promotion; and the floor: the same replay with restore_command = cp of the uncompressed
#     segments;
# (d) synchronous archive-get of the SEGMENTS segments archived in (a), one call each as
#     restore_command makes them: mean wall time per segment (checked byte for byte).
# Both tools: zst level 3, no encryption. Needs `pgbackrest`, PostgreSQL binaries, GNU time.
# PARTS=push skips (c). COMPRESS=lz4 (or zst:LEVEL, none) changes the codec of both tools.
# CIPHER=1 encrypts both repositories (repo1-cipher-type=aes-256-cbc, as PGO's users set it;
# pgstrata keeps its own cipher under that setting, with the key wrapped by argon2id).
set -euo pipefail
SEGMENTS="${1:-64}"
RECOVERY_GIB="${2:-1}"
COMPRESS="${COMPRESS:-zst:3}"
CTYPE="${COMPRESS%%:*}"
CLEVEL=""
[ "$CTYPE" != "$COMPRESS" ] && CLEVEL="compress-level=${COMPRESS#*:}\n"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PG_BIN="${PGSTRATA_PG_BIN:-/usr/lib/postgresql/15/bin}"
# PGBACKREST names the pgBackRest binary to compare with (default: Debian's, on PATH), e.g.
# ../shared/tools/pgbackrest-2.59.1.
PGB="${PGBACKREST:-$(command -v pgbackrest || true)}"
[ -x "$PGB" ] || { echo "compare-wal: pgbackrest not found (apt-get install pgbackrest, or PGBACKREST=...)" >&2; exit 1; }
PGB="$(readlink -f "$PGB")"
PGB_VERSION="$("$PGB" version 2>/dev/null | awk '{print $2}')"
CIPHER_PASS="$(head -c 24 /dev/urandom | base64)"

(cd "$ROOT" && cargo build --release --quiet --bin pgstrata)
W="$(mktemp -d "${BENCH_DIR:-/tmp}/pgstrata-compare-wal-XXXXXX")"
chmod 0755 "$W"
cp "$ROOT/target/release/pgstrata" "$W/pgstrata"
mkdir -p "$W/sock" "$W/lock" "$W/log" "$W/spool-pgbackrest" "$W/spool-pgstrata"
if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$W"; as_pg() { runuser -u postgres -- "$@"; }; else as_pg() { "$@"; }; fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
stop_all() { for d in "$W"/data "$W"/ready "$W"/replay-*; do [ -d "$d" ] && { as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop > /dev/null 2>&1 || true; }; done; true; }
# A worker may still be writing to its spool while the directory goes: a second try.
cleanup() { stop_all; [ -n "${KEEP:-}" ] && return; rm -rf "$W" 2> /dev/null || { sleep 1; rm -rf "$W"; } || true; }
trap cleanup EXIT

conf() { # tool, data dir, port, extra lines -> config file path
  local f="$W/$1-$(basename "$2").conf"
  printf '[global]\nrepo1-path=%s\nlock-path=%s\nlog-path=%s\nspool-path=%s\nlog-level-console=warn\nlog-level-file=off\n' \
    "$W/repo-$1" "$W/lock" "$W/log" "$W/spool-$1" > "$f"
  [ -n "${CIPHER:-}" ] && printf 'repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=%s\n' "$CIPHER_PASS" >> "$f"
  printf 'compress-type=%s\n%bstart-fast=y\n%b\n[bench]\npg1-path=%s\npg1-socket-path=%s\npg1-port=%s\npg1-user=postgres\n' \
    "$CTYPE" "$CLEVEL" "$4" "$2" "$W/sock" "$3" >> "$f"
  chmod 0600 "$f"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$f"
  echo "$f"
}
tool_bin() { [ "$1" = pgbackrest ] && echo "$PGB" || echo "$W/pgstrata"; }
psql() { as_pg "$PG_BIN/psql" -X -q -A -t -h "$W/sock" -p "$1" -U postgres -d postgres -c "$2"; }
start_pg() { # data dir, port, extra settings
  cat >> "$1/postgresql.conf" <<PGCONF
listen_addresses = ''
unix_socket_directories = '$W/sock'
port = $2
$3
PGCONF
  as_pg "$PG_BIN/pg_ctl" -D "$1" -l "$1.log" -w -t 600 start > /dev/null
}
now() { date +%s.%N; }

# ---- the primary: both tools archive every segment; one base backup each ----
as_pg "$PG_BIN/initdb" --data-checksums -A trust -U postgres -D "$W/data" > /dev/null
CB=$(conf pgbackrest "$W/data" "$PORT" "")
CS=$(conf pgstrata "$W/data" "$PORT" "")
start_pg "$W/data" "$PORT" "archive_mode = on
archive_command = '$PGB --config=$CB --stanza=bench archive-push %p && $W/pgstrata --config=$CS --stanza=bench archive-push %p'
max_wal_size = 8GB
checkpoint_timeout = 1h
autovacuum = off"
as_pg "$PGB" "--config=$CB" --stanza=bench stanza-create > /dev/null
as_pg "$W/pgstrata" "--config=$CS" --stanza=bench stanza-create > /dev/null
as_pg "$PG_BIN/pgbench" -i -q -s 10 -h "$W/sock" -p "$PORT" -U postgres postgres > /dev/null 2>&1
as_pg "$PGB" "--config=$CB" --stanza=bench backup --type=full > /dev/null
as_pg "$W/pgstrata" "--config=$CS" --stanza=bench backup --type=full > /dev/null

RESULTS="$W/results"
: > "$RESULTS"
wal_bytes=0
if [ "${PARTS:-all}" != push ]; then
echo "== writing ${RECOVERY_GIB} GiB of WAL (bulk writes and pgbench)" >&2
start_lsn=$(psql "$PORT" "select pg_current_wal_lsn()")
psql "$PORT" "create table w (id bigint, h text, n numeric)"
target=$(python3 -c "print(int($RECOVERY_GIB * 1.05 * 2**30))")
while [ "$(psql "$PORT" "select pg_current_wal_lsn() - '$start_lsn'::pg_lsn < $target")" = t ]; do
  psql "$PORT" "insert into w select g, md5(g::text), random() * 1e6 from generate_series(1, 400000) g"
  psql "$PORT" "update w set n = n + 1 where id % 7 = 0"
  as_pg "$PG_BIN/pgbench" -n -t 2000 -c 2 -h "$W/sock" -p "$PORT" -U postgres postgres > /dev/null 2>&1
done
wal_bytes=$(psql "$PORT" "select pg_current_wal_lsn() - '$start_lsn'::pg_lsn")
last=$(psql "$PORT" "select pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 2400); do
  [ "$(psql "$PORT" "select coalesce(last_archived_wal, '') >= '$last' from pg_stat_archiver")" = t ] && break
  sleep 0.5
done
as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m fast -w stop > /dev/null


# ---- (c) recovery through archive-get, async with prefetch ----
# The floor: the same replay with restore_command = cp of the uncompressed segments the primary
# still has in pg_wal (what no archive can beat: PostgreSQL's own redo and a process per segment).
mkdir -p "$W/plainwal"
cp "$W"/data/pg_wal/0* "$W/plainwal/"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$W/plainwal"
for tool in pgbackrest pgstrata floor; do
  d="$W/replay-$tool"; port=$(free_port)
  t=$tool; [ "$tool" = floor ] && t=pgstrata
  c=$(conf "$t" "$d" "$port" "archive-async=y\nprocess-max=2")
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now)
  as_pg "$(tool_bin $t)" "--config=$c" --stanza=bench restore --process-max=2 > /dev/null
  # postgresql.auto.conf is read last: its later line wins.
  # (The base backup's first segments are no longer in pg_wal: those few come from the archive.)
  [ "$tool" = floor ] && echo "restore_command = 'cp $W/plainwal/%f %p 2>/dev/null || $W/pgstrata --config=$c --stanza=bench archive-get %f %p'" >> "$d/postgresql.auto.conf"
  [ "$tool" = floor ] && sync && { echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
  t1=$(now)
  start_pg "$d" "$port" "archive_mode = off"
  until [ "$(psql "$port" "select pg_is_in_recovery()" 2>/dev/null)" = f ]; do sleep 0.1; done
  t2=$(now)
  rows=$(psql "$port" "select count(*) from w")
  as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop > /dev/null
  echo "recovery $tool $(python3 -c "print(round($t1 - $t0, 2), round($t2 - $t1, 2))") $rows" >> "$RESULTS"
  rm -rf "$d"
done

fi

# ---- segments for (a) and (b): a stopped cluster whose archive_command never succeeded ----
echo "== preparing $SEGMENTS ready segments" >&2
PORT2=$(free_port)
as_pg "$PG_BIN/initdb" --data-checksums -A trust -U postgres -D "$W/ready" > /dev/null
start_pg "$W/ready" "$PORT2" "archive_mode = on
archive_command = 'false'
max_wal_size = 8GB
checkpoint_timeout = 1h"
for tool in pgbackrest pgstrata; do
  for mode in sync async; do
    c=$(conf "$tool" "$W/ready" "$PORT2" "archive-async=$([ $mode = async ] && echo y || echo n)\nprocess-max=2")
    sed -i "s|repo1-path=.*|repo1-path=$W/repo-$tool-$mode|" "$c"
    as_pg "$(tool_bin $tool)" "--config=$c" --stanza=bench stanza-create > /dev/null
  done
done
psql "$PORT2" "create table w (id bigint, h text)"
while [ "$(ls "$W/ready/pg_wal/archive_status" | grep -c '\.ready$')" -lt "$SEGMENTS" ]; do
  psql "$PORT2" "insert into w select g, md5(g::text) from generate_series(1, 200000) g"
done
as_pg "$PG_BIN/pg_ctl" -D "$W/ready" -m fast -w stop > /dev/null
mapfile -t SEGS < <(ls "$W/ready/pg_wal/archive_status" | sed -n 's/\.ready$//p' | grep -E '^[0-9A-F]{24}$' | sort | head -n "$SEGMENTS")
reset_ready() { for s in "${SEGS[@]}"; do f="$W/ready/pg_wal/archive_status/$s"; [ -e "$f.done" ] && mv "$f.done" "$f.ready"; done; true; }

for mode in sync async; do
  for tool in pgbackrest pgstrata; do
    reset_ready
    c="$W/$tool-ready.conf"
    sed -i "s|repo1-path=.*|repo1-path=$W/repo-$tool-$mode|; s|archive-async=.*|archive-async=$([ $mode = async ] && echo y || echo n)|" "$c"
    # Segments stay in the page cache, as PostgreSQL's just-written WAL is when it is archived.
    sync; cat "${SEGS[@]/#/$W/ready/pg_wal/}" > /dev/null
    t0=$(now)
    rss="$W/rss-push-$mode-$tool"; : > "$rss"; [ "$(id -u)" != 0 ] || chown postgres "$rss"
    for s in "${SEGS[@]}"; do
      # GNU time, one more fork per call for both tools: the peak RSS of each call.
      as_pg /usr/bin/time -a -o "$rss" -f '%M' "$(tool_bin $tool)" "--config=$c" --stanza=bench archive-push "$W/ready/pg_wal/$s" > /dev/null
      mv "$W/ready/pg_wal/archive_status/$s.ready" "$W/ready/pg_wal/archive_status/$s.done"
    done
    t1=$(now)
    echo "push-$mode $tool $(python3 -c "print(round($t1 - $t0, 3))") ${#SEGS[@]} $(sort -n "$rss" | tail -1)" >> "$RESULTS"
    # Let the async worker exit before the next run.
    sleep 2
  done
done

# ---- (d) synchronous archive-get, one call per segment as restore_command makes it ----
mkdir -p "$W/got" && [ "$(id -u)" = 0 ] && chown postgres:postgres "$W/got"
for tool in pgbackrest pgstrata; do
  c="$W/$tool-ready.conf"
  sed -i "s|repo1-path=.*|repo1-path=$W/repo-$tool-sync|; s|archive-async=.*|archive-async=n|" "$c"
  t0=$(now)
  for s in "${SEGS[@]}"; do
    as_pg "$(tool_bin $tool)" "--config=$c" --stanza=bench archive-get "$s" "$W/got/$s" > /dev/null
  done
  t1=$(now)
  for s in "${SEGS[@]}"; do cmp -s "$W/got/$s" "$W/ready/pg_wal/$s" || { echo "compare-wal: $tool fetched a different $s" >&2; exit 1; }; done
  rm -f "$W"/got/*
  # Peak RSS of one call (the largest of its processes).
  rss=$(as_pg /usr/bin/time -f '%M' "$(tool_bin $tool)" "--config=$c" --stanza=bench archive-get "${SEGS[0]}" "$W/got/${SEGS[0]}" 2>&1 > /dev/null | tail -1)
  rm -f "$W"/got/*
  echo "get-sync $tool $(python3 -c "print(round($t1 - $t0, 3))") ${#SEGS[@]} $rss" >> "$RESULTS"
done

echo "pgBackRest: $PGB ($PGB_VERSION)"
python3 - "$RESULTS" "$wal_bytes" "$COMPRESS" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
wal = int(float(sys.argv[2]))
r = {}
for row in rows:
    r.setdefault(row[0], {})[row[1]] = row[2:]
def ratio(a, b): return a / b if b else float("inf")
print(f"WAL written for recovery: {wal / 2**30:.2f} GiB; compression {sys.argv[3]}")
for mode in ("sync", "async"):
    k = f"push-{mode}"
    if k not in r: continue
    b, s = r[k]["pgbackrest"], r[k]["pgstrata"]
    n = int(b[1])
    bt, st = float(b[0]), float(s[0])
    print(f"archive-push {mode:<5} {n} segments: pgBackRest {bt:.2f} s ({1000*bt/n:.1f} ms/segment, {n/bt:.1f} seg/s)"
          f" | pgstrata {st:.2f} s ({1000*st/n:.1f} ms/segment, {n/st:.1f} seg/s) | speed-up {ratio(bt, st):.2f}x"
          f" | peak RSS of a foreground call pgBackRest {int(b[2])/1024:.1f} MiB, pgstrata {int(s[2])/1024:.1f} MiB")
if "get-sync" in r:
    b, s = r["get-sync"]["pgbackrest"], r["get-sync"]["pgstrata"]
    n, bt, st = int(b[1]), float(b[0]), float(s[0])
    print(f"archive-get sync  {n} segments: pgBackRest {1000*bt/n:.1f} ms/segment | pgstrata {1000*st/n:.1f} ms/segment"
          f" | speed-up {ratio(bt, st):.2f}x | peak RSS pgBackRest {int(b[2])/1024:.1f} MiB, pgstrata {int(s[2])/1024:.1f} MiB")
if "recovery" in r:
    b, s = r["recovery"]["pgbackrest"], r["recovery"]["pgstrata"]
    print(f"recovery (restore + replay): pgBackRest {float(b[0]):.2f} + {float(b[1]):.2f} s | pgstrata {float(s[0]):.2f} + {float(s[1]):.2f} s"
          f" | replay speed-up {ratio(float(b[1]), float(s[1])):.2f}x, total {ratio(float(b[0]) + float(b[1]), float(s[0]) + float(s[1])):.2f}x"
          f" | rows {b[2]} / {s[2]}")
    if "floor" in r["recovery"]:
        f = r["recovery"]["floor"]
        print(f"recovery floor (restore_command = cp of the uncompressed segments): replay {float(f[1]):.2f} s"
              f" | pgstrata's replay {ratio(float(s[1]), float(f[1])):.2f}x of it, pgBackRest's {ratio(float(b[1]), float(f[1])):.2f}x | rows {f[2]}")
PY
