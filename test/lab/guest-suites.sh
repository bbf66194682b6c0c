#!/usr/bin/env bash
# Guest script: vfpool's own suites on the real kernel, in one boot (run-lab.sh starts it):
#   host        the Host behavioural suite, LinuxHost on the igb PF    dist/test/host/host-real.lab.js
#   activation  pool activation (seed 000) through the core            dist/test/pool/activation-real.lab.js
#   flow        hooks/network + hooks/qemu as libvirt runs them        dist/test/entry/flow-real.lab.js
# Each writes its TAP to $VFPOOL_LAB_OUT/NAME.tap and its exit status to NAME.status (the host
# side turns them into the per-check table); everything also goes to the guest log.
# The built tree must exist (`npm run build`): the guest's / is the host's, read-only.
#
#   bash test/lab/run-in-guest.sh test/lab/guest-suites.sh test/lab/.out/suites
set -uo pipefail

if [ "${VFPOOL_LAB_GUEST:-}" != 1 ] || [ -z "${VFPOOL_LAB_OUT:-}" ]; then
  echo "guest-suites: writes sysfs and rebinds drivers; it runs only in the lab guest: bash test/lab/run-in-guest.sh $0 OUTDIR" >&2
  exit 2
fi
out=$VFPOOL_LAB_OUT
rc=0

suite() { # NAME FILE
  local name=$1 file=$2 st t0=$SECONDS
  echo "==== guest-suites: $name ($file)"
  rm -f "$out/$name.tap" "$out/$name.status"
  if [ ! -f "$file" ]; then
    # Not a skip: a missing build is a failure with its reason, in the table like any other.
    printf 'TAP version 14\nnot ok 1 - %s is not built: run npm run build first\n1..1\n' "$file" >"$out/$name.tap"
    cat "$out/$name.tap"
    st=1
  else
    # TAP on stdout; Node's own stderr (a crash) goes to the log too, not into the TAP file.
    node "$file" | tee "$out/$name.tap"
    st=${PIPESTATUS[0]}
  fi
  echo "$st" >"$out/$name.status"
  echo "==== guest-suites: $name exited $st after $(( SECONDS - t0 )) s"
  [ "$st" = 0 ] || rc=1
}

suite host dist/test/host/host-real.lab.js
suite activation dist/test/pool/activation-real.lab.js
suite flow dist/test/entry/flow-real.lab.js
exit $rc
