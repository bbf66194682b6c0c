# Sourced by the test/qemu-guest guest scripts (they run inside run-in-guest.sh's guest). One check =
# one row: printed for people, and appended as STATUS \t NAME \t DETAIL to
# $VFPOOL_LAB_OUT/checks.tsv for run-qemu.sh's table. A guest script refuses to run on a host.
if [ "${VFPOOL_LAB_GUEST:-}" != 1 ] || [ -z "${VFPOOL_LAB_OUT:-}" ]; then
  echo "${0##*/}: runs only inside the lab guest: bash test/lab/run-in-guest.sh … $0 OUTDIR" >&2
  exit 2
fi
checks_tsv=$VFPOOL_LAB_OUT/checks.tsv
: >"$checks_tsv"
failed=0
record() { # STATUS NAME DETAIL
  echo "$1 $2: $3"
  printf '%s\t%s\t%s\n' "$1" "$2" "$(printf '%s' "$3" | tr '\t\n' '  ')" >>"$checks_tsv"
  [ "$1" != FAIL ] || failed=1
}
# check NAME FUNC...: FUNC prints the detail; its exit status decides PASS/FAIL. FUNC runs in
# this shell (not a $(…) subshell), so what it finds (a netdev name) stays set for later checks.
check() {
  local name=$1 out rc=0; shift
  "$@" >/tmp/check.out 2>&1 || rc=$?
  out=$(cat /tmp/check.out)
  if [ $rc = 0 ]; then record PASS "$name" "${out//$'\n'/ | }"
  else record FAIL "$name" "${out//$'\n'/ | }"; return 1; fi
}
# Poll up to SECS for CMD: hotplug, VF probing and netdev creation are asynchronous, slow under TCG.
wait_for() {
  local secs=$1; shift
  local end=$(( $(date +%s) + secs ))
  until "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.2; done
}
# The expectations the host wrote from vfpool's generated arguments: KEY VALUE… lines.
expect_file=$VFPOOL_LAB_OUT/expect.txt
expect() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "$expect_file"; }
driver_of() { # NETDEV: the driver behind it (virtio devices sit one level below their PCI function)
  basename "$(readlink -f "/sys/class/net/$1/device/driver" 2>/dev/null)" 2>/dev/null
}
mac_of() { cat "/sys/class/net/$1/address" 2>/dev/null; }
