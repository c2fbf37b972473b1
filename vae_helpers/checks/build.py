"""Checkers of the build exercises (a whole module or training loop per notebook), judged by behaviour."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ._core import CheckFailed, call_learner, compare, expect_tensor, ok, refuses, seeded
from ._judge import Trial
from ._match import OWN_MODELS, build_learner_module, match_behaviour
from .ae import _ae_layers


# ----------------------------------------------------------------------------- notebook 01


_BUILD_DIMS = (12, 9, 3)  # input, hidden, latent: distinct, so each layer is known by its weight's shape


@refuses("models.Autoencoder.forward", "models.Autoencoder.encode", "models.Autoencoder.decode",
         "models.Encoder.forward", "models.Decoder.forward", library=OWN_MODELS)
def check_autoencoder_module(cls: Callable[..., torch.nn.Module]) -> None:
    """Check an autoencoder class ``cls(input_dim, hidden_dim, latent_dim)`` with ``encode`` and ``forward``, by behaviour."""
    input_dim, hidden_dim, latent_dim = _BUILD_DIMS
    label = getattr(cls, "__name__", "your class")
    x = torch.rand(5, input_dim, generator=torch.Generator().manual_seed(509))
    with seeded(510):
        model = build_learner_module(cls, (input_dim, hidden_dim, latent_dim), {}, label, lambda m: m(x))
        expected = (input_dim * hidden_dim + hidden_dim) + (hidden_dim * latent_dim + latent_dim) \
            + (latent_dim * hidden_dim + hidden_dim) + (hidden_dim * input_dim + input_dim)
        count = sum(p.numel() for p in model.parameters())
        if count != expected:
            raise CheckFailed(f"{label}({input_dim}, {hidden_dim}, {latent_dim}) has {count} parameters, expected {expected}: "
                              "four linear layers, input -> hidden -> latent -> hidden -> input, each with a bias"
                              + (" (none found: create the layers in __init__ as attributes, self.layer = nn.Linear(...))"
                                 if count == 0 else ""))
        expect_tensor(call_learner(model.encode, x, name=f"{label}.encode"), (5, latent_dim), f"{label}.encode",
                      "The code has one row per input and latent_dim columns.")
        x_hat = call_learner(model, x, name=f"{label}.forward")
        if isinstance(x_hat, tuple):
            raise CheckFailed(f"{label}.forward should return only the reconstruction x_hat, got a tuple")
        x_hat = expect_tensor(x_hat, (5, input_dim), f"{label}.forward", "The reconstruction has the shape of x.")
        if not ((x_hat > 0) & (x_hat < 1)).all():
            raise CheckFailed(f"{label}.forward returned values outside (0, 1): end the decoder with a sigmoid")
        silent = _silent_parameters(model, x_hat.sum())
        if silent:
            raise CheckFailed(f"no gradient reaches {silent[0]} from forward(x): every layer must be used in forward, "
                              "without .detach() or torch.no_grad()")
    # the reference's weights spread over the learner's parameters in every way their shapes allow
    reference, ref_layers = _ae_layers(511, input_dim, hidden_dim, latent_dim)
    atoms = [[t.detach()] for layer in ref_layers for t in (layer.weight, layer.bias)]
    x = torch.rand(7, input_dim, generator=torch.Generator().manual_seed(512))
    with torch.no_grad():
        ref_z = reference.encoder(x)
        ref_x_hat = torch.sigmoid(reference.decoder(ref_z))
    outputs = lambda: [call_learner(model.encode, x, name=f"{label}.encode"), call_learner(model, x, name=f"{label}.forward")]  # noqa: E731
    if not match_behaviour(model, atoms, (), outputs, [ref_z, ref_x_hat], label):
        with torch.no_grad():
            got_z, got_x_hat = outputs()
        compare(got_z, ref_z, f"{label}.encode with the reference's weights", {
            "the encoder's hidden layer needs an ELU (F.elu or nn.ELU)": _linear_chain(x, ref_layers[:2], None),
            "the encoder's hidden layer needs an ELU (F.elu or nn.ELU), not a ReLU":
                _linear_chain(x, ref_layers[:2], torch.nn.functional.relu),
            "the code z is the plain output of the encoder's second layer, with no activation":
                torch.nn.functional.elu(ref_z),
        })
        compare(got_x_hat, ref_x_hat, f"{label}.forward with the reference's weights", {
            "the decoder's hidden layer needs an ELU (F.elu or nn.ELU)":
                torch.sigmoid(_linear_chain(ref_z, ref_layers[2:], None)),
            "the decoder's hidden layer needs an ELU (F.elu or nn.ELU), not a ReLU":
                torch.sigmoid(_linear_chain(ref_z, ref_layers[2:], torch.nn.functional.relu)),
        })
    for method, ref_fn, what in ((model.encode, reference.encode, "encode"), (model, reference, "forward")):
        Trial(method, ref_fn, (x,), label=f"{label}.{what}", names=("x",)).check_gradients()
    ok(f"{label}: {expected} parameters, gradients reach every layer, and with the reference's weights it computes what "
       "models.Autoencoder computes, in value and in gradient")


def _silent_parameters(model: torch.nn.Module, loss: torch.Tensor) -> list[str]:
    """The names of the parameters that ``loss`` sends no gradient to."""
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not loss.requires_grad:
        return [name for name, _ in params]
    grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
    return [name for (name, _), g in zip(params, grads) if g is None or not g.abs().sum() > 0]


def _linear_chain(x: torch.Tensor, layers: tuple[torch.nn.Linear, ...], activation: Any) -> torch.Tensor:
    """``layers`` applied in turn, with ``activation`` (or none) between them: a wrong answer to compare with."""
    for i, layer in enumerate(layers):
        x = layer(x) if i == 0 or activation is None else layer(activation(x))
    return x


def _replay(start: torch.nn.Module, batches: list[torch.Tensor], loss_fn: Callable[..., Any], lr: float,
            per_epoch: int, fresh: str = "never", zero: bool = True, optimizer: str = "adam") -> list[torch.Tensor]:
    """The parameters after training a copy of ``start`` on ``batches`` in this order, one step per batch.

    ``fresh`` says when a new optimizer is made ("never": once, "batch", "epoch"); ``zero=False``
    lets the gradients add up over the steps: the training loops a learner might write by mistake.
    """
    import copy

    model = copy.deepcopy(start)

    def make() -> torch.optim.Optimizer:
        kind = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
        return kind(model.parameters(), lr=lr)

    opt = make()
    for i, x_batch in enumerate(batches):
        if fresh == "batch" or (fresh == "epoch" and i % per_epoch == 0 and i):
            opt = make()
        if zero:
            opt.zero_grad()
        loss_fn(model, x_batch)["loss"].backward()
        opt.step()
    return [p.detach() for p in model.parameters()]


@refuses("train.fit")
def check_train_autoencoder(fn: Callable[..., Any]) -> None:
    """Check ``fn(model, x_train, loss_fn, num_epochs, batch_size, lr) -> list of epoch losses``: a short real training run.

    Judged by what the loop does to the model: every example once per epoch (the last, partial
    batch too), one Adam optimizer made once, one step per batch; the final weights must equal a
    replay of exactly that on the batches the learner's loop formed.
    """
    import copy
    import math

    from ..models import autoencoder_loss

    label = "train_autoencoder"
    num_epochs, batch_size, n, lr = 5, 16, 100, 1e-2  # 100 = 6 * 16 + 4: a last, partial batch of 4
    steps = math.ceil(n / batch_size)
    with seeded(520):
        prototypes = (torch.rand(4, 12) > 0.5).float()
        x = 0.9 * prototypes[torch.randint(0, 4, (n,))] + 0.1 * torch.rand(n, 12)  # (100, 12): four noisy patterns, distinct rows
        tags = torch.randn(12, dtype=torch.float64)
        row_of = {round(v, 9): i for i, v in enumerate((x.double() @ tags).tolist())}
        model, _ = _ae_layers(521, 12, 9, 3)
        for p in model.parameters():
            p.data.div_(3.0)
        start = copy.deepcopy(model)
        seen: list[tuple[int, float]] = []  # (batch size, loss) of every call of loss_fn
        order: list[list[int]] = []
        batches: list[torch.Tensor] = []

        def loss_fn(m: torch.nn.Module, x_batch: torch.Tensor) -> dict[str, torch.Tensor]:
            terms = autoencoder_loss(m, x_batch, "bce")
            seen.append((x_batch.shape[0], terms["loss"].item()))
            order.append([row_of.get(round(v, 9), -1) for v in (x_batch.double() @ tags).tolist()])
            batches.append(x_batch.detach().clone())
            return terms

        out = call_learner(fn, model, x.clone(), loss_fn, num_epochs, batch_size, lr, name=label)
    full = [batch_size] * (n // batch_size) + [n % batch_size]
    if len(seen) != num_epochs * steps:
        hint = (f" The last {n % batch_size} examples of each epoch were left out: range(0, len(x_train), batch_size) "
                "also gives the last, smaller batch" if len(seen) == num_epochs * (n // batch_size) else "")
        raise CheckFailed(f"{label} called loss_fn {len(seen)} times, expected {num_epochs * steps}: {num_epochs} epochs of "
                          f"{steps} batches ({n} examples, batches of {batch_size}, the last one of {n % batch_size}), one "
                          f"loss_fn call per batch.{hint}")
    epochs = [sum(order[e * steps:(e + 1) * steps], []) for e in range(num_epochs)]
    if any(sorted(rows) != sorted(range(n)) for rows in epochs):
        raise CheckFailed(f"an epoch of {label} did not use every training example exactly once: "
                          "shuffle the indices (torch.randperm(len(x_train))) and walk through all of them")
    if any(sorted(size for size, _ in seen[e * steps:(e + 1) * steps]) != sorted(full) for e in range(num_epochs)):
        raise CheckFailed(f"{label} passed batches of sizes {sorted({s for s, _ in seen})}, expected {batch_size} (and one "
                          f"smaller last batch of {n % batch_size} per epoch): cut the shuffled data into consecutive "
                          "slices [i : i + batch_size]")
    if all(rows == epochs[0] for rows in epochs[1:]) or epochs[0] == list(range(n)):
        raise CheckFailed(f"{label} shows the examples in the same order every epoch: shuffle at the start of each "
                          "epoch with torch.randperm(len(x_train))")
    final = [p.detach() for p in model.parameters()]
    if all(torch.equal(a, b.detach()) for a, b in zip(final, start.parameters())):
        raise CheckFailed(f"{label} did not change the model: create an optimizer on model.parameters() and call "
                          "optimizer.step() after loss.backward()")

    def replay(**how: Any) -> list[torch.Tensor]:
        return _replay(start, batches, lambda m, xb: autoencoder_loss(m, xb, "bce"), lr, steps, **how)

    def same(params: list[torch.Tensor]) -> bool:
        return all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(final, params))

    if not same(replay()):
        diagnoses = [
            ({"fresh": "batch"}, "it makes a new optimizer for every batch, so Adam's running averages of the gradients "
                                 "start from zero at each step: create the optimizer once, before the loops"),
            ({"fresh": "epoch"}, "it makes a new optimizer every epoch, so Adam's running averages restart: create the "
                                 "optimizer once, before the loops"),
            ({"zero": False}, "the gradients add up from batch to batch: call optimizer.zero_grad() before each "
                              "loss.backward()"),
            ({"optimizer": "sgd"}, "it takes plain gradient steps (SGD); this loop uses torch.optim.Adam(model.parameters(), lr=lr)"),
        ]
        hint = next((message for how, message in diagnoses if same(replay(**how))),
                    "the weights differ from one Adam step per batch with the learning rate lr, on the batches your "
                    "loop formed: one optimizer made once, then zero_grad, loss.backward(), step for every batch")
        raise CheckFailed(f"{label} trained the model, but not as the loop should: {hint}")
    if not isinstance(out, (list, tuple)) or len(out) != num_epochs:
        raise CheckFailed(f"{label} should return a list with one mean loss per epoch ({num_epochs} numbers), "
                          f"got {type(out).__name__}" + (f" of length {len(out)}" if isinstance(out, (list, tuple)) else ""))
    if any(type(v) not in (float, int) and not (type(v) is torch.Tensor and v.numel() == 1) for v in out):
        raise CheckFailed(f"{label} should return plain numbers (loss.item()), got {type(out[0]).__name__}")
    values = [float(v) for v in out]
    per_epoch = [seen[e * steps:(e + 1) * steps] for e in range(num_epochs)]
    means = [sum(loss for _, loss in batch) / steps for batch in per_epoch]
    weighted = [sum(size * loss for size, loss in batch) / n for batch in per_epoch]  # the mean over examples: right too
    agree = lambda a, b: all(abs(u - v) <= 1e-4 * max(1.0, abs(v)) for u, v in zip(a, b))  # noqa: E731
    if not (agree(values, means) or agree(values, weighted)):
        raise CheckFailed(f"{label} returned {[round(v, 3) for v in values]}, but the mean batch loss of each epoch was "
                          f"{[round(m, 3) for m in means]}: append the mean of the epoch's loss.item() values")
    if not means[-1] < 0.8 * means[0]:
        raise CheckFailed(f"the loss did not fall: {means[0]:.3f} in the first epoch, {means[-1]:.3f} in the last. "
                          "Use torch.optim.Adam(model.parameters(), lr=lr) and zero the gradients before each backward()")
    ok(f"{label}: {num_epochs} epochs of {steps} shuffled batches (the last one partial), each example once per epoch, "
       f"one Adam step per batch with its state kept; the loss fell from {means[0]:.2f} to {means[-1]:.2f}")


# ----------------------------------------------------------------------------- notebook 02


@refuses("models.VAE.encode", "models.VAE.decode", "models.Encoder.forward", "models.Decoder.forward", library=OWN_MODELS)
def check_vae_module(cls: Callable[..., torch.nn.Module]) -> None:
    """Check a VAE class ``cls(input_dim, hidden_dim, latent_dim)`` with ``encode -> (mu, logvar)`` and ``decode -> logits``."""
    from ..losses import vae_loss
    from ..models import VAE, VAEBase, VAEConfig
    from ..train import fit

    input_dim, hidden_dim, latent_dim = _BUILD_DIMS
    label = getattr(cls, "__name__", "your class")
    x = (torch.rand(6, input_dim, generator=torch.Generator().manual_seed(529)) > 0.5).float()
    with seeded(530):
        model = build_learner_module(cls, (input_dim, hidden_dim, latent_dim), {}, label,
                                     lambda m: m.decode(m.encode(x)[0]), allowed=(VAEBase,))
        expected = (input_dim * hidden_dim + hidden_dim) + (hidden_dim * 2 * latent_dim + 2 * latent_dim) \
            + (latent_dim * hidden_dim + hidden_dim) + (hidden_dim * input_dim + input_dim)
        count = sum(p.numel() for p in model.parameters())
        if count != expected:
            hint = (" (the encoder's last layer must give 2 * latent_dim numbers: mu and logvar)"
                    if count == expected - hidden_dim * latent_dim - latent_dim else "")
            raise CheckFailed(f"{label}({input_dim}, {hidden_dim}, {latent_dim}) has {count} parameters, expected {expected}: "
                              "encoder input -> hidden -> 2 x latent (mu and logvar), decoder latent -> hidden -> input" + hint)
        out = call_learner(model.encode, x, name=f"{label}.encode")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CheckFailed(f"{label}.encode should return a pair (mu, logvar), got {type(out).__name__}")
        mu = expect_tensor(out[0], (6, latent_dim), f"mu from {label}.encode", "mu has latent_dim columns.")
        logvar = expect_tensor(out[1], (6, latent_dim), f"logvar from {label}.encode", "logvar has latent_dim columns.")
        if torch.equal(mu, logvar):
            raise CheckFailed(f"{label}.encode returned the same tensor for mu and logvar: split the encoder's output "
                              "in two halves, e.g. .chunk(2, dim=-1)")
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = expect_tensor(call_learner(model.decode, z, name=f"{label}.decode"), (6, input_dim), f"{label}.decode",
                               "decode returns one logit per pixel.")
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
                - 0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)).mean()
        silent = _silent_parameters(model, loss)
        if silent:
            raise CheckFailed(f"no gradient reaches {silent[0]} from the negative ELBO: use every layer in encode and "
                              "decode, without .detach() or torch.no_grad()")
        reference = VAE(VAEConfig(input_dim=input_dim, hidden_dim=hidden_dim, latent_dim=latent_dim))
    enc_1, enc_2 = reference.encoder.net[0], reference.encoder.net[2]
    dec_1, dec_2 = reference.decoder.net[0], reference.decoder.net[2]
    D = latent_dim
    atoms = [[t.detach()] for t in (enc_1.weight, enc_1.bias, enc_2.weight[:D], enc_2.weight[D:], enc_2.bias[:D],
                                     enc_2.bias[D:], dec_1.weight, dec_1.bias, dec_2.weight, dec_2.bias)]
    x = (torch.rand(7, input_dim, generator=torch.Generator().manual_seed(531)) > 0.5).float()
    z = torch.randn(7, latent_dim, generator=torch.Generator().manual_seed(532))
    with torch.no_grad():
        ref_mu, ref_logvar = reference.encode(x)
        ref_logits = reference.decode(z)

    def outputs() -> list[Any]:
        got = call_learner(model.encode, x, name=f"{label}.encode")
        return [*(got if isinstance(got, (tuple, list)) else [got]), call_learner(model.decode, z, name=f"{label}.decode")]

    # mu's head and logvar's head are told apart by what they compute, in whatever order they were registered
    if not match_behaviour(model, atoms, ((2, 3), (4, 5)), outputs, [ref_mu, ref_logvar, ref_logits], label):
        with torch.no_grad():
            got_mu, got_logvar, got_logits = outputs()
        compare(got_mu, ref_mu, f"mu from {label}.encode with the reference's weights", {
            "the encoder's hidden layer needs an ELU (F.elu or nn.ELU)": enc_2(enc_1(x))[:, :D]})
        compare(got_logvar, ref_logvar, f"logvar from {label}.encode with the reference's weights", {
            "logvar is the raw second half of the encoder's output: no exp, softplus or other activation on it":
                torch.nn.functional.softplus(ref_logvar)})
        compare(got_logits, ref_logits, f"{label}.decode with the reference's weights", {
            "decode returns logits: no sigmoid at the end (the Bernoulli likelihood applies it)": torch.sigmoid(ref_logits)})
    Trial(model.encode, reference.encode, (x,), label=f"{label}.encode", names=("x",)).check_gradients()
    Trial(model.decode, reference.decode, (z,), label=f"{label}.decode", names=("z",)).check_gradients()
    # a short training run with the notebook's loss: the negative ELBO must fall
    if not hasattr(model, "log_likelihood"):
        raise CheckFailed(f"{label} has no log_likelihood method: derive it from models.VAEBase, which adds "
                          "log_likelihood, mean_image and friends on top of your encode and decode")
    with seeded(533):
        for p in model.parameters():  # fresh small weights, as a new model would have
            torch.nn.init.normal_(p, 0.0, 0.1)
        prototypes = (torch.rand(4, input_dim) > 0.5).float()
        data = prototypes[torch.randint(0, 4, (128,))]
        before = vae_loss(model, data)["loss"].item()
        fit(model, vae_loss, data, num_epochs=15, batch_size=32, lr=1e-2, progress=False)
        with torch.no_grad():
            after = torch.stack([vae_loss(model, data)["loss"] for _ in range(20)]).mean().item()
    if not after < 0.8 * before:
        raise CheckFailed(f"trained with fit for 15 epochs, the negative ELBO of {label} went from {before:.2f} to "
                          f"{after:.2f} only: check that encode and decode use their layers as described")
    ok(f"{label}: {expected} parameters, (mu, logvar) and logits of the right shapes, gradients reach every layer, "
       f"it matches models.VAE with copied weights in value and gradient, and fit lowers its negative ELBO from "
       f"{before:.1f} to {after:.1f}")
