"""vae_helpers.runner: executed copies, headline collection and the summary table of `make run`."""

import sys

import nbformat
import pytest

from vae_helpers import runner


def notebook(*sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_find_headline_takes_the_last_headline_line():
    nb = notebook("a", "b")
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="Headline metric: old = 1.00\n")]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="noise\nHeadline metric: test NLL = 93.10 nats\n")]
    assert runner.find_headline(nb) == "test NLL = 93.10 nats"
    assert runner.find_headline(notebook("x")) == "-"


def test_summary_table_lists_seconds_and_metric_or_failure():
    table = runner.summary_table([runner.RunResult("00_a.ipynb", 4.2, "m = 1"),
                                  runner.RunResult("01_b.ipynb", 61.0, "-", error="ValueError: boom")])
    lines = table.splitlines()
    assert lines[0].split() == ["notebook", "seconds", "headline", "metric"]
    assert "00_a.ipynb" in lines[2] and lines[2].rstrip().endswith("m = 1") and " 4 " in lines[2]
    assert "FAILED: ValueError: boom" in lines[3]


@pytest.mark.slow
def test_run_notebooks_executes_into_copies_and_reports(tmp_path, capsys):
    good = tmp_path / "good.ipynb"
    bad = tmp_path / "bad.ipynb"
    nbformat.write(notebook("from vae_helpers import config", "config.headline('answer', 42, 'units')"), good)
    nbformat.write(notebook("raise ValueError('broken on purpose')", "print('never')"), bad)
    out = tmp_path / "out"
    results = runner.run_notebooks([good, bad], out, fast=True, timeout=60)
    assert results[0].error is None and results[0].headline == "answer = 42.00 units"
    assert results[1].error == "ValueError: broken on purpose"
    executed = nbformat.read(out / "good.ipynb", as_version=4)
    assert "Headline metric" in runner.cell_text_outputs(executed.cells[1])
    assert (out / "bad.ipynb").is_file(), "a failed notebook is still written, for inspection"
    assert nbformat.read(good, as_version=4).cells[1].outputs == [], "the source notebook stays clean"


def test_main_refuses_non_notebooks(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("hi")
    assert runner.main([str(tmp_path / "x.txt"), "--out", str(tmp_path)]) == 2
    assert "not notebook files" in capsys.readouterr().err


def test_main_refuses_an_out_that_is_a_file(tmp_path, capsys):
    nb = tmp_path / "a.ipynb"
    nbformat.write(notebook("1 + 1"), nb)
    out = tmp_path / "out"
    out.write_text("precious")
    assert runner.main([str(nb), "--out", str(out)]) == 2
    assert "is a file; expected a folder" in capsys.readouterr().err
    assert out.read_text() == "precious"


@pytest.mark.slow
def test_one_bad_notebook_does_not_stop_the_others(tmp_path, capsys):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first, same_name = tmp_path / "one" / "a.ipynb", tmp_path / "two" / "a.ipynb"
    nbformat.write(notebook("print('first')"), first)
    nbformat.write(notebook("print('second')"), same_name)
    broken = tmp_path / "broken.ipynb"
    broken.write_text('{"cells": [')  # not valid JSON
    good = tmp_path / "good.ipynb"
    nbformat.write(notebook("from vae_helpers import config", "config.headline('answer', 42, 'units')"), good)
    out = tmp_path / "out"
    status = runner.main([str(first), str(same_name), str(broken), str(good), "--out", str(out), "--fast", "--timeout", "60"])
    printed = capsys.readouterr().out
    assert status == 1
    table = printed[printed.index("notebook "):]
    assert "same file name" in table and str(same_name) in table
    assert "broken.ipynb" in table and "not a valid notebook" in table
    assert "answer = 42.00 units" in table
    executed = nbformat.read(out / "a.ipynb", as_version=4)
    assert "first" in runner.cell_text_outputs(executed.cells[0]), "the first a.ipynb's copy is not overwritten"
    assert sorted(p.name for p in out.iterdir()) == ["a.ipynb", "good.ipynb"]
