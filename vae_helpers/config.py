"""Run-mode settings: full mode for people, fast mode (``VAE_FAST=1``) for CI and nbval."""

from __future__ import annotations

import math
import os
from typing import TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
HEADLINE_PREFIX = "Headline metric:"


def is_fast() -> bool:
    """True when the environment variable ``VAE_FAST`` asks for the quick smoke-test mode."""
    raw = os.environ.get("VAE_FAST", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"VAE_FAST must be one of 1/0/true/false/yes/no, got {raw!r}")


def pick(full: T, fast: T) -> T:
    """Return ``fast`` in fast mode and ``full`` otherwise, e.g. ``pick(full=30, fast=1)`` epochs."""
    return fast if is_fast() else full


def headline(name: str, value: float, unit: str = "", digits: int = 2) -> None:
    """Print the notebook's headline metric in the line format ``make run`` collects.

    Returns nothing, so a cell that ends with this call shows the line once (not again as ``Out[ ]``).
    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError("headline name must be a non-empty string")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"headline value must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"headline value must be finite, got {value}")
    text = f"{value:.{digits}f}" + (f" {unit}" if unit else "")
    print(f"{HEADLINE_PREFIX} {name} = {text}")
