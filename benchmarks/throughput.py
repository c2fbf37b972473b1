"""Training throughput: pytorch/examples' MNIST VAE trained the ordinary way and with ``vae_helpers.train.fit``.

Both recipes train the same model (784-400-20-400-784, ReLU, Bernoulli pixels, Adam lr 1e-3,
batch 128) for the same number of steps from the same initial weights, alternating in one process
over several repetitions. ``--ablation`` adds the steps between them (in-memory batches, loss from
logits, no per-batch ``.item()``, fused Adam, thread count) so each change's share is visible;
``--profile`` adds the top operators of each recipe from ``torch.profiler``.

    python benchmarks/throughput.py --reps 5 --ablation --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import _common  # noqa: F401  (puts the repository on sys.path)
import torch
import torch.nn.functional as F
from _common import fmt, machine_info, markdown_table, median, write_results
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vae_helpers import losses, train
from vae_helpers.data import load_mnist
from vae_helpers.models import VAEBase, reparameterize

ORDINARY = "ordinary loop (a)"
FIT = "vae_helpers fit (b)"
TARGET_RATIO = 1.5
COLUMNS = ["method", "images/s (median)", "images/s (min-max)", "images per CPU-s", "ratio to (a)",
           "last-epoch loss", "% of matmul peak"]


class ExamplesVAE(VAEBase):
    """The VAE of pytorch/examples: x (B, 784) -> 400 ReLU -> mu, logvar (B, 20); z -> 400 ReLU -> logits (B, 784)."""

    def __init__(self, input_dim: int = 784, hidden_dim: int = 400, latent_dim: int = 20):
        super().__init__()
        self.latent_dim = latent_dim
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, latent_dim)
        self.fc22 = nn.Linear(hidden_dim, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, input_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 784) -> mu (B, 20), logvar (B, 20)``."""
        h = F.relu(self.fc1(x))
        return self.fc21(h), self.fc22(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, 20) -> logits (B, 784)``."""
        return self.fc4(F.relu(self.fc3(z)))


def train_flops_per_image(model: nn.Module) -> float:
    """Multiply-adds of one training step per image: 3 x the forward matmul FLOPs (2 per multiply-add)."""
    forward = sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    return 3.0 * forward


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 ``torch.matmul`` rate on two ``n x n`` matrices, in GFLOP/s, with the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


# ----------------------------------------------------------------------------- hand-written loops


@dataclass(frozen=True)
class Recipe:
    """How a hand-written loop batches, computes the loss, reads the loss back and steps Adam."""

    data_loader: bool = True  # DataLoader over a TensorDataset (else: slices of a permuted in-memory tensor)
    sigmoid_bce: bool = True  # sigmoid then F.binary_cross_entropy (else: BCE with logits, one kernel)
    item_every_batch: bool = True  # loss.item() every batch (else: accumulate on the device, read once)
    fused_adam: bool = False


def examples_loss(model: ExamplesVAE, x: torch.Tensor, sigmoid_bce: bool) -> torch.Tensor:
    """Negative ELBO summed over the batch, as pytorch/examples writes it: BCE(sum) + KL(sum)."""
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar)
    logits = model.decode(z)
    if sigmoid_bce:
        bce = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum")
    else:
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kl


def hand_loop(model: ExamplesVAE, x: torch.Tensor, recipe: Recipe, num_epochs: int, batch_size: int, lr: float,
              seed: int) -> list[float]:
    """Train with a hand-written loop; return the mean loss per image of each epoch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True if recipe.fused_adam else None)
    generator = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    if recipe.data_loader:
        loader = DataLoader(TensorDataset(x), batch_size=batch_size, shuffle=True, generator=generator)
    epoch_losses = []
    model.train()
    for _ in range(num_epochs):
        if recipe.data_loader:
            batches = (xb for (xb,) in loader)
        else:
            order = torch.randperm(n, generator=generator)
            batches = (x.index_select(0, order[i : i + batch_size]) for i in range(0, n, batch_size))
        total: float | torch.Tensor = 0.0
        for xb in batches:
            loss = examples_loss(model, xb, recipe.sigmoid_bce)
            optimizer.zero_grad()
            loss.backward()
            total = total + (loss.item() if recipe.item_every_batch else loss.detach())
            optimizer.step()
        epoch_losses.append(float(total) / n)
    return epoch_losses


def bce_logits_vae_loss(model: VAEBase, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``losses.vae_loss`` with the reconstruction term from F.binary_cross_entropy_with_logits (a proposal)."""
    mu, logvar = model.encode(x)
    logits = model.decode(reparameterize(mu, logvar))
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)  # (B,)
    kl = losses.gaussian_kl(mu, logvar)  # (B,)
    return {"loss": (rec + kl).mean(), "reconstruction": rec.mean(), "kl": kl.mean()}


def fit_loop(loss_fn: Callable = losses.vae_loss, plain_adam: bool = False, threads: int | None = None) -> Callable:
    """A runner that trains with ``train.fit`` (optionally with for-loop Adam or another thread count)."""

    def run(model: ExamplesVAE, x: torch.Tensor, num_epochs: int, batch_size: int, lr: float, seed: int) -> list[float]:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr) if plain_adam else None
        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            history = train.fit(model, loss_fn, x, num_epochs=num_epochs, batch_size=batch_size, lr=lr,
                                optimizer=optimizer, device="cpu", seed=seed, progress=False)
        finally:
            torch.set_num_threads(before)
        return history.train["loss"]

    return run


def methods(ablation: bool) -> dict[str, Callable]:
    """The recipes to time, by name: (a) and (b), plus the cumulative steps between them with ``ablation``."""
    def hand(recipe: Recipe) -> Callable:
        def run(model: ExamplesVAE, x: torch.Tensor, num_epochs: int, batch_size: int, lr: float, seed: int) -> list[float]:
            return hand_loop(model, x, recipe, num_epochs, batch_size, lr, seed)

        return run

    chosen = {ORDINARY: hand(Recipe())}
    if ablation:
        steps = [("a1: (a) + in-memory batches", {"data_loader": False}),
                 ("a2: a1 + BCE from logits", {"sigmoid_bce": False}),
                 ("a3: a2 + no per-batch .item()", {"item_every_batch": False}),
                 ("a4: a3 + fused Adam", {"fused_adam": True})]
        changes: dict[str, bool] = {}
        for name, change in steps:  # each step keeps the changes before it
            changes.update(change)
            chosen[name] = hand(Recipe(**changes))
    chosen[FIT] = fit_loop()
    if ablation:
        chosen["(b) with for-loop Adam"] = fit_loop(plain_adam=True)
        chosen["(b) with BCE-with-logits vae_loss"] = fit_loop(loss_fn=bce_logits_vae_loss)
        if torch.get_num_threads() > 1:
            chosen["(b) on 1 thread"] = fit_loop(threads=1)
    return chosen


# ----------------------------------------------------------------------------- measuring


def timed_run(run: Callable, x: torch.Tensor, num_epochs: int, batch_size: int, lr: float, seed: int) -> dict:
    """Train a freshly initialised ``ExamplesVAE`` (weights from ``seed``) with ``run``; time it."""
    torch.manual_seed(seed)
    model = ExamplesVAE()
    wall, cpu = time.perf_counter(), time.process_time()
    epoch_losses = run(model, x, num_epochs, batch_size, lr, seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = num_epochs * x.shape[0]
    return {"seconds": wall, "cpu_seconds": cpu, "images": images, "images_per_s": images / wall,
            "images_per_cpu_s": images / cpu, "epoch_losses": epoch_losses}


def profile_table(run: Callable, x: torch.Tensor, batch_size: int, rows: int = 12) -> str:
    """torch.profiler's operators by self CPU time for one epoch of ``run`` over ``x``."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = ExamplesVAE()
    run(model, x[: 4 * batch_size], 1, batch_size, 1e-3, 0)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(model, x, 1, batch_size, 1e-3, 0)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)


THREAD_SETTINGS = {  # name -> (environment for a child process, extra arguments)
    "torch default threads": ({}, []),
    "OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "1 thread": ({"OMP_NUM_THREADS": "1"}, ["--threads", "1"]),
}


def thread_study(args: argparse.Namespace) -> list[list[str]]:
    """Time (a) and (b) in child processes under each of ``THREAD_SETTINGS`` (OpenMP reads its settings at start-up)."""
    rows = []
    for name, (env, extra) in THREAD_SETTINGS.items():
        with tempfile.TemporaryDirectory(prefix="vae-bench-threads-") as tmp:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--reps", str(args.study_reps), "--epochs", "1",
                   "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--peak-size", str(args.peak_size),
                   "--out", tmp, *extra]
            if args.limit is not None:
                cmd += ["--limit", str(args.limit)]
            done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
            if done.returncode != 0:
                rows.append([name, "-", "-", "-", f"failed: {done.stderr.strip().splitlines()[-1:]}"])
                continue
            child = json.loads((Path(tmp) / "throughput.json").read_text())
        rate = {m: median([r["images_per_s"] for r in child["runs"][m]]) for m in (ORDINARY, FIT)}
        rows.append([name, fmt(rate[ORDINARY], 0), fmt(rate[FIT], 0), f"{child['ratio']:.2f}x",
                     str(child["machine"]["torch_threads"])])
        print(f"threads: {name:<28} (a) {rate[ORDINARY]:7.0f}  (b) {rate[FIT]:7.0f} images/s", flush=True)
    return rows


def summarise(runs: dict[str, list[dict]], peak_gflops: float, flops_per_image: float) -> list[list[str]]:
    """One table row per method: medians over repetitions, ratio to (a) per repetition, share of the peak."""
    rows = []
    for name, results in runs.items():
        rates = [r["images_per_s"] for r in results]
        ratios = [r["images_per_s"] / a["images_per_s"] for r, a in zip(results, runs[ORDINARY])]
        rate = median(rates)
        rows.append([name, fmt(rate, 0), f"{min(rates):.0f}-{max(rates):.0f}",
                     fmt(median([r["images_per_cpu_s"] for r in results]), 0), f"{median(ratios):.2f}x",
                     fmt(median([r["epoch_losses"][-1] for r in results]), 2),
                     fmt(100 * rate * flops_per_image / (peak_gflops * 1e9), 1)])
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each method (alternating order)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed run")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--ablation", action="store_true", help="also time the steps between (a) and (b)")
    parser.add_argument("--profile", action="store_true", help="add torch.profiler tables of (a) and (b)")
    parser.add_argument("--thread-study", action="store_true",
                        help="also time (a) and (b) in child processes with other OpenMP/thread settings")
    parser.add_argument("--study-reps", type=int, default=3, help="repetitions per setting in --thread-study")
    parser.add_argument("--peak-size", type=int, default=2048, help="matrix size of the matmul peak measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.epochs < 1 or args.study_reps < 1:
        parser.error("--reps, --epochs and --study-reps must be at least 1")
    return args


def measure(args: argparse.Namespace, x: torch.Tensor, chosen: dict[str, Callable]) -> tuple[dict[str, list[dict]], float]:
    """Every method ``args.reps`` times, alternating the order; return the runs and the matmul peak (GFLOP/s)."""
    peak = matmul_peak_gflops(args.peak_size)
    for run in chosen.values():  # warm-up: first calls pay for lazy initialisation
        run(ExamplesVAE(), x[: 8 * args.batch_size], 1, args.batch_size, args.lr, args.seed)
    runs: dict[str, list[dict]] = {name: [] for name in chosen}
    names = list(chosen)
    for rep in range(args.reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            result = timed_run(chosen[name], x, args.epochs, args.batch_size, args.lr, args.seed + rep)
            runs[name].append(result)
            print(f"rep {rep + 1}/{args.reps}  {name:<40} {result['images_per_s']:8.0f} images/s  "
                  f"loss {result['epoch_losses'][-1]:.2f}", flush=True)
    return runs, max(peak, matmul_peak_gflops(args.peak_size))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    x, _ = load_mnist("train", limit=args.limit)
    chosen = methods(args.ablation)
    flops_per_image = train_flops_per_image(ExamplesVAE())
    runs, peak = measure(args, x, chosen)

    rows = summarise(runs, peak, flops_per_image)
    ratios = [b["images_per_s"] / a["images_per_s"] for a, b in zip(runs[ORDINARY], runs[FIT])]
    ratio = median(ratios)
    curve_a = [median([r["epoch_losses"][e] for r in runs[ORDINARY]]) for e in range(args.epochs)]
    curve_b = [median([r["epoch_losses"][e] for r in runs[FIT]]) for e in range(args.epochs)]
    max_rel_diff = max(abs(a - b) / abs(a) for a, b in zip(curve_a, curve_b))
    fraction = median([r["images_per_s"] for r in runs[FIT]]) * flops_per_image / (peak * 1e9)
    steps = args.epochs * -(-x.shape[0] // args.batch_size)

    md = [
        f"Model: pytorch/examples' VAE 784-400-20-400-784 ({train.count_parameters(ExamplesVAE()):,} parameters), "
        f"Adam lr {args.lr:g}, batch {args.batch_size}, {x.shape[0]:,} MNIST images, {args.epochs} epoch(s) = "
        f"{steps} steps per run, {args.reps} repetitions, alternating order, torch threads: {torch.get_num_threads()}.",
        f"Training cost counted as 3 x forward matmul FLOPs = {flops_per_image / 1e6:.2f} MFLOP per image; "
        f"measured fp32 matmul peak ({args.peak_size} x {args.peak_size}): {peak:.1f} GFLOP/s.",
        "",
        markdown_table(COLUMNS, rows),
        "",
        ("Rows a1-a4 add fit's changes to the ordinary loop one at a time; the '(b) with ...' rows undo one of "
         "fit's choices or swap the loss. " if args.ablation else "")
        + "(a) minimises the batch sum of the loss as pytorch/examples does, (b) the batch mean; Adam's update "
        "does not depend on that scale (up to its eps), so both follow the same maths.",
        "",
        f"**fit / ordinary loop (median of per-repetition ratios): {ratio:.2f}x** (target >= {TARGET_RATIO}x: "
        f"{'met' if ratio >= TARGET_RATIO else 'MISSED'}); per repetition: "
        f"{', '.join(f'{r:.2f}x' for r in ratios)}. fit reaches {100 * fraction:.1f}% of the matmul peak.",
        "",
        "Loss per image by epoch (median over repetitions; same maths, same number of steps):",
        "",
        markdown_table(["epoch", "(a) loss", "(b) loss", "relative difference"],
                       [[e + 1, fmt(a, 2), fmt(b, 2), f"{100 * abs(a - b) / abs(a):.2f}%"]
                        for e, (a, b) in enumerate(zip(curve_a, curve_b))]),
    ]
    profiles = {}
    if args.profile:
        for name in (ORDINARY, FIT):
            profiles[name] = profile_table(chosen[name], x[: 40 * args.batch_size], args.batch_size)
            md += ["", f"<details><summary>torch.profiler, {name}, 40 batches</summary>", "", "```",
                   profiles[name], "```", "", "</details>"]
    study = thread_study(args) if args.thread_study else []
    if study:
        md += ["", "Thread settings (each in a fresh process, since OpenMP reads them at start-up; "
               f"{args.study_reps} alternating repetitions of one epoch):", "",
               markdown_table(["setting", "(a) images/s", "(b) images/s", "ratio", "torch threads"], study)]
    data = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}, "columns": COLUMNS,
            "rows": rows, "ratio": ratio, "target_ratio": TARGET_RATIO, "peak_gflops": peak,
            "flops_per_image": flops_per_image, "fit_fraction_of_peak": fraction,
            "loss_curve": {"a": curve_a, "b": curve_b, "max_relative_difference": max_rel_diff},
            "runs": runs, "profiles": profiles, "thread_study": study}
    write_results(args.out, "throughput", data, "\n".join(md), echo="\n".join(md[:8]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
