# `make train` and `make test` set everything up from scratch (a .venv in this folder) and run.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The real Fashion-MNIST: $MINIAI_DATA if set, else ../shared/data/fashion-mnist when it is there.
MINIAI_DATA ?= $(wildcard $(abspath ../shared/data/fashion-mnist))
ifneq ($(MINIAI_DATA),)
export MINIAI_DATA
endif

.PHONY: setup train test lint soak notebooks bench clean

$(STAMP): pyproject.toml settings.ini setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(STAMP)

train: setup
	$(VENV)/bin/miniai fit

test: setup
	$(PY) -m pytest -n 2 -q

lint: setup
	$(VENV)/bin/ruff check .

soak: setup
	$(PY) -m pytest -m soak -q

notebooks: setup
	$(VENV)/bin/jupyter-execute --inplace --timeout=3600 nbs/01_schedulers.ipynb nbs/02_cyclical_lr.ipynb

bench: setup
	$(PY) bench/data_pipeline.py
	$(PY) bench/overhead.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
