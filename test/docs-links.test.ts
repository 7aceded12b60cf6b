// The docs are the map of the code: comments cite `docs/<page>.md#<section>`, and the docs link
// each other. A renamed heading or page would leave those citations pointing nowhere, so this
// test resolves every one against the headings of docs/ (GitHub's anchor rules), and checks that
// the code cites nothing a clone of the repository does not have (the design notes and style
// guide that used to live beside it, in ../shared). Pure and fast: it only reads files.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { verbNames } from '../src/control/protocol.js';
import { commands } from '../src/cli/commands/index.js';
import type { CliContext } from '../src/cli/program.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const self = 'test/docs-links.test.ts';

/** Files whose text may cite docs/: sources, tests, scripts, benchmarks and the docs. */
function scannedFiles(): string[] {
  const files = [
    ...walk('src'),
    ...walk('test'),
    ...walk('scripts'),
    ...listDir('bench').filter((file) => file.endsWith('.ts')),
    ...listDir('docs').filter((file) => file.endsWith('.md')),
    'README.md',
    'eslint.config.js',
    'vitest.config.ts',
  ];
  return files.filter((file) => file !== self && /\.(ts|js|md|sh|txt)$/.test(file));
}

function listDir(dir: string): string[] {
  return readdirSync(join(root, dir))
    .map((name) => `${dir}/${name}`)
    .filter((file) => statSync(join(root, file)).isFile());
}

function walk(dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((entry) => {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory()) {
      return walk(path);
    }
    return entry.isFile() ? [path] : [];
  });
}

/**
 * GitHub's anchor for a heading: inline markup dropped, lowercase, every character but
 * letters, digits, spaces, `-` and `_` removed, spaces to hyphens; a repeated heading gets
 * `-1`, `-2`, … in order.
 */
export function slugify(heading: string): string {
  return heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/ /g, '-');
}

/** The anchors of a markdown text, from its ATX headings outside code fences. */
export function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) {
      fenced = !fenced;
      continue;
    }
    const heading = fenced ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading === null) {
      continue;
    }
    const slug = slugify(heading[1]!);
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    anchors.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return anchors;
}

interface Reference {
  /** Where the reference is written, `file:line`. */
  readonly at: string;
  /** The markdown file it points to, relative to the repository. */
  readonly target: string;
  readonly anchor: string | undefined;
}

/**
 * The references in one file: `docs/<page>.md` or `docs/<page>.md#<anchor>` anywhere, and in a
 * markdown file its relative links `[text](page.md#anchor)` and `[text](#anchor)`.
 */
export function referencesIn(file: string, text: string): Reference[] {
  const references: Reference[] = [];
  text.split('\n').forEach((line, index) => {
    const at = `${file}:${index + 1}`;
    for (const match of line.matchAll(/(?<![\w/.-])docs\/([\w.-]+?\.md)(?:#([\w-]+))?/g)) {
      references.push({ at, target: `docs/${match[1]!}`, anchor: match[2] });
    }
    if (!file.endsWith('.md')) {
      return;
    }
    for (const match of line.matchAll(/\]\(([^)\s]*)\)/g)) {
      const link = match[1]!;
      if (/^[a-z]+:/.test(link)) {
        continue;
      }
      const [path, anchor] = link.split('#') as [string, string | undefined];
      const target = path === '' ? file : relative(root, resolve(root, dirname(file), path));
      if (path === '' || path.endsWith('.md')) {
        references.push({ at, target, anchor });
      } else if (!existsSync(join(root, target))) {
        references.push({ at, target, anchor: undefined });
      }
    }
  });
  return references;
}

/** What is wrong with each reference: a missing file, or an anchor no heading makes. */
export function brokenReferences(
  references: readonly Reference[],
  read: (file: string) => string | undefined,
): string[] {
  const anchors = new Map<string, Set<string> | undefined>();
  const problems: string[] = [];
  for (const { at, target, anchor } of references) {
    if (!anchors.has(target)) {
      const text = read(target);
      anchors.set(target, text === undefined ? undefined : anchorsOf(text));
    }
    const known = anchors.get(target);
    if (known === undefined) {
      problems.push(`${at}: ${target} does not exist`);
    } else if (anchor !== undefined && !known.has(anchor)) {
      problems.push(`${at}: ${target} has no heading with the anchor #${anchor}`);
    }
  }
  return problems;
}

function readRepoFile(file: string): string | undefined {
  const path = join(root, file);
  return existsSync(path) && statSync(path).isFile() ? readFileSync(path, 'utf8') : undefined;
}

/** Documents outside the repository that the code used to cite. */
const outsideCitation =
  /DESIGN(-ROUTED)?\.md|STYLE\.md|STYLE habit|NLB-REFERENCE\.md|\.\.\/shared\b/;

/** Files that still name them, and why. */
const outsideCitationAllowed: ReadonlyMap<string, string> = new Map([
  [
    'test/jhash-kernel.test.ts',
    'compares test/vectors with the upstream copy when ../shared sits beside the project',
  ],
]);

/** `file:line: text` of every line citing a document outside the repository. */
export function outsideCitations(file: string, text: string): string[] {
  return text
    .split('\n')
    .flatMap((line, index) =>
      outsideCitation.test(line) ? [`${file}:${index + 1}: ${line.trim()}`] : [],
    );
}

/** Paths written in backticks in the README and docs (`src/cli/commands/map.ts`), no globs. */
export function pathsIn(file: string, text: string): { at: string; path: string }[] {
  const paths: { at: string; path: string }[] = [];
  text.split('\n').forEach((line, index) => {
    for (const match of line.matchAll(
      /`((?:src|test|docs|scripts|bench|examples|deploy|\.ci)\/[\w./-]*)`/g,
    )) {
      paths.push({ at: `${file}:${index + 1}`, path: match[1]! });
    }
  });
  return paths;
}

describe('docs links', () => {
  it('slugs headings as GitHub does', () => {
    expect(slugify('Authentication and rejected datagrams')).toBe(
      'authentication-and-rejected-datagrams',
    );
    expect(slugify("Orphans: resets for a dead host's clients")).toBe(
      'orphans-resets-for-a-dead-hosts-clients',
    );
    expect(slugify('Validate, render, apply once')).toBe('validate-render-apply-once');
    expect(slugify('`nlb lab` and [the lab](lab.md)')).toBe('nlb-lab-and-the-lab');
    expect([...anchorsOf('# A\n```\n# not a heading\n```\n## A\n### B c\n')]).toEqual([
      'a',
      'a-1',
      'b-c',
    ]);
  });

  it('names the file and line of a reference to a missing page or anchor', () => {
    const docs = new Map([['docs/lab.md', '# The lab\n## Network safety\n']]);
    const text = [
      'ok: docs/lab.md#network-safety and docs/lab.md',
      'bad anchor: docs/lab.md#network-safty',
      'bad page: docs/labs.md#network-safety',
    ].join('\n');
    expect(brokenReferences(referencesIn('src/x.ts', text), (file) => docs.get(file))).toEqual([
      'src/x.ts:2: docs/lab.md has no heading with the anchor #network-safty',
      'src/x.ts:3: docs/labs.md does not exist',
    ]);
    expect(referencesIn('docs/lab.md', 'see [it](#network-safety), [x](protocol.md#a)')).toEqual([
      { at: 'docs/lab.md:1', target: 'docs/lab.md', anchor: 'network-safety' },
      { at: 'docs/lab.md:1', target: 'docs/protocol.md', anchor: 'a' },
    ]);
  });

  it('every docs/ reference in the code and the docs points at a page and heading that exist', () => {
    const references = scannedFiles().flatMap((file) =>
      referencesIn(file, readFileSync(join(root, file), 'utf8')),
    );
    expect(references.length).toBeGreaterThan(20);
    expect(brokenReferences(references, readRepoFile)).toEqual([]);
  });

  it('the code cites no document outside the repository', () => {
    const found = scannedFiles()
      .filter((file) => !outsideCitationAllowed.has(file))
      .flatMap((file) => outsideCitations(file, readFileSync(join(root, file), 'utf8')));
    expect(found).toEqual([]);
    expect(outsideCitations('src/a.ts', '// see DESIGN.md §4')).toHaveLength(1);
  });

  it('every path the README and the docs name exists', () => {
    const files = ['README.md', ...listDir('docs').filter((file) => file.endsWith('.md'))];
    const missing = files
      .flatMap((file) => pathsIn(file, readFileSync(join(root, file), 'utf8')))
      .filter(({ path }) => !existsSync(join(root, path)))
      .map(({ at, path }) => `${at}: ${path}`);
    expect(missing).toEqual([]);
  });

  it("the README's verb table has a row for every nlb verb and every control request", () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const start = readme.indexOf('### Where each verb lives');
    expect(start).toBeGreaterThan(0);
    const section = readme.slice(start, readme.indexOf('\n### ', start + 1));
    const rows = section.split('\n').filter((line) => line.startsWith('| `'));
    const named = new Set(rows.flatMap((row) => [...row.matchAll(/`([\w-]+)/g)].map((m) => m[1])));
    const program = new Command('nlb');
    const io = { stdout: new PassThrough(), stderr: new PassThrough(), stdin: new PassThrough() };
    const ctx: CliContext = { io, action: () => () => Promise.resolve() };
    for (const command of commands) command.register(program, ctx);
    const verbs = [
      ...new Set([...program.commands.map((command) => command.name()), ...verbNames]),
    ];
    expect(verbs).toContain('queryport');
    expect(verbs.filter((verb) => verb !== 'identity' && !named.has(verb))).toEqual([]);
  });
});
