// Bundles nlbd (src/daemon/main.ts and everything it imports, the npm packages included) into
// one file, dist/daemon/main.js, replacing tsc's output of it: `npm run build` runs it after
// tsc. One file without comments holds about 12 MB less of V8 heap than the ~150 modules it
// replaces (source text, module records); names are kept, so stack traces stay readable. The
// first line becomes nlbd's shebang with its node flags (src/daemon/node-flags.ts).
//
// The bundle replaces the old file in one rename, so a daemon starting meanwhile (a test beside
// a build) reads the old file or the new, never a half-written one.
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outFile = path.join(root, 'dist/daemon/main.js');
// tsc has just written it; the bundle keeps the flags in one place.
const { nlbdShebang } = await import(path.join(root, 'dist/daemon/node-flags.js'));

const result = await build({
  absWorkingDir: root,
  entryPoints: ['src/daemon/main.ts'],
  outfile: outFile,
  write: false,
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  minifyWhitespace: true,
  minifySyntax: true,
  // The CommonJS packages (prom-client) call require(); an ES module has none of its own.
  banner: {
    js: "import { createRequire as nlbCreateRequire } from 'node:module';\nconst require = nlbCreateRequire(import.meta.url);",
  },
  legalComments: 'eof',
  logLevel: 'warning',
});

const text = result.outputFiles[0].text.replace(/^#![^\n]*\n/, '');
const temp = `${outFile}.${process.pid}.tmp`;
writeFileSync(temp, `${nlbdShebang}\n${text}`, { mode: 0o755 });
renameSync(temp, outFile);
// tsc's map is of the file the bundle replaced.
rmSync(`${outFile}.map`, { force: true });
