"""How many CPU threads PyTorch trains with: the thread policy and the tuner inside ``train.fit`` (issue 16).

Why a policy at all: PyTorch's OpenMP threads spin-wait for each other at the end of every parallel
operation, so when another program keeps one core busy, the thread that shares that core stalls all
of them. On a 2-core machine an epoch of the 784-400-20 VAE took 2.6 s quiet but 9.8 s (once 69 s)
beside one busy process; on one thread it took 3.0 s there, yet one thread is about 1.5x slower on a
quiet machine. ``OMP_WAIT_POLICY=PASSIVE`` avoids the stall but made quiet training about 1.9x slower,
and it only works when set before torch starts OpenMP, which a notebook cannot do. Load figures
(``os.getloadavg``, /proc/stat) lag by seconds to a minute, exist only on some systems and do not say
how much a competitor costs. So the default policy measures what it cares about: ``fit`` times short
windows of its own batches at the current thread count and at a neighbouring one (one thread fewer
or one more, within the cores this process may use) and keeps the faster. It probes again after a
while (sooner after a change, up to every ``max_interval`` seconds of training when nothing changes),
and a probe that is already slower than the window it competes with stops at once, so a wrong guess
costs at most about one window. Only CPU training is tuned; CUDA and MPS are left alone.

Policies, from ``set_thread_policy(...)`` or else the environment variable ``VAE_THREADS``:
``"auto"`` (default, the tuner), an integer ``n`` (always ``n`` threads, no tuning), or ``"torch"``
(PyTorch's own setting, untouched). A ``torch.set_num_threads`` call of your own also turns the
tuner off for later ``fit`` calls.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import torch

ENV_VAR = "VAE_THREADS"
Policy = str | int

_override: Policy | None = None  # set by set_thread_policy; else the environment decides
_torch_default: int | None = None  # torch's own thread count, read before this module first changed it
_applied: int | None = None  # the count this module last set (None: it has not set one)
_best: int | None = None  # the count the last tuner settled on, where the next fit starts


def parse_policy(value: Policy) -> Policy:
    """``"auto"``, ``"torch"`` or a positive int from a policy given as a string or an int."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"a thread policy is 'auto', 'torch' or a positive int, got {type(value).__name__}")
    text = str(value).strip().lower()
    if text in ("auto", "torch"):
        return text
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1 or str(count) != text:
        raise ValueError(f"{ENV_VAR} / the thread policy must be 'auto', 'torch' or a positive integer, got {value!r}")
    return count


def thread_policy() -> Policy:
    """The policy in force: the one given to ``set_thread_policy``, else ``$VAE_THREADS``, else ``"auto"``."""
    if _override is not None:
        return _override
    return parse_policy(os.environ.get(ENV_VAR, "").strip() or "auto")


def usable_cores() -> int:
    """How many cores this process may run on (its CPU affinity where the system tells, else the core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def max_threads() -> int:
    """The most threads the tuner uses: torch's own default (its physical cores), at most the usable cores."""
    global _torch_default
    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    return max(1, min(_torch_default, usable_cores()))


def _set(count: int) -> None:
    global _applied
    max_threads()  # remember torch's default before the first change
    torch.set_num_threads(count)
    _applied = count


def apply_thread_policy() -> int:
    """Set torch's CPU thread count as the policy says; return the count now in use."""
    policy = thread_policy()
    if policy == "torch":
        if _applied is not None and _torch_default is not None:
            _set(_torch_default)
    elif policy == "auto":
        _set(min(_best, max_threads()) if _best is not None else max_threads())
    else:
        _set(policy)
    return torch.get_num_threads()


def set_thread_policy(policy: Policy) -> int:
    """Choose the policy for this process (``"auto"``, ``"torch"`` or ``n``) and apply it; return the thread count."""
    global _override, _best
    _override = parse_policy(policy)
    _best = None
    return apply_thread_policy()


class ThreadTuner:
    """Times batches at the current thread count and a neighbouring one and keeps the faster (see the module doc).

    Call ``tick(first=...)`` at the start of every batch (``first=True`` for the first batch of an epoch,
    so the time between epochs is not counted) and ``close()`` after the last. It uses 1..``ceiling``
    threads, starting at ``start``. ``clock`` and ``set_threads`` are injectable for tests;
    ``remember(count)`` is told the final choice. ``log`` holds one ``(incumbent, per-batch s, candidate,
    per-batch s, kept)`` tuple per probe (the candidate's seconds are a lower bound when it stopped early).
    """

    def __init__(self, start: int, ceiling: int, *, set_threads: Callable[[int], None] = _set,
                 clock: Callable[[], float] = time.perf_counter, warmup: int = 1, min_batches: int = 3,
                 min_seconds: float = 0.1, margin: float = 0.05, min_interval: float = 1.0,
                 max_interval: float = 16.0, max_overhead: float = 0.05, max_wait: float = 60.0,
                 remember: Callable[[int], None] | None = None):
        if not 1 <= start <= ceiling:
            raise ValueError(f"start must lie in 1..ceiling={ceiling}, got {start}")
        self.current, self.ceiling = start, ceiling
        self._set_threads, self._clock, self._remember = set_threads, clock, remember
        self.min_batches, self.min_seconds, self.margin = min_batches, min_seconds, margin
        self.min_interval, self.max_interval = min_interval, max_interval
        self.max_overhead, self.max_wait = max_overhead, max_wait
        self.interval = min_interval
        self.log: list[tuple[int, float, int, float, int]] = []
        self._state, self._skip = "incumbent", warmup  # states: incumbent -> candidate -> run -> incumbent ...
        self._count, self._total = 0, 0.0
        self._incumbent: tuple[int, float] = (0, 0.0)  # batches and seconds of the last incumbent window
        self._candidate = start
        self._go_up = False
        self._last: float | None = None

    def tick(self, first: bool = False) -> None:
        """Mark the start of a batch: the time since the previous tick is that batch's duration."""
        now = self._clock()
        if self._last is not None and not first:
            self._record(now - self._last)
        self._last = now

    def close(self) -> None:
        """End of training: go back to the incumbent if a probe is under way; remember the choice for the next fit."""
        if self._state == "candidate":
            self._set_threads(self.current)
        self._state, self._last = "run", None
        if self._remember is not None:
            self._remember(self.current)

    def _neighbour(self) -> int:
        down, up = self.current - 1, self.current + 1
        self._go_up = not self._go_up
        if up <= self.ceiling and (self._go_up or down < 1):
            return up
        return down if down >= 1 else self.current

    def _record(self, seconds: float) -> None:
        if self._skip:  # the first batches pay for lazy initialisation
            self._skip -= 1
            return
        self._count += 1
        self._total += seconds
        if self._state == "run":
            if self._total >= self.interval:
                self._state, self._count, self._total = "incumbent", 0, 0.0
        elif self._state == "incumbent":
            if self._count >= self.min_batches and self._total >= self.min_seconds:
                self._incumbent = (self._count, self._total)
                self._candidate = self._neighbour()
                if self._candidate == self.current:  # only one thread allowed: nothing to compare
                    self._state, self.interval = "run", float("inf")
                else:
                    self._set_threads(self._candidate)
                    self._state, self._count, self._total = "candidate", 0, 0.0
        else:  # candidate
            n, seconds_in = self._incumbent
            budget = (1 - self.margin) * seconds_in  # what the candidate must beat over n batches
            if self._total > budget or self._count >= n:
                wins = self._count >= n and self._total <= budget
                self.log.append((self.current, seconds_in / n, self._candidate, self._total / self._count,
                                 self._candidate if wins else self.current))
                if wins:
                    self.current, self.interval = self._candidate, self.min_interval
                else:  # wait longer before the next probe, long enough that probes cost <= max_overhead
                    self._set_threads(self.current)
                    lost = self._total - self._count * seconds_in / n
                    self.interval = min(max(min(2 * self.interval, self.max_interval), lost / self.max_overhead),
                                        self.max_wait)
                self._state, self._count, self._total = "run", 0, 0.0


class _NoTuner:
    """Stands in for ``ThreadTuner`` where nothing is tuned."""

    def tick(self, first: bool = False) -> None: ...
    def close(self) -> None: ...


def tuner_for(device: torch.device | str) -> ThreadTuner | _NoTuner:
    """The tuner ``fit`` uses on ``device``: a ``ThreadTuner`` for the CPU under the ``"auto"`` policy, else a no-op.

    The policy is applied first. A thread count set with ``torch.set_num_threads`` since the policy last
    set one is respected (no tuning).
    """
    if torch.device(device).type != "cpu" or thread_policy() != "auto":
        return _NoTuner()
    if _applied is not None and torch.get_num_threads() != _applied:
        return _NoTuner()  # someone chose a count by hand
    ceiling = max_threads()
    apply_thread_policy()
    if ceiling < 2:
        return _NoTuner()
    return ThreadTuner(torch.get_num_threads(), ceiling, remember=_remember)


def _remember(count: int) -> None:
    global _best
    _best = count


apply_thread_policy()  # on first import (vae_helpers.train imports this module), so code outside fit gets it too
