# Two entry points for a fresh machine (README): `make estimate` and `make test`.
# Each creates .venv and installs what it needs by itself.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch: the CPU wheel on this machine's disk; an unpinned torch pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
DEEPSPEED_SPEC ?= deepspeed>=0.16

.PHONY: estimate test dev lint clean ds-ops

$(VENV)/.core-installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

# deepspeed is an sdist whose build imports torch: install torch first, then deepspeed without
# build isolation, or pip fetches a CUDA torch into the build environment.
$(VENV)/.dev-installed: $(VENV)/.core-installed
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q --no-build-isolation "$(DEEPSPEED_SPEC)"
	$(PIP) install -q -e '.[train,dev]'
	touch $@

estimate: $(VENV)/.core-installed
	$(VENV)/bin/evaplan estimate --model eva-clip-18b --offering aws-p5 --gpus 256

# DeepSpeed JIT-compiles its CPU shared-memory collective op (C++ compiler + ninja) on the first CPU
# run, ~90 s on 2 cores; build it here, once and visibly, into $$TORCH_EXTENSIONS_DIR (default
# ~/.cache/torch_extensions), so that neither the first local launch nor a test spends that time.
# When it is already built this only checks (a few seconds).
ds-ops: $(VENV)/.dev-installed
	$(PY) -m evaclip.build_ops

dev: $(VENV)/.dev-installed ds-ops

# Test files run on TEST_WORKERS pytest-xdist workers, each file whole on one worker (--dist loadfile:
# a file's tests share module-level runs, e.g. one trainer run per ZeRO stage). Two workers keep both
# cores of a 2-core machine busy while the other waits on a subprocess; the tests wait on progress,
# never on a clock, so more contention only makes them slower. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

test: $(VENV)/.dev-installed ds-ops
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) build dist *.egg-info
