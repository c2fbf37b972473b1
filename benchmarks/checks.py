"""The checkers' own speed: how long each graded check cell takes when its notebook runs in fast mode.

Each notebook runs once in a fresh kernel through ``vae_helpers.runner.execute_notebook`` with
``VAE_FAST=1``; nbclient records when every cell started and finished, and the check cells (nbgrader
``grade: true`` code cells) are read off. The target: every check cell within a few seconds.

    python benchmarks/checks.py                         # notebooks 01-04, quiet and beside one busy process
    python benchmarks/checks.py --busy 0 notebooks/02_vae.ipynb
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import _common
from _common import machine_info, markdown_table, write_results

ROOT = _common.ROOT
TARGET_S = 5.0  # a check cell's budget in fast mode: "within a few seconds"
DEFAULT_NOTEBOOKS = sorted((ROOT / "notebooks").glob("0[1-4]_*.ipynb"))


def _seconds(cell: Any) -> float | None:
    """Wall time of one executed cell from nbclient's timing metadata, or None."""
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not start or not end:
        return None
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def time_check_cells(notebook: Path, timeout: int = 900) -> dict[str, Any]:
    """Execute ``notebook`` in fast mode and return the seconds of each of its check cells, by grade_id."""
    import nbformat

    from vae_helpers.runner import execute_notebook

    os.environ["VAE_FAST"] = "1"
    nb = nbformat.read(notebook, as_version=4)
    start = time.perf_counter()
    execute_notebook(nb, cwd=notebook.parent, timeout=timeout)
    cells = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            cells[meta.get("grade_id", "?")] = _seconds(cell)
    return {"notebook": notebook.name, "seconds": time.perf_counter() - start, "check_cells": cells}


def _spinners(count: int) -> list[subprocess.Popen]:
    """``count`` processes that keep one core busy each (a browser, another program), stopped by the caller."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, default=DEFAULT_NOTEBOOKS)
    parser.add_argument("--busy", default="0,1", help="comma list: how many busy processes run beside the notebooks")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    runs = []
    for busy in [int(b) for b in args.busy.split(",") if b.strip()]:
        spinners = _spinners(busy)
        try:
            runs += [dict(time_check_cells(Path(nb).resolve()), busy=busy) for nb in args.notebooks]
        finally:
            for p in spinners:
                p.kill()
                p.wait()
    rows, missed = [], []
    for run in runs:
        timed = {k: v for k, v in run["check_cells"].items() if v is not None}
        slowest = max(timed, key=timed.get) if timed else None
        worst = timed.get(slowest, float("nan")) if slowest else float("nan")
        status = "met" if slowest and worst <= TARGET_S else "MISSED"
        if status == "MISSED":
            missed.append(f"{run['notebook']} beside {run['busy']} busy: slowest check cell {slowest} took {worst:.1f} s "
                          f"(target {TARGET_S:g} s)")
        rows.append([run["notebook"], run["busy"], len(timed), f"{sum(timed.values()):.1f}", slowest or "-", f"{worst:.2f}",
                     f"{TARGET_S:g}", status])
    table = markdown_table(["notebook", "busy processes beside", "check cells", "all checks (s)", "slowest check cell",
                            "its seconds", "budget (s)", "status"], rows)
    detail = "\n".join(f"- {run['notebook']}, {run['busy']} busy: " + ", ".join(
        f"{k} {v:.2f} s" for k, v in run["check_cells"].items() if v is not None) for run in runs)
    markdown = (f"Fast mode (`VAE_FAST=1`), each notebook in a fresh kernel, the solutions in place, on a quiet machine "
                f"and beside processes that keep a core busy each; seconds from nbclient's cell timing.\n\n{table}\n\n"
                f"Every check cell:\n\n{detail}")
    data = {"machine": machine_info(), "target_s": TARGET_S, "runs": runs, "missed": missed,
            "targets": [[f"slowest check cell of {r[0]} <= {TARGET_S:g} s (fast mode, {r[1]} busy beside)",
                         f"{r[5]} s ({r[4]})", r[7]] for r in rows]}
    write_results(args.out, "checks", data, markdown)
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
