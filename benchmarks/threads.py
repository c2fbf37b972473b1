"""Training on a busy CPU: epoch time of ``fit`` quiet and beside busy processes, for each thread policy (issue 16).

A *busy process* is a pure-Python spin loop in a process of its own (one core's worth of load, like a
browser tab or a video call), started and killed by this script. Every measurement trains the
784-400-20 VAE (batch 128) in a fresh Python process with ``VAE_THREADS`` set to the policy:
``auto`` (vae_helpers' default, the tuner in ``fit``) or ``torch`` (PyTorch's plain setting). The
epoch time of a run is the median of its epochs; a row gives the median over repetitions. Notebook
02 is also run whole in full mode (``benchmarks/notebooks.py``, a child process with
``vae_helpers.runner``), quiet and beside one busy process.

    python benchmarks/threads.py                  # the real run: about 25 min on a quiet 2-core CPU
    python benchmarks/threads.py --quick          # about 5 min: fewer images, one repetition, notebook 02 fast
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from _common import fmt, machine_info, markdown_table, median, write_results

HERE = Path(__file__).resolve().parent
NOTEBOOK = _common.ROOT / "notebooks" / "02_vae.ipynb"
POLICIES = ("auto", "torch")
BUSY_TARGET = 1.5  # beside one busy process, an epoch takes at most this times its quiet time
QUIET_TARGET = 1.10  # quiet, the default policy is at most this times slower than torch's plain setting
NOTEBOOK_BUDGET_S = {"full": 300, "fast": 90}  # notebook 02's budgets (benchmarks/notebooks.py)
COLUMNS = ["policy", "busy processes", "epoch s (median)", "repetitions (min-max)", "x its quiet time",
           "x torch quiet", "threads at epoch ends", "load avg at start"]
SPIN = "while True:\n    pass\n"


class _Stop(Exception):
    """Raised by the child's callback when its time cap is reached."""


def child_main(args: argparse.Namespace) -> int:
    """Train in this (fresh) process under ``$VAE_THREADS``; print one ``RESULT {json}`` line."""
    import torch

    from vae_helpers import losses, models, threads, train
    from vae_helpers.data import load_mnist

    x, _ = load_mnist("train", limit=args.limit)
    torch.manual_seed(args.seed)
    model = models.VAE(models.VAEConfig(latent_dim=20, hidden_dim=400))
    history, used = train.History(), []
    start = time.perf_counter()

    def after_epoch(epoch: int, model: torch.nn.Module, history: train.History) -> None:
        used.append(torch.get_num_threads())
        print(f"  epoch {epoch}: {history.seconds[-1]:.2f} s on {used[-1]} thread(s)", flush=True)
        if time.perf_counter() - start > args.cap:
            raise _Stop

    try:
        train.fit(model, losses.vae_loss, x, num_epochs=args.epochs, batch_size=128, device="cpu", seed=args.seed,
                  progress=False, callback=after_epoch, history=history)
    except _Stop:
        pass
    report = {"policy": str(threads.thread_policy()), "epoch_seconds": history.seconds, "threads": used,
              "epoch_median": median(history.seconds), "images": int(x.shape[0])}
    print("RESULT " + json.dumps(report), flush=True)
    return 0


def start_busy(count: int) -> list[subprocess.Popen]:
    """``count`` processes that each keep one core busy (a Python spin loop)."""
    return [subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for _ in range(count)]


def stop_busy(procs: list[subprocess.Popen]) -> None:
    """Kill the spin processes started by ``start_busy`` and reap them."""
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def run_child(policy: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One fresh training process under ``VAE_THREADS=policy``; its report (or an error)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--epochs", str(args.epochs), "--cap",
           str(args.cap), "--seed", str(seed)] + (["--limit", str(args.limit)] if args.limit else [])
    env = {**os.environ, "VAE_THREADS": policy, "PYTHONUNBUFFERED": "1"}
    load = load_average()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=_common.ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        raise RuntimeError(f"the training child ({policy}) exited with {done.returncode}: {tail}")
    return {**json.loads(lines[-1][len("RESULT "):]), "load_at_start": load}


def run_notebook(mode: str, busy: int, timeout: int) -> dict[str, Any]:
    """Notebook 02 through ``benchmarks/notebooks.py`` (its own child process) beside ``busy`` spin processes."""
    procs = start_busy(busy)
    load = load_average()
    try:
        with tempfile.TemporaryDirectory(prefix="vae-bench-threads-") as tmp:
            cmd = [sys.executable, str(HERE / "notebooks.py"), str(NOTEBOOK), "--modes", mode, "--timeout",
                   str(timeout), "--out", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=_common.ROOT)
            result_file = Path(tmp) / "notebooks.json"
            if done.returncode != 0 or not result_file.is_file():
                tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
                return {"mode": mode, "busy": busy, "seconds": None, "error": f"exit {done.returncode}: {tail}"[:300],
                        "load_at_start": load}
            result = json.loads(result_file.read_text())["results"][0]
    finally:
        stop_busy(procs)
    return {"mode": mode, "busy": busy, "seconds": result["seconds"], "error": result.get("error"),
            "headline": result.get("headline"), "load_at_start": load}


def summarise(runs: list[dict[str, Any]], policies: list[str], levels: list[int]) -> tuple[list[list[str]], dict]:
    """Table rows (one per policy and busy level) and the medians ``{(policy, busy): seconds}``."""
    medians = {(p, b): median([r["epoch_median"] for r in runs if r["policy_name"] == p and r["busy"] == b])
               for p in policies for b in levels if any(r["policy_name"] == p and r["busy"] == b for r in runs)}
    rows = []
    for (policy, busy), seconds in medians.items():
        own = [r for r in runs if r["policy_name"] == policy and r["busy"] == busy]
        reps = [r["epoch_median"] for r in own]
        quiet = medians.get((policy, 0))
        torch_quiet = medians.get(("torch", 0))
        counts = sorted({n for r in own for n in r["threads"]})
        rows.append([policy, busy, fmt(seconds, 2), f"{min(reps):.2f}-{max(reps):.2f}",
                     f"{seconds / quiet:.2f}x" if quiet else "-",
                     f"{seconds / torch_quiet:.2f}x" if torch_quiet else "-",
                     ", ".join(map(str, counts)) or "-", fmt(median([r["load_at_start"] for r in own]), 2)])
    return rows, medians


def targets(medians: dict, notebook: list[dict[str, Any]]) -> tuple[list[list[str]], list[str]]:
    """Rows (target, measured, status) and the texts of missed targets."""
    rows, missed = [], []

    def add(target: str, measured: str, ok: bool | None) -> None:
        state = "not measured" if ok is None else "met" if ok else "MISSED"
        rows.append([target, measured, state])
        if ok is False:
            missed.append(f"{target}: measured {measured}")

    auto_quiet, auto_busy, torch_quiet = (medians.get(k) for k in (("auto", 0), ("auto", 1), ("torch", 0)))
    if auto_quiet and auto_busy:
        ratio = auto_busy / auto_quiet
        add(f"beside one busy process, an epoch <= {BUSY_TARGET}x its quiet time (default policy)",
            f"{ratio:.2f}x ({auto_busy:.2f} s against {auto_quiet:.2f} s)", ratio <= BUSY_TARGET)
    if auto_quiet and torch_quiet:
        ratio = auto_quiet / torch_quiet
        add(f"quiet, the default policy <= {QUIET_TARGET:.2f}x torch's plain setting",
            f"{ratio:.2f}x ({auto_quiet:.2f} s against {torch_quiet:.2f} s)", ratio <= QUIET_TARGET)
    for nb in notebook:
        if nb["busy"] == 1:
            budget = NOTEBOOK_BUDGET_S[nb["mode"]]
            seconds = nb["seconds"]
            measured = f"{seconds:.0f} s" if seconds is not None and not nb.get("error") else f"failed: {nb['error']}"
            add(f"notebook 02 in {nb['mode']} mode beside one busy process <= {budget} s", measured,
                seconds is not None and not nb.get("error") and seconds <= budget)
    return rows, missed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="about 5 minutes: --limit 20000 --epochs 3 --reps 1 --busy 0,1 --cap 60 --notebook fast")
    parser.add_argument("--reps", type=int, default=3, help="fresh processes per policy and busy level")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per process (its epoch time is their median)")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images (default: all 60 000)")
    parser.add_argument("--busy", default="0,1,2", help="comma list of how many busy processes run beside training")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma list of VAE_THREADS values to compare")
    parser.add_argument("--cap", type=float, default=240.0,
                        help="a training process starts no new epoch after this many seconds")
    parser.add_argument("--notebook", default="full", choices=("full", "fast", "none"),
                        help="run notebook 02 in this mode, quiet and beside one busy process")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per notebook cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.limit, args.epochs, args.reps, args.busy, args.cap, args.notebook = 20000, 3, 1, "0,1", 60.0, "fast"
    if args.reps < 1 or args.epochs < 1 or args.cap <= 0:
        parser.error("--reps and --epochs must be at least 1 and --cap positive")
    try:
        args.levels = sorted({int(b) for b in args.busy.split(",") if b.strip()})
    except ValueError:
        parser.error("--busy takes a comma list of non-negative integers, e.g. 0,1,2")
    if not args.levels or min(args.levels) < 0:
        parser.error("--busy takes a comma list of non-negative integers, e.g. 0,1,2")
    args.policy_list = [p.strip() for p in args.policies.split(",") if p.strip()]
    from vae_helpers.threads import parse_policy  # the same check the package applies to VAE_THREADS

    for policy in args.policy_list:
        try:
            parse_policy(policy)
        except (TypeError, ValueError) as err:
            parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    runs: list[dict[str, Any]] = []
    for busy in args.levels:
        procs = start_busy(busy)
        try:
            time.sleep(1.0 if busy else 0.0)
            for rep in range(args.reps):
                order = args.policy_list if rep % 2 == 0 else args.policy_list[::-1]
                for policy in order:
                    run = run_child(policy, args, seed=args.seed + rep)
                    runs.append({**run, "policy_name": policy, "busy": busy, "rep": rep})
                    print(f"busy {busy}  {policy:<6} rep {rep + 1}/{args.reps}: epoch {run['epoch_median']:.2f} s "
                          f"(epochs {', '.join(f'{s:.1f}' for s in run['epoch_seconds'])}; threads {run['threads']})",
                          flush=True)
        finally:
            stop_busy(procs)
    notebook = []
    if args.notebook != "none":
        for busy in (0, 1):
            nb = run_notebook(args.notebook, busy, args.timeout)
            notebook.append(nb)
            shown = f"{nb['seconds']:.0f} s" if nb["seconds"] is not None else nb["error"]
            print(f"notebook 02 ({args.notebook}) beside {busy} busy: {shown}", flush=True)
    rows, medians = summarise(runs, args.policy_list, args.levels)
    target_rows, missed = targets(medians, notebook)
    images = runs[0]["images"] if runs else 0
    md = [f"One epoch of `fit` (784-400-20 VAE, batch 128, {images} MNIST images) in a fresh process per run, "
          f"{args.epochs} epochs per run (its epoch time is their median), {args.reps} repetition(s) per row; a busy "
          "process is a Python spin loop (one core). Policies: `auto` = vae_helpers' default (the tuner in `fit`), "
          "`torch` = PyTorch's plain setting (`VAE_THREADS=torch`).", "", markdown_table(COLUMNS, rows)]
    if notebook:
        md += ["", markdown_table(["notebook 02", "busy processes", "seconds", "budget (s)", "load avg at start"],
                                  [[nb["mode"], nb["busy"], fmt(nb["seconds"], 0) if not nb.get("error") else "failed",
                                    NOTEBOOK_BUDGET_S[nb["mode"]], fmt(nb["load_at_start"], 2)] for nb in notebook])]
    md += ["", markdown_table(["target", "measured", "status"], target_rows) if target_rows else "No targets measured."]
    data = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}, "columns": COLUMNS,
            "rows": rows, "runs": runs, "notebook": notebook, "targets": target_rows, "missed": missed}
    write_results(args.out, "threads", data, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
