"""containerd pulls through gatecache as a hosts.toml mirror and runs it."""

from dataclasses import dataclass
from urllib.parse import parse_qs

import pytest

from support.containerd import Containerd


@dataclass
class Pull:
    """What one pull and run left behind."""

    output: str
    entries: list
    upstream_requests: list


def pull_and_run(containerd, hosts, image, gatecache, registry, container_id,
                 command):
    """Pull `image` through gatecache, run `command`, collect the logs."""
    start = len(gatecache.access_entries())
    upstream_start = len(registry.requests())
    containerd.pull(image.reference, hosts)
    output = containerd.run_container(image.reference, container_id, *command)

    prefix = f"/v2/{image.repository}/"
    blob_paths = {f"{prefix}blobs/{d}" for d in image.platform_blobs()}
    gatecache.wait_entries(lambda e: e.path in blob_paths, len(blob_paths),
                           start=start)
    entries = [e for e in gatecache.access_entries()[start:]
               if e.path.startswith(prefix)]
    return Pull(output, entries, registry.requests()[upstream_start:])


@pytest.fixture(scope="module")
def containerd_daemon(session_dir):
    daemon = Containerd(session_dir / "containerd")
    try:
        yield daemon.start()
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def big_pull(containerd_daemon, mirror_hosts, big_image, gatecache, registry):
    return pull_and_run(containerd_daemon, mirror_hosts, big_image, gatecache,
                        registry, "big-via-gatecache",
                        ["/bin/busybox", "echo", "hello from gatecache"])


@pytest.fixture(scope="module")
def multi_pull(containerd_daemon, mirror_hosts, multi_image, gatecache,
               registry, big_pull):
    return pull_and_run(containerd_daemon, mirror_hosts, multi_image,
                        gatecache, registry, "multi-via-gatecache",
                        ["/bin/busybox", "cat", "/etc/platform"])


def test_container_runs_from_pulled_image(big_pull):
    assert big_pull.output.strip() == "hello from gatecache"


def test_index_pull_runs_amd64_image(multi_pull):
    assert multi_pull.output.strip() == "linux/amd64"


def test_access_log_shows_every_blob(big_pull, big_image):
    gets = {e.path: e.status for e in big_pull.entries if e.method == "GET"}
    for digest in big_image.built.blobs:
        path = f"/v2/{big_image.repository}/blobs/{digest}"
        assert gets.get(path) == 200, f"no 200 GET of {path} in access log"


def test_access_log_shows_manifest_by_tag(big_pull, big_image):
    path = f"/v2/{big_image.repository}/manifests/{big_image.tag}"
    statuses = [e.status for e in big_pull.entries if e.path == path]
    assert statuses, f"no request for {path} in the access log"
    assert set(statuses) == {200}


@pytest.mark.parametrize("pull_fixture", ["big_pull", "multi_pull"])
def test_access_log_shows_protocol_and_ns(request, pull_fixture, registry):
    pull = request.getfixturevalue(pull_fixture)
    for entry in pull.entries:
        # containerd 1.6 uses Go's HTTP/1.1 transport once hosts.toml gives
        # it a CA, so it never negotiates h2.
        assert entry.protocol == "http/1.1", entry.line
        assert parse_qs(entry.query).get("ns") == [registry.host], entry.line
        assert entry.ns == registry.host, entry.line
        assert entry.aborted is False, entry.line


@pytest.mark.parametrize("pull_fixture", ["big_pull", "multi_pull"])
def test_containerd_never_reaches_upstream(request, pull_fixture):
    pull = request.getfixturevalue(pull_fixture)
    direct = [r for r in pull.upstream_requests
              if r.user_agent.startswith("containerd")]
    assert direct == []
