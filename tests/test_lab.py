"""The JupyterLab routes: learners get student versions and no instructor tools; solutions only on request."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

from vae_helpers import grade, lab

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "fixture_exercises.ipynb"


def test_student_route_writes_student_versions_and_never_overwrites_a_learners_work(tmp_path: Path) -> None:
    lines = lab.prepare_student(tmp_path, [FIXTURE])
    written = tmp_path / FIXTURE.name
    assert lines == [f"wrote  {written}"]
    student = nbformat.read(written, as_version=4)
    assert "BEGIN SOLUTION" not in json.dumps(student) and "raise NotImplementedError()" in json.dumps(student)
    assert grade.grade_ids(student) == grade.grade_ids(nbformat.read(FIXTURE, as_version=4))
    from ipykernel.ipkernel import IPythonKernel  # JupyterLab writes this on open: already there, nothing changes

    assert student.metadata["language_info"] == IPythonKernel.language_info
    written.write_text(written.read_text().replace("# YOUR CODE HERE", "# my answer"))
    mine = written.read_bytes()
    assert lab.prepare_student(tmp_path, [FIXTURE])[0].startswith("kept")
    assert written.read_bytes() == mine
    assert not list(tmp_path.glob(".*.part")), "no temporary file left behind"


def test_solutions_route_copies_instructor_versions_apart_and_keeps_changed_copies(tmp_path: Path) -> None:
    lab.prepare_solutions(tmp_path, [FIXTURE])
    copy = tmp_path / "solutions" / FIXTURE.name
    assert copy.read_bytes() == FIXTURE.read_bytes()
    copy.write_text(copy.read_text() + " ")
    assert lab.prepare_solutions(tmp_path, [FIXTURE])[0].startswith("kept")
    assert copy.read_text().endswith(" ")


def test_student_lab_switches_off_every_nbgrader_instructor_tool_and_the_teacher_lab_keeps_them(tmp_path: Path) -> None:
    cmd, env = lab.lab_command("student", ["--no-browser"], tmp_path)
    assert cmd[:4] == [sys.executable, "-m", "jupyter", "lab"] and f"--ServerApp.root_dir={tmp_path}" in cmd
    config = Path(env["JUPYTER_CONFIG_DIR"])
    assert config == lab.STUDENT_CONFIG
    assert not str(env["JUPYTERLAB_SETTINGS_DIR"]).startswith(str(lab.STUDENT_CONFIG)), "settings stay the learner's"
    page = json.loads((config / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"] == {"@jupyter/nbgrader": True}
    server = json.loads((config / "jupyter_server_config.json").read_text())["ServerApp"]["jpserver_extensions"]
    installed = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / "nbgrader.json"
    if installed.is_file():  # every server extension nbgrader switches on is switched off again
        enabled = json.loads(installed.read_text())["ServerApp"]["jpserver_extensions"]
        assert {k for k, v in enabled.items() if v} <= {k for k, v in server.items() if v is False}
    cmd, env = lab.lab_command("teacher", [], tmp_path)
    assert f"--ServerApp.root_dir={lab.NOTEBOOK_DIR}" in cmd
    assert env.get("JUPYTER_CONFIG_DIR") != str(lab.STUDENT_CONFIG)
    with pytest.raises(ValueError, match="route"):
        lab.lab_command("everything", [], tmp_path)


def test_overrides_save_widget_state_and_are_installed_once(tmp_path: Path) -> None:
    target = lab.install_overrides(tmp_path)
    settings = json.loads(target.read_text())
    assert settings["@jupyter-widgets/jupyterlab-manager:plugin"]["saveState"] is True
    stamp = target.stat().st_mtime_ns
    assert lab.install_overrides(tmp_path) == target and target.stat().st_mtime_ns == stamp


def test_which_names_every_route(capsys) -> None:
    assert lab.main(["which"]) == 0
    out = capsys.readouterr().out
    assert all(f"vae_helpers.lab {route}" in out for route in ("student", "solutions", "teacher"))


def test_from_an_installed_package_the_lab_writes_only_into_the_work_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(lab.shipped, "in_clone", lambda: False)
    work = tmp_path / "work"
    cmd, env = lab.lab_command("student", [], work)
    config = Path(env["JUPYTER_CONFIG_DIR"])
    assert config == work / ".jupyter-student" and config != lab.STUDENT_CONFIG
    assert (config / "labconfig" / "page_config.json").read_bytes() == (lab.STUDENT_CONFIG / "labconfig" / "page_config.json").read_bytes()
    cmd, _ = lab.lab_command("teacher", [], work)
    assert f"--ServerApp.root_dir={work / 'instructor'}" in cmd
    assert lab.prepare_solutions(work, [FIXTURE], folder="instructor") == [f"copied {work / 'instructor' / FIXTURE.name}"]


def test_shipped_files_are_the_clones_folders_in_a_clone() -> None:
    assert lab.shipped.in_clone()
    assert lab.NOTEBOOK_DIR == lab.shipped.CLONE_DIR / "notebooks" == grade.NOTEBOOK_DIR
    assert lab.OVERRIDES.is_file() and (lab.STUDENT_CONFIG / "jupyter_server_config.json").is_file()


def test_fast_flag_and_chosen_notebooks(tmp_path: Path, capsys) -> None:
    _, env = lab.lab_command("student", [], tmp_path, fast=True)
    assert env["VAE_FAST"] == "1"
    assert lab.main(["student", "--prepare-only", "--work-dir", str(tmp_path), "--notebooks",
                     f"{FIXTURE.parent}/fixture_ex*.ipynb"]) == 0
    assert [p.name for p in tmp_path.glob("*.ipynb")] == [FIXTURE.name]
    with pytest.raises(SystemExit):
        lab.main(["student", "--prepare-only", "--work-dir", str(tmp_path), "--notebooks", str(tmp_path / "none-*.ipynb")])
