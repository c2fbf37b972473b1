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


# the refusals of the running checker (a stack): full dotted path -> message, and the learner objects already read
_REFUSED: list[dict[str, Any]] = []


def refuses(*names: str, library: Mapping[str, str] | None = None, **delegations: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a checker: while it runs, the learner's code must not call (or name, or paste) these.

    ``names`` are paths inside ``vae_helpers`` ("losses.gaussian_kl", "models.ConvVAE.decode");
    ``library`` maps a library path ("torch.distributions.kl.kl_divergence") to the message shown
    when the learner uses that ready-made version; ``delegations`` map a ``vae_helpers`` path (with
    "__" for ".") to its own message. See ``_guard`` for how a call is caught.
    """
    import functools

    refused = {f"vae_helpers.{name}": f"your answer calls vae_helpers.{name}; write it yourself" for name in names}
    refused.update({f"vae_helpers.{path.replace('__', '.')}": message for path, message in delegations.items()})
    refused.update(library or {})

    def decorate(checker: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(checker)
        def wrapped(*args: Any, **kwargs: Any) -> None:
            _REFUSED.append({"refused": refused, "read": set()})
            try:
                return checker(*args, **kwargs)
            finally:
                _REFUSED.pop()

        wrapped.refused = refused  # type: ignore[attr-defined]
        return wrapped

    return decorate


def call_learner(fn: Callable[..., Any], *args: Any, name: str | None = None, **kwargs: Any) -> Any:
    """Call the learner's ``fn`` inside the guard; turn ``NotImplementedError``, crashes and refused uses into ``CheckFailed``.

    A crash keeps the learner's exception as ``__cause__``, so the short-feedback handler can show
    the frames of the learner's own code.
    """
    from ._guard import call_with_guard
    from ._source import read_learner_code

    label = name or getattr(fn, "__name__", "your function")
    if not callable(fn):
        raise CheckFailed(f"expected a function for {label}, got {type(fn).__name__}")
    frame = _REFUSED[-1] if _REFUSED else {"refused": {}, "read": set()}
    owner = getattr(fn, "__self__", fn)
    if id(owner) not in frame["read"]:
        message = read_learner_code(owner, frame["refused"])
        if message is None and owner is not fn:
            message = read_learner_code(fn, frame["refused"])
        if message is not None:
            raise CheckFailed(message)
        frame["read"].add(id(owner))
    out, error, tripped = call_with_guard(fn, args, kwargs, frame["refused"])
    if tripped:
        raise CheckFailed(tripped[0]) from None
    if isinstance(error, NotImplementedError):
        raise CheckFailed(f"{label} is not implemented yet: replace `raise NotImplementedError()` with your code") from None
    if isinstance(error, CheckFailed):
        raise error
    if error is not None:
        raise CheckFailed(f"calling {label} raised {type(error).__name__}: {error}") from error
    return out


def plain_tensor(out: Any, label: str) -> torch.Tensor:
    """Fail unless ``out`` is a plain ``torch.Tensor`` (no subclass, which could answer comparisons its own way)."""
    if type(out) not in (torch.Tensor, torch.nn.Parameter):
        raise CheckFailed(f"{label} should return a torch.Tensor, got {type(out).__name__}")
    return out


def plain_int(out: Any, label: str) -> int:
    """``out`` as an int: a Python int or a one-element integer tensor; anything else fails."""
    if type(out) in (torch.Tensor, torch.nn.Parameter) and out.numel() == 1 and not out.is_floating_point() \
            and out.dtype != torch.bool:
        return int(out.item())
    if type(out) is not int:
        raise CheckFailed(f"{label} should return an int, got {type(out).__name__}")
    return out


def expect_tensor(out: Any, shape: tuple[int, ...], label: str, hint: str = "") -> torch.Tensor:
    """Fail unless ``out`` is a plain floating tensor of exactly ``shape`` with finite values."""
    plain_tensor(out, label)
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
    """Print the notebook's points table (grade_id -> (exercise, points)) and return the maximum.

    Exercises with "optional" in their title are listed but kept out of the maximum (their points come on top).
    """
    if not exercises:
        raise ValueError("points_table needs at least one exercise")
    width = max(len(title) for title, _ in exercises.values())
    print(f"{'exercise':<{width}}  {'check cell':<28}  points")
    total = extra = 0
    for grade_id, (title, points) in exercises.items():
        if isinstance(points, bool) or not isinstance(points, int) or points < 0:
            raise ValueError(f"points for {grade_id!r} must be a non-negative int, got {points!r}")
        print(f"{title:<{width}}  {grade_id:<28}  {points:>6}")
        if "optional" in title.lower():
            extra += points
        else:
            total += points
    print(f"{'total (the maximum)':<{width}}  {'':<28}  {total:>6}")
    if extra:
        print(f"{'optional, on top':<{width}}  {'':<28}  {extra:>6}")
    return total
