#!/usr/bin/env bash
# Installs what Sekisho needs on Debian 12, idempotently: DPDK 22.11 and the
# toolchain for our bindings, hugepages and a mounted hugetlbfs.
set -euo pipefail

need_root() { [ "$(id -u)" = 0 ] || { echo "setup: run as root (apt, hugepages, mount)" >&2; exit 1; }; }

packages=(dpdk dpdk-dev libdpdk-dev libipsec-mb-dev pkg-config clang libclang-dev util-linux python3-scapy libssl-dev strongswan strongswan-swanctl charon-systemd libcharon-extra-plugins libstrongswan-extra-plugins nftables)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    need_root
    echo "setup: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust (rustup) first" >&2
    exit 1
fi

# 1 GiB of 2 MiB hugepages: the dataplane and the generator take 256 MiB each.
pages=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
if [ "$(cat $pages)" -lt 512 ]; then
    need_root
    echo 512 > $pages
fi
mkdir -p /dev/hugepages
mountpoint -q /dev/hugepages || { need_root; mount -t hugetlbfs nodev /dev/hugepages; }
# Files left by killed DPDK processes hold pages; ours all use the prefixes below.
rm -f /dev/hugepages/gen* /dev/hugepages/dp* /dev/hugepages/demo* /dev/hugepages/bench* 2>/dev/null || true
echo "setup: $(grep HugePages_Free /proc/meminfo)"
