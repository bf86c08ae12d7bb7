"""Real manifest documents pass through gatecache unchanged.

The upstream is a StaticRegistry that serves the files in
tests/fixtures/manifests with the Content-Type and Docker-Content-Digest a
registry sends, including upstreams that lie about the digest or ignore
Accept. The last tests stop the upstream and restart gatecache, so what
they get comes from the store and the index on disk.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.clients import IncompleteResponse, request
from support.gatecache import Gatecache, Upstream
from support.net import LOOPBACK, tls_ready
from support.procs import wait_for
from support.static_registry import StaticRegistry, sha256_digest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "manifests"

PROTOCOLS = ["http/1.1", "h2"]

SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

# What containerd sends for a pull: every type it can use.
PULL_ACCEPT = ", ".join([SCHEMA2, MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX,
                         "*/*"])

# The digest that the referrers tag schema turns into a tag: the subject of
# the artifact fixture, with ":" replaced by "-".
SUBJECT_HEX = "dfae8f425735a5e3a72e40d6609e03079995511d48157c74d54801ff4430491e"

# Registries name a schema 1 signed manifest by the sha256 of its JWS
# payload, the body without the `signatures` block.
SCHEMA1_PAYLOAD_DIGEST = (
    "sha256:7364fea9d84ee548ab67d4c46c6006289800c98de3fbf8c0a97138dfcc23f000")


@dataclass(frozen=True)
class Fixture:
    """A fixture file as the upstream serves it under a tag."""

    file: str
    repository: str
    tag: str
    media_type: str
    # The digest the upstream announces; None means the sha256 of the body.
    announced: str = None
    # Bytes appended to the file, which make a document no other test uses.
    suffix: bytes = b""

    @property
    def body(self):
        return (FIXTURES / self.file).read_bytes() + self.suffix

    @property
    def digest(self):
        return self.announced or sha256_digest(self.body)

    @property
    def label(self):
        return f"{self.repository}:{self.tag}"


# Files whose sha256 is the digest the registry announced, with that digest
# and size as their sources document them.
BYTE_EXACT = [
    (Fixture("docker-schema2-manifest-mcr-dotnet-runtime-linux-amd64.json",
             "fixtures/dotnet-runtime", "7.0-amd64", SCHEMA2),
     "sha256:2dfb924c56bcd4686574471abdb42134a53e9179947b1c598639f56d97161fdd",
     1160),
    (Fixture("oci-artifact-with-artifacttype-and-subject.json",
             "fixtures/artifact", "sbom", OCI_MANIFEST),
     "sha256:30cc0c708132298dd05b03e22eab4ecf99aa0ed0ce9c4904c2b5895707381576",
     616),
    # The referrers fallback index, under a tag shaped like a digest.
    (Fixture("oci-referrers-index-artifacttype.json", "fixtures/artifact",
             f"sha256-{SUBJECT_HEX}", OCI_INDEX),
     "sha256:70a9aadde0b56e4dc849ae4436bebcf019726539bf68143af937e3ab556c5234",
     543),
]

HELM = Fixture("helm-chart-manifest.json", "fixtures/helm", "0.0.5",
               OCI_MANIFEST)
NESTED_INDEX = Fixture("oci-index-nested-index-spec-example.json",
                       "fixtures/nested", "v1", OCI_INDEX)
WINDOWS = Fixture("windows-foreign-layers-manifest.json", "fixtures/windows",
                  "10.0.14393.1770", SCHEMA2)
# A schema 1 manifest from an upstream that names it by the sha256 of the
# whole body, and the same body from one that names it as registries do.
SCHEMA1 = Fixture("schema1-signed-manifest.json", "fixtures/schema1",
                  "latest", SCHEMA1_SIGNED)
SCHEMA1_PAYLOAD = Fixture("schema1-signed-manifest.json",
                          "fixtures/schema1-payload", "latest",
                          SCHEMA1_SIGNED, announced=SCHEMA1_PAYLOAD_DIGEST)

PASS_THROUGH = [HELM, NESTED_INDEX, WINDOWS, SCHEMA1]

# One tag with a Docker manifest list and an OCI index, chosen by Accept.
PER_ACCEPT = [
    Fixture("mcr-manifest-list-linux-and-windows.json",
            "fixtures/dotnet-runtime", "7.0", MANIFEST_LIST),
    Fixture("oci-index-nested-index-spec-example.json",
            "fixtures/dotnet-runtime", "7.0", OCI_INDEX),
]

# A body that no fixture has, announced under the digest of other bytes.
LYING_REPOSITORY = "fixtures/lying"
LYING_TAG = "moved"
LYING_BODY = (FIXTURES / BYTE_EXACT[0][0].file).read_bytes() + b" "
LYING_DIGEST = sha256_digest(b"bytes the upstream does not send")

# Schema 2 manifests that no other test fetches, one per client protocol,
# each with bytes of its own so that gatecache has not stored them before.
UNACCEPTED = {
    protocol: Fixture(BYTE_EXACT[0][0].file, "fixtures/unaccepted",
                      f"tag{number}", SCHEMA2, suffix=b"\n" * number)
    for number, protocol in enumerate(PROTOCOLS, start=1)
}

ALL_FIXTURES = ([f for f, _, _ in BYTE_EXACT] + PASS_THROUGH + PER_ACCEPT
                + [SCHEMA1_PAYLOAD] + list(UNACCEPTED.values()))


@pytest.fixture(scope="module")
def upstream(test_ca):
    cert, key = test_ca.issue_server("static-registry")
    registry = StaticRegistry(cert, key)
    for fixture in ALL_FIXTURES:
        registry.add_manifest(fixture.repository, fixture.body,
                              fixture.media_type, tags=[fixture.tag],
                              digest=fixture.announced)
    registry.add_manifest(LYING_REPOSITORY, LYING_BODY, SCHEMA2,
                          tags=[LYING_TAG], digest=LYING_DIGEST)
    try:
        yield registry.start()
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def daemon(gatecache_bin, session_dir, upstream, test_ca, watch_gatecache):
    daemon = Gatecache(
        gatecache_bin,
        session_dir / "gatecache-fixtures",
        [Upstream(upstream.host, upstream.url, str(test_ca.cert))],
        default_upstream=upstream.host,
        name="gatecache-fixtures",
    )
    try:
        daemon.start()
        watch_gatecache(daemon)
        yield daemon
    finally:
        daemon.stop()


def get_manifest(daemon, protocol, fixture, reference=None, accept=None,
                 method="GET"):
    reference = reference or fixture.tag
    return request(protocol, daemon.host,
                   f"/v2/{fixture.repository}/manifests/{reference}",
                   daemon.ca_cert, method=method,
                   headers={"Accept": accept or fixture.media_type})


def check_served(reply, fixture, method="GET"):
    """Assert that `reply` carries the fixture's bytes and descriptors."""
    body = fixture.body
    assert reply.status == 200, reply.body
    if method == "GET":
        assert reply.body == body
    else:
        assert reply.body == b""
    assert reply.header("content-type") == fixture.media_type
    assert reply.header("docker-content-digest") == fixture.digest
    assert reply.header("content-length") == str(len(body))


def fixture_params(fixtures):
    return [pytest.param(f, id=f.file.removesuffix(".json")) for f in fixtures]


def test_fixture_files_match_documented_digests():
    for fixture, digest, size in BYTE_EXACT:
        body = fixture.body
        assert sha256_digest(body) == digest, fixture.file
        assert len(body) == size, fixture.file


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("by", ["tag", "digest"])
@pytest.mark.parametrize("fixture", fixture_params(f for f, _, _ in BYTE_EXACT))
def test_byte_exact_manifest_served_unchanged(daemon, fixture, by, method,
                                              protocol):
    reference = fixture.tag if by == "tag" else fixture.digest
    reply = get_manifest(daemon, protocol, fixture, reference, method=method)
    check_served(reply, fixture, method)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("fixture", fixture_params(PASS_THROUGH))
def test_manifest_passes_through_unchanged(daemon, fixture, protocol):
    for reference in (fixture.tag, fixture.digest):
        reply = get_manifest(daemon, protocol, fixture, reference)
        check_served(reply, fixture)


def test_helm_chart_keeps_upstream_content_type(daemon):
    """A body without `mediaType` is served with the upstream's type."""
    reply = get_manifest(daemon, "http/1.1", HELM, accept=PULL_ACCEPT)
    assert b'"mediaType"' not in HELM.body.split(b'"config"')[0]
    assert reply.status == 200
    assert reply.header("content-type") == OCI_MANIFEST
    assert reply.body == HELM.body


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_schema1_with_payload_digest_passes_through(daemon, by):
    reference = SCHEMA1_PAYLOAD.tag if by == "tag" else SCHEMA1_PAYLOAD.digest
    reply = get_manifest(daemon, "http/1.1", SCHEMA1_PAYLOAD, reference)
    check_served(reply, SCHEMA1_PAYLOAD)


def test_tag_shaped_like_digest_is_a_tag(daemon, upstream):
    fixture = BYTE_EXACT[2][0]
    tag_path = f"/v2/{fixture.repository}/manifests/{fixture.tag}"
    start = len(upstream.requests())

    reply = get_manifest(daemon, "http/1.1", fixture)

    check_served(reply, fixture)
    assert upstream.wait_requests(lambda r: r.path == tag_path, start=start)


def check_manifest_unknown(reply, fixture):
    assert reply.status == 404
    assert reply.error_codes() == ["MANIFEST_UNKNOWN"]
    assert reply.header("content-type") != fixture.media_type
    assert fixture.body not in reply.body


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unaccepted_type_fetched_gets_404(daemon, protocol):
    """The upstream ignores Accept and sends schema 2 to an OCI client."""
    fixture = UNACCEPTED[protocol]
    reply = get_manifest(daemon, protocol, fixture, accept=OCI_MANIFEST)
    check_manifest_unknown(reply, fixture)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unaccepted_type_stored_gets_404(daemon, protocol):
    fixture = UNACCEPTED[protocol]
    assert get_manifest(daemon, protocol, fixture).status == 200
    reply = get_manifest(daemon, protocol, fixture, accept=OCI_MANIFEST)
    check_manifest_unknown(reply, fixture)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unaccepted_type_by_digest_gets_404(daemon, protocol):
    fixture = BYTE_EXACT[0][0]
    assert get_manifest(daemon, protocol, fixture).status == 200
    reply = get_manifest(daemon, protocol, fixture, fixture.digest,
                         accept=OCI_MANIFEST)
    check_manifest_unknown(reply, fixture)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tag_served_per_accepted_type(daemon, upstream, protocol):
    for fixture in PER_ACCEPT:
        start = len(upstream.requests())
        reply = get_manifest(daemon, protocol, fixture)
        check_served(reply, fixture)
        suffix = f"/manifests/{fixture.tag}"
        forwarded = upstream.wait_requests(
            lambda r, suffix=suffix: r.path.endswith(suffix), start=start)
        assert all(fixture.media_type in r.accept for r in forwarded), \
            [r.accept for r in forwarded]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("by", ["tag", "digest"])
def test_digest_mismatch_fails_and_stores_nothing(daemon, upstream, by,
                                                  protocol):
    reference = LYING_TAG if by == "tag" else LYING_DIGEST
    start = len(upstream.requests())
    try:
        reply = request(protocol, daemon.host,
                        f"/v2/{LYING_REPOSITORY}/manifests/{reference}",
                        daemon.ca_cert, headers={"Accept": PULL_ACCEPT})
        status, body = reply.status, reply.body
    except IncompleteResponse:
        status, body = None, b""

    assert status != 200
    assert body != LYING_BODY
    assert upstream.wait_requests(
        lambda r: r.method == "GET" and r.path.endswith(LYING_DIGEST),
        start=start)
    assert daemon.blob_files(LYING_DIGEST) == []
    assert daemon.blob_files(sha256_digest(LYING_BODY)) == []


# ---- With the upstream stopped -----------------------------------------

# Every (fixture, Accept) pair that is warmed and then served offline.
OFFLINE = ([f for f, _, _ in BYTE_EXACT] + [HELM, NESTED_INDEX, WINDOWS]
           + PER_ACCEPT)


@pytest.fixture(scope="module")
def offline(daemon, upstream, watch_gatecache):
    """Warm every tag, stop the upstream and restart gatecache.

    After the restart nothing is in gatecache's memory, so each response
    comes from the store and the index.
    """
    for fixture in OFFLINE:
        for reference in (fixture.tag, fixture.digest):
            assert get_manifest(daemon, "http/1.1", fixture,
                                reference).status == 200
    for fixture in OFFLINE:
        wait_for(lambda: daemon.blob_files(fixture.digest), timeout=10,
                 message=f"{fixture.label} in the blob store")
    upstream.stop()
    assert not tls_ready(LOOPBACK, upstream.port), "upstream still serving"
    assert daemon.stop() == 0
    daemon.start()
    watch_gatecache(daemon)
    return daemon


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("by", ["tag", "digest"])
@pytest.mark.parametrize("fixture", fixture_params(f for f, _, _ in BYTE_EXACT))
def test_byte_exact_manifest_served_offline(offline, fixture, by, protocol):
    reference = fixture.tag if by == "tag" else fixture.digest
    for method in ("GET", "HEAD"):
        reply = get_manifest(offline, protocol, fixture, reference,
                             method=method)
        check_served(reply, fixture, method)


@pytest.mark.parametrize("fixture", fixture_params([HELM, NESTED_INDEX,
                                                    WINDOWS]))
def test_manifest_served_offline_unchanged(offline, fixture):
    for reference in (fixture.tag, fixture.digest):
        check_served(get_manifest(offline, "h2", fixture, reference), fixture)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_type_served_offline_to_its_client(offline, protocol):
    for fixture in PER_ACCEPT:
        check_served(get_manifest(offline, protocol, fixture), fixture)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_offline_tag_never_served_as_other_type(offline, protocol):
    """A stored list or index is not given to a schema 2 only client."""
    fixture = PER_ACCEPT[0]
    reply = get_manifest(offline, protocol, fixture, accept=SCHEMA2)
    assert reply.status in (404, 503), reply.body
    assert all(f.body not in reply.body for f in PER_ACCEPT)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_offline_digest_never_served_as_other_type(offline, protocol):
    fixture = BYTE_EXACT[0][0]
    reply = get_manifest(offline, protocol, fixture, fixture.digest,
                         accept=OCI_MANIFEST)
    assert reply.status == 404
    assert reply.error_codes() == ["MANIFEST_UNKNOWN"]


def test_mismatched_manifest_absent_offline(offline):
    reply = request("http/1.1", offline.host,
                    f"/v2/{LYING_REPOSITORY}/manifests/{LYING_TAG}",
                    offline.ca_cert, headers={"Accept": PULL_ACCEPT})
    assert reply.status == 503
    assert reply.error_codes() == ["UNAVAILABLE"]
    assert offline.blob_files(sha256_digest(LYING_BODY)) == []


def test_stored_fixture_files_are_byte_exact(offline):
    for fixture in OFFLINE:
        files = offline.blob_files(fixture.digest)
        assert len(files) == 1, fixture.label
        assert files[0].read_bytes() == fixture.body, fixture.label
        assert hashlib.sha256(files[0].read_bytes()).hexdigest() == (
            fixture.digest.split(":", 1)[1])
