"""vae_helpers.plotting: every figure is titled, images have no ticks, bad shapes are refused."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from scipy.stats import norm

from vae_helpers import plotting
from vae_helpers.train import History


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_tile_layout():
    imgs = torch.arange(3 * 784, dtype=torch.float32).reshape(3, 784) / 3000
    canvas = plotting.tile(imgs, ncols=2, pad=1)
    assert canvas.shape == (2 * 29 - 1, 2 * 29 - 1)
    assert np.allclose(canvas[:28, 29:], imgs[1].reshape(28, 28).numpy())


@pytest.mark.parametrize("shape", [(5, 784), (5, 1, 28, 28), (5, 28, 28)])
def test_gallery_accepts_every_image_layout(shape):
    ax = plotting.gallery(torch.rand(shape), ncols=5, title="five", labels=[1, 2, 3, 4, 5])
    assert ax.get_title() == "five" and list(ax.get_xticks()) == []


@pytest.mark.parametrize("bad", [torch.rand(5, 100), torch.rand(784), "images"])
def test_bad_images_are_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        plotting.gallery(bad)


def test_reconstructions_and_comparison_rows():
    ax = plotting.reconstructions(torch.rand(4, 784), torch.rand(4, 784))
    assert "reconstructions" in ax.get_title()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["original", "reconstruction"]
    with pytest.raises(ValueError):
        plotting.reconstructions(torch.rand(4, 784), torch.rand(3, 784))
    with pytest.raises(ValueError):
        plotting.comparison_rows([torch.rand(2, 784)], ["a", "b"], title="t")


def test_training_curves_draw_train_and_validation():
    history = History(train={"loss": [3.0, 2.0], "kl": [1.0, 1.5]}, val={"loss": [3.5, 2.5]}, seconds=[1.0, 1.0])
    ax = plotting.training_curves(history, terms=("loss", "kl"), title="curves")
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["loss (train)", "loss (validation)", "kl (train)"] and ax.get_xlabel() == "epoch"
    with pytest.raises(KeyError):
        plotting.training_curves(history, terms=("elbo",))
    with pytest.raises(TypeError):
        plotting.training_curves({"loss": [1]})


def test_latent_scatter_has_a_legend_per_digit():
    ax = plotting.latent_scatter(torch.randn(200, 2), torch.arange(200) % 10)
    assert len(ax.get_legend().get_texts()) == 10 and ax.get_xlabel() == "$z_{1}$"
    with pytest.raises(ValueError):
        plotting.latent_scatter(torch.randn(10, 1))


def test_gaussian_grid_is_at_normal_quantiles():
    grid = plotting.gaussian_grid(n=5)
    q = norm.ppf(np.linspace(0.05, 0.95, 5))
    assert grid.shape == (25, 2)
    assert np.allclose(grid[:5, 0], q) and np.allclose(grid[::5, 1], q[::-1])
    with pytest.raises(ValueError):
        plotting.gaussian_grid(n=1)


def test_latent_manifold_decodes_each_grid_point_once():
    seen = []

    def decode(z):
        seen.append(z.shape)
        return torch.sigmoid(z.sum(1, keepdim=True).expand(-1, 784))

    ax = plotting.latent_manifold(decode, n=4)
    assert seen == [torch.Size([16, 2])] and ax.get_title()


def test_training_curves_whole_epoch_ticks_and_log_scale():
    history = History(train={"kl": [1.0, 7700.0, 3.0]}, val={"kl": [2.0, 5.0, 4.0]}, seconds=[1.0] * 3)
    ax = plotting.training_curves(history, terms=("kl",), log_scale=True)
    ax.figure.canvas.draw()
    assert ax.get_yscale() == "log"
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert plotting.training_curves(history, terms=("kl",)).get_yscale() == "linear"
    with pytest.raises(ValueError, match="positive"):
        plotting.training_curves(History(train={"loss": [1.0, -2.0]}, seconds=[1.0, 1.0]), log_scale=True)


def test_kl_per_dimension_log_scale_keeps_threshold_visible():
    ax = plotting.kl_per_dimension(torch.tensor([3.0, 0.5, 1e-4]), threshold=0.01, log_scale=True)
    assert ax.get_yscale() == "log"
    bottom, top = ax.get_ylim()
    assert bottom < 0.01 < top and bottom <= 1e-4
    assert plotting.kl_per_dimension(torch.tensor([3.0, 0.5])).get_yscale() == "linear"
