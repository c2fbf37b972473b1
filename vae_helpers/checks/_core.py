"""Shared machinery of the checkers: the CheckFailed verdict, its short display in IPython, comparisons."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch


class CheckFailed(AssertionError):
    """A checker's verdict that the learner's answer is wrong; the message says what was expected and why."""


def _short_feedback(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
    """IPython handler for ``CheckFailed``: the learner's frames (if their code crashed), then "✗ <message>"."""
    stb: list[str] = []
    cause = value.__cause__
    if cause is not None and cause.__traceback__ is not None:
        learner_tb = _without_package_frames(cause.__traceback__)
        if learner_tb is not None:
            stb = shell.InteractiveTB.structured_traceback(type(cause), cause, learner_tb)
    stb = stb + ["✗ " + str(value)]
    shell._showtraceback(etype, value, stb)  # an "error" output with ename CheckFailed; the cell still fails
    return stb


def _without_package_frames(tb: Any) -> Any:
    """A copy of the traceback chain ``tb`` without the frames of files inside ``vae_helpers``, or None."""
    import os
    from types import TracebackType

    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # vae_helpers/
    frames = []
    while tb is not None:
        if not os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(package_dir):
            frames.append(tb)
        tb = tb.tb_next
    chain = None
    for t in reversed(frames):
        chain = TracebackType(chain, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return chain


def install_short_feedback() -> bool:
    """In an IPython shell, show failed checks as a short "✗" block (idempotent); return True if installed."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return False
    current = tuple(getattr(shell, "custom_exceptions", ()))
    if any(c.__name__ != "CheckFailed" for c in current):
        return False  # someone else's handler: leave it alone (IPython keeps only one)
    shell.set_custom_exc((CheckFailed,), _short_feedback)
    return True


def ok(message: str) -> None:
    """Print the one-line success message of a checker."""
    print(f"✓ {message}")


# the vae_helpers functions the running checker refuses to see called: id(code object) -> message (a stack)
_REFUSED: list[dict[int, str]] = []


def refuses(*names: str, **delegations: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a checker: the learner's code must not call these references of ``vae_helpers``.

    ``names`` are paths inside ``vae_helpers`` ("losses.gaussian_kl", "models.ConvVAE.decode");
    ``delegations`` map such a path (with "__" for ".") to the message shown when it is called.
    A call is seen by its code object, however the learner reached the function (alias, method).
    """
    import functools

    def decorate(checker: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(checker)
        def wrapped(*args: Any, **kwargs: Any) -> None:
            # keyed by id: code objects compare equal by content, and a learner may type the same code
            refused = {id(_resolve(name).__code__): f"your answer calls vae_helpers.{name}; write it yourself"
                       for name in names}
            refused.update({id(_resolve(path.replace("__", ".")).__code__): message
                            for path, message in delegations.items()})
            _REFUSED.append(refused)
            try:
                return checker(*args, **kwargs)
            finally:
                _REFUSED.pop()

        return wrapped

    return decorate


def _resolve(path: str) -> Any:
    """The function at ``path`` inside ``vae_helpers`` ("models.ConvVAE.decode")."""
    import importlib

    module, *attributes = path.split(".")
    obj: Any = importlib.import_module(f"vae_helpers.{module}")
    for attribute in attributes:
        obj = getattr(obj, attribute)
    return obj


@contextmanager
def _watch_calls(refused: Mapping[int, str]) -> Iterator[list[str]]:
    """Record (in the yielded list) the message of every refused function called inside the block."""
    import sys

    seen: list[str] = []
    if not refused:
        yield seen
        return
    previous = sys.getprofile()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and id(frame.f_code) in refused and refused[id(frame.f_code)] not in seen:
            seen.append(refused[id(frame.f_code)])
        if previous is not None:
            previous(frame, event, arg)

    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


def call_learner(fn: Callable[..., Any], *args: Any, name: str | None = None, **kwargs: Any) -> Any:
    """Call the learner's ``fn``; turn ``NotImplementedError``, crashes and calls of refused references into ``CheckFailed``.

    A crash keeps the learner's exception as ``__cause__``, so the short-feedback handler can show
    the frames of the learner's own code.
    """
    label = name or getattr(fn, "__name__", "your function")
    if not callable(fn):
        raise CheckFailed(f"expected a function for {label}, got {type(fn).__name__}")
    error: Exception | None = None
    with _watch_calls(_REFUSED[-1] if _REFUSED else {}) as refused_calls:
        try:
            out = fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - the learner's code may raise anything
            error = err
    if refused_calls:
        raise CheckFailed(refused_calls[0]) from None
    if isinstance(error, NotImplementedError):
        raise CheckFailed(f"{label} is not implemented yet: replace `raise NotImplementedError()` with your code") from None
    if isinstance(error, CheckFailed):
        raise error
    if error is not None:
        raise CheckFailed(f"calling {label} raised {type(error).__name__}: {error}") from error
    return out


def expect_tensor(out: Any, shape: tuple[int, ...], label: str, hint: str = "") -> torch.Tensor:
    """Fail unless ``out`` is a floating tensor of exactly ``shape``."""
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{label} should return a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise CheckFailed(f"{label} returned shape {tuple(out.shape)}, expected {tuple(shape)}. {hint}".strip())
    if not torch.isfinite(out).all():
        raise CheckFailed(f"{label} returned non-finite values (nan or inf); check for log(0) or exp overflow")
    return out


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block under ``torch.manual_seed(seed)`` and restore the global (CPU) RNG afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


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
            raise CheckFailed(f"{label} does not match the expected values: expected {_preview(expected)}, "
                              f"got {_preview(got)}. Likely mistake: {hint}")
    diff = (got.double() - expected.double()).abs().max().item() if got.shape == expected.shape else float("nan")
    raise CheckFailed(
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
