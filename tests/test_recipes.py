"""The series' 20-D VAE recipe: its settings, its schedule, its training call and its evaluation set."""

import pytest
import torch

from vae_helpers import recipes
from vae_helpers.models import VAE


def test_the_recipe_is_the_documented_baseline():
    r = recipes.VAE_20D
    assert (r.latent_dim, r.hidden_dim, r.depth) == (20, 500, 2)
    assert (r.lr, r.final_lr, r.schedule, r.batch_size, r.num_epochs) == (1e-3, 1e-4, "cosine", 128, 12)
    assert (r.eval_size, r.eval_k, r.eval_seed) == (2_000, 100, 0)
    model = recipes.build_vae()
    assert isinstance(model, VAE) and model.latent_dim == 20


@pytest.mark.parametrize("changes", [dict(latent_dim=0), dict(lr=-1.0), dict(final_lr=1e-2), dict(schedule="step"),
                                     dict(eval_k=True), dict(batch_size=1.5)])
def test_bad_settings_are_refused(changes):
    with pytest.raises(ValueError):
        recipes.VAE_20D.with_(**changes)


def test_cosine_schedule_reaches_final_lr_and_constant_has_none():
    factory = recipes.lr_schedule(recipes.VAE_20D, 4)
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=recipes.VAE_20D.lr)
    scheduler = factory(optimizer)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert recipes.lr_schedule(recipes.VAE_20D.with_(schedule="constant"), 4) is None
    with pytest.raises(ValueError):
        recipes.lr_schedule(recipes.VAE_20D, 0)


def test_train_vae_is_reproducible_and_refuses_overrides():
    small = recipes.VAE_20D.with_(latent_dim=3, hidden_dim=16, depth=1, batch_size=32)
    x = torch.rand(64, 784)
    a, history_a = recipes.train_vae(x, small, num_epochs=2, seed=5, progress=False)
    b, history_b = recipes.train_vae(x, small, num_epochs=2, seed=5, progress=False)
    assert history_a.train["loss"] == history_b.train["loss"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(TypeError, match="set by the recipe"):
        recipes.train_vae(x, small, num_epochs=1, lr=1e-2)
    with pytest.raises(TypeError):
        recipes.train_vae(x, "VAE_20D")


def test_evaluation_set_is_fixed_binary_and_sized():
    x = torch.rand(50, 784)
    first, again = recipes.evaluation_set(x, size=10), recipes.evaluation_set(x, size=10)
    assert first.shape == (10, 784) and torch.equal(first, again)
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(TypeError):
        recipes.evaluation_set(x[0])
    model = recipes.build_vae(recipes.VAE_20D.with_(latent_dim=2, hidden_dim=8, depth=1))
    nll = recipes.test_nll(model, first, k=3, progress=False)
    assert isinstance(nll, float) and nll > 0


def test_a_shorter_evaluation_set_is_the_start_of_a_longer_one():
    x = torch.rand(40, 784)
    assert torch.equal(recipes.evaluation_set(x, size=15), recipes.evaluation_set(x, size=40)[:15])


def test_train_vae_builds_a_variant_after_seeding():
    small = recipes.VAE_20D.with_(latent_dim=2, hidden_dim=8, depth=1, batch_size=16)
    x = torch.rand(32, 784)
    built = []

    def build(recipe):
        built.append(torch.rand(1).item())  # drawn after train_vae seeded the generator
        return recipes.build_vae(recipe)

    recipes.train_vae(x, small, num_epochs=1, seed=3, build=build, progress=False)
    recipes.train_vae(x, small, num_epochs=1, seed=3, build=build, progress=False)
    assert built[0] == built[1]
    with pytest.raises(TypeError):
        recipes.train_vae(x, small, num_epochs=1, build=recipes.build_vae(small))
