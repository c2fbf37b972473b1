"""The package as built: the wheel holds every subpackage, the notebooks and the lab settings; installed outside
the repository it runs a notebook and prepares the student route, writing nothing into the package."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from vae_helpers import data

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "README.md", "vae_helpers", "notebooks", "lab"]  # what the wheel is built from


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


def test_pyproject_lists_every_subpackage_and_ranges_not_pins() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = set(project["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "vae_helpers").rglob("__init__.py")}
    assert on_disk <= packages, f"subpackages missing from pyproject.toml: {on_disk - packages}"
    deps = project["project"]["dependencies"]
    assert {d.split(">")[0].split("<")[0].split("=")[0] for d in deps} == {"numpy", "torch", "matplotlib", "scipy",
                                                                            "ipywidgets", "tqdm"}
    everything = deps + [d for extra in project["project"]["optional-dependencies"].values() for d in extra]
    assert not [d for d in everything if "==" in d], "exact pins belong in requirements*.txt"
    assert set(project["project"]["optional-dependencies"]) == {"lab", "teacher", "dev"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh virtual environment outside the repository with the built wheel installed (no dependencies
    downloaded: the project environment's site-packages is visible behind the wheel's, through a .pth line)."""
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "JUPYTER_CONFIG_DIR")}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
         str(tmp / "dist"), str(src)], tmp, env)
    wheel = next((tmp / "dist").glob("vae_notebooks-*.whl"))
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    python = venv / "bin" / "python"
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env).strip())
    (purelib / "project-env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        tmp, env)
    env.update(VAE_DATA_DIR=str(data.data_dir()), VAE_DATA_SOURCES="npm", VAE_FAST="1", MPLBACKEND="Agg")
    return python, env


def test_the_wheel_installs_every_subpackage_and_the_notebooks(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    python, env = installed
    out = run([str(python), "-c", "import json, importlib.metadata as m, vae_helpers, vae_helpers.checks, vae_helpers.shipped as s; "
               "print(json.dumps([vae_helpers.__file__, s.in_clone(), sorted(p.name for p in s.notebook_dir().glob('*.ipynb')), "
               "m.requires('vae-notebooks')]))"], tmp_path, env)
    where, in_clone, notebooks, requires = json.loads(out)
    assert Path(where).is_relative_to(python.parent.parent) and not in_clone
    assert notebooks == sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    assert not [r for r in requires if "==" in r.split(";")[0]], requires
    runtime = [Requirement(r) for r in requires if ";" not in r]
    assert {r.name for r in runtime} == {"numpy", "torch", "matplotlib", "scipy", "ipywidgets", "tqdm"}
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line)
    assert all(r.specifier.contains(pins[r.name]) for r in runtime), f"a pin of requirements.txt is out of range: {runtime}"


@pytest.mark.slow
def test_installed_outside_the_repository_a_notebook_runs_and_the_student_route_prepares(
        installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    python, env = installed
    package = Path(run([str(python), "-c", "import vae_helpers; print(vae_helpers.__file__)"], tmp_path, env).strip()).parent
    before = files_under(package.parent)
    shutil.copy2(package / "notebooks" / "01_autoencoder.ipynb", tmp_path)
    out = run([str(python), "-m", "vae_helpers.runner", "01_autoencoder.ipynb", "--out", "executed", "--fast"], tmp_path, env)
    assert "01_autoencoder.ipynb" in out and "FAILED" not in out, out
    executed = json.loads((tmp_path / "executed" / "01_autoencoder.ipynb").read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[0]
    assert "Headline metric:" in json.dumps(executed), "the notebook did not run to its headline"
    out = run([str(python), "-m", "vae_helpers.lab", "student", "--prepare-only"], tmp_path, env)
    work = tmp_path / "work"
    assert sorted(p.name for p in work.glob("*.ipynb")) == sorted(p.name for p in (package / "notebooks").glob("*.ipynb")), out
    assert "BEGIN SOLUTION" not in (work / "02_vae.ipynb").read_text()
    assert (work / ".jupyter-student" / "labconfig" / "page_config.json").is_file()
    overrides = python.parent.parent / "share" / "jupyter" / "lab" / "settings" / "overrides.d" / "vae-notebooks.json"
    assert overrides.is_file()
    assert files_under(package.parent) == before, "something was written into site-packages"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_autoencoder.ipynb", "executed", "work"]
