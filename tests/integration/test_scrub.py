"""A stored blob whose bytes change on disk is found and fetched again.

The test changes one byte of a cached blob in place, keeping its size,
which the serving path cannot notice. The daemon's scrubber re-hashes the
store every second here, removes the damaged file and its index record,
and the next request fetches the blob from the upstream again.
"""

import hashlib
import random

import pytest

from support.clients import request
from support.gatecache import Gatecache, Upstream
from support.procs import wait_for
from support.static_registry import StaticRegistry

REPOSITORY = "scrub/image"
BLOB_BYTES = 2 << 20
# The scrubber waits this long after the store is created, then re-hashes
# everything this often.
SCRUB_INTERVAL = "1s"
SCRUB_TIMEOUT = 20


@pytest.fixture(scope="module")
def upstream(test_ca):
    cert, key = test_ca.issue_server("scrub-registry")
    registry = StaticRegistry(cert, key)
    try:
        yield registry.start()
    finally:
        registry.stop()


@pytest.fixture
def daemon(gatecache_bin, tmp_path, upstream, test_ca, watch_gatecache):
    daemon = Gatecache(
        gatecache_bin,
        tmp_path / "gatecache",
        [Upstream(upstream.host, upstream.url, str(test_ca.cert))],
        default_upstream=upstream.host,
        name="gatecache-scrub",
        storage_options={"scrub_interval": SCRUB_INTERVAL},
    )
    try:
        daemon.start()
        watch_gatecache(daemon)
        yield daemon
    finally:
        daemon.stop()


def fetch_blob(daemon, digest):
    """GET the blob through gatecache; return its status and digest."""
    hasher = hashlib.sha256()
    reply = request("http/1.1", daemon.host,
                    f"/v2/{REPOSITORY}/blobs/{digest}", daemon.ca_cert,
                    body_sink=hasher.update)
    return reply.status, "sha256:" + hasher.hexdigest()


def blob_gets(upstream, digest):
    return [r for r in upstream.requests()
            if r.method == "GET" and r.path.endswith(digest)]


def flip_byte(path, offset):
    with open(path, "r+b") as file:
        file.seek(offset)
        byte = file.read(1)[0]
        file.seek(offset)
        file.write(bytes([byte ^ 0x01]))


def test_scrub_replaces_damaged_blob(daemon, upstream):
    data = random.Random("scrub").randbytes(BLOB_BYTES)
    digest = upstream.add_blob(REPOSITORY, data)
    assert fetch_blob(daemon, digest) == (200, digest)
    wait_for(lambda: daemon.blob_files(digest), timeout=10,
             message=f"{digest} in the store")
    [stored] = daemon.blob_files(digest)
    assert len(blob_gets(upstream, digest)) == 1

    flip_byte(stored, BLOB_BYTES // 2)
    assert stored.stat().st_size == BLOB_BYTES

    log = daemon.process.stderr_path
    wait_for(lambda: f"stored content {digest} is damaged" in log.read_text(),
             timeout=SCRUB_TIMEOUT, message="the scrubber's damage report")
    wait_for(lambda: not daemon.blob_files(digest), timeout=10,
             message=f"{digest} removed from the store")

    assert fetch_blob(daemon, digest) == (200, digest)
    assert len(blob_gets(upstream, digest)) == 2
    wait_for(lambda: daemon.blob_files(digest), timeout=10,
             message=f"{digest} stored again")
    [again] = daemon.blob_files(digest)
    assert hashlib.sha256(again.read_bytes()).hexdigest() == digest[7:]


def test_scrub_keeps_intact_blobs(daemon, upstream):
    data = random.Random("intact").randbytes(BLOB_BYTES)
    digest = upstream.add_blob(REPOSITORY, data)
    assert fetch_blob(daemon, digest) == (200, digest)
    wait_for(lambda: daemon.blob_files(digest), timeout=10,
             message=f"{digest} in the store")

    log = daemon.process.stderr_path
    wait_for(lambda: log.read_text().count("scrub pass finished") >= 2,
             timeout=SCRUB_TIMEOUT, message="two scrub passes")
    assert "is damaged" not in log.read_text()
    assert daemon.blob_files(digest)
    assert fetch_blob(daemon, digest) == (200, digest)
    assert len(blob_gets(upstream, digest)) == 1
