"""Prewarming image sets through gatecache within Docker Hub's budget.

`gatecache prewarm FILE.yaml` makes the daemon fetch every image of a
set: the tag, only the children of the requested platforms (never the
attestation manifests of platform unknown/unknown), then config and
layers. The Docker Hub emulator (support/hub_emulator.py) in front of the
shared docker-registry counts what the prewarm fetched, and simulated
nodes (support/nodes.py) pull the same images afterwards.
"""

import json
import time

from support.nodes import (  # noqa: F401 (fixtures)
    HUB,
    admin_get,
    cli_json,
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
from support.oci_build import base_layer, build_image, build_index

# Seconds a prewarm of a few small images may take on a loaded machine. It
# bounds a hang and measures nothing.
PREWARM_TIMEOUT = 120


def write_set(path, name, images, platforms=("linux/amd64",)):
    """Write an image set file and return its path.

    `images` contains references, or (reference, platforms) pairs for images
    with platforms of their own.
    """
    lines = [f"name: {name}", f"platforms: {json.dumps(list(platforms))}",
             "images:"]
    for image in images:
        if isinstance(image, tuple):
            reference, own = image
            lines += [f"  - ref: {reference}",
                      f"    platforms: {json.dumps(list(own))}"]
        else:
            lines.append(f"  - {image}")
    path.write_text("\n".join(lines) + "\n")
    return path


def prewarm_job(daemon, set_name):
    """Return the newest `status` prewarm entry of `set_name`, or None."""
    jobs = [job for job in cli_json(daemon, "status").get("prewarm", [])
            if set_name in job.get("sets", [])]
    return max(jobs, key=lambda job: job["id"]) if jobs else None


def cdn_digests(hub):
    return {"sha256:" + r.path.partition("?")[0].split("/")[-2]
            for r in hub.requests("cdn")}


def test_prewarm_fetches_requested_platforms(tmp_path, start_hub,
                                             start_gateway, pusher):
    base = base_layer("warm-platforms")
    indexes = {}
    for i in range(3):
        repository = f"library/warm-platform-{i}"
        indexes[repository] = pusher.push(
            repository, build_index(repository, base_layers=(base,)), "v1")
    single_repository = "library/warm-single"
    single = pusher.push(single_repository,
                         build_image(single_repository, base_layers=(base,)),
                         "v1")
    # The set requests only arm64 of the last index.
    arm_repository = "library/warm-platform-2"
    set_file = write_set(
        tmp_path / "platforms.yaml", "platforms",
        [ref("library/warm-platform-0"), ref("library/warm-platform-1"),
         (ref(arm_repository), ["linux/arm64"]), ref(single_repository)])

    hub = start_hub()
    # Tags stay fresh for the node pulls after the prewarm.
    daemon = start_gateway(hub, "gc-warm-platforms", default_freshness="10m")
    finished = run_cli(daemon, "prewarm", set_file, timeout=PREWARM_TIMEOUT)
    assert finished.returncode == 0

    job = prewarm_job(daemon, "platforms")
    assert job is not None
    assert job["state"] == "done"
    assert job["images_total"] == 4
    assert job["images_done"] == 4
    assert job["errors"] == []

    wanted = {single_repository: single}
    for repository, index in indexes.items():
        platform = "linux/arm64" if repository == arm_repository \
            else "linux/amd64"
        wanted[repository] = index.image(platform)
    expected_gets = {(single_repository, single.digest): 1}
    for repository, index in indexes.items():
        expected_gets[(repository, index.digest)] = 1
        expected_gets[(repository, wanted[repository].digest)] = 1
    stats = hub.stats()
    assert stats.manifest_gets_by_reference == expected_gets

    attestations = {a.digest.split(":", 1)[1]
                    for index in indexes.values() for a in index.attestations}
    asked = [r.path for r in hub.requests()
             if any(h in r.path for h in attestations)]
    assert asked == []
    needed = set()
    for image in wanted.values():
        needed.update(image.blob_digests)
    assert cdn_digests(hub) == needed

    # Nodes now pull the prewarmed amd64 images without asking the hub.
    mark = len(hub.requests())
    for repository in ("library/warm-platform-0", single_repository):
        pulled = pull_once(daemon, "127.0.0.50", ref(repository))
        assert pulled.error == ""
        assert pulled.image_digest == wanted[repository].digest
    time.sleep(1)  # A late background request would show up by now.
    assert hub.requests()[mark:] == []


# A budget of 20 pulls keeps ceil(0.2 * 20) = 4 for node pulls.
RESERVE_LIMIT = 20
RESERVE_SHARE = 0.2
RESERVED = 4
WARM_IMAGES = 10


def test_prewarm_never_spends_reserve(tmp_path, start_hub, start_gateway,
                                      pusher):
    base = base_layer("warm-reserve")
    seed_repository = "library/warm-seed"
    late_repository = "library/warm-late"
    for repository in (seed_repository, late_repository):
        pusher.push(repository, build_image(repository, base_layers=(base,)),
                    "v1")
    references = []
    for i in range(WARM_IMAGES):
        repository = f"library/warm-reserve-{i}"
        pusher.push(repository, build_index(repository, base_layers=(base,)),
                    "v1")
        references.append(ref(repository))
    set_file = write_set(tmp_path / "reserve.yaml", "reserve", references)

    hub = start_hub(limit=RESERVE_LIMIT, window_seconds=3600)
    daemon = start_gateway(hub, "gc-warm-reserve",
                           scheduler={"reserve": RESERVE_SHARE})
    # A node pull first, so the gateway learns the budget: 19 remain.
    seeded = pull_once(daemon, "127.0.0.51", ref(seed_repository))
    assert seeded.error == ""
    assert hub.quota().remaining == RESERVE_LIMIT - 1

    # Each image costs two counted GETs (index and amd64 child), so the
    # set needs 20 and only 15 are there above the reserve.
    run_cli(daemon, "prewarm", "--no-wait", set_file)
    wait_until(lambda: hub.quota().remaining <= RESERVED,
               PREWARM_TIMEOUT, f"the prewarm to spend down to {RESERVED}",
               describe=hub.quota)
    job = wait_until(
        lambda: (prewarm_job(daemon, "reserve") or {}).get("state") == "waiting"
        and prewarm_job(daemon, "reserve"),
        30, "the prewarm job to wait for budget",
        describe=lambda: prewarm_job(daemon, "reserve"))
    time.sleep(2)  # The job keeps waiting instead of spending more.
    assert hub.quota().remaining == RESERVED
    assert hub.stats().manifest_gets == RESERVE_LIMIT - RESERVED
    assert hub.stats().too_many_requests == 0

    status, detail = admin_get(daemon, f"/v1/prewarm/{job['id']}")
    assert status == 200
    assert detail["state"] == "waiting"
    assert detail["sets"] == ["reserve"]
    assert detail["images_total"] == WARM_IMAGES
    assert detail["images_done"] < WARM_IMAGES
    assert detail["counted"] == RESERVE_LIMIT - RESERVED - 1
    assert detail["errors"] == []
    assert detail["bytes"] > 0
    assert detail["waiting_until"] is not None
    assert detail["finished_at"] is None
    assert len(detail["images"]) == WARM_IMAGES
    assert {i["ref"] for i in detail["images"]} == set(references)
    assert {i["state"] for i in detail["images"]} <= {
        "queued", "running", "done", "waiting"}
    done = [i for i in detail["images"] if i["state"] == "done"]
    assert len(done) == detail["images_done"]

    upstream = upstream_status(cli_json(daemon, "status"), HUB)
    assert upstream["queued"]["prewarm"] >= 1
    assert upstream["remaining"] == RESERVED

    # A node still pulls an uncached image, from the reserve.
    late = pull_once(daemon, "127.0.0.52", ref(late_repository))
    assert late.error == ""
    time.sleep(2)  # The prewarm must not take what the node left.
    assert hub.quota().remaining == RESERVED - 1
    assert prewarm_job(daemon, "reserve")["state"] == "waiting"
