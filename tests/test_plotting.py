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


def test_posterior_ellipses_have_sigma_half_axes():
    mu = torch.tensor([[0.0, 0.0], [2.0, -1.0]])
    logvar = torch.log(torch.tensor([[0.25, 1.0], [0.01, 0.04]]))  # sigma (0.5, 1) and (0.1, 0.2)
    ax = plotting.posterior_ellipses(mu, logvar, labels=torch.tensor([3, 7]), n_std=2.0, title="ellipses")
    (ellipses,) = [c for c in ax.collections if c.__class__.__name__ == "EllipseCollection"]
    assert np.allclose(ellipses._widths, 0.5 * 2 * 2 * np.array([0.5, 0.1]))  # stored as half-widths
    assert np.allclose(ellipses._heights, 0.5 * 2 * 2 * np.array([1.0, 0.2]))
    assert np.allclose(ellipses.get_offsets(), mu.numpy()) and ax.get_title() == "ellipses"
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plotting.posterior_ellipses(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="n_std"):
        plotting.posterior_ellipses(mu, logvar, n_std=0)


def test_aggregate_posterior_histogram_and_prior_circles():
    z = torch.tensor([[0.5, 0.5]] * 9 + [[-3.5, 3.5]])
    ax = plotting.aggregate_posterior(z, limit=4.0, bins=8)
    density = ax.images[0].get_array()
    assert density.shape == (8, 8) and np.isclose(density.sum() * 1.0, 1.0)  # bins of width 1 integrate to 1
    assert np.isclose(density[4, 4], 0.9) and np.isclose(density[7, 0], 0.1)  # row = z2 bin, column = z1 bin
    assert sorted(p.get_radius() for p in ax.patches) == [1, 2, 3]
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plotting.aggregate_posterior(torch.zeros(5, 3))


def test_bound_gap_bars_stack_gap_on_minus_log_px():
    ax = plotting.bound_gap_bars([90.0, 88.0], [5.0, 4.0], ["VAE", "flow"], title="bars")
    bottoms, tops = ax.containers
    assert [p.get_height() for p in bottoms] == [90.0, 88.0]
    assert [p.get_y() for p in tops] == [90.0, 88.0] and [p.get_height() for p in tops] == [5.0, 4.0]
    assert {"95.00", "92.00"} <= {t.get_text() for t in ax.texts}
    scalar = plotting.bound_gap_bars(1.6, [0.7, 0.1], ["a", "b"])
    assert [p.get_height() for p in scalar.containers[0]] == [1.6, 1.6]
    with pytest.raises(ValueError, match="one gap and one label"):
        plotting.bound_gap_bars([1.0, 2.0], [0.5], ["a"])
    with pytest.raises(ValueError, match="finite"):
        plotting.bound_gap_bars([float("nan")], [0.5], ["a"])


def test_planar_map_guides_draw_the_hyperplane_and_u():
    _, ax = plt.subplots()
    ax.set_xlim(-5, 5)
    ax.set_ylim(-5, 5)
    plotting.planar_map_guides(torch.tensor([1.0, 0.5]), torch.tensor([1.0, 1.0]), torch.tensor([-2.0]), ax)
    (line,) = ax.get_lines()
    points = np.stack(line.get_data(), axis=1)
    assert np.allclose(points @ np.array([1.0, 1.0]) - 2.0, 0.0)  # every point on w^T z + b = 0
    (arrow,) = [t for t in ax.texts if hasattr(t, "xyann")]
    assert np.allclose(np.subtract(arrow.xy, arrow.xyann), [1.0, 0.5])  # the arrow is u
    assert ax.get_xlim() == (-5, 5)
    with pytest.raises(ValueError, match="w must not be zero"):
        plotting.planar_map_guides(torch.ones(2), torch.zeros(2), 0.0, ax)


def test_network_diagram_and_reparameterization_graph():
    ax = plotting.network_diagram([("x", "data"), ("dense 500", "layer"), ("z", "code")], title="AE")
    assert [t.get_text() for t in ax.texts if t.get_text()] == ["x", "dense 500", "z"] and ax.get_title() == "AE"
    assert sum(hasattr(t, "arrow_patch") and t.arrow_patch is not None for t in ax.texts) == 2  # one arrow between neighbours
    with pytest.raises(ValueError, match="kind"):
        plotting.network_diagram([("x", "pixels")], title="bad")
    with pytest.raises(ValueError):
        plotting.network_diagram([], title="empty")
    texts = lambda ax: " ".join(t.get_text() for t in ax.texts)
    gradient_arrows = lambda ax: sum(t.arrow_patch.get_linestyle() == "--" for t in ax.texts if hasattr(t, "arrow_patch") and t.arrow_patch)
    with_trick, without = plotting.reparameterization_graph(True), plotting.reparameterization_graph(False)
    assert "varepsilon" in texts(with_trick) and "varepsilon" not in texts(without)
    assert gradient_arrows(with_trick) == 6 and gradient_arrows(without) == 2  # only the trick lets gradients reach phi


@pytest.mark.parametrize("num_epochs", [1, 3, 40])
def test_training_curves_ticks_are_whole_epochs_and_legend_is_off_the_data(num_epochs):
    history = History(train={"loss": list(np.linspace(5, 1, num_epochs))}, seconds=[1.0] * num_epochs)
    ax = plotting.training_curves(history)
    ax.figure.canvas.draw()
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    legend_box = ax.get_legend().get_window_extent()
    assert legend_box.y1 <= ax.get_window_extent().y0  # drawn under the axes, not over the curves


@pytest.mark.parametrize("bad, err, match", [
    (torch.rand(4, 3, 28, 28), ValueError, r"got shape \(4, 3, 28, 28\).*colour"),  # 4*3*784 divides by 784
    (torch.rand(2, 56, 56), ValueError, r"got shape \(2, 56, 56\)"),  # 2*3136 = 8*784
    (torch.rand(8, 98, 8), ValueError, r"got shape \(8, 98, 8\)"),
    (torch.rand(0, 784), ValueError, r"got shape \(0, 784\)"),
    (torch.randint(0, 256, (3, 784)).float(), ValueError, "divide by 255"),
    (torch.rand(3, 784) * 2 - 1, ValueError, r"values in \[-"),
    ([[0.0] * 784], TypeError, "tensor or array"),
])
def test_gallery_refuses_what_is_not_a_batch_of_grey_mnist_images(bad, err, match):
    with pytest.raises(err, match=match):
        plotting.gallery(bad)


def test_gallery_refuses_bad_ncols_and_too_many_labels():
    with pytest.raises(ValueError, match="ncols"):
        plotting.gallery(torch.rand(3, 784), ncols=True)
    with pytest.raises(ValueError, match="labels"):
        plotting.gallery(torch.rand(3, 784), labels=[1, 2, 3, 4])


def test_gallery_takes_numpy_and_binary_images():
    ax = plotting.gallery(np.random.default_rng(0).random((4, 28, 28)), ncols=2)
    plotting.gallery((torch.rand(4, 1, 28, 28) > 0.5).float(), ax=ax)


def test_step_curves_draws_each_run_and_marks_a_diverged_one():
    ax = plotting.step_curves({"a": [3.0, 2.0, 1.0] * 5, "b": [3.0, 2.0, float("nan")]}, title="t", smooth=2)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0] == "a" and "b (diverged)" in labels
    with pytest.raises(TypeError):
        plotting.step_curves({}, title="t")
    with pytest.raises(ValueError):
        plotting.step_curves({"a": [1.0]}, title="t", smooth=0)


def test_sliding_windows_draws_one_bar_per_output():
    from vae_helpers.models import conv_output_size

    for size, k, s, p in [(7, 3, 2, 1), (8, 3, 2, 1), (5, 3, 1, 0)]:
        ax = plotting.sliding_windows(size, k, s, p)
        outputs = [t for t in ax.texts if t.get_text().startswith("output")]
        assert len(outputs) == conv_output_size(size, k, s, p) and ax.get_title()
        plt.close("all")
    with pytest.raises(ValueError, match="does not fit"):
        plotting.sliding_windows(2, 5)
    with pytest.raises(ValueError, match="stride"):
        plotting.sliding_windows(7, 3, stride=0)


def test_rate_distortion_plane_labels_every_beta_and_draws_the_elbo_line():
    ax = plotting.rate_distortion_plane([20.0, 15.0, 8.0], [110.0, 118.0, 135.0], [0.39, 1.0, 4.0])
    assert [t.get_text() for t in ax.texts] == ["β = 0.39", "β = 1", "β = 4"]
    assert "133.0" in ax.get_legend().get_texts()[0].get_text() and ax.get_xlabel().startswith("rate")
    with pytest.raises(ValueError, match="one length"):
        plotting.rate_distortion_plane([1.0], [1.0, 2.0], [1.0])


def test_kl_per_dimension_by_beta_counts_active_dimensions():
    kl = torch.tensor([[1.0, 0.5, 0.2], [0.9, 0.05, 0.01]])
    ax = plotting.kl_per_dimension_by_beta(kl, [1.0, 8.0], threshold=0.1)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["β = 1: 3 active", "β = 8: 1 active"] and ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="len\\(betas\\)"):
        plotting.kl_per_dimension_by_beta(kl, [1.0])
