#!/usr/bin/python3
"""Time whole image pulls by skopeo and ctr, direct and through gatecache.

bench/pulls.sh validates the options, tools and ports and then runs this
driver. bench/README.md explains each row of the table. The driver starts a
TLS docker-registry upstream, gatecache and a private containerd on
loopback with the helpers of tests/support, pushes three images built
from files on this machine, times every pull and writes
<results-dir>/table.md and <results-dir>/results.tsv. It stops every
process it started, by PID, when it ends, also on SIGINT, SIGTERM and
SIGHUP.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR / "tests"))

# pylint: disable=wrong-import-position
from support.containerd import (  # noqa: E402
    CTR_BIN,
    Containerd,
    unmount_under,
    write_hosts_toml,
)
from support.gatecache import Gatecache, Upstream  # noqa: E402
from support.images import (  # noqa: E402
    BIG_TAG,
    MEDIA_TYPE_INDEX,
    MULTI_TAG,
    PLATFORM_TAGS,
    build_images,
)
from support.procs import run, tail  # noqa: E402
from support.registry import Registry  # noqa: E402
from support.skopeo import Skopeo  # noqa: E402
from support.tls import TestCa, cert_dir  # noqa: E402

NAMESPACE = "bench"
PLATFORM = "linux/amd64"
IMAGE_TAG = "v1"

# Seconds for one pull. The largest image takes a few seconds on loopback,
# so a pull that runs this long is stuck, not slow.
PULL_TIMEOUT = 600

# Seconds to wait until the upstream's and gatecache's logs stop growing
# after a pull. Both write a request's line after its response has ended.
LOG_SETTLE_INTERVAL = 0.3
LOG_SETTLE_TIMEOUT = 10

CLIENTS = ("skopeo", "ctr")

# Paths in table order, with the label of their table row.
PATHS = (
    ("direct", "direct"),
    ("cold", "gatecache cold"),
    ("warm", "gatecache warm"),
    ("offline", "gatecache warm, upstream stopped"),
)


@dataclass(frozen=True)
class BenchImage:
    """An image of the test layout and where the benchmark pushes it."""

    name: str
    layout_tag: str
    repository: str
    description: str


IMAGES = (
    BenchImage("big", BIG_TAG, "bench/big",
               "busybox, shared libraries and Go programs of this machine"),
    BenchImage("busybox", PLATFORM_TAGS["amd64"], "bench/busybox",
               "/bin/busybox alone, the same image as the amd64 child of "
               "multi"),
    BenchImage("multi", MULTI_TAG, "bench/multi",
               "OCI index of a linux/amd64 and a linux/arm64 image"),
)


class Interrupted(Exception):
    """A signal asked the benchmark to stop."""


def stop_on_signal(signum, _frame):
    # Later signals are ignored, so that a second Ctrl-C cannot cut the
    # cleanup short and leave daemons running.
    ignore_stop_signals()
    raise Interrupted(signal.Signals(signum).name)


def ignore_signal(signum, _frame):
    # This handler replaces SIG_IGN because Python reports an OSError for
    # a signal that arrived before a switch to SIG_IGN but is handled after
    # it.
    log(f"ignoring {signal.Signals(signum).name} while stopping the daemons")


def log(message):
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def load_average():
    """Return the 1, 5 and 15 minute load averages as one string."""
    with open("/proc/loadavg", encoding="ascii") as loadavg:
        return " ".join(loadavg.read().split()[:3])


def command_output(argv):
    """Return the first line a version command prints, or why it failed."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True,
                                timeout=30, check=False)
    except OSError as error:
        return f"({argv[0]}: {error.strerror})"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else f"({argv[0]} printed nothing)"


@dataclass
class PullResult:
    """One timed pull. `error` is empty when the pull succeeded."""

    seconds: float
    error: str = ""
    output: str = ""


class PullBenchmark:
    """The daemons, images and clients of one benchmark run."""

    def __init__(self, args):
        self.args = args
        self.work_dir = Path(args.work_dir)
        self.state_dir = self.work_dir / "state"
        self.results_dir = Path(args.results_dir)
        self.registry = None
        self.gatecache = None
        self.containerd = None
        self.skopeo = None
        self.pushed = {}
        self.upstream_certs = None
        self.gatecache_certs = self.state_dir / "gatecache-certs"
        self.direct_hosts = self.state_dir / "hosts-direct"
        self.mirror_hosts = self.state_dir / "hosts-gatecache"
        self.load_at_start = load_average()
        self.highest_load = float(self.load_at_start.split()[0])
        self.protocols = {client: set() for client in CLIENTS}
        self.results_file = self.results_dir / "results.tsv"

    # Setup and teardown.

    def start(self):
        if self.state_dir.exists():
            # A run that was killed can leave containerd's overlay mounts,
            # and rmtree would descend into them.
            unmount_under(self.state_dir)
            shutil.rmtree(self.state_dir)
        self.state_dir.mkdir(parents=True)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.results_file.write_text(
            "round\timage\tclient\tpath\tseconds\tload_1min\terror\n")

        log("building the images (kept in "
            f"{self.work_dir / 'images'} for later runs)")
        image_set = build_images(self.work_dir / "images")

        ca = TestCa(self.state_dir / "ca")
        cert, key = ca.issue_server("upstream",
                                    names=("localhost", "127.0.0.1"))
        self.registry = Registry(self.state_dir / "upstream", cert, key,
                                 name="upstream")
        self.registry.start(port=self.args.upstream_port)
        log(f"upstream docker-registry is PID {self.registry.process.pid} "
            f"on {self.registry.host}")

        self.skopeo = Skopeo(self.state_dir / "skopeo")
        self.upstream_certs = cert_dir(self.state_dir / "upstream-certs",
                                       ca.cert)
        for image in IMAGES:
            self.pushed[image.name] = image_set.push(
                self.skopeo, self.registry.host, image.repository,
                image.layout_tag, self.upstream_certs, reference=IMAGE_TAG)
        log("pushed " + ", ".join(f"{p.repository}:{p.tag}"
                                  for p in self.pushed.values()))

        self.gatecache = Gatecache(
            self.args.gatecache_bin, self.state_dir / "gatecache",
            [Upstream(self.registry.host, self.registry.url, str(ca.cert),
                      default_freshness=self.args.freshness)],
            default_upstream=self.registry.host, max_size="20GiB",
            log_level="warn")
        # A set port makes start() bind it instead of picking a free one.
        self.gatecache.port = self.args.gatecache_port

        self._write_direct_hosts(ca.cert)
        # The mirror's hosts.toml names gatecache's CA by path, and each
        # fresh gatecache writes a new CA to the same path.
        write_hosts_toml(self.mirror_hosts, self.registry.host,
                         self.gatecache.url, self.gatecache.ca_cert)

        self.containerd = Containerd(self.state_dir / "containerd")
        self.containerd.start()
        log(f"containerd is PID {self.containerd.process.pid} on "
            f"{self.containerd.address}")

    def _write_direct_hosts(self, upstream_ca):
        directory = self.direct_hosts / self.registry.host
        directory.mkdir(parents=True)
        (directory / "hosts.toml").write_text(
            f'server = "{self.registry.url}"\n'
            "\n"
            f'[host."{self.registry.url}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
            f'  ca = "{upstream_ca}"\n')

    def stop(self):
        """Stop every daemon this run started, containerd first."""
        for name, daemon in (("containerd", self.containerd),
                             ("gatecache", self.gatecache),
                             ("upstream", self.registry)):
            if daemon is None:
                continue
            try:
                daemon.stop()
            except Exception as error:  # pylint: disable=broad-except
                # Go on, so that one failed stop leaves no other daemon
                # running.
                log(f"stopping {name} failed: {error}")
        if not self.args.keep:
            for data in (self.state_dir / "upstream" / "storage",
                         self.state_dir / "gatecache" / "state",
                         self.state_dir / "oci"):
                shutil.rmtree(data, ignore_errors=True)

    def restart_gatecache_empty(self):
        """Start gatecache again on an empty storage directory."""
        self.gatecache.stop()
        shutil.rmtree(self.gatecache.storage, ignore_errors=True)
        self.gatecache.start()
        cert_dir(self.gatecache_certs, self.gatecache.ca_cert)

    # Pulls.

    def pull(self, client, image, host):
        """Pull `image` from registry `host` with `client` and time it."""
        pushed = self.pushed[image.name]
        if client == "skopeo":
            destination = self.state_dir / "oci" / image.name
            shutil.rmtree(destination, ignore_errors=True)
            destination.parent.mkdir(parents=True, exist_ok=True)
            certs = (self.upstream_certs if host == self.registry.host
                     else self.gatecache_certs)
            started = time.monotonic()
            result = self.skopeo.copy(
                f"docker://{host}/{pushed.repository}:{pushed.tag}",
                f"oci:{destination}:{pushed.tag}",
                src_cert_dir=certs, check=False, timeout=PULL_TIMEOUT)
            seconds = time.monotonic() - started
        else:
            hosts_dir = (self.direct_hosts if host == self.registry.host
                         else self.mirror_hosts)
            started = time.monotonic()
            result = self.ctr("images", "pull", "--hosts-dir", hosts_dir,
                              "--platform", PLATFORM, pushed.reference,
                              check=False)
            seconds = time.monotonic() - started
            self.remove_from_containerd(pushed.reference)
        output = f"{result.stdout}\n{result.stderr}"
        if result.returncode != 0:
            return PullResult(seconds, f"exit code {result.returncode}",
                              output)
        return PullResult(seconds, output=output)

    def ctr(self, *args, check=True):
        return run([CTR_BIN, "--address", self.containerd.address,
                    "--namespace", NAMESPACE, *args],
                   timeout=PULL_TIMEOUT, check=check)

    def remove_from_containerd(self, reference):
        """Delete the image with its content and snapshots.

        Raises RuntimeError when anything remains, because the next pull
        would then skip what containerd already has.
        """
        if reference in self.ctr("images", "ls", "-q").stdout.split():
            self.ctr("images", "rm", "--sync", reference)
        content = self.ctr("content", "ls", "-q").stdout.split()
        # The first line of `ctr snapshots ls` is its header.
        snapshots = self.ctr("snapshots", "ls").stdout.strip().splitlines()[1:]
        if content or snapshots:
            raise RuntimeError(
                f"containerd still contains {len(content)} blobs and "
                f"{len(snapshots)} snapshots after removing {reference}")

    # Checks of where the bytes came from.

    def settled_upstream_requests(self):
        return wait_until_stable(self.registry.requests)

    def settled_access_entries(self):
        return wait_until_stable(self.gatecache.access_entries)

    def check_gatecache_pull(self, client, path, upstream_before,
                             access_before):
        """Return why a pull through gatecache does not count, or "".

        Every upstream request during such a pull must come from gatecache,
        and a warm pull must fetch no blob from the upstream.
        """
        entries = self.settled_access_entries()[access_before:]
        self.protocols[client].update(entry.protocol for entry in entries)
        if path == "offline":
            return ""
        requests = self.settled_upstream_requests()[upstream_before:]
        others = [r for r in requests
                  if not r.user_agent.startswith("gatecache")]
        if others:
            return (f"the upstream received {len(others)} requests from "
                    f"another client, such as {others[0].user_agent!r}")
        if path == "warm":
            blob_gets = [r for r in requests
                         if r.method == "GET" and "/blobs/" in r.uri]
            if blob_gets:
                return (f"gatecache fetched {len(blob_gets)} blobs from the "
                        "upstream during a warm pull")
        return ""

    # Measurement.

    def measure(self):
        runs = self.args.runs
        for round_number in range(1, runs + 1):
            for image in IMAGES:
                for client in CLIENTS:
                    self.measure_paths(round_number, image, client)

    def measure_paths(self, round_number, image, client):
        """Time one pull on each path: direct, cold, warm, offline."""
        self.record(round_number, image, client, "direct",
                    self.pull(client, image, self.registry.host))

        self.restart_gatecache_empty()
        for path in ("cold", "warm"):
            upstream_before = len(self.settled_upstream_requests())
            access_before = len(self.settled_access_entries())
            result = self.pull(client, image, self.gatecache.host)
            if not result.error:
                result.error = self.check_gatecache_pull(
                    client, path, upstream_before, access_before)
            self.record(round_number, image, client, path, result)

        self.registry.stop()
        try:
            access_before = len(self.settled_access_entries())
            result = self.pull(client, image, self.gatecache.host)
            if not result.error:
                result.error = self.check_gatecache_pull(
                    client, "offline", 0, access_before)
            self.record(round_number, image, client, "offline", result)
        finally:
            self.registry.restart()

    def record(self, round_number, image, client, path, result):
        load = load_average().split()[0]
        self.highest_load = max(self.highest_load, float(load))
        seconds = "failed" if result.error else f"{result.seconds:.3f}"
        with self.results_file.open("a") as results:
            results.write(f"{round_number}\t{image.name}\t{client}\t{path}\t"
                          f"{seconds}\t{load}\t{result.error}\n")
        label = f"round {round_number}/{self.args.runs}: {client} {path} " \
                f"{image.name}"
        if result.error:
            output_file = (self.results_dir /
                           f"failed-{client}-{path}-{image.name}-"
                           f"{round_number}.txt")
            output_file.write_text(result.output)
            log(f"{label} failed: {result.error}; output in {output_file}")
        else:
            log(f"{label}: {result.seconds:.2f} s")

    # The table.

    def image_summary(self, image):
        """Return (layers, bytes) that a linux/amd64 pull of `image` fetches.

        The bytes count the manifests of that platform (the index and its
        amd64 child for an index) and the config and layer blobs.
        """
        pushed = self.pushed[image.name]
        digests = [pushed.built.manifest_digest]
        if pushed.built.media_type == MEDIA_TYPE_INDEX:
            index = json.loads(pushed.blob(pushed.built.manifest_digest))
            digests += [entry["digest"] for entry in index["manifests"]
                        if entry["platform"]["architecture"] == "amd64"]
        blobs = pushed.platform_blobs("amd64")
        total = sum(len(pushed.blob(digest))
                    for digest in digests + list(blobs))
        return len(blobs) - 1, total

    def write_table(self, load_at_end):
        runs = read_results(self.results_file)
        lines = [f"# Image pulls, direct and through gatecache, "
                 f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", ""]
        lines += [f"- {line}" for line in self.machine_lines(load_at_end)]
        lines += ["", self.table_header(),
                  "|---|---|" + "---:|" * len(IMAGES)]
        for client in CLIENTS:
            for path, label in PATHS:
                cells = [format_cell(runs.get((client, path, image.name), []))
                         for image in IMAGES]
                lines.append(f"| {client} | {label} | " + " | ".join(cells)
                             + " |")
        lines += ["", "Images, with the bytes of manifests, config and "
                  "layers that a linux/amd64 pull fetches (MB = 10^6 bytes):",
                  ""]
        for image in IMAGES:
            layers, total = self.image_summary(image)
            noun = "layer" if layers == 1 else "layers"
            lines.append(f"- {image.name}: {layers} {noun}, "
                         f"{total / 1e6:.1f} MB: {image.description}")
        lines.append("")
        text = "\n".join(lines)
        (self.results_dir / "table.md").write_text(text)
        print(text, flush=True)

    def table_header(self):
        return ("| client | path | "
                + " | ".join(image.name for image in IMAGES) + " |")

    def machine_lines(self, load_at_end):
        cpu = "unknown CPU"
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            memory_kib = int(meminfo.readline().split()[1])
        commit = repository_commit()
        binary = Path(self.args.gatecache_bin)
        built = datetime.fromtimestamp(binary.stat().st_mtime, timezone.utc)
        protocols = ", ".join(
            f"{client} {' and '.join(sorted(found)) or 'none seen'}"
            for client, found in self.protocols.items())
        return [
            f"machine: {cpu}, {len(os.sched_getaffinity(0))} CPUs, "
            f"{memory_kib / 2**20:.0f} GiB RAM, kernel {os.uname().release}",
            f"versions: {command_output(['skopeo', '--version'])}, "
            f"{command_output(['ctr', '--version'])}, "
            f"{command_output(['docker-registry', '--version'])}, "
            f"{command_output(['runc', '--version'])}",
            f"gatecache {command_output([str(binary), '--version'])}: "
            f"{binary} built {built:%Y-%m-%d %H:%M} UTC, repository at "
            f"commit {commit}",
            f"command: {self.args.command}",
            f"gatecache default_freshness: {self.args.freshness}",
            f"protocols to gatecache (from its access log): {protocols}",
            f"load average (1, 5, 15 min): {self.load_at_start} at start, "
            f"{load_at_end} at end, highest 1-min value "
            f"{self.highest_load:.2f}. Other work on the machine may share "
            "its CPUs during the run and slows every path.",
            f"cells: wall seconds of one pull, median of {self.args.runs} "
            "runs (min-max). ctr's time includes unpacking the layers.",
        ]


def repository_commit():
    """Return the short commit of the repository and whether it is dirty."""
    git = ["git", "-C", str(REPO_DIR)]
    commit = command_output(git + ["rev-parse", "--short", "HEAD"])
    status = subprocess.run(git + ["status", "--porcelain",
                                   "--untracked-files=no"],
                            capture_output=True, text=True, timeout=30,
                            check=False)
    if status.returncode == 0 and status.stdout.strip():
        commit += " (the working tree had uncommitted changes)"
    return commit


def ignore_stop_signals():
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, ignore_signal)


def wait_until_stable(read):
    """Return read() once two calls LOG_SETTLE_INTERVAL seconds apart return
    lists of the same length, or after LOG_SETTLE_TIMEOUT seconds."""
    deadline = time.monotonic() + LOG_SETTLE_TIMEOUT
    previous = read()
    while time.monotonic() < deadline:
        time.sleep(LOG_SETTLE_INTERVAL)
        current = read()
        if len(current) == len(previous):
            return current
        previous = current
    return previous


def read_results(path):
    """Map (client, path, image) to its list of seconds.

    None in a list marks a failed pull.
    """
    runs = {}
    with path.open(encoding="utf-8") as results:
        next(results)
        for line in results:
            fields = line.rstrip("\n").split("\t")
            key = (fields[2], fields[3], fields[1])
            seconds = None if fields[4] == "failed" else float(fields[4])
            runs.setdefault(key, []).append(seconds)
    return runs


def format_cell(values):
    """Format runs as "median (min-max)" and count the failed ones."""
    if not values:
        return "n/a"
    times = [value for value in values if value is not None]
    failed = len(values) - len(times)
    if not times:
        return f"failed ({failed} of {len(values)})"
    cell = f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})"
    if failed:
        cell += f", {failed} of {len(values)} failed"
    return cell


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Driver of bench/pulls.sh, which validates these "
                    "options. Run that script instead.")
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--results-dir", required=True)
    parser.add_argument("--gatecache-bin", required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--gatecache-port", type=int, required=True)
    parser.add_argument("--freshness", required=True)
    parser.add_argument("--command", required=True,
                        help="command line to record in the table")
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop_on_signal)
    benchmark = PullBenchmark(args)
    try:
        benchmark.start()
        benchmark.measure()
        load_at_end = load_average()
    except Interrupted as signal_name:
        log(f"stopping on {signal_name}")
        return 130
    except Exception as error:  # pylint: disable=broad-except
        # The finally block stops the daemons, and their logs under the
        # state directory show the details.
        log(f"benchmark failed: {error}")
        log(f"daemon logs are under {benchmark.state_dir}")
        if benchmark.gatecache and benchmark.gatecache.process:
            log("gatecache stderr tail:\n" + tail(
                benchmark.gatecache.process.stderr_path, 20))
        return 1
    finally:
        # A signal during the cleanup would leave the remaining daemons
        # running.
        ignore_stop_signals()
        benchmark.stop()
    benchmark.write_table(load_at_end)
    log(f"table and results are in {benchmark.results_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
