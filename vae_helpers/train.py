"""One training loop for every notebook: ``fit``, ``History``, seeding, devices and checkpoints.

Introduced in notebook 01. A loss function takes ``(model, x_batch)`` and returns a dict of named
scalar terms for the batch, one of which is ``"loss"`` (the quantity to minimise).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import hashlib
import io
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

from . import threads
from ._io import atomic_write_all
from ._progress import progress_bar, release

SNAPSHOT_COST_RATIO = 100  # fit snapshots the weights at most once per 100x the time a snapshot takes
LossFn = Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]]
Callback = Callable[[int, nn.Module, "History"], Any]


@dataclass
class History:
    """Per-epoch means of every loss term, for training and validation, plus seconds per epoch.

    Every list holds one value per epoch, in step with ``seconds``: an epoch without a value for a
    term (no validation set in that run, validation interrupted, a term added later) holds NaN there.
    """

    train: dict[str, list[float]] = field(default_factory=dict)
    val: dict[str, list[float]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        """Number of epochs recorded."""
        return len(self.seconds)

    def add_epoch(self, train: dict[str, float], val: dict[str, float] | None, seconds: float) -> None:
        """Append one epoch: every term of both splits gets a value, NaN where this epoch has none."""
        n = len(self.seconds)
        for split, values in ((self.train, train), (self.val, val or {})):
            for key in values:
                split.setdefault(key, [math.nan] * n)
            for key, column in split.items():
                column.extend([math.nan] * (n - len(column)))  # an older History that went out of step
                column.append(float(values.get(key, math.nan)))
        self.seconds.append(float(seconds))

    def last(self, name: str = "loss", split: str = "train") -> float:
        """The most recent epoch mean of term ``name`` in ``split`` ("train" or "val")."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        values = getattr(self, split).get(name)
        if not values:
            raise KeyError(f"no {split} values recorded for {name!r}; have {sorted(getattr(self, split))}")
        return values[-1]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (strict JSON: NaN, an epoch without a value, and any other non-finite value become None)."""
        def plain(split: dict[str, list[float]]) -> dict[str, list[float | None]]:
            return {k: [v if math.isfinite(v) else None for v in vs] for k, vs in split.items()}

        return {"train": plain(self.train), "val": plain(self.val), "seconds": list(self.seconds)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        """Inverse of ``to_dict``."""
        def floats(split: dict[str, list[float | None]]) -> dict[str, list[float]]:
            return {k: [math.nan if v is None else float(v) for v in vs] for k, vs in split.items()}

        return cls(train=floats(data.get("train", {})), val=floats(data.get("val", {})), seconds=list(data.get("seconds", [])))


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


def _model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without either)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _training_device(model: nn.Module, device: str | torch.device | None) -> tuple[torch.device, torch.device | None]:
    """Where ``fit`` trains and where it leaves the model: with ``device=None`` it trains on ``default_device()``
    and puts the model back where it was (so later cells call it with the tensors they have); with an explicit
    ``device`` it leaves the model there (the caller moves its tensors, as notebook 03 does)."""
    if device is None:
        return default_device(), _model_device(model)
    return _resolve_device(device), None


def _move_model(model: nn.Module, optimizer: torch.optim.Optimizer | None, device: torch.device) -> None:
    """Move the model and the optimizer's per-parameter state (Adam's moments) to ``device``."""
    model.to(device)
    if optimizer is None:
        return
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.device != param.device:
                state[key] = value.to(param.device)


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
        for key, value in terms.items():  # float64 sums on the CPU (MPS has no float64)
            sums[key] = sums.get(key, 0.0) + value.detach().cpu().double() * xb.shape[0]
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

    ``seed`` fixes only the order of the batches. The model's initial weights and any randomness in
    ``loss_fn`` or ``transform`` (the reparameterisation noise, stochastic binarisation) come from
    torch's global generator, so for two equal runs call ``seed_everything(seed)`` before building the
    model, and pass ``seed`` too.

    ``device=None`` trains on ``default_device()`` (CUDA, then MPS, then CPU) and, when training ends, puts the
    model back on the device it was on, so later code calls it with the tensors it has; an explicit ``device``
    leaves the model there.

    A non-finite loss stops training with ``FloatingPointError``; the model and the optimizer are then
    put back to the last state known to give a finite loss (snapshots are taken at the loop's existing
    sync points, spaced so that copying costs about 1 % of the time, with no extra wait for the device).
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
    _check_positive("lr", lr, "a positive number such as 1e-3")
    if clip_grad_norm is not None:
        _check_positive("clip_grad_norm", clip_grad_norm, "a positive number or None")
    if time_budget is not None:
        _check_positive("time_budget", time_budget, "a positive number of seconds or None")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")

    device, home = _training_device(model, device)
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
    # Non-finite guard: ``good`` holds weights and optimizer state known to give a finite loss;
    # ``pending`` (taken at a sync point, at most every SNAPSHOT_COST_RATIO x its own copying time so that
    # it costs ~1 % of training) becomes good once the loss of the next batch is seen to be finite.
    snap_start = time.perf_counter()
    good, pending, spare = _Snapshot().take(model, optimizer), None, _Snapshot()
    last_snap = time.perf_counter()
    snap_seconds = last_snap - snap_start
    tuner = threads.tuner_for(device)  # CPU thread count: the policy of vae_helpers.threads

    last_epoch = len(history) + num_epochs
    slot = f"fit-{id(model)}-{time.perf_counter()}"  # the epochs of this call share one progress line
    try:
        for epoch in range(len(history) + 1, last_epoch + 1):
            model.train()
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=generator).to(device)
            bar = progress_bar(n_batches, f"epoch {epoch}/{last_epoch}", progress, slot=slot)
            sizes: list[int] = []
            checked = 0
            done = 0
            for b in range(n_batches):
                tuner.tick(first=b == 0)
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
                    bad = _first_not_finite(records[checked:done, 0])
                    if bad is not None:
                        bar.close()
                        (pending if pending is not None and bad > 0 else good).restore(model, optimizer)
                        raise FloatingPointError(
                            f"the loss became {float(records[checked + bad, 0])} in epoch {epoch}, batch {checked + bad + 1}."
                            f" The model and optimizer hold the last weights that gave a finite loss. Try a lower"
                            f" learning rate than {lr:g}, gradient clipping (clip_grad_norm=...), or check the loss for log(0).")
                    if pending is not None:  # the loss of the batch after it was finite
                        good, spare, pending = pending, good, None
                    if time.perf_counter() - last_snap >= SNAPSHOT_COST_RATIO * snap_seconds:
                        snap_start = time.perf_counter()
                        pending, spare = spare.take(model, optimizer), None  # reuses the older snapshot's buffers
                        last_snap = time.perf_counter()
                        snap_seconds = last_snap - snap_start
                    checked = done
                    if progress:
                        bar.update(done - bar.n)
                        bar.set_postfix(loss=f"{_epoch_means(records[:done], sizes)[0]:.4g}")
                if out_of_time:
                    break
            bar.close()
            train_means = dict(zip(names, _epoch_means(records[:done], sizes)))
            val_means = None
            try:
                if val_x is not None:
                    val_means = evaluate(model, loss_fn, val_x)
            finally:  # also when validation is interrupted: the epoch was trained, so it is recorded
                history.add_epoch(train_means, val_means, time.perf_counter() - t0)
            if sched is not None:
                sched.step()
            if callback is not None:
                callback(epoch, model, history)
            if out_of_time:
                break
    finally:  # also when training stops early: leave the thread count where the tuner settled
        tuner.close()
        release(slot)
        if home is not None and home != device:
            _move_model(model, optimizer, home)
    model.eval()
    return history


def _epoch_means(records: torch.Tensor, sizes: list[int]) -> list[float]:
    """Means weighted by batch size of the recorded terms ``(batches, terms)`` -> one float per term.

    Summed in float64 on the CPU (one copy per epoch; MPS has no float64)."""
    weights = torch.tensor(sizes, dtype=torch.float64)  # (batches,)
    return (weights @ records.cpu().double() / sum(sizes)).tolist()


def _default_adam(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel (one pass over all parameters per step) where the device has one."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.Adam(model.parameters(), lr=lr)


def _check_positive(name: str, value: Any, expected: str) -> None:
    """Refuse bools, non-numbers, NaN, infinity and values <= 0, naming what was expected."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _first_not_finite(losses: torch.Tensor) -> int | None:
    """Index of the first non-finite value of ``losses`` ``(n,)``, or None (one read from the device)."""
    bad = (~torch.isfinite(losses)).nonzero()
    return int(bad[0, 0]) if bad.numel() else None


class _Snapshot:
    """A copy of a model's state and its optimizer's per-parameter state, refreshed in place on the device.

    ``take`` copies into buffers kept from the last time (no new memory, no wait for the device);
    ``restore`` copies them back. Used by ``fit`` to undo the steps after the last finite loss.
    """

    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}
        self.opt_state: dict[torch.Tensor, dict[str, Any]] = {}

    @staticmethod
    def _copy_into(buffer: Any, value: torch.Tensor) -> torch.Tensor:
        """``value`` copied into ``buffer`` when that fits, else into a fresh clone."""
        if (isinstance(buffer, torch.Tensor) and buffer.shape == value.shape and buffer.dtype == value.dtype
                and buffer.device == value.device):
            return buffer.copy_(value.detach())
        return value.detach().clone()

    @torch.no_grad()
    def take(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> "_Snapshot":
        """Copy the current state of ``model`` and ``optimizer`` into this snapshot."""
        self.weights = {k: self._copy_into(self.weights.get(k), v) for k, v in model.state_dict().items()}
        opt_state = {}
        for param, state in optimizer.state.items():
            old = self.opt_state.get(param, {})
            opt_state[param] = {key: self._copy_into(old.get(key), v) if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                                for key, v in state.items()}
        self.opt_state = opt_state
        return self

    @torch.no_grad()
    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Put this snapshot back into ``model`` and ``optimizer``."""
        model.load_state_dict(self.weights)
        for param in [p for p in optimizer.state if p not in self.opt_state]:
            del optimizer.state[param]  # it had no state yet when the snapshot was taken
        for param, saved in self.opt_state.items():
            state = optimizer.state[param]
            for key, value in saved.items():
                state[key] = self._copy_into(state.get(key), value) if isinstance(value, torch.Tensor) else copy.deepcopy(value)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_checkpoint(path: str | Path, model: nn.Module, *, config: Any = None, history: History | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Save ``model``'s weights to ``path`` and a JSON of metadata beside it (``path`` + ``.json``).

    Both files are replaced together or, when anything fails, neither is: the metadata is built and
    both are written to temporary files before either is renamed. The metadata holds the SHA-256 of
    the weights file, so ``load_checkpoint`` notices a pair that does not belong together.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history must be a vae_helpers.train.History or None, got {type(history).__name__}")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict of JSON values or None, got {type(extra).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a file path for the checkpoint, such as {path / 'model.pt'}")
    if config is not None and dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    weights = buffer.getvalue()
    meta = {
        "model_class": type(model).__name__,
        "config": config,
        "parameters": count_parameters(model),
        "shapes": {k: list(v.shape) for k, v in state.items()},
        "history": history.to_dict() if history is not None else None,
        "torch_version": torch.__version__,
        "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "extra": extra or {},
    }
    try:
        text = json.dumps(meta, indent=2, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"config and extra must hold only JSON values (str, int, float, bool, None, lists, dicts), "
                        f"not tensors or other objects: {err}. Nothing was written.") from None
    atomic_write_all({path: lambda f: f.write(weights), _meta_path(path): lambda f: f.write(text.encode())})
    return path


def load_checkpoint(path: str | Path, model: nn.Module, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load weights saved by ``save_checkpoint`` into ``model`` (safely, ``weights_only=True``); return the metadata."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a checkpoint file written by save_checkpoint")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    raw = path.read_bytes()
    if not raw:
        raise ValueError(f"{path} is empty (0 bytes): expected a checkpoint written by save_checkpoint; "
                         "perhaps a copy or a save was interrupted. Save it again")
    meta_file = _meta_path(path)
    try:
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_file} is not valid JSON ({err}); expected the metadata written by save_checkpoint") from None
    expected = meta.get("weights_sha256") if isinstance(meta, dict) else None
    if expected is not None and hashlib.sha256(raw).hexdigest() != expected:
        raise ValueError(f"{path.name} and {meta_file.name} do not belong together (the weights' SHA-256 differs from "
                         "the one in the metadata): a save was interrupted or one file was replaced. Save it again")
    try:
        state = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, corrupt, or holding pickled code
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable checkpoint ({len(raw)} bytes): expected weights written by "
                         f"save_checkpoint. PyTorch said: {first}") from err
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
