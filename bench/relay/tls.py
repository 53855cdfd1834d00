#!/usr/bin/env python3
"""TLS policy benchmark: Tern relaying by MX with `tls = "dane"` against `tls = "may"`.

Issue 19 asks that DANE, with its answers cached, costs at most 5 % of the relay rate.
Both modes deliver over TLS to the same sink, so what differs is exactly what DANE adds:
the DNSSEC-validated MX, address and TLSA lookups (cached after the first message of a
domain) and the certificate matched against the TLSA record instead of accepted as it is.

The world, all on loopback:
- Knot DNS (`knotd`, Debian's `knot`) on 127.0.0.54:53 serves `bench.test.`, signed by
  Knot itself (ECDSA P-256, NSEC): DOMAINS domains d<i>.bench.test with `MX 10
  mx.sink.bench.test`, that host's A 127.0.0.2 and its TLSA `3 1 1` (SHA-256 of the sink
  certificate's public key) at `_<port>._tcp.mx.sink.bench.test`. Tern's `[dane]
  trust_anchor` is the zone's key-signing DNSKEY, so the validation chain is anchored at
  `bench.test.` and needs no root.
- bench/relay/tls_sink.py on 127.0.0.2 (STARTTLS, counts, discards), in its own process.
- Tern (release build) relaying from the bench listener; its `[dns]` asks Knot.
The load is run.py's pipelining asyncio client (message i to d<i mod DOMAINS>), so each
round sends the same mail. Modes alternate within each round (may, dane, may, dane, ...)
so that the machine's load drifts into both alike; the summary gives the best rate of
each and dane/may per round.

Usage (as root; `apt-get install knot knot-dnsutils`, scripts/test.sh installs them):
    SKIP_BUILD=1 MESSAGES=5000 ROUNDS=3 DOMAINS=100 python3 bench/relay/tls.py
    SKIP_BUILD=1 TERN_BIN=target/ci/tern ... (the test build: optimised, fault injection
    compiled in but never triggered)
Knobs: MESSAGES (5000) ROUNDS (3) DOMAINS (100) SESSIONS (20) MODES ("may dane")
    TERN_BIN (target/release/tern) KEEP_TMP (0) OUT_DIR (bench/out)
Output: bench/out/relay-tls-summary.txt.
"""

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("MESSAGES", "5000")
import run  # noqa: E402  (the relay benchmark's client and Tern launcher)

ROUNDS = int(os.environ.get("ROUNDS", "3"))
DOMAINS = int(os.environ.get("DOMAINS", "100"))
MODES = os.environ.get("MODES", "may dane").split()
DNS_IP = "127.0.0.54"
SINK_IP = "127.0.0.2"
ZONE = "bench.test."
MX = "mx.sink.bench.test"


def sh(args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def make_cert(work):
    """A self-signed certificate for the sink; returns (cert, key, SHA-256 of its SPKI)."""
    cert, key = os.path.join(work, "sink.pem"), os.path.join(work, "sink.key")
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={MX}",
        "-addext", f"subjectAltName=DNS:{MX}"])
    pub = sh(["openssl", "x509", "-in", cert, "-pubkey", "-noout"]).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub.encode(),
                         check=True, capture_output=True).stdout
    return cert, key, hashlib.sha256(der).hexdigest()


class Knot:
    """knotd serving the signed bench zone on DNS_IP:53; `anchor` is the trust anchor (its key-signing DNSKEY)."""

    def __init__(self, work, sink_port, spki_sha256):
        self.dir = os.path.join(work, "knot")
        for d in ("run", "db", "zones", "keys"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        lines = [f"$ORIGIN {ZONE}", "$TTL 3600",
                 f"@ SOA ns.{ZONE} hostmaster.{ZONE} 1 3600 600 86400 3600",
                 f"@ NS ns.{ZONE}", f"ns A {DNS_IP}",
                 f"mx.sink A {SINK_IP}",
                 f"_{sink_port}._tcp.mx.sink TLSA 3 1 1 {spki_sha256}"]
        lines += [f"d{i} MX 10 {MX}." for i in range(DOMAINS)]
        with open(os.path.join(self.dir, "zones", "bench.test.zone"), "w") as f:
            f.write("\n".join(lines) + "\n")
        self.conf = os.path.join(self.dir, "knot.conf")
        with open(self.conf, "w") as f:
            f.write(f"""server:
    rundir: "{self.dir}/run"
    listen: {DNS_IP}@53
    user: root:root
database:
    storage: "{self.dir}/db"
keystore:
  - id: default
    config: "{self.dir}/keys"
policy:
  - id: bench
    algorithm: ecdsap256sha256
    single-type-signing: on
    ksk-lifetime: 0
    zsk-lifetime: 0
    nsec3: off
    keystore: default
template:
  - id: default
    storage: "{self.dir}/zones"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: {ZONE}
    dnssec-signing: on
    dnssec-policy: bench
log:
  - target: stderr
    any: warning
""")
        self.log = open(os.path.join(self.dir, "knotd.log"), "wb")
        self.proc = subprocess.Popen(["knotd", "-c", self.conf], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                run.die(f"knotd exited: see {self.dir}/knotd.log")
            q = subprocess.run(["kdig", f"@{DNS_IP}", "+dnssec", "+short", "DNSKEY", ZONE],
                               capture_output=True, text=True)
            if q.returncode == 0 and "RRSIG" not in q.stdout and q.stdout.strip():
                # +short prints the DNSKEY records; the zone is signed once they exist.
                break
            if time.monotonic() > deadline:
                run.die(f"knotd did not sign {ZONE} within 30 s: {q.stdout} {q.stderr}")
            time.sleep(0.1)
        # Tern's trust anchor takes DNSKEY records (hickory validates from keys): the
        # zone's key-signing key (flags 257), in the presentation form ldns writes.
        keys = sh(["kdig", f"@{DNS_IP}", "+short", "DNSKEY", ZONE]).stdout.splitlines()
        self.anchor = [f"{ZONE} IN DNSKEY {k}" for k in keys if k.startswith("257 ")][:1]
        if not self.anchor:
            run.die(f"no key-signing key in {ZONE}'s DNSKEY answer: {keys}")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class TlsSink:
    def __init__(self, work, port, cert, key):
        self.count_file = os.path.join(work, f"sink-count-{port}")
        ready = os.path.join(work, f"sink-ready-{port}")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          "tls_sink.py"),
             "--listen", f"{SINK_IP}:{port}", "--cert", cert, "--key", key,
             "--count-file", self.count_file, "--ready", ready])
        deadline = time.monotonic() + 20
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                run.die("tls_sink.py did not start")
            time.sleep(0.02)

    def count(self):
        try:
            with open(self.count_file) as f:
                return int(f.read() or 0)
        except (OSError, ValueError):
            return 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_tern(work, sink_port, mode, anchor):
    dane = f'[dane]\ntrust_anchor = "{anchor}"\n' if mode == "dane" else ""
    return run.launch_tern(work, f"""{dane}
[relay]
domains = ["bench.test"]
networks = ["127.0.0.0/8"]

[queue]
deliver = true

[mta_sts]
enabled = false

[[route]]
domains = ["*"]
transport = "mx"
port = {sink_port}
tls = "{mode}"
""", dns=f'nameservers = ["{DNS_IP}:53"]')


def one_run(work, sink, sink_port, mode, anchor):
    run_dir = tempfile.mkdtemp(prefix=f"tern-tls-{mode}-", dir=work)
    start_count = sink.count()
    port, stop = start_tern(run_dir, sink_port, mode, anchor)
    try:
        t0 = time.monotonic()
        err = asyncio.run(run.send_all(port, DOMAINS))
        if err:
            run.die(f"client ({mode}): {err}")
        deadline = t0 + run.TIMEOUT
        while sink.count() - start_count < run.MESSAGES:
            if time.monotonic() > deadline:
                run.die(f"{mode}: only {sink.count() - start_count} of {run.MESSAGES} "
                        f"reached the sink; see {run_dir}/tern.log")
            time.sleep(0.02)
        rate = run.MESSAGES / (time.monotonic() - t0)
    finally:
        stop()
    if not run.KEEP_TMP:
        shutil.rmtree(run_dir, ignore_errors=True)
    return rate


def main():
    if os.geteuid() != 0:
        sys.exit("run as root (Knot listens on port 53)")
    for tool in ("knotd", "keymgr", "kdig", "openssl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install knot knot-dnsutils openssl")
    if os.environ.get("SKIP_BUILD") != "1":
        subprocess.run(["cargo", "build", "--release", "-p", "tern"], cwd=run.ROOT, check=True)
    work = tempfile.mkdtemp(prefix="tern-tls-bench-")
    knot = sink = None
    rates = {m: [] for m in MODES}
    try:
        sink_port = run.free_port(SINK_IP)
        cert, key, spki = make_cert(work)
        knot = Knot(work, sink_port, spki)
        anchor = os.path.join(work, "trust-anchor.key")
        with open(anchor, "w") as f:
            f.write("\n".join(knot.anchor) + "\n")
        run.log(f"trust anchor: {knot.anchor[0]}")
        sink = TlsSink(work, sink_port, cert, key)
        for r in range(ROUNDS):
            for mode in MODES:
                rate = one_run(work, sink, sink_port, mode, anchor)
                rates[mode].append(rate)
                run.log(f"round {r + 1} {mode}: {rate:.0f} msg/s")
    finally:
        if sink:
            sink.stop()
        if knot:
            knot.stop()
        if not run.KEEP_TMP:
            shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    lines = [f"TLS policy benchmark: {run.MESSAGES} messages x {run.MSG_SIZE} octets, "
             f"{run.SESSIONS} sessions, {DOMAINS} domains by MX, TLS to the sink in every mode, "
             f"{os.cpu_count()} CPUs, load average {load[0]:.1f}"]
    for m in MODES:
        lines.append(f"  {m:<5} best {max(rates[m]):7.0f} msg/s  rounds: "
                     + ", ".join(f"{x:.0f}" for x in rates[m]))
    if "may" in rates and "dane" in rates:
        per = [d / m for m, d in zip(rates["may"], rates["dane"])]
        lines.append("  dane/may per round: " + ", ".join(f"{x:.1%}" for x in per)
                     + f"; best vs best {max(rates['dane']) / max(rates['may']):.1%}")
    text = "\n".join(lines)
    print(text)
    os.makedirs(run.OUT_DIR, exist_ok=True)
    with open(os.path.join(run.OUT_DIR, "relay-tls-summary.txt"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
