# torchrec_gnn — one-command install, demo, tests, benchmarks.
#   make demo   installs if needed, then runs the main job on the built-in default data
#   make test   installs if needed, then runs the test suite
#   make bench  installs if needed, then runs the benchmarks
#   make mutate installs mutmut, then mutation-tests the critical modules (hours; not in CI)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# CPU unless a CUDA driver is visible; override with `make install FBGEMM=fbgemm-gpu`.
FBGEMM ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo fbgemm-gpu || echo fbgemm-gpu-cpu)
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench mutate clean

install: $(STAMP)

# Order matters (see README "Install"): torch, then fbgemm for the device, then torchrec
# without its own `fbgemm-gpu` requirement, then everything else pinned in requirements.txt.
$(STAMP): requirements.txt pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q $(FBGEMM)==1.8.0
	$(PIP) install -q --no-deps torchrec==1.8.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import torchrec, fbgemm_gpu, torch_geometric, numba; print('installed: torch', __import__('torch').__version__, '| torchrec', torchrec.__version__ if hasattr(torchrec, '__version__') else '1.8.0')"
	touch $(STAMP)

demo: install
	$(PY) -m torchrec_gnn train --config configs/default.yaml --output-dir runs/demo --overwrite

test: install
	$(PY) -m pytest -q tests

bench: install
	mkdir -p runs/bench
	$(PY) benchmarks/bench_sampler.py --json runs/bench/sampler.json
	$(PY) benchmarks/bench_loader.py --json runs/bench/loader.json
	$(PY) benchmarks/bench_step.py --json runs/bench/step.json
	$(PY) benchmarks/bench_gnn.py --json runs/bench/gnn.json
	$(PY) benchmarks/bench_graph_size.py --json runs/bench/graph_size.json --plot runs/bench/graph_size.png

# MODULES=fusion,balancing restricts it; the table and every surviving mutant are printed.
MODULES ?= fusion,balancing,split,batch,gfae,gnn_tower,metrics,checkpoint,sampler
mutate: install
	$(PIP) install -q -r requirements-mutate.txt
	$(PY) tools/mutate.py --modules $(MODULES) --json runs/mutation.json

clean:
	rm -rf $(VENV) build *.egg-info
