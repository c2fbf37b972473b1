"""The classroom pins in requirements.txt and the conda environment.yml list the same packages."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN_CARD = {"torch", "jupyterlab", "numpy", "matplotlib", "ipywidgets", "nbval", "scipy", "ipykernel", "tqdm", "pytest"}


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip().lstrip("-").strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def requirements():
    return _pins((ROOT / "requirements.txt").read_text().splitlines())


def environment():
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    return _pins(lines[start + 1 :])


def test_requirements_pin_every_design_card_package():
    pins = requirements()
    assert DESIGN_CARD <= set(pins), f"missing pins: {DESIGN_CARD - set(pins)}"
    assert pins["torch"] == "2.13.0"


def test_environment_yml_matches_requirements():
    assert environment() == requirements()


def test_environment_yml_uses_python_311():
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


def test_every_requirement_line_is_pinned():
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9_.+\-]*", line), f"{name}: unpinned {line!r}"
