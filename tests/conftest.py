"""Shared test settings: a headless matplotlib backend and quiet progress bars."""

import os
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
