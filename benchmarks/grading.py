"""Grading a class: wall time and peak memory of ``python -m vae_helpers.grade`` on a synthetic class.

The class has ``--submissions`` notebooks in all, the notebooks taken in turn (30: 15 each of 02
and 04), each in turn the untouched student version, one with the first half of the exercises
solved, and one fully solved. Each ``--jobs`` value grades
the whole class once (fast mode, sandboxed, gradebook and feedback written). Memory is the summed
resident set of the grader and everything below it (workers, bubblewrap, kernels), sampled every
0.5 s; "flat" compares the peak over the first and the last third of the run.

    python benchmarks/grading.py                                   # 30 submissions of 02 and 04, --jobs 1 and 2
    python benchmarks/grading.py --submissions 2 --jobs 1 --notebooks notebooks/01_autoencoder.ipynb   # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat

import _common
from _common import fmt, machine_info, markdown_table, write_results

ROOT = _common.ROOT
TARGET_S = 600  # the target for a class of 30 submissions on a 2-core machine
TARGET_CLASS = 30
DEFAULT_NOTEBOOKS = [ROOT / "notebooks" / "02_vae.ipynb", ROOT / "notebooks" / "04_planar_flows.ipynb"]


def make_class(notebooks: list[Path], size: int, out: Path) -> list[Path]:
    """Write ``size`` submissions in all (the notebooks in turn) under ``out/student-NN/``; return their paths."""
    from vae_helpers import grade

    paths = []
    for k, notebook in enumerate(notebooks):
        instructor = nbformat.read(notebook, as_version=4)
        student = grade.student_version(instructor)
        answers = {grade.nbgrader_meta(c)["grade_id"]: "\n".join(line for line in c.source.splitlines() if "### " not in line)
                   for c in instructor.cells
                   if grade.nbgrader_meta(c).get("solution") and c.cell_type == "code"}
        ids = [gid for gid in grade.grade_ids(instructor) if gid in answers]
        for n in range(k, size, len(notebooks)):
            solved = (set(), set(ids[: len(ids) // 2]), set(ids))[(n // len(notebooks)) % 3]
            nb = copy.deepcopy(student)
            for cell in nb.cells:
                if grade.nbgrader_meta(cell).get("grade_id") in solved:
                    cell.source = answers[grade.nbgrader_meta(cell)["grade_id"]]
            dest = out / f"student-{n:02d}" / notebook.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, dest)
            paths.append(dest)
    return paths


def tree_rss_kb(pid: int) -> int:
    """Summed VmRSS of ``pid`` and all its descendants in kB (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError):
            continue
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(k) for k in task.read_text().split()]
            except (OSError, ValueError):
                pass
    return total


def grade_once(paths: list[Path], jobs: int, out: Path) -> dict[str, Any]:
    """Grade the class with ``--jobs jobs``; return seconds, peak memory (first/last third) and the exit code."""
    cmd = [sys.executable, "-m", "vae_helpers.grade", *map(str, paths), "--jobs", str(jobs), "--quiet",
           "--gradebook", str(out / f"grades-jobs{jobs}.csv"), "--feedback", str(out / f"feedback-jobs{jobs}")]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "VAE_FAST": "1"})
    samples = []
    while proc.poll() is None:
        samples.append((time.perf_counter() - start, tree_rss_kb(proc.pid)))
        time.sleep(0.5)
    seconds = time.perf_counter() - start
    err = proc.stderr.read() if proc.stderr else ""
    third = max(seconds / 3, 1e-9)
    first = max((kb for t, kb in samples if t <= third), default=0) / 1024
    last = max((kb for t, kb in samples if t >= 2 * third), default=0) / 1024
    return {"jobs": jobs, "seconds": seconds, "peak_mb": max((kb for _, kb in samples), default=0) / 1024,
            "peak_first_third_mb": first, "peak_last_third_mb": last, "returncode": proc.returncode,
            "stderr_tail": err.strip().splitlines()[-3:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", nargs="+", type=Path, default=DEFAULT_NOTEBOOKS)
    parser.add_argument("--submissions", type=int, default=30, help="submissions in all, the notebooks in turn")
    parser.add_argument("--jobs", default="1,2", help="comma list of --jobs values to time")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-grading", help="where the class is written")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    jobs = [int(j) for j in args.jobs.split(",") if j.strip()]
    if args.submissions < 1 or not jobs or min(jobs) < 1:
        parser.error("--submissions and --jobs must be positive")
    paths = make_class(args.notebooks, args.submissions, args.work / "class")
    runs = []
    for j in jobs:
        runs.append(grade_once(paths, j, args.work))
        r = runs[-1]
        print(f"--jobs {j}: {r['seconds']:.0f} s, peak {r['peak_mb']:.0f} MB (first third {r['peak_first_third_mb']:.0f}, "
              f"last third {r['peak_last_third_mb']:.0f}), exit {r['returncode']}", flush=True)
    names = ", ".join(p.name for p in args.notebooks)
    rows = [[r["jobs"], len(paths), fmt(r["seconds"], 0), fmt(r["seconds"] / len(paths), 1), fmt(r["peak_mb"], 0),
             f"{fmt(r['peak_first_third_mb'], 0)} / {fmt(r['peak_last_third_mb'], 0)}",
             "met" if r["seconds"] <= TARGET_S * len(paths) / TARGET_CLASS and r["returncode"] in (0, 1) else "MISSED"]
            for r in runs]
    markdown = (f"Grading {len(paths)} submissions of {names} (in turn; blank, half and fully solved in turn), "
                "fast mode, sandboxed, gradebook and feedback written. Target: "
                f"{TARGET_S / 60:g} minutes per {TARGET_CLASS} submissions.\n\n"
                + markdown_table(["--jobs", "submissions", "seconds", "s / submission", "peak memory (MB)",
                                  "peak first / last third (MB)", "target"], rows))
    data = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
            "submissions": len(paths), "target_s": TARGET_S, "target_class": TARGET_CLASS}
    write_results(args.out, "grading", data, markdown)
    return 0 if all(r["returncode"] in (0, 1) for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
