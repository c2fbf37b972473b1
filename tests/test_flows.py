"""vae_helpers.flows: planar maps against autograd, invertibility, sequences, the flow VAE, 2-D energies."""

import math

import pytest
import torch
import torch.nn.functional as F

from vae_helpers import flows, train
from vae_helpers.flows import (FlowVAE, FlowVAEConfig, PlanarFlow, PlanarFlowBank, PlanarFlowSequence, constrain_u,
                               flow_free_energy, flow_vae_loss, planar_flow_sequence, planar_transform)
from vae_helpers.losses import gaussian_kl, iwae_bound, vae_loss
from vae_helpers.models import VAE, VAEConfig


def autograd_log_det(f, z):
    """log|det ∂f/∂z| for each row of z (B, D), from autograd Jacobians and torch.linalg.det."""
    return torch.stack([torch.linalg.det(torch.autograd.functional.jacobian(f, row)).abs().log() for row in z])


# ----------------------------------------------------------------------------- one planar map


@pytest.mark.parametrize("dim", [2, 5])
def test_own_parameters_log_det_equals_autograd(dim):
    torch.manual_seed(dim)
    flow = PlanarFlow(dim).double()
    with torch.no_grad():
        flow.u.mul_(3.0)  # a strongly bending map
    z = 2 * torch.randn(6, dim, dtype=torch.float64)
    z_new, log_det = flow(z)
    assert z_new.shape == (6, dim) and log_det.shape == (6,)
    expected = autograd_log_det(lambda v: flow(v[None])[0][0], z)
    torch.testing.assert_close(log_det, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("b_shape", ["(B,)", "(B, 1)"])
def test_per_example_parameters_log_det_equals_autograd(dim, b_shape):
    g = torch.Generator().manual_seed(dim)
    B = 5
    z = torch.randn(B, dim, generator=g, dtype=torch.float64)
    u, w = (2 * torch.randn(B, dim, generator=g, dtype=torch.float64) for _ in range(2))
    b = torch.randn(B, generator=g, dtype=torch.float64)
    b_in = b if b_shape == "(B,)" else b[:, None]
    flow = PlanarFlow(dim).double()
    z_new, log_det = flow(z, u, w, b_in)
    assert z_new.shape == (B, dim) and log_det.shape == (B,)
    for i in range(B):  # example i uses its own u_i, w_i, b_i
        f_i = lambda v: flow(v[None], u[i : i + 1], w[i : i + 1], b[i : i + 1])[0][0]  # noqa: E731
        torch.testing.assert_close(z_new[i], f_i(z[i]))
        torch.testing.assert_close(log_det[i], autograd_log_det(f_i, z[i : i + 1])[0], rtol=1e-6, atol=1e-6)


def test_planar_transform_formula_and_negative_determinants():
    g = torch.Generator().manual_seed(0)
    z, w = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    b = torch.randn(1, generator=g, dtype=torch.float64)
    u = -4 * w / w.pow(2).sum()  # wᵀu = -4: not invertible, 1 + uᵀψ < 0 near wᵀz + b = 0
    z_new, log_det = planar_transform(z, u, w, b)
    h = torch.tanh(z @ w + b)
    torch.testing.assert_close(z_new, z + u * h[:, None])
    det = 1 + (1 - h**2) * (w @ u)
    torch.testing.assert_close(log_det, det.abs().log())
    torch.testing.assert_close(log_det, autograd_log_det(lambda v: planar_transform(v, u, w, b)[0], z))


@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0])
def test_constrained_u_satisfies_invertibility_for_any_raw_parameters(scale):
    g = torch.Generator().manual_seed(1)
    u = scale * torch.randn(1000, 4, generator=g, dtype=torch.float64)
    w = scale * torch.randn(1000, 4, generator=g, dtype=torch.float64)
    u[:100] = -5 * w[:100]  # wᵀu very negative
    u_hat = constrain_u(u, w)
    wu, wu_hat = (w * u).sum(-1), (w * u_hat).sum(-1)
    # > -1 in exact arithmetic; in floating point up to the rounding of wᵀu itself
    assert (wu_hat + 1 >= -1e-12 * (1 + wu.abs())).all()
    torch.testing.assert_close(wu_hat, -1 + F.softplus(wu))  # wᵀû = m(wᵀu): divided by ‖w‖²


def test_constrain_u_leaves_the_part_orthogonal_to_w_alone():
    u, w = torch.tensor([0.3, 2.0]), torch.tensor([1.0, 0.0])
    u_hat = constrain_u(u, w)
    assert u_hat[1] == u[1]
    assert u_hat[0] == pytest.approx(-1 + math.log1p(math.exp(0.3)))


def test_constrained_flow_is_invertible_in_1d():
    flow = PlanarFlow(1)
    with torch.no_grad():
        flow.u.fill_(-50.0)
        flow.w.fill_(2.0)
    z = torch.linspace(-5, 5, 2001)[:, None]
    z_new, log_det = flow(z)
    assert (z_new[1:] - z_new[:-1] > 0).all(), "a 1-D invertible map must be increasing"
    assert torch.isfinite(log_det).all()


# ----------------------------------------------------------------------------- sequences


def test_sequence_sums_the_log_dets_and_matches_autograd():
    torch.manual_seed(3)
    seq = PlanarFlowSequence(2, 4).double()
    z = torch.randn(5, 2, dtype=torch.float64)
    zK, log_det = seq(z)
    step, total = z, torch.zeros(5, dtype=torch.float64)
    for flow in seq.flows:
        step, ld = flow(step)
        total = total + ld
    torch.testing.assert_close(zK, step)
    torch.testing.assert_close(log_det, total)
    torch.testing.assert_close(log_det, autograd_log_det(lambda v: seq(v[None])[0][0], z))
    trajectory = seq.trajectory(z)
    assert len(trajectory) == 5 and torch.equal(trajectory[0], z)
    torch.testing.assert_close(trajectory[-1], zK)


def test_empty_sequence_is_the_identity():
    z = torch.randn(3, 4)
    zK, log_det = PlanarFlowSequence(4, 0)(z)
    assert torch.equal(zK, z) and torch.equal(log_det, torch.zeros(3))


def test_amortised_sequence_matches_flow_by_flow_and_broadcasts_over_samples():
    g = torch.Generator().manual_seed(4)
    B, K, D = 3, 5, 4
    u, w = torch.randn(B, K, D, generator=g), torch.randn(B, K, D, generator=g)
    b = torch.randn(B, K, generator=g)
    z = torch.randn(7, B, D, generator=g)  # 7 samples per example
    zK, log_det = planar_flow_sequence(z, u, w, b)
    assert zK.shape == (7, B, D) and log_det.shape == (7, B)
    flow = PlanarFlow(D)
    step, total = z[2], torch.zeros(B)
    for k in range(K):
        step, ld = flow(step, u[:, k], w[:, k], b[:, k])
        total = total + ld
    torch.testing.assert_close(zK[2], step)
    torch.testing.assert_close(log_det[2], total)


def test_bank_equals_planar_flows_and_switches_off_unused_layers():
    torch.manual_seed(5)
    bank = PlanarFlowBank([1, 3], dim=2, init_scale=0.8).double()
    z = torch.randn(2, 6, 2, dtype=torch.float64)
    zs, log_det = bank.trajectory(z)
    assert len(zs) == 4 and log_det.shape == (2, 6)
    for m, active in enumerate([1, 3]):
        step, total = z[m], torch.zeros(6, dtype=torch.float64)
        for k in range(active):
            step, ld = planar_transform(step, constrain_u(bank.u[m, k], bank.w[m, k]), bank.w[m, k], bank.b[m, k])
            total = total + ld
        torch.testing.assert_close(zs[-1][m], step)
        torch.testing.assert_close(log_det[m], total)
    torch.testing.assert_close(zs[1][0], zs[3][0])  # model 0 stops after one layer


# ----------------------------------------------------------------------------- the flow VAE


def small_config(**kw):
    return FlowVAEConfig(input_dim=12, hidden_dim=16, latent_dim=3, depth=1, **kw)


def with_random_flows(model):
    """Redraw the encoder's last layer so that the flows are far from the identity and differ per input."""
    flow_rows = slice(2 * model.latent_dim, None)  # the outputs after mu and logvar
    with torch.no_grad():  # the flow outputs are scaled by flow_scale = 0.05: raw values of size ~20 give u, w, b ~ 1
        model.encoder.net[-1].weight[flow_rows].normal_(0.0, 10.0)
        model.encoder.net[-1].bias[flow_rows].normal_(0.0, 20.0)
    return model


def test_config_defaults_are_the_series_20d_vae():
    c = FlowVAEConfig()
    assert isinstance(c, VAEConfig)
    assert (c.latent_dim, c.hidden_dim, c.depth, c.likelihood, c.num_flows, c.input_dim) == (20, 500, 2, "bernoulli", 4, 784)


def test_flow_vae_shapes():
    model = with_random_flows(FlowVAE(small_config(num_flows=4)))
    x = torch.rand(5, 12)
    mu, logvar, u, w, b = model.encode_all(x)
    assert mu.shape == logvar.shape == (5, 3) and u.shape == w.shape == (5, 4, 3) and b.shape == (5, 4)
    assert [t.shape for t in model.encode(x)] == [(5, 3), (5, 3)]
    z0, zK, log_det, mu, logvar = model.sample_posterior(x)
    assert z0.shape == zK.shape == (5, 3) and log_det.shape == (5,)
    z0, zK, log_det, _, _ = model.sample_posterior(x, num_samples=6)
    assert z0.shape == zK.shape == (6, 5, 3) and log_det.shape == (6, 5)
    assert model.log_importance_weights(x, 7).shape == (7, 5)
    assert model.mean_image(zK[0]).shape == (5, 12)


def test_flows_start_as_the_identity_and_become_per_example():
    torch.manual_seed(10)
    model = FlowVAE(small_config(num_flows=3))
    x = torch.bernoulli(torch.rand(16, 12))
    z0, zK, log_det, _, _ = model.sample_posterior(x)
    torch.testing.assert_close(zK, z0)
    torch.testing.assert_close(log_det, torch.zeros(16), atol=1e-6, rtol=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        flow_vae_loss(model, x)["loss"].backward()
        optimizer.step()
    _, _, u, w, b = model.encode_all(x)
    assert not torch.allclose(u[0], u[1]) and not torch.allclose(b[0], b[1]), "flow parameters depend on the input"
    z0, zK, _, _, _ = model.sample_posterior(x)
    assert not torch.allclose(zK, z0)


def test_free_energy_takes_summed_or_per_flow_log_dets():
    g = torch.Generator().manual_seed(9)
    log_px, log_dets = torch.randn(4, generator=g), torch.randn(4, 3, generator=g)
    z0, zK, mu, logvar = (torch.randn(4, 2, generator=g) for _ in range(4))
    torch.testing.assert_close(flow_free_energy(log_px, z0, zK, mu, logvar, log_dets),
                               flow_free_energy(log_px, z0, zK, mu, logvar, log_dets.sum(-1)))


def test_log_importance_weights_are_the_negative_free_energy():
    model = with_random_flows(FlowVAE(small_config(num_flows=3)))
    x = torch.bernoulli(torch.rand(4, 12))
    torch.manual_seed(0)
    log_w = model.log_importance_weights(x, 5)
    torch.manual_seed(0)
    z0, zK, log_det, mu, logvar = model.sample_posterior(x, 5)
    assert log_det.abs().mean() > 1e-2, "the flows should do something in this test"
    expected = -flow_free_energy(model.log_likelihood(x, zK), z0, zK, mu, logvar, log_det)
    torch.testing.assert_close(log_w, expected)


def test_zero_flows_is_a_plain_vae():
    torch.manual_seed(6)
    vae = VAE(VAEConfig(input_dim=12, hidden_dim=16, latent_dim=3, depth=1))
    model = FlowVAE(small_config(num_flows=0))
    model.load_state_dict(vae.state_dict())  # same layers, same names
    x = torch.bernoulli(torch.rand(8, 12))
    for a, b in zip(model.encode(x), vae.encode(x)):
        torch.testing.assert_close(a, b)
    torch.manual_seed(1)
    ours = model.log_importance_weights(x, 4)
    torch.manual_seed(1)
    theirs = vae.log_importance_weights(x, 4)
    torch.testing.assert_close(ours, theirs)
    torch.manual_seed(2)
    ours = flow_vae_loss(model, x)
    torch.manual_seed(2)
    theirs = vae_loss(model, x)
    torch.testing.assert_close(ours["reconstruction"], theirs["reconstruction"])
    assert set(ours) == {"loss", "elbo", "reconstruction", "kl"}
    # the one-sample KL estimate log q0(z0) - log p(z0) averages to the closed form
    z0, zK, log_det, mu, logvar = model.sample_posterior(x, num_samples=20000)
    assert torch.equal(z0, zK) and torch.equal(log_det, torch.zeros_like(log_det))
    mc_kl = flow_free_energy(torch.zeros_like(log_det), z0, zK, mu, logvar, log_det).mean(0)
    torch.testing.assert_close(mc_kl, gaussian_kl(mu, logvar), rtol=0.05, atol=0.05)


def test_flow_vae_loss_terms_are_consistent():
    model = with_random_flows(FlowVAE(small_config(num_flows=2)))
    x = torch.bernoulli(torch.rand(6, 12))
    terms = flow_vae_loss(model, x, beta=0.5)
    assert all(t.dim() == 0 for t in terms.values())
    torch.testing.assert_close(terms["elbo"], -terms["reconstruction"] - terms["kl"])
    torch.testing.assert_close(terms["loss"], terms["reconstruction"] + 0.5 * terms["kl"])


def test_iwae_is_at_least_the_elbo_on_average():
    torch.manual_seed(7)
    model = with_random_flows(FlowVAE(small_config(num_flows=3)))
    x = torch.bernoulli(torch.rand(32, 12))
    elbo = model.log_importance_weights(x, 500).mean()  # E[log w]
    iwae = iwae_bound(model, x, k=100).mean()  # E[log mean w]
    assert iwae >= elbo


def test_flow_vae_trains_with_fit_and_gaussian_likelihood_works():
    torch.manual_seed(8)
    x = torch.bernoulli(torch.rand(64, 12))
    model = FlowVAE(small_config(num_flows=2))
    history = train.fit(model, flow_vae_loss, x, num_epochs=3, batch_size=16, lr=1e-2, progress=False, seed=0)
    assert history.train["loss"][-1] < history.train["loss"][0]
    gaussian = FlowVAE(small_config(num_flows=2, likelihood="gaussian"))
    assert torch.isfinite(flow_vae_loss(gaussian, torch.rand(5, 12))["loss"])


# ----------------------------------------------------------------------------- 2-D energies and fits


@pytest.mark.parametrize("name", ["U1", "U2", "U3", "U4"])
def test_energies_shapes_and_values(name):
    U = flows.ENERGIES[name]
    z = torch.randn(10, 2)
    assert U(z).shape == (10,) and torch.isfinite(U(z)).all()
    assert U(torch.randn(3, 4, 2)).shape == (3, 4)
    with pytest.raises(ValueError, match="shape"):
        U(torch.randn(10, 3))


def test_energies_match_table_1_at_known_points():
    origin_on_sine = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, -1.0]])  # z2 = sin(π z1 / 2)
    torch.testing.assert_close(flows.U2(origin_on_sine), torch.zeros(3))
    ring = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])  # on the ring, at the centres of the two lobes
    expected = -math.log(1 + math.exp(-0.5 * (4 / 0.6) ** 2))
    torch.testing.assert_close(flows.U1(ring), torch.full((2,), expected))
    assert flows.U1(torch.tensor([[0.0, 2.0]])) > flows.U1(torch.tensor([[2.0, 0.0]]))  # the lobes are at z1 = ±2


def test_box_wall_is_zero_inside_and_grows_outside():
    assert torch.equal(flows.box_wall(torch.tensor([[3.9, -3.9]])), torch.zeros(1))
    assert flows.box_wall(torch.tensor([[5.0, 0.0]])) > flows.box_wall(torch.tensor([[4.5, 0.0]])) > 0


def test_fit_planar_flows_2d_lowers_the_reverse_kl():
    def gaussian_energy(z):  # N((1, -1), 0.5² I): log Z = log(2π 0.25)
        return 0.5 * ((z - torch.tensor([1.0, -1.0])) / 0.5).pow(2).sum(-1)

    threads = torch.get_num_threads()
    bank, history = flows.fit_planar_flows_2d([gaussian_energy, flows.U1], [1, 4], num_steps=300, batch_size=128, seed=0)
    assert torch.get_num_threads() == threads
    assert history.shape == (300, 4) and isinstance(bank, PlanarFlowBank)
    assert (history[-30:].mean(0) < history[:30].mean(0)).all()
    log_z = math.log(2 * math.pi * 0.25)
    assert history[-50:, :2].mean(0).min() < -log_z + 0.3  # KL(q || p) close to 0 for the Gaussian target


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="dim"):
        PlanarFlow(0)
    flow = PlanarFlow(2)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        flow(torch.randn(4, 3))
    with pytest.raises(ValueError, match="all three"):
        flow(torch.randn(4, 2), u=torch.randn(4, 2))
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        flow([[0.0, 1.0]])
    with pytest.raises(ValueError, match="b must have shape"):
        planar_transform(torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="last dimension"):
        constrain_u(torch.randn(3), torch.randn(2))
    with pytest.raises(ValueError, match=r"\(B, K, D\)"):
        planar_flow_sequence(torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2), torch.randn(4))
    with pytest.raises(ValueError, match="num_flows"):
        FlowVAEConfig(num_flows=-1)
    with pytest.raises(ValueError, match="num_flows"):
        PlanarFlowSequence(2, 1.5)
    with pytest.raises(ValueError, match="k must be a positive int"):
        FlowVAE(small_config()).log_importance_weights(torch.rand(2, 12), 0)
    with pytest.raises(ValueError, match="num_flows"):
        PlanarFlowBank([])
    with pytest.raises(ValueError, match="num_steps"):
        flows.fit_planar_flows_2d([flows.U1], [2], num_steps=0)
    with pytest.raises(ValueError, match="energies"):
        flows.fit_planar_flows_2d([], [2])


def test_bank_sample_draws_in_chunks_with_the_same_maths():
    bank = PlanarFlowBank([1, 3], dim=2, init_scale=0.8)
    samples = bank.sample(25, generator=torch.Generator().manual_seed(0), chunk=10)  # chunks of 10, 10, 5
    assert samples.shape == (2, 25, 2) and not samples.requires_grad
    z0 = torch.randn(2, 25, 2, generator=torch.Generator().manual_seed(0))
    one_chunk = bank.sample(25, generator=torch.Generator().manual_seed(0), chunk=100)
    assert torch.allclose(one_chunk, bank(z0)[0]), "one chunk is exactly bank(z0) for the same z0"
    assert not torch.allclose(samples[:, :10], samples[:, 10:20]), "each chunk draws fresh z0"
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_samples"):
            bank.sample(bad)
    with pytest.raises(ValueError, match="chunk"):
        bank.sample(5, chunk=0)
