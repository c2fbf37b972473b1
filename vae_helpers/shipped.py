"""The series' own files (instructor notebooks, JupyterLab settings): the clone's folders, or the package's copies.

In a clone (an editable install, ``make``) the notebooks are ``notebooks/`` and the settings ``lab/``. A built
wheel carries copies of both inside the package (``vae_helpers/notebooks/``, ``vae_helpers/lab_config/``; see
``pyproject.toml``), which commands only read: what they write goes to the folder they are run in.
Introduced by no notebook; used by ``vae_helpers.lab`` and ``vae_helpers.grade``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CLONE_DIR = PACKAGE_DIR.parent


def in_clone() -> bool:
    """True when this package runs from a clone of the repository rather than from an installed wheel."""
    return all((CLONE_DIR / name).exists() for name in ("pyproject.toml", "notebooks", "lab"))


def notebook_dir() -> Path:
    """The instructor notebooks: ``notebooks/`` of the clone, else the copies in the package."""
    return CLONE_DIR / "notebooks" if in_clone() else PACKAGE_DIR / "notebooks"


def lab_config_dir() -> Path:
    """The JupyterLab settings (``overrides.d/``, ``student/``): ``lab/`` of the clone, else the package's copy."""
    return CLONE_DIR / "lab" if in_clone() else PACKAGE_DIR / "lab_config"


def work_dir() -> Path:
    """Where the learner's notebooks go by default: ``work/`` of the clone, else ``work/`` in the current folder."""
    return (CLONE_DIR if in_clone() else Path.cwd()) / "work"
