// Where the programs the lab starts are: built JavaScript under dist/, found from this file's
// own place so that dist/lab/paths.js and src/lab/paths.ts (under vite-node) agree.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root, from dist/lab/paths.js or src/lab/paths.ts alike. */
export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const backendMainPath = path.join(repoRoot, 'dist', 'lab', 'backend-main.js');
export const loadgenMainPath = path.join(repoRoot, 'dist', 'lab', 'loadgen-main.js');
export const daemonMainPath = path.join(repoRoot, 'dist', 'daemon', 'main.js');
