# Entry points. `make test` and `make demo` work on a fresh Debian 12 machine: they install what they
# need first (hack/install-deps.sh, idempotent; caches live in $(CACHE), outside the repo).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CACHE ?= $(or $(LBPAIR_CACHE),$(HOME)/.cache/lbpair-operator)
VENV := $(CACHE)/venv
PY := $(VENV)/bin/python
export LBPAIR_TOOLS_BIN := $(CACHE)/bin
export PYTHONPATH := $(CURDIR):$(CURDIR)/operator
export PATH := $(LBPAIR_TOOLS_BIN):$(PATH)
PYTEST_FLAGS ?=

.PHONY: deps image lint fmt test test-unit test-e2e node-e2e lab-up lab-down cluster-up cluster-down up down clean demo demo-down bench \
	bench-scale

deps:
	hack/install-deps.sh

# The operator image, daemonless (buildah, chroot isolation, vfs storage in $(CACHE)/image) on a Debian 12
# base made by debootstrap; skipped when an image of the same inputs exists. tests/e2e/test_image.py runs it.
image:
	hack/image.sh

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	helm lint --strict charts/lbpair-operator
	$(VENV)/bin/hadolint Dockerfile

fmt: deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Every test: lint + type check, unit and golden tests, then the e2e tests on the real control plane and lab.
test: lint
	$(VENV)/bin/pytest $(PYTEST_FLAGS)

test-unit: deps
	$(VENV)/bin/pytest -m 'not e2e' $(PYTEST_FLAGS)

test-e2e: deps
	$(VENV)/bin/pytest -m e2e $(PYTEST_FLAGS)

# Just the chart on the test bed's kubelet node (testbed/kubenode.py): image, node, `helm install`, the seed
# pair Ready through the pod, a deleted pod replaced. Prints each step's time. Part of `make test` too.
node-e2e: deps
	$(VENV)/bin/pytest -m e2e tests/e2e/test_chart_on_node.py -s $(PYTEST_FLAGS)

cluster-up: deps
	$(PY) -m testbed cluster up
cluster-down:
	$(PY) -m testbed cluster down
lab-up: deps
	$(PY) -m testbed lab up
lab-down:
	$(PY) -m testbed lab down
up: cluster-up lab-up
down: lab-down cluster-down

# The operator's main job on the local control plane + lab; leaves everything running (see its last lines).
demo: deps
	$(PY) -m testbed demo up
demo-down:
	$(PY) -m testbed demo down

# Benchmarks (medians over repeated runs) on a fresh control plane + lab; writes bench/results.json.
bench: deps
	$(PY) -m bench.run $(BENCH_FLAGS)
	$(PY) -m bench.agent_swap
	$(PY) -m bench.render

# Scale (issue 9): ten pairs on one operator, 1/500/5,000 VirtualHosts on a pair, Ansible side by side
# (ansible-core in a venv of its own, hack/install-ansible.sh); merges "scale" into bench/results.json.
bench-scale: deps
	$(PY) -m bench.scale $(BENCH_SCALE_FLAGS)

# Removes leftovers of a crashed run: the kubelet node (machine state restored), lab namespaces and daemons,
# test control planes.
clean:
	$(PY) -m testbed cleanup
