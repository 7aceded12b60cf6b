// The package `npm pack` makes, as README.md's "Running on real hosts" installs it: what the
// tarball holds, and that `npm install -g` of it, with no network and an empty npm cache, gives
// an `nlb` and an `nlbd` that run on the lock file's versions of the runtime packages (the
// tarball bundles them: bundleDependencies).
// Every pack here runs with --ignore-scripts: the prepack script empties dist/ and builds it
// again, which would pull dist/ from under the test files running beside this one; dist/ here
// is the one test/global-setup.ts built.
// Through a node_modules that is a symbolic link (a worktree sharing another checkout's
// packages), npm bundles only the direct dependencies, not theirs: the bundle and install
// tests are then skipped with a warning, and run wherever node_modules is a directory (npm ci).
import { execFile } from 'node:child_process';
import { existsSync, lstatSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { repoRoot, runNlb } from './cli-helpers.js';
import { nlbdNodeFlags, nlbdShebang } from '../src/daemon/node-flags.js';
import { daemonCommandDefault } from '../src/lab/daemons.js';
import { daemonMainPath } from '../src/lab/paths.js';

const run = promisify(execFile);

interface PackageJson {
  readonly version: string;
  readonly bin: Record<string, string>;
  readonly dependencies: Record<string, string>;
  readonly devDependencies: Record<string, string>;
}

interface PackResult {
  readonly filename: string;
  readonly files: readonly { readonly path: string }[];
  readonly bundled: readonly string[];
}

const readJson = async <T>(file: string): Promise<T> =>
  JSON.parse(await readFile(path.join(repoRoot, file), 'utf8')) as T;

const manifest = await readJson<PackageJson>('package.json');

/** The lock's runtime packages: its path (node_modules/...) → version. */
const runtimePackages = new Map(
  Object.entries(
    (
      await readJson<{ packages: Record<string, { version: string; dev?: boolean }> }>(
        'package-lock.json',
      )
    ).packages,
  )
    .filter(([key, entry]) => key !== '' && entry.dev !== true)
    .map(([key, entry]) => [key, entry.version]),
);

const linkedModules = lstatSync(path.join(repoRoot, 'node_modules')).isSymbolicLink();
if (linkedModules) {
  console.warn(
    'package.test: node_modules is a symbolic link, through which npm pack bundles only the ' +
      'direct dependencies; the bundle and install tests are skipped (they need a node_modules ' +
      'directory, as npm ci makes)',
  );
}

async function npmPack(extra: readonly string[]): Promise<PackResult> {
  const { stdout } = await run('npm', ['pack', '--json', '--ignore-scripts', ...extra], {
    cwd: repoRoot,
    maxBuffer: 64 * 1024 * 1024,
  });
  const [result] = JSON.parse(stdout) as PackResult[];
  if (!result) throw new Error(`npm pack --json printed no package: ${stdout}`);
  return result;
}

let dryRun: Promise<PackResult> | undefined;
/** What `npm pack` would put in the tarball (one `npm pack --dry-run` for the file). */
function packed(): Promise<PackResult> {
  dryRun ??= npmPack(['--dry-run']);
  return dryRun;
}

describe('the npm package', () => {
  it('holds the built JavaScript, the examples and the unit, and no sources, tests or maps', async () => {
    const paths = (await packed()).files.map((file) => file.path);
    for (const needed of [
      'package.json',
      'README.md',
      'LICENSE',
      'dist/cli/main.js',
      'dist/daemon/main.js',
      'deploy/nlbd.service',
      'examples/web/host1.yaml',
    ]) {
      expect(paths).toContain(needed);
    }
    const top = /^(?:dist|examples|deploy|node_modules)\/|^(?:package\.json|README\.md|LICENSE)$/;
    expect(paths.filter((p) => !top.test(p))).toEqual([]);
    expect(paths.filter((p) => p.startsWith('dist/') && !p.endsWith('.js'))).toEqual([]);
  });

  it('has every bin entry in the package, starting with a node shebang', async () => {
    const paths = (await packed()).files.map((file) => file.path);
    expect(Object.keys(manifest.bin).sort()).toEqual(['nlb', 'nlbd']);
    const shebangs: Record<string, string> = { nlb: '#!/usr/bin/env node', nlbd: nlbdShebang };
    for (const [name, file] of Object.entries(manifest.bin)) {
      expect(paths).toContain(path.normalize(file));
      const text = await readFile(path.join(repoRoot, file), 'utf8');
      expect(text.split('\n')[0], file).toBe(shebangs[name]);
    }
  });

  it('runs nlbd with the same node flags from its shebang, the systemd unit and the lab', async () => {
    expect(nlbdShebang).toBe(`#!/usr/bin/env -S node ${nlbdNodeFlags.join(' ')}`);
    const unit = await readFile(path.join(repoRoot, 'deploy/nlbd.service'), 'utf8');
    const execStart = /^ExecStart=(.*)$/m.exec(unit)?.[1]?.split(' ') ?? [];
    const main = execStart.indexOf('/opt/nlb/dist/daemon/main.js');
    expect(execStart.slice(1, main)).toEqual(nlbdNodeFlags);
    const labMain = daemonCommandDefault.indexOf(daemonMainPath);
    expect(daemonCommandDefault.slice(1, labMain)).toEqual(nlbdNodeFlags);
    expect(nlbdNodeFlags.length).toBeGreaterThan(0);
  });

  it.skipIf(linkedModules)('bundles exactly the runtime packages of the lock file', async () => {
    const names = [...runtimePackages.keys()].map((key) => key.replace(/^.*node_modules\//, ''));
    expect([...(await packed()).bundled].sort()).toEqual([...new Set(names)].sort());
    for (const name of Object.keys(manifest.dependencies)) expect(names).toContain(name);
    for (const name of Object.keys(manifest.devDependencies)) expect(names).not.toContain(name);
  });

  it.skipIf(linkedModules)(
    'installs with npm install -g offline from an empty cache, and its nlb and nlbd run',
    async () => {
      const dir = await mkdtemp(path.join(tmpdir(), 'nlb-package-'));
      try {
        const { filename } = await npmPack(['--pack-destination', dir]);
        const prefix = path.join(dir, 'prefix');
        await run(
          'npm',
          [
            'install',
            '-g',
            '--prefix',
            prefix,
            '--offline',
            '--cache',
            path.join(dir, 'cache'),
          ].concat(['--no-audit', '--no-fund', path.join(dir, filename)]),
          { cwd: dir },
        );
        // Every runtime package at the lock's version, nothing else.
        const installed = path.join(prefix, 'lib', 'node_modules', 'nlb');
        for (const [key, version] of runtimePackages) {
          const { version: got } = JSON.parse(
            await readFile(path.join(installed, key, 'package.json'), 'utf8'),
          ) as { version: string };
          expect(got, key).toBe(version);
        }
        for (const name of Object.keys(manifest.devDependencies)) {
          expect(existsSync(path.join(installed, 'node_modules', name)), name).toBe(false);
        }

        // From the prefix's bin/, as a host's PATH finds them, run in a directory of their own.
        const bin = (name: string, args: readonly string[]) =>
          run(path.join(prefix, 'bin', name), args, { cwd: dir });
        expect((await bin('nlb', ['--version'])).stdout.trim()).toBe(manifest.version);
        expect((await bin('nlb', ['--help'])).stdout).toMatch(/^ {2}map \[options\]/m);
        expect((await bin('nlb', ['ip2mac', '10.0.0.100'])).stdout).toMatch(
          /unicast MAC\s+02:bf:0a:00:00:64/,
        );
        // The installed examples, and the same answer as the repository's own build gives.
        const mapArgs = (config: string) => [
          '--json',
          'map',
          '--config',
          config,
          '--hosts',
          '1,2,3',
          '--client',
          '198.18.0.50:40000',
        ];
        const map = await bin('nlb', mapArgs(path.join(installed, 'examples/web/host1.yaml')));
        expect(JSON.parse(map.stdout)).toEqual(
          JSON.parse((await runNlb(mapArgs('examples/web/host1.yaml'))).stdout),
        );
        expect(JSON.parse(map.stdout)).toMatchObject({
          source: 'model',
          clients: [{ client: '198.18.0.50:40000', bucket: 5 }],
        });
        expect((await bin('nlbd', ['--help'])).stdout).toContain('--config <file>');
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
});
