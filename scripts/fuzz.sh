#!/usr/bin/env bash
# Runs every fuzz target in common/fuzz (cargo-fuzz, nightly toolchain) for SECONDS each
# (default 30), one after the other; stops at the first crash, which cargo-fuzz saves under
# common/fuzz/artifacts/TARGET/ with the command that reproduces it.
#   bash scripts/fuzz.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "$0")/../common/fuzz"
secs=${1:-30}
shift || true
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly --profile minimal)" >&2
  exit 69
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is missing (cargo install cargo-fuzz --locked)" >&2
  exit 69
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build --release
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "fuzz.sh: $t for ${secs}s"
  # -rss_limit_mb: a decoder that allocates what its input announces is a finding.
  if ! cargo +nightly fuzz run --release "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=512 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz.sh: $t found a crash (the input is saved under common/fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)" "$log" | sed "s/^/  /"
done
