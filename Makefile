# Psyche: the two commands a user needs are `make demo` and `make test`.
# Every target installs what it needs on a fresh Debian 12 machine (see README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/psyche

.PHONY: test system-deps venv rust-check rust-test sbf validator localnet py-lint py-test idl demo clean

test: system-deps venv rust-check rust-test sbf validator py-lint py-test

system-deps:
	bash scripts/install-system-deps.sh

venv:
	bash scripts/setup-python.sh

rust-check:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -q -- -D warnings
	cd programs/psyche-coordinator && cargo fmt --check && cargo clippy --all-targets -q -- -D warnings

rust-test:
	cargo test --workspace -q
	cd programs/psyche-coordinator && cargo test -q

# The SBF build of the Anchor program: target/deploy/psyche_coordinator.so
sbf:
	bash scripts/build-sbf.sh

# solana-test-validator, built from crates.io once into $(CACHE)
validator:
	bash localnet/install-validator.sh

# solana-test-validator on 127.0.0.1 with the program loaded and a demo run created (Ctrl-C stops)
localnet: sbf validator
	PSYCHE_DEMO_RUN=demo bash localnet/start-validator.sh

# Regenerate the IDL (idl/psyche_coordinator.json) from the program's sources
idl: venv
	$(PY) idl/generate.py

py-lint: venv
	$(VENV)/bin/ruff check psyche_client tests bench idl
	$(VENV)/bin/ruff format --check psyche_client tests bench idl

py-test: venv
	$(PY) -m pytest -q tests

# The main job: a TCP coordinator and three clients training a tiny model on loopback.
demo: system-deps venv
	$(VENV)/bin/psyche-client demo

clean:
	rm -rf target .venv
