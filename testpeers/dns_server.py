#!/usr/bin/env python3
"""A scripted authoritative DNS server for Tern's integration tests.

Usage:
    python3 testpeers/dns_server.py --zone ZONE.json --port 0 --ready-file F [--log QUERYLOG]

Binds UDP and TCP on 127.0.0.1 on the same port (0 = pick a free one). Once both sockets
listen, the port number is written to the ready file (atomically: temp file + rename), so
a test waits for that file instead of sleeping.

The zone is RE-READ whenever the zone file changes (mtime, size or inode), checked at
every query. Tests must replace it atomically: write a temp file in the same directory,
then rename it over the zone, so the server never reads half a file. (A zone that fails
to parse is reported on stderr and the previous zone stays in use.)

Query log: one line per query received, `proto name type`, e.g. `udp mx.example.test MX`
(proto `udp` or `tcp`, name lowercase without the trailing dot), flushed at once, so a
test can count how often a name was really asked.

Zone JSON format:

    {
      "negative_ttl": 60,          # optional: SOA minimum used for NXDOMAIN/NODATA
                                   #   answers; null = answer them without an SOA
      "names": {
        "example.test": {
          "MX":    [{"pref": 10, "exchange": "mx1.example.test", "ttl": 300}],
          "A":     [{"addr": "127.0.0.1", "ttl": 60}],
          "AAAA":  [{"addr": "::1", "ttl": 60}],
          "TXT":   [{"strings": ["v=DKIM1; k=rsa; p=MIIB...", "...rest"], "ttl": 60}],
          "CNAME": {"target": "other.example.test", "ttl": 60},
          "behaviour": "nxdomain" | "servfail" | "truncate_udp" | "drop" | "null_mx"
        }
      }
    }

Every key of a name is optional; "ttl" defaults to 300. A name that is not listed does
not exist (NXDOMAIN). A listed name without records of the asked type answers NODATA.
A CNAME is answered for every type and followed inside the zone (up to 8 steps), the
way a recursive resolver would present the chain.

Behaviours:
    nxdomain      answer NXDOMAIN whatever the records
    servfail      answer SERVFAIL
    truncate_udp  over UDP: TC=1 and no records; over TCP: the full answer
    drop          never answer (UDP and TCP)
    null_mx       MX queries get the single RFC 7505 record `0 .`

Answers larger than the client's UDP size (512, or the EDNS size) are sent truncated
(TC=1, no records) over UDP, as a real server does.
"""

import argparse
import json
import os
import socket
import struct
import sys
import threading

from dnslib import AAAA, CNAME, DNSRecord, MX, QTYPE, RCODE, RR, SOA, TXT, A

DEFAULT_TTL = 300


class Zone:
    """The zone file, reloaded when it changes."""

    def __init__(self, path):
        self.path = path
        self.stamp = None
        self.data = {"names": {}}
        self.lock = threading.Lock()

    def current(self):
        with self.lock:
            try:
                st = os.stat(self.path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError as e:
                print(f"dns_server: cannot stat zone: {e}", file=sys.stderr)
                return self.data
            if stamp != self.stamp:
                try:
                    with open(self.path, encoding="utf-8") as f:
                        data = json.load(f)
                    names = {
                        k.lower().rstrip("."): v for k, v in data.get("names", {}).items()
                    }
                    data["names"] = names
                    self.data = data
                    self.stamp = stamp
                except (OSError, ValueError) as e:
                    print(f"dns_server: bad zone, keeping the old one: {e}", file=sys.stderr)
            return self.data


class QueryLog:
    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8") if path else None
        self.lock = threading.Lock()

    def write(self, proto, name, qtype):
        if self.file is None:
            return
        with self.lock:
            self.file.write(f"{proto} {name} {qtype}\n")
            self.file.flush()


def soa_for(zone, name):
    neg = zone.get("negative_ttl", 60)
    if neg is None:
        return None
    apex = name.split(".", 1)[-1] if "." in name else name
    return RR(
        apex,
        QTYPE.SOA,
        ttl=neg,
        rdata=SOA("ns." + apex, "hostmaster." + apex, (1, 3600, 600, 86400, neg)),
    )


def answer(request, zone, proto):
    """Builds the reply, or returns None to stay silent."""
    reply = request.reply()
    reply.header.aa = 1
    reply.header.ra = 1
    q = request.q
    qname = str(q.qname).lower().rstrip(".")
    qtype = QTYPE.get(q.qtype)
    names = zone.get("names", {})

    first = names.get(qname)
    if first is not None:
        behaviour = first.get("behaviour")
        if behaviour == "drop":
            return None
        if behaviour == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if behaviour == "truncate_udp" and proto == "udp":
            reply.header.tc = 1
            return reply

    name = qname
    for _ in range(8):
        entry = names.get(name)
        if entry is None or entry.get("behaviour") == "nxdomain":
            if name == qname:
                reply.header.rcode = RCODE.NXDOMAIN
                soa = soa_for(zone, name)
                if soa is not None:
                    reply.add_auth(soa)
            return reply
        cname = entry.get("CNAME")
        if cname and qtype != "CNAME":
            target = cname["target"].lower().rstrip(".")
            reply.add_answer(
                RR(name, QTYPE.CNAME, ttl=cname.get("ttl", DEFAULT_TTL), rdata=CNAME(target))
            )
            name = target
            continue
        records = []
        if qtype == "MX" and entry.get("behaviour") == "null_mx":
            records.append(RR(name, QTYPE.MX, ttl=DEFAULT_TTL, rdata=MX(".", 0)))
        elif qtype == "MX":
            for r in entry.get("MX", []):
                records.append(
                    RR(name, QTYPE.MX, ttl=r.get("ttl", DEFAULT_TTL),
                       rdata=MX(r["exchange"], r["pref"]))
                )
        elif qtype == "A":
            for r in entry.get("A", []):
                records.append(RR(name, QTYPE.A, ttl=r.get("ttl", DEFAULT_TTL), rdata=A(r["addr"])))
        elif qtype == "AAAA":
            for r in entry.get("AAAA", []):
                records.append(
                    RR(name, QTYPE.AAAA, ttl=r.get("ttl", DEFAULT_TTL), rdata=AAAA(r["addr"]))
                )
        elif qtype == "TXT":
            # {"TXT": [{"strings": ["v=DKIM1; ...", "..."], "ttl": 60}]}: one record of
            # several character-strings (each at most 255 octets).
            for r in entry.get("TXT", []):
                strings = [s.encode() for s in r["strings"]]
                records.append(
                    RR(name, QTYPE.TXT, ttl=r.get("ttl", DEFAULT_TTL), rdata=TXT(strings))
                )
        elif qtype == "CNAME" and cname:
            records.append(
                RR(name, QTYPE.CNAME, ttl=cname.get("ttl", DEFAULT_TTL),
                   rdata=CNAME(cname["target"]))
            )
        for rr in records:
            reply.add_answer(rr)
        if not records and not reply.rr:
            soa = soa_for(zone, name)
            if soa is not None:
                reply.add_auth(soa)
        return reply
    return reply


def udp_limit(request):
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(512, rr.rclass)
    return 512


def handle(data, proto, zone, log):
    try:
        request = DNSRecord.parse(data)
    except Exception as e:  # noqa: BLE001 - a test peer: report and ignore garbage
        print(f"dns_server: unparsable query: {e}", file=sys.stderr)
        return None
    qname = str(request.q.qname).lower().rstrip(".")
    log.write(proto, qname, QTYPE.get(request.q.qtype))
    reply = answer(request, zone.current(), proto)
    if reply is None:
        return None
    packed = reply.pack()
    if proto == "udp" and len(packed) > udp_limit(request):
        short = request.reply()
        short.header.aa = 1
        short.header.ra = 1
        short.header.tc = 1
        packed = short.pack()
    return packed


def serve_udp(sock, zone, log):
    while True:
        data, peer = sock.recvfrom(65535)
        out = handle(data, "udp", zone, log)
        if out is not None:
            sock.sendto(out, peer)


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def serve_tcp_conn(conn, zone, log):
    with conn:
        while True:
            head = read_exact(conn, 2)
            if head is None:
                return
            (length,) = struct.unpack("!H", head)
            data = read_exact(conn, length)
            if data is None:
                return
            out = handle(data, "tcp", zone, log)
            if out is not None:
                conn.sendall(struct.pack("!H", len(out)) + out)


def serve_tcp(sock, zone, log):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve_tcp_conn, args=(conn, zone, log), daemon=True).start()


def bind(port):
    """UDP and TCP sockets on the same port; with port 0, retries until both bind."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", port))
        chosen = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", chosen))
        except OSError:
            udp.close()
            tcp.close()
            if port != 0:
                raise
            continue
        tcp.listen(64)
        return udp, tcp, chosen
    raise OSError("no port free for both UDP and TCP")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zone", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--log")
    args = parser.parse_args()

    zone = Zone(args.zone)
    zone.current()
    log = QueryLog(args.log)
    udp, tcp, port = bind(args.port)
    threading.Thread(target=serve_udp, args=(udp, zone, log), daemon=True).start()
    threading.Thread(target=serve_tcp, args=(tcp, zone, log), daemon=True).start()

    tmp = args.ready_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{port}\n")
    os.rename(tmp, args.ready_file)
    threading.Event().wait()


if __name__ == "__main__":
    main()
