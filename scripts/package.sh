#!/usr/bin/env bash
# Builds the Debian and RPM packages into target/packages:
#   understudy-agent  (agent, its unit, sample config, the ONNX models, CRIU provisioning)
#   understudy        (coordinator server + operator CLI, its unit, sample config)
# Usage: scripts/package.sh [--profile PROFILE]   (default release; the tests package the
# dev build they already have). Needs cargo-deb and cargo-generate-rpm (scripts/install-deps.sh
# installs them). See docs/install.md.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
case "${1:-}" in
  "") ;;
  --profile) profile=${2:?--profile needs a name} ;;
  *) echo "usage: $0 [--profile PROFILE]" >&2; exit 64 ;;
esac
for tool in cargo-deb cargo-generate-rpm; do
  command -v "$tool" >/dev/null || { echo "package: $tool not found; run scripts/install-deps.sh" >&2; exit 69; }
done

out=target/packages
rm -rf "$out" && mkdir -p "$out"
build=(--locked)
[ "$profile" = release ] && build+=(--release) || build+=(--profile "$profile")
cargo build -p understudy-agent -p understudy-coordinator --bins "${build[@]}"
for crate in understudy-agent understudy-coordinator; do
  # cargo-deb warns that dev builds are for testing only; that is what they are used for here.
  cargo deb -p "$crate" --profile "$profile" --no-build --quiet -o "$out"
done
for dir in agent coordinator; do
  cargo generate-rpm -p "$dir" --profile "$profile" -o "$out"
done
ls -1 "$out"
