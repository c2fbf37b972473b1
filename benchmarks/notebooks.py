"""The cost of the series: wall time and peak resident memory of every notebook in full and fast mode.

Each notebook runs through ``vae_helpers.runner`` in a child process of its own; the child's
children include the Jupyter kernel, so ``getrusage(RUSAGE_CHILDREN)`` there gives the kernel's
peak resident set once it has been reaped, and this script also polls the kernel's
``/proc/<pid>/status`` (VmHWM) while it runs. ``--make-test`` also times ``make test`` in a fresh clone of HEAD.

    python benchmarks/notebooks.py                      # every notebook, full and fast mode
    python benchmarks/notebooks.py --modes fast notebooks/02_*.ipynb
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from _common import fmt, machine_info, markdown_table, write_results

ROOT = _common.ROOT
HERE = Path(__file__).resolve().parent
MEMORY_BUDGET_MB = 2048
MAKE_TEST_BUDGET_S = 600
BUDGETS_S = {  # notebook number -> (full-mode, fast-mode) wall-time budgets from the issues, seconds
    "00": (None, None),
    "01": (180, 60),
    "02": (300, 90),
    "03": (360, 90),
    "04": (480, 120),
}
COLUMNS = ["notebook", "mode", "seconds", "time budget (s)", "peak RSS (MB)", "memory budget (MB)", "headline", "status"]


def child_main(notebook: Path, fast: bool, out_dir: Path, timeout: int) -> int:
    """Run one notebook with the runner in this process and print a JSON line of what it cost."""
    from vae_helpers.runner import run_notebooks

    start = time.perf_counter()
    result = run_notebooks([notebook], out_dir, fast=fast, timeout=timeout)[0]
    report = {
        "seconds": result.seconds,
        "child_seconds": time.perf_counter() - start,
        "headline": result.headline,
        "error": result.error,
        "kernel_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "runner_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    print("RESULT " + json.dumps(report), flush=True)
    return 0


def descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (Linux /proc; empty elsewhere)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(k) for k in task.read_text().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def vm_hwm_kb(pid: int) -> int:
    """Peak resident set (VmHWM) of a live process in kB, or 0 when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def measure(notebook: Path, fast: bool, timeout: int, executed_dir: Path, poll: float = 0.25) -> dict[str, Any]:
    """Execute ``notebook`` in a child process; return seconds, peak RSS (MB), headline and error."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(notebook), "--out", str(executed_dir),
           "--timeout", str(timeout)] + (["--fast"] if fast else [])
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    polled_kb = 0
    while proc.poll() is None:
        for pid in descendants(proc.pid):
            polled_kb = max(polled_kb, vm_hwm_kb(pid))
        time.sleep(poll)
    output = proc.stdout.read() if proc.stdout else ""
    wall = time.perf_counter() - start
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(output.strip().splitlines()[-3:])
        return {"seconds": wall, "peak_rss_mb": polled_kb / 1024, "headline": "-",
                "error": f"runner exited with {proc.returncode}: {tail}"[:300]}
    report = json.loads(lines[-1][len("RESULT "):])
    report["peak_rss_mb"] = max(polled_kb, report["kernel_maxrss_kb"]) / 1024
    report["polled_kernel_mb"] = polled_kb / 1024
    report["wall_seconds"] = wall
    return report


def time_make_test(timeout: int) -> dict[str, Any]:
    """Clone the repository's HEAD into a temporary folder and time ``make test`` there (new venv, new MNIST cache).

    Nothing of this checkout is reused: the clone builds its own ``.venv`` and fetches MNIST into its own
    ``data/``. Only pip's download cache is shared, as on a CI machine that restores it.
    """
    with tempfile.TemporaryDirectory(prefix="vae-bench-make-test-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True,
                                text=True).stdout.strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
        start = time.perf_counter()
        try:
            done = subprocess.run(["make", "test"], cwd=clone, capture_output=True, text=True, timeout=timeout, env=env)
            code, output = done.returncode, (done.stdout + done.stderr).strip().splitlines()
        except subprocess.TimeoutExpired:
            code, output = -1, [f"timed out after {timeout} s"]
        seconds = time.perf_counter() - start
    summary = next((line for line in reversed(output) if " passed" in line or " failed" in line), output[-1:] or [""])
    return {"seconds": seconds, "returncode": code, "commit": commit,
            "last_line": summary if isinstance(summary, str) else (summary[0] if summary else "")}


def status(seconds: float, budget: float | None, peak_mb: float, error: str | None) -> str:
    """'ok', or what went wrong / over budget."""
    if error:
        return f"FAILED: {error}"
    problems = []
    if budget is not None and seconds > budget:
        problems.append("over time budget")
    if peak_mb > MEMORY_BUDGET_MB:
        problems.append("over memory budget")
    return "MISSED: " + ", ".join(problems) if problems else "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to measure (default: notebooks/*.ipynb)")
    parser.add_argument("--modes", default="full,fast", help="comma list of 'full' and 'fast'")
    parser.add_argument("--make-test", action="store_true", help="also time `make test` in a fresh clone of HEAD")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the executed copies in KEEP/full and KEEP/fast (default: a temporary directory)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fast", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child_main(args.child, args.fast, args.out, args.timeout)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("full", "fast") for m in modes):
        parser.error("--modes must be a comma list of 'full' and 'fast'")
    notebooks = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    missing = [str(p) for p in notebooks if not p.is_file()]
    if missing:
        parser.error(f"not found: {missing}")

    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="vae-bench-nb-") as scratch:
        executed = args.keep if args.keep is not None else scratch
        for mode in modes:
            for path in notebooks:
                report = measure(path, mode == "fast", args.timeout, Path(executed) / mode)
                full_budget, fast_budget = BUDGETS_S.get(path.name[:2], (None, None))
                budget = full_budget if mode == "full" else fast_budget
                state = status(report["seconds"], budget, report["peak_rss_mb"], report.get("error"))
                results.append({"notebook": path.name, "mode": mode, "budget_s": budget, "status": state, **report})
                rows.append([path.name, mode, fmt(report["seconds"], 0), budget if budget is not None else "-",
                             fmt(report["peak_rss_mb"], 0), MEMORY_BUDGET_MB, report.get("headline", "-"), state])
                print(f"{mode:<4} {path.name:<32} {report['seconds']:7.1f} s  {report['peak_rss_mb']:7.0f} MB  {state}",
                      flush=True)

    md = [f"Each notebook executed by `vae_helpers.runner` in a fresh kernel ({len(notebooks)} notebooks, modes: "
          f"{', '.join(modes)}); seconds include kernel start-up; peak RSS is the kernel's high-water mark.",
          "", markdown_table(COLUMNS, rows)]
    totals = {mode: sum(r["seconds"] for r in results if r["mode"] == mode) for mode in modes}
    md += ["", "Totals: " + ", ".join(f"{mode} mode {seconds / 60:.1f} min" for mode, seconds in totals.items()) + "."]
    make_test = None
    if args.make_test:
        make_test = time_make_test(timeout=3 * MAKE_TEST_BUDGET_S)
        ok = make_test["returncode"] == 0 and make_test["seconds"] <= MAKE_TEST_BUDGET_S
        md += ["", f"`make test`: {make_test['seconds'] / 60:.1f} min, exit code {make_test['returncode']} "
                   f"(target <= {MAKE_TEST_BUDGET_S / 60:.0f} min on a fresh machine: {'met' if ok else 'MISSED'}; "
                   f"a fresh clone of commit {make_test['commit']}: new virtual environment and MNIST download, "
                   f"pip's download cache shared). pytest: {make_test['last_line'].strip('= ')}",
               ]
    missed = [f"{r['notebook']} ({r['mode']}): {r['status']}" for r in results if r["status"] != "ok"]
    if make_test is not None and not (make_test["returncode"] == 0 and make_test["seconds"] <= MAKE_TEST_BUDGET_S):
        missed.append(f"make test: {make_test['seconds'] / 60:.1f} min, exit code {make_test['returncode']}")
    data = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}, "columns": COLUMNS,
            "rows": rows, "results": results, "totals_s": totals, "make_test": make_test, "missed": missed,
            "memory_budget_mb": MEMORY_BUDGET_MB, "budgets_s": BUDGETS_S}
    write_results(args.out, "notebooks", data, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
