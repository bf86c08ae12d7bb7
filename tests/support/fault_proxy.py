"""A TLS reverse proxy that damages registry blobs on request.

Run as a program, it listens on HTTPS (HTTP/1.1 only, one thread per
connection) and forwards every request to an upstream registry. For `GET`
of `/v2/<name>/blobs/<digest>` it applies the rule for that digest, or the
rule for "*" when the digest has none:

- "pass": forward the body unchanged;
- "corrupt": flip every bit of the middle byte of the body, keeping the
  length, so only a digest check finds the damage;
- "truncate": send the status line and headers with the full
  Content-Length, then half of the body, then close the connection;
- "fail": return 503 with an OCI error body without contacting the
  upstream;
- "chunked": forward the body unchanged but without Content-Length, in
  chunked transfer coding.

Rules are replaced with `PUT /_fault/rules` and a JSON object of digest to
rule, and read back with `GET /_fault/rules`. Every proxied request is
appended to the log file as one JSON line with its method, path, status,
rule and body bytes sent.

The `FaultProxy` class starts and controls such a process from a test. The
program uses only the standard library and no package-relative imports, so
it runs as `python3 fault_proxy.py`.
"""

import argparse
import http.client
import http.server
import json
import re
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

RULES = ("pass", "corrupt", "truncate", "fail", "chunked")
CONTROL_PATH = "/_fault/rules"
BLOB_PATH = re.compile(r"^/v2/(?:.+)/blobs/(?P<digest>[a-z0-9]+:[a-f0-9]+)$")

# Request headers that belong to one connection (RFC 9110, section 7.6.1)
# and so are not forwarded, plus Host, which the proxy rewrites.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
}

CHUNK_BYTES = 64 * 1024

# Seconds to wait for the upstream before the proxy returns 502.
UPSTREAM_TIMEOUT = 60

# Largest request body forwarded. Tests push through the upstream directly,
# so bodies here are small.
MAX_REQUEST_BODY = 16 * 1024 * 1024


class ProxyState:
    """Rules and the request log, shared by the handler threads."""

    def __init__(self, upstream_host, upstream_port, upstream_context, log_path):
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.upstream_context = upstream_context
        self.log_path = log_path
        self._lock = threading.Lock()
        self._rules = {}

    def rules(self):
        with self._lock:
            return dict(self._rules)

    def set_rules(self, rules):
        with self._lock:
            self._rules = dict(rules)

    def rule_for(self, digest):
        with self._lock:
            return self._rules.get(digest, self._rules.get("*", "pass"))

    def log(self, entry):
        line = json.dumps(entry) + "\n"
        with self._lock, open(self.log_path, "a") as log_file:
            log_file.write(line)


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fault-proxy"
    # Seconds an idle keep-alive connection stays open.
    timeout = 120

    def setup(self):
        # The TLS handshake runs here, on the connection's own thread, so a
        # slow client cannot stall the accept loop.
        self.request = self.server.tls_context.wrap_socket(
            self.request, server_side=True
        )
        super().setup()

    def handle(self):
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, socket.timeout):
            # The client closed the connection or failed the handshake, so
            # there is no one to send a response to.
            pass

    def log_message(self, format, *args):
        # Requests go to the JSON log file instead of stderr.
        pass

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PATCH(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def _dispatch(self):
        if self.path == CONTROL_PATH:
            self._control()
            return
        self._proxy()

    def _control(self):
        state = self.server.state
        if self.command == "GET":
            self._send_json(200, state.rules())
            return
        if self.command != "PUT":
            self._send_json(405, {"error": "use GET or PUT"})
            return
        body = self._read_body()
        if body is None:
            return
        try:
            rules = json.loads(body)
        except ValueError as e:
            self._send_json(400, {"error": f"invalid JSON: {e}"})
            return
        if not isinstance(rules, dict) or any(
            r not in RULES for r in rules.values()
        ):
            self._send_json(
                400, {"error": f"expected an object of digest to one of {RULES}"}
            )
            return
        state.set_rules(rules)
        self._send_json(200, rules)

    def _proxy(self):
        state = self.server.state
        body = self._read_body()
        if body is None:
            return
        match = BLOB_PATH.match(self.path.split("?", 1)[0])
        rule = "pass"
        if self.command == "GET" and match:
            rule = state.rule_for(match.group("digest"))
        entry = {"time": time.time(), "method": self.command, "path": self.path,
                 "rule": rule}
        if rule == "fail":
            self._send_oci_error(503, "UNAVAILABLE", "fault injected by proxy")
            entry.update(status=503, sent=0)
            state.log(entry)
            return
        connection = http.client.HTTPSConnection(
            state.upstream_host,
            state.upstream_port,
            context=state.upstream_context,
            timeout=UPSTREAM_TIMEOUT,
        )
        try:
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP
            }
            headers["Host"] = f"{state.upstream_host}:{state.upstream_port}"
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            entry["status"] = response.status
            entry["sent"] = self._relay(response, rule)
        except (OSError, http.client.HTTPException) as e:
            entry.update(status=502, sent=0, error=str(e))
            if not self._headers_sent:
                self._send_oci_error(502, "UNAVAILABLE", f"upstream failed: {e}")
            else:
                self.close_connection = True
        finally:
            connection.close()
            state.log(entry)

    _headers_sent = False

    def _relay(self, response, rule):
        """Send the upstream response with `rule` applied; return bytes sent."""
        length = response.getheader("Content-Length")
        length = int(length) if length is not None else None
        if response.status not in (200, 206) or self.command == "HEAD":
            rule = "pass"
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() in HOP_BY_HOP or name.lower() == "content-length":
                continue
            self.send_header(name, value)
        chunked = ((length is None or rule == "chunked")
                   and self.command != "HEAD")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self._headers_sent = True

        if self.command == "HEAD" or response.status in (204, 304):
            return 0
        limit = None
        if rule == "truncate":
            limit = (length or 0) // 2
        damage_at = (length or 0) // 2 if rule == "corrupt" else None

        sent = 0
        while True:
            data = response.read(CHUNK_BYTES)
            if not data:
                break
            if damage_at is not None and sent <= damage_at < sent + len(data):
                data = bytearray(data)
                data[damage_at - sent] ^= 0xFF
                data = bytes(data)
            if limit is not None and sent + len(data) >= limit:
                data = data[: limit - sent]
            if chunked:
                # An empty chunk would end the body, so a cut never sends one.
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.wfile.write(data)
            sent += len(data)
            if limit is not None and sent >= limit:
                # Closing with bytes still owed is what a cut connection
                # looks like to the client.
                self.wfile.flush()
                self.close_connection = True
                self.request.shutdown(socket.SHUT_RDWR)
                return sent
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        return sent

    def _read_body(self):
        """Return the request body, or None after answering an error."""
        if self.headers.get("Transfer-Encoding"):
            self._send_json(411, {"error": "chunked request bodies are not supported"})
            return None
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            length = int(length)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_REQUEST_BODY:
            self._send_json(400, {"error": f"invalid Content-Length {length}"})
            return None
        return self.rfile.read(length)

    def _send_json(self, status, document):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_oci_error(self, status, code, message):
        self._send_json(
            status, {"errors": [{"code": code, "message": message, "detail": None}]}
        )


class ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, tls_context, state):
        self.tls_context = tls_context
        self.state = state
        super().__init__(address, ProxyHandler)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="host:port to serve on")
    parser.add_argument("--cert", required=True, help="server certificate (PEM)")
    parser.add_argument("--key", required=True, help="server private key (PEM)")
    parser.add_argument("--upstream", required=True,
                        help="upstream registry as host:port, reached over TLS")
    parser.add_argument("--upstream-ca", required=True,
                        help="CA file that signed the upstream's certificate")
    parser.add_argument("--log", required=True, help="JSON lines request log")
    parser.add_argument("--rules", default="{}",
                        help="initial rules as a JSON object of digest to rule")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    upstream_host, upstream_port = args.upstream.rsplit(":", 1)

    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(args.cert, args.key)
    server_context.set_alpn_protocols(["http/1.1"])
    upstream_context = ssl.create_default_context(cafile=args.upstream_ca)
    upstream_context.set_alpn_protocols(["http/1.1"])

    state = ProxyState(upstream_host, int(upstream_port), upstream_context,
                       args.log)
    state.set_rules(json.loads(args.rules))
    server = ProxyServer((host, int(port)), server_context, state)
    print(f"fault proxy listening on {host}:{port}", flush=True)
    server.serve_forever()


class FaultProxy:
    """Runs the proxy program as a child process and sets its rules.

    `start()` and `stop()` manage the process by PID; `set_rules()` and
    `requests()` talk to it and read its log.
    """

    def __init__(self, workdir, cert, key, upstream_host, upstream_ca,
                 client_ca, name="fault-proxy"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cert = cert
        self.key = key
        self.upstream_host = upstream_host
        self.upstream_ca = upstream_ca
        self.client_ca = client_ca
        self.name = name
        self.log_path = self.workdir / "requests.jsonl"
        self.port = None
        self.process = None

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"https://{self.host}"

    def start(self, timeout=20):
        # Imported here so the program above runs without the package.
        from .net import LOOPBACK, free_port, wait_tls_ready
        from .procs import Process

        self.port = free_port()
        self.process = Process(
            self.name,
            [sys.executable, Path(__file__).resolve(),
             "--listen", f"{LOOPBACK}:{self.port}", "--cert", self.cert,
             "--key", self.key, "--upstream", self.upstream_host,
             "--upstream-ca", self.upstream_ca, "--log", self.log_path],
            self.workdir,
        ).start()
        wait_tls_ready(self.process, LOOPBACK, self.port, timeout)
        return self

    def stop(self):
        if self.process:
            self.process.stop()

    def set_rules(self, rules):
        """Replace the rules with `rules`, a dict of digest or "*" to rule."""
        body = json.dumps(rules).encode()
        context = ssl.create_default_context(cafile=str(self.client_ca))
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=context, timeout=10
        )
        try:
            connection.request("PUT", CONTROL_PATH, body=body,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"fault proxy rejected rules {rules}: {answer!r}")

    def requests(self):
        """Return the proxied requests as dicts, oldest first."""
        try:
            text = self.log_path.read_text()
        except FileNotFoundError:
            return []
        # A line without its newline may still be being written.
        lines = text.split("\n")[:-1]
        return [json.loads(line) for line in lines if line]

    def wait_requests(self, predicate, count=1, timeout=10):
        """Wait until `count` logged requests match `predicate`; return them.

        The proxy logs a request after its response ends, so a client can
        finish reading before the line is written.
        """
        from .procs import wait_for

        def matching():
            found = [r for r in self.requests() if predicate(r)]
            return found if len(found) >= count else None

        return wait_for(matching, timeout,
                        message=f"{count} matching requests in {self.log_path}")


if __name__ == "__main__":
    main()
