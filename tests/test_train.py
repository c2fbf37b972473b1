"""vae_helpers.train: the fit loop, History, seeding, devices and checkpoints."""

import json

import pytest
import torch
from torch import nn

from vae_helpers import train
from vae_helpers.models import AEConfig, Autoencoder, autoencoder_loss


def regression_problem(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    w = torch.tensor([[1.5], [-2.0], [0.5]])
    return torch.cat([x, x @ w], dim=1)  # (n, 4): inputs and target in one tensor


def mse_terms(model, batch):
    pred = model(batch[:, :3])
    err = (pred - batch[:, 3:]).pow(2).mean()
    return {"loss": err, "half": 0.5 * err}


def test_fit_learns_and_records_every_term():
    torch.manual_seed(0)
    data = regression_problem()
    model = nn.Linear(3, 1)
    history = train.fit(model, mse_terms, data, val_x=data[:64], num_epochs=15, batch_size=32, lr=0.05, progress=False, seed=0)
    assert len(history) == 15 and len(history.train["loss"]) == 15 and len(history.val["half"]) == 15
    assert history.train["loss"][-1] < 0.01 * history.train["loss"][0]
    assert history.last("half") == pytest.approx(0.5 * history.last("loss"))
    assert not model.training, "fit leaves the model in eval mode"


def test_epoch_means_are_weighted_by_batch_size():
    data = regression_problem(n=10)
    model = nn.Linear(3, 1)
    with torch.no_grad():
        expected = mse_terms(model, data)["loss"].item()
    history = train.fit(model, mse_terms, data, num_epochs=1, batch_size=3, lr=1e-12, progress=False, seed=0)
    assert history.train["loss"][0] == pytest.approx(expected, rel=1e-4)


def test_same_seed_same_history_and_fresh_shuffle_each_epoch():
    data = regression_problem()
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        runs.append(train.fit(nn.Linear(3, 1), mse_terms, data, num_epochs=3, batch_size=16, progress=False, seed=7).train["loss"])
    assert runs[0] == runs[1]
    orders = []
    train.fit(nn.Linear(3, 1), lambda m, b: orders.append(b[:, 0].clone()) or mse_terms(m, b), data, num_epochs=2,
              batch_size=256, progress=False, seed=3)
    assert not torch.equal(orders[0], orders[1]) and torch.equal(orders[0].sort().values, orders[1].sort().values)


def test_transform_and_callback_run_every_epoch():
    seen, calls = [], []
    data = regression_problem(n=20)

    def transform(b):
        seen.append(b.shape[0])
        return b

    train.fit(nn.Linear(3, 1), mse_terms, data, num_epochs=2, batch_size=8, transform=transform,
              callback=lambda epoch, model, history: calls.append((epoch, len(history))), progress=False)
    assert seen == [8, 8, 4, 8, 8, 4]
    assert calls == [(1, 1), (2, 2)]


def test_history_can_be_continued():
    data = regression_problem()
    model = nn.Linear(3, 1)
    history = train.fit(model, mse_terms, data, num_epochs=2, progress=False)
    train.fit(model, mse_terms, data, num_epochs=3, progress=False, history=history)
    assert len(history) == 5 and len(history.train["loss"]) == 5
    assert train.History.from_dict(json.loads(json.dumps(history.to_dict()))) == history


def test_time_budget_stops_early():
    data = regression_problem(n=4096)
    slow = lambda m, b: (torch.ones(20000).cumsum(0), mse_terms(m, b))[1]  # noqa: E731
    history = train.fit(nn.Linear(3, 1), slow, data, num_epochs=1000, batch_size=4, time_budget=0.2, progress=False)
    assert len(history) == 1


def test_non_finite_loss_names_epoch_and_batch():
    data = regression_problem(n=64)
    count = {"n": 0}

    def exploding(model, batch):
        count["n"] += 1
        terms = mse_terms(model, batch)
        if count["n"] == 6:  # epoch 2, batch 2 with 4 batches per epoch
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    with pytest.raises(FloatingPointError, match=r"epoch 2, batch 2.*lower learning rate"):
        train.fit(nn.Linear(3, 1), exploding, data, num_epochs=3, batch_size=16, progress=False)


@pytest.mark.parametrize("kwargs, err", [
    ({"model": "not a model"}, TypeError),
    ({"train_x": [1, 2, 3]}, TypeError),
    ({"train_x": torch.zeros(0, 4)}, ValueError),
    ({"num_epochs": -1}, ValueError),
    ({"batch_size": 0}, ValueError),
    ({"lr": 0}, ValueError),
    ({"clip_grad_norm": -1.0}, ValueError),
    ({"time_budget": 0}, ValueError),
    ({"device": 3}, TypeError),
])
def test_fit_rejects_bad_arguments(kwargs, err):
    args = {"model": nn.Linear(3, 1), "loss_fn": mse_terms, "train_x": regression_problem(n=8)}
    args.update(kwargs)
    with pytest.raises(err):
        train.fit(args.pop("model"), args.pop("loss_fn"), args.pop("train_x"), progress=False, **args)


def test_loss_fn_must_return_scalar_terms_with_loss():
    data = regression_problem(n=8)
    with pytest.raises(TypeError, match="'loss'"):
        train.fit(nn.Linear(3, 1), lambda m, b: mse_terms(m, b)["loss"], data, progress=False)
    with pytest.raises(TypeError, match="scalar"):
        train.fit(nn.Linear(3, 1), lambda m, b: {"loss": (m(b[:, :3]) - b[:, 3:]).pow(2)}, data, progress=False)


def test_clipping_scheduler_and_custom_optimizer():
    data = regression_problem()
    model = nn.Linear(3, 1)
    opt = torch.optim.RMSprop(model.parameters(), lr=0.01)
    history = train.fit(model, mse_terms, data, num_epochs=3, optimizer=opt, clip_grad_norm=1.0, progress=False,
                        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 / 8)
    assert history.train["loss"][-1] < history.train["loss"][0]


def test_progress_bar_runs():
    train.fit(nn.Linear(3, 1), mse_terms, regression_problem(n=32), num_epochs=1, batch_size=8, progress=True)


def test_seed_everything_and_default_device():
    g = train.seed_everything(3)
    a = torch.randn(2)
    train.seed_everything(3)
    assert torch.equal(a, torch.randn(2)) and isinstance(g, torch.Generator)
    assert train.default_device().type in {"cpu", "cuda", "mps"}
    with pytest.raises(TypeError):
        train.seed_everything("3")


def test_evaluate_matches_a_full_batch_computation():
    data = regression_problem(n=100)
    model = nn.Linear(3, 1)
    with torch.no_grad():
        full = mse_terms(model, data)["loss"].item()
    assert train.evaluate(model, mse_terms, data, batch_size=7)["loss"] == pytest.approx(full, rel=1e-5)


def test_checkpoint_round_trip_with_metadata(tmp_path):
    config = AEConfig(hidden_dim=16, latent_dim=3)
    model = Autoencoder(config)
    history = train.fit(model, autoencoder_loss, torch.rand(32, 784), num_epochs=1, progress=False)
    path = train.save_checkpoint(tmp_path / "ae.pt", model, config=config, history=history, extra={"note": "test"})
    other = Autoencoder(config)
    meta = train.load_checkpoint(path, other)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert meta["config"]["latent_dim"] == 3 and meta["model_class"] == "Autoencoder" and meta["extra"] == {"note": "test"}
    assert meta["parameters"] == train.count_parameters(model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ae.pt", "ae.pt.json"], "no temporary files left behind"


def test_loading_into_another_architecture_is_explained(tmp_path):
    path = train.save_checkpoint(tmp_path / "ae.pt", Autoencoder(AEConfig(hidden_dim=16, latent_dim=3)), config=AEConfig(hidden_dim=16, latent_dim=3))
    with pytest.raises(ValueError, match=r"does not match this Autoencoder.*latent_dim': 3.*Shape mismatches"):
        train.load_checkpoint(path, Autoencoder(AEConfig(hidden_dim=16, latent_dim=5)))
    with pytest.raises(ValueError, match="Missing keys"):
        train.load_checkpoint(path, nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(FileNotFoundError):
        train.load_checkpoint(tmp_path / "nope.pt", nn.Linear(2, 2))


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        train.save_checkpoint(tmp_path / "m.pt", nn.Linear(2, 2))
    assert list(tmp_path.iterdir()) == []
