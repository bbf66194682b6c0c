#!/usr/bin/env bash
# vfpool's main job, as a walkthrough: a pool's VFs created at network start, a guest handed a
# free VF with its MAC pinned, the guest live-migrated to another host where a VF with the same
# MAC waits for it, the VFs restored and freed, the pools stopped.
#
#   npm run demo                       # on two simulated hosts (no SR-IOV hardware needed)
#   VFPOOL_DEMO_PF=eth1 npm run demo   # also on this machine's real PF eth1 (root; it creates
#                                      # and removes VFs on that PF: use a PF nothing else uses)
#
# Without VFPOOL_DEMO_PF a real host is only looked at (`vfpool status`, read-only) when it has
# SR-IOV PFs: creating VFs on someone's NIC is never done unasked.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# The CLI as install.sh installs `vfpool` (a link to dist/bin/cli.cjs): ~20 ms less of every
# one of the demo's forty runs than cli.mjs, which adds Node's ES-module loader to each start.
cli=$repo/dist/bin/cli.cjs
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }

# `host` names the simulated host the next commands run on (src or dst), shown as the prompt;
# empty: the host the environment names (the real-host walkthrough).
host=
host_vars() { # host_vars HOST: vfpool's variables pointing at simulated host HOST, in hv
  hv=(VFPOOL_HOST="sim:$work/$1/host.json" VFPOOL_CONFIG_DIR="$work/$1/etc" VFPOOL_STATE_DIR="$work/$1/run"
    VFPOOL_JOURNAL_DIR="$work/$1/journal" VFPOOL_SIM_VF_DEVICE=e1000e VFPOOL_QEMU="$qemu_bin")
}
on() { # on HOST CMD...: CMD on simulated host HOST
  local h=$1 hv; shift
  host_vars "$h"
  env "${hv[@]}" "$@"
}
quiet() { if [ -n "$host" ]; then on "$host" node "$cli" "$@"; else node "$cli" "$@"; fi; }
run() { printf '%s$ vfpool %s\n' "$host" "$*"; quiet "$@"; }

pool_up() { # pool_up PF NUM WORK: define and start the seed-000 pool on the current host
  local pf=$1 num=$2 w=$3
  cat >"$w/sriov-pool.xml" <<XML
<network><name>sriov-pool</name>
  <forward mode='hostdev' managed='yes'><pf dev='$pf'><vf num='$num'/></pf></forward></network>
XML
  step "${host:+$host: }Define a pool (seed 000: <vf num='$num'/> on $pf)"
  run net-define "$w/sriov-pool.xml"
  step "${host:+$host: }What starting it would do (--dry-run changes nothing)"
  run net-start sriov-pool --dry-run
  step "${host:+$host: }Start it: the VFs are created and bound to vfio-pci"
  run net-start sriov-pool
  run net-list
  run status
}
pool_down() {
  step "${host:+$host: }Stop the pool: its VFs are removed"
  run net-destroy sriov-pool
  run net-undefine sriov-pool
  run status
}
guest_xml() { # guest_xml FILE
  cat >"$1" <<XML
<domain type='qemu'><name>vm1</name><uuid>0b7f6e2a-4c1d-4a8e-9f3b-2d5c6e7f8a91</uuid>
  <metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'>
    <vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' vlan='100'/>
  </vfpool:domain></metadata></domain>
XML
}

# ---- QEMU on the simulated hosts --------------------------------------------------------------
# The guest has no OS (only its firmware runs), so nothing in it answers PCIe hotplug. QEMU
# completes a device_del without the guest only for a device in a slot whose power is off:
# with native PCIe hotplug (q35's ACPI hotplug off, the -global below) a root port empty at
# reset is powered off, and a device hot-added into it stays unpowered until a guest turns the
# slot on. So the VF is prepared with `--delivery hotplug` and plugged by `vfpool plug` once
# QEMU runs; on the command line (powered at reset) its device_del would wait for a guest's
# eject forever, and so would an ACPI-hotplugged one. With a guest OS either way works.
qemu_argv=(-machine q35 -accel tcg -m 128 -nodefaults -display none -monitor none -serial none
  -global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off)
qemu_pids=()
qemu_start() { # qemu_start HOST LOG EXTRA...: the guest's QEMU through the wrapper; sets qpid
  local h=$1 log=$2; shift 2
  printf '%s$ vfpool-qemu -name guest=vm1 %s &\n' "$h" "${qemu_argv[*]} $*"
  # exec all the way down (subshell, env, the wrapper): $! is QEMU's pid.
  (host_vars "$h"; exec env "${hv[@]}" "$repo/qemu-args/vfpool-qemu" -name guest=vm1 "${qemu_argv[@]}" "$@" </dev/null >"$log" 2>&1) &
  qpid=$!
  qemu_pids+=("$qpid")
  local end=$((SECONDS + 60))
  until [ -S "$work/$h/run/qemu/vm1/qmp.sock" ]; do
    kill -0 "$qpid" 2>/dev/null || return 1
    [ "$SECONDS" -lt "$end" ] || { echo "demo: no QMP socket from QEMU on $h after 60 s: $(tail -n 3 "$log")" >&2; exit 1; }
    sleep 0.1
  done
}
qemu_stop() { # qemu_stop PID
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
vf_address() { # vf_address HOST: where the guest sees vfpool-vf0 (its bus:slot.function), or nothing
  on "$1" node "$cli" guest-devices vm1 --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>{const d=JSON.parse(s).find(x=>x.id==="vfpool-vf0");if(d&&/^[0-9a-f]{2}:/.test(d.address))console.log(d.address)})'
}
# Whether process PID listens on 127.0.0.1:PORT (its own socket, not another process's).
listens() {
  local inode
  for inode in $(awk -v a="$(printf '0100007F:%04X' "$2")" '$2 == a && $4 == "0A" { print $10 }' /proc/net/tcp); do
    ls -l "/proc/$1/fd" 2>/dev/null | grep -qF "socket:[$inode]" && return 0
  done
  return 1
}
# A port below the kernel's ephemeral range (which it hands out on its own), not listened on.
pick_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    awk -v a="$(printf ':%04X' "$p")" '$4 == "0A" && substr($2, length($2) - 4) == a { found = 1 } END { exit !found }' /proc/net/tcp || { echo "$p"; return; }
  done
}

migration_walkthrough() {
  local w=$work src_q dst_q port tries end
  mkdir -p "$w/src" "$w/dst"
  step "Two simulated hosts, src and dst (each VFPOOL_HOST=sim:FILE with its own state): an igb-like PF eth1 with 7 VFs, at 0000:01:00.0 on src and 0000:02:00.0 on dst"
  echo '{"pfs":[{"name":"eth1","totalVfs":7,"address":"0000:01:00.0","vfDriver":"igbvf","offset":128,"stride":2}]}' >"$w/src/host.json"
  echo '{"pfs":[{"name":"eth1","totalVfs":7,"address":"0000:02:00.0","vfDriver":"igbvf","offset":128,"stride":2}]}' >"$w/dst/host.json"
  host=src
  pool_up eth1 4 "$w/src"
  guest_xml "$w/vm1.xml"
  step 'src: A guest asks for a VF with a pinned MAC and VLAN (what the qemu hook does at prepare); --delivery hotplug: plugged once QEMU runs'
  run prepare --xml "$w/vm1.xml" --delivery hotplug
  run status

  step 'src: The guest runs: QEMU started through the wrapper vfpool-qemu, which reads the plan prepare wrote'
  say "(the emulated e1000e VFPOOL_SIM_VF_DEVICE names stands in for the VF, with its MAC, where vfio-pci would go)"
  run qemu-args vm1
  qemu_start src "$w/src-qemu.log" || { echo "demo: QEMU exited at start: $(tail -n 3 "$w/src-qemu.log")" >&2; exit 1; }
  src_q=$qpid
  run plug vm1
  # The firmware numbers the bus behind vfpool's root port when it boots; until then QEMU shows
  # no guest address for the VF.
  end=$((SECONDS + 60))
  until [ -n "$(vf_address src)" ] || [ "$SECONDS" -ge "$end" ]; do sleep 0.2; done
  step "src: QEMU's own view of the guest's PCI bus, over vfpool's QMP socket: the VF (vfpool-vf0) with its pinned MAC"
  run guest-devices vm1

  host=dst
  pool_up eth1 4 "$w/dst"

  step 'Live migration of vm1, src -> dst (without libvirt: the four stages)'
  step 'src: 1. begin: what the guest asked for (pool, MAC, VLAN, guest slot), never a PCI address of src'
  host=src
  printf 'src$ vfpool migrate begin vm1 > vm1.migration.json\n'
  quiet migrate begin vm1 >"$w/vm1.migration.json"
  cat "$w/vm1.migration.json"
  step 'dst: 2. prepare: a VF of its own pool reserved and configured with the same MAC and VLAN'
  host=dst
  run migrate prepare --description "$w/vm1.migration.json"
  run status
  step "dst: the incoming QEMU, through the wrapper with -incoming: the VF's root port reserved, the VF itself left off until the guest arrived"
  tries=0
  while :; do
    port=$(pick_port)
    qemu_start dst "$w/dst-qemu.log" -incoming "tcp:127.0.0.1:$port" && {
      end=$((SECONDS + 60))
      until listens "$qpid" "$port" || ! kill -0 "$qpid" 2>/dev/null || [ "$SECONDS" -ge "$end" ]; do sleep 0.1; done
      listens "$qpid" "$port" && break
    }
    # Another process took the port between the pick and QEMU's bind: QEMU exits; pick again.
    qemu_stop "$qpid"
    tries=$((tries + 1))
    [ "$tries" -lt 5 ] || { echo "demo: the incoming QEMU did not listen on 127.0.0.1:$port: $(tail -n 3 "$w/dst-qemu.log")" >&2; exit 1; }
    rm -f "$w/dst/run/qemu/vm1/qmp.sock"
  done
  dst_q=$qpid
  run guest-devices vm1
  step 'src: 3. perform: the VF leaves the guest (device_del, DEVICE_DELETED), then QEMU migrates the guest to dst'
  host=src
  run migrate perform vm1 --to "tcp:127.0.0.1:$port"
  say "(the source guest's PCI bus now: the VF is gone, its root port stays)"
  run guest-devices vm1
  step 'dst: 4. confirm (destination): once the guest arrived, its VF is plugged (device_add), same MAC'
  host=dst
  run migrate confirm vm1 --role destination --wait-incoming 120
  step "dst: the guest's PCI bus on dst, over dst's vfpool QMP socket: vfpool-vf0 carries the MAC it had on src"
  run guest-devices vm1
  step "src: 4. confirm (source): src's VF restored (its MAC and VLAN from before the guest) and freed"
  host=src
  run migrate confirm vm1 --role source
  run status
  step 'dst: the guest holds the VF with its MAC and VLAN'
  host=dst
  run status
  step 'src: the source QEMU, paused since the migration, quits; the guest runs on dst'
  printf 'src$ kill %s\n' "$src_q"
  qemu_stop "$src_q"

  step 'dst: The guest stops (QEMU quits): its VF is restored and freed (release is idempotent: twice)'
  printf 'dst$ kill %s\n' "$dst_q"
  qemu_stop "$dst_q"
  run release vm1
  run release vm1
  run status
  host=src; pool_down
  host=dst; pool_down
  step 'The VF history on each host: who had which VF, and what it was set to (survives reboots)'
  host=src; run history
  host=dst; run history
  host=
}

# The real PF: one host. A live migration needs a second host with its own PF, so here the
# walkthrough stops at release (two pools on one PF would be the same VFs).
real_walkthrough() { # real_walkthrough PF WORK
  local pf=$1 w=$2
  pool_up "$pf" 2 "$w"
  guest_xml "$w/vm1.xml"
  step 'A guest asks for a VF with a pinned MAC and VLAN (what the qemu hook does at prepare)'
  run prepare --xml "$w/vm1.xml"
  run status
  step 'The guest stops: its VF is restored and freed (release is idempotent: twice)'
  run release vm1
  run release vm1
  run status
  pool_down
  step 'The VF history: who had which VF, and what it was set to (survives reboots)'
  run history
  step 'No live migration here: it needs a second host with a PF of its own (on one machine both sides would hand out the same VFs); the simulated hosts above showed it'
}

# The quick start is on Debian 12, where the project installs QEMU 10 from bookworm-backports.
qemu_bin=/usr/bin/qemu-system-x86_64
if [ ! -x "$qemu_bin" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "demo: installing QEMU (qemu-system-x86 from bookworm-backports) for the guest step" >&2
    bash "$repo/scripts/install-lab-packages.sh" qemu >&2
  else
    echo "demo: the guest step needs QEMU at $qemu_bin: install the Debian package qemu-system-x86 (as root: bash scripts/install-lab-packages.sh qemu)" >&2
    exit 1
  fi
fi

[ -f "$cli" ] || { echo "demo: run \`npm run build\` first (npm run demo does)" >&2; exit 1; }

work=$(mktemp -d /tmp/vfpool-demo.XXXXXX)
cleanup() {
  local rc=$? p
  for p in "${qemu_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${qemu_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$rc" != 0 ]; then
    for f in "$work"/*-qemu.log; do [ -s "$f" ] && { echo "--- $f" >&2; tail -n 5 "$f" >&2; }; done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
migration_walkthrough

real_pfs=
for f in /sys/class/net/*/device/sriov_totalvfs; do
  if [ -e "$f" ]; then f=${f%/device/*}; real_pfs="$real_pfs ${f##*/}"; fi
done
if [ -n "${VFPOOL_DEMO_PF:-}" ]; then
  step "On this machine's real PF $VFPOOL_DEMO_PF (VFPOOL_HOST=linux)"
  [ "$(id -u)" = 0 ] || { echo "demo: the real-host walkthrough needs root" >&2; exit 1; }
  mkdir -p "$work/real"
  (
    export VFPOOL_HOST=linux VFPOOL_CONFIG_DIR=$work/real/etc VFPOOL_STATE_DIR=$work/real/run VFPOOL_JOURNAL_DIR=$work/real/journal
    real_walkthrough "$VFPOOL_DEMO_PF" "$work/real"
  )
elif [ -n "$real_pfs" ]; then
  step "This machine has SR-IOV PFs (${real_pfs# }): read-only status"
  VFPOOL_HOST=linux node "$cli" status || true
  echo "(run the walkthrough on one with VFPOOL_DEMO_PF=NAME npm run demo)"
else
  step 'This machine has no SR-IOV PF: the real-host walkthrough is skipped (npm run test:lab runs vfpool on a real kernel'"'"'s igb PF)'
fi
