"""gatecache as a systemd service: the unit, the Type=notify contract, a
graceful stop with a download in flight, and the Debian package.

PID 1 may not be systemd here, so nothing is started through systemd and
nothing is installed. The tests check the unit with `systemd-analyze`,
play the service manager's part themselves (they own $NOTIFY_SOCKET and
set $WATCHDOG_USEC and $WATCHDOG_PID as systemd does), and inspect the
package with `dpkg-deb`.
"""

import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from support.clients import request
from support.gatecache import Gatecache, Upstream
from support.net import LOOPBACK, client_context, free_port, tls_ready
from support.procs import Process, run, tail, wait_for

SOURCE_DIR = Path(__file__).resolve().parents[2]
UNIT = SOURCE_DIR / "systemd" / "gatecache.service"
PACKAGED_CONFIG = SOURCE_DIR / "systemd" / "gatecache.yaml"
UNIT_BINARY = "/usr/bin/gatecache"

# `systemd-analyze security --offline=true` score of the unit, as recorded
# in systemd/README.md. A higher score means a hardening option was lost.
MAX_EXPOSURE = 1.1

# WATCHDOG_USEC that the tests set. Pings are expected every half of it.
WATCHDOG_USEC = 2_000_000

# `FrontConfig::graceful_timeout_s`: how long a stop waits for responses.
GRACEFUL_STOP_S = 30

# Seconds the throttled blob download takes in the drain test. It must be
# well inside GRACEFUL_STOP_S and long enough to send SIGTERM mid-way.
DOWNLOAD_S = 6

# Sets WATCHDOG_PID, then becomes the program in argv[2:], keeping its PID
# as systemd's exec does. argv[1] is "self" for this PID, "-" for unset,
# or a PID.
EXEC_WRAPPER = """\
import os, sys
pid = sys.argv[1]
if pid == "self":
    os.environ["WATCHDOG_PID"] = str(os.getpid())
elif pid != "-":
    os.environ["WATCHDOG_PID"] = pid
os.execv(sys.argv[2], sys.argv[2:])
"""


def unit_with_binary(tmp_path, binary):
    """Copy the unit into tmp_path with ExecStart naming `binary`."""
    text = UNIT.read_text()
    assert text.count(UNIT_BINARY) == 1, f"{UNIT} should name {UNIT_BINARY} once"
    copy = tmp_path / "gatecache.service"
    copy.write_text(text.replace(UNIT_BINARY, str(Path(binary).resolve())))
    return copy


def test_unit_passes_verify(gatecache_bin, tmp_path):
    unit = unit_with_binary(tmp_path, gatecache_bin)

    result = run(["systemd-analyze", "verify", unit], timeout=60, check=False)

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_unit_exposure_within_record(gatecache_bin, tmp_path):
    unit = unit_with_binary(tmp_path, gatecache_bin)

    result = run(["systemd-analyze", "security", "--offline=true", unit],
                 timeout=60, check=False)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)",
                      result.stdout)

    assert match, f"no exposure level in:\n{result.stdout}\n{result.stderr}"
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_packaged_config_is_valid(gatecache_bin):
    result = run([gatecache_bin, "check-config", "--config", PACKAGED_CONFIG],
                 timeout=30, check=False)

    assert result.returncode == 0, result.stderr


class NotifySocket:
    """A Unix datagram socket that receives sd_notify(3) messages.

    Each message is kept with its arrival time and the sender's PID, which
    the kernel attaches (SO_PASSCRED), as systemd checks for
    NotifyAccess=main.
    """

    def __init__(self):
        # sockaddr_un has room for 107 bytes of path, so the socket is not
        # under the long pytest base directory.
        self.directory = Path(tempfile.mkdtemp(prefix="gc-notify-"))
        self.path = self.directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages = []  # (monotonic time, sender pid, text)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self):
        credentials_size = struct.calcsize("3i")
        while not self._closed.is_set():
            try:
                data, ancillary, _, _ = self.sock.recvmsg(
                    4096, socket.CMSG_SPACE(credentials_size))
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", value[:credentials_size])[0]
            with self._lock:
                self.messages.append((time.monotonic(), pid, data.decode()))

    def received(self, assignment):
        """Return (time, pid) of each message with the line `assignment`."""
        with self._lock:
            return [(at, pid) for at, pid, text in self.messages
                    if assignment in text.split("\n")]

    def wait(self, assignment, timeout, process):
        """Wait for a message with `assignment` and return its (time, pid)."""

        def arrived():
            process.check_running()
            found = self.received(assignment)
            return found[0] if found else None

        return wait_for(arrived, timeout,
                        message=f"{assignment} on {self.path}")

    def close(self):
        self._closed.set()
        self.sock.close()
        self._thread.join(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


class NotifiedGatecache(Gatecache):
    """gatecache started the way systemd starts the unit.

    The environment gets NOTIFY_SOCKET, and WATCHDOG_USEC with
    WATCHDOG_PID when `watchdog_pid` is "self" (the daemon's PID) or a
    PID. Readiness is left to the caller, which waits for READY=1.
    """

    def start_notified(self, notify, watchdog_pid="-"):
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        env["NOTIFY_SOCKET"] = str(notify.path)
        if watchdog_pid != "-":
            env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
        self.port = free_port()
        self._write_config()
        self.process = Process(
            self.name,
            [sys.executable, "-c", EXEC_WRAPPER, watchdog_pid, self.binary,
             "serve", "--config", self.config_path],
            self.workdir, env=env,
        ).start()
        return self


@pytest.fixture
def notify():
    sock = NotifySocket()
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def notified_gatecache(gatecache_bin, tmp_path, test_ca):
    """A NotifiedGatecache whose upstream is a loopback port with no server.
    These tests send it no registry requests."""
    unused = f"{LOOPBACK}:{free_port()}"
    daemon = NotifiedGatecache(
        gatecache_bin, tmp_path / "gatecache",
        [Upstream(unused, f"https://{unused}", str(test_ca.cert))],
        name="gatecache-notify",
    )
    try:
        yield daemon
    finally:
        daemon.stop()


def test_ready_sent_once_tls_is_served(notify, notified_gatecache,
                                       watch_gatecache):
    daemon = notified_gatecache.start_notified(notify)
    watch_gatecache(daemon)

    _, sender = notify.wait("READY=1", timeout=30, process=daemon.process)
    # Checked once, without retrying: the port must accept TLS by the time
    # READY=1 arrives.
    serving = tls_ready(LOOPBACK, daemon.port, cafile=daemon.ca_cert)

    assert serving
    assert sender == daemon.process.pid
    assert len(notify.received("READY=1")) == 1


def test_watchdog_pings_every_half_interval(notify, notified_gatecache,
                                            watch_gatecache):
    daemon = notified_gatecache.start_notified(notify, watchdog_pid="self")
    watch_gatecache(daemon)
    notify.wait("READY=1", timeout=30, process=daemon.process)

    time.sleep(3.5 * WATCHDOG_USEC / 2e6)
    pings = notify.received("WATCHDOG=1")
    gaps = [later[0] - earlier[0] for earlier, later in zip(pings, pings[1:])]

    assert len(pings) >= 3, f"{len(pings)} WATCHDOG=1 messages"
    assert {pid for _, pid in pings} == {daemon.process.pid}
    for gap in gaps:
        assert 0.5 * WATCHDOG_USEC / 2e6 <= gap <= 1.5 * WATCHDOG_USEC / 2e6


def test_watchdog_off_for_other_pid(notify, notified_gatecache,
                                    watch_gatecache):
    # systemd sets WATCHDOG_PID to the main process, and a process that
    # inherited the variables from it must not ping.
    daemon = notified_gatecache.start_notified(notify, watchdog_pid="1")
    watch_gatecache(daemon)
    notify.wait("READY=1", timeout=30, process=daemon.process)

    time.sleep(2.5 * WATCHDOG_USEC / 2e6)

    assert notify.received("WATCHDOG=1") == []


def test_sigterm_sends_stopping_and_exits_0(notify, notified_gatecache,
                                            watch_gatecache):
    daemon = notified_gatecache.start_notified(notify, watchdog_pid="self")
    watch_gatecache(daemon)
    notify.wait("READY=1", timeout=30, process=daemon.process)

    os.kill(daemon.process.pid, signal.SIGTERM)
    stopping = wait_for(lambda: notify.received("STOPPING=1"), timeout=10,
                        message="STOPPING=1")
    wait_for(lambda: not daemon.process.running(), timeout=GRACEFUL_STOP_S,
             message="gatecache to exit after SIGTERM")

    assert stopping[0][1] == daemon.process.pid
    assert daemon.stop() == 0


class ThrottledRelay:
    """A TCP relay on loopback that passes the upstream's bytes to clients
    at `rate` bytes per second, and client bytes upstream at full speed.

    TLS passes through unchanged, so the client verifies the upstream's
    own certificate.
    """

    CHUNK_BYTES = 16 * 1024

    def __init__(self, upstream_port, rate):
        self.upstream_port = upstream_port
        self.rate = rate
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self._sockets = []
        self._lock = threading.Lock()

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((LOOPBACK, self.upstream_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, None),
                             daemon=True).start()
            threading.Thread(target=self._pump,
                             args=(upstream, client, self.rate),
                             daemon=True).start()

    def _pump(self, source, sink, rate):
        try:
            while True:
                data = source.recv(self.CHUNK_BYTES)
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
                if rate:
                    # Pacing each chunk, instead of the connection's
                    # average, keeps an idle pooled connection from
                    # saving up a burst.
                    time.sleep(len(data) / rate)
        except OSError:
            return

    def stop(self):
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()


def connection_refused(port):
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def smallest_layer(image, min_bytes=256 * 1024):
    """Return (digest, size) of the smallest layer of at least min_bytes."""
    sizes = []
    for digest in image.built.layers:
        path = image.layout / "blobs" / "sha256" / digest.split(":", 1)[1]
        sizes.append((path.stat().st_size, digest))
    size, digest = min(s for s in sizes if s[0] >= min_bytes)
    return digest, size


@pytest.mark.parametrize("protocol", ["http/1.1", "h2"])
def test_sigterm_drains_download(protocol, tmp_path, registry, big_image,
                                 test_ca, gatecache_bin, watch_gatecache):
    digest, size = smallest_layer(big_image)
    relay = ThrottledRelay(registry.port, rate=size / DOWNLOAD_S).start()
    daemon = Gatecache(
        gatecache_bin, tmp_path / "gatecache",
        [Upstream(registry.host, f"https://{LOOPBACK}:{relay.port}",
                  str(test_ca.cert))],
        default_upstream=registry.host, name="gatecache-drain",
    )
    hasher = hashlib.sha256()
    received = [0]
    outcome = {}

    def sink(data):
        hasher.update(data)
        received[0] += len(data)

    def download():
        try:
            # By name, because for an IP literal the HTTP/2 client checks
            # the certificate again with a new connection afterwards, which
            # a stopped daemon refuses. The certificate names localhost.
            outcome["reply"] = request(
                protocol, f"localhost:{daemon.port}",
                f"/v2/{big_image.repository}/blobs/{digest}", daemon.ca_cert,
                body_sink=sink)
        except Exception as e:  # reported by the asserts below
            outcome["error"] = e

    try:
        daemon.start()
        watch_gatecache(daemon)
        client = threading.Thread(target=download, daemon=True)
        client.start()
        wait_for(lambda: received[0] > 0, timeout=20,
                 message="the first body bytes of the blob")

        os.kill(daemon.process.pid, signal.SIGTERM)
        received_at_stop = received[0]
        refused = wait_for(lambda: connection_refused(daemon.port), timeout=5,
                           message=f"connections to port {daemon.port} to be "
                                   "refused after SIGTERM")
        client.join(timeout=GRACEFUL_STOP_S + 10)
        wait_for(lambda: not daemon.process.running(), timeout=10,
                 message="gatecache to exit once the download ended")
        exit_code = daemon.stop()
    finally:
        daemon.stop()
        relay.stop()

    assert received_at_stop < size, "the download ended before SIGTERM"
    assert refused
    assert "error" not in outcome, outcome.get("error")
    assert outcome["reply"].status == 200
    assert received[0] == size
    assert "sha256:" + hasher.hexdigest() == digest
    assert exit_code == 0
    assert "graceful stop timed out" not in tail(
        daemon.workdir / "gatecache-drain.stderr", lines=200)


def test_deb_contents(gatecache_bin, tmp_path):
    build_dir = Path(gatecache_bin).resolve().parent
    cpack_config = build_dir / "CPackConfig.cmake"
    assert cpack_config.exists(), (
        f"{cpack_config} is missing; configure {build_dir} with CMake, "
        "which writes it from cmake/Install.cmake")
    run(["cpack", "-G", "DEB", "--config", cpack_config, "-B", tmp_path],
        timeout=300, cwd=tmp_path)
    debs = list(tmp_path.glob("gatecache_*.deb"))
    assert len(debs) == 1, f"expected one .deb in {tmp_path}: {debs}"
    deb = debs[0]

    listing = run(["dpkg-deb", "-c", deb], timeout=30).stdout
    paths = {line.split()[-1] for line in listing.splitlines()}
    control = run(["dpkg-deb", "-I", deb], timeout=30).stdout
    conffiles = run(["dpkg-deb", "-I", deb, "conffiles"], timeout=30).stdout
    unpacked = tmp_path / "unpacked"
    run(["dpkg-deb", "-x", deb, unpacked], timeout=30)
    version = run([unpacked / "usr/bin/gatecache", "--version"], timeout=30)
    depends = re.search(r"^ Depends: (.*)$", control, re.MULTILINE)

    for path in ("./usr/bin/gatecache", "./etc/gatecache/gatecache.yaml",
                 "./usr/lib/sysusers.d/gatecache.conf",
                 "./usr/share/gatecache/images/",
                 "./usr/share/doc/gatecache/README.md",
                 "./usr/share/doc/gatecache/gatecache.example.yaml"):
        assert path in paths, f"{path} not in {deb.name}:\n{listing}"
    units = [p for p in paths if p.endswith("/systemd/system/gatecache.service")]
    assert len(units) == 1, listing
    assert (unpacked / units[0]).read_text() == UNIT.read_text()
    for image_set in (SOURCE_DIR / "images").glob("*.yaml"):
        assert f"./usr/share/gatecache/images/{image_set.name}" in paths
    assert conffiles.split() == ["/etc/gatecache/gatecache.yaml"]
    for script in ("postinst", "prerm", "postrm"):
        assert re.search(rf"^\s+\d+ bytes,\s+\d+ lines\s+\*\s+{script}\s",
                         control, re.MULTILINE), f"{script} missing or not "\
                                                 f"executable:\n{control}"
    assert depends, control
    for library in ("libssl3", "libnghttp2-14", "libev4", "liblmdb0",
                    "libc-ares2", "libsystemd0", "libyaml-cpp0.7"):
        assert library in depends.group(1)
    assert version.stdout.strip()


def test_sighup_adds_upstream_keeping_connections(notify, notified_gatecache,
                                                  watch_gatecache, registry,
                                                  multi_image, test_ca):
    daemon = notified_gatecache.start_notified(notify)
    watch_gatecache(daemon)
    notify.wait("READY=1", timeout=30, process=daemon.process)
    path = f"/v2/{multi_image.repository}/manifests/{multi_image.tag}"
    target = f"{path}?ns={registry.host}"
    connection = http.client.HTTPSConnection(
        LOOPBACK, daemon.port, context=client_context(daemon.ca_cert),
        timeout=30)
    try:
        connection.request("GET", target)
        before = connection.getresponse()
        before.read()

        daemon.upstreams.append(
            Upstream(registry.host, registry.url, str(test_ca.cert)))
        daemon._write_config()
        os.kill(daemon.process.pid, signal.SIGHUP)
        wait_for(lambda: len(notify.received("READY=1")) >= 2, timeout=10,
                 message="READY=1 after the reload")
        # The connection opened before the reload serves the new upstream.
        connection.request("GET", target,
                           headers={"Accept": multi_image.built.media_type})
        after = connection.getresponse()
        body = after.read()
    finally:
        connection.close()

    # Prewarm takes the reloaded upstreams too.
    image_set = daemon.workdir / "reloaded.yaml"
    image_set.write_text(
        "name: reloaded\nplatforms: [linux/amd64]\nimages:\n"
        f"  - {registry.host}/{multi_image.repository}:{multi_image.tag}\n")
    prewarm = run([daemon.binary, "prewarm", "--config", daemon.config_path,
                   image_set], timeout=60, check=False)

    assert before.status == 403
    assert notify.received("RELOADING=1")
    assert prewarm.returncode == 0, prewarm.stdout + prewarm.stderr
    assert after.status == 200
    assert after.getheader("Docker-Content-Digest") == \
        multi_image.built.manifest_digest
    assert body == multi_image.blob(multi_image.built.manifest_digest)


def test_sighup_with_bad_config_keeps_serving(notify, notified_gatecache,
                                              watch_gatecache):
    daemon = notified_gatecache.start_notified(notify)
    watch_gatecache(daemon)
    notify.wait("READY=1", timeout=30, process=daemon.process)

    daemon.config_path.write_text("listen: [\n")
    os.kill(daemon.process.pid, signal.SIGHUP)
    wait_for(lambda: len(notify.received("READY=1")) >= 2, timeout=10,
             message="READY=1 after the failed reload")

    assert daemon.process.running()
    assert tls_ready(LOOPBACK, daemon.port, cafile=daemon.ca_cert)
    assert "reload failed" in daemon.process.stderr_path.read_text()
