"""skopeo copies through gatecache match copies straight from the upstream."""

import hashlib

import pytest


def directory_digests(directory):
    """Return {file name: sha256 hex} for every file of a skopeo dir: copy."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


def copy_both_ways(skopeo, tmp_path, image, gatecache, gatecache_certs,
                   upstream_certs, all_images):
    direct = tmp_path / "direct"
    mirrored = tmp_path / "mirrored"
    skopeo.copy(f"docker://{image.reference}", f"dir:{direct}",
                src_cert_dir=upstream_certs, all_images=all_images)
    skopeo.copy(
        f"docker://{gatecache.host}/{image.repository}:{image.tag}",
        f"dir:{mirrored}", src_cert_dir=gatecache_certs, all_images=all_images,
    )
    return directory_digests(direct), directory_digests(mirrored)


def blob_get_matcher(image):
    paths = {f"/v2/{image.repository}/blobs/{d}" for d in image.built.blobs}
    return lambda entry: entry.method == "GET" and entry.path in paths


@pytest.mark.parametrize("image_fixture, all_images", [
    ("big_image", False),
    ("multi_image", True),
])
def test_copy_through_gatecache_matches_upstream(
        request, tmp_path, skopeo, gatecache, gatecache_certs, upstream_certs,
        image_fixture, all_images):
    image = request.getfixturevalue(image_fixture)
    direct, mirrored = copy_both_ways(skopeo, tmp_path, image, gatecache,
                                      gatecache_certs, upstream_certs,
                                      all_images)
    expected_blobs = {d.split(":", 1)[1] for d in image.built.blobs}

    assert mirrored == direct
    assert "sha256:" + mirrored["manifest.json"] == image.built.manifest_digest
    assert expected_blobs <= set(mirrored)
    for name, digest in mirrored.items():
        if name in expected_blobs:
            assert digest == name, f"blob file {name} has digest {digest}"


def test_second_copy_serves_blobs_from_cache(
        tmp_path, skopeo, gatecache, gatecache_certs, big_image, registry):
    source = f"docker://{gatecache.host}/{big_image.repository}:{big_image.tag}"
    is_blob_get = blob_get_matcher(big_image)
    blob_count = len(big_image.built.blobs)
    earlier = len([e for e in gatecache.access_entries() if is_blob_get(e)])
    skopeo.copy(source, f"dir:{tmp_path / 'first'}",
                src_cert_dir=gatecache_certs)
    # Every line of the first copy must be written before `start` is taken,
    # or a late one would count as part of the second copy.
    gatecache.wait_entries(is_blob_get, earlier + blob_count)
    start = len(gatecache.access_entries())
    upstream_start = len(registry.requests())

    skopeo.copy(source, f"dir:{tmp_path / 'second'}",
                src_cert_dir=gatecache_certs)
    second = gatecache.wait_entries(is_blob_get, blob_count, start=start)
    upstream_blob_gets = [
        r for r in registry.requests()[upstream_start:]
        if r.method == "GET" and "/blobs/" in r.uri
    ]

    assert [e.cache for e in second] == ["hit"] * blob_count
    assert [e.status for e in second] == [200] * blob_count
    assert upstream_blob_gets == []
    assert (directory_digests(tmp_path / "second")
            == directory_digests(tmp_path / "first"))
