#!/usr/bin/env bash
# Proof (b): a Debian 6.12 guest kernel with a failover pair vfpool generated (virtio-net standby
# with failover=on, an emulated e1000e primary with failover_pair_id, same MAC, on vfpool's root
# port) migrated between two QEMU 10.0 processes by `vfpool migrate perform --to`: QEMU sends
# UNPLUG_PRIMARY on the source, the migration completes, and on the destination the guest's
# failover master has its primary back with the same MAC.
#
# The guest is a busybox initramfs with the failover, net_failover, virtio_net and e1000e
# modules, and nothing shared over 9p: a mounted 9p export blocks migration. It reports its
# failover master on the serial console every second (the source and the destination each
# write their own console file).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap finish EXIT
need qemu-system-x86_64 node cpio busybox xz
[ -f "$repo/dist/bin/cli.mjs" ] || setup_fail "run npm run build first"
work=$(mktemp -d /tmp/vfpool-mig-b.XXXXXX)
QEMU=${VFPOOL_QEMU:-qemu-system-x86_64}
KVER=${VFPOOL_LAB_KVER:-$(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V | tail -n1)}
[ -n "$KVER" ] && [ -d "/lib/modules/$KVER" ] || setup_fail "no Debian kernel (scripts/install-lab-packages.sh lab installs linux-image-amd64)"
MAC=52:54:00:9a:00:21
BOOT_TIMEOUT=${VFPOOL_MIG_BOOT_TIMEOUT:-300}

# ---- the guest: busybox + the four modules ------------------------------------------------
root=$work/initramfs
mkdir -p "$root"/{bin,dev,proc,sys,lib/modules}
cp /bin/busybox "$root/bin/busybox"
: >"$root/lib/modules/load.order"
while read -r _ path _; do
  name=$(basename "${path%.xz}")
  xz -dc "$path" >"$root/lib/modules/$name"; echo "$name" >>"$root/lib/modules/load.order"
done < <(for m in virtio_net e1000e; do modprobe -S "$KVER" --show-depends "$m"; done | awk '$1=="insmod" && !seen[$2]++')
grep -qx e1000e.ko "$root/lib/modules/load.order" && grep -qx virtio_net.ko "$root/lib/modules/load.order" || setup_fail "modules: $(tr '\n' ' ' <"$root/lib/modules/load.order")"
cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/load.order); do insmod /lib/modules/$m; done
for d in /sys/class/net/*; do ip link set "${d##*/}" up 2>/dev/null; done
while true; do
  line=""
  for d in /sys/class/net/*; do
    n=${d##*/}; lowers=""
    for l in "$d"/lower_*; do [ -e "$l" ] || continue; ln=${l##*/lower_}; drv=$(readlink /sys/class/net/$ln/device/driver); lowers="$lowers $ln(${drv##*/})=$(cat /sys/class/net/$ln/address)"; done
    [ -n "$lowers" ] && line="$line master=$n mac=$(cat $d/address) lowers:$lowers;"
  done
  echo "FAILOVER${line:- none}"
  i=$((${i:-0} + 1)); [ "$i" = 20 ] && dmesg | grep -iE 'pci|failover|e1000e|hotplug|acpiphp' | tail -n 25
  for d in /sys/class/net/*; do ip link set "${d##*/}" up 2>/dev/null; done
  sleep 1
done
INIT
chmod 0755 "$root/init"
(cd "$root" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$work/initramfs.cpio.gz" || setup_fail "initramfs"

# ---- the plans prepare writes on each host (the pool path is proof (a)'s) ------------------
for h in src dst; do
  mkdir -p "$work/$h/run"
  node --input-type=module -e "
    const m = await import('$repo/dist/src/state/domain-plan.js');
    await m.writeDomainPlan('$work/$h/run', { version: 1, domain: 'fo1', uuid: null, delivery: 'cmdline',
      vfs: [{ id: 'vfpool-vf0', host: null, emulatedModel: 'e1000e', mac: '$MAC', failoverStandbyMac: '$MAC', guestAddress: null }], sriovNics: [] }, { uid: 0, gid: 0 });" || setup_fail "plan on $h"
done
base=(-name guest=fo1 -machine q35 -accel tcg -cpu max -m 256 -smp 1 -nodefaults -display none -monitor none -no-reboot
  -kernel "/boot/vmlinuz-$KVER" -initrd "$work/initramfs.cpio.gz" -append "console=ttyS0 loglevel=4 no_timer_check panic=-1"
  -netdev user,id=n0 -device "virtio-net-pci,id=net0,netdev=n0,mac=$MAC,bus=pcie.0,addr=0x3"
  # An emulated primary loads its option ROM into a RAM block that QEMU lists at the migration's
  # setup, before it waits for the unplug; the destination keeps the primary hidden, has no such
  # block and refuses the stream ('Unknown ramblock "…/e1000e.rom", cannot accept migration',
  # measured). A VF's vfio-pci ROM is no RAM block, so only the stand-in needs this.
  -global e1000e.romfile=)
vfpool_at() { local h=$1; shift; VFPOOL_HOST=sim:$work/$h/host.json VFPOOL_CONFIG_DIR=$work/$h/etc VFPOOL_STATE_DIR=$work/$h/run node "$repo/dist/bin/cli.mjs" "$@"; }
for h in src dst; do echo '{"pfs":[]}' >"$work/$h/host.json"; done
start() { # start HOST [EXTRA...]: the argv vfpool's wrapper would exec
  local h=$1; shift
  local -a argv
  mapfile -t argv < <(node "$repo/dist/test/migrate/gen-argv.js" "$work/$h/run" -- "${base[@]}" -serial "file:$work/$h-console.log" "$@") || return 1
  printf '%s\n' "${argv[@]}" >"$work/$h-argv.txt"
  "$QEMU" "${argv[@]}" >"$work/$h-qemu.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -S "$work/$h/run/qemu/fo1/qmp.sock" ] && return 0; sleep 0.1; done
  why="no QMP socket"; return 1
}
generated() { grep -q 'failover=on' "$work/src-argv.txt" && grep -q "failover_pair_id=net0" "$work/src-argv.txt" || { why="$(grep -- vfpool-vf0 "$work/src-argv.txt")"; return 1; }; }
t0=$(now_ms)
start src || setup_fail "source QEMU: $why $(cat "$work/src-qemu.log" 2>/dev/null)"
check "source QEMU runs the generated failover pair (failover=on on net0, e1000e primary with failover_pair_id=net0)" generated
src_sock=$work/src/run/qemu/fo1/qmp.sock dst_sock=$work/dst/run/qemu/fo1/qmp.sock
wait_line() { # wait_line FILE REGEX SECONDS
  local end=$(( $(date +%s) + $3 ))
  until grep -qE "$2" "$1" 2>/dev/null; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 1; done
}
# The master carries the MAC, and both slaves are under it: the standby (virtio_net) and the primary (e1000e).
PAIRED="master=[a-z0-9]+ mac=$MAC lowers:( [a-z0-9]+\((virtio_net|e1000e)\)=$MAC){2};"
enslaved() { wait_line "$work/src-console.log" "$PAIRED" "$BOOT_TIMEOUT" || { why="no failover master with its primary within ${BOOT_TIMEOUT}s: $(grep FAILOVER "$work/src-console.log" | tail -n1)"; return 1; }
  echo "     guest booted, primary enslaved after $(( $(now_ms) - t0 )) ms: $(grep -E "$PAIRED" "$work/src-console.log" | tail -n1)"; }
check "source guest: net_failover enslaves the primary under the standby's master, same MAC" enslaved
[ "$failed" = 0 ] || exit 1
PORT=$(free_port)
start dst -incoming "tcp:127.0.0.1:$PORT" || setup_fail "destination QEMU: $why"
hidden_dst() { ! qmp "$dst_sock" qom-list '{"path":"/machine/peripheral"}' | grep -q '"vfpool-vf0"' || { why="primary visible on the incoming QEMU"; return 1; }; }
check "destination starts -incoming with the primary on its command line, hidden" hidden_dst
perform() { vfpool_at src migrate perform fo1 --to "tcp:127.0.0.1:$PORT" --timeout 240 >"$work/perform.log" 2>&1 || { why="$(tr '\n' ' ' <"$work/perform.log")"; return 1; }
  grep -q 'QEMU unplugged failover primaries vfpool-vf0' "$work/perform.log" || { why="$(tr '\n' ' ' <"$work/perform.log")"; return 1; }
  echo "     $(grep 'migrated to' "$work/perform.log")"; }
check "perform --to: UNPLUG_PRIMARY from the source QEMU, the migration completes" perform
back() { wait_line "$work/dst-console.log" "$PAIRED" 120 || { why="destination console: $(grep FAILOVER "$work/dst-console.log" | tail -n1)"; return 1; }
  echo "     $(grep -E "$PAIRED" "$work/dst-console.log" | tail -n1)"; }
check "destination guest: the failover master has its primary back, same MAC" back
dst_mac() { local m; m=$(qmp "$dst_sock" qom-get '{"path":"/machine/peripheral/vfpool-vf0","property":"mac"}' | tr -d '"'); [ "$m" = "$MAC" ] || { why="qom-get: '$m'"; return 1; }; }
check "destination QEMU: the primary exists again (qom-get mac = $MAC)" dst_mac
confirm() { vfpool_at dst migrate confirm fo1 --role destination >"$work/cd.log" 2>&1 && vfpool_at src migrate confirm fo1 --role source >"$work/cs.log" 2>&1 || { why="$(cat "$work/cd.log" "$work/cs.log")"; return 1; }; }
check "confirm on both sides (nothing for vfpool to plug: QEMU re-plugged the primary)" confirm
