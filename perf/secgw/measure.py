#!/usr/bin/python3
"""Rates of a running ipsec-secgw, read from its DPDK telemetry socket.

Waits --warmup seconds, reads port 0 (pcap, RX) and port 1 (null, TX) counters,
waits --window seconds, reads them again and prints the JSON fields rx_pps,
tx_pps and window_s (the measured elapsed time, not the requested one).
rx_pps above tx_pps means the gateway dropped packets (failed decryption, policy).
(ipsec-secgw's own /examples/ipsec-secgw/stats commands answer null in 22.11.)
"""
import argparse
import json
import socket
import time

p = argparse.ArgumentParser()
p.add_argument("--socket", required=True)
p.add_argument("--warmup", type=float, default=2.0)
p.add_argument("--window", type=float, default=5.0)
a = p.parse_args()

sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
sock.connect(a.socket)
sock.recv(4096)  # greeting: version, pid, max_output_len


def query(cmd):
    sock.send(cmd.encode())
    return json.loads(sock.recv(1 << 16))[cmd.split(",")[0]]


def sample():
    t = time.monotonic()
    rx, tx = query("/ethdev/stats,0"), query("/ethdev/stats,1")
    return t, rx["ipackets"], tx["opackets"]


time.sleep(a.warmup)
t0, rx0, tx0 = sample()
time.sleep(a.window)
t1, rx1, tx1 = sample()
dt = t1 - t0
print(json.dumps({"window_s": round(dt, 3), "rx_pps": round((rx1 - rx0) / dt),
                  "tx_pps": round((tx1 - tx0) / dt)}))
