"""vae_helpers.grade: exercise metadata of every notebook, and grading of good and bad submissions.

Notebooks are expensive to execute, so the full/zero/partial trio runs on the fixture notebook and
on the smallest real notebook with exercises only (the zero case for every notebook is in
test_student_versions.py); bad submissions are graded against tiny notebooks.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nbformat
import pytest
from nbgrader.nbgraderformat import MetadataValidator

from vae_helpers import grade

REPO = Path(__file__).resolve().parent.parent
# Grading runs submissions in bubblewrap; without it the grader refuses (tests/test_grade_isolation.py checks that),
# so these tests skip where it cannot run (the ``sandbox`` mark, tests/conftest.py).
sandboxed = pytest.mark.sandbox
FIXTURES = REPO / "tests" / "fixtures"
FIXTURE = FIXTURES / "fixture_exercises.ipynb"
REAL = [p for p in sorted((REPO / "notebooks").glob("*.ipynb")) if grade.exercises(nbformat.read(p, as_version=4))]
ALL = REAL + [FIXTURE, FIXTURES / "fixture_other.ipynb"]
# The smallest real notebook (fewest code cells) also gets the full and partial grading.
TRIO = [FIXTURE] + sorted(REAL, key=lambda p: sum(c.cell_type == "code" for c in nbformat.read(p, as_version=4).cells))[:1]


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def by_id(report: grade.Report) -> dict[str, grade.ExerciseResult]:
    return {e.grade_id: e for e in report.exercises}


# ----------------------------------------------------------------------------- metadata of the notebooks


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_nbgrader_metadata_is_valid_and_complete(path: Path) -> None:
    nb = read(path)
    MetadataValidator().validate_nb(nb)  # nbgrader's own schema check (version 3)
    ids = grade.grade_ids(nb)
    assert len(ids) == len(set(ids)), f"duplicated grade_ids in {path.name}: {ids}"
    for cell in nb.cells:
        meta = grade.nbgrader_meta(cell)
        if meta.get("grade"):
            assert isinstance(meta.get("points"), (int, float)) and meta["points"] > 0, f"{meta['grade_id']} has no points"
    assert any(grade.is_check_cell(c) for c in nb.cells), f"{path.name} has no check cell"


def test_grade_ids_are_unique_across_the_series() -> None:
    ids = [gid for path in ALL for gid in grade.grade_ids(read(path))]
    assert sorted(ids) == sorted(set(ids)), f"grade_ids used twice: {sorted({i for i in ids if ids.count(i) > 1})}"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_points_table_matches_cell_metadata(path: Path) -> None:
    nb = read(path)
    table = grade.points_table_call(nb)
    assert table is not None, f"{path.name} never calls checks.points_table({{...}})"
    metadata = {grade.nbgrader_meta(c)["grade_id"]: grade.nbgrader_meta(c)["points"]
                for c in nb.cells if grade.nbgrader_meta(c).get("grade")}
    assert {gid: points for gid, (_, points) in table.items()} == metadata
    assert all(isinstance(title, str) and title.strip() for title, _ in table.values())


def test_exercise_table_lists_every_graded_cell() -> None:
    table = grade.exercise_table([FIXTURE, REPO / "notebooks" / "00_mnist_tour.ipynb"])
    assert "| fixture_exercises.ipynb | KL divergence | `fx-kl-check` | automatically | 2 |" in table
    assert "| fixture_exercises.ipynb | written: the prior | `fx-prior` | by hand | 1 |" in table
    assert "00_mnist_tour" not in table  # no exercises, no rows
    assert table.splitlines()[-1] == "| **series** | **total** | | | **4** |"


# ----------------------------------------------------------------------------- full, partial (and zero) marks


def splice_first_solution(instructor: nbformat.NotebookNode, student: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, str]:
    """The student version with the solution cells of the first exercise put back; returns it and that check's id."""
    first = next(i for i, c in enumerate(instructor.cells) if grade.is_check_cell(c))
    solved = {grade.nbgrader_meta(c)["grade_id"]: c.source for c in instructor.cells[:first]
              if grade.nbgrader_meta(c).get("solution")}
    assert solved, "the first check cell has no solution cell before it"
    nb = copy.deepcopy(student)
    for cell in nb.cells:
        gid = grade.nbgrader_meta(cell).get("grade_id")
        if gid in solved:
            cell.source = solved[gid]
    return nb, grade.nbgrader_meta(instructor.cells[first])["grade_id"]


@pytest.fixture(scope="module", params=TRIO, ids=lambda p: p.name)
def solution_report(request: pytest.FixtureRequest) -> grade.Report:
    return grade.grade_submission(request.param, source=request.param)


@sandboxed
@pytest.mark.slow
def test_solution_version_gets_full_marks(solution_report: grade.Report) -> None:
    assert solution_report.status == "graded", solution_report.message
    assert solution_report.max_score > 0
    assert solution_report.score == solution_report.max_score, grade.format_report(solution_report)
    assert all(e.status in ("passed", "needs manual grading") for e in solution_report.exercises)
    assert not solution_report.warnings


@sandboxed
@pytest.mark.slow
@pytest.mark.parametrize("path", TRIO, ids=lambda p: p.name)
def test_one_solved_exercise_gets_its_points_only(path: Path, tmp_path: Path) -> None:
    instructor = read(path)
    submission, solved = splice_first_solution(instructor, grade.student_version(instructor))
    nbformat.write(submission, tmp_path / path.name)
    report = grade.grade_submission(tmp_path / path.name, source=path)
    results = by_id(report)
    assert report.status == "graded", report.message
    assert results[solved].status == "passed", grade.format_report(report)
    assert report.score == results[solved].points < report.max_score
    assert all(e.status == "failed" for gid, e in results.items() if gid != solved and e.status != "needs manual grading")


@sandboxed
@pytest.mark.slow
def test_score_table_and_json_report(solution_report: grade.Report) -> None:
    text = grade.format_report(solution_report)
    assert "passed" in text
    if solution_report.manual_points:
        assert "needs manual grading" in text and "more to grade by hand" in text
    assert f"total: {solution_report.score:g}/{solution_report.max_score:g}" in text
    report = json.loads(json.dumps(solution_report.to_dict()))
    assert {"submission", "source", "status", "score", "max_score", "manual_points", "exercises", "warnings"} <= set(report)
    assert {"grade_id", "title", "points", "score", "status", "message"} <= set(report["exercises"][0])


# ----------------------------------------------------------------------------- what the grader does to a submission


@pytest.fixture(scope="module")
def student_fixture() -> nbformat.NotebookNode:
    return grade.student_version(read(FIXTURE))


def cell_with(nb: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if grade.nbgrader_meta(c).get("grade_id") == grade_id)


def test_prepare_restores_instructor_check_cells_and_clears_outputs(student_fixture: nbformat.NotebookNode) -> None:
    sub = copy.deepcopy(student_fixture)
    cell_with(sub, "fx-sq-check").source = "pass  # the learner emptied the check"
    cell_with(sub, "fx-sq").outputs = [nbformat.v4.new_output("stream", text="stale output")]
    cell_with(sub, "fx-sq").metadata["execution"] = {"shell.execute_reply": "yesterday"}
    prepared, warnings = grade.prepare(sub, read(FIXTURE))
    assert cell_with(prepared, "fx-sq-check").source == cell_with(read(FIXTURE), "fx-sq-check").source
    assert "BEGIN HIDDEN TESTS" in cell_with(prepared, "fx-kl-check").source  # hidden tests are back
    assert cell_with(prepared, "fx-sq").outputs == [] and "execution" not in cell_with(prepared, "fx-sq").metadata
    assert warnings == []


def test_prepare_warns_about_moved_duplicated_and_deleted_cells(student_fixture: nbformat.NotebookNode) -> None:
    sub = copy.deepcopy(student_fixture)
    check = cell_with(sub, "fx-kl-check")
    sub.cells.remove(check)
    sub.cells.insert(len(sub.cells) - 1, check)  # after the reference implementation
    _, warnings = grade.prepare(sub, read(FIXTURE))
    assert any("moved" in w for w in warnings)
    sub = copy.deepcopy(student_fixture)
    cell_with(sub, "fx-sq-check").id = "a-new-cell"  # deleted and re-made by the learner
    _, warnings = grade.prepare(sub, read(FIXTURE))
    assert any("check cells ['fx-sq-check'] are not the cells handed out" in w for w in warnings)
    sub = copy.deepcopy(student_fixture)
    sub.cells.insert(4, copy.deepcopy(cell_with(sub, "fx-kl")))
    sub.cells.remove(cell_with(sub, "fx-sq"))
    _, warnings = grade.prepare(sub, read(FIXTURE))
    assert any("duplicated exercise cells ['fx-kl']" in w for w in warnings)
    assert any("lacks the solution cells ['fx-sq']" in w for w in warnings)


@sandboxed
@pytest.mark.slow
def test_hidden_tests_count_and_edited_or_deleted_cells_do_not_help(student_fixture: nbformat.NotebookNode, tmp_path: Path) -> None:
    sub = copy.deepcopy(student_fixture)
    # Right on the visible test's shape only: the hidden test must catch it.
    cell_with(sub, "fx-kl").source = (
        "from vae_helpers.losses import gaussian_kl as _reference\n\n"
        "def gaussian_kl(mu, logvar):\n    return _reference(mu, logvar) if mu.shape == (4, 3) else mu.sum(-1) + 1\n")
    cell_with(sub, "fx-sq-check").source = "print('all good')"  # an edited check cell changes nothing
    sub.cells.remove(cell_with(sub, "fx-prior"))
    nbformat.write(sub, tmp_path / "submission.ipynb")
    report = grade.grade_submission(tmp_path / "submission.ipynb", source=FIXTURE)
    results = by_id(report)
    assert report.status == "graded" and report.score == 0, grade.format_report(report)
    assert "must be 0" in results["fx-kl-check"].message  # the hidden test's assertion
    assert results["fx-sq-check"].message.startswith("CheckFailed: squared_error is not implemented")
    assert results["fx-prior"].status == "missing"


# ----------------------------------------------------------------------------- bad submissions


def test_not_a_notebook(tmp_path: Path) -> None:
    (tmp_path / "a.ipynb").write_text("print('hello')")
    (tmp_path / "b.ipynb").write_text('{"answer": 42}')
    (tmp_path / "c.ipynb").write_bytes(b"\xff\xfe\x00")
    for name in "abc":
        report = grade.grade_submission(tmp_path / f"{name}.ipynb", source=FIXTURE)
        assert report.status == "not_a_notebook" and report.message.startswith("cannot read it"), report
        assert report.score == 0 and report.exercises == []
    assert grade.grade_submission(tmp_path / "missing.ipynb", source=FIXTURE).status == "not_a_notebook"


def test_empty_notebook(tmp_path: Path) -> None:
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "empty.ipynb")
    assert grade.grade_submission(tmp_path / "empty.ipynb", source=FIXTURE).status == "empty"


def test_submission_made_from_another_notebook(tmp_path: Path) -> None:
    other = grade.student_version(read(FIXTURES / "fixture_other.ipynb"))
    nbformat.write(other, tmp_path / FIXTURE.name)  # right file name, wrong content
    report = grade.grade_submission(tmp_path / FIXTURE.name, source_dir=FIXTURES)
    assert report.status == "wrong_notebook"
    assert "made from fixture_other.ipynb, not from fixture_exercises.ipynb" in report.message
    report = grade.grade_submission(tmp_path / FIXTURE.name, source=FIXTURE)
    assert report.status == "wrong_notebook"
    tour = REPO / "notebooks" / "00_mnist_tour.ipynb"
    nbformat.write(read(tour), tmp_path / "tour.ipynb")
    report = grade.grade_submission(tmp_path / "tour.ipynb", source_dir=FIXTURES)
    assert report.status == "unknown_notebook" and "--source" in report.message
    report = grade.grade_submission(tmp_path / "tour.ipynb", source=tour)
    assert report.status == "wrong_notebook" and "has no exercises" in report.message


def test_source_is_found_by_name_or_by_exercise_ids(tmp_path: Path, student_fixture: nbformat.NotebookNode) -> None:
    nbformat.write(student_fixture, tmp_path / "alice_fixture.ipynb")
    path, status, _ = grade.find_source(student_fixture, tmp_path / "alice_fixture.ipynb", None, FIXTURES)
    assert path == FIXTURE and status == ""
    path, _, _ = grade.find_source(student_fixture, tmp_path / FIXTURE.name, None, FIXTURES)
    assert path == FIXTURE


LOOP_SOURCE = [  # a source notebook that imports nothing, so its kernel starts in a second
    ("def answer() -> int:\n    ### BEGIN SOLUTION\n    return 42\n    ### END SOLUTION",
     {"nbgrader": {"solution": True, "grade": False, "locked": False, "grade_id": "loop-answer", "schema_version": 3, "task": False}}),
    ("assert answer() == 42",
     {"nbgrader": {"grade": True, "solution": False, "locked": True, "points": 1, "grade_id": "loop-answer-check", "schema_version": 3, "task": False}}),
    ("print('after the exercise')", {}),
    ("def later() -> int:\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION",
     {"nbgrader": {"solution": True, "grade": False, "locked": False, "grade_id": "loop-later", "schema_version": 3, "task": False}}),
    ("assert later() == 1",
     {"nbgrader": {"grade": True, "solution": False, "locked": True, "points": 2, "grade_id": "loop-later-check", "schema_version": 3, "task": False}}),
]


@sandboxed
@pytest.mark.slow
def test_a_submission_that_loops_forever_is_stopped(tmp_path: Path) -> None:
    source = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src, metadata=meta) for src, meta in LOOP_SOURCE])
    nbformat.write(source, tmp_path / "source.ipynb")
    sub = copy.deepcopy(source)
    sub.cells[0].source = "def answer():\n    while True:\n        pass"
    nbformat.write(sub, tmp_path / "loops.ipynb")
    report = grade.grade_submission(tmp_path / "loops.ipynb", source=tmp_path / "source.ipynb", timeout=3)
    results = by_id(report)
    assert report.status == "graded", report.message
    assert results["loop-answer-check"].status == "failed"
    assert "stopped this cell after 3 s" in results["loop-answer-check"].message
    assert results["loop-later-check"].status == "passed"  # the rest of the notebook still counts
    assert report.score == 2 and any("did not finish" in w for w in report.warnings)


@sandboxed
def test_command_line_json_for_bad_submissions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.ipynb").write_text("not json")
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "empty.ipynb")
    code = grade.main([str(tmp_path / "junk.ipynb"), str(tmp_path / "empty.ipynb"), "--json", "--source", str(FIXTURE)])
    reports = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [r["status"] for r in reports] == ["not_a_notebook", "empty"]
    assert reports[0]["score"] == 0 and reports[0]["exercises"] == []
    code = grade.main([str(tmp_path / "junk.ipynb"), "--source", str(FIXTURE)])
    assert code == 1 and "not_a_notebook (cannot read it" in capsys.readouterr().out


def test_the_exercise_table_keeps_optional_points_out_of_the_maximum() -> None:
    rows = grade.exercise_table([REPO / "notebooks" / "02_vae.ipynb"]).splitlines()
    total = next(i for i, row in enumerate(rows) if "**total** (the maximum)" in row)
    optional = [i for i, row in enumerate(rows) if "optional, on top" in row]
    assert optional and min(optional) > total
    required = [row for row in rows[2:total]]
    assert rows[total].endswith(f"**{sum(int(r.rsplit('|', 2)[1]) for r in required)}** |")
    assert rows[-1] == rows[total].replace("02_vae.ipynb", "**series**").replace(" (the maximum)", "")
