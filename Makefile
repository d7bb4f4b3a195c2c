# uotisp: two commands on a fresh clone (see README.md)
#   make reproduce   set up .venv, build the synthetic benchmark, run every notebook, print the tables
#                    (PROFILE=smoke, the default, checks the plumbing, not the method: see results/cpu)
#   make test        set up .venv, run the test suite (what .ci/run calls); it regenerates the
#                    committed smoke tables (results/smoke) and fails when a cell changed
#   make results-smoke  regenerate results/smoke (tables and index) after an intended change; commit it
#   make wheelhouse  (connected machine) wheels of every package in .venv but torch/torchvision/CUDA into
#                    wheelhouse/, for an offline GPU machine; PLATFORM=... PYTHON_VERSION=... for another one
#   make gpu-check   (GPU machine) install from wheelhouse/ into PYTHON (its torch left as it is), run every
#                    notebook, AMP and one DDP training on CUDA in under 8 minutes; writes results/gpu_check.md
PYTHON ?= python3
PROFILE ?= smoke
VENV ?= .venv
CONSTRAINTS ?= constraints-ci.txt
PY := $(VENV)/bin/python

.PHONY: setup reproduce test results-smoke clean-results wheelhouse gpu-check

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23.1"
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[test]"
	touch $@

setup: $(VENV)/.installed

reproduce: setup
	$(VENV)/bin/uotisp reproduce --profile $(PROFILE)

test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadgroup -q

# the same settings as the test that checks them: one thread, CPU, the synthetic benchmark, no stored
# runs (a stored run is read back as it was written, so a new column would stay empty)
results-smoke: setup
	rm -rf results/smoke/tables results/smoke/figures results/smoke/runs
	OMP_NUM_THREADS=1 MPLBACKEND=Agg $(VENV)/bin/uotisp reproduce --profile smoke --device cpu

# what a run writes and git ignores (results/smoke/tables and README.md are committed)
clean-results:
	rm -rf results/smoke/figures results/*/executed results/*/runs

# pins every package of $(VENV) (no torch, torchvision, CUDA wheels) and the project into wheelhouse/
wheelhouse:
	$(PY) benchmarks/wheelhouse.py --venv $(VENV) --out wheelhouse \
		$(if $(PLATFORM),--platform $(PLATFORM)) $(if $(PYTHON_VERSION),--python-version $(PYTHON_VERSION))

# with the machine's own Python and torch (PYTHON=/path/to/python); GPU_CHECK_ARGS=--allow-cpu on a CPU
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py --wheelhouse wheelhouse $(GPU_CHECK_ARGS)
