"""Twenty clients pulling one uncached image cost one upstream GET per blob."""

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field

import pytest

from support.clients import request

CLIENTS = 20

# Seconds a client waits at a barrier for the others. It bounds a hang if
# one client fails; it measures nothing.
BARRIER_TIMEOUT = 300

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


@dataclass
class ClientResult:
    protocol: str
    manifest_status: int = 0
    # Digest to (status, sha256 of the body as "sha256:<hex>").
    blobs: dict = field(default_factory=dict)
    error: str = ""


def run_client(index, barrier, image, gatecache, result):
    """Pull the manifest, then every blob, starting each step together."""
    prefix = f"/v2/{image.repository}"
    try:
        barrier.wait()
        reply = request(result.protocol, gatecache.host,
                        f"{prefix}/manifests/{image.tag}", gatecache.ca_cert,
                        headers={"Accept": MANIFEST_ACCEPT})
        result.manifest_status = reply.status
        manifest = json.loads(reply.body)
        digests = [manifest["config"]["digest"]]
        digests += [layer["digest"] for layer in manifest["layers"]]
        for digest in digests:
            barrier.wait()
            hasher = hashlib.sha256()
            reply = request(result.protocol, gatecache.host,
                            f"{prefix}/blobs/{digest}", gatecache.ca_cert,
                            body_sink=hasher.update)
            result.blobs[digest] = (reply.status,
                                    "sha256:" + hasher.hexdigest())
    except Exception as e:  # The test reports it; other clients carry on.
        result.error = f"client {index} ({result.protocol}): {e!r}"
        barrier.abort()


@pytest.fixture(scope="module")
def concurrent_pull(big_image, gatecache, registry):
    """Run the clients, half over HTTP/1.1 and half over h2, to the end."""
    start = len(gatecache.access_entries())
    upstream_start = len(registry.requests())
    barrier = threading.Barrier(CLIENTS, timeout=BARRIER_TIMEOUT)
    results = [ClientResult("h2" if i % 2 else "http/1.1")
               for i in range(CLIENTS)]
    threads = [
        threading.Thread(target=run_client,
                         args=(i, barrier, big_image, gatecache, results[i]))
        for i in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    blob_paths = {f"/v2/{big_image.repository}/blobs/{d}"
                  for d in big_image.built.blobs}
    entries = gatecache.wait_entries(
        lambda e: e.path in blob_paths, CLIENTS * len(blob_paths),
        start=start)
    for path in blob_paths:
        try:
            registry.wait_requests(lambda r, path=path: r.uri == path,
                                   start=upstream_start)
        except TimeoutError:
            # `test_upstream_sees_one_get_per_blob` reports the missing GET.
            pass
    return results, entries, registry.requests()[upstream_start:]


def test_every_client_gets_verified_blobs(concurrent_pull, big_image):
    results, _, _ = concurrent_pull
    expected = {d: (200, d) for d in big_image.built.blobs}
    for result in results:
        assert result.error == ""
        assert result.manifest_status == 200
        assert result.blobs == expected


def test_upstream_sees_one_get_per_blob(concurrent_pull, big_image):
    _, _, upstream = concurrent_pull
    gets = Counter(r.uri for r in upstream if r.method == "GET")
    counts = {d: gets[f"/v2/{big_image.repository}/blobs/{d}"]
              for d in big_image.built.blobs}
    assert counts == {d: 1 for d in big_image.built.blobs}


def test_access_log_shows_one_miss_per_blob(concurrent_pull, big_image):
    _, entries, _ = concurrent_pull
    for digest in big_image.built.blobs:
        path = f"/v2/{big_image.repository}/blobs/{digest}"
        for_blob = [e for e in entries if e.path == path]
        misses = [e for e in for_blob if e.cache == "miss"]
        joined = [e for e in for_blob if e.cache == "joined"]
        others = [e.line for e in for_blob if e.cache not in ("miss", "joined",
                                                              "hit")]
        assert len(for_blob) == CLIENTS
        assert len(misses) == 1, [e.line for e in for_blob]
        assert others == []
        assert {e.fetch for e in joined} <= {misses[0].fetch}
