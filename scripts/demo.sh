#!/usr/bin/env bash
# The gateway's main job on virtual devices: 1,000 clinics, each its own
# tenant with the same 192.168.1.0/24, connect over IPv6 and IPv4 to the
# control process and the dataplane (IKEv2 with certificates from a test CA,
# DH 14), open UDP, TCP and ICMP flows through their tunnels, the NAT and the
# firewall to the eligibility system's servers, and check every packet and
# every answer; live view each second, then the summary.
# Installs what is missing first. More options: sekisho-clinics demo --help.
#   CLINICS=10000 TRAFFIC_SECONDS=30 bash scripts/demo.sh --size 1400
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --bins
exec target/release/sekisho-clinics demo --clinics "${CLINICS:-1000}" --seconds "${TRAFFIC_SECONDS:-10}" "$@"
