"""The nbgrader route, end to end: a temporary course made from notebook 01 with course/nbgrader_config.py.

generate_assignment, autograde (a real sqlite gradebook) for three students (full, half, tampered),
generate_feedback and export, in fast mode; the points per student are asserted from the exported CSV.
"""

from __future__ import annotations

import copy
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from vae_helpers import grade

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "01_autoencoder.ipynb"
ASSIGNMENT = "vae01"


def nbgrader(course: Path, *args: str) -> str:
    """Run an nbgrader command in the course folder; fail the test with its output when it fails."""
    # nbgrader runs the `alembic` command of its environment: its bin folder must be on PATH
    env = {**os.environ, "VAE_FAST": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def solutions(instructor: nbformat.NotebookNode) -> dict[str, str]:
    """The instructor's solution code cells by grade_id."""
    return {grade.nbgrader_meta(c)["grade_id"]: c.source for c in instructor.cells
            if grade.nbgrader_meta(c).get("solution") and c.cell_type == "code"}


def solve(released: nbformat.NotebookNode, answers: dict[str, str]) -> nbformat.NotebookNode:
    nb = copy.deepcopy(released)
    for cell in nb.cells:
        gid = grade.nbgrader_meta(cell).get("grade_id")
        if gid in answers:
            cell.source = answers[gid]
    return nb


@pytest.mark.slow
def test_nbgrader_course_full_half_and_tampered(tmp_path: Path) -> None:
    course = tmp_path / "course"
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(REPO / "course" / "nbgrader_config.py", course / "nbgrader_config.py")
    shutil.copy(NOTEBOOK, course / "source" / ASSIGNMENT / NOTEBOOK.name)
    nbgrader(course, "db", "assignment", "add", ASSIGNMENT)
    for student in ("full", "half", "tampered"):
        nbgrader(course, "db", "student", "add", student)
    nbgrader(course, "generate_assignment", ASSIGNMENT)
    released = nbformat.read(course / "release" / ASSIGNMENT / NOTEBOOK.name, as_version=4)
    instructor = nbformat.read(NOTEBOOK, as_version=4)
    answers = solutions(instructor)
    checks = {grade.nbgrader_meta(c)["grade_id"]: grade.nbgrader_meta(c)["points"] for c in instructor.cells
              if grade.is_check_cell(c)}
    order = [gid for gid in grade.grade_ids(instructor) if gid in answers]
    half = order[: len(order) // 2]
    tampered = copy.deepcopy(released)
    for i, cell in enumerate(tampered.cells):
        if grade.is_check_cell(cell):
            cell.source = "pass  # emptied by the student"
    first_solution = next(c for c in tampered.cells if grade.nbgrader_meta(c).get("solution"))
    first_solution.source += "\nget_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)"
    deleted = next(c for c in tampered.cells if grade.is_check_cell(c))
    tampered.cells.remove(deleted)  # add_missing_cells puts it back, failing
    submissions = {"full": solve(released, answers), "half": solve(released, {g: answers[g] for g in half}),
                   "tampered": tampered}
    for student, nb in submissions.items():
        dest = course / "submitted" / student / ASSIGNMENT
        dest.mkdir(parents=True)
        nbformat.write(nb, dest / NOTEBOOK.name)
        (dest / "timestamp.txt").write_text("2026-01-01 12:00:00.000000 UTC")

    log = nbgrader(course, "autograde", ASSIGNMENT)
    assert "Timeout" not in log and "KeyboardInterrupt" not in log
    nbgrader(course, "generate_feedback", ASSIGNMENT)
    nbgrader(course, "export")

    with open(course / "grades.csv", newline="") as f:
        rows = {row["student_id"]: row for row in csv.DictReader(f)}
    check_of = {gid: f"{gid}-check" for gid in answers}
    expected_half = sum(checks[check_of[g]] for g in half if check_of[g] in checks)
    manual = sum(grade.nbgrader_meta(c)["points"] for c in instructor.cells if grade.is_manual_cell(c))
    assert float(rows["full"]["raw_score"]) == sum(checks.values()), rows["full"]
    assert float(rows["half"]["raw_score"]) == expected_half > 0, rows["half"]
    assert float(rows["tampered"]["raw_score"]) == 0, rows["tampered"]
    assert float(rows["full"]["max_score"]) == sum(checks.values()) + manual

    for student in submissions:
        page = (course / "feedback" / student / ASSIGNMENT / NOTEBOOK.name.replace(".ipynb", ".html")).read_text()
        assert "BEGIN HIDDEN TESTS" not in page and "twice = squared_error_loss" not in page, student
    assert "emptied by the student" not in (course / "autograded" / "tampered" / ASSIGNMENT / NOTEBOOK.name).read_text()
