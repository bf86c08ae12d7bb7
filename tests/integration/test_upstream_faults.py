"""Damaged upstream blobs fail the client and never enter the cache."""

import hashlib
import random

import pytest

from support.clients import IncompleteResponse, request
from support.fault_proxy import FaultProxy
from support.gatecache import Gatecache, Upstream
from support.oci_build import Blob, Pusher
from support.procs import wait_for

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.fixture(scope="module")
def fault_proxy(session_dir, test_ca, registry):
    cert, key = test_ca.issue_server("fault-proxy")
    proxy = FaultProxy(session_dir / "fault-proxy", cert, key, registry.host,
                       test_ca.cert, test_ca.cert)
    try:
        yield proxy.start()
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def faulty_gatecache(gatecache_bin, session_dir, registry, fault_proxy,
                     test_ca, watch_gatecache):
    """gatecache whose upstream, under the registry's name, is the proxy."""
    daemon = Gatecache(
        gatecache_bin,
        session_dir / "gatecache-faults",
        [Upstream(registry.host, fault_proxy.url, str(test_ca.cert))],
        default_upstream=registry.host,
        name="gatecache-faults",
    )
    try:
        daemon.start()
        watch_gatecache(daemon)
        yield daemon
    finally:
        daemon.stop()


def fetch_blob(protocol, gatecache, image, digest):
    """GET a blob; return (status, sha256 of what arrived) or raise."""
    hasher = hashlib.sha256()
    reply = request(protocol, gatecache.host,
                    f"/v2/{image.repository}/blobs/{digest}",
                    gatecache.ca_cert, body_sink=hasher.update)
    return reply.status, "sha256:" + hasher.hexdigest()


def damaged_gets(proxy, digest, rule):
    """Wait for the proxy to log a damaged GET of `digest`; return them."""
    return proxy.wait_requests(
        lambda r: r["method"] == "GET" and r["rule"] == rule
        and r["path"].endswith(f"/blobs/{digest}"))


# (rule, index into the image's blobs, client protocol, rule key). Blob 0
# is the config, the others are layers. Each case damages a different blob,
# so no case finds a blob that an earlier case cached.
CASES = [
    pytest.param("corrupt", 3, "http/1.1", "digest", id="corrupt-h1"),
    pytest.param("truncate", 2, "h2", "digest", id="truncate-h2"),
    pytest.param("truncate", 0, "http/1.1", "digest", id="truncate-config-h1"),
    pytest.param("corrupt", 1, "h2", "*", id="corrupt-every-blob-h2"),
]


@pytest.mark.parametrize("rule, blob, protocol, key", CASES)
def test_damaged_blob_fails_and_is_not_cached(
        fault_proxy, faulty_gatecache, big_image, rule, blob, protocol, key):
    digest = big_image.built.blobs[blob]
    fault_proxy.set_rules({digest if key == "digest" else "*": rule})
    try:
        status, received = fetch_blob(protocol, faulty_gatecache, big_image,
                                      digest)
        complete_and_wrong = status == 200 and received != digest
        failed = status >= 400
    except IncompleteResponse:
        complete_and_wrong = False
        failed = True

    assert damaged_gets(fault_proxy, digest, rule)
    assert not complete_and_wrong, "damaged body delivered as complete"
    assert failed
    assert faulty_gatecache.blob_files(digest) == []
    # The failed download's temporary file goes away once the fetch ends.
    wait_for(lambda: faulty_gatecache.download_files() == [], timeout=10,
             message="an empty storage/tmp after the failed download")

    fault_proxy.set_rules({})
    status, received = fetch_blob(protocol, faulty_gatecache, big_image,
                                  digest)

    assert status == 200
    assert received == digest
    wait_for(lambda: faulty_gatecache.blob_files(digest), timeout=10,
             message=f"{digest} in the blob store")


def test_blob_without_length_gets_exact_range(registry, test_ca, fault_proxy,
                                              faulty_gatecache):
    """An upstream that sends no Content-Length still yields an exact 206."""
    repository = "gatecache-test/no-length"
    data = random.Random("no-length").randbytes(3 << 20)
    blob = Blob(OCI_LAYER, data)
    with Pusher(registry.host, test_ca.cert) as pusher:
        pusher.push_blob(repository, blob)
    fault_proxy.set_rules({blob.digest: "chunked"})
    try:
        reply = request("http/1.1", faulty_gatecache.host,
                        f"/v2/{repository}/blobs/{blob.digest}",
                        faulty_gatecache.ca_cert,
                        headers={"Range": "bytes=10-19"})
    finally:
        fault_proxy.set_rules({})

    assert damaged_gets(fault_proxy, blob.digest, "chunked")
    assert reply.status == 206
    assert reply.header("content-length") == "10"
    assert reply.header("content-range") == f"bytes 10-19/{len(data)}"
    assert reply.body == data[10:20]
    wait_for(lambda: faulty_gatecache.blob_files(blob.digest), timeout=10,
             message=f"{blob.digest} in the blob store")


def test_skopeo_copy_fails_then_succeeds(
        tmp_path, skopeo, fault_proxy, faulty_gatecache, multi_image):
    """A real client reports the damage as a failed copy, then recovers."""
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(faulty_gatecache.ca_cert.read_bytes())
    source = (f"docker://{faulty_gatecache.host}/{multi_image.repository}:"
              f"{multi_image.tag}")
    fault_proxy.set_rules({"*": "truncate"})

    failed = skopeo.copy(source, f"dir:{tmp_path / 'first'}",
                         src_cert_dir=certs, all_images=True, check=False)
    cached = [d for d in multi_image.built.blobs
              if faulty_gatecache.blob_files(d)]

    assert failed.returncode != 0
    assert cached == []

    fault_proxy.set_rules({})
    skopeo.copy(source, f"dir:{tmp_path / 'second'}", src_cert_dir=certs,
                all_images=True)
