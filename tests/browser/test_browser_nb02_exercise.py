"""A learner types a wrong, then a right answer into an exercise of the student notebook 02 (issue 12)."""

from __future__ import annotations

from typing import Any

import pytest

import labdriver

labdriver.skip_unless_possible()
pytestmark = pytest.mark.browser

NAME = "02_vae.ipynb"
STUB_LINE = "raise NotImplementedError()"


def _exercise_cells(nb: dict[str, Any], function: str) -> tuple[int, int]:
    """Indices of the solution cell defining ``function`` and of the check cell after it."""
    cells = nb["cells"]
    solution = next(i for i, c in enumerate(cells)
                    if c["metadata"].get("nbgrader", {}).get("solution") and f"def {function}(" in c["source"])
    check = next(i for i in range(solution + 1, len(cells))
                 if cells[i]["metadata"].get("nbgrader", {}).get("grade") and cells[i]["cell_type"] == "code")
    return solution, check


def _replace_line(page: Any, index: int, old: str, new: str) -> None:
    """Click on the line holding ``old`` in the editor of cell ``index`` and type ``new`` over it, as a learner would."""
    cell = labdriver.cell_node(page, index)
    line = cell.locator(".cm-line", has_text=old).first
    line.click()
    page.keyboard.press("End")
    page.keyboard.press("Shift+Home")
    page.keyboard.type(new)


def _run_two_cells(page: Any, index: int, check: int) -> None:
    """Shift+Enter in the solution cell, then in the check cell below it; wait for the kernel."""
    before = labdriver.notebook_json(page)["cells"][check].get("execution_count") or 0
    labdriver.cell_node(page, index).locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(f"""() => {{ const c = window.jupyterapp.shell.currentWidget.content.model.cells.get({check});
                                       return c.executionCount !== null && c.executionCount > {before}; }}""",
                           timeout=120_000)
    labdriver.wait_for_kernel_idle(page, 120)


def test_wrong_then_right_answer_to_reparameterize(student_runs: dict, failure_pages: list) -> None:
    run = student_runs[NAME]
    page = run.page
    failure_pages.append(page)
    assert run.notebook is not None, f"Run All on {NAME} did not finish: {run.error}"
    solution, check = _exercise_cells(run.notebook, "reparameterize")

    _replace_line(page, solution, STUB_LINE, "return mu")
    _run_two_cells(page, solution, check)
    cells = labdriver.notebook_json(page)["cells"]
    assert "return mu" in cells[solution]["source"] and STUB_LINE not in cells[solution]["source"], cells[solution]["source"]
    assert labdriver.error_text(cells[solution]) is None, "defining the function raised"
    shown = labdriver.cell_output_text(page, check)
    error = labdriver.error_text(cells[check])
    assert error is not None, f"the check accepted `return mu`; the page shows:\n{shown}"
    for text in (error, shown):
        first = next((line for line in text.splitlines() if line.strip()), "")
        assert first.startswith("✗"), f"a wrong answer should be answered by a short '✗' message, got:\n{text[:1500]}"
        assert "Traceback (most recent call last)" not in text and "vae_helpers/checks" not in text, text[:1500]
    assert "✓" not in shown

    _replace_line(page, solution, "return mu", "return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)")
    _run_two_cells(page, solution, check)
    cells = labdriver.notebook_json(page)["cells"]
    shown = labdriver.cell_output_text(page, check)
    assert labdriver.error_text(cells[check]) is None, f"the check rejected a right answer:\n{shown}"
    ticks = [line for line in shown.splitlines() if line.startswith("✓")]
    assert len(ticks) == 1 and "reparameterize" in ticks[0], f"expected one '✓ reparameterize ...' line, the page shows:\n{shown}"
    assert "✗" not in shown
