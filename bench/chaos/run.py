#!/usr/bin/env python3
"""Chaos soak: kill -9 Tern again and again while it receives and relays, then check that
every acknowledged message was delivered.

    python3 bench/chaos/run.py                 # a few minutes, 12 kills
    SHORT=1 python3 bench/chaos/run.py         # CI size: about 60 s of load, 10 kills
    SESSIONS=16 KILLS=8 DURATION=30 python3 bench/chaos/run.py   # issue 16's measurement
    TERN_BIN=target/release/tern KILLS=30 DURATION=600 python3 bench/chaos/run.py

What it does, all on loopback in a temporary directory:
- a sink: aiosmtpd on 127.0.0.1 that counts every message by its X-Chaos-Id header
  (unique per message) and stores nothing else;
- Tern (TERN_BIN, default target/ci/tern) relaying everything for chaos.test to the sink
  through one `smtp` route;
- SESSIONS concurrent smtplib clients, each sending messages with a unique id and
  recording the ones that got their 250;
- KILLS times, at random moments spread over DURATION seconds, SIGKILL to Tern, a count
  of what was in spool/active/ at that instant (what was in process), and a restart;
- then the load stops and the queue drains (at most DRAIN seconds).

It reports, and exits non-zero on any violation:
- acknowledged, delivered at least once, lost (acknowledged, never delivered, not
  poisoned): must be 0;
- duplicates (copies beyond the first): must be at most the duplicate window of
  docs/DELIVERY.md, which for kills is what was in delivery when the process died: the sum
  over the kills of the messages in spool/active/ at that moment (the bound is printed);
- poisoned messages: must be 0. Tern runs with its default configuration (poison
  threshold 2): a kill -9 is a crash of the process that no message caused, and the
  messages in process at it are suspects, probed one at a time later, never poisoned
  for being there (docs/RELIABILITY.md, "Poison messages");
- corrupt spool entries: must be 0;
- the queue at the end: empty;
- how long after the last restart, and after the end of the load, the last acknowledged
  message was delivered (`drain_after_restart_secs`, `drain_after_load_secs`), and what
  the crash evidence said over the run (events 4011, 4015, 4016 in the event log).

Environment: TERN_BIN, KILLS (default 12, SHORT 10), DURATION seconds of load (default
180, SHORT 60), SESSIONS (default 4), DRAIN seconds (default 180), SEED (default: time),
KEEP=1 keeps the temporary directory. The last line of output is the summary as JSON.
"""

import json
import os
import random
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHORT = os.environ.get("SHORT") == "1"
TERN_BIN = os.environ.get("TERN_BIN", os.path.join(ROOT, "target", "ci", "tern"))
KILLS = int(os.environ.get("KILLS", "10" if SHORT else "12"))
DURATION = float(os.environ.get("DURATION", "60" if SHORT else "180"))
SESSIONS = int(os.environ.get("SESSIONS", "4"))
DRAIN = float(os.environ.get("DRAIN", "180"))
SEED = int(os.environ.get("SEED", str(time.time_ns() % 1_000_000_007)))
START_DEADLINE = 30.0


def log(msg):
    print(f"chaos: {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Sink:
    """aiosmtpd receiver counting X-Chaos-Id values; everything else is discarded."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.lock = threading.Lock()
        self.copies = {}
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                cid = None
                for line in envelope.original_content.split(b"\r\n"):
                    if not line:
                        break
                    if line.lower().startswith(b"x-chaos-id:"):
                        cid = line.split(b":", 1)[1].strip().decode()
                        break
                with sink.lock:
                    sink.copies[cid] = sink.copies.get(cid, 0) + 1
                return "250 2.0.0 Ok: counted"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def snapshot(self):
        with self.lock:
            return dict(self.copies)

    def stop(self):
        self.controller.stop()


class Tern:
    def __init__(self, work, sink_port):
        self.work = work
        self.port = free_port()
        self.data = os.path.join(work, "data")
        self.config = os.path.join(work, "tern.toml")
        # The queue settings are the defaults (poison threshold 2, probe delay 10 s)
        # except for the retry times, which only make the drain shorter.
        with open(self.config, "w") as f:
            f.write(f"""[server]
hostname = "mx.chaos.test"
data_dir = "{self.data}"
log_stderr = false
shutdown_grace_secs = 5

[dns]
reverse_lookups = false

[admin]
listen = "127.0.0.1:0"

[queue]
deliver = true
min_backoff_secs = 1
max_backoff_secs = 2

[delivery]
connect_timeout_secs = 2
greeting_timeout_secs = 3
command_timeout_secs = 5

[[route]]
domains = ["chaos.test"]
transport = "smtp"
hosts = ["127.0.0.1:{sink_port}"]

[[listener]]
name = "smtp"
address = "127.0.0.1:{self.port}"
""")
        self.log = open(os.path.join(work, "tern.log"), "ab")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [TERN_BIN, "serve", "--config", self.config],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + START_DEADLINE
        while not listening(self.port):
            if self.proc.poll() is not None:
                raise SystemExit(f"chaos: tern exited at start with {self.proc.returncode}; "
                                 f"see {self.work}/tern.log")
            if time.monotonic() > deadline:
                raise SystemExit("chaos: tern not listening within 30 s")
            time.sleep(0.01)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def events(self, ident):
        """Events with numeric id `ident` in the event log (every run appends to it)."""
        found = []
        try:
            with open(os.path.join(self.data, "events.jsonl"), "rb") as f:
                for line in f:
                    try:
                        e = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a kill
                    if e.get("id") == ident:
                        found.append(e)
        except FileNotFoundError:
            pass
        return found

    def files(self, state):
        try:
            return [n for n in os.listdir(os.path.join(self.data, "spool", state))
                    if "." not in n]
        except FileNotFoundError:
            return []


class Load:
    """SESSIONS smtplib clients; `acked` holds the ids that got a 250."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = set()
        self.attempted = 0
        self.threads = [threading.Thread(target=self.client, args=(k,), daemon=True)
                        for k in range(SESSIONS)]

    def client(self, k):
        n = 0
        while not self.stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=20) as s:
                    s.ehlo("client.chaos.test")
                    while not self.stop.is_set():
                        cid = f"c{k}-m{n}"
                        n += 1
                        msg = EmailMessage()
                        msg["From"] = "load@client.chaos.test"
                        msg["To"] = "sink@chaos.test"
                        msg["Subject"] = f"chaos {cid}"
                        msg["Message-ID"] = f"<{cid}@client.chaos.test>"
                        msg["X-Chaos-Id"] = cid
                        msg.set_content(f"payload of {cid}\n" * 8)
                        with self.lock:
                            self.attempted += 1
                        s.send_message(msg)
                        # send_message returns only after the 250 to the data.
                        with self.lock:
                            self.acked.add(cid)
            except (OSError, smtplib.SMTPException):
                # Tern was killed (or refused): the message in flight is not
                # acknowledged; connect again once it is back.
                if not self.stop.is_set():
                    time.sleep(0.05)

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def main():
    if not os.access(TERN_BIN, os.X_OK):
        raise SystemExit(f"chaos: TERN_BIN {TERN_BIN} is not an executable "
                         "(build it: cargo build --profile ci -p tern)")
    rng = random.Random(SEED)
    work = tempfile.mkdtemp(prefix="tern-chaos-")
    log(f"seed {SEED}, {KILLS} kills over {DURATION:.0f} s, {SESSIONS} sessions, "
        f"binary {TERN_BIN}, directory {work}")
    sink = Sink()
    tern = Tern(work, sink.port)
    tern.start()
    load = Load(tern.port)
    load.start()
    in_process_at_kills = []
    ok = True
    try:
        begin = time.monotonic()
        # Kill moments: uniform over the duration, sorted, at least 0.5 s apart.
        moments = sorted(rng.uniform(1.0, DURATION) for _ in range(KILLS))
        for i, at in enumerate(moments):
            wait = begin + at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            tern.kill9()
            in_process = len(tern.files("active"))
            in_process_at_kills.append(in_process)
            log(f"kill {i + 1}/{KILLS} at {time.monotonic() - begin:.1f} s: "
                f"{in_process} in process, {len(load.acked)} acknowledged so far")
            tern.start()
            # The next kill no sooner than 0.5 s after this restart.
            if i + 1 < len(moments):
                moments[i + 1] = max(moments[i + 1], time.monotonic() - begin + 0.5)
        last_restart = time.monotonic()
        rest = begin + DURATION - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        load.finish()
        load_end = time.monotonic()
        with load.lock:
            acked = set(load.acked)
            attempted = load.attempted

        # Drain: every acknowledged message delivered and nothing left but poison.
        deadline = time.monotonic() + DRAIN
        all_delivered = None
        while True:
            got = sink.snapshot()
            queued = sum(len(tern.files(s)) for s in ("incoming", "active", "deferred", "hold"))
            poisoned = tern.files("poison")
            missing = [c for c in acked if c not in got]
            if not missing and all_delivered is None:
                all_delivered = time.monotonic()
            if queued == 0 and len(missing) <= len(poisoned):
                break
            if time.monotonic() > deadline:
                log(f"drain timed out: {queued} still queued, {len(missing)} not delivered")
                break
            time.sleep(0.1)
        tern.stop()
        crashes_counted = tern.events(4011)
        starts_after_crash = tern.events(4015)
        probes = tern.events(4016)
        evidence = {}
        for e in starts_after_crash:
            evidence[e.get("evidence", "?")] = evidence.get(e.get("evidence", "?"), 0) + 1
        got = sink.snapshot()
        poisoned = tern.files("poison")
        corrupt = tern.files("corrupt")
        queued = {s: len(tern.files(s)) for s in ("incoming", "active", "deferred", "hold")}
        delivered = sum(1 for c in acked if c in got)
        lost = [c for c in acked if c not in got]
        duplicates = sum(n - 1 for n in got.values() if n > 1)
        bound = sum(in_process_at_kills)
        summary = {
            "seed": SEED,
            "kills": len(in_process_at_kills),
            "attempted": attempted,
            "acknowledged": len(acked),
            "delivered": delivered,
            "delivered_unacknowledged": sum(1 for c in got if c not in acked),
            "lost": len(lost),
            "poisoned": len(poisoned),
            "crashes_counted": len(crashes_counted),
            "starts_after_crash": len(starts_after_crash),
            "evidence": evidence,
            "probes": len(probes),
            "drain_after_restart_secs":
                None if all_delivered is None else round(all_delivered - last_restart, 1),
            "drain_after_load_secs":
                None if all_delivered is None else round(all_delivered - load_end, 1),
            "corrupt": len(corrupt),
            "duplicates": duplicates,
            "duplicate_bound": bound,
            "queued_at_end": queued,
        }
        log(f"acknowledged {len(acked)} of {attempted} attempted; delivered at least once "
            f"{delivered}; lost {summary['lost']}; poisoned {len(poisoned)}; "
            f"corrupt {len(corrupt)}")
        log(f"duplicates {duplicates}, bound {bound} (messages in process at the "
            f"{len(in_process_at_kills)} kills: {in_process_at_kills})")
        log(f"crash evidence at the {len(starts_after_crash)} starts after a kill: {evidence}; "
            f"crashes counted {len(crashes_counted)}; probes {len(probes)}; every "
            f"acknowledged message delivered {summary['drain_after_restart_secs']} s after "
            f"the last restart ({summary['drain_after_load_secs']} s after the load)")
        problems = []
        if summary["lost"] > 0:
            problems.append(f"{summary['lost']} acknowledged messages lost, e.g. {lost[:5]}")
        if poisoned:
            problems.append(f"{len(poisoned)} messages poisoned by kills no message caused: "
                            f"{poisoned[:5]}")
        if duplicates > bound:
            problems.append(f"{duplicates} duplicates, more than the {bound} in process")
        if corrupt:
            problems.append(f"{len(corrupt)} corrupt spool entries: {corrupt[:5]}")
        if any(queued.values()):
            problems.append(f"queue not empty at the end: {queued}")
        if len(in_process_at_kills) < KILLS:
            problems.append("fewer kills than asked")
        if len(acked) == 0:
            problems.append("nothing was acknowledged")
        for p in problems:
            log(f"VIOLATION: {p}")
        ok = not problems
        summary["ok"] = ok
        print(json.dumps(summary), flush=True)
    finally:
        load.stop.set()
        tern.stop()
        sink.stop()
        if ok and os.environ.get("KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
