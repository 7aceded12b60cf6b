// Every row of the kernel-captured vectors must match: `nlb map` is only useful if it predicts
// the kernel's filter exactly.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAddress } from '../src/core/address.js';
import { type FlowKeyField, flowKey, hashBucket } from '../src/core/flow.js';

// The vectors are kept in the repository so a clone anywhere can test; when the shared folder
// sits beside the project (as in CI), the copy must be identical to it.
const vectorsPath = fileURLToPath(new URL('./vectors/jhash-kernel.tsv', import.meta.url));
const sharedPath = fileURLToPath(new URL('../../shared/vectors/jhash-kernel.tsv', import.meta.url));

interface Vector {
  line: number;
  family: string;
  key: string;
  modulus: number;
  seed: number;
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
  bucket: number;
}

function loadVectors(): Vector[] {
  return readFileSync(vectorsPath, 'utf8')
    .split('\n')
    .map((text, index) => ({ text, line: index + 1 }))
    .filter(({ text }) => text.trim() !== '' && !text.startsWith('#'))
    .map(({ text, line }) => {
      const [family, key, modulus, seed, saddr, sport, daddr, dport, bucket] = text.split('\t');
      return {
        line,
        family: family!,
        key: key!,
        modulus: Number(modulus),
        seed: Number(seed),
        saddr: saddr!,
        sport: Number(sport),
        daddr: daddr!,
        dport: Number(dport),
        bucket: Number(bucket),
      };
    });
}

function bucketOf(v: Vector): number {
  const saddr = parseAddress(v.saddr);
  const daddr = parseAddress(v.daddr);
  if (saddr === undefined || daddr === undefined) throw new Error(`line ${v.line}: bad address`);
  const [fieldsText, prefixText] = v.key.split('/');
  const fields = fieldsText!.split('.') as FlowKeyField[];
  const prefix = prefixText === undefined ? undefined : Number(prefixText);
  const key = flowKey({ saddr, sport: v.sport, daddr, dport: v.dport }, fields, prefix);
  return hashBucket(key, v.modulus, v.seed);
}

describe('kernel jhash vectors', () => {
  const vectors = loadVectors();

  it.runIf(existsSync(sharedPath))('uses the same vectors as ../shared', () => {
    expect(readFileSync(vectorsPath, 'utf8')).toBe(readFileSync(sharedPath, 'utf8'));
  });

  it('covers the vector file (1,050 cases)', () => {
    expect(vectors.length).toBe(1050);
  });

  it('matches the kernel on every row', () => {
    const mismatches = vectors
      .filter((v) => bucketOf(v) !== v.bucket)
      .map(
        (v) =>
          `line ${v.line}: ${v.family} ${v.key} ${v.saddr}:${v.sport} expected ${v.bucket} got ${bucketOf(v)}`,
      );
    expect(mismatches).toEqual([]);
  });
});
