"""DKIM signing for the relay benchmark (`DKIM=...` in bench/relay/run.py).

Keys, Tern's `[dkim]` section, the OpenDKIM milters for the private Postfix, and the
check that the sink really received signed mail. Standard library, `openssl` and dkimpy
(`import dkim`; PyNaCl for Ed25519), which scripts/test.sh installs.

Modes: `none` (no signing; the baseline), `rsa` (RSA-SHA256, 2048 bits), `ed25519`
(Ed25519-SHA256, RFC 8463), `both` (dual: an RSA and an Ed25519 signature on every
message; `dual` is accepted for it).

- Tern's keys are made by `tern dkim generate` (selectors `trsa`, `ted`) into a
  directory made here with mode 0700; each file is checked to be 0600.
- Postfix signs through Debian's `opendkim` milter in the foreground (`-f`), one config
  file per instance in the run's directory: `Mode s`, relaxed/relaxed, `InternalHosts
  127.0.0.0/8`, `OversignHeaders From` (as Tern does), on a Unix socket as Debian
  configures it (`Socket local:PATH`; `MILTER_SOCKET=inet` puts it on TCP loopback, where
  each milter stalls the end of data about 90 ms: bench/filter found it).
  The RSA key is made by `opendkim-genkey -b 2048` (selector `orsa`), the Ed25519 key by
  `openssl genpkey -algorithm ed25519` (selector `oed`; opendkim-genkey makes RSA only),
  with `SignatureAlgorithm ed25519-sha256`. OpenDKIM has one signing algorithm per
  instance, so `both` chains two milters (`smtpd_milters = inet:A, inet:B`), which is
  how a Postfix site signs twice. OpenDKIM refuses a configuration file or key under a
  directory others may write, /tmp included (sticky or not), so its files go to a
  directory of their own under OPENDKIM_BASE (default /run, root's; removed at the end)
  rather than the run's directory in TMPDIR; nothing there is on the mail's path.
- The sink dumps every transaction (`smtp-sink -D`) in DKIM mode (every mode, `none`
  included, so the sink's work is the same); after the run `check_dump` counts the
  messages carrying a DKIM-Signature of each expected algorithm (all of them must), and
  verifies a sample with dkimpy against the public keys, derived from the private key
  files (RSA: `openssl pkey -pubout`; Ed25519: from the seed, with PyNaCl), not taken
  from what the tools printed.
"""

import base64
import grp
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time

FROM_DOMAIN = "client.bench.test"  # the From domain of smtp-source's and the client's mail
MODES = ("none", "rsa", "ed25519", "both")
ALGS = {"none": (), "rsa": ("rsa",), "ed25519": ("ed25519",), "both": ("rsa", "ed25519")}
TAG = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}
TERN_SEL = {"rsa": "trsa", "ed25519": "ted"}
OPENDKIM_SEL = {"rsa": "orsa", "ed25519": "oed"}


def parse_modes(text):
    """`DKIM` as a list of modes (`dual` read as `both`); raises ValueError."""
    out = []
    for m in text.split():
        m = {"dual": "both"}.get(m.lower(), m.lower())
        if m not in MODES:
            raise ValueError(f"DKIM mode {m!r}: one of {', '.join(MODES)} (or dual)")
        if m not in out:
            out.append(m)
    return out


def public_record(key_file, alg):
    """The DKIM TXT record for a private key file, derived from the private key: RSA
    with `openssl pkey -pubout`; Ed25519 from the 32-octet seed in the PKCS#8 document,
    with PyNaCl (an implementation independent of both OpenSSL and Tern; it reads
    PKCS#8 v1 and v2)."""
    if alg == "rsa":
        der = subprocess.run(["openssl", "pkey", "-in", key_file, "-pubout", "-outform",
                              "DER"], check=True, capture_output=True, timeout=30).stdout
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    import nacl.signing
    with open(key_file) as f:
        pem = f.read()
    body = re.search(r"-----BEGIN PRIVATE KEY-----(.*?)-----END PRIVATE KEY-----", pem, re.S)
    if not body:
        raise RuntimeError(f"{key_file}: no PKCS#8 PEM key")
    der = base64.b64decode("".join(body.group(1).split()))
    # AlgorithmIdentifier id-Ed25519 (1.3.101.112), then OCTET STRING { OCTET STRING seed }.
    marker = bytes.fromhex("06032b6570042204 20".replace(" ", ""))
    at = der.find(marker)
    if at < 0 or len(der) < at + len(marker) + 32:
        raise RuntimeError(f"{key_file}: not an Ed25519 PKCS#8 key")
    seed = der[at + len(marker):at + len(marker) + 32]
    public = bytes(nacl.signing.SigningKey(seed).verify_key)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"


def tern_keys(tern_bin, work, mode):
    """Generates Tern's keys for `mode` with `tern dkim generate`. Returns (the `[dkim]`
    TOML section, {selector: TXT record})."""
    if mode == "none":
        return "", {}
    kdir = os.path.join(work, "tern-dkim")
    os.mkdir(kdir, 0o700)
    os.chmod(kdir, 0o700)  # explicit: mkdir's mode is reduced by the umask
    keys, records = [], {}
    for alg in ALGS[mode]:
        sel = TERN_SEL[alg]
        subprocess.run([tern_bin, "dkim", "generate", FROM_DOMAIN, "--selector", sel,
                        "--algorithm", alg, "--out", kdir],
                       check=True, capture_output=True, timeout=120)
        path = os.path.join(kdir, f"{FROM_DOMAIN}.{sel}.pem")
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != 0o600:
            raise RuntimeError(f"{path}: not a regular file of mode 0600")
        records[sel] = public_record(path, alg)
        keys.append(f"""[[dkim.domain.key]]
selector = "{sel}"
algorithm = "{TAG[alg]}"
key_file = "{path}"
""")
    section = f"""[dkim]
origins = ["relay_network"]
on_failure = "defer"

[[dkim.domain]]
name = "{FROM_DOMAIN}"
""" + "\n".join(keys)
    return section, records


class OpenDkim:
    """The OpenDKIM milters for `mode`: one `opendkim -f` per algorithm. `milters` is
    the value for Postfix's `smtpd_milters`; `records` maps selectors to TXT records."""

    def __init__(self, mode, free_port, keep=False):
        self.procs = []
        self.logs = []
        self.records = {}
        self.keep = keep
        base = os.environ.get("OPENDKIM_BASE", "/run")
        self.dir = tempfile.mkdtemp(prefix="tern-relay-bench-opendkim-", dir=base)
        # 0711: Postfix's processes reach the sockets inside without listing the directory.
        os.chmod(self.dir, 0o711)
        addrs = []
        try:
            for alg in ALGS[mode]:
                addrs.append(self._start(self.dir, alg, free_port()))
        except BaseException:
            self.stop()
            raise
        self.milters = ", ".join(addrs)

    def _start(self, work, alg, port):
        """Starts one milter; returns its address for smtpd_milters."""
        unix = os.environ.get("MILTER_SOCKET", "unix") == "unix"
        sock = os.path.join(work, f"opendkim-{alg}.sock")
        sel = OPENDKIM_SEL[alg]
        d = os.path.join(work, f"opendkim-{alg}")
        os.mkdir(d, 0o700)
        os.chmod(d, 0o700)
        key = os.path.join(d, f"{sel}.private")
        if alg == "rsa":
            subprocess.run(["opendkim-genkey", "-b", "2048", "-d", FROM_DOMAIN, "-s", sel,
                            "-D", d], check=True, capture_output=True, timeout=120)
        else:
            subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key],
                           check=True, capture_output=True, timeout=30)
        os.chmod(key, 0o600)
        self.records[sel] = public_record(key, alg)
        conf = os.path.join(d, "opendkim.conf")
        with open(conf, "w") as f:
            f.write(f"""Syslog no
Mode s
Canonicalization relaxed/relaxed
SignatureAlgorithm {TAG[alg]}
Domain {FROM_DOMAIN}
Selector {sel}
KeyFile {key}
InternalHosts 127.0.0.0/8
OversignHeaders From
Socket {f"local:{sock}" if unix else f"inet:{port}@127.0.0.1"}
""")
        os.chmod(conf, 0o600)
        log = open(os.path.join(d, "opendkim.log"), "wb")
        self.logs.append(log)
        proc = subprocess.Popen(["opendkim", "-f", "-x", conf], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                log.flush()
                with open(log.name, "rb") as f:
                    said = f.read()[-500:].decode("utf-8", "replace")
                raise RuntimeError(f"opendkim ({alg}) exited with {proc.returncode}: {said}")
            try:
                if unix:
                    with socket.socket(socket.AF_UNIX) as u:
                        u.connect(sock)
                    os.chown(sock, 0, grp.getgrnam("postfix").gr_gid)
                    os.chmod(sock, 0o660)
                    return f"unix:{sock}"
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return f"inet:127.0.0.1:{port}"
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"opendkim ({alg}) did not listen on {port} in 30 s")
                time.sleep(0.05)

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for log in self.logs:
            log.close()
        self.procs, self.logs = [], []
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def dump_dir(work):
    """A directory the sink (running as nobody when root) can write its dump into."""
    d = os.path.join(work, "sink-dump")
    os.mkdir(d, 0o700)
    os.chmod(d, 0o700)
    if os.geteuid() == 0:
        shutil.chown(d, "nobody")
    return d


def split_dump(path):
    """The messages of an `smtp-sink -D` dump: each starts with the sink's
    `X-Client-Addr:` line (line ends are LF in the dump); returned with CRLF."""
    with open(path, "rb") as f:
        data = f.read()
    parts = re.split(rb"(?m)^(?=X-Client-Addr: )", data)
    return [p.rstrip(b"\n").replace(b"\n", b"\r\n") + b"\r\n" for p in parts if p.strip()]


def signature_algs(msg):
    """The `a=` of each DKIM-Signature header field of a message, in order."""
    head = msg.split(b"\r\n\r\n", 1)[0]
    fields = re.split(rb"\r\n(?![ \t])", head)
    out = []
    for fld in fields:
        if fld[:16].lower() == b"dkim-signature: " or fld[:15].lower() == b"dkim-signature:":
            m = re.search(rb"\ba\s*=\s*([a-z0-9-]+)", fld.replace(b"\r\n", b""))
            out.append(m.group(1).decode() if m else "?")
    return out


def check_dump(path, mode, records, expected, sample):
    """Checks the sink's dump: `expected` messages or more, each with a signature of
    every algorithm of `mode` (none at all for `none`), and `sample` of them verified
    by dkimpy against `records`. Returns a one-line summary; raises RuntimeError."""
    msgs = split_dump(path)
    if len(msgs) < expected:
        raise RuntimeError(f"the sink's dump has {len(msgs)} messages, {expected} expected")
    want = sorted(TAG[a] for a in ALGS[mode])
    wrong = [i for i, m in enumerate(msgs) if sorted(signature_algs(m)) != want]
    if wrong:
        got = signature_algs(msgs[wrong[0]])
        raise RuntimeError(f"{len(wrong)} of {len(msgs)} messages at the sink are not signed "
                           f"as {mode} (first: signatures {got})")
    if mode == "none":
        return f"{len(msgs)} messages at the sink, none signed (as expected)"
    import dkim  # dkimpy; Ed25519 needs PyNaCl

    def txt(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        sel = name.split("._domainkey.", 1)[0]
        rec = records.get(sel)
        return rec.encode() if rec else None

    step = max(1, len(msgs) // max(1, sample))
    checked = 0
    for m in msgs[::step][:sample]:
        d = dkim.DKIM(m)
        for idx in range(len(want)):
            try:
                ok = d.verify(idx=idx, dnsfunc=txt)
            except dkim.DKIMException as e:  # ValidationError (body hash), KeyFormatError...
                ok, why = False, str(e)
            else:
                why = "bad signature"
            if not ok:
                raise RuntimeError(f"dkimpy: signature {idx} does not verify ({why}):\n"
                                   f"{m[:1500].decode('ascii', 'replace')}")
        checked += 1
    return (f"{len(msgs)} messages at the sink, each signed {'+'.join(want)}; "
            f"{checked} verified with dkimpy")
