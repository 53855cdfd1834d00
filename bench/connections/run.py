#!/usr/bin/env python3
"""Memory per idle SMTP connection, and whether a new client still gets in.

Starts `tern serve` (TERN_BIN, default target/release/tern) on a fresh data directory with
one listener, opens CONNECTIONS idle connections spread over 20 loopback client addresses
(127.0.0.2 ... 127.0.0.21), waits until every one has its greeting, and reads the server's
VmRSS from /proc before and after: the difference divided by the number of connections is
the memory one idle connection costs. With BASE_BIN set, the same is measured for that
binary too, in the same run, so two builds can be compared.

Then, with the listener full of those idle connections (max_connections = CONNECTIONS),
one more client connects and must get a 220 greeting (an idle session gives way) and queue
a message: the flood does not shut out a real sender.

Usage:
  python3 bench/connections/run.py
  CONNECTIONS=2000 TERN_BIN=target/ci/tern BASE_BIN=/tmp/old/tern python3 bench/connections/run.py
Prints one line per binary and a JSON summary as its last line.
"""

import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "1000"))
TERN_BIN = os.environ.get("TERN_BIN", os.path.join(ROOT, "target/release/tern"))
BASE_BIN = os.environ.get("BASE_BIN")
SOURCES = [f"127.0.0.{i}" for i in range(2, 22)]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def read_line(sock, deadline):
    buf = b""
    while not buf.endswith(b"\n"):
        sock.settimeout(max(0.1, deadline - time.time()))
        chunk = sock.recv(512)
        if not chunk:
            break
        buf += chunk
    return buf


def wait_listening(port, proc, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tern exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("tern did not listen")


def measure(binary):
    work = tempfile.mkdtemp(prefix="tern-bench-conn-")
    port = free_port()
    admin = free_port()
    per_client = CONNECTIONS  # the per-client limit is not what is measured here
    config = f"""
[server]
hostname = "bench.tern.test"
data_dir = "{work}/data"
log_stderr = false
[admin]
listen = "127.0.0.1:{admin}"
[queue]
deliver = false
[relay]
domains = ["bench.test"]
networks = ["127.0.0.0/8"]
[[listener]]
name = "smtp"
address = "127.0.0.1:{port}"
max_connections = {CONNECTIONS}
max_connections_per_client = {per_client}
"""
    with open(f"{work}/tern.toml", "w") as f:
        f.write(config)
    log = open(f"{work}/tern.log", "w")
    proc = subprocess.Popen([binary, "serve", "--config", f"{work}/tern.toml"],
                            stdout=log, stderr=subprocess.STDOUT)
    socks = []
    try:
        wait_listening(port, proc)
        # One connection and a settle, so the runtime's threads and buffers exist.
        s = socket.create_connection(("127.0.0.1", port))
        read_line(s, time.time() + 10)
        s.close()
        time.sleep(1)
        before = rss_kib(proc.pid)
        deadline = time.time() + 120
        for i in range(CONNECTIONS):
            s = socket.socket()
            s.bind((SOURCES[i % len(SOURCES)], 0))
            s.connect(("127.0.0.1", port))
            socks.append(s)
        greeted = sum(1 for s in socks if read_line(s, deadline).startswith(b"220"))
        time.sleep(1)
        after = rss_kib(proc.pid)
        per_conn = (after - before) * 1024 / max(1, greeted)
        # The listener is full: a real sender must still get in.
        newcomer_ok = False
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            r = c.makefile("rb")

            def reply():
                line = r.readline()
                while line[3:4] == b"-":
                    line = r.readline()
                return line

            if reply().startswith(b"220"):
                for cmd, want in [(b"EHLO bench.test\r\n", b"250"),
                                  (b"MAIL FROM:<a@bench.test>\r\n", b"250"),
                                  (b"RCPT TO:<b@bench.test>\r\n", b"250"),
                                  (b"DATA\r\n", b"354")]:
                    c.sendall(cmd)
                    line = reply()
                    if not line.startswith(want):
                        raise RuntimeError(f"{cmd!r}: {line!r}")
                c.sendall(b"Subject: newcomer\r\n\r\nhello\r\n.\r\n")
                newcomer_ok = reply().startswith(b"250")
            c.close()
        except (OSError, RuntimeError) as e:
            print(f"newcomer failed: {e}", file=sys.stderr)
        return {"binary": binary, "connections": CONNECTIONS, "greeted": greeted,
                "rss_before_kib": before, "rss_after_kib": after,
                "bytes_per_connection": round(per_conn), "newcomer_queued": newcomer_ok}
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = CONNECTIONS * 2 + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    results = []
    for binary in [b for b in [BASE_BIN, TERN_BIN] if b]:
        r = measure(binary)
        results.append(r)
        print(f"{binary}: {r['greeted']}/{CONNECTIONS} idle connections greeted, "
              f"{r['bytes_per_connection']} bytes each (VmRSS {r['rss_before_kib']} -> "
              f"{r['rss_after_kib']} KiB); newcomer queued: {r['newcomer_queued']}")
    print(json.dumps(results))
    return 0 if all(r["greeted"] > 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
