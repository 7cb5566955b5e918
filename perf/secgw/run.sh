#!/usr/bin/env bash
# DPDK's own ipsec-secgw example as a benchmark peer (see shared/design/PEERS.md):
# INBOUND ESP decryption on one worker lcore, AES-128-GCM (crypto_aesni_gcm),
# IPv6-outer / IPv4-inner tunnel mode, net_pcap (infinite_rx) in, net_null out.
# Prints one JSON line with the rates read from DPDK telemetry over a fixed window.
#   perf/secgw/run.sh --frame-len 64 --packets 16384 --seconds 5 [--warmup 2]
#                     [--bypass] [--lcores 0,1] [--spi 0x04100000] [--no-huge]
#                     [--pcap FILE]
# --frame-len is the decrypted (forwarded) Ethernet frame, without FCS; the ESP
# frame fed in is longer and is reported as outer_len. --bypass feeds the same
# inner frames in clear through a bypass policy: the harness's own cost.
# --pcap feeds a pcap made elsewhere by make_pcap.py (with the same --frame-len,
# --spi and --bypass) instead of generating one, so that a comparison feeds
# exactly the same frames to each gateway.
# Sources and binary are built at run time in $SCRATCH (cached), never committed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "secgw/run.sh: $*" >&2; exit 1; }

frame_len=64 packets=16384 seconds=5 warmup=2 mode=esp lcores=0,1 spi=0x04100000 huge=1 pcap=
while [ $# -gt 0 ]; do
    case "$1" in
        --frame-len) frame_len=$2; shift 2 ;;
        --packets) packets=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --lcores) lcores=$2; shift 2 ;;
        --spi) spi=$2; shift 2 ;;
        --bypass) mode=bypass; shift ;;
        --no-huge) huge=0; shift ;;
        --pcap) pcap=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
done
# MAIN,WORKER: secgw's main lcore gets no queue (it busy-waits for the worker);
# a single lcore N makes the main lcore the worker and leaves the other core idle.
[[ $lcores =~ ^[0-9]+(,[0-9]+)?$ ]] || die "--lcores takes MAIN,WORKER or one lcore, got '$lcores'"
worker=${lcores##*,}
spi_dec=$((spi))   # secgw's config parser wants the SPI in decimal
[ "$(id -u)" = 0 ] || die "needs root (hugepages, /var/run/dpdk)"

SCRATCH=${SCRATCH:-/tmp/sekisho-secgw-build}
mkdir -p "$SCRATCH"
bin=$SCRATCH/ipsec-secgw/build/ipsec-secgw

# --- 1. build ipsec-secgw from dpdk-doc's examples (once; cached in $SCRATCH) ---
if [ ! -x "$bin" ]; then
    if ! dpkg -s dpdk-doc >/dev/null 2>&1; then
        echo "secgw/run.sh: installing dpdk-doc (ships the example sources)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y dpdk-doc >&2 || die "apt-get install dpdk-doc failed"
    fi
    examples=$(dirname "$(dpkg -L dpdk-doc | grep '/examples/ipsec-secgw$' || true)")
    [ -d "$examples/ipsec-secgw" ] && [ -d "$examples/common" ] || die "no ipsec-secgw/common examples in dpdk-doc"
    rm -rf "$SCRATCH/ipsec-secgw" "$SCRATCH/common"
    cp -r "$examples/ipsec-secgw" "$examples/common" "$SCRATCH/"
    find "$SCRATCH/ipsec-secgw" "$SCRATCH/common" -name '*.gz' -exec gunzip -f {} +  # Debian may compress them
    # secgw always asks for RX checksum offload; net_pcap/net_null offer none and it
    # exits "required RX offloads: 0xe, available RX offloads: 0x0". Drop the
    # checksum bits the device does not offer, right after the request is assembled.
    src=$SCRATCH/ipsec-secgw/ipsec-secgw.c
    sed -i '/local_port_conf.rxmode.offloads |= req_rx_offloads;/a\
	local_port_conf.rxmode.offloads &= ~(RTE_ETH_RX_OFFLOAD_CHECKSUM \& ~dev_info.rx_offload_capa); /* sekisho perf */' "$src"
    grep -q 'sekisho perf' "$src" || die "patch did not apply to $src (DPDK version changed?)"
    echo "secgw/run.sh: building $bin" >&2
    make -C "$SCRATCH/ipsec-secgw" -j1 >"$SCRATCH/build.log" 2>&1 || die "build failed, see $SCRATCH/build.log"
fi

# --- 2. input pcap (cached per parameters, unless --pcap gives one) ---
if [ -n "$pcap" ]; then
    [ -s "$pcap" ] || die "--pcap $pcap: no such file, or empty"
    pcap=$(realpath "$pcap")
    # outer_len: the captured length of the first record (24-byte file header, then
    # ts_sec, ts_usec, incl_len); make_pcap.py writes frames of one size.
    outer_len=$(/usr/bin/python3 -c 'import struct,sys; print(struct.unpack_from("<I", open(sys.argv[1],"rb").read(40), 32)[0])' "$pcap")
else
    pcap=$SCRATCH/in-$mode-$frame_len-$packets-$spi.pcap
    if [ ! -s "$pcap" ] || [ ! -s "$pcap.json" ]; then
        args=(--out "$pcap" --packets "$packets" --frame-len "$frame_len" --spi "$spi")
        [ $mode = bypass ] && args+=(--bypass)
        /usr/bin/python3 "$here/make_pcap.py" "${args[@]}" >"$pcap.json" || die "pcap generation failed"
    fi
    outer_len=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["outer_len"])' "$pcap.json")
fi

# --- 3. config and run ---
prefix=secgw-bench-$$
run=$(mktemp -d /tmp/sekisho-secgw-run.XXXXXX)
cleanup() {
    if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then
        kill -INT "$pid"   # secgw stops its lcores and closes ports on SIGINT
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f /dev/hugepages/"$prefix"map_*   # DPDK leaves its hugepage files behind
    rm -rf "/var/run/dpdk/$prefix" "$run"
}
trap cleanup EXIT

if [ $mode = esp ]; then policy="protect $spi_dec"; else policy=bypass; fi
cat >"$run/secgw.cfg" <<EOF
sp ipv4 in esp $policy pri 1 src 203.0.113.0/24 dst 10.0.0.0/24 sport 0:65535 dport 0:65535
sa in $spi_dec aead_algo aes-128-gcm aead_key 01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10:a1:a2:a3:a4 mode ipv6-tunnel src 2001:db8:a::20 dst 2001:db8:a::1
rt ipv4 dst 10.0.0.0/24 port 1
neigh port 1 02:00:00:00:00:b1
EOF

# The pool must hold the whole pcap (net_pcap's infinite_rx keeps every frame in an
# mbuf) plus the working set; secgw's default is 8192 mbufs. ~2.4 KB per mbuf, plus
# ~160 MB for the rest; at least 256 MB, and no more unless the pcap needs it
# (the hugepages are shared with other developers).
nb_mbufs=$((packets + 16384)); mem_mb=$((160 + nb_mbufs * 3 / 1024)); [ $mem_mb -ge 256 ] || mem_mb=256
if [ $huge = 1 ]; then mem=(-m $mem_mb --single-file-segments); else mem=(--no-huge -m $mem_mb); fi
cmd=("$bin" -l "$lcores" --file-prefix "$prefix" --no-pci "${mem[@]}"
     --vdev crypto_aesni_gcm0 --vdev "net_pcap0,rx_pcap=$pcap,infinite_rx=1,tx_pcap=/dev/null,tx_pcap=/dev/null" --vdev net_null0,no-rx=1
     -- -p 0x3 -u 0x1 -P --config "(0,0,$worker)" -s $nb_mbufs -f "$run/secgw.cfg")
echo "secgw/run.sh: ${cmd[*]}" >&2
"${cmd[@]}" >"$run/secgw.log" 2>&1 &
pid=$!

sock=/var/run/dpdk/$prefix/dpdk_telemetry.v2
for _ in $(seq 300); do   # up to 30 s: mempool and pcap loading take a while
    grep -q "entering main loop on lcore $worker" "$run/secgw.log" && [ -S "$sock" ] && break
    kill -0 $pid 2>/dev/null || { tail -30 "$run/secgw.log" >&2; die "ipsec-secgw exited during start-up (log above)"; }
    sleep 0.1
done
grep -q "entering main loop on lcore $worker" "$run/secgw.log" || { tail -20 "$run/secgw.log" >&2; die "ipsec-secgw did not start in 30 s"; }

rates=$(/usr/bin/python3 "$here/measure.py" --socket "$sock" --warmup "$warmup" --window "$seconds") \
    || { tail -20 "$run/secgw.log" >&2; die "reading telemetry failed"; }
/usr/bin/python3 - "$rates" "$frame_len" "$outer_len" "$packets" "$mode" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(json.dumps({"bench": "secgw_inbound", "frame_len": int(sys.argv[2]), "outer_len": int(sys.argv[3]),
                  "packets_in_pcap": int(sys.argv[4]), "window_s": r["window_s"], "rx_pps": r["rx_pps"],
                  "tx_pps": r["tx_pps"], "mode": sys.argv[5]}))
PY
