"""Shared bits of the benchmark scripts: machine description, Markdown tables, JSON results (issue 8)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere, without installing
    sys.path.insert(0, str(ROOT))

from vae_helpers._io import atomic_write  # noqa: E402


def _load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


LOAD_AT_START = _load_average()  # when the script started, before its own work raised it


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _relative(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (commands read the same on every machine)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def machine_info() -> dict[str, Any]:
    """CPU model, core count, load averages (script start, now), Python and torch versions, threads and the date."""
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_start": LOAD_AT_START,
        "load_1min": _load_average(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(_relative(a) if os.path.isabs(a) else a) for a in ["python", *sys.argv]),
    }


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table with a header row; cells are formatted with ``str``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row {row!r} has {len(row)} cells, expected {len(columns)}")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def write_results(out_dir: Path, name: str, data: dict[str, Any], markdown: str,
                  echo: str | None = None) -> tuple[Path, Path]:
    """Write ``name.json`` and ``name.md`` into ``out_dir`` atomically, print ``echo`` (default: the Markdown) and
    where they went; return both paths."""
    out_dir = Path(out_dir)
    json_path = atomic_write(out_dir / f"{name}.json", lambda f: f.write(json.dumps(data, indent=2).encode()))
    md_path = atomic_write(out_dir / f"{name}.md", lambda f: f.write((markdown.rstrip() + "\n").encode()))
    print(markdown if echo is None else echo)
    print(f"\nwrote {md_path} and {json_path}")
    return json_path, md_path


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    if not values:
        raise ValueError("median of an empty sequence")
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def fmt(value: float | None, digits: int = 1) -> str:
    """A number with ``digits`` decimals, or ``-`` for None / NaN."""
    if value is None or value != value:
        return "-"
    return f"{value:.{digits}f}"
