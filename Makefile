# edgebox: the two set-up commands are `make run` and `make test`.
# Everything else here is what they and the release process are built from.

CARGO       ?= cargo
DATA_DIR    ?= ./data
DIST_DIR    ?= dist
CROSS       := --config cross/config.toml
TARGETS     := x86_64-unknown-linux-musl aarch64-unknown-linux-musl riscv64gc-unknown-linux-gnu
# Roles, one Cargo feature each (filled in as roles land).
ROLE_FEATURES := $(shell sed -n 's/^\([a-z][a-z0-9-]*\) = \[.*\] *# role$$/\1/p' Cargo.toml)

.PHONY: all build run test setup lint unit features cross-smoke cross-smoke-aarch64 dist fuzz bench deb clean

all: build

build:
	$(CARGO) build --release

## The appliance with every default role, on an embedded store under ./data.
run:
	$(CARGO) run --release -- --data-dir $(DATA_DIR) --log-format text up

## Installs what the tests need, then runs them all.
test: setup lint unit features cross-smoke-aarch64

setup:
	@./scripts/setup.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) test --all-targets

## Each role feature builds on its own (and the core with none).
features:
	$(CARGO) check --no-default-features --all-targets
	@for f in $(ROLE_FEATURES); do echo "== feature $$f"; $(CARGO) check --no-default-features --features $$f || exit 1; done

## Static binaries for every target with the size profile.
dist:
	@./cross/setup.sh
	@mkdir -p $(DIST_DIR)
	@for t in $(TARGETS); do \
	  echo "== $$t"; \
	  $(CARGO) $(CROSS) build --target $$t --profile dist || exit 1; \
	  cp target/$$t/dist/edgebox $(DIST_DIR)/edgebox-$$t; \
	done
	@ls -l $(DIST_DIR)

dist-%:
	@./cross/setup.sh
	@mkdir -p $(DIST_DIR)
	$(CARGO) $(CROSS) build --target $* --profile dist
	cp target/$*/dist/edgebox $(DIST_DIR)/edgebox-$*

## Every cross binary under qemu-user.
cross-smoke: dist
	@for t in $(TARGETS); do ./cross/smoke.sh $$t $(DIST_DIR)/edgebox-$$t || exit 1; done

## The aarch64 smoke alone: part of `make test` so cross builds cannot rot.
cross-smoke-aarch64: dist-aarch64-unknown-linux-musl
	./cross/smoke.sh aarch64-unknown-linux-musl $(DIST_DIR)/edgebox-aarch64-unknown-linux-musl

## Each fuzz target for a minute (cargo-fuzz, nightly).
fuzz:
	@./scripts/fuzz.sh 60

## Core benchmark: cold start to ready, idle RSS, binary size.
bench: build
	@./scripts/bench-core.sh target/release/edgebox

## A .deb with the binary, role links, units and the default config.
deb: dist-x86_64-unknown-linux-musl
	./packaging/deb/build.sh $(DIST_DIR)/edgebox-x86_64-unknown-linux-musl $(DIST_DIR)

clean:
	$(CARGO) clean
	rm -rf $(DIST_DIR)
