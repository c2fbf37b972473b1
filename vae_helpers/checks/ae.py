"""Checkers for notebook 01 (autoencoder): forward pass, reconstruction losses, one training step."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ._core import CheckFailed, call_learner, close, compare, expect_tensor, ok, refuses, seeded
from ._judge import Trial


_BCE_READY = ("your answer uses PyTorch's ready-made cross-entropy from logits ({}); build it yourself from "
              "log sigma(a) and log(1 - sigma(a)) written with F.softplus or F.logsigmoid")
READY_BCE = {path: _BCE_READY.format(path.removeprefix("torch.")) for path in (
    "torch.nn.functional.binary_cross_entropy_with_logits", "torch.binary_cross_entropy_with_logits")}

# (B, input, hidden, latent): small layers, batch sizes unlike the other dims so a wrong axis shows
_AE_SHAPES = ((5, 12, 9, 3), (8, 20, 6, 2), (3, 7, 11, 4))


def _ae_layers(seed: int, input_dim: int, hidden_dim: int, latent_dim: int) -> tuple[Any, tuple[torch.nn.Linear, ...]]:
    """A small reference ``Autoencoder`` with random weights and its four ``nn.Linear`` layers."""
    from ..models import AEConfig, Autoencoder

    with seeded(seed):
        model = Autoencoder(AEConfig(input_dim=input_dim, hidden_dim=hidden_dim, latent_dim=latent_dim))
        for p in model.parameters():  # larger weights than the default init: many negative pre-activations
            p.data.mul_(3.0)
    layers = (model.encoder.net[0], model.encoder.net[2], model.decoder.net[0], model.decoder.net[2])
    return model, layers


def _forward_oracle(x: torch.Tensor, *layers: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """The notebook-01 forward pass written out with the layers' matrices: (z, x_hat)."""
    import torch.nn.functional as F

    (W1, b1), (W2, b2), (W3, b3), (W4, b4) = [(layer.weight, layer.bias) for layer in layers]
    z = F.elu(x @ W1.T + b1) @ W2.T + b2
    return z, torch.sigmoid(F.elu(z @ W3.T + b3) @ W4.T + b4)


@refuses("models.Autoencoder.forward", "models.Autoencoder.encode", "models.Autoencoder.decode")
def check_autoencoder_forward(fn: Callable[..., Any]) -> None:
    """Check ``fn(x, enc_hidden, enc_out, dec_hidden, dec_out) -> (z, x_hat)`` against ``models.Autoencoder``."""
    import torch.nn.functional as F

    label = "autoencoder_forward"
    for i, (batch, input_dim, hidden_dim, latent_dim) in enumerate(_AE_SHAPES):
        model, layers = _ae_layers(100 + i, input_dim, hidden_dim, latent_dim)
        x = torch.rand(batch, input_dim, generator=torch.Generator().manual_seed(200 + i))
        trial = Trial(fn, _forward_oracle, (x, *layers), label=label,
                      names=("x", "enc_hidden", "enc_out", "dec_hidden", "dec_out"))
        out = trial.got
        with torch.no_grad():
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
        trial.check_gradients()
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


@refuses("losses.squared_error")
def check_squared_error_loss(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(x, x_hat) -> scalar``: squared error summed over pixels, averaged over the batch."""
    import torch.nn.functional as F

    from ..losses import squared_error

    label = "squared_error_loss"
    cases = _loss_cases(300)
    for x, logits in cases:
        x_hat = torch.sigmoid(logits)
        batch, pixels = x.shape
        trial = Trial(fn, lambda a, b: squared_error(a, b).mean(), (x, x_hat), label=label, names=(None, "x_hat"))
        got = _expect_batch_scalar(trial.got, batch, label)
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
        trial.check_gradients()
    x, logits = cases[0]
    if not close(call_learner(fn, x, x.clone(), name=label), torch.zeros(())):
        raise CheckFailed(f"{label}(x, x) should be 0: a perfect reconstruction has no error")
    ok(f"{label} matches F.mse_loss(reduction='sum') / batch in value and gradient on {len(cases)} cases")


@refuses("losses.bernoulli_log_likelihood", "models.autoencoder_loss", library=READY_BCE)
def check_cross_entropy_loss(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(x, logits) -> scalar``: binary cross-entropy from logits, summed over pixels, averaged over the batch."""
    import torch.nn.functional as F

    from ..losses import bernoulli_log_likelihood

    label = "cross_entropy_loss"
    cases = _loss_cases(400)
    for x, logits in cases:
        batch, pixels = x.shape
        trial = Trial(fn, lambda a, b: -bernoulli_log_likelihood(a, b).mean(), (x, logits), label=label, names=(None, "logits"))
        out = trial.got
        if isinstance(out, torch.Tensor) and torch.isnan(out).any():
            raise CheckFailed(f"{label} returned nan: logits can be any real number, not probabilities, so their "
                              "log fails; write log sigma(a) and log(1 - sigma(a)) as functions of the logits a")
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
        trial.check_gradients()
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
                "Never form sigmoid(a): write both logs directly in terms of a with F.softplus (hint 2)")
    ok(f"{label} matches the cross-entropy from logits in value and gradient on {len(cases)} "
       "cases and is stable for large logits")


@refuses("train.fit")
def check_training_step(fn: Callable[..., Any]) -> None:
    """Check ``fn(model, optimizer, x, loss_fn) -> float``: zero_grad, loss, backward, step; twice in a row."""
    import copy

    from ..models import autoencoder_loss

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
                   if has_grads else "no gradient reached the parameters before the step: optimizer.step() can only "
                   "use a gradient that loss.backward() has already computed")
            )
        elif close(moved, -lr * (grad_now + stale), rtol=1e-3, atol=1e-6):
            raise CheckFailed(f"on the second call of {label} the step used the sum of this batch's and the previous "
                              "batch's gradients: backward() adds to the .grad already there, so the old gradients "
                              "must be gone before this batch's backward()")
        elif close(moved, -lr * stale, rtol=1e-3, atol=1e-6):
            raise CheckFailed(f"{label} stepped with the previous batch's gradients: when optimizer.step() runs, .grad "
                              "must hold the gradient of this batch's loss")
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

