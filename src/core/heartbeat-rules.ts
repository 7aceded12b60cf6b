// The rule table of a heartbeat (heartbeat.ts): per rule its header, its owned bitmap, and in
// routed mode its held bitmap. Bitmaps are canonical: bits past the last bucket are zero.
import type { HeartbeatRule, RuleState } from './heartbeat.js';
import { heartbeatRuleHeaderBytes } from './heartbeat-size.js';

const ruleStates: readonly RuleState[] = ['enabled', 'draining', 'disabled'];
/** The state byte's top bit: the rule's health check fails on the sender. */
const unhealthyBit = 0x80;

/** The state byte: the rule state, and the top bit when the health check fails. */
export function ruleStateByte(rule: HeartbeatRule): number {
  return ruleStates.indexOf(rule.state) | (rule.healthy ? 0 : unhealthyBit);
}

/** The rule table, or undefined if a rule's fields are out of range or its bitmap not canonical. */
export function decodeRules(
  bytes: Uint8Array,
  view: DataView,
  rulesOffset: number,
  ruleCount: number,
  withHeld: boolean,
): HeartbeatRule[] | undefined {
  const rules: HeartbeatRule[] = [];
  let offset = rulesOffset;
  for (let r = 0; r < ruleCount; r++) {
    const buckets = view.getUint16(offset);
    const loadWeight = view.getUint8(offset + 6);
    const handlingPriority = view.getUint8(offset + 7);
    const stateByte = view.getUint8(offset + 8);
    const ruleState = ruleStates[stateByte & ~unhealthyBit];
    if (
      buckets < 1 ||
      buckets > 1024 ||
      loadWeight > 100 ||
      handlingPriority < 1 ||
      handlingPriority > 32 ||
      ruleState === undefined
    ) {
      return undefined;
    }
    const ruleDigest = view.getUint32(offset + 2);
    offset += heartbeatRuleHeaderBytes;
    const owned = readBitmap(bytes, offset, buckets);
    offset += Math.ceil(buckets / 8);
    const held = withHeld ? readBitmap(bytes, offset, buckets) : [];
    if (withHeld) offset += Math.ceil(buckets / 8);
    if (owned === undefined || held === undefined) return undefined;
    rules.push({
      buckets,
      ruleDigest,
      loadWeight,
      handlingPriority,
      state: ruleState,
      healthy: (stateByte & unhealthyBit) === 0,
      owned,
      ...(withHeld ? { held } : {}),
    });
  }
  return rules;
}

/** Sets the bits of `list` in the bitmap of `buckets` bits at `offset`; returns its end. */
export function writeBitmap(
  bytes: Uint8Array,
  offset: number,
  buckets: number,
  list: readonly number[],
): number {
  for (const bucket of list) {
    bytes[offset + (bucket >> 3)]! |= 1 << (bucket & 7);
  }
  return offset + Math.ceil(buckets / 8);
}

/** The buckets set in a bitmap, or undefined when a bit past the last bucket is set. */
function readBitmap(bytes: Uint8Array, offset: number, buckets: number): number[] | undefined {
  const list: number[] = [];
  for (let b = 0; b < buckets; b++) {
    if ((bytes[offset + (b >> 3)]! >> (b & 7)) & 1) {
      list.push(b);
    }
  }
  // Bits past the last bucket must be zero: a canonical encoding has one form only.
  const usedBits = buckets & 7;
  if (usedBits !== 0 && bytes[offset + (buckets >> 3)]! >> usedBits !== 0) {
    return undefined;
  }
  return list;
}
