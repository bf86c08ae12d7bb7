#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: point containerd's CRI registry config_path at a directory."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: containerd_registry_config
short_description: Set config_path in every registry table of containerd's config.toml
description:
  - Parses config.toml with tomlkit, which keeps comments, key order and
    formatting, and sets C(config_path) in the registry table that the
    file's version header makes containerd read. It also sets it in every
    other registry table already in the file (version 1, 2 and 3 layouts),
    so that no leftover table with an empty C(config_path) applies when the
    file is converted to a newer layout.
  - Other directories already listed in C(config_path) (separated by C(:))
    stay, after the requested one.
  - A missing or empty file is created with the version header the
    installed containerd reads natively (2 for containerd 1.x, 3 for 2.x).
  - Non-empty C(mirrors) tables and C(configs.<host>.tls) tables conflict
    with C(config_path); containerd 1.6 then refuses to load the CRI plugin.
    The module fails naming them, or removes them with
    I(legacy_registry=remove).
  - Writes the file atomically (temporary file, fsync, rename) and only when
    the content changed. Supports check mode and diff mode.
options:
  path:
    description: Path of containerd's config.toml.
    type: path
    required: true
  config_path:
    description: Directory with one C(<registry>/hosts.toml) per registry.
    type: path
    required: true
  containerd_version:
    description: Version of the installed containerd, as printed by
      C(containerd --version) or as a bare version such as C(2.0.0).
    type: str
    required: true
  legacy_registry:
    description: What to do with C(mirrors) and C(configs.<host>.tls)
      tables, which conflict with C(config_path). C(fail) stops with a
      message naming them; C(remove) deletes them (C(configs.<host>.auth)
      stays).
    type: str
    choices: [fail, remove]
    default: fail
  mode:
    description: Permissions of a newly created file. An existing file keeps
      its own.
    type: raw
    default: "0644"
  dump_check:
    description: After writing, run C(containerd --config PATH config dump)
      and fail unless C(config_path) in the registry table that the
      installed containerd reads starts with I(config_path). The dump
      applies imports, so it also catches an imported file that overrides
      the setting. It reads the file on disk, so in check mode it checks
      the file as it was.
    type: bool
    default: false
  containerd_command:
    description: The containerd program, for I(dump_check).
    type: str
    default: containerd
requirements:
  - tomlkit (Debian package python3-tomlkit) on the managed node
"""

EXAMPLES = r"""
- name: Point containerd at /etc/containerd/certs.d
  containerd_registry_config:
    path: /etc/containerd/config.toml
    config_path: /etc/containerd/certs.d
    containerd_version: "{{ containerd_version_output.stdout }}"
"""

RETURN = r"""
version:
  description: Version header of the resulting file (1 when it has none).
  type: int
  returned: success
table:
  description: The registry table containerd reads for this file version.
  type: str
  returned: success
  sample: plugins."io.containerd.grpc.v1.cri".registry
tables:
  description: Every registry table whose config_path the module set.
  type: list
  elements: str
  returned: success
config_path:
  description: The config_path value now in each table.
  type: str
  returned: success
created:
  description: Whether the file did not exist or was empty.
  type: bool
  returned: success
removed:
  description: Legacy tables removed with legacy_registry=remove.
  type: list
  elements: str
  returned: success
dump_table:
  description: The registry table the installed containerd reads, as its
    dump names it.
  type: str
  returned: with dump_check
dump_config_path:
  description: config_path in that table of the dump.
  type: str
  returned: with dump_check
"""

import os
import re
import shlex
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError
    from tomlkit.items import InlineTable, Table

    TOMLKIT_IMPORT_ERROR = None
except ImportError:
    TOMLKIT_IMPORT_ERROR = traceback.format_exc()

# A new file names the registry table with an empty config_path, which
# set_config_path() then fills in, so its keys are indented like
# containerd's own examples.
NEW_FILE_TEMPLATE = (
    "# containerd configuration, created by the gatecache node role because\n"
    "# none existed. Settings not listed here keep containerd's defaults.\n"
    "version = {version}\n"
    "\n"
    "[{table}]\n"
    "  config_path = \"\"\n"
)


# Registry table containerd reads, by the version header of config.toml:
# - version 1 (no header): [plugins.cri.registry], read by containerd 1.x
#   only (containerd 2.0 no longer reads version 1 files);
# - version 2: [plugins."io.containerd.grpc.v1.cri".registry], read by
#   containerd 1.x and converted to version 3 by containerd 2.x;
# - version 3: [plugins."io.containerd.cri.v1.images".registry], read by
#   containerd 2.x. containerd 1.6 loads a version 3 file without an error
#   but ignores the tables it does not know, so config_path never applies.
REGISTRY_TABLES = {
    1: ("plugins", "cri", "registry"),
    2: ("plugins", "io.containerd.grpc.v1.cri", "registry"),
    3: ("plugins", "io.containerd.cri.v1.images", "registry"),
}

# Config versions each containerd major version reads.
READABLE_VERSIONS = {1: (1, 2), 2: (2, 3)}

# Version header of a new config.toml, by containerd major version.
NEW_FILE_VERSION = {1: 2, 2: 3}


class ConfigError(Exception):
    """A config.toml that cannot be changed safely; the message gives the
    reason and the fix."""


def table_name(path):
    """Return the TOML header of a table path as containerd's docs write it.

    ("plugins", "io.containerd.grpc.v1.cri", "registry") gives
    'plugins."io.containerd.grpc.v1.cri".registry'.
    """
    return ".".join(key if re.match(r"^[A-Za-z0-9_-]+$", key) else '"%s"' % key
                    for key in path)


def parse_version(text):
    """Return (major, minor, patch) from `containerd --version` output.

    Accepts the whole output ("containerd github.com/containerd/containerd
    1.6.20~ds1 1.6.20~ds1-1+deb12u3", "containerd containerd.io v2.0.0
    207ad71") or a bare version ("2.0.0"). Raises ConfigError without one.
    """
    for word in text.split():
        match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", word)
        if match:
            major, minor, patch = match.groups()
            return int(major), int(minor), int(patch or 0)
    raise ConfigError(
        "no containerd version in %r; pass containerd_version as printed by "
        "'containerd --version'" % text.strip()
    )


def split_config_path(value):
    """Return the directories of a config_path value.

    containerd's CRI plugin splits config_path with Go's filepath.SplitList
    (':' on Linux), and the first directory that has a directory for the
    registry wins.
    """
    return [part for part in value.split(":") if part]


def lookup(document, path):
    """Return the value at `path` in a parsed TOML mapping, or None."""
    current = document
    for key in path:
        if not hasattr(current, "get"):
            return None
        current = current.get(key)
        if current is None:
            return None
    return current


def read_text(path):
    """Return the file's text, or None when it does not exist."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def file_version(document, path):
    """Return the version header of a parsed config.toml (1 when absent)."""
    version = document.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ConfigError(
            "%s: 'version' is %r; containerd expects the integer 1, 2 or 3"
            % (path, version)
        )
    if version not in REGISTRY_TABLES:
        raise ConfigError(
            "%s: version = %d is not a containerd config version (1, 2 or 3)"
            % (path, version)
        )
    return version


def check_readable(version, major, version_text, path):
    """Raise ConfigError when this containerd ignores the file's layout."""
    readable = READABLE_VERSIONS.get(major, READABLE_VERSIONS[2])
    if version in readable:
        return
    if version == 3:
        raise ConfigError(
            "%s has version = 3, which containerd %s does not read: it loads "
            "the file but ignores [plugins.\"io.containerd.cri.v1.images\"], so "
            "config_path would never apply. Write a version 2 file for "
            "containerd 1.x, or upgrade containerd to 2.x." % (path, version_text)
        )
    raise ConfigError(
        "%s has version = %d, which containerd %s no longer reads. Convert it "
        "with 'containerd config migrate' and run again." % (path, version, version_text)
    )


def relative_indent(outer, inner):
    """Return how far `inner` is indented beyond `outer` (spaces only)."""
    if inner.startswith(outer):
        return inner[len(outer):]
    return ""


def child_tables(table):
    return [value for value in table.values()
            if isinstance(value, Table) and not value.is_super_table()]


def key_step(table):
    """Return the indent of keys relative to the header of `table`."""
    for key, value in table.value.body:
        if key is not None and not isinstance(value, Table) and hasattr(value, "trivia"):
            return relative_indent(table.trivia.indent, value.trivia.indent)
    for child in child_tables(table):
        step = key_step(child)
        if step:
            return step
    return ""


def new_table(parent, leaf):
    """Create a sub-table for `parent`, indented like its existing children.

    tomlkit adds the parent's own indent when the table is inserted, so the
    indent set here is relative to the parent's header.
    """
    table = tomlkit.table(is_super_table=not leaf)
    if not leaf or not isinstance(parent, Table):
        return table
    siblings = child_tables(parent)
    if siblings:
        table.trivia.indent = relative_indent(parent.trivia.indent,
                                              siblings[-1].trivia.indent)
    elif parent.trivia.indent or key_step(parent):
        table.trivia.indent = "  "
    return table


def ensure_table(document, path):
    """Return the table at `path`, creating missing tables on the way."""
    current = document
    for depth, key in enumerate(path):
        if key not in current:
            leaf = depth == len(path) - 1
            current[key] = new_table(current, leaf)
        value = current[key]
        if not isinstance(value, (Table, InlineTable)) and not hasattr(value, "items"):
            raise ConfigError(
                "'%s' is a %s, not a table" % (table_name(path[:depth + 1]),
                                                type(value).__name__)
            )
        current = value
    return current


def legacy_entries(registry, name):
    """Return descriptions of tables in `registry` that conflict with config_path."""
    found = []
    mirrors = registry.get("mirrors")
    if mirrors:
        hosts = ", ".join(sorted(mirrors.keys()))
        found.append("[%s.mirrors] (%s)" % (name, hosts))
    configs = registry.get("configs") or {}
    for host, settings in configs.items():
        if hasattr(settings, "get") and settings.get("tls") is not None:
            found.append('[%s.configs."%s".tls]' % (name, host))
    return found


def remove_legacy(registry):
    """Delete `mirrors` and every `configs.<host>.tls` from `registry`."""
    if registry.get("mirrors"):
        del registry["mirrors"]
    configs = registry.get("configs") or {}
    for host in list(configs.keys()):
        settings = configs[host]
        if hasattr(settings, "get") and settings.get("tls") is not None:
            del settings["tls"]
            if len(settings) == 0:
                del configs[host]


def set_config_path(registry, directory, name):
    """Put `directory` first in registry.config_path; keep other entries."""
    current = registry.get("config_path")
    if current is not None and not isinstance(current, str):
        raise ConfigError(
            "[%s] config_path is %r; containerd expects a string of "
            "directories separated by ':'" % (name, current)
        )
    others = [d for d in split_config_path(current or "") if d != directory]
    wanted = ":".join([directory] + others)
    if current == wanted:
        return wanted
    if current is not None or isinstance(registry, InlineTable):
        registry["config_path"] = wanted
    else:
        item = tomlkit.item(wanted)
        item.trivia.indent = key_step(registry) or ("  " if registry.trivia.indent else "")
        registry.append("config_path", item)
    return wanted


def update(document, version, config_path, legacy, path):
    """Apply the change to `document` and return (tables, removed)."""
    targets = [REGISTRY_TABLES[version]]
    for other_version, table_path in sorted(REGISTRY_TABLES.items()):
        if other_version != version and lookup(document, table_path) is not None:
            targets.append(table_path)

    conflicts = []
    for table_path in targets:
        registry = lookup(document, table_path)
        if registry is not None:
            conflicts.extend(legacy_entries(registry, table_name(table_path)))
    if conflicts and legacy == "fail":
        raise ConfigError(
            "%s has legacy registry tables that conflict with config_path: %s. "
            "containerd 1.6 refuses to load the CRI plugin when both are set. "
            "Move each mirror and TLS setting "
            "into a hosts.toml under %s and delete these tables, or set "
            "gatecache_node_legacy_registry: remove to delete them."
            % (path, "; ".join(conflicts), config_path)
        )

    tables = []
    for table_path in targets:
        name = table_name(table_path)
        registry = ensure_table(document, table_path)
        if conflicts:
            remove_legacy(registry)
        set_config_path(registry, config_path, name)
        tables.append(name)
    return tables, conflicts


def write_atomically(module, path, text, created):
    """Write `text` to `path` through a synced temporary file and a rename."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    handle, temporary = tempfile.mkstemp(prefix=".%s." % os.path.basename(path),
                                         dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        # atomic_move keeps the mode, owner and SELinux context of an
        # existing file.
        module.atomic_move(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    if created:
        module.set_mode_if_different(path, module.params["mode"], False)
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def check_dump(module, path, config_path, major, version_text):
    """Check what `containerd config dump` shows for the file on disk.

    The dump is the merged configuration (imports applied) in the layout
    the installed containerd uses: version 2 for 1.x, version 3 for 2.x.
    Returns (table name, config_path there); raises ConfigError unless
    config_path starts with `config_path`.
    """
    argv = shlex.split(module.params["containerd_command"])
    program = module.get_bin_path(argv[0])
    if program is None:
        raise ConfigError("%s not found on the node; set "
                          "gatecache_containerd_command" % argv[0])
    argv = [program] + argv[1:] + ["--config", path, "config", "dump"]
    rc, out, err = module.run_command(argv)
    if rc != 0:
        raise ConfigError("'%s' failed with exit code %d: %s"
                          % (" ".join(argv), rc, (err or out).strip()))
    try:
        dumped = tomlkit.parse(out)
    except TOMLKitError as error:
        raise ConfigError("cannot parse the output of '%s': %s"
                          % (" ".join(argv), error))

    table_path = REGISTRY_TABLES[3] if major >= 2 else REGISTRY_TABLES[2]
    name = table_name(table_path)
    registry = lookup(dumped, table_path)
    value = "" if registry is None else str(registry.get("config_path", ""))
    directories = split_config_path(value)
    if directories and directories[0] == config_path:
        return name, value

    # The dump lists the main file first in `imports`.
    imports = [str(entry) for entry in dumped.get("imports", [])][1:]
    hint = ""
    if imports:
        hint = (" It imports %s; a table there overrides the main file."
                % ", ".join(imports))
    raise ConfigError(
        "containerd %s reads [%s], and 'containerd config dump' for %s shows "
        "config_path = %r there, not %s first, so CRI pulls do not use "
        "gatecache. Check config_path in [%s] of %s.%s"
        % (version_text, name, path, value, config_path, name, path, hint)
    )


def run(module):
    params = module.params
    path = params["path"]
    config_path = params["config_path"].rstrip("/") or "/"
    if ":" in config_path:
        raise ConfigError(
            "config_path %r contains ':', which containerd reads as a list "
            "separator; choose a directory without ':'" % config_path
        )
    major, minor, patch = parse_version(params["containerd_version"])
    version_text = "%d.%d.%d" % (major, minor, patch)

    before = read_text(path)
    created = before is None or before.strip() == ""
    if created:
        version = NEW_FILE_VERSION.get(major, NEW_FILE_VERSION[2])
        source = NEW_FILE_TEMPLATE.format(
            version=version, table=table_name(REGISTRY_TABLES[version]))
    else:
        source = before
    try:
        document = tomlkit.parse(source)
    except TOMLKitError as error:
        raise ConfigError("%s is not valid TOML: %s" % (path, error))
    version = file_version(document, path)
    check_readable(version, major, version_text, path)
    if version == 1:
        module.warn(
            "%s has no version header, so containerd reads it as version 1, "
            "which containerd 2.0 no longer reads. Convert it with "
            "'containerd config migrate' before upgrading containerd." % path
        )

    tables, removed = update(document, version, config_path,
                             params["legacy_registry"], path)
    after = tomlkit.dumps(document)
    if not after.endswith("\n"):
        after += "\n"
    changed = after != (before or "")
    if changed and not module.check_mode:
        write_atomically(module, path, after, created)

    result = dict(
        changed=changed,
        version=version,
        table=table_name(REGISTRY_TABLES[version]),
        tables=tables,
        config_path=lookup(document, REGISTRY_TABLES[version])["config_path"],
        created=created,
        removed=removed,
    )
    if module._diff:
        result["diff"] = dict(
            before=before or "",
            after=after,
            before_header="%s (absent)" % path if before is None else path,
            after_header=path,
        )
    if params["dump_check"]:
        result["dump_table"], result["dump_config_path"] = check_dump(
            module, path, config_path, major, version_text)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            config_path=dict(type="path", required=True),
            containerd_version=dict(type="str", required=True),
            legacy_registry=dict(type="str", choices=["fail", "remove"],
                                 default="fail"),
            mode=dict(type="raw", default="0644"),
            dump_check=dict(type="bool", default=False),
            containerd_command=dict(type="str", default="containerd"),
        ),
        supports_check_mode=True,
    )
    if TOMLKIT_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("tomlkit (Debian package python3-tomlkit)"),
                         exception=TOMLKIT_IMPORT_ERROR)
    try:
        module.exit_json(**run(module))
    except ConfigError as error:
        module.fail_json(msg=str(error))


if __name__ == "__main__":
    main()
