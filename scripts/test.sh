#!/usr/bin/env bash
# The test command: installs prerequisites, provisions CRIU, then runs the formatting and
# lint gates and every test (unit, CLI, and end-to-end on network-namespace hosts).
# Run as root on Debian 12:  sudo bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/install-deps.sh
bash packaging/criu/provision-criu.sh

cargo fmt --all -- --check
# The deb and rpm packages, from a dev build of the two binaries as they ship: without the
# test-only fault hooks (tests/tests/packages.rs checks them).
bash scripts/package.sh --profile dev
# The binaries the end-to-end tests start: the workspace build carries the fault hooks
# (a cargo feature the tests crate turns on; see coordinator/src/faults.rs).
cargo build --workspace --bins --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
# Every fuzz target (common/fuzz: frames, manifests, deltas, data-entry paths, config) for
# 20 s; a crash fails the run.
bash scripts/fuzz.sh 20
export UNDERSTUDY_PACKAGES=$PWD/target/packages UNDERSTUDY_REQUIRE_PACKAGES=1
# The test VM image (built once, cached in /var/cache/understudy/vm).
bash scripts/vm/build-image.sh
# End-to-end tests fail instead of skipping when their prerequisites are missing here.
UNDERSTUDY_REQUIRE_E2E=1 UNDERSTUDY_REQUIRE_CRIU=1 UNDERSTUDY_REQUIRE_VM=1 cargo test --workspace --locked
