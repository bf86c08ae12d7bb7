"""HEAD and Range requests for manifests and blobs, over HTTP/1.1 and h2."""

import pytest

from support.clients import request
from support.images import MEDIA_TYPE_MANIFEST

PROTOCOLS = ["http/1.1", "h2"]


@pytest.fixture(scope="module")
def blob(big_image, gatecache):
    """The busybox layer: its path, bytes and digest, cached by one GET."""
    digest = big_image.built.layers[0]
    path = f"/v2/{big_image.repository}/blobs/{digest}"
    reply = request("http/1.1", gatecache.host, path, gatecache.ca_cert)
    assert reply.status == 200
    return path, big_image.blob(digest), digest


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_base_endpoint_answers(gatecache, protocol):
    reply = request(protocol, gatecache.host, "/v2/", gatecache.ca_cert)
    assert reply.status == 200
    assert reply.protocol == protocol


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("reference", ["tag", "digest"])
def test_head_manifest_describes_it(gatecache, big_image, protocol, reference):
    digest = big_image.built.manifest_digest
    name = big_image.tag if reference == "tag" else digest
    reply = request(protocol, gatecache.host,
                    f"/v2/{big_image.repository}/manifests/{name}",
                    gatecache.ca_cert, method="HEAD",
                    headers={"Accept": MEDIA_TYPE_MANIFEST})
    assert reply.status == 200
    assert reply.header("content-length") == str(len(big_image.blob(digest)))
    assert reply.header("docker-content-digest") == digest
    assert reply.header("content-type") == MEDIA_TYPE_MANIFEST
    assert reply.body == b""


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_get_manifest_by_digest_returns_bytes(gatecache, big_image, protocol):
    digest = big_image.built.manifest_digest
    reply = request(protocol, gatecache.host,
                    f"/v2/{big_image.repository}/manifests/{digest}",
                    gatecache.ca_cert, headers={"Accept": MEDIA_TYPE_MANIFEST})
    assert reply.status == 200
    assert reply.body == big_image.blob(digest)
    assert reply.header("docker-content-digest") == digest


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_head_blob_describes_it(gatecache, blob, protocol):
    path, data, digest = blob
    reply = request(protocol, gatecache.host, path, gatecache.ca_cert,
                    method="HEAD")
    assert reply.status == 200
    assert reply.header("content-length") == str(len(data))
    assert reply.header("docker-content-digest") == digest
    assert reply.header("content-type") == "application/octet-stream"
    assert reply.body == b""


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_get_blob_returns_bytes(gatecache, blob, protocol):
    path, data, digest = blob
    reply = request(protocol, gatecache.host, path, gatecache.ca_cert)
    assert reply.status == 200
    assert reply.body == data
    assert reply.header("docker-content-digest") == digest


# (id, Range header, first byte, last byte) where a negative first byte
# counts from the end, as a suffix range does.
RANGES = [
    ("first-ten-bytes", "bytes=0-9", 0, 9),
    ("middle", "bytes=1000-1999", 1000, 1999),
    ("open-ended", "bytes=1000-", 1000, None),
    ("suffix", "bytes=-100", -100, None),
    ("last-byte-past-end", "bytes=5-999999999", 5, None),
    ("suffix-longer-than-blob", "bytes=-999999999", 0, None),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("header, first, last",
                         [pytest.param(*r[1:], id=r[0]) for r in RANGES])
def test_range_returns_partial_content(gatecache, blob, protocol, header,
                                       first, last):
    path, data, _ = blob
    size = len(data)
    first = max(size + first, 0) if first < 0 else first
    last = size - 1 if last is None else last
    reply = request(protocol, gatecache.host, path, gatecache.ca_cert,
                    headers={"Range": header})
    assert reply.status == 206
    assert reply.header("content-range") == f"bytes {first}-{last}/{size}"
    assert reply.header("content-length") == str(last - first + 1)
    assert reply.body == data[first:last + 1]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unsatisfiable_range_gets_416(gatecache, blob, protocol):
    path, data, _ = blob
    reply = request(protocol, gatecache.host, path, gatecache.ca_cert,
                    headers={"Range": f"bytes={len(data)}-"})
    assert reply.status == 416
    assert reply.header("content-range") == f"bytes */{len(data)}"
    assert reply.error_codes() == ["RANGE_INVALID"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=0-9, -100"])
def test_several_ranges_get_whole_blob(gatecache, blob, protocol, header):
    """gatecache sends no multipart body, so it ignores several ranges."""
    path, data, _ = blob
    reply = request(protocol, gatecache.host, path, gatecache.ca_cert,
                    headers={"Range": header})
    assert reply.status == 200
    assert reply.header("content-range") is None
    assert reply.header("content-length") == str(len(data))
    assert reply.body == data


def test_access_log_records_protocol(gatecache, blob):
    path = blob[0]
    start = len(gatecache.access_entries())
    for protocol in PROTOCOLS:
        request(protocol, gatecache.host, path, gatecache.ca_cert,
                method="HEAD")
    entries = gatecache.wait_entries(lambda e: e.path == path, 2, start=start)
    assert [(e.protocol, e.method) for e in entries] == [
        ("http/1.1", "HEAD"), ("h2", "HEAD")]
    assert [e.cache for e in entries] == ["hit", "hit"]


def test_truncated_store_file_is_fetched_again(gatecache, blob):
    """A stored file cut short on disk is dropped and fetched again."""
    path, data, digest = blob
    files = gatecache.blob_files(digest)
    assert len(files) == 1
    with open(files[0], "r+b") as stored:
        stored.truncate(len(data) // 2)

    reply = request("http/1.1", gatecache.host, path, gatecache.ca_cert)

    assert reply.status == 200
    assert reply.body == data
    assert reply.header("docker-content-digest") == digest
