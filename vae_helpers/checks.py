"""Checkers for the notebook exercises: each tries the learner's function and names the likely mistake.

A checker prints one line starting with a tick on success and raises ``CheckFailed`` (an
``AssertionError``) with a hint on failure. In an IPython kernel, importing this module installs a
handler that shows a failed check as one short "✗ ..." block, without the checker's frames.
Every checker has unit tests that feed it typical wrong answers.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch


# ----------------------------------------------------------------------------- shared machinery


class CheckFailed(AssertionError):
    """A checker's verdict that the learner's answer is wrong; the message says what was expected and why."""


def _short_feedback(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
    """IPython handler for ``CheckFailed``: the learner's frames (if their code crashed), then "✗ <message>"."""
    stb: list[str] = []
    cause = value.__cause__
    if cause is not None and cause.__traceback__ is not None:
        learner_tb = _without_package_frames(cause.__traceback__)
        if learner_tb is not None:
            stb = shell.InteractiveTB.structured_traceback(type(cause), cause, learner_tb)
    stb = stb + ["✗ " + str(value)]
    shell._showtraceback(etype, value, stb)  # an "error" output with ename CheckFailed; the cell still fails
    return stb


def _without_package_frames(tb: Any) -> Any:
    """A copy of the traceback chain ``tb`` without the frames of files inside ``vae_helpers``, or None."""
    import os
    from types import TracebackType

    package_dir = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frames = []
    while tb is not None:
        if not os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(package_dir):
            frames.append(tb)
        tb = tb.tb_next
    chain = None
    for t in reversed(frames):
        chain = TracebackType(chain, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return chain


def install_short_feedback() -> bool:
    """In an IPython shell, show failed checks as a short "✗" block (idempotent); return True if installed."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return False
    current = tuple(getattr(shell, "custom_exceptions", ()))
    if any(c.__name__ != "CheckFailed" for c in current):
        return False  # someone else's handler: leave it alone (IPython keeps only one)
    shell.set_custom_exc((CheckFailed,), _short_feedback)
    return True


def ok(message: str) -> None:
    """Print the one-line success message of a checker."""
    print(f"✓ {message}")


def call_learner(fn: Callable[..., Any], *args: Any, name: str | None = None, **kwargs: Any) -> Any:
    """Call the learner's ``fn``; turn ``NotImplementedError`` and crashes into a clear ``CheckFailed``.

    A crash keeps the learner's exception as ``__cause__``, so the short-feedback handler can show
    the frames of the learner's own code.
    """
    label = name or getattr(fn, "__name__", "your function")
    if not callable(fn):
        raise CheckFailed(f"expected a function for {label}, got {type(fn).__name__}")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailed(f"{label} is not implemented yet: replace `raise NotImplementedError()` with your code") from None
    except CheckFailed:
        raise
    except Exception as err:  # noqa: BLE001 - the learner's code may raise anything
        raise CheckFailed(f"calling {label} raised {type(err).__name__}: {err}") from err


def expect_tensor(out: Any, shape: tuple[int, ...], label: str, hint: str = "") -> torch.Tensor:
    """Fail unless ``out`` is a floating tensor of exactly ``shape``."""
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{label} should return a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise CheckFailed(f"{label} returned shape {tuple(out.shape)}, expected {tuple(shape)}. {hint}".strip())
    if not torch.isfinite(out).all():
        raise CheckFailed(f"{label} returned non-finite values (nan or inf); check for log(0) or exp overflow")
    return out


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block under ``torch.manual_seed(seed)`` and restore the global (CPU) RNG afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-4) -> bool:
    """``torch.allclose`` that is False (not an error) for mismatched shapes."""
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol)


def compare(got: torch.Tensor, expected: torch.Tensor, label: str, mistakes: Mapping[str, torch.Tensor],
            rtol: float = 1e-4, atol: float = 1e-4) -> None:
    """Pass if ``got`` matches ``expected``; else fail naming the first known mistake it matches.

    ``mistakes`` maps a hint (e.g. "you used the variance where the log-variance belongs") to the
    value that mistake would produce on the same inputs.
    """
    if close(got, expected, rtol, atol):
        return
    for hint, wrong in mistakes.items():
        if isinstance(wrong, torch.Tensor) and close(got, wrong.to(got.dtype), rtol, atol):
            raise CheckFailed(f"{label} does not match the expected values: expected {_preview(expected)}, "
                              f"got {_preview(got)}. Likely mistake: {hint}")
    diff = (got.double() - expected.double()).abs().max().item() if got.shape == expected.shape else float("nan")
    raise CheckFailed(
        f"{label} does not match the expected values (largest difference {diff:.4g}); "
        f"e.g. expected {_preview(expected)}, got {_preview(got)}"
    )


def _preview(t: torch.Tensor) -> str:
    flat = t.detach().flatten()[:3].tolist()
    return "[" + ", ".join(f"{v:.4g}" for v in flat) + (", ...]" if t.numel() > 3 else "]")


def points_table(exercises: Mapping[str, tuple[str, int]]) -> int:
    """Print the notebook's points table (grade_id -> (exercise, points)) and return the total."""
    if not exercises:
        raise ValueError("points_table needs at least one exercise")
    width = max(len(title) for title, _ in exercises.values())
    print(f"{'exercise':<{width}}  {'check cell':<28}  points")
    total = 0
    for grade_id, (title, points) in exercises.items():
        if isinstance(points, bool) or not isinstance(points, int) or points < 0:
            raise ValueError(f"points for {grade_id!r} must be a non-negative int, got {points!r}")
        print(f"{title:<{width}}  {grade_id:<28}  {points:>6}")
        total += points
    print(f"{'total':<{width}}  {'':<28}  {total:>6}")
    return total


# ----------------------------------------------------------------------------- notebook 01: autoencoder


# (B, input, hidden, latent): small layers, batch sizes unlike the other dims so a wrong axis shows
_AE_SHAPES = ((5, 12, 9, 3), (8, 20, 6, 2), (3, 7, 11, 4))


def _ae_layers(seed: int, input_dim: int, hidden_dim: int, latent_dim: int) -> tuple[Any, tuple[torch.nn.Linear, ...]]:
    """A small reference ``Autoencoder`` with random weights and its four ``nn.Linear`` layers."""
    from .models import AEConfig, Autoencoder

    with seeded(seed):
        model = Autoencoder(AEConfig(input_dim=input_dim, hidden_dim=hidden_dim, latent_dim=latent_dim))
        for p in model.parameters():  # larger weights than the default init: many negative pre-activations
            p.data.mul_(3.0)
    layers = (model.encoder.net[0], model.encoder.net[2], model.decoder.net[0], model.decoder.net[2])
    return model, layers


def check_autoencoder_forward(fn: Callable[..., Any]) -> None:
    """Check ``fn(x, enc_hidden, enc_out, dec_hidden, dec_out) -> (z, x_hat)`` against ``models.Autoencoder``."""
    import torch.nn.functional as F

    label = "autoencoder_forward"
    for i, (batch, input_dim, hidden_dim, latent_dim) in enumerate(_AE_SHAPES):
        model, layers = _ae_layers(100 + i, input_dim, hidden_dim, latent_dim)
        x = torch.rand(batch, input_dim, generator=torch.Generator().manual_seed(200 + i))
        with torch.no_grad():
            out = call_learner(fn, x.clone(), *layers, name=label)
            if not isinstance(out, tuple) or len(out) != 2:
                raise CheckFailed(f"{label} should return a pair (z, x_hat), got {type(out).__name__}"
                                     + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
            z, x_hat = out
            if isinstance(z, torch.Tensor) and isinstance(x_hat, torch.Tensor) and tuple(z.shape) == (batch, input_dim) \
                    and tuple(x_hat.shape) == (batch, latent_dim):
                raise CheckFailed(f"{label} returned (x_hat, z); return them in the order (z, x_hat)")
            expect_tensor(z, (batch, latent_dim), f"the code z from {label}", "z has one row per image and latent_dim columns.")
            expect_tensor(x_hat, (batch, input_dim), f"x_hat from {label}", "x_hat has the shape of x.")
            (W1, b1), (W2, b2), (W3, b3), (W4, b4) = [(layer.weight, layer.bias) for layer in layers]
            # independent oracle: the formulas written out with matrices
            h_enc = F.elu(x @ W1.T + b1)
            z_ref = h_enc @ W2.T + b2
            logits_ref = F.elu(z_ref @ W3.T + b3) @ W4.T + b4
            x_hat_ref = torch.sigmoid(logits_ref)
            assert close(z_ref, model.encode(x)) and close(x_hat_ref, model(x)), "internal error: oracle and Autoencoder disagree"
            compare(z, z_ref, "the code z", {
                "you used ReLU in the encoder's hidden layer; this model uses ELU (F.elu)": F.relu(x @ W1.T + b1) @ W2.T + b2,
                "the encoder's hidden layer has no activation: apply F.elu after the first layer": (x @ W1.T + b1) @ W2.T + b2,
                "you put an activation (ELU) on the code z; the code is the plain output of the second layer": F.elu(z_ref),
                "you put an activation (ReLU) on the code z; the code is the plain output of the second layer": F.relu(z_ref),
                "you put a sigmoid on the code z; the code is the plain output of the second layer": torch.sigmoid(z_ref),
                "you put a tanh on the code z; the code is the plain output of the second layer": torch.tanh(z_ref),
            })
            h_dec = z_ref @ W3.T + b3
            compare(x_hat, x_hat_ref, "the reconstruction x_hat", {
                "x_hat is missing the output sigmoid: you returned logits, but pixel values lie in [0, 1]": logits_ref,
                "you used ReLU in the decoder's hidden layer; this model uses ELU (F.elu)": torch.sigmoid(F.relu(h_dec) @ W4.T + b4),
                "the decoder's hidden layer has no activation: apply F.elu after dec_hidden": torch.sigmoid(h_dec @ W4.T + b4),
                "you used a sigmoid in the decoder's hidden layer; the hidden layer uses ELU, the sigmoid comes last":
                    torch.sigmoid(torch.sigmoid(h_dec) @ W4.T + b4),
                "you used an ELU where the output sigmoid belongs": F.elu(logits_ref),
                "you used a ReLU where the output sigmoid belongs": F.relu(logits_ref),
                "you used a tanh where the output sigmoid belongs (tanh gives values in [-1, 1])": torch.tanh(logits_ref),
            })
    ok(f"autoencoder_forward matches models.Autoencoder and the written-out formulas on {len(_AE_SHAPES)} cases")


def _loss_cases(seed: int, logit_scale: float = 2.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(x in [0, 1], logits) pairs; batch sizes differ from the pixel counts."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(batch, pixels, generator=g), logit_scale * torch.randn(batch, pixels, generator=g))
            for batch, pixels in ((4, 10), (7, 3), (2, 25), (9, 6))]


def _expect_batch_scalar(out: Any, batch: int, label: str) -> torch.Tensor:
    """Fail with a reduction hint unless ``out`` is a finite scalar tensor."""
    if isinstance(out, torch.Tensor) and out.dim() > 0:
        if tuple(out.shape) == (batch,):
            raise CheckFailed(f"{label} returned one value per image, shape ({batch},); "
                                 "the training loss is one number: take the mean over the batch as well")
        raise CheckFailed(f"{label} returned shape {tuple(out.shape)}; it should be a single number: "
                             "sum over the pixels (dim=1), then take the mean over the batch")
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        raise CheckFailed(f"{label} returned a Python number; return the tensor so that gradients can flow "
                             "(no .item() inside a loss)")
    return expect_tensor(out, (), label, "Return a scalar tensor.")


def check_squared_error_loss(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(x, x_hat) -> scalar``: squared error summed over pixels, averaged over the batch."""
    import torch.nn.functional as F

    from .losses import squared_error

    label = "squared_error_loss"
    cases = _loss_cases(300)
    for x, logits in cases:
        x_hat = torch.sigmoid(logits)
        batch, pixels = x.shape
        got = _expect_batch_scalar(call_learner(fn, x.clone(), x_hat.clone(), name=label), batch, label)
        ref = squared_error(x, x_hat).mean()
        expected = F.mse_loss(x_hat, x, reduction="sum") / batch
        assert close(ref, expected), "internal error: reference squared error disagrees with F.mse_loss"
        diff = x - x_hat
        compare(got, ref, label, {
            "you averaged over the pixels as well (F.mse_loss's default reduction='mean'); "
            "sum over the pixels and average over the batch only": ref / pixels,
            "you summed over the batch as well; sum over the pixels, then take the mean over the batch": ref * batch,
            "the differences must be squared: (x - x_hat) ** 2": diff.sum(1).mean(),
            "you used absolute differences; this loss squares them: (x - x_hat) ** 2": diff.abs().sum(1).mean(),
            "you took the square root (the Euclidean distance); the loss is the sum of squares itself":
                diff.pow(2).sum(1).sqrt().mean(),
            "you squared the difference of the sums; square each pixel's difference, then sum": diff.sum(1).pow(2).mean(),
            "the factor 1/2 does not belong in this loss": 0.5 * ref,
        })
    x, logits = cases[0]
    if not close(call_learner(fn, x, x.clone(), name=label), torch.zeros(())):
        raise CheckFailed(f"{label}(x, x) should be 0: a perfect reconstruction has no error")
    ok(f"{label} matches F.mse_loss(reduction='sum') / batch on {len(cases)} cases")


def check_cross_entropy_loss(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(x, logits) -> scalar``: binary cross-entropy from logits, summed over pixels, averaged over the batch."""
    import torch.nn.functional as F

    from .losses import bernoulli_log_likelihood

    label = "cross_entropy_loss"
    cases = _loss_cases(400)
    for x, logits in cases:
        batch, pixels = x.shape
        out = call_learner(fn, x.clone(), logits.clone(), name=label)
        if isinstance(out, torch.Tensor) and torch.isnan(out).any():
            raise CheckFailed(f"{label} returned nan: logits can be any real number, so log(logits) or "
                                 "log(1 - logits) fails; turn them into probabilities with a sigmoid, or better, "
                                 "compute from the logits: -(x * logits - F.softplus(logits))")
        got = _expect_batch_scalar(out, batch, label)
        ref = -bernoulli_log_likelihood(x, logits).mean()
        expected = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / batch
        assert close(ref, expected), "internal error: reference cross-entropy disagrees with PyTorch"
        p = torch.sigmoid(logits)
        log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
        compare(got, ref, label, {
            "wrong sign: the cross-entropy is minus the log-likelihood, -[x log x_hat + (1 - x) log(1 - x_hat)], "
            "and it is positive": -ref,
            "you averaged over the pixels as well (the default reduction='mean'); "
            "sum over the pixels and average over the batch only": ref / pixels,
            "you summed over the batch as well; sum over the pixels, then take the mean over the batch": ref * batch,
            "the (1 - x) * log(1 - x_hat) term is missing: it scores the background pixels, where x = 0":
                -(x * log_p).sum(1).mean(),
            "the x * log(x_hat) term is missing": -((1 - x) * log_1mp).sum(1).mean(),
            "x and x_hat are swapped: the target x multiplies the log of the prediction":
                -(p * torch.log(x) + (1 - p) * torch.log1p(-x)).sum(1).mean(),
            "you applied a sigmoid twice (to values that were already probabilities)":
                F.binary_cross_entropy_with_logits(p, x, reduction="sum") / batch,
        })
    # large logits: the naive log(sigmoid(.)) underflows to log(0) or is clamped by F.binary_cross_entropy
    for x, logits in _loss_cases(401, logit_scale=40.0):
        batch = x.shape[0]
        out = call_learner(fn, x.clone(), logits.clone(), name=label)
        ref = -bernoulli_log_likelihood(x, logits).mean()
        stable = isinstance(out, torch.Tensor) and out.dim() == 0 and bool(torch.isfinite(out)) and close(out, ref, rtol=1e-4, atol=1e-2)
        if not stable:
            raise CheckFailed(
                f"{label} is right for moderate logits but breaks for large ones (|logits| ~ 40, as a trained model "
                f"produces): expected {ref.item():.4g}, got {out.item() if isinstance(out, torch.Tensor) and out.numel() == 1 else out}. "
                "sigmoid(40) rounds to exactly 1 and log(1 - 1) = -inf (F.binary_cross_entropy clamps it to -100). "
                "Compute from the logits: -(x * logits - F.softplus(logits)), or F.binary_cross_entropy_with_logits")
    ok(f"{label} matches F.binary_cross_entropy_with_logits(reduction='sum') / batch on {len(cases)} cases and is stable for large logits")


def check_training_step(fn: Callable[..., Any]) -> None:
    """Check ``fn(model, optimizer, x, loss_fn) -> float``: zero_grad, loss, backward, step; twice in a row."""
    import copy

    from .models import autoencoder_loss

    label = "training_step"
    lr = 0.05
    model, _ = _ae_layers(500, 12, 9, 3)
    for p in model.parameters():
        p.data.div_(3.0)
    g = torch.Generator().manual_seed(501)
    batches = [torch.rand(6, 12, generator=g) for _ in range(2)]

    def loss_fn(m: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return autoencoder_loss(m, x, "bce")

    def params(m: torch.nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    def grads(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([gr.flatten() for gr in torch.autograd.grad(loss_fn(m, x)["loss"], list(m.parameters()))])

    learner, reference = copy.deepcopy(model), copy.deepcopy(model)
    learner_opt = torch.optim.SGD(learner.parameters(), lr=lr)
    for x in batches:
        start = params(learner)
        # what the right step does, computed independently with autograd (SGD: theta <- theta - lr * grad)
        with torch.no_grad():
            for p, p_ref in zip(learner.parameters(), reference.parameters()):
                p_ref.copy_(p)
        grad_now = grads(reference, x)
        stale = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in learner.parameters()])
        with torch.no_grad():
            loss_before = loss_fn(reference, x)["loss"].item()
        out = call_learner(fn, learner, learner_opt, x.clone(), loss_fn, name=label)
        moved = params(learner) - start
        expected = -lr * grad_now
        if close(moved, expected, rtol=1e-3, atol=1e-6):
            pass
        elif moved.abs().max() == 0:
            has_grads = all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.parameters())
            raise CheckFailed(
                f"the parameters did not change in {label}: "
                + ("the gradients were computed but optimizer.step() was not called after loss.backward()"
                   if has_grads else "no gradient reached the parameters before the step; the order is "
                   "optimizer.zero_grad(), loss.backward(), optimizer.step()")
            )
        elif close(moved, -lr * (grad_now + stale), rtol=1e-3, atol=1e-6):
            raise CheckFailed(f"on the second call of {label} the step used the sum of this batch's and the previous "
                                 "batch's gradients: call optimizer.zero_grad() before loss.backward(), because "
                                 "backward() adds to the .grad already there")
        elif close(moved, -lr * stale, rtol=1e-3, atol=1e-6):
            raise CheckFailed(f"{label} stepped with the previous batch's gradients: the order is "
                                 "zero_grad(), loss.backward(), optimizer.step()")
        elif close(moved, lr * grad_now, rtol=1e-3, atol=1e-6):
            raise CheckFailed(f"{label} climbed the loss instead of descending it: minimise loss_fn(model, x)['loss'] "
                                 "itself (no minus sign) and let the optimizer take the step")
        else:
            raise CheckFailed(f"{label} changed the parameters, but not by one gradient step on loss_fn(model, x)['loss'] "
                                 "(check: one forward pass, loss.backward(), optimizer.step(), no extra steps)")
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            if out.requires_grad:
                raise CheckFailed(f"{label} returned the loss tensor with its graph; return a plain number with loss.item()")
            out = out.item()
        if isinstance(out, bool) or not isinstance(out, (int, float)):
            raise CheckFailed(f"{label} should return the batch loss as a Python float (loss.item()), got {type(out).__name__}")
        if abs(out - loss_before) > 1e-4 * max(1.0, abs(loss_before)):
            with torch.no_grad():
                after = loss_fn(learner, x)["loss"].item()
            hint = ("that is the loss after the update; return the one computed before optimizer.step()"
                    if abs(out - after) <= 1e-4 * max(1.0, abs(after)) else "return loss.item() of this batch's loss")
            raise CheckFailed(f"{label} returned {out:.5g}, expected the batch loss {loss_before:.5g}: {hint}")
    ok(f"{label} takes exactly one gradient step per call ({len(batches)} calls in a row) and returns the batch loss")


# ----------------------------------------------------------------------------- notebook 02: VAE


_LOG_2PI = 1.8378770664093453  # log(2 pi)
# (batch, latent or pixel dims): batch != dims so that a reduction over the wrong axis shows in the shape
_VAE_SHAPES = ((5, 3), (7, 2), (4, 10), (6, 1))


def _expect_nb02(out: Any, shape: tuple[int, ...], label: str, what: str) -> torch.Tensor:
    """``expect_tensor`` with hints for the usual reduction mistakes of notebook 02."""
    if isinstance(out, torch.Tensor) and out.dim() == 0 and shape != ():
        raise CheckFailed(f"{label} returned a single number; it should return {what}, shape {shape}: "
                             "sum over the last dimension only (dim=-1), not over the batch")
    if isinstance(out, torch.Tensor) and out.dim() == 1 and len(shape) == 1 and tuple(out.shape) != shape:
        raise CheckFailed(f"{label} returned shape {tuple(out.shape)}, expected {shape}: you reduced over the "
                             "batch dimension (dim=0); sum over the last dimension (dim=-1) instead")
    if isinstance(out, torch.Tensor) and torch.isnan(out).any():
        raise CheckFailed(f"{label} returned nan: did you take the log or square root of logvar? logvar can be "
                             "negative; the variance is exp(logvar) and the standard deviation exp(logvar / 2)")
    return expect_tensor(out, shape, label, hint=f"Return {what}.")


def _normal_cases(seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(x, mu, logvar) triples of the shapes in ``_VAE_SHAPES``, drawn with a fixed generator."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, dim in _VAE_SHAPES:
        x = torch.rand(batch, dim, generator=g)
        mu = torch.randn(batch, dim, generator=g)
        logvar = 1.5 * torch.randn(batch, dim, generator=g)
        cases.append((x, mu, logvar))
    return cases


def check_gaussian_kl(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(mu, logvar) -> (batch,)`` against ``torch.distributions`` and the reference."""
    from torch.distributions import Normal, kl_divergence

    from .losses import gaussian_kl

    cases = _normal_cases(20)
    for _, mu, logvar in cases:
        batch, dim = mu.shape
        got = _expect_nb02(call_learner(fn, mu.clone(), logvar.clone(), name="gaussian_kl"), (batch,),
                           "gaussian_kl", "one KL per example")
        expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
        ref = gaussian_kl(mu, logvar)
        assert close(ref, expected), "internal error: reference gaussian_kl disagrees with torch.distributions"
        mu2, var = mu.pow(2), logvar.exp()
        mistakes = {
            "wrong sign: a KL divergence is never negative; KL = -1/2 * sum(1 + logvar - mu^2 - exp(logvar))": -ref,
            "you averaged over the latent dimensions; the KL of independent dimensions is their sum": ref / dim,
            "the factor 1/2 in front of the sum is missing": 2 * ref,
            "the constant 1 inside the sum is missing (with it, the KL is 0 when mu = 0 and logvar = 0)": ref + 0.5 * dim,
            "you used logvar where the variance exp(logvar) belongs (variance vs log-variance)":
                -0.5 * torch.sum(1 + logvar - mu2 - logvar, -1),
            "you used the standard deviation exp(logvar / 2) where the variance exp(logvar) belongs":
                -0.5 * torch.sum(1 + logvar - mu2 - torch.exp(0.5 * logvar), -1),
            "you used log(sigma) = logvar / 2 where log(sigma^2) = logvar belongs":
                -0.5 * torch.sum(1 + 0.5 * logvar - mu2 - var, -1),
            "the mu^2 term has the wrong sign: it enters as -mu^2 inside the sum": -0.5 * torch.sum(1 + logvar + mu2 - var, -1),
            "mu must be squared": -0.5 * torch.sum(1 + logvar - mu - var, -1),
        }
        compare(got, ref, "gaussian_kl", mistakes)
    zero = call_learner(fn, torch.zeros(3, 4), torch.zeros(3, 4), name="gaussian_kl")
    if not close(zero, torch.zeros(3)):
        raise CheckFailed("gaussian_kl(0, 0) should be 0: q(z|x) = N(0, I) is exactly the prior")
    ok(f"gaussian_kl matches torch.distributions on {len(cases)} cases and is 0 when q(z|x) is the prior")


def check_gaussian_log_likelihood(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(x, mu, logvar) -> (batch,)`` against ``Normal(mu, exp(logvar / 2)).log_prob(x).sum(-1)``."""
    from torch.distributions import Normal

    from .losses import gaussian_log_likelihood

    cases = _normal_cases(21)
    for x, mu, logvar in cases:
        batch, dim = x.shape
        got = _expect_nb02(call_learner(fn, x.clone(), mu.clone(), logvar.clone(), name="gaussian_log_likelihood"),
                           (batch,), "gaussian_log_likelihood", "one log-density per example")
        expected = Normal(mu, torch.exp(0.5 * logvar)).log_prob(x).sum(-1)
        ref = gaussian_log_likelihood(x, mu, logvar)
        assert close(ref, expected), "internal error: reference gaussian_log_likelihood disagrees with torch.distributions"
        sq = (x - mu).pow(2)
        mistakes = {
            "wrong sign: return the log-density log N(x; mu, exp(logvar)), not its negative (the loss)": -ref,
            "the constant -1/2 log(2 pi) per pixel is missing (without it the density does not integrate to 1)":
                ref + 0.5 * dim * _LOG_2PI,
            "the normalising term -1/2 logvar (the log of 1/sigma) is missing": ref + 0.5 * logvar.sum(-1),
            "the logvar term has the wrong sign: log N contains -1/2 logvar": ref + logvar.sum(-1),
            "you divided by the standard deviation exp(logvar / 2) where the variance exp(logvar) belongs":
                -0.5 * torch.sum(_LOG_2PI + logvar + sq * torch.exp(-0.5 * logvar), -1),
            "you multiplied the squared error by the variance instead of dividing by it":
                -0.5 * torch.sum(_LOG_2PI + logvar + sq * logvar.exp(), -1),
            "you used logvar itself as the variance (variance vs log-variance): the variance is exp(logvar)":
                -0.5 * torch.sum(_LOG_2PI + logvar + sq / logvar, -1),
            "you treated logvar as log(sigma); it is log(sigma^2), so sigma = exp(logvar / 2)":
                -0.5 * torch.sum(_LOG_2PI + 2 * logvar + sq * torch.exp(-2 * logvar), -1),
            "the factor 1/2 is missing": 2 * ref,
            "the factor 1/2 is missing on the squared-error term": -0.5 * torch.sum(_LOG_2PI + logvar, -1) - torch.sum(sq / logvar.exp(), -1),
            "you averaged over pixels; independent pixels multiply, so their log-densities add up (sum)": ref / dim,
        }
        compare(got, ref, "gaussian_log_likelihood", mistakes)
    ok(f"gaussian_log_likelihood matches torch.distributions.Normal on {len(cases)} cases")


def check_reparameterize(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(mu, logvar) -> z``: gradients flow to mu and logvar, z ~ N(mu, exp(logvar)), fresh noise."""
    with seeded(22):
        g = torch.Generator().manual_seed(22)
        mu = torch.randn(5, 3, generator=g).requires_grad_()
        logvar = (1.5 * torch.randn(5, 3, generator=g)).requires_grad_()
        z = call_learner(fn, mu, logvar, name="reparameterize")
        if isinstance(z, torch.Tensor) and tuple(z.shape) != (5, 3):
            raise CheckFailed(f"reparameterize returned shape {tuple(z.shape)}, expected {(5, 3)} like mu: draw one "
                                 "eps per example and latent dimension, e.g. torch.randn_like(mu)")
        z = expect_tensor(z, (5, 3), "reparameterize")
        if not z.requires_grad:
            raise CheckFailed("z carries no gradient back to mu and logvar: a plain sample (Normal(...).sample(), "
                                 "or code under torch.no_grad) blocks it. Draw eps ~ N(0, I) on its own and return "
                                 "mu + exp(logvar / 2) * eps")
        if close(z.detach(), mu.detach(), rtol=0, atol=1e-6):
            raise CheckFailed("z equals mu: the noise term exp(logvar / 2) * eps is missing")
        d_mu, d_logvar = torch.autograd.grad(z.sum(), (mu, logvar), allow_unused=True)
        d_mu = torch.zeros_like(mu) if d_mu is None else d_mu
        d_logvar = torch.zeros_like(logvar) if d_logvar is None else d_logvar
        if not close(d_mu, torch.ones_like(mu)):
            hint = (" (torch.normal(mu, std) returns a sample whose gradient is zero)" if close(d_mu, torch.zeros_like(mu)) else "")
            raise CheckFailed("dz/dmu should be 1 for every entry, since z = mu + sigma * eps" + hint)
        noise = (z - mu).detach()
        compare(d_logvar, 0.5 * noise, "dz/dlogvar", {
            "you scaled eps by the variance exp(logvar); the standard deviation is exp(logvar / 2)": noise,
            "you used logvar itself as the standard deviation; it is exp(logvar / 2)": noise / logvar.detach(),
            "the scale does not depend on logvar: use sigma = exp(logvar / 2)": torch.zeros_like(noise),
        })
        # statistics on many draws: eps must be standard normal, independent across entries and calls
        n = 20_000
        mu_big = torch.tensor([0.5, -1.0, 2.0]).repeat(n, 1)
        logvar_big = torch.tensor([-1.0, 0.0, 1.5]).repeat(n, 1)
        z_big = call_learner(fn, mu_big, logvar_big, name="reparameterize").detach()
        eps = (z_big - mu_big) / torch.exp(0.5 * logvar_big)  # (n, 3)
        if (eps.amax(0) - eps.amin(0)).max() < 1e-4:
            raise CheckFailed("every example got the same eps: draw an independent eps for each entry of mu "
                                 "(torch.randn_like(mu)), not one number for the whole batch")
        if abs(eps.mean().item() - 0.5) < 0.05 and abs(eps.var().item() - 1 / 12) < 0.02:
            raise CheckFailed("eps looks uniform on [0, 1]: use torch.randn (standard normal), not torch.rand")
        if eps.mean(0).abs().max() > 0.05 or (eps.var(0) - 1).abs().max() > 0.06:
            raise CheckFailed(f"(z - mu) / exp(logvar / 2) should be standard normal, but has mean "
                                 f"{eps.mean().item():.3f} and variance {eps.var().item():.3f}")
        again = call_learner(fn, mu.detach(), logvar.detach(), name="reparameterize")
        if close(again.detach(), z.detach(), rtol=0, atol=1e-7):
            raise CheckFailed("two calls returned the same z: draw fresh noise on every call (no fixed seed inside)")
    ok(f"reparameterize: gradients reach mu and logvar, z ~ N(mu, exp(logvar)) on {n} draws, fresh noise on every call")


class _SharpVAE(torch.nn.Module):
    """A tiny VAE whose posterior is (almost) a point: logvar = -40, so z = mu whatever eps is."""

    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae = vae

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, _ = self.vae.encode(x)
        return mu, torch.full_like(mu, -40.0)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.vae.log_likelihood(x, z)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.vae, name)


class _LeafPosterior(_SharpVAE):
    """A tiny VAE whose encoder output is a pair of leaf tensors, so the gradient of a loss w.r.t. mu can be read."""

    def __init__(self, vae: torch.nn.Module, mu: torch.Tensor, logvar: torch.Tensor):
        super().__init__(vae)
        self.mu = torch.nn.Parameter(mu.clone())
        self.logvar = torch.nn.Parameter(logvar.clone())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu, self.logvar


def check_negative_elbo(fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(model, x) -> scalar``: the batch mean of -log p(x|z) + KL(q(z|x) || p(z)), one z per input."""
    from .losses import gaussian_kl, vae_loss
    from .models import VAE, VAEConfig

    with seeded(23):
        vae = VAE(VAEConfig(input_dim=12, hidden_dim=16, latent_dim=3))
        with torch.no_grad():
            vae.encoder.net[-1].bias[3:] += 1.5  # logvar around 1.5, so a wrong scale of eps shows in the mean
        x = torch.bernoulli(torch.full((6, 12), 0.4))
        sharp = _SharpVAE(vae)
        got = call_learner(fn, sharp, x, name="negative_elbo")
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (6,):
            raise CheckFailed("negative_elbo returned one value per example; return their mean over the batch, "
                                 "a scalar, which is what fit minimises")
        got = expect_tensor(got, (), "negative_elbo", hint="Return a scalar: the mean over the batch.")
        with torch.no_grad():
            mu, logvar = sharp.encode(x)
            log_px = vae.log_likelihood(x, mu)  # (B,): z = mu exactly when logvar = -40
            kl = gaussian_kl(mu, logvar)
        ref = (-log_px + kl).mean()
        compare(got.detach(), ref, "negative_elbo", {
            "you returned the ELBO; the loss to minimise is its negative, -log p(x|z) + KL": -ref,
            "you summed over the batch; take the mean so the loss does not grow with the batch size": ref * x.shape[0],
            "the KL term is missing": (-log_px).mean(),
            "the KL must be added: -ELBO = -log p(x|z) + KL(q(z|x) || p(z))": (-log_px - kl).mean(),
            "the reconstruction term -log p(x|z) is missing": kl.mean(),
            "the reconstruction term has the wrong sign: it is minus the log-likelihood": (log_px + kl).mean(),
        }, rtol=1e-4, atol=1e-3)
        # with a real posterior the loss must be random (a sampled z) and unbiased for -ELBO
        draws = torch.stack([call_learner(fn, vae, x, name="negative_elbo").detach() for _ in range(300)])
        if (draws.max() - draws.min()) < 1e-4 * (1 + draws.abs().max()):
            raise CheckFailed("negative_elbo gives the same value on every call: sample z with "
                                 "models.reparameterize(mu, logvar) instead of using z = mu")
        with torch.no_grad():
            expected = vae_loss(vae, x, num_samples=20_000)["loss"]
        tolerance = 5 * draws.std().item() / 300**0.5 + 1e-3
        if abs(draws.mean().item() - expected.item()) > tolerance:
            raise CheckFailed(f"on average over 300 calls your loss is {draws.mean().item():.3f}, but -ELBO is "
                                 f"{expected.item():.3f}: check how z is drawn (z = mu + exp(logvar / 2) * eps)")
        with torch.no_grad():
            mu, logvar = vae.encode(x)
        leaf = _LeafPosterior(vae, mu, logvar)
        loss = call_learner(fn, leaf, x, name="negative_elbo")
        if not loss.requires_grad:
            raise CheckFailed("no gradient reached the networks: the loss was computed under torch.no_grad() or "
                                 "detached; fit needs to call .backward() on it")
        loss.backward()
        silent = [name for name, p in vae.decoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        if silent:
            raise CheckFailed(f"no gradient reached the decoder ({silent[0]}): build log p(x|z) with "
                                 "model.log_likelihood(x, z), without .detach() or torch.no_grad()")
        kl_only = mu / x.shape[0]  # d mean(KL) / d mu: what is left when z is cut off from mu
        if leaf.mu.grad is None or close(leaf.mu.grad, kl_only, rtol=1e-4, atol=1e-6):
            raise CheckFailed("no gradient reached the encoder through z: z must stay connected to mu and logvar "
                                 "(no .detach(), no plain sample); that is the point of the reparameterisation trick")
    ok("negative_elbo: the batch mean of -log p(x|z) + KL, with a fresh z each call and gradients for both networks")


class _FixedWeights(torch.nn.Module):
    """A stand-in model whose ``log_importance_weights`` returns a fixed ``(k, B)`` table."""

    def __init__(self, log_w: torch.Tensor):
        super().__init__()
        self.log_w = log_w

    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        if k != self.log_w.shape[0]:
            raise ValueError(f"asked for k = {k} weights, but this test model has {self.log_w.shape[0]}")
        return self.log_w.clone()


def check_iwae_estimate(fn: Callable[[torch.nn.Module, torch.Tensor, int], torch.Tensor]) -> None:
    """Check ``fn(model, x, k) -> (B,)``: log (1/k) sum_i exp(log_w_i) computed stably with a log-sum-exp."""
    import math

    g = torch.Generator().manual_seed(24)
    cases = [-700 + 10 * torch.randn(50, 2, generator=g), -100 + 3 * torch.randn(5, 3, generator=g),
             -90 + torch.randn(1, 4, generator=g), torch.full((8, 3), -120.0)]
    for log_w in cases:
        k, batch = log_w.shape
        got = call_learner(fn, _FixedWeights(log_w), torch.zeros(batch, 4), k, name="iwae_estimate")
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (k,) and k != batch:
            raise CheckFailed("iwae_estimate returned one value per sample; the k samples lie along dim 0 of "
                                 "log_w (k, B): reduce over dim=0 to get one estimate per input")
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (batch,) and not torch.isfinite(got).all():
            raise CheckFailed("iwae_estimate returned -inf or nan: exp(log_w) underflows to 0 for log-weights near "
                                 "-700; use torch.logsumexp, which subtracts the largest log-weight first")
        got = expect_tensor(got, (batch,), "iwae_estimate", hint="Return one estimate per input, shape (B,).")
        ref = torch.logsumexp(log_w, 0) - math.log(k)
        compare(got, ref, "iwae_estimate", {
            "the -log k is missing: the estimate is the log of the AVERAGE weight, (1/k) sum_i w_i": ref + math.log(k),
            "you averaged the log-weights: that is the ELBO estimate; take the log of the average weight instead":
                log_w.mean(0),
            "wrong sign: return the estimate of log p(x), not the negative log-likelihood": -ref,
            "you kept only the largest log-weight (max); add up all k weights with torch.logsumexp": log_w.max(0).values,
            "you kept only the largest log-weight (max) minus log k; add up all k weights with torch.logsumexp":
                log_w.max(0).values - math.log(k),
        })
    ok(f"iwae_estimate matches log (1/k) sum_i w_i on {len(cases)} cases, stably for log-weights near -700")


# ----------------------------------------------------------------------------- notebook 03: conv VAE


# (size, kernel_size, stride, padding): the notebook's layers plus odd sizes where rounding down matters
_CONV_CASES = ((28, 3, 1, 1), (28, 3, 2, 1), (14, 3, 2, 1), (7, 3, 2, 1), (28, 5, 1, 0), (28, 4, 2, 1),
               (6, 3, 2, 0), (5, 3, 2, 0), (32, 5, 3, 2), (9, 2, 2, 0), (11, 7, 2, 3), (28, 3, 3, 0))


def check_conv_output_size(fn: Callable[[int, int, int, int], int]) -> None:
    """Check ``fn(size, kernel_size, stride, padding) -> int`` against ``nn.Conv2d`` on ``_CONV_CASES``."""
    import math

    from torch import nn

    from .models import conv_output_size

    got = []
    for size, k, s, p in _CONV_CASES:
        out = call_learner(fn, size, k, s, p, name="conv_output_size")
        if isinstance(out, float) and out != int(out):
            raise CheckFailed(f"conv_output_size({size}, {k}, {s}, {p}) returned {out}, a fraction: a layer cannot "
                                 "output part of a pixel. Round down with floor division // (not /)")
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            out = out.item()
        if isinstance(out, bool) or not isinstance(out, (int, float)) and not hasattr(out, "__index__"):
            raise CheckFailed(f"conv_output_size should return an int, got {type(out).__name__}")
        got.append(int(out))
    torch_sizes = []
    for size, k, s, p in _CONV_CASES:
        layer = nn.Conv2d(1, 1, k, stride=s, padding=p)
        with torch.no_grad():
            torch_sizes.append(layer(torch.zeros(1, 1, size, size)).shape[-1])
    expected = [conv_output_size(*case) for case in _CONV_CASES]
    assert expected == torch_sizes, "internal error: reference conv_output_size disagrees with nn.Conv2d"
    mistakes = {
        "the padding is added on both sides of the image: use size + 2 * padding":
            [(n + p - k) // s + 1 for n, k, s, p in _CONV_CASES],
        "you forgot the + 1 (a kernel that fits exactly once still gives one output pixel)":
            [(n + 2 * p - k) // s for n, k, s, p in _CONV_CASES],
        "you rounded up; PyTorch rounds down (floor division //), the last partial window is dropped":
            [math.ceil((n + 2 * p - k) / s) + 1 for n, k, s, p in _CONV_CASES],
        "you ignored the stride: divide (size + 2 * padding - kernel_size) by the stride":
            [n + 2 * p - k + 1 for n, k, s, p in _CONV_CASES],
        "the + 1 belongs outside the division: (size + 2 * padding - kernel_size) // stride + 1":
            [(n + 2 * p - k + 1) // s for n, k, s, p in _CONV_CASES],
        "you forgot to subtract the kernel size (the window must fit inside the padded image)":
            [(n + 2 * p) // s + 1 for n, k, s, p in _CONV_CASES],
    }
    if got != expected:
        for hint, wrong in mistakes.items():
            if got == wrong:
                raise CheckFailed(f"conv_output_size does not match nn.Conv2d. Likely mistake: {hint}")
        i = next(j for j, (a, b) in enumerate(zip(got, expected)) if a != b)
        size, k, s, p = _CONV_CASES[i]
        raise CheckFailed(f"conv_output_size(size={size}, kernel_size={k}, stride={s}, padding={p}) returned {got[i]}, "
                             f"but nn.Conv2d gives {expected[i]}. Use (size + 2*padding - kernel_size) // stride + 1")
    ok(f"conv_output_size agrees with nn.Conv2d on {len(_CONV_CASES)} layer settings")


def _small_conv_vaes() -> list[Any]:
    """Two tiny ConvVAEs (seed layout, and two stride-2 layers) built under a fixed seed."""
    from .models import ConvVAE, ConvVAEConfig

    configs = [ConvVAEConfig(latent_dim=3, channels=(4, 6, 6, 6), strides=(1, 2, 1, 1), hidden_dim=8, decoder_channels=(5,)),
               ConvVAEConfig(latent_dim=2, channels=(4, 7), strides=(2, 2), hidden_dim=8, decoder_channels=(6, 5))]
    with seeded(3):
        models = [ConvVAE(c).eval() for c in configs]
        for m in models:  # positive-ish biases make the skipped-ReLU mistake visible
            with torch.no_grad():
                m.from_z[0].bias.normal_(0.0, 0.5)
    return models


def check_conv_decode(fn: Callable[[Any, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(model, z) -> logits (B, 1, 28, 28)`` against ``ConvVAE.decode`` and per-example decoding."""
    g = torch.Generator().manual_seed(30)
    cases = 0
    for model in _small_conv_vaes():
        c = model.config
        C, s = c.channels[-1], c.feature_size
        for batch in (5, 1):
            z = 2.0 * torch.randn(batch, c.latent_dim, generator=g)
            with torch.no_grad():
                try:
                    out = call_learner(fn, model, z, name="conv_decode")
                except CheckFailed as err:
                    if "shape" not in str(err) and "size" not in str(err):
                        raise
                    raise CheckFailed(f"{err}. Hint: reshape the dense output with the batch size of z and the model's "
                                         f"own sizes, h.view(z.shape[0], C, s, s) with C = model.config.channels[-1] "
                                         f"and s = model.config.feature_size (here {C} and {s}); do not hard-code 64 or 14") from err.__cause__
                expected = model.decode(z)
                h = model.from_z(z)
                channels_last = model.decoder(h.view(batch, s, s, C).permute(0, 3, 1, 2))
                no_relu = model.decoder(model.from_z[0](z).view(batch, C, s, s))
                one_by_one = torch.cat([model.decode(z[i : i + 1]) for i in range(batch)])
            assert close(expected, one_by_one, 1e-5, 1e-5), "internal error: decoding one by one differs"
            if isinstance(out, torch.Tensor) and tuple(out.shape) != (batch, 1, 28, 28):
                shape = tuple(out.shape)
                if shape == (batch, 784):
                    hint = "you flattened the output; return the image shape (B, 1, 28, 28)"
                elif shape == (batch, 28, 28):
                    hint = "keep the channel dimension: (B, 1, 28, 28), not (B, 28, 28)"
                elif len(shape) == 4 and shape[0] == batch and shape[2:] == (28, 28):
                    hint = "the output has several channels: apply every layer of model.decoder (its last conv maps to 1 channel)"
                elif len(shape) == 4 and shape[0] == batch:
                    hint = "the image is not 28 x 28: run h through all of model.decoder after the reshape"
                else:
                    hint = f"reshape the dense output to (B, C, s, s) = (B, {C}, {s}, {s}) with B = z.shape[0], then apply model.decoder"
                raise CheckFailed(f"conv_decode returned shape {shape}, expected {(batch, 1, 28, 28)}: {hint}")
            out = expect_tensor(out, (batch, 1, 28, 28), "conv_decode")
            compare(out, expected, "conv_decode", {
                "you returned probabilities (a sigmoid); decode returns logits, the Bernoulli likelihood applies the sigmoid itself":
                    torch.sigmoid(expected),
                "you reshaped channels last, view(B, s, s, C); PyTorch convolutions want channels first: view(B, C, s, s)":
                    channels_last,
                "you skipped the ReLU after the dense layer: use model.from_z (Linear then ReLU), not model.from_z[0]":
                    no_relu,
            }, rtol=1e-4, atol=1e-5)
            cases += 1
    ok(f"conv_decode reproduces ConvVAE.decode on {cases} cases (two layouts, batches of 5 and 1)")


def check_interpolate_latents(fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> None:
    """Check ``fn(z_start (D,), z_end (D,), num_steps) -> (num_steps, D)`` against ``torch.lerp``."""
    g = torch.Generator().manual_seed(31)
    cases = ((2, 5), (16, 9), (3, 2), (7, 11))
    for dim, n in cases:
        z_start, z_end = torch.randn(dim, generator=g), torch.randn(dim, generator=g)
        out = call_learner(fn, z_start.clone(), z_end.clone(), n, name="interpolate_latents")
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (dim, n) and dim != n:
            raise CheckFailed(f"interpolate_latents returned shape {(dim, n)}, expected {(n, dim)}: one row per step "
                                 "(num_steps, D); transpose, or build t as a column t[:, None]")
        if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[1] == dim and out.shape[0] != n:
            raise CheckFailed(f"interpolate_latents returned {out.shape[0]} steps, expected num_steps = {n}, "
                                 "both ends included: torch.linspace(0, 1, num_steps)")
        out = expect_tensor(out, (n, dim), "interpolate_latents", hint="Return one row per step: (num_steps, D).")
        t = torch.linspace(0.0, 1.0, n)[:, None]
        expected = torch.lerp(z_start, z_end, t)
        inner = torch.linspace(0.0, 1.0, n + 2)[1:-1, None]
        compare(out, expected, "interpolate_latents", {
            "the path runs backwards: row 0 must be z_start and the last row z_end, z(t) = (1 - t) z_start + t z_end":
                expected.flip(0),
            "the end point is missing: t must reach 1, torch.linspace(0, 1, num_steps) (not arange(n) / n)":
                torch.lerp(z_start, z_end, torch.arange(n)[:, None] / n),
            "the start point is missing: t must start at 0, torch.linspace(0, 1, num_steps)":
                torch.lerp(z_start, z_end, torch.arange(1, n + 1)[:, None] / n),
            "both end points are missing: include t = 0 and t = 1, torch.linspace(0, 1, num_steps)":
                torch.lerp(z_start, z_end, inner),
            "the weights do not add up to 1: use (1 - t) * z_start + t * z_end":
                z_start + t * z_end,
        }, rtol=1e-5, atol=1e-5)
    ok(f"interpolate_latents matches (1 - t) z_start + t z_end on {len(cases)} cases, both ends included")


# ----------------------------------------------------------------------------- notebook 04: planar flows


def _learner_pair(out: Any, label: str) -> tuple[Any, Any]:
    """Unpack the ``(z_new, log_det)`` pair a planar transform returns, or fail with a clear message."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed(f"{label} should return a pair (z_new, log_det), got {type(out).__name__}"
                             + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    return out[0], out[1]


def _expect_per_example(out: Any, batch: int, label: str, what: str) -> torch.Tensor:
    """``expect_tensor`` for one value per example, with hints for the usual shape mistakes."""
    if isinstance(out, torch.Tensor) and out.dim() == 0:
        raise CheckFailed(f"{label} returned a single number; it should return {what}, shape ({batch},): "
                             "do not sum or average over the batch")
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == batch:
        raise CheckFailed(f"{label} returned shape {tuple(out.shape)}, expected ({batch},): one value per example; "
                             + ("drop the trailing dimension of size 1 (e.g. .squeeze(-1)) or sum over dim=-1"
                                if out.shape[1] == 1 else "sum over the last dimension (dim=-1)"))
    return expect_tensor(out, (batch,), label, hint=f"Return {what}.")


def _planar_cases(seed: int) -> list[tuple[torch.Tensor, ...]]:
    """(z, u, w, b) for D = 2, 5, 3 with a fixed generator; the last case has 1 + uᵀψ < 0 somewhere."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, dim in ((6, 2), (4, 5), (7, 3)):
        z = 1.5 * torch.randn(batch, dim, generator=g)
        w = torch.randn(dim, generator=g)
        u = torch.randn(dim, generator=g)
        b = torch.randn(1, generator=g)
        cases.append((z, u, w, b))
    z, _, w, b = cases[-1]
    z[0] = -b * w / w.pow(2).sum()  # wᵀz + b = 0 at the first example, where h' = 1
    cases[-1] = (z, -3.0 * w / w.pow(2).sum(), w, b)  # wᵀu = -3: 1 + uᵀψ = 1 - 3 h' < 0 near wᵀz + b = 0
    return cases


def _autograd_log_det(z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log|det ∂f/∂z| of f(z) = z + u tanh(wᵀz + b) for each row of z, from autograd Jacobians (float64)."""
    u, w, b = u.double(), w.double(), b.double()

    def f(v: torch.Tensor) -> torch.Tensor:
        return v + u * torch.tanh(v @ w + b)

    jacobians = [torch.autograd.functional.jacobian(f, row) for row in z.double()]  # each (D, D)
    return torch.stack([torch.linalg.det(j).abs().log() for j in jacobians])


def check_planar_transform(fn: Callable[..., Any]) -> None:
    """Check ``fn(z, u, w, b) -> (f(z) (B, D), log|det ∂f/∂z| (B,))`` against autograd on D = 2, 5, 3."""
    from .flows import planar_transform

    cases = _planar_cases(40)
    for z, u, w, b in cases:
        batch, dim = z.shape
        z_new, log_det = _learner_pair(call_learner(fn, z.clone(), u.clone(), w.clone(), b.clone(), name="planar_transform"),
                                       "planar_transform")
        ref_z, ref_ld = planar_transform(z, u, w, b)
        oracle = _autograd_log_det(z, u, w, b)
        assert close(ref_ld, oracle), "internal error: reference planar_transform disagrees with autograd"
        a = z @ w + b  # wᵀz + b, (B,)
        h = torch.tanh(a)
        z_new = expect_tensor(z_new, (batch, dim), "planar_transform's z_new", hint="f(z) has the shape of z.")
        compare(z_new, ref_z, "planar_transform's z_new", {
            "b is missing: the argument of h is wᵀz + b": z + u * torch.tanh(z @ w)[:, None],
            "u and w are swapped: f(z) = z + u h(wᵀz + b)": z + w * torch.tanh(z @ u + b)[:, None],
            "the skip connection is missing: f(z) = z + u h(wᵀz + b)": u * h[:, None],
            "you used h'(a) = 1 - tanh²(a) where h(a) = tanh(a) belongs": z + u * (1 - h.pow(2))[:, None],
        })
        det = 1 + (1 - h.pow(2)) * (w @ u)  # 1 + uᵀψ(z), (B,)
        if isinstance(log_det, torch.Tensor) and log_det.shape == (batch,) and torch.isnan(log_det).any() and (det < 0).any():
            raise CheckFailed("planar_transform's log_det is nan where 1 + uᵀψ(z) < 0: the log of a negative number. "
                                 "The determinant can be negative; take the log of its absolute value, log|1 + uᵀψ(z)|")
        log_det = _expect_per_example(log_det, batch, "planar_transform's log_det", "one log-determinant per example")
        compare(log_det, oracle.float(), "planar_transform's log_det (compared with log|det J| from autograd)", {
            "wrong sign: the log-determinant is +log|1 + uᵀψ(z)|, not minus": -ref_ld,
            "the log is missing: return log|1 + uᵀψ(z)|, not the determinant itself": det.abs(),
            "the log and the absolute value are missing: return log|1 + uᵀψ(z)|": det,
            "the 1 is missing: det(I + u ψᵀ) = 1 + uᵀψ (matrix determinant lemma)": ((1 - h.pow(2)) * (w @ u)).abs().log(),
            "h'(a) is 1 - tanh²(a), not tanh(a)": (1 + h * (w @ u)).abs().log(),
            "h'(a) is 1 - tanh²(a), not 1 - tanh(a)": (1 + (1 - h) * (w @ u)).abs().log(),
            "b is missing inside h'(wᵀz + b)": (1 + (1 - torch.tanh(z @ w).pow(2)) * (w @ u)).abs().log(),
            "ψ(z) = h'(wᵀz + b) w: the log-det uses uᵀw, not uᵀu or wᵀw":
                (1 + (1 - h.pow(2)) * (u @ u)).abs().log(),
        })
    ok(f"planar_transform matches f(z) and log|det ∂f/∂z| from autograd on {len(cases)} cases (D = 2, 5, 3)")


def check_constrain_u(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(u, w) -> û`` (same shape): û from the reference formula and wᵀû = m(wᵀu) > -1."""
    import torch.nn.functional as F

    from .flows import constrain_u

    g = torch.Generator().manual_seed(41)
    cases = [(torch.randn(2, generator=g), torch.randn(2, generator=g)),
             (torch.randn(5, generator=g), torch.randn(5, generator=g)),
             (torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g))]
    w = torch.randn(4, generator=g)
    cases.append((-3.0 * w / w.pow(2).sum() + 0.1 * torch.randn(4, generator=g), w))  # wᵀu near -3 < -1: not invertible
    for u, w in cases:
        got = call_learner(fn, u.clone(), w.clone(), name="constrain_u")
        got = expect_tensor(got, tuple(u.shape), "constrain_u", hint="û has the shape of u.")
        ref = constrain_u(u, w)
        wu = (w * u).sum(-1, keepdim=True)
        w_sq = w.pow(2).sum(-1, keepdim=True)
        m = -1 + F.softplus(wu)
        compare(got, ref, "constrain_u", {
            "divide by ‖w‖² (the squared norm), not by ‖w‖, so that wᵀû = m(wᵀu) exactly": u + (m - wu) * w / w_sq.sqrt(),
            "m(x) = -1 + softplus(x): the -1 is missing": u + (F.softplus(wu) - wu) * w / w_sq,
            "wrong sign of the correction: û = u + (m(wᵀu) - wᵀu) w / ‖w‖²": u - (m - wu) * w / w_sq,
            "subtract wᵀu inside the bracket: û = u + (m(wᵀu) - wᵀu) w / ‖w‖²": u + m * w / w_sq,
            "softplus(x) = log(1 + exp(x)), not exp(x)": u + (-1 + wu.exp() - wu) * w / w_sq,
            "û is u unchanged: add the correction (m(wᵀu) - wᵀu) w / ‖w‖²": u,
            "the dot product wᵀu is one number per row: sum over the last dimension only (dim=-1, keepdim=True)":
                u + (-1 + F.softplus((w * u).sum()) - (w * u).sum()) * w / w.pow(2).sum(),
        })
        wu_hat = (w * got).sum(-1)
        if not (wu_hat >= -1 - 1e-5).all():
            raise CheckFailed(f"wᵀû should be >= -1 for every row (the planar map is then invertible), got {_preview(wu_hat)}")
    ok(f"constrain_u matches the reference on {len(cases)} cases and keeps wᵀû >= -1")


def check_flow_free_energy(fn: Callable[..., torch.Tensor]) -> None:
    """Check ``fn(log_px, z0, zK, mu, logvar, log_dets (B, K)) -> (B,)`` against ``torch.distributions``."""
    from torch.distributions import Normal

    from .flows import flow_free_energy
    from .losses import gaussian_kl

    g = torch.Generator().manual_seed(42)
    cases = 0
    for batch, dim, num_flows in ((5, 2, 3), (4, 6, 1), (6, 3, 8)):
        log_px = -50 * torch.rand(batch, generator=g)
        mu = torch.randn(batch, dim, generator=g)
        logvar = torch.randn(batch, dim, generator=g)
        z0 = mu + torch.exp(0.5 * logvar) * torch.randn(batch, dim, generator=g)
        zK = z0 + torch.randn(batch, dim, generator=g)
        log_dets = 0.5 * torch.randn(batch, num_flows, generator=g)
        got = call_learner(fn, log_px.clone(), z0.clone(), zK.clone(), mu.clone(), logvar.clone(), log_dets.clone(),
                           name="flow_free_energy")
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (batch, num_flows) and num_flows > 1:
            raise CheckFailed(f"flow_free_energy returned shape {tuple(got.shape)}, expected ({batch},): "
                                 "sum the log-determinants over the K flows (dim=-1) to get one value per example")
        got = _expect_per_example(got, batch, "flow_free_energy", "one free energy per example")
        sum_ld = log_dets.sum(-1)
        log_q0 = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z0).sum(-1)
        log_pzK = Normal(0.0, 1.0).log_prob(zK).sum(-1)
        expected = log_q0 - sum_ld - log_pzK - log_px
        ref = flow_free_energy(log_px, z0, zK, mu, logvar, log_dets)
        assert close(ref, expected), "internal error: reference flow_free_energy disagrees with torch.distributions"
        log_p = lambda z: Normal(0.0, 1.0).log_prob(z).sum(-1)  # noqa: E731
        mistakes = {
            "wrong sign of the log-dets: the flows lower log q_K(z_K) = log q_0(z_0) - Σ log|det|, "
            "so the free energy subtracts them": expected + 2 * sum_ld,
            "you returned the ELBO; the free energy is its negative": -expected,
            "log q_0 is evaluated at z_0 (the sample before the flows), not at z_K":
                Normal(mu, torch.exp(0.5 * logvar)).log_prob(zK).sum(-1) - sum_ld - log_pzK - log_px,
            "the prior p(z) is evaluated at z_K (the sample after the flows), not at z_0": log_q0 - sum_ld - log_p(z0) - log_px,
            "the closed-form KL of q_0 ignores the flows: use log q_0(z_0) - Σ log|det| - log p(z_K)":
                gaussian_kl(mu, logvar) - log_px,
            "the closed-form KL of q_0 does not belong here: use log q_0(z_0) - Σ log|det| - log p(z_K)":
                gaussian_kl(mu, logvar) - sum_ld - log_px,
            "you averaged the log-dets over the flows; they add up (Σ_k)": log_q0 - log_dets.mean(-1) - log_pzK - log_px,
            "logvar is the log-variance: the standard deviation of q_0 is exp(logvar / 2)":
                Normal(mu, torch.exp(logvar)).log_prob(z0).sum(-1) - sum_ld - log_pzK - log_px,
            "the reconstruction term enters with a minus sign: F = ... - log p(x|z_K)": log_q0 - sum_ld - log_pzK + log_px,
        }
        compare(got, expected, "flow_free_energy", mistakes)
        cases += 1
    ok(f"flow_free_energy matches torch.distributions on {cases} cases")


install_short_feedback()
