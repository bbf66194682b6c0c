#!/usr/bin/env bash
# npm run test:migrate: the real migration proofs, one row per check, then `N passed, M failed`.
#   qemu-loopback.test.sh   (a) vfpool's stages between two QEMU 10.0 processes on loopback, and a perform killed after its device_del
#   failover-guest.test.sh  (b) a guest kernel's failover pair migrated between two QEMUs
#   libvirt-pair.test.sh    (c) two libvirt daemons on one machine, vfpool hooks and wrapper on both: virsh migrate --live, vfpool migrate
# Needs root (libvirtd) and the lab packages (scripts/install-lab-packages.sh); under CI=true a
# missing package is a failure, never a skip.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Each proof's rows are printed as they come (a proof that stops answering shows where), and each
# is bounded: VFPOOL_MIG_PROOF_TIMEOUT seconds (default 900; a whole run takes ~2 minutes), then
# TERM to its process group, whose EXIT trap stops the daemons and QEMUs it started.
proof_timeout=${VFPOOL_MIG_PROOF_TIMEOUT:-900}
total_p=0 total_f=0
log=$(mktemp /tmp/vfpool-mig-run.XXXXXX)
trap 'rm -f "$log"' EXIT
for t in qemu-loopback failover-guest libvirt-pair; do
  [ -f "$here/$t.test.sh" ] || continue
  echo "== $t"
  timeout --kill-after=60 "$proof_timeout" bash "$here/$t.test.sh" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 124 ] && echo "FAIL $t: still running after ${proof_timeout}s (VFPOOL_MIG_PROOF_TIMEOUT), stopped"
  out=$(tail -n 1 "$log")
  if [ "$rc" != 124 ] && [[ $out =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    total_p=$((total_p + BASH_REMATCH[1])); total_f=$((total_f + BASH_REMATCH[2]))
  else
    [ "$rc" = 124 ] || echo "FAIL $t: ended without a summary line ($out)"
    total_f=$((total_f + 1))
  fi
done
echo "$total_p passed, $total_f failed"
[ "$total_f" = 0 ]
