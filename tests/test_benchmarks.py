"""benchmarks/: a smoke run of each script with tiny settings, and the pieces that decide what RESULTS.md says."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))  # the scripts import their shared helpers as `_common`


def load_script(name: str):
    """Import ``benchmarks/<name>.py`` under the module name ``bench_<name>``."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


nb_bench, quality, run_all, throughput = (load_script(n) for n in ("notebooks", "quality", "run_all", "throughput"))

HAVE_FLOWS = importlib.util.find_spec("vae_helpers.flows") is not None


def run(script: str, *args: str) -> str:
    """Run ``benchmarks/<script>.py`` with ``args``; fail with its output when it exits non-zero."""
    done = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"{script}.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def header(markdown: str) -> list[str]:
    """The column names of the first Markdown table in ``markdown``."""
    line = next(line for line in markdown.splitlines() if line.startswith("| "))
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """One tiny run of each script into a shared results directory."""
    out = tmp_path_factory.mktemp("bench")
    run("throughput", "--limit", "640", "--reps", "1", "--threads", "1", "--ablation", "--peak-size", "512", "--out", str(out))
    run("quality", "--minutes", "0.02", "--k", "3", "--test-limit", "60", "--train-limit", "1000", "--models", "vae",
        "--threads", "1", "--checkpoints", str(out / "ckpt"), "--out", str(out))
    tiny = out / "99_tiny.ipynb"
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("from vae_helpers import config\nconfig.headline('tiny', 1.0, 'u')")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tiny)
    run("notebooks", str(tiny), "--modes", "fast", "--out", str(out))
    return out


def load(results: Path, name: str) -> tuple[dict, str]:
    return json.loads((results / f"{name}.json").read_text()), (results / f"{name}.md").read_text()


def test_throughput_table(results):
    data, md = load(results, "throughput")
    assert header(md) == throughput.COLUMNS == data["columns"]
    methods = [row[0] for row in data["rows"]]
    assert methods[0] == throughput.ORDINARY and throughput.FIT in methods and len(methods) >= 7
    assert data["ratio"] > 0 and 0 < data["fit_fraction_of_peak"] < 1.5
    assert len(data["loss_curve"]["a"]) == len(data["loss_curve"]["b"]) == 1
    assert "same maths, same number of steps" in md


def test_throughput_model_and_flop_count_match_pytorch_examples():
    model = throughput.ExamplesVAE()
    assert sum(p.numel() for p in model.parameters()) == 652_824
    assert throughput.train_flops_per_image(model) == 3 * 2 * (784 * 400 + 2 * 400 * 20 + 20 * 400 + 400 * 784)


def test_quality_table_and_resume(results):
    data, md = load(results, "quality")
    assert header(md) == quality.COLUMNS == data["columns"]
    vae = data["results"]["vae"]
    assert vae["steps"] >= 1 and vae["nll"] > 0 and vae["neg_elbo"] > 0
    assert "Rezende & Mohamed 2015" in md and "No targets for a 0.02-minute budget" in md
    again = run("quality", "--minutes", "0.02", "--k", "3", "--test-limit", "60", "--train-limit", "1000",
                "--models", "vae", "--threads", "1", "--checkpoints", str(results / "ckpt"), "--out", str(results / "again"))
    assert "resuming" in again, "a finished budget is resumed from the checkpoint, not trained again"
    redo = json.loads((results / "again" / "quality.json").read_text())["results"]["vae"]
    assert redo["steps"] == vae["steps"] and redo["nll"] == pytest.approx(vae["nll"]), "evaluation is seeded"


@pytest.mark.skipif(not HAVE_FLOWS, reason="vae_helpers.flows is not there yet: the flow models are skipped")
def test_quality_flow_model(tmp_path):
    run("quality", "--minutes", "0.02", "--k", "3", "--test-limit", "30", "--train-limit", "500", "--models", "flow4",
        "--threads", "1", "--checkpoints", str(tmp_path), "--out", str(tmp_path))
    data, _ = load(tmp_path, "quality")
    assert data["results"]["flow4"]["nll"] > 0 and data["results"]["flow4"]["parameters"] > 1_000_000


def test_quality_targets_name_what_misses():
    lines, missed = quality.target_lines(5.0, {"vae": {"nll": 90.0}, "flow4": {"nll": 89.8}})
    assert any("VAE test NLL 90.00 <= 89.0 nats: MISSED" in line for line in lines)
    assert len(missed) == 2, "both the VAE level and the flow gain miss"
    lines, missed = quality.target_lines(60.0, {"vae": {"nll": 86.0}, "flow16": {"nll": 85.5}})
    assert missed == [] and len(lines) == 2
    assert quality.lr_factor("cosine", 0.0) == 1.0 and quality.lr_factor("cosine", 1.0) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        quality.lr_factor("linear", 0.5)


def test_notebooks_table(results):
    data, md = load(results, "notebooks")
    assert header(md) == nb_bench.COLUMNS == data["columns"]
    (row,) = data["results"]
    assert row["status"] == "ok" and row["headline"] == "tiny = 1.00 u"
    assert 20 < row["peak_rss_mb"] < nb_bench.MEMORY_BUDGET_MB, "the kernel's peak RSS is measured"
    assert nb_bench.status(10, 5, 100, None) == "MISSED: over time budget"
    assert nb_bench.status(1, None, 4096, None) == "MISSED: over memory budget"


def test_run_all_assembles_results_md(results):
    out = results / "RESULTS.md"
    run("run_all", "--assemble-only", "--results", str(results), "--output", str(out))
    text = out.read_text()
    for heading in ("# Benchmark results", "## 1. Training throughput", "## 2. Model quality", "## 3. The series",
                    "## Targets", "## Missed targets", "- Machine:", "- Dates:", "- The runs behind it:"):
        assert heading in text
    for name in ("throughput", "quality", "notebooks"):
        assert f"`python {name}.py" in text or f"benchmarks/{name}.py" in text, f"{name}'s command is recorded"
    rows, missed = run_all.targets_and_misses({"throughput": {"ratio": 1.2, "target_ratio": 1.5,
                                                              "fit_fraction_of_peak": 0.5,
                                                              "loss_curve": {"max_relative_difference": 0.001}}})
    assert rows[0][2] == "MISSED" and "Tried:" in missed[0] and "fused Adam" in missed[0]


def test_fit_and_the_hand_written_loop_do_the_same_maths():
    """Same seed, data order, noise and steps: fit with vae_loss follows the hand-written loop's loss curve."""
    import torch

    from vae_helpers.data import load_mnist

    x, _ = load_mnist("train", limit=512)
    curves = []
    for run in (throughput.methods(ablation=True)["a4: a3 + fused Adam"], throughput.fit_loop()):
        torch.manual_seed(0)
        curves.append(run(throughput.ExamplesVAE(), x, 3, 128, 1e-3, 0))
    assert curves[0] == pytest.approx(curves[1], rel=1e-4)


def test_run_all_reports_every_quality_budget(results, tmp_path):
    """A long-budget run (quality-60min.json) is reported beside the 5-minute one, with its own targets."""
    data, md = load(results, "quality")
    for minutes, vae_nll in (("5.0", 88.0), ("60.0", 86.5)):
        data["args"]["minutes"] = minutes
        data["results"]["vae"]["nll"] = vae_nll
        data["targets"], data["missed"] = quality.target_lines(float(minutes), data["results"])
        stem = "quality" if minutes == "5.0" else "quality-60min"
        (tmp_path / f"{stem}.json").write_text(json.dumps(data))
        (tmp_path / f"{stem}.md").write_text(md)
    out = tmp_path / "RESULTS.md"
    run("run_all", "--assemble-only", "--results", str(tmp_path), "--output", str(out))
    text = out.read_text()
    assert text.index("### 5 minutes of training per model: vae, 1 thread") < text.index("### 60 minutes") < text.index("## 3. The series")
    assert "VAE test NLL 88.00 <= 89.0 nats (5 min) | see quality table | met" in text
    assert "VAE test NLL 86.50 <= 87.0 nats (60 min) | see quality table | met" in text
    assert "against `fit`\n\nNot measured." in text, "a benchmark without results says so"


def test_check_cell_timings_read_the_graded_cells(tmp_path):
    notebook = nbformat.v4.new_notebook()
    solution = nbformat.v4.new_code_cell("def kl(mu, lv):\n    return -0.5 * (1 + lv - mu**2 - lv.exp()).sum(-1)")
    solution.metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "tiny-kl"}
    check = nbformat.v4.new_code_cell("from vae_helpers import checks\nchecks.check_gaussian_kl(kl)")
    check.metadata["nbgrader"] = {"solution": False, "grade": True, "grade_id": "tiny-kl-check", "points": 1}
    notebook.cells = [nbformat.v4.new_code_cell("import torch"), solution, check]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "99_tiny.ipynb"
    nbformat.write(notebook, path)
    run("checks", str(path), "--busy", "0", "--out", str(tmp_path))
    data, md = load(tmp_path, "checks")
    (only,) = data["runs"]
    assert list(only["check_cells"]) == ["tiny-kl-check"] and 0 < only["check_cells"]["tiny-kl-check"] < 60
    assert data["targets"][0][2] == "met" and "tiny-kl-check" in md
