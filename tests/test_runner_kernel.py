"""The runner's kernels talk over Unix sockets: nothing listens on TCP and no plain-text warning is printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest


@pytest.mark.slow
def test_runner_kernel_uses_ipc_and_prints_no_tcp_warning(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import json, ipykernel.connect as c\n"
                                          "print(json.loads(open(c.get_connection_file()).read())['transport'])")]
    nbformat.write(nb, tmp_path / "probe.ipynb")
    run = subprocess.run([sys.executable, "-m", "vae_helpers.runner", str(tmp_path / "probe.ipynb"), "--fast",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "without encryption" not in run.stdout + run.stderr
    executed = nbformat.read(tmp_path / "out" / "probe.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"].strip() == "ipc"
