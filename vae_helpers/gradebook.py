"""A class at once: grading submissions in parallel, the CSV gradebook and one HTML feedback page per student."""

from __future__ import annotations

import csv
import html
import io
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._io import atomic_write

if TYPE_CHECKING:
    from .grade import Report


def student_name(report: Report) -> str:
    """Who handed it in: the folder name when the file keeps the notebook's name, else the file's stem."""
    path = Path(report.submission)
    if report.source and path.name == Path(report.source).name and path.parent.name not in ("", "."):
        return path.parent.name
    return path.stem


def _grade_one(args: tuple[Any, ...]) -> Report:
    from .grade import grade_submission

    path, kwargs = args
    report = grade_submission(Path(path), **kwargs)
    report.executed = None  # the class's memory stays flat: only scores and messages travel back
    return report


def grade_class(paths: list[Path], jobs: int, progress: bool = True, on_result: Any = None, **kwargs: Any) -> list[Report]:
    """Grade every submission, ``jobs`` at a time (each in its own kernel); reports come back in input order.

    A grading worker that dies (a submission that brings its grader down) fails only that submission:
    the submissions it took with it are graded again, each on its own, and the one that kills its
    worker again gets the status ``grader_error``. ``on_result(reports so far)`` is called after every
    result, so a caller can write the gradebook as it grows.
    """
    from concurrent.futures.process import BrokenProcessPool

    from tqdm.auto import tqdm

    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    bar = tqdm(total=len(paths), desc="grading", unit="submission", disable=not progress)
    reports: list[Report | None] = [None] * len(paths)

    def done(i: int, report: Report) -> None:
        reports[i] = report
        bar.update()
        if on_result is not None:
            on_result([r for r in reports if r is not None])

    def in_pools(indices: list[int], workers: int) -> list[int]:
        """Grade ``indices`` in a pool of ``workers``; return those lost with a dead worker."""
        lost = []
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_grade_one, (paths[i], kwargs)): i for i in indices}
            for future in as_completed(futures):
                try:
                    done(futures[future], future.result())
                except BrokenProcessPool:
                    lost.append(futures[future])
                except Exception as err:  # noqa: BLE001 - one submission's grading error is that submission's
                    done(futures[future], _grader_error(paths[futures[future]], f"{type(err).__name__}: {err}",
                                                              kwargs.get("source")))
        return sorted(lost)

    try:
        if jobs == 1 or len(paths) == 1:  # in this process, one after the other
            lost = []
            for i, path in enumerate(paths):
                try:
                    done(i, _grade_one((path, kwargs)))
                except Exception as err:  # noqa: BLE001 - one submission's grading error is that submission's
                    done(i, _grader_error(path, f"{type(err).__name__}: {err}", kwargs.get("source")))
        else:
            lost = in_pools(list(range(len(paths))), jobs)
        for i in lost:  # again, one at a time: only the submission that kills its worker fails
            if in_pools([i], 1):
                done(i, _grader_error(paths[i], "the grading process died while grading this submission (it brought "
                                                "its grader down: a fork bomb or a kill?); the other submissions are graded",
                                      kwargs.get("source")))
    finally:
        bar.close()
    return [r for r in reports if r is not None]


def _grader_error(path: Path, why: str, source: Any = None) -> Report:
    from .grade import Report

    return Report(submission=str(path), status="grader_error", message=why, flags=[why],
                  source=str(source) if source else None)


def exercise_columns(reports: list[Report]) -> list[str]:
    """Every exercise id of the class, in order of first appearance."""
    seen: dict[str, None] = {}
    for report in reports:
        seen.update({e.grade_id: None for e in report.exercises})
    return list(seen)


def gradebook_rows(reports: list[Report]) -> list[dict[str, Any]]:
    """One row per submission: who, which notebook, status, a column per exercise, totals, flags, time."""
    columns = exercise_columns(reports)
    rows = []
    for report in reports:
        points = {e.grade_id: ("manual" if e.status == "needs manual grading" else f"{e.score or 0:g}") for e in report.exercises}
        row = {"student": student_name(report), "submission": report.submission,
               "notebook": Path(report.source).name if report.source else "", "status": report.status}
        row.update({gid: points.get(gid, "") for gid in columns})
        row.update({"automatic": f"{report.score:g}", "automatic_max": f"{report.max_score:g}",
                    "optional": f"{report.optional_score:g}", "manual_pending": f"{report.manual_points:g}",
                    "flags": " | ".join(report.flags), "warnings": " | ".join(report.warnings),
                    "message": report.message, "seconds": f"{report.seconds:.1f}"})
        rows.append(row)
    return rows


def write_gradebook(reports: list[Report], dest: Path) -> Path:
    """Write the class's CSV gradebook atomically (nothing half-written if it fails)."""
    rows = gradebook_rows(reports)
    fields = list(rows[0]) if rows else ["student", "submission", "notebook", "status"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(dest, lambda f: f.write(text.getvalue().encode("utf-8")))


_STYLE = ("body{font-family:sans-serif;max-width:50em;margin:2em auto;color:#222}"
          "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.4em;text-align:left}"
          ".passed{color:#1a7f37}.failed,.missing,.notrun{color:#b42318}.total{font-weight:bold}")


def feedback_html(report: Report) -> str:
    """One student's feedback page: each exercise's points and short message (never hidden tests), no scripts."""
    esc = html.escape
    title = f"Feedback: {Path(report.source).name if report.source else Path(report.submission).name}"
    rows = []
    for e in report.exercises:
        points = "to be graded by hand" if e.status == "needs manual grading" else f"{e.score or 0:g} / {e.points:g}"
        note = "" if e.status == "needs manual grading" else e.feedback
        kind = " (optional)" if e.optional and "optional" not in e.title.lower() else ""
        rows.append(f"<tr class=\"{e.status.replace(' ', '')}\"><td>{esc(e.title)}{kind}</td><td>{esc(points)}</td>"
                    f"<td>{esc(e.status)}</td><td>{esc(note)}</td></tr>")
    body = [f"<h1>{esc(title)}</h1>", f"<p>Submission of <b>{esc(student_name(report))}</b>: {esc(report.status)}"
            + (f" ({esc(report.message)})" if report.message and report.status != "graded" else "") + "</p>"]
    if rows:
        body.append("<table><tr><th>exercise</th><th>points</th><th>result</th><th>message</th></tr>" + "".join(rows) + "</table>")
        total = f"Total: {report.score:g} / {report.max_score:g} points graded automatically"
        if report.optional_score:
            total += f", plus {report.optional_score:g} optional"
        if report.manual_points:
            total += f"; {report.manual_points:g} more points are graded by hand"
        body.append(f"<p class=\"total\">{esc(total)}</p>")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_feedback(reports: list[Report], out_dir: Path) -> list[Path]:
    """One HTML page per submission in ``out_dir`` (``STUDENT_NOTEBOOK.html``), each written atomically."""
    written, used = [], set()
    for report in reports:
        stem = f"{student_name(report)}_{Path(report.source or report.submission).stem}"
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
        name, n = f"{stem}.html", 1
        while name in used:
            n += 1
            name = f"{stem}_{n}.html"
        used.add(name)
        page = feedback_html(report)
        written.append(atomic_write(out_dir / name, lambda f, page=page: f.write(page.encode("utf-8"))))
    return written


def default_jobs() -> int:
    """One job per core this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)

