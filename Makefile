# hull's build, test and demo entry points. Every target runs the set-up it needs
# (scripts/setup.sh is idempotent), so a fresh Debian/Ubuntu machine needs nothing else.

HULL_ASSETS ?= /var/lib/hull
export HULL_ASSETS
CARGO ?= cargo

.PHONY: all setup build agent-static guest-kernel guest-image guest lint test demo bench clean

all: build

setup:
	scripts/setup.sh

build: setup
	$(CARGO) build --workspace

# The agent runs as the guest's /init: glibc, statically linked.
agent-static: setup
	scripts/build-agent-static.sh

guest-kernel: setup
	guest-kernel-config/build.sh

guest-image: agent-static
	scripts/build-guest-image.sh

guest: guest-kernel guest-image

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The whole suite: lint, the guest assets the VM tests boot, then every test.
test: lint guest
	$(CARGO) test --workspace

# The main job: a busybox container inside a microVM (or the OS-level sandbox where
# no VM can be started here), saying which.
demo: build guest
	scripts/demo.sh

# One table from one run (benches/): hull's VM and OS-level sandboxes beside runc, crun
# and QEMU microvm, median/min/max over HULL_BENCH_RUNS runs, release builds.
bench: setup guest
	$(CARGO) build --release -p hull-runtime -p hull-devices -p hull-vmm -p hull-bench
	$(CARGO) run --release -p hull-bench

clean:
	$(CARGO) clean
