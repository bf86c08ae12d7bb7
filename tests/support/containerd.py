"""A private containerd driven with `ctr`.

Each instance has its own root, state directory and sockets, the CRI plugin
disabled and the overlayfs snapshotter, so it shares nothing with a
containerd the machine may run. It needs root, overlayfs and runc.
"""

import os
import shutil
import tempfile
from pathlib import Path

from .procs import Process, ProcessError, run, wait_for

CONTAINERD_BIN = "/usr/bin/containerd"
CTR_BIN = "/usr/bin/ctr"

# Seconds for one `ctr` command. Pulling and unpacking the largest test
# image over loopback takes seconds; the margin covers a loaded machine.
CTR_TIMEOUT = 300

NAMESPACE = "gatecache-test"


def write_hosts_toml(hosts_dir, upstream_host, mirror_url, mirror_ca):
    """Write hosts_dir/<upstream_host>/hosts.toml that pulls via a mirror.

    The upstream stays the `server`, so containerd would fall back to it
    if the mirror failed. The caller does not give containerd the
    upstream's CA, so such a fallback fails certificate verification instead
    of hiding a mirror failure.
    """
    directory = Path(hosts_dir) / upstream_host
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.toml").write_text(
        f'server = "https://{upstream_host}"\n'
        "\n"
        f'[host."{mirror_url}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        f'  ca = "{Path(mirror_ca).resolve()}"\n'
    )
    return Path(hosts_dir)


class Containerd:
    """containerd with root under `workdir` and sockets in a short path."""

    def __init__(self, workdir, name="containerd"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.root = self.workdir / "root"
        # Unix socket paths are limited to 107 bytes, and pytest's temporary
        # directories can be long, so the state and sockets live in a short
        # directory of their own.
        self.state = Path(tempfile.mkdtemp(prefix="gc-ctrd-", dir="/tmp"))
        self.address = self.state / "containerd.sock"
        self.process = None

    def start(self, timeout=30):
        config = self.workdir / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{self.state}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "\n"
            "[grpc]\n"
            f'  address = "{self.address}"\n'
            "\n"
            "[ttrpc]\n"
            f'  address = "{self.address}.ttrpc"\n'
            "\n"
            '[plugins."io.containerd.internal.v1.opt"]\n'
            f'  path = "{self.root}/opt"\n'
        )
        self.process = Process(
            self.name, [CONTAINERD_BIN, "--config", config], self.workdir
        ).start()
        try:
            wait_for(self._serving, timeout, interval=0.1,
                     message=f"{self.name} to serve on {self.address}")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.process.describe()}") from e
        return self

    def _serving(self):
        self.process.check_running()
        if not self.address.exists():
            return False
        result = self.ctr("version", check=False, timeout=10)
        return result.returncode == 0

    def ctr(self, *args, check=True, timeout=CTR_TIMEOUT):
        """Run `ctr` against this containerd and return the CompletedProcess."""
        return run(
            [CTR_BIN, "--address", self.address, "--namespace", NAMESPACE,
             *args],
            timeout=timeout,
            check=check,
        )

    def pull(self, reference, hosts_dir, platform="linux/amd64", check=True):
        """Pull and unpack `reference` ("host:port/repo:tag" or "@digest")."""
        return self.ctr(
            "images", "pull", "--hosts-dir", hosts_dir,
            "--platform", platform, reference, check=check,
        )

    def run_container(self, reference, container_id, *command):
        """Run `command` in a container of `reference` and return its stdout.

        The container gets no network namespace setup beyond an empty one and
        is removed when it exits.
        """
        result = self.ctr("run", "--rm", reference, container_id, *command)
        return result.stdout

    def stop(self):
        """Stop containerd and unmount and delete its directories."""
        try:
            if self.process:
                self.process.stop(timeout=20)
        finally:
            for directory in (self.state, self.root):
                unmount_under(directory)
            shutil.rmtree(self.state, ignore_errors=True)
            shutil.rmtree(self.root, ignore_errors=True)


def mount_points_under(directory):
    """Return mount points at or below `directory`, deepest first."""
    base = os.path.realpath(directory)
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            # Field 5 is the mount point, with spaces and other special
            # characters written as octal escapes such as \040.
            point = line.split()[4].encode().decode("unicode_escape")
            if point == base or point.startswith(base + "/"):
                found.append(point)
    return sorted(set(found), key=len, reverse=True)


def unmount_under(directory):
    """Unmount everything at or below `directory`.

    Raises ProcessError when a mount stays, because a later recursive
    delete would descend into the mounted file system.
    """
    for point in mount_points_under(directory):
        result = run(["umount", "-R", point], timeout=60, check=False)
        if result.returncode != 0 and point in mount_points_under(directory):
            raise ProcessError(f"cannot unmount {point}: {result.stderr}")
