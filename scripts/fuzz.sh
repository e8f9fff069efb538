#!/usr/bin/env bash
# Fuzz targets of the parsers (blob decoder, pg_control / WAL header, manifest reader, history
# files, blobs and data-seal answers received from a database host).
#   scripts/fuzz.sh build            build every target, unoptimized (what CI does: it checks they build)
#   scripts/fuzz.sh run [SECONDS]    run each target for SECONDS (default 60) from fixtures/ seeds
# cargo-fuzz needs nightly compiler features; this machine has one stable toolchain, so the
# build runs with RUSTC_BOOTSTRAP=1. cargo-fuzz is installed into the checkout if missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TOOLS="$ROOT/.emu/tools"
CARGO_FUZZ_VERSION="0.13.2"
export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz > /dev/null && [ ! -x "$TOOLS/bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS" >&2
  cargo install --quiet --locked --root "$TOOLS" "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
export PATH="$TOOLS/bin:$PATH"
TARGETS="blob_decoder pg_control manifest_reader history_file received_blob seal_answer"
case "${1:-build}" in
  build)
    for t in $TARGETS; do cargo fuzz build --dev --fuzz-dir fuzz "$t"; done
    ;;
  run)
    secs="${2:-60}"
    for t in $TARGETS; do
      corpus="fuzz/corpus/$t"
      mkdir -p "$corpus"
      case "$t" in
        blob_decoder) cp fixtures/format/v1/*.blob "$corpus/" ;;
        pg_control) cp fixtures/pg/pg_control-15 fixtures/pg/wal-first-page-15 "$corpus/" ;;
        manifest_reader) cp fixtures/format/v1/backup.manifest "$corpus/" ;;
        history_file) printf '1\t0/3000000\tno recovery target specified\n' > "$corpus/seed" ;;
        received_blob) cp fixtures/format/v1/plain.blob fixtures/format/v1/zstd-multiframe.blob fixtures/format/v1/lz4.blob "$corpus/" ;;
        seal_answer)
          # One record: a 150-byte outcome (a vanished file's account), no blob.
          printf '\x96\x00\x00\x00\x00\x00\x00\x00%s' '{"Done":{"plain_len":0,"stored_len":0,"chunks":[],"page_errors":[],"stored_pages":[],"page_chunks":[],"page_digests":[],"same":false,"vanished":true}}' > "$corpus/seed" ;;
      esac
      cargo fuzz run --fuzz-dir fuzz "$t" "$corpus" -- -max_total_time="$secs" -max_len=65536
    done
    ;;
  *) echo "usage: $0 build|run [SECONDS]" >&2; exit 2 ;;
esac
