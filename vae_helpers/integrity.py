"""What the grader flags for the teacher: tampering with the grading kernel and suspicious cells.

Two kinds of evidence:

* a **probe** the grader evaluates in the kernel before the first cell and before every check
  cell (as an IPython ``user_expression``, which no input transformer rewrites). It fingerprints
  what a cell could change to make a failing check look passed: custom exception handlers, input
  and AST transformers, execution event callbacks, the shell's and kernel's execution methods, the
  functions and classes of ``vae_helpers`` and the comparison functions of ``torch``. A check cell
  that runs after the fingerprint changed scores 0;
* **static flags** read from the submission's cells: solution markers or hidden tests (the
  instructor version handed in), cells added between an exercise and its check, and solution cells
  that use ``vae_helpers`` (the reference of their own exercise) or import dynamically.

A determined student who writes code aimed at this probe can still fool an in-kernel check; the
flags tell the teacher which submissions to read.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import nbformat

PROBE_SOURCE = r'''
def fingerprint(names):
    import builtins, importlib, json, math, pkgutil, sys
    import torch, vae_helpers
    for info in pkgutil.iter_modules(vae_helpers.__path__):
        if not info.name.startswith("_") and info.name not in ("grade", "sandbox", "gradebook", "integrity", "runner", "widgets", "lab"):
            importlib.import_module("vae_helpers." + info.name)
    ip = get_ipython()
    def who(obj):
        obj = getattr(obj, "__func__", obj)
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}:{id(obj)}"
    fp = {"custom_exceptions": repr(ip.custom_exceptions), "custom_tb": who(getattr(ip, "CustomTB", None)),
          "excepthook": who(sys.excepthook), "trace": repr(sys.gettrace()), "profile": repr(sys.getprofile()),
          "input_transformers": [who(t) for t in ip.input_transformers_cleanup + ip.input_transformers_post],
          "ast_transformers": [who(t) for t in ip.ast_transformers],
          "events": {k: sorted(who(f) for f in v if not getattr(f, "__module__", "").startswith(
              ("matplotlib", "ipykernel", "IPython", "ipywidgets"))) for k, v in ip.events.callbacks.items()},
          "shell": sorted(n for n in ("run_cell", "run_cell_async", "run_code", "run_ast_nodes", "showtraceback",
                                      "_showtraceback", "transform_cell", "should_run_async") if n in vars(ip)),
          "kernel": sorted(n for n in ("do_execute", "execute_request", "send_response") if n in vars(ip.kernel))
                    + sorted(n for n in ("send",) if n in vars(ip.kernel.session)),
          # the same methods on the classes (patching the class changes every instance at once)
          "classes": sorted(f"{k.__qualname__}.{n}:{id(vars(k)[n])}" for obj in (ip, ip.kernel, ip.kernel.session)
                            for k in type(obj).__mro__ for n in ("run_cell", "run_cell_async", "run_code",
                            "run_ast_nodes", "showtraceback", "_showtraceback", "transform_cell", "should_run_async",
                            "do_execute", "execute_request", "send_response", "send", "serialize") if n in vars(k)),
          "compare": [who(f) for f in (torch.allclose, torch.isclose, torch.equal, torch.testing.assert_close,
                                       torch.Tensor.allclose, math.isclose, builtins.isinstance, builtins.all,
                                       builtins.any, builtins.abs, builtins.len, builtins.print)],
          "modules": {}}
    for name, mod in sorted(sys.modules.items()):
        if name == "vae_helpers" or name.startswith("vae_helpers."):
            for attr, obj in sorted(vars(mod).items()):
                if callable(obj) and str(getattr(obj, "__module__", "")).startswith("vae_helpers"):
                    code = getattr(obj, "__code__", None)
                    methods = sorted(f"{k}:{id(v)}" for k, v in vars(obj).items() if callable(v)) if isinstance(obj, type) else []
                    fp["modules"][f"{name}.{attr}"] = [id(obj), id(code), methods]
    ns = ip.user_ns
    fp["names"] = {n: (ns[n].__name__ if sys.modules.get(getattr(ns[n], "__name__", None)) is ns[n] else "changed")
                   for n in names if n in ns}
    return json.dumps(fp)
'''


def probe_expression(module_names: list[str]) -> str:
    """The ``user_expressions`` entry that returns the kernel's fingerprint as a JSON string."""
    return (f"(lambda d: (exec({PROBE_SOURCE!r}, d), d['fingerprint']({sorted(module_names)!r}))[1])"
            "({'get_ipython': get_ipython})")


def compare(baseline: dict[str, Any], now: dict[str, Any], module_names: dict[str, str]) -> list[str]:
    """What changed between the fingerprint before the first cell and now (empty when nothing did)."""
    changes = [f"{key} changed" for key in baseline if key not in ("modules", "names") and baseline[key] != now.get(key)]
    mods = now.get("modules", {})
    changed = sorted(k for k, v in baseline.get("modules", {}).items() if mods.get(k) != v)
    if changed:
        changes.append(f"vae_helpers functions replaced: {', '.join(changed[:5])}" + (" ..." if len(changed) > 5 else ""))
    wrong = sorted(n for n, v in now.get("names", {}).items() if v != module_names.get(n))
    if wrong:
        changes.append(f"names rebound: {', '.join(wrong)} no longer refer to their vae_helpers module")
    return changes


def parse_probe(reply: dict[str, Any] | None) -> dict[str, Any] | None:
    """The fingerprint in an execute reply, or None when the probe failed."""
    try:
        value = reply["content"]["user_expressions"]["fp"]
        if value.get("status") != "ok":
            return None
        return json.loads(ast.literal_eval(value["data"]["text/plain"]))
    except (KeyError, TypeError, ValueError, SyntaxError, AttributeError):
        return None


# ----------------------------------------------------------------------------- static flags


def _meta(cell: nbformat.NotebookNode) -> dict[str, Any]:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def _code(source: str) -> ast.AST | None:
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return ast.parse(TransformerManager().transform_cell(source))
    except (SyntaxError, ValueError):
        return None


def helper_aliases(nb: nbformat.NotebookNode) -> dict[str, str]:
    """Names the notebook binds to ``vae_helpers`` modules (``from vae_helpers import checks`` -> checks)."""
    found: dict[str, str] = {}
    for cell in nb.cells:
        tree = _code(cell.source) if cell.cell_type == "code" else None
        for node in ast.walk(tree) if tree else []:
            if isinstance(node, ast.ImportFrom) and node.module == "vae_helpers":
                found.update({a.asname or a.name: f"vae_helpers.{a.name}" for a in node.names})
            elif isinstance(node, ast.Import):
                found.update({a.asname: a.name for a in node.names if a.asname and a.name.startswith("vae_helpers.")})
    return found


def uses_reference(source: str, aliases: dict[str, str]) -> set[str]:
    """Why a cell's code looks like it uses the ``vae_helpers`` reference (empty when it does not)."""
    tree = _code(source)
    found: set[str] = set()
    for node in ast.walk(tree) if tree is not None else []:
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "vae_helpers" for a in node.names):
            found.add("imports vae_helpers")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vae_helpers":
            found.add(f"imports from {node.module}")
        elif isinstance(node, ast.Name) and node.id in aliases and aliases[node.id] != "vae_helpers.config":
            found.add(f"uses {aliases[node.id]} (as {node.id})")
        elif isinstance(node, ast.Name) and node.id in ("__import__", "importlib", "exec", "eval", "globals"):
            found.add(f"uses {node.id} (dynamic code or import)")
    return found


def _handed_out(source: str) -> str:
    """A solution cell as the student version has it (the solution region removed)."""
    return re.sub(r"### BEGIN SOLUTION.*?### END SOLUTION", "", source, flags=re.S)


def static_flags(sub: nbformat.NotebookNode, src: nbformat.NotebookNode) -> list[str]:
    """Flags for the teacher read from the submitted cells (before anything runs)."""
    flags = []
    marked = [_meta(c).get("grade_id") or f"cell {i + 1}" for i, c in enumerate(sub.cells)
              if any(m in c.source for m in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS", "### BEGIN MARK SCHEME"))]
    if marked:
        flags.append(f"solution markers or hidden tests in {marked[:6]}: an instructor version was handed in")
    aliases = helper_aliases(src)
    given = {_meta(c).get("grade_id"): uses_reference(_handed_out(c.source), aliases) for c in src.cells
             if _meta(c).get("solution") and c.cell_type == "code"}
    for cell in sub.cells:
        meta = _meta(cell)
        if meta.get("solution") and cell.cell_type == "code":
            why = sorted(uses_reference(cell.source, aliases) - given.get(meta.get("grade_id"), set()))
            if why:
                flags.append(f"solution cell {meta.get('grade_id')} {', '.join(why)}: check it uses no reference implementation")
    src_ids = {c.get("id") for c in src.cells} - {None}
    checks = {_meta(c)["grade_id"] for c in src.cells if _meta(c).get("grade") and not _meta(c).get("solution")}
    open_exercise = None  # the solution cell whose check cell has not come yet
    for i, cell in enumerate(sub.cells):
        meta = _meta(cell)
        if meta.get("solution") and not meta.get("grade"):
            open_exercise = meta.get("grade_id")
        elif meta.get("grade_id") in checks:
            open_exercise = None
        elif open_exercise and cell.get("id") not in src_ids and not meta and cell.cell_type == "code":
            flags.append(f"cell {i + 1} was added between the exercise {open_exercise} and its check cell")
    return flags
