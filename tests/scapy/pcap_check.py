#!/usr/bin/env python3
"""Reads the clinic emulator's pcap files (its folder in argv[1]) with scapy,
independently of our code: clinics.pcap holds ESP from the clinics' own
addresses to the gateway, which scapy decrypts with the keys in
esp-sas.json to the clinics' UDP datagrams to the servers; servers.pcap the
servers' answers to the NAT pool, their checksums as scapy computes them.
Prints the frame counts and how many clinics sent."""
import sys, ipaddress, json
from scapy.all import rdpcap, IP, IPv6, ESP, UDP, ICMP
from scapy.layers.ipsec import SecurityAssociation
clinics, servers = rdpcap(sys.argv[1] + "/clinics.pcap"), rdpcap(sys.argv[1] + "/servers.pcap")
sas = {}
for sa in json.load(open(sys.argv[1] + "/esp-sas.json")):
    outer = IPv6 if ":" in sa["dst"] else IP
    sas[sa["spi"]] = SecurityAssociation(ESP, spi=sa["spi"], crypt_algo="AES-GCM", crypt_key=bytes.fromhex(sa["key"]),
                                         auth_algo="NULL", tunnel_header=outer(src=sa["src"], dst=sa["dst"]))
sources = set()
for p in clinics:
    outer = p[IPv6] if IPv6 in p else p[IP]
    assert ESP in p, p.summary()
    inner = sas[p[ESP].spi].decrypt(outer)
    assert UDP in inner and inner[UDP].dport == 8443, inner.summary()
    assert ipaddress.ip_address(inner.src) in ipaddress.ip_network("192.168.1.0/24"), inner.summary()
    assert ipaddress.ip_address(inner.dst) in ipaddress.ip_network("192.0.2.0/24"), inner.summary()
    assert str(outer.dst) in ("2001:db8:a::1", "198.51.100.1"), outer.dst
    assert ipaddress.ip_address(outer.src) in ipaddress.ip_network("2001:db8:c1::/64") or ipaddress.ip_address(outer.src) in ipaddress.ip_network("172.16.0.0/12"), outer.src
    sources.add(str(outer.src))
pool = ipaddress.ip_network("100.64.0.0/24")
for p in servers:
    ip = p[IP]
    assert ipaddress.ip_address(ip.dst) in pool and ipaddress.ip_address(ip.src) in ipaddress.ip_network("192.0.2.0/24"), p.summary()
    l4 = p[UDP] if UDP in p else p[ICMP]
    sent = (ip.chksum, l4.chksum)
    ip.chksum = None; l4.chksum = None
    again = IP(bytes(ip))
    assert (again.chksum, (again[UDP] if UDP in again else again[ICMP]).chksum) == sent, p.summary()
print(len(clinics), len(servers), len(sources))
