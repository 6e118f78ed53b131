# pipeline: PyTorch <-> Keras through ONNX.  `make help` lists the targets.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL := 3
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help setup convert batch explain test test-slow test-ray conformance fuzz bench bench-check bench-batch zoo clean

help:
	@echo "make setup                          create .venv (Python 3.11) with the pinned stack"
	@echo "make convert MODEL=name [TO=torch|keras] [ARGS='--layout target ...']"
	@echo "make batch CONFIG=configs/seeds.yaml [ARGS='--jobs 2 | --ray [ADDRESS]']"
	@echo "make test                           fast test suite (what CI runs)"
	@echo "make test-slow                      slow tests: model zoos, the whole ONNX conformance suite"
	@echo "make test-ray                       batch --ray on a local Ray cluster (slow test)"
	@echo "make bench [ARGS='--models resnet50 --runs 1']  speed vs onnx2tf, peak memory at 100M parameters (build/bench/)"
	@echo "make bench-batch [ARGS='--models A,B']  keras.applications as one batch: --jobs 1 vs 2 vs --ray (build/bench/batch/)"
	@echo "make zoo [ARGS='--models A,B']      every keras.applications model -> PyTorch, table in build/zoo/"
	@echo "make conformance [ARGS='--tests gemm']  ONNX backend node tests -> both targets, judged against the spec (bench/results/)"
	@echo "make fuzz [N=10000] [ARGS='--seed N']  deep conv/pool fuzzing (a new seed each run), bench/results/fuzz.json"
	@echo "make bench-check                    exit 1 unless bench/results/ shows every stated goal met"

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else "pipeline needs Python 3.11 (CPU torch 2.13 wheels exist only for it); found %d.%d" % v)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)
	@echo "setup done: $(VENV) ready"

convert: setup
	@test -n "$(MODEL)" || { echo "usage: make convert MODEL=name [TO=torch|keras] [ARGS=...]" >&2; exit 2; }
	$(PY) -m pipeline convert $(MODEL) $(if $(TO),--to $(TO)) $(ARGS)

batch: setup
	@test -n "$(CONFIG)" || { echo "usage: make batch CONFIG=configs/seeds.yaml" >&2; exit 2; }
	$(PY) -m pipeline batch $(CONFIG) $(ARGS)

explain: setup
	@test -n "$(LAYER)" -a -n "$(SHAPE)" || { echo "usage: make explain LAYER=\"keras.layers.Conv1D(1024, 5, padding='same')\" SHAPE=256,237,21" >&2; exit 2; }
	$(PY) -m pipeline explain "$(LAYER)" --input-shape $(SHAPE)

test: setup
	$(PY) -m pytest -q $(ARGS)

test-slow: setup
	$(PY) -m pytest -q -m slow $(ARGS)

test-ray: setup
	$(PY) -m pytest -q -m slow tests/test_batch_ray.py $(ARGS)

conformance: setup
	$(PY) bench/conformance.py $(ARGS)

# Each bench keeps its results (with commit and machine) in bench/results/ and the README's
# tables are regenerated from them; both benches run even when the first misses its goal.
bench: setup
	$(PY) bench/compare_onnx2tf.py $(ARGS); a=$$?; $(PY) bench/memory.py; b=$$?; \
	$(PY) bench/shapes.py; c=$$?; $(PY) bench/latency.py; d=$$?; $(PY) bench/tflite.py; e=$$?; \
	$(PY) bench/readme_tables.py; test $$a -eq 0 -a $$b -eq 0 -a $$c -eq 0 -a $$d -eq 0 -a $$e -eq 0

bench-batch: setup
	$(PY) bench/batch.py $(ARGS)

zoo: setup
	$(PY) bench/keras_zoo.py $(ARGS); a=$$?; $(PY) bench/readme_tables.py; test $$a -eq 0

fuzz: setup
	$(PY) bench/fuzz.py --cases $(or $(N),10000) $(ARGS); a=$$?; $(PY) bench/readme_tables.py; test $$a -eq 0

bench-check:
	$(PY) bench/check.py $(ARGS)

clean:
	rm -rf build .pytest_cache
