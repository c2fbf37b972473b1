"""Open the series in JupyterLab: student versions for learners, solutions only for whoever asks for them.

``python -m vae_helpers.lab student``    student versions in ``work/`` (made on first use, never overwritten);
``python -m vae_helpers.lab solutions``  the same, plus the instructor versions in ``work/solutions/``;
``python -m vae_helpers.lab teacher``    the instructor versions in ``notebooks/`` with nbgrader's instructor tools
                                         (an installed package opens copies of them in ``work/instructor/``);
``python -m vae_helpers.lab which``      what each of the three opens. Arguments after ``--`` go to ``jupyter lab``;
``--fast`` runs the kernels in fast mode, ``--notebooks`` picks notebooks, ``--prepare-only`` starts no JupyterLab.

The learners' JupyterLab runs with the configuration in ``lab/student/`` (nbgrader's Create Assignment,
Formgrader and course tools switched off); every route saves widget state into the notebook
(``lab/overrides.d/``), so a reopened explorer shows its last picture. In a clone ``work/`` is the
clone's; from an installed package it is ``work/`` in the current folder (``--work-dir`` changes it),
and nothing is written into the package.
"""

from __future__ import annotations

import argparse
import copy
import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import shipped
from ._io import atomic_write
from .runner import expand_notebooks

NOTEBOOK_DIR = shipped.notebook_dir()
WORK_DIR = shipped.work_dir()
STUDENT_CONFIG = shipped.lab_config_dir() / "student"
OVERRIDES = shipped.lab_config_dir() / "overrides.d" / "vae-notebooks.json"

ROUTES = {
    "student": "student versions (exercises to solve, no solutions, no hidden tests) in work/",
    "solutions": "student versions in work/ and, for self-study, the instructor versions with solutions in "
                 "work/solutions/",
    "teacher": "instructor versions in notebooks/ (solutions and hidden tests) with nbgrader's Create Assignment "
               "and Formgrader",
}


def prepare_student(work_dir: Path = WORK_DIR, sources: list[Path] | None = None) -> list[str]:
    """Write the student version of each instructor notebook into ``work_dir`` unless a file of that name exists.

    A learner's notebook is never overwritten: delete it (or rename it) to get a fresh copy. Returns one line
    per notebook saying what happened.
    """
    from .grade import student_version  # nbgrader is imported only here
    import nbformat

    sources = sorted(NOTEBOOK_DIR.glob("*.ipynb")) if sources is None else sources
    work_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for src in sources:
        dest = work_dir / src.name
        if dest.exists():
            lines.append(f"kept   {dest} (your copy; delete it for a fresh student version)")
            continue
        nb = student_version(nbformat.read(src, as_version=4))
        nb.metadata["language_info"] = kernel_language_info()  # what the kernel reports: opening it changes nothing
        text = nbformat.writes(nb)
        atomic_write(dest, lambda f, text=text: f.write(text.encode("utf-8")))
        lines.append(f"wrote  {dest}")
    return lines


def kernel_language_info() -> dict:
    """The ``language_info`` this Python's ipykernel reports, which JupyterLab writes into a notebook on open."""
    from ipykernel.ipkernel import IPythonKernel

    return copy.deepcopy(IPythonKernel.language_info)


def prepare_solutions(work_dir: Path = WORK_DIR, sources: list[Path] | None = None, folder: str = "solutions") -> list[str]:
    """Copy the instructor versions (with solutions) into ``work_dir/folder`` without overwriting a changed file there."""
    sources = sorted(NOTEBOOK_DIR.glob("*.ipynb")) if sources is None else sources
    dest_dir = work_dir / folder
    dest_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for src in sources:
        dest = dest_dir / src.name
        if dest.exists() and not filecmp.cmp(src, dest, shallow=False):
            lines.append(f"kept   {dest} (changed by you; delete it for a fresh copy)")
            continue
        atomic_write(dest, lambda f, src=src: f.write(src.read_bytes()))
        lines.append(f"copied {dest}")
    return lines


def install_overrides(prefix: Path | None = None) -> Path:
    """Put the project's JupyterLab setting overrides (widget state saved in notebooks) into this environment."""
    target = Path(prefix or sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.d" / OVERRIDES.name
    if not (target.is_file() and filecmp.cmp(OVERRIDES, target, shallow=False)):
        atomic_write(target, lambda f: f.write(OVERRIDES.read_bytes()))
    return target


def student_config(work_dir: Path = WORK_DIR) -> Path:
    """The learners' Jupyter configuration folder: ``lab/student/`` in a clone; from an installed package a copy
    in ``work_dir/.jupyter-student`` (Jupyter may write into its configuration folder, never into the package)."""
    if shipped.in_clone():
        return STUDENT_CONFIG
    dest = work_dir / ".jupyter-student"
    shutil.copytree(STUDENT_CONFIG, dest, dirs_exist_ok=True)
    return dest


def teacher_root(work_dir: Path = WORK_DIR) -> Path:
    """Where the teacher route opens: ``notebooks/`` in a clone, else ``work_dir/instructor`` (copies made by main)."""
    return NOTEBOOK_DIR if shipped.in_clone() else work_dir / "instructor"


def lab_command(route: str, extra: list[str], work_dir: Path = WORK_DIR,
                fast: bool = False) -> tuple[list[str], dict[str, str]]:
    """The ``jupyter lab`` command line and environment for ``route`` (student, solutions or teacher); with
    ``fast`` its kernels run the notebooks in fast mode."""
    if route not in ROUTES or route == "which":
        raise ValueError(f"route must be one of {sorted(ROUTES)}, got {route!r}")
    env = dict(os.environ)
    if fast:
        env["VAE_FAST"] = "1"
    root = teacher_root(work_dir) if route == "teacher" else work_dir
    if route != "teacher":
        from jupyter_core.paths import jupyter_config_dir

        user_lab = Path(jupyter_config_dir()) / "lab"  # the learner's own settings and workspaces stay where they were
        env.setdefault("JUPYTERLAB_SETTINGS_DIR", str(user_lab / "user-settings"))
        env.setdefault("JUPYTERLAB_WORKSPACES_DIR", str(user_lab / "workspaces"))
        env["JUPYTER_CONFIG_DIR"] = str(student_config(work_dir))  # nbgrader's instructor tools off
    return [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={root}", *extra], env


def describe_routes() -> str:
    """One line per route: the command and what it opens."""
    width = max(map(len, ROUTES))
    return "\n".join(f"python -m vae_helpers.lab {name:<{width}}  {what}" for name, what in ROUTES.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Routes:\n" + describe_routes(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("route", choices=[*ROUTES, "which"], help="what to open (see below)")
    parser.add_argument("--work-dir", type=Path, default=WORK_DIR, help=f"the learner's folder (default: {WORK_DIR})")
    parser.add_argument("--notebooks", nargs="+", metavar="NOTEBOOK",
                        help="which instructor notebooks (files, folders or glob patterns; default: all of the series)")
    parser.add_argument("--fast", action="store_true", help="kernels run the notebooks in fast mode (as VAE_FAST=1)")
    parser.add_argument("--prepare-only", action="store_true", help="write the notebooks and settings but do not start JupyterLab")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.route == "which":
        print(describe_routes())
        return 0
    sources = None
    if args.notebooks:
        sources = expand_notebooks(args.notebooks)
        missing = [str(p) for p in sources if not p.is_file() or p.suffix != ".ipynb"]
        if missing or not sources:
            parser.error(f"--notebooks: not notebook files: {missing or args.notebooks}")
    print(f"Opening the {args.route} route: {ROUTES[args.route]}.")
    if args.route in ("student", "solutions"):
        print("\n".join(prepare_student(args.work_dir, sources)))
    if args.route == "solutions":
        print("\n".join(prepare_solutions(args.work_dir, sources)))
        print("The solutions are in work/solutions/: try each exercise first; the checks tell you what to fix.")
    if args.route == "teacher" and not shipped.in_clone():
        print("\n".join(prepare_solutions(args.work_dir, sources, folder="instructor")))
    try:
        install_overrides()
    except OSError as err:
        print(f"note: cannot write the widget-state setting into {sys.prefix} ({err.strerror or err}); explorers "
              "will not show their last picture after a reopen", file=sys.stderr)
    cmd, env = lab_command(args.route, extra, args.work_dir, fast=args.fast)  # also writes the learners' configuration when installed
    if args.prepare_only:
        print("Prepared; JupyterLab not started (--prepare-only).")
        return 0
    if shutil.which("jupyter", path=str(Path(sys.executable).parent)) is None:
        print("error: JupyterLab is not installed in this environment (pip install -r requirements.txt, or "
              "pip install 'vae-notebooks[lab]')", file=sys.stderr)
        return 2
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
