"""The shared judge: the learner's function and the reference on the same inputs and noise, values and gradients.

``Trial`` calls both; the checker compares the values (with its table of typical mistakes), then
``Trial.check_gradients`` compares the gradients of a random projection of the outputs with
respect to every differentiable input and parameter. ``check_fresh_noise`` is the one test of the
noise of every stochastic exercise.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import Any, Callable, Sequence

import torch

from ._core import CheckFailed, _preview, call_learner, seeded

CUT_CAUSES = ("a .detach() or .data, a .item() or float(...) turned back into a tensor with torch.tensor(...), "
              "or code under torch.no_grad()")


def _flatten(out: Any) -> list[torch.Tensor]:
    """The tensors of an output that is a tensor or a tuple/list of tensors (others are skipped)."""
    items = out if isinstance(out, (tuple, list)) else (out,)
    return [t for t in items if type(t) in (torch.Tensor, torch.nn.Parameter)]


def _prepared(arg: Any, differentiable: bool) -> Any:
    """A fresh copy of one argument: a tensor (a leaf that requires grad when ``differentiable``), a module copied."""
    if isinstance(arg, torch.Tensor):
        t = arg.detach().clone()
        return t.requires_grad_(True) if differentiable and t.is_floating_point() else t
    if isinstance(arg, torch.nn.Module):
        return copy.deepcopy(arg)
    return arg


def _named_inputs(args: Sequence[Any], names: Sequence[str | None]) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) for every differentiable input: tensor arguments that require grad and module parameters."""
    found = []
    for arg, name in zip(args, names):
        if name is None:
            continue
        if isinstance(arg, torch.Tensor) and arg.requires_grad:
            found.append((name, arg))
        elif isinstance(arg, torch.nn.Module):
            found.extend((f"{name}.{pname}", p) for pname, p in arg.named_parameters() if p.requires_grad)
    return found


class Trial:
    """One call of the learner's ``fn`` and of ``reference`` on copies of the same ``args``, under the same seed.

    ``names`` gives each positional argument's name in messages, or None for one whose gradient is
    not judged (data, integers). Modules are deep-copied for the reference before the learner runs.
    With ``seed``, both calls run under ``torch.manual_seed(seed)``, so they draw the same noise;
    with ``with_got``, the reference also gets the learner's output as ``got=`` (to read the noise from it).
    """

    def __init__(self, fn: Callable[..., Any], reference: Callable[..., Any], args: Sequence[Any], *, label: str,
                 names: Sequence[str | None], seed: int | None = None, with_got: bool = False):
        if len(names) != len(args):
            raise ValueError(f"names ({len(names)}) must name every argument ({len(args)})")
        self.label, self.names = label, list(names)
        self.learner_args = [_prepared(a, n is not None) for a, n in zip(args, names)]
        self.reference_args = [_prepared(a, n is not None) for a, n in zip(args, names)]
        with seeded(seed) if seed is not None else nullcontext():
            self.got = call_learner(fn, *self.learner_args, name=label)
        with seeded(seed) if seed is not None else nullcontext():
            self.expected = reference(*self.reference_args, **({"got": self.got} if with_got else {}))

    def check_gradients(self, got: Sequence[torch.Tensor] | None = None, expected: Sequence[torch.Tensor] | None = None,
                        rtol: float = 1e-3, atol: float = 1e-5) -> None:
        """Fail unless d(r · outputs)/d(input) agrees with the reference's for every input, with r random."""
        outs_got = list(got) if got is not None else _flatten(self.got)
        outs_ref = list(expected) if expected is not None else _flatten(self.expected)
        if len(outs_got) != len(outs_ref):
            raise CheckFailed(f"{self.label} returned {len(outs_got)} tensors, expected {len(outs_ref)}")
        g = torch.Generator().manual_seed(7)
        projections = [torch.randn(tuple(t.shape), generator=g, dtype=torch.float64) for t in outs_ref]
        inputs_got = _named_inputs(self.learner_args, self.names)
        inputs_ref = _named_inputs(self.reference_args, self.names)
        grads_ref = _grads(outs_ref, projections, [t for _, t in inputs_ref])
        grads_got = _grads(outs_got, projections, [t for _, t in inputs_got])
        pairs = list(zip([name for name, _ in inputs_ref], grads_got, grads_ref))
        for name, g_got, g_ref in pairs:  # first any input the gradient does not reach at all: the clearest message
            if (g_got is None or not bool(g_got.abs().max() > 0)) and g_ref is not None and bool(g_ref.abs().max() > 0):
                raise CheckFailed(f"{self.label} gives the right values, but no gradient reaches {name}: something cut "
                                  f"it off the graph ({CUT_CAUSES}); compute with the tensors themselves")
        for name, g_got, g_ref in pairs:
            if g_got is None:
                continue
            g_ref = torch.zeros_like(g_got) if g_ref is None else g_ref
            scale = float(g_ref.abs().max()) if g_ref.numel() else 0.0
            if g_got.shape != g_ref.shape or not torch.allclose(g_got.double(), g_ref.double(), rtol=rtol, atol=atol * (1 + scale)):
                raise CheckFailed(f"{self.label} gives the right values, but its gradient with respect to {name} is wrong "
                                  f"(expected {_preview(g_ref)}, got {_preview(g_got)}): part of the result is cut off from "
                                  f"{name} ({CUT_CAUSES}), so training would not learn what this term asks")


def _grads(outs: Sequence[torch.Tensor], projections: Sequence[torch.Tensor],
           inputs: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """d(Σ_i r_i · out_i)/d(input) for each input; None where the outputs do not depend on it."""
    terms = [(r.to(o.dtype) * o).sum() for o, r in zip(outs, projections)
             if o.is_floating_point() and o.requires_grad and o.shape == r.shape]
    if not terms or not inputs:
        return [None] * len(inputs)
    with torch.enable_grad():
        return list(torch.autograd.grad(sum(terms), list(inputs), allow_unused=True, retain_graph=True))


def check_fresh_noise(draw: Callable[[], torch.Tensor], label: str, hint: str = "torch.randn_like(mu)") -> int:
    """Fail unless the standardised noise ``draw()`` returns, ``(n, d)``, is fresh, global, independent and N(0, 1).

    ``draw`` calls the learner's function once and returns eps = (z - mu) / sigma. Returns n.
    """
    with seeded(901):
        first = draw()
    with seeded(901):
        again = draw()
    with seeded(902):
        other = draw()
        later = draw()
    if torch.equal(first, other) or torch.equal(other, later):
        raise CheckFailed(f"{label} draws the same noise whatever the state of torch's random generator: it is seeded or "
                          f"fixed inside the function. Draw fresh noise on every call with {hint}, and never seed inside")
    if not torch.allclose(first, again, rtol=1e-5, atol=1e-6):
        raise CheckFailed(f"{label} drew different noise after the same torch.manual_seed: draw it from torch's own "
                          f"generator with {hint} (not numpy, Python's random or a torch.Generator of your own), so "
                          "that a seed at the top of the notebook makes the run reproducible")
    n, d = first.shape
    eps = first.double()
    if (eps.amax(0) - eps.amin(0)).max() < 1e-4:
        raise CheckFailed(f"every example got the same eps in {label}: draw an independent eps for each entry, {hint}, "
                          "not one number for the whole batch")
    if abs(eps.mean().item() - 0.5) < 0.05 and abs(eps.var().item() - 1 / 12) < 0.02:
        raise CheckFailed(f"the noise of {label} looks uniform on [0, 1]: use torch.randn (standard normal), not torch.rand")
    if eps.mean(0).abs().max() > 0.05 or (eps.var(0) - 1).abs().max() > 0.06:
        raise CheckFailed(f"(z - mu) / exp(logvar / 2) should be standard normal in {label}, but has mean "
                          f"{eps.mean().item():.3f} and variance {eps.var().item():.3f}")
    if d > 1:
        corr = torch.corrcoef(eps.T) - torch.eye(d, dtype=eps.dtype)  # independent dimensions: ~0 (sd 0.007 on 20 000 rows)
        if corr.abs().max() > 0.05:
            raise CheckFailed(f"the latent dimensions share their noise in {label} (correlation up to {corr.abs().max():.2f}): "
                              f"draw one eps per entry, of shape (B, D) like mu ({hint}), not one eps per example")
    for what, a, b in (("neighbouring examples", eps[:-1], eps[1:]), ("the two halves of the batch", eps[: n // 2], eps[n // 2:])):
        r = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
        if abs(r) > 0.05:
            raise CheckFailed(f"the examples share or mirror their noise in {label} ({what} have correlation {r:.2f}): "
                              f"draw an independent eps for every example and dimension, {hint}")
    return n
