#!/usr/bin/env python3
"""Registry token flow and redirect server for the upstream client tests.

Serves HTTPS on two loopback ports: the origin (token challenge, token
endpoint, redirects, broken responses) and a second origin that plays a
CDN. Prints "ports <origin> <cdn>" on stdout once both listen. GET /stats
on the origin returns the counters the tests check. Stops on SIGTERM.
"""

import argparse
import http.server
import json
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse

SERVICE = "test-registry"
SCOPE = "repository:x:pull"


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.tokens = set()
        self.token_requests = 0
        self.cdn_requests = 0
        self.cdn_authorization = 0
        self.plain_peers = set()
        self.origin_port = 0
        self.cdn_port = 0

    def snapshot(self):
        with self.lock:
            return {
                "token_requests": self.token_requests,
                "cdn_requests": self.cdn_requests,
                "cdn_authorization": self.cdn_authorization,
                "plain_connections": len(self.plain_peers),
            }


STATE = State()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.server.name, fmt % args))

    def send_body(self, status, body, content_type="text/plain", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        if self.server.name == "cdn":
            self.serve_cdn()
        else:
            self.serve_origin()

    def serve_cdn(self):
        path = urllib.parse.urlsplit(self.path).path
        with STATE.lock:
            STATE.cdn_requests += 1
            if "Authorization" in self.headers:
                STATE.cdn_authorization += 1
        if "Authorization" in self.headers:
            self.send_body(400, b"authorization must not reach the CDN")
        elif path.startswith("/data/"):
            self.send_body(200, ("blob:" + path[len("/data/"):]).encode())
        elif path == "/protected":
            challenge = 'Bearer realm="https://127.0.0.1:%d/token",service="cdn"' % (
                STATE.cdn_port)
            self.send_body(401, b"cdn says no", headers=[("WWW-Authenticate", challenge)])
        else:
            self.send_body(404, b"not found")

    def challenge(self):
        realm = "https://127.0.0.1:%d/token" % STATE.origin_port
        value = 'Bearer realm="%s",service="%s",scope="%s"' % (realm, SERVICE, SCOPE)
        body = json.dumps({"errors": [{"code": "UNAUTHORIZED"}]}).encode()
        self.send_body(401, body, "application/json", [("WWW-Authenticate", value)])

    def authorized(self):
        value = self.headers.get("Authorization", "")
        with STATE.lock:
            return value.startswith("Bearer ") and value[7:] in STATE.tokens

    def serve_origin(self):
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        if path == "/stats":
            self.send_body(200, json.dumps(STATE.snapshot()).encode(), "application/json")
        elif path == "/token":
            self.serve_token(urllib.parse.parse_qs(url.query))
        elif path.startswith("/v2/x/blobs/"):
            name = path[len("/v2/x/blobs/"):]
            if not self.authorized():
                self.challenge()
            elif name == "cdn401":
                location = "https://127.0.0.1:%d/protected" % STATE.cdn_port
                self.send_body(307, b"", headers=[("Location", location)])
            else:
                location = "https://127.0.0.1:%d/data/%s?sig=s3cr3t" % (STATE.cdn_port, name)
                self.send_body(307, b"redirecting", headers=[("Location", location)])
        elif path == "/v2/plain":
            with STATE.lock:
                STATE.plain_peers.add(self.client_address)
            self.send_body(200, b"plain body")
        elif path == "/v2/basic":
            self.send_body(401, b"basic only", headers=[("WWW-Authenticate", 'Basic realm="test"')])
        elif path == "/v2/redirect/relative":
            self.send_body(302, b"", headers=[("Location", "../plain")])
        elif path == "/v2/redirect/loop":
            self.send_body(302, b"", headers=[("Location", "/v2/redirect/loop")])
        elif path == "/v2/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"chunk-one,", b"chunk-two"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/v2/truncated":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif path == "/v2/stall":
            time.sleep(30)
        elif path == "/v2/stall-body":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"partial")
            self.wfile.flush()
            time.sleep(30)
        elif path == "/v2/slow":
            self.send_response(200)
            self.send_header("Content-Length", str(1024 * 200))
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b"s" * 1024)
                    self.wfile.flush()
                    time.sleep(0.02)
            except OSError:
                pass
            self.close_connection = True
        else:
            self.send_body(404, b"not found")

    def serve_token(self, query):
        if query.get("service") != [SERVICE] or query.get("scope") != [SCOPE]:
            self.send_body(400, b"unexpected service or scope")
            return
        with STATE.lock:
            STATE.token_requests += 1
            token = "tok-%d" % STATE.token_requests
            STATE.tokens.add(token)
        body = json.dumps({"token": token, "expires_in": 300})
        self.send_body(200, body.encode(), "application/json")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name, context):
        super().__init__(("127.0.0.1", 0), Handler)
        self.name = name
        # The handshake runs in the request thread, so one stalled client
        # cannot block the accept loop.
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["http/1.1"])
    origin = Server("origin", context)
    cdn = Server("cdn", context)
    STATE.origin_port = origin.server_address[1]
    STATE.cdn_port = cdn.server_address[1]
    for server in (origin, cdn):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ports %d %d" % (STATE.origin_port, STATE.cdn_port), flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
