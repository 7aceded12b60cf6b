// Network namespaces and processes for the real-kernel data plane tests. Every namespace gets a
// unique `nlbt-<tag>-<pid>-<random>-` prefix and is removed by `removeAll`, even when a test fails;
// nothing is ever configured in the root namespace (links are created inside the host namespace
// and their peer is moved straight into the client namespace).
import {
  type ChildProcessWithoutNullStreams,
  execFile,
  execFileSync,
  spawn,
} from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export { isRoot, labRequired } from './support/root.js';

export class Namespaces {
  readonly prefix: string;
  private readonly created: string[] = [];
  private readonly processes: ChildProcessWithoutNullStreams[] = [];

  /** `tag` names the test file's namespaces apart: dp (data plane), rn, rs (routed), ... */
  constructor(tag = 'dp') {
    this.prefix = `nlbt-${tag}-${process.pid}-${randomBytes(3).toString('hex')}-`;
  }

  add(suffix: string): string {
    const name = `${this.prefix}${suffix}`;
    execFileSync('ip', ['netns', 'add', name]);
    this.created.push(name);
    this.ip(name, ['link', 'set', 'lo', 'up']);
    return name;
  }

  ip(namespace: string, args: readonly string[]): string {
    this.assertOurs(namespace);
    return execFileSync('ip', ['-n', namespace, ...args], { encoding: 'utf8' });
  }

  exec(namespace: string, argv: readonly string[], input?: string): string {
    this.assertOurs(namespace);
    const options = { encoding: 'utf8' as const, ...(input === undefined ? {} : { input }) };
    return execFileSync('ip', ['netns', 'exec', namespace, ...argv], options);
  }

  /** Sends one UDP datagram from `namespace`, from `source` (multicast out of its interface). */
  sendUdp(namespace: string, source: string, destination: string, port: number): void {
    const script = `const s = require('node:dgram').createSocket('udp4');
      s.bind(0, '${source}', () => { s.setMulticastInterface('${source}');
      s.send('x', ${port}, '${destination}', (e) => { s.close(); if (e) { console.error(e.message); process.exit(1); } }); });`;
    this.exec(namespace, [process.execPath, '-e', script]);
  }

  /** A long-lived process inside `namespace`, killed by removeAll. */
  spawn(
    namespace: string,
    argv: readonly string[],
    env?: NodeJS.ProcessEnv,
  ): ChildProcessWithoutNullStreams {
    this.assertOurs(namespace);
    const child = spawn('ip', ['netns', 'exec', namespace, ...argv], {
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(env === undefined ? {} : { env: { ...process.env, ...env } }),
    });
    this.processes.push(child);
    return child;
  }

  /**
   * A routed-test host: `address`/24 on its eth0 (already moved in), the default route via
   * `gateway`, strict reverse-path filtering (which drops forwarded packets until setUpRouted
   * lifts it), and a `namedServerScript(name, port)` server, ready.
   */
  async routedHost(
    namespace: string,
    address: string,
    gateway: string,
    name: string,
    port: number,
  ): Promise<void> {
    this.ip(namespace, ['addr', 'add', `${address}/24`, 'dev', 'eth0']);
    this.ip(namespace, ['link', 'set', 'eth0', 'up']);
    this.ip(namespace, ['route', 'add', 'default', 'via', gateway]);
    this.exec(namespace, [
      ...['sysctl', '-q', '-w'],
      ...['all', 'default', 'eth0'].map((d) => `net.ipv4.conf.${d}.rp_filter=1`),
    ]);
    const server = this.spawn(namespace, [process.execPath, '-e', namedServerScript(name, port)]);
    await waitForLine(server, /ready/, 5_000);
  }

  /** What `askScript(port)` run in `namespace` reads from `address` (from `localPort`). */
  async ask(namespace: string, address: string, port: number, localPort?: number): Promise<string> {
    this.assertOurs(namespace);
    const argv = [process.execPath, '-e', askScript(port), address];
    if (localPort !== undefined) argv.push(String(localPort));
    const { stdout } = await execFileAsync('ip', ['netns', 'exec', namespace, ...argv]);
    return stdout.trim();
  }

  /** A device's packet counters in `namespace`. */
  packets(namespace: string, device: string): { rx: number; tx: number } {
    const [link] = JSON.parse(this.ip(namespace, ['-j', '-s', 'link', 'show', 'dev', device])) as {
      stats64: { rx: { packets: number }; tx: { packets: number } };
    }[];
    return { rx: link!.stats64.rx.packets, tx: link!.stats64.tx.packets };
  }

  /**
   * The namespace's only test table `ip <table>`: marks packets to `address` with `mark` in
   * prerouting (as nlb's filter would); no address: no table.
   */
  markIn(namespace: string, table: string, address?: string, mark?: number): void {
    const name = `table ip ${table}`;
    const lines = [name, `delete ${name}`];
    if (address !== undefined) {
      lines.push(
        `${name} {`,
        '\tchain pre {',
        '\t\ttype filter hook prerouting priority -150; policy accept;',
        `\t\tip daddr ${address} meta mark set ${mark}`,
        '\t}',
        '}',
      );
    }
    this.exec(namespace, ['nft', '-f', '-'], `${lines.join('\n')}\n`);
  }

  /**
   * Links, rules, IPv4 routes and permanent neighbours, to compare two moments. IPv4 routes
   * only: eth0's IPv6 link-local address (and its local route) may finish DAD in between.
   */
  snapshot(namespace: string): string {
    return [
      '-d -j link show',
      '-j rule show',
      '-4 -j route show table all',
      '-j neigh show nud permanent',
    ]
      .map((args) => this.ip(namespace, args.split(' ')))
      .join('\n');
  }

  private assertOurs(namespace: string): void {
    if (!this.created.includes(namespace)) {
      throw new Error(`refusing to touch namespace '${namespace}': this test did not create it`);
    }
  }

  /** Kills our processes and deletes our namespaces; collects errors instead of stopping. */
  removeAll(): void {
    for (const child of this.processes) {
      if (child.exitCode === null && child.pid !== undefined) {
        child.kill('SIGKILL');
      }
    }
    const errors: string[] = [];
    for (const name of this.created.splice(0).reverse()) {
      try {
        execFileSync('ip', ['netns', 'del', name]);
      } catch (error) {
        errors.push(`${name}: ${String(error)}`);
      }
    }
    if (errors.length > 0) {
      throw new Error(`could not remove test namespaces:\n${errors.join('\n')}`);
    }
  }
}

/** A TCP server on `port` answering each connection `<name> <local address> <remote address>`. */
export const namedServerScript = (name: string, port: number): string => `
require('node:net').createServer((s) => s.end('${name} ' + s.localAddress + ' ' + s.remoteAddress + '\\n'))
  .listen(${port}, '0.0.0.0', () => console.log('ready'));`;

/**
 * Connects to `port` of argv[1] (from local port argv[2] when given) and prints what it reads,
 * `error <code>`, or `timeout` after 2 s.
 */
export const askScript = (port: number): string => `
const s = require('node:net').connect({ port: ${port}, host: process.argv[1], ...(process.argv[2] ? { localPort: Number(process.argv[2]) } : {}) });
let text = ''; s.on('data', (d) => (text += d)); s.on('end', () => { process.stdout.write(text); process.exit(0); });
s.on('error', (e) => { console.log('error ' + e.code); process.exit(0); });
setTimeout(() => { console.log('timeout'); process.exit(0); }, 2000);`;

/** TCP echo on ports 80 and 81, UDP echo on 5300, on every address of the namespace. */
export const serverScript = `
const net = require('node:net');
const dgram = require('node:dgram');
let ready = 0;
const up = () => { if (++ready === 3) console.log('ready'); };
for (const port of [80, 81]) {
  net.createServer((s) => { s.on('error', () => {}); s.on('data', (d) => s.write(d)); }).listen(port, '0.0.0.0', up);
}
const udp = dgram.createSocket('udp4');
udp.on('message', (m, r) => udp.send(m, r.port, r.address));
udp.bind(5300, '0.0.0.0', up);
`;

/**
 * A client driven through stdin, one JSON command per line; it answers with JSON events:
 *   {op:'connect', id, host, port, localPort, timeoutMs} -> connected | timeout | error
 *   {op:'send', id, data} -> data (the echo) later, or error (e.g. ECONNRESET)
 *   {op:'udp', id, host, port, localPort, data, timeoutMs} -> data | timeout
 *   {op:'close', id}
 */
export const clientScript = `
const net = require('node:net');
const dgram = require('node:dgram');
const readline = require('node:readline');
const sockets = new Map();
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const c = JSON.parse(line);
  if (c.op === 'connect') {
    const s = net.connect({ host: c.host, port: c.port, localPort: c.localPort });
    let settled = false;
    const timer = setTimeout(() => { if (!settled) { settled = true; s.destroy(); out({ id: c.id, event: 'timeout' }); } }, c.timeoutMs);
    s.on('connect', () => { if (!settled) { settled = true; clearTimeout(timer); sockets.set(c.id, s); out({ id: c.id, event: 'connected' }); } });
    s.on('data', (d) => out({ id: c.id, event: 'data', data: String(d) }));
    s.on('error', (e) => { clearTimeout(timer); settled = true; out({ id: c.id, event: 'error', code: e.code }); });
  } else if (c.op === 'send') {
    sockets.get(c.id).write(c.data);
  } else if (c.op === 'close') {
    const s = sockets.get(c.id);
    if (s) s.destroy();
    sockets.delete(c.id);
  } else if (c.op === 'udp') {
    const u = dgram.createSocket('udp4');
    const timer = setTimeout(() => { u.close(); out({ id: c.id, event: 'timeout' }); }, c.timeoutMs);
    u.on('message', (m) => { clearTimeout(timer); u.close(); out({ id: c.id, event: 'data', data: String(m) }); });
    u.bind(c.localPort, () => u.send(c.data, c.port, c.host));
  }
});
console.log(JSON.stringify({ event: 'ready' }));
`;

export interface ClientEvent {
  readonly id?: string;
  readonly event: string;
  readonly data?: string;
  readonly code?: string;
}

/** The test side of clientScript: send commands, wait for events. */
export class Client {
  private readonly events: ClientEvent[] = [];
  private readonly waiters: (() => void)[] = [];

  constructor(private readonly child: ChildProcessWithoutNullStreams) {
    createInterface({ input: child.stdout }).on('line', (line) => {
      this.events.push(JSON.parse(line) as ClientEvent);
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  send(command: Record<string, unknown>): void {
    this.child.stdin.write(`${JSON.stringify(command)}\n`);
  }

  /** The first event for `id` matching `accept` after `from`, or 'none' after `waitMs`. */
  async next(
    id: string | undefined,
    accept: (e: ClientEvent) => boolean,
    waitMs: number,
  ): Promise<ClientEvent | 'none'> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const found = this.events.find((e) => e.id === id && accept(e));
      if (found !== undefined) {
        this.events.splice(this.events.indexOf(found), 1);
        return found;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        return 'none';
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

/** Waits for a line from a child's stdout, e.g. 'ready'. */
export function waitForLine(
  child: ChildProcessWithoutNullStreams,
  pattern: RegExp,
  waitMs: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += String(d)));
    const timer = setTimeout(
      () => reject(new Error(`no line matching ${pattern} within ${waitMs} ms; stderr: ${stderr}`)),
      waitMs,
    );
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (pattern.test(line)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

/**
 * A table for a peer's netdev ingress that counts frames by source MAC: `masked` and `cluster`,
 * so a test sees which MAC a host's frames leave with.
 */
export function macWatch(masked: string, cluster: string, table = 'nlbtest'): string {
  return [
    `table netdev ${table} {`,
    '\tcounter masked {}',
    '\tcounter cluster {}',
    '\tchain ingress {',
    '\t\ttype filter hook ingress device "eth0" priority 0; policy accept;',
    `\t\tether saddr ${masked} counter name masked`,
    `\t\tether saddr ${cluster} counter name cluster`,
    '\t}',
    '}',
    '',
  ].join('\n');
}
