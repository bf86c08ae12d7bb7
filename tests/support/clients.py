"""HTTP/1.1 requests with http.client and HTTP/2 requests with `nghttp`."""

import http.client
import ipaddress
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .net import client_context, tls_ready

NGHTTP_BIN = "/usr/bin/nghttp"

# Seconds for one request, including the body of the largest test blob.
REQUEST_TIMEOUT = 120

CHUNK_BYTES = 256 * 1024


@dataclass
class Reply:
    """A complete response: status, headers with lower-case names, body."""

    status: int
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    protocol: str = ""

    def header(self, name):
        return self.headers.get(name.lower())

    def error_codes(self):
        """Return the `code` of each entry of an OCI error body."""
        try:
            document = json.loads(self.body)
            return [e.get("code") for e in document.get("errors", [])]
        except (ValueError, AttributeError):
            return []


class IncompleteResponse(Exception):
    """The server ended the response before its body was complete."""


def h1_request(host, port, method, target, cafile, headers=None, body=None,
               timeout=REQUEST_TIMEOUT, body_sink=None):
    """Send one HTTP/1.1 request over TLS and return the Reply.

    `target` is sent byte for byte, so tests can send paths that a URL
    library would normalise, such as "/v2/../". With `body_sink`, each
    piece of the response body is passed to it instead of kept in the
    Reply. Raises IncompleteResponse when the connection closes before the
    body ends.
    """
    connection = http.client.HTTPSConnection(
        host, port, context=client_context(cafile), timeout=timeout
    )
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        body_bytes = bytearray()
        sink = body_sink or body_bytes.extend
        try:
            while True:
                data = response.read(CHUNK_BYTES)
                if not data:
                    break
                sink(data)
        except http.client.IncompleteRead as e:
            raise IncompleteResponse(
                f"{method} {target}: chunked body ended early"
            ) from e
        # `read(amt)` returns b"" at an early end of a body with
        # Content-Length instead of raising, and leaves the missing byte
        # count in `length`.
        if response.length:
            raise IncompleteResponse(
                f"{method} {target}: body ended {response.length} bytes short"
            )
        return Reply(
            status=response.status,
            headers=_merge_headers(response.getheaders()),
            body=bytes(body_bytes),
            protocol="http/1.1",
        )
    finally:
        connection.close()


def h2_request(url, cafile, method="GET", headers=None,
               timeout=REQUEST_TIMEOUT, body_sink=None):
    """Send one HTTP/2 request with `nghttp` and return the Reply.

    nghttp checks the certificate against the OpenSSL default store, which
    SSL_CERT_FILE points at `cafile`. It only warns on failure, so the
    warning becomes an error here. `body_sink` works as for
    `h1_request`. Raises IncompleteResponse when the stream ends without a
    complete response (a reset stream or a closed connection).
    """
    with tempfile.TemporaryDirectory(prefix="nghttp-") as scratch:
        har = Path(scratch) / "response.har"
        argv = [NGHTTP_BIN, f"--har={har}", f"--timeout={timeout}",
                "--window-bits=24", "--connection-window-bits=24"]
        if method != "GET":
            argv += ["-H", f":method: {method}"]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        argv.append(url)
        env = dict(os.environ, SSL_CERT_FILE=str(cafile))
        body = bytearray()
        sink = body_sink or body.extend
        with open(Path(scratch) / "stderr", "w+") as stderr:
            with subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=stderr,
                                  env=env) as process:
                while True:
                    data = process.stdout.read(CHUNK_BYTES)
                    if not data:
                        break
                    sink(data)
                returncode = process.wait(timeout=timeout + 10)
            stderr.seek(0)
            messages = stderr.read()
        _check_nghttp_verification(url, cafile, messages)
        entries = []
        if har.exists() and har.stat().st_size:
            entries = json.loads(har.read_text())["log"]["entries"]
        if returncode != 0 or not entries:
            raise IncompleteResponse(
                f"nghttp {method} {url} failed with exit code {returncode}: "
                f"{messages.strip()}"
            )
        response = entries[0]["response"]
        return Reply(
            status=int(response["status"]),
            headers=_merge_headers(
                (h["name"], h["value"])
                for h in response["headers"]
                if not h["name"].startswith(":")
            ),
            body=bytes(body),
            protocol="h2",
        )


def _check_nghttp_verification(url, cafile, messages):
    """Raise unless nghttp's output shows a certificate that `cafile` signed.

    nghttp 1.52 (Debian 12) warns "hostname mismatch" for a URL with an IP
    literal even when that IP is in the certificate's subjectAltName, so for
    IP literals that one warning is replaced by Python's check, which
    matches IP subjectAltNames.
    """
    warning = "Certificate verification failed"
    if warning not in messages:
        return
    host, _, port = urlsplit(url).netloc.rpartition(":")
    host = host.strip("[]")
    only_hostname = all(
        "hostname mismatch" in line
        for line in messages.splitlines() if warning in line
    )
    if only_hostname and _is_ip_literal(host) and tls_ready(
        host, int(port), cafile=cafile
    ):
        return
    raise RuntimeError(f"nghttp did not trust {url}: {messages}")


def _is_ip_literal(host):
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _merge_headers(pairs):
    merged = {}
    for name, value in pairs:
        name = name.lower()
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


def request(protocol, server, target, cafile, method="GET", headers=None,
            body_sink=None):
    """Send a request over "http/1.1" or "h2" to server ("host:port")."""
    host, port = server.rsplit(":", 1)
    if protocol == "h2":
        return h2_request(f"https://{server}{target}", cafile, method=method,
                          headers=headers, body_sink=body_sink)
    return h1_request(host, int(port), method, target, cafile, headers=headers,
                      body_sink=body_sink)
