#!/usr/bin/python3
"""An independent ESP peer for Sekisho's interop test, built on scapy.

Reads one JSON request on stdin and writes one JSON answer on stdout:
  {"op": "encrypt", "sa": SA, "packets": [{"seq": N, "inner": HEX}, ...]}
      -> {"packets": [HEX of the outer IP packet, ...]}
  {"op": "decrypt", "sa": SA, "packets": [HEX of an outer IP packet, ...]}
      -> {"packets": [{"inner": HEX} or {"error": TEXT}, ...]}
SA: {"spi": int, "key": HEX (key + 4-byte salt), "esn": bool, "esn_high": int,
     "outer": "ipv4"|"ipv6", "src": addr, "dst": addr, "nat_t": bool}
Decryption also checks the outer UDP checksum Sekisho wrote (IPv6 must have one).
"""
import json
import sys

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation


def association(sa):
    outer = IP if sa["outer"] == "ipv4" else IPv6
    kwargs = {}
    if sa.get("nat_t"):
        kwargs["nat_t_header"] = UDP(sport=4500, dport=4500)
    if sa.get("esn"):
        kwargs["esn_en"] = True
        kwargs["esn"] = sa.get("esn_high", 0)
    return SecurityAssociation(
        ESP,
        spi=sa["spi"],
        crypt_algo="AES-GCM",
        crypt_key=bytes.fromhex(sa["key"]),
        auth_algo="NULL",
        tunnel_header=outer(src=sa["src"], dst=sa["dst"]),
        **kwargs,
    ), outer


def encrypt(sa, packets):
    assoc, outer = association(sa)
    out = []
    for p in packets:
        inner = bytes.fromhex(p["inner"])
        inner_pkt = IP(inner) if inner[0] >> 4 == 4 else IPv6(inner)
        pkt = assoc.encrypt(inner_pkt, seq_num=p["seq"])
        if UDP in pkt:
            # scapy leaves the checksum zero (IPv6 needs a real one) and, with
            # ESN over IPv4, the length wrong: let it recompute both.
            del pkt[UDP].chksum
            del pkt[UDP].len
        out.append(bytes(outer(bytes(pkt))).hex())
    return {"packets": out}


def decrypt(sa, packets):
    assoc, outer = association(sa)
    out = []
    for hexpkt in packets:
        raw = bytes.fromhex(hexpkt)
        pkt = outer(raw)
        try:
            if UDP in pkt:
                sent = pkt[UDP].chksum
                if sa["outer"] == "ipv6" and sent == 0:
                    raise ValueError("zero UDP checksum over IPv6")
                if sent != 0:
                    copy = outer(raw)
                    del copy[UDP].chksum
                    fixed = outer(bytes(copy))[UDP].chksum
                    if fixed != sent:
                        raise ValueError(f"UDP checksum {sent:#06x}, expected {fixed:#06x}")
            inner = assoc.decrypt(pkt)
            out.append({"inner": bytes(inner).hex()})
        except Exception as e:  # report, the Rust side fails the test
            out.append({"error": f"{type(e).__name__}: {e}"})
    return {"packets": out}


def main():
    request = json.load(sys.stdin)
    op = {"encrypt": encrypt, "decrypt": decrypt}[request["op"]]
    json.dump(op(request["sa"], request["packets"]), sys.stdout)


if __name__ == "__main__":
    main()
