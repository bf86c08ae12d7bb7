"""Invalid and unsupported requests get OCI errors and never go upstream."""

import pytest

from support.clients import request

PROTOCOLS = ["http/1.1", "h2"]

VALID_DIGEST = "sha256:" + "0" * 64

# The cached blob that Range cases ask for; filled in by `cached_blob`.
CACHED = "{cached}"

# (id, method, target, request headers, status, OCI error code). Every
# target is sent byte for byte, without normalisation by the client.
CASES = [
    ("uppercase-name", "GET", "/v2/Library/app/manifests/v1", {}, 400,
     "NAME_INVALID"),
    ("empty-component", "GET", "/v2/a//b/manifests/v1", {}, 400,
     "NAME_INVALID"),
    ("dot-dot-after-v2", "GET", "/v2/../", {}, 400, "NAME_INVALID"),
    ("dot-dot-to-root", "GET", "/v2/../../etc/passwd", {}, 400,
     "NAME_INVALID"),
    ("dot-dot-in-name", "GET", "/v2/a/../b/manifests/v1", {}, 400,
     "NAME_INVALID"),
    ("encoded-dot-dot", "GET", "/v2/a/%2e%2e/b/manifests/v1", {}, 400,
     "NAME_INVALID"),
    ("encoded-dot-dot-upper", "GET", f"/v2/a/%2E%2E/blobs/{VALID_DIGEST}", {},
     400, "NAME_INVALID"),
    ("encoded-slash", "GET", "/v2/a%2Fb/manifests/v1", {}, 400,
     "NAME_INVALID"),
    ("encoded-slash-lower", "GET", "/v2/a%2fb/blobs/" + VALID_DIGEST, {}, 400,
     "NAME_INVALID"),
    ("name-too-long", "GET", "/v2/" + "a" * 256 + "/manifests/v1", {}, 400,
     "NAME_INVALID"),
    ("unknown-ns", "GET", "/v2/a/b/manifests/v1?ns=registry.invalid", {}, 403,
     "DENIED"),
    ("unknown-ns-port", "GET", f"/v2/a/b/blobs/{VALID_DIGEST}?ns=127.0.0.1:1",
     {}, 403, "DENIED"),
    ("digest-too-short", "GET", "/v2/a/b/blobs/sha256:abc", {}, 400,
     "DIGEST_INVALID"),
    ("digest-uppercase-hex", "GET", "/v2/a/b/blobs/sha256:" + "A" * 64, {},
     400, "DIGEST_INVALID"),
    ("digest-not-hex", "GET", "/v2/a/b/blobs/sha256:" + "g" * 64, {}, 400,
     "DIGEST_INVALID"),
    ("digest-unknown-algorithm", "GET", "/v2/a/b/blobs/md5:" + "0" * 32, {},
     400, "DIGEST_INVALID"),
    ("manifest-digest-invalid", "GET", "/v2/a/b/manifests/sha256:xyz", {},
     400, "DIGEST_INVALID"),
    ("start-upload", "POST", "/v2/a/b/blobs/uploads/", {}, 405,
     "UNSUPPORTED"),
    ("upload-chunk", "PATCH", "/v2/a/b/blobs/uploads/0123", {}, 405,
     "UNSUPPORTED"),
    ("put-manifest", "PUT", "/v2/a/b/manifests/v1", {}, 405, "UNSUPPORTED"),
    ("delete-manifest", "DELETE", f"/v2/a/b/manifests/{VALID_DIGEST}", {},
     405, "UNSUPPORTED"),
    ("delete-blob", "DELETE", f"/v2/a/b/blobs/{VALID_DIGEST}", {}, 405,
     "UNSUPPORTED"),
    ("range-not-a-number", "GET", CACHED, {"Range": "bytes=abc"}, 416,
     "RANGE_INVALID"),
    ("range-end-before-start", "GET", CACHED, {"Range": "bytes=10-1"}, 416,
     "RANGE_INVALID"),
    ("range-empty-spec", "GET", CACHED, {"Range": "bytes="}, 416,
     "RANGE_INVALID"),
    ("range-malformed-second-spec", "GET", CACHED, {"Range": "bytes=0-1,x"},
     416, "RANGE_INVALID"),
]


@pytest.fixture(scope="module")
def cached_blob(big_image, gatecache, registry):
    """Cache one blob, then record how much the upstream has logged.

    Returns (blob path, upstream request count, upstream access log line
    count, gatecache access log line count).
    """
    digest = big_image.built.layers[0]
    path = f"/v2/{big_image.repository}/blobs/{digest}"
    reply = request("http/1.1", gatecache.host, path, gatecache.ca_cert)
    assert reply.status == 200
    registry.wait_requests(lambda r: r.uri == path)
    gatecache.wait_entries(lambda e: e.path == path, 1)
    return (path, len(registry.requests()), len(registry.access_lines()),
            len(gatecache.access_entries()))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "method, target, headers, status, code",
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_request_gets_oci_error(cached_blob, gatecache, protocol, method,
                                    target, headers, status, code):
    target = target.replace(CACHED, cached_blob[0])
    reply = request(protocol, gatecache.host, target, gatecache.ca_cert,
                    method=method, headers=headers)
    assert reply.status == status
    assert reply.error_codes() == [code]
    assert reply.header("content-type").startswith("application/json")


def test_unsatisfiable_range_names_size(cached_blob, gatecache, big_image):
    size = len(big_image.blob(big_image.built.layers[0]))
    reply = request("http/1.1", gatecache.host, cached_blob[0],
                    gatecache.ca_cert, headers={"Range": f"bytes={size}-"})
    assert reply.status == 416
    assert reply.header("content-range") == f"bytes */{size}"


def test_rejections_never_reach_upstream(cached_blob, registry):
    _, requests_before, lines_before, _ = cached_blob
    assert registry.requests()[requests_before:] == []
    assert registry.access_lines()[lines_before:] == []


def test_access_log_lists_every_rejection(cached_blob, gatecache):
    expected = len(CASES) * len(PROTOCOLS) + 1
    entries = gatecache.wait_entries(lambda e: True, expected,
                                     start=cached_blob[3])
    assert [e for e in entries if e.status < 400] == []
    assert len(entries) == expected
