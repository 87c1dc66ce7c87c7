# Two commands for a fresh machine: `make run` (the whole series) and `make test`.
# Both create .venv and install the project when needed.
#   make run DATASET=../shared/data/cifar10-jpg.tar.gz PROFILE=smoke VGG16_WEIGHTS=path/to.h5

PYTHON        ?= python3
VENV          ?= .venv
BIN           := $(VENV)/bin
DATASET       ?= cifar100
PROFILE       ?=
VGG16_WEIGHTS ?= imagenet
OUT           ?= .
SEED          ?= 0
# minutes for the whole series (empty: the profile's default, 60 on cpu; none: the recipes)
BUDGET        ?=
PYTEST_ARGS   ?=
STAMP         := $(VENV)/.cifarlab-installed
# The exact set of versions this project last tested (pyproject.toml states the ranges);
# `make lock` refreshes it from the newest releases the ranges admit.
CONSTRAINTS   ?= constraints.txt

PROFILE_ARG := $(if $(PROFILE),--profile $(PROFILE),)
BUDGET_ARG  := $(if $(BUDGET),--budget $(BUDGET),)

.PHONY: setup run series test test-install bench lint clean help lock oldest

help:
	@echo "make run    DATASET=... PROFILE=smoke|cpu|full VGG16_WEIGHTS=imagenet|offline|none|FILE BUDGET=minutes|none  (the series)"
	@echo "make series (the same series from the CLI, without notebooks)"
	@echo "make test   (the test suite)"
	@echo "make test-install (pip's resolver: installing into a Colab-like set changes none of it)"
	@echo "make bench  (throughput benchmarks -> BENCHMARKS.md)"
	@echo "make lint   (ruff)"
	@echo "make lock   (refresh constraints.txt from the newest releases pyproject.toml admits)"
	@echo "make oldest (the fast tests and the smoke series under the lowest versions pyproject.toml admits)"

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name cifarlab --display-name "Python (cifarlab)" >/dev/null
	@touch $(STAMP)

setup: $(STAMP)

# The series as the user meets it: the four notebooks executed in order by papermill
# (executed copies in reports/notebooks/), leaving models, histories and reports.
run: setup
	$(BIN)/python -m cifarlab notebooks --dataset $(DATASET) $(PROFILE_ARG) --out $(OUT) --seed $(SEED) --vgg16-weights $(VGG16_WEIGHTS) $(BUDGET_ARG)

# The same series from the command line, without notebooks.
series: setup
	$(BIN)/python -m cifarlab run --dataset $(DATASET) $(PROFILE_ARG) --out $(OUT) --seed $(SEED) --vgg16-weights $(VGG16_WEIGHTS) $(BUDGET_ARG)

# Throughput of every model on every installed backend, appended to BENCHMARKS.md.
bench: setup
	$(BIN)/python -m cifarlab bench --profile $(or $(PROFILE),cpu) --dataset $(DATASET) --markdown BENCHMARKS.md --kernel-vs-process

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# pip's resolver installing cifarlab into a Colab-like set (asks the package index)
test-install: setup
	$(BIN)/python -m pytest -m network -n 0 tests/test_install.py $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# A fresh environment with the newest releases pyproject.toml admits, frozen into
# constraints.txt (the torch CPU build's "+cpu" label dropped: == 2.13.0 matches it).
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q -e '.[dev]'
	{ echo "# The versions this project tests: make setup / make test / CI install with -c $(CONSTRAINTS)."; \
	  echo "# Made by 'make lock' on $$(date -u +%F), Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())')."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | sed -E 's/^([^=]+==[^+]+)\+[a-z0-9.]+$$/\1/'; } > $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)

# The lowest versions the ranges admit, in their own environment: the fast tests and the
# smoke series (on CIFAR-10 JPEG where ../shared/data has it, else on downloaded CIFAR-10).
OLD_VENV := .venv-oldest
OLD_DATA ?= $(if $(wildcard ../shared/data/cifar10-jpg.tar.gz),../shared/data/cifar10-jpg.tar.gz,cifar10)
oldest:
	rm -rf $(OLD_VENV) && $(PYTHON) -m venv $(OLD_VENV)
	$(OLD_VENV)/bin/python -m pip install -q --upgrade pip
	$(PYTHON) tools/lowest_constraints.py > $(OLD_VENV)/lowest.txt
	$(OLD_VENV)/bin/python -m pip install -q -c $(OLD_VENV)/lowest.txt -e '.[dev]'
	$(OLD_VENV)/bin/python -m ipykernel install --sys-prefix --name cifarlab --display-name "Python (cifarlab)" >/dev/null
	$(OLD_VENV)/bin/python -m pip list --format=freeze | grep -iE '^(tensorflow|keras|numpy|pandas|jupytext|papermill|keras-tuner|scikit-learn)=='
	$(OLD_VENV)/bin/python -m pytest -m "not slow" -p no:cacheprovider $(PYTEST_ARGS)
	rm -rf $(OLD_VENV)/series && $(OLD_VENV)/bin/python -m cifarlab run --profile smoke --dataset $(OLD_DATA) --vgg16-weights offline --out $(OLD_VENV)/series --quiet

clean:
	rm -rf saved_models histories reports logs
