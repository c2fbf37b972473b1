"""Set the weights of a learner's module by behaviour: reference tensors go wherever their shapes fit.

A module is judged by what it computes, not by how its layers are named or registered: the
reference's weights ("atoms") are spread over the learner's parameters in every way their shapes
allow (transposed for ``x @ W``, a bias as a row, two heads as one concatenated layer in either
order), and the module passes if one of these assignments makes it compute what the reference does.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterator, Sequence

import torch

from ._core import CheckFailed, call_learner

# building one of these inside the learner's module hands the exercise to vae_helpers
OWN_MODELS = {f"vae_helpers.{path}": f"your class builds vae_helpers' own {path.removesuffix('.__init__')}, the thing this "
                                     "exercise asks you to build: make the layers yourself with torch.nn (nn.Linear, ...)"
              for path in ("models.Autoencoder.__init__", "models.VAE.__init__", "models.ConvVAE.__init__",
                           "models.Encoder.__init__", "models.Decoder.__init__", "models.mlp", "flows.FlowVAE.__init__")}


def materialise(model: torch.nn.Module, dry_run: Callable[[], object], label: str) -> None:
    """Run ``dry_run`` once (under no_grad) if the module holds lazy parameters, so that they get their shapes."""
    if any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in model.parameters()):
        with torch.no_grad():
            dry_run()
        if any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in model.parameters()):
            raise CheckFailed(f"{label} still has uninitialised lazy parameters after a forward pass: use every layer")


def _fits(p: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
    """The ways the value ``t`` can fill parameter ``p``: as it is, transposed, or reshaped (a bias as a row)."""
    found = []
    if tuple(p.shape) == tuple(t.shape):
        found.append(t)
    if p.dim() == 2 and t.dim() == 2 and tuple(p.shape) == tuple(t.T.shape) and p.shape[0] != p.shape[1]:
        found.append(t.T)
    if not found and p.numel() == t.numel() and [s for s in p.shape if s != 1] == [s for s in t.shape if s != 1]:
        found.append(t.reshape(p.shape))
    return found


def assignments(model: torch.nn.Module, atoms: Sequence[Sequence[torch.Tensor]], groups: Sequence[Sequence[int]] = (),
                limit: int = 256) -> Iterator[list[tuple[torch.nn.Parameter, torch.Tensor]]]:
    """Every way (up to ``limit``) to fill each parameter of ``model`` with reference atoms, each atom used once.

    ``atoms[i]`` lists the acceptable values of atom i (the first is the reference's own, later ones
    are equivalent forms); ``groups`` are tuples of atom indices that may fill one parameter together,
    concatenated along the first dimension in any order (two heads in one layer).
    """
    params = [p for p in model.parameters()]
    options: list[list[tuple[frozenset[int], torch.Tensor]]] = []
    for p in params:
        choices = []
        for i, values in enumerate(atoms):
            choices.extend((frozenset([i]), fill) for v in values for fill in _fits(p, v))
        for group in groups:
            for order in itertools.permutations(group):
                joined = torch.cat([atoms[i][0] for i in order])
                choices.extend((frozenset(group), fill) for fill in _fits(p, joined))
        options.append(choices)
    count = 0

    def walk(k: int, used: frozenset[int], chosen: list[tuple[torch.nn.Parameter, torch.Tensor]]) -> Iterator[list]:
        nonlocal count
        if count >= limit:
            return
        if k == len(params):
            if len(used) == len(atoms):
                count += 1
                yield list(chosen)
            return
        for atom_ids, fill in options[k]:
            if not atom_ids & used:
                yield from walk(k + 1, used | atom_ids, chosen + [(params[k], fill)])

    yield from walk(0, frozenset(), [])


def load(assignment: Sequence[tuple[torch.nn.Parameter, torch.Tensor]]) -> None:
    """Copy each value into its parameter."""
    with torch.no_grad():
        for p, value in assignment:
            p.copy_(value)


def match_behaviour(model: torch.nn.Module, atoms: Sequence[Sequence[torch.Tensor]], groups: Sequence[Sequence[int]],
                    outputs: Callable[[], Sequence[torch.Tensor]], expected: Sequence[torch.Tensor], label: str,
                    atol: float = 1e-5) -> bool:
    """Load the first assignment under which ``outputs()`` matches ``expected``; True if found.

    When none matches, the first assignment stays loaded (for the checker's diagnosis) and False is
    returned. Fails when the parameters cannot hold the reference's weights in any way.
    """
    first = None
    for assignment in assignments(model, atoms, groups):
        first = first or assignment
        load(assignment)
        with torch.no_grad():
            got = outputs()
        if all(type(g) in (torch.Tensor, torch.nn.Parameter) and g.shape == e.shape
               and torch.allclose(g.double(), e.double(), rtol=1e-4, atol=atol) for g, e in zip(got, expected)):
            return True
    if first is None:
        shapes = sorted({tuple(p.shape) for p in model.parameters()})
        raise CheckFailed(f"{label}'s parameters (shapes {shapes}) cannot hold the layers this exercise describes: "
                          "check each layer's input and output sizes")
    load(first)
    return False


def shared_between_instances(cls: Callable[..., torch.nn.Module], args: tuple, kwargs: dict, label: str,
                             first: torch.nn.Module) -> None:
    """Fail if a second instance of the learner's class shares parameter tensors with ``first`` (layers built outside)."""
    second = call_learner(cls, *args, name=label, **kwargs)
    ids = {id(p) for p in first.parameters()}
    if isinstance(second, torch.nn.Module) and any(id(p) in ids for p in second.parameters()):
        raise CheckFailed(f"two {label} objects share their layers: build every layer inside __init__ "
                          "(layers created outside the class, e.g. taken from another model, are not your module)")


def build_learner_module(cls: Callable[..., torch.nn.Module], args: tuple, kwargs: dict, label: str,
                         dry_run: Callable[[torch.nn.Module], object], allowed: tuple[type, ...] = ()) -> torch.nn.Module:
    """The learner's module ``cls(*args, **kwargs)``, refused if it is or holds a ``vae_helpers`` model, lazy layers set up.

    ``allowed`` are ``vae_helpers`` base classes the exercise asks for (``models.VAEBase``).
    ``dry_run(model)`` runs one forward pass, which gives lazy layers their shapes.
    """
    model = call_learner(cls, *args, name=label, **kwargs)
    if not isinstance(model, torch.nn.Module):
        raise CheckFailed(f"{label}(...) should build a torch.nn.Module (class {label}(nn.Module) with super().__init__()), "
                          f"got {type(model).__name__}")
    inside = library_modules(model, allowed)
    if inside is not None:
        raise CheckFailed(f"{label} is or holds vae_helpers' own model {inside}, the thing this exercise asks you to "
                          "build: make the layers yourself with torch.nn (nn.Linear, nn.Conv2d, ...)")
    shared_between_instances(cls, args, kwargs, label, model)
    materialise(model, lambda: call_learner(dry_run, model, name=f"{label}.forward"), label)
    return model


def library_modules(model: torch.nn.Module, allowed: tuple[type, ...] = ()) -> str | None:
    """The name of the first ``vae_helpers`` model class that ``model`` is, derives from or holds, or None."""
    for klass in type(model).__mro__:
        if klass.__module__.startswith("vae_helpers.") and klass not in allowed:
            return f"{klass.__module__}.{klass.__qualname__}"
    for name, sub in model.named_modules():
        if name and type(sub).__module__.startswith("vae_helpers."):
            return f"{type(sub).__module__}.{type(sub).__qualname__} (as {name})"
    return None
