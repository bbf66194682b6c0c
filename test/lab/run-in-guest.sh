#!/usr/bin/env bash
# Runs a bash script inside a throwaway QEMU guest that boots the Debian 6.12 kernel with a real
# SR-IOV PF (emulated Intel igb: 7 VFs) behind an emulated Intel IOMMU. The guest chroots into
# the host's / (shared read-only over 9p), so the script uses the host's node/ip/modprobe/qemu.
#
# usage: run-in-guest.sh [--timeout SECS] [--cwd DIR] [--qemu CMD] [--devices FILE]
#                        [--modules a,b] SCRIPT OUTDIR
#   SCRIPT  runs as `/bin/bash SCRIPT` in the guest, cwd DIR (default: the repo root).
#   OUTDIR  writable in the guest at the same path; gets guest.log (script stdout+stderr),
#           status, console.log (serial console: kernel + init) and qemu.log. Other files the
#           caller put there (expectations for SCRIPT) stay and are readable in the guest.
#   --qemu CMD      what to run instead of the host's qemu-system-x86_64: another QEMU (e.g.
#                   scripts/qemu-sriov) or vfpool's wrapper (qemu-args/vfpool-qemu, which finds
#                   the domain by `-name guest=…` in --devices and execs $VFPOOL_QEMU).
#   --devices FILE  the guest's own hardware: QEMU arguments, one argv element per line (empty
#                   lines ignored), in place of the default igb PF on a root port (chassis 1).
#   --modules a,b   modules loaded before SCRIPT (default: igb,igbvf,vfio,vfio_pci,vfio_iommu_type1).
# In the guest: / is read-only, /tmp /run /dev/shm are tmpfs, HOME=/tmp/home,
# VFPOOL_LAB_GUEST=1 and VFPOOL_LAB_OUT=OUTDIR; the modules above are loaded.
# Prints guest.log live on stdout. Exit: the script's status; 124 timeout (default 600 s,
# counted from QEMU's start); 125 the guest never wrote a status (reason on stderr, console.log
# tail shown); 2 bad arguments.
# Env: VFPOOL_LAB_CACHE (initramfs cache dir, default test/lab/.cache), VFPOOL_LAB_ACCEL
# (default tcg; see below), VFPOOL_LAB_KVER (default newest /boot/vmlinuz-*), VFPOOL_LAB_APPEND
# (extra kernel command line, e.g. loglevel=7 to debug a boot), VFPOOL_LAB_TCG_THREAD (single).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
err() { echo "run-in-guest: $*" >&2; exit 125; }     # the lab itself is broken: no guest status
usage() { echo "run-in-guest: $*" >&2; exit 2; }     # the caller asked for something impossible

timeout_s=600 cwd=$repo qemu= devices= modules=igb,igbvf,vfio,vfio_pci,vfio_iommu_type1
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) [ $# -ge 2 ] || usage "--timeout needs seconds"; timeout_s=$2; shift 2 ;;
    --cwd) [ $# -ge 2 ] || usage "--cwd needs a directory"; cwd=$2; shift 2 ;;
    --qemu) [ $# -ge 2 ] || usage "--qemu needs a command"; qemu=$2; shift 2 ;;
    --devices) [ $# -ge 2 ] || usage "--devices needs a file"; devices=$2; shift 2 ;;
    --modules) [ $# -ge 2 ] || usage "--modules needs a comma-separated list"; modules=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    --) shift; break ;;
    -*) usage "unknown option $1" ;;
    *) break ;;
  esac
done
[ $# -eq 2 ] || usage "usage: run-in-guest.sh [--timeout SECS] [--cwd DIR] [--qemu CMD] [--devices FILE] [--modules a,b] SCRIPT OUTDIR"
[[ "$modules" =~ ^[A-Za-z0-9_,-]+$ ]] || usage "--modules wants module names separated by commas, got '$modules'"
[ -z "$devices" ] || [ -f "$devices" ] || usage "no such devices file: $devices"
[[ "$timeout_s" =~ ^[1-9][0-9]*$ ]] || usage "--timeout wants whole seconds, got '$timeout_s'"
[ -f "$1" ] || usage "no such script: $1"
[ -d "$cwd" ] || usage "no such directory: $cwd"
script=$(realpath "$1")
cwd=$(realpath "$cwd")
out=$(realpath -m "$2")

# Paths travel on the kernel command line, which splits on spaces and has no usable quoting
# for our parser: allow only plain characters.
for p in "$script" "$cwd" "$out"; do
  [[ "$p" =~ ^/[A-Za-z0-9._/+,:@=-]*$ ]] || usage "path has characters the kernel command line cannot carry: $p"
done
# The guest mounts tmpfs over /tmp and /run (the shared root is read-only), hiding the host's
# files there; only OUTDIR itself is mounted back. Catch this here rather than in the guest.
under() { case "$1/" in "$2"/*) return 0 ;; *) return 1 ;; esac; }
# The project itself may live there (CI clones wherever it likes): the guest binds it back.
keep=
for hidden in /tmp /run; do
  if under "$repo" "$hidden"; then keep=$repo; fi
done
for p in "$script" "$cwd"; do
  if ! under "$p" "$out" && ! { [ -n "$keep" ] && under "$p" "$keep"; }; then
    for hidden in /tmp /run /proc /sys /dev; do
      under "$p" "$hidden" && usage "$p is under $hidden, which the guest replaces; put it elsewhere or inside OUTDIR"
    done
  fi
done
case "$out" in /|/proc|/proc/*|/sys|/sys/*|/dev|/dev/*) usage "OUTDIR $out is not a usable directory" ;; esac
mkdir -p "$out" || usage "cannot create OUTDIR $out"

bash "$repo/scripts/install-lab-packages.sh" lab || err "scripts/install-lab-packages.sh lab failed"

kver=${VFPOOL_LAB_KVER:-$(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V | tail -n1)}
[ -n "$kver" ] && [ -r "/boot/vmlinuz-$kver" ] || err "no readable /boot/vmlinuz-${kver:-*}"
# The guest loads its modules with the host's modprobe from the shared /lib/modules.
[ -f "/lib/modules/$kver/modules.dep" ] || err "no /lib/modules/$kver/modules.dep"
if [ -n "$qemu" ]; then
  qemu=$(command -v "$qemu") || usage "--qemu: no such command: $qemu"
else
  qemu=$(command -v qemu-system-x86_64) || err "qemu-system-x86_64 not installed"
fi
if [ -n "$devices" ]; then
  mapfile -t guest_devices < <(grep -v '^[[:space:]]*$' "$devices")
else
  "$qemu" -device help 2>/dev/null | grep -q '"igb"' || err "$qemu has no igb device (need QEMU >= 8, bookworm-backports)"
  # The igb PF must sit behind a PCIe root port: SR-IOV needs PCI Express (no VFs on pcie.0),
  # and its VFs appear on the port's bus (01:10.0, 01:10.2, ...).
  guest_devices=(-netdev user,id=n0 -device pcie-root-port,id=rp0,chassis=1,slot=1
    -device igb,netdev=n0,bus=rp0,mac=52:54:00:aa:bb:01)
fi

# Initramfs cache: keyed by kernel version and the builder's own files, so editing the init
# rebuilds it. Built to a temp name and renamed, so parallel runs never see half a file.
cache=${VFPOOL_LAB_CACHE:-$here/.cache}
key=$(cat "$here/build-initramfs.sh" "$here/initramfs-init.sh" "$here/modprobe-chroot.sh" | sha256sum | cut -c1-12)
initrd=$cache/initramfs-$kver-$key.cpio.gz
if [ ! -f "$initrd" ]; then
  mkdir -p "$cache"
  VFPOOL_LAB_SKIP_INSTALL=1 bash "$here/build-initramfs.sh" --kver "$kver" "$initrd.new.$$" \
    || err "building the initramfs failed"
  mv -f "$initrd.new.$$" "$initrd"
  find "$cache" -maxdepth 1 -name 'initramfs-*.cpio.gz' ! -name "${initrd##*/}" -delete
fi

# KVM: /dev/kvm on these machines is a paravirtual KVM that cannot run a stock kernel
# ("failed to set MSR 0x10a", "KVM internal error"), and `-S` does not reveal it; only a full
# boot does. TCG always works, so it is the default; VFPOOL_LAB_ACCEL=kvm opts in elsewhere.
# thread=single, not multi: with multi-threaded TCG the 6.12 guest sometimes (1 boot in ~9 here)
# dies at ~3.5 s with "Oops: int3" in sched_clock_cpu: the late_initcall that marks sched_clock
# stable live-patches kernel text (int3-based text_poke_bp) while the other vCPU runs it, and
# MTTCG does not honour the kernel's cross-modifying-code protocol. One TCG thread for both
# vCPUs measured no slower for our workloads (boot + node: 16-19 s either way) and keeps the
# guest SMP. VFPOOL_LAB_TCG_THREAD=multi brings the old mode back.
accel=${VFPOOL_LAB_ACCEL:-tcg}
case "$accel" in
  tcg) accel_args=(-accel "tcg,thread=${VFPOOL_LAB_TCG_THREAD:-single}" -cpu max) ;;
  # intel-iommu intremap=on needs the split irqchip under KVM ("Interrupt Remapping cannot work
  # with kernel-irqchip=on").
  kvm) accel_args=(-accel kvm,kernel-irqchip=split -cpu host) ;;
  *) err "VFPOOL_LAB_ACCEL must be tcg or kvm, got '$accel'" ;;
esac

rm -f "$out/status" "$out/guest.log" "$out/console.log" "$out/qemu.log"
: >"$out/guest.log"

args=(
  -machine q35 "${accel_args[@]}" -m 2048 -smp 2
  -nodefaults -no-reboot -display none -monitor none
  -chardev "file,id=con0,path=$out/console.log" -serial chardev:con0
  # intel-iommu gives every VF its own IOMMU group (vfio-pci in the guest needs groups; without an
  # IOMMU it refuses unless noiommu mode). caching-mode=on as in LAB.md: QEMU requires it only when
  # a real vfio device sits behind the vIOMMU, harmless here. intremap: see the kvm case above.
  -device intel-iommu,intremap=on,caching-mode=on
  -kernel "/boot/vmlinuz-$kver" -initrd "$initrd"
  # panic=-1 + -no-reboot: if /init dies the kernel panics, "reboots", and QEMU exits at once.
  # no_timer_check: under TCG on a loaded host (several guests on 2 shared cores) the kernel's
  # early check that the timer IRQ arrives through the interrupt-remapped IO-APIC can miss its
  # window, and with intremap on that is a panic at 0.07 s ("timer doesn't work through
  # Interrupt-remapped IO-APIC"; seen here with three guests booting at once).
  -append "console=ttyS0 panic=-1 loglevel=4 intel_iommu=on no_timer_check vfpool.script=$script vfpool.cwd=$cwd vfpool.out=$out vfpool.modules=$modules${keep:+ vfpool.keep=$keep}${VFPOOL_LAB_APPEND:+ $VFPOOL_LAB_APPEND}"
  # multidevs=remap: / spans several host filesystems; without it inode numbers can collide.
  -fsdev local,id=fs0,path=/,security_model=none,readonly=on,multidevs=remap
  -device virtio-9p-pci,fsdev=fs0,mount_tag=hostroot
  -fsdev "local,id=fs1,path=$out,security_model=none,multidevs=remap"
  -device virtio-9p-pci,fsdev=fs1,mount_tag=out
  "${guest_devices[@]}"
)

qpid= tpid=
cleanup() {
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null || true
  [ -n "$tpid" ] && kill "$tpid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$(date +%s)
# timeout(1) sends TERM to QEMU after SECS and KILL 10 s later; it exits 124 if it had to.
timeout --kill-after=10 "$timeout_s" "$qemu" "${args[@]}" </dev/null >"$out/qemu.log" 2>&1 &
qpid=$!
tail -n +1 -f --pid="$qpid" "$out/guest.log" &
tpid=$!
rc=0; wait "$qpid" || rc=$?
qpid=
wait "$tpid" 2>/dev/null || true
tpid=
secs=$(( $(date +%s) - start ))

show_console() {
  echo "run-in-guest: --- last lines of $out/console.log ---" >&2
  tail -n 25 "$out/console.log" >&2 2>/dev/null || true
  [ -s "$out/qemu.log" ] && { echo "run-in-guest: --- $out/qemu.log ---" >&2; tail -n 10 "$out/qemu.log" >&2; }
  return 0
}
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "run-in-guest: timed out after ${timeout_s}s (guest killed); see $out/console.log" >&2
  show_console
  exit 124
fi
if [ ! -s "$out/status" ]; then
  echo "run-in-guest: guest never wrote a status (qemu exit $rc after ${secs}s); see $out/console.log" >&2
  show_console
  exit 125
fi
st=$(tr -d '[:space:]' <"$out/status")
[[ "$st" =~ ^[0-9]+$ ]] || { echo "run-in-guest: guest wrote a bad status '$st'" >&2; exit 125; }
echo "run-in-guest: status $st after ${secs}s (kernel $kver, $accel)" >&2
exit "$st"
