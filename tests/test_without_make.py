"""The README's "Without make" commands: each matches what its make target runs, and the python -m commands,
run as written (bash and PowerShell, no shell expanding the patterns) on a small notebook, work."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from vae_helpers import data, runner

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "fixture_exercises.ipynb"


def section_blocks(language: str) -> list[list[str]]:
    """The command lines (comments stripped) of the README's "Without make" code blocks in ``language``."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Without make\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"```{language}\n(.*?)```", section, re.S)
    assert blocks, f"no {language} block in the README's 'Without make' section"
    return [[line.split(" #", 1)[0].strip() for line in block.splitlines() if line.strip()] for block in blocks]


SHELLS = {"bash": section_blocks("bash")[0], "powershell": section_blocks("powershell")[0]}


def python_m(lines: list[str], module: str) -> list[str]:
    """The arguments after ``python -m module`` on the one line that runs it."""
    found = [shlex.split(line)[3:] for line in lines if line.startswith(f"python -m {module} ") or line == f"python -m {module}"]
    assert len(found) == 1, f"expected one `python -m {module}` line in {lines}"
    return found[0]


def make_recipe(target: str) -> str:
    return (REPO / "Makefile").read_text().split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]


@pytest.mark.parametrize("shell", SHELLS)
def test_each_command_is_what_make_runs(shell: str) -> None:
    lines = SHELLS[shell]
    install = make_recipe("$(STAMP)")
    assert "pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt" in install
    assert "python -m pip install -r requirements.txt -r requirements-dev.txt" in lines
    assert "--no-deps --no-build-isolation -e ." in install
    assert "python -m pip install --no-deps --no-build-isolation -e ." in lines
    test = make_recipe("test")
    for arg in python_m(lines, "pytest"):
        assert arg in test, f"{arg} is not in make test's pytest call"
    assert python_m(lines, "vae_helpers.data") == []
    assert python_m(lines, "vae_helpers.lab")[0] == "student" and "vae_helpers.lab student" in make_recipe("lab")
    assert "--make-student" in python_m(lines, "vae_helpers.grade") and "--make-student" in make_recipe("student")
    assert "vae_helpers.runner" in make_recipe("run")


@pytest.mark.slow
@pytest.mark.parametrize("shell", SHELLS)
def test_the_python_m_commands_run_as_written(shell: str, tmp_path: Path) -> None:
    """In a folder whose ``notebooks/`` holds one small notebook, each command runs with its arguments verbatim
    (``lab`` only prepares, into a folder of the test's own)."""
    (tmp_path / "notebooks").mkdir()
    shutil.copy2(FIXTURE, tmp_path / "notebooks")
    env = {k: v for k, v in os.environ.items() if k != "VAE_FAST"}
    env.update(VAE_DATA_DIR=str(data.data_dir()), VAE_DATA_SOURCES="npm", MPLBACKEND="Agg")
    if "--fast" not in python_m(SHELLS[shell], "vae_helpers.runner"):
        env["VAE_FAST"] = "1"  # the bash block runs in full mode; the fixture is the same in both
    lines = SHELLS[shell]
    for module, extra in [("vae_helpers.data", []), ("vae_helpers.runner", []), ("vae_helpers.grade", []),
                          ("vae_helpers.lab", ["--prepare-only", "--work-dir", str(tmp_path / "work")])]:
        cmd = [sys.executable, "-m", module, *python_m(lines, module), *extra]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{cmd}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    executed = nbformat.read(tmp_path / "build" / "notebooks" / FIXTURE.name, as_version=4)
    assert all("shell.execute_reply" in c.metadata.get("execution", {}) for c in executed.cells if c.cell_type == "code")
    assert (tmp_path / "build" / "student" / FIXTURE.name).is_file()
    assert sorted(p.name for p in (tmp_path / "work").glob("*.ipynb")) == sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))


def test_notebooks_are_given_as_files_folders_or_patterns(tmp_path: Path) -> None:
    for name in ("b.ipynb", "a.ipynb", "sub/c.ipynb", ".ipynb_checkpoints/a-checkpoint.ipynb", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    assert runner.expand_notebooks([tmp_path]) == [tmp_path / "a.ipynb", tmp_path / "b.ipynb"]
    assert runner.expand_notebooks([tmp_path], recursive=True) == [tmp_path / n for n in ("a.ipynb", "b.ipynb", "sub/c.ipynb")]
    assert runner.expand_notebooks([f"{tmp_path}/*.ipynb", tmp_path / "sub" / "c.ipynb"]) == \
        [tmp_path / "a.ipynb", tmp_path / "b.ipynb", tmp_path / "sub" / "c.ipynb"]
    assert runner.expand_notebooks([f"{tmp_path}/*/*.ipynb"]) == [tmp_path / "sub" / "c.ipynb"]
    assert runner.expand_notebooks([f"{tmp_path}/none-*.ipynb"]) == [Path(f"{tmp_path}/none-*.ipynb")]  # reported missing


def test_runner_fast_mode_from_the_flag_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy2(FIXTURE, tmp_path)
    seen = []
    monkeypatch.setattr(runner, "run_notebooks", lambda paths, out, fast, timeout: seen.append((paths, fast)) or [])
    for value, flag, fast in [("0", [], False), ("0", ["--fast"], True), ("1", [], True)]:
        monkeypatch.setenv("VAE_FAST", value)
        assert runner.main([f"{tmp_path}/*.ipynb", "--out", str(tmp_path / "out"), *flag]) == 0
        assert seen.pop() == ([tmp_path / FIXTURE.name], fast)
    assert runner.main([str(tmp_path / "none-*.ipynb"), "--out", str(tmp_path / "out")]) == 2
