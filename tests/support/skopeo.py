"""skopeo with a private policy and no credentials from the host."""

import json
import os
from pathlib import Path

from .procs import run

SKOPEO_BIN = "/usr/bin/skopeo"

# Seconds for one skopeo command. A copy of the largest test image over
# loopback takes a few seconds; the margin covers a loaded 2-core machine.
COMMAND_TIMEOUT = 300


class Skopeo:
    """Runs skopeo with its policy and registries files under `workdir`.

    The files in /etc/containers and the user's auth files are never read,
    so skopeo behaves the same on every machine.
    """

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.policy = self.workdir / "policy.json"
        self.policy.write_text(
            json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
        )
        self.registries = self.workdir / "registries.conf"
        self.registries.write_text("unqualified-search-registries = []\n")
        self.registries_d = self.workdir / "registries.d"
        self.registries_d.mkdir(exist_ok=True)
        self.auth = self.workdir / "auth.json"
        self.auth.write_text("{}")
        self.env = dict(os.environ, CONTAINERS_REGISTRIES_CONF=str(self.registries))

    def _base(self):
        return [
            SKOPEO_BIN,
            "--policy", self.policy,
            "--registries.d", self.registries_d,
            "--command-timeout", f"{COMMAND_TIMEOUT}s",
        ]

    def copy(self, source, destination, src_cert_dir=None, dest_cert_dir=None,
             all_images=False, check=True, timeout=COMMAND_TIMEOUT + 30):
        """Copy an image between transports ("oci:", "docker://", "dir:").

        Returns the CompletedProcess; with `check`, a failure raises
        ProcessError that includes skopeo's output.
        """
        argv = self._base() + ["copy", "--retry-times", "0", "--preserve-digests"]
        if all_images:
            argv.append("--all")
        if source.startswith("docker://"):
            argv += ["--src-authfile", self.auth]
            if src_cert_dir:
                argv += ["--src-cert-dir", src_cert_dir]
        if destination.startswith("docker://"):
            argv += ["--dest-authfile", self.auth]
            if dest_cert_dir:
                argv += ["--dest-cert-dir", dest_cert_dir]
        argv += [source, destination]
        return run(argv, timeout=timeout, env=self.env, check=check)
