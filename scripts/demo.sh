#!/usr/bin/env bash
# vfpool's main job, as a walkthrough: a pool's VFs created at network start, a guest handed a
# free VF with its MAC pinned, the VF restored and freed at release, the pool stopped.
#
#   npm run demo                       # on a simulated host (no SR-IOV hardware needed)
#   VFPOOL_DEMO_PF=eth1 npm run demo   # also on this machine's real PF eth1 (root; it creates
#                                      # and removes VFs on that PF: use a PF nothing else uses)
#
# Without VFPOOL_DEMO_PF a real host is only looked at (`vfpool status`, read-only) when it has
# SR-IOV PFs: creating VFs on someone's NIC is never done unasked.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
vfpool() { node "$repo/dist/bin/cli.mjs" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ vfpool %s\n' "$*"; vfpool "$@"; }

walkthrough() { # walkthrough PF NUM WORK [qemu]: the same steps on whatever host VFPOOL_HOST names
  local pf=$1 num=$2 work=$3 with_qemu=${4:-}
  cat >"$work/sriov-pool.xml" <<XML
<network><name>sriov-pool</name>
  <forward mode='hostdev' managed='yes'><pf dev='$pf'><vf num='$num'/></pf></forward></network>
XML
  cat >"$work/vm1.xml" <<XML
<domain type='qemu'><name>vm1</name><uuid>0b7f6e2a-4c1d-4a8e-9f3b-2d5c6e7f8a91</uuid>
  <metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'>
    <vfpool:hostdev pool='sriov-pool' mac='52:54:00:11:22:33' vlan='100'/>
  </vfpool:domain></metadata></domain>
XML
  step "Define a pool (seed 000: <vf num='$num'/> on $pf)"
  run net-define "$work/sriov-pool.xml"
  step 'What starting it would do (--dry-run changes nothing)'
  run net-start sriov-pool --dry-run
  step 'Start it: the VFs are created and bound to vfio-pci'
  run net-start sriov-pool
  run net-list
  run status
  step 'A guest asks for a VF with a pinned MAC and VLAN (what the qemu hook does at prepare)'
  run prepare --xml "$work/vm1.xml"
  run status
  if [ -n "$with_qemu" ]; then guest_runs "$work"; fi
  step 'The guest stops: its VF is restored and freed (release is idempotent: twice)'
  run release vm1
  run release vm1
  run status
  step 'Stop the pool: its VFs are removed'
  run net-destroy sriov-pool
  run net-undefine sriov-pool
  run status
  step 'The VF history: who had which VF, and what it was set to (survives reboots)'
  run history
}

# The guest itself: a real QEMU started through the wrapper, which reads the plan prepare wrote
# and puts the VF on the command line (here the emulated e1000e VFPOOL_SIM_VF_DEVICE names,
# carrying the VF's MAC, where vfio-pci would go on real hardware).
guest_runs() { # WORK
  local work=$1 qpid i
  local argv=(-name guest=vm1 -S -display none -nodefaults -machine q35 -m 64 -monitor none -serial none)
  step 'The guest runs: QEMU started through the wrapper vfpool-qemu, which adds the VF from the plan prepare wrote'
  run qemu-args vm1
  printf '$ vfpool-qemu %s &\n' "${argv[*]}"
  "$repo/qemu-args/vfpool-qemu" "${argv[@]}" </dev/null >"$work/qemu.log" 2>&1 &
  qpid=$!
  for i in $(seq 1 100); do
    [ -S "$VFPOOL_STATE_DIR/qemu/vm1/qmp.sock" ] && break
    kill -0 "$qpid" 2>/dev/null || { echo "demo: QEMU exited at start: $(tail -n 3 "$work/qemu.log")" >&2; exit 1; }
    sleep 0.1
  done
  step "QEMU's own view of the guest's PCI bus, over vfpool's QMP socket: the VF (vfpool-vf0) with its pinned MAC"
  run guest-devices vm1
  step 'The guest stops (QEMU quits)'
  printf '$ kill %s\n' "$qpid"
  kill "$qpid"; wait "$qpid" || true
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

[ -f "$repo/dist/bin/cli.mjs" ] || { echo "demo: run \`npm run build\` first (npm run demo does)" >&2; exit 1; }

work=$(mktemp -d /tmp/vfpool-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
step "On a simulated host (VFPOOL_HOST=sim:$work/host.json, an igb-like PF eth1 with 7 VFs)"
echo '{"pfs":[{"name":"eth1","totalVfs":7,"address":"0000:01:00.0","vfDriver":"igbvf","offset":128,"stride":2}]}' >"$work/host.json"
(
  export VFPOOL_HOST=sim:$work/host.json VFPOOL_CONFIG_DIR=$work/etc VFPOOL_STATE_DIR=$work/run VFPOOL_JOURNAL_DIR=$work/journal
  export VFPOOL_SIM_VF_DEVICE=e1000e VFPOOL_QEMU=$qemu_bin
  walkthrough eth1 4 "$work" qemu
)

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
    walkthrough "$VFPOOL_DEMO_PF" 2 "$work/real"
  )
elif [ -n "$real_pfs" ]; then
  step "This machine has SR-IOV PFs (${real_pfs# }): read-only status"
  VFPOOL_HOST=linux vfpool status || true
  echo "(run the walkthrough on one with VFPOOL_DEMO_PF=NAME npm run demo)"
else
  step 'This machine has no SR-IOV PF: the real-host walkthrough is skipped (npm run test:lab runs vfpool on a real kernel'"'"'s igb PF)'
fi
