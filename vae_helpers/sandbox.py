"""Isolated grading kernels: each submission runs in bubblewrap with a private working directory.

The kernel sees read-only system directories, this Python, the ``vae_helpers`` package and the
MNIST cache, and its own temporary directory (the only writable place). It does not see the
instructor notebooks, other submissions, the home directory or the network; it talks to the
grader over ZeroMQ IPC sockets inside its temporary directory. Memory and file size are capped
with ``prlimit``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "apt-get update && apt-get install -y bubblewrap"
PROBE_TIMEOUT = 120  # seconds for the kernel probe (its first run imports torch and vae_helpers)
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")
# host secrets under the system folders: inside the sandbox each is an empty file or folder, whatever the
# grader's own rights (a grader running as root could otherwise read them through the read-only bind)
SECRETS = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers", "/etc/ssh",
           "/etc/ssl/private", "/etc/security/opasswd")


class IsolationUnavailable(RuntimeError):
    """No sandbox can be made on this machine (bubblewrap missing or user namespaces off)."""


@functools.lru_cache(maxsize=1)
def isolation_problem() -> str | None:
    """Why a bubblewrap sandbox cannot be started here (None when it can)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return f"bubblewrap (bwrap) is not installed; install it with `{INSTALL_HINT}`"
    try:
        done = subprocess.run([bwrap, "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
                               "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bwrap could not start a sandbox: {err}"
    if done.returncode != 0:
        return f"bwrap could not start a sandbox (user namespaces disabled?): {done.stderr.strip()[:200]}"
    return None


def readable_paths() -> list[Path]:
    """What the kernel may read besides the system directories: this Python, its packages, the package and MNIST."""
    from . import data

    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).parent, Path(__file__).resolve().parent}
    paths |= {Path(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= {Path(p) for p in sys.path if p and Path(p).is_dir() and "site-packages" in p}
    paths.add(data.data_dir())
    resolved = set()
    for p in paths:
        resolved |= {p.absolute(), p.resolve()}
    return sorted(p for p in resolved if p.exists() and str(p) != "/" and not str(p).startswith(SYSTEM_DIRS))


@dataclass
class Sandbox:
    """How one kernel is confined: its private directory, what it may read, and its limits."""

    workdir: Path
    memory_bytes: int | None = 4 << 30
    file_bytes: int = 1 << 30
    isolate: bool = True
    env: dict[str, str] = field(default_factory=dict)

    def kernel_env(self) -> dict[str, str]:
        """The kernel's whole environment: nothing of the grader's but PATH and locale, plus ``env``."""
        from . import data

        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(self.workdir),
                "TMPDIR": str(self.workdir), "MPLCONFIGDIR": str(self.workdir / ".matplotlib"),
                "IPYTHONDIR": str(self.workdir / ".ipython"), "JUPYTER_RUNTIME_DIR": str(self.workdir),
                "VAE_DATA_DIR": str(data.data_dir()), "VAE_DATA_SOURCES": os.environ.get("VAE_DATA_SOURCES", "npm"),
                "PYTHONDONTWRITEBYTECODE": "1"}
        return {**base, **self.env}

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` confined (bwrap) and limited (prlimit)."""
        limits = [f"--fsize={self.file_bytes}"] + ([f"--as={self.memory_bytes}"] if self.memory_bytes else [])
        prefix = [shutil.which("prlimit") or "prlimit", *limits, "--"] if shutil.which("prlimit") else []
        if not self.isolate:
            return prefix + argv
        problem = isolation_problem()
        if problem:
            raise IsolationUnavailable(problem)
        box = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
               "--uid", "65534", "--gid", "65534"]
        for path in SYSTEM_DIRS:
            box += ["--ro-bind-try", path, path]
        for path in SECRETS:
            if os.path.isdir(path):
                box += ["--tmpfs", path, "--remount-ro", path]
            elif os.path.lexists(path):
                box += ["--ro-bind", "/dev/null", path]
        box += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--ro-bind-try", "/sys/devices/system/cpu",
                "/sys/devices/system/cpu"]
        for path in readable_paths():
            box += ["--ro-bind", str(path), str(path)]
        box += ["--bind", str(self.workdir), str(self.workdir), "--remount-ro", "/tmp", "--remount-ro", "/", "--chdir", str(self.workdir)]
        return prefix + box + ["--"] + argv


def kernel_manager(sandbox: Sandbox):  # noqa: ANN201 - a jupyter_client AsyncKernelManager
    """A kernel manager whose kernel is this Python's ipykernel, run in ``sandbox`` over IPC sockets."""
    from jupyter_client.manager import AsyncKernelManager

    class SandboxKernelManager(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments=None):  # noqa: ANN001
            # parent_handle=1: no parent poller (inside the PID namespace the parent is pid 1); bwrap's
            # --die-with-parent ends the kernel when the grader goes
            return sandbox.wrap([sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file,
                                 "--IPKernelApp.parent_handle=1"])

        async def _async_launch_kernel(self, kernel_cmd, **kw):  # noqa: ANN001
            import subprocess

            kw["env"] = sandbox.kernel_env()  # the grader's own environment (tokens, paths) stays out
            kw["cwd"] = str(sandbox.workdir)
            # the kernel's own descriptors lead nowhere: what a submission writes to fd 1 or 2 (os.write,
            # sys.__stdout__, a child process) never reaches the grader's terminal, its JSON or its log
            kw["stdin"] = kw["stdout"] = kw["stderr"] = subprocess.DEVNULL
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return SandboxKernelManager(transport="ipc", ip=str(sandbox.workdir / "kernel"),
                                connection_file=str(sandbox.workdir / "kernel.json"))


# ----------------------------------------------------------------------------- the grading client


def grading_client(nb, sandbox: Sandbox, timeout: int, budget_s: float, max_output_bytes: int,  # noqa: ANN001
                   check_indices: set[int], probe: str):  # noqa: ANN201 - an nbclient NotebookClient
    """An nbclient client that records each cell's execute reply, probes the kernel before check cells,
    keeps at most ``max_output_bytes`` of output per cell and stops starting cells after ``budget_s``."""
    import time

    from nbclient import NotebookClient
    from nbformat.v4 import new_output

    from .integrity import parse_probe

    class GradingClient(NotebookClient):
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            super().__init__(*args, **kwargs)
            self.replies: dict[int, dict[str, str]] = {}
            self.probes: dict[int, dict | None] = {}
            self.output_bytes: dict[int, int] = {}
            self.skipped: list[int] = []
            self.cut: set[int] = set()
            self.deadline = time.monotonic() + budget_s
            self.on_cell_executed = self._record_reply

        def _record_reply(self, cell, cell_index: int, execute_reply) -> None:  # noqa: ANN001
            content = (execute_reply or {}).get("content", {})
            self.replies[cell_index] = {k: str(content.get(k, "")) for k in ("status", "ename", "evalue")}
            self.replies[cell_index]["traceback"] = "\n".join(content.get("traceback", []))[-4000:]

        async def _probe(self) -> dict | None:
            msg_id = self.kc.execute("", silent=True, store_history=False, user_expressions={"fp": probe})
            self.probing = True
            try:
                return parse_probe(await self.async_wait_for_reply(msg_id))
            except TimeoutError:
                return None
            finally:
                self.probing = False

        async def async_execute_cell(self, cell, cell_index: int, execution_count=None, store_history=True):  # noqa: ANN001
            if cell.cell_type == "code" and cell.source.strip():
                if -1 not in self.probes:
                    self.probes[-1] = await self._probe()  # before any submitted code ran
                if time.monotonic() >= self.deadline:
                    self.skipped.append(cell_index)
                    return cell
                if cell_index in check_indices:
                    self.probes[cell_index] = await self._probe()
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

        def _get_timeout(self, cell) -> int:  # noqa: ANN001
            limit = PROBE_TIMEOUT if getattr(self, "probing", False) else timeout
            return max(1, min(limit, int(self.deadline - time.monotonic()) + 1))

        def output(self, outs, msg, display_id, cell_index):  # noqa: ANN001, ANN201
            used = self.output_bytes.get(cell_index, 0) + len(str(msg.get("content", "")))
            self.output_bytes[cell_index] = used
            if used > max_output_bytes and msg.get("msg_type") != "error":
                if cell_index not in self.cut:
                    self.cut.add(cell_index)
                    outs.append(new_output("stream", name="stderr", text=CUT_NOTE))
                return None
            return super().output(outs, msg, display_id, cell_index)

    CUT_NOTE = f"[the grader kept only the first {max_output_bytes} bytes of this cell's output]\n"
    return GradingClient(nb, km=kernel_manager(sandbox), timeout=timeout, allow_errors=True,
                         resources={"metadata": {"path": str(sandbox.workdir)}}, shutdown_kernel="immediate")
