# prism-sock: top-level entry points. `make test` and `make demo` install what is missing.
KDIR ?= $(shell KERNEL_FLAVOR=$(KERNEL_FLAVOR) qemu-test/build-kernel.sh)
KERNEL_FLAVOR ?= default
export KERNEL_FLAVOR

.PHONY: setup kernel module tools test test-host test-guest demo bench profile lint clean

setup:
	@scripts/setup.sh

kernel: setup
	@echo "kernel tree: $(KDIR)"

# CLIPPY=1: the kernel's clippy lints (undocumented unsafe blocks and more) on every build.
module: setup
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=1 CLIPPY=1 modules

tools: setup
	cargo build --release --workspace --bins

KMOD_RS := $(filter-out %_generated.rs,$(wildcard kmod/*.rs))

lint: setup
	cargo fmt --all --check
	rustfmt --check --edition 2021 $(KMOD_RS)
	cargo clippy --workspace --all-targets -- -D warnings

test-host: setup
	cargo test --workspace

test-guest: module tools
	qemu-test/run-guest.sh suite

test: lint test-host test-guest

demo: module tools
	qemu-test/run-guest.sh demo

bench: module tools
	qemu-test/run-guest.sh bench

# perf profile of hops in the guest; PROFILE_RUNS=module:0,repair:65536 picks runs.
profile: module tools
	qemu-test/run-guest.sh profile "$(PROFILE_RUNS)"

clean:
	-[ -d "$(KDIR)" ] && $(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=1 clean
	cargo clean
