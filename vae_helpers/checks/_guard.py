"""The guard around a learner's call: refused references and their library equivalents become tripwires.

While the learner's code runs, every refused function is replaced by a tripwire: a Python function
gets the tripwire's code object in place of its own (so every alias, method or saved reference to
the same function object is caught), a built-in is replaced where the library exposes it. Seeding
torch's global generator is refused in every check. torch's functions, Tensor's methods, builtins and
the checkers are snapshotted around the call: whatever the learner's code changes there is undone and
refused. Nothing the learner's code does during the call can switch this off, because the verdict is
read from the guard's own record after the call. (Before the call, ``_source`` reads the learner's
code for names bound to refused objects and pasted copies of a reference.)
"""

from __future__ import annotations

import types
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch

from ._source import resolve

TAMPERED = "your code changed the checker's or vae_helpers' own functions while the check ran; write the answer " \
           "without touching them"

# always refused: re-seeding inside an exercise makes every call draw the same "random" numbers
SEEDING = {
    "torch.random.manual_seed": "your function re-seeds torch's random generator (torch.manual_seed inside it), so every "
                                "call draws the same noise; seed once at the top of the notebook, never inside the function",
    "torch.random.seed": "your function re-seeds torch's random generator (torch.seed()); draw the noise without seeding",
    "torch.random.set_rng_state": "your function resets torch's random generator (set_rng_state), so every call draws "
                                  "the same noise; draw fresh noise with torch.randn_like",
}


class _Tripped(Exception):
    """Raised by a tripwire inside the learner's call; the guard's record, not this exception, decides."""


# the guards now active (a stack): each maps a tripwire key to its message and records the keys hit
_ACTIVE: list[dict[str, Any]] = []


def _tripped(key: str) -> None:
    """Called by every tripwire: record the hit in each active guard that knows ``key``, then stop the learner's code."""
    for guard in _ACTIVE:
        if key in guard["messages"] and key not in guard["hits"]:
            guard["hits"].append(key)
    raise _Tripped(key)


def _template(*args: Any, **kwargs: Any) -> Any:
    import vae_helpers.checks._guard as guard_module  # resolved at call time: a tripwire runs with another module's globals

    guard_module._tripped("KEY")


def _tripwire_code(key: str) -> types.CodeType:
    """A copy of ``_template``'s code whose constant "KEY" is ``key``."""
    code = _template.__code__
    return code.replace(co_consts=tuple(key if c == "KEY" else c for c in code.co_consts))


def _watched() -> list[Any]:
    """The namespaces a learner's code could patch to fool a checker: torch's functions and Tensor methods, the checkers."""
    import sys

    import torch.nn.functional as F

    found = [torch, torch.Tensor, F, torch.linalg, torch.special, torch.autograd, torch.random, sys.modules["builtins"]]
    found += [m for name, m in sorted(sys.modules.items()) if m is not None and (  # modules whose globals never change
        name.startswith("vae_helpers.checks") or name in ("vae_helpers.losses", "vae_helpers.models", "vae_helpers.flows"))]
    return found


def _torch_wrapper(value: Any) -> bool:
    """True for a module, or a function written in torch's own files: what torch itself puts in place."""
    import os

    if isinstance(value, types.ModuleType):
        return True
    code = getattr(getattr(value, "__func__", value), "__code__", None)
    return code is not None and os.path.abspath(code.co_filename).startswith(os.path.dirname(torch.__file__) + os.sep)


def _snapshot(spaces: list[Any]) -> list[tuple[Any, dict[str, Any]]]:
    return [(space, dict(vars(space))) for space in spaces]


def _restore_snapshot(snapshot: list[tuple[Any, dict[str, Any]]], allowed: set[tuple[int, str]]) -> bool:
    """Put back every attribute the learner's code changed, added or removed; True if there was any.

    Modules that appear (a lazy ``import torch.distributions``) are not changes; ``allowed`` are the
    guard's own tripwires, which the guard itself restores.
    """
    changed = False
    for space, before in snapshot:
        now = vars(space)
        for name in set(now) - set(before):
            if not _torch_wrapper(now[name]):
                changed = True
                delattr(space, name)
        for name, value in before.items():
            if (id(space), name) in allowed:
                continue
            if name not in now or now[name] is not value:
                if name in now and _torch_wrapper(now[name]):
                    continue  # torch wraps some functions when it first imports a submodule (manual_seed for dynamo)
                changed = True
                setattr(space, name, value)
    return changed


def _owners(target: Any) -> list[tuple[Any, str]]:
    """Places (module or class, attribute name) where the built-in ``target`` is exposed: torch, F, torch.Tensor."""
    import torch.nn.functional as F

    name = getattr(target, "__name__", "")
    return [(owner, name) for owner in (torch, F, torch.Tensor, torch.special, torch.linalg)
            if name and getattr(owner, name, None) is target]


@contextmanager
def guarded(refused: Mapping[str, str]) -> Iterator[list[str]]:
    """Within the block, calling any refused path (path -> message) trips; the yielded list collects the messages.

    Python functions get the tripwire code in place of their own; built-ins (and functions with a
    closure) are replaced on the modules and classes that expose them.
    """
    messages = {**SEEDING, **refused}
    guard: dict[str, Any] = {"messages": messages, "hits": []}
    swapped_code: list[tuple[types.FunctionType, types.CodeType]] = []
    swapped_attr: list[tuple[Any, str, Any]] = []
    seen: set[int] = set()
    try:
        for path in messages:
            target = resolve(path)
            raw = target.__func__ if isinstance(target, types.MethodType) else target
            if id(raw) in seen:
                continue
            seen.add(id(raw))
            if isinstance(raw, types.FunctionType) and not raw.__code__.co_freevars:
                swapped_code.append((raw, raw.__code__))
                raw.__code__ = _tripwire_code(path)
                continue
            owners = _owners(raw) if not isinstance(raw, types.FunctionType) else []
            if not owners:  # a function with a closure, or a method: replace it where the path found it
                owner_path, _, name = path.rpartition(".")
                owners = [(resolve(owner_path), name)]
            wire = types.FunctionType(_tripwire_code(path), {"__builtins__": __builtins__}, name=getattr(raw, "__name__", "wire"))
            for owner, name in owners:
                swapped_attr.append((owner, name, owner.__dict__.get(name, _MISSING) if isinstance(owner, type) else getattr(owner, name)))
                setattr(owner, name, wire)
        allowed = {(id(owner), name) for owner, name, _ in swapped_attr}
        snapshot = _snapshot(_watched())
        _ACTIVE.append(guard)
        wires = [(fn, fn.__code__) for fn, _ in swapped_code] + [(owner, name) for owner, name, _ in swapped_attr]
        tripped = _tripped
        installed = {(id(owner), name): getattr(owner, name) for owner, name, _ in swapped_attr}
        yield _HitView(guard, messages)
        # the learner's code ran in between: every tripwire must still be in place
        intact = (_ACTIVE and _ACTIVE[-1] is guard and globals()["_tripped"] is tripped
                  and all(fn.__code__ is code for fn, code in wires[:len(swapped_code)])
                  and all(getattr(owner, name, None) is installed[(id(owner), name)] for owner, name in wires[len(swapped_code):]))
        if _restore_snapshot(snapshot, allowed):
            intact = False
        if not intact:
            messages[TAMPERED] = TAMPERED
            guard["hits"].insert(0, TAMPERED)
    finally:
        if guard in _ACTIVE:
            _ACTIVE.remove(guard)
        for fn, code in reversed(swapped_code):
            fn.__code__ = code
        for owner, name, original in reversed(swapped_attr):
            if original is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


_MISSING = object()


class _HitView:
    """The messages of the tripwires hit so far (read after the block)."""

    def __init__(self, guard: dict[str, Any], messages: Mapping[str, str]):
        self._guard, self._messages = guard, messages

    def messages(self) -> list[str]:
        return [self._messages[key] for key in self._guard["hits"]]


def call_with_guard(fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any],
                    refused: Mapping[str, str]) -> tuple[Any, BaseException | None, list[str]]:
    """Call ``fn`` with the tripwires set; return (output, the exception it raised or None, messages of tripwires hit)."""
    with guarded(refused) as hits:
        try:
            out, error = fn(*args, **kwargs), None
        except BaseException as err:  # noqa: BLE001 - the learner's code may raise anything, even SystemExit
            if isinstance(err, KeyboardInterrupt):
                raise
            out, error = None, err
    return out, error, hits.messages()
