"""The exercises of an instructor notebook (nbgrader metadata, points table) and its student version."""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


# ----------------------------------------------------------------------------- reading exercises


def nbgrader_meta(cell: nbformat.NotebookNode) -> dict[str, Any]:
    """The cell's nbgrader metadata (empty dict for an ordinary cell)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def is_check_cell(cell: nbformat.NotebookNode) -> bool:
    """An automatically graded test cell: ``grade`` without ``solution``."""
    meta = nbgrader_meta(cell)
    return bool(meta.get("grade")) and not meta.get("solution") and cell.get("cell_type") == "code"


def is_manual_cell(cell: nbformat.NotebookNode) -> bool:
    """A manually graded answer (``grade`` and ``solution``) or task cell."""
    meta = nbgrader_meta(cell)
    return bool(meta.get("grade") and meta.get("solution")) or bool(meta.get("task"))


def grade_ids(nb: nbformat.NotebookNode) -> list[str]:
    """The grade_ids of every nbgrader cell (solution, check, manual), in notebook order."""
    return [m["grade_id"] for m in map(nbgrader_meta, nb.cells) if m.get("grade_id")]


def points_table_call(nb: nbformat.NotebookNode) -> dict[str, tuple[str, float]] | None:
    """The dict passed to ``checks.points_table({...})`` in the notebook's code (None if there is none)."""
    from IPython.core.inputtransformer2 import TransformerManager

    for cell in nb.cells:
        if cell.cell_type != "code" or "points_table" not in cell.source:
            continue
        try:
            tree = ast.parse(TransformerManager().transform_cell(cell.source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            func = getattr(node, "func", None)
            name = getattr(func, "attr", None) or getattr(func, "id", None)
            if isinstance(node, ast.Call) and name == "points_table" and node.args:
                return ast.literal_eval(node.args[0])
    return None


@dataclass
class Exercise:
    """One graded cell of an instructor notebook."""

    grade_id: str
    title: str
    points: float
    manual: bool


def exercises(nb: nbformat.NotebookNode) -> list[Exercise]:
    """The graded cells (check cells and manually graded answers) with titles from the points table."""
    titles = points_table_call(nb) or {}
    found = []
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if is_check_cell(cell) or is_manual_cell(cell):
            title = titles.get(meta["grade_id"], (meta["grade_id"], None))[0]
            found.append(Exercise(meta["grade_id"], title, meta.get("points", 0), is_manual_cell(cell)))
    return found


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def is_optional(ex: Exercise, cell: nbformat.NotebookNode | None = None) -> bool:
    """Optional exercises: "optional" in the points-table title or an ``optional`` cell tag."""
    tags = (cell or {}).get("metadata", {}).get("tags", []) if cell is not None else []
    return "optional" in ex.title.lower() or "optional" in tags


def _on_top(title: str) -> str:
    """An optional exercise's title, saying that its points come on top of the maximum."""
    if "optional" in title and title.endswith(")"):
        return title[:-1] + ", on top)"
    return f"{title} (optional, on top)"


def exercise_table(paths: list[Path]) -> str:
    """A markdown table of every notebook's exercises and points (notebooks without exercises are left out).

    Optional exercises are listed after their notebook's total and do not count in it, the rule
    both graders follow (they raise no maximum).
    """
    rows = ["| notebook | exercise | check cell | graded | points |", "| --- | --- | --- | --- | ---: |"]
    total = 0.0
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        cells = {nbgrader_meta(c).get("grade_id"): c for c in nb.cells}
        found = exercises(nb)
        required = [ex for ex in found if not is_optional(ex, cells.get(ex.grade_id))]
        extra = [ex for ex in found if is_optional(ex, cells.get(ex.grade_id))]
        name = Path(path).name
        for ex, title in [(ex, ex.title) for ex in required]:
            rows.append(f"| {name} | {title} | `{ex.grade_id}` | {'by hand' if ex.manual else 'automatically'} | {_num(ex.points)} |")
        if found:
            subtotal = sum(ex.points for ex in required)
            rows.append(f"| {name} | **total**{' (the maximum)' if extra else ''} | | | **{_num(subtotal)}** |")
            total += subtotal
        for ex in extra:
            rows.append(f"| {name} | {_on_top(ex.title)} | `{ex.grade_id}` | {'by hand' if ex.manual else 'automatically'} "
                        f"| {_num(ex.points)} |")
    rows.append(f"| **series** | **total** | | | **{_num(total)}** |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- student versions


def student_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of an instructor notebook, made by nbgrader's preprocessors through nbconvert.

    The order is nbgrader's ``generate_assignment`` without the steps that need a course database
    or header files: solutions become stubs, outputs and hidden tests go, checksums are recorded.
    """
    from nbconvert.exporters import NotebookExporter
    from nbgrader import preprocessors as pp
    from traitlets.config import Config

    config = Config()
    config.ClearSolutions.code_stub = {"python": CODE_STUB}
    exporter = NotebookExporter(config=config)
    for step in (pp.CheckCellMetadata, pp.LockCells, pp.ClearSolutions, pp.ClearOutput, pp.ClearHiddenTests,
                 pp.ClearMarkScheme, pp.ComputeChecksums, pp.CheckCellMetadata):
        exporter.register_preprocessor(step, enabled=True)
    text, _ = exporter.from_notebook_node(copy.deepcopy(nb), resources={})
    return nbformat.reads(text, as_version=4)


def make_student(paths: list[Path], out_dir: Path) -> list[Path]:
    """Write the student version of each notebook to ``out_dir`` under the same file name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        dest = out_dir / Path(path).name
        nbformat.write(student_version(nbformat.read(path, as_version=4)), dest)
        written.append(dest)
    return written
