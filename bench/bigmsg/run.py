#!/usr/bin/env python3
"""Memory benchmark: large messages through Tern, the process's RSS sampled.

COUNT messages of MSG_MB megabytes (10^6 octets) each are sent at once, over COUNT
parallel SMTP sessions (Python smtplib), to Tern, which relays them to a sink on
loopback (mode `relay`: an aiosmtpd sink that counts and discards) or delivers them into
a Maildir (mode `maildir`), or relays 8-bit messages to a sink that does not offer
8BITMIME (mode `relay8bit`: every message is converted to 7 bit on the way, issue 16
§3's case of a transformation that needs to look ahead). While it runs, Tern's VmRSS is read from /proc/<pid>/status
every 10 ms; the result is the peak above the idle process (VmRSS after start, before
the first connection) and VmHWM (the kernel's own high-water mark) above idle.

The issue's target (issue 16 §3): 8 concurrent 40 MB messages relayed with under 64 MB
of RSS above the idle process.

Usage (as root or any user; python3 with aiosmtpd):
    python3 bench/bigmsg/run.py
Environment knobs: COUNT (8) MSG_MB (40) MODES ("relay maildir"; also "relay8bit")
    ROUNDS (1)
    TERN_BIN (target/release/tern) SKIP_BUILD (0) KEEP_TMP (0) OUT_DIR (bench/out)
Output: one line per run, and bench/out/bigmsg-summary.txt.
"""

import asyncio
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COUNT = int(os.environ.get("COUNT", "8"))
MSG_MB = int(os.environ.get("MSG_MB", "40"))
MODES = os.environ.get("MODES", "relay maildir").split()
ROUNDS = int(os.environ.get("ROUNDS", "1"))
TERN_BIN = os.environ.get("TERN_BIN", os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "tern"))
OUT_DIR = os.environ.get("OUT_DIR", os.path.join(ROOT, "bench", "out"))
KEEP_TMP = os.environ.get("KEEP_TMP", "0") == "1"
TIMEOUT = 600


def log(msg):
    print(msg, flush=True)


def die(msg):
    print(f"bigmsg: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, limit=30):
    deadline = time.monotonic() + limit
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(4).startswith(b"220"):
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            die(f"process exited ({proc.returncode}) before listening on {port}")
        if time.monotonic() > deadline:
            die(f"nothing listening on {port} after {limit} s")
        time.sleep(0.05)


SINK = r'''
import asyncio, sys
from aiosmtpd.controller import Controller
class H:
    def __init__(self, path): self.path, self.n = path, 0
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if len(sys.argv) > 4 and sys.argv[4] == "no-8bitmime":
            lines = [r[4:] for r in responses if r[4:] != "8BITMIME"]
            return [f"250-{l}" for l in lines[:-1]] + [f"250 {lines[-1]}"]
        return responses
    async def handle_DATA(self, server, session, envelope):
        if len(sys.argv) > 4 and not envelope.content.isascii():
            return "554 5.6.0 8-bit content for a 7-bit sink"
        self.n += 1
        with open(self.path, "w") as f: f.write(str(self.n))
        return "250 2.0.0 Ok: discarded"
c = Controller(H(sys.argv[2]), hostname="127.0.0.1", port=int(sys.argv[1]),
               data_size_limit=None, enable_SMTPUTF8=True)
c.start()
open(sys.argv[3], "w").write("ready")
try:
    asyncio.get_event_loop().run_forever()
finally:
    c.stop()
'''


def start_sink(work, seven_bit=False):
    port = free_port()
    script = os.path.join(work, "sink.py")
    with open(script, "w") as f:
        f.write(SINK)
    count = os.path.join(work, "sink.count")
    ready = os.path.join(work, "sink.ready")
    args = [sys.executable, script, str(port), count, ready]
    if seven_bit:
        args.append("no-8bitmime")
    proc = subprocess.Popen(args,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, "sink.err"), "w"))
    deadline = time.monotonic() + 30
    while not os.path.exists(ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            die(f"sink did not start: see {work}/sink.err")
        time.sleep(0.05)

    def delivered():
        try:
            with open(count) as f:
                return int(f.read() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def stop():
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return port, delivered, stop


def start_tern(work, route):
    port = free_port()
    conf = os.path.join(work, "tern.toml")
    with open(conf, "w") as f:
        f.write(f"""[server]
hostname = "tern.bench.test"
data_dir = "{work}/tern-data"
log_level = "notice"
log_stderr = false

[dns]
reverse_lookups = false

[admin]
listen = "127.0.0.1:0"

[relay]
domains = ["bench.test"]
networks = ["127.0.0.0/8"]

{route}

[[listener]]
name = "bench"
address = "127.0.0.1:{port}"
max_connections = 100
max_message_size = {MSG_MB * 1000000 + 1000000}
""")
    logf = open(os.path.join(work, "tern.log"), "wb")
    proc = subprocess.Popen([TERN_BIN, "serve", "--config", conf],
                            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_port(port, proc)

    def stop():
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logf.close()
    return port, proc, stop


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """Reads VmRSS every 10 ms until stopped; keeps the peak."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop_flag = pid, 0, threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            try:
                self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
            except (FileNotFoundError, ProcessLookupError):
                return
            self.stop_flag.wait(0.01)


def message(n, eight_bit=False):
    """MSG_MB * 10^6 octets: headers and text lines of 78 octets plus CRLF; 7-bit, or
    (`eight_bit`) UTF-8 text in an 8-bit MIME multipart with an 8-bit binary
    attachment, so that both quoted-printable and base64 are written."""
    size = MSG_MB * 1000000
    if not eight_bit:
        head = (f"From: bench@client.bench.test\r\nTo: rcpt@bench.test\r\n"
                f"Subject: big message {n}\r\nMessage-ID: <big{n}.{time.time()}@bench>\r\n\r\n")
        line = (f"{n:02d} " + "abcdefghijklmnopqrstuvwxyz0123456789" * 3)[:78] + "\r\n"
        body = line * ((size - len(head)) // len(line))
        return (head + body).encode()
    head = (f"From: Jörg Bench <bench@client.bench.test>\r\nTo: rcpt@bench.test\r\n"
            f"Subject: große Nachricht {n}\r\nMessage-ID: <big{n}.{time.time()}@bench>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n"
            f"--=_b\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n").encode()
    line = (f"{n:02d} Grüße aus Köln, ça va très bien. " + "abcdefghijklmnopqrstuvwxyz" * 2)
    line = line.encode()[:78] + b"\r\n"
    text = line * ((size // 2) // len(line))
    mid = (b"--=_b\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Disposition: attachment; filename=\"bench.bin\"\r\n\r\n")
    block = bytes(b for b in range(256) if b not in (0x0d, 0x0a, 0x2d)) + b"\r\n"
    tail = b"\r\n--=_b--\r\n"
    room = size - len(head) - len(text) - len(mid) - len(tail)
    attachment = block * max(room // len(block), 0)
    return head + text + mid + attachment + tail


def send_all(port, eight_bit=False):
    errors = []

    def one(n, data):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=300) as s:
                s.sendmail("bench@client.bench.test", [f"rcpt{n}@bench.test"], data,
                           mail_options=["BODY=8BITMIME"] if eight_bit else [])
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(f"message {n}: {e}")
    bodies = [message(n, eight_bit) for n in range(COUNT)]
    threads = [threading.Thread(target=one, args=(n, bodies[n])) for n in range(COUNT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        die("; ".join(errors))


def count_new(maildir):
    try:
        return len(os.listdir(os.path.join(maildir, "new")))
    except FileNotFoundError:
        return 0


def one_run(mode, work):
    stops = []
    try:
        if mode in ("relay", "relay8bit"):
            sink_port, delivered, stop_sink = start_sink(work, mode == "relay8bit")
            stops.append(stop_sink)
            route = f"""[[route]]
domains = ["bench.test"]
transport = "smtp"
hosts = ["127.0.0.1:{sink_port}"]
tls = "none"
"""
        elif mode == "maildir":
            mail = os.path.join(work, "mail")
            route = f"""[local]
domains = ["bench.test"]

[local.catch_all]
"bench.test" = "rcpt"

[[route]]
domains = ["bench.test"]
transport = "maildir"
path = "{mail}"
"""
            maildir = os.path.join(mail, "rcpt", "Maildir")

            def delivered():
                return count_new(maildir)
        else:
            die(f"unknown mode {mode}")
        port, proc, stop_tern = start_tern(work, route)
        stops.append(stop_tern)
        time.sleep(1.0)  # let start-up allocations settle before the idle sample
        idle = status_kib(proc.pid, "VmRSS")
        sampler = Sampler(proc.pid)
        sampler.start()
        t0 = time.monotonic()
        send_all(port, mode == "relay8bit")
        deadline = t0 + TIMEOUT
        while delivered() < COUNT:
            if time.monotonic() > deadline:
                die(f"{mode}: only {delivered()} of {COUNT} delivered in {TIMEOUT} s")
            if proc.poll() is not None:
                die(f"{mode}: tern exited ({proc.returncode}); see {work}/tern.log")
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        sampler.stop_flag.set()
        sampler.join()
        hwm = status_kib(proc.pid, "VmHWM")
        peak = max(sampler.peak, hwm)
        return idle, peak, hwm, elapsed
    finally:
        for stop in reversed(stops):
            stop()


def main():
    if os.environ.get("SKIP_BUILD", "0") != "1":
        subprocess.run(["cargo", "build", "--release", "-p", "tern"], cwd=ROOT, check=True)
    if not os.access(TERN_BIN, os.X_OK):
        die(f"no Tern binary at {TERN_BIN}")
    os.makedirs(OUT_DIR, exist_ok=True)
    lines = []
    for r in range(1, ROUNDS + 1):
        for mode in MODES:
            work = tempfile.mkdtemp(prefix=f"tern-bigmsg-{mode}-")
            try:
                idle, peak, hwm, elapsed = one_run(mode, work)
            finally:
                if not KEEP_TMP:
                    shutil.rmtree(work, ignore_errors=True)
            line = (f"round {r} {mode}: {COUNT} x {MSG_MB} MB in {elapsed:.1f} s; "
                    f"idle RSS {idle / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB "
                    f"(VmHWM {hwm / 1024:.1f} MiB): {(peak - idle) / 1024:.1f} MiB above idle")
            log(line)
            lines.append(line)
    with open(os.path.join(OUT_DIR, "bigmsg-summary.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
