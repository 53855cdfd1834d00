#!/usr/bin/env python3
"""Local delivery benchmark: smtp-source -> MTA -> a Maildir on this machine.

Three legs on the same machine, in the same run: Tern delivering into a Maildir itself
(route `maildir`), Tern delivering through a real Dovecot LMTP server (route `lmtp` on
Dovecot's Unix socket; Dovecot writes the Maildir), and a private Postfix instance (the
`virtual` delivery agent into a Maildir). Each gets MESSAGES messages of MSG_SIZE octets
over SESSIONS parallel sessions from smtp-source to one local mailbox; the time runs from
the first connection until the mailbox's new/ holds every message. Every MTA fsyncs each
message before its 250, and every writer fsyncs the delivered file (Tern: file and new/;
Dovecot: mail_fsync = optional, its default, fsyncs the file; Postfix's virtual: the
file). Prints messages/s for each leg and the ratios of each Tern leg to Postfix.

Usage (as root, Postfix and Dovecot installed: scripts/test.sh installs them):
    python3 bench/local/run.py
Environment knobs: MESSAGES (5000) SESSIONS (20) MSG_SIZE (1024) ROUNDS (1)
    SERVERS ("tern tern-lmtp postfix") TERN_BIN (target/release/tern) SKIP_BUILD (0)
    TERN_COMMIT (segment) KEEP_TMP (0) OUT_DIR (bench/out)
Output: bench/out/local-summary.txt.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "relay"))
from run import ROOT, die, free_port, launch_tern, log, wait_banner  # noqa: E402  (relay bench's helpers)

MESSAGES = int(os.environ.get("MESSAGES", "5000"))
SESSIONS = int(os.environ.get("SESSIONS", "20"))
MSG_SIZE = int(os.environ.get("MSG_SIZE", "1024"))
ROUNDS = int(os.environ.get("ROUNDS", "1"))
SERVERS = os.environ.get("SERVERS", "tern tern-lmtp postfix").split()
TERN_BIN = os.environ.get("TERN_BIN", os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "tern"))
TERN_COMMIT = os.environ.get("TERN_COMMIT", "segment")
OUT_DIR = os.environ.get("OUT_DIR", os.path.join(ROOT, "bench", "out"))
KEEP_TMP = os.environ.get("KEEP_TMP", "0") == "1"
TIMEOUT = 600 + MESSAGES // 10
NOBODY = 65534


def count_new(maildir):
    try:
        return len(os.listdir(os.path.join(maildir, "new")))
    except FileNotFoundError:
        return 0


def tern_sections(route):
    """Tern's configuration for both Tern legs: bench.test local with every address
    going to mailbox `rcpt`, delivered by `route` (the `[[route]]` keys after domains)."""
    return f"""[relay]
networks = ["127.0.0.0/8"]

[spool]
commit = "{TERN_COMMIT}"

[local]
domains = ["bench.test"]

[local.catch_all]
"bench.test" = "rcpt"

[[route]]
domains = ["bench.test"]
{route}
"""


def start_tern(work):
    mail = os.path.join(work, "mail")
    port, stop = launch_tern(work, tern_sections(f'transport = "maildir"\npath = "{mail}"'))
    return port, os.path.join(mail, "rcpt", "Maildir"), stop


def start_dovecot(work):
    """A private Dovecot with LMTP on a Unix socket, storing mail as `nobody` under
    work/dovecot-mail; returns (socket, maildir of user rcpt, stop)."""
    base = os.path.join(work, "dovecot")
    mail = os.path.join(work, "dovecot-mail")
    os.makedirs(base)
    os.makedirs(mail)
    os.chown(mail, NOBODY, NOBODY)
    sock = os.path.join(base, "lmtp.sock")
    userdb = os.path.join(base, "users")
    with open(userdb, "w") as f:
        f.write("rcpt:{PLAIN}x::::::\n")
    conf = os.path.join(base, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(f"""protocols = lmtp
base_dir = {base}/run
state_dir = {base}/state
instance_name = tern-local-bench-{os.getpid()}
log_path = {base}/dovecot.log
ssl = no
listen = 127.0.0.1
mail_location = maildir:{mail}/%u/Maildir
default_internal_user = root
default_internal_group = root
default_login_user = root
first_valid_uid = 1
lmtp_save_to_detail_mailbox = no
passdb {{
  driver = passwd-file
  args = {userdb}
}}
userdb {{
  driver = passwd-file
  args = {userdb}
  default_fields = uid=nobody gid=nogroup home={mail}/%u
}}
service lmtp {{
  process_limit = 20
  unix_listener {sock} {{
    mode = 0666
  }}
}}
""")
    proc = subprocess.Popen(["dovecot", "-F", "-c", conf], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(base, "stderr"), "w"))
    deadline = time.monotonic() + 30
    import socket as socketmod
    while True:
        try:
            s = socketmod.socket(socketmod.AF_UNIX)
            s.connect(sock)
            s.close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                die(f"dovecot did not start: see {base}/stderr and {base}/dovecot.log")
            time.sleep(0.05)

    def stop():
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return sock, os.path.join(mail, "rcpt", "Maildir"), stop


def start_tern_lmtp(work):
    sock, maildir, stop_dovecot = start_dovecot(work)
    try:
        port, stop_tern = launch_tern(
            work, tern_sections(f'transport = "lmtp"\nserver = "unix:{sock}"'))
    except BaseException:
        stop_dovecot()
        raise

    def stop():
        stop_tern()
        stop_dovecot()
    return port, maildir, stop


def start_postfix(work):
    port = free_port()
    etc = os.path.join(work, "postfix", "etc")
    queue = os.path.join(work, "postfix", "queue")
    data = os.path.join(work, "postfix", "data")
    vmail = os.path.join(work, "vmail")
    for d in (etc, queue, data, vmail):
        os.makedirs(d, exist_ok=True)
    shutil.chown(data, "postfix")
    os.chown(vmail, NOBODY, NOBODY)
    with open(os.path.join(etc, "main.cf"), "w") as f:
        f.write(f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-local-bench
maillog_file = {work}/postfix/maillog
maillog_file_prefixes = {work}
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = $myhostname
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
virtual_mailbox_domains = bench.test
virtual_mailbox_base = {vmail}
virtual_mailbox_maps = static:rcpt/Maildir/
virtual_uid_maps = static:{NOBODY}
virtual_gid_maps = static:{NOBODY}
virtual_minimum_uid = 1
virtual_destination_concurrency_limit = 20
default_process_limit = 100
""")
    with open(os.path.join(ROOT, "testpeers", "postfix", "master.cf.in")) as f:
        master = f.read().replace("@LISTEN@", f"127.0.0.1:{port}")
    master += "virtual   unix  -       n       n       -       -       virtual\n"
    with open(os.path.join(etc, "master.cf"), "w") as f:
        f.write(master)
    subprocess.run(["postfix", "-c", etc, "check"], check=True, timeout=60)
    subprocess.run(["postfix", "-c", etc, "start"], check=True, timeout=60)
    wait_banner(port)

    def stop():
        subprocess.run(["postfix", "-c", etc, "stop"], timeout=60)
    return port, os.path.join(vmail, "rcpt", "Maildir"), stop


def one_run(server, work):
    starter = {"tern": start_tern, "tern-lmtp": start_tern_lmtp, "postfix": start_postfix}[server]
    port, maildir, stop = starter(work)
    try:
        t0 = time.monotonic()
        src = subprocess.run(
            ["smtp-source", "-s", str(SESSIONS), "-m", str(MESSAGES), "-l", str(MSG_SIZE),
             "-M", "client.bench.test", "-f", "sender@client.bench.test",
             "-t", "rcpt@bench.test", f"127.0.0.1:{port}"],
            capture_output=True, timeout=TIMEOUT)
        if src.returncode != 0 or src.stderr.strip():
            die(f"smtp-source against {server}: {src.returncode} {src.stderr[-500:]!r}")
        deadline = t0 + TIMEOUT
        while count_new(maildir) < MESSAGES:
            if time.monotonic() > deadline:
                die(f"{server}: only {count_new(maildir)} of {MESSAGES} reached {maildir}")
            time.sleep(0.02)
        done = time.monotonic()
        return MESSAGES / (done - t0), count_new(maildir) - MESSAGES
    finally:
        stop()


def main():
    if os.geteuid() != 0 and "postfix" in SERVERS:
        die("run as root (Postfix needs it)")
    tools = ("smtp-source",) + (("postfix",) if "postfix" in SERVERS else ()) \
        + (("dovecot",) if "tern-lmtp" in SERVERS else ())
    for tool in tools:
        if shutil.which(tool) is None:
            die(f"{tool} not found; run scripts/test.sh (it installs Postfix and Dovecot)")
    if any(s.startswith("tern") for s in SERVERS) and os.environ.get("SKIP_BUILD", "0") != "1":
        log("building Tern: cargo build --release -p tern")
        subprocess.run(["cargo", "build", "--release", "-p", "tern"], cwd=ROOT, check=True)
    results = {s: [] for s in SERVERS}
    for r in range(ROUNDS):
        for server in SERVERS:
            work = tempfile.mkdtemp(prefix=f"tern-local-bench-{server}-")
            os.chmod(work, 0o755)  # Postfix daemons run as the postfix user
            try:
                rate, extra = one_run(server, work)
            finally:
                if not KEEP_TMP:
                    shutil.rmtree(work, ignore_errors=True)
            log(f"round {r + 1} {server}: {rate:.0f} msg/s into the Maildir "
                f"({extra} extra files)")
            results[server].append(rate)
    os.makedirs(OUT_DIR, exist_ok=True)
    lines = [f"local benchmark: {MESSAGES} messages x {ROUNDS} round(s), {SESSIONS} sessions, "
             f"{MSG_SIZE}-octet bodies, smtp-source -> MTA (-> Dovecot LMTP for tern-lmtp) -> one Maildir, "
             f"Tern spool commit = {TERN_COMMIT}, {os.cpu_count()} CPUs"]
    best = {}
    for s, rates in results.items():
        best[s] = max(rates)
        lines.append(f"{s}: " + ", ".join(f"{x:.0f}" for x in rates) + f" msg/s (best {best[s]:.0f})")
    for leg in ("tern", "tern-lmtp"):
        if leg in best and "postfix" in best:
            lines.append(f"ratio {leg}/postfix (best of each): {best[leg] / best['postfix']:.2f}x")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(OUT_DIR, "local-summary.txt"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
