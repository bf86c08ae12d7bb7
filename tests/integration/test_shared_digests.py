"""One digest from two upstreams: media types and downloads stay per upstream.

Two StaticRegistry upstreams serve the same bytes. The "clean" one is the
default upstream and sends correct media types. The "other" one, reached
with `?ns=`, sends wrong manifest types or stalls a blob download. Neither
may change what a client of the clean upstream gets.
"""

import hashlib
import random
import threading
import time
from pathlib import Path

import pytest

from support.clients import IncompleteResponse, request
from support.gatecache import Gatecache, Upstream
from support.procs import wait_for
from support.static_registry import StaticRegistry, sha256_digest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "manifests"

SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

# An OCI index whose `mediaType` field names its type, with a suffix that
# makes bytes no other test stores.
INDEX_BODY = (FIXTURES / "oci-index-nested-index-spec-example.json"
              ).read_bytes() + b"\n\n\n"
INDEX_DIGEST = sha256_digest(INDEX_BODY)

# An OCI manifest without a `mediaType` field, so only the Content-Type
# names its type.
HELM_BODY = (FIXTURES / "helm-chart-manifest.json").read_bytes() + b"\n\n\n"
HELM_DIGEST = sha256_digest(HELM_BODY)

# The same kind of manifest with other bytes, which the other upstream
# sends as an index before anyone stored it.
POISON_BODY = HELM_BODY + b"\n"
POISON_DIGEST = sha256_digest(POISON_BODY)

# An OCI index sent with a parameter on its Content-Type.
PARAMS_BODY = (FIXTURES / "oci-index-nested-index-spec-example.json"
               ).read_bytes() + b"\n\n\n\n"
PARAMS_DIGEST = sha256_digest(PARAMS_BODY)

BLOB_BYTES = 3_000_000
STALL_AFTER = 1_000_000
BLOB = random.Random("shared-digests").randbytes(BLOB_BYTES)
BLOB_DIGEST = sha256_digest(BLOB)

# A blob that no test GETs, so it stays uncached.
HEAD_BLOB = random.Random("head-only").randbytes(100_000)
HEAD_BLOB_DIGEST = sha256_digest(HEAD_BLOB)

# Seconds the clean upstream's blob may take through gatecache. It is far
# below gatecache's default upstream idle timeout (60 s), so a request that
# waits for the stalled download fails it.
CLEAN_PULL_SECONDS = 20


@pytest.fixture(scope="module")
def clean(test_ca):
    cert, key = test_ca.issue_server("clean-registry")
    registry = StaticRegistry(cert, key)
    registry.add_manifest("clean/index", INDEX_BODY, OCI_INDEX, tags=["v1"])
    registry.add_manifest("clean/helm", HELM_BODY, OCI_MANIFEST, tags=["v1"])
    registry.add_manifest("clean/poison", POISON_BODY, OCI_MANIFEST,
                          tags=["v1"])
    registry.add_manifest("clean/params", PARAMS_BODY,
                          OCI_INDEX + "; charset=utf-8", tags=["v1"])
    registry.add_blob("clean/blob", BLOB)
    registry.add_blob("clean/head", HEAD_BLOB)
    try:
        yield registry.start()
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def other(test_ca):
    cert, key = test_ca.issue_server("other-registry")
    registry = StaticRegistry(cert, key)
    registry.add_manifest("other/html", INDEX_BODY, "text/html", tags=["v1"])
    registry.add_manifest("other/lying", INDEX_BODY, SCHEMA2, tags=["v1"])
    registry.add_manifest("other/helm", HELM_BODY, SCHEMA2, tags=["v1"])
    registry.add_manifest("other/poison", POISON_BODY, OCI_INDEX, tags=["v1"])
    registry.add_blob("other/blob", BLOB, stall_after=STALL_AFTER)
    try:
        yield registry.start()
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def daemon(gatecache_bin, session_dir, clean, other, test_ca, watch_gatecache):
    daemon = Gatecache(
        gatecache_bin,
        session_dir / "gatecache-shared",
        [Upstream(clean.host, clean.url, str(test_ca.cert)),
         Upstream(other.host, other.url, str(test_ca.cert))],
        default_upstream=clean.host,
        name="gatecache-shared",
    )
    try:
        daemon.start()
        watch_gatecache(daemon)
        yield daemon
    finally:
        daemon.stop()


def get(daemon, path, accept="*/*", method="GET", headers=None,
        protocol="http/1.1"):
    return request(protocol, daemon.host, path, daemon.ca_cert, method=method,
                   headers={"Accept": accept, **(headers or {})})


def manifest_gets(registry, repository):
    prefix = f"/v2/{repository}/manifests/"
    return [r for r in registry.requests()
            if r.method == "GET" and r.path.startswith(prefix)]


def test_manifest_with_wrong_type_rejected(daemon, other):
    for repository in ("other/html", "other/lying"):
        for reference in ("v1", INDEX_DIGEST):
            reply = get(daemon, f"/v2/{repository}/manifests/{reference}"
                                f"?ns={other.host}")
            assert reply.status == 503, (repository, reference, reply.body)
            assert reply.error_codes() == ["UNAVAILABLE"]
            assert INDEX_BODY not in reply.body
    assert daemon.blob_files(INDEX_DIGEST) == []


def test_type_contradicted_by_body_rejected(daemon, other):
    """An image manifest without `mediaType` cannot be stored as an index."""
    reply = get(daemon, f"/v2/other/poison/manifests/v1?ns={other.host}")
    assert reply.status == 503, reply.body
    assert reply.error_codes() == ["UNAVAILABLE"]
    assert daemon.blob_files(POISON_DIGEST) == []

    for accept in (OCI_MANIFEST, "*/*"):
        reply = get(daemon, "/v2/clean/poison/manifests/v1", accept=accept)
        assert reply.status == 200, reply.body
        assert reply.header("content-type") == OCI_MANIFEST
        assert reply.body == POISON_BODY


def test_tag_head_with_wrong_type_serves_stored(daemon, other):
    """A tag that moved to a document of no manifest type is served stale."""
    body = HELM_BODY + b"\n\n"
    other.add_manifest("other/flip", body, OCI_MANIFEST, tags=["v1"])
    path = f"/v2/other/flip/manifests/v1?ns={other.host}"
    reply = get(daemon, path, accept=OCI_MANIFEST)
    assert reply.status == 200, reply.body
    # The disk worker records the tag after the response; a revalidation
    # shows it is there.
    wait_for(lambda: get(daemon, path, accept=OCI_MANIFEST).status == 200
             and daemon.access_entries()[-1].cache == "revalidated",
             timeout=10, message="other/flip:v1 recorded")

    other.retag("other/flip", "v1", body + b"\n", "text/plain")
    reply = get(daemon, path, accept=OCI_MANIFEST)

    assert reply.status == 200, reply.body
    assert reply.header("content-type") == OCI_MANIFEST
    assert reply.body == body
    entries = daemon.wait_entries(
        lambda e: e.path == "/v2/other/flip/manifests/v1", 3)
    assert entries[-1].cache == "stale", entries[-1].line


def test_manifest_type_set_by_clean_upstream(daemon, other):
    # The other upstream tried to store the digest first.
    for repository in ("other/html", "other/lying"):
        get(daemon, f"/v2/{repository}/manifests/v1?ns={other.host}")

    for accept in (OCI_INDEX, "*/*"):
        reply = get(daemon, f"/v2/clean/index/manifests/{INDEX_DIGEST}",
                    accept=accept)
        assert reply.status == 200, reply.body
        assert reply.header("content-type") == OCI_INDEX
        assert reply.body == INDEX_BODY
    reply = get(daemon, "/v2/clean/index/manifests/v1", accept=OCI_INDEX)
    assert reply.status == 200, reply.body
    assert reply.header("content-type") == OCI_INDEX


def test_stored_type_kept_for_other_upstream(daemon, other):
    """A body without `mediaType` keeps the type it was stored with."""
    reply = get(daemon, "/v2/clean/helm/manifests/v1", accept=OCI_MANIFEST)
    assert reply.status == 200, reply.body
    assert reply.header("content-type") == OCI_MANIFEST

    reply = get(daemon, f"/v2/other/helm/manifests/v1?ns={other.host}")
    assert reply.status == 200, reply.body
    assert reply.header("content-type") == OCI_MANIFEST
    assert reply.body == HELM_BODY
    reply = get(daemon, f"/v2/other/helm/manifests/{HELM_DIGEST}"
                        f"?ns={other.host}", accept=SCHEMA2)
    assert reply.status == 404
    assert reply.error_codes() == ["MANIFEST_UNKNOWN"]

    for accept in (OCI_MANIFEST, "*/*"):
        reply = get(daemon, f"/v2/clean/helm/manifests/{HELM_DIGEST}",
                    accept=accept)
        assert reply.status == 200, reply.body
        assert reply.header("content-type") == OCI_MANIFEST


def test_type_parameters_ignored(daemon, clean):
    path = "/v2/clean/params/manifests/v1"
    for _ in range(3):
        reply = get(daemon, path, accept=OCI_INDEX)
        assert reply.status == 200, reply.body
        assert reply.header("content-type") == OCI_INDEX
        assert reply.body == PARAMS_BODY
    # Each request revalidates the tag with a HEAD whose type has the
    # parameter, and that must not fetch the manifest again.
    assert len(manifest_gets(clean, "clean/params")) == 1


def test_accept_with_q_zero_excludes_type(daemon):
    path = "/v2/clean/params/manifests/v1"
    assert get(daemon, path, accept=OCI_INDEX).status == 200
    for reference in ("v1", PARAMS_DIGEST):
        reply = get(daemon, f"/v2/clean/params/manifests/{reference}",
                    accept=f"{OCI_INDEX};q=0, {SCHEMA2}")
        assert reply.status == 404, (reference, reply.body)
        assert reply.error_codes() == ["MANIFEST_UNKNOWN"]


def test_types_same_after_restart(daemon, watch_gatecache):
    checks = [("clean/index", INDEX_DIGEST, OCI_INDEX),
              ("clean/helm", HELM_DIGEST, OCI_MANIFEST),
              ("clean/params", PARAMS_DIGEST, OCI_INDEX)]
    for repository, digest, _ in checks:
        assert get(daemon, f"/v2/{repository}/manifests/{digest}").status == 200
    assert daemon.stop() == 0
    daemon.start()
    watch_gatecache(daemon)
    for repository, digest, media_type in checks:
        reply = get(daemon, f"/v2/{repository}/manifests/{digest}")
        assert reply.status == 200, (repository, reply.body)
        assert reply.header("content-type") == media_type, repository


@pytest.mark.parametrize("protocol", ["http/1.1", "h2"])
def test_head_uncached_blob_matches_get(daemon, protocol):
    path = f"/v2/clean/head/blobs/{HEAD_BLOB_DIGEST}"
    size = len(HEAD_BLOB)
    reply = get(daemon, path, method="HEAD", protocol=protocol)
    assert reply.status == 200
    assert reply.header("accept-ranges") == "bytes"
    assert reply.header("content-type") == "application/octet-stream"
    assert reply.header("content-length") == str(size)
    assert reply.header("docker-content-digest") == HEAD_BLOB_DIGEST

    reply = get(daemon, path, method="HEAD", protocol=protocol,
                headers={"Range": "bytes=10-19"})
    assert reply.status == 206
    assert reply.header("content-range") == f"bytes 10-19/{size}"
    assert reply.header("content-length") == "10"

    reply = get(daemon, path, method="HEAD", protocol=protocol,
                headers={"Range": f"bytes={size}-"})
    assert reply.status == 416
    assert reply.header("content-range") == f"bytes */{size}"
    assert daemon.blob_files(HEAD_BLOB_DIGEST) == []


def test_stalled_upstream_spares_other_pull(daemon, clean, other):
    """A download from the other upstream stalls; the clean one is served."""
    stalled_result = {}

    def pull_stalled():
        try:
            hasher = hashlib.sha256()
            reply = request("http/1.1", daemon.host,
                            f"/v2/other/blob/blobs/{BLOB_DIGEST}"
                            f"?ns={other.host}",
                            daemon.ca_cert, body_sink=hasher.update)
            stalled_result["reply"] = (reply.status,
                                       "sha256:" + hasher.hexdigest())
        except (IncompleteResponse, OSError) as e:
            stalled_result["error"] = repr(e)

    start = len(daemon.access_entries())
    stalled = threading.Thread(target=pull_stalled)
    stalled.start()
    try:
        other.wait_stalled()

        began = time.monotonic()
        hasher = hashlib.sha256()
        reply = request("http/1.1", daemon.host,
                        f"/v2/clean/blob/blobs/{BLOB_DIGEST}",
                        daemon.ca_cert, body_sink=hasher.update)
        elapsed = time.monotonic() - began
        assert reply.status == 200
        assert "sha256:" + hasher.hexdigest() == BLOB_DIGEST
        assert elapsed < CLEAN_PULL_SECONDS
    finally:
        other.release_stalled()
        stalled.join(timeout=120)

    assert stalled_result.get("reply") == (200, BLOB_DIGEST), stalled_result
    clean_path = f"/v2/clean/blob/blobs/{BLOB_DIGEST}"
    entries = daemon.wait_entries(lambda e: e.path == clean_path, 1,
                                  start=start)
    assert entries[0].cache == "miss", entries[0].line
    assert entries[0].ns == clean.host

    # Both downloads stored the same digest: one file, served whole.
    files = daemon.blob_files(BLOB_DIGEST)
    assert len(files) == 1
    reply = request("http/1.1", daemon.host, clean_path, daemon.ca_cert)
    assert reply.status == 200
    assert reply.body == BLOB
