// Bundles the dashboard's page (src/web, Preact) into one file, dist/web/dashboard.js, with its
// style inside: `npm run build` runs it after tsc, and `nlb dashboard` serves that file. The page
// then loads nothing from anywhere else, so it works offline.
//
// The bundle replaces the old one in one rename, so a dashboard starting meanwhile (a test beside
// a build) reads the old file or the new, never none; anything else in dist/web is removed, so
// nothing stale goes into the package.
import { mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outDir = path.join(root, 'dist/web');
const outFile = path.join(outDir, 'dashboard.js');

const result = await build({
  absWorkingDir: root,
  entryPoints: ['src/web/main.tsx'],
  outfile: outFile,
  write: false,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  // Chromium and Firefox of the last few years: EventSource, fetch, CSS grid.
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  loader: { '.css': 'text' },
  minify: true,
  legalComments: 'eof',
  logLevel: 'warning',
});

mkdirSync(outDir, { recursive: true });
for (const name of readdirSync(outDir)) {
  if (name !== 'dashboard.js') rmSync(path.join(outDir, name), { recursive: true, force: true });
}
const temp = `${outFile}.${process.pid}.tmp`;
writeFileSync(temp, result.outputFiles[0].contents);
renameSync(temp, outFile);
