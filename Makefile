# prism-sock: top-level entry points. `make test` and `make demo` install what is missing.
# KERNEL=6.12 (default) or 7.3 picks the test kernel's source (qemu-test/build-kernel.sh).
KERNEL ?= 6.12
KERNEL_FLAVOR ?= default
export KERNEL KERNEL_FLAVOR
# Built (or found in the cache) on first use, once per make run.
KDIR ?= $(eval KDIR := $$(shell qemu-test/build-kernel.sh))$(KDIR)
# The compiler, bindgen and libclang the tree was built with (a tree that predates the
# file was built with the default LLVM).
KMAKEFLAGS = $(shell cat $(KDIR)/.prism-make-flags 2>/dev/null || echo LLVM=1 LIBCLANG_PATH=$$(llvm-config --libdir))

.PHONY: setup uapi kernel module tools test test-host test-guest test-long fuzz demo bench profile lint clean dkms-check dkms-src dkms-add dkms-build dkms-install stock-kernel-test

setup:
	@scripts/setup.sh

kernel: setup
	@echo "kernel tree: $(KDIR)"

# The family's constants and request policies for kmod/ and userlib/, from its YNL spec.
uapi: setup
	cargo run -q -p prism-uapi-gen -- --root $(CURDIR)

# CLIPPY=1: the kernel's clippy lints (undocumented unsafe blocks and more) on every build.
module: setup uapi
	$(MAKE) -C $(KDIR) M=$(CURDIR) $(KMAKEFLAGS) CLIPPY=1 modules

tools: setup uapi
	cargo build --release --workspace --bins

KMOD_RS := $(filter-out %_generated.rs,$(wildcard kmod/*.rs))

lint: setup
	cargo fmt --all --check
	rustfmt --check --edition 2021 $(KMOD_RS)
	cargo clippy --workspace --all-targets -- -D warnings

test-host: setup
	cargo test --workspace

# The test kernel builds tls in: the test of an import where tls is not loaded runs on
# Debian's kernel (stock-kernel-test), which has it as a module.
TEST_SKIP := tls_module_not_loaded
test-guest: module tools
	PRISM_TEST_SKIP=$${PRISM_TEST_SKIP:+$$PRISM_TEST_SKIP,}$(TEST_SKIP) qemu-test/run-guest.sh suite

test: lint test-host dkms-check test-guest

# The DKMS source list is complete: the module builds from that copy alone.
DKMS_CHECK := $(CURDIR)/target/dkms-check
dkms-check: setup uapi
	$(MAKE) -s dkms-src DEST=$(DKMS_CHECK)
	$(MAKE) -C $(KDIR) M=$(DKMS_CHECK) $(KMAKEFLAGS) modules

# The spec-driven fuzz test alone, with more requests (KERNEL_FLAVOR=debug for KASAN,
# lockdep and kmemleak).
FUZZ_REQUESTS ?= 100000
fuzz: module tools
	PRISM_TEST_FILTER=fuzz_requests_from_spec PRISM_FUZZ_REQUESTS=$(FUZZ_REQUESTS) qemu-test/run-guest.sh suite

# The long runs: 10,000 hops over a lossy, reordering, duplicating link, the fault
# injection test, and the fuzz test with FUZZ_REQUESTS requests.
NETEM_HOPS ?= 10000
test-long: module tools
	PRISM_TEST_FILTER=hops_v4_under_loss_reordering_duplication,fault_every_point_of_export_and_import,fuzz_requests_from_spec \
	PRISM_NETEM_HOPS=$(NETEM_HOPS) PRISM_FUZZ_REQUESTS=$(FUZZ_REQUESTS) PRISM_TEST_TIMEOUT=5400 GUEST_TIMEOUT=7200 \
	qemu-test/run-guest.sh suite

demo: module tools
	qemu-test/run-guest.sh demo

bench: module tools
	qemu-test/run-guest.sh bench

# perf profile of hops in the guest; PROFILE_RUNS=module:0,repair:65536 picks runs.
profile: module tools
	qemu-test/run-guest.sh profile "$(PROFILE_RUNS)"

# Debian's stock 7.3 kernel, unmodified, and a module built for it with Debian's own
# configuration and toolchain (qemu-test/stock-kernel.sh); the guest suite runs on it.
# Left out there: the fault-injection tests, which need CONFIG_FAULT_INJECTION (failslab,
# fail_page_alloc, fail-nth), which Debian's kernel is built without.
STOCK_SKIP := fault_every_point_of_export_and_import,hops_v4_under_failing_allocations
stock-kernel-test: tools
	@eval "$$(qemu-test/stock-kernel.sh $(CURDIR))" && \
	  PRISM_KDIR=$$KDIR PRISM_KIMG=$$KIMG PRISM_MODULE=$$MODULE PRISM_TEST_SKIP=$(STOCK_SKIP) \
	  qemu-test/run-guest.sh suite

# DKMS: the module's sources go to /usr/src/prism-sock-VERSION and DKMS builds them for
# the running kernel (or DKMS_KERNEL, whose build tree is DKMS_KERNEL_SOURCE) and for
# every kernel installed later. `dkms-build` builds without installing (the test).
DKMS_VERSION := $(shell sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' dkms.conf)
DKMS_SRC := /usr/src/prism-sock-$(DKMS_VERSION)
DKMS_TARGET = $(if $(DKMS_KERNEL),-k $(DKMS_KERNEL) $(if $(DKMS_KERNEL_SOURCE),--kernelsourcedir $(DKMS_KERNEL_SOURCE)))

# What DKMS builds from, copied to DEST: Kbuild generates the bindings, the uapi module
# (generated from the spec by `make uapi`) ships as it is.
dkms-src:
	@test -n "$(DEST)" || { echo "dkms-src needs DEST=directory"; exit 1; }
	rm -rf $(DEST) && mkdir -p $(DEST)/kmod
	cp Kbuild dkms.conf $(DEST)/
	cp $(filter-out kmod/bindings_generated.rs,$(wildcard kmod/*.rs)) kmod/*.c kmod/*.h kmod/bindgen_parameters $(DEST)/kmod/

dkms-add:
	@command -v dkms >/dev/null || { echo "dkms is not installed (apt-get install dkms)"; exit 1; }
	-dkms remove prism-sock/$(DKMS_VERSION) --all >/dev/null 2>&1
	$(MAKE) -s dkms-src DEST=$(DKMS_SRC)
	dkms add prism-sock/$(DKMS_VERSION)

dkms-build: dkms-add
	dkms build prism-sock/$(DKMS_VERSION) $(DKMS_TARGET)

dkms-install: dkms-add
	dkms install prism-sock/$(DKMS_VERSION) $(DKMS_TARGET)

clean:
	-[ -d "$(KDIR)" ] && $(MAKE) -C $(KDIR) M=$(CURDIR) $(KMAKEFLAGS) clean
	cargo clean
