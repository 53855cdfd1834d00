#!/usr/bin/env python3
"""Small helpers for bench/receive/run.sh (standard library only).

Subcommands:
  timed --timeout S --log FILE -- CMD...   run CMD, print elapsed seconds
                                           (monotonic clock); exit with CMD's
                                           status, 124 on timeout
  wait-banner HOST PORT SECONDS [PID]      wait until HOST:PORT greets with 220
                                           (fails early if PID dies)
  port-in-use HOST PORT                    exit 0 if something accepts there
  count-json                               stdin: JSON array or JSON lines ->
                                           number of messages
  count-postqueue                          stdin: `postqueue -j` output -> number
                                           of messages; fails if any message is
                                           outside the hold queue
  median X...                              print the median
  rate COUNT SECONDS                       print COUNT/SECONDS
  chart OUT.png TITLE SUBTITLE BARS ROUNDS matplotlib fallback chart
"""

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time


def die(msg: str, code: int = 1) -> None:
    print(f"helpers.py: {msg}", file=sys.stderr)
    sys.exit(code)


def cmd_timed(argv: list[str]) -> None:
    timeout = None
    log = None
    while argv and argv[0] != "--":
        opt = argv.pop(0)
        if opt == "--timeout":
            timeout = float(argv.pop(0))
        elif opt == "--log":
            log = argv.pop(0)
        else:
            die(f"timed: unknown option {opt}")
    if not argv or argv[0] != "--" or len(argv) < 2:
        die("timed: usage: timed --timeout S --log FILE -- CMD...")
    cmd = argv[1:]
    out = open(log, "ab") if log else subprocess.DEVNULL
    start = time.monotonic()
    # Own process group so a timeout kills smtp-source and nothing else.
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)

    def interrupted(signum, _frame):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        sys.exit(128 + signum)

    # Ctrl-C / SIGTERM: take the (separate session) command down with us.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        print(f"timed: {cmd[0]} did not finish within {timeout:g} s", file=sys.stderr)
        sys.exit(124)
    elapsed = time.monotonic() - start
    print(f"{elapsed:.6f}")
    sys.exit(rc if rc >= 0 else 128 - rc)


def read_banner(host: str, port: int, timeout: float) -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        buf = b""
        while b"\n" not in buf and len(buf) < 4096:
            chunk = s.recv(1024)
            if not chunk:
                break
            buf += chunk
        try:
            s.sendall(b"QUIT\r\n")
        except OSError:
            pass
        return buf.decode("utf-8", "replace").strip()


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def cmd_wait_banner(argv: list[str]) -> None:
    host, port, seconds = argv[0], int(argv[1]), float(argv[2])
    pid = int(argv[3]) if len(argv) > 3 and argv[3] else None
    deadline = time.monotonic() + seconds
    last = "no attempt"
    while time.monotonic() < deadline:
        if pid is not None and not pid_alive(pid):
            die(f"process {pid} exited while waiting for {host}:{port}")
        try:
            banner = read_banner(host, port, 5.0)
            if banner.startswith("220"):
                print(banner.splitlines()[0])
                return
            last = f"unexpected greeting {banner!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    die(f"{host}:{port} did not greet with 220 within {seconds:g} s ({last})")


def cmd_port_in_use(argv: list[str]) -> None:
    try:
        with socket.create_connection((argv[0], int(argv[1])), timeout=2):
            sys.exit(0)
    except OSError:
        sys.exit(1)


def cmd_count_json() -> None:
    """Counts messages in a JSON array or in JSON lines (one object per line)."""
    text = sys.stdin.read().strip()
    if not text:
        print(0)
        return
    if text.startswith("["):
        data = json.loads(text)
        if not isinstance(data, list):
            die("count-json: expected a JSON array or JSON lines")
        print(len(data))
        return
    n = 0
    for line in text.splitlines():
        if line.strip():
            if not isinstance(json.loads(line), dict):
                die("count-json: expected one JSON object per line")
            n += 1
    print(n)


def cmd_count_postqueue() -> None:
    total = 0
    queues: dict[str, int] = {}
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        rec = json.loads(line)
        total += 1
        q = rec.get("queue_name", "?")
        queues[q] = queues.get(q, 0) + 1
    outside = {q: n for q, n in queues.items() if q != "hold"}
    if outside:
        die(f"count-postqueue: messages outside the hold queue: {outside} "
            "(Postfix is doing delivery work)")
    print(total)


def cmd_chart(argv: list[str]) -> None:
    out, title, subtitle, bars_file, rounds_file = argv
    import matplotlib  # noqa: PLC0415 - optional dependency
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    bars = []
    with open(bars_file) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            idx, label, value, _color = line.split("\t")
            bars.append((int(idx), label.strip('"'), float(value)))
    rounds = []
    with open(rounds_file) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            idx, value = line.split()
            rounds.append((float(idx), float(value)))
    colors = ["#2a7ab0", "#c0504d"]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    xs = [b[0] for b in bars]
    ax.bar(xs, [b[2] for b in bars], width=0.5,
           color=[colors[i % 2] for i in xs])
    for x, _, v in bars:
        ax.text(x, v / 2, f"{v:.0f} msg/s", ha="center", va="center",
                color="white", fontsize=13)
    if rounds:
        ax.scatter([r[0] for r in rounds], [r[1] for r in rounds],
                   color="black", s=14, zorder=3, label="each round")
    ax.set_xticks(xs, [b[1] for b in bars])
    ax.set_ylabel("messages / second (higher is better)")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    if len(sys.argv) < 2:
        die("missing subcommand (see the docstring)")
    sub, argv = sys.argv[1], sys.argv[2:]
    if sub == "timed":
        cmd_timed(argv)
    elif sub == "wait-banner":
        cmd_wait_banner(argv)
    elif sub == "port-in-use":
        cmd_port_in_use(argv)
    elif sub == "count-json":
        try:
            cmd_count_json()
        except ValueError as e:
            die(f"count-json: not JSON: {e}")
    elif sub == "count-postqueue":
        cmd_count_postqueue()
    elif sub == "median":
        print(f"{statistics.median(float(x) for x in argv):.1f}")
    elif sub == "rate":
        print(f"{float(argv[0]) / float(argv[1]):.1f}")
    elif sub == "chart":
        cmd_chart(argv)
    else:
        die(f"unknown subcommand {sub}")


if __name__ == "__main__":
    main()
