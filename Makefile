# `make demo` and `make test` both create .venv when it is missing and install the project.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.hwloop-installed

.PHONY: demo test install bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# lava-nc 0.10.0 declares Python <3.11 but is pure Python: install it alone first.
	$(PIP) install -q --no-deps --ignore-requires-python -c constraints.txt lava-nc==0.10.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hwloop train --task cue --neuron brf --learner hypr --lambda 10 --epochs 12 --seed 0 --backend pcm --bits 4 --scheme mixed --out runs/demo --overwrite
	$(VENV)/bin/hwloop eval runs/demo --drift 0,1h,1d,1mo --gdc both --device-seeds 5

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PIP) install -q -c constraints.txt -e '.[dev,bench]'
	$(PY) -m benchmarks.hypr_scaling
	$(PY) -m benchmarks.pcm_hil
	$(PY) -m benchmarks.studies

clean:
	rm -rf $(VENV) runs build *.egg-info
