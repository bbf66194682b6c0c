// The QMP events a QEMU sends, for a shell test: `node qmp-events.js SOCKET MAX_SECONDS` connects
// (QEMU broadcasts every event to every monitor, vfpool's socket included), prints `listening`,
// then one JSON line per event ({"event","data"}) until QEMU closes the socket (a migrated
// source quits) or MAX_SECONDS pass; then `closed` or `timeout`. Uses src/qemu's client.
import { QmpClient, QmpClosedError } from '../../src/qemu/qmp.js';

const [sock, maxRaw] = process.argv.slice(2);
const max = Number(maxRaw);
if (!sock || !Number.isInteger(max) || max <= 0) {
  process.stderr.write('usage: qmp-events SOCKET MAX_SECONDS\n');
  process.exit(2);
}
try {
  const client = await QmpClient.connect(sock, { timeoutMs: 10_000 });
  client.events.listen((e) => process.stdout.write(JSON.stringify({ event: e.event, data: e.data }) + '\n'));
  process.stdout.write('listening\n');
  // A waiter for an event that never comes while QEMU runs: its rejection is how the closed socket shows.
  const end = await client.events.waitFor('VFPOOL_TEST_NEVER', () => false, { timeoutMs: max * 1000 }).promise
    .then(() => 'timeout', (e: Error) => (e instanceof QmpClosedError ? 'closed' : 'timeout'));
  process.stdout.write(`${end}\n`);
  client.close();
} catch (err) {
  process.stderr.write(`qmp-events: ${(err as Error).message}\n`);
  process.exit(1);
}
