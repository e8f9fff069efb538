#!/usr/bin/env bash
# Peak RSS of backup and restore against the number of files, everything else equal: a fresh
# cluster plus N files of 10 KiB in its data directory, backed up and restored by pgstrata
# (process-max=2, zst). Run it for two sizes and compare:
#   benches/memory-probe.sh 1000 100000
# Needs PostgreSQL binaries (PGSTRATA_PG_BIN) and GNU time (/usr/bin/time).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PG_BIN="${PGSTRATA_PG_BIN:-/usr/lib/postgresql/15/bin}"
[ -x /usr/bin/time ] || { echo "memory-probe: GNU time not found (apt-get install time)" >&2; exit 1; }
[ $# -gt 0 ] || { echo "usage: benches/memory-probe.sh N [N...]" >&2; exit 2; }
(cd "$ROOT" && cargo build --release --quiet --bin pgstrata)
if [ "$(id -u)" = 0 ]; then as_pg() { runuser -u postgres -- "$@"; }; else as_pg() { "$@"; }; fi
for N in "$@"; do
  W="$(mktemp -d "${BENCH_DIR:-/tmp}/pgstrata-memprobe-XXXXXX")"
  chmod 0755 "$W"
  mkdir -p "$W/sock" "$W/lock"
  cp "$ROOT/target/release/pgstrata" "$W/pgstrata"
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf '[global]\nrepo1-path=%s\nlock-path=%s\nlog-level-console=warn\nlog-level-file=off\nstart-fast=y\nprocess-max=2\n[p]\npg1-path=%s\npg1-socket-path=%s\npg1-port=%s\npg1-user=postgres\n' \
    "$W/repo" "$W/lock" "$W/data" "$W/sock" "$PORT" > "$W/c.conf"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$W"
  cleanup() { as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m immediate -w stop > /dev/null 2>&1 || true; rm -rf "$W"; }
  trap cleanup EXIT
  as_pg "$PG_BIN/initdb" --data-checksums -A trust -U postgres -D "$W/data" > /dev/null
  printf "listen_addresses = ''\nunix_socket_directories = '%s'\nport = %s\narchive_mode = on\narchive_command = '%s --config=%s --stanza=p archive-push %%p'\n" \
    "$W/sock" "$PORT" "$W/pgstrata" "$W/c.conf" >> "$W/data/postgresql.conf"
  as_pg python3 - "$W/data/probe" "$N" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
block = os.urandom(1024) * 10
for i in range(n):
    sub = os.path.join(d, str(i // 10000))
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, str(i)), 'wb') as f:
        f.write(block)
PY
  as_pg "$PG_BIN/pg_ctl" -D "$W/data" -l "$W/pg.log" -w start > /dev/null
  as_pg "$W/pgstrata" --config="$W/c.conf" --stanza=p stanza-create
  cd "$W"
  as_pg /usr/bin/time -f "files=$N backup  wall %e s  peak RSS %M KiB" "$W/pgstrata" --config="$W/c.conf" --stanza=p backup --type=full
  as_pg /usr/bin/time -f "files=$N restore wall %e s  peak RSS %M KiB" "$W/pgstrata" --config="$W/c.conf" --stanza=p restore --pg1-path="$W/restored"
  cd "$ROOT"
  cleanup
  trap - EXIT
done
