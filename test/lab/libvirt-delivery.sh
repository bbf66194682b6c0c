#!/usr/bin/env bash
# How a VF that libvirt does not know of reaches QEMU under a real libvirtd 11.3 with its DEFAULT
# qemu.conf (docs/libvirt-delivery.md). Root only; runs libvirtd in a private mount namespace
# (tmpfs /run, private copies of /etc/libvirt and libvirt's state dirs), so it never collides
# with another libvirtd on the machine, and stops what it started.
#
#   npm run build && bash test/lab/libvirt-delivery.sh OUTDIR              # plain host (no vfio)
#   bash test/lab/run-in-guest.sh --timeout 1200 test/lab/libvirt-delivery.sh OUTDIR   # real VF
#
# Plain host: option H's mechanics with a real libvirt QEMU: device_add of an emulated NIC
# into an empty pcie-root-port from the `started` hook; /dev/vfio nodes (made in a scratch dir
# with the vfio misc numbers, the host has no vfio) appear in QEMU's mount namespace and are
# allowed by its device cgroup: an open as libvirt-qemu inside QEMU's namespace and cgroup gives
# EPERM before (cgroup) and ENODEV after (the cgroup let it reach the absent driver).
# Lab guest (VFPOOL_LAB_GUEST=1): a VF of the igb PF bound to vfio-pci: option H step by step
# (device_add with nothing delivered, without memlock, complete), option C with the default
# qemu.conf, and option C with the settings it needs; query-pci of the nested QEMU.
# Output: OUTDIR/delivery.log (JSON lines from the hook), OUTDIR/summary.txt, libvirtd.log.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$(realpath -m "${1:-${VFPOOL_LAB_OUT:-/tmp/libvirt-delivery}}")

if [ -z "${VFPOOL_DELIVERY_NS:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "libvirt-delivery: needs root" >&2; exit 2; }
  [ -f "$repo/dist/src/qemu/deliver.js" ] || { echo "libvirt-delivery: run 'npm run build' first" >&2; exit 2; }
  mkdir -p "$out"
  exec env VFPOOL_DELIVERY_NS=1 unshare -m --propagation private bash "$0" "$out"
fi

guest=${VFPOOL_LAB_GUEST:-0}
work=$(mktemp -d /tmp/vfpdeliv.XXXXXX)
summary=$out/summary.txt
: >"$summary"; : >"$out/delivery.log"
say() { printf '%s\n' "$*" | tee -a "$summary"; }
now_ms() { date +%s%3N; }
fail=0
die() { say "FATAL: $*"; exit 1; }

# Step 1: the private libvirt world.
mount -t tmpfs -o mode=755 tmpfs /run || die "tmpfs /run"
mkdir -p /run/lock
cp -a /etc/libvirt "$work/etc-libvirt" && mount --bind "$work/etc-libvirt" /etc/libvirt || die "bind /etc/libvirt"
for d in /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do
  mount -t tmpfs -o mode=755 tmpfs "$d" || die "tmpfs $d"
done
mkdir -p /var/lib/libvirt/qemu && chown libvirt-qemu:libvirt-qemu /var/lib/libvirt/qemu && chmod 0751 /var/lib/libvirt/qemu
if [ "$guest" = 1 ] && ! grep -q ' /sys/fs/cgroup ' /proc/mounts; then
  # The lab guest mounts no cgroup; a Debian host has cgroup2 there (systemd). libvirt then
  # puts every domain behind a BPF device program, which is what option H must extend.
  mount -t cgroup2 none /sys/fs/cgroup || die "mount cgroup2"
fi
say "cgroup mounts: $(grep -E ' cgroup2? ' /proc/mounts | awk '{print $3":"$2":"$4}' | grep -E 'cgroup2|devices' | tr '\n' ' ')"
say "LSM: apparmor=$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null || echo absent) selinux=$([ -d /sys/fs/selinux ] && echo present || echo absent)"

# The hook runs a snapshot of the built code: a rebuild of dist/ on the host while a lab guest runs
# this (over 9p) would hand the hook half-written files.
mkdir -p "$work/snap/test/lab" "$work/snap/dist"
cp -a "$repo/dist/src" "$work/snap/dist/src" && ln -s "$repo/node_modules" "$work/snap/node_modules" \
  && cp "$here/libvirt-delivery-hook.mjs" "$work/snap/test/lab/" || die "snapshot of dist/"
mkdir -p /etc/libvirt/hooks
cat >/etc/libvirt/hooks/qemu <<HOOK
#!/bin/bash
# Prototype hook: logs every call; at 'started begin' runs the probes and the delivery driver.
echo "\$(date +%s%3N) \$1 \$2 \$3" >>"$work/hook-calls.log"
xml=\$(cat)
[ "\$2 \$3" = "started begin" ] || exit 0
cfg="$work/cfg-\$1.json"
[ -f "\$cfg" ] || exit 0
[ -x "$work/probe-\$1" ] && "$work/probe-\$1" before
printf '%s' "\$xml" | node "$work/snap/test/lab/libvirt-delivery-hook.mjs" "\$cfg" 2>>"$work/hook.err"
[ -x "$work/probe-\$1" ] && "$work/probe-\$1" after
echo "\$(date +%s%3N) \$1 started done" >>"$work/hook-calls.log"
exit 0
HOOK
chmod 755 /etc/libvirt/hooks/qemu

stop_daemons() {
  local p
  for f in /run/libvirtd.pid /run/virtlogd.pid; do
    p=$(cat "$f" 2>/dev/null) || continue
    kill "$p" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
}
start_daemons() {
  local t0; t0=$(now_ms)
  [ -f /run/virtlogd.pid ] || env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /usr/sbin/virtlogd -d
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /usr/sbin/libvirtd -d
  for _ in $(seq 600); do virsh -c qemu:///system version >/dev/null 2>&1 && { say "libvirtd up in $(( $(now_ms) - t0 )) ms"; return 0; }; sleep 0.2; done
  die "libvirtd did not answer"
}
cleanup() {
  for d in $(virsh -q -c qemu:///system list --name 2>/dev/null); do virsh -c qemu:///system destroy "$d" >/dev/null 2>&1; done
  stop_daemons
  cp /var/log/libvirt/libvirtd.log "$out/libvirtd.log" 2>/dev/null
  cp /var/log/libvirt/qemu/*.log "$out/" 2>/dev/null
  cp "$work/hook-calls.log" "$work/hook.err" "$out/" 2>/dev/null
  say "$( [ $fail = 0 ] && echo ALL-OK || echo "$fail FAILED" )"
  rm -rf "$work"
}
trap cleanup EXIT
v() { virsh -q -c qemu:///system "$@"; }
check() { if eval "$2"; then say "PASS $1"; else say "FAIL $1"; fail=$((fail + 1)); fi; }

# domain_xml NAME EXTRA_QEMU_ARGS(JSON device or '') MEMTUNE
domain_xml() {
  local name=$1 extra=$2 memtune=${3:-}
  cat <<XML
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>$name</name>
  <memory unit='MiB'>128</memory>
  $memtune
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-chardev'/><qemu:arg value='socket,id=vfpqmp,path=/var/lib/libvirt/qemu/$name.qmp,server=on,wait=off'/>
    <qemu:arg value='-mon'/><qemu:arg value='chardev=vfpqmp,mode=control'/>
    <qemu:arg value='-device'/><qemu:arg value='{"driver":"pcie-root-port","id":"vfpool-rp0","bus":"pcie.0","chassis":30}'/>
    $( [ -n "$extra" ] && printf "<qemu:arg value='-device'/><qemu:arg value='%s'/>" "$extra" )
  </qemu:commandline>
</domain>
XML
}

# hook_ms NAME: how long the last `started` hook of NAME ran (its own log lines).
hook_ms() {
  local b e
  b=$(grep " $1 started begin" "$work/hook-calls.log" | tail -n1 | cut -d' ' -f1)
  e=$(grep " $1 started done" "$work/hook-calls.log" | tail -n1 | cut -d' ' -f1)
  echo $(( e - b ))
}

# timed_start NAME: virsh start wall time in ms into $start_ms; virsh's error into $start_err.
timed_start() {
  local t0; t0=$(now_ms)
  if v start "$1" >"$work/start.out" 2>"$work/start.err"; then start_ok=1; else start_ok=0; fi
  start_ms=$(( $(now_ms) - t0 ))
  start_err=$(tr '\n' ' ' <"$work/start.err")
}

start_daemons

if [ "$guest" != 1 ]; then
  # ---------- plain host: mechanics with an emulated NIC and scratch vfio nodes ----------
  fake=$work/dev; mkdir -p "$fake/vfio"
  mknod "$fake/vfio/vfio" c 10 196 && chmod 0666 "$fake/vfio/vfio"
  mknod "$fake/vfio/77" c 511 77 && chmod 0600 "$fake/vfio/77"
  name=vfpdeliv-host
  domain_xml $name '' >"$work/$name.xml"; v define "$work/$name.xml" >/dev/null || die "define"
  # Baseline: the same domain, hook does nothing.
  for i in 1 2 3 4 5; do timed_start $name; v destroy $name >/dev/null; say "baseline start $i: $start_ms ms"; done
  cat >"$work/probe-$name" <<PROBE
#!/bin/bash
# Opens a vfio node as libvirt-qemu inside QEMU's mount namespace and cgroups (v1 devices and
# cgroup2: libvirt restricts devices on whichever it uses). Before delivery the node is made by the
# probe itself in QEMU's /dev, so only the cgroup can refuse it.
pid=\$(cat /run/libvirt/qemu/$name.pid)
cg1=\$(sed -n 's/^[0-9]*:devices://p' /proc/\$pid/cgroup)
cg2=\$(sed -n 's/^0:://p' /proc/\$pid/cgroup)
echo "\$1 ns-dev: \$(ls /proc/\$pid/root/dev | tr '\n' ' ')" >>"$out/probe.log"
echo "\$1 vfio-nodes: \$(ls -ln /proc/\$pid/root/dev/vfio 2>&1 | tr '\n' ' ')" >>"$out/probe.log"
echo "\$1 v1 devices.list: \$(tr '\n' ' ' </sys/fs/cgroup/devices\$cg1/devices.list)" >>"$out/probe.log"
echo "\$1 v2 device progs: \$(bpftool -j cgroup show /sys/fs/cgroup/unified\$(dirname \$cg2) 2>&1)" >>"$out/probe.log"
node_path=/dev/vfio/vfio
if [ "\$1" = before ]; then node_path=/dev/vfpool-probe; mknod -m 0666 /proc/\$pid/root\$node_path c 10 196; fi
r=\$(sh -c 'echo \$\$ >/sys/fs/cgroup/devices'"\$cg1"'/tasks && echo \$\$ >/sys/fs/cgroup/unified'"\$cg2"'/cgroup.procs && exec nsenter -t '\$pid' -m setpriv --reuid=libvirt-qemu --regid=libvirt-qemu --clear-groups head -c0 '\$node_path 2>&1)
echo "\$1 open-as-qemu \$node_path: \${r:-ok}" >>"$out/probe.log"
[ "\$1" = before ] && rm -f /proc/\$pid/root\$node_path
PROBE
  chmod 755 "$work/probe-$name"
  cat >"$work/cfg-$name.json" <<JSON
{"domain":"$name","qmpSocket":"/var/lib/libvirt/qemu/$name.qmp","log":"$out/delivery.log","groups":["77"],"devRoot":"$fake","waitMs":20000,
 "attempts":[{"name":"full","deliver":"full"},
             {"name":"deliver","deliver":"no-memlock"},
             {"name":"e1000e","device":{"driver":"e1000e","id":"vfpool-vf0","bus":"vfpool-rp0","mac":"52:54:00:12:34:56"}}]}
JSON
  timed_start $name
  say "option H start (hook: deliver + device_add + query-pci): $start_ms ms ok=$start_ok $start_err"
  check "memlock: raised to RAM+1GiB, or refused for want of CAP_SYS_RESOURCE" "grep -q '\"memlockAfter\":\"1207959552\"' '$out/delivery.log' || grep -q 'CAP_SYS_RESOURCE' '$out/delivery.log'"
  check "the hook's deliver (nodes + cgroup) succeeded" "grep '\"attempt\":\"deliver\"' '$out/delivery.log' | grep -q '\"steps\":\\[{\"kind\":\"mknod\"'"
  check "query-pci shows the NIC behind the root port" "grep -q '\"attempt\":\"e1000e\".*\"queryPci\":{[^}]*\"vendor\":32902' '$out/delivery.log'"
  check "nodes visible in QEMU's namespace" "grep -Eq '^after vfio-nodes: .*crw------- +1 +64055 +64055 +511, +77 .*crw-rw-rw- +1 +0 +0 +10, +196' '$out/probe.log'"
  check "cgroup denied before (EPERM)" "grep -q '^before open-as-qemu.*Operation not permitted' '$out/probe.log'"
  check "cgroup allows after (ENODEV: reached the absent driver)" "grep -q '^after open-as-qemu.*No such device' '$out/probe.log'"
  v destroy $name >/dev/null
  # Timing: the same hook without probes, one delivery (memlock left as it is: this host's root
  # may lack CAP_SYS_RESOURCE) and one device_add.
  rm -f "$work/probe-$name"
  cat >"$work/cfg-$name.json" <<JSON
{"domain":"$name","qmpSocket":"/var/lib/libvirt/qemu/$name.qmp","log":"$out/delivery.log","groups":["77"],"devRoot":"$fake","waitMs":20000,
 "attempts":[{"name":"timed","deliver":"no-memlock","device":{"driver":"e1000e","id":"vfpool-vf0","bus":"vfpool-rp0","mac":"52:54:00:12:34:56"}}]}
JSON
  for i in 1 2 3 4 5; do timed_start $name; v destroy $name >/dev/null; say "option H start $i (no probes): $start_ms ms, hook at started: $(hook_ms $name) ms"; done
  v undefine $name >/dev/null
  exit 0
fi

# ---------- lab guest: a real VF ----------
pf=eth0; pfdev=/sys/class/net/$pf/device
ip link set $pf up
echo 0 >$pfdev/sriov_drivers_autoprobe
echo 1 >$pfdev/sriov_numvfs || die "sriov_numvfs"
vf=$(basename "$(readlink $pfdev/virtfn0)")
mac=52:54:00:5e:00:01
ip link set $pf vf 0 mac $mac || die "vf mac"
echo vfio-pci >/sys/bus/pci/devices/$vf/driver_override
echo "$vf" >/sys/bus/pci/drivers_probe
group=$(basename "$(readlink /sys/bus/pci/devices/$vf/iommu_group)")
[ -c /dev/vfio/$group ] || die "no /dev/vfio/$group"
say "VF $vf group $group driver $(basename "$(readlink /sys/bus/pci/devices/$vf/driver)") mac $mac"
vfdev="{\"driver\":\"vfio-pci\",\"host\":\"$vf\",\"id\":\"vfpool-vf0\",\"bus\":\"vfpool-rp0\"}"

name=vfpdeliv-h
domain_xml $name '' >"$work/$name.xml"; v define "$work/$name.xml" >/dev/null || die "define"
timed_start $name; v destroy $name >/dev/null; say "baseline start: $start_ms ms"
cat >"$work/cfg-$name.json" <<JSON
{"domain":"$name","qmpSocket":"/var/lib/libvirt/qemu/$name.qmp","log":"$out/delivery.log","groups":["$group"],"waitMs":120000,
 "attempts":[{"name":"nothing-delivered","device":$vfdev},
             {"name":"no-memlock","deliver":"no-memlock","device":$vfdev},
             {"name":"complete","deliver":"full","device":$vfdev}]}
JSON
timed_start $name
say "option H, three attempts: start $start_ms ms ok=$start_ok $start_err"
qpid=$(cat /run/libvirt/qemu/$name.pid 2>/dev/null)
check "H: device_add with nothing delivered fails on the missing node" "grep '\"attempt\":\"nothing-delivered\"' '$out/delivery.log' | grep -q \"Could not open '/dev/vfio/$group'\""
check "H: device_add without memlock fails" "grep '\"attempt\":\"no-memlock\"' '$out/delivery.log' | grep -q '\"reply\":{\"class\"'"
check "H: query-pci of the nested QEMU shows 8086:10ca" "grep -q '\"attempt\":\"complete\".*\"vendor\":32902,\"device\":4298' '$out/delivery.log'"
check "H: QEMU holds /dev/vfio/$group" "ls -l /proc/$qpid/fd 2>/dev/null | grep -q '/dev/vfio/$group'"
check "H: the VF carries the MAC" "ip -j link show $pf | grep -q '\"address\":\"$mac\"'"
v destroy $name >/dev/null
check "H: after destroy nobody holds the group" "! ls -l /proc/[0-9]*/fd 2>/dev/null | grep -q '/dev/vfio/$group'"
check "H: VF still on vfio-pci after destroy" "[ \"\$(basename \"\$(readlink /sys/bus/pci/devices/$vf/driver)\")\" = vfio-pci ]"
cat >"$work/cfg-$name.json" <<JSON
{"domain":"$name","qmpSocket":"/var/lib/libvirt/qemu/$name.qmp","log":"$out/delivery.log","groups":["$group"],"waitMs":120000,
 "attempts":[{"name":"timed","deliver":"full","device":$vfdev}]}
JSON
timed_start $name; v destroy $name >/dev/null; say "option H start (deliver + device_add + query-pci in the hook): $start_ms ms ok=$start_ok"
check "H (timed run): query-pci shows 8086:10ca" "grep '\"attempt\":\"timed\"' '$out/delivery.log' | grep -q '\"vendor\":32902,\"device\":4298'"
v undefine $name >/dev/null

# Option C with the default qemu.conf.
name=vfpdeliv-c
rm -f "$work/cfg-"*
domain_xml $name "$vfdev" >"$work/$name.xml"; v define "$work/$name.xml" >/dev/null || die "define C"
timed_start $name
say "option C, default qemu.conf: ok=$start_ok $start_ms ms: $start_err"
check "C with the default qemu.conf fails" "[ $start_ok = 0 ]"
[ $start_ok = 1 ] && v destroy $name >/dev/null
v undefine $name >/dev/null

# Option C with what it needs: no mount namespace, the vfio nodes in the device ACL, the group
# node owned by QEMU's user (vfpool's start hook does that), and a memlock limit via memtune.
cat >>/etc/libvirt/qemu.conf <<CONF
namespaces = [ ]
cgroup_device_acl = [ "/dev/null", "/dev/full", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/ptmx", "/dev/kvm", "/dev/userfaultfd", "/dev/vfio/vfio", "/dev/vfio/$group" ]
CONF
chown libvirt-qemu:libvirt-qemu /dev/vfio/$group
stop_daemons; start_daemons
domain_xml $name "$vfdev" "<memtune><hard_limit unit='KiB'>1179648</hard_limit></memtune>" >"$work/$name.xml"; v define "$work/$name.xml" >/dev/null || die "define C2"
timed_start $name
say "option C, namespaces=[] + cgroup_device_acl + memtune: ok=$start_ok $start_ms ms: $start_err"
check "C with namespaces=[], ACL and memtune starts" "[ $start_ok = 1 ]"
if [ $start_ok = 1 ]; then
  sleep 1
  qpid=$(cat /run/libvirt/qemu/$name.pid)
  say "C: QEMU memlock $(grep 'Max locked' /proc/$qpid/limits | tr -s ' ')"
  v destroy $name >/dev/null
fi
# Without memtune (libvirt leaves memlock at its 8 MiB default for a device it does not know).
v undefine $name >/dev/null
domain_xml $name "$vfdev" >"$work/$name.xml"; v define "$work/$name.xml" >/dev/null
timed_start $name
say "option C, namespaces=[] + cgroup_device_acl, no memtune: ok=$start_ok $start_ms ms: $start_err"
check "C without a memlock setting fails" "[ $start_ok = 0 ]"
[ $start_ok = 1 ] && v destroy $name >/dev/null
v undefine $name >/dev/null
exit 0
