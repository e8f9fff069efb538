#!/usr/bin/env python3
"""A fault-injecting HTTP proxy for the storage emulators (tests only).

    faultproxy.py --upstream http://127.0.0.1:9000 --port 0 [--every N] [--faults reset,slowdown,lost]
                  [--burst 3] [--latency-ms 20] [--outage] [--stats FILE]

Forwards every request to the upstream emulator unchanged (headers included, so signatures
still verify) and, on every Nth request, injects the next fault of the list, in turn:

  reset     the request is read, then the connection is reset without an answer
  slowdown  a burst of `--burst` 503 answers (S3's SlowDown / Azure's ServerBusy) in a row
  lost      the request is forwarded and carried out, then the connection is reset before the
            answer is sent (a write that landed whose answer never came)

`--latency-ms` delays every request; `--outage` answers every request with 503. The port
actually bound is printed on stdout as the first line; `--stats` names a JSON file rewritten
after every fault with the counts injected so far (tests check that faults really happened).
"""

import argparse
import http.client
import http.server
import json
import os
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}

SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate. (injected)</Message></Error>"
)


class State:
    def __init__(self, args):
        self.args = args
        self.faults = [f for f in args.faults.split(",") if f]
        self.lock = threading.Lock()
        self.requests = 0
        self.burst_left = 0
        self.counts = {"requests": 0, "reset": 0, "slowdown": 0, "lost": 0, "outage": 0}

    def decide(self):
        with self.lock:
            self.requests += 1
            self.counts["requests"] = self.requests
            if self.args.outage:
                return self.count("outage")
            if self.burst_left > 0:
                self.burst_left -= 1
                return self.count("slowdown")
            if self.faults and self.args.every > 0 and self.requests % self.args.every == 0:
                kind = self.faults[(self.requests // self.args.every - 1) % len(self.faults)]
                if kind == "slowdown":
                    self.burst_left = max(self.args.burst - 1, 0)
                return self.count(kind)
            return None

    def count(self, kind):
        self.counts[kind] += 1
        if self.args.stats:
            try:
                tmp = self.args.stats + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(self.counts, f)
                os.replace(tmp, self.args.stats)
            except OSError as e:
                print(f"faultproxy: unable to write {self.args.stats}: {e}", file=sys.stderr)
        return kind


def make_handler(state, upstream):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet
            pass

        def read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def reset(self):
            # SO_LINGER 0: close with a RST, as a dropped connection looks to the client.
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            except OSError:
                pass
            self.close_connection = True

        def answer(self, status, headers, body, head=False):
            self.send_response_only(status)
            length_sent = False
            for k, v in headers:
                lk = k.lower()
                if lk in HOP:
                    continue
                if lk == "content-length":
                    if not head:
                        continue
                    length_sent = True
                self.send_header(k, v)
            if not head:
                self.send_header("Content-Length", str(len(body)))
            elif not length_sent:
                self.send_header("Content-Length", "0")
            self.end_headers()
            if not head and body:
                self.wfile.write(body)

        def handle_any(self):
            body = self.read_body()
            if state.args.latency_ms:
                time.sleep(state.args.latency_ms / 1000.0)
            fault = state.decide()
            if fault == "reset":
                return self.reset()
            if fault in ("slowdown", "outage"):
                return self.answer(503, [("Content-Type", "application/xml"), ("x-ms-error-code", "ServerBusy")], SLOWDOWN)
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP and k.lower() != "content-length"}
                if body or self.command in ("PUT", "POST") or "Content-Length" in self.headers:
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status, rheaders = resp.status, resp.getheaders()
            except OSError as e:
                return self.answer(502, [("Content-Type", "text/plain")], f"upstream: {e}".encode())
            finally:
                conn.close()
            if fault == "lost":
                return self.reset()
            self.answer(status, rheaders, data, head=self.command == "HEAD")

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any

    return Handler


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--every", type=int, default=0)
    p.add_argument("--faults", default="reset,slowdown,lost")
    p.add_argument("--burst", type=int, default=3)
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--outage", action="store_true")
    p.add_argument("--stats")
    args = p.parse_args()
    upstream = urllib.parse.urlparse(args.upstream)
    state = State(args)
    server = Server(("127.0.0.1", args.port), make_handler(state, upstream))
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
