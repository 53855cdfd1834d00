#!/usr/bin/env python3
"""Relay benchmark: client -> MTA -> smtp-sink, end to end.

For Tern and for a private Postfix instance on the same machine, in the same run: start
Postfix's smtp-sink (which counts every message it receives), start the MTA configured
to relay everything to the sink, send MESSAGES messages of MSG_SIZE octets over SESSIONS
parallel sessions, and measure the time from the first connection until the sink has
counted every message. Both MTAs fsync each message before their 250 (their defaults);
the sink discards. Prints messages/s for each and the ratio Tern/Postfix.

Two modes:
- default (DOMAINS unset): smtp-source sends every message to one recipient, and both
  MTAs relay to the sink as a smarthost (Tern: an `smtp` route; Postfix: `relayhost`),
  without DNS;
- DOMAINS="1 1000" (one or more counts): for each count, every message goes to one of
  that many domains (message i to d<i mod count>.bench.test), and both MTAs find the sink
  through MX records: a scripted DNS server (testpeers/dns_server.py, dnslib) on
  127.0.0.1:53 answers every domain with `MX 10 mx.sink.bench.test`, and that name with
  the sink's address 127.0.0.2. Tern asks it directly (`[dns] nameservers`); Postfix runs
  in a private mount namespace whose /etc/resolv.conf names it (the system's resolver
  configuration is not touched). Both deliver to the sink's port (Tern: the `mx` route's
  `port`; Postfix: `smtp_tcp_port`), without TLS. The load comes from a pipelining
  asyncio client in this script (smtp-source has one recipient domain), the same for
  both MTAs and every count. The summary gives each count's rate as a share of the
  first count's (Tern's own single-domain rate when DOMAINS starts with 1).

Usage (as root, Postfix installed: scripts/test.sh installs it):
    python3 bench/relay/run.py
    SKIP_BUILD=1 TERN_BIN=target/ci/tern MESSAGES=5000 DOMAINS="1 1000" python3 bench/relay/run.py
Environment knobs: MESSAGES (20000) SESSIONS (20) MSG_SIZE (1024) ROUNDS (1)
    SERVERS ("tern postfix") TERN_BIN (target/release/tern) SKIP_BUILD (0)
    TERN_COMMIT (segment: Tern's `[spool] commit`, file / batch / segment)
    DOMAINS (unset: smarthost mode; else space-separated domain counts)
    TMPDIR (where spools go; must be a real disk) KEEP_TMP (0) OUT_DIR (bench/out)
Output: bench/out/relay-summary.txt, docs/bench/relay.png (default mode) or
docs/bench/relay-domains.png (DOMAINS mode), when matplotlib is present.
"""

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MESSAGES = int(os.environ.get("MESSAGES", "20000"))
SESSIONS = int(os.environ.get("SESSIONS", "20"))
MSG_SIZE = int(os.environ.get("MSG_SIZE", "1024"))
ROUNDS = int(os.environ.get("ROUNDS", "1"))
SERVERS = os.environ.get("SERVERS", "tern postfix").split()
TERN_BIN = os.environ.get("TERN_BIN", os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "tern"))
OUT_DIR = os.environ.get("OUT_DIR", os.path.join(ROOT, "bench", "out"))
KEEP_TMP = os.environ.get("KEEP_TMP", "0") == "1"
TERN_COMMIT = os.environ.get("TERN_COMMIT", "segment")
DOMAINS = [int(d) for d in os.environ.get("DOMAINS", "").split()]
TIMEOUT = 600 + MESSAGES // 10
SINK_IP = "127.0.0.2"
DNS_IP = "127.0.0.1"
MX_NAME = "mx.sink.bench.test"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"ERROR: {msg}")
    sys.exit(1)


def free_port(ip="127.0.0.1"):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def wait_banner(port, proc=None, limit=30, ip="127.0.0.1"):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            die(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection((ip, port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    die(f"nothing greeted on {ip}:{port} within {limit} s")


class Sink:
    """smtp-sink with running counters; `count()` is the messages received so far."""

    def __init__(self, work, ip="127.0.0.1"):
        self.port = free_port(ip)
        self.out_path = os.path.join(work, f"sink-{self.port}.out")
        self.out = open(self.out_path, "wb")
        args = ["smtp-sink", "-c"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        args += [f"{ip}:{self.port}", "1000"]
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT)
        wait_banner(self.port, self.proc, ip=ip)

    def count(self):
        with open(self.out_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200))
            tail = f.read().decode("ascii", "replace")
        found = re.findall(r"mesg=(\d+)", tail)
        return int(found[-1]) if found else 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.out.close()


def launch_tern(work, sections, dns=""):
    """Starts Tern with a bench listener, no reverse DNS, quiet logs, plus `sections`
    (TOML text) and `dns` (more `[dns]` keys); waits for its banner. Returns (port,
    stop)."""
    port = free_port()
    data = os.path.join(work, "tern-data")
    conf = os.path.join(work, "tern.toml")
    with open(conf, "w") as f:
        f.write(f"""[server]
hostname = "tern.bench.test"
data_dir = "{data}"
log_level = "notice"
log_stderr = false

[dns]
reverse_lookups = false
{dns}

[admin]
listen = "127.0.0.1:0"

{sections}

[[listener]]
name = "bench"
address = "127.0.0.1:{port}"
max_connections = 1000
max_connections_per_client = 1000
""")
    logf = open(os.path.join(work, "tern.log"), "wb")
    proc = subprocess.Popen([TERN_BIN, "serve", "--config", conf],
                            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_banner(port, proc)

    def stop():
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        logf.close()
    return port, stop


def start_tern(work, sink_port):
    return launch_tern(work, f"""[relay]
domains = ["bench.test"]
networks = ["127.0.0.0/8"]

[queue]
deliver = true

[spool]
commit = "{TERN_COMMIT}"

[[route]]
domains = ["*"]
transport = "smtp"
hosts = ["127.0.0.1:{sink_port}"]
tls = "none"
""")


def start_tern_mx(work, sink_port):
    """Tern delivering by MX (the bench DNS server) to the sink's port, no TLS."""
    return launch_tern(work, f"""[relay]
domains = ["bench.test"]
networks = ["127.0.0.0/8"]

[queue]
deliver = true

[spool]
commit = "{TERN_COMMIT}"

[[route]]
domains = ["*"]
transport = "mx"
port = {sink_port}
tls = "none"
""", dns=f'nameservers = ["{DNS_IP}:53"]')


def start_postfix(work, sink_port, mx=False):
    port = free_port()
    etc = os.path.join(work, "postfix", "etc")
    queue = os.path.join(work, "postfix", "queue")
    data = os.path.join(work, "postfix", "data")
    for d in (etc, queue, data):
        os.makedirs(d, exist_ok=True)
    shutil.chown(data, "postfix")
    if mx:
        # MX lookups through the bench DNS server; delivery to the sink's port.
        routing = f"smtp_tcp_port = {sink_port}"
    else:
        routing = (f"relayhost = [127.0.0.1]:{sink_port}\n"
                   "smtp_dns_support_level = disabled\ndisable_dns_lookups = yes")
    with open(os.path.join(etc, "main.cf"), "w") as f:
        f.write(f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-relay-bench
maillog_file = {work}/postfix/maillog
maillog_file_prefixes = {work}
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = $myhostname
mydestination =
relay_domains = bench.test
local_recipient_maps =
alias_maps =
alias_database =
biff = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
{routing}
default_transport = smtp
relay_transport = smtp
smtp_tls_security_level = none
default_process_limit = 100
""")
    with open(os.path.join(ROOT, "testpeers", "postfix", "master.cf.in")) as f:
        master = f.read().replace("@LISTEN@", f"127.0.0.1:{port}")
    with open(os.path.join(etc, "master.cf"), "w") as f:
        f.write(master)
    subprocess.run(["postfix", "-c", etc, "check"], check=True, timeout=60)
    if mx:
        # The master and its children live in a mount namespace of their own whose
        # /etc/resolv.conf names the bench DNS server; the system's file is untouched.
        resolv = os.path.join(work, "resolv.conf")
        with open(resolv, "w") as f:
            f.write(f"nameserver {DNS_IP}\noptions timeout:2 attempts:2\n")
        subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                        'mount --bind "$0" /etc/resolv.conf && exec postfix -c "$1" start',
                        resolv, etc], check=True, timeout=60)
    else:
        subprocess.run(["postfix", "-c", etc, "start"], check=True, timeout=60)
    wait_banner(port)

    def stop():
        subprocess.run(["postfix", "-c", etc, "stop"], timeout=60)
    return port, stop


def one_run(server, work, domains=None):
    """One measurement. `domains` None: smtp-source and a smarthost; a count: the
    asyncio client and MX delivery. Returns (end-to-end rate, acceptance rate,
    messages beyond MESSAGES at the sink)."""
    sink = Sink(work, SINK_IP if domains else "127.0.0.1")
    if domains:
        starter = start_tern_mx if server == "tern" else (
            lambda w, p: start_postfix(w, p, mx=True))
    else:
        starter = start_tern if server == "tern" else start_postfix
    port, stop = starter(work, sink.port)
    try:
        t0 = time.monotonic()
        if domains:
            err = asyncio.run(send_all(port, domains))
            if err:
                die(f"client against {server}: {err}")
        else:
            src = subprocess.run(
                ["smtp-source", "-s", str(SESSIONS), "-m", str(MESSAGES), "-l", str(MSG_SIZE),
                 "-M", "client.bench.test", "-f", "sender@client.bench.test",
                 "-t", "rcpt@bench.test", f"127.0.0.1:{port}"],
                capture_output=True, timeout=TIMEOUT)
            if src.returncode != 0 or src.stderr.strip():
                die(f"smtp-source against {server}: {src.returncode} {src.stderr[-500:]!r}")
        accepted_at = time.monotonic()
        deadline = t0 + TIMEOUT
        while sink.count() < MESSAGES:
            if time.monotonic() > deadline:
                die(f"{server}: only {sink.count()} of {MESSAGES} reached the sink")
            time.sleep(0.02)
        done = time.monotonic()
        extra = sink.count() - MESSAGES
        return MESSAGES / (done - t0), MESSAGES / (accepted_at - t0), extra
    finally:
        stop()
        sink.stop()


def message_body(n):
    """About MSG_SIZE octets of content, dot-terminated (no line starts with a dot)."""
    head = (f"From: <sender@client.bench.test>\r\nTo: <rcpt@bench.test>\r\n"
            f"Subject: relay bench {n}\r\nMessage-ID: <{n}.{time.time_ns()}@client.bench.test>\r\n\r\n")
    body = head.encode()
    line = b"X" * 76 + b"\r\n"
    while len(body) + len(line) <= MSG_SIZE:
        body += line
    return body + b".\r\n"


async def read_reply(reader):
    """One reply (its last line); raises on a closed connection."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return line


async def client_session(port, items):
    """One session: EHLO, then per message MAIL, RCPT and DATA in one write (PIPELINING),
    their three replies, the content, its reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if not (await read_reply(reader)).startswith(b"220"):
            return "no greeting"
        writer.write(b"EHLO client.bench.test\r\n")
        if not (await read_reply(reader)).startswith(b"250"):
            return "EHLO refused"
        for rcpt, body in items:
            writer.write(b"MAIL FROM:<sender@client.bench.test>\r\nRCPT TO:<" + rcpt +
                         b">\r\nDATA\r\n")
            for want in (b"250", b"250", b"354"):
                r = await read_reply(reader)
                if not r.startswith(want):
                    return f"{rcpt!r}: {r!r}"
            writer.write(body)
            await writer.drain()
            r = await read_reply(reader)
            if not r.startswith(b"250"):
                return f"{rcpt!r}: {r!r}"
        writer.write(b"QUIT\r\n")
        await read_reply(reader)
    finally:
        writer.close()
    return None


async def send_all(port, domains):
    """MESSAGES messages over SESSIONS sessions, message i to d<i mod domains>; returns
    the first error, or None."""
    bodies = [message_body(n) for n in range(min(MESSAGES, 64))]
    per = [[] for _ in range(SESSIONS)]
    for i in range(MESSAGES):
        rcpt = f"r{i}@d{i % domains}.bench.test".encode()
        per[i % SESSIONS].append((rcpt, bodies[i % len(bodies)]))
    results = await asyncio.gather(*(client_session(port, items) for items in per if items),
                                   return_exceptions=True)
    for r in results:
        if r is not None:
            return repr(r)
    return None


class Dns:
    """testpeers/dns_server.py on 127.0.0.1:53 with `count` domains whose MX is the sink
    host."""

    def __init__(self, work, count):
        zone = {"negative_ttl": 3600, "names": {
            MX_NAME: {"A": [{"addr": SINK_IP, "ttl": 86400}]}}}
        for d in range(count):
            zone["names"][f"d{d}.bench.test"] = {
                "MX": [{"pref": 10, "exchange": MX_NAME, "ttl": 86400}]}
        path = os.path.join(work, f"zone-{count}.json")
        with open(path, "w") as f:
            json.dump(zone, f)
        ready = os.path.join(work, f"dns-ready-{count}")
        self.log = open(os.path.join(work, f"dns-{count}.err"), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "testpeers", "dns_server.py"), "--zone", path,
             "--port", "53", "--ready-file", ready],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                die(f"the DNS server did not start on {DNS_IP}:53 (in use?): see {self.log.name}")
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def main():
    if os.geteuid() != 0 and ("postfix" in SERVERS or DOMAINS):
        die("run as root (Postfix needs it, and the DNS server binds port 53)")
    tools = ("smtp-sink",) + (() if DOMAINS else ("smtp-source",))
    for tool in tools + (("postfix",) if "postfix" in SERVERS else ()):
        if shutil.which(tool) is None:
            die(f"{tool} not found; run scripts/test.sh (it installs Postfix)")
    if "tern" in SERVERS and os.environ.get("SKIP_BUILD", "0") != "1":
        log("building Tern: cargo build --release -p tern")
        subprocess.run(["cargo", "build", "--release", "-p", "tern"], cwd=ROOT, check=True)
    configs = DOMAINS or [None]
    results = {(s, c): [] for c in configs for s in SERVERS}
    for r in range(ROUNDS):
        for count in configs:
            dns = None
            if count:
                dns_dir = tempfile.mkdtemp(prefix="tern-relay-bench-dns-")
                dns = Dns(dns_dir, count)
            try:
                for server in SERVERS:
                    work = tempfile.mkdtemp(prefix=f"tern-relay-bench-{server}-")
                    os.chmod(work, 0o755)  # Postfix daemons run as the postfix user
                    try:
                        rate, accept_rate, extra = one_run(server, work, count)
                    finally:
                        if not KEEP_TMP:
                            shutil.rmtree(work, ignore_errors=True)
                    what = f"{count} domain(s) " if count else ""
                    log(f"round {r + 1} {server} {what}: {rate:.0f} msg/s end to end "
                        f"(accepted at {accept_rate:.0f} msg/s; {extra} duplicates at the sink)")
                    results[(server, count)].append(rate)
            finally:
                if dns:
                    dns.stop()
                    shutil.rmtree(dns_dir, ignore_errors=True)
    os.makedirs(OUT_DIR, exist_ok=True)
    client = "asyncio client (pipelining)" if DOMAINS else "smtp-source"
    lines = [f"relay benchmark: {MESSAGES} messages x {ROUNDS} round(s), {SESSIONS} sessions, "
             f"{MSG_SIZE}-octet bodies, {client} -> MTA -> smtp-sink, {os.cpu_count()} CPUs, "
             f"Tern spool commit = {TERN_COMMIT}"]
    best = {}
    for (s, c), rates in results.items():
        best[(s, c)] = max(rates)
        label = f"{s}, {c} domain(s)" if c else s
        lines.append(f"{label}: " + ", ".join(f"{x:.0f}" for x in rates)
                     + f" msg/s (best {best[(s, c)]:.0f})")
    for c in configs:
        if ("tern", c) in best and ("postfix", c) in best:
            label = f" at {c} domain(s)" if c else ""
            lines.append(f"ratio tern/postfix{label} (best of each): "
                         f"{best[('tern', c)] / best[('postfix', c)]:.2f}x")
    if len(configs) > 1:
        first = configs[0]
        for s in SERVERS:
            for c in configs[1:]:
                lines.append(f"{s}: {c} domains at {best[(s, c)] / best[(s, first)]:.0%} of its "
                             f"rate at {first} domain(s)")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(OUT_DIR, "relay-summary.txt"), "w") as f:
        f.write(text + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5 + len(configs), 3.2))
        keys = list(best)
        names = [f"{s}\n{c} dom." if c else s for s, c in keys]
        ax.bar(names, [best[k] for k in keys], color=["#2a7" if k[0] == "tern" else "#888"
                                                      for k in keys])
        ax.set_ylabel("messages/s, end to end")
        ax.set_title(f"Relay: client -> MTA -> smtp-sink\n{MESSAGES} x 1 KiB, {SESSIONS} sessions")
        for i, k in enumerate(keys):
            ax.text(i, best[k], f"{best[k]:.0f}", ha="center", va="bottom")
        fig.tight_layout()
        os.makedirs(os.path.join(ROOT, "docs", "bench"), exist_ok=True)
        chart = "relay-domains.png" if DOMAINS else "relay.png"
        fig.savefig(os.path.join(ROOT, "docs", "bench", chart), dpi=110)
    except ImportError:
        log("matplotlib not installed: no chart (pip install matplotlib)")


if __name__ == "__main__":
    main()
