"""Repository-wide pytest hook: nbval runs the instructor notebooks strictly.

Exercise cells carry the ``raises-exception`` tag so that *Run All* in JupyterLab goes on past an
unsolved exercise in a student version. nbval reads that tag as "an exception is allowed here", which
would let a broken solution or checker in an instructor notebook pass ``make test``; in the instructor
notebooks every cell must run cleanly, so the allowance is switched off for every notebook cell.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        options = getattr(item, "options", None)
        if type(item).__name__ == "IPyNbCell" and isinstance(options, dict):
            options["check_exception"] = False
