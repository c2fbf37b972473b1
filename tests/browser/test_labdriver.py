"""The suite's own machinery: the one-line skip reason, and a server that leaves nothing behind, even on failure."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import labdriver

pytestmark = pytest.mark.browser
# These tests need no chromium (they start JupyterLab only), so they do not skip without one.


def test_why_not_names_a_missing_chromium(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VAE_CHROMIUM", str(tmp_path / "no-such-chromium"))
    reason = labdriver.why_not()
    assert reason is not None and reason.startswith("browser suite skipped:") and "chromium" in reason
    assert "\n" not in reason


def test_why_not_names_a_missing_playwright(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)  # makes the import fail
    reason = labdriver.why_not()
    assert reason is not None and "playwright" in reason


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_server_its_kernel_and_its_directories_are_gone_after_a_failure() -> None:
    seen: dict[str, object] = {}
    with pytest.raises(RuntimeError, match="a test failed here"):
        with labdriver.jupyter_lab() as lab:
            assert lab.url.startswith("http://127.0.0.1:")
            assert sorted(p.name for p in lab.root.glob("*.ipynb")) == labdriver.NOTEBOOKS
            kernel = lab.api("POST", "/api/kernels", {"name": "python3"})
            seen.update(root=lab.root, server=lab.process.pid, below=labdriver._descendants(lab.process.pid))
            assert kernel["id"] and seen["below"], "the kernel process should run below the server"
            raise RuntimeError("a test failed here")
    assert not Path(seen["root"]).exists(), "the temporary root was left on disk"
    for pid in [seen["server"], *seen["below"]]:
        assert not _alive(pid), f"process {pid} ({'server' if pid == seen['server'] else 'kernel'}) still runs"


def test_the_server_answers_only_with_its_token(lab: labdriver.Lab) -> None:
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{lab.url}/api/contents", timeout=30)
    assert refused.value.code == 403
    assert lab.api("GET", "/api/contents")["type"] == "directory"
