#!/usr/bin/env bash
# Installs what building, the demo and the tests need on a fresh Debian 12 (run as root).
# Idempotent: packages already present are not reinstalled, and apt-get update runs only
# when something is missing.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "install-deps: run as root (namespaces, CRIU and apt need it)" >&2; exit 77; }

# iproute2 + util-linux: namespace test hosts (ip, nsenter); python3: demo and test
# workloads (SQLite through its sqlite3 module); debootstrap: the private CRIU root;
# libclang-dev + pkg-config: bindgen for libcriu; rsync: the data-directory benchmark baseline;
# rpm: the package tests read the built .rpm files with it; qemu-system-x86, qemu-utils,
# openssh-client, e2fsprogs: the test VMs (scripts/vm/build-image.sh, tests/src/vm.rs).
pkgs=(iproute2 util-linux python3 debootstrap libclang-dev pkg-config ca-certificates gcc rsync rpm
  qemu-system-x86 qemu-utils openssh-client e2fsprogs)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# qemu-system-x86 can displace a qemu-utils from backports (qemu-img then missing): put
# back the one that matches it.
if ! command -v qemu-img >/dev/null; then
  echo "install-deps: installing qemu-utils to match qemu-system-x86" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "qemu-utils=$(dpkg-query -W -f='${Version}' qemu-system-x86)" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  for d in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
  done
fi
command -v cargo >/dev/null || {
  echo "install-deps: cargo not found; install Rust 1.95 with rustup (rust-toolchain.toml pins it)" >&2
  exit 69
}

# promtool, to check the shipped Prometheus alert rules and lint /metrics
# (tests/tests/alerting.rs): taken from Debian's prometheus package without installing it,
# so no Prometheus server is set up or started.
if ! command -v promtool >/dev/null; then
  echo "install-deps: promtool from Debian's prometheus package" >&2
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q prometheus >/dev/null && dpkg-deb -x prometheus_*.deb x) || {
    apt-get update -q >/dev/null
    (cd "$tmp" && apt-get download -q prometheus >/dev/null && dpkg-deb -x prometheus_*.deb x)
  }
  install -m 755 "$tmp/x/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$tmp"
fi

# Fuzzing (scripts/fuzz.sh, short runs in the test command): a nightly toolchain beside the
# pinned one (cargo-fuzz needs the sanitizer flags only nightly takes) and cargo-fuzz, pinned.
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "install-deps: rustup toolchain install nightly" >&2
  rustup toolchain install nightly --profile minimal
fi

# Packaging (scripts/package.sh): cargo-deb and cargo-generate-rpm, pinned, built once.
for tool in cargo-deb@3.8.0 cargo-generate-rpm@0.21.1 cargo-fuzz@0.13.2; do
  name=${tool%@*}
  if ! "$name" --version 2>/dev/null | grep -q "${tool#*@}"; then
    echo "install-deps: cargo install $tool" >&2
    cargo install --locked --quiet "$tool"
  fi
done
