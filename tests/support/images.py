"""Real OCI images built with umoci from files on this machine.

Two images go into one OCI layout:

- tag "big": a linux/amd64 image of three layers (busybox-static as
  /bin/busybox and /bin/sh, shared libraries, then the Go programs this
  test suite uses), at least `BIG_IMAGE_MIN_BYTES` of compressed layers,
  so a container can run `/bin/busybox echo ...`;
- tag "multi": an OCI image index of a linux/amd64 and a linux/arm64 image,
  written by this module because umoci only makes single images.

Building takes a few seconds, so the layout is kept in a cache directory.
The cache key covers this module's source and the size and mtime of every
input file. Processes that start together wait on a lock instead of
building twice.
"""

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .procs import run

UMOCI_BIN = "/usr/bin/umoci"

BIG_TAG = "big"
MULTI_TAG = "multi"
PLATFORM_TAGS = {"amd64": "amd64", "arm64": "arm64"}

BIG_IMAGE_MIN_BYTES = 50 * 1024 * 1024

LIB_DIR = "/usr/lib/x86_64-linux-gnu"

# (layer name, [(source path, path in the image, required)]). The optional
# libraries come from packages that gatecache builds against, so every
# machine that builds the project has them. A missing one only makes the
# layer smaller.
BIG_IMAGE_LAYERS = (
    ("busybox", [("/bin/busybox", "bin/busybox", True)]),
    (
        "libraries",
        [
            (f"{LIB_DIR}/{name}", f"usr/lib/x86_64-linux-gnu/{name}", False)
            for name in (
                "libc.so.6",
                "libstdc++.so.6",
                "libcrypto.so.3",
                "libssl.so.3",
                "libnghttp2.so.14",
                "libev.so.4",
                "libcares.so.2",
                "liblmdb.so.0",
                "libyaml-cpp.so.0.7",
                "libsystemd.so.0",
            )
        ],
    ),
    (
        "programs",
        [
            ("/usr/bin/docker-registry", "usr/bin/docker-registry", True),
            ("/usr/bin/containerd", "usr/bin/containerd", True),
            ("/usr/bin/ctr", "usr/bin/ctr", True),
            ("/usr/bin/skopeo", "usr/bin/skopeo", True),
            (
                "/usr/bin/containerd-shim-runc-v2",
                "usr/bin/containerd-shim-runc-v2",
                True,
            ),
            ("/usr/sbin/runc", "usr/sbin/runc", True),
            ("/usr/bin/umoci", "usr/bin/umoci", True),
        ],
    ),
)

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class BuiltImage:
    """Digests of one tag in the layout.

    `manifest_digest` is the top-level document (an index for "multi").
    `blobs` lists every config and layer digest the tag reaches, and
    `manifests` every manifest digest including the top-level one.
    """

    tag: str
    manifest_digest: str
    media_type: str
    manifests: tuple
    blobs: tuple
    layers: tuple


class ImageSet:
    """The cached OCI layout and the digests of its images."""

    def __init__(self, layout):
        self.layout = Path(layout)
        self.big = describe(self.layout, BIG_TAG)
        self.multi = describe(self.layout, MULTI_TAG)

    def source(self, tag):
        return f"oci:{self.layout}:{tag}"

    def push(self, skopeo, registry_host, repository, tag, cert_dir,
             reference=None):
        """Copy layout tag `tag` to registry_host/repository:reference.

        `reference` defaults to `tag`. Index tags are copied with all their
        platforms. Returns the PushedImage.
        """
        reference = reference or tag
        skopeo.copy(
            self.source(tag),
            f"docker://{registry_host}/{repository}:{reference}",
            dest_cert_dir=cert_dir,
            all_images=(tag == MULTI_TAG),
        )
        return PushedImage(registry_host, repository, reference,
                           describe(self.layout, tag), self.layout)


@dataclass(frozen=True)
class PushedImage:
    """An image in a registry, with the digests of what was pushed."""

    registry_host: str
    repository: str
    tag: str
    built: BuiltImage
    layout: Path

    @property
    def reference(self):
        """The tag reference as containerd names it: host:port/repo:tag."""
        return f"{self.registry_host}/{self.repository}:{self.tag}"

    @property
    def digest_reference(self):
        return f"{self.registry_host}/{self.repository}@{self.built.manifest_digest}"

    def blob(self, digest):
        """Return the bytes of a blob or manifest of this image."""
        return read_blob(self.layout, digest)

    def platform_blobs(self, architecture="amd64"):
        """Return the config and layer digests a linux pull fetches.

        For an index that is the child for `architecture`; the other
        children's blobs are never fetched.
        """
        document = json.loads(self.blob(self.built.manifest_digest))
        if self.built.media_type == MEDIA_TYPE_INDEX:
            child = next(m for m in document["manifests"]
                         if m["platform"]["architecture"] == architecture)
            document = json.loads(self.blob(child["digest"]))
        return tuple([document["config"]["digest"]]
                     + [layer["digest"] for layer in document["layers"]])


def build_images(cache_root):
    """Return the ImageSet in `cache_root`, building it first if needed."""
    cache_root = Path(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    key = _recipe_key()
    final = cache_root / f"images-{key}"
    with open(cache_root / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / "complete").exists():
            _remove_stale(cache_root, keep=final.name)
            staging = Path(tempfile.mkdtemp(prefix="staging-", dir=cache_root))
            try:
                _build_layout(staging / "layout", staging / "work")
                shutil.rmtree(staging / "work")
                (staging / "complete").write_text(key)
                staging.rename(final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return ImageSet(final / "layout")


def describe(layout, tag):
    """Return the BuiltImage for `tag` by reading the layout's documents."""
    layout = Path(layout)
    index = json.loads((layout / "index.json").read_bytes())
    for descriptor in index["manifests"]:
        if descriptor.get("annotations", {}).get(REF_NAME) == tag:
            break
    else:
        raise KeyError(f"tag {tag!r} not found in {layout}/index.json")
    manifests, blobs, layers = [], [], []
    _walk(layout, descriptor, manifests, blobs, layers)
    return BuiltImage(
        tag=tag,
        manifest_digest=descriptor["digest"],
        media_type=descriptor["mediaType"],
        manifests=tuple(manifests),
        blobs=tuple(blobs),
        layers=tuple(layers),
    )


def read_blob(layout, digest):
    algorithm, hex_digest = digest.split(":", 1)
    return (Path(layout) / "blobs" / algorithm / hex_digest).read_bytes()


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _walk(layout, descriptor, manifests, blobs, layers):
    manifests.append(descriptor["digest"])
    document = json.loads(read_blob(layout, descriptor["digest"]))
    if descriptor["mediaType"] == MEDIA_TYPE_INDEX:
        for child in document["manifests"]:
            _walk(layout, child, manifests, blobs, layers)
        return
    blobs.append(document["config"]["digest"])
    for layer in document["layers"]:
        blobs.append(layer["digest"])
        layers.append(layer["digest"])


def _recipe_key():
    # The source of this module is the recipe, so any edit rebuilds.
    inputs = [hashlib.sha256(Path(__file__).read_bytes()).hexdigest()]
    for _, files in BIG_IMAGE_LAYERS:
        for source, target, _ in files:
            try:
                st = os.stat(source)
                inputs.append([source, target, st.st_size, st.st_mtime_ns])
            except FileNotFoundError:
                inputs.append([source, target, None])
    encoded = json.dumps(inputs, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def _remove_stale(cache_root, keep):
    for entry in cache_root.iterdir():
        if entry.is_dir() and entry.name != keep:
            shutil.rmtree(entry, ignore_errors=True)


def _umoci(*args):
    run([UMOCI_BIN, *args], timeout=300)


def _unpack_flags():
    # umoci needs --rootless to unpack without root, and then maps file
    # owners to the calling user.
    return [] if os.geteuid() == 0 else ["--rootless"]


def _build_layout(layout, work):
    work.mkdir(parents=True)
    _umoci("init", "--layout", layout)
    _build_big_image(layout, work / "big")
    for architecture, tag in PLATFORM_TAGS.items():
        _build_platform_image(layout, work / tag, tag, architecture)
    _write_index(layout, MULTI_TAG, list(PLATFORM_TAGS.items()))


def _build_big_image(layout, bundle):
    image = f"{layout}:{BIG_TAG}"
    _umoci("new", "--image", image)
    _umoci("unpack", *_unpack_flags(), "--image", image, bundle)
    rootfs = bundle / "rootfs"
    for name, files in BIG_IMAGE_LAYERS:
        for source, target, required in files:
            if not required and not os.path.exists(source):
                continue
            _install(source, rootfs / target)
        if name == "busybox":
            # busybox runs the applet named by argv[0], so /bin/sh is a
            # hard link to it, as Debian's busybox-static documents.
            os.link(rootfs / "bin/busybox", rootfs / "bin/sh")
        _umoci(
            "repack", "--refresh-bundle", "--image", image,
            "--history.created_by", f"integration test layer {name}", bundle,
        )
    _umoci(
        "config", "--image", image, "--os", "linux", "--architecture", "amd64",
        "--config.cmd", "/bin/sh",
    )
    built = describe(layout, BIG_TAG)
    total = sum(len(read_blob(layout, digest)) for digest in built.layers)
    if total < BIG_IMAGE_MIN_BYTES:
        raise RuntimeError(
            f"the big test image has {total} bytes of compressed layers, "
            f"below {BIG_IMAGE_MIN_BYTES}: are the programs it copies "
            "installed?"
        )


def _build_platform_image(layout, bundle, tag, architecture):
    image = f"{layout}:{tag}"
    _umoci("new", "--image", image)
    _umoci("unpack", *_unpack_flags(), "--image", image, bundle)
    rootfs = bundle / "rootfs"
    (rootfs / "etc").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/platform").write_text(f"linux/{architecture}\n")
    if architecture == "amd64":
        _install("/bin/busybox", rootfs / "bin/busybox")
    else:
        _install("/etc/os-release", rootfs / "etc/os-release")
    _umoci(
        "repack", "--image", image,
        "--history.created_by", f"integration test {architecture} layer", bundle,
    )
    _umoci(
        "config", "--image", image, "--os", "linux",
        "--architecture", architecture, "--config.cmd", "/bin/busybox",
    )


def _install(source, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def _write_index(layout, tag, platform_tags):
    """Add an image index of the platform tags to the layout as `tag`."""
    top = json.loads((layout / "index.json").read_bytes())
    by_name = {
        d.get("annotations", {}).get(REF_NAME): d for d in top["manifests"]
    }

    children = []
    for architecture, child_tag in platform_tags:
        descriptor = by_name[child_tag]
        children.append(
            {
                "mediaType": MEDIA_TYPE_MANIFEST,
                "digest": descriptor["digest"],
                "size": descriptor["size"],
                "platform": {"architecture": architecture, "os": "linux"},
            }
        )
    document = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": children,
        },
        separators=(",", ":"),
    ).encode()

    digest = sha256_digest(document)
    (layout / "blobs/sha256" / digest.split(":", 1)[1]).write_bytes(document)
    top["manifests"].append(
        {
            "mediaType": MEDIA_TYPE_INDEX,
            "digest": digest,
            "size": len(document),
            "annotations": {REF_NAME: tag},
        }
    )
    # Replace index.json atomically, as umoci does, so a reader never sees
    # half a file.
    temporary = layout / "index.json.tmp"
    temporary.write_text(json.dumps(top))
    temporary.rename(layout / "index.json")
