"""Checkers for the notebook exercises: each tries the learner's function and names the likely mistake.

A checker prints one line starting with a tick on success and raises ``AssertionError`` with a
hint on failure. Every checker has unit tests that feed it typical wrong answers.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch


# ----------------------------------------------------------------------------- shared machinery


def ok(message: str) -> None:
    """Print the one-line success message of a checker."""
    print(f"✓ {message}")


def call_learner(fn: Callable[..., Any], *args: Any, name: str | None = None, **kwargs: Any) -> Any:
    """Call the learner's ``fn``; turn ``NotImplementedError`` and crashes into a clear ``AssertionError``."""
    label = name or getattr(fn, "__name__", "your function")
    if not callable(fn):
        raise AssertionError(f"expected a function for {label}, got {type(fn).__name__}")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise AssertionError(f"{label} is not implemented yet: replace `raise NotImplementedError()` with your code") from None
    except Exception as err:  # noqa: BLE001 - the learner's code may raise anything
        raise AssertionError(f"calling {label} raised {type(err).__name__}: {err}") from None


def expect_tensor(out: Any, shape: tuple[int, ...], label: str, hint: str = "") -> torch.Tensor:
    """Fail unless ``out`` is a floating tensor of exactly ``shape``."""
    if not isinstance(out, torch.Tensor):
        raise AssertionError(f"{label} should return a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise AssertionError(f"{label} returned shape {tuple(out.shape)}, expected {tuple(shape)}. {hint}".strip())
    if not torch.isfinite(out).all():
        raise AssertionError(f"{label} returned non-finite values (nan or inf); check for log(0) or exp overflow")
    return out


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-4) -> bool:
    """``torch.allclose`` that is False (not an error) for mismatched shapes."""
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol)


def compare(got: torch.Tensor, expected: torch.Tensor, label: str, mistakes: Mapping[str, torch.Tensor],
            rtol: float = 1e-4, atol: float = 1e-4) -> None:
    """Pass if ``got`` matches ``expected``; else fail naming the first known mistake it matches.

    ``mistakes`` maps a hint (e.g. "you used the variance where the log-variance belongs") to the
    value that mistake would produce on the same inputs.
    """
    if close(got, expected, rtol, atol):
        return
    for hint, wrong in mistakes.items():
        if isinstance(wrong, torch.Tensor) and close(got, wrong.to(got.dtype), rtol, atol):
            raise AssertionError(f"{label} does not match the expected values. Likely mistake: {hint}")
    diff = (got.double() - expected.double()).abs().max().item() if got.shape == expected.shape else float("nan")
    raise AssertionError(
        f"{label} does not match the expected values (largest difference {diff:.4g}); "
        f"e.g. expected {_preview(expected)}, got {_preview(got)}"
    )


def _preview(t: torch.Tensor) -> str:
    flat = t.detach().flatten()[:3].tolist()
    return "[" + ", ".join(f"{v:.4g}" for v in flat) + (", ...]" if t.numel() > 3 else "]")


def points_table(exercises: Mapping[str, tuple[str, int]]) -> int:
    """Print the notebook's points table (grade_id -> (exercise, points)) and return the total."""
    if not exercises:
        raise ValueError("points_table needs at least one exercise")
    width = max(len(title) for title, _ in exercises.values())
    print(f"{'exercise':<{width}}  {'check cell':<28}  points")
    total = 0
    for grade_id, (title, points) in exercises.items():
        if isinstance(points, bool) or not isinstance(points, int) or points < 0:
            raise ValueError(f"points for {grade_id!r} must be a non-negative int, got {points!r}")
        print(f"{title:<{width}}  {grade_id:<28}  {points:>6}")
        total += points
    print(f"{'total':<{width}}  {'':<28}  {total:>6}")
    return total


# ----------------------------------------------------------------------------- notebook 01: autoencoder


# ----------------------------------------------------------------------------- notebook 02: VAE


# ----------------------------------------------------------------------------- notebook 03: conv VAE


# ----------------------------------------------------------------------------- notebook 04: planar flows
