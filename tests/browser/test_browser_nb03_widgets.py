"""Every explorer of notebook 03 reacts in the browser, and after save, shut-down and reopen shows a picture (issue 12)."""

from __future__ import annotations

import warnings

import re
import time
from typing import Any

import pytest

import labdriver

labdriver.skip_unless_possible()
pytestmark = pytest.mark.browser

NAME = "03_conv_vae.ipynb"
RERUN_NOTE = re.compile(r"re-?run|run (this|the) cell again", re.IGNORECASE)


def _explorer_cells(nb: dict[str, Any]) -> dict[str, int]:
    """Cell indices of the 2-D explorer, the 16-D explorer and the interpolation explorer."""
    found = {}
    for i, cell in enumerate(nb["cells"]):
        src = cell["source"] if cell["cell_type"] == "code" else ""
        if "widgets.latent_explorer(model_2d" in src:
            found["pad"] = i
        elif "widgets.latent_explorer(" in src:
            found["sliders"] = i
        elif "widgets.interpolation_explorer(" in src:
            found["interpolation"] = i
    assert set(found) == {"pad", "sliders", "interpolation"}, f"explorer cells not found in {NAME}: {found}"
    return found


def _picture_after(page: Any, img: Any, before: str, what: str, timeout_s: float = 60.0) -> str:
    """Wait until the picture behind ``img`` differs from ``before``; its new digest."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = labdriver.image_digest(page, img)
        if now != before:
            # let the rest of this update settle (the sliders' step-rounded values the page sends back), as a
            # learner looking at the new picture would, before the next action
            labdriver.wait_for_kernel_idle(page, timeout_s)
            page.wait_for_timeout(500)
            labdriver.wait_for_kernel_idle(page, timeout_s)
            return labdriver.image_digest(page, img)
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: the picture did not change within {timeout_s:.0f} s")
        page.wait_for_timeout(300)


def _picture_back_to(page: Any, img: Any, target: str, what: str, timeout_s: float = 60.0) -> None:
    """Wait until the picture behind ``img`` is again the one with digest ``target``."""
    deadline = time.monotonic() + timeout_s
    while labdriver.image_digest(page, img) != target:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: the picture did not return to the starting one within {timeout_s:.0f} s")
        page.wait_for_timeout(300)


def _click_slider(slider: Any, fraction: float) -> None:
    """Click a noUiSlider track at ``fraction`` of its width (the handle jumps there)."""
    track = slider.locator(".noUi-base")
    box = track.bounding_box()
    track.click(position={"x": box["width"] * fraction, "y": box["height"] / 2})


def _drive_latent_explorer(page: Any, index: int, with_pad: bool) -> None:
    output = labdriver.cell_node(page, index).locator(".jp-OutputArea-output")
    img = output.locator("img").first
    start = labdriver.image_digest(page, img)
    label = "2-D explorer" if with_pad else "16-D explorer"
    current = start
    if with_pad:
        pad = output.locator(".widget-gridbox button")
        assert pad.count() >= 100, f"{label}: expected the pad of buttons, found {pad.count()}"
        corner = pad.nth(0)
        corner.click()
        current = _picture_after(page, img, current, f"{label}, click on the pad's corner")
        assert corner.inner_text().strip() == "●", f"{label}: the pad's marker did not move to the clicked button"
    sliders = output.locator(".widget-slider")
    assert sliders.count() >= 2, f"{label}: expected one slider per latent dimension, found {sliders.count()}"
    readout = sliders.nth(0).locator(".widget-readout")
    before_text = readout.inner_text()
    # to the far end from where z1 stands: a large move, which changes the picture even of the barely
    # trained fast-mode model (a small one can leave every 8-bit pixel as it was)
    _click_slider(sliders.nth(0), 0.05 if float(before_text.replace("\u2212", "-")) > 0 else 0.95)
    current = _picture_after(page, img, current, f"{label}, slider z1 moved")
    assert readout.inner_text() != before_text, f"{label}: the slider's readout did not move"
    output.get_by_role("button", name=re.compile(r"^sample")).click()
    current = _picture_after(page, img, current, f"{label}, sample button")
    output.get_by_role("button", name="reset").click()
    _picture_back_to(page, img, start, f"{label}, reset button")


def _drive_interpolation(page: Any, index: int) -> None:
    output = labdriver.cell_node(page, index).locator(".jp-OutputArea-output")
    images = output.locator("img")
    assert images.count() == 4, f"interpolation explorer: expected 4 pictures (start, z(t), end, path), found {images.count()}"
    start_img, middle_img, end_img, strip_img = (images.nth(i) for i in range(4))
    digests = [labdriver.image_digest(page, im) for im in (start_img, middle_img, end_img, strip_img)]
    _click_slider(output.locator(".widget-slider").first, 0.05)
    _picture_after(page, middle_img, digests[1], "interpolation explorer, slider t moved")
    assert labdriver.image_digest(page, strip_img) == digests[3], "moving t should not redraw the whole path"
    select = output.locator("select").first
    options = select.locator("option")
    chosen = select.evaluate("s => s.value")
    other = next(options.nth(i).get_attribute("value") for i in range(options.count())
                 if options.nth(i).get_attribute("value") != chosen)
    select.select_option(other)
    _picture_after(page, start_img, digests[0], "interpolation explorer, another start digit")
    _picture_after(page, strip_img, digests[3], "interpolation explorer, the path after another start digit")


def _wait_until_drawn(page: Any, indices: list[int], timeout_s: float = 60.0) -> None:
    """Wait until the output of every cell in ``indices`` shows a picture or a widget error (views render late)."""
    page.wait_for_function(
        """(indices) => indices.every(i => {
             const area = window.jupyterapp.shell.currentWidget.content.widgets[i].node.querySelector('.jp-OutputArea');
             return area && ([...area.querySelectorAll('img')].some(im => im.complete && im.naturalWidth > 0)
                             || area.textContent.includes('Error displaying widget')); })""",
        arg=indices, timeout=timeout_s * 1000)
    page.wait_for_timeout(1000)  # the rest of a view (its note) lands with or just after its picture


def _dismiss_dialog(page: Any, accept: str) -> None:
    """Press the button labelled ``accept`` if JupyterLab shows a dialog within a second."""
    dialog = page.locator(".jp-Dialog")
    try:
        dialog.wait_for(state="visible", timeout=1500)
    except Exception:  # noqa: BLE001 - no dialog is fine
        return
    dialog.get_by_role("button", name=accept).click()
    dialog.wait_for(state="hidden")


def _reopen(page: Any) -> None:
    """Open the notebook from the file browser and wait for its new kernel."""
    page.wait_for_function(f"() => ![...window.jupyterapp.shell.widgets('main')].some(w => w.context && w.context.path === {NAME!r})")
    page.locator(".jp-DirListing-itemText", has_text=NAME).dblclick()
    labdriver.wait_for_kernel_idle(page, 180)


def test_every_explorer_reacts_and_survives_save_and_reopen(student_runs: dict, failure_pages: list) -> None:
    run = student_runs[NAME]
    page = run.page
    failure_pages.append(page)
    assert run.notebook is not None, f"Run All on {NAME} did not finish: {run.error}"
    cells = _explorer_cells(run.notebook)
    for index in cells.values():
        assert labdriver.error_text(run.notebook["cells"][index]) is None, f"explorer cell {index} raised"

    _drive_latent_explorer(page, cells["pad"], with_pad=True)
    _drive_latent_explorer(page, cells["sliders"], with_pad=False)
    _drive_interpolation(page, cells["interpolation"])

    labdriver.click_menu(page, "File", "Save Notebook")
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=60_000)
    labdriver.click_menu(page, "Kernel", "Shut Down Kernel")
    _dismiss_dialog(page, "Shut Down")
    page.wait_for_function("() => { const s = window.jupyterapp.shell.currentWidget.sessionContext;"
                           " return !s.session || !s.session.kernel; }", timeout=60_000)
    labdriver.click_menu(page, "File", "Close Tab")
    _dismiss_dialog(page, "Discard")
    _reopen(page)
    run.dirty_after_reopen = labdriver.is_dirty(page)  # checked by the next test
    _wait_until_drawn(page, list(cells.values()))
    body = page.locator("body").inner_text()
    if "model not found" in body:
        # Known upstream race (jupyterlab-manager 5.0.16): restoring the saved widget state on open can lose to
        # the output's 2-second model lookup on a loaded machine (seen in 1 of 5 runs here). A learner who
        # reopens the notebook once more gets the pictures; the test does the same, once, and says so.
        warnings.warn("03_conv_vae: 'Error displaying widget: model not found' on the first reopen; reopened once more")
        labdriver.click_menu(page, "File", "Close Tab")
        _dismiss_dialog(page, "Discard")
        _reopen(page)
        _wait_until_drawn(page, list(cells.values()))
        body = page.locator("body").inner_text()
    assert "Error displaying widget" not in body, "a reopened explorer shows 'Error displaying widget'"
    for what, index in cells.items():
        output = labdriver.cell_node(page, index).locator(".jp-OutputArea")
        text = output.inner_text()
        assert "Error displaying widget" not in text and "model not found" not in text, f"{what} explorer after reopen: {text[:500]}"
        shown = output.locator("img").evaluate_all("imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length")
        assert shown >= 1, f"the {what} explorer shows no picture after save, shut-down and reopen"
        notes = [line for line in text.splitlines() if RERUN_NOTE.search(line)]
        assert len(notes) == 1, (f"the {what} explorer should show one line telling the learner to re-run the cell "
                                 f"after reopen; its output reads:\n{text[:800]}")


@pytest.mark.xfail(strict=True, reason=(
    "known, upstream: with saveState on, @jupyter-widgets/jupyterlab-manager 5.0.16 marks the notebook dirty "
    "whenever it registers a widget model (register_model -> setDirty), which restoring the saved state does on "
    "open; remove this mark when that is fixed or worked around"))
def test_the_reopened_notebook_is_not_marked_modified(student_runs: dict, failure_pages: list) -> None:
    run = student_runs[NAME]
    failure_pages.append(run.page)
    assert run.dirty_after_reopen is not None, "the explorer test above did not get as far as reopening the notebook"
    assert run.dirty_after_reopen is False, (f"{NAME}, saved and reopened (widget state saved in it), shows unsaved "
                                             "changes right after opening although nothing was edited")
