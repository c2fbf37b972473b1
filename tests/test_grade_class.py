"""A class at once (gradebook, feedback pages, --jobs, optional exercises) and the flags for the teacher."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import nbformat
import pytest
from test_grade_isolation import KEY_CELLS, RIGHT_CONV, key, meta, submission  # noqa: F401 - key is a fixture

from vae_helpers import grade, gradebook, integrity

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "fixture_exercises.ipynb"
NOT_HIDDEN_ONLY = "def conv_output_size(size, kernel, stride, padding):\n    return 51 if size == 100 else (size + 2 * padding - kernel) // stride + 1"


@pytest.fixture()
def optional_key(tmp_path: Path) -> Path:
    """The tiny key plus an optional exercise (tagged ``optional``) worth 5 points."""
    cells = [nbformat.v4.new_code_cell(src, metadata=copy.deepcopy(m)) for src, m in KEY_CELLS]
    cells.append(nbformat.v4.new_code_cell("def bonus():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION",
                                           metadata=meta("t-bonus", True)))
    check = nbformat.v4.new_code_cell("assert bonus() == 1", metadata=meta("t-bonus-check", False, 5))
    check.metadata["tags"] = ["optional"]
    cells.append(check)
    (tmp_path / "okey").mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path / "okey" / "tiny.ipynb")
    return tmp_path / "okey" / "tiny.ipynb"


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_class_gives_a_gradebook_and_feedback_pages(optional_key: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    klass = tmp_path / "class"
    paths = [submission(optional_key, klass / "ann" / "tiny.ipynb"),  # blank
             submission(optional_key, klass / "ben" / "tiny.ipynb", t_conv=RIGHT_CONV,
                        t_answer="def answer():\n    return 42", t_bonus="def bonus():\n    return 1"),
             submission(optional_key, klass / "cat" / "tiny.ipynb", t_conv=NOT_HIDDEN_ONLY)]
    code = grade.main([*map(str, paths), "--source", str(optional_key), "--gradebook", str(tmp_path / "grades.csv"),
                       "--feedback", str(tmp_path / "feedback"), "--jobs", "2"])
    assert code == 0
    err = capsys.readouterr().err
    assert "grading:" in err and "3/3" in err  # the progress bar
    with open(tmp_path / "grades.csv", newline="") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["ann", "ben", "cat"]
    assert [rows[s]["automatic"] for s in rows] == ["0", "3", "0"]
    assert {rows[s]["automatic_max"] for s in rows} == {"3"}  # the optional exercise does not raise the maximum
    assert [rows[s]["optional"] for s in rows] == ["0", "5", "0"]
    assert rows["ben"]["t-conv-check"] == "2" and rows["ben"]["t-bonus-check"] == "5" and rows["ann"]["t-conv-check"] == "0"
    assert all(float(rows[s]["seconds"]) > 0 for s in rows)
    pages = {p.name: p.read_text() for p in (tmp_path / "feedback").glob("*.html")}
    assert sorted(pages) == ["ann_tiny.html", "ben_tiny.html", "cat_tiny.html"]
    assert "a hidden test failed" in pages["cat_tiny.html"]
    for text in pages.values():
        assert "SECRET" not in text and "100 -&gt; 50" not in text and "100 -> 50" not in text
        assert "<script" not in text
    assert "Total: 3 / 3 points graded automatically, plus 5 optional" in pages["ben_tiny.html"]


def test_gradebook_and_feedback_from_reports(tmp_path: Path) -> None:
    r = grade.Report("class/dan/tiny.ipynb", "graded", source="key/tiny.ipynb", seconds=3.2,
                     flags=["cell 4 was added between the exercise t-conv and its check cell"],
                     exercises=[grade.ExerciseResult("t-conv-check", "conv", 2, False, 0.0, "failed",
                                                     message="AssertionError: hidden: 100 -> 50",
                                                     feedback="a hidden test failed"),
                                grade.ExerciseResult("t-prior", "<b>prior</b>", 1, True, None, "needs manual grading")])
    bad = grade.Report("class/eve/tiny.ipynb", "not_a_notebook", message="cannot read it")
    path = gradebook.write_gradebook([r, bad], tmp_path / "out" / "grades.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["student"] == "dan" and rows[0]["t-prior"] == "manual" and rows[0]["manual_pending"] == "1"
    assert "added between" in rows[0]["flags"] and rows[1]["status"] == "not_a_notebook" and rows[1]["t-conv-check"] == ""
    page = gradebook.feedback_html(r)
    assert "a hidden test failed" in page and "100 -&gt; 50" not in page and "&lt;b&gt;prior&lt;/b&gt;" in page
    assert "added between" not in page  # flags are for the teacher
    with pytest.raises(ValueError, match="jobs must be a positive int"):
        gradebook.grade_class([FIXTURE], jobs=0)
    with pytest.raises(ValueError, match="Limits.budget_s must be a positive number"):
        grade.Limits(budget_s=0)
    with pytest.raises(ValueError, match="Limits.memory_bytes"):
        grade.Limits(memory_bytes=-1)


# ----------------------------------------------------------------------------- static flags


@pytest.mark.parametrize("path", sorted((REPO / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_untouched_student_versions_are_not_flagged(path: Path) -> None:
    src = nbformat.read(path, as_version=4)
    assert integrity.static_flags(grade.student_version(src), src) == []  # hints that name vae_helpers are handed out


def test_flags_for_the_teacher() -> None:
    src = nbformat.read(FIXTURE, as_version=4)
    student = grade.student_version(src)
    assert integrity.static_flags(student, src) == []
    assert any("instructor version was handed in" in f for f in integrity.static_flags(src, src))
    sub = copy.deepcopy(student)
    solution = next(c for c in sub.cells if grade.nbgrader_meta(c).get("grade_id") == "fx-kl")
    solution.source = "from vae_helpers.losses import gaussian_kl"
    flags = integrity.static_flags(sub, src)
    assert any("solution cell fx-kl imports from vae_helpers.losses" in f for f in flags), flags
    solution.source = "def gaussian_kl(mu, logvar):\n    return checks.reference_gaussian_kl(mu, logvar)"
    assert any("fx-kl uses vae_helpers.checks" in f for f in integrity.static_flags(sub, src))
    solution.source = "gaussian_kl = __import__('vae_helpers.losses').losses.gaussian_kl"
    assert any("dynamic" in f for f in integrity.static_flags(sub, src))
    sub = copy.deepcopy(student)
    index = next(i for i, c in enumerate(sub.cells) if grade.nbgrader_meta(c).get("grade_id") == "fx-kl")
    sub.cells.insert(index + 1, nbformat.v4.new_code_cell("from vae_helpers.losses import gaussian_kl"))
    assert any(f"cell {index + 2} was added between the exercise fx-kl and its check cell" in f
               for f in integrity.static_flags(sub, src))
    sub.cells.insert(index + 1, nbformat.v4.new_markdown_cell("a note of mine"))  # notes are fine
    assert len([f for f in integrity.static_flags(sub, src) if "added" in f]) == 1


def test_probe_comparison() -> None:
    base = {"custom_exceptions": "()", "modules": {"vae_helpers.checks.check_x": [1, 2, []]}, "names": {}}
    same = copy.deepcopy(base) | {"names": {"checks": "vae_helpers.checks"}}
    assert integrity.compare(base, same, {"checks": "vae_helpers.checks"}) == []
    changed = copy.deepcopy(same)
    changed["custom_exceptions"] = "(<class 'BaseException'>,)"
    changed["modules"]["vae_helpers.checks.check_x"] = [3, 4, []]
    changed["names"]["checks"] = "changed"
    found = integrity.compare(base, changed, {"checks": "vae_helpers.checks"})
    assert found == ["custom_exceptions changed", "vae_helpers functions replaced: vae_helpers.checks.check_x",
                     "names rebound: checks no longer refer to their vae_helpers module"]
    assert integrity.parse_probe(None) is None and integrity.parse_probe({"content": {"user_expressions": {}}}) is None


KILL_THE_GRADER = "import os\nos.kill(os.getppid(), 9)  # the kernel's parent is the grading process\nos._exit(0)"


@pytest.mark.slow
def test_a_submission_that_kills_its_grader_fails_alone_and_the_gradebook_is_written(tmp_path: Path, key: Path) -> None:
    klass = tmp_path / "class"
    paths = [submission(key, klass / "ann" / "tiny.ipynb", t_conv=RIGHT_CONV),
             submission(key, klass / "bob" / "tiny.ipynb", after_t_conv=KILL_THE_GRADER),
             submission(key, klass / "cat" / "tiny.ipynb", t_conv=RIGHT_CONV, t_answer="def answer():\n    return 42")]
    code = grade.main([*map(str, paths), "--source", str(key), "--gradebook", str(tmp_path / "grades.csv"), "--jobs", "2",
                       "--no-isolation", "--quiet"])
    assert code == 1  # not every submission could be graded
    with open(tmp_path / "grades.csv", newline="") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert [rows[s]["status"] for s in ("ann", "bob", "cat")] == ["graded", "grader_error", "graded"]
    assert rows["ann"]["automatic"] == "2" and rows["cat"]["automatic"] == "3"
    assert "grading process died" in rows["bob"]["flags"]
