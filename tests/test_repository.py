"""Repository hygiene: clean numbered notebooks, ignored data, the two commands wired up."""

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_and_they_are_numbered():
    assert NOTEBOOKS, "no notebooks found"
    assert NOTEBOOKS[0].name == "00_mnist_tour.ipynb"
    for path in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_carry_no_outputs(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_report_one_headline_and_end_with_references(path):
    nb = json.loads(path.read_text())
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    markdown = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert code.count("config.headline(") == 1, f"{path.name} must report exactly one headline metric"
    assert "## Summary" in markdown and "## References" in markdown


def test_data_files_are_ignored_by_git():
    out = subprocess.run(["git", "check-ignore", "data/mnist/train-images-idx3-ubyte", "data/README.md"],
                         cwd=ROOT, capture_output=True, text=True)
    assert "data/mnist/train-images-idx3-ubyte" in out.stdout
    assert "data/README.md" not in out.stdout


def test_ci_runs_make_test_with_the_browser_suite_required():
    script = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert commands[-1] == "VAE_BROWSER_REQUIRED=1 make test"
    assert "set -euo pipefail" in script
    assert "apt-get install" in script and "chromium" in script and "bubblewrap" in script


def test_make_test_runs_the_browser_suite_after_the_rest_or_says_why_not():
    recipe = (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    lines = recipe.splitlines()
    main_run = next(i for i, line in enumerate(lines) if "--nbval-lax" in line)
    browser_run = next(i for i, line in enumerate(lines) if "pytest tests/browser" in line)
    assert "--ignore=tests/browser" in lines[main_run] and browser_run > main_run
    assert "labdriver.py --why-not" in recipe and "VAE_BROWSER_REQUIRED" in recipe


def test_make_test_uses_fast_mode_npm_data_and_nbval():
    makefile = (ROOT / "Makefile").read_text()
    assert "VAE_FAST=1" in makefile and "VAE_DATA_SOURCES=npm" in makefile
    assert "--nbval-lax" in makefile and "notebooks" in makefile
