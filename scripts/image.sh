#!/usr/bin/env bash
# Builds the container image PGO's database and repository host containers can run, and
# smoke-tests it from its own root filesystem.
#
#   scripts/image.sh                      release build, image in target/image/
#   PGSTRATA_BIN=target/debug/pgstrata scripts/image.sh    (package a given binary: the tests do)
#
# The image is built FROM scratch (no base image can be pulled here): the pgstrata binary, the
# shared libraries it links (glibc's, copied from this machine as `ldd` lists them), `pgbackrest`
# as a link in /usr/local/bin and /bin (PGO's Jobs call /bin/pgbackrest), /etc/passwd and
# /etc/group with PGO's postgres user (uid 26), /tmp and /etc/pgbackrest/conf.d. It is written
# as an OCI image layout (target/image/oci, loadable with `skopeo copy oci:...` or `docker load`
# of its tar, target/image/pgstrata-oci.tar) next to the root filesystem it was made from
# (target/image/rootfs).
#
# Smoke test, from the root filesystem (chroot as root; as another user through its own
# dynamic loader): `pgbackrest version`, then a `server` with a throwaway CA answers
# `server-ping` (exit 0), and `server-ping` with no server fails.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${IMAGE_OUT:-$ROOT/target/image}"
if [ -z "${PGSTRATA_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --locked --quiet --bin pgstrata)
  PGSTRATA_BIN="$ROOT/target/release/pgstrata"
fi
[ -x "$PGSTRATA_BIN" ] || { echo "image: no binary at $PGSTRATA_BIN" >&2; exit 1; }

rm -rf "$OUT"
ROOTFS="$OUT/rootfs"
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/bin" "$ROOTFS/etc/pgbackrest/conf.d" "$ROOTFS/tmp"
chmod 1777 "$ROOTFS/tmp"
install -m 0755 "$PGSTRATA_BIN" "$ROOTFS/usr/local/bin/pgstrata"
# Debug information stays in the build tree, not in the image.
if command -v strip > /dev/null; then strip --strip-debug "$ROOTFS/usr/local/bin/pgstrata"; fi
ln -s pgstrata "$ROOTFS/usr/local/bin/pgbackrest"
ln -s /usr/local/bin/pgstrata "$ROOTFS/bin/pgbackrest"
# The libraries the binary needs, at the paths its loader looks in.
ldd "$PGSTRATA_BIN" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u | while read -r lib; do
  mkdir -p "$ROOTFS$(dirname "$lib")"
  cp -L "$lib" "$ROOTFS$lib"
done
printf 'root:x:0:0:root:/:/sbin/nologin\npostgres:x:26:26:PostgreSQL:/tmp:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' \
  > "$ROOTFS/etc/passwd"
printf 'root:x:0:\npostgres:x:26:\nnogroup:x:65534:\n' > "$ROOTFS/etc/group"

# OCI image layout: one layer (the root filesystem, files owned by root, times fixed), its
# config (runs as postgres, `pgbackrest server` by default as PGO's sidecar), a manifest, an index.
python3 - "$ROOTFS" "$OUT" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
rootfs, out = sys.argv[1], sys.argv[2]
blobs = os.path.join(out, "oci", "blobs", "sha256")
os.makedirs(blobs)
def put(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
    for dirpath, dirnames, filenames in os.walk(rootfs):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            path = os.path.join(dirpath, name)
            info = tar.gettarinfo(path, os.path.relpath(path, rootfs))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
layer_tar = raw.getvalue()
diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
layer, layer_size = put(gzip.compress(layer_tar, compresslevel=6, mtime=0))
config = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "User": "26:26",
        "Env": ["PATH=/usr/local/bin:/bin"],
        "Entrypoint": ["/usr/local/bin/pgbackrest"],
        "Cmd": ["server"],
        "WorkingDir": "/tmp",
    },
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
}
config_digest, config_size = put(json.dumps(config, sort_keys=True).encode())
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
}
manifest_digest, manifest_size = put(json.dumps(manifest, sort_keys=True).encode())
index = {
    "schemaVersion": 2,
    "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest,
        "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": "pgstrata:latest"},
    }],
}
with open(os.path.join(out, "oci", "index.json"), "w") as f:
    json.dump(index, f)
with open(os.path.join(out, "oci", "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with tarfile.open(os.path.join(out, "pgstrata-oci.tar"), "w") as tar:
    tar.add(os.path.join(out, "oci"), arcname=".")
print(f"image: {manifest_digest} ({layer_size} bytes compressed)")
PY

# Smoke test from the image's own files.
if [ "$(id -u)" = 0 ]; then
  in_image() { chroot "$ROOTFS" "$@"; }
else
  # Not root: the image's loader and libraries, the program still called by the link's name.
  LOADER="$(find "$ROOTFS" -name 'ld-linux-*.so.*' | head -1)"
  LIBS="$(find "$ROOTFS" -name 'libc.so.*' -printf '%h\n' | head -1)"
  in_image() { local prog="$1"; shift; "$LOADER" --library-path "$LIBS" --argv0 "$prog" "$ROOTFS/usr/local/bin/pgstrata" "$@"; }
fi
version="$(in_image /usr/local/bin/pgbackrest version)"
echo "image: pgbackrest version -> $version"
case "$version" in pgBackRest\ *) ;; *) echo "image: unexpected version output" >&2; exit 1 ;; esac

PKI="$ROOTFS/tmp/smoke"
mkdir -p "$PKI"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=smoke-ca \
  -addext basicConstraints=critical,CA:TRUE -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2> /dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=smoke-server \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$PKI/server.key" -out "$PKI/server.crt" 2> /dev/null
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
prefix=""; [ "$(id -u)" = 0 ] || prefix="$ROOTFS"
printf '[global]\ntls-server-address=127.0.0.1\ntls-server-port=%s\ntls-server-auth=client=*\ntls-server-ca-file=%s\ntls-server-cert-file=%s\ntls-server-key-file=%s\nlog-level-file=off\n' \
  "$PORT" "$prefix/tmp/smoke/ca.crt" "$prefix/tmp/smoke/server.crt" "$prefix/tmp/smoke/server.key" \
  > "$ROOTFS/etc/pgbackrest/conf.d/pgbackrest-server.conf"
CONFIG="--config-path=$prefix/etc/pgbackrest"
if in_image /usr/local/bin/pgbackrest "$CONFIG" server-ping > /dev/null 2>&1; then
  echo "image: server-ping succeeded with no server listening" >&2; exit 1
fi
in_image /usr/local/bin/pgbackrest "$CONFIG" server > "$OUT/server.log" 2>&1 &
SERVER=$!
cleanup() { kill "$SERVER" 2> /dev/null || true; wait "$SERVER" 2> /dev/null || true; rm -rf "$PKI" "$ROOTFS/etc/pgbackrest/conf.d/pgbackrest-server.conf"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  if in_image /usr/local/bin/pgbackrest "$CONFIG" server-ping > /dev/null 2>&1; then
    echo "image: server-ping -> exit 0 (server in the image answered)"
    exit 0
  fi
  sleep 0.1
done
echo "image: the image's server never answered server-ping" >&2
cat "$OUT/server.log" >&2
exit 1
