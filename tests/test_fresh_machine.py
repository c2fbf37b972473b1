"""On a machine without bubblewrap and chromium, the tests that use them skip (one line per reason, with the
install command) or run without the sandbox, and none errors: ``make test`` passes on a fresh machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HIDDEN = {"bwrap", "chromium", "chromium-browser"}
# The tests that use bubblewrap or chromium; of the student versions only the fixture's, which runs in seconds.
TARGETS = ["tests/test_grade.py", "tests/test_grade_class.py", "tests/test_grade_isolation.py", "tests/browser",
           "tests/test_student_versions.py"]
SELECT = ["-m", "sandbox or browser or slow", "-k", "not test_student_versions or fixture_exercises"]


def path_without(names: set[str], bin_dir: Path) -> str:
    """A ``PATH`` of one folder that links every program of the current ``PATH`` except ``names``."""
    bin_dir.mkdir()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            link = bin_dir / entry.name
            if entry.name in names or os.path.lexists(link):
                continue
            if entry.is_file() and os.access(entry.path, os.X_OK):
                link.symlink_to(entry.path)
    return str(bin_dir)


@pytest.mark.slow
def test_without_bubblewrap_and_chromium_the_tests_skip_or_run_unsandboxed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VAE_CHROMIUM", "VAE_BROWSER_REQUIRED")}
    env["PATH"] = path_without(HIDDEN, tmp_path / "bin")
    env["VAE_FAST"] = "1"
    probe = subprocess.run([sys.executable, "-c", "import shutil; print(shutil.which('bwrap'), shutil.which('chromium'))"],
                           env=env, capture_output=True, text=True)
    assert probe.stdout.split() == ["None", "None"], probe.stdout + probe.stderr
    done = subprocess.run([sys.executable, "-m", "pytest", *TARGETS, *SELECT, "-q", "-p", "no:cacheprovider"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    final = out.strip().splitlines()[-1]
    assert not re.search(r"\d+ (failed|errors?)\b", final), out[-4000:]
    assert int(re.search(r"(\d+) passed", final).group(1)) >= 2, final  # the fixture's student version was graded
    sandbox_lines = [line for line in out.splitlines() if "bubblewrap (bwrap) is not installed" in line]
    assert len(sandbox_lines) == 1 and "apt-get install -y bubblewrap" in sandbox_lines[0], out[-4000:]
    browser_lines = [line for line in out.splitlines() if "browser suite skipped: no chromium" in line]
    assert len(browser_lines) == 1 and "apt-get install chromium" in browser_lines[0], out[-4000:]
