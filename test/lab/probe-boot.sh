#!/usr/bin/env bash
# Guest script of run-lab.sh's `probe` boot, the shortest of the three: the kernel facts
# (probe-kernel.sh), then on the same PF the net-start bench (bench-net-start.sh), so the bench
# adds no boot of its own. Exits 1 if either failed (each writes its own rows).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rc=0
bash "$here/probe-kernel.sh" || rc=1
bash "$here/bench-net-start.sh" || rc=1
exit "$rc"
