// The package `npm pack` makes, as README.md's "Running on real hosts" installs it: what the
// tarball holds, and that `npm install -g` of it gives an `nlb` and an `nlbd` that run.
// Both pack with --ignore-scripts: the prepack script empties dist/ and builds it again, which
// would pull dist/ from under the test files running beside this one; dist/ here is the one
// test/global-setup.ts built. The install is --offline, into a temporary prefix: the runtime
// packages come from npm's cache (which `npm ci` fills), never from the network; when the cache
// lacks one, that test is skipped with a warning saying so.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { repoRoot, runNlb } from './cli-helpers.js';

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
}

const manifest = JSON.parse(
  await readFile(path.join(repoRoot, 'package.json'), 'utf8'),
) as PackageJson;

async function npmPack(extra: readonly string[]): Promise<PackResult> {
  const { stdout } = await run('npm', ['pack', '--json', '--ignore-scripts', ...extra], {
    cwd: repoRoot,
  });
  const [result] = JSON.parse(stdout) as PackResult[];
  if (!result) throw new Error(`npm pack --json printed no package: ${stdout}`);
  return result;
}

let dryRun: Promise<string[]> | undefined;
/** The paths `npm pack` would put in the tarball (one `npm pack --dry-run` for the file). */
function packedPaths(): Promise<string[]> {
  dryRun ??= npmPack(['--dry-run']).then((result) => result.files.map((file) => file.path));
  return dryRun;
}

describe('the npm package', () => {
  it('holds the built JavaScript, the examples and the unit, and no sources, tests or maps', async () => {
    const paths = await packedPaths();
    for (const needed of [
      'package.json',
      'README.md',
      'dist/cli/main.js',
      'dist/daemon/main.js',
      'deploy/nlbd.service',
      'examples/web/host1.yaml',
    ]) {
      expect(paths).toContain(needed);
    }
    const top = /^(?:dist|examples|deploy)\/|^(?:package\.json|README\.md|LICENSE)$/;
    expect(paths.filter((p) => !top.test(p))).toEqual([]);
    expect(paths.filter((p) => p.startsWith('dist/') && !p.endsWith('.js'))).toEqual([]);
  });

  it('has every bin entry in the package, starting with a node shebang', async () => {
    const paths = await packedPaths();
    expect(Object.keys(manifest.bin).sort()).toEqual(['nlb', 'nlbd']);
    for (const file of Object.values(manifest.bin)) {
      expect(paths).toContain(path.normalize(file));
      const text = await readFile(path.join(repoRoot, file), 'utf8');
      expect(text.startsWith('#!/usr/bin/env node\n'), file).toBe(true);
    }
  });

  it('installs with npm install -g, runtime packages only, and its nlb and nlbd run', async (ctx) => {
    const dir = await mkdtemp(path.join(tmpdir(), 'nlb-package-'));
    try {
      const { filename } = await npmPack(['--pack-destination', dir]);
      const prefix = path.join(dir, 'prefix');
      const install = ['install', '-g', '--prefix', prefix, '--offline', '--no-audit', '--no-fund'];
      try {
        await run('npm', [...install, path.join(dir, filename)], { cwd: dir });
      } catch (error) {
        const stderr = (error as { stderr?: string }).stderr ?? '';
        if (!stderr.includes('ENOTCACHED')) throw error;
        console.warn(
          `package.test: a runtime package is not in npm's cache (npm ci fills it); skipped:\n${stderr}`,
        );
        ctx.skip();
      }
      const installed = path.join(prefix, 'lib', 'node_modules', 'nlb');
      const modules = await readdir(path.join(installed, 'node_modules'));
      for (const name of Object.keys(manifest.dependencies)) expect(modules).toContain(name);
      for (const name of Object.keys(manifest.devDependencies)) expect(modules).not.toContain(name);

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
      expect(JSON.parse(map.stdout)).toMatchObject([{ client: '198.18.0.50:40000', bucket: 5 }]);
      expect((await bin('nlbd', ['--help'])).stdout).toContain('--config <file>');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
