"""Debian's docker-registry (CNCF distribution 2.8) as a TLS upstream."""

import json
from dataclasses import dataclass
from pathlib import Path

from .net import LOOPBACK, free_port, wait_tls_ready
from .procs import Process, ProcessError, wait_for

REGISTRY_BIN = "/usr/bin/docker-registry"

# Tries to find a free port, because another process may take the port that
# `free_port()` returned before the registry binds it.
BIND_ATTEMPTS = 3


@dataclass(frozen=True)
class UpstreamRequest:
    """One request from the registry's log."""

    method: str
    uri: str
    status: int
    user_agent: str


class Registry:
    """A docker-registry process serving HTTPS on a loopback port.

    The registry writes one JSON line per completed request to stderr, with
    the message "response completed" or "response completed with error";
    `requests()` parses those lines.
    """

    def __init__(self, workdir, cert, key, name="registry"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage = self.workdir / "storage"
        self.cert = cert
        self.key = key
        self.name = name
        self.port = None
        self.process = None

    @property
    def host(self):
        """The registry as containerd and skopeo name it: "127.0.0.1:port"."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self):
        return f"https://{self.host}"

    def start(self, port=None, timeout=20):
        """Start the registry, on `port` when given, and wait for TLS."""
        last_error = None
        for _ in range(1 if port else BIND_ATTEMPTS):
            self.port = port or free_port()
            config = self._write_config()
            self.process = Process(
                self.name, [REGISTRY_BIN, "serve", config], self.workdir
            ).start()
            try:
                wait_tls_ready(self.process, LOOPBACK, self.port, timeout)
                return self
            except ProcessError as e:
                last_error = e
                self.process.stop()
        raise last_error

    def stop(self):
        if self.process:
            self.process.stop()

    def restart(self, timeout=20):
        """Start again on the same port and storage after `stop()`."""
        return self.start(port=self.port, timeout=timeout)

    def _write_config(self):
        config = self.workdir / "config.yml"
        # JSON is valid YAML, and json.dumps quotes paths safely.
        config.write_text(
            json.dumps(
                {
                    "version": 0.1,
                    "log": {"level": "info", "formatter": "json"},
                    "storage": {
                        "filesystem": {"rootdirectory": str(self.storage)},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}},
                    },
                    "http": {
                        "addr": f"{LOOPBACK}:{self.port}",
                        "secret": "integration-test-secret",
                        "tls": {
                            "certificate": str(self.cert),
                            "key": str(self.key),
                        },
                    },
                },
                indent=2,
            )
        )
        return config

    def requests(self):
        """Return every request the registry has logged, oldest first."""
        found = []
        try:
            lines = self.process.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return found
        for line in lines.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not str(entry.get("msg", "")).startswith("response completed"):
                continue
            if "http.request.method" not in entry:
                continue
            found.append(
                UpstreamRequest(
                    method=entry["http.request.method"],
                    uri=entry.get("http.request.uri", ""),
                    status=int(entry.get("http.response.status", 0)),
                    user_agent=entry.get("http.request.useragent", ""),
                )
            )
        return found

    def wait_requests(self, predicate, count=1, start=0, timeout=10):
        """Wait for `count` requests after the first `start` to match.

        Returns the matching requests. The registry logs a request after its
        handler returns, which can be after the client has the response.
        """

        def matching():
            found = [r for r in self.requests()[start:] if predicate(r)]
            return found if len(found) >= count else None

        return wait_for(matching, timeout,
                        message=f"{count} matching requests in {self.name}'s log")

    def access_lines(self):
        """Return the combined-format access log that goes to stdout.

        Unlike `requests()`, it also lists requests that matched no route.
        """
        try:
            return self.process.stdout_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
