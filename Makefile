# harness: the two commands of the README.
#   make quickstart   set up .venv and run the offline quickstart (recipes/quickstart.toml)
#   make test         set up .venv, lint (ruff) and run the tests
#
# torch is installed first, on its own: a CPU build where no NVIDIA GPU is visible (TORCH_VERSION; set
# TORCH_INDEX=https://download.pytorch.org/whl/cpu where PyPI would otherwise hand you the CUDA build), the
# default CUDA build where one is. Everything after that is installed with torch pinned to what is installed,
# so no dependency can pull a different (multi-GB) torch.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_GPU),yes)
TORCH_SPEC ?= torch
else
TORCH_SPEC ?= torch==$(TORCH_VERSION)
endif
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: quickstart test install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/torch-pin.txt
	$(BIN)/python -m pip install -q -e ".[test]" -c constraints.txt -c $(VENV)/torch-pin.txt
	touch $@

quickstart: install
	$(OFFLINE) $(BIN)/harness run recipes/quickstart.toml

test: install
	$(BIN)/ruff check .
	$(OFFLINE) $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
