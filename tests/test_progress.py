"""Progress in a notebook is text that a reopened notebook still shows, never a widget."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

CELL = """import torch
from torch import nn
from vae_helpers import losses, train
from vae_helpers.models import VAE, VAEConfig
x = torch.randn(64, 3)
terms = lambda m, b: {"loss": (m(b) - b.sum(-1, keepdim=True)).pow(2).mean()}
train.fit(nn.Linear(3, 1), terms, x, num_epochs=3, batch_size=16, progress=True)
losses.iwae_bound(VAE(VAEConfig(latent_dim=2, hidden_dim=8)), torch.rand(7, 784), k=5, batch_size=3, progress=True)
None"""


def test_a_fit_in_a_notebook_leaves_one_line_of_text_and_no_widget() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL)]
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), outputs
    lines = [o["data"]["text/plain"] for o in outputs if o.get("output_type") == "display_data"]
    assert len(lines) == 2, lines  # one line for the whole fit (its three epochs), one for the IWAE bound
    assert lines[0].startswith("epoch 3/3 · 4/4 batches · ") and "loss=" in lines[0], lines[0]
    assert lines[1].startswith("IWAE bound, k = 5 · 7/7 inputs"), lines[1]
