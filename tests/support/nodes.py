"""Clients of a running gatecache: simulated containerd nodes and the CLI.

A `Node` pulls an image the way containerd's resolver and fetcher do
through a mirror. It resolves the tag with HEAD (or GET), fetches the
manifest by digest and picks its platform from an index. Then it fetches
the config and every layer, and verifies each digest and each layer's
`rootfs.diff_ids` entry. Every request carries `?ns=<registry>`, as
containerd adds it for a mirror host. Each node binds its own loopback
source address (the whole 127.0.0.0/8 range reaches a listener on
127.0.0.1 on Linux without setup), so gatecache attributes its requests
to the cluster of that address.

The CLI helpers run `gatecache status`, `pulls` and `prewarm` against the
daemon's admin socket, and `admin_get` reads the admin API directly.

The fixtures start Docker Hub emulators and gatecache daemons whose
`docker.io` upstream is an emulator, for a whole test module.
"""

import gzip
import hashlib
import http.client
import json
import socket
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import pytest

from .gatecache import Gatecache, Upstream
from .hub_emulator import HubEmulator
from .net import client_context
from .oci_build import Pusher
from .procs import run

HUB = "docker.io"

# Sources of the two clusters that tests configure: nodes of cluster "a"
# bind addresses in the first, nodes of "b" in the second.
CLUSTER_A = "127.0.1.0/24"
CLUSTER_B = "127.0.2.0/24"


# The Accept header of containerd's resolver (remotes/docker/resolver.go).
CONTAINERD_ACCEPT = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "*/*",
])

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)

# Seconds for one request, including a layer served at a limited rate.
REQUEST_TIMEOUT = 120

# Seconds for one CLI command.
CLI_TIMEOUT = 60


def parse_reference(reference):
    """Split "docker.io/library/img:tag" or "...@sha256:..." into
    (registry, repository, tag or digest)."""
    registry, slash, rest = reference.partition("/")
    if not slash or not rest:
        raise ValueError(f"image reference {reference!r} has no registry; "
                         "expected REGISTRY/REPOSITORY:TAG")
    if "@" in rest:
        repository, _, target = rest.partition("@")
    else:
        repository, colon, target = rest.rpartition(":")
        if not colon or "/" in target:
            raise ValueError(f"image reference {reference!r} has no tag or "
                             "digest")
    return registry, repository, target


@dataclass
class Response:
    """One response a node received, with lower-case header names."""

    method: str
    target: str
    status: int
    headers: dict
    body: bytes

    def header(self, name):
        return self.headers.get(name.lower())

    def error_codes(self):
        """Return the `code` of each entry of an OCI error body."""
        try:
            return [e.get("code") for e in json.loads(self.body)["errors"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            return []


class PullFailed(Exception):
    """A pull step got an unexpected response or bytes that do not verify.

    `response` is the Response of the failed request, when there is one.
    """

    def __init__(self, message, response=None):
        super().__init__(message)
        self.response = response


@dataclass
class PullResult:
    """The outcome of one `Node.pull()`.

    `digest` is what the tag resolved to, `image_digest` the manifest of
    the node's platform (the same for a single-platform image) and `blobs`
    the config and layer digests fetched. On failure `error` describes it,
    and `status`, `error_codes` and `retry_after` come from the failed
    response.
    """

    node: str
    reference: str
    ok: bool = False
    digest: str = ""
    image_digest: str = ""
    blobs: tuple = ()
    error: str = ""
    status: int = 0
    error_codes: list = field(default_factory=list)
    retry_after: str = ""


class Node:
    """A containerd node that pulls through gatecache from one address.

    `gateway` is gatecache's "127.0.0.1:port" and `ca_file` its CA.
    `resolve` is "head" (containerd's default) or "get", for resolvers
    that send GET by tag. The node keeps one HTTP/1.1 connection open
    across requests, as containerd's HTTP client does.
    """

    def __init__(self, address, gateway, ca_file, platform="linux/amd64",
                 resolve="head", timeout=REQUEST_TIMEOUT):
        if resolve not in ("head", "get"):
            raise ValueError(f"resolve={resolve!r} must be \"head\" or \"get\"")
        self.address = address
        self.gateway = gateway
        self.ca_file = ca_file
        self.platform = platform
        self.resolve = resolve
        self.timeout = timeout
        self._context = client_context(ca_file)
        self._connection = None

    def close(self):
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def request(self, method, path, registry, headers=None):
        """Send `method` for `path` with `?ns=registry`; return the Response.

        The whole body is read, so the connection can carry the next
        request.
        """
        target = f"{path}?ns={registry}"
        if self._connection is None:
            host, port = self.gateway.rsplit(":", 1)
            self._connection = http.client.HTTPSConnection(
                host, int(port), context=self._context, timeout=self.timeout,
                source_address=(self.address, 0))
        try:
            self._connection.request(method, target, headers=headers or {})
            response = self._connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.will_close:
            self.close()
        return Response(method=method, target=target, status=response.status,
                        headers={k.lower(): v for k, v in response.getheaders()},
                        body=body)

    def pull(self, reference):
        """Pull `reference` and return a PullResult; never raises for a
        failed pull, so many nodes can run in threads."""
        result = PullResult(node=self.address, reference=reference)
        try:
            self._pull(reference, result)
            result.ok = True
        except PullFailed as e:
            result.error = f"{self.address} {reference}: {e}"
            if e.response is not None:
                result.status = e.response.status
                result.error_codes = e.response.error_codes()
                result.retry_after = e.response.header("Retry-After") or ""
        except (OSError, http.client.HTTPException) as e:
            result.error = f"{self.address} {reference}: {e!r}"
        return result

    def _pull(self, reference, result):
        registry, repository, target = parse_reference(reference)
        manifests = f"/v2/{repository}/manifests"
        if target.startswith("sha256:"):
            digest = target
        else:
            digest = self._resolve(registry, f"{manifests}/{target}")
        result.digest = digest

        top = self._fetch_manifest(registry, f"{manifests}/{digest}", digest)
        document = top[1]
        image_digest = digest
        if top[0] in INDEX_TYPES or "manifests" in document:
            image_digest = self._pick_platform(document, reference)
            document = self._fetch_manifest(
                registry, f"{manifests}/{image_digest}", image_digest)[1]
        result.image_digest = image_digest

        blobs = f"/v2/{repository}/blobs"
        config_digest = document["config"]["digest"]
        config = json.loads(self._fetch_blob(registry, blobs, config_digest))
        expected_os, expected_architecture = self.platform.split("/")[:2]
        if (config.get("os"), config.get("architecture")) != (
                expected_os, expected_architecture):
            raise PullFailed(f"config {config_digest} is for "
                             f"{config.get('os')}/{config.get('architecture')}, "
                             f"expected {self.platform}")
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        layers = document.get("layers", [])
        if len(diff_ids) != len(layers):
            raise PullFailed(f"manifest {image_digest} has {len(layers)} layers "
                             f"but its config lists {len(diff_ids)} diff_ids")
        for layer, diff_id in zip(layers, diff_ids):
            data = self._fetch_blob(registry, blobs, layer["digest"])
            unpacked = gzip.decompress(data)
            if _digest(unpacked) != diff_id:
                raise PullFailed(f"layer {layer['digest']} unpacks to "
                                 f"{_digest(unpacked)}, expected diff_id "
                                 f"{diff_id}")
        result.blobs = (config_digest,) + tuple(l["digest"] for l in layers)

    def _resolve(self, registry, path):
        """Return the digest a tag names, as containerd's resolver finds it."""
        response = self.request(self.resolve.upper(), path, registry,
                                {"Accept": CONTAINERD_ACCEPT})
        if response.status != 200:
            raise PullFailed(f"{response.method} {path} returned "
                             f"{response.status}: {response.body[:300]!r}",
                             response)
        digest = response.header("Docker-Content-Digest")
        if self.resolve == "get":
            actual = _digest(response.body)
            if digest and digest != actual:
                raise PullFailed(f"GET {path} sent Docker-Content-Digest "
                                 f"{digest} for a body of {actual}", response)
            digest = actual
        if not digest:
            raise PullFailed(f"HEAD {path} returned no Docker-Content-Digest",
                             response)
        return digest

    def _fetch_manifest(self, registry, path, digest):
        """GET a manifest by digest; return (media type, parsed document)."""
        response = self.request("GET", path, registry,
                                {"Accept": CONTAINERD_ACCEPT})
        if response.status != 200:
            raise PullFailed(f"GET {path} returned {response.status}: "
                             f"{response.body[:300]!r}", response)
        if _digest(response.body) != digest:
            raise PullFailed(f"GET {path} returned a body of "
                             f"{_digest(response.body)}", response)
        return response.header("Content-Type") or "", json.loads(response.body)

    def _pick_platform(self, index, reference):
        """Return the digest of this node's platform in an index.

        Entries for platform unknown/unknown (attestations) never match.
        """
        expected_os, expected_architecture = self.platform.split("/")[:2]
        for entry in index.get("manifests", []):
            platform = entry.get("platform", {})
            if (platform.get("os"), platform.get("architecture")) == (
                    expected_os, expected_architecture):
                return entry["digest"]
        raise PullFailed(f"index of {reference} has no {self.platform} image")

    def _fetch_blob(self, registry, blobs, digest):
        path = f"{blobs}/{digest}"
        response = self.request("GET", path, registry)
        if response.status != 200:
            raise PullFailed(f"GET {path} returned {response.status}: "
                             f"{response.body[:300]!r}", response)
        if _digest(response.body) != digest:
            raise PullFailed(f"GET {path} returned a body of "
                             f"{_digest(response.body)}", response)
        return response.body


def _digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# The operator's view ----------------------------------------------------


def run_cli(daemon, *args, check=True, timeout=CLI_TIMEOUT):
    """Run `gatecache ARGS... --config <daemon's config>`; return the
    CompletedProcess. With `check`, a non-zero exit raises ProcessError."""
    return run([daemon.binary, *args, "--config", daemon.config_path],
               timeout=timeout, check=check)


def cli_json(daemon, *args):
    """Run a CLI subcommand with `--json` and return its parsed output."""
    output = run_cli(daemon, *args, "--json").stdout
    try:
        return json.loads(output)
    except ValueError as e:
        raise AssertionError(f"gatecache {' '.join(args)} --json printed no "
                             f"JSON: {output!r}") from e


def upstream_status(status, name):
    """Return the `upstreams` entry of `name` in a status document."""
    for entry in status["upstreams"]:
        if entry["name"] == name:
            return entry
    raise KeyError(f"status lists no upstream {name!r}: {status['upstreams']}")


def cluster_status(status, name):
    """Return the `clusters` entry of `name` in a status document."""
    for entry in status["clusters"]:
        if entry["name"] == name:
            return entry
    raise KeyError(f"status lists no cluster {name!r}: {status['clusters']}")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def admin_get(daemon, target, timeout=CLI_TIMEOUT):
    """GET `target` from the admin API over the Unix socket; return
    (status, parsed JSON body)."""
    connection = _UnixConnection(str(daemon.admin_socket), timeout)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(body)
    except ValueError as e:
        raise AssertionError(f"admin GET {target} returned {response.status} "
                             f"without JSON: {body[:300]!r}") from e


def wait_until(condition, timeout, message, describe=None, interval=0.2):
    """Poll `condition` until it returns a true value and return it.

    Raises AssertionError naming `message` when `timeout` seconds pass,
    with the output of `describe()` when given, so a failure shows what
    was seen last.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            seen = f"; last seen: {describe()!r}" if describe else ""
            raise AssertionError(
                f"timed out after {timeout} s waiting for {message}{seen}")
        time.sleep(interval)


# Nodes and gateways of a test module -------------------------------------


def node_address(cluster, index):
    """Return the address of node `index` (from 0) of cluster "a" or "b"."""
    third = {"a": 1, "b": 2}[cluster]
    return f"127.0.{third}.{index + 1}"


def ref(repository, tag="v1"):
    """Return the reference of a Docker Hub image, as nodes name it."""
    return f"{HUB}/{repository}:{tag}"


def make_node(daemon, address, **options):
    """Return a Node at `address` that pulls through the Gatecache."""
    return Node(address, daemon.host, daemon.ca_cert, **options)


def pull_once(daemon, address, reference, **options):
    """Pull `reference` from a new node at `address`; return the result."""
    node = make_node(daemon, address, **options)
    try:
        return node.pull(reference)
    finally:
        node.close()


@pytest.fixture(scope="module")
def stack():
    """An ExitStack that stops the module's emulators and daemons, the
    latest started first."""
    with ExitStack() as resources:
        yield resources


@pytest.fixture(scope="module")
def start_hub(stack, test_ca, registry):
    """Return a function that starts a HubEmulator in front of `registry`.

    Keyword arguments go to HubEmulator. Every emulator stops at the end
    of the module.
    """
    cert, key = test_ca.issue_server("nodes-hub")

    def start(**options):
        hub = HubEmulator(registry.host, test_ca.cert, cert, key, **options)
        hub.start()
        stack.callback(hub.stop)
        return hub

    return start


@pytest.fixture(scope="module")
def start_gateway(stack, gatecache_bin, session_dir, test_ca, watch_gatecache):
    """Return a function that starts gatecache with `hub` as docker.io.

    `name` names the daemon and its directory under the session directory.
    `default_freshness` is the window of docker.io tags; the default 0s
    revalidates every tag request. Other keyword arguments go to
    Gatecache. Every daemon stops at the end of the module.
    """

    def start(hub, name, default_freshness="0s", **options):
        upstream = Upstream(HUB, hub.registry_url, str(test_ca.cert),
                            default_freshness=default_freshness)
        daemon = Gatecache(gatecache_bin, session_dir / name, [upstream],
                           name=name, **options)
        stack.callback(daemon.stop)
        daemon.start()
        watch_gatecache(daemon)
        return daemon

    return start


@pytest.fixture(scope="module")
def pusher(registry, test_ca):
    """A Pusher to the docker-registry behind every emulator."""
    with Pusher(registry.host, test_ca.cert) as session:
        yield session
