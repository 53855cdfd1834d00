#!/usr/bin/env python3
"""Backlog benchmark: a large queue of deferred mail (issue 16 §2).

    python3 bench/backlog/run.py                 # 1,000,000 deferred messages
    python3 bench/backlog/run.py 100000          # a quick run
    TERN_BIN=target/ci/tern python3 bench/backlog/run.py 300000

What it does, on loopback in a temporary directory (TMPDIR picks the disk; run as root,
dropping the page cache needs it):
1. fill: Tern relays everything for bench.test to a smarthost that is down (a closed port
   on 127.0.0.3); smtp-source sends N messages of MSG_SIZE octets over SESSIONS sessions;
   the script waits until N messages wait in spool/deferred/ (or the queue's view says
   so). Reports the fill rate and VmRSS / VmHWM of the server once all are deferred.
2. disk: files under spool/ per deferred message.
3. restart: kill -9, `echo 3 > /proc/sys/vm/drop_caches`, start again; the time until the
   SMTP listener greets (220), until the whole backlog is scheduled (event 4067; for a
   Tern before it, event 4055, or the greeting for a Tern that loads the backlog before
   it listens), until every file of it is read (event 4055), and VmRSS after that.
   While the backlog loads, one fresh message is sent to a live route (fresh.test, sink
   B) and the time until it is delivered is reported.
4. `tern queue summary` (wall time), and the admin API's `GET /api/v1/queue`: the first
   page, and a page deep in the deferred queue (offset N/2), limit 100.
5. drain: smtp-sink starts on the smarthost's address, `POST /destinations/smtp:[<ip>]:<port>/retry`
   makes the backlog due; the drain rate (messages/s at the sink) over DRAIN_WINDOW
   seconds (or until drained), and meanwhile FRESH messages to fresh.test (sink B): the
   fresh rate during the drain; then the fresh rate alone, after the drain window, for
   comparison.

Second mode, the start after kill -9 with an unrecovered segment and a large incoming/:

    python3 bench/backlog/run.py unrecovered [SEG_MSGS [FILES]]
    BINS=/tmp/tern-before,target/ci/tern python3 bench/backlog/run.py unrecovered 15000 20000

fills, with delivery off, FILES messages as files of their own in incoming/
(`spool.commit = "file"`) then SEG_MSGS messages into segments (the default commit mode;
15,000 of MSG_SIZE 4000 is about one full 64 MiB segment), kills Tern with -9 and keeps a
copy of the data directory. Then for each binary in BINS (default TERN_BIN), REPEAT
times (default 3): the copy is put back, delivery turned on (everything routed to the
dead smarthost), `sync`, page cache dropped, Tern started; reported: the time from exec
to the first 220 greeting, and to the end of the spool's recovery (event 4065; the
greeting itself for a Tern without it, which recovers before it listens). The JSON summary goes to bench/out/unrecovered-summary.json.

Environment: TERN_BIN (target/ci/tern), SESSIONS (20), MSG_SIZE (1024), FRESH (2000),
DRAIN_WINDOW (60 s; 0 = until drained), KEEP_TMP (0), OUT_DIR (bench/out),
FILL_TIMEOUT (seconds, default 600 + N/100), LOAD_WAIT (120: how long to wait for events
4067 and 4055 after the greeting; a Tern without them counts as scheduled at its greeting). The last line of output is a JSON summary;
bench/out/backlog-summary.json keeps it.
"""

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
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1_000_000
TERN_BIN = os.environ.get("TERN_BIN", os.path.join(ROOT, "target", "ci", "tern"))
SESSIONS = int(os.environ.get("SESSIONS", "20"))
MSG_SIZE = int(os.environ.get("MSG_SIZE", "1024"))
FRESH = int(os.environ.get("FRESH", "2000"))
DRAIN_WINDOW = float(os.environ.get("DRAIN_WINDOW", "60"))
KEEP_TMP = os.environ.get("KEEP_TMP", "0") == "1"
OUT_DIR = os.environ.get("OUT_DIR", os.path.join(ROOT, "bench", "out"))
FILL_TIMEOUT = float(os.environ.get("FILL_TIMEOUT", str(600 + N / 100)))
DEAD_IP = "127.0.0.3"
BACKLOG_LOADED = 4055
BACKLOG_SCHEDULED = 4067
LOAD_WAIT = float(os.environ.get("LOAD_WAIT", "120"))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"ERROR: {msg}")
    sys.exit(1)


def free_port(ip="127.0.0.1"):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def greets(port, ip="127.0.0.1"):
    try:
        with socket.create_connection((ip, port), timeout=2) as s:
            s.settimeout(2)
            return s.recv(512).startswith(b"220")
    except OSError:
        return False


def wait_until(cond, limit, what, proc=None, step=0.01):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            die(f"tern exited with {proc.returncode} while waiting for {what}")
        if cond():
            return time.monotonic()
        time.sleep(step)
    die(f"{what}: not within {limit} s")


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0]) // 1024  # MiB
    except OSError:
        pass
    return out


class Sink:
    """smtp-sink -c on ip:port; `count()` is the messages received so far."""

    def __init__(self, work, ip, port=None):
        self.port = port or free_port(ip)
        self.out_path = os.path.join(work, f"sink-{ip}-{self.port}.out")
        self.out = open(self.out_path, "wb")
        args = ["smtp-sink", "-c"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        args += [f"{ip}:{self.port}", "1000"]
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT)
        wait_until(lambda: greets(self.port, ip), 30, "smtp-sink greeting", self.proc)

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
            self.proc.wait(10)
        self.out.close()


class Tern:
    def __init__(self, work, dead_port, fresh_port):
        self.work = work
        self.port = free_port()
        self.data = os.path.join(work, "tern-data")
        self.conf = os.path.join(work, "tern.toml")
        with open(self.conf, "w") as f:
            f.write(f"""[server]
hostname = "tern.bench.test"
data_dir = "{self.data}"
log_level = "notice"
log_stderr = false

[dns]
reverse_lookups = false

[admin]
listen = "127.0.0.1:0"

[relay]
domains = ["bench.test", "fresh.test"]
networks = ["127.0.0.0/8"]

[queue]
deliver = true

[back_pressure]
max_queued_messages = {max(200000, 4 * N)}

[[route]]
domains = ["fresh.test"]
transport = "smtp"
hosts = ["127.0.0.1:{fresh_port}"]
tls = "none"

[[route]]
domains = ["*"]
transport = "smtp"
hosts = ["{DEAD_IP}:{dead_port}"]
tls = "none"

[[listener]]
name = "bench"
address = "127.0.0.1:{self.port}"
max_connections = 1000
max_connections_per_client = 1000
""")
        self.proc = None
        self.logf = None

    def start(self):
        self.logf = open(os.path.join(self.work, "tern.log"), "ab")
        self.proc = subprocess.Popen([TERN_BIN, "serve", "--config", self.conf],
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        return time.monotonic()

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.logf.close()

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.logf.close()

    def api(self, method, path):
        with open(os.path.join(self.data, "admin.addr")) as f:
            addr = f.read().strip()
        with open(os.path.join(self.data, "admin.token")) as f:
            token = f.read().strip()
        req = urllib.request.Request(f"http://{addr}{path}", method=method,
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    def events_since(self, offset, event_id):
        """(found, new offset) for event `event_id` in events.jsonl after `offset`."""
        path = os.path.join(self.data, "events.jsonl")
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return False, offset
        cut = data.rfind(b"\n") + 1
        for line in data[:cut].splitlines():
            try:
                if json.loads(line).get("id") == event_id:
                    return True, offset + cut
            except ValueError:
                pass
        return False, offset + cut


def count_files(top):
    n = 0
    for _, _, files in os.walk(top):
        n += len(files)
    return n


def deferred_count(spool):
    try:
        return sum(1 for _ in os.scandir(os.path.join(spool, "deferred")))
    except OSError:
        return 0


def smtp_source(port, count, rcpt, sessions):
    src = subprocess.run(
        ["smtp-source", "-s", str(sessions), "-m", str(count), "-l", str(MSG_SIZE),
         "-M", "client.bench.test", "-f", "sender@client.bench.test", "-t", rcpt,
         f"127.0.0.1:{port}"], capture_output=True, timeout=FILL_TIMEOUT)
    if src.returncode != 0 or src.stderr.strip():
        die(f"smtp-source: {src.returncode} {src.stderr[-500:]!r}")


def main():
    if os.geteuid() != 0:
        die("run as root (the page cache is dropped before the restart)")
    work = tempfile.mkdtemp(prefix="tern-backlog-")
    dead_port = free_port(DEAD_IP)
    fresh = Sink(work, "127.0.0.1")
    tern = Tern(work, dead_port, fresh.port)
    spool = os.path.join(tern.data, "spool")
    res = {"messages": N, "bin": TERN_BIN}
    try:
        log(f"fill: {N} messages to a dead smarthost {DEAD_IP}:{dead_port}")
        tern.start()
        wait_until(lambda: greets(tern.port), 60, "first greeting", tern.proc)
        t0 = time.monotonic()
        smtp_source(tern.port, N, "rcpt@bench.test", SESSIONS)
        accepted = time.monotonic()
        peak_rss = 0

        def all_deferred():
            nonlocal peak_rss
            peak_rss = max(peak_rss, proc_status(tern.proc.pid).get("VmRSS", 0))
            return deferred_count(spool) >= N
        wait_until(all_deferred, FILL_TIMEOUT, f"{N} messages deferred", tern.proc, 0.5)
        done = time.monotonic()
        st = proc_status(tern.proc.pid)
        res["fill_accept_rate"] = round(N / (accepted - t0))
        res["fill_deferred_rate"] = round(N / (done - t0))
        res["rss_deferring_mib"] = st.get("VmRSS")
        res["hwm_deferring_mib"] = st.get("VmHWM")
        res["files_under_spool"] = count_files(spool)
        res["files_per_deferred"] = round(res["files_under_spool"] / N, 3)
        res["spool_mib"] = int(subprocess.run(["du", "-sm", spool], capture_output=True,
                                              text=True).stdout.split()[0])
        log(f"filled: {res}")

        log("kill -9, drop caches, restart")
        tern.kill9()
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        ev_off = os.path.getsize(os.path.join(tern.data, "events.jsonl"))
        t_start = tern.start()
        greeted = wait_until(lambda: greets(tern.port), 600, "greeting after restart",
                             tern.proc, 0.005)
        res["restart_greeting_secs"] = round(greeted - t_start, 3)
        # One fresh message while the backlog loads: accepted and delivered meanwhile?
        before = fresh.count()
        smtp_source(tern.port, 1, "rcpt@fresh.test", 1)
        t_fresh = time.monotonic()
        state = {"off": ev_off, "soff": ev_off, "loaded": None, "scheduled": None,
                 "fresh": None}

        def progress():
            now = time.monotonic()
            if state["scheduled"] is None:
                found, state["soff"] = tern.events_since(state["soff"], BACKLOG_SCHEDULED)
                if found:
                    state["scheduled"] = now
            if state["loaded"] is None:
                found, state["off"] = tern.events_since(state["off"], BACKLOG_LOADED)
                if found:
                    state["loaded"] = now
            if state["fresh"] is None and fresh.count() > before:
                state["fresh"] = now
            return state["loaded"] is not None and state["fresh"] is not None
        wait_until(lambda: progress() or state["fresh"] is not None, 300,
                   "the fresh message delivered", tern.proc, 0.01)
        # A Tern without event 4055 (before this work) loads its backlog before it listens.
        deadline = time.monotonic() + LOAD_WAIT
        while state["loaded"] is None and time.monotonic() < deadline:
            progress()
            time.sleep(0.01)
        loaded = state["loaded"] if state["loaded"] is not None else greeted
        scheduled = state["scheduled"] if state["scheduled"] is not None else loaded
        res["load_event_seen"] = state["loaded"] is not None
        res["scheduled_event_seen"] = state["scheduled"] is not None
        res["restart_scheduled_secs"] = round(scheduled - t_start, 3)
        res["restart_read_secs"] = round(loaded - t_start, 3)
        res["fresh_delivered_during_load_secs"] = round(state["fresh"] - t_fresh, 3)
        st = proc_status(tern.proc.pid)
        res["rss_after_restart_mib"] = st.get("VmRSS")
        res["hwm_after_restart_mib"] = st.get("VmHWM")
        log(f"restarted: {res}")

        t = time.monotonic()
        out = subprocess.run([TERN_BIN, "queue", "summary", "--config", tern.conf],
                             capture_output=True, text=True, timeout=600)
        res["summary_secs"] = round(time.monotonic() - t, 3)
        if out.returncode != 0:
            die(f"tern queue summary: {out.stderr[-500:]}")
        log(out.stdout.strip()[:400])
        t = time.monotonic()
        first = tern.api("GET", "/api/v1/queue?state=deferred&limit=100")
        res["api_first_page_secs"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        tern.api("GET", f"/api/v1/queue?state=deferred&limit=100&offset={N // 2}")
        res["api_deep_page_secs"] = round(time.monotonic() - t, 3)
        res["api_total"] = first.get("total")
        log(f"summary and pages: {res}")

        log("drain: the smarthost comes back")
        dead = Sink(work, DEAD_IP, dead_port)
        try:
            t0 = time.monotonic()
            tern.api("POST", "/api/v1/destinations/" + urllib.parse.quote(f"smtp:[{DEAD_IP}]:{dead_port}", safe="") + "/retry")  # the dead smarthost's next hop
            fresh_before = fresh.count()
            tf = time.monotonic()
            smtp_source(tern.port, FRESH, "rcpt@fresh.test", SESSIONS)
            wait_until(lambda: fresh.count() >= fresh_before + FRESH, 600,
                       "fresh mail during the drain", tern.proc, 0.02)
            res["fresh_rate_during_drain"] = round(FRESH / (time.monotonic() - tf))
            window = DRAIN_WINDOW if DRAIN_WINDOW > 0 else 1e9
            wait_until(lambda: dead.count() >= N or time.monotonic() - t0 >= window,
                       window + 600, "drain", tern.proc, 0.05)
            drained = dead.count()
            res["drained"] = drained
            res["drain_rate"] = round(drained / (time.monotonic() - t0))
            # Fresh mail alone, for comparison (the drain may still run if not finished).
            if drained >= N:
                fresh_before = fresh.count()
                tf = time.monotonic()
                smtp_source(tern.port, FRESH, "rcpt@fresh.test", SESSIONS)
                wait_until(lambda: fresh.count() >= fresh_before + FRESH, 600,
                           "fresh mail alone", tern.proc, 0.02)
                res["fresh_rate_alone"] = round(FRESH / (time.monotonic() - tf))
        finally:
            dead.stop()
        log(f"drained: {res}")
    finally:
        tern.stop()
        fresh.stop()
        # The results first: removing a spool of a million files takes minutes.
        os.makedirs(OUT_DIR, exist_ok=True)
        with open(os.path.join(OUT_DIR, "backlog-summary.json"), "w") as f:
            json.dump(res, f, indent=1)
        print(json.dumps(res), flush=True)
        if KEEP_TMP:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def edit_file(path, old, new):
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def unrecovered_main():
    """The second mode (see the module docstring)."""
    global MSG_SIZE, TERN_BIN
    if os.geteuid() != 0:
        die("run as root (the page cache is dropped before each start)")
    seg_msgs = int(sys.argv[2]) if len(sys.argv) > 2 else 15000
    files = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
    size = int(os.environ.get("MSG_SIZE", "4000"))
    repeat = int(os.environ.get("REPEAT", "3"))
    bins = [b for b in os.environ.get("BINS", TERN_BIN).split(",") if b]
    MSG_SIZE = size
    work = tempfile.mkdtemp(prefix="tern-unrecovered-")
    dead_port = free_port(DEAD_IP)
    fresh = Sink(work, "127.0.0.1")
    tern = Tern(work, dead_port, fresh.port)
    conf = open(tern.conf).read()
    open(tern.conf, "w").write(conf.replace("deliver = true", "deliver = false")
                                + '\n[spool]\ncommit = "file"\n')
    res = {"segment_messages": seg_msgs, "incoming_files": files, "msg_size": size,
           "runs": {}}
    try:
        tern.start()
        wait_until(lambda: greets(tern.port), 60, "first greeting", tern.proc)
        log(f"fill: {files} files in incoming/")
        smtp_source(tern.port, files, "rcpt@bench.test", SESSIONS)
        tern.stop()
        edit_file(tern.conf, 'commit = "file"', 'commit = "segment"')
        tern.start()
        wait_until(lambda: greets(tern.port), 600, "greeting", tern.proc)
        log(f"fill: {seg_msgs} messages in segments")
        smtp_source(tern.port, seg_msgs, "rcpt@bench.test", SESSIONS)
        tern.kill9()
        segs = os.path.join(tern.data, "spool", "segments")
        res["segments"] = sorted((n, os.path.getsize(os.path.join(segs, n)))
                                 for n in os.listdir(segs) if not n.endswith(".out"))
        res["incoming_entries"] = sum(1 for _ in os.scandir(
            os.path.join(tern.data, "spool", "incoming")))
        log(f"filled: {res}")
        keep = os.path.join(work, "data-at-kill")
        subprocess.run(["cp", "-a", tern.data, keep], check=True)
        edit_file(tern.conf, "deliver = false", "deliver = true")
        for b in bins:
            TERN_BIN = b
            runs = []
            # A Tern without event 4065 recovers its spool before it listens.
            with open(b, "rb") as f:
                has_4065 = b"queue.recovery.finished" in f.read()
            for _ in range(repeat):
                shutil.rmtree(tern.data)
                subprocess.run(["cp", "-a", keep, tern.data], check=True)
                subprocess.run(["sync"], check=True)
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("3\n")
                ev_off = os.path.getsize(os.path.join(tern.data, "events.jsonl"))
                t0 = tern.start()
                greeted = wait_until(lambda: greets(tern.port), 600, "greeting", tern.proc,
                                     0.002)
                deadline = time.monotonic() + LOAD_WAIT
                recovered = None if has_4065 else greeted
                while recovered is None and time.monotonic() < deadline:
                    found, ev_off = tern.events_since(ev_off, 4065)
                    if found:
                        recovered = time.monotonic()
                        break
                    time.sleep(0.01)
                runs.append({"greeting_secs": round(greeted - t0, 3),
                             "recovered_secs": None if recovered is None
                             else round(recovered - t0, 3)})
                log(f"{b}: {runs[-1]}")
                tern.kill9()
            res["runs"][b] = runs
    finally:
        tern.stop()
        fresh.stop()
        os.makedirs(OUT_DIR, exist_ok=True)
        with open(os.path.join(OUT_DIR, "unrecovered-summary.json"), "w") as f:
            json.dump(res, f, indent=1)
        print(json.dumps(res), flush=True)
        if KEEP_TMP:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "unrecovered":
        unrecovered_main()
    else:
        main()
