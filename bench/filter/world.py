"""The world the filter benchmark's mail comes from (bench/filter/run.py).

- `build(work, domains, messages, msg_size)`: N sender domains (`org<k>.example`), each with
  an SPF record (some direct, most through `include:`s, so SPF does real lookups), a
  DKIM key (RSA 2048 bits, every fifth domain Ed25519) published under `sel1._domainkey`,
  a DMARC record (`p=reject` for k mod 10 in 0..5, `p=quarantine` for 6..7, `p=none` for
  8..9, each with `rua=`), the spoofers' domain `spoofer.example` (SPF pass for the bench
  clients, no DMARC), a DNS block list zone `bl.bench.test` listing one address
  (LISTED_IP), and PTR + A records for every client address. Then the messages, signed
  with dkimpy, the same list for both servers; see `CLASSES` for the share of each kind.
  Returns (zone dict, list of Message).
- `python3 world.py dns ZONE.json PORT READY_FILE`: an authoritative DNS server for that
  zone on 127.0.0.1:PORT (UDP and TCP), made to be cheap: each distinct query is answered
  once with dnslib and the answer kept, so a repeat costs a dict lookup and the DNS
  server does not bound the servers measured. The query `count.stats.bench-dns. TXT`
  answers the number of queries received so far (not counted itself).

Standard library, dnslib, dkimpy, and `cryptography` for the keys (dkimpy's own
dependency); PyNaCl for Ed25519 signing (dkimpy's).
"""

import base64
import json
import os
import socket
import struct
import sys
import threading

# The senders' names are under .example, not .test: OpenDKIM resolves through libunbound,
# which answers every name under .test itself (NXDOMAIN, RFC 6761) unless given a
# configuration file, and OpenDKIM re-reads that file where libunbound's parser is not
# thread-safe (it crashed the milter under load). .example is no zone of unbound's own.
CLIENT_IPS = [f"127.0.0.{i}" for i in range(2, 10)]  # the bench clients (not in mynetworks)
LISTED_IP = "127.0.0.20"  # in the DNS block list: refused by both servers
PREGREET_IP = "127.0.0.21"  # talks before the greeting: refused by both servers
BL_ZONE = "bl.bench.test"
SPOOFER = "spoofer.example"
RCPT_DOMAIN = "bench.test"
SELECTOR = "sel1"
DKIM_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
                b"content-type"]

# The kinds of message, by i mod 20 (the rest are `good`):
#   good        From and MAIL FROM in a sender domain, signed by it, SPF pass: DMARC pass
#   spoof       From in a p=reject domain, MAIL FROM at spoofer.example (SPF pass, not aligned),
#               no signature: DMARC fail, refused
#   broken      as spoof, but signed by the From domain and the body changed after signing
#               (body hash mismatch): DMARC fail, refused
#   quarantine  as spoof, From in a p=quarantine domain: accepted (and marked)
#   none        as spoof, From in a p=none domain: accepted
CLASSES = {7: "spoof", 13: "broken", 17: "quarantine", 19: "none"}
REFUSED_CLASSES = ("spoof", "broken")


def policy_of(k):
    r = k % 10
    return "reject" if r <= 5 else "quarantine" if r <= 7 else "none"


def alg_of(k):
    return "ed25519" if k % 5 == 4 else "rsa"


def ptr_name(ip):
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


def client_name(ip):
    return f"mta{ip.rsplit('.', 1)[1]}.client.test"


def txt(strings, ttl=3600):
    """A TXT record of one long string cut into character-strings of at most 255."""
    if isinstance(strings, str):
        strings = [strings[i:i + 255] for i in range(0, len(strings), 255)] or [""]
    return {"strings": strings, "ttl": ttl}


class Message:
    __slots__ = ("kind", "sender", "rcpt", "data", "domain")

    def __init__(self, kind, sender, rcpt, data, domain):
        self.kind, self.sender, self.rcpt, self.data, self.domain = kind, sender, rcpt, data, domain


def _keys(domains):
    """{k: (alg, private key for dkimpy, public p= value)}"""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    out = {}
    for k in range(domains):
        if alg_of(k) == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            priv = key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.TraditionalOpenSSL,
                                     serialization.NoEncryption())
            pub = key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        else:
            key = ed25519.Ed25519PrivateKey.generate()
            seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
            priv = base64.b64encode(seed)
            pub = key.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
        out[k] = (alg_of(k), priv, base64.b64encode(pub).decode())
    return out


def zone(domains, keys):
    names = {}

    def add(name, rtype, rec):
        names.setdefault(name, {}).setdefault(rtype, []).append(rec)

    # The clients' netblock, behind two includes for most domains.
    add("_spf.mailer.example", "TXT", txt("v=spf1 ip4:203.0.113.0/24 include:_nets.mailer.example -all"))
    add("_nets.mailer.example", "TXT", txt("v=spf1 ip4:198.51.100.0/24 ip4:127.0.0.0/27 -all"))
    for k in range(domains):
        d = f"org{k}.example"
        if k % 4 == 0:
            spf = "v=spf1 ip4:192.0.2.0/24 ip4:127.0.0.0/27 -all"
        else:
            spf = f"v=spf1 ip4:192.0.2.0/24 include:_spf.{d} -all"
            add(f"_spf.{d}", "TXT", txt("v=spf1 ip4:198.18.0.0/15 include:_spf.mailer.example -all"))
        add(d, "TXT", txt(spf))
        add(d, "MX", {"pref": 10, "exchange": f"mx.{d}", "ttl": 3600})
        add(f"mx.{d}", "A", {"addr": "192.0.2.10", "ttl": 3600})
        alg, _, pub = keys[k]
        add(f"{SELECTOR}._domainkey.{d}", "TXT",
            txt(f"v=DKIM1; k={'ed25519' if alg == 'ed25519' else 'rsa'}; p={pub}"))
        add(f"_dmarc.{d}", "TXT",
            txt(f"v=DMARC1; p={policy_of(k)}; rua=mailto:dmarc-reports@{d}; adkim=r; aspf=r"))
    add(SPOOFER, "TXT", txt("v=spf1 ip4:127.0.0.0/27 -all"))
    for ip in CLIENT_IPS + [LISTED_IP, PREGREET_IP]:
        add(ptr_name(ip), "PTR", {"name": client_name(ip), "ttl": 3600})
        add(client_name(ip), "A", {"addr": ip, "ttl": 3600})
    # The block list: LISTED_IP only (127.0.0.2 is the usual "listed" answer).
    rev = ".".join(reversed(LISTED_IP.split(".")))
    add(f"{rev}.{BL_ZONE}", "A", {"addr": "127.0.0.2", "ttl": 300})
    add(f"{rev}.{BL_ZONE}", "TXT", txt("listed for the filter benchmark", 300))
    # negative answers are cached for 5 minutes (SOA minimum), longer than a run
    return {"negative_ttl": 300, "names": names}


def _body(n, size):
    line = b"The quick brown fox jumps over the lazy dog, message %d. " % n
    line = (line * 2)[:76] + b"\r\n"
    out = b""
    while len(out) + len(line) <= size:
        out += line
    return out or line


def build(work, domains, messages, msg_size):
    """Keys, zone and the signed messages (see the module's docstring)."""
    import dkim  # dkimpy
    keys = _keys(domains)
    z = zone(domains, keys)
    by_policy = {p: [k for k in range(domains) if policy_of(k) == p]
                 for p in ("reject", "quarantine", "none")}
    if not all(by_policy.values()):
        raise ValueError("DOMAINS must be at least 10 (every DMARC policy needs a domain)")
    out = []
    for i in range(messages):
        kind = CLASSES.get(i % 20, "good")
        if kind == "good":
            k = i % domains
        else:
            pool = by_policy["reject" if kind in ("spoof", "broken") else kind]
            k = pool[(i // 20) % len(pool)]
        d = f"org{k}.example"
        sender = f"user{i % 97}@{d}" if kind == "good" else f"bounce-{i}@{SPOOFER}"
        rcpt = f"rcpt{i % 50}@{RCPT_DOMAIN}"
        head = (f"From: User {i} <user{i % 97}@{d}>\r\n"
                f"To: <{rcpt}>\r\n"
                f"Subject: filter bench {i} ({kind})\r\n"
                f"Date: Sun, 06 Dec 2026 12:00:00 +0000\r\n"
                f"Message-ID: <{i}.{os.getpid()}@{d}>\r\n"
                "MIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=us-ascii\r\n").encode()
        body = _body(i, msg_size)
        msg = head + b"\r\n" + body
        if kind in ("good", "broken"):
            alg, priv, _ = keys[k]
            sig = dkim.sign(msg, SELECTOR.encode(), d.encode(), priv,
                            canonicalize=(b"relaxed", b"relaxed"),
                            signature_algorithm=(b"ed25519-sha256" if alg == "ed25519"
                                                 else b"rsa-sha256"),
                            include_headers=DKIM_HEADERS)
            msg = sig + msg
            if kind == "broken":
                # a mailing list's footer, added after signing: the body hash fails
                msg += b"-- \r\nlist footer added in transit\r\n"
        out.append(Message(kind, sender, rcpt, msg, d))
    with open(os.path.join(work, "zone.json"), "w") as f:
        json.dump(z, f)
    return z, out


def expected(msgs):
    """{kind: count} of a message list."""
    c = {}
    for m in msgs:
        c[m.kind] = c.get(m.kind, 0) + 1
    return c


# ------------------------------------------------------------------ the DNS server --

def _serve(zone_path, port, ready):
    from dnslib import A, MX, PTR, QTYPE, RCODE, RR, SOA, TXT, DNSRecord
    with open(zone_path) as f:
        data = json.load(f)
    names = {k.lower().rstrip("."): v for k, v in data["names"].items()}
    neg = data.get("negative_ttl", 300)
    queries = [0]
    lock = threading.Lock()
    memo = {}  # query octets after the id -> reply octets after the id

    def build_reply(req, proto):
        reply = req.reply()
        reply.header.aa = 1
        reply.header.ra = 1
        qname = str(req.q.qname).lower().rstrip(".")
        qtype = QTYPE.get(req.q.qtype)
        if qname == "count.stats.bench-dns":
            reply.add_answer(RR(req.q.qname, QTYPE.TXT, ttl=0, rdata=TXT(str(queries[0]))))
            return reply, False
        entry = names.get(qname)
        if entry is None:
            reply.header.rcode = RCODE.NXDOMAIN
        else:
            for rec in entry.get(qtype, []) if isinstance(qtype, str) else []:
                ttl = rec.get("ttl", 300)
                if qtype == "A":
                    rdata = A(rec["addr"])
                elif qtype == "MX":
                    rdata = MX(rec["exchange"], rec["pref"])
                elif qtype == "PTR":
                    rdata = PTR(rec["name"])
                elif qtype == "TXT":
                    rdata = TXT([s.encode() for s in rec["strings"]])
                else:
                    continue
                reply.add_answer(RR(req.q.qname, getattr(QTYPE, qtype), ttl=ttl, rdata=rdata))
        if not reply.rr:
            apex = ".".join(qname.split(".")[-2:])
            reply.add_auth(RR(apex, QTYPE.SOA, ttl=neg,
                              rdata=SOA("ns." + apex, "hostmaster." + apex,
                                        (1, 3600, 600, 86400, neg))))
        return reply, True

    def handle(data, proto):
        if len(data) < 12:
            return None
        key = (proto, data[2:])
        with lock:
            hit = memo.get(key)
            queries[0] += 1
        if hit is not None:
            return data[:2] + hit
        try:
            req = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - garbage from a peer: ignore it
            return None
        reply, keep = build_reply(req, proto)
        packed = reply.pack()
        if proto == "udp":
            limit = 512
            for rr in req.ar:
                if rr.rtype == QTYPE.OPT:
                    limit = max(512, rr.rclass)
            if len(packed) > limit:
                short = req.reply()
                short.header.aa = 1
                short.header.tc = 1
                packed = short.pack()
        if keep:
            with lock:
                if len(memo) < 200000:
                    memo[key] = packed[2:]
        else:
            with lock:
                queries[0] -= 1
        return packed

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    udp.bind(("127.0.0.1", port))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", port))
    tcp.listen(128)

    def tcp_conn(conn):
        with conn:
            conn.settimeout(30)
            try:
                while True:
                    head = conn.recv(2, socket.MSG_WAITALL)
                    if len(head) < 2:
                        return
                    (n,) = struct.unpack("!H", head)
                    q = conn.recv(n, socket.MSG_WAITALL)
                    if len(q) < n:
                        return
                    out = handle(q, "tcp")
                    if out is not None:
                        conn.sendall(struct.pack("!H", len(out)) + out)
            except OSError:
                return

    def tcp_loop():
        while True:
            conn, _ = tcp.accept()
            threading.Thread(target=tcp_conn, args=(conn,), daemon=True).start()

    threading.Thread(target=tcp_loop, daemon=True).start()
    with open(ready + ".tmp", "w") as f:
        f.write(f"{port}\n")
    os.rename(ready + ".tmp", ready)
    while True:
        data, peer = udp.recvfrom(4096)
        out = handle(data, "udp")
        if out is not None:
            udp.sendto(out, peer)


def query_count(port, timeout=5):
    """The DNS server's count of queries so far (its `count.stats.bench-dns` TXT)."""
    from dnslib import DNSRecord
    q = DNSRecord.question("count.stats.bench-dns", "TXT")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q.pack(), ("127.0.0.1", port))
        r = DNSRecord.parse(s.recv(4096))
    return int(str(r.rr[0].rdata).strip('"'))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "dns":
        _serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit("usage: world.py dns ZONE.json PORT READY_FILE")
