"""The gatecache daemon under test: config, start, stop and its logs."""

import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .net import LOOPBACK, free_port, tls_ready
from .procs import Process, ProcessError, wait_for

# Tries to find a free port, because another process may take the port that
# `free_port()` returned before gatecache binds it.
BIND_ATTEMPTS = 3

# One access log line per request:
# <time> c=<conn> r=<conn>.<req> <peer> <h2|http/1.1> <METHOD> <target>
#   <status> <bytes> cache=<result> ns=<upstream or -> f=<fetch id>
#   t=<ms>[ aborted]
ACCESS_LINE = re.compile(
    r"^(?P<time>\S.*?) c=(?P<connection>\d+) r=(?P<request>\d+\.\d+)"
    r" (?P<peer>\S+) (?P<protocol>h2|http/1\.1) (?P<method>[A-Z]+)"
    r" (?P<target>\S+) (?P<status>\d{3}) (?P<bytes>\d+)"
    r" cache=(?P<cache>none|hit|miss|stale|revalidated|joined)"
    r" ns=(?P<ns>\S+) f=(?P<fetch>\S+) t=(?P<ms>\d+(?:\.\d+)?)"
    r"(?P<aborted> aborted)?$"
)


@dataclass(frozen=True)
class AccessEntry:
    """One parsed access log line."""

    connection: int
    request: str
    peer: str
    protocol: str
    method: str
    path: str
    query: str
    status: int
    bytes: int
    cache: str
    ns: str
    fetch: str
    ms: float
    aborted: bool
    line: str


def parse_access_line(line):
    """Return the AccessEntry for `line`, or raise ValueError naming it."""
    match = ACCESS_LINE.match(line)
    if not match:
        raise ValueError(f"access log line does not match the format: {line!r}")
    path, _, query = match["target"].partition("?")
    return AccessEntry(
        connection=int(match["connection"]),
        request=match["request"],
        peer=match["peer"],
        protocol=match["protocol"],
        method=match["method"],
        path=path,
        query=query,
        status=int(match["status"]),
        bytes=int(match["bytes"]),
        cache=match["cache"],
        ns=match["ns"],
        fetch=match["fetch"],
        ms=float(match["ms"]),
        aborted=bool(match["aborted"]),
        line=line,
    )


@dataclass(frozen=True)
class Upstream:
    """One `upstreams` entry: the `ns` name, base URL and CA file."""

    name: str
    url: str
    ca_file: str
    default_freshness: str = "0s"


class Gatecache:
    """A `gatecache serve` process with its state under `workdir`.

    The daemon creates its CA on first start; clients trust `ca_cert`.
    Stopping keeps the state, so `start()` again reuses the cache.

    The optional settings are written as the config keys of the same name,
    with the values as given:
    - `upstream_options`: upstream name to a dict of extra keys of that
      upstream, such as `freshness` or `budget` (`default_freshness` is
      a field of Upstream);
    - `clusters`: cluster name to {sources, client_names, weight};
    - `scheduler`, `prewarm`: dicts of those sections;
    - `storage_options`: extra keys of the storage section, such as
      `scrub_interval`.
    """

    def __init__(self, binary, workdir, upstreams, default_upstream=None,
                 max_size="10GiB", log_level="debug", name="gatecache",
                 upstream_options=None, clusters=None, scheduler=None,
                 prewarm=None, storage_options=None):
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage = self.workdir / "state"
        self.access_log_path = self.workdir / "access.log"
        self.config_path = self.workdir / "gatecache.yml"
        # A Unix socket path must fit in 108 bytes, which test directories
        # can exceed, so the admin socket lives in a short directory.
        self.admin_socket = Path(
            tempfile.mkdtemp(prefix="gatecache-admin-", dir="/tmp")) / "admin.sock"
        self.upstreams = list(upstreams)
        self.default_upstream = default_upstream
        self.max_size = max_size
        self.log_level = log_level
        self.name = name
        self.upstream_options = dict(upstream_options or {})
        self.clusters = clusters
        self.scheduler = scheduler
        self.prewarm = prewarm
        self.storage_options = dict(storage_options or {})
        self.port = None
        self.process = None

    @property
    def host(self):
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self):
        return f"https://{self.host}"

    @property
    def ca_cert(self):
        return self.storage / "tls" / "ca.crt"

    def start(self, timeout=30):
        """Start the daemon and wait until it serves TLS with its own CA.

        A restart keeps the previous port, so clients configured with the
        old address still reach it.
        """
        keep_port = self.port is not None
        last_error = None
        for _ in range(1 if keep_port else BIND_ATTEMPTS):
            if not keep_port:
                self.port = free_port()
            self._write_config()
            self.process = Process(
                self.name, [self.binary, "serve", "--config", self.config_path],
                self.workdir,
            ).start()
            try:
                self._wait_ready(timeout)
                return self
            except ProcessError as e:
                last_error = e
                self.process.stop()
                if "in use" not in str(e):
                    raise
        raise last_error

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.process.check_running()
            if self.ca_cert.exists() and tls_ready(
                LOOPBACK, self.port, cafile=self.ca_cert
            ):
                return
            time.sleep(0.05)
        raise TimeoutError(
            f"gatecache did not serve TLS on {self.host} with {self.ca_cert} "
            f"within {timeout} s\n{self.process.describe()}"
        )

    def stop(self):
        """Stop the daemon with SIGTERM and return its exit code."""
        if self.process:
            code = self.process.stop(timeout=20)
            shutil.rmtree(self.admin_socket.parent, ignore_errors=True)
            return code
        return None

    def _write_config(self):
        # A restart after stop() needs the socket directory again.
        self.admin_socket.parent.mkdir(mode=0o700, exist_ok=True)
        def quote(value):
            # A JSON string is a valid YAML double-quoted scalar.
            return json.dumps(str(value))

        lines = [
            f"listen: [{quote(self.host)}]",
            "storage:",
            f"  path: {quote(self.storage)}",
            f"  max_size: {self.max_size}",
        ]
        lines += [f"  {key}: {json.dumps(value)}"
                  for key, value in self.storage_options.items()]
        lines += [
            "tls:",
            '  names: ["localhost", "127.0.0.1", "::1"]',
            "upstreams:",
        ]
        for upstream in self.upstreams:
            lines += [
                f"  {quote(upstream.name)}:",
                f"    url: {quote(upstream.url)}",
                f"    ca_file: {quote(upstream.ca_file)}",
                # Tests expect every tag request to ask the upstream unless
                # they set a freshness window themselves.
                f"    default_freshness: {upstream.default_freshness}",
            ]
            options = self.upstream_options.get(upstream.name, {})
            if "default_freshness" in options:
                raise ValueError(
                    f"upstream_options of {upstream.name} sets "
                    "default_freshness, which is written from "
                    "Upstream.default_freshness; set it there")
            lines += [f"    {key}: {json.dumps(value)}"
                      for key, value in options.items()]
        if self.default_upstream:
            lines.append(f"default_upstream: {quote(self.default_upstream)}")
        lines += [
            "admin:",
            f"  socket: {quote(self.admin_socket)}",
            "log:",
            f"  level: {self.log_level}",
            f"  access_log: {quote(self.access_log_path)}",
        ]
        # JSON is valid YAML flow style, so each section fits on one line.
        for key in ("clusters", "scheduler", "prewarm"):
            value = getattr(self, key)
            if value is not None:
                lines.append(f"{key}: {json.dumps(value)}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def access_entries(self):
        """Return every access log entry; raise ValueError on a bad line."""
        try:
            text = self.access_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        # A line without its newline may still be being written.
        lines = text.split("\n")[:-1]
        return [parse_access_line(line) for line in lines if line]

    def wait_entries(self, predicate, count, start=0, timeout=10):
        """Wait for `count` entries matching `predicate` and return them all.

        Only entries after the first `start` count, so a caller can take
        `len(access_entries())` before a step and look at that step alone.
        The daemon may write a line just after its response, hence the wait.
        """

        def matching():
            found = [e for e in self.access_entries()[start:] if predicate(e)]
            return found if len(found) >= count else None

        return wait_for(matching, timeout,
                        message=f"{count} matching lines in {self.access_log_path}")

    def blob_files(self, digest):
        """Return the files under storage/blobs whose path has the digest."""
        hex_digest = digest.split(":", 1)[1]
        blobs = self.storage / "blobs"
        if not blobs.exists():
            return []
        return [p for p in blobs.rglob("*") if p.is_file() and hex_digest in p.name]

    def download_files(self):
        """Return the files under storage/tmp, where downloads in flight are."""
        downloads = self.storage / "tmp"
        if not downloads.exists():
            return []
        return [p for p in downloads.rglob("*") if p.is_file()]

    def describe(self):
        return self.process.describe() if self.process else f"{self.name} not started"
