#!/bin/busybox sh
# PID 1 of the lab guest (copied into the initramfs as /init by build-initramfs.sh).
#
# The guest has no disk: the host's / arrives read-only over virtio-9p (tag "hostroot") and a
# writable host directory over virtio-9p (tag "out"). We chroot into the host's root so the
# guest runs the host's own bash/node/ip/modprobe/qemu against the guest kernel. The host has
# the same kernel package installed, so /lib/modules/$(uname -r) in the shared root matches.
#
# Kernel command line (parameters with a dot never reach init's argv/env, the kernel treats
# them as module options, so we read /proc/cmdline):
#   vfpool.script=ABS  guest script, run as `/bin/bash ABS` (required)
#   vfpool.cwd=ABS     working directory for it (default /)
#   vfpool.out=ABS     host path of the "out" share; mounted at the same path inside the root
#   vfpool.modules=a,b modules loaded with the host's modprobe before the script
#   vfpool.keep=ABS    a directory under /tmp or /run (the project) kept visible over the tmpfs
#   vfpool.switchroot=1 switch_root into the shared root instead of chroot: the script runs as PID 1
#                      of the real root (libvirt's per-domain mount namespace fails inside a chroot:
#                      "Failed to create PTY"), writes its own status and powers off
# Writes OUT/guest.log (script stdout+stderr, also on the console) and OUT/status (exit code),
# then powers off. Any failure of our own ends in poweroff without a status file: the host
# reports that as "no status" and shows console.log.

PATH=/bin
export PATH
/bin/busybox mkdir -p /bin /proc /sys /dev /newroot
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null   # may already be automounted
exec </dev/console >/dev/console 2>&1

say() { echo "init: $*"; }
uptime_s() { read -r up _ </proc/uptime; echo "${up}s"; }
say "started (uptime $(uptime_s))"
die() { say "FATAL: $*"; sync; poweroff -f; sleep 5; exit 1; }   # exit -> panic -> reboot -> qemu -no-reboot quits

script= cwd=/ outdir= modules= keep= switchroot=
for w in $(cat /proc/cmdline); do
  case "$w" in
    vfpool.script=*) script=${w#*=} ;;
    vfpool.cwd=*) cwd=${w#*=} ;;
    vfpool.out=*) outdir=${w#*=} ;;
    vfpool.modules=*) modules=$(echo "${w#*=}" | tr , ' ') ;;
    vfpool.keep=*) keep=${w#*=} ;;
    vfpool.switchroot=*) switchroot=${w#*=} ;;
  esac
done
[ -n "$script" ] || die "no vfpool.script= on the kernel command line"
[ -n "$outdir" ] || die "no vfpool.out= on the kernel command line"

# 9p transport and filesystem, in dependency order (build-initramfs.sh wrote the order).
# Nothing autoloads them: there is no udev here and the kernel's modprobe helper is not set up yet.
while read -r ko; do
  insmod "/lib/modules/$ko" || die "insmod $ko failed"
done </lib/modules/load.order

R=/newroot
# msize: 9p's default (128 KiB) makes node's start-up slow over TCG; virtio caps it at 512000.
# cache=loose on the read-only root lets the guest cache host files (safe: nothing in the guest
# can change them, and a run is short). The out share stays cache=none so the host sees writes live.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot "$R" \
  || die "mount hostroot (9p) failed"
# A project that lives under /tmp or /run (a CI clone, say) would vanish under the tmpfs mounts
# below: hold it by a bind mount first and bind it back on top of the tmpfs.
if [ -n "$keep" ]; then
  mkdir -p /keep && mount -o bind "$R$keep" /keep || die "bind mount of $keep failed"
fi
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp" || die "tmpfs on /tmp failed"
mount -t tmpfs -o mode=755 tmpfs "$R/run" || die "tmpfs on /run failed"
if [ -n "$keep" ]; then
  mkdir -p "$R$keep" && mount -o bind /keep "$R$keep" || die "binding $keep back over the tmpfs failed"
fi
mount -t proc proc "$R/proc" || die "proc in root failed"
mount -t sysfs sysfs "$R/sys" || die "sysfs in root failed"
mount -t devtmpfs devtmpfs "$R/dev" || die "devtmpfs in root failed"
mkdir -p "$R/dev/pts" "$R/dev/shm"
# devtmpfs has no /dev/fd or /dev/std* (udev makes them); bash process substitution needs /dev/fd.
ln -sf /proc/self/fd "$R/dev/fd"
ln -sf /proc/self/fd/0 "$R/dev/stdin"
ln -sf /proc/self/fd/1 "$R/dev/stdout"
ln -sf /proc/self/fd/2 "$R/dev/stderr"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts" || die "devpts failed"
mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm" || die "tmpfs on /dev/shm failed"
# The out dir exists in the read-only root unless it lives under /tmp or /run (now tmpfs).
mkdir -p "$R$outdir" 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none out "$R$outdir" \
  || die "mount out share at $outdir failed"
O="$R$outdir"

# Kernel-requested modules (request_module: e.g. vfio asking for its IOMMU backend) run
# /proc/sys/kernel/modprobe in the initramfs root, not in our chroot: point it at a wrapper
# that runs the host's modprobe inside the shared root.
echo /bin/modprobe-chroot >/proc/sys/kernel/modprobe

if [ -n "$modules" ]; then
  # Host kmod reads the host's /lib/modules/<guest uname -r> (same kernel package) and
  # decompresses the .ko.xz itself.
  chroot "$R" /sbin/modprobe -a $modules || say "WARNING: modprobe -a $modules failed"
  say "loaded $modules (uptime $(uptime_s))"
fi

mkdir -p "$R/tmp/home"
say "running $script in $cwd (uptime $(uptime_s))"
if [ "$switchroot" = 1 ]; then
  # The shared root's busybox powers off; /run is a tmpfs there, so the runner can live in it.
  cat >"$R/run/vfpool-lab-pid1.sh" <<PID1
cd "$cwd" || exit 126
( env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp/home TERM=dumb LANG=C.UTF-8 \\
    VFPOOL_LAB_GUEST=1 VFPOOL_LAB_OUT="$outdir" /bin/bash "$script" </dev/null; echo \$? >/run/vfpool-lab-status ) 2>&1 | tee "$outdir/guest.log"
cp /run/vfpool-lab-status "$outdir/status"
sync
/bin/busybox poweroff -f
PID1
  exec switch_root "$R" /bin/bash /run/vfpool-lab-pid1.sh
fi
# stdin from /dev/null: a script waiting on the console would hang until the host's timeout.
( chroot "$R" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp/home TERM=dumb LANG=C.UTF-8 \
    VFPOOL_LAB_GUEST=1 VFPOOL_LAB_OUT="$outdir" \
    /bin/bash -c 'cd "$1" || exit 126; exec /bin/bash "$2"' vfpool-lab "$cwd" "$script" </dev/null
  echo $? >/status ) 2>&1 | tee "$O/guest.log"
st=$(cat /status 2>/dev/null)
say "script exited ${st:-?} (uptime $(uptime_s))"
echo "${st:-125}" >"$O/status"
sync
umount "$O" 2>/dev/null
poweroff -f
