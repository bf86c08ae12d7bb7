"""gatecache keeps its store under storage.max_size, least recently used first.

Each test runs its own gatecache with an empty store bounded to
`MAX_SIZE_BYTES`, in front of a StaticRegistry that serves small OCI images
of one config and one layer of random bytes. Three such images do not fit,
so pulling them forces eviction.

The index records last access in whole Unix seconds, and content used in
the same second is ordered by digest. The tests therefore wait for the
next second between the steps whose order they check.
"""

import hashlib
import json
import random
import time
from dataclasses import dataclass

import pytest

from support.clients import request
from support.gatecache import Gatecache, Upstream
from support.procs import wait_for
from support.static_registry import StaticRegistry, sha256_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

LAYER_BYTES = 1 << 20
# Room for two images (two layers plus small manifests and configs) but not
# for three.
MAX_SIZE = "3MiB"
MAX_SIZE_BYTES = 3 << 20

# Seconds to wait for the disk worker to store a manifest and evict, which
# it does after the response.
SETTLE_TIMEOUT = 10


@dataclass(frozen=True)
class SmallImage:
    repository: str
    tag: str
    manifest: bytes
    manifest_digest: str
    blobs: dict  # digest -> bytes: the config, then the layer.

    @property
    def digests(self):
        return [self.manifest_digest, *self.blobs]


def add_image(registry, repository, seed):
    """Put an image with a 1 MiB layer of seeded random bytes upstream."""
    layer = random.Random(seed).randbytes(LAYER_BYTES)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
    }).encode()
    blobs = {}
    for data in (config, layer):
        blobs[registry.add_blob(repository, data)] = data
    config_digest, layer_digest = blobs
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest,
                    "size": len(layer)}],
    }).encode()
    document = registry.add_manifest(repository, manifest, OCI_MANIFEST,
                                     tags=["v1"])
    return SmallImage(repository, "v1", manifest, document.digest, blobs)


@pytest.fixture(scope="module")
def upstream(test_ca):
    cert, key = test_ca.issue_server("eviction-registry")
    registry = StaticRegistry(cert, key)
    try:
        yield registry.start()
    finally:
        registry.stop()


@pytest.fixture
def images(request, upstream):
    """Three images in repositories named after the test."""
    name = request.node.name.replace("_", "-").lower()
    return [add_image(upstream, f"eviction/{name}/image{i}", seed=f"{name}{i}")
            for i in range(3)]


@pytest.fixture
def daemon(gatecache_bin, tmp_path, upstream, test_ca, watch_gatecache):
    daemon = Gatecache(
        gatecache_bin,
        tmp_path / "gatecache",
        [Upstream(upstream.host, upstream.url, str(test_ca.cert))],
        default_upstream=upstream.host,
        max_size=MAX_SIZE,
        name="gatecache-eviction",
    )
    try:
        daemon.start()
        watch_gatecache(daemon)
        yield daemon
    finally:
        daemon.stop()


def pull(daemon, image, protocol="http/1.1"):
    """Fetch the image's manifest by tag and each blob; check the bytes."""
    fetch_manifest(daemon, image, protocol)
    fetch_blobs(daemon, image, protocol)


def fetch_manifest(daemon, image, protocol="http/1.1"):
    reply = request(protocol, daemon.host,
                    f"/v2/{image.repository}/manifests/{image.tag}",
                    daemon.ca_cert, headers={"Accept": OCI_MANIFEST})
    assert reply.status == 200, reply.body
    assert reply.body == image.manifest


def fetch_blobs(daemon, image, protocol="http/1.1"):
    for digest in image.blobs:
        hasher = hashlib.sha256()
        reply = request(protocol, daemon.host,
                        f"/v2/{image.repository}/blobs/{digest}",
                        daemon.ca_cert, body_sink=hasher.update)
        assert reply.status == 200
        assert "sha256:" + hasher.hexdigest() == digest
        check_bound(daemon)


def stored_bytes(daemon):
    """Return the total size of the files under storage/blobs."""
    total = 0
    for path in (daemon.storage / "blobs").rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except FileNotFoundError:
            # Evicted between the listing and the stat.
            pass
    return total


def check_bound(daemon):
    """Assert that the store fits the bound once pending commits end.

    A blob is committed and the store evicted before its response ends, but
    a manifest is stored just after its response and evicted right after
    that, so the store may exceed the bound for that moment.
    """
    try:
        wait_for(lambda: stored_bytes(daemon) <= MAX_SIZE_BYTES,
                 timeout=SETTLE_TIMEOUT, message=f"a store within {MAX_SIZE}")
    except TimeoutError:
        pass
    assert stored_bytes(daemon) <= MAX_SIZE_BYTES


def is_stored(daemon, digest):
    return bool(daemon.blob_files(digest))


def pull_and_settle(daemon, image, protocol="http/1.1", digests=None):
    """Pull `image`, wait until it is stored, and check the bound.

    `digests` (default: all of the image's) must be in the store afterwards.
    """
    digests = image.digests if digests is None else digests
    pull(daemon, image, protocol)
    try:
        wait_for(lambda: all(is_stored(daemon, d) for d in digests),
                 timeout=SETTLE_TIMEOUT,
                 message=f"{image.repository} in the store")
    except TimeoutError:
        pass
    check_bound(daemon)
    for digest in digests:
        assert is_stored(daemon, digest), f"{digest} of {image.repository}"


def next_second():
    """Wait until the Unix time in seconds changes.

    The index orders content by last access in whole seconds, so two steps
    are only ordered when they happen in different seconds.
    """
    now = int(time.time())
    wait_for(lambda: int(time.time()) > now, timeout=2,
             message="the next second")


def pull_in_turn(daemon, images):
    """Pull each image in its own second, so their ages are ordered."""
    for image in images:
        next_second()
        pull_and_settle(daemon, image)


def layer_of(image):
    return list(image.blobs)[-1]


def restart(daemon, watch_gatecache):
    """Restart gatecache, which writes its queued access times at exit."""
    assert daemon.stop() == 0
    daemon.start()
    watch_gatecache(daemon)


# Eviction removes whole records in last-access order, and records of one
# second in digest order, so the small manifest and config of an evicted
# image may outlive its layer. The checks below name the layers that must
# go and the content that must stay.


def test_oldest_layer_evicted_first(daemon, images):
    first, second, third = images
    pull_in_turn(daemon, images)

    assert not is_stored(daemon, layer_of(first))
    for image in (second, third):
        for digest in image.digests:
            assert is_stored(daemon, digest), f"{digest} of {image.repository}"


def test_evicted_layer_fetched_again(daemon, images, upstream):
    first, second, third = images
    pull_in_turn(daemon, images)
    next_second()
    start = len(upstream.requests())
    access_start = len(daemon.access_entries())
    layer_path = f"/v2/{first.repository}/blobs/{layer_of(first)}"

    pull_and_settle(daemon, first, protocol="h2", digests=[layer_of(first)])
    layer_gets = upstream.wait_requests(
        lambda r: r.method == "GET" and r.path == layer_path, start=start)
    entries = daemon.wait_entries(lambda e: e.path == layer_path, 1,
                                  start=access_start)

    assert len(layer_gets) == 1
    assert [(e.status, e.cache) for e in entries] == [(200, "miss")]
    assert not is_stored(daemon, layer_of(second))
    for digest in third.digests:
        assert is_stored(daemon, digest), f"{digest} of {third.repository}"


def test_evicted_manifest_stored_again(daemon, images):
    first, second, third = images
    # The first manifest gets a second of its own, so it is the oldest
    # record and the first to go.
    next_second()
    fetch_manifest(daemon, first)
    wait_for(lambda: is_stored(daemon, first.manifest_digest),
             timeout=SETTLE_TIMEOUT, message="the first manifest stored")
    next_second()
    fetch_blobs(daemon, first)
    pull_in_turn(daemon, [second, third])
    assert not is_stored(daemon, first.manifest_digest)
    next_second()

    fetch_manifest(daemon, first)

    wait_for(lambda: is_stored(daemon, first.manifest_digest),
             timeout=SETTLE_TIMEOUT,
             message=f"{first.manifest_digest} stored again")


def test_recent_hit_protects_blobs(daemon, images):
    first, second, third = images
    pull_in_turn(daemon, [first, second])
    next_second()
    # Reading the first image makes the second the least recently used.
    pull(daemon, first)

    pull_in_turn(daemon, [third])

    assert not is_stored(daemon, layer_of(second))
    for digest in first.blobs:
        assert is_stored(daemon, digest), f"{digest} of {first.repository}"


def test_hit_written_at_exit_protects_blobs(daemon, images,
                                            watch_gatecache):
    first, second, third = images
    pull_in_turn(daemon, [first, second])
    next_second()
    pull(daemon, first)
    restart(daemon, watch_gatecache)

    pull_in_turn(daemon, [third])

    assert not is_stored(daemon, layer_of(second))
    for digest in first.blobs:
        assert is_stored(daemon, digest), f"{digest} of {first.repository}"


def test_tag_pull_protects_manifest(daemon, images, watch_gatecache):
    first, second, third = images
    pull_in_turn(daemon, [first, second])
    next_second()
    pull(daemon, first)
    restart(daemon, watch_gatecache)

    pull_in_turn(daemon, [third])

    assert not is_stored(daemon, layer_of(second))
    assert is_stored(daemon, first.manifest_digest)
