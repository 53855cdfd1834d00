#!/usr/bin/env python3
"""Relay benchmark: smtp-source -> MTA -> smtp-sink, end to end.

For Tern and for a private Postfix instance on the same machine, in the same run: start
Postfix's smtp-sink (which counts every message it receives), start the MTA configured
to relay everything to the sink, send MESSAGES messages of MSG_SIZE octets over SESSIONS
parallel sessions with smtp-source, and measure the time from the first connection until
the sink has counted every message. Both MTAs fsync each message before their 250 (their
defaults); the sink discards. Prints messages/s for each and the ratio Tern/Postfix.

Usage (as root, Postfix installed: scripts/test.sh installs it):
    python3 bench/relay/run.py
Environment knobs: MESSAGES (20000) SESSIONS (20) MSG_SIZE (1024) ROUNDS (1)
    SERVERS ("tern postfix") TERN_BIN (target/release/tern) SKIP_BUILD (0)
    TERN_COMMIT (segment: Tern's `[spool] commit`, file / batch / segment)
    TMPDIR (where spools go; must be a real disk) KEEP_TMP (0) OUT_DIR (bench/out)
Output: bench/out/relay-summary.txt, docs/bench/relay.png (when matplotlib is present).
"""

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
TIMEOUT = 600 + MESSAGES // 10


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"ERROR: {msg}")
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_banner(port, proc=None, limit=30):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            die(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    die(f"nothing greeted on 127.0.0.1:{port} within {limit} s")


class Sink:
    """smtp-sink with running counters; `count()` is the messages received so far."""

    def __init__(self, work):
        self.port = free_port()
        self.out_path = os.path.join(work, f"sink-{self.port}.out")
        self.out = open(self.out_path, "wb")
        args = ["smtp-sink", "-c"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        args += [f"127.0.0.1:{self.port}", "1000"]
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT)
        wait_banner(self.port, self.proc)

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


def launch_tern(work, sections):
    """Starts Tern with a bench listener, no reverse DNS, quiet logs, plus `sections`
    (TOML text); waits for its banner. Returns (port, stop)."""
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


def start_postfix(work, sink_port):
    port = free_port()
    etc = os.path.join(work, "postfix", "etc")
    queue = os.path.join(work, "postfix", "queue")
    data = os.path.join(work, "postfix", "data")
    for d in (etc, queue, data):
        os.makedirs(d, exist_ok=True)
    shutil.chown(data, "postfix")
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
relayhost = [127.0.0.1]:{sink_port}
default_transport = smtp
relay_transport = smtp
smtp_tls_security_level = none
smtp_dns_support_level = disabled
disable_dns_lookups = yes
default_process_limit = 100
""")
    with open(os.path.join(ROOT, "testpeers", "postfix", "master.cf.in")) as f:
        master = f.read().replace("@LISTEN@", f"127.0.0.1:{port}")
    with open(os.path.join(etc, "master.cf"), "w") as f:
        f.write(master)
    subprocess.run(["postfix", "-c", etc, "check"], check=True, timeout=60)
    subprocess.run(["postfix", "-c", etc, "start"], check=True, timeout=60)
    wait_banner(port)

    def stop():
        subprocess.run(["postfix", "-c", etc, "stop"], timeout=60)
    return port, stop


def one_run(server, work):
    sink = Sink(work)
    starter = start_tern if server == "tern" else start_postfix
    port, stop = starter(work, sink.port)
    try:
        t0 = time.monotonic()
        src = subprocess.run(
            ["smtp-source", "-s", str(SESSIONS), "-m", str(MESSAGES), "-l", str(MSG_SIZE),
             "-M", "client.bench.test", "-f", "sender@client.bench.test",
             "-t", "rcpt@bench.test", f"127.0.0.1:{port}"],
            capture_output=True, timeout=TIMEOUT)
        accepted_at = time.monotonic()
        if src.returncode != 0 or src.stderr.strip():
            die(f"smtp-source against {server}: {src.returncode} {src.stderr[-500:]!r}")
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


def main():
    if os.geteuid() != 0 and "postfix" in SERVERS:
        die("run as root (Postfix needs it)")
    for tool in ("smtp-source", "smtp-sink") + (("postfix",) if "postfix" in SERVERS else ()):
        if shutil.which(tool) is None:
            die(f"{tool} not found; run scripts/test.sh (it installs Postfix)")
    if "tern" in SERVERS and os.environ.get("SKIP_BUILD", "0") != "1":
        log("building Tern: cargo build --release -p tern")
        subprocess.run(["cargo", "build", "--release", "-p", "tern"], cwd=ROOT, check=True)
    results = {s: [] for s in SERVERS}
    for r in range(ROUNDS):
        for server in SERVERS:
            work = tempfile.mkdtemp(prefix=f"tern-relay-bench-{server}-")
            os.chmod(work, 0o755)  # Postfix daemons run as the postfix user
            try:
                rate, accept_rate, extra = one_run(server, work)
            finally:
                if not KEEP_TMP:
                    shutil.rmtree(work, ignore_errors=True)
            log(f"round {r + 1} {server}: {rate:.0f} msg/s end to end "
                f"(accepted at {accept_rate:.0f} msg/s; {extra} duplicates at the sink)")
            results[server].append(rate)
    os.makedirs(OUT_DIR, exist_ok=True)
    lines = [f"relay benchmark: {MESSAGES} messages x {ROUNDS} round(s), {SESSIONS} sessions, "
             f"{MSG_SIZE}-octet bodies, smtp-source -> MTA -> smtp-sink, {os.cpu_count()} CPUs, "
             f"Tern spool commit = {TERN_COMMIT}"]
    best = {}
    for s, rates in results.items():
        best[s] = max(rates)
        lines.append(f"{s}: " + ", ".join(f"{x:.0f}" for x in rates) + f" msg/s (best {best[s]:.0f})")
    if "tern" in best and "postfix" in best:
        lines.append(f"ratio tern/postfix (best of each): {best['tern'] / best['postfix']:.2f}x")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(OUT_DIR, "relay-summary.txt"), "w") as f:
        f.write(text + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.2))
        names = list(best)
        ax.bar(names, [best[n] for n in names], color=["#2a7", "#888"][:len(names)])
        ax.set_ylabel("messages/s, end to end")
        ax.set_title(f"Relay: smtp-source -> MTA -> smtp-sink\n{MESSAGES} x 1 KiB, {SESSIONS} sessions")
        for i, n in enumerate(names):
            ax.text(i, best[n], f"{best[n]:.0f}", ha="center", va="bottom")
        fig.tight_layout()
        os.makedirs(os.path.join(ROOT, "docs", "bench"), exist_ok=True)
        fig.savefig(os.path.join(ROOT, "docs", "bench", "relay.png"), dpi=110)
    except ImportError:
        log("matplotlib not installed: no chart (pip install matplotlib)")


if __name__ == "__main__":
    main()
