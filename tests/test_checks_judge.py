"""The checkers' shared machinery: the value-and-gradient judge, the noise test, the guard, weights set by behaviour."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vae_helpers import checks, losses, models
from vae_helpers.checks import _guard
from vae_helpers.checks._core import CheckFailed, plain_int, plain_tensor, refuses
from vae_helpers.checks._judge import Trial, check_fresh_noise
from vae_helpers.checks._match import assignments, match_behaviour

pytestmark = pytest.mark.usefixtures("one_thread")


def _kl(mu, lv):
    return -0.5 * torch.sum(1 + lv - mu**2 - lv.exp(), -1)


def _trial(fn):
    g = torch.Generator().manual_seed(0)
    mu, lv = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    return Trial(fn, _kl, (mu, lv), label="kl", names=("mu", "logvar"))


# ----------------------------------------------------------------------------- Trial


def test_the_same_function_passes_values_and_gradients():
    trial = _trial(lambda mu, lv: 0.5 * (mu * mu + lv.exp() - 1 - lv).sum(-1))
    assert torch.allclose(trial.got, trial.expected)
    trial.check_gradients()


@pytest.mark.parametrize("cut, name", [(lambda mu, lv: _kl(mu.detach(), lv), "mu"),
                                       (lambda mu, lv: torch.tensor(_kl(mu, lv).tolist()), "mu"),
                                       (lambda mu, lv: torch.no_grad()(_kl)(mu, lv), "mu"),
                                       (lambda mu, lv: _kl(mu, lv.data), "logvar")])
def test_a_cut_gradient_is_named_with_its_input(cut, name):
    trial = _trial(cut)
    assert torch.allclose(trial.got, trial.expected)  # the value alone would pass
    with pytest.raises(CheckFailed, match=f"no gradient reaches {name}: something cut it off.*detach"):
        trial.check_gradients()


def test_a_changed_gradient_is_named_with_its_input():
    trial = _trial(lambda mu, lv: -0.5 * torch.sum(1 + lv - mu**2 - lv.exp().detach(), -1))
    with pytest.raises(CheckFailed, match="gradient with respect to logvar is wrong"):
        trial.check_gradients()


def test_inputs_without_a_name_are_not_judged_and_modules_are_copied_for_the_reference():
    layer = nn.Linear(3, 2)
    x = torch.randn(5, 3)
    trial = Trial(lambda m, x: m(x.detach()), lambda m, x: m(x), (layer, x), label="f", names=("layer", None))
    trial.check_gradients()  # x's gradient is not judged; layer.weight and layer.bias are
    assert trial.learner_args[0] is not trial.reference_args[0] is not layer
    trial = Trial(lambda m, x: F.linear(x, m.weight.detach(), m.bias), lambda m, x: m(x), (layer, x), label="f",
                  names=("layer", None))
    with pytest.raises(CheckFailed, match="no gradient reaches layer.weight"):
        trial.check_gradients()


def test_names_must_cover_every_argument():
    with pytest.raises(ValueError, match="names"):
        Trial(_kl, _kl, (torch.zeros(1, 1), torch.zeros(1, 1)), label="kl", names=("mu",))


# ----------------------------------------------------------------------------- fresh noise


def _draw(sample):
    mu = torch.zeros(20_000, 3)
    return lambda: sample(mu)


@pytest.mark.parametrize("sample, message", [
    (lambda mu: (torch.manual_seed(0), torch.randn_like(mu))[1], "re-seeds torch's random generator"),
    (lambda mu: torch.randn(mu.shape, generator=torch.Generator().manual_seed(3)), "same noise whatever the state"),
    (lambda mu: torch.from_numpy(__import__("numpy").random.standard_normal(tuple(mu.shape))).float(), "drew different noise"),
    (lambda mu: torch.randn(mu.shape[1]).expand_as(mu), "every example got the same eps"),
    (lambda mu: torch.rand_like(mu), "uniform"),
    (lambda mu: 2 * torch.randn_like(mu), "should be standard normal"),
    (lambda mu: torch.randn(mu.shape[0], 1).expand_as(mu), "latent dimensions share their noise"),
    (lambda mu: (lambda h: torch.cat([h, -h]))(torch.randn(mu.shape[0] // 2, mu.shape[1])), "share or mirror"),
])
def test_the_noise_test_names_each_kind_of_bad_noise(sample, message):
    def draw():
        return checks.call_learner(_draw(sample))  # inside the guard, as in a checker

    with pytest.raises(CheckFailed, match=message):
        check_fresh_noise(draw, "sample")


def test_the_noise_test_passes_fresh_standard_normal_noise():
    assert check_fresh_noise(lambda: checks.call_learner(_draw(torch.randn_like)), "sample") == 20_000


# ----------------------------------------------------------------------------- the guard


_REFERENCES = [losses.gaussian_kl, losses.vae_loss, models.reparameterize, models.VAE.encode]


def _codes():
    return [f.__code__ for f in _REFERENCES] + [torch.lerp, torch.conv2d, F.conv2d, torch.manual_seed.__code__,
                                               models.VAE.__init__, torch.distributions.Normal.log_prob.__code__]


@pytest.mark.parametrize("answer", [lambda mu, lv: _kl(mu, lv), lambda mu, lv: losses.gaussian_kl(mu, lv),
                                    lambda mu, lv: 1 / 0, lambda mu, lv: (_ for _ in ()).throw(SystemExit(3))])
def test_everything_swapped_is_restored_after_a_check(answer):
    before = _codes()
    had_lerp = "lerp" in torch.Tensor.__dict__
    try:
        checks.check_gaussian_kl(answer)
    except CheckFailed:
        pass
    checks.check_interpolate_latents(lambda a, b, n: a + torch.linspace(0, 1, n)[:, None] * (b - a))
    assert all(x is y for x, y in zip(before, _codes()))
    assert ("lerp" in torch.Tensor.__dict__) == had_lerp
    assert torch.lerp(torch.zeros(2), torch.ones(2), 0.5).tolist() == [0.5, 0.5]


def test_a_refusal_counts_even_when_the_learner_catches_it():
    def answer(mu, lv):
        try:
            return losses.gaussian_kl(mu, lv)
        except BaseException:  # noqa: BLE001
            return _kl(mu, lv)

    with pytest.raises(CheckFailed, match="calls vae_helpers.losses.gaussian_kl"):
        checks.check_gaussian_kl(answer)


def test_restoring_the_reference_from_inside_is_seen():
    saved = {"code": None}

    def answer(mu, lv):
        losses.gaussian_kl_per_dim.__code__ = saved["code"]  # put the real code back, then call it
        return losses.gaussian_kl(mu, lv)

    saved["code"] = losses.gaussian_kl_per_dim.__code__
    with pytest.raises(CheckFailed, match="changed the checker's or vae_helpers' own functions"):
        checks.check_gaussian_kl(answer)
    assert losses.gaussian_kl_per_dim.__code__ is saved["code"]


def test_clearing_the_guard_from_inside_is_seen():
    def answer(mu, lv):
        _guard._ACTIVE.clear()
        return _kl(mu, lv)

    with pytest.raises(CheckFailed, match="changed the checker's"):
        checks.check_gaussian_kl(answer)


_kept_code = losses.gaussian_kl.__code__


def test_a_saved_code_object_of_the_reference_is_refused():
    def answer(mu, lv):
        return types.FunctionType(_kept_code, losses.__dict__)(mu, lv)

    with pytest.raises(CheckFailed, match="calls vae_helpers.losses.gaussian_kl"):
        checks.check_gaussian_kl(answer)


def test_a_notebook_helper_that_calls_the_reference_is_refused():
    def helper(mu, lv):
        return losses.gaussian_kl_per_dim(mu, lv)

    def answer(mu, lv):
        return helper(mu, lv).sum(-1)

    with pytest.raises(CheckFailed, match="calls vae_helpers.losses.gaussian_kl_per_dim"):
        checks.check_gaussian_kl(answer)


def test_refuses_names_its_paths_and_allows_them_outside_the_checker():
    @refuses("losses.gaussian_kl", library={"torch.lerp": "no lerp"})
    def checker(fn):
        return checks.call_learner(fn)

    assert checker.refused["vae_helpers.losses.gaussian_kl"].startswith("your answer calls")
    with pytest.raises(CheckFailed, match="no lerp"):
        checker(lambda: torch.lerp(torch.zeros(1), torch.ones(1), 0.5))
    assert checks.call_learner(lambda: torch.lerp(torch.zeros(1), torch.ones(1), 0.5)).item() == 0.5


# ----------------------------------------------------------------------------- plain results


class _Agreeable(torch.Tensor):
    def __eq__(self, other):  # noqa: D105 - a result that claims to equal anything
        return torch.ones((), dtype=torch.bool)


class _AlwaysEqual(int):
    def __eq__(self, other):
        return True


def test_only_plain_tensors_and_ints_are_trusted():
    with pytest.raises(CheckFailed, match="should return a torch.Tensor"):
        plain_tensor(torch.zeros(2).as_subclass(_Agreeable), "f")
    with pytest.raises(CheckFailed, match="should return an int"):
        plain_int(_AlwaysEqual(3), "f")
    assert plain_int(torch.tensor(4), "f") == 4 and plain_int(5, "f") == 5
    with pytest.raises(CheckFailed, match="should return a torch.Tensor"):
        checks.check_gaussian_kl(lambda mu, lv: _kl(mu, lv).as_subclass(_Agreeable))
    with pytest.raises(CheckFailed, match="should return an int"):
        checks.check_active_units(lambda mu, t: _AlwaysEqual(int((mu.var(0) > t).sum())))


# ----------------------------------------------------------------------------- weights set by behaviour


def test_assignments_try_transposes_rows_and_both_orders_of_a_group():
    atoms = [[torch.randn(3, 5)], [torch.randn(2, 5)], [torch.randn(2, 5)], [torch.randn(4)]]
    model = nn.Module()
    model.w = nn.Parameter(torch.zeros(5, 3))  # the first atom transposed
    model.heads = nn.Parameter(torch.zeros(4, 5))  # atoms 1 and 2 stacked, either order
    model.b = nn.Parameter(torch.zeros(1, 4))  # a bias kept as a row
    found = list(assignments(model, atoms, groups=[(1, 2)]))
    assert len(found) == 2
    heads = [dict((id(p), v) for p, v in a)[id(model.heads)] for a in found]
    assert torch.equal(heads[0][:2], atoms[1][0]) and torch.equal(heads[1][:2], atoms[2][0])


def test_match_behaviour_fails_clearly_when_no_shape_fits():
    model = nn.Linear(4, 4)
    with pytest.raises(CheckFailed, match="cannot hold the layers"):
        match_behaviour(model, [[torch.randn(3, 5)]], (), lambda: [], [], "Mine")


@pytest.mark.parametrize("patch", [
    lambda: setattr(torch, "allclose", lambda *a, **k: True),
    lambda: setattr(torch.Tensor, "double", lambda self: torch.zeros(())),
    lambda: setattr(checks._core, "close", lambda *a, **k: True),
    lambda: setattr(torch.Tensor, "__eq__", lambda self, other: True),
])
def test_patching_torch_or_the_checkers_from_inside_is_seen_and_undone(patch):
    originals = (torch.allclose, torch.Tensor.__dict__.get("double"), checks._core.close, torch.Tensor.__eq__)

    def answer(mu, lv):
        patch()
        return torch.zeros(mu.shape[0])  # wrong on purpose: only the patch could make it pass

    with pytest.raises(CheckFailed, match="changed the checker's or vae_helpers' own functions"):
        checks.check_gaussian_kl(answer)
    assert (torch.allclose, torch.Tensor.__dict__.get("double"), checks._core.close, torch.Tensor.__eq__) == originals


def test_a_lazy_import_inside_the_answer_is_not_tampering():
    def answer(mu, lv):
        import torch.distributions.utils  # noqa: F401 - may add a module attribute
        return _kl(mu, lv)

    checks.check_gaussian_kl(answer)
