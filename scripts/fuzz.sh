#!/usr/bin/env bash
# Runs every fuzz target in common/fuzz (cargo-fuzz, nightly toolchain) for SECONDS each
# (default 30), two at a time (the test machine has two cores); fails if any target found a
# crash, which cargo-fuzz saves under common/fuzz/artifacts/TARGET/.
#   bash scripts/fuzz.sh [SECONDS] [TARGET…]
# The instrumented build is kept in /var/cache/understudy/fuzz-target (like the test VM
# image; UNDERSTUDY_FUZZ_TARGET_DIR overrides), so a later run compiles only what changed.
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
target_dir=${UNDERSTUDY_FUZZ_TARGET_DIR:-/var/cache/understudy/fuzz-target}
if ! mkdir -p "$target_dir" 2>/dev/null || [ ! -w "$target_dir" ]; then
  target_dir=$PWD/target
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build --release --target-dir "$target_dir"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
export secs target_dir logs
run_one() {
  mkdir -p "corpus/$1"
  # -rss_limit_mb: a decoder that allocates what its input announces is a finding.
  cargo +nightly fuzz run --release --target-dir "$target_dir" "$1" "corpus/$1" -- \
    -max_total_time="$secs" -rss_limit_mb=512 -print_final_stats=1 >"$logs/$1" 2>&1 ||
    touch "$logs/$1.crashed"
}
export -f run_one
echo "fuzz.sh: ${targets[*]} for ${secs}s each"
printf '%s\n' "${targets[@]}" | xargs -P 2 -I{} bash -c 'run_one {}'
status=0
for t in "${targets[@]}"; do
  if [ -e "$logs/$t.crashed" ]; then
    tail -n 60 "$logs/$t" >&2
    echo "fuzz.sh: $t found a crash (the input is saved under common/fuzz/artifacts/$t/)" >&2
    status=1
  else
    echo "fuzz.sh: $t: $(grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$logs/$t" |
      sed -E 's/^stat::([a-z_]+): +/\1 /' | paste -sd ' ')"
  fi
done
exit $status
