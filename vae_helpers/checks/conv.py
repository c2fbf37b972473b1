"""Checkers for notebook 03 (convolutional VAE): output sizes, decoding, latent interpolation."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ._core import CheckFailed, call_learner, close, compare, expect_tensor, ok, plain_int, refuses, seeded
from ._judge import Trial
from ._match import OWN_MODELS, build_learner_module, match_behaviour


# (size, kernel_size, stride, padding): the notebook's layers plus odd sizes where rounding down matters
_CONV_CASES = ((28, 3, 1, 1), (28, 3, 2, 1), (14, 3, 2, 1), (7, 3, 2, 1), (28, 5, 1, 0), (28, 4, 2, 1),
               (6, 3, 2, 0), (5, 3, 2, 0), (32, 5, 3, 2), (9, 2, 2, 0), (11, 7, 2, 3), (28, 3, 3, 0))


_RUN_A_CONV = "your answer runs a convolution ({}) and reads off the size; work the size out with arithmetic on " \
              "size, kernel_size, stride and padding"
READY_CONV = {path: _RUN_A_CONV.format(path.removeprefix("torch.")) for path in (
    "torch.conv1d", "torch.conv2d", "torch.conv3d", "torch.conv_transpose2d", "torch.nn.Conv1d._conv_forward",
    "torch.nn.Conv2d._conv_forward", "torch.nn.Conv3d._conv_forward", "torch.nn.functional.unfold",
    "torch.nn.functional.avg_pool2d", "torch.nn.functional.max_pool2d", "torch.max_pool2d")}
_LERP = "your answer uses torch.lerp, the ready-made version of this interpolation; write z(t) from z_start, z_end and t"
READY_LERP = {"torch.lerp": _LERP, "torch.Tensor.lerp": _LERP, "torch.Tensor.lerp_": _LERP}


@refuses("models.conv_output_size", "models.layer_summary", library=READY_CONV)
def check_conv_output_size(fn: Callable[[int, int, int, int], int]) -> None:
    """Check ``fn(size, kernel_size, stride, padding) -> int`` against ``nn.Conv2d`` on ``_CONV_CASES``."""
    import math

    from torch import nn

    from ..models import conv_output_size

    got = []
    for size, k, s, p in _CONV_CASES:
        out = call_learner(fn, size, k, s, p, name="conv_output_size")
        if type(out) is float and out != int(out):
            raise CheckFailed(f"conv_output_size({size}, {k}, {s}, {p}) returned {out}, a fraction: a layer cannot "
                              "output part of a pixel. Round down with floor division // (not /)")
        got.append(int(out) if type(out) is float else plain_int(out, "conv_output_size"))
    torch_sizes = []
    for size, k, s, p in _CONV_CASES:
        layer = nn.Conv2d(1, 1, k, stride=s, padding=p)
        with torch.no_grad():
            torch_sizes.append(layer(torch.zeros(1, 1, size, size)).shape[-1])
    expected = [conv_output_size(*case) for case in _CONV_CASES]
    assert expected == torch_sizes, "internal error: reference conv_output_size disagrees with nn.Conv2d"
    mistakes = {
        "the padding is added on both sides of the image, so it lengthens the row twice":
            [(n + p - k) // s + 1 for n, k, s, p in _CONV_CASES],
        "you forgot the + 1 (a kernel that fits exactly once still gives one output pixel)":
            [(n + 2 * p - k) // s for n, k, s, p in _CONV_CASES],
        "you rounded up; PyTorch rounds down (floor division //), the last partial window is dropped":
            [math.ceil((n + 2 * p - k) / s) + 1 for n, k, s, p in _CONV_CASES],
        "you ignored the stride: the window moves by stride pixels at a time, so it has fewer positions":
            [n + 2 * p - k + 1 for n, k, s, p in _CONV_CASES],
        "you added the 1 before dividing by the stride; the starting position counts once, whatever the stride":
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
                          f"but nn.Conv2d gives {expected[i]}. Count the positions at which the kernel fits inside the "
                          "padded image when it moves by the stride")
    ok(f"conv_output_size agrees with nn.Conv2d on {len(_CONV_CASES)} layer settings")


def _small_conv_vaes() -> list[Any]:
    """Two tiny ConvVAEs (seed layout, and two stride-2 layers) built under a fixed seed."""
    from ..models import ConvVAE, ConvVAEConfig

    configs = [ConvVAEConfig(latent_dim=3, channels=(4, 6, 6, 6), strides=(1, 2, 1, 1), hidden_dim=8, decoder_channels=(5,)),
               ConvVAEConfig(latent_dim=2, channels=(4, 7), strides=(2, 2), hidden_dim=8, decoder_channels=(6, 5))]
    with seeded(3):
        models = [ConvVAE(c).eval() for c in configs]
        for m in models:  # positive-ish biases make the skipped-ReLU mistake visible
            with torch.no_grad():
                m.from_z[0].bias.normal_(0.0, 0.5)
    return models


@refuses(models__ConvVAE__decode="your conv_decode calls model.decode, the method this exercise asks you to write: build it from model.from_z and model.decoder")
def check_conv_decode(fn: Callable[[Any, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(model, z) -> logits (B, 1, 28, 28)`` against ``ConvVAE.decode`` and per-example decoding."""
    g = torch.Generator().manual_seed(30)
    cases = 0
    for model in _small_conv_vaes():
        c = model.config
        C, s = c.channels[-1], c.feature_size
        for batch in (5, 1):
            z = 2.0 * torch.randn(batch, c.latent_dim, generator=g)
            try:
                trial = Trial(fn, lambda m, codes: m.decode(codes), (model, z), label="conv_decode", names=("model", "z"))
                out = trial.got
            except CheckFailed as err:
                if "shape" not in str(err) and "size" not in str(err):
                    raise
                raise CheckFailed(f"{err}. Hint: take the batch size of the reshape from z and the feature-map "
                                  "sizes from model.config; do not hard-code 64 or 14") from err.__cause__
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
                    hint = "between model.from_z and model.decoder the flat vector must become the feature maps the decoder's first layer expects"
                raise CheckFailed(f"conv_decode returned shape {shape}, expected {(batch, 1, 28, 28)}: {hint}")
            out = expect_tensor(out, (batch, 1, 28, 28), "conv_decode")
            compare(out, expected, "conv_decode", {
                "you returned probabilities (a sigmoid); decode returns logits, the Bernoulli likelihood applies the sigmoid itself":
                    torch.sigmoid(expected),
                "you reshaped channels last; PyTorch convolutions want the channels first, right after the batch":
                    channels_last,
                "you skipped the ReLU after the dense layer: model.from_z holds the dense layer and its activation":
                    no_relu,
            }, rtol=1e-4, atol=1e-5)
            trial.check_gradients()
            cases += 1
    ok(f"conv_decode reproduces ConvVAE.decode in value and gradient on {cases} cases (two layouts, batches of 5 and 1)")


@refuses("models.interpolate_latents", library=READY_LERP)
def check_interpolate_latents(fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> None:
    """Check ``fn(z_start (D,), z_end (D,), num_steps) -> (num_steps, D)`` against ``torch.lerp``."""
    g = torch.Generator().manual_seed(31)
    cases = ((2, 5), (16, 9), (3, 2), (7, 11))
    for dim, n in cases:
        z_start, z_end = torch.randn(dim, generator=g), torch.randn(dim, generator=g)
        trial = Trial(fn, lambda a, b, steps: a + torch.linspace(0.0, 1.0, steps)[:, None] * (b - a), (z_start, z_end, n),
                      label="interpolate_latents", names=("z_start", "z_end", None))
        out = trial.got
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (dim, n) and dim != n:
            raise CheckFailed(f"interpolate_latents returned shape {(dim, n)}, expected {(n, dim)}: one row per step "
                              "(num_steps, D)")
        if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[1] == dim and out.shape[0] != n:
            raise CheckFailed(f"interpolate_latents returned {out.shape[0]} steps, expected num_steps = {n}, "
                              "both ends included")
        out = expect_tensor(out, (n, dim), "interpolate_latents", hint="Return one row per step: (num_steps, D).")
        t = torch.linspace(0.0, 1.0, n)[:, None]
        expected = torch.lerp(z_start, z_end, t)
        inner = torch.linspace(0.0, 1.0, n + 2)[1:-1, None]
        compare(out, expected, "interpolate_latents", {
            "the path runs backwards: row 0 must be z_start and the last row z_end":
                expected.flip(0),
            "the end point is missing: the last step must reach z_end":
                torch.lerp(z_start, z_end, torch.arange(n)[:, None] / n),
            "the start point is missing: the first step must be z_start":
                torch.lerp(z_start, z_end, torch.arange(1, n + 1)[:, None] / n),
            "both end points are missing: the first row must be z_start and the last z_end":
                torch.lerp(z_start, z_end, inner),
            "the weights of the two ends do not add up to 1, so the points leave the segment":
                z_start + t * z_end,
        }, rtol=1e-5, atol=1e-5)
        trial.check_gradients()
    ok(f"interpolate_latents matches (1 - t) z_start + t z_end in value and gradient on {len(cases)} cases, both ends included")


_FIELD_CASES = (((3,), (1,)), ((3, 3), (1, 1)), ((3, 3), (2, 2)), ((5, 3, 3), (1, 2, 2)), ((7, 3), (2, 1)),
                ((4, 4, 4), (2, 2, 2)), ((1,), (1,)), ((3, 3, 3, 3), (1, 2, 1, 1)), ((3, 3, 3, 3), (2, 2, 2, 2)))


def _field_by_autograd(kernel_sizes: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """How many input positions the first output of a 1-D conv stack depends on, from autograd."""
    layers = [torch.nn.Conv1d(1, 1, k, stride=s, bias=False) for k, s in zip(kernel_sizes, strides)]
    for layer in layers:
        torch.nn.init.ones_(layer.weight)
    x = torch.ones(1, 1, 256, requires_grad=True)
    out = torch.nn.Sequential(*layers)(x)
    (grad,) = torch.autograd.grad(out[0, 0, 0], x)
    return int((grad != 0).sum())


def check_receptive_field(fn: Callable[[list[int], list[int]], int]) -> None:
    """Check ``fn(kernel_sizes, strides) -> int`` against autograd on stacks of convolutions."""
    for kernel_sizes, strides in _FIELD_CASES:
        out = call_learner(fn, list(kernel_sizes), list(strides), name="receptive_field")
        out = int(out) if type(out) is float and out == int(out) else plain_int(out, "receptive_field")
        expected = _field_by_autograd(kernel_sizes, strides)
        if out == expected:
            continue
        jumps = [1]
        for s in strides[:-1]:
            jumps.append(jumps[-1] * s)
        mistakes = [
            (1 + sum(k - 1 for k in kernel_sizes), "the strides matter: after a stride-2 layer, one step of the next kernel "
                                                   "covers two input pixels, so weight (k - 1) by the product of the earlier strides"),
            (1 + sum((k - 1) * j * s for k, s, j in zip(kernel_sizes, strides, jumps)),
             "a layer's own stride does not widen its field; only the strides of the layers before it do"),
            (sum(kernel_sizes), "the fields overlap: add (k - 1) per layer (weighted by the earlier strides), plus 1"),
            (math.prod(kernel_sizes), "the field grows by adding, not multiplying, the kernel sizes"),
        ]
        hint = next((h for value, h in mistakes if value == out),
                    "follow one output back through the layers: how many input pixels does one step of each "
                    "layer's kernel span, given the strides of the layers before it?")
        raise CheckFailed(f"receptive_field({list(kernel_sizes)}, {list(strides)}) returned {out}, but one output of "
                          f"these convolutions depends on {expected} input pixels. Likely mistake: {hint}")
    ok(f"receptive_field agrees with autograd on {len(_FIELD_CASES)} stacks of convolutions")


@refuses("models.ConvVAE.encode", library=OWN_MODELS)
def check_conv_encoder(cls: Callable[..., torch.nn.Module]) -> None:
    """Check ``cls(latent_dim, channels=(c1, c2), hidden_dim)``: two stride-2 convs, a dense layer, mu and logvar heads."""
    from ..models import ConvVAE, ConvVAEConfig

    latent_dim, channels, hidden_dim = 3, (4, 6), 8
    label = getattr(cls, "__name__", "your class")
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(539))
    with seeded(540):
        model = build_learner_module(cls, (latent_dim,), {"channels": channels, "hidden_dim": hidden_dim}, label,
                                     lambda m: m(x))
        reference = ConvVAE(ConvVAEConfig(latent_dim=latent_dim, channels=channels, strides=(2, 2), hidden_dim=hidden_dim,
                                          decoder_channels=(5, 5)))
    conv_1, conv_2, dense = reference.encoder[0], reference.encoder[2], reference.encoder[5]
    ref_params = [conv_1, conv_2, dense, reference.to_mu, reference.to_logvar]
    expected = sum(p.numel() for m in ref_params for p in m.parameters())
    count = sum(p.numel() for p in model.parameters())
    if count != expected:
        raise CheckFailed(f"{label}({latent_dim}, channels={channels}, hidden_dim={hidden_dim}) has {count} parameters, "
                          f"expected {expected}: conv 1 -> {channels[0]} and conv {channels[0]} -> {channels[1]} (kernel 3, "
                          f"stride 2, padding 1), a dense layer to hidden_dim, and two heads to latent_dim. The dense layer "
                          "takes the flattened feature map, channels[1] * 7 * 7 numbers: two stride-2 convolutions with "
                          "padding 1 shrink 28 to 14 to 7.")
    out = call_learner(model, x, name=f"{label}.forward")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed(f"{label}.forward should return a pair (mu, logvar), got {type(out).__name__}")
    mu = expect_tensor(out[0], (5, latent_dim), f"mu from {label}", "One row per image, latent_dim columns.")
    logvar = expect_tensor(out[1], (5, latent_dim), f"logvar from {label}", "One row per image, latent_dim columns.")
    params = [(name, p) for name, p in model.named_parameters()]
    grads = torch.autograd.grad(mu.sum() + logvar.sum(), [p for _, p in params], allow_unused=True) \
        if mu.requires_grad or logvar.requires_grad else [None] * len(params)
    silent = [name for (name, _), g in zip(params, grads) if g is None or not g.abs().sum() > 0]
    if silent:
        raise CheckFailed(f"no gradient reaches {silent[0]}: every layer must be used in forward, without .detach()")
    w_dense = dense.weight.detach()
    channels_last = w_dense.view(hidden_dim, channels[1], 7, 7).permute(0, 2, 3, 1).reshape(hidden_dim, -1)
    atoms = [[conv_1.weight.detach()], [conv_1.bias.detach()], [conv_2.weight.detach()], [conv_2.bias.detach()],
             [w_dense, channels_last], [dense.bias.detach()], [reference.to_mu.weight.detach()],
             [reference.to_logvar.weight.detach()], [reference.to_mu.bias.detach()], [reference.to_logvar.bias.detach()]]
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(541))
    with torch.no_grad():
        ref_mu, ref_logvar = reference.encode(x)
        enc = reference.encoder
        h = enc[5](enc[4](enc[3](enc[2](enc[1](enc[0](x))))))  # the dense layer without its ReLU

    def outputs() -> list[Any]:
        got = call_learner(model, x, name=f"{label}.forward")
        return list(got) if isinstance(got, (tuple, list)) else [got]

    # each layer is found by what it computes: heads in either order, one head or two, the map flattened either way
    if not match_behaviour(model, atoms, ((6, 7), (8, 9)), outputs, [ref_mu, ref_logvar], label):
        with torch.no_grad():
            got_mu, got_logvar = outputs()
        compare(got_mu, ref_mu, f"mu from {label} with the reference's weights", {
            "the dense layer needs a ReLU after it, before the heads": reference.to_mu(h),
        }, atol=1e-5)
        compare(got_logvar, ref_logvar, f"logvar from {label} with the reference's weights", {}, atol=1e-5)
    Trial(model, reference.encode, (x,), label=f"{label}.forward", names=("x",)).check_gradients()
    ok(f"{label}: {expected} parameters, (B, 1, 28, 28) -> mu, logvar (B, {latent_dim}), gradients reach every layer, "
       "and with the reference's weights it computes what ConvVAE.encode computes, in value and in gradient")
