"""The notebook-03 checkers pass the reference and reject typical wrong answers, naming the mistake."""

import math

import pytest
import torch
from learner_copies import own_copy

from vae_helpers import checks, models


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- conv_output_size


def size_right(size, kernel_size, stride=1, padding=0):
    return (size + 2 * padding - kernel_size) // stride + 1


SIZE_WRONG = {
    "both sides of the image": lambda n, k, s, p: (n + p - k) // s + 1,
    r"forgot the \+ 1": lambda n, k, s, p: (n + 2 * p - k) // s,
    "rounded up": lambda n, k, s, p: math.ceil((n + 2 * p - k) / s) + 1,
    "ignored the stride": lambda n, k, s, p: n + 2 * p - k + 1,
    "before dividing by the stride": lambda n, k, s, p: (n + 2 * p - k + 1) // s,
    "subtract the kernel size": lambda n, k, s, p: (n + 2 * p) // s + 1,
    "floor division": lambda n, k, s, p: (n + 2 * p - k) / s + 1,
    "should return an int": lambda n, k, s, p: str(size_right(n, k, s, p)),
    "not implemented yet": lambda n, k, s, p: (_ for _ in ()).throw(NotImplementedError()),
    "nn.Conv2d gives": lambda n, k, s, p: 14,
}


@pytest.mark.parametrize("checker, reference", [("conv_output_size", models.conv_output_size),
                                                ("interpolate_latents", models.interpolate_latents)])
def test_a_pasted_copy_of_the_reference_is_refused(checker, reference):
    with pytest.raises(AssertionError, match=f"copy of vae_helpers' own models.{checker}"):
        getattr(checks, f"check_{checker}")(own_copy(reference))


def test_conv_output_size_checker_passes_the_reference(capsys):
    checks.check_conv_output_size(size_right)
    checks.check_conv_output_size(lambda n, k, s, p: float(size_right(n, k, s, p)))  # 14.0 is a whole number
    checks.check_conv_output_size(lambda n, k, s, p: torch.tensor(size_right(n, k, s, p)))
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("mistake", sorted(SIZE_WRONG))
def test_conv_output_size_checker_names_the_mistake(mistake):
    with pytest.raises(AssertionError, match=mistake):
        checks.check_conv_output_size(SIZE_WRONG[mistake])


# ----------------------------------------------------------------------------- conv_decode


def decode_right(model, z):
    c = model.config
    h = model.from_z(z)
    h = h.view(z.shape[0], c.channels[-1], c.feature_size, c.feature_size)
    return model.decoder(h)


def _sizes(model):
    return model.config.channels[-1], model.config.feature_size


DECODE_WRONG = {
    "probabilities": lambda m, z: torch.sigmoid(decode_right(m, z)),
    "channels first, right after": lambda m, z: m.decoder(m.from_z(z).view(len(z), _sizes(m)[1], _sizes(m)[1], _sizes(m)[0]).permute(0, 3, 1, 2)),
    "skipped the ReLU": lambda m, z: m.decoder(m.from_z[0](z).view(len(z), *_sizes(m)[:1], _sizes(m)[1], _sizes(m)[1])),
    "flattened": lambda m, z: decode_right(m, z).view(len(z), -1),
    "keep the channel dimension": lambda m, z: decode_right(m, z)[:, 0],
    "apply every layer": lambda m, z: m.decoder[:-1](m.from_z(z).view(len(z), _sizes(m)[0], _sizes(m)[1], _sizes(m)[1])),
    "do not hard-code": lambda m, z: m.decoder(m.from_z(z).view(len(z), 64, 14, 14)),
    "batch size of the reshape from z": lambda m, z: m.decoder(m.from_z(z).view(_sizes(m)[0], _sizes(m)[1], _sizes(m)[1])),
    "not implemented yet": lambda m, z: (_ for _ in ()).throw(NotImplementedError()),
    "does not match": lambda m, z: decode_right(m, z) + 0.1,
}


def test_conv_decode_checker_passes_the_reference(capsys):
    checks.check_conv_decode(decode_right)
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("mistake", sorted(DECODE_WRONG))
def test_conv_decode_checker_names_the_mistake(mistake):
    with pytest.raises(AssertionError, match=mistake):
        checks.check_conv_decode(DECODE_WRONG[mistake])


def test_conv_decode_checker_leaves_the_global_rng_alone(global_rng_untouched):
    with global_rng_untouched():
        checks.check_conv_decode(decode_right)


# ----------------------------------------------------------------------------- interpolate_latents


def lerp_right(z_start, z_end, num_steps):
    t = torch.linspace(0, 1, num_steps)[:, None]
    return (1 - t) * z_start + t * z_end


INTERP_WRONG = {
    "runs backwards": lambda a, b, n: lerp_right(b, a, n),
    "end point is missing": lambda a, b, n: a + (torch.arange(n)[:, None] / n) * (b - a),
    "start point is missing": lambda a, b, n: a + (torch.arange(1, n + 1)[:, None] / n) * (b - a),
    "both end points are missing": lambda a, b, n: lerp_right(a, b, n + 2)[1:-1],
    "do not add up to 1": lambda a, b, n: a + torch.linspace(0, 1, n)[:, None] * b,
    "one row per step": lambda a, b, n: lerp_right(a, b, n).T,
    "both ends included": lambda a, b, n: lerp_right(a, b, n + 1),
    "not implemented yet": lambda a, b, n: (_ for _ in ()).throw(NotImplementedError()),
    "does not match": lambda a, b, n: lerp_right(a, b, n) ** 2,
}


def test_interpolate_latents_checker_passes_the_reference(capsys):
    checks.check_interpolate_latents(lerp_right)
    checks.check_interpolate_latents(lambda a, b, n: torch.stack([a + float(t) * (b - a) for t in torch.linspace(0, 1, n)]))
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("mistake", sorted(INTERP_WRONG))
def test_interpolate_latents_checker_names_the_mistake(mistake):
    with pytest.raises(AssertionError, match=mistake):
        checks.check_interpolate_latents(INTERP_WRONG[mistake])
