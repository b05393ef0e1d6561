#!/usr/bin/env bash
# Builds the test VM image once and caches it: Debian 12 (bookworm) with its stock kernel
# (6.1, soft-dirty memory tracking), systemd, Debian's CRIU, openssh-server for the test
# harness, and the services the VM tests protect (memcached, PostgreSQL), disabled so that
# nothing starts them but the tests. Tests boot copy-on-write overlays of it
# (tests/src/vm.rs).
#
# Output in $UNDERSTUDY_VM_CACHE (default /var/cache/understudy/vm):
#   rootfs.img      ext4 filesystem image (raw), the VMs' root disk (read-only base)
#   vmlinuz, initrd.img   the image's kernel and initramfs, booted directly by QEMU
#   id_ed25519{,.pub}     the key the harness logs in with (root)
#   image-VERSION         stamp: present when the image of this VERSION is complete
#
# Usage: scripts/vm/build-image.sh [--print-dir]   (run as root; ~2-3 min the first time)
set -euo pipefail

VERSION=1   # bump when the package list or the setup below changes
CACHE=${UNDERSTUDY_VM_CACHE:-/var/cache/understudy/vm}
PACKAGES=systemd-sysv,udev,dbus,openssh-server,iproute2,kmod,procps,util-linux,criu,iptables,nftables,python3,memcached,postgresql,less

log() { echo "vm-image: $*" >&2; }
die() { echo "vm-image: ERROR: $*" >&2; exit 1; }

[ "${1:-}" = --print-dir ] && { echo "$CACHE"; exit 0; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ -f "$CACHE/image-$VERSION" ]; then
  exit 0
fi
command -v debootstrap >/dev/null || die "debootstrap is missing (scripts/install-deps.sh installs it)"
command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 is missing (e2fsprogs)"

here=$(cd "$(dirname "$0")" && pwd)
mirror=${UNDERSTUDY_DEBIAN_MIRROR:-$(bash "$here/../../packaging/criu/provision-criu.sh" --print-mirror)}
work=$(mktemp -d "$CACHE/.build.XXXXXX")
root=$work/root
case "$root" in "$CACHE"/.build.*/root) ;; *) die "unexpected build root $root" ;; esac
unmount_under() {
  awk -v p="$1/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
}
cleanup() { unmount_under "$work"; rm -rf --one-file-system "$work"; }
trap cleanup EXIT

started=$(date +%s)
log "debootstrapping bookworm from $mirror into $root"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
log "installing the stock kernel"
# The initramfs needs only what boots a virtio disk (MODULES=list): ~6 MB instead of ~36.
mkdir -p "$root/etc/initramfs-tools"
printf 'MODULES=list\nBUSYBOX=auto\nCOMPRESS=zstd\n' >"$root/etc/initramfs-tools/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk virtio_net ext4 >"$root/etc/initramfs-tools/modules"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
  -o Dpkg::Options::=--force-confold --no-install-recommends linux-image-amd64 \
  >"$work/kernel.log" 2>&1 || { tail -n 30 "$work/kernel.log" >&2; die "kernel install failed"; }
unmount_under "$root"

log "configuring"
echo understudy-vm >"$root/etc/hostname"
echo '/dev/vda / ext4 rw,relatime 0 1' >"$root/etc/fstab"
# The harness's control NIC (QEMU user networking, MAC 52:54:00:12:…) gets DHCP; the test
# LAN NIC is configured by the harness.
mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/10-control.network" <<'EOF'
[Match]
MACAddress=52:54:00:12:00:01 52:54:00:12:00:02 52:54:00:12:00:03
[Network]
DHCP=ipv4
EOF
chroot "$root" systemctl enable systemd-networkd >/dev/null 2>&1
# Nothing starts the protected services but the tests; no timers touch the network.
for unit in memcached postgresql apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
  chroot "$root" systemctl disable "$unit" >/dev/null 2>&1 || true
done
chroot "$root" systemctl mask systemd-timesyncd.service >/dev/null 2>&1 || true
rm -f "$CACHE/id_ed25519" "$CACHE/id_ed25519.pub"
ssh-keygen -q -t ed25519 -N '' -C understudy-vm-tests -f "$CACHE/id_ed25519"
mkdir -p -m 700 "$root/root/.ssh"
cp "$CACHE/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
cat >>"$root/etc/ssh/sshd_config" <<'EOF'
PermitRootLogin prohibit-password
UseDNS no
EOF
# The cluster directory the harness shares, and the binaries it shares.
mkdir -p "$root/mnt/understudy-bin" "$root/mnt/understudy-share" "$root/srv"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin

cp -L "$root/vmlinuz" "$work/vmlinuz"
cp -L "$root/initrd.img" "$work/initrd.img"
size_mb=$(( $(du -sm "$root" | cut -f1) + 1536 ))
log "making the ${size_mb} MiB ext4 image"
mkfs.ext4 -q -F -L root -d "$root" "$work/rootfs.img" "${size_mb}M"
mv "$work/rootfs.img" "$work/vmlinuz" "$work/initrd.img" "$CACHE/"
touch "$CACHE/image-$VERSION"
log "done in $(( $(date +%s) - started )) s: $(du -sh "$CACHE/rootfs.img" | cut -f1) in $CACHE"
