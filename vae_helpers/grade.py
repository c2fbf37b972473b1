"""Grading submissions without an nbgrader database, each in a sandboxed kernel; student versions.

``python -m vae_helpers.grade SUBMISSION.ipynb [...] [--gradebook grades.csv] [--feedback DIR] [--jobs N] [--json]``
``python -m vae_helpers.grade --make-student notebooks/*.ipynb --out build/student``
``python -m vae_helpers.grade --exercise-table notebooks/*.ipynb`` (the table in docs/teaching.md)

Notebooks may be files, folders or glob patterns (expanded here when the shell did not).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from . import shipped
from .assignment import (CODE_STUB, Exercise, _num, exercise_table, exercises, grade_ids, is_check_cell, is_optional,  # noqa: F401
                         is_manual_cell, make_student, nbgrader_meta, points_table_call, student_version)
from .config import is_fast
from .runner import describe_error, expand_notebooks

NOTEBOOK_DIR = shipped.notebook_dir()
MAX_RESTARTS = 2  # cells that hang or kill the kernel are replaced by a failing stub at most this often
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# ----------------------------------------------------------------------------- grading


@dataclass
class ExerciseResult:
    """The outcome of one graded cell: status is passed, failed, missing, not run or needs manual grading."""

    grade_id: str
    title: str
    points: float
    manual: bool
    score: float | None
    status: str
    message: str = ""  # for the teacher (hidden tests' messages included)
    answer: str | None = None  # the learner's text, for cells graded by hand
    optional: bool = False  # reported apart; does not count towards the maximum
    feedback: str = ""  # for the learner: never the hidden tests' source or message
    tampered: bool = False


@dataclass
class Report:
    """The grading of one submission; status is graded, not_a_notebook, empty, wrong_notebook,
    unknown_notebook, execution_error or grader_error (its grading process died)."""

    submission: str
    status: str
    message: str = ""
    source: str | None = None
    mode: str = "fast"
    seconds: float = 0.0
    exercises: list[ExerciseResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # for the teacher: look at this submission by hand
    limits: dict[str, Any] = field(default_factory=dict)
    executed: nbformat.NotebookNode | None = field(default=None, repr=False)

    @property
    def score(self) -> float:
        """Points earned on the required exercises graded automatically."""
        return sum(e.score or 0 for e in self.exercises if not e.optional)

    @property
    def optional_score(self) -> float:
        """Points earned on optional exercises (reported apart, on top of the maximum)."""
        return sum(e.score or 0 for e in self.exercises if e.optional)

    @property
    def max_score(self) -> float:
        """Points of the required exercises that are graded automatically."""
        return sum(e.points for e in self.exercises if not e.manual and not e.optional)

    @property
    def manual_points(self) -> float:
        """Points left to grade by hand."""
        return sum(e.points for e in self.exercises if e.status == "needs manual grading")

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "executed"}
        d.update(score=self.score, max_score=self.max_score, manual_points=self.manual_points,
                 optional_score=self.optional_score)
        return d


def find_source(sub: nbformat.NotebookNode, sub_path: Path, source: Path | None,
                source_dir: Path) -> tuple[Path | None, str, str]:
    """The instructor notebook the submission was made from: (path, "", "") or (None, status, reason).

    Without ``source``, a notebook of the same file name in ``source_dir`` is taken, else the one
    sharing the most exercise ids with the submission.
    """
    ids = set(grade_ids(sub))
    candidates = {p: set(grade_ids(nbformat.read(p, as_version=4))) for p in sorted(source_dir.glob("*.ipynb"))}
    best = max(candidates, key=lambda p: len(ids & candidates[p]), default=None)
    best = best if best is not None and ids & candidates[best] else None
    if source is None and (source_dir / sub_path.name).is_file():
        source = source_dir / sub_path.name
    if source is None:
        if best is None:
            return None, "unknown_notebook", f"no notebook in {source_dir} shares an exercise with it; pass --source"
        return best, "", ""
    source_ids = set(grade_ids(nbformat.read(source, as_version=4)))
    if not source_ids:
        return None, "wrong_notebook", f"{source.name} has no exercises to grade"
    if ids & source_ids:
        return source, "", ""
    why = f"none of its cells carries an exercise id of {source.name}"
    if best is not None and best.resolve() != source.resolve():
        return None, "wrong_notebook", f"it was made from {best.name}, not from {source.name}: {why}"
    return None, "wrong_notebook", f"{why} (made from another notebook, or were its exercise cells deleted?)"


def prepare(sub: nbformat.NotebookNode, src: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, list[str]]:
    """The submission with outputs cleared and each check cell replaced by the instructor's (hidden tests included)."""
    from nbgrader.preprocessors import DeduplicateIds

    warnings = []
    ids = grade_ids(sub)
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        warnings.append(f"duplicated exercise cells {duplicated}: the last copy of each is graded")
    nb, _ = DeduplicateIds().preprocess(copy.deepcopy(sub), {})
    checks = {nbgrader_meta(c)["grade_id"]: c for c in src.cells if is_check_cell(c)}
    order = grade_ids(src)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
        gid = nbgrader_meta(cell).get("grade_id")
        if gid in checks:
            fresh = nbformat.v4.new_code_cell(checks[gid].source, metadata=copy.deepcopy(checks[gid].metadata))
            if "id" in cell:
                fresh.id = cell.id
            nb.cells[i] = fresh
    warnings += _moved_cells(nb, src)
    solutions = [nbgrader_meta(c)["grade_id"] for c in src.cells if nbgrader_meta(c).get("solution") and not is_manual_cell(c)]
    lost = [i for i in solutions if i not in grade_ids(nb)]
    if lost:
        warnings.append(f"the submission lacks the solution cells {lost} (deleted?)")
    unknown = [i for i in grade_ids(nb) if i not in order]
    if unknown:
        warnings.append(f"cells with exercise ids the instructor version lacks: {unknown}")
    return nb, warnings


def _moved_cells(nb: nbformat.NotebookNode, src: nbformat.NotebookNode) -> list[str]:
    """Warnings when the instructor's cells (by cell id, else by grade_id) were moved or check cells re-made.

    A check cell moved below the line that rebinds the name to the reference would test the reference.
    """
    ids = [c.get("id") for c in src.cells]
    if not set(ids) & {c.get("id") for c in nb.cells} - {None}:
        ids, remade = grade_ids(src), []
        seen = [ids.index(i) for i in grade_ids(nb) if i in ids]
    else:
        seen = [ids.index(c["id"]) for c in nb.cells if c.get("id") is not None and c["id"] in ids]
        handed_out = {nbgrader_meta(c)["grade_id"]: c.get("id") for c in src.cells if is_check_cell(c)}
        remade = [nbgrader_meta(c)["grade_id"] for c in nb.cells
                  if nbgrader_meta(c).get("grade_id") in handed_out and c.get("id") != handed_out[nbgrader_meta(c)["grade_id"]]]
    warnings = [f"check cells {remade} are not the cells handed out (their cell ids changed)"] if remade else []
    if seen != sorted(seen):
        warnings.append("cells of the instructor version were moved")
    if warnings:
        warnings[-1] += ": look at this submission by hand (a check cell placed after the reference implementation tests that)"
    return warnings


def _running_cell(nb: nbformat.NotebookNode) -> int | None:
    """The index of the cell whose execution started but never finished (nbclient's timing metadata)."""
    for i, cell in enumerate(nb.cells):
        timing = cell.metadata.get("execution")
        if cell.cell_type == "code" and timing is not None and "shell.execute_reply" not in timing:
            return i
    return None


@dataclass
class Limits:
    """What one submission may use: seconds per cell and in all, kernel memory, output kept per cell."""

    cell_timeout: int = 300
    budget_s: float = 1200.0
    memory_bytes: int | None = 6 << 30
    output_bytes: int = 2_000_000
    isolate: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("cell_timeout", "budget_s", "output_bytes") + (("memory_bytes",) if self.memory_bytes is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")


def default_timeouts(fast: bool) -> tuple[int, float]:
    """(seconds per cell, seconds per submission): in fast mode a cell needs seconds, so one student holds a slot
    for minutes at most; full mode trains for real."""
    return (60, 300.0) if fast else (1800, 7200.0)


@dataclass
class RunInfo:
    """What the grading client saw: each cell's execute reply, the kernel probes, cells skipped or cut."""

    replies: dict[int, dict[str, str]] = field(default_factory=dict)
    probes: dict[int, Any] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    cut: list[int] = field(default_factory=list)


def run_submission(nb: nbformat.NotebookNode, submitted: str, limits: Limits, fast: bool,
                   probe: str) -> tuple[nbformat.NotebookNode, list[str], str | None, RunInfo]:
    """Execute in a fresh sandboxed kernel with errors allowed: (executed notebook, notes, error or None, run info).

    The kernel's working directory is a new temporary directory holding only ``submitted`` (the
    submission's text). A cell that hangs or kills the kernel is replaced by a failing stub and
    the notebook runs again in a new kernel and directory, within the total time budget.
    """
    import os
    import tempfile

    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from .sandbox import IsolationUnavailable, Sandbox, grading_client

    notes: list[str] = []
    checks = {i for i, c in enumerate(nb.cells) if is_check_cell(c)}
    env = {"VAE_FAST": "1" if fast else "0"}
    if limits.threads:
        env.update(OMP_NUM_THREADS=str(limits.threads), MKL_NUM_THREADS=str(limits.threads), VAE_THREADS=str(limits.threads))
    start = time.monotonic()
    run, info = copy.deepcopy(nb), RunInfo()
    for _ in range(MAX_RESTARTS + 1):
        run, left = copy.deepcopy(nb), limits.budget_s - (time.monotonic() - start)
        if left <= 1:
            return run, notes, f"the total time budget of {limits.budget_s:g} s was used up", RunInfo()
        with tempfile.TemporaryDirectory(prefix="vae-grade-", ignore_cleanup_errors=True) as tmp:
            workdir = Path(tmp)
            os.chmod(workdir, 0o700)
            (workdir / "submission.ipynb").write_text(submitted, encoding="utf-8")
            box = Sandbox(workdir, limits.memory_bytes, isolate=limits.isolate, env=env)
            client = grading_client(run, box, limits.cell_timeout, left, limits.output_bytes, checks, probe)
            error = None
            try:
                client.execute(cleanup_kc=True)
            except IsolationUnavailable:
                raise
            except (CellTimeoutError, DeadKernelError) as err:
                error = err
            except Exception as err:  # noqa: BLE001 - report whatever stopped the kernel, never crash
                error = describe_error(err)
            info = RunInfo(dict(client.replies), dict(client.probes), list(client.skipped), sorted(client.cut))
        if error is None:
            return run, notes, None, info
        if isinstance(error, str):
            return run, notes, error, info
        index = _running_cell(run)
        if index is None:
            return run, notes, describe_error(error), info
        if time.monotonic() - start >= limits.budget_s - 1:
            info.replies.pop(index, None)
            return run, notes, f"the total time budget of {limits.budget_s:g} s ran out in cell {index + 1}", info
        if isinstance(error, CellTimeoutError):
            why = f"the grader stopped this cell after {limits.cell_timeout} s: it did not finish"
        else:
            why = "the kernel died while running this cell (exit() or out of memory?)"
        notes.append(f"cell {index + 1} of {len(nb.cells)} ({_first_line(nb.cells[index].source)!r}): {why}; it was replaced "
                     "by a failing stub and the notebook was run again")
        nb = copy.deepcopy(nb)
        nb.cells[index].source = f"raise RuntimeError({why!r})"
    return run, notes, "too many cells hang or kill the kernel; later cells were not run", info


def _first_line(text: str, limit: int = 160) -> str:
    lines = _ANSI.sub("", text).strip().splitlines()
    return lines[0][:limit] if lines else ""


def _hidden_lines(source: str) -> range:
    """The 1-based line numbers of a check cell's hidden tests (empty range if it has none)."""
    lines = source.splitlines()
    begin = next((i for i, line in enumerate(lines) if "BEGIN HIDDEN TESTS" in line), None)
    end = next((i for i, line in enumerate(lines) if "END HIDDEN TESTS" in line), len(lines))
    return range(0) if begin is None else range(begin + 1, end + 2)


def _failed_in_hidden(reply: dict[str, str], source: str, count: int | None = None) -> bool:
    """True when the traceback's frame in the check cell itself (execution ``count``) lies in its hidden tests.

    Frames of other cells (the learner's function crashing inside a checker) do not count, whatever their line.
    """
    number = r"\d+" if count is None else str(count)
    found = re.search(rf"(?:Cell In\[{number}\], line |<ipython-input-{number}-[^>]*> in <module>[^\n]*\n-+> )(\d+)",
                      _ANSI.sub("", reply.get("traceback", "")))
    return bool(found) and int(found.group(1)) in _hidden_lines(source)


def score(executed: nbformat.NotebookNode, src: nbformat.NotebookNode, info: RunInfo | None = None,
          aliases: dict[str, str] | None = None) -> list[ExerciseResult]:
    """Score every graded cell of the instructor version by the execute reply of its counterpart in ``executed``.

    A check cell earns its points only when it ran, the kernel replied "ok", and the kernel probe just
    before it found nothing changed since the start (no silenced exceptions, no replaced checkers).
    """
    from .integrity import compare

    info = info or RunInfo()
    where = {nbgrader_meta(c).get("grade_id"): i for i, c in enumerate(executed.cells) if nbgrader_meta(c).get("grade_id")}
    src_cells = {nbgrader_meta(c).get("grade_id"): c for c in src.cells}
    baseline = info.probes.get(-1)
    hidden = _hidden_sources(src)
    results = []
    for ex in exercises(src):
        index = where.get(ex.grade_id)
        cell = executed.cells[index] if index is not None else None
        result = ExerciseResult(ex.grade_id, ex.title, ex.points, ex.manual, 0.0, "failed",
                                optional=is_optional(ex, src_cells.get(ex.grade_id)))
        reply = info.replies.get(index) if index is not None else None
        if cell is None:
            result.status, result.message = "missing", "this cell is not in the submission (deleted?)"
        elif ex.manual:
            result.score, result.status, result.answer = None, "needs manual grading", cell.source
            unanswered = not cell.source.strip() or "YOUR ANSWER HERE" in cell.source
            text = "\n".join(line for line in cell.source.splitlines() if "SOLUTION" not in line)
            result.message = "not answered" if unanswered else f"answer: {_first_line(text)}"
        elif index in info.skipped:
            result.status, result.message = "not run", "the total time budget was used up before this cell"
        elif reply is None:
            result.status, result.message = "not run", "the notebook stopped before this cell"
        else:
            now = info.probes.get(index)
            changes = (["the grader could not inspect the kernel"] if baseline is None or now is None
                       else compare(baseline, now, aliases or {}))
            result.tampered = bool(changes)
            forged = _forged_success(cell, reply) if reply["status"] == "ok" else ""
            if forged:
                result.tampered = True
                changes = changes + [forged]
            if reply["status"] != "ok":
                # the whole first line: a checker's "Likely mistake: ..." comes at its end
                result.message = f"{reply['ename'] or 'Error'}: {_first_line(reply['evalue'], 2000)}".rstrip(": ")
                if _failed_in_hidden(reply, cell.source, cell.get("execution_count")):
                    result.feedback = "a hidden test failed"
            elif changes:
                result.message = "the kernel was tampered with before this check: " + "; ".join(changes)
            else:
                result.score, result.status = float(ex.points), "passed"
            if changes and reply["status"] != "ok":
                result.message += " (and the kernel was tampered with before this check: " + "; ".join(changes) + ")"
        result.feedback = _for_the_student(result, hidden)
        results.append(result)
    return results


def _forged_success(cell: nbformat.NotebookNode, reply: dict[str, str]) -> str:
    """Why a check cell whose kernel replied "ok" did not really pass, or "": the signals must agree.

    A passing check cell shows no error output, and one that calls a checker printed its ✓ line.
    """
    outputs = cell.get("outputs", [])
    if any(o.get("output_type") == "error" for o in outputs):
        return "the kernel replied ok although the check cell showed an error"
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stdout")
    if re.search(r"\bchecks\.check_\w+\(", cell.source) and "✓" not in printed:
        return "the kernel replied ok although the checker printed no ✓ line"
    return ""


def _hidden_sources(src: nbformat.NotebookNode) -> list[str]:
    """The lines of every hidden test in the instructor version (stripped, long enough to be recognised)."""
    found = []
    for cell in src.cells:
        lines = cell.source.splitlines()
        for number in _hidden_lines(cell.source):
            line = lines[number - 1].strip() if number - 1 < len(lines) else ""
            if len(line) >= 6 and "HIDDEN TESTS" not in line:
                found.append(line)
    return found


def _for_the_student(result: ExerciseResult, hidden: list[str]) -> str:
    """What the student's feedback page says: never a hidden test's text, never what the integrity probe saw."""
    if result.tampered:
        return "this check did not count: the notebook changed how checks run before it (ask your teacher)"
    text = result.feedback or result.message
    if any(line in text for line in hidden):
        return "a hidden test failed"
    return text


def grade_submission(path: Path, source: Path | None = None, source_dir: Path = NOTEBOOK_DIR,
                     timeout: int | None = None, fast: bool = True, limits: Limits | None = None) -> Report:
    """Grade one submitted notebook against its instructor version; never raises for a bad submission.

    Raises ``IsolationUnavailable`` when ``limits.isolate`` is set and no sandbox can be made.
    """
    from .integrity import helper_aliases, probe_expression, static_flags

    limits = copy.copy(limits or Limits(cell_timeout=default_timeouts(fast)[0], budget_s=default_timeouts(fast)[1]))
    limits.cell_timeout = timeout or limits.cell_timeout
    report = Report(str(path), "graded", mode="fast" if fast else "full", limits=asdict(limits))
    try:
        text = Path(path).read_text(encoding="utf-8")
        raw = json.loads(text)
        if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list) or "nbformat" not in raw:
            raise ValueError("it is JSON but not a Jupyter notebook (no 'cells' list or 'nbformat' version)")
        sub = nbformat.reads(json.dumps(raw), as_version=4)
    except Exception as err:  # noqa: BLE001 - anything unreadable is "not a notebook"
        report.status, report.message = "not_a_notebook", f"cannot read it: {_first_line(str(err)) or type(err).__name__}"
        return report
    if not sub.cells:
        report.status, report.message = "empty", "the notebook has no cells"
        return report
    src_path, status, why = find_source(sub, Path(path), source, source_dir)
    if src_path is None:
        report.status, report.message = status, why
        return report
    report.source = str(src_path)
    src = nbformat.read(src_path, as_version=4)  # the key: read here, in the grader's process only
    prepared, report.warnings = prepare(sub, src)
    report.flags = static_flags(sub, src) + [w for w in report.warnings if "moved" in w or "not the cells handed out" in w]
    aliases = helper_aliases(src)
    start = time.perf_counter()
    executed, notes, error, info = run_submission(prepared, text, limits, fast, probe_expression(list(aliases)))
    report.seconds = round(time.perf_counter() - start, 1)
    report.warnings += notes
    if info.cut:
        report.warnings.append(f"output cut to {limits.output_bytes} bytes in cells {[i + 1 for i in info.cut]}")
    if info.skipped:
        report.warnings.append(f"the total time budget of {limits.budget_s:g} s ran out: {len(info.skipped)} cells not run")
    if error:
        report.status, report.message = "execution_error", f"execution stopped: {error}"
    report.executed = executed
    report.exercises = score(executed, src, info, aliases)
    tampered = [e.grade_id for e in report.exercises if e.tampered]
    if tampered:
        first = next(e.message for e in report.exercises if e.tampered)
        report.flags.append(f"kernel tampering before the checks {tampered} (they score 0): {first}")
    return report


def format_report(report: Report) -> str:
    """A fixed-width score table for people."""
    lines = [f"{report.submission}: {report.status}" + (f" ({report.message})" if report.message else "")]
    if report.source:
        lines[0] += f"\n  graded against {report.source} in {report.mode} mode, {report.seconds:.0f} s"
    rows = [("exercise", "points", "result", "message")]
    rows += [(f"{e.title} [{e.grade_id}]", f"{_num(e.score)}/{_num(e.points)}", e.status, e.message) for e in report.exercises]
    if report.exercises:
        width = [max(len(r[i]) for r in rows) for i in range(3)]
        lines += [f"  {a:<{width[0]}}  {b:>{width[1]}}  {c:<{width[2]}}  {d}".rstrip() for a, b, c, d in rows]
        total = f"  total: {_num(report.score)}/{_num(report.max_score)} points graded automatically"
        total += f" (+{_num(report.optional_score)} optional)" if report.optional_score else ""
        lines.append(total + (f", {_num(report.manual_points)} more to grade by hand" if report.manual_points else ""))
    lines += [f"  FLAG: {f}" for f in report.flags]
    lines += [f"  warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from .gradebook import default_jobs, grade_class, write_feedback, write_gradebook
    from .sandbox import INSTALL_HINT, isolation_problem

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", help="submissions to grade (or instructor notebooks): files, folders "
                        "(every notebook in them and, when grading, in their subfolders) or glob patterns")
    parser.add_argument("--make-student", action="store_true", help="write student versions into --out instead")
    parser.add_argument("--exercise-table", action="store_true", help="print the markdown table of exercises instead")
    parser.add_argument("--out", type=Path, default=Path("build/student"), help="where --make-student writes")
    parser.add_argument("--source", type=Path, help="the instructor notebook (default: found in --source-dir)")
    parser.add_argument("--source-dir", type=Path, default=NOTEBOOK_DIR, help="where instructor notebooks are")
    parser.add_argument("--timeout", type=int, help="seconds allowed per cell (default 60 fast, 1800 full)")
    parser.add_argument("--budget", type=float, help="seconds allowed per submission in all (default 300 fast, 7200 full)")
    parser.add_argument("--memory", type=float, default=6, help="GiB of address space per kernel (default 6)")
    parser.add_argument("--max-output", type=int, default=2_000_000, help="bytes of output kept per cell (figures count)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="run in full mode (default: fast mode unless VAE_FAST=0)")
    mode.add_argument("--fast", action="store_true", help="run in fast mode (the default)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of reports instead of tables")
    parser.add_argument("--gradebook", type=Path, help="write a CSV gradebook, one row per submission")
    parser.add_argument("--feedback", type=Path, help="write one HTML feedback page per submission into this folder")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="submissions graded at once (default: the cores)")
    parser.add_argument("--no-isolation", action="store_true",
                        help="run submissions without a sandbox, with your own rights (only where bubblewrap cannot run)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.notebooks = expand_notebooks(args.notebooks, recursive=not (args.make_student or args.exercise_table))
    if not args.notebooks:
        parser.error("no notebooks found")
    if args.make_student or args.exercise_table:
        missing = [str(p) for p in args.notebooks if not p.is_file()]
        if missing:
            parser.error(f"no such notebooks: {missing}")
        if args.exercise_table:
            print(exercise_table(args.notebooks))
        else:
            for dest in make_student(args.notebooks, args.out):
                print(f"wrote {dest}")
        return 0
    if args.source is not None and not args.source.is_file():
        parser.error(f"--source {args.source} is not a file")
    if args.jobs < 1 or args.memory <= 0 or args.max_output < 1 or (args.budget is not None and args.budget <= 0):
        parser.error("--jobs, --memory, --max-output and --budget must be positive")
    problem = None if args.no_isolation else isolation_problem()
    if problem:
        print(f"error: cannot isolate the submissions: {problem}.\nSubmissions run student code: install "
              f"bubblewrap ({INSTALL_HINT}) or, only on a throw-away machine, pass --no-isolation.", file=sys.stderr)
        return 2
    fast = args.fast or (not args.full and (is_fast() if os.environ.get("VAE_FAST", "").strip() else True))
    limits = Limits(cell_timeout=args.timeout or default_timeouts(fast)[0], budget_s=args.budget or default_timeouts(fast)[1],
                    memory_bytes=int(args.memory * (1 << 30)), output_bytes=args.max_output, isolate=not args.no_isolation,
                    threads=max(1, default_jobs() // min(args.jobs, len(args.notebooks))))
    def write_so_far(so_far: list[Report]) -> None:  # the gradebook grows with every result: a crash loses none
        if args.gradebook:
            write_gradebook(so_far, args.gradebook)

    reports = grade_class(args.notebooks, min(args.jobs, len(args.notebooks)), progress=not args.quiet and not args.json,
                          on_result=write_so_far, source=args.source, source_dir=args.source_dir, fast=fast, limits=limits)
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=1, ensure_ascii=False))
    else:
        for report in reports:
            print(format_report(report), flush=True)
    if args.gradebook:
        print(f"wrote {write_gradebook(reports, args.gradebook)}", file=sys.stderr)
    if args.feedback:
        print(f"wrote {len(write_feedback(reports, args.feedback))} feedback pages to {args.feedback}/", file=sys.stderr)
    return 0 if all(r.status == "graded" for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
