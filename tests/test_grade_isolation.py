"""Hostile submissions against vae_helpers.grade: the key stays unread and unchanged, nothing outside the
kernel's temporary directory is written, silencing tricks score 0, and budgets hold.

Each test grades a tiny instructor notebook (one checker from vae_helpers.checks, one hidden test, one
plain assert) so a grading takes seconds. Where a test proves that the sandbox stops an attack, the same
attack is first shown to work with ``isolate=False``, so the test cannot pass for the wrong reason.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import socket
from pathlib import Path

import nbformat
import pytest

import vae_helpers
from vae_helpers import grade, sandbox

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.sandbox


def meta(grade_id: str, solution: bool, points: int = 0) -> dict:
    nb = {"grade_id": grade_id, "schema_version": 3, "task": False, "solution": solution, "locked": not solution,
          "grade": points > 0}
    return {"nbgrader": nb | ({"points": points} if points else {})}


SECRET = 7321
KEY_CELLS = [
    ("from vae_helpers import checks", {}),
    ("def conv_output_size(size, kernel, stride, padding):\n    ### BEGIN SOLUTION\n"
     "    return (size + 2 * padding - kernel) // stride + 1\n    ### END SOLUTION", meta("t-conv", True)),
    ("checks.check_conv_output_size(conv_output_size)\n### BEGIN HIDDEN TESTS\n"
     f"SECRET = {SECRET}\nassert conv_output_size(100, 3, 2, 1) == 50, 'hidden: 100 -> 50'\n### END HIDDEN TESTS",
     meta("t-conv-check", False, 2)),
    ("def answer():\n    ### BEGIN SOLUTION\n    return 42\n    ### END SOLUTION", meta("t-answer", True)),
    ("assert answer() == 42, 'answer() must return 42'", meta("t-answer-check", False, 1)),
]
RIGHT_CONV = "def conv_output_size(size, kernel, stride, padding):\n    return (size + 2 * padding - kernel) // stride + 1"


@pytest.fixture()
def key(tmp_path: Path) -> Path:
    """The instructor notebook in a folder of its own (the key)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src, metadata=m) for src, m in KEY_CELLS])
    (tmp_path / "key").mkdir()
    nbformat.write(nb, tmp_path / "key" / "tiny.ipynb")
    return tmp_path / "key" / "tiny.ipynb"


def submission(key: Path, dest: Path, **sources: str) -> Path:
    """The student version of the key with the given solution cells (by grade_id) filled in; extra cells
    go after a solution cell with the id ``after:<grade_id>``."""
    nb = grade.student_version(nbformat.read(key, as_version=4))
    for gid, src in sources.items():
        gid = gid.replace("_", "-")
        if gid.startswith("after-"):
            index = next(i for i, c in enumerate(nb.cells) if grade.nbgrader_meta(c).get("grade_id") == gid[6:])
            nb.cells.insert(index + 1, nbformat.v4.new_code_cell(src))
        else:
            next(c for c in nb.cells if grade.nbgrader_meta(c).get("grade_id") == gid).source = src
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return dest


def run(path: Path, key: Path, isolate: bool = True, **limits: float) -> grade.Report:
    return grade.grade_submission(path, source=key, limits=grade.Limits(isolate=isolate, **limits))


def outputs(report: grade.Report) -> str:
    return "\n".join(o.get("text", "") + o.get("ename", "") + " " + o.get("evalue", "") for c in report.executed.cells for o in c.get("outputs", []))


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- the key and the machine


READ_KEY = (f"import re, pathlib\ndef answer():\n    text = pathlib.Path({{key!r}}).read_text()\n"
            "    return 42 if 'SECRET = ' in text else 0")


@pytest.mark.slow
def test_a_submission_cannot_read_the_key_or_other_submissions(key: Path, tmp_path: Path) -> None:
    other = submission(key, tmp_path / "class" / "bob" / "tiny.ipynb", t_conv=RIGHT_CONV)
    spy = submission(key, tmp_path / "class" / "eve" / "tiny.ipynb", t_answer=READ_KEY.format(key=str(key)),
                     after_t_answer=(f"import os\nfor p in [{str(other)!r}, {str(REPO / 'notebooks')!r}, {str(REPO / 'tests')!r},"
                                     f" {str(REPO / 'README.md')!r}]:\n    print('SEEN' if os.path.exists(p) else 'hidden', p)\n"
                                     f"print('HOME', sorted(os.listdir({str(Path.home())!r})))"))
    unconfined = run(spy, key, isolate=False)  # the attack works without the sandbox ...
    assert {e.grade_id: e.status for e in unconfined.exercises}["t-answer-check"] == "passed"
    report = run(spy, key)  # ... and fails inside it
    results = {e.grade_id: e for e in report.exercises}
    assert results["t-answer-check"].status == "failed" and report.score == 0, grade.format_report(report)
    assert "No such file or directory" in outputs(report) and "SEEN" not in outputs(report), outputs(report)
    assert outputs(report).count("hidden ") == 4
    # Of the home directory only what holds this Python or the package (bound read-only) is there.
    home = json.loads(outputs(report).split("HOME ")[1].splitlines()[0].replace("'", '"'))
    allowed = {p.relative_to(Path.home()).parts[0] for p in sandbox.readable_paths() if Path.home() in p.parents}
    assert set(home) <= allowed, (home, allowed)


@pytest.mark.slow
def test_a_submission_cannot_write_outside_its_directory_nor_change_the_next_grade(key: Path, tmp_path: Path) -> None:
    package = Path(vae_helpers.__file__).parent
    targets = [key, package / "checks" / "__init__.py", package / "pwned.py", REPO / "pwned.txt", tmp_path / "pwned.txt",
               Path("/tmp/pwned.txt"), Path.home() / "pwned.txt"]
    writer = ("import pathlib\nfor t in {targets!r}:\n    try:\n        pathlib.Path(t).write_text('assert True')\n"
              "        print('WROTE', t)\n    except OSError as err:\n        print('refused', t, type(err).__name__)\n"
              "pathlib.Path('mine.txt').write_text('a file in my own directory is fine')\nprint('own dir ok')")
    rewrite = submission(key, tmp_path / "mallory" / "tiny.ipynb", after_t_answer=writer.format(targets=[str(t) for t in targets]))
    before_key, before_pkg = key.read_bytes(), digest(package)
    report = run(rewrite, key)
    assert "WROTE" not in outputs(report) and outputs(report).count("refused") == len(targets), outputs(report)
    assert "own dir ok" in outputs(report)
    assert key.read_bytes() == before_key and digest(package) == before_pkg
    assert not any(Path(t).exists() for t in targets if t not in (key, package / "checks" / "__init__.py"))
    # Untouched submission graded after it: still 0 (the key's checks were not rewritten).
    blank = submission(key, tmp_path / "alice" / "tiny.ipynb")
    assert run(blank, key).score == 0
    shutil.rmtree(tmp_path / "mallory")


@pytest.mark.slow
def test_a_submission_reaches_no_network(key: Path, tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        port = server.getsockname()[1]
        caller = ("import socket\ndef answer():\n    socket.create_connection(('127.0.0.1', %d), timeout=3).close()\n"
                  "    return 42" % port)
        path = submission(key, tmp_path / "net" / "tiny.ipynb", t_answer=caller)
        assert {e.grade_id: e.status for e in run(path, key, isolate=False).exercises}["t-answer-check"] == "passed"
        report = run(path, key)
        assert {e.grade_id: e.status for e in report.exercises}["t-answer-check"] == "failed"
        assert report.exercises[-1].message.startswith(("ConnectionRefusedError", "OSError", "TimeoutError")), report.exercises
    finally:
        server.close()


def test_without_bubblewrap_the_grader_refuses_unless_told(key: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = submission(key, tmp_path / "s" / "tiny.ipynb")
    sandbox.isolation_problem.cache_clear()
    which = shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None if name == "bwrap" else which(name))
    try:
        assert grade.main([str(path), "--source", str(key), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "bubblewrap (bwrap) is not installed" in err and "--no-isolation" in err
        with pytest.raises(sandbox.IsolationUnavailable):
            run(path, key)
    finally:
        sandbox.isolation_problem.cache_clear()


# ----------------------------------------------------------------------------- silencing the checks


SILENCERS = {
    "custom exception handler": "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)",
    "excepthook and displayhook": "import sys\nsys.excepthook = lambda *a: None",
    "a replaced CheckFailed handler": ("from vae_helpers.checks import CheckFailed\n"
                                       "get_ipython().set_custom_exc((CheckFailed,), lambda *a, **k: None)"),
    "a no-op checker": "checks.check_conv_output_size = lambda fn: print('✓ all good')",
    "a patched reference": "import vae_helpers.models\nvae_helpers.models.conv_output_size = lambda *a: 0",
    "a rebound module": "import types\nchecks = types.SimpleNamespace(check_conv_output_size=lambda fn: None)",
    "an input transformer": "get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])",
    "a post-run hook": ("def _clear(result):\n    result.error_in_exec = None\n"
                        "get_ipython().events.register('post_run_cell', _clear)"),
}


@pytest.mark.slow
@pytest.mark.parametrize("trick", list(SILENCERS), ids=lambda t: t.replace(" ", "-"))
def test_silencing_tricks_score_zero_and_are_flagged(trick: str, key: Path, tmp_path: Path) -> None:
    # Wrong, but right on the hidden test's one case: only the checker can catch it.
    wrong = "def conv_output_size(size, kernel, stride, padding):\n    return 50 if (size, kernel, stride, padding) == (100, 3, 2, 1) else 0"
    path = submission(key, tmp_path / "s" / "tiny.ipynb", t_conv=wrong + "\n" + SILENCERS[trick])
    report = run(path, key)
    assert report.score == 0, grade.format_report(report)
    assert all(e.status == "failed" for e in report.exercises), grade.format_report(report)
    if trick == "excepthook and displayhook":
        return  # IPython never calls sys.excepthook for a cell's error: harmless, so not flagged
    assert any(e.tampered and "tampered with" in e.message for e in report.exercises), grade.format_report(report)
    assert any("kernel tampering before the checks ['t-conv-check'" in f for f in report.flags), report.flags


@pytest.mark.slow
def test_an_honest_submission_is_not_flagged_as_tampering(key: Path, tmp_path: Path) -> None:
    path = submission(key, tmp_path / "s" / "tiny.ipynb", t_conv=RIGHT_CONV,
                      t_answer="import torch\nimport matplotlib.pyplot as plt\ndef answer():\n    return 42")
    report = run(path, key)
    assert report.score == report.max_score == 3 and not report.flags, grade.format_report(report)


# ----------------------------------------------------------------------------- budgets


@pytest.mark.slow
def test_budgets_time_memory_and_output_are_enforced_and_reported(key: Path, tmp_path: Path) -> None:
    hog = ("buffer = bytearray(4 << 30)  # more than the 3 GiB of address space allowed below\n" + RIGHT_CONV)
    flood = "print('x' * 10_000_000)\ndef answer():\n    return 42"
    path = submission(key, tmp_path / "s" / "tiny.ipynb", t_conv=hog, t_answer=flood)
    report = run(path, key, memory_bytes=3 << 30, output_bytes=50_000)
    assert {e.grade_id: e.status for e in report.exercises} == {"t-conv-check": "failed", "t-answer-check": "passed"}
    assert "MemoryError" in outputs(report), outputs(report)[:500]
    sizes = [len(json.dumps(c.get("outputs", []))) for c in report.executed.cells]
    assert max(sizes) < 60_000 and any("kept only the first 50000 bytes" in o.get("text", "")
                                       for c in report.executed.cells for o in c.get("outputs", []))
    assert report.limits["memory_bytes"] == 3 << 30 and report.limits["output_bytes"] == 50_000
    assert any("output cut" in w for w in report.warnings)
    slow = submission(key, tmp_path / "t" / "tiny.ipynb", t_conv="import time\ntime.sleep(30)\n" + RIGHT_CONV,
                      t_answer="def answer():\n    return 42")
    report = run(slow, key, budget_s=12.0)
    results = {e.grade_id: e for e in report.exercises}
    assert report.score == 0 and results["t-answer-check"].status == "not run", grade.format_report(report)
    assert report.seconds < 30 and report.limits["budget_s"] == 12.0


# ----------------------------------------------------------------------------- the grader's own output


WRITE_TO_GRADER = ("import os, sys\nos.write(1, b'FAKE 15/15 on fd 1\\n')\nos.write(2, b'\\x1b[2J FAKE on fd 2\\n')\n"
                   "sys.__stdout__.write('FAKE [] on __stdout__\\n'); sys.__stdout__.flush()\n"
                   "def answer():\n    return 0")


@pytest.mark.slow
@pytest.mark.parametrize("isolate", [False, True])
def test_the_kernel_cannot_write_to_the_graders_terminal_or_json(isolate: bool, key: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    sub = submission(key, tmp_path / "subs" / "loud.ipynb", t_answer=WRITE_TO_GRADER)
    done = subprocess.run([sys.executable, "-m", "vae_helpers.grade", str(sub), "--source", str(key), "--json", "--quiet"]
                          + ([] if isolate else ["--no-isolation"]), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert "FAKE" not in done.stdout and "FAKE" not in done.stderr and "\x1b[2J" not in done.stdout + done.stderr
    reports = json.loads(done.stdout)  # the report is still valid JSON
    assert reports[0]["exercises"][1]["status"] == "failed"


# ----------------------------------------------------------------------------- what the teacher and student read


LONG_WRONG = "def conv_output_size(size, kernel, stride, padding):\n    return size + 7  # no known mistake: the long generic hint"
CRASHING = ("def conv_output_size(size, kernel, stride, padding):\n    x = 1\n    y = 2\n    z = 3\n"
            "    return [][size]  # the learner's own bug, on line 5 of this cell")


@pytest.mark.slow
def test_feedback_keeps_the_whole_hint_and_blames_the_learners_crash_on_the_learner(key: Path, tmp_path: Path) -> None:
    wrong = run(submission(key, tmp_path / "a" / "tiny.ipynb", t_conv=LONG_WRONG), key, isolate=False)
    (conv, _) = wrong.exercises
    assert conv.message.endswith("when it moves by the stride") and len(conv.message) > 160, conv.message
    crash = run(submission(key, tmp_path / "b" / "tiny.ipynb", t_conv=CRASHING), key, isolate=False)
    (conv, _) = crash.exercises
    assert conv.status == "failed" and "IndexError" in conv.message
    assert conv.feedback != "a hidden test failed"  # line 5 of the learner's cell is not the check cell's hidden test


QUOTE_HIDDEN = ("def answer():\n    raise ValueError(' | '.join(get_ipython().user_ns['In']).replace(chr(10), ' '))"
                "  # every cell run so far, on one line")


@pytest.mark.slow
def test_no_hidden_test_and_no_probe_finding_reach_the_students_page(key: Path, tmp_path: Path) -> None:
    from vae_helpers.gradebook import feedback_html

    quoting = run(submission(key, tmp_path / "a" / "tiny.ipynb", t_conv=RIGHT_CONV, t_answer=QUOTE_HIDDEN), key, isolate=False)
    assert str(SECRET) in quoting.exercises[1].message  # the teacher's gradebook keeps the whole message
    page = feedback_html(quoting)
    assert str(SECRET) not in page and "100, 3, 2, 1" not in page and "a hidden test failed" in page
    silenced = run(submission(key, tmp_path / "b" / "tiny.ipynb", after_t_conv="get_ipython().set_custom_exc((Exception,), "
                              "lambda *a, **k: None)"), key, isolate=False)
    page = feedback_html(silenced)
    assert "custom_exceptions" not in page and "tampered" not in page and "did not count" in page


FORGE_REPLY = '''import ipykernel.ipkernel as _k
_real = _k.IPythonKernel.do_execute
async def _ok(self, *args, **kwargs):
    reply = await _real(self, *args, **kwargs)
    reply["status"] = "ok"  # every failed cell now replies ok
    return reply
_k.IPythonKernel.do_execute = _ok
def conv_output_size(size, kernel, stride, padding):
    raise NotImplementedError()'''


@pytest.mark.slow
def test_a_kernel_class_patched_to_reply_ok_earns_nothing_and_is_flagged(key: Path, tmp_path: Path) -> None:
    report = run(submission(key, tmp_path / "subs" / "forge.ipynb", t_conv=FORGE_REPLY), key, isolate=False)
    assert report.score == 0, [(e.grade_id, e.status, e.message) for e in report.exercises]
    assert all(e.tampered for e in report.exercises if not e.manual)


@pytest.mark.slow
def test_fast_mode_limits_hold_a_slot_for_minutes_at_most(key: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    sub = submission(key, tmp_path / "subs" / "tiny.ipynb", t_conv=RIGHT_CONV)
    done = subprocess.run([sys.executable, "-m", "vae_helpers.grade", str(sub), "--source", str(key), "--json", "--quiet",
                           "--no-isolation"], capture_output=True, text=True, timeout=300, cwd=REPO)
    limits = json.loads(done.stdout)[0]["limits"]
    assert limits["cell_timeout"] == 60 and limits["budget_s"] == 300  # seconds: fast-mode cells need seconds


READ_SHADOW = ("import pathlib\ndef answer():\n    try:\n        text = pathlib.Path('/etc/shadow').read_text()\n"
               "    except OSError:\n        return 0\n    return 42 if 'root:' in text else 0")


@pytest.mark.slow
def test_the_hosts_password_files_are_unreadable_in_the_sandbox(key: Path, tmp_path: Path) -> None:
    if not Path("/etc/shadow").exists():
        pytest.skip("this machine has no /etc/shadow")
    readable_here = False
    try:
        readable_here = "root:" in Path("/etc/shadow").read_text()
    except OSError:
        pass
    report = run(submission(key, tmp_path / "subs" / "shadow.ipynb", t_answer=READ_SHADOW), key)
    (_, answer) = report.exercises
    assert answer.score == 0, "a submission read /etc/shadow inside the sandbox"
    if readable_here:  # the grader itself can read it (it runs as root): the sandbox is what stops it
        unboxed = run(submission(key, tmp_path / "subs2" / "shadow.ipynb", t_answer=READ_SHADOW), key, isolate=False)
        assert unboxed.exercises[1].score == 1
