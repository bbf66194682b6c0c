// A QMP command from a shell test: `node qmp-cli.js SOCKET COMMAND [JSON-ARGUMENTS]` prints
// QEMU's return value as JSON (exit 1 and QMP's error on stderr). Uses src/migrate's client.
import { connectQmp } from '../../src/migrate/qmp-port.js';

const [sock, command, args] = process.argv.slice(2);
if (!sock || !command) {
  process.stderr.write('usage: qmp-cli SOCKET COMMAND [JSON-ARGUMENTS]\n');
  process.exit(2);
}
try {
  const qmp = await connectQmp(sock, 10_000);
  const r = await qmp.execute(command, args ? (JSON.parse(args) as Record<string, unknown>) : undefined, 30_000);
  process.stdout.write(JSON.stringify(r) + '\n');
  qmp.close();
} catch (err) {
  process.stderr.write(`qmp-cli: ${(err as Error).message}\n`);
  process.exit(1);
}
