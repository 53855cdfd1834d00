#!/usr/bin/env python3
"""Scriptable SMTP receiver for Tern's outbound-delivery tests.

Usage:
    python3 testpeers/smtp_peer.py --listen 127.0.0.2:2526 --maildir DIR \
        --ready-file F [--behaviour B ...] [--log LOG] [--cert PEM --key PEM] \
        [--hostname NAME]

--listen HOST:PORT   Address to listen on. PORT may be 0: the kernel picks one.
--ready-file F       Written (atomically) once the socket listens; it holds the port
                     number and a newline. Tests wait for this file, never sleep.
--maildir DIR        Every accepted message becomes one file in DIR, named
                     <time>.<pid>.<n>.msg and written to .<name>.tmp first, then
                     renamed: files starting with "." are incomplete. Content: one line
                     of JSON {"mail_from", "rcpt_tos", "mail_options", "rcpt_options"
                     (one list per recipient), "peer", "tls" (null or
                     "TLSv1.3 CIPHER"), "buffered_at_mail" (the commands that had
                     already arrived when MAIL FROM was read: non-empty means the
                     client pipelined)}, a newline, then the message bytes exactly
                     as received after dot-unstuffing.
                     Beside DIR, connections.json holds {"open", "max", "total"}:
                     connections open now, most open at once, and all accepted
                     (aiosmtpd behaviours only).
--log LOG            Append a protocol log (aiosmtpd's and this script's) to LOG.
--behaviour B        Repeatable; several may also follow one --behaviour.
                     Default: accept.

Behaviours (served by aiosmtpd unless noted):
    accept                   accept everything (the default)
    tempfail-rcpt=REGEX      450 4.2.0 for recipients matching REGEX (re.search)
    permfail-rcpt=REGEX      550 5.1.1 for recipients matching REGEX
    tempfail-mail            451 4.3.0 to every MAIL FROM
    permfail-mail            553 5.7.1 to every MAIL FROM
    tempfail-data            451 4.3.0 after the content (nothing stored)
    permfail-data            554 5.6.0 after the content (nothing stored)
    slow=MS                  wait MS milliseconds before every reply
    size=N                   advertise SIZE N and refuse bigger messages (552)
    no-smtputf8 / no-8bitmime / no-pipelining / no-dsn
                             do not advertise that extension (PIPELINING, DSN and
                             ENHANCEDSTATUSCODES are advertised otherwise); a client
                             sending the matching parameter anyway gets 555
    starttls                 offer STARTTLS with --cert/--key (PEM files)
    hang                     plain asyncio: accept TCP, never send a greeting
    greet421                 plain asyncio: "421 4.3.2" greeting, then close
    greet554                 plain asyncio: "554 5.3.2" greeting, then 503 to
                             everything but QUIT (RFC 5321 §3.1)
    drop-mid-data            plain asyncio: a minimal accepting server (honours
                             no-pipelining) that closes the connection after reading
                             some content bytes, before the final dot
    hang-mid-data            like drop-mid-data, but after some content bytes it
                             keeps the connection open and never replies (logs
                             "hanging mid-data")

hang, greet421, greet554, drop-mid-data and hang-mid-data are exclusive of the aiosmtpd behaviours
(aiosmtpd has no hook for the greeting or for the middle of DATA).
Runs until killed (SIGTERM/SIGKILL).
"""

import argparse
import asyncio
import itertools
import json
import logging
import os
import re
import signal
import ssl
import sys
import time

FAULTS = {"hang", "greet421", "greet554", "drop-mid-data", "hang-mid-data"}
FLAGS = {
    "accept", "tempfail-mail", "permfail-mail", "tempfail-data", "permfail-data",
    "no-smtputf8", "no-8bitmime", "no-pipelining", "no-dsn", "starttls",
} | FAULTS
VALUED = {"tempfail-rcpt", "permfail-rcpt", "slow", "size"}

log = logging.getLogger("smtp_peer")
_counter = itertools.count()


def parse_behaviours(values):
    flags, valued = set(), {}
    for value in values:
        name, eq, arg = value.partition("=")
        if eq and name in VALUED:
            valued[name] = arg
        elif not eq and name in FLAGS:
            flags.add(name)
        else:
            sys.exit(f"smtp_peer: unknown behaviour {value!r}")
    for name in ("tempfail-rcpt", "permfail-rcpt"):
        if name in valued:
            valued[name] = re.compile(valued[name])
    for name in ("slow", "size"):
        if name in valued:
            valued[name] = int(valued[name])
    faults = flags & FAULTS
    if len(faults) > 1 or (faults and (valued or flags - faults - {"accept", "no-pipelining"})):
        sys.exit(f"smtp_peer: {sorted(faults)} cannot be combined with other behaviours")
    return flags, valued


def store(maildir, meta, content):
    name = f"{time.time_ns()}.{os.getpid()}.{next(_counter)}.msg"
    tmp = os.path.join(maildir, f".{name}.tmp")
    with open(tmp, "wb") as f:
        f.write(json.dumps(meta).encode() + b"\n")
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(maildir, name))
    return name


def write_ready(path, port):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.rename(tmp, path)


# ---------------------------------------------------------------- aiosmtpd path

def build_aiosmtpd(flags, valued, maildir, tls_context):
    from aiosmtpd.smtp import SMTP

    dsn = "no-dsn" not in flags

    def split_params(arg):
        """'FROM:<a> X=1 Y' -> ('FROM:<a>', ['X=1', 'Y']) without touching the address."""
        close = arg.find(">")
        head, rest = (arg[: close + 1], arg[close + 1:]) if close >= 0 else (arg, "")
        return head, rest.split()

    # Connection accounting for concurrency tests: the most connections open at once,
    # written to <maildir>/../connections.json whenever it changes.
    conns = {"open": 0, "max": 0, "total": 0}
    stats_path = os.path.join(os.path.dirname(os.path.abspath(maildir)), "connections.json")

    def write_stats():
        tmp = stats_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(conns, f)
        os.replace(tmp, stats_path)

    class PeerSMTP(SMTP):
        def connection_made(self, transport):
            conns["open"] += 1
            conns["total"] += 1
            conns["max"] = max(conns["max"], conns["open"])
            write_stats()
            super().connection_made(transport)

        def connection_lost(self, exc):
            conns["open"] -= 1
            write_stats()
            super().connection_lost(exc)

        async def push(self, status):
            if "slow" in valued:
                await asyncio.sleep(valued["slow"] / 1000)
            await super().push(status)

        async def smtp_MAIL(self, arg):
            self.mail_params = []
            # Commands the client sent after MAIL without waiting for its reply
            # (PIPELINING); StreamReader has no public peek.
            self.buffered_at_mail = bytes(getattr(self._reader, "_buffer", b""))
            if arg:
                head, params = split_params(arg)
                keep = []
                for p in params:
                    key = p.partition("=")[0].upper()
                    if key in ("RET", "ENVID") and dsn:
                        continue
                    if (key == "BODY" and "no-8bitmime" in flags) or (
                            key in ("RET", "ENVID") and not dsn):
                        await self.push(f"555 5.5.4 {key} parameter not advertised")
                        return
                    keep.append(p)
                self.mail_params = params
                arg = " ".join([head] + keep)
            await super().smtp_MAIL(arg)

        async def smtp_RCPT(self, arg):
            self.pending_rcpt_params = []
            if arg:
                head, params = split_params(arg)
                for p in params:
                    if p.partition("=")[0].upper() not in ("NOTIFY", "ORCPT") or not dsn:
                        await self.push("555 5.5.4 RCPT TO parameter not recognised")
                        return
                self.pending_rcpt_params = params
                arg = head
            await super().smtp_RCPT(arg)

    class Handler:
        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            session.host_name = hostname
            lines = [r[4:] for r in responses]
            if "no-8bitmime" in flags:
                lines = [l for l in lines if l != "8BITMIME"]
            extra = ["ENHANCEDSTATUSCODES"]
            if "no-pipelining" not in flags:
                extra.append("PIPELINING")
            if dsn:
                extra.append("DSN")
            lines = lines[:1] + extra + lines[1:]
            return [f"250-{l}" for l in lines[:-1]] + [f"250 {lines[-1]}"]

        async def handle_MAIL(self, server, session, envelope, address, mail_options):
            if "tempfail-mail" in flags:
                return "451 4.3.0 sender temporarily refused"
            if "permfail-mail" in flags:
                return "553 5.7.1 sender refused"
            envelope.mail_from = address
            envelope.mail_options.extend(getattr(server, "mail_params", []))
            envelope.buffered_at_mail = getattr(server, "buffered_at_mail", b"")
            return "250 2.1.0 Ok"

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if "tempfail-rcpt" in valued and valued["tempfail-rcpt"].search(address):
                return "450 4.2.0 <%s>: mailbox busy" % address
            if "permfail-rcpt" in valued and valued["permfail-rcpt"].search(address):
                return "550 5.1.1 <%s>: no such user" % address
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.append(getattr(server, "pending_rcpt_params", []))
            return "250 2.1.5 Ok"

        async def handle_DATA(self, server, session, envelope):
            if "tempfail-data" in flags:
                return "451 4.3.0 content temporarily refused"
            if "permfail-data" in flags:
                return "554 5.6.0 content refused"
            tls = None
            ssl_object = server.transport.get_extra_info("ssl_object") if server.transport else None
            if ssl_object is not None:
                tls = f"{ssl_object.version()} {ssl_object.cipher()[0]}"
            meta = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "mail_options": envelope.mail_options,
                "rcpt_options": envelope.rcpt_options,
                "peer": "%s:%s" % tuple(session.peer[:2]) if session.peer else None,
                "tls": tls,
                "buffered_at_mail": getattr(envelope, "buffered_at_mail", b"").decode(
                    "utf-8", "replace"),
            }
            name = store(maildir, meta, envelope.original_content or b"")
            return f"250 2.0.0 Ok: queued as {name}"

    handler = Handler()
    size = valued.get("size")

    def factory():
        return PeerSMTP(
            handler,
            data_size_limit=size,
            enable_SMTPUTF8="no-smtputf8" not in flags,
            hostname="peer.test.example",
            ident="smtp_peer",
            tls_context=tls_context,
            timeout=60,
        )

    return factory


# ---------------------------------------------------------------- plain asyncio path

async def fault_session(reader, writer, flags):
    async def reply(line):
        writer.write(line.encode() + b"\r\n")
        await writer.drain()

    try:
        if "hang" in flags:
            while await reader.read(4096):
                pass
            return
        if "greet421" in flags:
            await reply("421 4.3.2 peer.test.example service not available")
            return
        if "greet554" in flags:
            await reply("554 5.3.2 peer.test.example no service for you")
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line.strip().upper() == b"QUIT":
                    await reply("221 2.0.0 Bye")
                    return
                await reply("503 5.5.1 no service")
        # drop-mid-data: a minimal accepting server.
        await reply("220 peer.test.example ESMTP smtp_peer")
        while True:
            line = await reader.readline()
            if not line:
                return
            verb = line.strip().split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                caps = ["peer.test.example", "8BITMIME", "ENHANCEDSTATUSCODES"]
                if "no-pipelining" not in flags:
                    caps.append("PIPELINING")
                for c in caps[:-1]:
                    writer.write(f"250-{c}\r\n".encode())
                await reply(f"250 {caps[-1]}")
            elif verb == b"DATA":
                await reply("354 3.0.0 go ahead")
                got = 0
                while got < 10:
                    chunk = await reader.read(4096)
                    if not chunk:
                        return
                    got += len(chunk)
                if "hang-mid-data" in flags:
                    log.info("hanging mid-data after %d content bytes", got)
                    while await reader.read(4096):
                        pass
                    return
                log.info("dropping connection after %d content bytes", got)
                writer.transport.abort()
                return
            elif verb == b"QUIT":
                await reply("221 2.0.0 Bye")
                return
            else:
                await reply("250 2.0.0 Ok")
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


# ---------------------------------------------------------------- main

async def main():
    ap = argparse.ArgumentParser(description="Scriptable SMTP receiver for tests")
    ap.add_argument("--listen", required=True)
    ap.add_argument("--maildir", required=True)
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--behaviour", action="extend", nargs="+", default=[])
    ap.add_argument("--log")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    args = ap.parse_args()

    if args.log:
        logging.basicConfig(filename=args.log, level=logging.DEBUG,
                            format="%(asctime)s %(name)s %(message)s")
    flags, valued = parse_behaviours(args.behaviour or ["accept"])
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    os.makedirs(args.maildir, exist_ok=True)

    loop = asyncio.get_running_loop()
    if flags & FAULTS:
        server = await asyncio.start_server(
            lambda r, w: fault_session(r, w, flags), host, int(port))
    else:
        tls_context = None
        if "starttls" in flags:
            if not (args.cert and args.key):
                sys.exit("smtp_peer: starttls needs --cert and --key")
            tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls_context.load_cert_chain(args.cert, args.key)
        factory = build_aiosmtpd(flags, valued, args.maildir, tls_context)
        server = await loop.create_server(factory, host, int(port))

    bound = server.sockets[0].getsockname()[1]
    write_ready(args.ready_file, bound)
    log.info("listening on %s:%d with %s %s", host, bound, sorted(flags), valued)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
