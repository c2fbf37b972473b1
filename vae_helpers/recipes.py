"""The series' one recipe for "the 20-D VAE": model, optimiser, schedule, data and evaluation.

Notebooks 02, 03 and 04 train and measure the same baseline with these settings, so that the
baseline has one number in the series; a notebook that changes something says what it changed.

    recipe = recipes.VAE_20D
    model, history = recipes.train_vae(x_train, recipe, num_epochs=recipe.num_epochs, seed=1)
    x_eval = recipes.evaluation_set(x_test_grey, recipe)
    nll = recipes.test_nll(model, x_eval, recipe)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from . import data, losses, train
from .models import VAE, VAEConfig

SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class VAERecipe:
    """Every setting that defines the baseline VAE: sizes, Adam's learning rates, schedule, batches, evaluation."""

    latent_dim: int = 20
    hidden_dim: int = 500
    depth: int = 2
    lr: float = 1e-3
    final_lr: float = 1e-4
    schedule: str = "cosine"
    batch_size: int = 128
    num_epochs: int = 12
    eval_size: int = 2_000
    eval_k: int = 100
    eval_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("latent_dim", "hidden_dim", "depth", "batch_size", "num_epochs", "eval_size", "eval_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("lr", "final_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.final_lr > self.lr:
            raise ValueError(f"final_lr ({self.final_lr}) must not exceed lr ({self.lr})")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if isinstance(self.eval_seed, bool) or not isinstance(self.eval_seed, int):
            raise TypeError(f"eval_seed must be an int, got {self.eval_seed!r}")

    def model_config(self) -> VAEConfig:
        """The ``VAEConfig`` of this recipe (Bernoulli decoder, 784 pixels)."""
        return VAEConfig(latent_dim=self.latent_dim, hidden_dim=self.hidden_dim, depth=self.depth)

    def with_(self, **changes: Any) -> VAERecipe:
        """A copy with some settings changed, e.g. ``VAE_20D.with_(schedule="constant")``."""
        return replace(self, **changes)


VAE_20D = VAERecipe()


def _check_recipe(recipe: Any) -> None:
    if not isinstance(recipe, VAERecipe):
        raise TypeError(f"recipe must be a VAERecipe such as recipes.VAE_20D, got {type(recipe).__name__}")


def build_vae(recipe: VAERecipe = VAE_20D) -> VAE:
    """A freshly initialised MLP VAE with the recipe's sizes."""
    _check_recipe(recipe)
    return VAE(recipe.model_config())


def lr_schedule(recipe: VAERecipe, num_epochs: int) -> Callable[[torch.optim.Optimizer], Any] | None:
    """The scheduler factory for ``train.fit`` (cosine from ``lr`` to ``final_lr`` over ``num_epochs``), or None."""
    _check_recipe(recipe)
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"num_epochs must be a positive int, got {num_epochs!r}")
    if recipe.schedule == "constant":
        return None
    final_lr = recipe.final_lr
    return lambda optimizer: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_epochs, eta_min=final_lr)


def train_vae(
    x_train: torch.Tensor,
    recipe: VAERecipe = VAE_20D,
    *,
    num_epochs: int | None = None,
    seed: int = 1,
    build: Callable[[VAERecipe], torch.nn.Module] | None = None,
    loss_fn: Callable[..., dict[str, torch.Tensor]] = losses.vae_loss,
    **fit_kwargs: Any,
) -> tuple[torch.nn.Module, train.History]:
    """Seed, build and train with the recipe; grey ``x_train`` (N, 784) is binarised afresh each epoch.

    ``build(recipe)`` makes the model after seeding (default: ``build_vae``), so a variant such as a flow VAE
    trains with the same settings: ``build=lambda r: FlowVAE(FlowVAEConfig(latent_dim=r.latent_dim, ...))``
    with its own ``loss_fn``. Returns ``(model, history)``. ``fit_kwargs`` go to ``train.fit`` (``val_x``,
    ``callback``, ``progress``, ``time_budget``...).
    """
    _check_recipe(recipe)
    epochs = recipe.num_epochs if num_epochs is None else num_epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"num_epochs must be a positive int, got {epochs!r}")
    for name in ("lr", "batch_size", "scheduler", "transform", "optimizer", "seed"):
        if name in fit_kwargs:
            raise TypeError(f"{name} is set by the recipe; change the recipe with recipe.with_(...) instead")
    train.seed_everything(seed)
    if build is not None and not callable(build):
        raise TypeError("build must be a callable recipe -> model, e.g. recipes.build_vae")
    model = (build or build_vae)(recipe)
    history = train.fit(model, loss_fn, x_train, num_epochs=epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                        scheduler=lr_schedule(recipe, epochs), transform=data.stochastic_binarize, seed=seed,
                        **fit_kwargs)
    return model, history


def evaluation_set(x_test: torch.Tensor, recipe: VAERecipe = VAE_20D, size: int | None = None) -> torch.Tensor:
    """The first ``size`` (default ``recipe.eval_size``) grey test images, binarised once with ``eval_seed``. (N, 784) -> (size, 784)."""
    _check_recipe(recipe)
    if not isinstance(x_test, torch.Tensor) or x_test.dim() != 2:
        raise TypeError("x_test must be a (N, 784) tensor of grey test images")
    n = recipe.eval_size if size is None else size
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"size must be a positive int, got {n!r}")
    generator = torch.Generator().manual_seed(recipe.eval_seed)
    return data.stochastic_binarize(x_test[:n], generator=generator)


def test_nll(model: torch.nn.Module, x_eval: torch.Tensor, recipe: VAERecipe = VAE_20D, k: int | None = None,
             progress: bool = True) -> float:
    """The recipe's test number: -IWAE bound with ``k`` (default ``recipe.eval_k``) samples, averaged over ``x_eval``, in nats."""
    _check_recipe(recipe)
    with torch.no_grad():
        return -losses.iwae_bound(model, x_eval, k=recipe.eval_k if k is None else k, progress=progress).mean().item()


test_nll.__test__ = False  # type: ignore[attr-defined]
