#!/usr/bin/env python3
"""An HTTPS server for MTA-STS scenario tests (Tern's tests/common/mtasts.rs).

Serves GET /.well-known/mta-sts.txt from --policy-file (read at each request, so the test
can change it), as text/plain. If the file holds exactly "HANG", the request is accepted
and never answered (until the process is stopped). Writes the port to --ready-file once
listening, and one line per request to --log.
"""
import argparse
import http.server
import os
import ssl
import threading

p = argparse.ArgumentParser()
p.add_argument("--listen", required=True)  # ip:port
p.add_argument("--cert", required=True)
p.add_argument("--key", required=True)
p.add_argument("--policy-file", required=True)
p.add_argument("--ready-file", required=True)
p.add_argument("--log", required=True)
a = p.parse_args()
stop = threading.Event()
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        with lock, open(a.log, "a") as f:
            f.write(f"GET {self.path} host={self.headers.get('Host')}\n")
        try:
            with open(a.policy_file, "rb") as f:
                body = f.read()
        except OSError:
            body = None
        if body == b"HANG":
            stop.wait()
            return
        if body is None or self.path != "/.well-known/mta-sts.txt":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


host, port = a.listen.rsplit(":", 1)
server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
server.daemon_threads = True
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(a.cert, a.key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
tmp = a.ready_file + ".tmp"
with open(tmp, "w") as f:
    f.write(str(server.server_address[1]))
os.rename(tmp, a.ready_file)
try:
    server.serve_forever()
finally:
    stop.set()
