"""Fixtures shared by the integration tests.

Each test file runs as its own pytest session (one ctest test per file), so
"session" fixtures here live for one file: one test CA, one upstream
registry with the test images pushed, and one gatecache in front of it.

Environment:
- GATECACHE_BIN: the gatecache program. Tests that need it are skipped
  when it is unset, so the helpers can be checked before the daemon builds.
- GATECACHE_TEST_IMAGE_CACHE: where built OCI images are kept between runs
  (default /var/tmp/gatecache-integration-images).
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.containerd import (  # noqa: E402
    Containerd,
    unmount_under,
    write_hosts_toml,
)
from support.gatecache import Gatecache, Upstream  # noqa: E402
from support.hub_emulator import hub_emulator  # noqa: E402,F401
from support.images import BIG_TAG, MULTI_TAG, build_images  # noqa: E402
from support.procs import tail  # noqa: E402
from support.registry import Registry  # noqa: E402
from support.skopeo import Skopeo  # noqa: E402
from support.tls import TestCa, cert_dir  # noqa: E402

DEFAULT_IMAGE_CACHE = "/var/tmp/gatecache-integration-images"

# Logs attached to the report of a failed test, as (title, path).
_watched_logs = []

# Daemons whose exit is reported with a failed test, by name. A restarted
# daemon replaces its earlier process.
_watched_processes = {}


def _watch(title, *paths):
    entries = [(title, Path(p)) for p in paths]
    _watched_logs.extend(e for e in entries if e not in _watched_logs)
    return entries


def _unwatch(entries):
    for entry in entries:
        if entry in _watched_logs:
            _watched_logs.remove(entry)


def pytest_configure(config):
    # pytest deletes --basetemp at start. A run that was killed can leave
    # containerd's overlay mounts in it, and a mount point cannot be
    # removed (EBUSY), so unmount them first.
    if config.option.basetemp and os.path.isdir(config.option.basetemp):
        unmount_under(config.option.basetemp)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for title, path in _watched_logs:
            report.sections.append((f"{title} ({path.name})", tail(path)))
        for process in _watched_processes.values():
            status = process.exit_status()
            if status:
                report.sections.append(
                    (f"{process.name} exit",
                     f"{process.name} (pid {process.pid}) ended: {status}"))


@pytest.fixture(scope="session")
def watch_gatecache():
    """Return a function that adds a Gatecache's logs and exit to reports."""

    def watch(daemon):
        _watch(daemon.name, daemon.workdir / f"{daemon.name}.stderr",
               daemon.access_log_path)
        _watched_processes[daemon.name] = daemon.process

    return watch


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def gatecache_bin():
    binary = os.environ.get("GATECACHE_BIN")
    if not binary:
        pytest.skip("GATECACHE_BIN is not set; run these tests through ctest, "
                    "which points it at the built gatecache program")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"GATECACHE_BIN={binary} is not an executable file")
    return binary


@pytest.fixture(scope="session")
def test_ca(session_dir):
    return TestCa(session_dir / "ca")


@pytest.fixture(scope="session")
def upstream_certs(session_dir, test_ca):
    """A skopeo cert dir that trusts the upstream registry."""
    return cert_dir(session_dir / "upstream-certs", test_ca.cert)


@pytest.fixture(scope="session")
def skopeo(session_dir):
    return Skopeo(session_dir / "skopeo")


@pytest.fixture(scope="session")
def images():
    cache = os.environ.get("GATECACHE_TEST_IMAGE_CACHE", DEFAULT_IMAGE_CACHE)
    return build_images(cache)


@pytest.fixture(scope="session")
def registry(session_dir, test_ca):
    """The upstream: docker-registry on HTTPS, stopped after the session."""
    cert, key = test_ca.issue_server("upstream")
    upstream = Registry(session_dir / "registry", cert, key)
    _watch("upstream registry", upstream.workdir / "registry.stderr")
    try:
        yield upstream.start()
    finally:
        upstream.stop()


@pytest.fixture(scope="session")
def big_image(registry, images, skopeo, upstream_certs):
    """The three-layer image of at least 50 MiB, pushed to the upstream."""
    return images.push(skopeo, registry.host, "gatecache-test/big", BIG_TAG,
                       upstream_certs, reference="v1")


@pytest.fixture(scope="session")
def multi_image(registry, images, skopeo, upstream_certs):
    """The amd64 and arm64 image index, pushed to the upstream."""
    return images.push(skopeo, registry.host, "gatecache-test/multi",
                       MULTI_TAG, upstream_certs, reference="v1")


@pytest.fixture(scope="session")
def gatecache(gatecache_bin, session_dir, registry, test_ca, watch_gatecache):
    """gatecache with the upstream registry as its only and default `ns`."""
    daemon = Gatecache(
        gatecache_bin,
        session_dir / "gatecache",
        [Upstream(registry.host, registry.url, str(test_ca.cert))],
        default_upstream=registry.host,
    )
    try:
        daemon.start()
        watch_gatecache(daemon)
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def gatecache_certs(session_dir, gatecache):
    """A skopeo cert dir that trusts gatecache's own CA."""
    return cert_dir(session_dir / "gatecache-certs", gatecache.ca_cert)


@pytest.fixture(scope="session")
def mirror_hosts(session_dir, gatecache, registry):
    """A containerd hosts dir that sends pulls of the upstream to gatecache."""
    return write_hosts_toml(
        session_dir / "hosts", registry.host, gatecache.url, gatecache.ca_cert
    )


@pytest.fixture
def containerd(tmp_path):
    """A fresh containerd for one test, stopped and unmounted after it."""
    daemon = Containerd(tmp_path / "containerd")
    watched = _watch("containerd", daemon.workdir / "containerd.stderr")
    try:
        yield daemon.start()
    finally:
        daemon.stop()
        _unwatch(watched)
