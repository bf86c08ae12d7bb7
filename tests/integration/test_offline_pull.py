"""Pulls succeed from gatecache's cache while the upstream is stopped."""

import pytest

from support.containerd import Containerd
from support.net import LOOPBACK, tls_ready


@pytest.fixture(scope="module")
def upstream_stopped(session_dir, mirror_hosts, big_image, multi_image,
                     gatecache, registry):
    """Warm the cache with one containerd, then stop the upstream."""
    warm = Containerd(session_dir / "warm-containerd")
    try:
        warm.start()
        for image in (big_image, multi_image):
            warm.pull(image.reference, mirror_hosts)
    finally:
        warm.stop()
    registry.stop()
    assert not tls_ready(LOOPBACK, registry.port), "upstream still serving"


def pulled_entries(gatecache, image, start):
    prefix = f"/v2/{image.repository}/"
    blob_paths = {f"{prefix}blobs/{d}" for d in image.platform_blobs()}
    gatecache.wait_entries(lambda e: e.path in blob_paths, len(blob_paths),
                           start=start)
    return [e for e in gatecache.access_entries()[start:]
            if e.path.startswith(prefix)]


@pytest.mark.parametrize("image_fixture, by_digest", [
    ("big_image", False),
    ("big_image", True),
    ("multi_image", False),
    ("multi_image", True),
])
def test_pull_from_cache_with_upstream_stopped(
        request, upstream_stopped, containerd, mirror_hosts, gatecache,
        image_fixture, by_digest):
    image = request.getfixturevalue(image_fixture)
    reference = image.digest_reference if by_digest else image.reference
    start = len(gatecache.access_entries())

    containerd.pull(reference, mirror_hosts)
    output = containerd.run_container(reference, "offline", "/bin/busybox",
                                      "echo", "ran offline")
    entries = pulled_entries(gatecache, image, start)

    assert output.strip() == "ran offline"
    for entry in entries:
        assert entry.status == 200, entry.line
        assert entry.cache in ("hit", "stale"), entry.line


def test_restart_keeps_cache(upstream_stopped, containerd, mirror_hosts,
                             gatecache, big_image, watch_gatecache):
    exit_status = gatecache.stop()
    gatecache.start()
    watch_gatecache(gatecache)
    start = len(gatecache.access_entries())

    containerd.pull(big_image.reference, mirror_hosts)
    entries = pulled_entries(gatecache, big_image, start)

    assert exit_status == 0
    for entry in entries:
        assert entry.status == 200, entry.line
        assert entry.cache in ("hit", "stale"), entry.line
