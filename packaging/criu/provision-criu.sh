#!/usr/bin/env bash
# Make a CRIU that works on this kernel available to understudy-agent, as
# /var/cache/understudy/criu/bin/criu (the agent's default), and check it.
#
# Which one: the distribution's own CRIU when it is new enough for this kernel
# (3.17, Debian 12's, up to kernel 6.12; 4.2 from 6.13 on: CRIU <= 4.0 fails
# `criu check` on kernels >= 6.13, and 4.1.x cannot dump TCP sockets on >= 6.16),
# passes `criu check` and can dump a process holding TCP sockets. Only when it
# cannot does the script debootstrap a private Debian sid root (criu and
# libcriu-dev 4.2.x) into the cache and run its criu through the root's own
# dynamic loader: criu gets sid's glibc and libraries but still sees the host's
# filesystem and processes (a chroot would not).
#
# Network and side effects: the system CRIU path needs neither. The private root
# needs a Debian mirror (~240 MB into /var/cache/understudy/criu/root) and, if
# missing, installs debootstrap with apt-get (marked automatically installed, so
# `apt autoremove` takes it away again). Offline hosts: run `--export FILE` on a
# connected machine of the same architecture and `--import FILE` on the host.
#
# Usage: provision-criu.sh [--print-env | --print-mirror | --export FILE | --import FILE]
#   (run as root)
#   --print-env     print only the criu.env lines on stdout, for
#                   eval "$(packaging/criu/provision-criu.sh --print-env)"
#   --print-mirror  print the Debian mirror it would use (from apt's sources) and exit
#   --export FILE   build (or reuse) the private root and write it to FILE (.tar.gz),
#                   whatever the system CRIU; nothing else is changed
#   --import FILE   unpack a root made by --export instead of downloading one, then
#                   choose and check as usual (no network needed)
# Env: UNDERSTUDY_CRIU_CACHE   cache dir (default /var/cache/understudy/criu)
#      UNDERSTUDY_DEBIAN_MIRROR mirror for debootstrap (default: from apt sources)
set -euo pipefail

CACHE=${UNDERSTUDY_CRIU_CACHE:-/var/cache/understudy/criu}
ROOT=$CACHE/root

usage() { echo "usage: $0 [--print-env | --print-mirror | --export FILE | --import FILE]" >&2; exit 64; }
print_env=0 print_mirror=0 export_to="" import_from=""
case "${1:-}" in
  "") ;;
  --print-env) print_env=1 ;;
  --print-mirror) print_mirror=1 ;;
  --export) export_to=${2:-}; [ -n "$export_to" ] || usage ;;
  --import) import_from=${2:-}; [ -n "$import_from" ] || usage
            [ -f "$import_from" ] || { echo "provision-criu: --import $import_from: no such file" >&2; exit 66; } ;;
  -h|--help) sed -n '2,30s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) usage ;;
esac

# The oldest CRIU that works on this kernel (the agent applies the same rule).
kernel=$(uname -r)
kmajor=${kernel%%.*}; kminor=${kernel#*.}; kminor=${kminor%%[!0-9]*}
if [ "$kmajor" -gt 6 ] || { [ "$kmajor" -eq 6 ] && [ "$kminor" -ge 13 ]; }; then
  MIN_VERSION=4.2
else
  MIN_VERSION=3.17
fi
# fd 3 is the "real" stdout; with --print-env everything else goes to stderr
# so that the output stays eval-able.
exec 3>&1
if [ "$print_env" = 1 ]; then exec 1>&2; fi

log() { echo "provision-criu: $*" >&2; }
die() { echo "provision-criu: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (criu needs CAP_SYS_ADMIN and friends)"

# --- cleanup of temp dirs / the test process, also on failure or Ctrl-C -----
tmp_root="" work="" test_pid="" ds_pid=""
unmount_under() {  # debootstrap mounts proc/sys in the target; never rm -rf through them
  awk -v p="$1/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
}
cleanup() {
  if [ -n "$test_pid" ]; then kill "$test_pid" 2>/dev/null || true; fi
  if [ -n "$ds_pid" ]; then kill -- "-$ds_pid" 2>/dev/null || true; wait "$ds_pid" 2>/dev/null || true; fi
  if [ -n "$work" ]; then rm -rf "$work"; fi
  if [ -n "$tmp_root" ] && [ -d "$tmp_root" ]; then
    unmount_under "$tmp_root"; rm -rf --one-file-system "$tmp_root"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

version_ge() { [ "$(printf '%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
criu_version() { "$@" --version 2>/dev/null | awk '/^Version:/ {print $2; exit}'; }

# Directory to pass as -I: prefer the parent of criu/criu.h so that both
# <criu/criu.h> and the <protobuf-c/protobuf-c.h> it pulls in resolve.
find_include_dir() {
  local h
  h=$(find "$@" -maxdepth 3 -name criu.h -print -quit 2>/dev/null) || true
  [ -n "$h" ] || return 0
  h=$(dirname "$h")
  if [ "$(basename "$h")" = criu ]; then dirname "$h"; else echo "$h"; fi
}
find_lib_dir() {
  local l
  l=$(find "$@" -maxdepth 2 -name libcriu.so -print -quit 2>/dev/null) || true
  if [ -n "$l" ]; then dirname "$l"; fi
}

# First Debian mirror URI from apt's sources (deb822 *.sources or one-line
# *.list), skipping the security archive, which has no sid.
debian_mirror() {
  if [ -n "${UNDERSTUDY_DEBIAN_MIRROR:-}" ]; then echo "$UNDERSTUDY_DEBIAN_MIRROR"; return; fi
  local uris
  uris=$( {
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '$1 == "URIs:" {for (i = 2; i <= NF; i++) print $i}'
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      sed -e 's/\[[^]]*\]//' | awk '$1 == "deb" {print $2}'
  } | grep -E '^https?://' | grep -v -- '-security' || true)
  echo "$uris" | grep -m1 -E '/debian/?$' || echo "$uris" | grep -m1 . || echo http://deb.debian.org/debian
}

if [ "$print_mirror" = 1 ]; then debian_mirror >&3; exit 0; fi

ensure_debootstrap() {
  command -v debootstrap >/dev/null && return
  log "installing debootstrap (marked automatically installed: \`apt autoremove\` removes it)"
  # Stale or empty package lists are common on fresh machines: update on failure.
  export DEBIAN_FRONTEND=noninteractive
  local get=(apt-get install -y -q --no-install-recommends debootstrap)
  "${get[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && "${get[@]}" >/dev/null; } ||
    die "could not install debootstrap with apt-get (no network? see --import)"
  apt-mark auto debootstrap >/dev/null 2>&1 || true
}

# The criu command line for a private root (also used before it is renamed).
root_criu() {
  local r=$1; shift
  "$r/lib64/ld-linux-x86-64.so.2" --library-path "$r/lib/x86_64-linux-gnu:$r/usr/lib/x86_64-linux-gnu" \
    "$r/usr/sbin/criu" "$@"
}

build_root() {
  [ "$(uname -m)" = x86_64 ] || die "the private root is only set up for x86_64"
  ensure_debootstrap
  local mirror; mirror=$(debian_mirror)
  # Build beside the final location and rename only on success, so an
  # interrupted or failed run never leaves a half-made root behind.
  tmp_root=$(mktemp -d "$CACHE/.root.XXXXXX")
  chmod 755 "$tmp_root"  # mktemp makes it 0700; a root fs should be 0755
  log "debootstrapping Debian sid with criu into $ROOT from $mirror (~30 s, ~240 MB)"
  # In its own session and waited for with `wait`, so that a TERM/INT to this
  # script can stop the whole debootstrap (dpkg, chroot...) before cleanup.
  # It inherits the lock fd: if this script is SIGKILLed, the next run waits
  # for the orphaned debootstrap to finish before removing its temp dir.
  setsid debootstrap --variant=minbase --include=criu,libcriu-dev sid "$tmp_root" "$mirror" \
    </dev/null >"$CACHE/debootstrap.log" 2>&1 &
  ds_pid=$!
  if ! wait "$ds_pid"; then
    ds_pid=""
    tail -n 20 "$CACHE/debootstrap.log" >&2
    die "debootstrap failed (full log: $CACHE/debootstrap.log)"
  fi
  ds_pid=""
  unmount_under "$tmp_root"
  [ -n "$(criu_version root_criu "$tmp_root")" ] || die "criu in the new root does not run"
  mv -T "$tmp_root" "$ROOT"
  tmp_root=""
}

# --- the cache, its lock, leftovers of killed runs ----------------------------
mkdir -p "$CACHE/bin"
exec 9>"$CACHE/.lock"
# Concurrent runs would race on the root and the wrapper.
if ! flock -n 9; then log "waiting for another run to release $CACHE/.lock"; flock 9; fi
for stale in "$CACHE"/.root.*; do  # left by a run that was SIGKILLed
  if [ -d "$stale" ]; then unmount_under "$stale"; rm -rf --one-file-system "$stale"; fi
done
if [ -d "$ROOT" ] && [ ! -x "$ROOT/usr/sbin/criu" ]; then  # damaged by hand: start over
  unmount_under "$ROOT"; rm -rf --one-file-system "$ROOT"
fi

if [ -n "$export_to" ]; then
  [ -d "$ROOT" ] || build_root
  log "writing $ROOT to $export_to"
  tar -C "$CACHE" -czf "$export_to.tmp" root && mv -f "$export_to.tmp" "$export_to"
  echo "exported criu $(criu_version root_criu "$ROOT") root: $export_to ($(du -h "$export_to" | cut -f1))"
  echo "on the host: provision-criu.sh --import $(basename "$export_to")"
  exit 0
fi
if [ -n "$import_from" ]; then
  tmp_root=$(mktemp -d "$CACHE/.root.XXXXXX")
  tar -C "$tmp_root" -xzf "$import_from" || die "--import $import_from: not a root made by --export"
  [ -x "$tmp_root/root/usr/sbin/criu" ] || die "--import $import_from: no usr/sbin/criu in it (made by --export?)"
  [ -n "$(criu_version root_criu "$tmp_root/root")" ] || die "--import $import_from: its criu does not run here"
  if [ -d "$ROOT" ]; then unmount_under "$ROOT"; rm -rf --one-file-system "$ROOT"; fi
  mv -T "$tmp_root/root" "$ROOT" && rm -rf "$tmp_root"
  tmp_root=""
  log "imported a criu $(criu_version root_criu "$ROOT") root from $import_from"
fi

# --- checks: does this CRIU work on this kernel? -------------------------------
# `criu check`, then a dump of a live process holding a TCP listener plus an
# established loopback connection (which exercises network locking). setsid +
# /dev/null stdio means no --shell-job is needed; the process writes its pid
# once listening. Returns non-zero, saying why, if the CRIU cannot serve here.
works_here() {
  local criu=$1 out
  if ! out=$("$criu" check 2>&1); then
    echo "$out" | tail -n 5 >&2
    log "'$criu check' failed on kernel $kernel"
    return 1
  fi
  command -v python3 >/dev/null || die "python3 is needed for the dump self-test"
  work=$(mktemp -d "${TMPDIR:-/tmp}/understudy-criu-verify.XXXXXX")
  setsid python3 -c '
import os, socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
c = socket.create_connection(s.getsockname()); a, _ = s.accept()
open(sys.argv[1] + ".tmp", "w").write(str(os.getpid())); os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)' "$work/pid" </dev/null >"$work/test.out" 2>&1 3>&- 9>&- &
  test_pid=$!  # same process (setsid/pyenv shims exec); the pid file confirms it
  for _ in $(seq 100); do [ -s "$work/pid" ] && break; sleep 0.1; done
  [ -s "$work/pid" ] || { cat "$work/test.out" >&2; die "TCP test process did not start"; }
  test_pid=$(cat "$work/pid")
  mkdir "$work/img"
  # -v4 so that the log explains a failure; criu's stderr is kept out of the
  # way because it repeats a harmless "Can't setup RLIMIT_NOFILE" error in
  # containers.
  local ok=0
  if ! "$criu" dump -t "$test_pid" -D "$work/img" --leave-running --tcp-established \
      -v4 -o dump.log 2>"$work/stderr"; then
    tail -n 15 "$work/img/dump.log" >&2 || cat "$work/stderr" >&2
    log "$criu could not dump a process with TCP sockets (log above)"
    ok=1
  fi
  kill "$test_pid" 2>/dev/null || true; test_pid=""
  rm -rf "$work"; work=""
  return $ok
}

# --- choose: the system CRIU if it works here, else the private root ----------
wrapper=$CACHE/bin/criu
mode=""
sys_criu=$(PATH=$PATH:/usr/sbin:/sbin command -v criu || true)
if [ -n "$sys_criu" ] && [ "$(readlink -f "$sys_criu")" != "$(readlink -f "$wrapper")" ]; then
  sys_ver=$(criu_version "$sys_criu")
  if [ -z "$sys_ver" ] || ! version_ge "$sys_ver" "$MIN_VERSION"; then
    log "system criu ${sys_ver:-?} at $sys_criu is too old for kernel $kernel (needs >= $MIN_VERSION)"
  elif works_here "$sys_criu"; then
    mode=system
  else
    log "system criu $sys_ver at $sys_criu does not work on this kernel"
  fi
fi

if [ "$mode" = system ]; then
  printf '#!/bin/sh\n# Generated by provision-criu.sh: the system CRIU, which works on this kernel.\nexec %q "$@"\n' \
    "$sys_criu" >"$wrapper.tmp"
  # Headers and library for building the agent, where libcriu-dev is installed;
  # an agent host needs only the binary.
  inc=$(find_include_dir /usr/include /usr/local/include)
  lib=$(find_lib_dir /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib)
  root_env=""
else
  mode=root
  [ -d "$ROOT" ] || build_root
  # The sid binaries cannot run on the host's older glibc, so criu's helpers
  # (sh, iptables, ip) must come from the host PATH, not from the root. By
  # default criu locks established TCP connections by running iptables, which
  # minimal Debian hosts lack; nftables locking runs in-process via the
  # root's libnftables, so default to it (a later --network-lock overrides it).
  # --library-path (not LD_LIBRARY_PATH) keeps sid's libs out of those helpers.
  cat >"$wrapper.tmp" <<EOF
#!/bin/sh
# Generated by provision-criu.sh: CRIU from a private Debian sid root, run via its own loader.
R=$(printf %q "$ROOT")
exec "\$R/lib64/ld-linux-x86-64.so.2" --library-path "\$R/lib/x86_64-linux-gnu:\$R/usr/lib/x86_64-linux-gnu" \\
  "\$R/usr/sbin/criu" --network-lock nftables "\$@"
EOF
  inc=$(find_include_dir "$ROOT/usr/include")  # holds only criu/, protobuf-c/, google/
  lib=$(find_lib_dir "$ROOT/usr/lib/x86_64-linux-gnu")
  root_env=$ROOT
  [ -n "$inc" ] && [ -n "$lib" ] || die "libcriu-dev files missing in $ROOT; delete $CACHE and rerun"
  # Host programs must not get the root's lib dir on their search path (its
  # newer libc.so.6 would be loaded and break them), so expose just libcriu
  # and its one dependency libprotobuf-c (both need only GLIBC_2.14).
  mkdir -p "$CACHE/lib"
  ln -sf "$lib"/libcriu.* "$lib"/libprotobuf-c.* "$CACHE/lib/"
  lib=$CACHE/lib
fi
chmod 755 "$wrapper.tmp" && mv -f "$wrapper.tmp" "$wrapper"

version=$(criu_version "$wrapper")
[ -n "$version" ] || die "$wrapper --version failed"
{
  printf 'CRIU_BIN=%q\n' "$wrapper"
  printf 'CRIU_VERSION=%q\n' "$version"
  printf 'CRIU_INCLUDE_DIR=%q\n' "$inc"
  printf 'CRIU_LIB_DIR=%q\n' "$lib"
  printf 'CRIU_ROOT=%q\n' "$root_env"
} >"$CACHE/criu.env.tmp"
mv -f "$CACHE/criu.env.tmp" "$CACHE/criu.env"

# --- the private root is checked on every run: the kernel may have changed ----
if [ "$mode" = root ] && ! works_here "$wrapper"; then
  die "criu $version from the private root does not work on kernel $kernel either"
fi

if [ "$print_env" = 1 ]; then cat "$CACHE/criu.env" >&3; fi
echo "criu $version ready ($([ "$mode" = system ] && echo "the system's, $sys_criu" || echo "private root $ROOT")): $wrapper"
