#!/usr/bin/env bash
# vfpool's network hook under a real libvirt 11.3 daemon, on a simulated SR-IOV host.
#
#   npm ci && npm run build && sudo bash test/libvirt/network.test.sh
#
# Installs vfpool (install.sh, prefix /usr/local), points /etc/vfpool/vfpool.conf at a simulated
# host and a private state directory (libvirt gives hooks no environment, so the file is how the
# hook learns them), starts libvirtd by hand (test/libvirt/libvirtd.sh; hooks are discovered at
# daemon start, so after install.sh), then drives `virsh net-*` and reads `vfpool status --json`.
# Everything is undone on exit, on failure too: networks undefined, the daemon it started stopped,
# `install.sh --uninstall`, vfpool.conf restored byte for byte (or removed if there was none).
#
# The networks use `<forward mode='hostdev' managed='yes'/>` with the pool in <metadata>: libvirt
# 11.3 starts a hostdev network without a device pool without looking at the host, and still hands
# the hook the metadata. The real-host form `<forward mode='hostdev'><pf dev='eth1'/></forward>`
# makes libvirt look for a netdev eth1 and its VFs right after `start begin` ("No usable Vf's
# present on SRIOV PF eth1"), which a simulated host cannot satisfy; check 10 covers that form.
#
# One PASS/FAIL line per check, then "N passed, M failed"; exit 1 on any failure.
# Env: VFPOOL_BIN (default /usr/local/bin/vfpool), VFPOOL_TEST_ROOT (the tree whose install.sh is
# tested, default this repository).
set -uo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # the harness: settings, check, cleanup, ...
NETS=(vfp-net vfp-big vfp-pf vfp-pt)

# num_vfs PF [env...]: numVfs of PF in `vfpool status --json`, or an explanation on stderr.
# With "conf-only" as the second word it runs with libvirt's hook environment (no VFPOOL_*).
num_vfs() {
  local pf=$1 mode=${2:-env} out
  if [ "$mode" = conf-only ]; then
    out=$(env -i LC_ALL=C HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin "$VFPOOL" status --json 2>"$work/status.err")
  else
    out=$(VFPOOL_HOST="sim:$work/host.json" VFPOOL_STATE_DIR="$work/state" "$VFPOOL" status --json 2>"$work/status.err")
  fi || { echo "vfpool status --json failed: $(head -c 400 "$work/status.err")" >&2; return 1; }
  printf '%s' "$out" | node -e '
    let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => {
      let j;
      try { j = JSON.parse(s); } catch (e) { console.error(`not JSON: ${s.slice(0, 200)}`); process.exit(1); }
      const pf = (j.pfs ?? []).find((p) => p.name === process.argv[1]);
      if (!pf) { console.error(`no PF ${process.argv[1]} in ${s.slice(0, 200)}`); process.exit(1); }
      console.log(pf.numVfs);
    });' "$pf"
}

# expect_vfs PF N [conf-only]: sets why on mismatch.
expect_vfs() {
  local got
  got=$(num_vfs "$1" "${3:-env}" 2>"$work/num.err") || { why=$(cat "$work/num.err"); return 1; }
  [ "$got" = "$2" ] || { why="$1 numVfs is $got, expected $2"; return 1; }
}

# net_xml NAME FORWARD PF NUM: a libvirt network carrying a vfpool pool in its metadata.
net_xml() {
  printf "<network><name>%s</name>%s<metadata><vfpool:pool xmlns:vfpool='%s'><vfpool:pf dev='%s'><vfpool:vf num='%s'/></vfpool:pf></vfpool:pool></metadata></network>\n" \
    "$1" "$2" "$NS" "$3" "$4"
}

dump_diagnostics() {
  [ -n "$work" ] && [ -d "$work/state" ] || return 0
  local f
  while IFS= read -r f; do
    echo "--- last lines of $f" >&2
    tail -n 30 "$f" >&2
  done < <(find "$work/state" -type f -name '*.log' 2>/dev/null)
}

# cleanup_test: called first by lib.sh's cleanup; the networks go while the daemon still runs.
cleanup_test() {
  if [ $started_daemon = 1 ]; then
    local n
    for n in "${NETS[@]}"; do
      v net-destroy "$n" >/dev/null 2>&1
      v net-undefine "$n" >/dev/null 2>&1
    done
  fi
}

# ---- setup -------------------------------------------------------------------------------------
harness_setup vfpool-libvirt-test

cat >"$work/host.json" <<'JSON'
{"pfs":[{"name":"eth1","totalVfs":8},{"name":"eth2","totalVfs":8}]}
JSON

check "install.sh installs the CLI and both hooks" install_vfpool
[ $failed = 0 ] || exit 1

mkdir -p "$CONF_DIR"
write_conf

check "libvirtd starts with the vfpool hooks installed" start_daemon
[ $failed = 0 ] || exit 1

# A previous run killed hard may have left networks defined (and marked active) in libvirt.
for n in "${NETS[@]}"; do v net-destroy "$n" >/dev/null 2>&1; v net-undefine "$n" >/dev/null 2>&1; done

# ---- checks ------------------------------------------------------------------------------------
HOSTDEV="<forward mode='hostdev' managed='yes'/>"
net_xml vfp-net "$HOSTDEV" eth1 4 >"$work/vfp-net.xml"
net_xml vfp-big "$HOSTDEV" eth2 99 >"$work/vfp-big.xml"
net_xml vfp-pf "<forward mode='hostdev' managed='yes'><pf dev='eth1'/></forward>" eth1 4 >"$work/vfp-pf.xml"
# Seed 004's <interface dev=PF> in libvirt's own passthrough <forward>: libvirt would hand eth2 itself.
net_xml vfp-pt "<forward mode='passthrough'><interface dev='eth2'/></forward>" eth2 4 >"$work/vfp-pt.xml"

define_all() { local n; for n in "${NETS[@]}"; do virsh_ok net-define "$work/$n.xml" || return 1; done; }
check "virsh net-define of the four metadata networks" define_all

start_net() { virsh_ok net-start vfp-net; }
check "virsh net-start vfp-net (hook: start begin)" start_net

check "vfpool status --json: eth1 numVfs 4 after net-start" expect_vfs eth1 4
check "vfpool status --json with libvirt's empty environment (vfpool.conf only): eth1 numVfs 4" \
  expect_vfs eth1 4 conf-only

# libvirt keeps /run/libvirt/network/vfp-net.xml while the network runs: vfpool's own stop of the
# pool would leave libvirt's network active without its VFs, so it names virsh's instead.
cli_destroy_refused() {
  local rc=0
  env -i LC_ALL=C HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin "$VFPOOL" net-destroy vfp-net >"$work/cli-destroy.out" 2>&1 || rc=$?
  [ $rc = 3 ] || { why="exit $rc, expected 3: $(tr '\n' ' ' <"$work/cli-destroy.out")"; return 1; }
  grep -q 'stop it with `virsh net-destroy vfp-net`' "$work/cli-destroy.out" || { why="no virsh net-destroy in: $(tr '\n' ' ' <"$work/cli-destroy.out")"; return 1; }
  expect_vfs eth1 4
}
check "vfpool net-destroy vfp-net while libvirt runs it: exit 3 naming virsh net-destroy, eth1 still 4" cli_destroy_refused

big_refused() {
  if v net-start vfp-big >"$work/virsh.out" 2>"$work/big.err"; then why="net-start vfp-big succeeded"; return 1; fi
  grep -q 'sriov_totalvfs' "$work/big.err" || { why="virsh error lacks 'sriov_totalvfs': $(tr '\n' ' ' <"$work/big.err")"; return 1; }
  say "  virsh: $(grep -m1 'Hook script' "$work/big.err" || tail -n 1 "$work/big.err")"
}
check "virsh net-start vfp-big (99 VFs on a PF with sriov_totalvfs 8) fails with vfpool's sentence" big_refused

# libvirt still calls `stopped end` after a refused start: that must neither create VFs nor
# touch another running network's PF.
after_refusal() {
  local state
  state=$(v net-info vfp-big 2>/dev/null | awk '$1 == "Active:" { print $2 }')
  [ "$state" = no ] || { why="vfp-big Active: '$state', expected no"; return 1; }
  expect_vfs eth2 0 && expect_vfs eth1 4
}
check "after the refused start: eth2 numVfs 0, vfp-big inactive, eth1 still 4" after_refusal

destroy_net() { virsh_ok net-destroy vfp-net && expect_vfs eth1 0; }
check "virsh net-destroy vfp-net (hook: stopped end): eth1 numVfs 0" destroy_net

# The real-host form: the hook activates the VFs at `start begin`, then libvirt looks for netdev
# eth1 and its VFs, which the simulated host does not have, fails, and calls `stopped end`.
pf_form() {
  if v net-start vfp-pf >"$work/virsh.out" 2>"$work/pf.err"; then
    why="net-start vfp-pf succeeded: this machine has a netdev eth1 with VFs? (test assumes none)"; return 1
  fi
  grep -q "No usable Vf's present on SRIOV PF eth1" "$work/pf.err" \
    || { why="expected libvirt's own refusal after the hook passed, got: $(tr '\n' ' ' <"$work/pf.err")"; return 1; }
  expect_vfs eth1 0
}
check "<pf dev='eth1'> form: hook passes, libvirt then finds no netdev eth1, stopped end leaves numVfs 0" pf_form

# libvirt 11.3 starts a passthrough network listing <interface dev='eth2'/> without eth2 (and
# would give guests eth2 itself): vfpool's hook refuses it, naming the <pf dev> form to use.
pt_refused() {
  if v net-start vfp-pt >"$work/virsh.out" 2>"$work/pt.err"; then why="net-start vfp-pt succeeded"; return 1; fi
  grep -q "lists PF eth2 as <interface dev='eth2'/> in passthrough mode" "$work/pt.err" \
    || { why="virsh error lacks vfpool's sentence: $(tr '\n' ' ' <"$work/pt.err")"; return 1; }
  say "  virsh: $(grep -m1 'Hook script' "$work/pt.err" | cut -c1-200 || tail -n 1 "$work/pt.err")"
  expect_vfs eth2 0
}
check "virsh net-start vfp-pt (passthrough <interface dev='eth2'/>, eth2 a PF) fails with vfpool's sentence, eth2 untouched" pt_refused

undefine_all() {
  local n left
  # An earlier failed check may have left one active; undefine would only make it transient.
  for n in "${NETS[@]}"; do v net-destroy "$n" >/dev/null 2>&1; virsh_ok net-undefine "$n" || return 1; done
  left=$(v net-list --all --name | grep -x 'vfp-.*' | tr '\n' ' ')
  [ -z "$left" ] || { why="still defined: $left"; return 1; }
}
check "virsh net-undefine of all four networks" undefine_all

exit 0 # cleanup (trap) stops the daemon, uninstalls, restores the conf and prints the totals
