#!/usr/bin/env bash
# Every test: unit tests, DPDK port tests on net_ring/net_null, and the
# cross-process tests over virtio links. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Integration tests run the release binaries, so build them first.
cargo build --release --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
