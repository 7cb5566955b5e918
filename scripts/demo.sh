#!/usr/bin/env bash
# The gateway's main job on virtual devices: sekisho-dataplane between the
# generator's two virtio links; the clinics' traffic arrives in an ESP tunnel
# (AES-GCM, IPv6 outer) and the servers' answers leave in it, mixed IPv4/IPv6
# inside, every packet checked both ways, with live counters and a summary.
# Installs what is missing first.
#   PACKETS=20000000 bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --bins
bin=target/release
packets=${PACKETS:-10000000}
dir=$(mktemp -d /tmp/sekisho-demo.XXXXXX)
cleanup() { kill "${gen_pid:-}" "${dp_pid:-}" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

# The gateway between the generator's two virtio links, with a static ESP
# tunnel to the clinics' router (keys and subnets in perf/src/topology.rs).
$bin/sekisho-gen --outside-sock "$dir/outside.sock" --inside-sock "$dir/inside.sock" \
    config --run-dir "$dir/run" --file-prefix demo-dp --worker-lcore $(( $(nproc) > 1 ? 1 : 0 )) > "$dir/dataplane.toml"

echo "== generator (plays the clinics' router, at the far end of the tunnel, and the servers' router) on lcore 0"
$bin/sekisho-gen --outside-sock "$dir/outside.sock" --inside-sock "$dir/inside.sock" --lcore 0 --file-prefix demo-gen \
    verify --packets "$packets" --progress --gateway-stats "$dir/run/stats" > "$dir/gen.json" 2> >(grep --line-buffered -v "^VHOST_CONFIG" >&2) &
gen_pid=$!
while [ ! -S "$dir/outside.sock" ] || [ ! -S "$dir/inside.sock" ]; do sleep 0.1; done
echo "== sekisho-dataplane $(cat "$dir/dataplane.toml" | grep workers)"
$bin/sekisho-dataplane run --config "$dir/dataplane.toml" > "$dir/dataplane.json" 2> "$dir/dataplane.log" &
dp_pid=$!
wait $gen_pid
kill -TERM $dp_pid
wait $dp_pid
echo "== gateway's final counters"
grep -v "^EAL\|^VHOST\|^TELEMETRY\|^virtio_user\|^vhost_user" "$dir/dataplane.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -v " INFO " || true
python3 - "$dir/gen.json" "$dir/dataplane.json" <<'PY'
import json, sys
gen = json.load(open(sys.argv[1])); dp = json.load(open(sys.argv[2]))
r = gen["report"]
print("== summary")
print(f"packets {r['packets']:,} both ways through the tunnel, 64-1440 bytes, IPv4+IPv6 inside: intact {r['received_intact']:,}, "
      f"missing {r['missing']}, corrupted {r['corrupted']}, duplicates {r['duplicates']}, misrouted {r['misrouted']}")
print(f"{r['packets']/r['seconds']:,.0f} packets/s, {r['bytes']*8/r['seconds']/1e9:.2f} Gbit/s through the gateway "
      f"(window-limited verification, not a rate test: see perf/)")
print(f"gateway: decrypted {dp['counters']['esp_decrypted']:,}, encrypted {dp['counters']['esp_encrypted']:,}, dropped {dp['counters']['dropped']}, "
      f"mbufs in use after close {dp['mempool']['in_use_after_close']}")
ok = r["received_intact"] == r["packets"] and dp["mempool"]["in_use_after_close"] == 0
print("RESULT:", "OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
