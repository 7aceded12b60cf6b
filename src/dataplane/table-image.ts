// What the kernel holds, from `nft -j list table` output, in a form two listings can be compared
// in: every object of the table (chains, rules in order, sets, counters) as canonical JSON
// without what changes on its own or on every apply (handles, counter values, element expiry),
// and the elements of each named set apart. The Dataplane keeps the image taken right after its
// own whole-table apply as the reference, so nothing here has to predict how nft prints the
// rendered rules (nft 1.0.6 prints `tcp flags & (syn | ack) != syn` back as
// `tcp flags != syn / syn,ack`, for one): a later listing that differs was changed by someone.

import { formatMapElement } from './render-routed.js';

/** One or more tables as the kernel lists them. */
export interface TableImage {
  /** `<kind> <family> <name>` (rules: `rule <family> <chain> <index>`) -> canonical JSON. */
  readonly structure: ReadonlyMap<string, string>;
  /** `<family> <set>` -> the set's element keys, sorted. */
  readonly elements: ReadonlyMap<string, readonly number[]>;
}

/** Differences listed one by one before the rest are only counted. */
export const differencesListedMax = 8;
/** Elements named in one set difference before the rest are only counted. */
const elementsListedMax = 10;

/** Keys whose values change without anyone changing the table. */
const volatileKeys = new Set(['handle', 'packets', 'bytes', 'expires']);

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) {
    return value.map(canonical);
  }
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([key]) => !volatileKeys.has(key))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, inner]) => [key, canonical(inner)]);
    return Object.fromEntries(entries);
  }
  return value;
}

/** An element of a `type mark` set as nft -j prints it: 5, or { elem: { val: 5, timeout } }. */
function elementKey(element: unknown): number | undefined {
  if (Array.isArray(element) && element.length === 2) {
    // A map element, [key, value]: read back as key * 2^32 + value (render-routed.ts).
    const key = elementKey(element[0]);
    const value = elementKey(element[1]);
    return key === undefined || value === undefined ? undefined : key * 2 ** 32 + value;
  }
  if (typeof element === 'number') {
    return element;
  }
  if (typeof element === 'string' && /^(0x[0-9a-f]+|\d+)$/i.test(element)) {
    return Number(element);
  }
  if (element !== null && typeof element === 'object') {
    const inner = (element as { elem?: unknown; val?: unknown }).elem ?? element;
    const val = (inner as { val?: unknown }).val;
    if (val !== undefined) return elementKey(val);
  }
  return undefined;
}

/** The image of a listing: `{ nftables: [ { table: … }, { chain: … }, { rule: … }, … ] }`. */
export function tableImage(json: unknown): TableImage {
  const items = (json as { nftables?: unknown } | null)?.nftables;
  if (!Array.isArray(items)) {
    throw new Error('nft -j output has no "nftables" array; is this nftables >= 0.9?');
  }
  const structure = new Map<string, string>();
  const elements = new Map<string, number[]>();
  const rulesPerChain = new Map<string, number>();
  items.forEach((item, index) => {
    if (item === null || typeof item !== 'object') return;
    const [kind, body] = Object.entries(item as Record<string, unknown>)[0] ?? [];
    if (kind === undefined || kind === 'metainfo' || body === null || typeof body !== 'object') {
      return;
    }
    const fields = { ...(body as Record<string, unknown>) };
    const family = String(fields.family ?? '');
    const name = String(fields.name ?? '');
    let key: string;
    if (kind === 'rule') {
      const chain = `${family} ${String(fields.chain ?? '')}`;
      const position = rulesPerChain.get(chain) ?? 0;
      rulesPerChain.set(chain, position + 1);
      key = `rule ${chain} ${position}`;
    } else if (kind === 'set' || kind === 'map') {
      if (name.startsWith('__')) return; // anonymous sets belong to their rule
      const keys = (Array.isArray(fields.elem) ? fields.elem : [])
        .map(elementKey)
        .filter((k): k is number => k !== undefined)
        .sort((a, b) => a - b);
      elements.set(`${family} ${name}`, keys);
      delete fields.elem;
      key = `${kind} ${family} ${name}`;
    } else if (name !== '' || kind === 'table') {
      key = `${kind} ${family} ${name}`;
    } else {
      key = `${kind} ${index}`;
    }
    structure.set(key, JSON.stringify(canonical(fields)));
  });
  return { structure, elements };
}

function listKeys(keys: readonly number[], format: (key: number) => string = String): string {
  const shown = keys.slice(0, elementsListedMax).map(format).join(', ');
  return keys.length > elementsListedMax
    ? `${shown} and ${keys.length - elementsListedMax} more`
    : shown;
}

/**
 * How `current` differs from `reference` (the structure; objects of a table missing from
 * `current` are left out, the caller says the table is missing), and how the elements of the
 * `inet` sets named in `sets` differ from the elements given there. Empty when nothing does.
 */
export function compareImages(
  reference: TableImage | undefined,
  current: TableImage,
  sets: ReadonlyMap<string, readonly number[]>,
): string[] {
  const problems: string[] = [];
  const present = (key: string): boolean => {
    const [, family] = key.split(' ');
    return [...current.structure.keys()].some((k) => k.startsWith(`table ${family} `));
  };
  if (reference !== undefined) {
    const chains = new Map<string, { reference: number; current: number; changed: boolean }>();
    const chainOf = (key: string): string => key.split(' ').slice(1, 3).join(' ');
    for (const key of reference.structure.keys()) {
      if (key.startsWith('rule ')) {
        const chain = chains.get(chainOf(key)) ?? { reference: 0, current: 0, changed: false };
        chain.reference++;
        chains.set(chainOf(key), chain);
      }
    }
    for (const [key, value] of current.structure) {
      if (key.startsWith('rule ')) {
        const chain = chains.get(chainOf(key)) ?? { reference: 0, current: 0, changed: false };
        chain.current++;
        if (reference.structure.get(key) !== value) chain.changed = true;
        chains.set(chainOf(key), chain);
      } else if (!reference.structure.has(key)) {
        problems.push(`${key} is not nlbd's (added by someone else)`);
      } else if (reference.structure.get(key) !== value) {
        problems.push(`${key} was changed`);
      }
    }
    for (const key of reference.structure.keys()) {
      if (!key.startsWith('rule ') && !current.structure.has(key) && present(key)) {
        problems.push(`${key} is missing`);
      }
    }
    for (const [chain, counts] of chains) {
      if (!present(`rule ${chain}`)) continue;
      if (counts.current !== counts.reference) {
        problems.push(`chain ${chain} has ${counts.current} rules, ${counts.reference} programmed`);
      } else if (counts.changed) {
        problems.push(`chain ${chain}: a rule was changed`);
      }
    }
  }
  for (const [set, expected] of sets) {
    // Routed mode's maps are compared like the sets (render-routed.ts routedMaps).
    const kind = (['set', 'map'] as const).find((k) => current.structure.has(`${k} inet ${set}`));
    if (kind === undefined) {
      continue; // the table or the set is missing, which is said already
    }
    const format = kind === 'map' ? formatMapElement : String;
    const actual = current.elements.get(`inet ${set}`) ?? [];
    const extra = actual.filter((key) => !expected.includes(key));
    const lacking = expected.filter((key) => !actual.includes(key));
    if (extra.length > 0) {
      problems.push(`${kind} ${set} holds ${listKeys(extra, format)} (not programmed)`);
    }
    if (lacking.length > 0) {
      problems.push(`${kind} ${set} lacks ${listKeys(lacking, format)} (programmed)`);
    }
  }
  if (problems.length > differencesListedMax) {
    const more = problems.length - differencesListedMax;
    return [...problems.slice(0, differencesListedMax), `and ${more} more differences`];
  }
  return problems;
}
