#!/usr/bin/env bash
# npm run test:migrate: the real migration proofs, one row per check, then `N passed, M failed`.
#   qemu-loopback.test.sh   (a) vfpool's stages between two QEMU 10.0 processes on loopback, and a perform killed after its device_del
#   failover-guest.test.sh  (b) a guest kernel's failover pair migrated between two QEMUs
#   libvirt-pair.test.sh    (c) two libvirt daemons on one machine, vfpool hooks and wrapper on both: virsh migrate --live, vfpool migrate
# Needs root (libvirtd) and the lab packages (scripts/install-lab-packages.sh); under CI=true a
# missing package is a failure, never a skip.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
total_p=0 total_f=0
for t in qemu-loopback failover-guest libvirt-pair; do
  [ -f "$here/$t.test.sh" ] || continue
  echo "== $t"
  all=$(bash "$here/$t.test.sh" 2>&1)
  printf '%s\n' "$all"
  out=$(tail -n 1 <<<"$all")
  if [[ $out =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    total_p=$((total_p + BASH_REMATCH[1])); total_f=$((total_f + BASH_REMATCH[2]))
  else
    echo "FAIL $t: ended without a summary line ($out)"; total_f=$((total_f + 1))
  fi
done
echo "$total_p passed, $total_f failed"
[ "$total_f" = 0 ]
