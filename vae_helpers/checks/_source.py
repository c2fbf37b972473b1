"""Reading the learner's code before it runs: names bound to refused objects, and pasted copies of a reference."""

from __future__ import annotations

import dis
import functools
import importlib
import types
from typing import Any, Iterator, Mapping

import torch

_MISSING = object()


def resolve(path: str) -> Any:
    """The object at a dotted path: ``"torch.distributions.Normal.log_prob"``, ``"vae_helpers.losses.gaussian_kl"``."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attribute in parts[i:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(path)


def _tokens(code: types.CodeType) -> list[tuple[str, Any]]:
    """The instructions of ``code`` without line numbers or local names: what a pasted copy keeps."""
    out = []
    for ins in dis.get_instructions(code):
        if ins.opname in ("RESUME", "NOP", "CACHE", "EXTENDED_ARG"):
            continue
        if "FAST" in ins.opname or "DEREF" in ins.opname:
            out.append((ins.opname, None))
        elif isinstance(ins.argval, types.CodeType):
            out.append((ins.opname, "<code>"))
        else:
            out.append((ins.opname, repr(ins.argval)))
    return out


def _contains(haystack: list[Any], needle: list[Any]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _functions_of(obj: Any) -> list[types.FunctionType]:
    """The learner's own functions reachable from ``obj``: a function, a class's methods, a module's class."""
    if isinstance(obj, torch.nn.Module):
        obj = type(obj)
    if isinstance(obj, types.MethodType):
        obj = obj.__func__
    if isinstance(obj, types.FunctionType):
        return [obj]
    if isinstance(obj, type):
        found = []
        for klass in obj.__mro__:
            if _is_library(klass):
                continue
            for value in vars(klass).values():
                value = getattr(value, "__func__", value)
                if isinstance(value, types.FunctionType):
                    found.append(value)
        return found
    call = getattr(type(obj), "__call__", None)
    return [call] if isinstance(call, types.FunctionType) and not _is_library(type(obj)) else []


@functools.lru_cache(maxsize=1)  # asked for every function the reading walks; the folders do not change
def _library_dirs() -> tuple[str, ...]:
    """Folders whose code is not the learner's: this package, the standard library, installed packages."""
    import os
    import sysconfig

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = {sysconfig.get_path(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(os.path.abspath(p) + os.sep for p in {package, *paths} if p)


def _is_library(obj: Any) -> bool:
    """True for code of a library (by the file a function was written in; by the module a class belongs to)."""
    import os

    if isinstance(obj, types.FunctionType):
        return os.path.abspath(obj.__code__.co_filename).startswith(_library_dirs())
    module = getattr(obj, "__module__", "") or ""
    return module.split(".")[0] in ("torch", "vae_helpers", "builtins", "numpy", "math", "functools", "typing", "abc")


def read_learner_code(obj: Any, refused: Mapping[str, str], depth: int = 3) -> str | None:
    """The message of the first refused thing the learner's code names or pastes, or None.

    Walks the learner's functions (and the notebook functions they name, ``depth`` levels deep): a
    global name bound to a refused object is refused; a code object whose instructions contain all
    of a refused ``vae_helpers`` function's instructions is a pasted copy.
    """
    targets: dict[int, str] = {}
    codes: dict[int, str] = {}
    pasted: list[tuple[list[Any], str]] = []
    for path, message in refused.items():
        try:
            target = resolve(path)
        except (ImportError, AttributeError):
            continue
        raw = getattr(target, "__func__", target)
        targets[id(raw)] = message
        if isinstance(raw, types.FunctionType):
            codes[id(raw.__code__)] = message
        if isinstance(raw, types.FunctionType) and path.startswith("vae_helpers."):
            tokens = _tokens(raw.__code__)
            if len(tokens) >= 8:
                pasted.append((tokens, f"your answer is a copy of vae_helpers' own {path.removeprefix('vae_helpers.')}; "
                                       "write it yourself"))
    direct = getattr(obj, "__func__", obj)
    if id(direct) in targets:
        return targets[id(direct)]
    queue = [(fn, 0) for fn in _functions_of(obj)]
    visited: set[int] = set()
    while queue:
        fn, level = queue.pop()
        if id(fn) in visited:
            continue
        visited.add(id(fn))
        if id(fn) in targets:
            return targets[id(fn)]
        for code in _code_objects(fn.__code__):
            tokens = _tokens(code)
            for needle, message in pasted:
                if _contains(tokens, needle):
                    return message
            for name in code.co_names:
                value = fn.__globals__.get(name, _MISSING)
                if value is _MISSING:
                    continue
                raw = getattr(value, "__func__", value)
                if id(raw) in targets:
                    return targets[id(raw)]
                if isinstance(raw, types.CodeType) and id(raw) in codes:
                    return codes[id(raw)]
                if level < depth and not _is_library(raw) and (isinstance(raw, (types.FunctionType, type))):
                    queue.extend((f, level + 1) for f in _functions_of(raw))
    return None
