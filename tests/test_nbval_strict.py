"""The repository's conftest makes nbval fail on an exception even in a cell tagged ``raises-exception``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _nbval(tmp: Path, source: str) -> subprocess.CompletedProcess:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}}
    nb.cells = [nbformat.v4.new_code_cell(source, metadata={"tags": ["raises-exception"]})]
    path = tmp / "tagged.ipynb"
    nbformat.write(nb, path)
    return subprocess.run([sys.executable, "-m", "pytest", str(path), "--nbval-lax", "--nbval-current-env",
                           "-p", "no:cacheprovider", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_a_tagged_cell_that_raises_fails_nbval_here() -> None:
    (ROOT / "build").mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=ROOT / "build", prefix="nbval-strict-"))  # under the rootdir's conftest
    try:
        raising = _nbval(tmp, "raise AssertionError('a broken reference solution')")
        assert raising.returncode != 0, raising.stdout
        assert "a broken reference solution" in raising.stdout
        clean = _nbval(tmp, "x = 1")
        assert clean.returncode == 0, clean.stdout
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
