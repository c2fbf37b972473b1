"""A reference function as a learner would hand it in: the same code, typed into another file."""

import types
from typing import Any, Callable


def own_copy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its own code object, so a checker's refusal of the reference does not see it."""
    code = fn.__code__.replace(co_filename="<learner's cell>")
    return types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
