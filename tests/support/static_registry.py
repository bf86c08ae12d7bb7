"""An HTTPS registry that serves fixed manifests and blobs from memory.

Tests put documents into it with the exact bytes, Content-Type and
Docker-Content-Digest that a real upstream would send. It can also send
what a registry must not: a digest that does not match the bytes, or a type
that the request's Accept does not allow. It serves only the pull API:

- `GET /v2/`: 200.
- `GET` and `HEAD` of `/v2/<name>/manifests/<tag or digest>`. A tag maps to
  one or more documents. The first one whose media type the request's
  Accept allows is served, as registries pick schema 2 or OCI per Accept.
  When none is allowed, the tag's first document is served anyway, which
  is what a registry that ignores Accept does, unless the tag was added
  with `strict_accept`, in which case the response is 404 MANIFEST_UNKNOWN.
  A digest serves its document whatever the Accept.
- `GET` and `HEAD` of `/v2/<name>/blobs/<digest>`. A blob added with
  `stall_after` sends that many bytes of its body, then waits for
  `release_stalled()` before it sends the rest.
- 404 with an OCI error body for everything else, and 405 for methods
  other than GET and HEAD.

Every request that gets a response is logged with its method, path,
Accept header and status. The
server runs in the test's own process, on threads, over HTTP/1.1 only, and
binds an unused loopback port.
"""

import hashlib
import http.server
import json
import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from .net import LOOPBACK
from .procs import wait_for

MANIFEST_PATH = "/manifests/"
BLOB_PATH = "/blobs/"
BLOB_MEDIA_TYPE = "application/octet-stream"

# Seconds a stalled blob GET waits for `release_stalled()`. It bounds a
# hang if a test never releases it; it measures nothing.
STALL_TIMEOUT = 300


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Document:
    """One manifest as the upstream sends it.

    `content_type` None sends no Content-Type header. `digest` is what
    Docker-Content-Digest announces and the path it is served under; it
    defaults to the sha256 of `body`. `send_digest` False leaves the
    Docker-Content-Digest header out.
    """

    body: bytes
    content_type: str
    digest: str
    send_digest: bool = True


@dataclass(frozen=True)
class LoggedRequest:
    """One request the registry received."""

    method: str
    path: str
    accept: str
    status: int


def accept_allows(accept, media_type):
    """Return True when an Accept header value allows `media_type`.

    An empty Accept allows everything, as do `*/*` and `type/*`.
    Parameters such as `q` are ignored.
    """
    if not accept:
        return True
    media_type = (media_type or "").lower()
    major = media_type.split("/", 1)[0]
    for item in accept.split(","):
        item = item.split(";", 1)[0].strip().lower()
        if item in ("*/*", media_type) or item == f"{major}/*":
            return True
    return False


class _Content:
    """Manifests, tags and blobs, shared by the handler threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.manifests = {}  # (repository, digest) -> Document
        self.tags = {}  # (repository, tag) -> ([Document], strict_accept)
        self.blobs = {}  # (repository, digest) -> bytes
        self.stalls = {}  # (repository, digest) -> bytes sent before waiting
        # Set when a stalled GET has sent its first part.
        self.stalled = threading.Event()
        # Set by `release_stalled()` and `stop()`, which lets stalled GETs
        # send the rest of their body.
        self.released = threading.Event()
        self.log = []

    def find_manifest(self, repository, reference, accept):
        with self.lock:
            if ":" in reference:
                return self.manifests.get((repository, reference))
            documents, strict = self.tags.get((repository, reference),
                                              ([], False))
        for document in documents:
            if accept_allows(accept, document.content_type):
                return document
        if documents and not strict:
            return documents[0]
        return None

    def find_blob(self, repository, digest):
        """Return the blob's bytes and its stall point, or (None, None)."""
        with self.lock:
            return (self.blobs.get((repository, digest)),
                    self.stalls.get((repository, digest)))

    def record(self, entry):
        with self.lock:
            self.log.append(entry)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "static-registry"
    # Seconds an idle keep-alive connection stays open.
    timeout = 60

    def setup(self):
        # The handshake runs on the connection's own thread, so a slow
        # client cannot stall the accept loop.
        self.request = self.server.tls_context.wrap_socket(
            self.request, server_side=True)
        self.server.track(self.request)
        super().setup()

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.untrack(self.request)

    def handle(self):
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, socket.timeout, OSError):
            # The peer closed the connection, or `stop()` shut it down.
            pass

    def log_message(self, format, *args):
        # Requests go to the in-memory log instead of stderr.
        pass

    def do_GET(self):
        self._serve()

    def do_HEAD(self):
        self._serve()

    def do_PUT(self):
        self._reject_method()

    def do_POST(self):
        self._reject_method()

    def do_PATCH(self):
        self._reject_method()

    def do_DELETE(self):
        self._reject_method()

    def _reject_method(self):
        self._send_error(405, "UNSUPPORTED", "this registry is read-only")

    def _serve(self):
        if not self.server.serving:
            # A stopped registry sends no response, even on a connection
            # that was kept alive.
            self.close_connection = True
            return
        path = urlsplit(self.path).path
        if path in ("/v2/", "/v2"):
            self._send(200, b"{}", {"Content-Type": "application/json"})
            return
        if path.startswith("/v2/") and MANIFEST_PATH in path:
            name, _, reference = path[4:].rpartition(MANIFEST_PATH)
            self._serve_manifest(name, reference)
            return
        if path.startswith("/v2/") and BLOB_PATH in path:
            name, _, digest = path[4:].rpartition(BLOB_PATH)
            self._serve_blob(name, digest)
            return
        self._send_error(404, "NAME_UNKNOWN", f"no route for {path}")

    def _serve_manifest(self, repository, reference):
        accept = ", ".join(self.headers.get_all("Accept") or [])
        document = self.server.content.find_manifest(repository, reference,
                                                     accept)
        if document is None:
            self._send_error(404, "MANIFEST_UNKNOWN",
                             f"manifest {repository}:{reference} not found")
            return
        headers = {}
        if document.content_type is not None:
            headers["Content-Type"] = document.content_type
        if document.send_digest:
            headers["Docker-Content-Digest"] = document.digest
        self._send(200, document.body, headers)

    def _serve_blob(self, repository, digest):
        data, stall_after = self.server.content.find_blob(repository, digest)
        if data is None:
            self._send_error(404, "BLOB_UNKNOWN",
                             f"blob {repository}@{digest} not found")
            return
        self._send(200, data, {"Content-Type": BLOB_MEDIA_TYPE,
                               "Docker-Content-Digest": digest},
                   stall_after=stall_after)

    def _send_error(self, status, code, message):
        body = json.dumps({"errors": [{"code": code, "message": message,
                                       "detail": None}]}).encode()
        self._send(status, body, {"Content-Type": "application/json"})

    def _send(self, status, body, headers, stall_after=None):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        self.end_headers()
        if self.command != "HEAD" and stall_after is not None:
            content = self.server.content
            self.wfile.write(body[:stall_after])
            self.wfile.flush()
            content.stalled.set()
            content.released.wait(timeout=STALL_TIMEOUT)
            body = body[stall_after:]
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.content.record(LoggedRequest(
            method=self.command, path=self.path,
            accept=", ".join(self.headers.get_all("Accept") or []),
            status=status))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, tls_context, content):
        self.tls_context = tls_context
        self.content = content
        self.serving = True
        self._connections = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection):
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection):
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self):
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class StaticRegistry:
    """Serves manifests and blobs added with `add_*` on HTTPS.

    `start()` binds a loopback port, `stop()` closes the port and every open
    connection, and `start()` again reopens the same port with the same
    content, so a client configured with the old address reaches it.
    """

    def __init__(self, cert, key):
        self.cert = cert
        self.key = key
        self.port = None
        self._content = _Content()
        self._server = None
        self._thread = None

    @property
    def host(self):
        """The registry as an upstream name: "127.0.0.1:port"."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self):
        return f"https://{self.host}"

    def add_manifest(self, repository, body, content_type, tags=(),
                     digest=None, send_digest=True, strict_accept=False):
        """Serve `body` under its digest and append it to each of `tags`.

        `digest` overrides the announced digest, which makes a registry
        whose bytes do not match what it names. With `strict_accept`, a
        request for one of `tags` whose Accept allows none of the tag's
        documents gets 404 instead of the first document. Returns the
        Document.
        """
        document = Document(body=bytes(body), content_type=content_type,
                            digest=digest or sha256_digest(body),
                            send_digest=send_digest)
        with self._content.lock:
            self._content.manifests[(repository, document.digest)] = document
            for tag in tags:
                documents, _ = self._content.tags.get((repository, tag),
                                                      ([], False))
                self._content.tags[(repository, tag)] = (
                    documents + [document], strict_accept)
        return document

    def retag(self, repository, tag, body, content_type):
        """Point `tag` at `body` alone, sent with `content_type`."""
        with self._content.lock:
            self._content.tags.pop((repository, tag), None)
        return self.add_manifest(repository, body, content_type, tags=[tag])

    def add_blob(self, repository, data, stall_after=None):
        """Serve `data` as a blob of `repository`; return its digest.

        With `stall_after`, a GET sends that many bytes of the body and
        then waits for `release_stalled()`.
        """
        digest = sha256_digest(data)
        with self._content.lock:
            self._content.blobs[(repository, digest)] = bytes(data)
            if stall_after is not None:
                self._content.stalls[(repository, digest)] = stall_after
        return digest

    def wait_stalled(self, timeout=30):
        """Wait until a stalled blob GET has sent its first part."""
        if not self._content.stalled.wait(timeout):
            raise TimeoutError(f"no stalled blob GET on {self.host} within "
                               f"{timeout} s")

    def release_stalled(self):
        """Let every stalled blob GET, and any later one, send its rest."""
        self._content.released.set()

    def start(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(self.key))
        context.set_alpn_protocols(["http/1.1"])
        self._server = _Server((LOOPBACK, self.port or 0), context,
                               self._content)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="static-registry",
            daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Close the listening socket and every open connection."""
        if self._server is None:
            return
        self.release_stalled()
        self._server.serving = False
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def requests(self):
        """Return every request that got a response, oldest first."""
        with self._content.lock:
            return list(self._content.log)

    def wait_requests(self, predicate, count=1, start=0, timeout=10):
        """Wait for `count` requests after the first `start` to match.

        The log entry is written after the response, so a client can have
        its response before the entry exists.
        """

        def matching():
            found = [r for r in self.requests()[start:] if predicate(r)]
            return found if len(found) >= count else None

        return wait_for(matching, timeout,
                        message=f"{count} matching requests to {self.host}")
