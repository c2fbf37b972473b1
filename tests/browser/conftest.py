"""Fixtures of the browser suite: one JupyterLab server and one chromium per session, student notebooks run once.

Each test module starts with ``labdriver.skip_unless_possible()``: without chromium or playwright the
whole suite is skipped with one reason on one line. A failing test leaves a screenshot of each page
it used under ``build/browser/``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

import labdriver

RUN_ALL_TIMEOUT_S = float(os.environ.get("VAE_BROWSER_TIMEOUT", "900"))  # generous: the CI machine may be shared
LAB_SETTINGS = {
    # the "get notified about Jupyter news?" toast would cover the bottom of the page in every screenshot
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"},
}


@dataclass
class StudentRun:
    """One student notebook opened in its own page and run with Run All."""

    name: str
    page: Any
    dirty_after_open: bool | None = None
    dirty_after_reopen: bool | None = None  # set by the notebook 03 test that saves, closes and reopens it
    notebook: dict[str, Any] | None = None  # the model right after Run All finished
    shown: dict[int, str] = field(default_factory=dict)  # the page's output text of each code cell, at that time
    error: str | None = None
    seconds: float = 0.0
    screenshots: list[Path] = field(default_factory=list)


@pytest.fixture(scope="session")
def lab() -> Iterator[labdriver.Lab]:
    """The learners' JupyterLab (``make lab``) on 127.0.0.1 in throw-away directories, student versions in its root."""
    with labdriver.jupyter_lab(env_extra={"OMP_NUM_THREADS": "1"}, settings=LAB_SETTINGS) as server:
        yield server


@pytest.fixture(scope="session")
def browser(lab: labdriver.Lab) -> Iterator[Any]:
    """Debian's chromium, headless, for the whole session."""
    with labdriver.headless_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="session")
def student_runs(lab: labdriver.Lab, browser: Any) -> dict[str, StudentRun]:
    """Every student notebook opened in its own page (all at once) and run with Run > Run All Cells."""
    runs = {name: StudentRun(name, browser.new_page(viewport=labdriver.VIEWPORT)) for name in labdriver.NOTEBOOKS}
    start = time.monotonic()
    for run in runs.values():
        run.page.set_default_timeout(60_000)
        run.page.goto(lab.notebook_url(run.name, "run-" + run.name.split("_")[0]))
    for run in runs.values():
        _step(run, lambda r: labdriver.wait_for_kernel_idle(r.page, RUN_ALL_TIMEOUT_S))
        if run.error is None:
            run.dirty_after_open = labdriver.is_dirty(run.page)
            _step(run, lambda r: labdriver.start_run_all(r.page))
    for run in runs.values():
        if run.error is None:
            _step(run, lambda r: setattr(r, "notebook", labdriver.wait_until_run(
                r.page, max(30.0, RUN_ALL_TIMEOUT_S - (time.monotonic() - start)))))
        run.seconds = time.monotonic() - start
        if run.notebook is not None:
            run.shown = {i: labdriver.cell_output_text(run.page, i)
                         for i, c in enumerate(run.notebook["cells"]) if c["cell_type"] == "code"}
    return runs


def _step(run: StudentRun, action: Any) -> None:
    """Do ``action(run)``; on an exception keep its text and a screenshot instead of stopping the others."""
    try:
        action(run)
    except Exception as err:  # noqa: BLE001 - reported by the test of this notebook
        run.error = f"{type(err).__name__}: {err}"
        if isinstance(err, labdriver.RunStopped) and err.pending:
            try:  # show the cell where the run stopped, not the top of the notebook
                labdriver.cell_node(run.page, max(0, err.pending[0] - 1))
            except Exception:  # noqa: BLE001 - the screenshot is still taken
                pass
        shot = labdriver.screenshot(run.page, f"run-all-{run.name}")
        if shot:
            run.screenshots.append(shot)


@pytest.fixture
def failure_pages() -> list[Any]:
    """Pages a test drives; each is photographed into build/browser/ if the test fails."""
    return []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        pages = getattr(item, "funcargs", {}).get("failure_pages") or []
        for i, page in enumerate(pages):
            shot = labdriver.screenshot(page, f"{item.name}-{i}" if len(pages) > 1 else item.name)
            if shot:
                report.sections.append(("screenshot", str(shot)))
