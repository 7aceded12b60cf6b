import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// src/core is pure: the protocol and assignment must run the same in the simulator and the
// daemon, so nothing there may do I/O or read the clock or a random source (DESIGN.md §3).
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
  {
    files: ['src/core/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { paths: impureModules }],
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
    },
  },
);
