"""Start and stop child processes whose output goes to files."""

import os
import signal
import subprocess
import time
from pathlib import Path


class ProcessError(RuntimeError):
    """A helper process failed to start, exited early or failed a command."""


def tail(path, lines=40):
    """Return the last `lines` lines of a text file, or a note if missing."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return f"({path} does not exist)"
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def run(argv, timeout, env=None, cwd=None, check=True):
    """Run a command to completion and return its CompletedProcess.

    Output is captured as text. With `check`, a non-zero exit raises
    ProcessError that shows the command and both output streams.
    """
    try:
        result = subprocess.run(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=env,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ProcessError(
            f"command timed out after {timeout} s: {' '.join(map(str, argv))}"
            f"\nstdout:\n{e.stdout}\nstderr:\n{e.stderr}"
        ) from e
    if check and result.returncode != 0:
        raise ProcessError(
            f"command failed with exit code {result.returncode}: "
            f"{' '.join(map(str, argv))}\nstdout:\n{result.stdout}"
            f"\nstderr:\n{result.stderr}"
        )
    return result


def wait_for(condition, timeout, interval=0.05, message="condition"):
    """Poll `condition` until it returns a true value and return that value.

    Raises TimeoutError naming `message` when `timeout` seconds pass first.
    This bounds a wait for another process; it measures nothing.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class Process:
    """A background process with stdout and stderr written to files.

    The process runs in its own process group, so a stop also reaches
    helpers it forked (such as containerd's shims) without touching any
    process this class did not start.
    """

    def __init__(self, name, argv, log_dir, env=None, cwd=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"{name}.stdout"
        self.stderr_path = log_dir / f"{name}.stderr"
        self._env = env
        self._cwd = cwd
        self._popen = None

    @property
    def pid(self):
        return self._popen.pid if self._popen else None

    def start(self):
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
            )
        return self

    def running(self):
        return self._popen is not None and self._popen.poll() is None

    def exit_status(self):
        """Return how the process ended ("exit code 1", "signal SIGSEGV"),
        or None while it runs or before it starts."""
        if self._popen is None or self._popen.poll() is None:
            return None
        code = self._popen.returncode
        if code < 0:
            return f"signal {signal.Signals(-code).name}"
        return f"exit code {code}"

    def check_running(self):
        """Raise ProcessError with the stderr tail if the process exited."""
        if self._popen is None:
            raise ProcessError(f"{self.name} was never started")
        code = self._popen.poll()
        if code is not None:
            raise ProcessError(
                f"{self.name} exited with code {code}: {' '.join(self.argv)}\n"
                f"stderr tail:\n{tail(self.stderr_path)}"
            )

    def stop(self, timeout=10.0, sig=signal.SIGTERM):
        """Signal the process group, wait, and kill it if it does not exit.

        Returns the exit code, or None when the process was never started.
        """
        if self._popen is None:
            return None
        if self._popen.returncode is not None:
            return self._popen.returncode
        self._signal_group(sig)
        if not self._wait_exit_unreaped(timeout):
            self._signal_group(signal.SIGKILL)
            self._wait_exit_unreaped(timeout)
        # The exited leader is not reaped yet, so its PID, which is also the
        # group id because of `start_new_session`, cannot have been reused:
        # this reaches only children that outlived it.
        self._signal_group(signal.SIGKILL)
        return self._popen.wait(timeout=timeout)

    def _wait_exit_unreaped(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                info = os.waitid(
                    os.P_PID, self._popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT
                )
            except ChildProcessError:
                return True
            if info is not None:
                return True
            time.sleep(0.02)
        return False

    def _signal_group(self, sig):
        try:
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:
            pass

    def describe(self):
        """Return the command and the stderr tail, for failure messages."""
        return (
            f"{self.name} (pid {self.pid}): {' '.join(self.argv)}\n"
            f"stderr tail:\n{tail(self.stderr_path)}"
        )
