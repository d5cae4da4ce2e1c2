# runwasm developer targets. `make setup` is idempotent; every other target assumes it ran.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
BIN     := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup system venv launcher proto fixtures demo test test-unit check lint types bench critest clean

setup: system venv launcher proto fixtures

system:
	bash scripts/install-system.sh

$(VENV)/.stamp: pyproject.toml setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(VPY) scripts/gen_launcher.py
	touch $@

venv: $(VENV)/.stamp

# the shim binary containerd execs per container: pip's console script replaced by a launcher
# that runs `python -IS` and offers the action to the warm template (scripts/gen_launcher.py)
launcher: venv
	$(VPY) scripts/gen_launcher.py

proto: venv
	$(VPY) scripts/gen_proto.py

fixtures: venv proto
	$(VPY) -m fixtures.build

# The main job: a Wasm module and an OCI image run through the real shim binary by the
# standalone harness (no containerd involved).
demo: setup
	bash scripts/demo.sh

# The whole suite: unit, privileged (real kernel) and integration (private containerd 1.6).
test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/pytest -m "not privileged and not integration" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check shim wasm oci linux tests fixtures scripts

types: venv proto
	$(VPY) scripts/mypy_tree.py

check: lint types test-unit

bench: setup
	$(VPY) -m tests.bench

# cri-tools' critest v1.36 on a private containerd 2.3.4 with CRI, handler runwasm and handler
# runc side by side (stand-in images from a registry in a private netns; CRITEST_ARGS e.g.
# --focus REGEXP, --flavour 1.6)
CRITEST_ARGS ?=
critest: setup
	bash scripts/critest.sh $(CRITEST_ARGS)

clean:
	rm -rf build .mypy_cache .pytest_cache fixtures/build
