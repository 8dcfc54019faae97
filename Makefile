# The two set-up commands of the README:
#   make demo   install, get Fashion-MNIST, pretrain the default method (cpu preset), print the evaluation
#   make test   install, get Fashion-MNIST (and Chromium for the report test), run the test suite
# Both work on a fresh machine; everything goes into ./.venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.14.1 / torchvision 0.29.1 are the tested versions (newer releases work too:
# make demo TORCH_SPEC="torch torchvision").
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
FMNIST_DIR := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-fast install data chromium lint clean

demo: install data
	$(BIN)/selfsup pretrain --eval

test: install data chromium
	$(BIN)/python -m pytest -q

# the suite without the end-to-end and multi-process tests (marked slow): under a minute on 2 cores
test-fast: install data
	$(BIN)/python -m pytest -q -m "not slow"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# Fashion-MNIST from Debian's package when apt is available; otherwise selfsup downloads it
# through torchvision on first use.
data:
	@if [ ! -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then \
		echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist >/dev/null \
		|| echo "apt-get failed; selfsup will try to download Fashion-MNIST through torchvision"; \
	fi

# Headless Chromium for tests/test_report_chromium.py (renders the `selfsup compare` report), from
# Debian's package when apt is available; without it that test is skipped.
chromium:
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then \
		echo "installing Chromium (Debian package chromium) for the report test"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null \
		|| echo "apt-get failed; tests/test_report_chromium.py will be skipped"; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs build *.egg-info
