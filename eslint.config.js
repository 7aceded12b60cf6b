import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// src/core and src/sim are pure: the protocol and assignment must run the same in the simulator
// and the daemon, and a seed must replay exactly, so nothing there may do I/O or read the clock
// or a random source (docs/architecture.md#the-pure-core).
const impureModules = [
  'fs',
  'node:fs',
  'fs/promises',
  'node:fs/promises',
  'net',
  'node:net',
  'dgram',
  'node:dgram',
  'child_process',
  'node:child_process',
  'http',
  'node:http',
  'https',
  'node:https',
  'timers',
  'node:timers',
  'os',
  'node:os',
  'process',
  'node:process',
];

const folders = [
  'cli',
  'control',
  'core',
  'daemon',
  'dashboard',
  'dataplane',
  'demo',
  'lab',
  'node',
  'routed',
  'sim',
  'web',
];

/**
 * The rules for one folder of src/: imports from folders not in `allowed` are errors, and a
 * `pure` folder may not use I/O, timers, the clock or randomness.
 */
function layer(files, allowed, { pure = false, except = [] } = {}) {
  const own = files.split('/')[1];
  const forbidden = folders.filter((folder) => folder !== own && !allowed.includes(folder));
  const patterns = forbidden.map((folder) => ({
    group: [`../${folder}/*`, `../../${folder}/*`, `../../../${folder}/*`, ...except],
    message: `src/${own} may not import src/${folder} (layering: see eslint.config.js)`,
  }));
  const rules = {
    'no-restricted-imports': ['error', { paths: pure ? impureModules : [], patterns }],
  };
  if (pure) {
    Object.assign(rules, {
      'no-restricted-globals': [
        'error',
        'setTimeout',
        'setInterval',
        'setImmediate',
        'process',
        'performance',
        'fetch',
      ],
      'no-restricted-properties': [
        'error',
        { object: 'Date', property: 'now', message: 'time is an input to the core' },
        { object: 'Math', property: 'random', message: 'randomness is an input to the core' },
      ],
      'no-restricted-syntax': [
        'error',
        { selector: "NewExpression[callee.name='Date']", message: 'time is an input to the core' },
      ],
    });
  }
  return { files: [files], rules };
}

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'bench/results/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
    },
  },
  // Layering (issue 10): each folder may import only the folders below it, so the pure parts
  // stay pure and the tools (lab, simulator, demo) never become something the daemon needs.
  //   core       <- everything; imports nothing outside core
  //   sim        <- core only (and pure, like core: it must replay a seed exactly)
  //   dataplane  <- core only
  //   control    <- core and node (the wire protocol shared by the CLI and the daemon)
  //   daemon     <- not cli, lab, sim or demo
  //   cli        <- not daemon or dataplane internals (it talks to nlbd through control/)
  //   dashboard  <- core, control, node, and of the daemon only its table of event names
  //   web        <- the dashboard's view types only: it runs in the browser (no node: imports)
  //   routed     <- core only, and pure: the FRR configuration is text rendered from settings
  {
    // Size limits (issue 10): a file or function past these is doing more than one job. A
    // function that must stay longer says why in its eslint-disable comment (`-- reason`).
    files: ['src/**/*.ts', 'src/**/*.tsx'],
    rules: {
      'max-lines': ['error', { max: 500 }],
      'max-lines-per-function': ['error', { max: 100 }],
    },
  },
  {
    // Tests and benchmarks are code too: the same limit per file. Not per function: a describe
    // block is one long function by nature.
    files: ['test/**/*.ts', 'bench/**/*.ts', '*.ts'],
    rules: { 'max-lines': ['error', { max: 500 }] },
  },
  {
    // A benchmark's functions are held to the source's limit (their long ones say why).
    files: ['bench/**/*.ts'],
    rules: { 'max-lines-per-function': ['error', { max: 100 }] },
  },
  layer('src/core/**/*.ts', [], { pure: true }),
  layer('src/sim/**/*.ts', ['core'], { pure: true }),
  layer('src/routed/**/*.ts', ['core'], { pure: true }),
  layer('src/dataplane/**/*.ts', ['core']),
  layer('src/control/**/*.ts', ['core', 'node']),
  layer('src/daemon/**/*.ts', ['core', 'control', 'dataplane', 'node']),
  layer('src/cli/**/*.ts', [
    'core',
    'control',
    'node',
    'lab',
    'sim',
    'demo',
    'cli',
    'dashboard',
    'routed',
  ]),
  layer('src/dashboard/**/*.ts', ['core', 'control', 'node'], {
    except: ['!../daemon/event-names.js'],
  }),
  {
    files: ['src/web/**/*.ts', 'src/web/**/*.tsx'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            ...folders
              .filter((folder) => folder !== 'web' && folder !== 'dashboard')
              .map((folder) => ({
                group: [`../${folder}/*`],
                message: `src/web runs in the browser and may not import src/${folder}`,
              })),
            {
              group: ['node:*', '../dashboard/*', '!../dashboard/view.js'],
              message:
                'src/web runs in the browser: of the dashboard, only its view types (view.ts)',
            },
          ],
        },
      ],
    },
  },
);
