#!/usr/bin/env bash
# Sekisho's dataplane against DPDK's ipsec-secgw (run.sh) on the same workload:
# the same pcap (net_pcap0, infinite_rx) in, net_null0 out, the same worker lcore,
# rates from DPDK telemetry (measure.py). The two alternate --repeat times per
# frame size; prints a table and one JSON line per frame size (medians of the
# forwarded rate, ratio sekisho/secgw), also appended to perf/results/secgw.jsonl.
#   perf/secgw/compare.sh [--frame-lens 64,1400] [--packets 16384] [--seconds 5]
#                         [--warmup 2] [--repeat 3] [--lcores 0,1] [--bypass]
# ESP mode: inbound AES-128-GCM decryption, IPv6 outer, IPv4 inner. --bypass:
# the same inner frames in clear, forwarded plainly (secgw's bypass policy,
# Sekisho's [esp] bypass = true without tunnels): the harness's own cost.
# A run is invalid (and so is its line) if Sekisho counted any drop, or if
# secgw sent under 99% of what it received.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
die() { echo "secgw/compare.sh: $*" >&2; exit 1; }

frame_lens=64,1400 packets=16384 seconds=5 warmup=2 repeat=3 lcores=0,1 mode=esp
while [ $# -gt 0 ]; do
    case "$1" in
        --frame-lens) frame_lens=$2; shift 2 ;;
        --packets) packets=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --repeat) repeat=$2; shift 2 ;;
        --lcores) lcores=$2; shift 2 ;;
        --bypass) mode=bypass; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
done
# Sekisho's manager thread needs an lcore of its own, so one lcore will not do.
[[ $lcores =~ ^([0-9]+),([0-9]+)$ ]] || die "--lcores takes MAIN,WORKER, got '$lcores'"
main=${BASH_REMATCH[1]} worker=${BASH_REMATCH[2]}
[[ $frame_lens =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--frame-lens takes N[,N...], got '$frame_lens'"
[ "$repeat" -ge 1 ] || die "--repeat must be at least 1"
[ "$(id -u)" = 0 ] || die "needs root (hugepages, /var/run/dpdk)"
sekisho=$root/target/release/sekisho-dataplane
[ -x "$sekisho" ] || die "$sekisho is missing: build it first (cargo build --release)"

# Sekisho's inbound SPI names the owning worker (bits 31..26 = 0), a non-zero
# generation (25..20 = 1) and a slot (19..0 = 0); secgw takes any SPI.
spi=0x00100000
# Sekisho drops frames not addressed to its port's MAC; net_pcap0's is
# 02:70:63:61:70:00 ("pcap" and the device index). secgw does not look.
pcap_mac=02:70:63:61:70:00
nb_mbufs=$((packets + 16384)); [ $nb_mbufs -ge 16383 ] || nb_mbufs=16383
mem_mb=$((160 + nb_mbufs * 3 / 1024)); [ $mem_mb -ge 256 ] || mem_mb=256   # as run.sh

work=$(mktemp -d /tmp/sekisho-compare.XXXXXX)
prefix=sekisho-cmp-$$
sock=/var/run/dpdk/$prefix/dpdk_telemetry.v2
stop_sekisho() {
    if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then
        kill -INT "$pid"   # Sekisho stops its workers and prints its summary on SIGINT
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "${pid:-}" 2>/dev/null || true
    pid=
    rm -f /dev/hugepages/"$prefix"map_*   # DPDK leaves its hugepage files behind
    rm -rf "/var/run/dpdk/$prefix" "$work/run"
}
trap 'stop_sekisho; rm -rf "$work"' EXIT

# One Sekisho run on $1 (the pcap); appends a JSON line to $work/runs.jsonl.
sekisho_once() {
    local pcap=$1 frame_len=$2 rep=$3 tunnel=
    if [ $mode = esp ]; then
        tunnel=$(cat <<EOF
[[tunnels]]
name = "bench"
remote = "2001:db8:a::20"
ipv4 = ["203.0.113.0/24"]
[[tunnels.inbound]]
spi = $spi
key = "0102030405060708090a0b0c0d0e0f10a1a2a3a4"
replay_window = 0   # like secgw (no anti-replay): the pcap repeats its sequence numbers
[tunnels.outbound]
spi = 4096
key = "0102030405060708090a0b0c0d0e0f10a1a2a3a4"
EOF
)
    fi
    cat >"$work/sekisho.toml" <<EOF
[dataplane]
main_lcore = $main
workers = [$worker]
mempool_size = $nb_mbufs
run_dir = "$work/run"
eal_args = ["--file-prefix=$prefix", "--single-file-segments", "-m", "$mem_mb", "--no-pci"]

[esp]
outer_mtu = 1500
bypass = $([ $mode = bypass ] && echo true || echo false)

[ports.outside]
device = "net_pcap0,rx_pcap=$pcap,infinite_rx=1"
ipv6 = ["2001:db8:a::1/64"]

[ports.inside]
device = "net_null0,no-rx=1"
ipv4 = ["10.0.0.1/24"]
neighbours = [{ ip = "10.0.0.7", mac = "02:00:00:00:00:b1" }]

$tunnel
EOF
    "$sekisho" check -c "$work/sekisho.toml" >/dev/null || die "sekisho-dataplane check refused $work/sekisho.toml"
    local log=$work/sekisho.log out=$work/sekisho.out
    RUST_LOG=info NO_COLOR=1 "$sekisho" run -c "$work/sekisho.toml" >"$out" 2>"$log" &
    pid=$!
    for _ in $(seq 300); do   # up to 30 s: the pcap is loaded into mbufs at start
        grep -q ' forwarding ' "$log" && [ -S "$sock" ] && break
        kill -0 $pid 2>/dev/null || { tail -30 "$log" >&2; die "sekisho-dataplane exited during start-up (log above)"; }
        sleep 0.1
    done
    grep -q ' forwarding ' "$log" && [ -S "$sock" ] || { tail -20 "$log" >&2; die "sekisho-dataplane did not start in 30 s"; }
    # measure.py reads ethdev 0 as RX and 1 as TX: outside is probed first.
    grep -q 'side=outside port=0 name="net_pcap0" mac='"$pcap_mac" "$log" \
        || { grep 'port started' "$log" >&2; die "outside is not ethdev 0 with MAC $pcap_mac"; }
    local rates
    rates=$(/usr/bin/python3 "$here/measure.py" --socket "$sock" --warmup "$warmup" --window "$seconds") \
        || { tail -20 "$log" >&2; die "reading Sekisho's telemetry failed"; }
    stop_sekisho
    grep -q '"event":"stopped"' "$out" || { tail -20 "$log" >&2; die "sekisho-dataplane printed no summary"; }
    /usr/bin/python3 - "$rates" "$out" "$frame_len" "$rep" >>"$work/runs.jsonl" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
summary = [json.loads(l) for l in open(sys.argv[2]) if '"event":"stopped"' in l][-1]
drops = {k: v for k, v in summary["counters"].items() if k.startswith("drop_") and v}
print(json.dumps({"impl": "sekisho", "frame_len": int(sys.argv[3]), "rep": int(sys.argv[4]), **r,
                  "drops": drops, "valid": not drops}))
PY
}

# One secgw run through run.sh on the same pcap; appends to $work/runs.jsonl.
secgw_once() {
    local pcap=$1 frame_len=$2 rep=$3 line
    local args=(--pcap "$pcap" --frame-len "$frame_len" --packets "$packets" --seconds "$seconds"
                --warmup "$warmup" --lcores "$lcores" --spi "$spi")
    [ $mode = bypass ] && args+=(--bypass)
    line=$("$here/run.sh" "${args[@]}" 2>"$work/secgw.err") || { cat "$work/secgw.err" >&2; die "run.sh failed"; }
    /usr/bin/python3 - "$line" "$rep" >>"$work/runs.jsonl" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
# secgw keeps no drop counters we can read (its stats commands answer null in
# 22.11): a gap between what it took in and what it sent is the drop count.
print(json.dumps({"impl": "secgw", "frame_len": r["frame_len"], "rep": int(sys.argv[2]), "outer_len": r["outer_len"],
                  "window_s": r["window_s"], "rx_pps": r["rx_pps"], "tx_pps": r["tx_pps"],
                  "valid": r["tx_pps"] >= 0.99 * r["rx_pps"]}))
PY
}

: >"$work/runs.jsonl"
for frame_len in ${frame_lens//,/ }; do
    # ONE pcap per frame size, fed to both: the same frames, addressed to Sekisho's port.
    pcap=$work/in-$mode-$frame_len.pcap
    margs=(--out "$pcap" --packets "$packets" --frame-len "$frame_len" --spi "$spi" --dst-mac "$pcap_mac")
    [ $mode = bypass ] && margs+=(--bypass)
    echo "secgw/compare.sh: making $pcap ($packets frames)" >&2
    /usr/bin/python3 "$here/make_pcap.py" "${margs[@]}" >"$pcap.json" || die "pcap generation failed"
    for rep in $(seq "$repeat"); do
        echo "secgw/compare.sh: frame $frame_len, run $rep/$repeat: ipsec-secgw" >&2
        secgw_once "$pcap" "$frame_len" "$rep"
        echo "secgw/compare.sh: frame $frame_len, run $rep/$repeat: sekisho" >&2
        sekisho_once "$pcap" "$frame_len" "$rep"
        tail -2 "$work/runs.jsonl" >&2
    done
    rm -f "$pcap"
done

mkdir -p "$root/perf/results"
/usr/bin/python3 - "$work/runs.jsonl" "$mode" "$packets" "$seconds" "$warmup" "$lcores" "$root/perf/results/secgw.jsonl" <<'PY'
import json, os, statistics, sys, time
runs_file, mode, packets, seconds, warmup, lcores, results = sys.argv[1:]
runs = [json.loads(l) for l in open(runs_file)]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
stamp = int(time.time())
lines = []
print(f"\n{mode} mode, {packets} frames in the pcap, {seconds} s windows after {warmup} s warm-up, lcores {lcores}; Mpps forwarded")
print(f"{'frame':>5} {'outer':>5}  {'ipsec-secgw median (runs)':<34} {'sekisho median (runs)':<34} {'ratio':>6}  valid")
for frame_len in dict.fromkeys(r["frame_len"] for r in runs):
    line = {"bench": "secgw_compare", "mode": mode, "frame_len": frame_len, "run": stamp, "cpu": cpu,
            "cores": os.cpu_count(), "lcores": lcores, "packets_in_pcap": int(packets),
            "window_s": float(seconds), "warmup_s": float(warmup)}
    cells = []
    for impl in ("secgw", "sekisho"):
        rs = [r for r in runs if r["frame_len"] == frame_len and r["impl"] == impl]
        line[impl] = {"median_tx_pps": statistics.median(r["tx_pps"] for r in rs),
                      "median_rx_pps": statistics.median(r["rx_pps"] for r in rs),
                      "runs": [{k: v for k, v in r.items() if k not in ("impl", "frame_len")} for r in rs]}
        each = " ".join("%.2f" % (r["tx_pps"] / 1e6) for r in rs)
        cells.append("%7.3f (%s)" % (line[impl]["median_tx_pps"] / 1e6, each))
    line["outer_len"] = next(r["outer_len"] for r in runs if r["frame_len"] == frame_len and r["impl"] == "secgw")
    line["ratio_pps"] = line["sekisho"]["median_tx_pps"] / line["secgw"]["median_tx_pps"]
    line["valid"] = all(r["valid"] for r in runs if r["frame_len"] == frame_len)
    print(f"{frame_len:>5} {line['outer_len']:>5}  {cells[0]:<34} {cells[1]:<34} {line['ratio_pps']:6.3f}  {'yes' if line['valid'] else 'NO'}")
    for r in runs:
        if r["frame_len"] == frame_len and not r["valid"]:
            print(f"      invalid: {r['impl']} run {r['rep']}: rx {r['rx_pps']} tx {r['tx_pps']} pps {r.get('drops', '')}")
    lines.append(json.dumps(line))
print()
print("\n".join(lines))
with open(results, "a") as f:
    f.write("".join(l + "\n" for l in lines))
PY
