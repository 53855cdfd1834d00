#!/usr/bin/env python3
"""A counting SMTP sink with STARTTLS, for the TLS policy benchmark (bench/relay/tls.py).

Postfix's smtp-sink has no TLS, so this asyncio server stands in for it: EHLO offers
PIPELINING and STARTTLS, every command gets its reply at once (a pipelined group is
answered in one write), the content is read to its final dot and discarded, and the
number of messages received (at their final dot, as smtp-sink counts) is written to
`--count-file` every 20 ms and at exit. It runs in its own process so that its CPU is
not the load generator's.

    tls_sink.py --listen 127.0.0.2:2525 --cert cert.pem --key key.pem --count-file FILE \
        [--ready FILE]
"""

import argparse
import asyncio
import os
import signal
import ssl

COUNT = 0


async def session(reader, writer, ctx):
    global COUNT
    writer.write(b"220 sink.bench.test ESMTP tls_sink\r\n")
    tls = False
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                caps = [b"250-sink.bench.test", b"250-PIPELINING", b"250-8BITMIME",
                        b"250-SIZE 104857600"]
                if not tls:
                    caps.append(b"250-STARTTLS")
                caps.append(b"250 ENHANCEDSTATUSCODES")
                writer.write(b"\r\n".join(caps) + b"\r\n")
            elif verb == b"STAR" and not tls:
                writer.write(b"220 2.0.0 go ahead\r\n")
                await writer.drain()
                await writer.start_tls(ctx)
                tls = True
                continue
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                while True:
                    l2 = await reader.readline()
                    if not l2:
                        return
                    if l2 == b".\r\n":
                        break
                COUNT += 1
                writer.write(b"250 2.0.0 Ok: queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                await writer.drain()
                return
            else:
                # MAIL, RCPT, RSET, NOOP: accepted.
                writer.write(b"250 2.0.0 Ok\r\n")
            # Answer a pipelined group in one write: flush only when nothing more waits.
            if not reader._buffer:  # noqa: SLF001 (asyncio's StreamReader buffer)
                await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def write_count(path):
    while True:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(COUNT))
        os.replace(tmp, path)
        await asyncio.sleep(0.02)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--count-file", required=True)
    p.add_argument("--ready")
    a = p.parse_args()
    host, port = a.listen.rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    server = await asyncio.start_server(lambda r, w: session(r, w, ctx), host, int(port),
                                        backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    counter = asyncio.create_task(write_count(a.count_file))
    if a.ready:
        with open(a.ready, "w") as f:
            f.write("ready")
    async with server:
        await stop.wait()
    counter.cancel()
    with open(a.count_file, "w") as f:
        f.write(str(COUNT))


if __name__ == "__main__":
    asyncio.run(main())
