"""One training loop for every notebook: ``fit``, ``History``, seeding, devices and checkpoints.

Introduced in notebook 01. A loss function takes ``(model, x_batch)`` and returns a dict of named
scalar terms for the batch, one of which is ``"loss"`` (the quantity to minimise).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ._io import atomic_write
from ._progress import progress_bar

LossFn = Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]]
Callback = Callable[[int, nn.Module, "History"], Any]


@dataclass
class History:
    """Per-epoch means of every loss term, for training and validation, plus seconds per epoch."""

    train: dict[str, list[float]] = field(default_factory=dict)
    val: dict[str, list[float]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        """Number of epochs recorded."""
        return len(self.seconds)

    def last(self, name: str = "loss", split: str = "train") -> float:
        """The most recent epoch mean of term ``name`` in ``split`` ("train" or "val")."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        values = getattr(self, split).get(name)
        if not values:
            raise KeyError(f"no {split} values recorded for {name!r}; have {sorted(getattr(self, split))}")
        return values[-1]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        """Inverse of ``to_dict``."""
        return cls(train=dict(data.get("train", {})), val=dict(data.get("val", {})), seconds=list(data.get("seconds", [])))


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; return a ``torch.Generator`` seeded the same way."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def default_device() -> torch.device:
    """CUDA if available, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return default_device()
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str, torch.device or None, got {type(device).__name__}")
    return torch.device(device)


def _check_data(name: str, x: Any) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of examples (N, ...), got {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one example along dim 0, got shape {tuple(x.shape)}")


def _check_terms(terms: Any) -> None:
    if not isinstance(terms, dict) or "loss" not in terms:
        raise TypeError("the loss function must return a dict of scalar tensors that includes 'loss'")
    for key, value in terms.items():
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            raise TypeError(f"loss term {key!r} must be a scalar tensor (mean over the batch), got {value!r:.60}")


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
    """Mean of every loss term over ``x`` (N, ...), in eval mode and without gradients."""
    _check_data("x", x)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device)
        terms = loss_fn(model, xb)
        _check_terms(terms)
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + value.detach().double() * xb.shape[0]
    model.train(was_training)
    return {key: float(total) / x.shape[0] for key, total in sums.items()}


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    train_x: torch.Tensor,
    *,
    val_x: torch.Tensor | None = None,
    num_epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    clip_grad_norm: float | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    callback: Callback | None = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    time_budget: float | None = None,
    progress: bool = True,
    history: History | None = None,
) -> History:
    """Train ``model`` by minimising ``loss_fn(model, x_batch)["loss"]`` with mini-batches from ``train_x``.

    Batches are slices of an in-memory tensor under a fresh permutation each epoch (the last batch
    may be smaller). ``transform`` is applied to each training batch (e.g. stochastic
    binarisation, so every epoch sees a new draw). ``optimizer`` defaults to Adam (its fused
    kernel where the device has one). ``scheduler`` builds a learning-rate scheduler
    from the optimizer and is stepped once per epoch. ``callback(epoch, model, history)`` runs
    after each epoch. ``time_budget`` (seconds) stops training after the batch that exceeds it.
    Returns the ``History`` (extended in place when one is passed in).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable as loss_fn(model, x_batch) -> dict of terms")
    _check_data("train_x", train_x)
    if val_x is not None:
        _check_data("val_x", val_x)
    for name, value in (("num_epochs", num_epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "num_epochs" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'num_epochs' else 'positive'} int, got {value!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be positive or None, got {clip_grad_norm!r}")
    if time_budget is not None and not time_budget > 0:
        raise ValueError(f"time_budget must be a positive number of seconds or None, got {time_budget!r}")

    device = _resolve_device(device)
    model.to(device)
    train_x = train_x.to(device)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**31 - 1, (1,)).item()))
    if optimizer is None:
        optimizer = _default_adam(model, lr)
    sched = scheduler(optimizer) if scheduler is not None else None
    history = history if history is not None else History()
    n = train_x.shape[0]
    n_batches = math.ceil(n / batch_size)
    started = time.perf_counter()
    sync_every = max(1, n_batches // 20)
    out_of_time = False
    # The loop never waits for a value from the device per batch: the terms of each batch go into
    # one row of ``records`` (batch, term) and are read back only every ``sync_every`` batches.
    names: list[str] = []
    records = torch.empty(0)

    for epoch in range(len(history) + 1, len(history) + num_epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(device)
        bar = progress_bar(n_batches, f"epoch {epoch}", progress)
        sizes: list[int] = []
        checked = 0
        done = 0
        for b in range(n_batches):
            xb = train_x.index_select(0, order[b * batch_size : (b + 1) * batch_size])
            if transform is not None:
                xb = transform(xb)
            terms = loss_fn(model, xb)
            if not names:
                _check_terms(terms)
                names = ["loss"] + [key for key in terms if key != "loss"]
            elif terms.keys() != set(names):
                raise TypeError(f"the loss function returned the terms {sorted(terms)} after {sorted(names)}; "
                                "it must return the same terms for every batch")
            if b == 0:
                records = torch.empty(n_batches, len(names), dtype=terms["loss"].dtype, device=terms["loss"].device)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            torch.stack([terms[key].detach() for key in names], out=records[b])
            sizes.append(xb.shape[0])
            done = b + 1
            out_of_time = time_budget is not None and time.perf_counter() - started > time_budget
            if done % sync_every == 0 or done == n_batches or out_of_time:
                _raise_if_not_finite(records[checked:done, 0], epoch, checked, lr)
                checked = done
                if progress:
                    bar.update(done - bar.n)
                    bar.set_postfix(loss=f"{_epoch_means(records[:done], sizes)[0]:.4g}")
            if out_of_time:
                break
        bar.close()
        for key, value in zip(names, _epoch_means(records[:done], sizes)):
            history.train.setdefault(key, []).append(value)
        if val_x is not None:
            for key, value in evaluate(model, loss_fn, val_x).items():
                history.val.setdefault(key, []).append(value)
        if sched is not None:
            sched.step()
        history.seconds.append(time.perf_counter() - t0)
        if callback is not None:
            callback(epoch, model, history)
        if out_of_time:
            break
    model.eval()
    return history


def _epoch_means(records: torch.Tensor, sizes: list[int]) -> list[float]:
    """Means weighted by batch size of the recorded terms ``(batches, terms)`` -> one float per term."""
    weights = torch.tensor(sizes, dtype=torch.float64, device=records.device)  # (batches,)
    return (weights @ records.double() / sum(sizes)).tolist()


def _default_adam(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel (one pass over all parameters per step) where the device has one."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.Adam(model.parameters(), lr=lr)


def _raise_if_not_finite(losses: torch.Tensor, epoch: int, offset: int, lr: float) -> None:
    bad = (~torch.isfinite(losses)).nonzero()
    if bad.numel():
        batch = offset + int(bad[0, 0]) + 1
        raise FloatingPointError(
            f"the loss became {float(losses[int(bad[0, 0])])} in epoch {epoch}, batch {batch}. "
            f"Try a lower learning rate than {lr:g}, gradient clipping (clip_grad_norm=...), or check the loss for log(0)."
        )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_checkpoint(path: str | Path, model: nn.Module, *, config: Any = None, history: History | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Save ``model``'s weights to ``path`` and a JSON of metadata beside it (``path`` + ``.json``), atomically."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if config is not None and dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    meta = {
        "model_class": type(model).__name__,
        "config": config,
        "parameters": count_parameters(model),
        "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
        "history": history.to_dict() if history is not None else None,
        "torch_version": torch.__version__,
        "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "extra": extra or {},
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda f: torch.save(state, f))
    atomic_write(_meta_path(path), lambda f: f.write(json.dumps(meta, indent=2).encode()))
    return path


def load_checkpoint(path: str | Path, model: nn.Module, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load weights saved by ``save_checkpoint`` into ``model`` (safely, ``weights_only=True``); return the metadata."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    meta_file = _meta_path(path)
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        saved = f"{meta.get('model_class', '?')} with config {meta.get('config')}" if meta else "an unknown model"
        raise ValueError(
            f"checkpoint {path.name} does not match this {type(model).__name__}: it was saved from {saved}. "
            + (f"Missing keys: {missing[:5]}. " if missing else "")
            + (f"Unexpected keys: {unexpected[:5]}. " if unexpected else "")
            + (f"Shape mismatches: {wrong[:5]}. " if wrong else "")
            + "Build the model with the same config before loading."
        )
    model.load_state_dict(state)
    return meta


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")
