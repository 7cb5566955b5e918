#!/usr/bin/env bash
# Every test: unit tests, DPDK port tests on net_ring/net_null, and the
# cross-process tests over virtio links. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Integration tests run the release binaries, so build them first.
cargo build --release --workspace --bins
cargo test --release --workspace
