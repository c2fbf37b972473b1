"""Checkers of the build exercises (a whole module or training loop per notebook), judged by behaviour."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ._core import CheckFailed, call_learner, compare, expect_tensor, ok, refuses, seeded
from .ae import _ae_layers


# ----------------------------------------------------------------------------- notebook 01


_BUILD_DIMS = (12, 9, 3)  # input, hidden, latent: distinct, so each layer is known by its weight's shape


@refuses("models.Autoencoder.forward", "models.Autoencoder.encode", "models.Autoencoder.decode",
         "models.Encoder.forward", "models.Decoder.forward")
def check_autoencoder_module(cls: Callable[..., torch.nn.Module]) -> None:
    """Check an autoencoder class ``cls(input_dim, hidden_dim, latent_dim)`` with ``encode`` and ``forward``, by behaviour."""
    input_dim, hidden_dim, latent_dim = _BUILD_DIMS
    label = getattr(cls, "__name__", "your class")
    with seeded(510):
        model = call_learner(cls, input_dim, hidden_dim, latent_dim, name=label)
        if not isinstance(model, torch.nn.Module):
            raise CheckFailed(f"{label}(...) should build a torch.nn.Module (class {label}(nn.Module) with super().__init__()), "
                              f"got {type(model).__name__}")
        expected = (input_dim * hidden_dim + hidden_dim) + (hidden_dim * latent_dim + latent_dim) \
            + (latent_dim * hidden_dim + hidden_dim) + (hidden_dim * input_dim + input_dim)
        count = sum(p.numel() for p in model.parameters())
        if count != expected:
            raise CheckFailed(f"{label}({input_dim}, {hidden_dim}, {latent_dim}) has {count} parameters, expected {expected}: "
                              "four nn.Linear layers, input -> hidden -> latent -> hidden -> input, each with a bias"
                              + (" (none found: create the layers in __init__ as attributes, self.layer = nn.Linear(...))"
                                 if count == 0 else ""))
        x = torch.rand(5, input_dim)
        z = expect_tensor(call_learner(model.encode, x, name=f"{label}.encode"), (5, latent_dim), f"{label}.encode",
                          "The code has one row per input and latent_dim columns.")
        x_hat = call_learner(model, x, name=f"{label}.forward")
        if isinstance(x_hat, tuple):
            raise CheckFailed(f"{label}.forward should return only the reconstruction x_hat, got a tuple")
        x_hat = expect_tensor(x_hat, (5, input_dim), f"{label}.forward", "The reconstruction has the shape of x.")
        if not ((x_hat > 0) & (x_hat < 1)).all():
            raise CheckFailed(f"{label}.forward returned values outside (0, 1): end the decoder with a sigmoid")
        model.zero_grad()
        x_hat.sum().backward()
        silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        if silent:
            raise CheckFailed(f"no gradient reaches {silent[0]} from forward(x): every layer must be used in forward, "
                              "without .detach() or torch.no_grad()")
        # copy the reference's weights into the learner's layers (found by shape) and compare the outputs
        reference, ref_layers = _ae_layers(511, input_dim, hidden_dim, latent_dim)
        linears = {tuple(m.weight.shape): m for m in model.modules() if isinstance(m, torch.nn.Linear)}
        if len(linears) != 4 or any(tuple(r.weight.shape) not in linears for r in ref_layers):
            raise CheckFailed(f"{label} should hold four nn.Linear layers of shapes (hidden, input), (latent, hidden), "
                              "(hidden, latent), (input, hidden) and no other layers")
        with torch.no_grad():
            for r in ref_layers:
                linears[tuple(r.weight.shape)].weight.copy_(r.weight)
                linears[tuple(r.weight.shape)].bias.copy_(r.bias)
            x = torch.rand(7, input_dim)
            got_z = call_learner(model.encode, x, name=f"{label}.encode")
            got_x_hat = call_learner(model, x, name=f"{label}.forward")
            ref_z = reference.encoder(x)
            ref_x_hat = torch.sigmoid(reference.decoder(ref_z))
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
    ok(f"{label}: {expected} parameters, the right shapes, gradients reach every layer, and with the reference's "
       "weights it computes what models.Autoencoder computes")


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


def _linears_by_shape(model: torch.nn.Module) -> dict[tuple[int, int], list[torch.nn.Linear]]:
    """The ``nn.Linear`` layers of ``model`` grouped by weight shape, in registration order."""
    found: dict[tuple[int, int], list[torch.nn.Linear]] = {}
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            found.setdefault(tuple(m.weight.shape), []).append(m)
    return found


@refuses("models.VAE.encode", "models.VAE.decode", "models.Encoder.forward", "models.Decoder.forward")
def check_vae_module(cls: Callable[..., torch.nn.Module]) -> None:
    """Check a VAE class ``cls(input_dim, hidden_dim, latent_dim)`` with ``encode -> (mu, logvar)`` and ``decode -> logits``."""
    from ..losses import vae_loss
    from ..models import VAE, VAEConfig
    from ..train import fit

    input_dim, hidden_dim, latent_dim = _BUILD_DIMS
    label = getattr(cls, "__name__", "your class")
    with seeded(530):
        model = call_learner(cls, input_dim, hidden_dim, latent_dim, name=label)
        if not isinstance(model, torch.nn.Module):
            raise CheckFailed(f"{label}(...) should build a torch.nn.Module, got {type(model).__name__}")
        expected = (input_dim * hidden_dim + hidden_dim) + (hidden_dim * 2 * latent_dim + 2 * latent_dim) \
            + (latent_dim * hidden_dim + hidden_dim) + (hidden_dim * input_dim + input_dim)
        count = sum(p.numel() for p in model.parameters())
        if count != expected:
            hint = (" (the encoder's last layer must give 2 * latent_dim numbers: mu and logvar)"
                    if count == expected - hidden_dim * latent_dim - latent_dim else "")
            raise CheckFailed(f"{label}({input_dim}, {hidden_dim}, {latent_dim}) has {count} parameters, expected {expected}: "
                              "encoder input -> hidden -> 2 x latent (mu and logvar), decoder latent -> hidden -> input" + hint)
        x = (torch.rand(6, input_dim) > 0.5).float()
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
        model.zero_grad()
        loss.backward()
        silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        if silent:
            raise CheckFailed(f"no gradient reaches {silent[0]} from the negative ELBO: use every layer in encode and "
                              "decode, without .detach() or torch.no_grad()")
        reference = VAE(VAEConfig(input_dim=input_dim, hidden_dim=hidden_dim, latent_dim=latent_dim))
        enc_1, enc_2 = reference.encoder.net[0], reference.encoder.net[2]
        dec_1, dec_2 = reference.decoder.net[0], reference.decoder.net[2]
        layers = _linears_by_shape(model)
        heads = layers.get((2 * latent_dim, hidden_dim), []) or layers.get((latent_dim, hidden_dim), [])
        if [len(layers.get(tuple(r.weight.shape), [])) for r in (enc_1, dec_1, dec_2)] != [1, 1, 1] or len(heads) not in (1, 2):
            raise CheckFailed(f"{label} should hold nn.Linear layers input -> hidden and hidden -> 2 x latent (or two "
                              "hidden -> latent heads, mu first) in the encoder, latent -> hidden -> input in the decoder")
        with torch.no_grad():
            for r in (enc_1, dec_1, dec_2):
                target = layers[tuple(r.weight.shape)][0]
                target.weight.copy_(r.weight)
                target.bias.copy_(r.bias)
            parts = [(enc_2.weight, enc_2.bias)] if len(heads) == 1 else \
                [(enc_2.weight[:latent_dim], enc_2.bias[:latent_dim]), (enc_2.weight[latent_dim:], enc_2.bias[latent_dim:])]
            for head, (weight, bias) in zip(heads, parts):
                head.weight.copy_(weight)
                head.bias.copy_(bias)
            x = (torch.rand(7, input_dim) > 0.5).float()
            got_mu, got_logvar = call_learner(model.encode, x, name=f"{label}.encode")
            ref_mu, ref_logvar = reference.encode(x)
            z = torch.randn(7, latent_dim)
            got_logits = call_learner(model.decode, z, name=f"{label}.decode")
        compare(got_mu, ref_mu, f"mu from {label}.encode with the reference's weights", {
            "mu and logvar are swapped: the first half of the encoder's output is mu": ref_logvar})
        compare(got_logvar, ref_logvar, f"logvar from {label}.encode with the reference's weights", {
            "logvar is the raw second half of the encoder's output: no exp, softplus or other activation on it":
                torch.nn.functional.softplus(ref_logvar)})
        compare(got_logits, reference.decode(z).detach(), f"{label}.decode with the reference's weights", {
            "decode returns logits: no sigmoid at the end (the Bernoulli likelihood applies it)":
                torch.sigmoid(reference.decode(z)).detach()})
        # a short training run with the notebook's loss: the negative ELBO must fall
        if not hasattr(model, "log_likelihood"):
            raise CheckFailed(f"{label} has no log_likelihood method: derive it from models.VAEBase, which adds "
                              "log_likelihood, mean_image and friends on top of your encode and decode")
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
       f"it matches models.VAE with copied weights, and fit lowers its negative ELBO from {before:.1f} to {after:.1f}")


# ----------------------------------------------------------------------------- notebook 03


@refuses("models.ConvVAE.encode")
def check_conv_encoder(cls: Callable[..., torch.nn.Module]) -> None:
    """Check ``cls(latent_dim, channels=(c1, c2), hidden_dim)``: two stride-2 convs, a dense layer, mu and logvar heads."""
    from ..models import ConvVAE, ConvVAEConfig

    latent_dim, channels, hidden_dim = 3, (4, 6), 8
    label = getattr(cls, "__name__", "your class")
    with seeded(540):
        model = call_learner(cls, latent_dim, channels=channels, hidden_dim=hidden_dim, name=label)
        if not isinstance(model, torch.nn.Module):
            raise CheckFailed(f"{label}(...) should build a torch.nn.Module, got {type(model).__name__}")
        reference = ConvVAE(ConvVAEConfig(latent_dim=latent_dim, channels=channels, strides=(2, 2), hidden_dim=hidden_dim,
                                          decoder_channels=(5, 5)))
        ref_params = [reference.encoder[0], reference.encoder[2], reference.encoder[5], reference.to_mu, reference.to_logvar]
        expected = sum(p.numel() for m in ref_params for p in m.parameters())
        count = sum(p.numel() for p in model.parameters())
        if count != expected:
            flat_hint = (" The dense layer takes the flattened feature map, channels[1] * 7 * 7 numbers: two stride-2 "
                         "convolutions with padding 1 shrink 28 to 14 to 7.")
            raise CheckFailed(f"{label}({latent_dim}, channels={channels}, hidden_dim={hidden_dim}) has {count} parameters, "
                              f"expected {expected}: conv 1 -> {channels[0]} and conv {channels[0]} -> {channels[1]} (kernel 3, "
                              f"stride 2, padding 1), a dense layer to hidden_dim, and two heads to latent_dim.{flat_hint}")
        x = torch.rand(5, 1, 28, 28)
        out = call_learner(model, x, name=f"{label}.forward")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CheckFailed(f"{label}.forward should return a pair (mu, logvar), got {type(out).__name__}")
        mu = expect_tensor(out[0], (5, latent_dim), f"mu from {label}", "One row per image, latent_dim columns.")
        logvar = expect_tensor(out[1], (5, latent_dim), f"logvar from {label}", "One row per image, latent_dim columns.")
        model.zero_grad()
        (mu.sum() + logvar.sum()).backward()
        silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        if silent:
            raise CheckFailed(f"no gradient reaches {silent[0]}: every layer must be used in forward")
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        dense = _linears_by_shape(model)
        heads = dense.get((latent_dim, hidden_dim), []) or dense.get((2 * latent_dim, hidden_dim), [])
        if len(convs) != 2 or len(dense.get((hidden_dim, channels[1] * 49), [])) != 1 or len(heads) not in (1, 2):
            raise CheckFailed(f"{label} should hold two nn.Conv2d layers, one nn.Linear(channels[1] * 7 * 7, hidden_dim) "
                              "and the heads nn.Linear(hidden_dim, latent_dim) for mu and for logvar")
        bad = [c for c in convs if c.stride != (2, 2) or c.padding != (1, 1) or c.kernel_size != (3, 3)]
        if bad:
            raise CheckFailed(f"{label}'s convolutions should have kernel_size=3, stride=2, padding=1, got kernel "
                              f"{bad[0].kernel_size}, stride {bad[0].stride}, padding {bad[0].padding}")
        with torch.no_grad():
            for mine, ref in zip(convs, (reference.encoder[0], reference.encoder[2])):
                if mine.weight.shape != ref.weight.shape:
                    raise CheckFailed(f"{label}: the convolutions should map 1 -> channels[0] -> channels[1] channels, "
                                      f"got a weight of shape {tuple(mine.weight.shape)}")
                mine.weight.copy_(ref.weight)
                mine.bias.copy_(ref.bias)
            target = dense[(hidden_dim, channels[1] * 49)][0]
            target.weight.copy_(reference.encoder[5].weight)
            target.bias.copy_(reference.encoder[5].bias)
            sources = [reference.to_mu, reference.to_logvar]
            if len(heads) == 1:
                heads[0].weight.copy_(torch.cat([s.weight for s in sources]))
                heads[0].bias.copy_(torch.cat([s.bias for s in sources]))
            else:
                for head, source in zip(heads, sources):
                    head.weight.copy_(source.weight)
                    head.bias.copy_(source.bias)
            x = torch.rand(4, 1, 28, 28)
            got_mu, got_logvar = call_learner(model, x, name=f"{label}.forward")
            ref_mu, ref_logvar = reference.encode(x)
            enc = reference.encoder
            feature_map = enc[3](enc[2](enc[1](enc[0](x))))  # (B, C, 7, 7)
            h = enc[5](enc[4](feature_map))  # the dense layer without its ReLU
            channels_last = torch.relu(enc[5](feature_map.permute(0, 2, 3, 1).flatten(1)))
        compare(got_mu, ref_mu, f"mu from {label} with the reference's weights", {
            "mu and logvar are swapped: return (mu, logvar)": ref_logvar,
            "the dense layer needs a ReLU after it, before the heads": reference.to_mu(h),
            "you flattened channels last; flatten (B, C, 7, 7) as it is, x.flatten(1) or nn.Flatten()":
                reference.to_mu(channels_last),
        }, atol=1e-5)
        compare(got_logvar, ref_logvar, f"logvar from {label} with the reference's weights", {}, atol=1e-5)
    ok(f"{label}: {expected} parameters, (B, 1, 28, 28) -> mu, logvar (B, {latent_dim}), gradients reach every layer, "
       "and with the reference's weights it computes what ConvVAE.encode computes")


# ----------------------------------------------------------------------------- notebook 04


@refuses("flows.planar_flow_sequence", "flows._planar_log_det",
         flows__FlowVAE__sample_posterior="your sample_posterior calls model.sample_posterior, the method this exercise "
                                          "asks you to write: start from model.encode_all(x)")
def check_sample_posterior(fn: Callable[..., Any]) -> None:
    """Check ``fn(model, x) -> (z0, zK, Σ log-det (B,), mu, logvar)`` for a ``FlowVAE``, by behaviour."""
    from ..flows import FlowVAE, FlowVAEConfig, constrain_u, planar_flow_sequence, planar_transform

    label = "sample_posterior"
    with seeded(550):
        for num_flows in (3, 0):
            model = FlowVAE(FlowVAEConfig(input_dim=12, hidden_dim=10, latent_dim=2, num_flows=num_flows))
            with torch.no_grad():  # flows away from the identity, so that every mistake shows
                model.encoder.net[-1].weight.normal_(0.0, 8.0)
            x = (torch.rand(5, 12) > 0.5).float()
            out = call_learner(fn, model, x, name=label)
            if not isinstance(out, (tuple, list)) or len(out) != 5:
                raise CheckFailed(f"{label} should return five things (z0, zK, log_det, mu, logvar), got {type(out).__name__}"
                                  + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
            z0, zK, log_det, mu, logvar = out
            z0 = expect_tensor(z0, (5, 2), f"z0 from {label}", "One code per input: (B, latent_dim).")
            zK = expect_tensor(zK, (5, 2), f"zK from {label}", "One code per input: (B, latent_dim).")
            if isinstance(log_det, torch.Tensor) and tuple(log_det.shape) == (5, num_flows) and num_flows > 1:
                raise CheckFailed(f"{label} returned one log-det per flow, shape (B, K); return their sum over the flows, (B,)")
            log_det = expect_tensor(log_det, (5,), f"the log-det from {label}", "Return Σ_k log|det| per input, (B,).")
            ref_mu, ref_logvar = model.encode(x)
            compare(mu, ref_mu, f"mu from {label}", {}, atol=1e-5)
            compare(logvar, ref_logvar, f"logvar from {label}", {}, atol=1e-5)
            if not z0.requires_grad:
                raise CheckFailed("z0 carries no gradient back to the encoder: draw it with the reparameterisation "
                                  "trick, mu + exp(logvar / 2) * eps (no .sample(), no torch.no_grad())")
            _, _, u, w, b = model.encode_all(x)
            with torch.no_grad():
                ref_zK, ref_ld = planar_flow_sequence(z0, u, w, b)
                raw_zK, raw_ld = z0, torch.zeros(5)
                for k in range(num_flows):
                    raw_zK, ld = planar_transform(raw_zK, u[:, k], w[:, k], b[:, k])
                    raw_ld = raw_ld + ld
                reversed_zK = z0
                for k in reversed(range(num_flows)):
                    reversed_zK, _ = planar_transform(reversed_zK, constrain_u(u[:, k], w[:, k]), w[:, k], b[:, k])
            compare(zK.detach(), ref_zK, f"zK from {label} (the flows applied to your z0)", {
                "u must be made invertible first: use constrain_u(u_k, w_k) in place of the raw u_k": raw_zK,
                "the flows run in the wrong order: apply flow 0 first and flow K-1 last": reversed_zK,
            }, atol=1e-4)
            compare(log_det.detach(), ref_ld, f"the log-det from {label}", {
                "wrong sign: add the flows' log|det|, do not subtract them": -ref_ld,
                "u must be made invertible first: use constrain_u(u_k, w_k) in place of the raw u_k": raw_ld,
            }, atol=1e-4)
        # z0 ~ N(mu, exp(logvar)): many copies of one input
        x_many = x[:1].expand(4000, -1)
        z0, *_ = call_learner(fn, model, x_many, name=label)
        mu1, logvar1 = (t[0].detach() for t in model.encode(x[:1]))
        eps = ((z0.detach() - mu1) / torch.exp(0.5 * logvar1))
        if eps.std(0).min() < 1e-3:
            raise CheckFailed("z0 is (almost) mu for every draw: add the noise exp(logvar / 2) * eps with eps ~ N(0, I)")
        if eps.mean(0).abs().max() > 0.1 or (eps.var(0) - 1).abs().max() > 0.12:
            raise CheckFailed(f"(z0 - mu) / exp(logvar / 2) should be standard normal, but has mean {eps.mean().item():.3f} "
                              f"and variance {eps.var().item():.3f}: z0 = mu + exp(logvar / 2) * torch.randn_like(mu)")
    ok(f"{label}: z0 ~ q_0 with gradients, zK and Σ log-det from K constrained planar maps in order, on K = 3 and K = 0")
