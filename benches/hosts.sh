#!/usr/bin/env bash
# Backup through pg1-host (the repository host reading the cluster through the database host's
# TLS server, over loopback) against the same backup taken locally, in one run.
#   benches/hosts.sh [SCALE]        (pgbench scale, default 50 = ~750 MB)
#   PROCESS_MAX="2 4"               (process-max values to measure; default "2 4")
# For each process-max: a full backup with the data directory local, then one through pg1-host
# (the server restarted first, so its peak RSS is this run's), caches dropped before each. Prints
# wall time, throughput (data directory bytes per second), the pg1-host/local throughput ratio,
# the backup's peak RSS and the server's (VmHWM). Archive check off (this measures the copy).
# Needs PostgreSQL binaries, openssl and GNU time (/usr/bin/time).
set -euo pipefail
SCALE="${1:-50}"
PROCESS_MAX="${PROCESS_MAX:-2 4}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PG_BIN="${PGSTRATA_PG_BIN:-/usr/lib/postgresql/15/bin}"
HOST=127.0.0.3
[ -x /usr/bin/time ] || { echo "hosts: GNU time not found (apt-get install time)" >&2; exit 1; }

(cd "$ROOT" && cargo build --release --locked --quiet --bin pgstrata)
W="$(mktemp -d "${BENCH_DIR:-/tmp}/pgstrata-hosts-XXXXXX")"
chmod 0755 "$W"
cd "$W"
cp "$ROOT/target/release/pgstrata" "$W/pgstrata"
mkdir -p "$W/sock" "$W/lock" "$W/pki" "$W/repo-local" "$W/repo-remote"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
TLS_PORT=$(free_port)
SERVER=""
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2> /dev/null || true
  as_pg "$PG_BIN/pg_ctl" -D "$W/data" -m immediate -w stop > /dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then echo "hosts: kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

# A test CA, the database host's server certificate, the repository host's client certificate.
ossl() { openssl "$@" 2> /dev/null; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
  -addext basicConstraints=critical,CA:TRUE -keyout pki/ca.key -out pki/ca.crt
for who in server:db-host client:bench; do
  name=${who%%:*}; cn=${who#*:}
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:%s\n' "$HOST" > "pki/$name.ext"
  ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$cn" -keyout "pki/$name.key" -out "pki/$name.csr"
  ossl x509 -req -in "pki/$name.csr" -CA pki/ca.crt -CAkey pki/ca.key -CAcreateserial -days 1 -extfile "pki/$name.ext" -out "pki/$name.crt"
done

if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$W"; as_pg() { runuser -u postgres -- "$@"; }; else as_pg() { "$@"; }; fi
as_pg "$PG_BIN/initdb" -D "$W/data" -U postgres --data-checksums > /dev/null
as_pg "$PG_BIN/pg_ctl" -D "$W/data" -l "$W/pg.log" -o "-c listen_addresses='' -c unix_socket_directories='$W/sock' -p $PORT" -w start > /dev/null
as_pg "$PG_BIN/pgbench" -h "$W/sock" -p "$PORT" -U postgres -i -s "$SCALE" -q postgres > /dev/null 2>&1
DATA_BYTES=$(du -sb "$W/data" | cut -f1)

stanza="[bench]
pg1-path=$W/data
pg1-socket-path=$W/sock
pg1-port=$PORT"
common="lock-path=$W/lock
repo1-retention-full=9999999
log-level-console=warn
log-level-file=off
start-fast=y
archive-check=n"
printf '[global]\nrepo1-path=%s\n%s\n%s\n' "$W/repo-local" "$common" "$stanza" > local.conf
printf '[global]\nrepo1-path=%s\n%s\n%s\npg1-host=%s\npg1-host-type=tls\npg1-host-port=%s\npg1-host-ca-file=%s\npg1-host-cert-file=%s\npg1-host-key-file=%s\n' \
  "$W/repo-remote" "$common" "$stanza" "$HOST" "$TLS_PORT" "$W/pki/ca.crt" "$W/pki/client.crt" "$W/pki/client.key" > remote.conf
printf '[global]\ntls-server-address=%s\ntls-server-port=%s\ntls-server-auth=bench=bench\ntls-server-ca-file=%s\ntls-server-cert-file=%s\ntls-server-key-file=%s\nlog-level-console=warn\nlog-level-file=off\n%s\n' \
  "$HOST" "$TLS_PORT" "$W/pki/ca.crt" "$W/pki/server.crt" "$W/pki/server.key" "$stanza" > server.conf
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$W"

start_server() {
  [ -n "$SERVER" ] && { kill "$SERVER"; wait "$SERVER" 2> /dev/null || true; }
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$W/pgstrata" --config="$W/server.conf" server &
  else
    "$W/pgstrata" --config="$W/server.conf" server &
  fi
  SERVER=$!
  for _ in $(seq 1 100); do as_pg "$W/pgstrata" --config="$W/server.conf" server-ping > /dev/null 2>&1 && return 0; sleep 0.1; done
  echo "hosts: the server did not start" >&2; exit 1
}
measure() { # config, process-max: prints "wall rss_kib cpu_s"
  sync; echo 3 > /proc/sys/vm/drop_caches 2> /dev/null || true
  as_pg /usr/bin/time -f "%e %M %U %S" -o "$W/time.out" "$W/pgstrata" --config="$W/$1" --stanza=bench backup --type=full --process-max="$2" 2> /dev/null > /dev/null
  read -r wall rss user sys < "$W/time.out"
  echo "$wall $rss $(python3 -c "print(round($user + $sys, 2))")"
}
server_cpu() { # seconds of CPU the server has used
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$SERVER/stat"
}
start_server
as_pg "$W/pgstrata" --config="$W/local.conf" --stanza=bench stanza-create > /dev/null
as_pg "$W/pgstrata" --config="$W/remote.conf" --stanza=bench stanza-create > /dev/null

echo "data directory: $((DATA_BYTES / 1048576)) MiB (pgbench scale $SCALE); zst-3, full backups, caches dropped"
printf '%-12s %10s %10s %10s %12s %12s %9s\n' process-max local_s pg1host_s ratio local_MiB/s pg1host_MiB/s server_rss
for pm in $PROCESS_MAX; do
  start_server
  read -r lw lrss lcpu < <(measure local.conf "$pm")
  before=$(server_cpu)
  read -r rw rrss rcpu < <(measure remote.conf "$pm")
  scpu=$(python3 -c "print(round($(server_cpu) - $before, 2))")
  srss=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status")
  python3 - "$pm" "$lw" "$rw" "$DATA_BYTES" "$srss" "$lrss" "$rrss" "$lcpu" "$rcpu" "$scpu" <<'PY'
import sys
pm, lw, rw, size, srss, lrss, rrss = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
lcpu, rcpu, scpu = float(sys.argv[8]), float(sys.argv[9]), float(sys.argv[10])
mib = size / 1048576
print(f"{pm:<12} {lw:>10.2f} {rw:>10.2f} {lw / rw:>10.2f} {mib / lw:>12.1f} {mib / rw:>12.1f} {srss / 1024:>7.1f}MiB"
      f"   (backup RSS local {lrss / 1024:.1f} MiB, pg1-host {rrss / 1024:.1f} MiB;"
      f" CPU local {lcpu:.2f} s, pg1-host {rcpu:.2f} s + server {scpu:.2f} s)")
PY
done
