"""An emulator of Docker Hub's anonymous pull path, for tests on loopback.

`HubEmulator` runs three HTTPS listeners (HTTP/1.1, ALPN "http/1.1") on
threads in the test's own process, in front of a docker-registry that
stores the content:

- registry (as registry-1.docker.io): `/v2/`, manifests, blobs and tag
  lists, each behind a Bearer token from the auth listener. Manifest GET
  and HEAD are proxied to the docker-registry byte for byte, with the pull
  rate-limit headers. Only an admitted manifest GET spends the pull budget
  of the client address. Blob GET and HEAD return 307 with a signed,
  expiring URL on the CDN listener.
- auth (as auth.docker.io): `GET /token?service=...&scope=...` issues
  random anonymous tokens that grant `pull` on the requested repositories.
- cdn: serves blobs for a valid signed URL, with Range, optionally at a
  limited rate. It never needs a token and rejects any `Authorization`.

The behaviour follows Docker's public documentation: the Docker Hub pull
usage page (docs.docker.com/docker-hub/usage/pulls/) for the rate-limit
headers and the 429, and the registry token authentication page
(docs.docker.com/reference/api/registry/auth/) for the challenge and the
token response. Test knobs go beyond it: a short token lifetime, a fixed
window, other header forms, latency, and 5xx or stalled responses.

Every listener binds an unused port on 127.0.0.1, and the only outgoing
connections go to the docker-registry given to the constructor.
"""

import hashlib
import hmac
import http.client
import http.server
import json
import logging
import math
import re
import secrets
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from .net import LOOPBACK
from .procs import wait_for

logger = logging.getLogger(__name__)

SERVICE = "registry.docker.io"

# The 429 body. Docker's pull usage page documents the message with the
# link ".../increase-rate-limits", but the registry sends ".../increase-
# rate-limit", as client logs of real 429s show, and a client sees what
# the registry sends.
TOO_MANY_REQUESTS_BODY = json.dumps(
    {
        "errors": [
            {
                "code": "TOOMANYREQUESTS",
                "message": "You have reached your pull rate limit. You may "
                "increase the limit by authenticating and upgrading: "
                "https://www.docker.com/increase-rate-limit",
            }
        ]
    },
    separators=(",", ":"),
).encode()

# Docker Hub's anonymous limit on its pull usage page: 100 pulls per 6 hours
# per IPv4 address.
DEFAULT_LIMIT = 100
DEFAULT_WINDOW_SECONDS = 21600

# Lifetime that auth.docker.io gives anonymous tokens. The token
# specification requires at least 60 s, but tests set a few seconds to see
# a token expire in the middle of a pull.
DEFAULT_TOKEN_LIFETIME = 300

# Seconds a signed CDN URL stays valid. Docker does not document the
# lifetime of its CDN URLs, so this is a test default, not a measured one.
DEFAULT_URL_LIFETIME = 600

# Seconds a "timeout" fault keeps a request waiting before it closes the
# connection without a response, unless `stop()` comes first.
DEFAULT_STALL_SECONDS = 60

# "docker": `RateLimit-Limit: 100;w=21600` and `RateLimit-Remaining`, as
# Docker Hub sends them. "ietf": `RateLimit-Policy` and `RateLimit` as
# draft-ietf-httpapi-ratelimit-headers-10 defines them. "none": no
# rate-limit headers, with the limit still enforced.
HEADER_FORMS = ("docker", "ietf", "none")
WINDOW_KINDS = ("rolling", "fixed")

# The policy name in the "ietf" header form.
IETF_POLICY = "pulls"

# Seconds to wait for the docker-registry, including a whole blob body.
BACKEND_TIMEOUT = 60

CHUNK_BYTES = 64 * 1024

# Repository name grammar of the OCI distribution specification.
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = rf"{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*"
MANIFEST_PATH = re.compile(rf"^/v2/(?P<name>{_NAME})/manifests/(?P<ref>[^/]+)$")
BLOB_PATH = re.compile(rf"^/v2/(?P<name>{_NAME})/blobs/(?P<digest>[^/]+)$")
TAGS_PATH = re.compile(rf"^/v2/(?P<name>{_NAME})/tags/list$")
DIGEST = re.compile(r"^(?P<algorithm>sha256|sha512):(?P<hex>[a-f0-9]+)$")
DIGEST_HEX_LENGTH = {"sha256": 64, "sha512": 128}

# Blob URLs on the CDN have the layout of Docker's storage paths.
CDN_PREFIX = "/registry-v2/docker/registry/v2/blobs"
CDN_PATH = re.compile(
    rf"^{CDN_PREFIX}/(?P<algorithm>sha256|sha512)/(?P<prefix>[a-f0-9]{{2}})"
    r"/(?P<hex>[a-f0-9]+)/data$"
)

# Response headers of the docker-registry that the CDN passes on. The
# CDN, like a real one, sends no Docker-Content-Digest.
CDN_RELAYED_HEADERS = (
    "Content-Type",
    "Content-Range",
    "Accept-Ranges",
    "ETag",
    "Last-Modified",
)
MANIFEST_RELAYED_HEADERS = ("Content-Type", "Docker-Content-Digest", "ETag")


@dataclass(frozen=True)
class HubRequest:
    """One request that a listener finished.

    `listener` is "registry", "auth" or "cdn". `status` is 0 for a request
    that a "timeout" fault ended without a response. `sent` counts body
    bytes written.
    """

    listener: str
    method: str
    path: str
    client: str
    status: int
    authorization: bool
    range: str
    sent: int
    time: float


@dataclass
class HubStats:
    """The emulator's counters; `HubEmulator.stats()` returns a copy.

    `manifest_gets_by_client` and `manifest_gets_by_reference` count the
    manifest GETs admitted against the pull budget, so a GET rejected with
    429 is in `too_many_requests` only.
    """

    manifest_gets_by_client: dict = field(default_factory=dict)
    manifest_gets_by_reference: dict = field(default_factory=dict)
    manifest_heads: int = 0
    too_many_requests: int = 0
    unauthorized: int = 0
    token_requests: int = 0
    token_credentials_rejected: int = 0
    blob_redirects: int = 0
    cdn_requests: int = 0
    cdn_bytes: int = 0
    cdn_authorization_violations: int = 0
    cdn_signature_rejections: int = 0
    faults: int = 0

    @property
    def manifest_gets(self):
        """Return the admitted manifest GETs of every client."""
        return sum(self.manifest_gets_by_client.values())


@dataclass(frozen=True)
class Quota:
    """The pull budget of one client address at one moment.

    `reset_seconds` is the time until one more pull is available, or 0
    when nothing of the budget is spent.
    """

    client: str
    limit: int
    remaining: int
    window_seconds: int
    reset_seconds: float


@dataclass
class _Grant:
    repositories: dict  # repository -> set of actions
    expires_at: float  # time.monotonic() deadline


@dataclass
class _Fault:
    kind: object  # an int 5xx status, or "timeout"
    remaining: object  # requests left to fail, or None for no end


class _PullBudget:
    """Manifest GETs per client address in a rolling or fixed window.

    A rolling window counts the GETs of the last `window_seconds`, as Docker
    Hub does. A fixed window counts GETs since the start of the current
    period, and periods start every `window_seconds` after the emulator
    starts or after `reset()`. The caller takes the state lock.

    NOTE: Docker Hub counts IPv6 clients per /64 subnet. The emulator
    listens on IPv4 loopback only and counts each address on its own.
    """

    def __init__(self, limit, window_seconds, kind, now):
        self.limit = limit
        self.window_seconds = window_seconds
        self.kind = kind
        self._epoch = now
        self._rolling = {}  # client -> deque of GET times
        self._fixed = {}  # client -> (period index, GETs in that period)

    def reset(self, now):
        self._epoch = now
        self._rolling.clear()
        self._fixed.clear()

    def quota(self, client, now):
        used, reset_seconds = self._usage(client, now)
        return Quota(
            client=client,
            limit=self.limit,
            remaining=max(0, self.limit - used),
            window_seconds=self.window_seconds,
            reset_seconds=reset_seconds,
        )

    def take(self, client, now):
        """Spend one pull; return (admitted, Quota after the request)."""
        used, _ = self._usage(client, now)
        if used >= self.limit:
            return False, self.quota(client, now)
        if self.kind == "rolling":
            self._rolling.setdefault(client, deque()).append(now)
        else:
            period = self._period(now)
            self._fixed[client] = (period, used + 1)
        return True, self.quota(client, now)

    def set_remaining(self, client, remaining, now):
        used = self.limit - remaining
        if self.kind == "rolling":
            # Spent pulls at `now` leave the window `window_seconds` later.
            self._rolling[client] = deque([now] * used)
        else:
            self._fixed[client] = (self._period(now), used)

    def _period(self, now):
        return int((now - self._epoch) // self.window_seconds)

    def _usage(self, client, now):
        """Return (pulls spent in the window, seconds until one frees)."""
        if self.kind == "rolling":
            times = self._rolling.get(client)
            if not times:
                return 0, 0.0
            while times and times[0] <= now - self.window_seconds:
                times.popleft()
            if not times:
                return 0, 0.0
            return len(times), times[0] + self.window_seconds - now
        period, used = self._fixed.get(client, (None, 0))
        if period != self._period(now) or used == 0:
            return 0, 0.0
        period_end = self._epoch + (period + 1) * self.window_seconds
        return used, period_end - now


class _HubState:
    """Configuration, budget, tokens, faults and counters of one emulator.

    Handler threads of all three listeners share it, so every access
    takes `lock`.
    """

    def __init__(self, options):
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.service = options["service"]
        self.header_form = options["header_form"]
        self.token_lifetime = options["token_lifetime"]
        self.url_lifetime = options["url_lifetime"]
        self.manifest_delay = options["manifest_delay"]
        self.cdn_rate = options["cdn_rate"]
        self.stall_seconds = options["stall_seconds"]
        self.budget = _PullBudget(
            options["limit"],
            options["window_seconds"],
            options["window"],
            time.monotonic(),
        )
        self.signing_key = secrets.token_bytes(32)
        self.tokens = {}  # token -> _Grant
        self.faults = {}  # repository -> _Fault
        self.log = []
        self.counters = HubStats()
        # Filled in by HubEmulator.start().
        self.realm = ""
        self.cdn_base = ""
        self.backend_host = ""
        self.backend_port = 0
        self.backend_context = None

    def bump(self, name, amount=1):
        with self.lock:
            self._bump(name, amount)

    def _bump(self, name, amount=1):
        setattr(self.counters, name, getattr(self.counters, name) + amount)

    def record(self, entry):
        with self.lock:
            self.log.append(entry)

    def issue_token(self, repositories):
        token = secrets.token_urlsafe(32)
        with self.lock:
            lifetime = self.token_lifetime
            self.tokens[token] = _Grant(
                repositories=repositories,
                expires_at=time.monotonic() + lifetime,
            )
        return token, lifetime

    def check_token(self, authorization, repository):
        """Return "ok", "missing", "invalid_token" or "insufficient_scope".

        `repository` None requires only a valid token, as `/v2/` does.
        """
        if not authorization:
            return "missing"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "invalid_token"
        with self.lock:
            grant = self.tokens.get(token.strip())
        if grant is None or grant.expires_at <= time.monotonic():
            return "invalid_token"
        if repository is None:
            return "ok"
        if "pull" not in grant.repositories.get(repository, ()):
            return "insufficient_scope"
        return "ok"

    def take_fault(self, repository):
        """Return the fault to apply to a request for `repository`, or None."""
        with self.lock:
            fault = self.faults.get(repository)
            if fault is None:
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self.faults[repository]
            self._bump("faults")
            return fault.kind

    def take_pull(self, client, repository, reference):
        """Spend a pull for an authorized manifest GET, before it is served.

        NOTE: Docker does not document whether a GET that ends in 404
        counts. Here every admitted GET counts, whatever its status.
        """
        with self.lock:
            admitted, quota = self.budget.take(client, time.monotonic())
            stats = self.counters
            if admitted:
                by_client = stats.manifest_gets_by_client
                by_client[client] = by_client.get(client, 0) + 1
                by_reference = stats.manifest_gets_by_reference
                key = (repository, reference)
                by_reference[key] = by_reference.get(key, 0) + 1
            else:
                self._bump("too_many_requests")
            return admitted, quota, self.header_form, self.manifest_delay

    def peek_quota(self, client):
        with self.lock:
            return self.budget.quota(client, time.monotonic()), self.header_form

    def snapshot(self):
        with self.lock:
            stats = self.counters
            return replace(
                stats,
                manifest_gets_by_client=dict(stats.manifest_gets_by_client),
                manifest_gets_by_reference=dict(stats.manifest_gets_by_reference),
            )

    def sign(self, path, repository, expires):
        message = f"{path}\n{repository}\n{expires}".encode()
        return hmac.new(self.signing_key, message, hashlib.sha256).hexdigest()

    def backend_connection(self):
        return http.client.HTTPSConnection(
            self.backend_host,
            self.backend_port,
            context=self.backend_context,
            timeout=BACKEND_TIMEOUT,
        )


def whole_seconds(seconds):
    """Round `seconds` up to whole seconds for a header.

    Rounding to milliseconds first drops float noise, so that a window of
    exactly 60 s computed as `start + 60 - now` stays 60 and not 61.
    """
    return math.ceil(round(seconds, 3))


def quota_headers(form, quota):
    """Return the rate-limit headers of `quota` in header form `form`."""
    if form == "none":
        return {}
    headers = {}
    if form == "docker":
        window = quota.window_seconds
        headers["RateLimit-Limit"] = f"{quota.limit};w={window}"
        headers["RateLimit-Remaining"] = f"{quota.remaining};w={window}"
    else:
        reset = whole_seconds(quota.reset_seconds)
        headers["RateLimit-Policy"] = (
            f'"{IETF_POLICY}";q={quota.limit};w={quota.window_seconds}'
        )
        headers["RateLimit"] = f'"{IETF_POLICY}";r={quota.remaining};t={reset}'
    headers["Docker-RateLimit-Source"] = quota.client
    return headers


def _error_body(code, message, detail=None):
    document = {"errors": [{"code": code, "message": message, "detail": detail}]}
    return json.dumps(document).encode()


def _merged_header(headers, name):
    return ", ".join(headers.get_all(name) or [])


class _Handler(http.server.BaseHTTPRequestHandler):
    """TLS setup, connection tracking and response helpers."""

    protocol_version = "HTTP/1.1"
    # Seconds an idle keep-alive connection stays open.
    timeout = 60
    listener = ""

    def setup(self):
        # The handshake runs on the connection's own thread, so a slow
        # client cannot stall the accept loop.
        self.request = self.server.tls_context.wrap_socket(
            self.request, server_side=True
        )
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

    @property
    def state(self):
        return self.server.state

    @property
    def client(self):
        return self.client_address[0]

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_PUT(self):
        self._reject_method()

    def do_POST(self):
        self._reject_method()

    def do_PATCH(self):
        self._reject_method()

    def do_DELETE(self):
        self._reject_method()

    def _dispatch(self):
        if self.state.stopping.is_set():
            self.close_connection = True
            return
        self.route(urlsplit(self.path))

    def route(self, target):
        raise NotImplementedError

    def _reject_method(self):
        # The request body is never read, so the connection cannot be
        # reused.
        self.close_connection = True
        self.send_oci_error(
            405, "UNSUPPORTED", f"{self.command} is not supported here"
        )

    def send_oci_error(self, status, code, message, detail=None, headers=None):
        """Send an OCI error body with one error."""
        self.send_body(
            status,
            _error_body(code, message, detail),
            {"Content-Type": "application/json", **(headers or {})},
        )

    def send_body(self, status, body, headers, length=None):
        """Send a complete response; `length` overrides Content-Length."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        sent = 0
        if self.command != "HEAD" and body:
            self.wfile.write(body)
            sent = len(body)
        self.record(status, sent)

    def record(self, status, sent):
        self.state.record(
            HubRequest(
                listener=self.listener,
                method=self.command,
                path=self.path,
                client=self.client,
                status=status,
                authorization=self.headers.get("Authorization") is not None,
                range=self.headers.get("Range", ""),
                sent=sent,
                time=time.time(),
            )
        )


class _RegistryHandler(_Handler):
    server_version = "hub-emulator-registry"
    listener = "registry"

    def send_body(self, status, body, headers, length=None):
        headers = {"Docker-Distribution-Api-Version": "registry/2.0", **headers}
        super().send_body(status, body, headers, length)

    def route(self, target):
        path = target.path
        if path in ("/v2", "/v2/"):
            self._serve_base()
            return
        for pattern, serve in (
            (MANIFEST_PATH, self._serve_manifest),
            (BLOB_PATH, self._serve_blob),
            (TAGS_PATH, self._serve_tags),
        ):
            match = pattern.match(path)
            if match:
                serve(*match.groups())
                return
        self.send_oci_error(404, "NAME_UNKNOWN", f"no registry route for {path}")

    def _serve_base(self):
        verdict = self.state.check_token(self.headers.get("Authorization"), None)
        if verdict != "ok":
            self._challenge(None, verdict)
            return
        self.send_body(200, b"{}", {"Content-Type": "application/json"})

    def _authorize(self, repository):
        """Return True, or send the 401 challenge and return False."""
        authorization = self.headers.get("Authorization")
        verdict = self.state.check_token(authorization, repository)
        if verdict == "ok":
            return True
        self._challenge(repository, verdict)
        return False

    def _challenge(self, repository, verdict):
        state = self.state
        challenge = f'Bearer realm="{state.realm}",service="{state.service}"'
        detail = None
        if repository is not None:
            challenge += f',scope="repository:{repository}:pull"'
            detail = [
                {"Type": "repository", "Class": "", "Name": repository,
                 "Action": "pull"}
            ]
        if verdict != "missing":
            challenge += f',error="{verdict}"'
        state.bump("unauthorized")
        self.send_oci_error(
            401,
            "UNAUTHORIZED",
            "authentication required",
            detail,
            {"WWW-Authenticate": challenge},
        )

    def _apply_fault(self, repository):
        """Return True when an injected fault has ended the request."""
        fault = self.state.take_fault(repository)
        if fault is None:
            return False
        if fault == "timeout":
            self.state.stopping.wait(self.state.stall_seconds)
            self.close_connection = True
            self.record(0, 0)
            return True
        self.send_oci_error(fault, "UNAVAILABLE", f"fault injected for {repository}")
        return True

    def _serve_manifest(self, repository, reference):
        if not self._authorize(repository) or self._apply_fault(repository):
            return
        state = self.state
        if self.command == "GET":
            admitted, quota, form, delay = state.take_pull(
                self.client, repository, reference
            )
            if not admitted:
                headers = quota_headers(form, quota)
                retry_after = max(1, whole_seconds(quota.reset_seconds))
                headers["Retry-After"] = str(retry_after)
                headers["Content-Type"] = "application/json"
                self.send_body(429, TOO_MANY_REQUESTS_BODY, headers)
                return
            if delay:
                state.stopping.wait(delay)
        else:
            state.bump("manifest_heads")
        target = f"/v2/{repository}/manifests/{reference}"
        backend = self._backend_request(target, forwarded=("Accept",))
        if backend is None:
            return
        status, headers, length, body = backend
        if self.command == "HEAD":
            # A HEAD reports the budget without spending it.
            quota, form = state.peek_quota(self.client)
        headers.update(quota_headers(form, quota))
        self.send_body(status, body, headers, length)

    def _serve_tags(self, repository):
        if not self._authorize(repository) or self._apply_fault(repository):
            return
        backend = self._backend_request(self.path)
        if backend is not None:
            status, headers, length, body = backend
            self.send_body(status, body, headers, length)

    def _serve_blob(self, repository, digest):
        """Redirect GET and HEAD of a stored blob to a signed CDN URL.

        NOTE: Docker does not document whether a blob HEAD is redirected
        too. Here it is, as a registry with a redirecting storage driver
        does.
        """
        if not self._authorize(repository) or self._apply_fault(repository):
            return
        match = DIGEST.match(digest)
        if not match or len(match["hex"]) != DIGEST_HEX_LENGTH[match["algorithm"]]:
            self.send_oci_error(400, "DIGEST_INVALID", f"invalid digest {digest!r}")
            return

        # The registry checks that the repository contains the blob before
        # it sends a client to the CDN.
        target = f"/v2/{repository}/blobs/{digest}"
        backend = self._backend_request(target, method="HEAD")
        if backend is None:
            return
        status = backend[0]
        if status == 404:
            self.send_oci_error(
                404, "BLOB_UNKNOWN", f"blob {digest} not found in {repository}"
            )
            return
        if status != 200:
            logger.warning("docker-registry returned %s for HEAD %s", status, target)
            self.send_oci_error(
                502, "UNAVAILABLE", f"storage returned {status} for {digest}"
            )
            return

        location = self._signed_url(repository, match["algorithm"], match["hex"])
        body = f'<a href="{location}">Temporary Redirect</a>.\n'.encode()
        self.state.bump("blob_redirects")
        headers = {"Location": location, "Content-Type": "text/html; charset=utf-8"}
        self.send_body(307, body, headers)

    def _signed_url(self, repository, algorithm, hex_digest):
        state = self.state
        path = f"{CDN_PREFIX}/{algorithm}/{hex_digest[:2]}/{hex_digest}/data"
        expires = int(time.time() + state.url_lifetime)
        signature = state.sign(path, repository, expires)
        query = (
            f"repository={quote(repository, safe='')}&expires={expires}"
            f"&signature={signature}"
        )
        return f"{state.cdn_base}{path}?{query}"

    def _backend_request(self, target, forwarded=(), method=None):
        """Send the request to the docker-registry and read the response.

        `forwarded` names the request headers to copy, with repeated
        headers merged. Returns (status, headers to relay, Content-Length,
        body), or None after sending 503 because the docker-registry
        failed.
        """
        headers = {}
        for name in forwarded:
            value = _merged_header(self.headers, name)
            if value:
                headers[name] = value
        connection = self.state.backend_connection()
        try:
            connection.request(method or self.command, target, headers=headers)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            logger.warning("docker-registry request %s %s failed: %s",
                           method or self.command, target, e)
            self.send_oci_error(503, "UNAVAILABLE", f"storage request failed: {e}")
            return None
        finally:
            connection.close()
        relayed = {
            name: response.getheader(name)
            for name in MANIFEST_RELAYED_HEADERS
            if response.getheader(name) is not None
        }
        length = response.getheader("Content-Length")
        length = int(length) if length is not None else len(body)
        return response.status, relayed, length, body


class _AuthHandler(_Handler):
    server_version = "hub-emulator-auth"
    listener = "auth"

    def route(self, target):
        if target.path != "/token":
            self._send_json(404, {"details": f"no route for {target.path}"})
            return
        if self.command != "GET":
            self._send_json(405, {"details": "use GET"})
            return
        state = self.state
        state.bump("token_requests")
        if self.headers.get("Authorization") is not None:
            # Only anonymous pulls are emulated, so no credential is valid.
            state.bump("token_credentials_rejected")
            self._send_json(401, {"details": "incorrect username or password"})
            return

        query = parse_qs(target.query, keep_blank_values=True)
        service = query.get("service", [""])[0]
        if service != state.service:
            details = f"invalid service {service!r}: expected {state.service!r}"
            self._send_json(400, {"details": details})
            return
        repositories = self._granted_repositories(query.get("scope", []))
        if repositories is None:
            return

        token, lifetime = state.issue_token(repositories)
        issued_at = (
            datetime.now(timezone.utc)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z")
        )
        document = {
            "token": token,
            "access_token": token,
            "expires_in": lifetime,
            "issued_at": issued_at,
        }
        self._send_json(200, document)

    def _granted_repositories(self, scope_values):
        """Return repository -> granted actions, or None after a 400.

        Clients send one `scope` parameter per scope, and some join several
        scopes with spaces in one parameter, so both forms are accepted.
        """
        repositories = {}
        for value in scope_values:
            for scope in value.split():
                granted = self._parse_scope(scope)
                if granted is None:
                    self._send_json(400, {"details": f"invalid scope {scope!r}"})
                    return None
                repository, actions = granted
                repositories.setdefault(repository, set()).update(actions)
        return repositories

    @staticmethod
    def _parse_scope(scope):
        """Return (repository, granted actions) or None when malformed.

        An anonymous client gets `pull` of any repository it requests and
        nothing else, since every repository in the emulator is public.
        """
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind != "repository" or not re.fullmatch(_NAME, name) or not actions:
            return None
        return name, {"pull"} & set(actions.split(","))

    def _send_json(self, status, document):
        self.send_body(
            status, json.dumps(document).encode(), {"Content-Type": "application/json"}
        )


class _CdnHandler(_Handler):
    server_version = "hub-emulator-cdn"
    listener = "cdn"

    def route(self, target):
        state = self.state
        state.bump("cdn_requests")
        if self.headers.get("Authorization") is not None:
            # A registry token must never leave the registry's host.
            state.bump("cdn_authorization_violations")
            logger.warning("CDN request %s %s carried Authorization",
                           self.command, target.path)
            self._send_text(400, "Authorization is not accepted on signed URLs\n")
            return
        match = CDN_PATH.match(target.path)
        if not match or match["prefix"] != match["hex"][:2]:
            self._send_text(404, f"no blob at {target.path}\n")
            return
        repository = self._verified_repository(target)
        if repository is None:
            state.bump("cdn_signature_rejections")
            self._send_text(403, "invalid or expired signature\n")
            return
        digest = f"{match['algorithm']}:{match['hex']}"
        self._relay_blob(f"/v2/{repository}/blobs/{digest}")

    def _verified_repository(self, target):
        """Return the signed repository, or None for a bad or old URL."""
        query = parse_qs(target.query)
        try:
            repository = query["repository"][0]
            expires = int(query["expires"][0])
            signature = query["signature"][0]
        except (KeyError, IndexError, ValueError):
            return None
        expected = self.state.sign(target.path, repository, expires)
        if not hmac.compare_digest(expected, signature):
            return None
        if expires < time.time():
            return None
        return repository

    def _relay_blob(self, target):
        state = self.state
        headers = {}
        if self.headers.get("Range"):
            headers["Range"] = self.headers["Range"]
        connection = state.backend_connection()
        try:
            connection.request(self.command, target, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as e:
            connection.close()
            logger.warning("CDN request %s %s to docker-registry failed: %s",
                           self.command, target, e)
            self._send_text(503, f"storage request failed: {e}\n")
            return
        try:
            if response.getheader("Content-Length") is None:
                # docker-registry sends Content-Length on every blob
                # response, and the relay depends on it.
                self._send_text(502, "storage sent no Content-Length\n")
                return
            self.send_response(response.status)
            for name in CDN_RELAYED_HEADERS + ("Content-Length",):
                value = response.getheader(name)
                if value is not None:
                    self.send_header(name, value)
            self.end_headers()
            sent = 0
            if self.command != "HEAD":
                sent = self._stream(response)
            self.record(response.status, sent)
        except (OSError, http.client.HTTPException) as e:
            # The headers are out, so only a closed connection can tell the
            # client that the body is incomplete.
            logger.warning("CDN relay of %s %s failed: %s", self.command, target, e)
            self.close_connection = True
            self.record(response.status, 0)
        finally:
            connection.close()

    def _stream(self, response):
        """Copy the body at the configured rate; return bytes sent."""
        state = self.state
        started = time.monotonic()
        sent = 0
        while True:
            with state.lock:
                rate = state.cdn_rate
            size = CHUNK_BYTES if not rate else max(1024, min(CHUNK_BYTES, rate // 10))
            data = response.read(size)
            if not data:
                break
            self.wfile.write(data)
            sent += len(data)
            state.bump("cdn_bytes", len(data))
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0 and state.stopping.wait(ahead):
                    self.close_connection = True
                    break
        return sent

    def _send_text(self, status, text):
        self.send_body(status, text.encode(), {"Content-Type": "text/plain"})


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler, tls_context, state):
        self.tls_context = tls_context
        self.state = state
        self._connections = set()
        self._connections_lock = threading.Lock()
        super().__init__((LOOPBACK, 0), handler)

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


class HubEmulator:
    """Docker Hub's registry, token service and CDN on loopback.

    `backend_host` ("127.0.0.1:port") is a docker-registry over TLS signed
    by `backend_ca`. `cert` and `key` serve all three listeners, so the
    certificate must name 127.0.0.1.

    Options (keywords):
    - `limit`, `window_seconds`: pull budget per client address, in
      manifest GETs per window (whole seconds).
    - `window`: "rolling" (Docker Hub) or "fixed".
    - `token_lifetime`: seconds a token is valid (whole, at least 1).
    - `header_form`: "docker", "ietf" or "none"; see `HEADER_FORMS`.
    - `manifest_delay`: seconds added to every admitted manifest GET.
    - `cdn_rate`: CDN bytes per second, None for no limit.
    - `url_lifetime`: seconds a signed CDN URL is valid.
    - `stall_seconds`: how long a "timeout" fault keeps a request waiting.

    The setters change options while the emulator runs. Counters and the
    request log are read with `stats()` and `requests()`.
    """

    def __init__(self, backend_host, backend_ca, cert, key, *,
                 limit=DEFAULT_LIMIT, window_seconds=DEFAULT_WINDOW_SECONDS,
                 window="rolling", token_lifetime=DEFAULT_TOKEN_LIFETIME,
                 header_form="docker", manifest_delay=0.0, cdn_rate=None,
                 url_lifetime=DEFAULT_URL_LIFETIME,
                 stall_seconds=DEFAULT_STALL_SECONDS, service=SERVICE):
        _check_count("limit", limit, minimum=0)
        _check_count("window_seconds", window_seconds, minimum=1)
        _check_count("token_lifetime", token_lifetime, minimum=1)
        _check_count("url_lifetime", url_lifetime, minimum=1)
        _check_choice("window", window, WINDOW_KINDS)
        _check_choice("header_form", header_form, HEADER_FORMS)
        _check_rate(cdn_rate)
        _check_delay(manifest_delay)
        self.backend_host = backend_host
        self.backend_ca = backend_ca
        self.cert = cert
        self.key = key
        self._state = _HubState(
            {
                "service": service,
                "header_form": header_form,
                "token_lifetime": token_lifetime,
                "url_lifetime": url_lifetime,
                "manifest_delay": manifest_delay,
                "cdn_rate": cdn_rate,
                "stall_seconds": stall_seconds,
                "limit": limit,
                "window_seconds": window_seconds,
                "window": window,
            }
        )
        self._servers = {}
        self._threads = []

    # Addresses -----------------------------------------------------------

    def host(self, listener):
        """Return "127.0.0.1:port" of "registry", "auth" or "cdn"."""
        return f"{LOOPBACK}:{self._servers[listener].server_address[1]}"

    @property
    def registry_host(self):
        return self.host("registry")

    @property
    def registry_url(self):
        return f"https://{self.registry_host}"

    @property
    def auth_host(self):
        return self.host("auth")

    @property
    def cdn_host(self):
        return self.host("cdn")

    @property
    def realm(self):
        """The token endpoint URL that the registry's challenges name."""
        return self._state.realm

    @property
    def service(self):
        return self._state.service

    # Lifecycle -----------------------------------------------------------

    def start(self):
        """Bind the three listeners and serve them on threads."""
        if self._servers:
            raise RuntimeError("the hub emulator is already running")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(self.key))
        context.set_alpn_protocols(["http/1.1"])
        backend_context = ssl.create_default_context(cafile=str(self.backend_ca))
        backend_context.set_alpn_protocols(["http/1.1"])
        backend_host, backend_port = self.backend_host.rsplit(":", 1)

        state = self._state
        state.stopping.clear()
        state.backend_host = backend_host
        state.backend_port = int(backend_port)
        state.backend_context = backend_context
        for listener, handler in (
            ("registry", _RegistryHandler),
            ("auth", _AuthHandler),
            ("cdn", _CdnHandler),
        ):
            self._servers[listener] = _Server(handler, context, state)
        state.realm = f"https://{self.auth_host}/token"
        state.cdn_base = f"https://{self.cdn_host}"
        for listener, server in self._servers.items():
            # A short poll interval keeps `stop()` fast, because shutdown()
            # waits for the loop's next poll.
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"hub-{listener}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self):
        """Close every listener and connection and end held requests."""
        self._state.stopping.set()
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
            server.close_connections()
        for thread in self._threads:
            thread.join(timeout=10)
        self._servers = {}
        self._threads = []

    # Pull budget ---------------------------------------------------------

    def quota(self, client=LOOPBACK):
        """Return the current Quota of `client`."""
        quota, _ = self._state.peek_quota(client)
        return quota

    def reset_window(self):
        """Give every client its full budget and restart fixed periods."""
        with self._state.lock:
            self._state.budget.reset(time.monotonic())

    def set_remaining(self, remaining, client=LOOPBACK):
        """Leave `remaining` pulls to `client` in the current window.

        In a rolling window the spent pulls count as made now, so they free
        up `window_seconds` later.
        """
        state = self._state
        with state.lock:
            limit = state.budget.limit
            if not isinstance(remaining, int) or not 0 <= remaining <= limit:
                raise ValueError(
                    f"remaining={remaining!r} must be an integer from 0 to "
                    f"the limit {limit}; call set_limit() first to raise it"
                )
            state.budget.set_remaining(client, remaining, time.monotonic())

    def set_limit(self, limit):
        """Change the pull limit; pulls already spent stay spent."""
        _check_count("limit", limit, minimum=0)
        with self._state.lock:
            self._state.budget.limit = limit

    # Other knobs ---------------------------------------------------------

    def set_header_form(self, header_form):
        _check_choice("header_form", header_form, HEADER_FORMS)
        with self._state.lock:
            self._state.header_form = header_form

    def set_manifest_delay(self, seconds):
        """Add `seconds` to every admitted manifest GET from now on."""
        _check_delay(seconds)
        with self._state.lock:
            self._state.manifest_delay = seconds

    def set_cdn_rate(self, bytes_per_second):
        """Limit CDN bodies to `bytes_per_second`; None removes the limit.

        Downloads already running follow the new rate from their next chunk.
        """
        _check_rate(bytes_per_second)
        with self._state.lock:
            self._state.cdn_rate = bytes_per_second

    def set_token_lifetime(self, seconds):
        """Set the lifetime of tokens issued from now on."""
        _check_count("token_lifetime", seconds, minimum=1)
        with self._state.lock:
            self._state.token_lifetime = seconds

    def expire_tokens(self):
        """Make every token issued so far invalid from now on."""
        with self._state.lock:
            now = time.monotonic()
            for grant in self._state.tokens.values():
                grant.expires_at = min(grant.expires_at, now)

    def inject_fault(self, repository, fault, count=None):
        """Fail the next `count` registry requests for `repository`.

        `fault` is a 5xx status, sent with an OCI error body, or "timeout",
        which keeps the request waiting for `stall_seconds` and then closes the
        connection without a response. `count` None fails every request
        until `clear_faults()`. Faulted requests spend no pull budget.
        """
        if fault != "timeout" and not (
            isinstance(fault, int) and 500 <= fault <= 599
        ):
            raise ValueError(
                f"fault={fault!r} must be a 5xx status such as 503 or "
                "\"timeout\""
            )
        if count is not None:
            _check_count("count", count, minimum=1)
        with self._state.lock:
            self._state.faults[repository] = _Fault(kind=fault, remaining=count)

    def clear_faults(self):
        with self._state.lock:
            self._state.faults.clear()

    # Observation ---------------------------------------------------------

    def stats(self):
        """Return a HubStats snapshot of every counter."""
        return self._state.snapshot()

    def reset_counters(self):
        """Zero every counter and empty the request log."""
        with self._state.lock:
            self._state.counters = HubStats()
            self._state.log.clear()

    def requests(self, listener=None):
        """Return the finished requests, oldest first, of one or all
        listeners."""
        with self._state.lock:
            entries = list(self._state.log)
        if listener is None:
            return entries
        return [e for e in entries if e.listener == listener]

    def wait_requests(self, predicate, count=1, start=0, timeout=10):
        """Wait for `count` logged requests after the first `start` to
        match `predicate`; return them.

        A request is logged after its response is sent, so a client can
        hold the whole response before the entry exists.
        """

        def matching():
            found = [r for r in self.requests()[start:] if predicate(r)]
            return found if len(found) >= count else None

        return wait_for(
            matching, timeout, message=f"{count} matching requests to the hub emulator"
        )


def _check_count(name, value, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer of at least {minimum}")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} must be one of {', '.join(choices)}")


def _check_delay(seconds):
    if not isinstance(seconds, (int, float)) or seconds < 0:
        raise ValueError(
            f"manifest_delay={seconds!r} must be a number of seconds of at least 0"
        )


def _check_rate(rate):
    if rate is not None and (not isinstance(rate, int) or rate <= 0):
        raise ValueError(
            f"cdn_rate={rate!r} must be a positive number of bytes per second "
            "or None"
        )


@pytest.fixture
def hub_emulator(test_ca, registry):
    """Return a function that starts a HubEmulator in front of `registry`.

    Keyword arguments go to HubEmulator. Every emulator started through
    the function is stopped when the test ends.
    """
    cert = test_ca.directory / "hub-emulator.crt"
    key = test_ca.directory / "hub-emulator.key"
    if not (cert.exists() and key.exists()):
        cert, key = test_ca.issue_server("hub-emulator")
    started = []

    def start(**options):
        emulator = HubEmulator(registry.host, test_ca.cert, cert, key, **options)
        started.append(emulator.start())
        return emulator

    try:
        yield start
    finally:
        for emulator in started:
            emulator.stop()
