/**
 * How the wrapper's Node half hands the edited argv back to its shell half
 * (qemu-args/vfpool-qemu), which execs QEMU with it: Node has no execve, and a child QEMU would
 * leave libvirt holding the wrong pid.
 *
 * One line per argument, `+` then the argument; an argument holding newlines continues on
 * lines starting with `|`. The shim rebuilds "$@" from these lines with `read -r` and
 * `set --`, so no argument ever passes through the shell's evaluation. (QEMU's argv cannot
 * hold NUL, and POSIX sh, dash included, cannot read NUL-separated input.)
 */
export function encodeArgv(argv: string[]): string {
  return argv.map((a) => `+${a.split('\n').join('\n|')}\n`).join('');
}

/** The shim's decoding, for tests and tools. */
export function decodeArgv(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('+')) out.push(line.slice(1));
    else if (line.startsWith('|') && out.length) out[out.length - 1] += `\n${line.slice(1)}`;
  }
  return out;
}
