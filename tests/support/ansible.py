"""Run the Ansible roles in ansible/ against this machine, under scratch roots.

Plays run with `-i localhost, -c local`. Every path the roles write comes
from variables the tests set, so nothing outside the test's directories
changes.
"""

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .containerd import CONTAINERD_BIN, Containerd
from .procs import Process, run, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO_ROOT / "ansible"
ROLES_DIR = ANSIBLE_DIR / "roles"

ANSIBLE_PLAYBOOK = "/usr/bin/ansible-playbook"
ANSIBLE_LINT = "/usr/bin/ansible-lint"
# The roles' modules import tomlkit, which Debian installs for this Python.
PYTHON = "/usr/bin/python3"

# Seconds for one playbook run. A run with the probe pull takes a few
# seconds; the margin covers a loaded 2-core machine.
PLAYBOOK_TIMEOUT = 300

RECAP = re.compile(
    r"^localhost\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass
class PlaybookRun:
    """The outcome of one ansible-playbook run."""

    returncode: int
    output: str
    ok: int
    changed: int
    failed: int

    @property
    def text(self):
        """The output with the JSON escapes of task results undone, so that
        a message can be matched as the role wrote it."""
        return self.output.replace('\\"', '"').replace("\\n", "\n")

    def describe(self):
        return f"ansible-playbook exit code {self.returncode}\n{self.output}"


class Playbook:
    """A one-role play against localhost, with its variables in a file.

    `workdir` keeps the play, the variables and Ansible's temporary files.
    """

    def __init__(self, workdir, role, gather_facts=False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # An empty ansible.cfg of its own keeps a user's or the machine's
        # settings out of the run.
        (self.workdir / "ansible.cfg").write_text("[defaults]\n")
        self.path = self.workdir / f"{role}.yml"
        self.path.write_text(
            "---\n"
            f"- name: Run the {role} role\n"
            "  hosts: localhost\n"
            f"  gather_facts: {'true' if gather_facts else 'false'}\n"
            "  roles:\n"
            f"    - role: {ROLES_DIR / role}\n"
        )

    def run(self, variables, check=False, diff=False, tags=None):
        """Run the play with `variables` and return a PlaybookRun."""
        variables_file = self.workdir / "variables.json"
        variables_file.write_text(json.dumps(variables, indent=2))
        argv = [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local",
                "-e", f"ansible_python_interpreter={PYTHON}",
                "-e", f"@{variables_file}", self.path]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        if tags:
            argv += ["--tags", ",".join(tags)]
        result = run(argv, timeout=PLAYBOOK_TIMEOUT, env=self._environment(),
                     check=False)
        output = result.stdout + result.stderr
        match = RECAP.search(output)
        counts = {k: int(v) for k, v in match.groupdict().items()} if match \
            else {"ok": 0, "changed": 0, "failed": 1}
        return PlaybookRun(result.returncode, output, counts["ok"],
                           counts["changed"], counts["failed"])

    def _environment(self):
        scratch = self.workdir / "ansible-tmp"
        scratch.mkdir(exist_ok=True)
        environment = dict(os.environ)
        environment.update(
            ANSIBLE_LOCAL_TEMP=str(scratch / "local"),
            ANSIBLE_REMOTE_TEMP=str(scratch / "remote"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_DEPRECATION_WARNINGS="0",
            ANSIBLE_CONFIG=str(self.workdir / "ansible.cfg"),
        )
        return environment


def run_module(library, module, arguments, workdir):
    """Run one module ad hoc on localhost and return (exit code, output).

    `arguments` is a dict, passed as JSON so that values need no quoting.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "ansible.cfg").write_text("[defaults]\n")
    environment = dict(os.environ, ANSIBLE_NOCOLOR="1",
                       ANSIBLE_CONFIG=str(workdir / "ansible.cfg"),
                       ANSIBLE_LOCAL_TEMP=str(workdir / "tmp"))
    result = run(["/usr/bin/ansible", "localhost", "-i", "localhost,",
                  "-c", "local", "-e", f"ansible_python_interpreter={PYTHON}",
                  "-M", library, "-m", module, "-a", json.dumps(arguments)],
                 timeout=PLAYBOOK_TIMEOUT, env=environment, check=False)
    return result.returncode, result.stdout + result.stderr


def lint(paths, cwd=ANSIBLE_DIR):
    """Run ansible-lint offline on `paths` and return the CompletedProcess."""
    environment = dict(os.environ, ANSIBLE_NOCOLOR="1", NO_COLOR="1")
    return run([ANSIBLE_LINT, "--offline", "--nocolor", *paths],
               timeout=PLAYBOOK_TIMEOUT, env=environment, cwd=cwd, check=False)


def available():
    """Return None when Ansible is installed, else what is missing."""
    for program in (ANSIBLE_PLAYBOOK, ANSIBLE_LINT):
        if not shutil.which(program):
            return f"{program} not found: run scripts/install-deps.sh --with-tests"
    return None


class ImportingContainerd(Containerd):
    """A private containerd whose config imports a config.toml under test.

    The wrapper sets root, state and sockets, so the imported file is
    exactly what the node role produced. containerd 1.6 merges an import
    over the wrapper and replaces whole plugin tables, so the imported
    file's CRI table is the one the daemon uses. With `cri=False` the
    wrapper disables the CRI plugin, whose defaults would create
    /etc/cni/net.d on this machine.
    """

    def __init__(self, workdir, imported, cri, name="containerd"):
        super().__init__(workdir, name=name)
        self.imported = Path(imported)
        self.cri = cri
        self.config = self.workdir / "wrapper.toml"

    def start(self, timeout=30):
        disabled = "[]" if self.cri else '["io.containerd.grpc.v1.cri"]'
        self.config.write_text(
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{self.state}"\n'
            f"imports = [{json.dumps(str(self.imported))}]\n"
            f"disabled_plugins = {disabled}\n"
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
            self.name, [CONTAINERD_BIN, "--config", self.config], self.workdir
        ).start()
        try:
            wait_for(self._serving, timeout, interval=0.1,
                     message=f"{self.name} to serve on {self.address}")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.process.describe()}") from e
        return self

    def plugin_status(self, plugin_type, plugin_id):
        """Return the STATUS column of `ctr plugins ls` for one plugin."""
        result = run(["/usr/bin/ctr", "--address", self.address, "plugins", "ls"],
                     timeout=30)
        for line in result.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[0] == plugin_type \
                    and fields[1] == plugin_id:
                return fields[-1]
        return None
