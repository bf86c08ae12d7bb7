#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: pull a probe image afresh and report what was fetched."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: containerd_probe_pull
short_description: Remove and pull a probe image, listing the content it fetched
description:
  - Removes the image (garbage collection runs before the command returns),
    lists the content store, pulls the image and lists the store again. The
    digests that appeared are returned as I(fetched), so the caller can
    tell a pull that downloaded blobs from one served by the content store.
  - Pulls through the CRI plugin with crictl when crictl is installed,
    because that path reads containerd's config_path. Otherwise pulls with
    C(ctr images pull --hosts-dir), which reads the hosts.toml files
    directly.
  - Reports C(changed=false) although the image is pulled again, so that a
    second run of the role shows no changes.
options:
  image:
    description: Image reference, such as C(docker.io/library/busybox:1.36)
      or C(ghcr.io/org/name@sha256:...). Short Docker Hub names are
      expanded as Docker does.
    type: str
    required: true
  address:
    description: Socket of the running containerd.
    type: str
    default: /run/containerd/containerd.sock
  namespace:
    description: containerd namespace; the CRI plugin uses C(k8s.io).
    type: str
    default: k8s.io
  hosts_dir:
    description: Directory of hosts.toml files for C(ctr --hosts-dir).
    type: path
    required: true
  ctr_command:
    description: The ctr program.
    type: str
    default: ctr
  crictl_command:
    description: The crictl program. Empty, or not installed, means ctr.
    type: str
    default: crictl
  platform:
    description: Platform to pull with ctr, such as C(linux/arm64). Empty
      means the node's own.
    type: str
    default: ""
  check_cri:
    description: Before pulling, fail when C(ctr plugins ls) shows the CRI
      plugin in status C(error). containerd keeps running when the CRI
      plugin fails to load, for example when C(mirrors) and C(config_path)
      are both set, so only the plugin list shows it.
    type: bool
    default: true
"""

RETURN = r"""
reference:
  description: The fully qualified reference that was pulled.
  type: str
  returned: success
registry:
  description: Registry host of the image, as containerd names it.
  type: str
  returned: success
repository:
  description: Repository within the registry, with C(library/) for
    single-segment Docker Hub names.
  type: str
  returned: success
tag_or_digest:
  description: The tag or digest part of the reference.
  type: str
  returned: success
cri_status:
  description: Status of the CRI plugin in C(ctr plugins ls) (C(ok),
    C(skip), C(error)), empty when it is not listed or I(check_cri) is off.
  type: str
  returned: success
method:
  description: C(cri) (crictl) or C(ctr), empty in check mode.
  type: str
  returned: success
fetched:
  description: Digests added to the content store by the pull.
  type: list
  elements: str
  returned: success
"""

import re
import shlex

from ansible.module_utils.basic import AnsibleModule

DOCKER_HUB = "docker.io"


def normalize(image):
    """Return (registry, repository, reference, full reference).

    As in Docker's reference grammar, the first path segment names a
    registry when it contains '.' or ':' or is 'localhost'. Any other image
    is on Docker Hub, where single-segment names get 'library/'.
    """
    name, digest = image, ""
    if "@" in name:
        name, digest = name.split("@", 1)
    tag = ""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if rest and (("." in first) or (":" in first) or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = "library/" + repository
    if not re.match(r"^[a-z0-9]+([._/-]+[a-z0-9]+)*$", repository):
        raise ValueError("invalid repository name %r in image %r"
                         % (repository, image))
    if digest:
        reference = digest
        full = "%s/%s@%s" % (registry, repository, digest)
        if tag:
            full = "%s/%s:%s@%s" % (registry, repository, tag, digest)
    else:
        reference = tag or "latest"
        full = "%s/%s:%s" % (registry, repository, reference)
    return registry, repository, reference, full


class Node:
    """Commands against one containerd."""

    def __init__(self, module):
        self.module = module
        params = module.params
        self.ctr = self.resolve(params["ctr_command"], required=True)
        self.crictl = None
        if params["crictl_command"]:
            self.crictl = self.resolve(params["crictl_command"], required=False)

    def resolve(self, program, required):
        argv = shlex.split(program)
        path = self.module.get_bin_path(argv[0], required=False)
        if path is None:
            if required:
                self.module.fail_json(msg="%s not found on the node" % argv[0])
            return None
        return [path] + argv[1:]

    def run(self, argv, check=True):
        rc, out, err = self.module.run_command(argv)
        if check and rc != 0:
            self.module.fail_json(
                msg="'%s' failed with exit code %d: %s"
                    % (" ".join(argv), rc, (err or out).strip()),
                stdout=out, stderr=err)
        return rc, out, err

    def ctr_argv(self, *args):
        params = self.module.params
        return self.ctr + ["--address", params["address"], "--namespace",
                           params["namespace"]] + list(args)

    def cri_status(self):
        """Return the STATUS column of the CRI plugin in `ctr plugins ls`."""
        argv = self.ctr + ["--address", self.module.params["address"],
                           "plugins", "ls"]
        _, out, _ = self.run(argv)
        for line in out.splitlines():
            # Columns: TYPE ID PLATFORMS STATUS.
            fields = line.split()
            if len(fields) >= 4 and fields[0] == "io.containerd.grpc.v1" \
                    and fields[1] == "cri":
                return fields[-1]
        return ""

    def content(self):
        _, out, _ = self.run(self.ctr_argv("content", "ls", "--quiet"))
        return set(line.strip() for line in out.splitlines() if line.strip())

    def names_of(self, reference, repository_name):
        """Return `reference` and the names the CRI plugin added for it.

        When an image appears in its namespace, the CRI plugin adds an
        image named by its ID ("sha256:<config digest>") and one by
        repository digest ("<name>@sha256:..."), both pointing at the same
        manifest. They keep the content alive, so they go too. Other names
        for the same image stay.
        """
        _, out, _ = self.run(self.ctr_argv("images", "ls"))
        # Columns: REF TYPE DIGEST SIZE PLATFORMS LABELS.
        rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
        digest = next((row[2] for row in rows
                       if len(row) > 2 and row[0] == reference), None)
        if digest is None:
            return [reference]
        names = {reference}
        for row in rows:
            if len(row) > 2 and row[2] == digest and (
                    row[0] == "%s@%s" % (repository_name, digest)
                    or re.match(r"^sha256:[0-9a-f]{64}$", row[0])):
                names.add(row[0])
        return sorted(names)

    def remove(self, reference, repository_name):
        """Remove the image and wait for garbage collection of its content."""
        if self.crictl:
            # crictl exits non-zero when the image is absent, which is fine.
            self.run(self.crictl_argv("rmi", reference), check=False)
        names = self.names_of(reference, repository_name)
        self.run(self.ctr_argv("images", "rm", "--sync", *names), check=False)

    def crictl_argv(self, *args):
        endpoint = "unix://" + self.module.params["address"]
        return self.crictl + ["--runtime-endpoint", endpoint,
                              "--image-endpoint", endpoint] + list(args)

    def pull(self, reference):
        params = self.module.params
        if self.crictl:
            argv = self.crictl_argv("pull", reference)
            method = "cri"
        else:
            argv = self.ctr_argv("images", "pull", "--hosts-dir",
                                 params["hosts_dir"])
            if params["platform"]:
                argv += ["--platform", params["platform"]]
            argv.append(reference)
            method = "ctr"
        rc, out, err = self.run(argv, check=False)
        if rc != 0:
            self.module.fail_json(
                msg="probe pull of %s failed (%s, exit code %d): %s"
                    % (reference, " ".join(argv), rc, (err or out).strip()[-2000:]),
                method=method, stdout=out, stderr=err)
        return method


def main():
    module = AnsibleModule(
        argument_spec=dict(
            image=dict(type="str", required=True),
            address=dict(type="str", default="/run/containerd/containerd.sock"),
            namespace=dict(type="str", default="k8s.io"),
            hosts_dir=dict(type="path", required=True),
            ctr_command=dict(type="str", default="ctr"),
            crictl_command=dict(type="str", default="crictl"),
            platform=dict(type="str", default=""),
            check_cri=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    try:
        registry, repository, reference, full = normalize(module.params["image"])
    except ValueError as error:
        module.fail_json(msg=str(error))
    result = dict(changed=False, reference=full, registry=registry,
                  repository=repository, tag_or_digest=reference)
    if module.check_mode:
        module.exit_json(method="", fetched=[], cri_status="", **result)

    node = Node(module)
    status = node.cri_status() if module.params["check_cri"] else ""
    if status == "error":
        module.fail_json(
            msg="containerd on %s lists the CRI plugin (io.containerd.grpc.v1 "
                "cri) in status 'error', so Kubernetes can neither pull nor "
                "run anything. Its log says why (journalctl -u containerd); "
                "with config_path set, a leftover 'mirrors' or "
                "'configs.<host>.tls' table is the usual cause."
                % module.params["address"],
            cri_status=status, **result)
    result["cri_status"] = status
    node.remove(full, "%s/%s" % (registry, repository))
    before = node.content()
    method = node.pull(full)
    fetched = sorted(node.content() - before)
    module.exit_json(method=method, fetched=fetched, **result)


if __name__ == "__main__":
    main()
