"""Shared test settings: a headless matplotlib backend and quiet progress bars; tests that need a system
package skip where it is missing, and the summary says so in one line per reason."""

import os
from collections import Counter
from contextlib import contextmanager

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("VAE_FAST", "1")


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: tiny convolutions are fastest so and never stall on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def global_rng_untouched():
    """A context manager that fails when the code inside it changes torch's global (CPU) random state."""

    @contextmanager
    def guard():
        state = torch.get_rng_state()
        yield
        assert torch.equal(torch.get_rng_state(), state), "the global torch RNG was changed"

    return guard


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip tests marked ``sandbox`` where bubblewrap cannot start a sandbox, saying what to install."""
    if item.get_closest_marker("sandbox") is not None:
        from vae_helpers.sandbox import isolation_problem

        problem = isolation_problem()
        if problem:
            pytest.skip(f"needs the grading sandbox: {problem}")


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's TerminalReporter
    """One line per distinct skip reason, with how much it skipped (pytest alone lists skips only with -rs)."""
    reasons: Counter = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        reasons[reason.removeprefix("Skipped: "), "test module" if isinstance(report, pytest.CollectReport) else "test"] += 1
    for (reason, what), count in sorted(reasons.items()):
        terminalreporter.write_line(f"skipped {count} {what}{'s' if count > 1 else ''}: {reason}")
