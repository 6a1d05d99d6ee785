#!/usr/bin/env python3
"""Generate a large pcap of TLS handshakes for the sensor benchmark.

Real ClientHellos are taken from the JA4 corpus's classic pcap files (Ethernet, IPv4/IPv6),
then replayed N times as new connections: each gets its own client address and port
(10.a.b.c:port → 192.0.2.1:443), a SYN with Linux-like options, the hello (every fourth one
split into two segments, so reassembly is exercised), and a FIN. Output: classic pcap, Ethernet.

usage: sensor_gen_pcap.py OUT.pcap [--count 100000] [--corpus tests/data/ja4/pcap]
"""
import argparse
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CORPUS = os.path.join(HERE, "..", "..", "tests", "data", "ja4", "pcap")


def read_classic_pcap(path):
    """Yields (linktype, frame) of a classic pcap; other formats yield nothing."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        return
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    pos = 24
    while pos + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[pos:pos + 16])
        pos += 16
        yield linktype, data[pos:pos + incl]
        pos += incl


def tcp_payload(linktype, frame):
    """The TCP payload of an Ethernet or DLT_NULL frame, or None."""
    if linktype == 1:
        if len(frame) < 14:
            return None
        ethertype = struct.unpack("!H", frame[12:14])[0]
        ip = frame[14:]
    elif linktype == 0:
        ip = frame[4:]
        ethertype = 0x0800 if ip[:1] and ip[0] >> 4 == 4 else 0x86DD
    else:
        return None
    if ethertype == 0x0800 and len(ip) >= 20 and ip[9] == 6:
        ihl = (ip[0] & 15) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        tcp = ip[ihl:total]
    elif ethertype == 0x86DD and len(ip) >= 40 and ip[6] == 6:
        tcp = ip[40:40 + struct.unpack("!H", ip[4:6])[0]]
    else:
        return None
    if len(tcp) < 20:
        return None
    return tcp[(tcp[12] >> 4) * 4:]


def is_whole_hello(p):
    if len(p) < 9 or p[0] != 0x16 or p[1] != 3 or p[5] != 1:
        return False
    return len(p) >= 5 + struct.unpack("!H", p[3:5])[0]


def collect_hellos(corpus):
    hellos = []
    for name in sorted(os.listdir(corpus)):
        for linktype, frame in read_classic_pcap(os.path.join(corpus, name)):
            p = tcp_payload(linktype, frame)
            if p and is_whole_hello(p):
                hellos.append(bytes(p[:5 + struct.unpack("!H", p[3:5])[0]]))
    return hellos


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip_packet(src, dst, sport, dport, seq, flags, payload, options=b""):
    """IPv4 + TCP segment (addresses as 4 bytes), checksums computed."""
    off = (20 + len(options)) // 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, off << 4, flags, 64240, 0, 0) + options
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
    csum = checksum(pseudo + tcp + payload)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, seq & 0xFFFF, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp + payload


def frame(src, sport, seq, flags, payload, options=b""):
    eth = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00"
    return eth + ip_packet(src, bytes([192, 0, 2, 1]), sport, 443, seq, flags, payload, options)


# MSS 1460, SACK-permitted, timestamps, NOP, window scale 7: a Linux SYN.
SYN_OPTIONS = bytes([2, 4, 5, 0xB4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7])
SYN, FIN_ACK, PSH_ACK = 0x02, 0x11, 0x18


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    args = ap.parse_args()
    hellos = collect_hellos(args.corpus)
    if not hellos:
        sys.exit("no ClientHello found in " + args.corpus)
    t_us = 1_700_000_000 * 1_000_000
    with open(args.out, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))

        def write(f):
            nonlocal t_us
            t_us += 7
            out.write(struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(f), len(f)))
            out.write(f)

        for i in range(args.count):
            hello = hellos[i % len(hellos)]
            src = bytes([10, (i >> 16) & 255, (i >> 8) & 255, i & 255])
            sport = 1024 + (i * 7919) % 64000
            isn = (i * 2654435761) & 0xFFFFFFFF
            write(frame(src, sport, isn, SYN, b"", SYN_OPTIONS))
            seq = (isn + 1) & 0xFFFFFFFF
            if i % 4 == 3:
                half = len(hello) // 2
                write(frame(src, sport, seq, PSH_ACK, hello[:half]))
                write(frame(src, sport, (seq + half) & 0xFFFFFFFF, PSH_ACK, hello[half:]))
            else:
                write(frame(src, sport, seq, PSH_ACK, hello))
            write(frame(src, sport, (seq + len(hello)) & 0xFFFFFFFF, FIN_ACK, b""))
    print(f"{args.out}: {args.count} handshakes from {len(hellos)} distinct real hellos")


if __name__ == "__main__":
    main()
