"""Small real OCI images built in Python and pushed over the registry API.

Each layer is a gzip-compressed tar of a few files, each config lists the
layers' uncompressed digests in `rootfs.diff_ids`, and each manifest names
the config and layers, so a client can verify every digest as containerd
does. Indexes hold a linux/amd64 and a linux/arm64 image plus one
attestation manifest per platform, laid out as BuildKit pushes them:
platform unknown/unknown and the annotation
`vnd.docker.reference.type: attestation-manifest`.

Everything is built in memory and is deterministic: the same name and
files give the same digests, and images built from different names always
differ, because a file in the top layer names the image.

`Pusher` uploads blobs with the two-step upload of the OCI distribution
specification (POST to open an upload, PUT with `?digest=` to close it)
and then PUTs the manifests, children before their index.
"""

import gzip
import hashlib
import http.client
import io
import json
import random
import tarfile
from dataclasses import dataclass
from urllib.parse import urlsplit

from .net import client_context

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# The layer type of BuildKit's attestations: an in-toto statement as JSON.
MEDIA_TYPE_IN_TOTO = "application/vnd.in-toto+json"

# Annotations that BuildKit puts on an attestation's index entry.
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION_MANIFEST = "attestation-manifest"
PREDICATE_TYPE = "in-toto.io/predicate-type"
SPDX_PREDICATE = "https://spdx.dev/Document"

DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")

# Timestamp of every file and of the gzip header, so builds repeat exactly.
EPOCH = 1700000000

# Seconds for one request to the registry, including a few MiB of body.
PUSH_TIMEOUT = 60


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """Bytes stored in a registry under their digest."""

    media_type: str
    data: bytes

    @property
    def digest(self):
        return sha256_digest(self.data)

    @property
    def size(self):
        return len(self.data)

    def descriptor(self, **extra):
        """Return the OCI descriptor of the blob, with extra members."""
        return {"mediaType": self.media_type, "digest": self.digest,
                "size": self.size, **extra}


@dataclass(frozen=True)
class Layer:
    """A compressed layer and the digest of its uncompressed tar."""

    blob: Blob
    diff_id: str


@dataclass(frozen=True)
class Image:
    """One platform's image: manifest, config and layers.

    `platform` is "os/architecture"; attestation manifests have
    "unknown/unknown".
    """

    platform: str
    manifest: Blob
    config: Blob
    layers: tuple

    @property
    def digest(self):
        return self.manifest.digest

    @property
    def blobs(self):
        """Return the config and layer blobs, config first."""
        return (self.config,) + self.layers

    @property
    def blob_digests(self):
        return tuple(blob.digest for blob in self.blobs)


@dataclass(frozen=True)
class ImageIndex:
    """A multi-platform index with its platform images and attestations."""

    manifest: Blob
    images: tuple
    attestations: tuple

    @property
    def digest(self):
        return self.manifest.digest

    def image(self, platform):
        """Return the child image of `platform`, such as "linux/amd64"."""
        for image in self.images:
            if image.platform == platform:
                return image
        raise KeyError(f"the index has no {platform} image; it has "
                       f"{', '.join(i.platform for i in self.images)}")

    @property
    def children(self):
        """Return every child manifest: platform images, then attestations."""
        return self.images + self.attestations


def build_layer(files):
    """Return a Layer holding `files`, a dict of path to bytes.

    Parent directories get their own entries, as image builders write
    them, and every entry belongs to root with a fixed timestamp.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories = set()
        for path in sorted(files):
            parts = path.strip("/").split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in directories:
                    directories.add(directory)
                    tar.addfile(_tar_entry(directory + "/", tarfile.DIRTYPE, 0o755))
            data = files[path]
            entry = _tar_entry(path.strip("/"), tarfile.REGTYPE, 0o644)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    uncompressed = buffer.getvalue()
    compressed = gzip.compress(uncompressed, compresslevel=6, mtime=0)
    return Layer(blob=Blob(MEDIA_TYPE_LAYER, compressed),
                 diff_id=sha256_digest(uncompressed))


def _tar_entry(name, kind, mode):
    entry = tarfile.TarInfo(name)
    entry.type = kind
    entry.mode = mode
    entry.mtime = EPOCH
    entry.uid = entry.gid = 0
    entry.uname = entry.gname = "root"
    return entry


def base_layer(name="base"):
    """Return a layer that several images can share, like a distro base."""
    return build_layer({
        "etc/os-release": f'ID=gatecache-test\nNAME="{name}"\n'.encode(),
        "etc/hostname": b"gatecache-test\n",
    })


def build_image(name, platform="linux/amd64", base_layers=(), files=None,
                annotations=None):
    """Return an Image of `base_layers` plus a top layer of its own.

    The top layer contains /etc/image-name with `name` and `platform`, and
    `files` (path to bytes) when given, so images of different names or
    platforms never share a digest. `annotations` go into the manifest:
    they make distinct manifests that share every blob.
    """
    own_files = {"etc/image-name": f"{name} {platform}\n".encode()}
    own_files.update(files or {})
    layers = tuple(base_layers) + (build_layer(own_files),)
    os_name, architecture = platform.split("/", 1)
    config = Blob(MEDIA_TYPE_CONFIG, _json_bytes({
        "created": "2023-11-14T22:13:20Z",
        "architecture": architecture,
        "os": os_name,
        "config": {"Cmd": ["/bin/sh"], "Labels": {"test.image": name}},
        "rootfs": {"type": "layers",
                   "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "2023-11-14T22:13:20Z",
                     "created_by": f"gatecache test layer {i}"}
                    for i in range(len(layers))],
    }))
    document = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.blob.descriptor() for layer in layers],
    }
    if annotations:
        document["annotations"] = dict(annotations)
    return Image(platform=platform,
                 manifest=Blob(MEDIA_TYPE_MANIFEST, _json_bytes(document)),
                 config=config,
                 layers=tuple(layer.blob for layer in layers))


def random_file(seed, size):
    """Return `size` bytes that gzip cannot shrink, the same for a seed."""
    return random.Random(seed).randbytes(size)


def build_attestation(name, subject):
    """Return BuildKit's attestation manifest for the Image `subject`."""
    statement = _json_bytes({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": SPDX_PREDICATE,
        "subject": [{"name": name,
                     "digest": {"sha256": subject.digest.split(":", 1)[1]}}],
        "predicate": {"spdxVersion": "SPDX-2.3", "name": name},
    })
    layer = Blob(MEDIA_TYPE_IN_TOTO, statement)
    config = Blob(MEDIA_TYPE_CONFIG, _json_bytes({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    }))
    document = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor(annotations={PREDICATE_TYPE: SPDX_PREDICATE})],
    }
    return Image(platform="unknown/unknown",
                 manifest=Blob(MEDIA_TYPE_MANIFEST, _json_bytes(document)),
                 config=config, layers=(layer,))


def build_index(name, platforms=DEFAULT_PLATFORMS, base_layers=(),
                attestations=True):
    """Return an ImageIndex of one image per platform.

    With `attestations`, each platform image gets an attestation manifest
    entry after the platform entries, as `docker buildx build --push`
    writes them by default.
    """
    images = tuple(build_image(name, platform, base_layers)
                   for platform in platforms)
    attested = tuple(build_attestation(name, image) for image in images) \
        if attestations else ()
    entries = []
    for image in images:
        os_name, architecture = image.platform.split("/", 1)
        entries.append(image.manifest.descriptor(
            platform={"architecture": architecture, "os": os_name}))
    for image, attestation in zip(images, attested):
        entries.append(attestation.manifest.descriptor(
            annotations={REFERENCE_DIGEST: image.digest,
                         REFERENCE_TYPE: ATTESTATION_MANIFEST},
            platform={"architecture": "unknown", "os": "unknown"}))
    document = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
                "manifests": entries}
    return ImageIndex(manifest=Blob(MEDIA_TYPE_INDEX, _json_bytes(document)),
                      images=images, attestations=attested)


def _json_bytes(document):
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


class PushError(RuntimeError):
    """The registry rejected or failed a push request."""


class Pusher:
    """Pushes Images and ImageIndexes to a registry over HTTPS.

    `registry_host` is "127.0.0.1:port" and `ca_file` the CA that signed
    its certificate. One connection is kept for every request. Blobs
    already pushed to a repository by this Pusher are not sent again.
    """

    def __init__(self, registry_host, ca_file):
        self.registry_host = registry_host
        self.ca_file = ca_file
        self._connection = None
        self._pushed = set()  # (repository, digest)

    def close(self):
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def push(self, repository, content, tag=None):
        """Push an Image or ImageIndex and tag it when `tag` is given.

        Without a tag the manifest is stored by digest only. Returns
        `content`.
        """
        if isinstance(content, ImageIndex):
            for child in content.children:
                self._push_image(repository, child, child.digest)
            self._put_manifest(repository, content.manifest, content.digest)
            if tag:
                self._put_manifest(repository, content.manifest, tag)
        else:
            self._push_image(repository, content, tag or content.digest)
        return content

    def _push_image(self, repository, image, reference):
        for blob in image.blobs:
            self.push_blob(repository, blob)
        self._put_manifest(repository, image.manifest, reference)

    def push_blob(self, repository, blob):
        """Upload `blob` unless the repository already has it."""
        key = (repository, blob.digest)
        if key in self._pushed:
            return
        status, _, _ = self._request(
            "HEAD", f"/v2/{repository}/blobs/{blob.digest}")
        if status != 200:
            self._upload(repository, blob)
        self._pushed.add(key)

    def _upload(self, repository, blob):
        status, headers, body = self._request(
            "POST", f"/v2/{repository}/blobs/uploads/", body=b"")
        location = headers.get("location")
        if status != 202 or not location:
            raise PushError(f"POST upload of {blob.digest} to {repository}: "
                            f"expected 202 with a Location, got {status}: "
                            f"{body[:200]!r}")
        parts = urlsplit(location)
        separator = "&" if parts.query else "?"
        target = (parts.path + (f"?{parts.query}" if parts.query else "")
                  + f"{separator}digest={blob.digest}")
        status, _, body = self._request(
            "PUT", target, body=blob.data,
            headers={"Content-Type": "application/octet-stream"})
        if status != 201:
            raise PushError(f"PUT upload of {blob.digest} to {repository}: "
                            f"expected 201, got {status}: {body[:200]!r}")

    def _put_manifest(self, repository, manifest, reference):
        status, headers, body = self._request(
            "PUT", f"/v2/{repository}/manifests/{reference}", body=manifest.data,
            headers={"Content-Type": manifest.media_type})
        if status != 201:
            raise PushError(f"PUT manifest {repository}:{reference}: expected "
                            f"201, got {status}: {body[:300]!r}")
        stored = headers.get("docker-content-digest")
        if stored and stored != manifest.digest:
            raise PushError(f"the registry stored {repository}:{reference} as "
                            f"{stored}, expected {manifest.digest}")

    def _request(self, method, target, body=None, headers=None):
        """Send one request and return (status, lower-case headers, body).

        A connection that the registry closed while idle is opened again
        once.
        """
        try:
            return self._send(method, target, body, headers)
        except (http.client.RemoteDisconnected, BrokenPipeError,
                ConnectionResetError):
            self.close()
            return self._send(method, target, body, headers)

    def _send(self, method, target, body, headers):
        if self._connection is None:
            host, port = self.registry_host.rsplit(":", 1)
            self._connection = http.client.HTTPSConnection(
                host, int(port), context=client_context(self.ca_file),
                timeout=PUSH_TIMEOUT)
        self._connection.request(method, target, body=body,
                                 headers=headers or {})
        response = self._connection.getresponse()
        data = response.read()
        return (response.status,
                {k.lower(): v for k, v in response.getheaders()}, data)
