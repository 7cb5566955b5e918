#!/usr/bin/python3
"""UDP traffic through a tunnel, for the strongSwan tests.

serve ADDR PORT            answer every datagram with the same bytes
send SRC DST PORT N RATE   send N numbered datagrams from SRC at RATE per
                           second, wait for the echoes, print one JSON line:
                           sent, unsent (no route), received, lost (numbers
                           missing)
"""
import json
import socket
import sys
import time


def serve(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(data, peer)


def send(src, dst, port, count, rate):
    count, rate = int(count), float(rate)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.setblocking(False)
    seen = set()
    unsent = 0
    start = time.monotonic()
    for n in range(count):
        while time.monotonic() < start + n / rate:
            drain(s, seen)
            time.sleep(0.0005)
        try:
            s.sendto(n.to_bytes(8, "big") + b"sekisho" * 8, (dst, int(port)))
        except OSError:
            unsent += 1
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and len(seen) < count:
        drain(s, seen)
        time.sleep(0.001)
    lost = sorted(set(range(count)) - seen)
    print(json.dumps({"sent": count - unsent, "unsent": unsent, "received": len(seen), "lost": lost[:50], "seconds": round(time.monotonic() - start, 3)}))


def drain(s, seen):
    while True:
        try:
            data = s.recv(65535)
        except BlockingIOError:
            return
        seen.add(int.from_bytes(data[:8], "big"))


if __name__ == "__main__":
    {"serve": serve, "send": send}[sys.argv[1]](*sys.argv[2:])
