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

DKIM signing (DKIM="none rsa ed25519 both", any of them, in that order; `dual` = `both`):
for each mode, both MTAs sign the mail from the relay network (the client on loopback)
for the load's From domain, client.bench.test. Tern with a `[dkim]` section
(origins = ["relay_network"], keys made by `tern dkim generate`, RSA 2048 and Ed25519,
in a 0700 directory, files 0600); Postfix through Debian's opendkim milter(s) in the
foreground (`smtpd_milters`, `non_smtpd_milters`, `milter_default_action = tempfail`),
one per algorithm (OpenDKIM signs with one algorithm per instance, so `both` chains
two). `none` signs nothing: the baseline of the same run. The sink dumps every message
(`smtp-sink -D`, in every mode, `none` too), and after each run the dump must hold every
message signed with the mode's algorithms (none for `none`), DKIM_SAMPLE (50) of them
verified by dkimpy against the public keys. Details in bench/relay/dkim_setup.py;
figures in docs/BENCHMARKS.md ("DKIM signing"). Summary in
bench/out/relay-dkim-summary.txt (chart bench/out/relay-dkim.png, not committed).
2026-12-07, 2-core machine shared with other builds (load average 10 to 22), release
build with RSA signed by AWS-LC, OpenDKIM on a Unix socket, best of 2 rounds (msg/s, Tern
vs Postfix+OpenDKIM):
    SKIP_BUILD=1 MESSAGES=5000 ROUNDS=2 DKIM="none rsa ed25519 both" python3 bench/relay/run.py
    none 1375 vs 343 (4.01x); rsa 913 vs 227 (4.03x); ed25519 1226 vs 287 (4.27x); both
    974 vs 189 (5.16x); Tern signed/unsigned: rsa 66 %, ed25519 89 %, both 71 %.
    With ring for RSA (same setup): rsa 2.50x/2.97x per round.

Usage (as root, Postfix installed: scripts/test.sh installs it; DKIM also needs
`apt-get install opendkim opendkim-tools`, and dkimpy + PyNaCl, which scripts/test.sh
installs):
    python3 bench/relay/run.py
    SKIP_BUILD=1 TERN_BIN=target/ci/tern MESSAGES=5000 DOMAINS="1 1000" python3 bench/relay/run.py
    SKIP_BUILD=1 MESSAGES=5000 ROUNDS=2 DKIM="none rsa ed25519 both" python3 bench/relay/run.py
A cluster node (SERVERS="tern tern-cluster", issue 20): `tern-cluster` is Tern with
`[cluster] enabled` against a redis-server this script starts on loopback (one per run,
no persistence), plus CLUSTER_EXTRA (TOML appended to the configuration: the shared limits
whose Redis round trips are measured, docs/CLUSTER.md). The summary adds the
tern-cluster/tern ratio; the figure is in docs/BENCHMARKS.md ("Cluster").
    SKIP_BUILD=1 TERN_BIN=target/ci/tern SERVERS="tern tern-cluster" ROUNDS=3 python3 bench/relay/run.py

Environment knobs: MESSAGES (20000) SESSIONS (20) MSG_SIZE (1024) ROUNDS (1)
    SERVERS ("tern postfix") TERN_BIN (target/release/tern) SKIP_BUILD (0)
    TERN_COMMIT (segment: Tern's `[spool] commit`, file / batch / segment)
    DOMAINS (unset: smarthost mode; else space-separated domain counts)
    DKIM (unset: no signing, no dump; else modes, see above) DKIM_SAMPLE (50)
    OPENDKIM_BASE (/run: where OpenDKIM's files go; it refuses any under /tmp)
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

import dkim_setup

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
try:
    DKIM = dkim_setup.parse_modes(os.environ.get("DKIM", ""))
except ValueError as e:
    sys.exit(f"DKIM: {e}")
DKIM_SAMPLE = int(os.environ.get("DKIM_SAMPLE", "50"))
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

    def __init__(self, work, ip="127.0.0.1", dump=None):
        self.port = free_port(ip)
        self.out_path = os.path.join(work, f"sink-{self.port}.out")
        self.out = open(self.out_path, "wb")
        args = ["smtp-sink", "-c"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        if dump:
            # Every transaction appended to one file (DKIM mode: checked after the run).
            args += ["-D", dump]
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


def start_redis(work):
    """A redis-server on a free loopback port, no persistence. Returns (port, stop)."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                             "--save", "", "--appendonly", "no", "--dir", work],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True,
                         text=True).stdout.strip() != "PONG":
        if time.monotonic() > deadline:
            die("redis-server did not start")
        time.sleep(0.02)

    def stop():
        # What the node asked of Redis in the round: scripts (limits, leases) and every
        # command, per message (printed, so the cost can be read beside the rate).
        stats = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"],
                               capture_output=True, text=True).stdout
        calls = {}
        for line in stats.splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line.partition(":")
                fields = dict(kv.split("=", 1) for kv in rest.split(",") if "=" in kv)
                calls[name[len("cmdstat_"):]] = int(fields.get("calls", "0"))
        scripts = calls.get("evalsha", 0) + calls.get("eval", 0)
        log(f"redis: {scripts / MESSAGES:.3f} scripts per message ({scripts} scripts; "
            f"{sum(calls.values())} commands, those run by scripts included)")
        proc.kill()
        proc.wait()
    return port, stop


def cluster_section(redis_port):
    """The `[cluster]` section of the bench's one node, plus CLUSTER_EXTRA."""
    return (f'[cluster]\nenabled = true\nnode_name = "bench"\nnode_id = 1\n'
            f'redis = ["redis://127.0.0.1:{redis_port}"]\n\n'
            + os.environ.get("CLUSTER_EXTRA", "").replace("\\n", "\n") + "\n")


def start_tern(work, sink_port, dkim=""):
    return launch_tern(work, f"""{dkim}

[relay]
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


def start_tern_mx(work, sink_port, dkim=""):
    """Tern delivering by MX (the bench DNS server) to the sink's port, no TLS."""
    return launch_tern(work, f"""{dkim}

[relay]
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


def start_postfix(work, sink_port, mx=False, milters=""):
    """A private Postfix relaying to the sink; `milters` (an `smtpd_milters` value) signs
    through OpenDKIM, failing closed like a site that must sign."""
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
    if milters:
        routing += (f"\nsmtpd_milters = {milters}\nnon_smtpd_milters = $smtpd_milters\n"
                    "milter_default_action = tempfail")
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


def one_run(server, work, domains=None, dkim=None):
    """One measurement. `domains` None: smtp-source and a smarthost; a count: the
    asyncio client and MX delivery. `dkim` None: no signing and no dump; a mode of
    dkim_setup (`none` included): the MTA signs so, the sink dumps what it receives,
    and the dump is checked after the timing. Returns (end-to-end rate, acceptance
    rate, messages beyond MESSAGES at the sink, the DKIM check's summary or None)."""
    milter, section, records = None, "", {}
    dump = None
    if dkim is not None:
        dump = os.path.join(dkim_setup.dump_dir(work), "dump")
        if server in ("tern", "tern-cluster"):
            section, records = dkim_setup.tern_keys(TERN_BIN, work, dkim)
        elif dkim != "none":
            milter = dkim_setup.OpenDkim(dkim, free_port, KEEP_TMP)
            records = milter.records
    sink = None
    stop = None
    try:
        sink = Sink(work, SINK_IP if domains else "127.0.0.1", dump)
        milters = milter.milters if milter else ""
        if server in ("tern", "tern-cluster"):
            starter = start_tern_mx if domains else start_tern
            if server == "tern-cluster":
                redis_port, stop_redis = start_redis(work)
                section += "\n" + cluster_section(redis_port)
            port, stop = starter(work, sink.port, section)
            if server == "tern-cluster":
                stop_tern = stop

                def stop():
                    stop_tern()
                    stop_redis()
        else:
            port, stop = start_postfix(work, sink.port, bool(domains), milters)
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
        checked = None
        if dump:
            # The sink counts a message at its final dot, and writes its dump at the same
            # moment: stop it first so that the file is complete.
            sink.stop()
            sink = None
            try:
                checked = dkim_setup.check_dump(dump, dkim, records, MESSAGES, DKIM_SAMPLE)
            except RuntimeError as e:
                die(f"{server} DKIM={dkim}: {e}")
        return MESSAGES / (done - t0), MESSAGES / (accepted_at - t0), extra, checked
    finally:
        if stop:
            stop()
        if sink:
            sink.stop()
        if milter:
            milter.stop()


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


def label(server, config):
    """`tern`, `tern, 1000 domain(s)`, `tern, DKIM rsa`, ..."""
    count, mode = config
    parts = [server] + ([f"{count} domain(s)"] if count else []) + (
        [f"DKIM {mode}"] if mode else [])
    return ", ".join(parts)


def main():
    if os.geteuid() != 0 and ("postfix" in SERVERS or DOMAINS):
        die("run as root (Postfix needs it, and the DNS server binds port 53)")
    tools = ("smtp-sink",) + (() if DOMAINS else ("smtp-source",))
    if DKIM:
        tools += ("openssl",) + (("opendkim", "opendkim-genkey") if "postfix" in SERVERS
                                 else ())
    for tool in tools + (("postfix",) if "postfix" in SERVERS else ()):
        if shutil.which(tool) is None:
            die(f"{tool} not found; run scripts/test.sh (it installs Postfix), and "
                "apt-get install opendkim opendkim-tools for DKIM")
    if "tern-cluster" in SERVERS and shutil.which("redis-server") is None:
        die("redis-server not found; run scripts/test.sh (it installs it)")
    if "tern" in SERVERS and os.environ.get("SKIP_BUILD", "0") != "1":
        log("building Tern: cargo build --release -p tern")
        subprocess.run(["cargo", "build", "--release", "-p", "tern"], cwd=ROOT, check=True)
    counts = DOMAINS or [None]
    modes = DKIM or [None]
    configs = [(c, m) for c in counts for m in modes]
    results = {(s, c): [] for c in configs for s in SERVERS}
    checks = []
    for r in range(ROUNDS):
        # The order of the servers alternates between rounds (the machine's load drifts).
        order = SERVERS if r % 2 == 0 else SERVERS[::-1]
        for count in counts:
            dns = None
            if count:
                dns_dir = tempfile.mkdtemp(prefix="tern-relay-bench-dns-")
                dns = Dns(dns_dir, count)
            try:
                for mode in modes:
                    for server in order:
                        work = tempfile.mkdtemp(prefix=f"tern-relay-bench-{server}-")
                        os.chmod(work, 0o755)  # Postfix daemons run as the postfix user
                        try:
                            rate, accept_rate, extra, checked = one_run(server, work, count,
                                                                        mode)
                        finally:
                            if not KEEP_TMP:
                                shutil.rmtree(work, ignore_errors=True)
                        what = label(server, (count, mode))
                        log(f"round {r + 1} {what}: {rate:.0f} msg/s end to end "
                            f"(accepted at {accept_rate:.0f} msg/s; {extra} duplicates at the "
                            "sink)")
                        if checked:
                            log(f"  DKIM check: {checked}")
                            checks.append(f"round {r + 1} {what}: {checked}")
                        results[(server, (count, mode))].append(rate)
            finally:
                if dns:
                    dns.stop()
                    shutil.rmtree(dns_dir, ignore_errors=True)
    os.makedirs(OUT_DIR, exist_ok=True)
    client = "asyncio client (pipelining)" if DOMAINS else "smtp-source"
    lines = [f"relay benchmark: {MESSAGES} messages x {ROUNDS} round(s), {SESSIONS} sessions, "
             f"{MSG_SIZE}-octet bodies, {client} -> MTA -> smtp-sink, {os.cpu_count()} CPUs, "
             f"Tern spool commit = {TERN_COMMIT}"]
    if DKIM:
        lines.append("DKIM: Tern signs itself (keys from `tern dkim generate`); Postfix through "
                     "the opendkim milter; the sink dumps every message (-D) for the check")
    best = {}
    for (s, c), rates in results.items():
        best[(s, c)] = max(rates)
        lines.append(f"{label(s, c)}: " + ", ".join(f"{x:.0f}" for x in rates)
                     + f" msg/s (best {best[(s, c)]:.0f})")
    for c in configs:
        if ("tern", c) in best and ("postfix", c) in best:
            what = label("", c).lstrip(", ")
            what = f" ({what})" if what else ""
            lines.append(f"ratio tern/postfix{what} (best of each): "
                         f"{best[('tern', c)] / best[('postfix', c)]:.2f}x"
                         + ("" if ROUNDS < 2 else " (per round: " + ", ".join(
                             f"{t / p:.2f}x" for t, p in zip(results[("tern", c)],
                                                              results[("postfix", c)])) + ")"))
    for c in configs:
        if ("tern", c) in best and ("tern-cluster", c) in best:
            lines.append(f"ratio tern-cluster/tern{label('', c)} (best of each): "
                         f"{best[('tern-cluster', c)] / best[('tern', c)]:.0%}"
                         + ("" if ROUNDS < 2 else " (per round: " + ", ".join(
                             f"{k / t:.0%}" for k, t in zip(results[("tern-cluster", c)],
                                                            results[("tern", c)])) + ")"))
    if len(counts) > 1:
        first = counts[0]
        for s in SERVERS:
            for m in modes:
                for c in counts[1:]:
                    lines.append(f"{label(s, (None, m))}: {c} domains at "
                                 f"{best[(s, (c, m))] / best[(s, (first, m))]:.0%} of its "
                                 f"rate at {first} domain(s)")
    if "none" in modes and len(modes) > 1:
        for s in SERVERS:
            for c in counts:
                for m in modes:
                    if m != "none":
                        lines.append(f"{label(s, (c, m))}: {best[(s, (c, m))] / best[(s, (c, 'none'))]:.0%} "
                                     "of its unsigned rate (best of each)")
    lines += checks
    text = "\n".join(lines)
    print(text)
    summary = "relay-dkim-summary.txt" if DKIM else "relay-summary.txt"
    with open(os.path.join(OUT_DIR, summary), "w") as f:
        f.write(text + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5 + len(configs), 3.2))
        keys = list(best)
        names = [label(s, c).replace(", ", "\n") for s, c in keys]
        ax.bar(names, [best[k] for k in keys], color=["#2a7" if k[0] == "tern" else "#888"
                                                      for k in keys])
        ax.set_ylabel("messages/s, end to end")
        ax.set_title(f"Relay: client -> MTA -> smtp-sink\n{MESSAGES} x 1 KiB, {SESSIONS} sessions")
        for i, k in enumerate(keys):
            ax.text(i, best[k], f"{best[k]:.0f}", ha="center", va="bottom")
        fig.tight_layout()
        if DKIM:
            # Not committed: the figures are in docs/BENCHMARKS.md.
            path = os.path.join(OUT_DIR, "relay-dkim.png")
        else:
            os.makedirs(os.path.join(ROOT, "docs", "bench"), exist_ok=True)
            chart = "relay-domains.png" if DOMAINS else "relay.png"
            path = os.path.join(ROOT, "docs", "bench", chart)
        fig.savefig(path, dpi=110)
    except ImportError:
        log("matplotlib not installed: no chart (pip install matplotlib)")


if __name__ == "__main__":
    main()
