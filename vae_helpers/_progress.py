"""Progress bars shared by training and evaluation: tqdm (a widget in JupyterLab, text elsewhere) or nothing."""

from __future__ import annotations

from typing import Any


class NoBar:
    """Stands in for a tqdm bar when progress is off."""

    n = 0

    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "batch") -> Any:
    """A tqdm bar over ``total`` steps that disappears when closed, or a ``NoBar`` when ``enabled`` is false."""
    if not enabled:
        return NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=0.5)
