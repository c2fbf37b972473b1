"""vae_helpers.train: the fit loop, History, seeding, devices and checkpoints."""

import json
import math
import os

import numpy as np
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
    import time

    data = regression_problem(n=4096)
    slow = lambda m, b: (time.sleep(0.002), mse_terms(m, b))[1]  # noqa: E731 - an epoch of 1024 batches takes >= 2 s
    history = train.fit(nn.Linear(3, 1), slow, data, num_epochs=1000, batch_size=4, time_budget=0.2, progress=False)
    assert len(history) == 1  # stopped inside the first epoch, however fast or busy the machine


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


# --- reliability (issue 17): nothing lost, nothing silently wrong ---------------------------------------


def _exploding_after(calls_before_nan: int):
    """A loss that turns NaN from its ``calls_before_nan + 1``-th training call on (as a diverging run does)."""
    count = {"n": 0}

    def loss(model, batch):
        terms = mse_terms(model, batch)
        if model.training:
            count["n"] += 1
            if count["n"] > calls_before_nan:
                terms["loss"] = terms["loss"] * float("inf") * 0.0  # NaN, with a NaN gradient into every weight
        return terms

    return loss


@pytest.mark.parametrize("ratio", [0, 10**9])  # a snapshot at every sync point, or only the one at the start
@pytest.mark.parametrize("nan_from_call", [1, 2, 7, 9, 40])
def test_a_non_finite_loss_leaves_the_last_finite_weights_in_the_model(nan_from_call, ratio, monkeypatch):
    monkeypatch.setattr(train, "SNAPSHOT_COST_RATIO", ratio)
    data = regression_problem(n=256)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    # the reference: the same run stopped by hand just before the bad batch
    torch.manual_seed(0)
    reference = nn.Linear(3, 1)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=0.01)
    with pytest.raises(FloatingPointError, match="last weights that gave a finite loss"):
        train.fit(model, _exploding_after(nan_from_call - 1), data, num_epochs=3, batch_size=8, optimizer=optimizer,
                  progress=False, seed=5)
    assert all(torch.isfinite(p).all() for p in model.parameters()), "NaN reached the weights"
    for state in optimizer.state.values():
        assert all(torch.isfinite(v).all() for v in state.values() if isinstance(v, torch.Tensor))
    # the restored weights are ones this run really had at a sync point before the bad batch
    states = []

    def record(m, b):
        states.append([p.detach().clone() for p in m.parameters()])
        return mse_terms(m, b)

    train.fit(reference, record, data, num_epochs=3, batch_size=8, optimizer=ref_opt, progress=False, seed=5)
    earlier = states[: nan_from_call]  # weights used by the calls before the first NaN one
    matches = [i for i, s in enumerate(earlier) if all(torch.equal(a, b) for a, b in zip(model.parameters(), s))]
    assert matches, "the model holds weights this run never had before the bad batch"
    if ratio == 0:  # a snapshot at every sync point (every batch here): the newest weights proven by a finite loss
        assert matches[-1] == max(nan_from_call - 2, 0)
    # and training can go on from there with the same optimizer
    history = train.fit(model, mse_terms, data, num_epochs=1, batch_size=8, optimizer=optimizer, progress=False)
    assert math.isfinite(history.last("loss"))


def test_non_finite_guard_keeps_to_the_sync_points_it_already_has(monkeypatch):
    """The guard reads losses from the device only at the loop's existing sync points (not once per batch)."""
    reads = []
    real = train._first_not_finite
    monkeypatch.setattr(train, "_first_not_finite", lambda losses: reads.append(losses.numel()) or real(losses))
    train.fit(nn.Linear(3, 1), mse_terms, regression_problem(n=4000), num_epochs=1, batch_size=10, progress=False)
    assert len(reads) <= 21 and sum(reads) == 400


def test_failed_save_keeps_the_previous_checkpoint_pair(tmp_path):
    model = nn.Linear(2, 2)
    path = train.save_checkpoint(tmp_path / "m.pt", model, extra={"version": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(TypeError, match="JSON values.*Nothing was written"):
        train.save_checkpoint(path, model, extra={"version": 2, "best": torch.tensor(1.0)})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    other = nn.Linear(2, 2)
    assert train.load_checkpoint(path, other)["extra"] == {"version": 1}
    assert not torch.equal(other.weight, model.weight)


def test_a_crash_between_the_two_renames_is_detected_on_load(tmp_path, monkeypatch):
    model = nn.Linear(2, 2)
    path = train.save_checkpoint(tmp_path / "m.pt", model)
    real_replace = os.replace
    renamed = []

    def crash_after_first(src, dst):
        if renamed:
            raise KeyboardInterrupt  # the laptop lid closes between the two renames
        renamed.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_after_first)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        train.save_checkpoint(path, model)
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.json"], "no temporary files left"
    with pytest.raises(ValueError, match="do not belong together"):
        train.load_checkpoint(path, nn.Linear(2, 2))


def test_disk_full_during_save_changes_nothing_and_says_so(tmp_path, monkeypatch):
    import errno

    path = train.save_checkpoint(tmp_path / "m.pt", nn.Linear(2, 2))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_open = open

    def full_disk_open(file, mode="r", *args, **kwargs):
        if "w" in mode and str(file).endswith(".part") and "json" in str(file):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk_open)
    with pytest.raises(OSError, match="disk is full.*nothing was changed"):
        train.save_checkpoint(path, nn.Linear(2, 2))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_bad_checkpoint_files_are_explained(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty.*save_checkpoint"):
        train.load_checkpoint(empty, nn.Linear(2, 2))
    truncated = tmp_path / "cut.pt"
    good = train.save_checkpoint(tmp_path / "good.pt", nn.Linear(2, 2))
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        train.load_checkpoint(truncated, nn.Linear(2, 2))
    folder = tmp_path / "runs"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        train.load_checkpoint(folder, nn.Linear(2, 2))
    with pytest.raises(ValueError, match="is a folder"):
        train.save_checkpoint(folder, nn.Linear(2, 2))


def test_history_stays_in_step_when_validation_starts_later():
    import matplotlib.pyplot as plt

    from vae_helpers import plotting

    data = regression_problem()
    model = nn.Linear(3, 1)
    history = train.fit(model, mse_terms, data, num_epochs=2, progress=False)
    train.fit(model, mse_terms, data, val_x=data[:64], num_epochs=2, progress=False, history=history)
    assert len(history.val["loss"]) == len(history.train["loss"]) == len(history) == 4
    assert [math.isnan(v) for v in history.val["loss"]] == [True, True, False, False]
    ax = plotting.training_curves(history)
    val_line = next(line for line in ax.lines if "validation" in line.get_label())
    xy = val_line.get_xydata()
    assert xy[np.isfinite(xy[:, 1]), 0].tolist() == [3.0, 4.0], "validation values belong to epochs 3 and 4"
    plt.close(ax.figure)
    restored = train.History.from_dict(json.loads(json.dumps(history.to_dict(), allow_nan=False)))
    assert restored.train == history.train and [math.isnan(v) for v in restored.val["loss"]] == [True, True, False, False]


def test_history_stays_in_step_when_validation_is_interrupted():
    data = regression_problem()
    model = nn.Linear(3, 1)

    def interrupted_in_epoch_2(m, b):
        if not m.training and len(calls) == 1:
            raise KeyboardInterrupt
        if not m.training:
            calls.append(1)
        return mse_terms(m, b)

    calls: list[int] = []
    history = train.History()
    with pytest.raises(KeyboardInterrupt):
        train.fit(model, interrupted_in_epoch_2, data, val_x=data[:64], num_epochs=3, progress=False, history=history)
    assert len(history) == 2 and len(history.train["loss"]) == 2 and len(history.val["loss"]) == 2
    assert math.isfinite(history.val["loss"][0]) and math.isnan(history.val["loss"][1])
    train.fit(model, mse_terms, data, val_x=data[:64], num_epochs=1, progress=False, history=history)
    assert len(history.val["loss"]) == len(history.train["loss"]) == len(history) == 3


@pytest.mark.parametrize("kwargs, err", [
    ({"lr": True}, TypeError),
    ({"lr": float("nan")}, ValueError),
    ({"lr": float("inf")}, ValueError),
    ({"lr": "1e-3"}, TypeError),
    ({"clip_grad_norm": True}, TypeError),
    ({"time_budget": float("nan")}, ValueError),
    ({"seed": 1.5}, TypeError),
])
def test_fit_rejects_values_that_only_look_like_numbers(kwargs, err):
    with pytest.raises(err, match=list(kwargs)[0]):
        train.fit(nn.Linear(3, 1), mse_terms, regression_problem(n=8), progress=False, **kwargs)


def test_fit_seed_alone_does_not_repeat_a_run_and_the_docstring_says_so():
    data = regression_problem(n=64)

    def noisy(m, b):  # randomness inside the loss, as the reparameterisation trick has
        terms = mse_terms(m, b + 0.1 * torch.randn_like(b))
        return terms

    def run(global_seed):
        if global_seed is not None:
            train.seed_everything(global_seed)
        return train.fit(nn.Linear(3, 1), noisy, data, num_epochs=2, batch_size=16, progress=False, seed=0).train["loss"]

    assert run(None) != run(None), "seed= alone fixes only the batch order"
    assert run(4) == run(4), "seed_everything before building the model makes two runs equal"
    doc = " ".join(train.fit.__doc__.replace("``", "").split())
    assert "seed_everything(seed) before building the model" in doc and "only the order of the batches" in doc


# ----------------------------------------------------------------------------- devices (faked: the tests run on a CPU)


class NoFloat64(torch.Tensor):
    """A CPU tensor that refuses float64 as an MPS tensor does; ``.cpu()`` gives a plain tensor."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.cpu:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {})).as_subclass(torch.Tensor)
        out = super().__torch_function__(func, types, args, kwargs or {})
        if isinstance(out, torch.Tensor) and out.dtype == torch.float64:
            raise TypeError("Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support float64")
        return out


def test_the_fake_device_refuses_float64():
    with pytest.raises(TypeError, match="float64"):
        torch.ones(3).as_subclass(NoFloat64).double()
    assert type(torch.ones(3).as_subclass(NoFloat64).cpu().double()) is torch.Tensor


def test_no_float64_on_the_training_device():
    records = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).as_subclass(NoFloat64)
    assert train._epoch_means(records, [3, 1]) == pytest.approx([1.5, 2.5])
    model = nn.Linear(3, 1)
    on_device = lambda m, b: {k: v.as_subclass(NoFloat64) for k, v in mse_terms(m, b).items()}  # noqa: E731
    assert train.evaluate(model, on_device, regression_problem(n=50), batch_size=20) == \
        pytest.approx(train.evaluate(model, mse_terms, regression_problem(n=50), batch_size=20))


def test_without_a_device_fit_trains_on_the_default_one_and_puts_the_model_back(monkeypatch):
    model = nn.Linear(3, 1)
    assert train._training_device(model, None) == (train.default_device(), torch.device("cpu"))
    assert train._training_device(model, "cpu") == (torch.device("cpu"), None)  # explicit: the model stays there
    monkeypatch.setattr(train, "default_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(train, "_model_device", lambda m: torch.device("meta"))  # as if it came from another device
    history = train.fit(model, mse_terms, regression_problem(), num_epochs=2, progress=False)
    assert len(history) == 2 and model.weight.device.type == "meta"
    model = nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def stops(m, b):
        if stops.calls == 3:
            raise KeyboardInterrupt
        stops.calls += 1
        return mse_terms(m, b)

    stops.calls = 0
    with pytest.raises(KeyboardInterrupt):
        train.fit(model, stops, regression_problem(), optimizer=optimizer, progress=False)
    assert model.weight.device.type == "meta", "the model goes back also when training stops early"


def test_with_an_explicit_device_fit_leaves_the_model_there():
    model = nn.Linear(3, 1)
    train.fit(model, mse_terms, regression_problem(), num_epochs=1, device="cpu", progress=False)
    assert model.weight.device.type == "cpu"
