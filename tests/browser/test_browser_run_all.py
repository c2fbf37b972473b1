"""Run All in JupyterLab on every student notebook: it goes top to bottom, only exercises fail, briefly (issue 12)."""

from __future__ import annotations

from typing import Any

import pytest

import labdriver

labdriver.skip_unless_possible()
pytestmark = pytest.mark.browser


def _kind(cell: dict[str, Any]) -> str:
    """'solution', 'check' or 'other' from the cell's nbgrader metadata."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    if meta.get("solution"):
        return "solution"
    return "check" if meta.get("grade") else "other"


@pytest.mark.parametrize("name", labdriver.NOTEBOOKS)
def test_run_all_goes_through_and_only_exercises_fail(name: str, student_runs: dict, failure_pages: list) -> None:
    run = student_runs[name]
    failure_pages.append(run.page)
    assert run.error is None, f"Run All on the student {name} did not finish: {run.error} (screenshots: {run.screenshots})"
    problems = []
    checks = 0
    for index, cell in enumerate(run.notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        kind, error = _kind(cell), labdriver.error_text(cell)
        where = f"cell {index} ({kind}) {cell['source'][:60]!r}"
        if cell.get("execution_count") is None and error is None:
            problems.append(f"{where}: never ran")
        elif kind == "other" and error is not None:
            problems.append(f"{where}: raised in a cell that is not an exercise:\n{error[-800:]}")
        elif kind == "check":
            checks += 1
            shown = run.shown.get(index, "")
            for label, text in (("its error output", error or ""), ("the page", shown)):
                lines = [line for line in text.splitlines() if line.strip()]
                if not lines or not lines[0].startswith("✗"):
                    problems.append(f"{where}: {label} does not start with a '✗' line:\n{text[:800]}")
                if "vae_helpers/checks" in text or "Traceback (most recent call last)" in text:
                    problems.append(f"{where}: {label} shows the checker's traceback:\n{text[:800]}")
            if error is None:
                problems.append(f"{where}: an unsolved check passed (it must fail and earn no points)")
    assert not problems, f"{name} after Run All ({run.seconds:.0f} s):\n" + "\n".join(problems)
    has_exercises = any(_kind(c) != "other" for c in run.notebook["cells"])
    assert checks > 0 or not has_exercises, f"{name}: no check cell found although it has exercises"


@pytest.mark.parametrize("name", labdriver.NOTEBOOKS)
def test_opening_a_notebook_does_not_mark_it_modified(name: str, student_runs: dict, failure_pages: list) -> None:
    run = student_runs[name]
    failure_pages.append(run.page)
    assert run.dirty_after_open is not None, f"{name} did not open: {run.error}"
    assert run.dirty_after_open is False, (f"{name} shows unsaved changes right after opening and starting its "
                                           "kernel (nothing was edited)")
