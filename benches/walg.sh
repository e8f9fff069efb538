#!/usr/bin/env bash
# The WAL-G front end against the pgBackRest front end and pgBackRest 2.45, on the same data, in
# one run (WAL-G itself cannot be installed on these machines).
#   benches/walg.sh [SCALE]       (pgbench scale, default 20)
#   SEGMENTS=32                   (WAL segments pushed one at a time by each)
#   TX_SECONDS=15                 (pgbench run between the full backups and the deltas)
# Each tool has its own repository, lz4, no encryption, process-max 2. The cluster archives to
# all three. A full backup by each; pgbench; then a delta by each on the same changed data
# (`wal-g backup-push` with WALG_DELTA_MAX_STEPS, `pgbackrest backup --type=incr` for the
# other two), timed. Then SEGMENTS copies of the cluster's WAL segments pushed into a fresh
# repository of each, one process per segment as archive_command runs them (each through envdir,
# as Spilo runs wal-g; an empty directory for the other two), timed. Prints wall
# seconds, CPU seconds and peak RSS, and the WAL-G front end's ratio to each.
# Needs `pgbackrest` (apt-get install pgbackrest), envdir (daemontools; scripts/tools.sh unpacks
# one into .tools), PostgreSQL binaries and GNU time (/usr/bin/time).
set -euo pipefail
SCALE="${1:-20}"
SEGMENTS="${SEGMENTS:-32}"
TX_SECONDS="${TX_SECONDS:-15}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PG_BIN="${PGSTRATA_PG_BIN:-/usr/lib/postgresql/15/bin}"
PGBACKREST="$(command -v pgbackrest)" || { echo "walg: pgbackrest not found (apt-get install pgbackrest)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "walg: GNU time not found (apt-get install time)" >&2; exit 1; }
ENVDIR="$(command -v envdir || echo "$ROOT/.tools/root/usr/bin/envdir")"
[ -x "$ENVDIR" ] || { echo "walg: envdir not found (scripts/tools.sh unpacks daemontools' into .tools)" >&2; exit 1; }

(cd "$ROOT" && cargo build --release --locked --quiet --bin pgstrata)
W="$(mktemp -d "${BENCH_DIR:-/tmp}/pgstrata-walg-XXXXXX")"
chmod 0755 "$W"
cd "$W"
mkdir -p bin sock lock log env env-push env-none segs
cp "$ROOT/target/release/pgstrata" bin/pgstrata
ln -s pgstrata bin/wal-g
ln -s pgstrata bin/pgbackrest-pgstrata
cp "$ENVDIR" bin/envdir
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if [ "$(id -u)" = 0 ]; then as_pg() { runuser -u postgres -- "$@"; }; else as_pg() { "$@"; }; fi
cleanup() {
  as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m immediate -w stop > /dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then echo "walg: kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

# WAL-G's environment, as Spilo writes it.
walg_env() { # dir, prefix
  printf '%s' "$2" > "$1/WALG_FILE_PREFIX"
  printf 'lz4' > "$1/WALG_COMPRESSION_METHOD"
  printf '2' > "$1/WALG_UPLOAD_CONCURRENCY"
  printf '6' > "$1/WALG_DELTA_MAX_STEPS"
  printf '%s' "$W/sock" > "$1/PGHOST"
  printf '%s' "$PORT" > "$1/PGPORT"
  printf '%s' "$W/data" > "$1/PGDATA"
  printf 'ERROR' > "$1/WALG_LOG_LEVEL"
}
walg_env env "$W/repo-walg"
walg_env env-push "$W/push-walg"
conf() { # file, repo path
  printf '[global]\nrepo1-path=%s\nlock-path=%s\nlog-path=%s\nlog-level-console=error\nlog-level-file=off\ncompress-type=lz4\nprocess-max=2\nstart-fast=y\n[bench]\npg1-path=%s\npg1-socket-path=%s\npg1-port=%s\n' \
    "$2" "$W/lock" "$W/log" "$W/data" "$W/sock" "$PORT" > "$1"
}
conf pgstrata.conf "$W/repo-pgstrata"
conf pgbackrest.conf "$W/repo-pgbackrest"
conf push-pgstrata.conf "$W/push-pgstrata"
conf push-pgbackrest.conf "$W/push-pgbackrest"
mkdir -p repo-pgstrata repo-pgbackrest push-pgstrata push-pgbackrest
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$W"

as_pg "$PG_BIN/initdb" -D "$W/data" -U postgres --data-checksums > /dev/null
cat >> data/postgresql.conf <<EOF
listen_addresses = ''
unix_socket_directories = '$W/sock'
port = $PORT
archive_mode = on
wal_keep_size = 2GB
archive_command = '$W/bin/envdir $W/env $W/bin/wal-g wal-push "%p" && $W/bin/pgbackrest-pgstrata --config=$W/pgstrata.conf --stanza=bench archive-push "%p" && $PGBACKREST --config=$W/pgbackrest.conf --stanza=bench archive-push "%p"'
EOF
as_pg "$PG_BIN/pg_ctl" -D "$W/data" -l "$W/pg.log" -w start > /dev/null
as_pg "$W/bin/pgbackrest-pgstrata" --config="$W/pgstrata.conf" --stanza=bench stanza-create > /dev/null
as_pg "$PGBACKREST" --config="$W/pgbackrest.conf" --stanza=bench stanza-create > /dev/null
as_pg "$PG_BIN/pgbench" -h "$W/sock" -p "$PORT" -U postgres -i -s "$SCALE" -q postgres > /dev/null 2>&1

timed() { # label, command...: prints "label wall cpu rss_kib"
  local label=$1; shift
  sync
  as_pg /usr/bin/time -f "%e %U %S %M" -o "$W/time.out" "$@" > /dev/null 2> "$W/err.out" ||
    { echo "walg: $label failed:" >&2; cat "$W/err.out" >&2; exit 1; }
  read -r wall user sys rss < "$W/time.out"
  echo "$label $wall $(python3 -c "print(round($user + $sys, 2))") $rss"
}
WALG=("$W/bin/envdir" "$W/env" "$W/bin/wal-g")
# The full backups (not compared), then the same changes for the three deltas.
timed walg-full "${WALG[@]}" backup-push --full "$W/data" > /dev/null
timed pgstrata-full "$W/bin/pgbackrest-pgstrata" --config="$W/pgstrata.conf" --stanza=bench backup --type=full > /dev/null
timed pgbackrest-full "$PGBACKREST" --config="$W/pgbackrest.conf" --stanza=bench backup --type=full > /dev/null
as_pg "$PG_BIN/pgbench" -h "$W/sock" -p "$PORT" -U postgres -T "$TX_SECONDS" -c 2 -n postgres > /dev/null 2>&1
# Nothing changes from here on: each delta sees the same data.
as_pg "$PG_BIN/psql" -h "$W/sock" -p "$PORT" -U postgres -Atqc checkpoint postgres
{
  timed walg-delta "${WALG[@]}" backup-push "$W/data"
  timed pgstrata-delta "$W/bin/pgbackrest-pgstrata" --config="$W/pgstrata.conf" --stanza=bench backup --type=incr
  timed pgbackrest-delta "$PGBACKREST" --config="$W/pgbackrest.conf" --stanza=bench backup --type=incr
} > deltas.out

# WAL pushes: copies of the cluster's own segments, into fresh repositories.
# Written segments only (before the current one; wal_keep_size keeps them from being recycled).
current=$(as_pg "$PG_BIN/psql" -h "$W/sock" -p "$PORT" -U postgres -Atqc "select pg_walfile_name(pg_current_wal_lsn())" postgres)
mapfile -t segs < <(ls "$W/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | awk -v cur="$current" '$0 < cur' | tail -n "$SEGMENTS")
[ "${#segs[@]}" -ge 2 ] || { echo "walg: too few WAL segments in pg_wal" >&2; exit 1; }
for s in "${segs[@]}"; do cp "$W/data/pg_wal/$s" "$W/segs/$s"; done
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$W/segs"
as_pg "$W/bin/pgbackrest-pgstrata" --config="$W/push-pgstrata.conf" --stanza=bench stanza-create > /dev/null
as_pg "$PGBACKREST" --config="$W/push-pgbackrest.conf" --stanza=bench stanza-create > /dev/null
# The WAL-G front end makes its stanza on the first push: that one is not timed.
as_pg "$W/bin/envdir" "$W/env-push" "$W/bin/wal-g" wal-push "$W/segs/${segs[0]}"
# One process per segment, as archive_command runs them; all three through envdir (Spilo's
# wrapper; an empty directory for the other two), so that the front ends themselves compare.
cat > push.sh <<SCRIPT
#!/usr/bin/env bash
set -euo pipefail
for f in \$(ls "$W/segs" | sort | tail -n +2); do
  case "\$1" in
    walg) "$W/bin/envdir" "$W/env-push" "$W/bin/wal-g" wal-push "$W/segs/\$f" ;;
    pgstrata) "$W/bin/envdir" "$W/env-none" "$W/bin/pgbackrest-pgstrata" --config="$W/push-pgstrata.conf" --stanza=bench archive-push "$W/segs/\$f" ;;
    pgbackrest) "$W/bin/envdir" "$W/env-none" "$PGBACKREST" --config="$W/push-pgbackrest.conf" --stanza=bench archive-push "$W/segs/\$f" ;;
  esac
done
SCRIPT
chmod 0755 push.sh
for kind in walg pgstrata pgbackrest; do timed "$kind-push" "$W/push.sh" "$kind"; done > pushes.out

n=$(( ${#segs[@]} - 1 ))
python3 - "$n" "$SCALE" deltas.out pushes.out <<'PY'
import sys
n, scale = int(sys.argv[1]), sys.argv[2]
def rows(path):
    out = {}
    for line in open(path):
        label, wall, cpu, rss = line.split()
        out[label] = (float(wall), float(cpu), int(rss))
    return out
d, p = rows(sys.argv[3]), rows(sys.argv[4])
print(f"pgbench scale {scale}; lz4, process-max 2, no encryption; one run")
print(f"{'':22}{'wall s':>9}{'CPU s':>9}{'RSS MiB':>9}")
for label, (wall, cpu, rss) in d.items():
    print(f"{label:22}{wall:9.2f}{cpu:9.2f}{rss / 1024:9.1f}")
for label, (wall, cpu, rss) in p.items():
    print(f"{label + ' /segment':22}{wall / n * 1000:7.1f}ms{cpu / n * 1000:7.1f}ms{rss / 1024:9.1f}")
w, s, b = d["walg-delta"], d["pgstrata-delta"], d["pgbackrest-delta"]
print(f"delta backup wall: wal-g/pgbackrest-front-end {w[0] / s[0]:.2f}, wal-g/pgBackRest-2.45 {w[0] / b[0]:.2f}")
w, s, b = p["walg-push"], p["pgstrata-push"], p["pgbackrest-push"]
print(f"wal-push per segment wall: wal-g/pgbackrest-front-end {w[0] / s[0]:.2f}, wal-g/pgBackRest-2.45 {w[0] / b[0]:.2f}")
PY
