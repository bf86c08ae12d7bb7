"""Checks of the test helpers themselves, against docker-registry directly.

These run without gatecache, so a failure here points at the machine or the
helpers rather than at the daemon.
"""

import hashlib
import json

import pytest

from support.clients import IncompleteResponse, h1_request
from support.containerd import write_hosts_toml
from support.fault_proxy import FaultProxy
from support.images import BIG_IMAGE_MIN_BYTES, MEDIA_TYPE_INDEX, read_blob


def test_big_image_has_three_large_layers(images):
    layers = images.big.layers
    sizes = [len(read_blob(images.layout, digest)) for digest in layers]
    assert len(layers) >= 3
    assert sum(sizes) >= BIG_IMAGE_MIN_BYTES


def test_index_lists_amd64_and_arm64(images):
    index = json.loads(read_blob(images.layout, images.multi.manifest_digest))
    platforms = sorted(
        (m["platform"]["os"], m["platform"]["architecture"])
        for m in index["manifests"]
    )
    assert images.multi.media_type == MEDIA_TYPE_INDEX
    assert platforms == [("linux", "amd64"), ("linux", "arm64")]


def test_skopeo_copy_from_upstream_keeps_digests(tmp_path, skopeo, big_image,
                                                 upstream_certs):
    destination = tmp_path / "copy"
    skopeo.copy(f"docker://{big_image.reference}", f"dir:{destination}",
                src_cert_dir=upstream_certs)
    manifest = (destination / "manifest.json").read_bytes()
    copied = sorted(p.name for p in destination.iterdir()
                    if p.name not in ("manifest.json", "version"))
    expected = sorted(d.split(":", 1)[1] for d in big_image.built.blobs)
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == (
        big_image.built.manifest_digest)
    assert copied == expected


def test_registry_log_lists_blob_get(registry, big_image, test_ca):
    digest = big_image.built.layers[0]
    path = f"/v2/{big_image.repository}/blobs/{digest}"
    start = len(registry.requests())
    host, port = registry.host.rsplit(":", 1)
    reply = h1_request(host, int(port), "GET", path, test_ca.cert)
    logged = registry.wait_requests(lambda r: r.uri == path, start=start)
    assert reply.status == 200
    assert [(r.method, r.status) for r in logged] == [("GET", 200)]


def test_containerd_pulls_upstream_and_runs(tmp_path, containerd, registry,
                                            big_image, test_ca):
    hosts = write_hosts_toml(tmp_path / "hosts", registry.host, registry.url,
                             test_ca.cert)
    containerd.pull(big_image.reference, hosts)
    output = containerd.run_container(
        big_image.reference, "support-check", "/bin/busybox", "echo",
        "container ran")
    assert output.strip() == "container ran"


@pytest.fixture(scope="module")
def fault_proxy(session_dir, test_ca, registry):
    cert, key = test_ca.issue_server("fault-proxy")
    proxy = FaultProxy(session_dir / "fault-proxy", cert, key, registry.host,
                       test_ca.cert, test_ca.cert)
    try:
        yield proxy.start()
    finally:
        proxy.stop()


def fetch_through(proxy, image, digest, ca):
    host, port = proxy.host.rsplit(":", 1)
    return h1_request(host, int(port), "GET",
                      f"/v2/{image.repository}/blobs/{digest}", ca)


def test_fault_proxy_passes_blob(fault_proxy, big_image, test_ca):
    digest = big_image.built.layers[0]
    fault_proxy.set_rules({})
    reply = fetch_through(fault_proxy, big_image, digest, test_ca.cert)
    assert reply.status == 200
    assert reply.body == big_image.blob(digest)


def test_fault_proxy_corrupts_one_byte(fault_proxy, big_image, test_ca):
    digest = big_image.built.layers[0]
    fault_proxy.set_rules({digest: "corrupt"})
    reply = fetch_through(fault_proxy, big_image, digest, test_ca.cert)
    original = big_image.blob(digest)
    differing = [i for i, (a, b) in enumerate(zip(reply.body, original))
                 if a != b]
    assert reply.status == 200
    assert len(reply.body) == len(original)
    assert differing == [len(original) // 2]


def test_fault_proxy_truncates_every_blob(fault_proxy, big_image, test_ca):
    digest = big_image.built.layers[1]
    fault_proxy.set_rules({"*": "truncate"})
    with pytest.raises(IncompleteResponse):
        fetch_through(fault_proxy, big_image, digest, test_ca.cert)
    logged = fault_proxy.wait_requests(
        lambda r: r["path"].endswith(digest) and r["rule"] == "truncate")
    assert [r["sent"] for r in logged] == [len(big_image.blob(digest)) // 2]


def test_fault_proxy_fails_with_503(fault_proxy, big_image, test_ca):
    digest = big_image.built.layers[2]
    fault_proxy.set_rules({digest: "fail", "*": "truncate"})
    reply = fetch_through(fault_proxy, big_image, digest, test_ca.cert)
    assert reply.status == 503
    assert reply.error_codes() == ["UNAVAILABLE"]
