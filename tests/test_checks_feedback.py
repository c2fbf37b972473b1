"""A failed check shows the learner a short "✗" message in a real kernel, not the checker's traceback.

The notebook is executed with nbclient (errors allowed) in a kernel of this environment; the error
outputs are what JupyterLab would show.
"""

from __future__ import annotations

import re

import nbformat
import pytest
from nbclient import NotebookClient

from vae_helpers import checks

ANSI = re.compile(r"\x1b\[[0-9;]*m")

CELLS = {
    "import": "from vae_helpers import checks\nimport torch",
    # a wrong answer: the ELBO estimate where the IWAE estimate belongs (the checker's oracle uses logsumexp)
    "wrong": "def iwae_estimate(model, x, k):\n    return model.log_importance_weights(x, k).mean(0)\n\n"
             "checks.check_iwae_estimate(iwae_estimate)",
    # the learner's own code crashes inside the checker
    "crash": "def gaussian_kl(mu, logvar):\n    total = mu @ logvar  # shapes do not fit: the learner's bug\n"
             "    return total\n\nchecks.check_gaussian_kl(gaussian_kl)",
    "stub": "def reparameterize(mu, logvar):\n    raise NotImplementedError()\n\n"
            "checks.check_reparameterize(reparameterize)",
    "reimport": "import importlib, vae_helpers.checks\nchecks.install_short_feedback(); checks.install_short_feedback()\n"
                "checks.check_iwae_estimate(lambda model, x, k: model.log_importance_weights(x, k).max(0).values)",
    # refusals and cut gradients are one short line too
    "refused": "from torch.distributions import Normal, kl_divergence\n"
               "checks.check_gaussian_kl(lambda mu, lv: kl_divergence(Normal(mu, (lv / 2).exp()), Normal(0., 1.)).sum(-1))",
    "detached": "checks.check_gaussian_kl(lambda mu, lv: -0.5 * (1 + lv - mu.detach()**2 - lv.exp()).sum(-1))",
    "right": "checks.check_gaussian_kl(lambda mu, lv: -0.5 * (1 + lv - mu**2 - lv.exp()).sum(-1))",
    "plain": "assert 1 == 2, 'a hidden test'",
}


@pytest.fixture(scope="module")
def executed() -> dict[str, tuple[nbformat.NotebookNode, str]]:
    """Each cell of CELLS executed in order in one kernel: name -> (cell, execute_reply status)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS.values()]
    statuses: dict[int, str] = {}

    def record(cell: nbformat.NotebookNode, cell_index: int, execute_reply: dict) -> None:
        statuses[cell_index] = execute_reply["content"]["status"]

    client = NotebookClient(nb, allow_errors=True, timeout=300, kernel_name="python3", on_cell_executed=record)
    client.execute()
    return {name: (nb.cells[i], statuses[i]) for i, name in enumerate(CELLS)}


def error_of(cell: nbformat.NotebookNode) -> tuple[dict, str]:
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert len(errors) == 1, cell.outputs
    return errors[0], ANSI.sub("", "\n".join(errors[0]["traceback"]))


def test_a_failed_check_shows_only_the_short_message(executed) -> None:
    cell, status = executed["wrong"]
    error, text = error_of(cell)
    assert status == "error" and error["ename"] == "CheckFailed"
    assert text.startswith("✗ iwae_estimate does not match"), text
    assert "Likely mistake: you averaged the log-weights" in text
    assert "vae_helpers" not in text and "logsumexp(log_w" not in text and "Traceback" not in text
    assert len(text.splitlines()) <= 3, text


@pytest.mark.parametrize("name, start", [("refused", "✗ your answer uses torch.distributions' KL"),
                                         ("detached", "✗ gaussian_kl gives the right values, but no gradient reaches mu")])
def test_a_refusal_and_a_cut_gradient_show_one_short_line(executed, name, start) -> None:
    cell, status = executed[name]
    error, text = error_of(cell)
    assert status == "error" and error["ename"] == "CheckFailed"
    assert text.startswith(start) and len(text.splitlines()) == 1, text
    assert "Traceback" not in text and "_guard" not in text and "_judge" not in text


def test_a_crash_in_the_learners_code_keeps_the_learners_frame(executed) -> None:
    cell, status = executed["crash"]
    error, text = error_of(cell)
    assert status == "error" and error["ename"] == "CheckFailed"
    assert "total = mu @ logvar" in text, text  # the learner's own line, with its traceback
    assert "RuntimeError" in text
    assert "vae_helpers/checks" not in text and "call_learner" not in text and "return fn(*args" not in text, text
    last = text.strip().splitlines()[-1]
    assert last.startswith("✗ calling gaussian_kl raised RuntimeError"), last


def test_an_unanswered_exercise_says_so_in_one_line(executed) -> None:
    cell, status = executed["stub"]
    error, text = error_of(cell)
    assert status == "error" and error["ename"] == "CheckFailed"
    assert text == "✗ reparameterize is not implemented yet: replace `raise NotImplementedError()` with your code"


def test_installing_twice_keeps_one_short_handler(executed) -> None:
    cell, _ = executed["reimport"]
    _, text = error_of(cell)
    assert text.startswith("✗ iwae_estimate does not match") and "Likely mistake: you kept only the largest" in text


def test_a_right_answer_prints_the_tick(executed) -> None:
    cell, status = executed["right"]
    assert status == "ok" and cell.outputs[0]["text"].startswith("✓ gaussian_kl matches")


def test_other_errors_keep_their_full_traceback(executed) -> None:
    cell, status = executed["plain"]
    error, text = error_of(cell)
    assert status == "error" and error["ename"] == "AssertionError"
    assert "assert 1 == 2" in text and not text.startswith("✗")


def test_check_failed_is_an_assertion_error_outside_ipython() -> None:
    assert issubclass(checks.CheckFailed, AssertionError)
    assert checks.install_short_feedback() is False  # no IPython shell in a plain pytest run
    with pytest.raises(checks.CheckFailed, match="not implemented yet"):
        checks.check_gaussian_kl(lambda mu, lv: (_ for _ in ()).throw(NotImplementedError()))
