#!/usr/bin/env bash
# Make CRIU >= 4.2 and the libcriu headers/library available on Debian 12.
#
# Why: CRIU <= 4.0 fails `criu check` on kernels >= 6.13, and 4.1.x cannot
# dump TCP sockets on >= 6.16. Debian 12 ships 3.17, so unless the system
# already has a good CRIU we debootstrap a private Debian sid root (which
# carries criu + libcriu-dev 4.2.x) into a cache outside the work tree and run
# its criu through the root's own dynamic loader. That way criu gets sid's
# glibc and libraries but still sees the host's filesystem and processes
# (a chroot would not).
#
# Usage: provision-criu.sh [--print-env]   (run as root)
#   --print-mirror  print the Debian mirror it would use (from apt's sources) and exit
#   --print-env  print only the criu.env lines on stdout, for
#                eval "$(packaging/criu/provision-criu.sh --print-env)"
# Env: UNDERSTUDY_CRIU_CACHE   cache dir (default /var/cache/understudy/criu)
#      UNDERSTUDY_DEBIAN_MIRROR mirror for debootstrap (default: from apt sources)
set -euo pipefail

MIN_VERSION=4.2
CACHE=${UNDERSTUDY_CRIU_CACHE:-/var/cache/understudy/criu}
ROOT=$CACHE/root

print_env=0 print_mirror=0
case "${1:-}" in
  "") ;;
  --print-env) print_env=1 ;;
  --print-mirror) print_mirror=1 ;;
  -h|--help) sed -n '2,18s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--print-env|--print-mirror]" >&2; exit 2 ;;
esac
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
  log "installing debootstrap"
  # Stale or empty package lists are common on fresh machines: update on failure.
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q debootstrap >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; } ||
    die "could not install debootstrap with apt-get"
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

# --- choose a CRIU: a good system one, else the (cached) private root -------
mkdir -p "$CACHE/bin"
exec 9>"$CACHE/.lock"
# Concurrent runs would race on the root and the wrapper.
if ! flock -n 9; then log "waiting for another run to release $CACHE/.lock"; flock 9; fi
for stale in "$CACHE"/.root.*; do  # left by a run that was SIGKILLed
  if [ -d "$stale" ]; then unmount_under "$stale"; rm -rf --one-file-system "$stale"; fi
done

mode=root
sys_criu=$(PATH=$PATH:/usr/sbin:/sbin command -v criu || true)
if [ -n "$sys_criu" ] && [ "$(readlink -f "$sys_criu")" != "$(readlink -f "$CACHE/bin/criu")" ]; then
  sys_ver=$(criu_version "$sys_criu")
  sys_inc=$(find_include_dir /usr/include /usr/local/include)
  sys_lib=$(find_lib_dir /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib)
  if [ -n "$sys_ver" ] && version_ge "$sys_ver" "$MIN_VERSION" && [ -n "$sys_inc" ] && [ -n "$sys_lib" ] &&
     "$sys_criu" check >/dev/null 2>&1; then
    mode=system
  else
    log "system criu ${sys_ver:-?} at $sys_criu is unusable (need >= $MIN_VERSION, a passing check and libcriu-dev)"
  fi
fi

wrapper=$CACHE/bin/criu
if [ "$mode" = system ]; then
  printf '#!/bin/sh\nexec %q "$@"\n' "$sys_criu" >"$wrapper.tmp"
  inc=$sys_inc lib=$sys_lib root_env=""
else
  if [ -d "$ROOT" ] && [ ! -x "$ROOT/usr/sbin/criu" ]; then  # damaged by hand: start over
    unmount_under "$ROOT"; rm -rf --one-file-system "$ROOT"
  fi
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

# --- verify on every run: the kernel may have changed since the cache was made
if ! out=$("$wrapper" check 2>&1); then
  echo "$out" | tail -n 20 >&2
  die "'$wrapper check' failed: this kernel is not usable with criu $version"
fi

# Dump a live process holding a TCP listener plus an established loopback
# connection (which exercises network locking). setsid + /dev/null stdio
# means no --shell-job is needed; the process writes its pid once listening.
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
if ! "$wrapper" dump -t "$test_pid" -D "$work/img" --leave-running --tcp-established \
    -v4 -o dump.log 2>"$work/stderr"; then
  tail -n 25 "$work/img/dump.log" >&2 || cat "$work/stderr" >&2
  die "criu $version could not dump a process with TCP sockets (log above)"
fi
kill "$test_pid" 2>/dev/null || true; test_pid=""

if [ "$print_env" = 1 ]; then cat "$CACHE/criu.env" >&3; fi
echo "criu $version ready: $wrapper"
