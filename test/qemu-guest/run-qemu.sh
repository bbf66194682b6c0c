#!/usr/bin/env bash
# `npm run test:qemu` (after `npm run build`): vfpool's generated QEMU arguments proven by guest
# kernels (Debian's 6.12, booted under TCG by test/lab/run-in-guest.sh), three boots side by side:
#   failover  QEMU 10.0 (/usr/bin): a hybrid pool's VF on the simulated host, an emulated e1000e
#             standing in for it (VFPOOL_SIM_VF_DEVICE); the guest's command line carries only the
#             standby virtio-net, as libvirt writes it; vfpool's wrapper (qemu-args/vfpool-qemu)
#             adds `failover=on` and the primary; in the guest net_failover enslaves both under
#             one master with the same MAC (test/qemu-guest/guest-failover.sh).
#   sriov3    QEMU 11.1 (scripts/qemu-sriov): `<vfpool:sriov-nic vfs='3'/>` through
#   sriov9    `vfpool qemu-args --xml --json`; the guest sees the PF with sriov_totalvfs = N,
#             creates the VFs, each VF netdev has vfpool's MAC; 9 needs ARI (test/qemu-guest/guest-sriov.sh).
# Needs root: it installs the packages (scripts/install-lab-packages.sh lab, and
# scripts/install-qemu-sriov.sh for QEMU 11.1) and shares / with the guests over 9p. Anything
# missing is a FAIL row, never a skip. Prints one PASS/FAIL row per check, the wall time, and last
# exactly "N passed, M failed"; exit 1 on any failure.
# Outputs: test/qemu-guest/.out/BOOT/ ($VFPOOL_QEMU_TEST_OUTDIR): argv/args, devices.txt, guest/ (guest.log,
# console.log, qemu.log, checks.tsv). Env: VFPOOL_QEMU_TEST_PARALLEL=0 boots one after the other.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${VFPOOL_QEMU_TEST_OUTDIR:-$here/.out}
qemu10=/usr/bin/qemu-system-x86_64
qemu11=$repo/scripts/qemu-sriov
boot_timeout=300
start=$SECONDS

mkdir -p "$out" || { echo "run-qemu: cannot create $out" >&2; exit 1; }
rm -f "$out"/*.rows

# row FILE STATUS GROUP NAME DETAIL
row() {
  printf '%s\t%s\t%s\t%s\n' "$2" "$3" "$4" "$(printf '%s' "$5" | tr '\t\n' '  ')" >>"$1"
  echo "$2 [$3] $4: $5"
}
cli() { node "$repo/dist/bin/cli.mjs" "$@"; }

report() {
  local passed failed
  echo
  echo "==== vfpool QEMU proofs on guest kernels ($out) ===="
  cat "$out"/setup.rows "$out"/failover.rows "$out"/sriov3.rows "$out"/sriov9.rows 2>/dev/null \
    | awk -F'\t' '{ printf "%-4s  %-8s  %-58s  %s\n", $1, $2, $3, ($1 == "PASS" ? "" : substr($4, 1, 160)) }'
  passed=$(cat "$out"/*.rows 2>/dev/null | grep -c '^PASS' || true)
  failed=$(cat "$out"/*.rows 2>/dev/null | grep -c '^FAIL' || true)
  echo "wall time $(( SECONDS - start )) s"
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ] && [ "$passed" -gt 0 ]
}

# ---- set-up: everything a fresh machine lacks, through the project's own scripts -------------
setup_ok=1
if [ "$(id -u)" != 0 ]; then
  row "$out/setup.rows" FAIL setup "root" "needs root: installs packages and shares / with the guests over 9p; run as root (CI does)"
  setup_ok=0
elif [ ! -f "$repo/dist/bin/cli.mjs" ]; then
  row "$out/setup.rows" FAIL setup "vfpool built" "no dist/bin/cli.mjs: run \`npm run build\` (npm run test:qemu does)"
  setup_ok=0
else
  t=$SECONDS
  if msg=$(bash "$repo/scripts/install-lab-packages.sh" lab 2>&1); then
    row "$out/setup.rows" PASS setup "QEMU 10.0 + kernel 6.12 (install-lab-packages.sh lab)" "$($qemu10 -version | head -n1); $(( SECONDS - t )) s"
  else
    row "$out/setup.rows" FAIL setup "QEMU 10.0 + kernel 6.12 (install-lab-packages.sh lab)" "$msg"
    setup_ok=0
  fi
  t=$SECONDS
  if msg=$(bash "$repo/scripts/install-qemu-sriov.sh" 2>&1); then
    row "$out/setup.rows" PASS setup "QEMU 11.1 (install-qemu-sriov.sh)" "$($qemu11 -version | head -n1); $(( SECONDS - t )) s"
  else
    row "$out/setup.rows" FAIL setup "QEMU 11.1 (install-qemu-sriov.sh)" "$msg"
    setup_ok=0
  fi
fi
if [ $setup_ok = 0 ]; then report; exit 1; fi

# A guest boot's own rows: checks.tsv from the guest script, and a FAIL when the boot ended
# without one (timeout, crash) or with fewer checks than the script has.
guest_rows() { # ROWS GROUP GUESTDIR EXIT MIN_CHECKS SECS
  local rows=$1 group=$2 g=$3 rc=$4 min=$5 secs=$6 n=0 bad=0 st name detail
  if [ -f "$g/checks.tsv" ]; then
    while IFS=$'\t' read -r st name detail; do
      [ "$st" = PASS ] || [ "$st" = FAIL ] || continue
      row "$rows" "$st" "$group" "guest: $name" "$detail"
      n=$((n + 1)); [ "$st" = PASS ] || bad=1
    done <"$g/checks.tsv"
  fi
  if [ $bad = 0 ] && { [ "$rc" != 0 ] || [ $n -lt "$min" ]; }; then
    row "$rows" FAIL "$group" "guest boot" "exit $rc after ${secs} s with $n of $min checks; see $g/console.log, guest.log, qemu.log"
  else
    row "$rows" INFO "$group" "guest boot" "exit $rc, $n checks, ${secs} s"
  fi
}

# ---- failover: QEMU 10.0 through vfpool's wrapper ----------------------------------------------
proof_failover() {
  local d=$out/failover rows=$out/failover.rows mac=52:54:00:fa:11:01 dom=vfpool-failover
  rm -rf "$d"; mkdir -p "$d/host" "$d/guest"
  if [ ! -x "$repo/qemu-args/vfpool-qemu" ]; then
    row "$rows" FAIL failover "vfpool's wrapper" "no executable qemu-args/vfpool-qemu in $repo"
    return
  fi
  (
    # The simulated host: an igb-like PF with 2 VFs, a hybrid pool on it; its VF reaches QEMU as
    # the emulated e1000e that VFPOOL_SIM_VF_DEVICE names, with the VF's MAC, where vfio-pci would go.
    export VFPOOL_HOST=sim:$d/host/host.json VFPOOL_CONFIG_DIR=$d/host/etc VFPOOL_STATE_DIR=$d/host/run
    export VFPOOL_SIM_VF_DEVICE=e1000e
    echo '{"pfs":[{"name":"eth2","totalVfs":2,"address":"0000:03:00.0","vfDriver":"igbvf","offset":128,"stride":2}]}' >"$d/host/host.json"
    cat >"$d/host/pool.xml" <<'XML'
<network><name>direct-network</name>
  <forward mode='pci-passthrough-hybrid'><pf dev='eth2'><vf num='2'/></pf></forward></network>
XML
    cat >"$d/host/domain.xml" <<XML
<domain type='qemu'><name>$dom</name><uuid>5d1e2c3b-8a4f-4e6d-9c7b-1a2b3c4d5e6f</uuid>
  <devices>
    <interface type='network'><source network='direct-network'/><mac address='$mac'/><model type='virtio'/></interface>
  </devices></domain>
XML
    local msg
    if msg=$(cli net-define "$d/host/pool.xml" 2>&1 && cli net-start direct-network 2>&1 && cli prepare --xml "$d/host/domain.xml" 2>&1); then
      row "$rows" PASS failover "vfpool prepare: hybrid VF for $mac (simulated host)" "$(echo "$msg" | tail -n1)"
    else
      row "$rows" FAIL failover "vfpool prepare: hybrid VF for $mac (simulated host)" "$msg"
      return
    fi
    local plan=$VFPOOL_STATE_DIR/qemu/$dom/plan.json
    if [ -f "$plan" ]; then
      row "$rows" PASS failover "vfpool prepare wrote the wrapper's plan" "$plan: $(node -e 'const p = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(JSON.stringify(p.vfs))' "$plan")"
    else
      row "$rows" FAIL failover "vfpool prepare wrote the wrapper's plan" "no $plan after prepare"
      return
    fi
    # The guest's command line as libvirt 11 writes it (JSON -device): the virtio-net NIC of the
    # <interface>, on a root port of its own, and nothing about failover.
    {
      printf '%s\n' -name "guest=$dom,debug-threads=on"
      printf '%s\n' -netdev '{"type":"user","id":"hostnet0"}'
      printf '%s\n' -device '{"driver":"pcie-root-port","port":16,"chassis":1,"id":"pci.1","bus":"pcie.0","addr":"0x10"}'
      printf '%s\n' -device "{\"driver\":\"virtio-net-pci\",\"netdev\":\"hostnet0\",\"id\":\"net0\",\"mac\":\"$mac\",\"bus\":\"pci.1\",\"addr\":\"0x0\"}"
    } >"$d/devices.txt"
    echo "mac $mac" >"$d/guest/expect.txt"
    local t=$SECONDS rc=0
    VFPOOL_QEMU=$here/record-argv-qemu.sh VFPOOL_TEST_REAL_QEMU=$qemu10 VFPOOL_TEST_ARGV_FILE=$d/argv.txt \
      bash "$repo/test/lab/run-in-guest.sh" --timeout "$boot_timeout" --qemu "$repo/qemu-args/vfpool-qemu" \
        --devices "$d/devices.txt" --modules virtio_net,e1000e "$here/guest-failover.sh" "$d/guest" \
        >"$d/run.log" 2>&1 || rc=$?
    if [ -f "$d/argv.txt" ]; then
      if msg=$(node "$here/qemu-argv.mjs" failover "$d/argv.txt" "$d/devices.txt" "$mac" 2>&1); then
        row "$rows" PASS failover "wrapper: failover=on on net0, e1000e primary paired, same MAC" "$msg"
      else
        row "$rows" FAIL failover "wrapper: failover=on on net0, e1000e primary paired, same MAC" "$msg"
      fi
    else
      row "$rows" FAIL failover "wrapper exec'd QEMU" "QEMU was never started with a kernel (no $d/argv.txt); see $d/run.log and $d/guest/qemu.log"
    fi
    guest_rows "$rows" failover "$d/guest" "$rc" 5 $(( SECONDS - t ))
    if msg=$(cli release "$dom" 2>&1) && cli status --json | node -e '
        let s = ""; process.stdin.on("data", (c) => (s += c)).on("end", () => {
          const held = JSON.parse(s).pfs.flatMap((p) => p.vfs).filter((v) => v.owner);
          if (held.length) { console.log("still held: " + JSON.stringify(held)); process.exit(1); }
        });'; then
      row "$rows" PASS failover "vfpool release: the VF is free again" "${msg:-released}"
    else
      row "$rows" FAIL failover "vfpool release: the VF is free again" "$msg"
    fi
    # The wrapper's QMP monitor on QEMU 11.1: -mon is deprecated there (a warning on every start),
    # and -object monitor-qmp does not exist in 10.0, so vfpool uses -qmp.
    local qmparg='' what="QEMU 11.1 takes the wrapper's QMP monitor without a warning"
    if [ -f "$d/argv.txt" ]; then qmparg=$(grep -A1 -x -- -qmp "$d/argv.txt" | sed -n 2p || true); fi
    if [ -z "$qmparg" ]; then
      row "$rows" FAIL failover "$what" "no -qmp in the wrapper's argv ($d/argv.txt)"
    elif [ ! -x "$qemu11" ] || ! "$qemu11" -version >/dev/null 2>&1; then
      row "$rows" FAIL failover "$what" "QEMU 11.1 ($qemu11) does not run: see the setup row"
    else
      local sock=${qmparg#unix:}; sock=${sock%%,*}
      mkdir -p "$(dirname "$sock")"
      timeout 60 "$qemu11" -M none -nodefaults -display none -S -qmp "$qmparg" 2>"$d/qemu11-qmp.err" & local q=$!
      for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.2; done
      if msg=$(node "$repo/dist/test/migrate/qmp-cli.js" "$sock" query-status 2>&1) && kill $q 2>/dev/null && { wait $q || true; } \
          && ! grep -qi 'deprecat\|warning' "$d/qemu11-qmp.err"; then
        row "$rows" PASS failover "$what" "query-status: $msg; stderr: $(grep -v 'terminating on signal' "$d/qemu11-qmp.err" | head -n 2 | tr '\n' ' ')"
      else
        kill $q 2>/dev/null; wait $q 2>/dev/null
        row "$rows" FAIL failover "$what" "${msg:-}; stderr: $(head -n 3 "$d/qemu11-qmp.err" | tr '\n' ' ')"
      fi
    fi
    cli net-destroy direct-network >/dev/null 2>&1 || true
  )
}

# ---- emulated SR-IOV: QEMU 11.1, arguments from `vfpool qemu-args --xml` -----------------------
proof_sriov() { # N
  local n=$1 d=$out/sriov$1 rows=$out/sriov$1.rows group=sriov$1 dom=vfpool-sriov$1
  rm -rf "$d"; mkdir -p "$d/guest"
  (
    export VFPOOL_STATE_DIR=$d/run VFPOOL_CONFIG_DIR=$d/etc
    cat >"$d/domain.xml" <<XML
<domain type='qemu'><name>$dom</name><uuid>7c0e6f1a-2b3d-4e5f-8a9b-0c1d2e3f40$(printf '%02d' "$n")</uuid>
  <metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'>
    <vfpool:sriov-nic vfs='$n' backend='user'/>
  </vfpool:domain></metadata></domain>
XML
    local msg rc=0 t
    if [ "$n" = 3 ]; then
      # The same request against QEMU 10.0: refused before anything starts, with a sentence.
      msg=$(VFPOOL_QEMU=$qemu10 cli qemu-args --xml "$d/domain.xml" --json 2>&1) && rc=0 || rc=$?
      if [ "$rc" != 0 ] && [ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] && grep -q 'sriov-pf' <<<"$msg"; then
        row "$rows" PASS "$group" "qemu-args refuses QEMU 10.0 (no sriov-pf)" "exit $rc: $msg"
      else
        row "$rows" FAIL "$group" "qemu-args refuses QEMU 10.0 (no sriov-pf)" "exit $rc, want non-zero and one line naming sriov-pf: $msg"
      fi
    fi
    rc=0
    VFPOOL_QEMU=$qemu11 cli qemu-args --xml "$d/domain.xml" --json >"$d/args.json" 2>"$d/args.err" || rc=$?
    if [ $rc != 0 ]; then
      row "$rows" FAIL "$group" "vfpool qemu-args --xml: $n VFs" "exit $rc: $(cat "$d/args.err")"
      return
    fi
    if msg=$(node "$here/qemu-argv.mjs" sriov "$d/args.json" "$n" "$d/devices.txt" "$d/guest/expect.txt" 2>&1); then
      row "$rows" PASS "$group" "vfpool qemu-args --xml: $n VFs before their PF" "$msg"
    else
      row "$rows" FAIL "$group" "vfpool qemu-args --xml: $n VFs before their PF" "$msg"
      return
    fi
    t=$SECONDS rc=0
    bash "$repo/test/lab/run-in-guest.sh" --timeout "$boot_timeout" --qemu "$qemu11" \
      --devices "$d/devices.txt" --modules virtio_net "$here/guest-sriov.sh" "$d/guest" \
      >"$d/run.log" 2>&1 || rc=$?
    local min=5; [ "$n" -le 7 ] || min=6
    guest_rows "$rows" "$group" "$d/guest" "$rc" $min $(( SECONDS - t ))
  )
}

parallel=${VFPOOL_QEMU_TEST_PARALLEL:-}
[ -n "$parallel" ] || { [ "$(nproc)" -ge 2 ] && parallel=1 || parallel=0; }
echo "run-qemu: booting failover, sriov3, sriov9 ($([ "$parallel" = 1 ] && echo side by side || echo one after the other)); logs in $out/*/run.log"
if [ "$parallel" = 1 ]; then
  proof_failover & p1=$!
  proof_sriov 3 & p2=$!
  proof_sriov 9 & p3=$!
  wait $p1 $p2 $p3
else
  proof_failover
  proof_sriov 3
  proof_sriov 9
fi
report
