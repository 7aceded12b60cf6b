// The Linux kernel's Jenkins hash (include/linux/jhash.h, lookup3 by Bob Jenkins), exactly as
// nftables' `jhash` expression applies it: over the concatenated key bytes, reading 32-bit
// words in little-endian order (x86), then scaled into [0, modulus) by `reciprocal_scale`.
// `nlb map` depends on this matching the kernel bit for bit; the vectors in
// test/vectors/jhash-kernel.tsv were captured from a real kernel and all must pass.

const jhashInitval = 0xdeadbeef;

function rol32(word: number, shift: number): number {
  return ((word << shift) | (word >>> (32 - shift))) >>> 0;
}

function readLe32(key: Uint8Array, offset: number): number {
  return (
    ((key[offset] ?? 0) |
      ((key[offset + 1] ?? 0) << 8) |
      ((key[offset + 2] ?? 0) << 16) |
      ((key[offset + 3] ?? 0) << 24)) >>>
    0
  );
}

/** Kernel `jhash(key, length, initval)` over every byte of `key`. */
export function jhash(key: Uint8Array, initval: number): number {
  let length = key.length;
  let a = (jhashInitval + length + initval) >>> 0;
  let b = a;
  let c = a;
  let offset = 0;

  while (length > 12) {
    a = (a + readLe32(key, offset)) >>> 0;
    b = (b + readLe32(key, offset + 4)) >>> 0;
    c = (c + readLe32(key, offset + 8)) >>> 0;
    // __jhash_mix
    a = (a - c) >>> 0;
    a = (a ^ rol32(c, 4)) >>> 0;
    c = (c + b) >>> 0;
    b = (b - a) >>> 0;
    b = (b ^ rol32(a, 6)) >>> 0;
    a = (a + c) >>> 0;
    c = (c - b) >>> 0;
    c = (c ^ rol32(b, 8)) >>> 0;
    b = (b + a) >>> 0;
    a = (a - c) >>> 0;
    a = (a ^ rol32(c, 16)) >>> 0;
    c = (c + b) >>> 0;
    b = (b - a) >>> 0;
    b = (b ^ rol32(a, 19)) >>> 0;
    a = (a + c) >>> 0;
    c = (c - b) >>> 0;
    c = (c ^ rol32(b, 4)) >>> 0;
    b = (b + a) >>> 0;
    length -= 12;
    offset += 12;
  }
  if (length === 0) {
    return c;
  }
  // The kernel's tail switch falls through from `length` down to 1; a zero-padded read of the
  // remaining bytes adds exactly the same values.
  const tail = new Uint8Array(12);
  tail.set(key.subarray(offset, offset + length));
  a = (a + readLe32(tail, 0)) >>> 0;
  b = (b + readLe32(tail, 4)) >>> 0;
  c = (c + readLe32(tail, 8)) >>> 0;
  // __jhash_final
  c = (c ^ b) >>> 0;
  c = (c - rol32(b, 14)) >>> 0;
  a = (a ^ c) >>> 0;
  a = (a - rol32(c, 11)) >>> 0;
  b = (b ^ a) >>> 0;
  b = (b - rol32(a, 25)) >>> 0;
  c = (c ^ b) >>> 0;
  c = (c - rol32(b, 16)) >>> 0;
  a = (a ^ c) >>> 0;
  a = (a - rol32(c, 4)) >>> 0;
  b = (b ^ a) >>> 0;
  b = (b - rol32(a, 14)) >>> 0;
  c = (c ^ b) >>> 0;
  c = (c - rol32(b, 24)) >>> 0;
  return c;
}

/** Kernel `reciprocal_scale(hash, modulus)`: `(u64)hash * modulus >> 32`. */
export function reciprocalScale(hash: number, modulus: number): number {
  // With modulus < 2^21 the product stays below 2^53, so double arithmetic is exact.
  return Math.floor(((hash >>> 0) * modulus) / 0x1_0000_0000);
}
