// An eavesdropper on a lab segment, for test/lab-faults.test.ts (issue 9, item 1): run inside a
// lab namespace on the bridge (the client's), it records the cluster's heartbeat multicast as
// it goes by, and later sends every recorded datagram back to the group, byte for byte and
// without the key, round after round. It is a standalone script (node builtins only), run with
// `runScriptIn` of support/lab-faults.ts, which transpiles it and starts it with
// `ip netns exec`:
//
//   record --group G --port P --local IP --ms N --out FILE    join G on the interface of IP,
//                                                             keep what arrives for N ms
//   replay --group G --port P --local IP --in FILE --ms N --interval-ms I
//                                                             every I ms send all of FILE to G,
//                                                             for N ms
//
// Both print one JSON line with what they did. Every loop is bounded in count and in time, and
// the group must be an administratively scoped IPv4 group and IP a lab address (198.18.0.0/15),
// so the script can only ever talk to the lab's own segment.
import dgram from 'node:dgram';
import { readFileSync, writeFileSync } from 'node:fs';

/** A 3-host cluster sends ~16 heartbeats/s; 2,000 is two minutes of them. */
const recordedMax = 2_000;
const recordMsMax = 10_000;
const replayMsMax = 10_000;
/** Sends in one replay run, whatever the arguments say. */
const sendsMax = 20_000;
const intervalMsMin = 20;
/** nlbd's datagram limit (heartbeat-size.ts): a larger one is not a heartbeat. */
const datagramBytesMax = 1_400;

interface Args {
  readonly mode: 'record' | 'replay';
  readonly group: string;
  readonly port: number;
  readonly local: string;
  readonly ms: number;
  readonly file: string;
  readonly intervalMs: number;
}

function fail(message: string): never {
  process.stderr.write(`heartbeat-replay: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv: readonly string[]): Args {
  const mode = argv[0];
  if (mode !== 'record' && mode !== 'replay') fail(`first argument: record or replay`);
  const options = new Map<string, string>();
  for (let i = 1; i + 1 < argv.length; i += 2) options.set(argv[i]!, argv[i + 1]!);
  const get = (name: string): string => options.get(name) ?? fail(`${name} is missing`);
  const group = get('--group');
  const local = get('--local');
  const port = Number(get('--port'));
  const ms = Number(get('--ms'));
  const intervalMs = Number(options.get('--interval-ms') ?? '200');
  // 239.0.0.0/8 is administratively scoped: it never leaves the segment the lab built.
  if (!/^239\.\d+\.\d+\.\d+$/.test(group)) fail(`--group must be in 239.0.0.0/8, got ${group}`);
  if (!/^198\.1[89]\.\d+\.\d+$/.test(local)) fail(`--local must be in 198.18.0.0/15: ${local}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`bad --port ${port}`);
  const msMax = mode === 'record' ? recordMsMax : replayMsMax;
  if (!(ms > 0 && ms <= msMax)) fail(`--ms must be 1..${msMax}, got ${ms}`);
  if (!(intervalMs >= intervalMsMin && intervalMs <= ms)) fail(`bad --interval-ms ${intervalMs}`);
  const file = get(mode === 'record' ? '--out' : '--in');
  return { mode, group, port, local, ms, file, intervalMs };
}

function record(args: Args): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    const datagrams: Buffer[] = [];
    let dropped = 0;
    socket.on('error', reject);
    socket.on('message', (message) => {
      if (datagrams.length < recordedMax && message.length <= datagramBytesMax) {
        datagrams.push(message);
      } else {
        dropped++;
      }
    });
    // Bound to the group, as nlbd's transport is: only the group's datagrams arrive.
    socket.bind({ address: args.group, port: args.port }, () => {
      socket.addMembership(args.group, args.local);
      setTimeout(() => {
        socket.close();
        writeFileSync(args.file, datagrams.map((d) => d.toString('base64')).join('\n') + '\n', {
          mode: 0o600,
        });
        process.stdout.write(
          `${JSON.stringify({ recorded: datagrams.length, dropped, bytes: datagrams.reduce((n, d) => n + d.length, 0) })}\n`,
        );
        resolve();
      }, args.ms);
    });
  });
}

function replay(args: Args): Promise<void> {
  const datagrams = readFileSync(args.file, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .slice(0, recordedMax)
    .map((line) => Buffer.from(line, 'base64'));
  if (datagrams.length === 0) fail(`${args.file} holds no datagram`);
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    let rounds = 0;
    let sent = 0;
    let errors = 0;
    socket.on('error', reject);
    socket.bind({ address: args.local, port: 0 }, () => {
      socket.setMulticastInterface(args.local);
      socket.setMulticastTTL(1);
      socket.setMulticastLoopback(false);
      const started = Date.now();
      const round = (): void => {
        if (Date.now() - started >= args.ms || sent + datagrams.length > sendsMax) {
          clearInterval(timer);
          // Let the last sends leave before closing.
          setTimeout(() => {
            socket.close();
            process.stdout.write(
              `${JSON.stringify({ rounds, sent, errors, datagrams: datagrams.length })}\n`,
            );
            resolve();
          }, 50);
          return;
        }
        rounds++;
        for (const datagram of datagrams) {
          sent++;
          socket.send(datagram, args.port, args.group, (error) => {
            if (error) errors++;
          });
        }
      };
      const timer = setInterval(round, args.intervalMs);
      round();
    });
  });
}

const args = parseArgs(process.argv.slice(2));
// A last guard on time: whatever happens above, the script ends.
setTimeout(() => fail('did not finish in time'), args.ms + 5_000).unref();
await (args.mode === 'record' ? record(args) : replay(args));
