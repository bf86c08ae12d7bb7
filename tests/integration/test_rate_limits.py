"""Docker Hub's pull budget spent through gatecache by clusters of nodes.

Simulated containerd nodes (support/nodes.py) pull real OCI images
(support/oci_build.py) through one gatecache whose `docker.io` upstream is
the Docker Hub emulator (support/hub_emulator.py), and the tests count
what reached the emulator. Each test starts its own emulator and
gatecache, so budgets never carry over. The docker-registry behind the
emulators is shared, so each test pushes to repositories of its own.

Nodes of cluster "a" bind addresses in 127.0.1.0/24 and nodes of "b" in
127.0.2.0/24. Sleeps below wait out freshness windows and budget windows
of a few seconds; no assertion measures time.
"""

import random
import threading
import time

import pytest

from support.nodes import (  # noqa: F401 (fixtures)
    CLUSTER_A,
    CLUSTER_B,
    CONTAINERD_ACCEPT,
    HUB,
    cli_json,
    cluster_status,
    make_node,
    node_address,
    pull_once,
    pusher,
    ref,
    run_cli,
    stack,
    start_gateway,
    start_hub,
    upstream_status,
    wait_until,
)
from support.oci_build import (
    ImageIndex,
    base_layer,
    build_image,
    build_index,
    random_file,
)

# Seconds a thread of nodes may take. It bounds a hang and measures nothing.
THREAD_TIMEOUT = 300


def hub_requests_since(hub, start, listener=None):
    return [r for r in hub.requests()[start:]
            if listener is None or r.listener == listener]


def cdn_digest(request):
    """Return the digest of the blob in a CDN request's path."""
    path = request.path.partition("?")[0]
    return "sha256:" + path.split("/")[-2]


def manifest_requests(requests):
    """Return (method, path) of the manifest requests among `requests`."""
    return [(r.method, r.path.partition("?")[0]) for r in requests
            if r.listener == "registry" and "/manifests/" in r.path]


def settle():
    """Give the daemon a moment to send a request it might send late, such
    as a background revalidation, before a test checks there was none."""
    time.sleep(1)


# Two clusters of fifteen nodes pull the same twenty images at once ---------

FLEET_NODES = 15
FLEET_SINGLE = 15
FLEET_MULTI = 5


@pytest.fixture(scope="module")
def fleet(start_hub, start_gateway, pusher):
    """Pull 15 single-platform and 5 multi-platform images from 30 nodes.

    Half of the nodes resolve tags with HEAD, as containerd does, and half
    with GET. Every node pulls all images in its own order, and all start
    together. Returns a dict with the images, results, daemon and hub.
    """
    base = base_layer("fleet")
    images = {}
    for i in range(FLEET_SINGLE):
        repository = f"library/fleet-single-{i:02d}"
        images[repository] = pusher.push(
            repository, build_image(repository, base_layers=(base,)), "v1")
    for i in range(FLEET_MULTI):
        repository = f"library/fleet-multi-{i}"
        images[repository] = pusher.push(
            repository, build_index(repository, base_layers=(base,)), "v1")

    hub = start_hub()
    daemon = start_gateway(
        hub, "gc-fleet", default_freshness="10m",
        clusters={"a": {"sources": [CLUSTER_A]},
                  "b": {"sources": [CLUSTER_B]}})

    nodes = [make_node(daemon, node_address(cluster, i),
                       resolve="head" if i % 2 == 0 else "get")
             for cluster in ("a", "b") for i in range(FLEET_NODES)]
    barrier = threading.Barrier(len(nodes), timeout=THREAD_TIMEOUT)
    results = [[] for _ in nodes]

    def run(index):
        order = sorted(images)
        random.Random(index).shuffle(order)
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        for repository in order:
            results[index].append(nodes[index].pull(ref(repository)))
        nodes[index].close()

    threads = [threading.Thread(target=run, args=(i,))
               for i in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "node threads hung"

    # Every blob a linux/amd64 pull needs. The CDN logs each request after
    # its response, so wait for a GET of each to appear.
    needed = set()
    for content in images.values():
        if isinstance(content, ImageIndex):
            content = content.image("linux/amd64")
        needed.update(content.blob_digests)
    try:
        hub.wait_requests(lambda r: r.listener == "cdn" and r.method == "GET",
                          count=len(needed), timeout=10)
    except TimeoutError:
        pass  # The CDN test reports what is missing.
    return {"images": images, "results": results, "daemon": daemon,
            "hub": hub, "needed": needed}


def test_fleet_pulls_all_verify(fleet):
    results = [r for per_node in fleet["results"] for r in per_node]
    failed = [r.error for r in results if not r.ok]
    assert failed == []
    assert len(results) == 2 * FLEET_NODES * (FLEET_SINGLE + FLEET_MULTI)


def test_fleet_counts_one_get_per_manifest(fleet):
    expected = {}
    for repository, content in fleet["images"].items():
        expected[(repository, content.digest)] = 1
        if isinstance(content, ImageIndex):
            expected[(repository, content.image("linux/amd64").digest)] = 1
    stats = fleet["hub"].stats()
    assert stats.manifest_gets == FLEET_SINGLE + 2 * FLEET_MULTI
    assert stats.manifest_gets_by_reference == expected
    assert stats.too_many_requests == 0


def test_fleet_skips_other_platforms(fleet):
    """Neither arm64 children nor attestations, nor their blobs, are
    requested, because only the nodes' platform is needed."""
    unwanted = set()
    for content in fleet["images"].values():
        if not isinstance(content, ImageIndex):
            continue
        for child in content.children:
            if child.platform == "linux/amd64":
                continue
            unwanted.add(child.digest)
            unwanted.update(child.blob_digests)
    unwanted -= fleet["needed"]  # The shared base layer is needed.
    # Registry paths name "sha256:<hex>" and CDN paths "sha256/../<hex>".
    hexes = {d.split(":", 1)[1] for d in unwanted}
    asked = [(r.listener, r.method, r.path) for r in fleet["hub"].requests()
             if any(h in r.path for h in hexes)]
    assert unwanted
    assert asked == []


def test_fleet_gets_each_blob_once_from_cdn(fleet):
    """One whole-body GET per blob. HEADs are free and may confirm that
    another repository contains a stored blob, so they are not counted."""
    gets = {}
    for r in fleet["hub"].requests("cdn"):
        if r.method == "GET":
            gets.setdefault(cdn_digest(r), []).append((r.status, r.range))
    assert set(gets) == fleet["needed"]
    assert {d: g for d, g in gets.items() if g != [(200, "")]} == {}


def test_fleet_sends_no_token_to_cdn(fleet):
    stats = fleet["hub"].stats()
    with_token = [r.path for r in fleet["hub"].requests("cdn")
                  if r.authorization]
    assert stats.cdn_authorization_violations == 0
    assert stats.cdn_signature_rejections == 0
    assert with_token == []


def test_fleet_status_counts_clusters(fleet):
    status = cli_json(fleet["daemon"], "status")
    a = cluster_status(status, "a")
    b = cluster_status(status, "b")
    upstream = upstream_status(status, HUB)
    pulls = 2 * FLEET_NODES * (FLEET_SINGLE + FLEET_MULTI)
    assert a["requests"] >= pulls // 2
    assert b["requests"] >= pulls // 2
    assert a["counted"] + b["counted"] == FLEET_SINGLE + 2 * FLEET_MULTI
    assert upstream["granted"] == FLEET_SINGLE + 2 * FLEET_MULTI
    assert upstream["limit"] == 100
    assert upstream["source"] == "headers"
    assert status["denied"] == 0


# Freshness windows ---------------------------------------------------------

FRESH_WINDOW = 6


def test_tag_freshness_window(start_hub, start_gateway, pusher):
    repository = "library/fresh"
    base = base_layer("fresh")
    first = pusher.push(repository, build_image("fresh-1", base_layers=(base,)),
                        "v1")
    hub = start_hub()
    window = f"{FRESH_WINDOW}s"
    daemon = start_gateway(
        hub, "gc-fresh", default_freshness=window,
        upstream_options={HUB: {"freshness": [{"tags": "v*", "window": window}]}})
    node = make_node(daemon, "127.0.0.10")
    tag_path = f"/v2/{repository}/manifests/v1"

    pulled = node.pull(ref(repository))
    validated = time.monotonic()
    assert pulled.error == ""
    assert pulled.digest == first.digest

    # Inside the window: no request of any kind reaches the hub.
    mark = len(hub.requests())
    inside = node.pull(ref(repository))
    settle()
    assert inside.error == ""
    assert inside.digest == first.digest
    assert hub_requests_since(hub, mark) == []

    # After the window: one free HEAD, nothing counted, no blob.
    time.sleep(max(0, validated + FRESH_WINDOW + 1 - time.monotonic()))
    mark = len(hub.requests())
    before = hub.stats()
    after = node.pull(ref(repository))
    validated = time.monotonic()
    settle()
    stats = hub.stats()
    assert after.error == ""
    assert after.digest == first.digest
    assert manifest_requests(hub_requests_since(hub, mark)) == [
        ("HEAD", tag_path)]
    assert stats.manifest_gets == before.manifest_gets
    assert stats.cdn_requests == before.cdn_requests

    # A new push of the tag is not seen inside the window...
    second = pusher.push(repository,
                         build_image("fresh-2", base_layers=(base,)), "v1")
    mark = len(hub.requests())
    still = node.pull(ref(repository))
    settle()
    assert still.digest == first.digest
    assert hub_requests_since(hub, mark) == []

    # ...and after it: one HEAD, one GET by the new digest, its new blobs.
    time.sleep(max(0, validated + FRESH_WINDOW + 1 - time.monotonic()))
    mark = len(hub.requests())
    before = hub.stats()
    renewed = node.pull(ref(repository))
    settle()
    stats = hub.stats()
    new_blobs = set(second.blob_digests) - set(first.blob_digests)
    cdn_digests = {cdn_digest(r) for r in hub_requests_since(hub, mark, "cdn")}
    assert renewed.error == ""
    assert renewed.digest == second.digest
    assert manifest_requests(hub_requests_since(hub, mark)) == [
        ("HEAD", tag_path), ("GET", f"/v2/{repository}/manifests/{second.digest}")]
    assert stats.manifest_gets - before.manifest_gets == 1
    assert cdn_digests == new_blobs
    node.close()


# Spent budget: stale copies, 429 and recovery ------------------------------

SPENT_LIMIT = 10
SPENT_WINDOW = 12


def test_spent_budget_serves_stale_then_recovers(start_hub, start_gateway,
                                                 pusher):
    kept_repository = "library/spent-kept"
    cold_repository = "library/spent-cold"
    base = base_layer("spent")
    kept = pusher.push(kept_repository,
                       build_image("spent-kept-1", base_layers=(base,)), "v1")
    cold = pusher.push(cold_repository,
                       build_image("spent-cold", base_layers=(base,)), "v1")
    hub = start_hub(limit=SPENT_LIMIT, window="fixed",
                    window_seconds=SPENT_WINDOW)
    daemon = start_gateway(hub, "gc-spent", default_freshness="1s",
                           scheduler={"max_wait": "2s"})
    address = "127.0.0.20"

    stored = pull_once(daemon, address, ref(kept_repository))
    assert stored.error == ""
    assert stored.digest == kept.digest

    # The tag moves upstream, and the budget is spent for a whole window.
    moved = pusher.push(kept_repository,
                        build_image("spent-kept-2", base_layers=(base,)), "v1")
    hub.reset_window()
    hub.set_remaining(0)
    time.sleep(1.5)  # Past the 1 s freshness window of the stored tag.

    entries_start = len(daemon.access_entries())
    stale = pull_once(daemon, address, ref(kept_repository))
    assert stale.error == ""
    assert stale.digest == kept.digest
    tag_path = f"/v2/{kept_repository}/manifests/v1"
    stale_lines = daemon.wait_entries(
        lambda e: e.path == tag_path and e.cache == "stale", 1,
        start=entries_start)
    assert [e.status for e in stale_lines] == [200]

    refused_at = time.monotonic()
    refused = pull_once(daemon, address, ref(cold_repository), resolve="get")
    assert refused.ok is False
    assert refused.status == 429
    assert refused.error_codes == ["TOOMANYREQUESTS"]
    assert refused.retry_after.isdigit(), refused.retry_after
    retry_after = int(refused.retry_after)
    assert 1 <= retry_after <= 2 * SPENT_WINDOW
    daemon.process.check_running()

    status = cli_json(daemon, "status")
    upstream = upstream_status(status, HUB)
    default = cluster_status(status, "default")
    assert upstream["stale_served"] == 1
    assert upstream["remaining"] == 0
    assert default["stale"] == 1
    assert default["refused"] == 1

    # Once the hub's window ends and Retry-After has passed, pulls work.
    wait_until(lambda: hub.quota().remaining == SPENT_LIMIT,
               SPENT_WINDOW + 5, "the hub's fixed window to reset")
    time.sleep(max(0, refused_at + retry_after - time.monotonic()))
    recovered = pull_once(daemon, address, ref(cold_repository), resolve="get")
    assert recovered.error == ""
    assert recovered.digest == cold.digest
    fresh = pull_once(daemon, address, ref(kept_repository))
    assert fresh.error == ""
    assert fresh.digest == moved.digest
    assert hub.stats().too_many_requests == 0


# A 429 from Docker Hub blocks counted requests ----------------------------

THROTTLE_LIMIT = 10
THROTTLE_WINDOW = 10


def test_upstream_429_blocks_until_retry_after(start_hub, start_gateway,
                                               pusher):
    """Another client behind the gateway's address spends the budget, so
    the gateway's first GET meets a 429; later ones wait for Retry-After
    instead of reaching the hub."""
    repository = "library/throttle"
    base = base_layer("throttle")
    pusher.push(repository, build_image("throttle-tag", base_layers=(base,)),
                "v1")
    manifests = [pusher.push(repository, build_image(
        "throttle", base_layers=(base,), annotations={"test.index": str(i)}))
        for i in range(3)]
    hub = start_hub(limit=THROTTLE_LIMIT, window="fixed",
                    window_seconds=THROTTLE_WINDOW)
    daemon = start_gateway(hub, "gc-throttle", scheduler={"max_wait": "1s"})
    address = "127.0.0.60"
    learned = pull_once(daemon, address, ref(repository))
    assert learned.error == ""

    hub.reset_window()
    hub.set_remaining(0)
    node = make_node(daemon, address)

    def get(manifest):
        return node.request("GET",
                            f"/v2/{repository}/manifests/{manifest.digest}",
                            HUB, {"Accept": CONTAINERD_ACCEPT})

    first = get(manifests[0])
    first_at = time.monotonic()
    assert first.status == 429
    assert first.error_codes() == ["TOOMANYREQUESTS"]
    assert (first.header("Retry-After") or "").isdigit(), first.headers
    assert hub.stats().too_many_requests == 1

    second = get(manifests[1])
    assert second.status == 429
    assert second.error_codes() == ["TOOMANYREQUESTS"]
    assert (second.header("Retry-After") or "").isdigit(), second.headers
    assert hub.stats().too_many_requests == 1
    upstream = upstream_status(cli_json(daemon, "status"), HUB)
    assert upstream["throttled"] == 1
    assert upstream["blocked_until"] is not None

    wait_until(lambda: hub.quota().remaining == THROTTLE_LIMIT,
               THROTTLE_WINDOW + 5, "the hub's fixed window to reset")
    retry_after = int(first.header("Retry-After"))
    time.sleep(max(0, first_at + retry_after - time.monotonic()))
    third = get(manifests[2])
    node.close()
    assert third.status == 200
    assert third.header("Docker-Content-Digest") == manifests[2].digest
    assert hub.stats().too_many_requests == 1


# Restart keeps the budget --------------------------------------------------


def test_restart_keeps_budget(start_hub, start_gateway, pusher):
    base = base_layer("restart")
    for name in ("library/restart-1", "library/restart-2"):
        pusher.push(name, build_image(name, base_layers=(base,)), "v1")
    hub = start_hub(limit=50, window_seconds=3600)
    daemon = start_gateway(hub, "gc-restart")
    for name in ("library/restart-1", "library/restart-2"):
        assert pull_once(daemon, "127.0.0.30", ref(name)).error == ""

    fields = ("limit", "remaining", "window_s", "source", "spent_last_hour")
    before = upstream_status(cli_json(daemon, "status"), HUB)
    assert before["limit"] == 50
    assert before["remaining"] == 48
    assert before["source"] == "headers"

    assert daemon.stop() == 0
    mark = len(hub.requests())
    daemon.start()
    after = upstream_status(cli_json(daemon, "status"), HUB)
    assert {f: after[f] for f in fields} == {f: before[f] for f in fields}
    assert hub_requests_since(hub, mark) == []


# A token that expires while a layer downloads ------------------------------

TOKEN_LIFETIME = 2
CDN_RATE = 256 * 1024
SLOW_LAYER_BYTES = 1024 * 1024  # About 4 s at CDN_RATE.


def test_token_expires_mid_download(start_hub, start_gateway, pusher):
    repository = "library/slow"
    slow = pusher.push(repository, build_image(
        "slow", files={"opt/payload": random_file("slow", SLOW_LAYER_BYTES)}),
        "v1")
    later = pusher.push(repository, build_image("slow-later"), "v2")
    hub = start_hub(token_lifetime=TOKEN_LIFETIME, cdn_rate=CDN_RATE)
    daemon = start_gateway(hub, "gc-token")

    pulled = pull_once(daemon, "127.0.0.40", ref(repository, "v1"))
    assert pulled.error == ""
    assert pulled.digest == slow.digest

    # The download outlived every token issued before it ended.
    layer = slow.layers[-1].digest
    layer_get = [r for r in hub.requests("cdn") if cdn_digest(r) == layer]
    tokens = [r for r in hub.requests("auth") if r.status == 200]
    assert len(layer_get) == 1
    assert tokens
    last_token_before = max(r.time for r in tokens
                            if r.time <= layer_get[0].time)
    assert layer_get[0].time - last_token_before > TOKEN_LIFETIME

    token_requests = hub.stats().token_requests
    renewed = pull_once(daemon, "127.0.0.40", ref(repository, "v2"))
    stats = hub.stats()
    assert renewed.error == ""
    assert renewed.digest == later.digest
    assert stats.token_requests > token_requests
    assert stats.cdn_authorization_violations == 0
    assert [r.path for r in hub.requests("cdn") if r.authorization] == []


# Clients outside every cluster, and the operator's commands ----------------


def test_denied_client_and_cli_reports(start_hub, start_gateway, pusher):
    repository = "library/report"
    image = pusher.push(repository, build_image("report"), "v1")
    hub = start_hub()
    daemon = start_gateway(
        hub, "gc-report",
        clusters={"dev": {"sources": [CLUSTER_A]},
                  "prod": {"sources": [CLUSTER_B], "weight": 2}})
    outsider = make_node(daemon, "127.0.3.1")
    denied = outsider.request("GET", f"/v2/{repository}/manifests/v1", HUB,
                              {"Accept": CONTAINERD_ACCEPT})
    outsider.close()
    assert denied.status == 403
    assert denied.error_codes() == ["DENIED"]
    assert hub.requests() == []

    dev = pull_once(daemon, node_address("a", 0), ref(repository))
    prod = pull_once(daemon, node_address("b", 0), ref(repository))
    assert dev.error == ""
    assert prod.error == ""
    assert dev.digest == image.digest

    status = cli_json(daemon, "status")
    assert status["denied"] == 1
    assert cluster_status(status, "dev")["weight"] == 1
    assert cluster_status(status, "prod")["weight"] == 2
    assert cluster_status(status, "dev")["requests"] > 0
    assert cluster_status(status, "dev")["counted"] == 1
    assert cluster_status(status, "prod")["counted"] == 0

    text = run_cli(daemon, "status").stdout
    for name in (HUB, "dev", "prod"):
        assert name in text, text

    dev_address = node_address("a", 0)
    pulls = cli_json(daemon, "pulls", "--client", dev_address)["pulls"]
    assert pulls
    assert {p["client"] for p in pulls} == {dev_address}
    assert {p["cluster"] for p in pulls} == {"dev"}
    assert {p["status"] for p in pulls} == {200}
    manifests = [p for p in pulls if p["kind"] == "manifest"]
    blobs = {p["reference"] for p in pulls if p["kind"] == "blob"}
    assert {p["repository"] for p in pulls} == {repository}
    assert {p["reference"] for p in manifests} >= {"v1"}
    assert blobs == set(image.blob_digests)
    text = run_cli(daemon, "pulls", "--client", dev_address).stdout
    assert repository in text, text


# Weighted fair shares of a scarce budget -----------------------------------

FAIR_LIMIT = 64
FAIR_WINDOW = 20
FAIR_PER_CLUSTER = 60
FAIR_WEIGHTS = {"a": 3, "b": 1}


def test_weights_share_scarce_budget(start_hub, start_gateway, pusher):
    """Queued node requests of weights 3 and 1 get 3/4 and 1/4 of a window.

    The emulator sends the IETF header form, whose reset time lets the
    gateway start granting right when the window resets, so every request
    is queued before the first grant.
    """
    repository = "library/fair"
    base = base_layer("fair")
    tagged = pusher.push(repository, build_image("fair", base_layers=(base,)),
                         "v1")
    manifests = [pusher.push(repository, build_image(
        "fair", base_layers=(base,), annotations={"test.index": str(i)}))
        for i in range(2 * FAIR_PER_CLUSTER)]
    assert len({m.digest for m in manifests}) == len(manifests)

    hub = start_hub(limit=FAIR_LIMIT, window="fixed",
                    window_seconds=FAIR_WINDOW, header_form="ietf")
    daemon = start_gateway(
        hub, "gc-fair",
        clusters={name: {"sources": [cidr], "weight": FAIR_WEIGHTS[name]}
                  for name, cidr in (("a", CLUSTER_A), ("b", CLUSTER_B))},
        scheduler={"max_wait": "25s"})

    first = pull_once(daemon, node_address("a", 0), ref(repository))
    assert first.error == ""
    assert first.digest == tagged.digest

    # Spend the window, and let the gateway learn it from a free HEAD.
    hub.reset_window()
    hub.set_remaining(0)
    reset_at = time.monotonic() + FAIR_WINDOW
    heads = hub.stats().manifest_heads
    again = pull_once(daemon, node_address("a", 0), ref(repository))
    assert again.error == ""
    assert hub.stats().manifest_heads == heads + 1
    wait_until(lambda: upstream_status(cli_json(daemon, "status"),
                                       HUB)["remaining"] == 0,
               10, "the gateway to see 0 remaining")

    statuses = {}

    def fetch(cluster, index, manifest):
        node = make_node(daemon, node_address(cluster, index))
        try:
            response = node.request(
                "GET", f"/v2/{repository}/manifests/{manifest.digest}", HUB,
                {"Accept": CONTAINERD_ACCEPT})
            statuses[(cluster, index)] = (response.status,
                                          response.error_codes())
        except Exception as e:  # Counted as a failure below.
            statuses[(cluster, index)] = (0, [repr(e)])
        finally:
            node.close()

    threads = []
    for c, cluster in enumerate(("a", "b")):
        for i in range(FAIR_PER_CLUSTER):
            manifest = manifests[c * FAIR_PER_CLUSTER + i]
            threads.append(threading.Thread(target=fetch,
                                            args=(cluster, i, manifest)))
    for thread in threads:
        thread.start()

    def queued():
        return upstream_status(cli_json(daemon, "status"), HUB)["queued"]

    wait_until(lambda: queued()["node"] == len(threads),
               max(1.0, reset_at - time.monotonic() - 2),
               f"all {len(threads)} requests to queue before the window reset",
               describe=queued)
    for thread in threads:
        thread.join(THREAD_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "request threads hung"

    served = {cluster: sum(1 for (c, _), (s, _) in statuses.items()
                           if c == cluster and s == 200)
              for cluster in ("a", "b")}
    others = {key: value for key, value in statuses.items()
              if value != (200, []) and value != (429, ["TOOMANYREQUESTS"])}
    assert others == {}
    assert served["b"] > 0
    ratio = served["a"] / served["b"]
    assert abs(ratio - 3) <= 0.3, served
    unused = hub.quota().remaining
    assert served["a"] + served["b"] == FAIR_LIMIT, (
        f"{served} served; the hub still had {unused} pulls in the window "
        "while the other requests got 429")
    assert hub.stats().too_many_requests == 0
