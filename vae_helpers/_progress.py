"""Progress shared by training and evaluation: a line of text that updates in place, or nothing.

In a Jupyter kernel the progress is one plain-text output updated through a display handle (no
widget), so a saved and reopened notebook shows the last line, e.g. ``epoch 12/12 · 469/469 batches ·
3.1 s · loss=104.2``, and never "Error displaying widget". Elsewhere (a terminal, pytest) it is a
tqdm bar on stderr that disappears when closed.
"""

from __future__ import annotations

import time
from typing import Any


class NoBar:
    """Stands in for a bar when progress is off."""

    n = 0

    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (where a display handle reaches the notebook)."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class TextLine:
    """A progress line in the notebook: one text output, updated at most every ``interval`` seconds, kept when closed.

    Bars opened with the same ``slot`` share one output, so the epochs of one ``fit`` call fill one line.
    """

    _handles: dict[str, Any] = {}

    def __init__(self, total: int, desc: str, unit: str, slot: str | None = None, interval: float = 0.5):
        from IPython.display import display

        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.postfix: dict[str, Any] = {}
        self.start = time.perf_counter()
        self.interval, self.shown = interval, 0.0
        handle = TextLine._handles.get(slot) if slot else None
        if handle is None:
            handle = display({"text/plain": self.text()}, raw=True, display_id=True)
            if slot:
                TextLine._handles[slot] = handle
        self.handle = handle
        self.refresh(force=True)

    def text(self) -> str:
        parts = [self.desc, f"{self.n}/{self.total} {self.unit}{'es' if self.unit.endswith('h') else 's'}",
                 f"{time.perf_counter() - self.start:.1f} s"]
        parts += [f"{key}={value}" for key, value in self.postfix.items()]
        return " · ".join(parts)

    def refresh(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.shown >= self.interval:
            self.shown = now
            self.handle.update({"text/plain": self.text()}, raw=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh()

    def set_postfix(self, **kwargs: Any) -> None:
        self.postfix.update(kwargs)
        self.refresh()

    def close(self) -> None:
        self.refresh(force=True)


def release(slot: str) -> None:
    """Forget the output of ``slot``: the next bar with that slot starts a new line."""
    TextLine._handles.pop(slot, None)


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "batch", slot: str | None = None) -> Any:
    """A progress line over ``total`` steps (text in a notebook, tqdm on stderr elsewhere), or ``NoBar`` when disabled."""
    if not enabled:
        return NoBar()
    if _in_kernel():
        return TextLine(total, desc, unit, slot)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=0.5)
