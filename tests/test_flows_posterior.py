"""Tests of the per-posterior flow fits of notebook 04 (planar inverse, q_K's density, grid posteriors)."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch

from vae_helpers import flows, plotting
from vae_helpers.models import VAE, VAEConfig


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_planar_inverse_undoes_the_map(dim):
    g = torch.Generator().manual_seed(dim)
    u, w, b = torch.randn(dim, generator=g, dtype=torch.float64), torch.randn(dim, generator=g, dtype=torch.float64), torch.randn(1, dtype=torch.float64)
    u_hat = flows.constrain_u(3 * u, w)
    z = torch.randn(50, dim, generator=g, dtype=torch.float64)
    y, _ = flows.planar_transform(z, u_hat, w, b)
    assert torch.allclose(flows.planar_inverse(y, u_hat, w, b), z, atol=1e-10)


def test_planar_inverse_refuses_a_folding_map():
    w = torch.tensor([1.0, 0.0])
    with pytest.raises(ValueError, match="not invertible"):
        flows.planar_inverse(torch.zeros(3, 2), torch.tensor([-3.0, 0.0]), w, torch.zeros(1))


def test_posterior_flow_density_integrates_to_one_and_matches_its_samples():
    g = torch.Generator().manual_seed(0)
    K, D = 3, 2
    w = torch.randn(K, D, generator=g, dtype=torch.float64)
    q = flows.PosteriorFlow(torch.tensor([0.5, -0.2], dtype=torch.float64), torch.tensor([-1.0, -0.5], dtype=torch.float64),
                            flows.constrain_u(torch.randn(K, D, generator=g, dtype=torch.float64), w), w,
                            torch.randn(K, generator=g, dtype=torch.float64))
    side = torch.linspace(-5, 5, 301, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(side, side, indexing="xy"), -1).reshape(-1, 2)
    mass = q.log_density(grid).exp().sum() * (side[1] - side[0]) ** 2
    assert abs(mass.item() - 1) < 1e-3
    z, log_q = q.sample(200, generator=g)
    assert torch.allclose(q.log_density(z), log_q, atol=1e-8)


def test_fit_posterior_flow_finds_a_gaussian_posterior():
    mean, logvar = torch.tensor([[1.0, -2.0]]), torch.tensor([[-1.0, 0.5]])
    log_joint = lambda z: -0.5 * ((z - mean) ** 2 / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)  # normalised
    fits, history = flows.fit_posterior_flow(log_joint, torch.zeros(1, 2), torch.zeros(1, 2), 0, num_steps=600, lr=5e-2)
    assert history.shape == (600, 1)
    assert torch.allclose(fits[0].mu, mean[0], atol=0.1) and torch.allclose(fits[0].logvar, logvar[0], atol=0.2)
    assert abs(history[-100:].mean().item()) < 0.05  # -ELBO = KL = 0 at the optimum, log p(x) = 0


def test_fit_posterior_flow_beats_a_gaussian_on_two_bumps():
    x = torch.tensor(2.0, dtype=torch.float64)
    normal = torch.distributions.Normal
    log_joint = lambda z: normal(0.0, 1.0).log_prob(z[..., 0]) + normal(z[..., 0] ** 2, 0.5).log_prob(x)
    starts = torch.zeros(3, 1, dtype=torch.float64)
    _, flat = flows.fit_posterior_flow(log_joint, starts, starts, 0, num_steps=800, anneal_steps=200, seed=1)
    _, bent = flows.fit_posterior_flow(log_joint, starts, starts, 4, num_steps=800, anneal_steps=200, seed=1)
    assert bent[-100:].mean(0).min() < flat[-100:].mean(0).min() - 0.3


def test_fit_posterior_flow_rejects_bad_shapes():
    with pytest.raises(ValueError, match="mu and logvar"):
        flows.fit_posterior_flow(lambda z: z.sum(-1), torch.zeros(2), torch.zeros(2), 1)


def test_grid_log_joint_matches_the_model():
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=2, hidden_dim=16))
    x = torch.bernoulli(torch.full((3, 784), 0.3))
    grid = torch.randn(7, 2)
    expected = torch.stack([model.log_likelihood(x, grid[g].expand(3, 2)) for g in range(7)], 1) \
        + flows.standard_normal_log_density(grid)
    with torch.no_grad():
        assert torch.allclose(flows.grid_log_joint(model, x, grid, chunk=3), expected, atol=1e-3)


def test_seed_points_fits_the_axis_to_the_values():
    ax = plotting.seed_points([[90.1, 90.3], [89.8, 90.0]], ["K = 0", "K = 4"])
    low, high = ax.get_ylim()
    assert 89 < low < 89.8 and 90.3 < high < 91
    plt.close("all")
    with pytest.raises(ValueError):
        plotting.seed_points([[1.0]], ["a", "b"])
