#!/usr/bin/env bash
# The gateway's main job on virtual devices: sekisho-dataplane between the
# generator's two virtio links; the clinics' traffic arrives in an ESP tunnel
# (AES-GCM, IPv6 outer), passes the tenant's firewall rules and NAT onto the
# pool, reaches the servers, and each server's answer goes back through the
# session and the tunnel; every packet is checked at the server and back at
# the clinic, with live counters and a summary.
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
# tunnel to the clinics' router, their tenant and the NAT pool (keys,
# subnets, pool and rule in perf/src/topology.rs).
$bin/sekisho-gen --outside-sock "$dir/outside.sock" --inside-sock "$dir/inside.sock" \
    config --run-dir "$dir/run" --file-prefix demo-dp --worker-lcore $(( $(nproc) > 1 ? 1 : 0 )) > "$dir/dataplane.toml"

echo "== generator (plays the clinics' router, at the far end of the tunnel, and the servers answering them) on lcore 0"
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
echo "== NAT log: port blocks lent to tenants (RFC 7422), $dir/run/nat.jsonl"
cat "$dir/run/nat.jsonl"
python3 - "$dir/gen.json" "$dir/dataplane.json" <<'PY'
import json, sys
gen = json.load(open(sys.argv[1])); dp = json.load(open(sys.argv[2]))
r = gen["report"]
print("== summary")
c = dp['counters']
print(f"packets {r['packets']:,} from the clinics through the tunnel and NAT, 64-1440 bytes: at the server translated {r['translated']:,}; "
      f"answers back at the clinic intact {r['received_intact']:,}, missing {r['missing']}, corrupted {r['corrupted']}, "
      f"duplicates {r['duplicates']}, misrouted {r['misrouted']}")
print(f"{2*r['packets']/r['seconds']:,.0f} packets/s, {2*r['bytes']*8/r['seconds']/1e9:.2f} Gbit/s through the gateway, both ways "
      f"(window-limited verification, not a rate test: see perf/)")
print(f"gateway: decrypted {c['esp_decrypted']:,}, NAT sessions {c['nat_sessions_created']}, translated {c['nat_translated_up']:,} up "
      f"and {c['nat_translated_down']:,} down, encrypted {c['esp_encrypted']:,}, dropped {c['dropped']}, "
      f"mbufs in use after close {dp['mempool']['in_use_after_close']}")
ok = r["received_intact"] == r["packets"] and r["translated"] == r["packets"] and dp["mempool"]["in_use_after_close"] == 0
print("RESULT:", "OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
