"""The Ansible roles in ansible/, run on this machine under scratch roots.

The node role edits containerd configs of each layout (a version 2 file
with leftover registry tables, a version 3 file, no file), and real
containerd daemons started on what it produced pull through a real
gatecache. The gateway role renders a configuration that `gatecache
check-config` accepts. Every server listens on loopback.
"""

import json
import tomllib
from pathlib import Path

import pytest

from support.ansible import (
    ROLES_DIR,
    ImportingContainerd,
    Playbook,
    available,
    lint,
    run_module,
)
from support.containerd import CTR_BIN
from support.images import MULTI_TAG
from support.procs import run

pytestmark = pytest.mark.skipif(available() is not None,
                                reason=available() or "")

# An input config the way clusters carry them: a version 2 file from
# `containerd config default` with an empty config_path left in the CRI
# registry table, plus a version 3 table someone added following the
# containerd 2.x docs. containerd 2.x converts the version 2 table into the
# version 3 one, so the empty value would override the right one.
V2_TRAP_CONFIG = """\
# Node configuration kept by the platform team.
version = 2
oom_score = -999   # keep containerd alive under memory pressure

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{cni}/bin"
      conf_dir = "{cni}/net.d"
    [plugins."io.containerd.grpc.v1.cri".registry]
      # Left empty by `containerd config default`.
      config_path = ""
      [plugins."io.containerd.grpc.v1.cri".registry.auths]
      [plugins."io.containerd.grpc.v1.cri".registry.configs]
        [plugins."io.containerd.grpc.v1.cri".registry.configs."registry.example.internal".auth]
          username = "puller"
      [plugins."io.containerd.grpc.v1.cri".registry.headers]
      [plugins."io.containerd.grpc.v1.cri".registry.mirrors]

[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/etc/containerd/certs.d"   # from the containerd 2.x docs
"""

# A containerd 2.x file. The version 2 CRI registry table is a leftover
# that containerd 2.x ignores in a version 3 file; the role sets it anyway.
V3_CONFIG = """\
version = 3

# Runtime settings the role must keep.
[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = ""
"""

LEGACY_MIRRORS_CONFIG = """\
version = 2

[plugins."io.containerd.grpc.v1.cri".registry]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors]
    [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
      endpoint = ["https://mirror.example.internal"]
  [plugins."io.containerd.grpc.v1.cri".registry.configs]
    [plugins."io.containerd.grpc.v1.cri".registry.configs."mirror.example.internal".tls]
      insecure_skip_verify = true
    [plugins."io.containerd.grpc.v1.cri".registry.configs."mirror.example.internal".auth]
      username = "puller"
"""

V2_TABLE = ("plugins", "io.containerd.grpc.v1.cri", "registry")
V3_TABLE = ("plugins", "io.containerd.cri.v1.images", "registry")

PROBE_REPOSITORY = "gatecache-test/probe"


def containerd_major():
    output = run(["/usr/bin/containerd", "--version"], timeout=30).stdout
    return int(output.split()[2].lstrip("v").split(".")[0])


def table(document, path):
    for key in path:
        document = document[key]
    return document


class NodeRoot:
    """A scratch root for the node role, with its variables and results."""

    def __init__(self, directory, gatecache, registry):
        self.root = Path(directory) / "root"
        self.root.mkdir(parents=True)
        self.playbook = Playbook(Path(directory) / "play", "node")
        self.restart_marker = Path(directory) / "containerd-restarted"
        self.registry = registry
        self.variables = {
            "gatecache_node_root": str(self.root),
            "gatecache_node_install_packages": False,
            "gatecache_node_verify": False,
            "gatecache_upstreams": {registry.host: {}},
            "gatecache_gateway_address": "127.0.0.1",
            "gatecache_port": gatecache.port,
            "gatecache_ca_local_path": str(gatecache.ca_cert),
            "gatecache_containerd_restart_command":
                f"touch {self.restart_marker}",
        }

    @property
    def config(self):
        return self.root / "etc/containerd/config.toml"

    @property
    def certs(self):
        return self.root / "etc/containerd/certs.d"

    @property
    def hosts_toml(self):
        return self.certs / self.registry.host / "hosts.toml"

    def write_config(self, text):
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(text)

    def apply(self, check=False, diff=False, tags=None, **overrides):
        return self.playbook.run({**self.variables, **overrides}, check=check,
                                 diff=diff, tags=tags)

    def parsed_config(self):
        return tomllib.loads(self.config.read_text())


@pytest.fixture
def node(tmp_path, gatecache, registry):
    return NodeRoot(tmp_path, gatecache, registry)


@pytest.fixture(scope="module")
def probe_image(registry, images, skopeo, upstream_certs):
    """The small linux/amd64 + arm64 index, as the verification's probe."""
    return images.push(skopeo, registry.host, PROBE_REPOSITORY, MULTI_TAG,
                       upstream_certs, reference="v1")


def assert_applied_once(node, first):
    """Check a first run that changed things, then an idempotent second run."""
    assert first.returncode == 0, first.describe()
    assert first.changed > 0, first.describe()
    assert node.restart_marker.exists(), "containerd restart handler did not run"
    node.restart_marker.unlink()
    second = node.apply()
    assert second.returncode == 0, second.describe()
    assert second.changed == 0, second.describe()
    assert not node.restart_marker.exists(), \
        "containerd restarted although nothing changed"


def assert_hosts_toml(node, gatecache):
    hosts = tomllib.loads(node.hosts_toml.read_text())
    assert hosts["server"] == f"https://{node.registry.host}"
    assert list(hosts["host"]) == [gatecache.url]
    mirror = hosts["host"][gatecache.url]
    assert mirror["capabilities"] == ["pull", "resolve"]
    assert mirror["ca"] == str(node.certs / "gatecache-ca.crt")
    assert (node.certs / "gatecache-ca.crt").read_bytes() == \
        Path(gatecache.ca_cert).read_bytes()


# --- The config.toml edits, checked as TOML ---


def test_v2_trap_config_gets_every_table(node, gatecache, tmp_path):
    node.write_config(V2_TRAP_CONFIG.format(cni=tmp_path / "cni"))

    assert_applied_once(node, node.apply())

    document = node.parsed_config()
    assert table(document, V2_TABLE)["config_path"] == str(node.certs)
    assert table(document, V3_TABLE)["config_path"] == \
        f"{node.certs}:/etc/containerd/certs.d"
    assert document["version"] == 2
    assert document["oom_score"] == -999
    cri = table(document, V2_TABLE[:2])
    assert cri["sandbox_image"] == "registry.k8s.io/pause:3.9"
    assert cri["registry"]["configs"]["registry.example.internal"]["auth"] == \
        {"username": "puller"}
    text = node.config.read_text()
    for comment in ("# Node configuration kept by the platform team.",
                    "# keep containerd alive under memory pressure",
                    "# Left empty by `containerd config default`.",
                    "# from the containerd 2.x docs"):
        assert comment in text
    assert_hosts_toml(node, gatecache)


def test_v3_config_for_containerd_2(node, gatecache):
    node.write_config(V3_CONFIG)
    node.variables["gatecache_containerd_version"] = "2.0.0"

    assert_applied_once(node, node.apply())

    document = node.parsed_config()
    assert document["version"] == 3
    assert table(document, V3_TABLE)["config_path"] == str(node.certs)
    assert table(document, V2_TABLE)["config_path"] == str(node.certs)
    runtime = document["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["enable_selinux"] is False
    assert document["plugins"]["io.containerd.cri.v1.images"]["snapshotter"] \
        == "overlayfs"
    assert "# Runtime settings the role must keep." in node.config.read_text()
    assert_hosts_toml(node, gatecache)


@pytest.mark.skipif(containerd_major() != 1, reason="needs containerd 1.x")
def test_v3_config_rejected_for_containerd_1(node):
    node.write_config(V3_CONFIG)

    result = node.apply()

    assert result.returncode != 0, result.describe()
    assert "version = 3, which containerd 1." in result.text, result.describe()
    assert "does not read" in result.text, result.describe()
    assert node.config.read_text() == V3_CONFIG


def test_missing_config_is_created(node, gatecache):
    assert_applied_once(node, node.apply())

    document = node.parsed_config()
    if containerd_major() == 1:
        assert document["version"] == 2
        assert table(document, V2_TABLE)["config_path"] == str(node.certs)
    else:
        assert document["version"] == 3
        assert table(document, V3_TABLE)["config_path"] == str(node.certs)
    assert_hosts_toml(node, gatecache)


def test_check_mode_changes_nothing(node, tmp_path):
    original = V2_TRAP_CONFIG.format(cni=tmp_path / "cni")
    node.write_config(original)

    result = node.apply(check=True, diff=True)

    assert result.returncode == 0, result.describe()
    assert result.changed > 0, result.describe()
    assert node.config.read_text() == original
    assert not node.certs.exists()
    assert not node.restart_marker.exists()
    assert f'+      config_path = "{node.certs}"' in result.text, result.describe()
    assert '-      config_path = ""' in result.text, result.describe()
    assert "+server = " in result.text, result.describe()


def test_legacy_mirrors_fail_with_their_names(node):
    node.write_config(LEGACY_MIRRORS_CONFIG)

    result = node.apply()

    assert result.returncode != 0, result.describe()
    assert ('[plugins."io.containerd.grpc.v1.cri".registry.mirrors] '
            "(docker.io)") in result.text, result.describe()
    assert ('configs."mirror.example.internal".tls]') in result.text, result.describe()
    assert "gatecache_node_legacy_registry: remove" in result.text, result.describe()
    assert node.config.read_text() == LEGACY_MIRRORS_CONFIG


def test_legacy_mirrors_removed_on_request(node):
    node.write_config(LEGACY_MIRRORS_CONFIG)

    result = node.apply(gatecache_node_legacy_registry="remove")

    assert result.returncode == 0, result.describe()
    registry = table(node.parsed_config(), V2_TABLE)
    assert "mirrors" not in registry
    assert registry["configs"]["mirror.example.internal"] == \
        {"auth": {"username": "puller"}}
    assert registry["config_path"] == str(node.certs)


# Layouts people write by hand: (file text, expected config_path, path of
# the table that gets it).
EDGE_LAYOUTS = {
    "dotted keys": (
        'version = 2\nplugins."io.containerd.grpc.v1.cri".registry.config_path = ""\n',
        "{certs}", V2_TABLE),
    "inline table": (
        'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n'
        'registry = {{ config_path = "/old" }}\n',
        "{certs}:/old", V2_TABLE),
    "version 1": (
        '[plugins.cri.registry]\nconfig_path = "/a:/b"\n',
        "{certs}:/a:/b", ("plugins", "cri", "registry")),
    "second directory": (
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
        '  config_path = "/etc/docker/certs.d:{certs}"\n',
        "{certs}:/etc/docker/certs.d", V2_TABLE),
}


@pytest.mark.parametrize("layout", sorted(EDGE_LAYOUTS))
def test_config_module_edge_layouts(layout, tmp_path):
    text, expected, path = EDGE_LAYOUTS[layout]
    certs = str(tmp_path / "certs.d")
    config = tmp_path / "config.toml"
    config.write_text(text.format(certs=certs))
    arguments = {"path": str(config), "config_path": certs,
                 "containerd_version": "1.6.20"}

    first = run_module(ROLES_DIR / "node/library", "containerd_registry_config",
                       arguments, tmp_path / "ansible")
    after_first = config.read_text()
    second = run_module(ROLES_DIR / "node/library", "containerd_registry_config",
                        arguments, tmp_path / "ansible")

    assert first[0] == 0, first[1]
    assert "CHANGED" in first[1], first[1]
    assert table(tomllib.loads(after_first), path)["config_path"] == \
        expected.format(certs=certs)
    assert second[0] == 0, second[1]
    assert "CHANGED" not in second[1], second[1]
    assert config.read_text() == after_first


# --- Real containerd on what the role produced ---


@pytest.mark.parametrize("layout", ["v2-trap", "v3", "missing"])
def test_containerd_pulls_through_gatecache(layout, node, gatecache, registry,
                                            probe_image, tmp_path):
    if layout == "v2-trap":
        node.write_config(V2_TRAP_CONFIG.format(cni=tmp_path / "cni"))
    elif layout == "v3":
        node.write_config(V3_CONFIG)
        node.variables["gatecache_containerd_version"] = "2.0.0"
    result = node.apply()
    assert result.returncode == 0, result.describe()

    # containerd 1.6 loads a version 3 file but ignores its tables. For that
    # layout this checks that the file loads and that the hosts.toml works,
    # and the version 3 table itself is checked as TOML above. The v3 and
    # missing layouts run without the CRI plugin, because its defaults would
    # create /etc/cni/net.d on this machine.
    daemon = ImportingContainerd(tmp_path / "containerd", node.config,
                                 cri=(layout == "v2-trap"))
    try:
        daemon.start()
        if layout == "v2-trap":
            assert daemon.plugin_status("io.containerd.grpc.v1", "cri") == "ok"
            dump = run(["/usr/bin/containerd", "--config", daemon.config,
                        "config", "dump"], timeout=60).stdout
            assert table(tomllib.loads(dump), V2_TABLE)["config_path"] == \
                str(node.certs)
        start = len(gatecache.access_entries())
        daemon.pull(probe_image.reference, node.certs)
    finally:
        daemon.stop()

    # containerd resolves the tag with HEAD and fetches by digest.
    path = f"/v2/{PROBE_REPOSITORY}/manifests/v1"
    entries = gatecache.wait_entries(lambda e: e.path == path, 1, start=start)
    assert entries[0].status == 200, entries[0].line
    assert entries[0].ns == registry.host, entries[0].line


# --- The verification step against a running gatecache ---


@pytest.fixture
def verified_node(node, gatecache, gatecache_bin, tmp_path):
    """A node root with a running containerd and verification turned on."""
    node.write_config(V2_TRAP_CONFIG.format(cni=tmp_path / "cni"))
    daemon = ImportingContainerd(tmp_path / "containerd", node.config, cri=True)
    daemon.start()
    node.daemon = daemon
    node.variables.update({
        "gatecache_node_verify": True,
        "gatecache_containerd_socket": str(daemon.address),
        "gatecache_gateway_host": "localhost",
        "gatecache_gateway_command": gatecache_bin,
        "gatecache_gateway_config": str(gatecache.config_path),
        "gatecache_node_address": "127.0.0.1",
    })
    try:
        yield node
    finally:
        daemon.stop()


def point_hosts_toml_at_upstream(node, test_ca):
    """Rewrite hosts.toml so that containerd pulls from the upstream.

    containerd 1.6 rejects a hosts.toml without a [host] table, so the
    upstream is named there too.
    """
    upstream = f"https://{node.registry.host}"
    node.hosts_toml.write_text(
        f'server = "{upstream}"\n'
        "\n"
        f'[host."{upstream}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        f'  ca = "{test_ca.cert}"\n'
    )


def test_verification_passes_through_gatecache(verified_node, probe_image):
    result = verified_node.apply(gatecache_probe_image=probe_image.reference)

    assert result.returncode == 0, result.describe()
    assert "went through gatecache" in result.text, result.describe()


def test_verification_reports_direct_pull(verified_node, probe_image, test_ca):
    first = verified_node.apply(gatecache_probe_image=probe_image.reference)
    assert first.returncode == 0, first.describe()
    point_hosts_toml_at_upstream(verified_node, test_ca)

    result = verified_node.apply(gatecache_probe_image=probe_image.reference,
                                 tags=["gatecache_verify"])

    assert result.returncode != 0, result.describe()
    assert "did not reach gatecache: it went straight to the upstream" \
        in result.text, result.describe()
    assert ('check config_path in [plugins."io.containerd.grpc.v1.cri"'
            ".registry]") in result.text, result.describe()


def test_verification_reports_content_store(verified_node, probe_image,
                                            test_ca):
    first = verified_node.apply(gatecache_probe_image=probe_image.reference)
    assert first.returncode == 0, first.describe()
    # A second name keeps the probe's content after the role removes it.
    run([CTR_BIN, "--address", verified_node.daemon.address, "--namespace",
         "k8s.io", "images", "tag", probe_image.reference,
         f"{probe_image.reference}-kept"], timeout=60)
    point_hosts_toml_at_upstream(verified_node, test_ca)

    result = verified_node.apply(gatecache_probe_image=probe_image.reference,
                                 tags=["gatecache_verify"])

    assert result.returncode != 0, result.describe()
    assert "did not reach gatecache: served from the node's content store" \
        in result.text, result.describe()


# --- The gateway role ---


@pytest.fixture
def gateway(tmp_path, registry, test_ca, gatecache_bin):
    playbook = Playbook(tmp_path / "play", "gateway")
    variables = {
        "gatecache_install_package": False,
        "gatecache_manage_service": False,
        "gatecache_manage_ca": False,
        "gatecache_user": "",
        "gatecache_group": "",
        "gatecache_command": gatecache_bin,
        "gatecache_config_path": str(tmp_path / "etc/gatecache.yaml"),
        "gatecache_storage_path": str(tmp_path / "state"),
        "gatecache_gateway_address": "127.0.0.1",
        "gatecache_admin": {},
        "gatecache_listen": ["127.0.0.1:5443"],
        "gatecache_upstreams": {
            registry.host: {"url": registry.url, "ca_file": str(test_ca.cert),
                            "server": "https://unused.example.internal"},
            "docker.io": None,
        },
        "gatecache_default_upstream": registry.host,
        "gatecache_ca_local_path": str(tmp_path / "controller/ca.crt"),
    }
    return playbook, variables


def test_gateway_config_passes_check_config(gateway, gatecache_bin, registry,
                                            tmp_path):
    playbook, variables = gateway

    first = playbook.run(variables)
    second = playbook.run(variables)

    assert first.returncode == 0, first.describe()
    assert first.changed > 0, first.describe()
    assert second.returncode == 0, second.describe()
    assert second.changed == 0, second.describe()
    config = Path(variables["gatecache_config_path"])
    run([gatecache_bin, "check-config", "--config", config], timeout=30)
    text = config.read_text()
    assert "unused.example.internal" not in text
    assert f'"{registry.host}":' in text


def test_gateway_check_mode_changes_nothing(gateway):
    playbook, variables = gateway

    result = playbook.run(variables, check=True, diff=True)

    assert result.returncode == 0, result.describe()
    assert result.changed > 0, result.describe()
    assert not Path(variables["gatecache_config_path"]).exists()
    assert "+  path: " in result.text, result.describe()


def test_gateway_config_with_clusters(gateway):
    playbook, variables = gateway
    variables.update({
        "gatecache_listen": [{"address": "127.0.0.1:5443",
                              "client_certificates": "optional"}],
        "gatecache_clusters": {
            "dev": {"sources": ["10.1.0.0/16"], "weight": 1},
            "prod": {"sources": ["10.2.0.0/16", "fd00:2::/64"], "weight": 3},
        },
        "gatecache_admin": {"socket": "/run/gatecache/admin.sock"},
        "gatecache_upstreams": {
            "docker.io": {"freshness": [{"tags": "latest", "window": "5m"}],
                          "budget": {"limit": 100, "window": "6h"}},
        },
        "gatecache_default_upstream": "docker.io",
        "gatecache_front": {"max_connections": 2000, "idle_timeout": "60s"},
        "gatecache_storage_scrub_interval": "30d",
        "gatecache_storage_scrub_rate": "16MiB",
    })

    result = playbook.run(variables)

    assert result.returncode == 0, result.describe()
    text = Path(variables["gatecache_config_path"]).read_text()
    assert "max_connections: 2000" in text
    assert 'scrub_interval: "30d"' in text
    assert 'scrub_rate: "16MiB"' in text


def test_gateway_creates_ca_and_saves_bundle(gateway, gatecache_bin):
    playbook, variables = gateway
    variables["gatecache_manage_ca"] = True

    first = playbook.run(variables)
    second = playbook.run(variables)

    assert first.returncode == 0, first.describe()
    assert second.returncode == 0, second.describe()
    assert second.changed == 0, second.describe()
    bundle = Path(variables["gatecache_ca_local_path"]).read_text()
    ca = (Path(variables["gatecache_storage_path"]) / "tls/ca.crt").read_text()
    assert ca.strip() in bundle


def test_roles_pass_ansible_lint():
    result = lint(["site.yml", "roles/gateway", "roles/node"])

    assert result.returncode == 0, result.stdout + result.stderr


def test_example_inventory_parses():
    result = run(["/usr/bin/ansible-inventory", "-i",
                  Path(__file__).resolve().parents[2] / "ansible/inventory.example.yml",
                  "--list"], timeout=60)
    inventory = json.loads(result.stdout)
    assert set(inventory["gatecache_nodes"]["children"]) == {"dev", "prod"}
    assert len(inventory["gatecache_gateway"]["hosts"]) == 1
