"""The convolutional VAE of notebook 03, the shape arithmetic helpers and ``layer_summary``."""

import pytest
import torch
from torch import nn

from vae_helpers import losses, train
from vae_helpers.models import (ConvVAE, ConvVAEConfig, VAEBase, conv_output_size, conv_transpose_output_size,
                                interpolate_latents, layer_summary)

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = dict(channels=(4, 8, 8, 8), strides=(1, 2, 1, 1), hidden_dim=8, decoder_channels=(4,))
LAYOUTS = [
    ConvVAEConfig(latent_dim=2, **TINY),
    ConvVAEConfig(latent_dim=5, channels=(4, 6), strides=(2, 2), hidden_dim=16, decoder_channels=(6, 4)),
    ConvVAEConfig(latent_dim=3, channels=(4, 6, 6), strides=(2, 1, 2), hidden_dim=8, decoder_channels=(5, 3), kernel_size=5,
                  activation="elu"),
]


def test_activation_choice():
    relu, elu = ConvVAE(ConvVAEConfig(**TINY)), ConvVAE(ConvVAEConfig(activation="elu", **TINY))
    assert any(isinstance(m, nn.ReLU) for m in relu.modules()) and not any(isinstance(m, nn.ELU) for m in relu.modules())
    assert any(isinstance(m, nn.ELU) for m in elu.modules()) and not any(isinstance(m, nn.ReLU) for m in elu.modules())


def test_default_config_is_the_seed_architecture():
    model = ConvVAE()
    assert isinstance(model, VAEBase) and model.latent_dim == 2
    assert train.count_parameters(model) == 550_629  # the seed's Keras summary: 550,629 parameters
    rows = layer_summary(model, (1, 28, 28), as_rows=True)
    shapes = [shape for name, shape, _ in rows if "Conv" in name]
    assert shapes == ["(32, 28, 28)", "(64, 14, 14)", "(64, 14, 14)", "(64, 14, 14)", "(32, 28, 28)", "(1, 28, 28)"]
    dense = {name.split()[0]: count for name, _, count in rows if "Linear" in name}
    assert dense == {"encoder.9": 401_440, "to_mu": 66, "to_logvar": 66, "from_z.0": 37_632}


@pytest.mark.parametrize("config", LAYOUTS, ids=["seed-layout", "two-stride-2", "kernel-5"])
def test_shapes_and_vae_interface(config):
    torch.manual_seed(0)
    model = ConvVAE(config)
    x = torch.rand(6, 1, 28, 28).bernoulli()
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (6, config.latent_dim)
    mu_flat, _ = model.encode(x.view(6, 784))
    assert torch.allclose(mu, mu_flat)
    z = torch.randn(6, config.latent_dim)
    assert model.decode(z).shape == (6, 1, 28, 28)
    assert model.log_likelihood(x, z).shape == (6,)
    assert model.log_likelihood(x, torch.randn(4, 6, config.latent_dim)).shape == (4, 6)
    assert model.mean_image(z).shape == (6, 784)
    assert model.log_importance_weights(x, 3).shape == (3, 6)
    assert losses.iwae_bound(model, x, k=4).shape == (6,)
    terms = losses.vae_loss(model, x)
    assert terms["loss"].dim() == 0 and torch.isfinite(terms["loss"])


def test_log_likelihood_is_bernoulli_of_the_logits():
    torch.manual_seed(1)
    model = ConvVAE(LAYOUTS[0])
    x, z = torch.rand(3, 1, 28, 28).bernoulli(), torch.randn(3, 2)
    logits = model.decode(z).view(3, 784)
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x.view(3, 784)).sum(-1)
    assert torch.allclose(model.log_likelihood(x, z), expected, atol=1e-4)


def test_decoding_is_per_example():
    torch.manual_seed(2)
    model = ConvVAE(LAYOUTS[1]).eval()
    z = torch.randn(4, 5)
    together = model.decode(z)
    apart = torch.cat([model.decode(z[i : i + 1]) for i in range(4)])
    assert torch.allclose(together, apart, atol=1e-5)


def test_a_few_steps_of_training_lower_the_loss():
    torch.manual_seed(3)
    model = ConvVAE(LAYOUTS[1])
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0  # the same bar in every image: easy to learn
    before = losses.vae_loss(model, x)["loss"].item()
    train.fit(model, losses.vae_loss, x, num_epochs=15, batch_size=32, lr=3e-3, progress=False, seed=0, device="cpu")
    assert losses.vae_loss(model, x)["loss"].item() < 0.5 * before


@pytest.mark.parametrize("bad", [
    dict(strides=(1, 2, 1)),
    dict(strides=(1, 3, 1, 1)),
    dict(decoder_channels=(32, 16)),
    dict(channels=(32, 0, 64, 64)),
    dict(latent_dim=0),
    dict(kernel_size=4),
    dict(activation="tanh"),
    dict(channels=(8, 8, 8), strides=(2, 2, 2), decoder_channels=(8, 8, 8)),
])
def test_config_rejects_inconsistent_sizes(bad):
    with pytest.raises(ValueError):
        ConvVAEConfig(**bad)


def test_encode_rejects_wrong_shapes():
    model = ConvVAE(LAYOUTS[0])
    with pytest.raises(ValueError, match="expects"):
        model.encode(torch.zeros(2, 3, 28, 28))
    with pytest.raises(ValueError, match="expects"):
        model.encode(torch.zeros(2, 100))


@pytest.mark.parametrize("size,k,s,p", [(28, 3, 1, 1), (28, 3, 2, 1), (7, 3, 2, 1), (5, 3, 2, 0), (32, 5, 3, 2), (9, 2, 2, 0)])
def test_conv_output_size_matches_pytorch(size, k, s, p):
    out = nn.Conv2d(1, 1, k, stride=s, padding=p)(torch.zeros(1, 1, size, size))
    assert conv_output_size(size, k, s, p) == out.shape[-1]


@pytest.mark.parametrize("size,k,s,p,op", [(14, 3, 2, 1, 1), (7, 3, 2, 1, 1), (14, 4, 2, 1, 0), (5, 3, 1, 1, 0), (6, 5, 3, 2, 2)])
def test_conv_transpose_output_size_matches_pytorch(size, k, s, p, op):
    layer = nn.ConvTranspose2d(1, 1, k, stride=s, padding=p, output_padding=op)
    assert conv_transpose_output_size(size, k, s, p, op) == layer(torch.zeros(1, 1, size, size)).shape[-1]


def test_interpolate_latents_ends_and_spacing():
    a, b = torch.randn(4), torch.randn(4)
    path = interpolate_latents(a, b, 5)
    assert path.shape == (5, 4)
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b)
    assert torch.allclose(path[1:] - path[:-1], ((b - a) / 4).expand(4, 4), atol=1e-6)
    with pytest.raises(ValueError):
        interpolate_latents(a, b, 1)
    with pytest.raises(ValueError):
        interpolate_latents(a, torch.randn(3), 5)


def test_layer_summary_table_and_rows():
    model = ConvVAE(LAYOUTS[1])
    rows = layer_summary(model, (1, 28, 28), as_rows=True)
    assert sum(count for _, _, count in rows) == train.count_parameters(model)
    assert rows[-1] == ("decoder.4 (Conv2d)", "(1, 28, 28)", 4 * 9 + 1)
    text = layer_summary(model, (1, 28, 28))
    assert "output shape" in text and f"{train.count_parameters(model):,}" in text.splitlines()[-1]
    assert all(not m._forward_hooks for m in model.modules()), "hooks must be removed"
    assert model.training, "layer_summary must restore the training mode"


def test_layer_summary_of_a_plain_network():
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.ReLU())
    rows = layer_summary(net, (1, 28, 28), as_rows=True)
    assert [shape for _, shape, _ in rows] == ["(784,)", "(10,)", "(10,)"]
    with pytest.raises(ValueError):
        layer_summary(net, (1, -28, 28))
    with pytest.raises(TypeError):
        layer_summary("net", (784,))


@pytest.mark.parametrize("bad", [dict(strides=(1, 2.0, 1, 1)), dict(kernel_size=3.0), dict(strides=(1, True, 1, 1))])
def test_config_rejects_floats_and_bools_where_ints_belong(bad):
    with pytest.raises(ValueError, match="must be int"):
        ConvVAEConfig(**bad)


def test_conv_vae_names_what_it_expected():
    model = ConvVAE(LAYOUTS[0])
    with pytest.raises(TypeError, match="divide by 255"):
        model.encode(torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty batch"):
        model.encode(torch.zeros(0, 1, 28, 28))
    with pytest.raises(ValueError, match=rf"expected codes z of shape \(B, {LAYOUTS[0].latent_dim}\)"):
        model.decode(torch.zeros(2, LAYOUTS[0].latent_dim + 1))


def test_count_multiply_adds_by_hand():
    from vae_helpers.models import count_multiply_adds

    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    assert count_multiply_adds(net, (1, 28, 28)) == 4 * 14 * 14 * 1 * 9 + 4 * 14 * 14 * 10
    up = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1)
    assert count_multiply_adds(up, (3, 7, 7)) == 3 * 7 * 7 * 2 * 9  # one 3x3 stamp per input value and output channel
    model = ConvVAE(ConvVAEConfig(latent_dim=2, channels=(4, 6), strides=(2, 2), hidden_dim=8, decoder_channels=(5, 3)))
    expected = (14 * 14 * 4 * 1 * 9 + 7 * 7 * 6 * 4 * 9 + 6 * 49 * 8 + 2 * 8 * 2        # encoder convs, dense, two heads
                + 2 * 6 * 49 + 6 * 7 * 7 * 5 * 9 + 5 * 14 * 14 * 3 * 9 + 28 * 28 * 1 * 3 * 9)  # from_z, two stamps, last conv
    assert count_multiply_adds(model, (1, 28, 28)) == expected
    assert model.training  # the training flag is put back


def test_count_multiply_adds_rejects_bad_input():
    from vae_helpers.models import count_multiply_adds

    with pytest.raises(TypeError, match="nn.Module"):
        count_multiply_adds("model", (1, 28, 28))
    with pytest.raises(ValueError, match="input_shape"):
        count_multiply_adds(nn.Linear(3, 2), (0,))
