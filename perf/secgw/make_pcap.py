#!/usr/bin/python3
"""Input pcap for perf/secgw/run.sh: N distinct inbound packets for ipsec-secgw.

ESP mode: IPv6-outer tunnel-mode ESP (AES-128-GCM, RFC 4106) from the clinic side
2001:db8:a::20 -> 2001:db8:a::1, sequence numbers 1..N, carrying IPv4/UDP
203.0.113.5 -> 10.0.0.7. Bypass mode: the same inner IPv4/UDP packets in clear.
--frame-len is the size of the DECRYPTED Ethernet frame (14 + inner IPv4, no FCS),
so both modes forward frames of the same size out of the gateway.
Prints one JSON line: {"frame_len":..,"outer_len":..,"packets":..}.
"""
import argparse
import json
import sys

from scapy.all import IP, UDP, Ether, IPv6, Raw, RawPcapWriter
from scapy.layers.ipsec import ESP, SecurityAssociation

KEY = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
SALT = bytes.fromhex("a1a2a3a4")
# ipsec-secgw does no destination-MAC filtering (it classifies by EtherType, and
# runs promiscuous with -P), so any unicast address will do for it. Sekisho drops
# frames not addressed to its port: give --dst-mac the port's MAC (net_pcap0's
# is 02:70:63:61:70:00) when the same pcap feeds both.
DST_MAC, SRC_MAC = "02:00:00:00:00:a0", "02:00:00:00:00:a1"

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--packets", type=int, default=16384)
p.add_argument("--frame-len", type=int, default=64)
p.add_argument("--spi", type=lambda s: int(s, 0), default=0x04100000)
p.add_argument("--bypass", action="store_true", help="plaintext IPv4, no ESP")
p.add_argument("--dst-mac", default=DST_MAC, help="Ethernet destination of every frame")
a = p.parse_args()

payload_len = a.frame_len - 14 - 20 - 8  # Ethernet, IPv4, UDP headers
if payload_len < 0:
    sys.exit(f"make_pcap: --frame-len {a.frame_len} is below 42 (Ethernet+IPv4+UDP)")

sa = SecurityAssociation(ESP, spi=a.spi, crypt_algo="AES-GCM", crypt_key=KEY + SALT,
                         auth_algo="NULL",
                         tunnel_header=IPv6(src="2001:db8:a::20", dst="2001:db8:a::1"))
w = RawPcapWriter(a.out, linktype=1)
outer_len = None
for seq in range(1, a.packets + 1):
    # Distinct packets: the UDP source port and the payload vary with the sequence number.
    inner = (IP(src="203.0.113.5", dst="10.0.0.7", ttl=64, id=seq & 0xFFFF)
             / UDP(sport=1024 + seq % 60000, dport=5001)
             / Raw((seq.to_bytes(4, "big") * (payload_len // 4 + 1))[:payload_len]))
    inner = IP(bytes(inner))  # fix lengths and checksums before encryption
    l3 = inner if a.bypass else sa.encrypt(inner, seq_num=seq)
    frame = bytes(Ether(dst=a.dst_mac, src=SRC_MAC) / l3)
    outer_len = len(frame)
    w.write(frame)
w.close()
print(json.dumps({"frame_len": a.frame_len, "outer_len": outer_len, "packets": a.packets}))
