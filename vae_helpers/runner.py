"""Execute notebooks top to bottom into executed copies and summarise them (``make run``).

``python -m vae_helpers.runner notebooks --out build/notebooks [--fast]`` prints a table:
notebook, seconds, and the headline metric each notebook reports with ``config.headline``. Notebooks
are given as files, folders (their ``*.ipynb``) or glob patterns, expanded here when the shell did not
(``"notebooks/*.ipynb"`` in Windows' cmd or PowerShell). Fast mode is ``--fast`` or ``VAE_FAST=1``.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ._io import atomic_write
from .config import HEADLINE_PREFIX, is_fast


@dataclass
class RunResult:
    """What executing one notebook gave."""

    notebook: str
    seconds: float
    headline: str
    error: str | None = None


def expand_notebooks(items: list[Path | str], recursive: bool = False) -> list[Path]:
    """Files as given, folders as their ``*.ipynb`` (also in subfolders if ``recursive``; hidden folders such as
    ``.ipynb_checkpoints`` left out), glob patterns as their sorted matches; a pattern that matches nothing is
    kept as it is, so the caller reports it as missing."""
    paths: list[Path] = []
    for item in map(str, items):
        matches = sorted(glob.glob(item, recursive=True)) if any(c in item for c in "*?[") else [item]
        for match in map(Path, matches or [item]):
            if match.is_dir():
                found = match.rglob("*.ipynb") if recursive else match.glob("*.ipynb")
                paths += sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(match).parts))
            else:
                paths.append(match)
    return paths


def execute_notebook(nb: nbformat.NotebookNode, cwd: str | Path, timeout: int = 1800, allow_errors: bool = False,
                     env: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """Run every cell of ``nb`` in a fresh kernel of this Python (working directory ``cwd``); return it executed."""
    from nbclient import NotebookClient

    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                                resources={"metadata": {"path": str(cwd)}})
        client.kernel_manager_class = _current_env_kernel_manager()
        return client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _current_env_kernel_manager():
    """A kernel manager that always starts ipykernel with this interpreter (not a stray user kernelspec)."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class CurrentEnvKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            # IPC (Unix sockets beside the connection file in Jupyter's private runtime directory) rather than
            # TCP ports: nothing listens on the network, and the kernel does not warn about plain-text TCP.
            return "ipc" if os.name == "posix" else "tcp"

        @default("ip")
        def _ip_default(self) -> str:
            if self.transport != "ipc":
                return super()._ip_default()
            # an absolute socket path: the kernel runs in the notebook's directory, the client elsewhere
            from jupyter_core.paths import jupyter_runtime_dir

            os.makedirs(jupyter_runtime_dir(), mode=0o700, exist_ok=True)
            return os.path.join(jupyter_runtime_dir(), f"kernel-{uuid.uuid4().hex[:12]}-ipc")

        def format_kernel_cmd(self, extra_arguments=None):  # noqa: ANN001
            return [sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file]

    return CurrentEnvKernelManager


def cell_text_outputs(cell: nbformat.NotebookNode) -> str:
    """The plain text a code cell printed (streams and text/plain results)."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def find_headline(nb: nbformat.NotebookNode) -> str:
    """The last ``Headline metric:`` line the notebook printed, without the prefix (or ``"-"``)."""
    found = "-"
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for line in cell_text_outputs(cell).splitlines():
            if line.startswith(HEADLINE_PREFIX):
                found = line[len(HEADLINE_PREFIX):].strip()
    return found


def describe_error(err: BaseException) -> str:
    """One line for a failed execution: the cell's exception name and message when nbclient gives them."""
    if getattr(err, "ename", None):
        message = str(getattr(err, "evalue", "")).strip().splitlines()
        return f"{err.ename}: {message[0] if message else ''}"[:200]
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:200]


def run_notebooks(paths: list[Path], out_dir: Path, fast: bool = False, timeout: int = 1800) -> list[RunResult]:
    """Execute each notebook into ``out_dir`` (written atomically, also when it fails) and collect results.

    A problem with one notebook (not valid JSON, a file name that another notebook in the list
    already has, an executed copy that cannot be written) is reported in its result; the others still run.
    """
    results = []
    env = {"VAE_FAST": "1" if fast else "0"}
    first_with_name: dict[str, Path] = {}
    for path in paths:
        label = path.name
        if path.name in first_with_name:
            other = first_with_name[path.name]
            results.append(RunResult(str(path), 0.0, "-", f"not run: {other} has the same file name, and both "
                                                        f"executed copies would be {out_dir / path.name}; rename one"))
            print(f"SKIPPED {path}: same file name as {other}", flush=True)
            continue
        first_with_name[path.name] = path
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as err:  # noqa: BLE001 - not JSON, not a notebook, unreadable
            reason = str(err).strip().splitlines()[0][:150] if str(err).strip() else type(err).__name__
            results.append(RunResult(label, 0.0, "-", f"not a valid notebook (expected nbformat JSON): {reason}"))
            print(f"FAILED {path}: not a valid notebook", flush=True)
            continue
        start = time.perf_counter()
        error = None
        try:
            nb = execute_notebook(nb, cwd=path.parent, timeout=timeout, env=env)
        except Exception as err:  # noqa: BLE001 - report and go on with the next notebook
            error = describe_error(err)
        seconds = time.perf_counter() - start
        try:
            atomic_write(out_dir / path.name, lambda f: f.write(nbformat.writes(nb).encode()))
        except OSError as err:
            error = (error + "; " if error else "") + f"executed copy not written to {out_dir / path.name}: {err.strerror or err}"
        results.append(RunResult(label, seconds, find_headline(nb), error))
        print(f"{'FAILED' if error else 'done  '} {path.name} in {seconds:.0f} s", flush=True)
    return results


def summary_table(results: list[RunResult]) -> str:
    """A fixed-width table: notebook, seconds, headline metric (or the error)."""
    rows = [("notebook", "seconds", "headline metric")]
    rows += [(r.notebook, f"{r.seconds:.0f}", f"FAILED: {r.error}" if r.error else r.headline) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c}" for a, b, c in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", help="notebooks to execute, in order: files, folders or glob patterns")
    parser.add_argument("--out", type=Path, default=Path("build/notebooks"), help="where the executed copies go")
    parser.add_argument("--fast", action="store_true", help="fast mode, as nbval runs them (default: VAE_FAST, else full)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    args.notebooks = expand_notebooks(args.notebooks)
    missing = [str(p) for p in args.notebooks if not p.is_file() or p.suffix != ".ipynb"]
    if missing or not args.notebooks:
        print(f"error: not notebook files: {missing or 'no notebooks found'}", file=sys.stderr)
        return 2
    if args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out} is a file; expected a folder for the executed copies "
              "(it is created when missing). Nothing was run.", file=sys.stderr)
        return 2
    results = run_notebooks(args.notebooks, args.out, fast=args.fast or is_fast(), timeout=args.timeout)
    print()
    print(summary_table(results))
    print(f"\nExecuted copies are in {args.out}/ (total {sum(r.seconds for r in results):.0f} s).")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
