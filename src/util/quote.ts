/**
 * How a message shows a value it received. Every failure is ONE line on stderr (libvirt shows
 * a hook's stderr verbatim, scripts read the CLI's line by line), and a name from XML or argv
 * may hold a newline, a NUL or a terminal escape: those are shown escaped, never raw. A value
 * longer than a line can hold (a 10 MB attribute) is cut, saying how long it was.
 */
const MAX_SHOWN = 160;

// C0 and C1 controls, DEL, and the two Unicode line separators some terminals honour.
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '\0': '\\0' };

/** `s` with every control character written as an escape (`\n`, `\x1b`, `\u2028`). */
export function escapeControl(s: string): string {
  return s.replace(CONTROL_RE, (c) => {
    const code = c.charCodeAt(0);
    return NAMED[c] ?? (code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16)}`);
  });
}

/** A received value as messages quote it: `'value'`, escaped, at most MAX_SHOWN characters. */
export function quoteInput(value: string): string {
  const shown = value.length > MAX_SHOWN ? `${value.slice(0, MAX_SHOWN)}…' (${value.length} characters)` : `${value}'`;
  return `'${escapeControl(shown)}`;
}
