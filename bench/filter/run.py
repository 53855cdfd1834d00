#!/usr/bin/env python3
"""Receive benchmark with every inbound check on: Tern vs Postfix + postscreen +
policyd-spf + OpenDKIM + OpenDMARC (issue 18 §5).

Both servers receive the same pre-signed messages from clients on 127.0.0.2..127.0.0.9
(outside both servers' relay networks / mynetworks, so nothing is skipped), store them
and deliver nothing. Every DNS answer comes from a DNS server in this script on
127.0.0.1:53 (`world.py dns`), which answers each distinct query from memory, so what
is measured is the servers' checks, not the network.

The world (bench/filter/world.py): DOMAINS (50) sender domains `org<k>.example`, each with
SPF (most through two levels of `include:`), a DKIM key (RSA 2048, every fifth Ed25519),
DMARC `p=reject` / `p=quarantine` / `p=none` with `rua=`; the spoofers' domain; a DNS
block list `bl.bench.test` listing 127.0.0.20 only; PTR and A for every client. The
messages are signed with dkimpy once per run, the same bytes for both servers: 80 %
good (DMARC pass), 5 % spoofed From of a `p=reject` domain (refused), 5 % signed by the
From domain with the body changed after signing (refused), 5 % spoofed `p=quarantine`
and 5 % spoofed `p=none` (both accepted and marked).

- Postfix: a private instance (`postfix -c DIR`, own queue and log) with postscreen
  (`postscreen_dnsbl_sites = bl.bench.test*1`, threshold 1, `enforce`; pre-greeting
  test with `postscreen_greet_action = enforce`, `postscreen_greet_wait = GREET_WAIT`),
  `check_policy_service` to Debian's `policyd-spf` (spawned by Postfix's spawn(8); Fail
  of HELO or MAIL FROM rejected, `skip_addresses` narrowed to 127.0.0.1, header
  Received-SPF), the OpenDKIM milter in verify mode and the OpenDMARC milter with
  `RejectFailures true` (it reads OpenDKIM's Authentication-Results and policyd-spf's
  Received-SPF), both milters on Unix sockets (as Debian has them; over TCP each adds a
  ~90 ms stall per message, see bench/README.md), `milter_default_action = tempfail`,
  `mynetworks = 127.0.0.1/32`,
  `smtpd_peername_lookup = no` (Tern looks up no loopback client's name; PEERNAME_LOOKUP).
  Every accepted message goes to the hold queue (`smtpd_data_restrictions =
  check_client_access static:HOLD`, as bench/receive does). Postfix, its children and
  both milters run in a private mount namespace whose /etc/resolv.conf names the bench
  DNS server (the system's file is not touched); OpenDKIM, which resolves through
  libunbound, gets `Nameservers 127.0.0.1` (the sender domains are under .example: see
  world.py).
- Tern: `[dns] nameservers` at the bench DNS server, `[relay] networks =
  ["127.0.0.1/32"]`, `[queue] deliver = false`. TERN_CHECKS=1 adds `[verify]` (spf,
  dkim, dmarc, arc on; `dmarc_reject = "reject"`, `spf_fail = "reject"` as policyd-spf
  does) and `[screen]` (the same DNSBL, weight and threshold, `pregreet = "enforce"`,
  `greet_wait` as Postfix's), the default; TERN_CHECKS=0 runs Tern with no checks, a
  sanity baseline.

The load: an asyncio client in this process, SESSIONS (20) sessions at once, each
connection from one of the 8 client addresses in turn, PER_CONNECTION (1) messages per
connection (EHLO, then MAIL, RCPT and DATA in one write as PIPELINING allows, then the
content); it waits for the whole greeting, as a real server must to pass the
pre-greeting test. Its own ceiling is measured once against smtp-sink (CEILING=1).

Run: both servers start and stay up; a warm-up (WARMUP_PER_CLIENT messages from each
client address, so each address passes the screening once and is in both pass caches:
a good server pays those checks once) and two sanity clients: 127.0.0.20 (listed)
and 127.0.0.21 (talks before the greeting) must both be refused. Then ROUNDS timed
runs, the servers' order alternating, a `sync` before each. Per run: msg/s, the CPU
seconds of the server (Postfix: the master and every process below it plus both
milters; Tern: its process), of the DNS server and of the client, the DNS queries
asked, and the outcome of every message. Checks that the figures are real, each a
failure of the script: every message answered (no 4xx, no error), the refused count
equal to the expected count (spoof + broken) for each server with checks on, each
server's queue holding exactly the messages it accepted, and in SAMPLE (40) stored
messages of each server the verdict headers (Postfix: OpenDKIM's and OpenDMARC's
Authentication-Results and Received-SPF; Tern: its Authentication-Results) giving
the result each message's kind calls for.

Usage (as root; see bench/README.md for what to install):
    TERN_BIN=target/release/tern python3 bench/filter/run.py
    MESSAGES=2000 ROUNDS=2 TERN_CHECKS=1 python3 bench/filter/run.py
    SERVERS=postfix python3 bench/filter/run.py
Knobs: MESSAGES (2000) ROUNDS (2) SESSIONS (20) PER_CONNECTION (1) MSG_SIZE (1024)
    DOMAINS (50) GREET_WAIT (6, seconds) WARMUP_PER_CLIENT (2) SAMPLE (40) CEILING (1)
    PEERNAME_LOOKUP (0: Postfix's smtpd does no reverse lookups, as Tern for loopback)
    MILTER_SOCKET (unix: the milters on Unix sockets, as Debian has them; inet: TCP)
    SERVERS ("tern postfix") TERN_BIN (target/release/tern) TERN_CHECKS (1)
    TERN_EXTRA (TOML appended to Tern's config) TERN_CHECKS_TOML (a file whose text
    replaces the [verify] and [screen] sections TERN_CHECKS=1 writes) MILTER_BASE (/run: OpenDKIM refuses
    files under /tmp) KEEP_TMP (0) OUT_DIR (bench/out) TMPDIR (spools; a real disk)
Output: bench/out/filter-summary.txt, bench/out/filter.csv (one row per run), and
bench/out/filter-summary.json.
"""

import asyncio
import csv
import grp
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def knob(name, default):
    v = os.environ.get(name, str(default))
    try:
        return int(v)
    except ValueError:
        sys.exit(f"{name} must be an integer (got {v!r})")


MESSAGES = knob("MESSAGES", 2000)
ROUNDS = knob("ROUNDS", 2)
SESSIONS = knob("SESSIONS", 20)
PER_CONNECTION = max(1, knob("PER_CONNECTION", 1))
MSG_SIZE = knob("MSG_SIZE", 1024)
DOMAINS = knob("DOMAINS", 50)
GREET_WAIT = knob("GREET_WAIT", 6)
WARMUP_PER_CLIENT = knob("WARMUP_PER_CLIENT", 2)
SAMPLE = knob("SAMPLE", 40)
CEILING = knob("CEILING", 1)
PEERNAME_LOOKUP = knob("PEERNAME_LOOKUP", 0) == 1
MILTER_SOCKET = os.environ.get("MILTER_SOCKET", "unix")
if MILTER_SOCKET not in ("unix", "inet"):
    sys.exit(f"MILTER_SOCKET must be unix or inet (got {MILTER_SOCKET!r})")
TERN_CHECKS = knob("TERN_CHECKS", 1) == 1
SERVERS = os.environ.get("SERVERS", "tern postfix").split()
TERN_BIN = os.environ.get("TERN_BIN", os.path.join(ROOT, "target", "release", "tern"))
TERN_EXTRA = os.environ.get("TERN_EXTRA", "")
TERN_CHECKS_TOML = os.environ.get("TERN_CHECKS_TOML", "")
MILTER_BASE = os.environ.get("MILTER_BASE", "/run")
KEEP_TMP = knob("KEEP_TMP", 0) == 1
OUT_DIR = os.environ.get("OUT_DIR", os.path.join(ROOT, "bench", "out"))
DNS_PORT = 53  # the servers' resolv.conf cannot name another port
TIMEOUT = 600 + MESSAGES // 5
AUTHSERV = {"postfix": "postfix.bench.test", "tern": "tern.bench.test"}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Failure(Exception):
    pass


def free_port(ip="127.0.0.1"):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def wait_until(what, cond, limit=30, proc=None):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Failure(f"{what}: the process exited with {proc.returncode}")
        if cond():
            return
        time.sleep(0.05)
    raise Failure(f"{what}: not within {limit} s")


def greets(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(512).startswith(b"220")
    except OSError:
        return False


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------- prerequisites --

def missing_tools():
    """What is not installed, with how to install it."""
    out = []
    need = {"smtp-sink": "postfix", "unshare": "util-linux"}
    if "postfix" in SERVERS:
        need.update({"postfix": "postfix", "postqueue": "postfix", "postcat": "postfix",
                     "opendkim": "opendkim", "opendmarc": "opendmarc"})
    for tool, pkg in need.items():
        if shutil.which(tool) is None:
            out.append(f"{tool} (apt-get install {pkg})")
    if "postfix" in SERVERS:
        if not os.path.exists("/usr/bin/policyd-spf"):
            out.append("/usr/bin/policyd-spf (apt-get install postfix-policyd-spf-python)")
        if not os.path.exists("/usr/share/publicsuffix/public_suffix_list.dat"):
            out.append("the public suffix list (apt-get install publicsuffix)")
    for mod, pkg in (("dnslib", "pip install dnslib"), ("dkim", "pip install dkimpy"),
                     ("nacl", "pip install pynacl"), ("cryptography", "pip install cryptography")):
        try:
            __import__(mod)
        except ImportError:
            out.append(f"python module {mod} ({pkg})")
    if "tern" in SERVERS and not os.access(TERN_BIN, os.X_OK):
        out.append(f"Tern binary {TERN_BIN} (cargo build --release -p tern, or TERN_BIN=...)")
    return out


# --------------------------------------------------------------------------- CPU ----

CLK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    """(ppid, own + reaped children's CPU ticks) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rfind(")") + 2:].split()
    # fields after the name: state ppid ... utime(12) stime(13) cutime(14) cstime(15)
    return int(rest[1]), sum(int(x) for x in rest[11:15])


def tree_cpu(roots):
    """CPU seconds of the processes `roots` and all their descendants, each counted
    with its reaped children (cutime/cstime), so a child that exits between two
    readings still counts: the difference of two readings is the CPU spent between."""
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st:
                procs[int(d)] = st
    kids = {}
    for pid, (ppid, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    seen, todo, total = set(), [r for r in roots if r in procs], 0
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += procs[p][1]
        todo.extend(kids.get(p, []))
    return total / CLK


def busy_cpu():
    """Machine-wide busy CPU seconds so far (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / CLK


# ------------------------------------------------------------------------- DNS ------

class Dns:
    def __init__(self, work):
        if listening(DNS_PORT):
            raise Failure(f"127.0.0.1:{DNS_PORT} is taken (TCP): the bench DNS server needs it")
        ready = os.path.join(work, "dns-ready")
        self.log = open(os.path.join(work, "dns.err"), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "world.py"),
             "dns", os.path.join(work, "zone.json"), str(DNS_PORT), ready],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until(f"the DNS server on 127.0.0.1:{DNS_PORT} (see {self.log.name})",
                   lambda: os.path.exists(ready), 20, self.proc)

    def queries(self):
        return world.query_count(DNS_PORT)

    def cpu(self):
        return tree_cpu([self.proc.pid])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def write_resolv(work):
    path = os.path.join(work, "resolv.conf")
    with open(path, "w") as f:
        f.write("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
    os.chmod(path, 0o644)
    return path


def in_namespace(resolv, argv):
    """argv run in a private mount namespace whose /etc/resolv.conf is `resolv`."""
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount --bind "$0" /etc/resolv.conf && shift && exec "$@"', resolv, "x"] + argv


# ------------------------------------------------------------------------ client ----

async def read_reply(reader):
    """The lines of one reply; raises ConnectionError on a closed connection."""
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line)
        if line[3:4] != b"-":
            return lines


def code(lines):
    return lines[-1][:3].decode("ascii", "replace")


def text(lines):
    return b" | ".join(x.strip() for x in lines).decode("utf-8", "replace")[:200]


async def session(port, ip, items, msgs, results, pregreet=False):
    """One connection from `ip`: the messages `items` (indices into msgs). Each result is
    ('accepted', None) or ('refused'|'tempfail'|'error', 'stage code text')."""
    done = 0
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(ip, 0)), 30)
    except (OSError, asyncio.TimeoutError) as e:
        for i in items:
            results[i] = ("error", f"connect: {e!r}")
        return
    try:
        helo = f"EHLO {world.client_name(ip)}\r\n".encode()
        if pregreet:
            writer.write(helo)  # before the greeting: what postscreen and [screen] detect
        r = await asyncio.wait_for(read_reply(reader), 60 + 2 * GREET_WAIT)
        early = None
        if pregreet and r[0][:3] == b"220" and code(r) != "220":
            # postscreen, on seeing the early EHLO, ends its "220-" greeting there and
            # answers the EHLO: the lines from the first non-220 one are that answer
            cut = next(n for n, line in enumerate(r) if line[:3] != b"220")
            r, early = r[:cut], r[cut:]
        elif code(r) != "220":
            raise _Refused("greeting", r)
        if not pregreet:
            writer.write(helo)
        r = early or await read_reply(reader)
        if code(r) != "250":
            raise _Refused("EHLO", r)
        pipelining = any(line[4:].strip().upper() == b"PIPELINING" for line in r)
        for i in items:
            m = msgs[i]
            cmds = [f"MAIL FROM:<{m.sender}>\r\n".encode(), f"RCPT TO:<{m.rcpt}>\r\n".encode(),
                    b"DATA\r\n"]
            if pipelining:
                writer.write(b"".join(cmds))
                replies = [await read_reply(reader) for _ in range(3)]
            else:  # one command at a time (postscreen's stand-in server has no PIPELINING)
                replies = []
                for c in cmds:
                    writer.write(c)
                    replies.append(await read_reply(reader))
                    if code(replies[-1])[:1] not in ("2", "3"):
                        break
                replies += [[b"503 not sent"]] * (3 - len(replies))
            bad = None
            for stage, want, rep in zip(("MAIL", "RCPT", "DATA"), ("250", "250", "354"), replies):
                if code(rep) != want:
                    bad = (stage, rep)
                    break
            if bad is None:
                writer.write(m.data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
                await writer.drain()
                r = await read_reply(reader)
                if code(r) == "250":
                    results[i] = ("accepted", None)
                else:
                    bad = ("end of data", r)
            if bad is not None:
                stage, rep = bad
                kind = "refused" if rep[-1][:1] == b"5" else "tempfail" if rep[-1][:1] == b"4" \
                    else "error"
                results[i] = (kind, f"{stage} {text(rep)}")
                if stage in ("MAIL", "RCPT", "DATA") and code(replies[2]) == "354":
                    # the DATA went through although something before failed: end it
                    writer.write(b".\r\n")
                    await read_reply(reader)
                elif stage in ("MAIL", "RCPT"):
                    writer.write(b"RSET\r\n")
                    await read_reply(reader)
            done += 1
        writer.write(b"QUIT\r\n")
        await writer.drain()
        try:
            await asyncio.wait_for(read_reply(reader), 10)
        except (ConnectionError, asyncio.TimeoutError):
            pass
    except _Refused as e:
        for i in items[done:]:
            kind = "refused" if e.reply[-1][:1] == b"5" else "tempfail" \
                if e.reply[-1][:1] == b"4" else "error"
            results[i] = (kind, f"{e.stage} {text(e.reply)}")
    except (ConnectionError, OSError, asyncio.TimeoutError) as e:
        for i in items[done:]:
            results[i] = ("refused" if pregreet else "error", f"connection: {e!r}")
    finally:
        writer.close()


class _Refused(Exception):
    def __init__(self, stage, reply):
        super().__init__(stage)
        self.stage, self.reply = stage, reply


async def load(port, msgs, indices, ips, sessions):
    """Sends msgs[indices] over connections of PER_CONNECTION messages, each from the
    next address of `ips`, `sessions` at once. Returns {index: result}."""
    conns = [indices[i:i + PER_CONNECTION] for i in range(0, len(indices), PER_CONNECTION)]
    work = asyncio.Queue()
    for n, c in enumerate(conns):
        work.put_nowait((ips[n % len(ips)], c))
    results = {}

    async def worker():
        while True:
            try:
                ip, items = work.get_nowait()
            except asyncio.QueueEmpty:
                return
            await session(port, ip, items, msgs, results)

    await asyncio.gather(*(worker() for _ in range(min(sessions, len(conns)))))
    return results


def tally(results):
    out = {"accepted": 0, "refused": 0, "tempfail": 0, "error": 0}
    for kind, _ in results.values():
        out[kind] += 1
    return out


# ------------------------------------------------------------------------ Tern -------

class Tern:
    name = "tern"

    def __init__(self, work):
        self.work = os.path.join(work, "tern")
        os.mkdir(self.work, 0o700)
        self.port = free_port()
        self.conf = os.path.join(self.work, "tern.toml")
        checks = ""
        if TERN_CHECKS and TERN_CHECKS_TOML:
            with open(TERN_CHECKS_TOML) as f:
                checks = f.read()
        elif TERN_CHECKS:
            checks = f"""
[verify]
enabled = true
authserv_id = "{AUTHSERV['tern']}"
spf = true
dkim = true
dmarc = true
arc = true
spf_fail = "reject"
temperror = "accept"
dmarc_reject = "reject"
dmarc_quarantine = "header"

[screen]
enabled = true
greet_wait = "{GREET_WAIT}s"
pregreet = "enforce"
dnsbl = ["{world.BL_ZONE}*1"]
dnsbl_threshold = 1
dnsbl_action = "enforce"
pass_ttl = "24h"
"""
        with open(self.conf, "w") as f:
            f.write(f"""[server]
hostname = "{AUTHSERV['tern']}"
data_dir = "{self.work}/data"
log_level = "notice"
log_stderr = false

[dns]
nameservers = ["127.0.0.1:{DNS_PORT}"]
reverse_lookups = true

[relay]
domains = ["{world.RCPT_DOMAIN}"]
# only the address nothing sends from: the bench clients are outside, so checked
networks = ["127.0.0.1/32"]

[admin]
listen = "127.0.0.1:{free_port()}"

# Accept-only, like the Postfix whose mail all goes to hold: deliver nothing.
[queue]
deliver = false
{checks}
{TERN_EXTRA}

[[listener]]
name = "mx"
address = "127.0.0.1:{self.port}"
tls = "none"
max_connections = 1000
max_connections_per_client = 1000
""")
        os.chmod(self.conf, 0o600)
        chk = subprocess.run([TERN_BIN, "check-config", self.conf],
                             capture_output=True, timeout=60)
        if chk.returncode != 0:
            raise Failure(f"tern check-config refused {self.conf}:\n"
                          + (chk.stdout + chk.stderr).decode("utf-8", "replace")[-2000:]
                          + ("\n(TERN_CHECKS=1 needs a build with [verify] and [screen])"
                             if TERN_CHECKS else ""))
        self.logf = open(os.path.join(self.work, "tern.log"), "wb")
        self.proc = subprocess.Popen([TERN_BIN, "serve", "--config", self.conf],
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_until("Tern's greeting", lambda: greets(self.port), 30, self.proc)

    def cpu(self):
        return tree_cpu([self.proc.pid])

    def alive(self):
        return self.proc.poll() is None

    def queued(self):
        """[(queue id, state)] from `tern queue list --json` (one object per line or an
        array)."""
        r = subprocess.run([TERN_BIN, "queue", "list", "--json", "--config", self.conf],
                           capture_output=True, timeout=300)
        if r.returncode != 0:
            raise Failure(f"tern queue list --json: {r.stderr.decode()[-500:]}")
        s = r.stdout.decode().strip()
        items = json.loads(s) if s.startswith("[") else [json.loads(x) for x in s.splitlines()
                                                         if x.strip()]
        return [(str(i.get("id") or i.get("queue_id")), i.get("state") or i.get("queue"))
                for i in items]

    def headers(self, qid):
        r = subprocess.run([TERN_BIN, "queue", "export", qid, "--config", self.conf],
                           capture_output=True, timeout=60)
        if r.returncode != 0:
            raise Failure(f"tern queue export {qid}: {r.stderr.decode()[-300:]}")
        return r.stdout.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.logf.close()


# --------------------------------------------------------------------- Postfix -------

class Postfix:
    name = "postfix"

    def __init__(self, work, resolv):
        self.work = os.path.join(work, "postfix")
        self.etc = os.path.join(self.work, "etc")
        queue = os.path.join(self.work, "queue")
        data = os.path.join(self.work, "data")
        for d in (self.work, self.etc, queue, data):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        shutil.chown(data, "postfix")
        self.port = free_port()
        self.milters = []
        self.master_pid = None
        # The milters' files: OpenDKIM refuses any below a directory others may write
        # (so not under /tmp); root's MILTER_BASE, removed at the end.
        self.mdir = tempfile.mkdtemp(prefix="tern-filter-bench-milters-", dir=MILTER_BASE)
        os.chmod(self.mdir, 0o711)  # Postfix's processes go through it to the sockets
        try:
            self._start(resolv, queue, data)
        except BaseException:
            self.stop()
            raise

    def _milter(self, resolv, name, conf_text, argv_of):
        """Starts one milter; returns its address for smtpd_milters. MILTER_SOCKET=unix
        (the default, as Debian configures both): a Unix socket in the milters'
        directory, made group `postfix` and 0660 once it exists (the directory is 0711,
        so Postfix's processes reach it without listing it); inet: TCP on loopback."""
        if MILTER_SOCKET == "unix":
            sock = os.path.join(self.mdir, f"{name}.sock")
            spec, addr = f"local:{sock}", f"unix:{sock}"
        else:
            port = free_port()
            spec, addr = f"inet:{port}@127.0.0.1", f"inet:127.0.0.1:{port}"
        conf = os.path.join(self.mdir, f"{name}.conf")
        with open(conf, "w") as f:
            f.write(conf_text.replace("@SOCKET@", spec))
        os.chmod(conf, 0o600)
        logf = open(os.path.join(self.work, f"{name}.log"), "wb")
        proc = subprocess.Popen(in_namespace(resolv, argv_of(conf)), stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.milters.append((proc, logf))

        def up():
            if MILTER_SOCKET != "unix":
                return listening(port)
            with socket.socket(socket.AF_UNIX) as u:
                try:
                    u.connect(sock)
                    return True
                except OSError:
                    return False
        try:
            wait_until(f"{name} listening on {addr} (log {logf.name})", up, 30, proc)
        except Failure as e:
            logf.flush()
            with open(logf.name, "rb") as f:
                raise Failure(f"{e}: {f.read()[-800:].decode('utf-8', 'replace')}") from None
        if MILTER_SOCKET == "unix":
            os.chown(sock, 0, grp.getgrnam("postfix").gr_gid)
            os.chmod(sock, 0o660)
        return addr

    def _start(self, resolv, queue, data):
        dkim_milter = self._milter(resolv, "opendkim", f"""Syslog no
Mode v
AuthservID {AUTHSERV['postfix']}
AlwaysAddARHeader yes
Nameservers 127.0.0.1
Socket @SOCKET@
""", lambda c: ["opendkim", "-f", "-x", c])
        dmarc_milter = self._milter(resolv, "opendmarc", f"""Syslog false
AuthservID {AUTHSERV['postfix']}
TrustedAuthservIDs {AUTHSERV['postfix']}
RejectFailures true
SPFIgnoreResults false
SPFSelfValidate false
RequiredHeaders false
FailureReports false
IgnoreAuthenticatedClients true
PublicSuffixList /usr/share/publicsuffix/public_suffix_list.dat
Socket @SOCKET@
""", lambda c: ["opendmarc", "-f", "-c", c])
        spf_conf = os.path.join(self.work, "policyd-spf.conf")
        with open(spf_conf, "w") as f:
            f.write("""debugLevel = 0
TestOnly = 1
HELO_reject = Fail
Mail_From_reject = Fail
PermError_reject = False
TempError_Defer = False
skip_addresses = 127.0.0.1/32
Header_Type = SPF
""")
        os.chmod(spf_conf, 0o644)
        # Tern names every loopback client `localhost` without a query (RFC 6761), so
        # by default Postfix's smtpd does not look the bench clients up either: reverse
        # DNS is no check of issue 18, and each side should do the same DNS work.
        PEERNAME = "" if PEERNAME_LOOKUP else (
            "# as Tern, which looks up no loopback client's name (PEERNAME_LOOKUP=1: on)\n"
            "smtpd_peername_lookup = no\n")
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-filter-bench
maillog_file = {self.work}/maillog
maillog_file_prefixes = {self.work}
myhostname = {AUTHSERV['postfix']}
mydomain = bench.test
myorigin = $myhostname
mydestination =
relay_domains = {world.RCPT_DOMAIN}
local_recipient_maps =
alias_maps =
alias_database =
biff = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# only the address nothing sends from: the bench clients are outside, so screened
mynetworks = 127.0.0.1/32
default_process_limit = 100
{PEERNAME}smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = check_policy_service unix:private/policyd-spf
policyd-spf_time_limit = 3600
# Accept-only: park every accepted message in the hold queue (bench/receive does so)
smtpd_data_restrictions = check_client_access static:HOLD
smtpd_milters = {dkim_milter}, {dmarc_milter}
non_smtpd_milters = $smtpd_milters
milter_default_action = tempfail
postscreen_access_list = permit_mynetworks
postscreen_dnsbl_sites = {world.BL_ZONE}*1
postscreen_dnsbl_threshold = 1
postscreen_dnsbl_action = enforce
postscreen_greet_action = enforce
postscreen_greet_wait = {GREET_WAIT}s
""")
        with open(os.path.join(ROOT, "testpeers", "postfix", "master.cf.in")) as f:
            master = f.read()
        listen = (f"127.0.0.1:{self.port} inet n - n - 1 postscreen\n"
                  "smtpd     pass  -       -       n       -       -       smtpd\n"
                  "dnsblog   unix  -       -       n       -       0       dnsblog\n"
                  "tlsproxy  unix  -       -       n       -       0       tlsproxy\n"
                  "policyd-spf unix -      n       n       -       0       spawn\n"
                  f"  user=policyd-spf argv=/usr/bin/policyd-spf {spf_conf}\n")
        master = re.sub(r"(?m)^@LISTEN@.*\n", lambda _: listen, master)
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(master)
        subprocess.run(["postfix", "-c", self.etc, "check"], check=True, timeout=60)
        subprocess.run(in_namespace(resolv, ["postfix", "-c", self.etc, "start"]), check=True,
                       timeout=60)
        pidfile = os.path.join(queue, "pid", "master.pid")
        wait_until("Postfix's master.pid", lambda: os.path.exists(pidfile), 30)
        with open(pidfile) as f:
            self.master_pid = int(f.read().strip())
        self.queue = queue
        # postscreen's first answer for a new client waits greet_wait: any 220 will do
        wait_until("Postfix's greeting", lambda: greets(self.port), 30 + GREET_WAIT)

    def cpu(self):
        return tree_cpu([self.master_pid] + [p.pid for p, _ in self.milters])

    def parts(self):
        """CPU seconds so far of Postfix itself (the master and everything below it:
        postscreen, dnsblog, smtpd, cleanup, spawn and policyd-spf, ...) and of each
        milter."""
        out = {"postfix": tree_cpu([self.master_pid])}
        for (p, _), name in zip(self.milters, ("opendkim", "opendmarc")):
            out[name] = tree_cpu([p.pid])
        return out

    def alive(self):
        return _stat(self.master_pid) is not None and all(p.poll() is None
                                                          for p, _ in self.milters)

    def queued(self):
        r = subprocess.run(["postqueue", "-c", self.etc, "-j"], capture_output=True, timeout=300)
        if r.returncode != 0:
            raise Failure(f"postqueue -j: {r.stderr.decode()[-500:]}")
        return [(j["queue_id"], j["queue_name"]) for j in
                (json.loads(x) for x in r.stdout.decode().splitlines() if x.strip())]

    def headers(self, qid):
        r = subprocess.run(["postcat", "-c", self.etc, "-h", "-q", qid], capture_output=True,
                           timeout=60)
        if r.returncode != 0:
            raise Failure(f"postcat -q {qid}: {r.stderr.decode()[-300:]}")
        return r.stdout.replace(b"\n", b"\r\n")

    def stop(self):
        if self.master_pid is not None:
            subprocess.run(["postfix", "-c", self.etc, "stop"], timeout=60,
                           capture_output=True)
        for proc, logf in self.milters:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            logf.close()
        self.milters = []
        if not KEEP_TMP:
            shutil.rmtree(self.mdir, ignore_errors=True)


# --------------------------------------------------------------- verdict sample -----

def header_fields(head, name):
    """The unfolded values of every header field `name` (case-insensitive)."""
    out = []
    for fld in re.split(rb"\r\n(?![ \t])", head):
        k, _, v = fld.partition(b":")
        if k.strip().lower() == name.lower():
            out.append(re.sub(rb"\s+", b" ", v).strip().decode("utf-8", "replace"))
    return out


def want_results(kind):
    """What the verdict headers must say for a message of this kind."""
    return {"dkim": "pass", "dmarc": "pass"} if kind == "good" else {"dmarc": "fail"}


def check_sample(server, msgs, checks_on):
    """Reads SAMPLE stored messages spread over the queue and checks their verdicts.
    Returns a one-line summary; raises Failure."""
    queued = server.queued()
    if not queued:
        raise Failure(f"{server.name}: nothing stored")
    step = max(1, len(queued) // max(1, SAMPLE))
    by_kind, seen = {}, 0
    for qid, _ in queued[::step][:SAMPLE]:
        head = server.headers(qid)
        subj = header_fields(head, b"subject")
        m = re.search(r"filter bench \d+ \((\w+)\)", subj[0] if subj else "")
        if not m:
            raise Failure(f"{server.name}: stored message {qid} is not one of the bench's")
        kind = m.group(1)
        if kind in world.REFUSED_CLASSES and checks_on:
            raise Failure(f"{server.name}: stored message {qid} is of a kind that must be "
                          f"refused ({kind})")
        seen += 1
        by_kind[kind] = by_kind.get(kind, 0) + 1
        if not checks_on:
            continue
        ars = [a for a in header_fields(head, b"authentication-results")
               if a.split(";", 1)[0].strip() == AUTHSERV[server.name]]
        joined = " ; ".join(ars)
        if server.name == "postfix":
            spf = header_fields(head, b"received-spf")
            if not spf or not spf[0].lower().startswith("pass"):
                raise Failure(f"postfix: message {qid} ({kind}): Received-SPF {spf}")
        elif not re.search(r"\bspf=pass\b", joined):
            raise Failure(f"tern: message {qid} ({kind}): no spf=pass in {ars}")
        for method, result in want_results(kind).items():
            if not re.search(rf"\b{method}={result}\b", joined):
                raise Failure(f"{server.name}: message {qid} ({kind}): no {method}={result} "
                              f"in its Authentication-Results {ars}")
        if server.name == "tern":
            if len(ars) != 1:
                raise Failure(f"tern: message {qid}: {len(ars)} Authentication-Results of its "
                              "own")
            # no message of the bench carries an ARC set: checked, and none
            if not re.search(r"\barc=none\b", joined):
                raise Failure(f"tern: message {qid}: no arc=none in {ars}")
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items()))
    if not checks_on:
        return f"{seen} stored messages read back ({kinds}); checks off: no verdicts expected"
    return (f"{seen} stored messages read back ({kinds}), every verdict as its kind calls "
            "for (SPF pass; DKIM and DMARC pass for good mail, DMARC fail otherwise)")


# ------------------------------------------------------------------------ main -------

def main():
    if os.geteuid() != 0:
        sys.exit("run as root (Postfix, the mount namespace and port 53 need it)")
    miss = missing_tools()
    if miss:
        sys.exit("missing:\n  " + "\n  ".join(miss) + "\nsee bench/README.md (filter)")
    work = tempfile.mkdtemp(prefix="tern-filter-bench-")
    os.chmod(work, 0o755)  # Postfix's daemons and policyd-spf run as their own users
    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    log(f"work dir {work}; {uptime_start}")
    servers, dns = [], None
    try:
        t = time.monotonic()
        _, msgs = world.build(work, DOMAINS, MESSAGES, MSG_SIZE)
        exp = world.expected(msgs)
        exp_refused = sum(exp.get(k, 0) for k in world.REFUSED_CLASSES)
        log(f"world: {DOMAINS} domains, {len(msgs)} messages signed in "
            f"{time.monotonic() - t:.1f} s: {exp}; {exp_refused} must be refused")
        dns = Dns(work)
        resolv = write_resolv(work)
        ceiling = None
        if CEILING:
            ceiling = measure_ceiling(work, msgs)
        for name in SERVERS:
            log(f"starting {name}")
            servers.append(Tern(work) if name == "tern" else Postfix(work, resolv))
        accepted_total = {s.name: 0 for s in servers}
        sanity = {}
        for s in servers:
            accepted_total[s.name] += warm_up(s, msgs, sanity)
        rows, runs = [], []
        for r in range(ROUNDS):
            order = servers if r % 2 == 0 else servers[::-1]
            for s in order:
                run = timed_run(s, msgs, dns, r + 1)
                runs.append(run)
                accepted_total[s.name] += run["accepted"]
                check_outcome(s, run, exp_refused)
                n = len(s.queued())
                if n != accepted_total[s.name]:
                    raise Failure(f"{s.name}: {n} messages stored, {accepted_total[s.name]} "
                                  "accepted")
                log(f"  {s.name} stores {n} messages, as many as it accepted")
        samples = {s.name: check_sample(s, msgs, s.name == "postfix" or TERN_CHECKS)
                   for s in servers}
        for name, line in samples.items():
            log(f"sample {name}: {line}")
        uptime_end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        summarise(runs, exp, exp_refused, ceiling, sanity, samples, uptime_start, uptime_end)
    except Failure as e:
        log(f"ERROR: {e}")
        for s in servers:
            tail_logs(s)
        return 1
    finally:
        for s in servers:
            s.stop()
        if dns:
            dns.stop()
        if KEEP_TMP:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def tail_logs(s):
    for f in ("tern.log", "maillog", "opendkim.log", "opendmarc.log"):
        p = os.path.join(s.work, f)
        if os.path.exists(p) and os.path.getsize(p):
            with open(p, "rb") as fh:
                fh.seek(max(0, os.path.getsize(p) - 3000))
                log(f"--- end of {p}:\n{fh.read().decode('utf-8', 'replace')}")


def measure_ceiling(work, msgs):
    """The client against smtp-sink (which answers at once): what it can send at most."""
    port = free_port()
    out = open(os.path.join(work, "sink.out"), "wb")
    args = ["smtp-sink", "-u", "nobody", f"127.0.0.1:{port}", "1000"]
    sink = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until("smtp-sink", lambda: greets(port), 30, sink)
        c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        res = asyncio.run(load(port, msgs, list(range(len(msgs))), world.CLIENT_IPS, SESSIONS))
        dt = time.monotonic() - t0
        c1 = resource.getrusage(resource.RUSAGE_SELF)
        t = tally(res)
        if t["accepted"] != len(msgs):
            raise Failure(f"client vs smtp-sink: {t}")
        cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
        log(f"client ceiling (against smtp-sink): {len(msgs) / dt:.0f} msg/s, client CPU "
            f"{cpu:.2f} s ({cpu / dt:.0%} of a core)")
        return {"rate": len(msgs) / dt, "client_cpu": cpu, "seconds": dt}
    finally:
        sink.terminate()
        sink.wait(10)
        out.close()


def warm_up(s, msgs, sanity):
    """WARMUP_PER_CLIENT messages from each client address (they pass the screening and
    enter the pass caches), and the two sanity clients. Returns how many it accepted."""
    n = WARMUP_PER_CLIENT * len(world.CLIENT_IPS)
    good = [i for i, m in enumerate(msgs) if m.kind == "good"]
    idx = good[:n]
    t0 = time.monotonic()

    async def go():
        res = await load(s.port, msgs, idx, world.CLIENT_IPS, SESSIONS) if idx else {}
        listed, pre = {}, {}
        await asyncio.gather(session(s.port, world.LISTED_IP, [good[0]], msgs, listed),
                             session(s.port, world.PREGREET_IP, [good[1]], msgs, pre,
                                     pregreet=True))
        return res, listed[good[0]], pre[good[1]]

    res, listed, pre = asyncio.run(go())
    t = tally(res)
    if t["accepted"] != len(idx):
        bad = [v for v in res.values() if v[0] != "accepted"][:3]
        raise Failure(f"{s.name} warm-up: {t}: {bad}")
    screened = s.name == "postfix" or TERN_CHECKS
    sanity[s.name] = {"listed": listed, "pregreet": pre}
    for what, (kind, why) in (("listed client 127.0.0.20", listed),
                              ("pre-greeting client 127.0.0.21", pre)):
        log(f"  {s.name} {what}: {'accepted' if kind == 'accepted' else 'not accepted'}: "
            f"{why or ''}")
        if screened and kind == "accepted":
            raise Failure(f"{s.name}: the {what} got its message accepted")
    log(f"{s.name} warm-up: {len(idx)} messages from {len(world.CLIENT_IPS)} addresses in "
        f"{time.monotonic() - t0:.1f} s")
    return len(idx) + (listed[0] == "accepted") + (pre[0] == "accepted")


def timed_run(s, msgs, dns, rnd):
    subprocess.run(["sync"], timeout=300)
    q0, d0, c0 = dns.queries(), dns.cpu(), s.cpu()
    p0 = s.parts() if hasattr(s, "parts") else {}
    u0, b0 = resource.getrusage(resource.RUSAGE_SELF), busy_cpu()
    t0 = time.monotonic()
    res = asyncio.run(asyncio.wait_for(
        load(s.port, msgs, list(range(len(msgs))), world.CLIENT_IPS, SESSIONS), TIMEOUT))
    dt = time.monotonic() - t0
    c1, d1, b1 = s.cpu(), dns.cpu(), busy_cpu()
    p1 = s.parts() if hasattr(s, "parts") else {}
    u1 = resource.getrusage(resource.RUSAGE_SELF)
    q1 = dns.queries()
    if not s.alive():
        raise Failure(f"{s.name} died during the run")
    t = tally(res)
    refused_by_kind = {}
    replies = {}
    for i, (kind, why) in res.items():
        if kind == "refused":
            k = msgs[i].kind
            refused_by_kind[k] = refused_by_kind.get(k, 0) + 1
            replies.setdefault(re.sub(r"\d{4,}|[0-9A-F]{8,}", "#", why or "")[:160], 0)
            replies[re.sub(r"\d{4,}|[0-9A-F]{8,}", "#", why or "")[:160]] += 1
        elif kind != "accepted":
            replies.setdefault(f"{kind}: {why}"[:160], 0)
            replies[f"{kind}: {why}"[:160]] += 1
    run = {"server": s.name, "round": rnd, "messages": len(msgs), "seconds": dt,
           "rate": len(msgs) / dt, "server_cpu": c1 - c0, "dns_cpu": d1 - d0,
           "client_cpu": (u1.ru_utime + u1.ru_stime) - (u0.ru_utime + u0.ru_stime),
           "machine_busy": (b1 - b0) / dt, "dns_queries": q1 - q0, **t,
           "refused_by_kind": refused_by_kind, "replies": replies,
           "load": os.getloadavg()[0], "cpu_parts": {k: p1[k] - p0[k] for k in p1}}
    log(f"round {rnd} {s.name}: {run['rate']:.0f} msg/s ({dt:.1f} s); accepted {t['accepted']}, "
        f"refused {t['refused']} {refused_by_kind}; server CPU {run['server_cpu']:.1f} s, DNS "
        f"server {run['dns_cpu']:.1f} s ({run['dns_queries']} queries), client "
        f"{run['client_cpu']:.1f} s; machine busy {run['machine_busy']:.2f} cores; load "
        f"{run['load']:.1f}")
    if run["cpu_parts"]:
        log("  CPU by part: " + ", ".join(f"{k} {v:.1f} s" for k, v in run["cpu_parts"].items()))
    for why, n in sorted(replies.items(), key=lambda x: -x[1])[:4]:
        log(f"    {n} x {why}")
    return run


def check_outcome(s, run, exp_refused):
    if run["tempfail"] or run["error"]:
        raise Failure(f"{s.name}: {run['tempfail']} temporary failures and {run['error']} "
                      f"errors: {list(run['replies'])[:3]}")
    checks_on = s.name == "postfix" or TERN_CHECKS
    if checks_on:
        wrong = {k: n for k, n in run["refused_by_kind"].items()
                 if k not in world.REFUSED_CLASSES}
        if run["refused"] != exp_refused or wrong:
            raise Failure(f"{s.name}: refused {run['refused']} ({run['refused_by_kind']}), "
                          f"{exp_refused} expected (spoof + broken)")
    elif run["refused"]:
        raise Failure(f"{s.name} without checks refused {run['refused']} messages")


def summarise(runs, exp, exp_refused, ceiling, sanity, samples, up0, up1):
    by = {}
    for r in runs:
        by.setdefault(r["server"], []).append(r)
    lines = [f"filter benchmark: {MESSAGES} messages x {ROUNDS} round(s), {SESSIONS} sessions, "
             f"{PER_CONNECTION} message(s) per connection from {len(world.CLIENT_IPS)} client "
             f"addresses, {MSG_SIZE}-octet bodies, {DOMAINS} sender domains; "
             f"{os.cpu_count()} CPUs; Tern checks {'ON' if TERN_CHECKS else 'OFF'}; Postfix "
             f"reverse lookups {'on' if PEERNAME_LOOKUP else 'off'}, milters on {MILTER_SOCKET} "
             f"sockets; greet wait {GREET_WAIT} s",
             f"messages: {exp}; refused expected: {exp_refused}",
             f"uptime at start: {up0}", f"uptime at end:   {up1}"]
    if ceiling:
        lines.append(f"client ceiling against smtp-sink: {ceiling['rate']:.0f} msg/s, client "
                     f"CPU {ceiling['client_cpu']:.1f} s")
    best = {}
    for name, rs in by.items():
        best[name] = max(r["rate"] for r in rs)
        for r in rs:
            lines.append(
                f"round {r['round']} {name}: {r['rate']:.0f} msg/s, {r['seconds']:.1f} s; "
                f"accepted {r['accepted']}, refused {r['refused']}; CPU: server "
                f"{r['server_cpu']:.1f} s ({1000 * r['server_cpu'] / r['messages']:.2f} ms/msg), "
                f"DNS server {r['dns_cpu']:.1f} s ({r['dns_queries']} queries, "
                f"{r['dns_queries'] / r['messages']:.1f}/msg), client {r['client_cpu']:.1f} s; "
                f"machine busy {r['machine_busy']:.2f} cores, load {r['load']:.1f}"
                + ("; server CPU by part: " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                        r["cpu_parts"].items())
                   if r["cpu_parts"] else ""))
        lines.append(f"{name}: best {best[name]:.0f} msg/s, mean server CPU "
                     f"{1000 * sum(r['server_cpu'] for r in rs) / len(rs) / MESSAGES:.2f} ms/msg")
    if "tern" in best and "postfix" in best:
        per_round = [t["rate"] / p["rate"] for t, p in zip(by["tern"], by["postfix"])]
        lines.append(f"ratio tern/postfix (best of each): {best['tern'] / best['postfix']:.2f}x "
                     f"(per round: {', '.join(f'{x:.2f}x' for x in per_round)})"
                     + ("" if TERN_CHECKS else "  [Tern checks OFF: not the issue's figure]"))
    for name, sv in sanity.items():
        lines.append(f"sanity {name}: listed client {sv['listed'][0]} ({sv['listed'][1]}); "
                     f"pre-greeting client {sv['pregreet'][0]} ({sv['pregreet'][1]})")
    for name, line in samples.items():
        lines.append(f"sample {name}: {line}")
    text = "\n".join(lines)
    print(text)
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "filter-summary.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(OUT_DIR, "filter-summary.json"), "w") as f:
        json.dump({"runs": runs, "expected": exp, "ceiling": ceiling, "sanity": sanity,
                   "samples": samples, "tern_checks": TERN_CHECKS}, f, indent=1)
    cols = ["server", "round", "messages", "seconds", "rate", "accepted", "refused", "tempfail",
            "error", "server_cpu", "dns_cpu", "dns_queries", "client_cpu", "machine_busy", "load"]
    with open(os.path.join(OUT_DIR, "filter.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "tern_checks"] + cols)
        for r in runs:
            w.writerow([time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), int(TERN_CHECKS)]
                       + [f"{r[c]:.3f}" if isinstance(r[c], float) else r[c] for c in cols])


if __name__ == "__main__":
    sys.exit(main())
