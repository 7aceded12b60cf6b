// The control protocol's three ends agree: the schema's verbs, the daemon's handler table and
// the CLI's verbs are one set; a daemon answer that is not a control response is an error
// `nlb` reports, not a crash; and the CLI reaches the daemon only through src/control.
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { Command } from 'commander';
import { afterEach, describe, expect, it } from 'vitest';
import { daemonCommands } from '../src/cli/commands/index.js';
import { type CliContext, runCli } from '../src/cli/program.js';
import { requestSchema, verbNames } from '../src/control/protocol.js';
import { controlHandlers } from '../src/daemon/control.js';
import { repoRoot } from './cli-helpers.js';

function cliVerbs(): string[] {
  const program = new Command('nlb');
  const ctx: CliContext = { io: streams().io, action: () => () => Promise.resolve() };
  for (const command of daemonCommands) command.register(program, ctx);
  return program.commands.map((command) => command.name());
}

function streams(): {
  io: { stdout: PassThrough; stderr: PassThrough; stdin: PassThrough };
  text: () => { stdout: string; stderr: string };
} {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  stderr.on('data', (chunk: Buffer) => (err += chunk.toString('utf8')));
  return {
    io: { stdout, stderr, stdin: new PassThrough() },
    text: () => ({ stdout: out, stderr: err }),
  };
}

describe('control protocol', () => {
  it('has one set of verbs: the schema, the handler table and the CLI', () => {
    const schemaVerbs = requestSchema.options.map((option) => option.shape.verb.value).sort();
    expect([...verbNames].sort()).toEqual(schemaVerbs);
    expect(Object.keys(controlHandlers).sort()).toEqual(schemaVerbs);
    // `identity` is how nlb picks the daemon of its network namespace, not a verb of its own.
    expect(cliVerbs().sort()).toEqual(schemaVerbs.filter((verb) => verb !== 'identity'));
  });

  describe('an answer that is not a control response', () => {
    let dir: string | undefined;
    let server: net.Server | undefined;
    afterEach(async () => {
      await new Promise<void>((resolve) =>
        server === undefined ? resolve() : server.close(() => resolve()),
      );
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
      server = undefined;
      dir = undefined;
    });

    for (const [what, line] of [
      ['ok is not a boolean', '{"ok":"yes","data":{}}'],
      ['a failure without its error', '{"ok":false}'],
      [
        'an error code nlbd never sends',
        '{"ok":false,"error":{"code":"boom","message":"m","hint":"h"}}',
      ],
      ['not an object', '[1,2,3]'],
    ] as const) {
      it(`is reported as an error, not a crash: ${what}`, async () => {
        dir = mkdtempSync(path.join(tmpdir(), 'nlb-control-protocol-'));
        const socket = path.join(dir, 'nlbd.sock');
        server = net.createServer((connection) => {
          connection.once('data', () => connection.end(`${line}\n`));
        });
        await new Promise<void>((resolve) => server!.listen(socket, resolve));
        for (const json of [false, true]) {
          const { io, text } = streams();
          const argv = [...(json ? ['--json'] : []), 'query', '--socket', socket];
          const code = await runCli(daemonCommands, argv, io, '0.0.0-test');
          const { stdout, stderr } = text();
          expect(code).toBe(1);
          const message = json ? stdout : stderr;
          expect(message).toContain(`${socket} answered, but not as nlbd does`);
          expect(message).toContain('answer is not a control response');
          expect(message).not.toMatch(/TypeError|at .*\.ts:\d+/);
        }
      });
    }
  });

  it('is all the CLI knows of the daemon: no file under src/cli imports src/daemon or src/dataplane', () => {
    const cliRoot = path.join(repoRoot, 'src', 'cli');
    const files: string[] = [];
    const walk = (dir: string): void => {
      for (const name of readdirSync(dir)) {
        const file = path.join(dir, name);
        if (statSync(file).isDirectory()) walk(file);
        else if (file.endsWith('.ts')) files.push(file);
      }
    };
    walk(cliRoot);
    expect(files.length).toBeGreaterThan(5);
    const offending: string[] = [];
    for (const file of files) {
      const source = readFileSync(file, 'utf8');
      for (const match of source.matchAll(/(?:from|import)\s*\(?\s*'([^']+)'/g)) {
        const target = path.resolve(path.dirname(file), match[1]!);
        const relative = path.relative(path.join(repoRoot, 'src'), target);
        if (/^(daemon|dataplane)\//.test(relative)) {
          offending.push(`${path.relative(repoRoot, file)} imports ${match[1]!}`);
        }
      }
    }
    expect(offending).toEqual([]);
  });
});
