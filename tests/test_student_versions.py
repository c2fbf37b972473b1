"""Student versions (nbgrader's preprocessors): nothing of the solutions leaks, and executed they fail
exactly in their exercise cells, so the rest of each notebook runs on the reference implementation.

Each notebook's student version is executed once (fast mode), through ``vae_helpers.grade`` so the
same run also shows that the untouched student version scores zero. Where bubblewrap cannot run, the
grader runs them without its sandbox: these tests are about the notebooks, the sandbox has its own
(tests/test_grade_isolation.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

from vae_helpers import grade, sandbox

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "fixture_exercises.ipynb"
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
WITH_EXERCISES = [p for p in NOTEBOOKS if grade.exercises(nbformat.read(p, as_version=4))] + [FIXTURE]
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "BEGIN MARK SCHEME")


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.name)
def test_student_version_hides_solutions_and_keeps_every_cell(path: Path) -> None:
    instructor = read(path)
    student = grade.student_version(instructor)
    assert [c.get("id") for c in student.cells] == [c.get("id") for c in instructor.cells]
    assert grade.grade_ids(student) == grade.grade_ids(instructor)
    for before, after in zip(instructor.cells, student.cells):
        assert not any(marker in after.source for marker in MARKERS), f"a marker leaked:\n{after.source}"
        meta = grade.nbgrader_meta(before)
        if after.cell_type == "code":
            assert after.outputs == [] and after.execution_count is None
            tree = ast.parse(TransformerManager().transform_cell(after.source))  # still valid Python
            if meta.get("solution"):
                lines = [line.strip() for line in after.source.splitlines()]
                assert "# YOUR CODE HERE" in lines and "raise NotImplementedError()" in lines, "no stub"
                assert any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in tree.body), \
                    "a solution cell must define a function (or class) around its solution region"
        if grade.is_check_cell(before):
            assert after.metadata["editable"] is False and after.metadata["deletable"] is False
        elif not meta.get("solution"):
            assert after.source == before.source, "an ordinary cell was changed"


def test_make_student_command_writes_every_notebook(tmp_path: Path) -> None:
    paths = [FIXTURE, REPO / "notebooks" / "00_mnist_tour.ipynb"]
    assert grade.main(["--make-student", *map(str, paths), "--out", str(tmp_path / "student")]) == 0
    for path in paths:
        written = read(tmp_path / "student" / path.name)
        assert len(written.cells) == len(read(path).cells)


@pytest.fixture(scope="module", params=WITH_EXERCISES, ids=lambda p: p.name)
def graded_student(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, grade.Report]:
    """The untouched student version of a notebook, graded (executed once, fast mode, errors allowed)."""
    path = request.param
    dest = tmp_path_factory.mktemp("student") / path.name
    nbformat.write(grade.student_version(read(path)), dest)
    limits = grade.Limits(isolate=sandbox.isolation_problem() is None)
    return path, grade.grade_submission(dest, source=path, limits=limits)


@pytest.mark.slow
def test_student_version_fails_exactly_in_its_exercise_cells(graded_student: tuple[Path, grade.Report]) -> None:
    path, report = graded_student
    assert report.status == "graded", report.message
    executed = report.executed
    for index, cell in enumerate(executed.cells):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        meta = grade.nbgrader_meta(cell)
        label = f"{path.name} cell {index + 1} ({meta.get('grade_id', 'ordinary')})"
        if grade.is_check_cell(cell):
            assert errors, f"{label}: a check cell passed without a solution"
            assert errors[0]["ename"] in ("CheckFailed", "AssertionError", "NotImplementedError"), \
                f"{label}: failed for another reason: {errors[0]['ename']}: {errors[0]['evalue']}"
        elif cell.cell_type == "code" and not meta.get("solution"):
            assert not errors, (f"{label} failed in the student version, so it depends on a learner's answer: "
                                f"{errors[0]['ename']}: {errors[0]['evalue']}")
            if cell.source.strip() and "skip-execution" not in cell.metadata.get("tags", []):
                assert "shell.execute_reply" in cell.metadata.get("execution", {}), f"{label} never ran"


@pytest.mark.slow
def test_untouched_student_version_scores_zero(graded_student: tuple[Path, grade.Report]) -> None:
    _, report = graded_student
    assert report.score == 0 and report.max_score > 0, grade.format_report(report)
    for result in report.exercises:
        assert result.status in ("failed", "needs manual grading"), result
        assert result.status == "failed" or result.message == "not answered", result
    assert not report.warnings


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.name)
def test_exercise_cells_let_run_all_carry_on(path: Path) -> None:
    """Solution and check code cells carry ``raises-exception`` (JupyterLab's Run All then goes on past
    them) and nbgrader's preprocessors keep the tag in the student version; no other cell has it."""
    for version in (read(path), grade.student_version(read(path))):
        for cell in version.cells:
            meta = grade.nbgrader_meta(cell)
            exercise = cell.cell_type == "code" and bool(meta.get("solution") or meta.get("grade"))
            tagged = "raises-exception" in cell.metadata.get("tags", [])
            assert tagged == exercise, f"cell {cell.get('id')}: exercise={exercise} but tagged={tagged}"
